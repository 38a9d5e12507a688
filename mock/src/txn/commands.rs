//! Whole transactional commands (TiKV's `src/storage/txn/commands/`): each runs its
//! actions over a snapshot and either applies all its changes or none.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb::LockInfo;
use tikv_proto::kvrpcpb::prewrite_request::PessimisticAction;

use super::TxnEngine;
use super::actions::check_txn_status::{
    CheckFlags, check_determined_txn_status, check_txn_status_lock_exists,
};
use super::actions::cleanup::{
    MissingLockAction, check_txn_status_missing_lock, cleanup, collapse_prev_rollback,
    make_rollback,
};
use super::actions::commit::commit;
use super::actions::pessimistic_lock::{KeyResult, LockParams, acquire_pessimistic_lock};
use super::actions::prewrite::{CommitKind, Mutation, TxnKind, TxnProps, prewrite};
use super::error::{TxnError, TxnResult};
use super::store::{CommitRecord, KeyRange, MvccTxn, ReleasedLock, TxnStore};
use super::types::{Lock, TxnStatus, Write, WriteType};

/// TiKV's `FORWARD_MIN_MUTATIONS_NUM`: bigger optimistic prewrites over an empty range skip
/// the constraint check.
const FORWARD_MIN_MUTATIONS_NUM: usize = 12;

/// A prewrite request, decoded.
#[derive(Clone, Debug)]
pub(crate) struct PrewriteCmd {
    pub(crate) mutations: Vec<(Mutation, PessimisticAction, Option<u64>)>,
    pub(crate) props: TxnProps,
    pub(crate) secondaries: Option<Vec<Bytes>>,
    pub(crate) try_one_pc: bool,
    pub(crate) max_commit_ts: u64,
}

/// What a prewrite answers.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrewriteOutcome {
    pub(crate) locks: Vec<TxnError>,
    pub(crate) min_commit_ts: u64,
    pub(crate) one_pc_commit_ts: u64,
}

/// The status CheckSecondaryLocks reports.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SecondaryStatus {
    Locked(Vec<LockInfo>),
    Committed(u64),
    RolledBack,
}

/// Keys walked by commands that scan the region: the region's raw range plus a filter.
pub(crate) struct RegionScope<'a> {
    pub(crate) range: KeyRange<'a>,
    pub(crate) contains: &'a dyn Fn(&[u8]) -> bool,
}

impl TxnEngine {
    /// Applies a successful command and wakes lock waiters on released keys.
    pub(crate) fn finish(&mut self, txn: MvccTxn, now_ms: u64) -> Vec<ReleasedLock> {
        let released = txn.released.clone();
        self.store.apply(txn.modifies);
        self.on_released(&released, now_ms);
        released
    }

    /// `Prewrite` / `PrewritePessimistic`.
    pub(crate) fn prewrite(
        &mut self,
        mut cmd: PrewriteCmd,
        now_ms: u64,
    ) -> TxnResult<PrewriteOutcome> {
        let start_ts = cmd.props.start_ts;
        if let TxnKind::Pessimistic { .. } = cmd.props.kind {
            // A prewrite of a transaction known to be committed is a late or retried one:
            // TiKV treats it as a retry so non-locked keys are checked against the write
            // column again instead of being prewritten a second time (tikv#11187).
            if self.status.committed(start_ts).is_some() {
                cmd.props.is_retry_request = true;
            }
        }
        if let TxnKind::Optimistic { .. } = cmd.props.kind {
            if cmd.mutations.len() > FORWARD_MIN_MUTATIONS_NUM {
                cmd.mutations.sort_by(|a, b| a.0.key.cmp(&b.0.key));
                let lo = cmd
                    .mutations
                    .first()
                    .map(|m| m.0.key.clone())
                    .unwrap_or_default();
                let hi = cmd
                    .mutations
                    .last()
                    .map(|m| m.0.key.clone())
                    .unwrap_or_default();
                let has_data = self
                    .store
                    .keys_in(
                        KeyRange {
                            lower: Some(&lo),
                            upper: None,
                        },
                        false,
                    )
                    .take_while(|k| k[..] <= hi[..])
                    .any(|k| self.store.writes_of(k).next().is_some());
                if !has_data {
                    cmd.props.kind = TxnKind::Optimistic {
                        skip_constraint_check: true,
                    };
                }
            }
        }
        cmd.props.commit_kind = match (&cmd.secondaries, cmd.try_one_pc) {
            (_, true) => CommitKind::OnePc(cmd.max_commit_ts),
            (Some(_), false) => CommitKind::Async(cmd.max_commit_ts),
            (None, false) => CommitKind::TwoPc,
        };
        let mut txn = MvccTxn::new(start_ts);
        let store = &self.store;
        let cm = &mut self.cm;
        let mut async_pk = cmd
            .secondaries
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(|_| cmd.props.primary.clone());
        let mut final_min_commit_ts = 0;
        let mut locks = Vec::new();
        let mut assertion_failure = None;
        let mut early: Option<u64> = None;

        for (m, action, expected) in std::mem::take(&mut cmd.mutations) {
            let key = m.key.clone();
            let secondaries = match &cmd.secondaries {
                Some(all) if async_pk.as_ref() == Some(&key) => Some(all.clone()),
                Some(_) => Some(Vec::new()),
                None => None,
            };
            let need_min_commit_ts = secondaries.is_some() || cmd.try_one_pc;
            let res = prewrite(
                &mut txn,
                store,
                cm,
                &cmd.props,
                m,
                &secondaries,
                action,
                expected,
                0,
            );
            let fallback =
                |cmd: &mut PrewriteCmd, txn: &mut MvccTxn, async_pk: &mut Option<Bytes>| {
                    cmd.props.commit_kind = CommitKind::TwoPc;
                    *async_pk = None;
                    cmd.secondaries = None;
                    cmd.try_one_pc = false;
                    for (k, l, _) in std::mem::take(&mut txn.locks_for_1pc) {
                        txn.put_lock(k, l);
                    }
                };
            match res {
                Ok(ts) if !(need_min_commit_ts && ts == 0) => {
                    if need_min_commit_ts && final_min_commit_ts < ts {
                        final_min_commit_ts = ts;
                    }
                }
                Ok(_) => {
                    // A retried key that was prewritten without async commit / 1PC earlier.
                    fallback(&mut cmd, &mut txn, &mut async_pk);
                    final_min_commit_ts = 0;
                }
                Err(e) => {
                    let committed = || store.commit_record(&key, start_ts).committed_ts();
                    match e {
                        TxnError::WriteConflict {
                            start_ts: s,
                            conflict_commit_ts,
                            ..
                        } if conflict_commit_ts > s => match committed() {
                            Some(ts) => {
                                early = Some(ts);
                                break;
                            }
                            None => return Err(e),
                        },
                        TxnError::PessimisticLockNotFound { .. } => match committed() {
                            Some(ts) => {
                                early = Some(ts);
                                break;
                            }
                            None => return Err(e),
                        },
                        TxnError::CommitTsTooLarge { .. } => {
                            if let Some(ts) = committed() {
                                early = Some(ts);
                                break;
                            }
                            fallback(&mut cmd, &mut txn, &mut async_pk);
                            final_min_commit_ts = 0;
                        }
                        TxnError::KeyIsLocked(_) => match committed() {
                            Some(ts) => {
                                early = Some(ts);
                                break;
                            }
                            None => locks.push(e),
                        },
                        TxnError::AssertionFailed { .. } => {
                            if assertion_failure.is_none() {
                                assertion_failure = Some(e);
                            }
                        }
                        e => return Err(e),
                    }
                }
            }
        }
        if let Some(commit_ts) = early {
            // The transaction was already committed: a retried prewrite succeeds without
            // writing, answering the commit ts in place of the min commit ts.
            txn.clear();
            locks.clear();
            final_min_commit_ts = commit_ts;
        } else if let Some(e) = assertion_failure {
            return Err(e);
        }

        let async_commit_ts = if cmd.secondaries.is_some() {
            final_min_commit_ts
        } else {
            0
        };
        if !locks.is_empty() {
            // Nothing is written when any key is locked.
            return Ok(PrewriteOutcome {
                locks,
                min_commit_ts: async_commit_ts,
                one_pc_commit_ts: 0,
            });
        }
        let one_pc_commit_ts = if cmd.try_one_pc {
            for (key, lock, had_pessimistic) in std::mem::take(&mut txn.locks_for_1pc) {
                if let Some(t) = WriteType::from_lock_type(lock.lock_type) {
                    let w = Write::new(t, start_ts, lock.value.clone());
                    txn.put_write(key.clone(), final_min_commit_ts, w);
                }
                if had_pessimistic {
                    txn.unlock_key(key, final_min_commit_ts);
                }
            }
            final_min_commit_ts
        } else {
            0
        };
        self.finish(txn, now_ms);
        if one_pc_commit_ts != 0 {
            self.status
                .insert_committed(start_ts, one_pc_commit_ts, now_ms);
        }
        Ok(PrewriteOutcome {
            locks: Vec::new(),
            min_commit_ts: async_commit_ts,
            one_pc_commit_ts,
        })
    }

    /// `Commit`: all keys or none.
    pub(crate) fn commit(
        &mut self,
        keys: &[Bytes],
        start_ts: u64,
        commit_ts: u64,
        now_ms: u64,
    ) -> TxnResult<u64> {
        if commit_ts <= start_ts {
            return Err(TxnError::InvalidTxnTso {
                start_ts,
                commit_ts,
            });
        }
        let mut txn = MvccTxn::new(start_ts);
        for k in keys {
            commit(&mut txn, &self.store, k, commit_ts)?;
        }
        self.finish(txn, now_ms);
        self.status.insert_committed(start_ts, commit_ts, now_ms);
        Ok(commit_ts)
    }

    /// `Rollback` (KvBatchRollback): unprotected rollbacks of every key.
    pub(crate) fn rollback(&mut self, keys: &[Bytes], start_ts: u64, now_ms: u64) -> TxnResult<()> {
        let mut txn = MvccTxn::new(start_ts);
        for k in keys {
            cleanup(&mut txn, &self.store, k, 0, false)?;
        }
        self.finish(txn, now_ms);
        Ok(())
    }

    /// `Cleanup` (KvCleanup): a protected rollback of one key if its lock expired.
    pub(crate) fn cleanup(
        &mut self,
        key: &Bytes,
        start_ts: u64,
        current_ts: u64,
        now_ms: u64,
    ) -> TxnResult<()> {
        let mut txn = MvccTxn::new(start_ts);
        cleanup(&mut txn, &self.store, key, current_ts, true)?;
        self.finish(txn, now_ms);
        Ok(())
    }

    /// `CheckTxnStatus`.
    pub(crate) fn check_txn_status(
        &mut self,
        primary: &Bytes,
        lock_ts: u64,
        f: CheckFlags,
        now_ms: u64,
    ) -> TxnResult<TxnStatus> {
        // Pushing max_ts here keeps a later async-commit prewrite from committing below a
        // reader that already decided to ignore a lock.
        let mut new_max = lock_ts;
        if f.current_ts != u64::MAX && f.current_ts > new_max {
            new_max = f.current_ts;
        }
        if f.caller_start_ts != u64::MAX && f.caller_start_ts > new_max {
            new_max = f.caller_start_ts;
        }
        self.cm.update_max_ts(new_max);
        if let Some(holders) = self.store.shared(primary) {
            // A shared key is never a primary.
            return Err(TxnError::PrimaryMismatch(Box::new(
                holders.lock_info(primary),
            )));
        }
        let mut txn = MvccTxn::new(lock_ts);
        let status = match self.store.lock(primary) {
            Some(lock) if lock.ts == lock_ts => {
                check_txn_status_lock_exists(&mut txn, &self.store, primary, lock.clone(), f)?
            }
            other => check_txn_status_missing_lock(
                &mut txn,
                &self.store,
                primary,
                other.cloned(),
                MissingLockAction::rollback(f.rollback_if_not_exist),
                f.resolving_pessimistic_lock,
            )?,
        };
        self.finish(txn, now_ms);
        if let TxnStatus::Committed { commit_ts } = status {
            self.status.insert_committed(lock_ts, commit_ts, now_ms);
        }
        Ok(status)
    }

    /// `CheckSecondaryLocks`: the async-commit resolution. A missing (or pessimistic)
    /// secondary lock is rolled back with a protected rollback so the transaction can no
    /// longer commit.
    pub(crate) fn check_secondary_locks(
        &mut self,
        keys: &[Bytes],
        start_ts: u64,
        now_ms: u64,
    ) -> TxnResult<SecondaryStatus> {
        self.cm.update_max_ts(start_ts);
        let mut txn = MvccTxn::new(start_ts);
        let store = &self.store;
        let mut result = SecondaryStatus::Locked(Vec::new());
        for key in keys {
            let mut mismatch: Option<Lock> = None;
            let (status, need_rollback, overlapped) = match store.lock(key) {
                Some(lock) if lock.ts == start_ts => {
                    let mut overlapped = None;
                    let mut decided = None;
                    if lock.is_pessimistic_lock_with_conflict() {
                        let (s, need, o) = determined(store, key, start_ts);
                        if !need {
                            txn.unlock_key(key.clone(), 0);
                            decided = Some((s, false, o));
                        } else {
                            overlapped = o;
                        }
                    }
                    match decided {
                        Some(d) => d,
                        None if lock.is_pessimistic_lock() => {
                            txn.unlock_key(key.clone(), 0);
                            let o = if lock.is_pessimistic_lock_with_conflict() {
                                overlapped
                            } else {
                                match store.commit_record(key, start_ts) {
                                    CommitRecord::None { overlapped } => overlapped,
                                    _ => None,
                                }
                            };
                            (SecondaryStatus::RolledBack, true, o)
                        }
                        None => (
                            SecondaryStatus::Locked(vec![lock.lock_info(key)]),
                            false,
                            None,
                        ),
                    }
                }
                other => {
                    mismatch = other.cloned();
                    determined(store, key, start_ts)
                }
            };
            if need_rollback {
                if let Some(l) = mismatch {
                    txn.mark_rollback_on_mismatching_lock(key, l, true);
                }
                if let Some(w) = make_rollback(start_ts, true, overlapped) {
                    txn.put_write(key.clone(), start_ts, w);
                    collapse_prev_rollback(&mut txn, store, key);
                }
            }
            match status {
                SecondaryStatus::Locked(mut infos) => {
                    if let SecondaryStatus::Locked(all) = &mut result {
                        all.append(&mut infos);
                    }
                }
                s => {
                    result = s;
                    break;
                }
            }
        }
        self.finish(txn, now_ms);
        if let SecondaryStatus::Committed(commit_ts) = result {
            self.status.insert_committed(start_ts, commit_ts, now_ms);
        }
        Ok(result)
    }

    /// `TxnHeartBeat`: extends the primary lock's TTL (never shortens it).
    pub(crate) fn txn_heart_beat(
        &mut self,
        primary: &Bytes,
        start_ts: u64,
        advise_ttl: u64,
        min_commit_ts: u64,
        now_ms: u64,
    ) -> TxnResult<u64> {
        if let Some(holders) = self.store.shared(primary) {
            if holders.holders.contains_key(&start_ts) {
                return Err(TxnError::PrimaryMismatch(Box::new(
                    holders.lock_info(primary),
                )));
            }
        }
        let mut txn = MvccTxn::new(start_ts);
        let ttl = match self.store.lock(primary) {
            Some(lock) if lock.ts == start_ts => {
                let mut lock = lock.clone();
                let mut updated = false;
                if lock.ttl < advise_ttl {
                    lock.ttl = advise_ttl;
                    updated = true;
                }
                // Only pipelined (flushed) non-async transactions may push min_commit_ts.
                if !lock.use_async_commit
                    && lock.generation > 0
                    && min_commit_ts > 0
                    && lock.min_commit_ts < min_commit_ts
                {
                    lock.min_commit_ts = min_commit_ts;
                    updated = true;
                }
                let ttl = lock.ttl;
                if updated {
                    txn.put_lock(primary.clone(), lock);
                }
                ttl
            }
            _ => {
                return Err(TxnError::TxnNotFound {
                    start_ts,
                    key: primary.clone(),
                });
            }
        };
        self.finish(txn, now_ms);
        Ok(ttl)
    }

    /// `ResolveLock` with keys (`ResolveLockLite`): commit (commit_ts > 0) or roll back the
    /// listed keys of one transaction.
    pub(crate) fn resolve_lock_keys(
        &mut self,
        keys: &[Bytes],
        start_ts: u64,
        commit_ts: u64,
        now_ms: u64,
    ) -> TxnResult<()> {
        let mut txn = MvccTxn::new(start_ts);
        for key in keys {
            if commit_ts != 0 {
                commit(&mut txn, &self.store, key, commit_ts)?;
            } else {
                cleanup(&mut txn, &self.store, key, 0, false)?;
            }
        }
        self.finish(txn, now_ms);
        if commit_ts != 0 {
            self.status.insert_committed(start_ts, commit_ts, now_ms);
        }
        Ok(())
    }

    /// `ResolveLock` without keys: every lock in the region of a transaction in
    /// `txn_status` (start ts → commit ts, 0 = roll back).
    pub(crate) fn resolve_lock_scan(
        &mut self,
        txn_status: &BTreeMap<u64, u64>,
        scope: &RegionScope<'_>,
        now_ms: u64,
    ) -> TxnResult<()> {
        let mut targets: Vec<(Bytes, Lock)> = self
            .store
            .locks_in(scope.range)
            .filter(|(k, l)| (scope.contains)(k) && txn_status.contains_key(&l.ts))
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        // Shared locks are resolved holder by holder.
        for (key, holders) in self.store.shared_in(scope.range) {
            if (scope.contains)(key) {
                targets.extend(
                    holders
                        .holders
                        .values()
                        .filter(|l| txn_status.contains_key(&l.ts))
                        .map(|l| (key.clone(), l.clone())),
                );
            }
        }
        let mut released = Vec::new();
        let mut modifies = Vec::new();
        let mut known = Vec::new();
        for (key, lock) in targets {
            let commit_ts = txn_status.get(&lock.ts).copied().unwrap_or(0);
            let mut txn = MvccTxn::new(lock.ts);
            // Later holders of one key see the earlier ones' changes.
            txn.modifies = std::mem::take(&mut modifies);
            if commit_ts == 0 {
                cleanup(&mut txn, &self.store, &key, 0, false)?;
            } else if commit_ts > lock.ts {
                match commit(&mut txn, &self.store, &key, commit_ts) {
                    Ok(()) => known.push((lock.ts, commit_ts)),
                    // A leftover pessimistic lock of a transaction committed without it.
                    Err(TxnError::TxnLockNotFound { .. }) if lock.is_pessimistic_lock() => {}
                    Err(e) => return Err(e),
                }
            } else {
                return Err(TxnError::InvalidTxnTso {
                    start_ts: lock.ts,
                    commit_ts,
                });
            }
            released.extend(txn.released);
            modifies = txn.modifies;
        }
        let mut all = MvccTxn::new(0);
        all.modifies = modifies;
        all.released = released;
        self.finish(all, now_ms);
        for (start_ts, commit_ts) in known {
            self.status.insert_committed(start_ts, commit_ts, now_ms);
        }
        Ok(())
    }

    /// `ScanLock`: locks with `ts <= max_ts` in the scope, at most `limit` (0 = all).
    pub(crate) fn scan_lock(
        &mut self,
        max_ts: u64,
        scope: &RegionScope<'_>,
        limit: usize,
    ) -> Vec<LockInfo> {
        self.cm.update_max_ts(max_ts);
        let exclusive = self
            .store
            .locks_in(scope.range)
            .filter(|(k, l)| (scope.contains)(k) && l.ts <= max_ts)
            .map(|(k, l)| (k, l.lock_info(k)));
        // One wrapper per shared key with the holders started by max_ts.
        let shared = self
            .store
            .shared_in(scope.range)
            .filter(|(k, _)| (scope.contains)(k))
            .map(|(k, h)| (k, h.lock_info_upto(k, max_ts)))
            .filter(|(_, info)| !info.shared_lock_infos.is_empty());
        let mut merged: Vec<(&Bytes, LockInfo)> = exclusive.chain(shared).collect();
        merged.sort_by(|a, b| a.0.cmp(b.0));
        // The limit counts locks, a shared key's holders each (the oldest kept).
        let mut budget = if limit == 0 { usize::MAX } else { limit };
        let mut out = Vec::new();
        for (_, mut info) in merged {
            if budget == 0 {
                break;
            }
            let n = info.shared_lock_infos.len().max(1);
            if n > budget {
                info.shared_lock_infos.truncate(budget);
            }
            budget -= n.min(budget);
            out.push(info);
        }
        out
    }

    /// `AcquirePessimisticLock` without waiting: either all keys succeed, or the request
    /// stops at the first blocking lock (`Err(KeyIsLocked)` tells the caller to wait,
    /// `Err(KeyIsLockedNoWait)` not to). Keys are `(key, should_not_exist, shared)`.
    pub(crate) fn acquire_pessimistic_locks(
        &mut self,
        keys: &[(Bytes, bool, bool)],
        params: &LockParams,
        now_ms: u64,
    ) -> TxnResult<Vec<KeyResult>> {
        if params.allow_lock_with_conflict && keys.len() > 1 {
            return Err(TxnError::TxnOther(
                "multiple keys in a single request with allowed_lock_with_conflict set is not allowed"
                    .to_owned(),
            ));
        }
        let mut txn = MvccTxn::new(params.start_ts);
        let mut results = Vec::with_capacity(keys.len());
        for (key, should_not_exist, shared) in keys {
            match acquire_pessimistic_lock(
                &mut txn,
                &self.store,
                &mut self.cm,
                key,
                *should_not_exist,
                *shared,
                params,
            ) {
                Ok(r) => results.push(r),
                Err(TxnError::NotInShrinkMode { key, shared }) => {
                    // The only write of the request: no new holders from now on, so the
                    // exclusive locker's retry can wait for the key to drain.
                    let mut holders = *shared;
                    holders.shrink_only = true;
                    let info = holders.lock_info(&key);
                    let mut mark = MvccTxn::new(params.start_ts);
                    mark.put_shared(key, holders);
                    self.finish(mark, now_ms);
                    return Err(TxnError::KeyIsLockedNoWait(Box::new(info)));
                }
                // Locked: nothing of this request is written; the caller decides to wait.
                Err(e) => return Err(e),
            }
        }
        self.finish(txn, now_ms);
        Ok(results)
    }

    /// `PessimisticRollback`: removes this transaction's pessimistic locks with
    /// `for_update_ts <= for_update_ts`; anything else is left alone.
    pub(crate) fn pessimistic_rollback(
        &mut self,
        keys: &[Bytes],
        start_ts: u64,
        for_update_ts: u64,
        now_ms: u64,
    ) {
        let mut txn = MvccTxn::new(start_ts);
        for key in keys {
            if let Some(holders) = txn.shared_view(&self.store, key) {
                let own = holders.holders.get(&start_ts);
                if own.is_some_and(|l| l.is_pessimistic_lock() && l.for_update_ts <= for_update_ts)
                {
                    txn.remove_shared(key.clone(), holders, 0);
                }
                continue;
            }
            if let Some(lock) = self.store.lock(key) {
                if lock.is_pessimistic_lock()
                    && lock.ts == start_ts
                    && lock.for_update_ts <= for_update_ts
                {
                    txn.unlock_key(key.clone(), 0);
                }
            }
        }
        self.finish(txn, now_ms);
    }

    /// The keys of this transaction's pessimistic locks in the scope (pessimistic rollback
    /// without keys).
    pub(crate) fn pessimistic_locks_of(
        &self,
        start_ts: u64,
        scope: &RegionScope<'_>,
    ) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = self
            .store
            .locks_in(scope.range)
            .filter(|(k, l)| (scope.contains)(k) && l.ts == start_ts && l.is_pessimistic_lock())
            .map(|(k, _)| k.clone())
            .collect();
        keys.extend(
            self.store
                .shared_in(scope.range)
                .filter(|(k, h)| {
                    (scope.contains)(k)
                        && h.holders
                            .get(&start_ts)
                            .is_some_and(|l| l.is_pessimistic_lock())
                })
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        keys
    }
}

fn determined(
    store: &TxnStore,
    key: &[u8],
    start_ts: u64,
) -> (SecondaryStatus, bool, Option<Write>) {
    match check_determined_txn_status(store, key, start_ts) {
        Some(TxnStatus::Committed { commit_ts }) => {
            (SecondaryStatus::Committed(commit_ts), false, None)
        }
        Some(_) => (SecondaryStatus::RolledBack, false, None),
        None => {
            let overlapped = match store.commit_record(key, start_ts) {
                CommitRecord::None { overlapped } => overlapped,
                _ => None,
            };
            (SecondaryStatus::RolledBack, true, overlapped)
        }
    }
}
