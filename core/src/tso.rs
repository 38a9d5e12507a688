//! TSO batching: many callers' timestamp requests share one PD request.
//!
//! [`TsoBatcher`] is the sans-IO batcher: callers [`enqueue`](TsoBatcher::enqueue) a count
//! and get a [`Ticket`]; the driver's TSO task asks it for the next request
//! ([`poll_request`](TsoBatcher::poll_request): everyone queued, up to [`MAX_BATCH`]
//! timestamps), sends it on the `Tso` stream, and feeds the reply back
//! ([`handle_reply`](TsoBatcher::handle_reply)), which says which ticket gets which timestamps
//! — or, when PD's leader changed, which tickets go round again (PD's client retries those
//! 20 times, 100 ms apart) and that the stream must be re-created after a rediscovery.
//!
//! The arithmetic: for `count = N`, PD answers with the **largest** timestamp of a block of N
//! consecutive ones. The block is `(physical, logical - N + 1)` ..= `(physical, logical)`,
//! handed out in the order the callers queued. [`TsoBlock`] checks the reply (count,
//! monotonicity against the previous block) and hands out the timestamps.

use std::collections::VecDeque;
use std::time::Duration;

use tikv_proto::pdpb;

use crate::error::Error;
use crate::pd::{PdErrorKind, header_error};
use crate::timestamp::Timestamp;

/// How often a caller's request goes round again after PD's leader changed under it
/// (PD's client: `maxTSORetryTimes`).
pub const LEADER_CHANGE_RETRIES: u32 = 20;

/// The wait before a retried round, after the first (immediate) one (PD's `retryInterval`).
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A caller's place in the batcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

#[derive(Clone, Copy, Debug)]
struct Waiter {
    ticket: Ticket,
    count: u32,
    retries_left: u32,
}

/// What one round (a request and its reply, or its failure) decided.
#[derive(Debug, Default)]
pub struct TsoRound {
    /// Callers whose request is over: the first of their timestamps, or why not.
    pub answers: Vec<(Ticket, Result<Timestamp, Error>)>,
    /// The stream failed: drop it, and find PD's leader again before the next request.
    pub rediscover: bool,
    /// Wait this long before the next request (callers went round again after a failure).
    pub retry_after: Option<Duration>,
}

/// The TSO batcher: a queue of callers, at most one request in flight.
#[derive(Debug, Default)]
pub struct TsoBatcher {
    queue: VecDeque<Waiter>,
    in_flight: Option<(Vec<Waiter>, u32)>,
    last: Timestamp,
    next_ticket: u64,
    /// Failed rounds in a row.
    failures: u32,
}

impl TsoBatcher {
    /// An empty batcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a caller that wants `count` consecutive timestamps.
    pub fn enqueue(&mut self, count: u32) -> Result<Ticket, Error> {
        if count == 0 || count > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "cannot request {count} timestamps at once (1 to {MAX_BATCH})"
            )));
        }
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        self.queue.push_back(Waiter {
            ticket,
            count,
            retries_left: LEADER_CHANGE_RETRIES,
        });
        Ok(ticket)
    }

    /// Forgets a caller that stopped waiting. A share already in flight is dropped when the
    /// reply comes.
    pub fn cancel(&mut self, ticket: Ticket) {
        self.queue.retain(|w| w.ticket != ticket);
        if let Some((batch, _)) = self.in_flight.as_mut() {
            for w in batch.iter_mut().filter(|w| w.ticket == ticket) {
                // Keeps its place in the block (the arithmetic needs it), answers nobody.
                w.retries_left = 0;
                w.ticket = Ticket(0);
            }
        }
    }

    /// Whether a request is out and not yet answered.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Callers waiting for a request to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next request to send: everyone queued, up to [`MAX_BATCH`] timestamps. `None`
    /// while a request is in flight or nobody waits.
    pub fn poll_request(&mut self, header: pdpb::RequestHeader) -> Option<pdpb::TsoRequest> {
        if self.in_flight.is_some() || self.queue.is_empty() {
            return None;
        }
        let mut total = 0u32;
        let mut batch = Vec::new();
        while let Some(w) = self.queue.front() {
            if total + w.count > MAX_BATCH {
                break;
            }
            total += w.count;
            batch.extend(self.queue.pop_front());
        }
        self.in_flight = Some((batch, total));
        Some(pdpb::TsoRequest {
            header: Some(header),
            count: total,
            ..Default::default()
        })
    }

    /// Takes the reply to the request in flight (or why there is none) from the leader at
    /// `address`.
    pub fn handle_reply(
        &mut self,
        address: &str,
        reply: Result<pdpb::TsoResponse, Error>,
    ) -> TsoRound {
        let Some((batch, total)) = self.in_flight.take() else {
            return TsoRound::default();
        };
        let block = reply.and_then(|r| {
            header_error("Tso", address, r.header.as_ref())?;
            TsoBlock::from_reply(&r, total, &mut self.last).map_err(|e| match e {
                Error::Pd {
                    method,
                    kind,
                    message,
                    ..
                } => Error::Pd {
                    method,
                    address: address.to_string(),
                    kind,
                    message,
                },
                other => other,
            })
        });
        let mut round = TsoRound::default();
        match block {
            Ok(mut block) => {
                self.failures = 0;
                for w in batch {
                    let share = block.take(w.count).and_then(|b| b.get(0));
                    if w.ticket != Ticket(0) {
                        // `from_reply` checked the block holds `total`: every share exists.
                        let answer = share.ok_or_else(|| invalid(address, "TSO block too small"));
                        round.answers.push((w.ticket, answer));
                    }
                }
            }
            Err(e) => {
                let leader_change = matches!(&e, Error::Pd { kind, .. } if kind.is_leader_change());
                round.rediscover = true;
                self.failures += 1;
                let mut again = Vec::new();
                for mut w in batch {
                    if w.ticket == Ticket(0) {
                        continue;
                    }
                    if leader_change && w.retries_left > 0 {
                        w.retries_left -= 1;
                        again.push(w);
                    } else {
                        round.answers.push((w.ticket, Err(e.clone())));
                    }
                }
                if !again.is_empty() {
                    // Ahead of later callers, in their order.
                    for w in again.into_iter().rev() {
                        self.queue.push_front(w);
                    }
                    round.retry_after = Some(if self.failures == 1 {
                        Duration::ZERO
                    } else {
                        RETRY_INTERVAL
                    });
                }
            }
        }
        round
    }
}

fn invalid(address: &str, message: &str) -> Error {
    Error::Pd {
        method: "Tso",
        address: address.to_string(),
        kind: PdErrorKind::InvalidResponse,
        message: message.to_string(),
    }
}

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
        // The address is filled in by the batcher, which knows where the reply came from.
        let bad = |detail: String| Error::Pd {
            method: "Tso",
            address: String::new(),
            kind: PdErrorKind::InvalidResponse,
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
    use crate::error::{Delivery, GrpcCode};

    fn ok(physical: i64, logical: i64, count: u32) -> Result<pdpb::TsoResponse, Error> {
        Ok(reply(physical, logical, count))
    }

    fn failed(kind: PdErrorKind) -> Result<pdpb::TsoResponse, Error> {
        Err(Error::Pd {
            method: "Tso",
            address: "pd-1".into(),
            kind,
            message: "scripted".into(),
        })
    }

    fn first(round: &TsoRound, ticket: Ticket) -> Option<Timestamp> {
        round
            .answers
            .iter()
            .find(|(t, _)| *t == ticket)
            .and_then(|(_, r)| r.as_ref().ok().copied())
    }

    #[test]
    fn queued_callers_share_one_request_in_order() {
        let mut b = TsoBatcher::new();
        let one = b.enqueue(1).unwrap();
        let three = b.enqueue(3).unwrap();
        let req = b.poll_request(Default::default()).unwrap();
        assert_eq!(req.count, 4);
        assert!(
            b.poll_request(Default::default()).is_none(),
            "one request at a time"
        );
        let late = b.enqueue(2).unwrap();
        let round = b.handle_reply("pd-1", ok(50, 10, 4));
        assert_eq!(first(&round, one), Some(Timestamp::compose(50, 7)));
        assert_eq!(first(&round, three), Some(Timestamp::compose(50, 8)));
        assert!(!round.rediscover && round.retry_after.is_none());
        assert_eq!(b.poll_request(Default::default()).unwrap().count, 2);
        let round = b.handle_reply("pd-1", ok(50, 12, 2));
        assert_eq!(first(&round, late), Some(Timestamp::compose(50, 11)));
    }

    #[test]
    fn batches_stop_at_the_maximum() {
        let mut b = TsoBatcher::new();
        b.enqueue(MAX_BATCH - 1).unwrap();
        b.enqueue(2).unwrap();
        assert_eq!(
            b.poll_request(Default::default()).unwrap().count,
            MAX_BATCH - 1
        );
        assert_eq!(b.queued(), 1);
        assert!(b.enqueue(0).is_err() && b.enqueue(MAX_BATCH + 1).is_err());
    }

    #[test]
    fn leader_change_sends_the_batch_again_after_rediscovery() {
        let mut b = TsoBatcher::new();
        let t = b.enqueue(1).unwrap();
        b.poll_request(Default::default());
        let round = b.handle_reply("pd-1", failed(PdErrorKind::NotLeader));
        assert!(round.answers.is_empty(), "nobody fails yet");
        assert!(round.rediscover);
        assert_eq!(
            round.retry_after,
            Some(Duration::ZERO),
            "the first retry is immediate"
        );
        b.poll_request(Default::default()).unwrap();
        let round = b.handle_reply(
            "pd-1",
            failed(PdErrorKind::Unreachable(Delivery::MaybeDelivered)),
        );
        assert_eq!(round.retry_after, Some(RETRY_INTERVAL));
        b.poll_request(Default::default()).unwrap();
        let round = b.handle_reply("pd-2", ok(9, 0, 1));
        assert_eq!(first(&round, t), Some(Timestamp::compose(9, 0)));
    }

    #[test]
    fn retries_run_out_and_other_errors_fail_at_once() {
        let mut b = TsoBatcher::new();
        let t = b.enqueue(1).unwrap();
        for _ in 0..LEADER_CHANGE_RETRIES {
            b.poll_request(Default::default()).unwrap();
            assert!(
                b.handle_reply("pd", failed(PdErrorKind::NotLeader))
                    .answers
                    .is_empty()
            );
        }
        b.poll_request(Default::default()).unwrap();
        let round = b.handle_reply("pd", failed(PdErrorKind::NotLeader));
        assert!(matches!(&round.answers[..], [(x, Err(_))] if *x == t));

        let t = b.enqueue(1).unwrap();
        b.poll_request(Default::default()).unwrap();
        let round = b.handle_reply(
            "pd",
            failed(PdErrorKind::Status(GrpcCode::PermissionDenied)),
        );
        assert!(matches!(&round.answers[..], [(x, Err(_))] if *x == t));
        assert!(round.retry_after.is_none());
    }

    #[test]
    fn a_reply_going_backwards_fails_the_batch_naming_the_leader() {
        let mut b = TsoBatcher::new();
        b.enqueue(1).unwrap();
        b.poll_request(Default::default());
        b.handle_reply("pd-1", ok(10, 5, 1));
        let t = b.enqueue(1).unwrap();
        b.poll_request(Default::default());
        let round = b.handle_reply("pd-1", ok(10, 5, 1));
        match &round.answers[..] {
            [
                (
                    x,
                    Err(Error::Pd {
                        kind: PdErrorKind::InvalidResponse,
                        address,
                        ..
                    }),
                ),
            ] => {
                assert_eq!((*x, address.as_str()), (t, "pd-1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(round.rediscover, "a misbehaving stream is re-created");
    }

    #[test]
    fn a_header_error_fails_like_a_status() {
        let mut b = TsoBatcher::new();
        b.enqueue(1).unwrap();
        b.poll_request(Default::default());
        let mut r = reply(1, 1, 1);
        r.header = Some(pdpb::ResponseHeader {
            error: Some(pdpb::Error {
                r#type: pdpb::ErrorType::Unknown as i32,
                message: "not leader".into(),
            }),
            ..Default::default()
        });
        let round = b.handle_reply("pd-1", Ok(r));
        assert!(round.answers.is_empty() && round.rediscover, "{round:?}");
    }

    #[test]
    fn cancelled_callers_keep_their_place_but_get_nothing() {
        let mut b = TsoBatcher::new();
        let gone = b.enqueue(2).unwrap();
        let stays = b.enqueue(1).unwrap();
        b.poll_request(Default::default());
        b.cancel(gone);
        let round = b.handle_reply("pd", ok(3, 10, 3));
        assert_eq!(round.answers.len(), 1);
        assert_eq!(first(&round, stays), Some(Timestamp::compose(3, 10)));
        let queued = b.enqueue(1).unwrap();
        b.cancel(queued);
        assert_eq!(b.queued(), 0);
    }

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
