//! The lock resolver: decides the fate of other transactions' locks and cleans them up.
//!
//! For each lock: take a current timestamp (TSO), ask the owner's primary for the
//! transaction's status (`KvCheckTxnStatus`, allowed to roll back a transaction whose lock has
//! expired and that never wrote its primary), then — if the owner committed or rolled back —
//! apply that to the lock (`KvResolveLock` on the lock's key). Statuses are remembered, so many
//! locks of one transaction cost one check: within one resolution every status, and across
//! the client's operations the decided ones (in the shared
//! [`TxnStatusCache`](crate::txn::TxnStatusCache) the context carries). Locks of transactions still alive are counted, with
//! how long until the earliest of them expires, so the caller can back off that long and read
//! again.
//!
//! Locks of async-commit transactions need `KvCheckSecondaryLocks` to be decided; until that
//! lands they are treated as alive (the reader waits for their owner to finish).

use std::collections::{BTreeMap, VecDeque};

use tikv_proto::kvrpcpb;

use crate::backoff::BackoffKind;
use crate::error::Error;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::SingleKey;
use crate::ready;
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
    /// TSO failed: back off `pdRPC` within the budget and ask again.
    TsoFailed(Box<Error>),
    SleepingBeforeTs(EffectId),
    Checking(Box<SingleKey>, Lock),
    Resolving(Box<SingleKey>, Lock),
    Done,
}

/// Resolves locks met by a transaction started at `caller_start_ts`.
#[derive(Debug)]
pub struct ResolveLocks {
    locks: VecDeque<Lock>,
    caller_start_ts: Timestamp,
    current_ts: Timestamp,
    statuses: BTreeMap<Timestamp, TxnStatus>,
    result: Resolved,
    state: State,
}

impl ResolveLocks {
    /// Resolves `locks` (duplicates and locks of one transaction are handled once), retrying
    /// within the context's budget.
    pub fn new(locks: Vec<Lock>, caller_start_ts: Timestamp) -> Self {
        ResolveLocks {
            locks: locks.into(),
            caller_start_ts,
            current_ts: Timestamp::ZERO,
            statuses: BTreeMap::new(),
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
        let machine = SingleKey::new(lock.key.clone(), request, RpcOptions::READ);
        self.state = State::Resolving(Box::new(machine), lock);
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
        let machine = SingleKey::new(lock.primary.clone(), request, RpcOptions::READ);
        self.state = State::Checking(Box::new(machine), lock);
    }

    /// The status in a CheckTxnStatus reply, and whether it is decided for good (and so may
    /// be shared with the client's other operations).
    fn status(&self, lock: &Lock, response: TikvResponse) -> Result<(TxnStatus, bool), Error> {
        let TikvResponse::KvCheckTxnStatus(r) = response else {
            return Err(Error::KeyError {
                key: lock.primary.clone(),
                message: "unexpected reply to CheckTxnStatus".into(),
            });
        };
        if let Some(e) = &r.error {
            if e.txn_not_found.is_some() && !lock.expired(self.current_ts) {
                // The primary is not written yet and may still be: wait for the lock's TTL.
                let status = TxnStatus::Alive {
                    ttl_ms: lock.ttl_ms,
                };
                return Ok((status, false));
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
            let status = TxnStatus::Committed(Timestamp::from_u64(r.commit_version));
            return Ok((status, true));
        }
        if r.lock_ttl > 0 {
            return Ok((TxnStatus::Alive { ttl_ms: r.lock_ttl }, false));
        }
        // Gone without a commit. Only a rollback record makes that final (client-go's
        // `IsRolledBack`); a pessimistic rollback or a lock TiKV left alone is not, so those
        // are acted on here but not shared.
        use kvrpcpb::Action;
        let decided = matches!(
            Action::try_from(r.action),
            Ok(Action::NoAction | Action::TtlExpireRollback | Action::LockNotExistRollback)
        );
        Ok((TxnStatus::RolledBack, decided))
    }
}

impl ResolveLocks {
    fn finish(&mut self, result: Result<Resolved, Error>) -> Step<Result<Resolved, Error>> {
        self.state = State::Done;
        Step::Done(result)
    }
}

impl Machine for ResolveLocks {
    type Output = Result<Resolved, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                State::Done | State::WaitingTs(_) | State::SleepingBeforeTs(_) => {
                    return Step::Wait;
                }
                State::NeedTs => {
                    if self.locks.is_empty() {
                        return self.finish(Ok(self.result));
                    }
                    let id = cx.next_id();
                    self.state = State::WaitingTs(id);
                    return Step::Effect(Effect::Tso { id, count: 1 });
                }
                State::TsoFailed(error) => {
                    match cx.backoff_sleep(BackoffKind::PdRpc, None, error) {
                        Ok(sleep) => {
                            self.state = State::SleepingBeforeTs(sleep.id());
                            return Step::Effect(sleep);
                        }
                        // Without a current timestamp no lock can be judged.
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                State::Next => {
                    let Some(lock) = self.locks.pop_front() else {
                        return self.finish(Ok(self.result));
                    };
                    let known = self.statuses.get(&lock.start_ts).copied();
                    match known.or_else(|| cx.txn_statuses.get(lock.start_ts)) {
                        Some(status) => self.act(lock, status),
                        None => self.check(lock),
                    }
                }
                State::Checking(m, lock) => {
                    let reply = ready!(m.poll(cx));
                    let lock = lock.clone();
                    match reply.and_then(|r| self.status(&lock, r)) {
                        Ok((status, decided)) => {
                            if decided {
                                cx.txn_statuses.insert(lock.start_ts, status);
                            }
                            self.statuses.insert(lock.start_ts, status);
                            self.act(lock, status);
                        }
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                State::Resolving(m, lock) => {
                    let reply = ready!(m.poll(cx));
                    let failure = match reply {
                        Ok(TikvResponse::KvResolveLock(r)) => r.error.map(|e| format!("{e:?}")),
                        Ok(other) => Some(format!("unexpected reply {}", other.method_name())),
                        Err(e) => return self.finish(Err(e)),
                    };
                    if let Some(message) = failure {
                        let key = lock.key.clone();
                        return self.finish(Err(Error::KeyError {
                            key,
                            message: format!("ResolveLock: {message}"),
                        }));
                    }
                    self.result.cleaned += 1;
                    self.state = State::Next;
                }
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
                Outcome::Timestamps(Err(e)) => self.state = State::TsoFailed(Box::new(e)),
                _ => {}
            },
            State::SleepingBeforeTs(want) if *want == id => self.state = State::NeedTs,
            State::Checking(m, _) => m.handle(cx, id, outcome),
            State::Resolving(m, _) => m.handle(cx, id, outcome),
            _ => {}
        }
    }
}
