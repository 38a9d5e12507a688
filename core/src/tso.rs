//! TSO batching arithmetic: many callers' timestamp requests share one PD request.
//!
//! The batcher sends `count = N` for N waiting callers; PD answers with the **largest**
//! timestamp of a block of N consecutive ones. The block is `(physical, logical - N + 1)` ..=
//! `(physical, logical)`, handed out in the order the callers queued. [`TsoBlock`] checks the
//! reply (count, monotonicity against the previous block) and hands out the timestamps.

use tikv_proto::pdpb;

use crate::error::Error;
use crate::timestamp::Timestamp;

/// Largest number of timestamps requested in one PD request (client-go's PD client collects
/// up to twice its `defaultMaxTSOBatchSize` of 10000).
pub const MAX_BATCH: u32 = 20_000;

/// A block of consecutive timestamps from one TSO reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsoBlock {
    first: Timestamp,
    count: u32,
}

impl TsoBlock {
    /// Checks PD's reply to a request for `requested` timestamps, and that it comes after
    /// `last` (the largest timestamp handed out before; zero if none). On success `last` is
    /// advanced to the block's largest timestamp.
    pub fn from_reply(
        reply: &pdpb::TsoResponse,
        requested: u32,
        last: &mut Timestamp,
    ) -> Result<TsoBlock, Error> {
        let bad = |detail: String| Error::Pd {
            method: "Tso",
            kind: "INVALID_RESPONSE".into(),
            message: detail,
        };
        if requested == 0 {
            return Err(Error::InvalidArgument(
                "TSO request for zero timestamps".into(),
            ));
        }
        if reply.count != requested {
            return Err(bad(format!(
                "asked for {requested} timestamps, got {}",
                reply.count
            )));
        }
        let ts = reply
            .timestamp
            .as_ref()
            .ok_or_else(|| bad("reply without a timestamp".into()))?;
        if ts.physical < 0 || ts.logical < i64::from(requested) - 1 {
            return Err(bad(format!(
                "timestamp {}/{} cannot end a block of {requested}",
                ts.physical, ts.logical
            )));
        }
        let largest = Timestamp::from_pd(ts);
        let first = Timestamp::from_u64(largest.as_u64() - u64::from(requested - 1));
        if first <= *last {
            return Err(bad(format!(
                "timestamp went backwards: block starts at {first}, previous was {last}"
            )));
        }
        *last = largest;
        Ok(TsoBlock {
            first,
            count: requested,
        })
    }

    /// The `i`-th timestamp of the block (0-based); `None` past the end.
    pub fn get(&self, i: u32) -> Option<Timestamp> {
        (i < self.count).then(|| Timestamp::from_u64(self.first.as_u64() + u64::from(i)))
    }

    /// Takes the first `n` timestamps off the block, as a block of their own (how one reply is
    /// shared among the callers of a batch, in queue order); `None` if fewer than `n` (or
    /// zero) are requested than the block holds.
    pub fn take(&mut self, n: u32) -> Option<TsoBlock> {
        if n == 0 || n > self.count {
            return None;
        }
        let taken = TsoBlock {
            first: self.first,
            count: n,
        };
        self.first = Timestamp::from_u64(self.first.as_u64() + u64::from(n));
        self.count -= n;
        Some(taken)
    }

    /// How many timestamps the block holds.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the block is empty (never, for a checked block).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(physical: i64, logical: i64, count: u32) -> pdpb::TsoResponse {
        pdpb::TsoResponse {
            count,
            timestamp: Some(pdpb::Timestamp {
                physical,
                logical,
                suffix_bits: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn block_ends_at_the_reply() {
        let mut last = Timestamp::ZERO;
        let b = TsoBlock::from_reply(&reply(100, 42, 10), 10, &mut last).unwrap();
        assert_eq!(b.get(0), Some(Timestamp::compose(100, 33)));
        assert_eq!(b.get(9), Some(Timestamp::compose(100, 42)));
        assert_eq!(b.get(10), None);
        assert_eq!(last, Timestamp::compose(100, 42));
    }

    #[test]
    fn take_shares_a_block_in_order() {
        let mut last = Timestamp::ZERO;
        let mut b = TsoBlock::from_reply(&reply(7, 9, 10), 10, &mut last).unwrap();
        let a = b.take(3).unwrap();
        let c = b.take(7).unwrap();
        assert_eq!(
            (a.get(0), a.get(2), a.get(3)),
            (
                Some(Timestamp::compose(7, 0)),
                Some(Timestamp::compose(7, 2)),
                None
            )
        );
        assert_eq!((c.get(0), c.len()), (Some(Timestamp::compose(7, 3)), 7));
        assert!(b.is_empty() && b.take(1).is_none());
    }

    #[test]
    fn rejects_wrong_count_backwards_and_impossible_replies() {
        let mut last = Timestamp::compose(100, 50);
        assert!(
            TsoBlock::from_reply(&reply(100, 60, 3), 4, &mut last).is_err(),
            "count mismatch"
        );
        assert!(
            TsoBlock::from_reply(&reply(100, 50, 1), 1, &mut last).is_err(),
            "not after last"
        );
        assert!(
            TsoBlock::from_reply(&reply(100, 2, 5), 5, &mut last).is_err(),
            "logical too small"
        );
        assert!(
            TsoBlock::from_reply(
                &pdpb::TsoResponse {
                    count: 1,
                    ..Default::default()
                },
                1,
                &mut last
            )
            .is_err()
        );
        assert_eq!(
            last,
            Timestamp::compose(100, 50),
            "failures leave last alone"
        );
        assert!(TsoBlock::from_reply(&reply(101, 0, 1), 1, &mut last).is_ok());
    }
}
