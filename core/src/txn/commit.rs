//! The committer: Percolator two-phase commit of a transaction's buffered writes.
//!
//! 1. **Prewrite** every key (grouped by region, batches sent concurrently), all naming the
//!    primary key. Locks of other transactions met on the way are resolved and the affected
//!    batches prewritten again; a write conflict or an existing key aborts the transaction,
//!    which rolls back what it prewrote.
//! 2. Take a **commit timestamp** from TSO.
//! 3. **Commit the primary**: the commit point. If the reply is lost the outcome is
//!    [`Error::Undetermined`], never a silent retry. `CommitTsExpired` takes a newer
//!    timestamp; a vanished lock means another client rolled the transaction back.
//! 4. **Commit the secondaries**. The transaction is already committed; a failure here only
//!    leaves locks that readers resolve to committed.

use std::time::Duration;

use tikv_proto::kvrpcpb;

use crate::backoff::{BackoffKind, Backoffer, budget};
use crate::config::Config;
use crate::error::Error;
use crate::key::Key;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::{BatchLimits, BatchPlan, MultiKey, SingleKey};
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::buffer::{Mutation, WriteBuffer};
use crate::txn::lock::{KeyErrorKind, Lock, key_error};
use crate::txn::resolve::{ResolveLocks, Resolved};

/// Bytes per prewrite/commit request (client-go's `TxnCommitBatchSize`, 16 KiB).
pub const COMMIT_BATCH_SIZE: usize = 16 * 1024;

/// Lock TTL for a transaction of `size` bytes (client-go's `txnLockTTL`): 3 s for small
/// transactions, growing with the square root of the size, at most 20 s.
pub fn lock_ttl_ms(size: usize) -> u64 {
    const DEFAULT_TTL: u64 = 3000;
    const MAX_TTL: u64 = 20_000;
    if size < COMMIT_BATCH_SIZE {
        return DEFAULT_TTL;
    }
    let mib = size as f64 / (1024.0 * 1024.0);
    ((6000.0 * mib.sqrt()) as u64).clamp(DEFAULT_TTL, MAX_TTL)
}

/// A key and its intended change.
type Item = (Key, Mutation);

/// Locks met by a prewrite, and the items to prewrite again once they are resolved.
type Blocked = (Vec<Lock>, Vec<Item>);

/// Batch plan: `KvPrewrite`.
#[derive(Debug)]
pub struct PrewritePlan {
    primary: Key,
    start_ts: Timestamp,
    lock_ttl: u64,
    txn_size: u64,
    /// Ask for 1PC — honoured only by a request that carries every mutation, so a
    /// transaction split over regions can never be committed piecewise.
    try_one_pc: bool,
}

impl BatchPlan for PrewritePlan {
    type Item = (Key, Mutation);
    fn key(item: &Self::Item) -> &Key {
        &item.0
    }
    fn size(item: &Self::Item) -> usize {
        item.0.len() + item.1.value().map_or(0, |v| v.len())
    }
    fn build(&self, items: &[Self::Item]) -> TikvRequest {
        TikvRequest::KvPrewrite(kvrpcpb::PrewriteRequest {
            mutations: items.iter().map(|(k, m)| m.to_proto(k)).collect(),
            primary_lock: self.primary.to_bytes(),
            start_version: self.start_ts.as_u64(),
            lock_ttl: self.lock_ttl,
            txn_size: self.txn_size,
            try_one_pc: self.try_one_pc && items.len() as u64 == self.txn_size,
            ..Default::default()
        })
    }
}

/// Batch plan: `KvCommit` of secondaries, or `KvBatchRollback`.
#[derive(Debug)]
pub struct KeysPlan {
    start_ts: Timestamp,
    /// `Some(commit_ts)` commits; `None` rolls back.
    commit_ts: Option<Timestamp>,
}

impl BatchPlan for KeysPlan {
    type Item = Key;
    fn key(item: &Key) -> &Key {
        item
    }
    fn size(item: &Key) -> usize {
        item.len()
    }
    fn build(&self, items: &[Key]) -> TikvRequest {
        let keys = items.iter().map(Key::to_bytes).collect();
        match self.commit_ts {
            Some(ts) => TikvRequest::KvCommit(kvrpcpb::CommitRequest {
                start_version: self.start_ts.as_u64(),
                commit_version: ts.as_u64(),
                keys,
                ..Default::default()
            }),
            None => TikvRequest::KvBatchRollback(kvrpcpb::BatchRollbackRequest {
                start_version: self.start_ts.as_u64(),
                keys,
                ..Default::default()
            }),
        }
    }
}

// Sub-machines are boxed to keep the state small.
#[derive(Debug)]
enum State {
    StartPrewrite(Vec<(Key, Mutation)>),
    Prewriting(Box<MultiKey<PrewritePlan>>),
    Resolving(Box<ResolveLocks>, Vec<(Key, Mutation)>),
    WaitBeforeRetry(Resolved, Vec<(Key, Mutation)>),
    Sleeping(EffectId, Vec<(Key, Mutation)>),
    NeedCommitTs,
    GettingCommitTs(EffectId),
    CommittingPrimary(Box<SingleKey>),
    CommittingSecondaries(Box<MultiKey<KeysPlan>>),
    RollingBack(Box<MultiKey<KeysPlan>>, Box<Error>),
    Done,
}

/// Commits one transaction's writes.
#[derive(Debug)]
pub struct Committer {
    start_ts: Timestamp,
    primary: Key,
    keys: Vec<Key>,
    lock_ttl: u64,
    txn_size: u64,
    commit_ts: Timestamp,
    prewrite_backoff: Backoffer,
    commit_backoff: Backoffer,
    limits: BatchLimits,
    write_options: RpcOptions,
    /// Whether the first prewrite asks for 1PC.
    try_one_pc: bool,
    state: State,
}

impl Committer {
    /// Commits `buffer` for the transaction started at `start_ts`. The first key (in key
    /// order) is the primary. An empty buffer commits trivially.
    pub fn new(config: &Config, start_ts: Timestamp, buffer: &WriteBuffer) -> Self {
        let mutations: Vec<(Key, Mutation)> =
            buffer.iter().map(|(k, m)| (k.clone(), m.clone())).collect();
        let primary = mutations
            .first()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let keys = mutations.iter().map(|(k, _)| k.clone()).collect();
        Committer {
            start_ts,
            primary,
            keys,
            lock_ttl: lock_ttl_ms(buffer.size()),
            txn_size: buffer.len() as u64,
            commit_ts: Timestamp::ZERO,
            prewrite_backoff: Backoffer::new("prewrite", config.budget(budget::PREWRITE)),
            commit_backoff: Backoffer::new("commit", config.budget(budget::COMMIT)),
            limits: BatchLimits {
                max_items: usize::MAX,
                max_bytes: COMMIT_BATCH_SIZE,
            },
            write_options: RpcOptions {
                idempotent: true,
                max_execution: Some(config.max_write_execution),
            },
            try_one_pc: config.try_one_pc && buffer.size() <= COMMIT_BATCH_SIZE,
            state: State::StartPrewrite(mutations),
        }
    }

    /// The primary key (empty for an empty transaction).
    pub fn primary(&self) -> &Key {
        &self.primary
    }

    fn rollback(&mut self, error: Error) {
        let plan = KeysPlan {
            start_ts: self.start_ts,
            commit_ts: None,
        };
        let backoff = Backoffer::new("rollback", budget::CLEANUP);
        let m = MultiKey::new(
            plan,
            self.keys.clone(),
            self.limits_for_keys(),
            self.write_options,
            backoff,
        );
        self.state = State::RollingBack(Box::new(m), Box::new(error));
    }

    fn limits_for_keys(&self) -> BatchLimits {
        // Keys only: client-go sizes these batches by key bytes too.
        self.limits
    }

    /// Reads the prewrite replies: locks to resolve (and the items to prewrite again), or the
    /// error that aborts the transaction.
    fn prewrite_results(&self, replies: Vec<(Vec<Item>, TikvResponse)>) -> Result<Blocked, Error> {
        let mut locks = Vec::new();
        let mut retry = Vec::new();
        for (items, reply) in replies {
            let TikvResponse::KvPrewrite(r) = reply else {
                return Err(Error::KeyError {
                    key: Key::EMPTY,
                    message: "unexpected reply to KvPrewrite".into(),
                });
            };
            let mut batch_locked = false;
            for e in &r.errors {
                match key_error(e, self.start_ts) {
                    KeyErrorKind::Locked(lock) => {
                        locks.push(lock);
                        batch_locked = true;
                    }
                    KeyErrorKind::Fail(e) => return Err(e),
                    other => {
                        return Err(Error::KeyError {
                            key: Key::EMPTY,
                            message: format!("prewrite: {other:?}"),
                        });
                    }
                }
            }
            if batch_locked {
                // Prewrite is idempotent: the batch's locked keys are written again whole.
                retry.extend(items);
            }
        }
        Ok((locks, retry))
    }
}

impl Machine for Committer {
    type Output = Result<Timestamp, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Step::Wait,
                State::StartPrewrite(items) => {
                    if items.is_empty() && self.keys.is_empty() {
                        // Nothing written: nothing to commit; the start timestamp stands.
                        return Step::Done(Ok(self.start_ts));
                    }
                    let plan = PrewritePlan {
                        primary: self.primary.clone(),
                        start_ts: self.start_ts,
                        lock_ttl: self.lock_ttl,
                        txn_size: self.txn_size,
                        // Only the first attempt: a retry after resolving locks carries part of
                        // the keys, and those already prewritten hold locks anyway.
                        try_one_pc: std::mem::take(&mut self.try_one_pc),
                    };
                    let m = MultiKey::new(
                        plan,
                        items,
                        self.limits,
                        self.write_options,
                        self.prewrite_backoff.clone(),
                    );
                    self.state = State::Prewriting(Box::new(m));
                }
                State::Prewriting(mut m) => match m.poll(cx) {
                    Step::Done(Ok(replies)) if one_pc_commit_ts(&replies).is_some() => {
                        // Committed at prewrite: no locks to commit.
                        return Step::Done(Ok(one_pc_commit_ts(&replies).unwrap_or(self.start_ts)));
                    }
                    // A 1PC attempt that TiKV declined left ordinary locks: carry on with 2PC.
                    Step::Done(Ok(replies)) => match self.prewrite_results(replies) {
                        Ok((locks, _)) if locks.is_empty() => self.state = State::NeedCommitTs,
                        Ok((locks, retry)) => {
                            let resolver = ResolveLocks::new(
                                locks,
                                self.start_ts,
                                self.prewrite_backoff.clone(),
                            );
                            self.state = State::Resolving(Box::new(resolver), retry);
                        }
                        Err(e) => self.rollback(e),
                    },
                    Step::Done(Err(e)) => self.rollback(e),
                    other => {
                        self.state = State::Prewriting(m);
                        return other.forward();
                    }
                },
                State::Resolving(mut m, retry) => match m.poll(cx) {
                    Step::Done(Ok(resolved)) if resolved.alive == 0 => {
                        self.state = State::StartPrewrite(retry)
                    }
                    Step::Done(Ok(resolved)) => {
                        self.state = State::WaitBeforeRetry(resolved, retry)
                    }
                    Step::Done(Err(e)) => self.rollback(e),
                    other => {
                        self.state = State::Resolving(m, retry);
                        return other.forward();
                    }
                },
                State::WaitBeforeRetry(resolved, retry) => {
                    let cap = Duration::from_millis(resolved.wait_ms.max(1));
                    let why = Error::KeyError {
                        key: Key::EMPTY,
                        message: format!(
                            "{} key(s) locked by running transactions",
                            resolved.alive
                        ),
                    };
                    match self.prewrite_backoff.next_sleep_capped(
                        BackoffKind::TxnLock,
                        Some(cap),
                        &why,
                        cx.rng,
                    ) {
                        Ok(duration) => {
                            let id = cx.next_id();
                            self.state = State::Sleeping(id, retry);
                            return Step::Effect(Effect::Sleep { id, duration });
                        }
                        Err(e) => self.rollback(e),
                    }
                }
                State::Sleeping(id, retry) => {
                    self.state = State::Sleeping(id, retry);
                    return Step::Wait;
                }
                State::NeedCommitTs => {
                    let id = cx.next_id();
                    self.state = State::GettingCommitTs(id);
                    return Step::Effect(Effect::Tso { id, count: 1 });
                }
                State::GettingCommitTs(id) => {
                    self.state = State::GettingCommitTs(id);
                    return Step::Wait;
                }
                State::CommittingPrimary(mut m) => match m.poll(cx) {
                    Step::Done(Ok(TikvResponse::KvCommit(r))) => {
                        match r.error.as_ref().map(|e| key_error(e, self.start_ts)) {
                            None => {
                                let secondaries: Vec<Key> = self
                                    .keys
                                    .iter()
                                    .filter(|k| **k != self.primary)
                                    .cloned()
                                    .collect();
                                if secondaries.is_empty() {
                                    return Step::Done(Ok(self.commit_ts));
                                }
                                let plan = KeysPlan {
                                    start_ts: self.start_ts,
                                    commit_ts: Some(self.commit_ts),
                                };
                                let backoff = Backoffer::new(
                                    "commit secondaries",
                                    cx.config.budget(budget::COMMIT_SECONDARY),
                                );
                                let m = MultiKey::new(
                                    plan,
                                    secondaries,
                                    self.limits,
                                    self.write_options,
                                    backoff,
                                );
                                self.state = State::CommittingSecondaries(Box::new(m));
                            }
                            // The commit timestamp is too old for a lock that was pushed: take a
                            // newer one and commit again.
                            Some(KeyErrorKind::CommitTsExpired { .. }) => {
                                self.state = State::NeedCommitTs
                            }
                            Some(KeyErrorKind::Fail(e @ Error::TxnAborted { .. })) => {
                                return Step::Done(Err(e));
                            }
                            Some(KeyErrorKind::Fail(e)) => self.rollback(e),
                            Some(other) => self.rollback(Error::KeyError {
                                key: self.primary.clone(),
                                message: format!("commit: {other:?}"),
                            }),
                        }
                    }
                    Step::Done(Ok(_)) => self.rollback(Error::KeyError {
                        key: self.primary.clone(),
                        message: "unexpected reply to KvCommit".into(),
                    }),
                    // A lost reply leaves the outcome unknown: report it, never guess.
                    Step::Done(Err(e @ Error::Undetermined { .. })) => return Step::Done(Err(e)),
                    Step::Done(Err(e)) => self.rollback(e),
                    other => {
                        self.state = State::CommittingPrimary(m);
                        return other.forward();
                    }
                },
                State::CommittingSecondaries(mut m) => match m.poll(cx) {
                    // Committed at the primary; leftover secondary locks resolve to committed.
                    Step::Done(_) => return Step::Done(Ok(self.commit_ts)),
                    other => {
                        self.state = State::CommittingSecondaries(m);
                        return other.forward();
                    }
                },
                State::RollingBack(mut m, error) => match m.poll(cx) {
                    // Best effort: locks left behind expire and are rolled back by readers.
                    Step::Done(_) => return Step::Done(Err(*error)),
                    other => {
                        self.state = State::RollingBack(m, error);
                        return other.forward();
                    }
                },
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::Prewriting(m) => m.handle(cx, id, outcome),
            State::Resolving(m, _) => m.handle(cx, id, outcome),
            State::Sleeping(want, retry) if *want == id => {
                self.state = State::StartPrewrite(std::mem::take(retry))
            }
            State::GettingCommitTs(want) if *want == id => match outcome {
                Outcome::Timestamps(Ok(ts)) => {
                    self.commit_ts = ts;
                    let request = TikvRequest::KvCommit(kvrpcpb::CommitRequest {
                        start_version: self.start_ts.as_u64(),
                        commit_version: ts.as_u64(),
                        keys: vec![self.primary.to_bytes()],
                        primary_key: self.primary.to_bytes(),
                        ..Default::default()
                    });
                    // Not idempotent for the caller: a lost reply is Undetermined.
                    let options = RpcOptions {
                        idempotent: false,
                        max_execution: self.write_options.max_execution,
                    };
                    let m = SingleKey::new(
                        self.primary.clone(),
                        request,
                        options,
                        self.commit_backoff.clone(),
                    );
                    self.state = State::CommittingPrimary(Box::new(m));
                }
                Outcome::Timestamps(Err(e)) => self.rollback(e),
                _ => {}
            },
            State::CommittingPrimary(m) => m.handle(cx, id, outcome),
            State::CommittingSecondaries(m) => m.handle(cx, id, outcome),
            State::RollingBack(m, _) => m.handle(cx, id, outcome),
            _ => {}
        }
    }
}

/// The 1PC commit timestamp when the prewrite committed the transaction: one request, no
/// errors, and a non-zero `one_pc_commit_ts`.
fn one_pc_commit_ts(replies: &[(Vec<Item>, TikvResponse)]) -> Option<Timestamp> {
    match replies {
        [(_, TikvResponse::KvPrewrite(r))] if r.errors.is_empty() && r.one_pc_commit_ts > 0 => {
            Some(Timestamp::from_u64(r.one_pc_commit_ts))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ttl_grows_with_size() {
        assert_eq!(lock_ttl_ms(10), 3000);
        assert_eq!(lock_ttl_ms(4 << 20), 12_000);
        assert_eq!(lock_ttl_ms(1 << 30), 20_000);
    }
}
