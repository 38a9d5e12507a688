//! The TTL manager (client-go's `ttlManager`): keeps a long transaction's primary lock alive.
//!
//! A pessimistic transaction's locks live [`MANAGED_LOCK_TTL_MS`] past its age when taken;
//! a transaction that runs longer would see other transactions roll it back. Once its primary
//! is locked, a background task (spawned by the client) sends `TxnHeartBeat` every half TTL,
//! asking TiKV to extend the primary's TTL to the transaction's age plus the managed TTL;
//! each beat retries within a budget of its own. It stops when the transaction ends (the
//! shared [`HeartbeatStop`] is set), when the transaction has lived [`MAX_TXN_TIME`]
//! (client-go's `MaxTxnTimeUse`), when the primary is no longer there to extend (TiKV
//! answers with a key error: committed or rolled back meanwhile), or after
//! [`MAX_FAILED_BEATS`] beats in a row that got no answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tikv_proto::kvrpcpb;

use crate::backoff::{Backoffer, budget};
use crate::key::Key;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::SingleKey;
use crate::ready;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::time::Instant;
use crate::timestamp::Timestamp;
use crate::txn::pessimistic::MANAGED_LOCK_TTL_MS;

/// How long a transaction may keep its locks alive (client-go's `MaxTxnTimeUse`, 24 h).
pub const MAX_TXN_TIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Beats in a row that may fail (no answer within their budget) before the heartbeats give
/// up (client-go's `maxConsecutiveFailure`).
pub const MAX_FAILED_BEATS: u32 = 3;

/// Ends a [`Heartbeat`] from the transaction that started it. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatStop(Arc<AtomicBool>);

impl HeartbeatStop {
    /// Stops the heartbeats (at their next wake-up; the transaction is over).
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum State {
    Idle,
    /// Over: report it on the next poll.
    Finished,
    Sleeping(EffectId),
    Beating(Box<SingleKey>),
    Done,
}

/// Heartbeats a transaction's primary lock until told to stop.
#[derive(Debug)]
pub struct Heartbeat {
    /// Stored form.
    primary: Key,
    start_ts: Timestamp,
    /// When the transaction began.
    started: Instant,
    stop: HeartbeatStop,
    /// The current beat's retry budget (a fresh one per beat).
    backoff: Backoffer,
    failed_in_a_row: u32,
    state: State,
}

impl Heartbeat {
    /// Keeps the primary `primary` (stored form) of the transaction started at `start_ts`
    /// (at `started` on the client's clock) alive until `stop` is set.
    pub fn new(primary: Key, start_ts: Timestamp, started: Instant, stop: HeartbeatStop) -> Self {
        Heartbeat {
            primary,
            start_ts,
            started,
            stop,
            backoff: Backoffer::new("heartbeat", budget::HEARTBEAT),
            failed_in_a_row: 0,
            state: State::Idle,
        }
    }

    /// Half the managed TTL: a missed beat still leaves the lock alive until the next.
    pub const INTERVAL: Duration = Duration::from_millis(MANAGED_LOCK_TTL_MS / 2);
}

impl Machine for Heartbeat {
    type Output = ();

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<()> {
        loop {
            match &mut self.state {
                State::Done | State::Sleeping(_) => return Step::Wait,
                State::Finished => {
                    self.state = State::Done;
                    return Step::Done(());
                }
                State::Idle => {
                    if self.stop.is_stopped() {
                        self.state = State::Done;
                        return Step::Done(());
                    }
                    let id = cx.next_id();
                    self.state = State::Sleeping(id);
                    return Step::Effect(Effect::Sleep {
                        id,
                        duration: Self::INTERVAL,
                    });
                }
                State::Beating(m) => {
                    let reply = ready!(m.poll(&mut cx.with_backoff(&mut self.backoff)));
                    match reply {
                        Ok(TikvResponse::KvTxnHeartBeat(r)) if r.error.is_none() => {
                            self.failed_in_a_row = 0;
                        }
                        // A key error: the primary is gone (committed or rolled back), there
                        // is nothing left to keep alive.
                        Ok(_) => {
                            self.state = State::Done;
                            return Step::Done(());
                        }
                        Err(_) => {
                            self.failed_in_a_row += 1;
                            if self.failed_in_a_row >= MAX_FAILED_BEATS {
                                self.state = State::Done;
                                return Step::Done(());
                            }
                        }
                    }
                    self.state = State::Idle;
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::Sleeping(want) if *want == id => {
                let age = cx.now.saturating_duration_since(self.started);
                if self.stop.is_stopped() || age > MAX_TXN_TIME {
                    self.state = State::Finished;
                    return;
                }
                let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                let request = TikvRequest::KvTxnHeartBeat(kvrpcpb::TxnHeartBeatRequest {
                    primary_lock: self.primary.to_bytes(),
                    start_version: self.start_ts.as_u64(),
                    advise_lock_ttl: age_ms.saturating_add(MANAGED_LOCK_TTL_MS),
                    ..Default::default()
                });
                // An attempt whose answer is lost must not outlive the TTL margin the beat
                // is for: give up on it after half an interval and send again.
                let options = RpcOptions {
                    timeout: Some(Self::INTERVAL / 2),
                    ..RpcOptions::READ
                };
                let m = SingleKey::new(self.primary.clone(), request, options);
                self.backoff = Backoffer::new("heartbeat", cx.config.budget(budget::HEARTBEAT));
                self.state = State::Beating(Box::new(m));
            }
            State::Beating(m) => m.handle(&mut cx.with_backoff(&mut self.backoff), id, outcome),
            _ => {}
        }
    }
}
