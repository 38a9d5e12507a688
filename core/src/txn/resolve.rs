//! The lock resolver: decides the fate of other transactions' locks and cleans them up.
//!
//! For each lock: take a current timestamp (TSO), ask the owner's primary for the
//! transaction's status (`KvCheckTxnStatus`, allowed to roll back a transaction whose lock has
//! expired and that never wrote its primary), then — if the owner committed or rolled back —
//! apply that to the lock (`KvResolveLock` on the lock's key). Statuses are remembered, so many
//! locks of one transaction cost one check. Locks of transactions still alive are counted, with
//! how long until the earliest of them expires, so the caller can back off that long and read
//! again.
//!
//! Locks of async-commit transactions need `KvCheckSecondaryLocks` to be decided; until that
//! lands they are treated as alive (the reader waits for their owner to finish).

use std::collections::{BTreeMap, VecDeque};

use tikv_proto::kvrpcpb;

use crate::backoff::Backoffer;
use crate::error::Error;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::SingleKey;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::{KeyErrorKind, Lock, TxnStatus, key_error};

/// What resolving a set of locks achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Locks committed or rolled back by us (the reader may retry at once).
    pub cleaned: usize,
    /// Locks whose owners are still running (the reader must wait).
    pub alive: usize,
    /// Milliseconds until the earliest live lock expires (0 if none is alive).
    pub wait_ms: u64,
}

// Sub-machines are boxed: this state sits inside every reader and the committer.
#[derive(Debug)]
enum State {
    NeedTs,
    WaitingTs(EffectId),
    Next,
    Checking(Box<SingleKey>, Lock),
    Resolving(Box<SingleKey>),
    Failed(Box<Error>),
    Done,
}

/// Resolves locks met by a transaction started at `caller_start_ts`.
#[derive(Debug)]
pub struct ResolveLocks {
    locks: VecDeque<Lock>,
    caller_start_ts: Timestamp,
    current_ts: Timestamp,
    statuses: BTreeMap<Timestamp, TxnStatus>,
    backoff: Backoffer,
    result: Resolved,
    state: State,
}

impl ResolveLocks {
    /// Resolves `locks` (duplicates and locks of one transaction are handled once).
    pub fn new(locks: Vec<Lock>, caller_start_ts: Timestamp, backoff: Backoffer) -> Self {
        ResolveLocks {
            locks: locks.into(),
            caller_start_ts,
            current_ts: Timestamp::ZERO,
            statuses: BTreeMap::new(),
            backoff,
            result: Resolved::default(),
            state: State::NeedTs,
        }
    }

    /// Acts on `lock` given its owner's `status`.
    fn act(&mut self, lock: Lock, status: TxnStatus) {
        let commit_version = match status {
            TxnStatus::Committed(ts) => ts.as_u64(),
            TxnStatus::RolledBack => 0,
            TxnStatus::Alive { ttl_ms } => {
                let expires_at = lock.start_ts.physical_ms().saturating_add(ttl_ms);
                let wait = expires_at.saturating_sub(self.current_ts.physical_ms());
                self.result.alive += 1;
                self.result.wait_ms = if self.result.alive == 1 {
                    wait
                } else {
                    self.result.wait_ms.min(wait)
                };
                self.state = State::Next;
                return;
            }
        };
        let request = TikvRequest::KvResolveLock(kvrpcpb::ResolveLockRequest {
            start_version: lock.start_ts.as_u64(),
            commit_version,
            keys: vec![lock.key.to_bytes()],
            ..Default::default()
        });
        let machine = SingleKey::new(
            lock.key.clone(),
            request,
            RpcOptions::READ,
            self.backoff.clone(),
        );
        self.state = State::Resolving(Box::new(machine));
    }

    fn check(&mut self, lock: Lock) {
        let request = TikvRequest::KvCheckTxnStatus(kvrpcpb::CheckTxnStatusRequest {
            primary_key: lock.primary.to_bytes(),
            lock_ts: lock.start_ts.as_u64(),
            caller_start_ts: self.caller_start_ts.as_u64(),
            current_ts: self.current_ts.as_u64(),
            // Only an expired lock may lead to rolling back a primary that is not there yet
            // (its prewrite may still be on the way otherwise).
            rollback_if_not_exist: lock.expired(self.current_ts),
            ..Default::default()
        });
        let machine = SingleKey::new(
            lock.primary.clone(),
            request,
            RpcOptions::READ,
            self.backoff.clone(),
        );
        self.state = State::Checking(Box::new(machine), lock);
    }

    /// The status in a CheckTxnStatus reply.
    fn status(&self, lock: &Lock, response: TikvResponse) -> Result<TxnStatus, Error> {
        let TikvResponse::KvCheckTxnStatus(r) = response else {
            return Err(Error::KeyError {
                key: lock.primary.clone(),
                message: "unexpected reply to CheckTxnStatus".into(),
            });
        };
        if let Some(e) = &r.error {
            if e.txn_not_found.is_some() && !lock.expired(self.current_ts) {
                // The primary is not written yet and may still be: wait for the lock's TTL.
                return Ok(TxnStatus::Alive {
                    ttl_ms: lock.ttl_ms,
                });
            }
            return Err(match key_error(e, lock.start_ts) {
                KeyErrorKind::Fail(e) => e,
                other => Error::KeyError {
                    key: lock.primary.clone(),
                    message: format!("CheckTxnStatus: {other:?}"),
                },
            });
        }
        if r.commit_version > 0 {
            return Ok(TxnStatus::Committed(Timestamp::from_u64(r.commit_version)));
        }
        if r.lock_ttl > 0 {
            return Ok(TxnStatus::Alive { ttl_ms: r.lock_ttl });
        }
        Ok(TxnStatus::RolledBack)
    }
}

impl Machine for ResolveLocks {
    type Output = Result<Resolved, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Step::Wait,
                State::Failed(e) => return Step::Done(Err(*e)),
                State::NeedTs => {
                    if self.locks.is_empty() {
                        return Step::Done(Ok(self.result));
                    }
                    let id = cx.next_id();
                    self.state = State::WaitingTs(id);
                    return Step::Effect(Effect::Tso { id, count: 1 });
                }
                waiting @ State::WaitingTs(_) => {
                    self.state = waiting;
                    return Step::Wait;
                }
                State::Next => {
                    let Some(lock) = self.locks.pop_front() else {
                        return Step::Done(Ok(self.result));
                    };
                    match self.statuses.get(&lock.start_ts).copied() {
                        Some(status) => self.act(lock, status),
                        None => self.check(lock),
                    }
                }
                State::Checking(mut m, lock) => match m.poll(cx) {
                    Step::Effect(e) => {
                        self.state = State::Checking(m, lock);
                        return Step::Effect(e);
                    }
                    Step::Wait => {
                        self.state = State::Checking(m, lock);
                        return Step::Wait;
                    }
                    Step::Done(Err(e)) => return Step::Done(Err(e)),
                    Step::Done(Ok(response)) => match self.status(&lock, response) {
                        Ok(status) => {
                            self.statuses.insert(lock.start_ts, status);
                            self.act(lock, status);
                        }
                        Err(e) => return Step::Done(Err(e)),
                    },
                },
                State::Resolving(mut m) => match m.poll(cx) {
                    Step::Effect(e) => {
                        self.state = State::Resolving(m);
                        return Step::Effect(e);
                    }
                    Step::Wait => {
                        self.state = State::Resolving(m);
                        return Step::Wait;
                    }
                    Step::Done(Err(e)) => return Step::Done(Err(e)),
                    Step::Done(Ok(TikvResponse::KvResolveLock(r))) => {
                        if let Some(e) = &r.error {
                            return Step::Done(Err(Error::KeyError {
                                key: crate::key::Key::EMPTY,
                                message: format!("ResolveLock: {e:?}"),
                            }));
                        }
                        self.result.cleaned += 1;
                        self.state = State::Next;
                    }
                    Step::Done(Ok(_)) => {
                        return Step::Done(Err(Error::KeyError {
                            key: crate::key::Key::EMPTY,
                            message: "unexpected reply to ResolveLock".into(),
                        }));
                    }
                },
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::WaitingTs(want) if *want == id => match outcome {
                Outcome::Timestamps(Ok(ts)) => {
                    self.current_ts = ts;
                    self.state = State::Next;
                }
                // Without a current timestamp no lock can be judged.
                Outcome::Timestamps(Err(e)) => self.state = State::Failed(Box::new(e)),
                _ => {}
            },
            State::Checking(m, _) => m.handle(cx, id, outcome),
            State::Resolving(m) => m.handle(cx, id, outcome),
            _ => {}
        }
    }
}
