//! TSO timestamps: the database's only clock.
//!
//! A timestamp is `physical << 18 | logical`, where `physical` is milliseconds since the Unix
//! epoch as PD's leader saw them and `logical` counts within that millisecond. Timestamps from
//! PD are strictly increasing, so they order transactions.

use std::fmt;

use tikv_proto::pdpb;

/// Bits of a timestamp that hold the logical counter.
pub const LOGICAL_BITS: u32 = 18;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A TSO timestamp.
///
/// ```
/// use tikv_core::Timestamp;
///
/// let ts = Timestamp::compose(1_700_000_000_000, 5);
/// assert_eq!(ts.physical_ms(), 1_700_000_000_000);
/// assert_eq!(ts.logical(), 5);
/// assert_eq!(Timestamp::from_u64(ts.as_u64()), ts);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Zero: "no timestamp" in requests (e.g. an unset `min_commit_ts`).
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp, used by TiKV for "read the latest" and unbounded `max_commit_ts`.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp from its wire form.
    pub const fn from_u64(ts: u64) -> Self {
        Timestamp(ts)
    }

    /// The wire form.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Builds a timestamp from physical milliseconds and a logical counter. Like client-go's
    /// `ComposeTS`, the parts are added, so a logical value past 18 bits carries into the
    /// physical part instead of being lost (order is preserved either way).
    pub const fn compose(physical_ms: u64, logical: u64) -> Self {
        Timestamp((physical_ms << LOGICAL_BITS).wrapping_add(logical))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub const fn logical(self) -> u64 {
        self.0 & LOGICAL_MASK
    }

    /// Whether this is [`Timestamp::ZERO`].
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The next timestamp (`self + 1`), saturating at [`Timestamp::MAX`].
    pub const fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }

    /// The timestamp `ms` milliseconds later in physical time, same logical part.
    pub const fn add_ms(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(ms << LOGICAL_BITS))
    }

    /// The timestamp `ms` milliseconds earlier in physical time (logical part zero), as used
    /// for stale reads "as of N ms ago"; zero if that would be before the epoch.
    pub const fn sub_ms(self, ms: u64) -> Self {
        Timestamp::compose(self.physical_ms().saturating_sub(ms), 0)
    }

    /// Converts PD's `pdpb::Timestamp` (physical ms and logical, as PD sends them).
    pub fn from_pd(ts: &pdpb::Timestamp) -> Self {
        // PD sends non-negative values; a negative one would be a server bug, and is clamped
        // rather than wrapped into a huge timestamp.
        let physical = u64::try_from(ts.physical).unwrap_or(0);
        let logical = u64::try_from(ts.logical).unwrap_or(0);
        Timestamp::compose(physical, logical)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}ms+{})", self.0, self.physical_ms(), self.logical())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Timestamp {
    fn from(ts: u64) -> Self {
        Timestamp(ts)
    }
}

impl From<Timestamp> for u64 {
    fn from(ts: Timestamp) -> Self {
        ts.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_split() {
        let ts = Timestamp::compose(1, 2);
        assert_eq!(ts.as_u64(), (1 << 18) | 2);
        assert_eq!(
            Timestamp::compose(7, 1 << 18).logical(),
            0,
            "logical is masked"
        );
        assert!(Timestamp::compose(2, 0) > Timestamp::compose(1, LOGICAL_MASK));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Timestamp::MAX.next(), Timestamp::MAX);
        assert_eq!(Timestamp::compose(5, 9).sub_ms(10), Timestamp::ZERO);
        assert_eq!(Timestamp::compose(5, 9).add_ms(1), Timestamp::compose(6, 9));
    }

    #[test]
    fn from_pd_clamps_negative() {
        let ts = pdpb::Timestamp {
            physical: 10,
            logical: 3,
            suffix_bits: 0,
        };
        assert_eq!(Timestamp::from_pd(&ts), Timestamp::compose(10, 3));
        let bad = pdpb::Timestamp {
            physical: -1,
            logical: -1,
            suffix_bits: 0,
        };
        assert_eq!(Timestamp::from_pd(&bad), Timestamp::ZERO);
    }
}
