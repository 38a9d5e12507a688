//! Seeded choice of record numbers: a small PRNG, a uniform chooser and YCSB's (scrambled)
//! zipfian generator.
//!
//! The zipfian generator is YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating
//! billion-record synthetic databases", SIGMOD 1994) with YCSB's default constant 0.99, and
//! the scrambled variant is YCSB's `ScrambledZipfianGenerator`: draw from a zipfian over ten
//! billion items and hash the result onto the records with FNV-1a, so that the popular records
//! are spread over the key space (and over regions) instead of clustered at its start. Using
//! YCSB's algorithm and constants keeps results comparable with go-ycsb runs.

/// A small, fast, seeded generator (SplitMix64): the benchmark needs reproducible streams
/// per worker, not cryptographic quality.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform double in `[0, 1)` (53 random bits, as Java's `nextDouble`).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)` (`n > 0`), by widening multiply: no modulo bias worth
    /// mentioning and no division on the hot path.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// YCSB's default zipfian constant (`ZipfianGenerator.ZIPFIAN_CONSTANT`).
pub(crate) const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Items of the zipfian that [`ScrambledZipfian`] hashes down (`ScrambledZipfianGenerator.ITEM_COUNT`).
const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;

/// zeta(10^10, 0.99), precomputed by YCSB (`ScrambledZipfianGenerator.ZETAN`): summing ten
/// billion terms at start-up would take a minute.
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// `sum_{i=1..n} 1 / i^theta` (YCSB's `zetastatic`).
pub(crate) fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// YCSB's `ZipfianGenerator` over `[0, items)`: item 0 is the most popular, then item 1, ...
#[derive(Clone, Debug)]
pub(crate) struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A zipfian over `items` (> 0) items with constant `theta` (in (0, 1)), computing zeta
    /// (only the tests need it: the benchmark uses the scrambled form's precomputed zeta).
    #[cfg(test)]
    pub(crate) fn new(items: u64, theta: f64) -> Self {
        Self::with_zetan(items, theta, zeta(items, theta))
    }

    /// A zipfian whose `zeta(items, theta)` is already known.
    pub(crate) fn with_zetan(items: u64, theta: f64, zetan: f64) -> Self {
        let zeta2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// The next item, in `[0, items)`.
    pub(crate) fn next(&self, rng: &mut SplitMix64) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let item = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        // Float rounding can land exactly on `items` for u close to 1.
        item.min(self.items - 1)
    }
}

/// YCSB's 64-bit FNV hash of a number (`Utils.fnvhash64`): its 8 bytes, low first, through
/// FNV-1a, made non-negative as Java's `Math.abs` does.
pub(crate) fn fnv_hash64(mut value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(PRIME);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// YCSB's `ScrambledZipfianGenerator` over `[0, records)`: zipfian popularity, popular items
/// scattered by a hash.
#[derive(Clone, Debug)]
pub(crate) struct ScrambledZipfian {
    records: u64,
    zipfian: Zipfian,
}

impl ScrambledZipfian {
    /// A scrambled zipfian over `records` (> 0) items.
    pub(crate) fn new(records: u64) -> Self {
        ScrambledZipfian {
            records,
            zipfian: Zipfian::with_zetan(SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }

    /// The next item, in `[0, records)`.
    pub(crate) fn next(&self, rng: &mut SplitMix64) -> u64 {
        fnv_hash64(self.zipfian.next(rng)) % self.records
    }
}

/// How records are picked.
#[derive(Clone, Debug)]
pub(crate) enum KeyChooser {
    /// Every record equally likely.
    Uniform(u64),
    /// YCSB's scrambled zipfian.
    Zipfian(ScrambledZipfian),
}

impl KeyChooser {
    /// The next record number.
    pub(crate) fn next(&self, rng: &mut SplitMix64) -> u64 {
        match self {
            KeyChooser::Uniform(records) => rng.below(*records),
            KeyChooser::Zipfian(z) => z.next(rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let mut c = SplitMix64::new(8);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn uniform_values_stay_in_range_and_cover_it() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let x = rng.below(10);
            seen[x as usize] += 1;
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        // Each bucket expects 1000.
        assert!(seen.iter().all(|&n| (850..1150).contains(&n)), "{seen:?}");
    }

    #[test]
    fn zipfian_follows_the_power_law() {
        // P(item i) = 1 / ((i+1)^theta * zeta(n)): item 0 about 1/zeta(1000, 0.99) ≈ 13 %,
        // item 1 about half of that.
        let n = 1000;
        let z = Zipfian::new(n, ZIPFIAN_CONSTANT);
        let mut rng = SplitMix64::new(3);
        let draws = 200_000;
        let mut counts = vec![0u32; n as usize];
        for _ in 0..draws {
            counts[z.next(&mut rng) as usize] += 1;
        }
        let p0 = f64::from(counts[0]) / f64::from(draws);
        let expected0 = 1.0 / zeta(n, ZIPFIAN_CONSTANT);
        assert!((p0 - expected0).abs() < 0.01, "p0 {p0} vs {expected0}");
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((1.8..2.2).contains(&ratio), "item0/item1 = {ratio}");
        assert!(counts[10] > counts[500], "popularity falls with rank");
    }

    #[test]
    fn the_precomputed_zeta_matches_ycsb_for_small_n() {
        // YCSB's formula for zeta, checked against a hand-computed sum.
        let z3 = 1.0 + 1.0 / 2f64.powf(0.99) + 1.0 / 3f64.powf(0.99);
        assert!((zeta(3, 0.99) - z3).abs() < 1e-12);
    }

    #[test]
    fn fnv_matches_ycsb() {
        // YCSB's fnvhash64(0): the FNV-1a of eight zero bytes, made non-negative.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..8 {
            h = h.wrapping_mul(1_099_511_628_211);
        }
        assert_eq!(fnv_hash64(0), (h as i64).unsigned_abs());
        assert_ne!(fnv_hash64(1), fnv_hash64(256));
    }

    #[test]
    fn scrambled_zipfian_is_skewed_but_scattered() {
        let records = 10_000;
        let z = ScrambledZipfian::new(records);
        let mut rng = SplitMix64::new(42);
        let mut counts = vec![0u32; records as usize];
        let draws = 100_000;
        for _ in 0..draws {
            let x = z.next(&mut rng);
            assert!(x < records);
            counts[x as usize] += 1;
        }
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest record takes a few percent of the draws; uniform would give 0.01 %.
        assert!(sorted[0] > draws / 100, "hottest {}", sorted[0]);
        // ... and it is not simply record 0: the hash scatters popularity.
        let hottest = counts.iter().position(|&c| c == sorted[0]).unwrap();
        assert_ne!(hottest, 0);
        // Deterministic for a seed.
        let mut again = SplitMix64::new(42);
        let mut rng = SplitMix64::new(42);
        assert_eq!(z.next(&mut rng), z.next(&mut again));
    }
}
