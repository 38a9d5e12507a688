//! PD's timestamp oracle.
//!
//! A request for `count` timestamps advances the logical counter by `count` and returns the
//! **largest** timestamp of the block `(physical, logical)`; the caller owns
//! `logical - count + 1 ..= logical`. The physical part follows the injected clock (ms) and
//! never goes back; when the logical part would reach 2^18 the physical part moves forward by
//! one millisecond, as PD forces it to on overflow.

/// Logical values must stay below this bound (`ts = physical << 18 | logical`).
pub const MAX_LOGICAL: i64 = 1 << 18;

/// The oracle's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tso {
    physical: i64,
    logical: i64,
}

/// Why PD refused to generate timestamps (the text follows PD's `ErrGenerateTimestamp`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("[PD:tso:ErrGenerateTimestamp]generate timestamp failed, {0}")]
pub struct TsoError(pub &'static str);

impl Tso {
    /// Allocates `count` timestamps at clock time `now_ms`; returns `(physical, logical)` of
    /// the largest.
    pub fn allocate(&mut self, now_ms: u64, count: u32) -> Result<(i64, i64), TsoError> {
        if count == 0 {
            return Err(TsoError("tso count should be positive"));
        }
        let count = i64::from(count);
        if count >= MAX_LOGICAL {
            // PD retries after each overflow and gives up; no block this large ever fits.
            return Err(TsoError("generate tso maximum number of retries exceeded"));
        }
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        if now > self.physical {
            self.physical = now;
            self.logical = 0;
        }
        if self.logical + count >= MAX_LOGICAL {
            self.physical += 1;
            self.logical = 0;
        }
        self.logical += count;
        Ok((self.physical, self.logical))
    }

    /// The last timestamp handed out, composed (`physical << 18 | logical`).
    pub fn last_ts(&self) -> u64 {
        compose(self.physical, self.logical)
    }
}

/// Composes a TiKV timestamp.
pub fn compose(physical: i64, logical: i64) -> u64 {
    ((physical as u64) << 18) + logical as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_n_returns_largest_of_block() {
        let mut t = Tso::default();
        assert_eq!(t.allocate(1000, 5).unwrap(), (1000, 5));
        assert_eq!(t.allocate(1000, 3).unwrap(), (1000, 8));
        // The caller of the second block owns logicals 6..=8.
    }

    #[test]
    fn physical_follows_clock_and_resets_logical() {
        let mut t = Tso::default();
        t.allocate(1000, 10).unwrap();
        assert_eq!(t.allocate(1005, 1).unwrap(), (1005, 1));
    }

    #[test]
    fn clock_going_backwards_never_decreases_timestamps() {
        let mut t = Tso::default();
        let a = t.allocate(2000, 1).unwrap();
        let b = t.allocate(1000, 1).unwrap();
        assert!(compose(b.0, b.1) > compose(a.0, a.1));
    }

    #[test]
    fn logical_overflow_moves_physical_forward() {
        let mut t = Tso::default();
        t.allocate(1000, (MAX_LOGICAL - 10) as u32).unwrap();
        assert_eq!(t.allocate(1000, 20).unwrap(), (1001, 20));
    }

    #[test]
    fn blocks_are_strictly_increasing_and_disjoint() {
        let mut t = Tso::default();
        let mut last_max = 0u64;
        for i in 0..2000u32 {
            let count = i % 7 + 1;
            let (p, l) = t.allocate(u64::from(i / 3), count).unwrap();
            let max = compose(p, l);
            let min = max - u64::from(count) + 1;
            assert!(min > last_max, "block {min}..={max} overlaps {last_max}");
            last_max = max;
        }
    }

    #[test]
    fn zero_and_oversized_counts_are_errors() {
        let mut t = Tso::default();
        assert_eq!(
            t.allocate(1, 0).unwrap_err().to_string(),
            "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, tso count should be positive"
        );
        assert!(t.allocate(1, MAX_LOGICAL as u32).is_err());
    }
}
