//! Prewriting one mutation (TiKV's `actions/prewrite.rs` and `check_data_constraint.rs`).
//!
//! A prewrite checks the key's lock (another transaction's lock → `KeyIsLocked`; our own
//! prewrite lock → an idempotent retry; our pessimistic lock → upgrade it), then the write
//! records newer than the transaction (write conflicts, our own rollback, `AlreadyExist`),
//! then the assertion, and finally writes the lock. Async commit and 1PC compute the lock's
//! `min_commit_ts` from the concurrency manager's `max_ts`.
//!
//! A key held in shared mode takes only `Op::SharedLock` prewrites of its holders (each
//! turns its own pessimistic sub-lock into a `Lock` sub-lock); anything else meets the
//! shared locks. Shared locks rule out async commit, 1PC and pipelined flushes.

use bytes::Bytes;
use tikv_proto::kvrpcpb::prewrite_request::PessimisticAction;
use tikv_proto::kvrpcpb::{Assertion, AssertionLevel, write_conflict};

use super::ConcurrencyManager;
use crate::txn::error::{LockNotFoundReason, TxnError, TxnResult, locked};
use crate::txn::store::{MvccTxn, SharedLocks, TxnStore};
use crate::txn::types::{Lock, LockType, TS_MAX, Write, WriteType, next_ts, prev_ts};

/// Optimistic (with the request's `skip_constraint_check`) or pessimistic (with its
/// `for_update_ts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxnKind {
    Optimistic { skip_constraint_check: bool },
    Pessimistic { for_update_ts: u64 },
}

/// How the transaction will commit; async commit and 1PC carry `max_commit_ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitKind {
    TwoPc,
    OnePc(u64),
    Async(u64),
}

/// The request-wide properties of a prewrite.
#[derive(Clone, Debug)]
pub(crate) struct TxnProps {
    pub(crate) start_ts: u64,
    pub(crate) kind: TxnKind,
    pub(crate) commit_kind: CommitKind,
    pub(crate) primary: Bytes,
    pub(crate) txn_size: u64,
    pub(crate) lock_ttl: u64,
    pub(crate) min_commit_ts: u64,
    pub(crate) is_retry_request: bool,
    pub(crate) assertion_level: AssertionLevel,
}

impl TxnProps {
    fn is_pessimistic(&self) -> bool {
        matches!(self.kind, TxnKind::Pessimistic { .. })
    }

    fn for_update_ts(&self) -> u64 {
        match self.kind {
            TxnKind::Optimistic { .. } => 0,
            TxnKind::Pessimistic { for_update_ts } => for_update_ts,
        }
    }

    fn max_commit_ts(&self) -> u64 {
        match self.commit_kind {
            CommitKind::TwoPc => 0,
            CommitKind::OnePc(ts) | CommitKind::Async(ts) => ts,
        }
    }
}

/// What a mutation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MutationOp {
    Put(Bytes),
    Delete,
    Lock,
    /// A put that requires the key not to exist.
    Insert(Bytes),
    /// Only checks that the key does not exist; writes nothing.
    CheckNotExists,
    /// Prewrites this transaction's shared lock (`Op::SharedLock`).
    SharedLock,
}

/// One mutation of a prewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mutation {
    pub(crate) key: Bytes,
    pub(crate) op: MutationOp,
    pub(crate) assertion: Assertion,
}

impl Mutation {
    fn should_not_exist(&self) -> bool {
        matches!(self.op, MutationOp::Insert(_) | MutationOp::CheckNotExists)
    }

    fn should_not_write(&self) -> bool {
        self.op == MutationOp::CheckNotExists
    }
}

/// The key's lock state as prewrite found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockStatus {
    /// Already prewritten by this transaction; the lock's async-commit min commit ts.
    Locked(u64),
    /// Pessimistically locked by this transaction; the lock's for_update_ts.
    Pessimistic(u64),
    None,
}

struct PrewriteMutation<'a> {
    m: Mutation,
    props: &'a TxnProps,
    action: PessimisticAction,
    lock_ttl: u64,
    min_commit_ts: u64,
}

/// Prewrites one mutation; returns the key's min commit ts (zero unless async commit or
/// 1PC applies to the written lock).
#[allow(clippy::too_many_arguments)]
pub(crate) fn prewrite(
    txn: &mut MvccTxn,
    store: &TxnStore,
    cm: &mut ConcurrencyManager,
    props: &TxnProps,
    mutation: Mutation,
    secondaries: &Option<Vec<Bytes>>,
    action: PessimisticAction,
    expected_for_update_ts: Option<u64>,
    generation: u64,
) -> TxnResult<u64> {
    if props.is_pessimistic() && mutation.should_not_write() {
        return Err(TxnError::MvccOther(
            "cannot handle checkNotExists in pessimistic prewrite".to_owned(),
        ));
    }
    let mut pm = PrewriteMutation {
        m: mutation,
        props,
        action,
        lock_ttl: props.lock_ttl,
        min_commit_ts: props.min_commit_ts,
    };
    // An insert reads the key: later async-commit transactions must commit above it.
    if pm.m.should_not_exist() {
        cm.update_max_ts(props.start_ts);
    }

    if let Some(holders) = txn.shared_view(store, &pm.m.key) {
        return pm.prewrite_shared(txn, holders, expected_for_update_ts, generation);
    }
    if pm.m.op == MutationOp::SharedLock {
        match store.lock(&pm.m.key) {
            // Shared and exclusive locks never mix, even of one transaction.
            Some(lock) => return Err(locked(lock, &pm.m.key)),
            None if action == PessimisticAction::DoPessimisticCheck => {
                // A shared lock is never amended.
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts: props.start_ts,
                    key: pm.m.key.clone(),
                    reason: LockNotFoundReason::LockMissingAmendFail,
                });
            }
            // TiKV does not guard this case: the key gets an ordinary `Lock` lock.
            None => {}
        }
    }

    let mut lock_amended = false;
    let lock_status = match store.lock(&pm.m.key) {
        Some(lock) => pm.check_lock(lock, expected_for_update_ts, generation)?,
        None if action == PessimisticAction::DoPessimisticCheck => {
            // The pessimistic lock is missing (TiKV may lose pipelined or in-memory
            // pessimistic locks); if nothing changed since start_ts, prewrite anyway.
            pm.amend_pessimistic_lock(store)?;
            lock_amended = true;
            LockStatus::None
        }
        None => LockStatus::None,
    };

    if generation == 0 {
        if let LockStatus::Locked(ts) = lock_status {
            return Ok(ts);
        }
    }

    let (mut prev_write, mut loaded) = if !pm.skip_constraint_check() {
        (pm.check_for_newer_version(store)?, true)
    } else {
        (None, false)
    };

    let is_subsequent_flush = generation > 0 && matches!(lock_status, LockStatus::Locked(_));
    if !lock_amended && !is_subsequent_flush {
        if let Some(reloaded) = pm.check_assertion(store, &prev_write, loaded)? {
            prev_write = reloaded;
            loaded = true;
        }
    }
    let _ = (prev_write, loaded);

    if pm.m.should_not_write() {
        cm.update_max_ts(props.start_ts);
        let need_min_commit_ts = !matches!(props.commit_kind, CommitKind::TwoPc);
        return Ok(if need_min_commit_ts {
            pm.props.min_commit_ts.max(next_ts(props.start_ts))
        } else {
            0
        });
    }

    pm.write_lock(lock_status, txn, cm, secondaries, generation)
}

impl PrewriteMutation<'_> {
    /// Prewrites a key held in shared mode (TiKV's `prewrite_with_generation` on
    /// `SharedLocks`).
    fn prewrite_shared(
        self,
        txn: &mut MvccTxn,
        mut holders: SharedLocks,
        expected_for_update_ts: Option<u64>,
        generation: u64,
    ) -> TxnResult<u64> {
        let start_ts = self.props.start_ts;
        let key = self.m.key.clone();
        let Some(own) = holders.holders.get(&start_ts).cloned() else {
            if self.m.op == MutationOp::SharedLock {
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts,
                    key,
                    reason: LockNotFoundReason::LockMissingAmendFail,
                });
            }
            return Err(TxnError::KeyIsLocked(Box::new(holders.lock_info(&key))));
        };
        if self.m.op != MutationOp::SharedLock {
            return Err(TxnError::MvccOther(
                "use Op::SharedLock to prewrite on a shared lock".to_owned(),
            ));
        }
        if !own.is_pessimistic_lock() {
            return Ok(0); // a retried prewrite
        }
        if let Some(ts) = expected_for_update_ts {
            if own.for_update_ts != ts {
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts,
                    key,
                    reason: LockNotFoundReason::LockForUpdateTsMismatch,
                });
            }
        }
        if generation > 0 {
            return Err(TxnError::MvccOther(
                "shared lock is incompatible with pipelined flush".to_owned(),
            ));
        }
        match self.props.commit_kind {
            CommitKind::TwoPc => {}
            CommitKind::OnePc(_) => {
                return Err(TxnError::MvccOther(
                    "shared lock is incompatible with one-phase commit".to_owned(),
                ));
            }
            CommitKind::Async(_) => {
                return Err(TxnError::MvccOther(
                    "shared lock cannot use async-commit".to_owned(),
                ));
            }
        }
        let mut lock = Lock::new(
            LockType::Lock,
            self.props.primary.clone(),
            start_ts,
            self.lock_ttl.max(own.ttl),
        );
        lock.for_update_ts = self.props.for_update_ts().max(own.for_update_ts);
        lock.txn_size = self.props.txn_size;
        lock.min_commit_ts = self.min_commit_ts.max(own.min_commit_ts);
        holders.holders.insert(start_ts, lock);
        txn.put_shared(key, holders);
        Ok(0)
    }

    fn check_lock(
        &mut self,
        lock: &Lock,
        expected_for_update_ts: Option<u64>,
        generation: u64,
    ) -> TxnResult<LockStatus> {
        let start_ts = self.props.start_ts;
        if lock.ts != start_ts {
            if self.action == PessimisticAction::DoPessimisticCheck {
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts,
                    key: self.m.key.clone(),
                    reason: LockNotFoundReason::LockTsMismatch,
                });
            }
            let mut info = lock.lock_info(&self.m.key);
            // A pessimistic transaction's isolation is guaranteed by its pessimistic locks;
            // a TTL of 0 lets the client resolve this lock immediately.
            if self.props.is_pessimistic() {
                info.lock_ttl = 0;
            }
            return Err(TxnError::KeyIsLocked(Box::new(info)));
        }

        if lock.is_pessimistic_lock() {
            if !self.props.is_pessimistic() {
                return Err(TxnError::LockTypeNotMatch {
                    start_ts,
                    key: self.m.key.clone(),
                    pessimistic: true,
                });
            }
            if let Some(ts) = expected_for_update_ts {
                if lock.for_update_ts != ts {
                    return Err(TxnError::PessimisticLockNotFound {
                        start_ts,
                        key: self.m.key.clone(),
                        reason: LockNotFoundReason::LockForUpdateTsMismatch,
                    });
                }
            }
            self.lock_ttl = self.lock_ttl.max(lock.ttl);
            self.min_commit_ts = self.min_commit_ts.max(lock.min_commit_ts);
            return Ok(LockStatus::Pessimistic(lock.for_update_ts));
        }

        if generation > 0 && lock.generation >= generation {
            return Err(TxnError::GenerationOutOfOrder {
                generation,
                key: self.m.key.clone(),
                lock_generation: lock.generation,
            });
        }
        if lock.generation > 0 && self.m.should_not_exist() && lock.lock_type == LockType::Put {
            return Err(TxnError::AlreadyExist {
                key: self.m.key.clone(),
                existing_start_ts: lock.ts,
            });
        }
        // A retried prewrite: keep the lock as it is.
        Ok(LockStatus::Locked(if lock.use_async_commit {
            lock.min_commit_ts
        } else {
            0
        }))
    }

    fn skip_constraint_check(&self) -> bool {
        match self.props.kind {
            TxnKind::Optimistic {
                skip_constraint_check,
            } => skip_constraint_check,
            TxnKind::Pessimistic { .. } => match self.action {
                PessimisticAction::DoPessimisticCheck => true,
                // A retried request re-checks non-locked keys so a prewrite that already
                // succeeded and was committed is not applied twice (tikv#11187).
                PessimisticAction::SkipPessimisticCheck => !self.props.is_retry_request,
                PessimisticAction::DoConstraintCheck => false,
            },
        }
    }

    fn conflict(&self, write: &Write, commit_ts: u64, reason: write_conflict::Reason) -> TxnError {
        TxnError::WriteConflict {
            start_ts: self.props.start_ts,
            conflict_start_ts: write.start_ts,
            conflict_commit_ts: commit_ts,
            key: self.m.key.clone(),
            primary: self.props.primary.clone(),
            reason,
        }
    }

    /// Checks the newest write records against the transaction; returns the newest
    /// relevant one.
    fn check_for_newer_version(&self, store: &TxnStore) -> TxnResult<Option<(Write, u64)>> {
        let start_ts = self.props.start_ts;
        let mut seek_ts = TS_MAX;
        while let Some((commit_ts, write)) = store.seek_write(&self.m.key, seek_ts) {
            if commit_ts == start_ts
                && (write.write_type == WriteType::Rollback || write.has_overlapped_rollback)
            {
                return Err(self.conflict(
                    write,
                    commit_ts,
                    write_conflict::Reason::SelfRolledBack,
                ));
            }
            match self.props.kind {
                TxnKind::Optimistic { .. } => {
                    if commit_ts > start_ts {
                        return Err(self.conflict(
                            write,
                            commit_ts,
                            write_conflict::Reason::Optimistic,
                        ));
                    }
                }
                TxnKind::Pessimistic { for_update_ts } => {
                    if self.action == PessimisticAction::DoConstraintCheck && commit_ts > start_ts {
                        return Err(self.conflict(
                            write,
                            commit_ts,
                            write_conflict::Reason::LazyUniquenessCheck,
                        ));
                    }
                    if commit_ts > for_update_ts {
                        // Newer rollbacks can exist even under a valid pessimistic lock
                        // (written by CheckSecondaryLocks or for another transaction).
                        if write.write_type == WriteType::Rollback {
                            seek_ts = prev_ts(commit_ts);
                            if commit_ts == 0 {
                                break;
                            }
                            continue;
                        }
                        return Err(TxnError::PessimisticLockNotFound {
                            start_ts,
                            key: self.m.key.clone(),
                            reason: LockNotFoundReason::NonLockKeyConflict,
                        });
                    }
                }
            }
            check_data_constraint(
                store,
                self.m.should_not_exist(),
                write,
                commit_ts,
                &self.m.key,
            )?;
            return Ok(Some((write.clone(), commit_ts)));
        }
        Ok(None)
    }

    /// Returns `Some(reloaded)` if it had to reload the previous data version.
    fn check_assertion(
        &self,
        store: &TxnStore,
        prev: &Option<(Write, u64)>,
        loaded: bool,
    ) -> TxnResult<Option<Option<(Write, u64)>>> {
        let level = self.props.assertion_level;
        if self.m.assertion == Assertion::None || level == AssertionLevel::Off {
            return Ok(None);
        }
        // Fast level only asserts when the previous version was read anyway.
        if level != AssertionLevel::Strict && !loaded {
            return Ok(None);
        }
        let need_reload = !loaded
            || prev.as_ref().is_some_and(|(w, _)| {
                w.write_type != WriteType::Put && w.write_type != WriteType::Delete
            });
        let mut reloaded = None;
        let write = if need_reload {
            let ts = prev.as_ref().map_or(TS_MAX, |(_, ts)| *ts);
            let r = store
                .get_write(&self.m.key, ts)
                .map(|(ts, w)| (w.clone(), ts));
            reloaded = Some(r.clone());
            r
        } else {
            prev.clone()
        };
        let failed = match (self.m.assertion, &write) {
            (Assertion::Exist, None) => Some((0, 0)),
            (Assertion::Exist, Some((w, ts))) if w.write_type == WriteType::Delete => {
                Some((w.start_ts, *ts))
            }
            (Assertion::NotExist, Some((w, ts))) if w.write_type == WriteType::Put => {
                Some((w.start_ts, *ts))
            }
            _ => None,
        };
        if let Some((existing_start_ts, existing_commit_ts)) = failed {
            // The failure may come from our own rollback: run the skipped constraint check
            // so that a write conflict is reported in preference.
            if self.skip_constraint_check() {
                self.check_for_newer_version(store)?;
            }
            return Err(TxnError::AssertionFailed {
                start_ts: self.props.start_ts,
                key: self.m.key.clone(),
                assertion: self.m.assertion,
                existing_start_ts,
                existing_commit_ts,
            });
        }
        Ok(reloaded)
    }

    fn amend_pessimistic_lock(&self, store: &TxnStore) -> TxnResult<()> {
        let latest = store
            .seek_write(&self.m.key, TS_MAX)
            .map(|(ts, w)| (w.clone(), ts));
        if let Some((_, commit_ts)) = &latest {
            if *commit_ts >= self.props.start_ts {
                return Err(TxnError::PessimisticLockNotFound {
                    start_ts: self.props.start_ts,
                    key: self.m.key.clone(),
                    reason: LockNotFoundReason::LockMissingAmendFail,
                });
            }
        }
        self.check_assertion(store, &latest, true)?;
        Ok(())
    }

    fn write_lock(
        self,
        status: LockStatus,
        txn: &mut MvccTxn,
        cm: &ConcurrencyManager,
        secondaries: &Option<Vec<Bytes>>,
        generation: u64,
    ) -> TxnResult<u64> {
        let mut try_one_pc = matches!(self.props.commit_kind, CommitKind::OnePc(_));
        let for_update_ts = match status {
            LockStatus::Pessimistic(locked) => self.props.for_update_ts().max(locked),
            _ => self.props.for_update_ts(),
        };
        let (lock_type, value) = match self.m.op {
            MutationOp::Put(v) | MutationOp::Insert(v) => (LockType::Put, Some(v)),
            MutationOp::Delete => (LockType::Delete, None),
            MutationOp::Lock | MutationOp::SharedLock => (LockType::Lock, None),
            // Handled by the caller before writing.
            MutationOp::CheckNotExists => return Ok(0),
        };
        let mut lock = Lock::new(
            lock_type,
            self.props.primary.clone(),
            self.props.start_ts,
            self.lock_ttl,
        );
        lock.value = value;
        lock.for_update_ts = for_update_ts;
        lock.txn_size = self.props.txn_size;
        lock.min_commit_ts = self.min_commit_ts;
        lock.generation = generation;
        if let Some(keys) = secondaries {
            lock.use_async_commit = true;
            lock.secondaries = keys.clone();
        }
        let result = if lock.use_async_commit || try_one_pc {
            let r = async_commit_timestamps(&mut lock, self.props, cm);
            if r.is_err() {
                // Too large: the lock is written as an ordinary 2PC lock and the error
                // tells the command to fall back.
                try_one_pc = false;
                lock.use_async_commit = false;
                lock.secondaries.clear();
            }
            r
        } else {
            Ok(0)
        };
        if try_one_pc {
            let had_pessimistic = matches!(status, LockStatus::Pessimistic(_));
            txn.locks_for_1pc.push((self.m.key, lock, had_pessimistic));
        } else {
            txn.put_lock(self.m.key, lock);
        }
        result
    }
}

/// `min_commit_ts = max(max_ts, start_ts, for_update_ts) + 1` (and at least the lock's),
/// refused above `max_commit_ts`.
///
/// TiKV uses the *request's* for_update_ts here, not the (possibly larger) one written in
/// the lock.
fn async_commit_timestamps(
    lock: &mut Lock,
    props: &TxnProps,
    cm: &ConcurrencyManager,
) -> TxnResult<u64> {
    let min = next_ts(cm.max_ts.max(props.start_ts).max(props.for_update_ts()));
    let min = min.max(lock.min_commit_ts);
    let max_commit_ts = props.max_commit_ts();
    if max_commit_ts != 0 && min > max_commit_ts {
        return Err(TxnError::CommitTsTooLarge {
            start_ts: props.start_ts,
            min_commit_ts: min,
            max_commit_ts,
        });
    }
    lock.min_commit_ts = min;
    Ok(min)
}

/// `AlreadyExist` if `should_not_exist` and the newest record (`write` at `commit_ts`)
/// shows the key exists: a `Put`, or a `Lock`/`Rollback` over an older `Put`.
pub(crate) fn check_data_constraint(
    store: &TxnStore,
    should_not_exist: bool,
    write: &Write,
    commit_ts: u64,
    key: &Bytes,
) -> TxnResult<()> {
    if !should_not_exist || write.write_type == WriteType::Delete {
        return Ok(());
    }
    let existing = if write.write_type == WriteType::Put {
        Some(write.start_ts)
    } else if commit_ts == 0 {
        None
    } else {
        store
            .get_write(key, prev_ts(commit_ts))
            .map(|(_, w)| w.start_ts)
    };
    match existing {
        Some(existing_start_ts) => Err(TxnError::AlreadyExist {
            key: key.clone(),
            existing_start_ts,
        }),
        None => Ok(()),
    }
}
