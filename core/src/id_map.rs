//! Hash maps keyed by integer ids (request ids, store ids, start timestamps) with a fixed
//! hasher: no per-process random keys, so nothing about a map depends on anything but its
//! inputs (simulation runs replay exactly), and hashing a `u64` is a few multiplications.

use std::hash::{BuildHasher, Hasher};

/// Hashes integer ids with a fixed multiply-xorshift (SplitMix64's finalizer).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// Builds [`IdHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

/// A map keyed by integer ids, with the fixed hasher.
pub type IdMap<V> = hashbrown::HashMap<u64, V, IdHash>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hasher_is_fixed() {
        let h = |v: u64| {
            let mut x = IdHash.build_hasher();
            x.write_u64(v);
            x.finish()
        };
        assert_eq!(h(1), h(1));
        assert_ne!(h(1), h(2));
    }
}
