//! The oracle (client-go's `oracle` package): what a client can say about time from the
//! timestamps PD gave it, without asking again.
//!
//! - [`LastTimestamp`] remembers the latest timestamp PD handed out and when (on the
//!   caller's monotonic clock): the **low-resolution timestamp** is that value while it is
//!   fresher than an interval (client-go refreshes it every 2 s), and a **stale timestamp**
//!   "N seconds ago" is estimated from it by moving its physical part by the local time
//!   elapsed since, minus N.
//! - [`is_expired`] / [`until_expired`]: whether a lock's TTL has run out as of a timestamp.
//! - [`validate_read_ts`]: a read timestamp above every timestamp PD allocated is a bug of
//!   the caller (it could see a future commit disappear): refused with
//!   [`Error::FutureTsRead`].

use std::time::Duration;

use crate::error::Error;
use crate::time::Instant;
use crate::timestamp::Timestamp;

/// How long the low-resolution timestamp may be reused (client-go's default update interval).
pub const LOW_RESOLUTION_INTERVAL: Duration = Duration::from_secs(2);

/// Whether a lock taken at `lock_ts` with a TTL of `ttl_ms` has expired at `now`
/// (client-go's `IsExpired`: physical time since the lock at least its TTL).
pub fn is_expired(lock_ts: Timestamp, ttl_ms: u64, now: Timestamp) -> bool {
    until_expired(lock_ts, ttl_ms, now) <= 0
}

/// Milliseconds until a lock taken at `lock_ts` with a TTL of `ttl_ms` expires, as of `now`
/// (client-go's `UntilExpired`; zero or negative once it has).
pub fn until_expired(lock_ts: Timestamp, ttl_ms: u64, now: Timestamp) -> i64 {
    let expires = i128::from(lock_ts.physical_ms()) + i128::from(ttl_ms);
    let left = expires - i128::from(now.physical_ms());
    i64::try_from(left).unwrap_or(if left > 0 { i64::MAX } else { i64::MIN })
}

/// Refuses a read at `read_ts` above `latest`, the newest timestamp PD is known to have
/// allocated (client-go's `ValidateReadTS`). `u64::MAX` (the "latest committed" point read)
/// is fine except for stale reads, which need a real timestamp.
pub fn validate_read_ts(read_ts: Timestamp, latest: Timestamp, stale: bool) -> Result<(), Error> {
    if read_ts == Timestamp::MAX {
        if stale {
            return Err(Error::InvalidArgument(
                "a stale read needs a real timestamp, not the maximum".into(),
            ));
        }
        return Ok(());
    }
    if read_ts > latest {
        return Err(Error::FutureTsRead {
            read_ts: read_ts.as_u64(),
            current_ts: latest.as_u64(),
        });
    }
    Ok(())
}

/// The latest timestamp PD handed this client, and when it arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastTimestamp {
    ts: Timestamp,
    at: Instant,
}

impl LastTimestamp {
    /// Records a timestamp PD gave at `at` (older ones change nothing: timestamps from
    /// concurrent requests may arrive out of order).
    pub fn observe(&mut self, ts: Timestamp, at: Instant) {
        if ts > self.ts {
            self.ts = ts;
            self.at = at;
        }
    }

    /// The latest timestamp seen (zero before any).
    pub fn latest(&self) -> Timestamp {
        self.ts
    }

    /// The low-resolution timestamp at `now`: the latest one while it is younger than
    /// `interval`; `None` when it must be refreshed from PD.
    pub fn low_resolution(&self, now: Instant, interval: Duration) -> Option<Timestamp> {
        (!self.ts.is_zero() && now - self.at < interval).then_some(self.ts)
    }

    /// A timestamp about `ago` before `now` (client-go's `GetStaleTimestamp`): the latest
    /// timestamp's physical time moved by the local time since it arrived, minus `ago`;
    /// `None` before any timestamp, or when `ago` reaches before the epoch.
    pub fn stale(&self, now: Instant, ago: Duration) -> Option<Timestamp> {
        if self.ts.is_zero() {
            return None;
        }
        let elapsed = u64::try_from((now - self.at).as_millis()).ok()?;
        let back = u64::try_from(ago.as_millis()).ok()?;
        let physical = self
            .ts
            .physical_ms()
            .checked_add(elapsed)?
            .checked_sub(back)?;
        Some(Timestamp::compose(physical, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn ts(ms: u64) -> Timestamp {
        Timestamp::compose(ms, 0)
    }

    #[test]
    fn expiry_compares_physical_time_with_the_ttl() {
        assert!(!is_expired(ts(1000), 3000, ts(3999)));
        assert!(is_expired(ts(1000), 3000, ts(4000)));
        assert_eq!(until_expired(ts(1000), 3000, ts(2500)), 1500);
        assert_eq!(until_expired(ts(1000), 3000, ts(5000)), -1000);
    }

    #[test]
    fn reads_above_the_latest_timestamp_are_refused() {
        assert!(validate_read_ts(ts(10), ts(10), false).is_ok());
        assert_eq!(
            validate_read_ts(ts(11), ts(10), false),
            Err(Error::FutureTsRead {
                read_ts: ts(11).as_u64(),
                current_ts: ts(10).as_u64()
            })
        );
        assert!(validate_read_ts(Timestamp::MAX, ts(10), false).is_ok());
        assert!(validate_read_ts(Timestamp::MAX, ts(10), true).is_err());
    }

    #[test]
    fn low_resolution_and_stale_timestamps_come_from_the_last_one() {
        let mut last = LastTimestamp::default();
        assert_eq!(last.low_resolution(at(0), LOW_RESOLUTION_INTERVAL), None);
        assert_eq!(last.stale(at(0), Duration::ZERO), None);
        last.observe(ts(10_000), at(100));
        last.observe(ts(9_000), at(200)); // late and older: ignored
        assert_eq!(last.latest(), ts(10_000));
        assert_eq!(
            last.low_resolution(at(1_000), LOW_RESOLUTION_INTERVAL),
            Some(ts(10_000))
        );
        assert_eq!(
            last.low_resolution(at(2_100), LOW_RESOLUTION_INTERVAL),
            None
        );
        // 1.1 s after it arrived, "3 s ago" is 1.9 s before it.
        assert_eq!(
            last.stale(at(1_200), Duration::from_secs(3)),
            Some(ts(8_100))
        );
        assert_eq!(last.stale(at(100), Duration::from_secs(11)), None);
    }
}
