//! The seeded random number generator the core uses for jitter and replica choice.
//!
//! The core never touches a global RNG: every machine draws from an [`Rng`] in its context, so
//! the same seed and the same inputs give the same effects. The generator is xoshiro256**
//! seeded through splitmix64 — small, fast and statistically sound for these uses (it is not
//! for cryptography).

/// splitmix64's increment.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function: a bijection that spreads every input bit over the output.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hands out one generator per operation from a client's seed, without a lock: the `n`-th
/// fork is seeded from the seed and `n` alone. Which operation gets which `n` follows the
/// order operations start, so a run is reproducible wherever that order is (one task,
/// simulation); concurrent starts on real threads only reorder forks.
#[derive(Debug)]
pub struct RngForks {
    seed: u64,
    next: std::sync::atomic::AtomicU64,
}

impl RngForks {
    /// Forks of `seed`.
    pub fn new(seed: u64) -> Self {
        RngForks {
            seed,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next operation's generator.
    pub fn fork(&self) -> Rng {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Mixed, not added: seeds `s` and `s + 1` would give overlapping splitmix streams.
        Rng::seeded(mix64(self.seed ^ mix64(n.wrapping_mul(GOLDEN_GAMMA))))
    }
}

/// A small deterministic pseudo-random generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn seeded(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(GOLDEN_GAMMA);
            mix64(sm)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A value in `0..bound` (`0` when `bound` is `0`), without modulo bias worth noticing for
    /// the small bounds used here (widening multiply).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A value in `low..=high` (`low` when `high <= low`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.below(high - low + 1)
    }

    /// A new generator seeded from this one, for a sub-task that must not disturb this
    /// generator's sequence by how much it draws.
    pub fn fork(&mut self) -> Rng {
        Rng::seeded(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::seeded(43).next_u64(), xs[0]);
    }

    #[test]
    fn forks_are_reproducible_and_distinct() {
        let first = |seed| {
            let forks = RngForks::new(seed);
            (0..4).map(|_| forks.fork().next_u64()).collect::<Vec<_>>()
        };
        let a = first(9);
        assert_eq!(a, first(9), "same seed, same forks in the same order");
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "every fork differs: {a:?}");
        assert_ne!(first(10)[0], a[0]);
    }

    #[test]
    fn bounds_hold_and_cover() {
        let mut r = Rng::seeded(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.between(10, 14);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value in range appears");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.between(5, 5), 5);
        assert_eq!(r.between(6, 5), 6);
    }
}
