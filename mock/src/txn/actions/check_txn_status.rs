//! Deciding a transaction's fate from its primary lock (TiKV's
//! `actions/check_txn_status.rs`): roll back expired locks, push `min_commit_ts` so readers
//! are not blocked, and never touch async-commit locks (those are resolved through
//! `CheckSecondaryLocks`).

use bytes::Bytes;

use super::cleanup::{
    MissingLockAction, check_txn_status_missing_lock, rollback_lock, ttl_expired,
};
use crate::txn::error::{TxnError, TxnResult};
use crate::txn::store::{CommitRecord, MvccTxn, TxnStore};
use crate::txn::types::{Lock, TS_MAX, TxnStatus, WriteType, next_ts};

/// The request's flags that shape the decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckFlags {
    pub(crate) current_ts: u64,
    pub(crate) caller_start_ts: u64,
    pub(crate) force_sync_commit: bool,
    pub(crate) resolving_pessimistic_lock: bool,
    pub(crate) verify_is_primary: bool,
    pub(crate) rollback_if_not_exist: bool,
}

/// The committed or rolled-back status recorded in the write CF, if any (read only).
pub(crate) fn check_determined_txn_status(
    store: &TxnStore,
    key: &[u8],
    start_ts: u64,
) -> Option<TxnStatus> {
    match store.commit_record(key, start_ts) {
        CommitRecord::Single { commit_ts, write } => {
            Some(if write.write_type == WriteType::Rollback {
                TxnStatus::RolledBack
            } else {
                TxnStatus::Committed { commit_ts }
            })
        }
        CommitRecord::OverlappedRollback => Some(TxnStatus::RolledBack),
        CommitRecord::None { .. } => None,
    }
}

/// The status of the transaction whose lock `lock` (with `lock.ts == txn.start_ts`) sits
/// on `primary`.
pub(crate) fn check_txn_status_lock_exists(
    txn: &mut MvccTxn,
    store: &TxnStore,
    primary: &Bytes,
    mut lock: Lock,
    f: CheckFlags,
) -> TxnResult<TxnStatus> {
    if f.verify_is_primary && primary[..] != lock.primary[..] {
        if !f.resolving_pessimistic_lock && lock.is_pessimistic_lock() {
            // The caller resolves a prewrite lock whose primary must be valid; this
            // pessimistic lock claiming another primary is stale: drop it and decide by
            // the write records.
            let status = check_txn_status_missing_lock(
                txn,
                store,
                primary,
                None,
                MissingLockAction::rollback(f.rollback_if_not_exist),
                f.resolving_pessimistic_lock,
            )?;
            txn.unlock_key(primary.clone(), 0);
            return Ok(status);
        }
        return Err(TxnError::PrimaryMismatch(Box::new(lock.lock_info(primary))));
    }

    // Async-commit locks are never rolled back or pushed here: their fate is decided by
    // all their secondaries, which only resolve-lock with CheckSecondaryLocks can see.
    if lock.use_async_commit && !f.force_sync_commit {
        return Ok(TxnStatus::Uncommitted {
            lock: Box::new(lock),
            min_commit_ts_pushed: false,
        });
    }

    if lock.is_pessimistic_lock() {
        if lock.is_pessimistic_lock_with_conflict() {
            // A force-lock primary may be stale: trust the write records first.
            if let Some(status) = check_determined_txn_status(store, primary, txn.start_ts) {
                txn.unlock_key(primary.clone(), 0);
                return Ok(status);
            }
        }
        if ttl_expired(&lock, f.current_ts) {
            return if f.resolving_pessimistic_lock {
                // The transaction may still be running and may move its primary: only
                // remove the lock, write no rollback record.
                txn.unlock_key(primary.clone(), 0);
                Ok(TxnStatus::PessimisticRollBack)
            } else {
                rollback_lock(txn, store, primary, &lock, true)?;
                Ok(TxnStatus::TtlExpire)
            };
        }
    } else if ttl_expired(&lock, f.current_ts) {
        rollback_lock(txn, store, primary, &lock, true)?;
        return Ok(TxnStatus::TtlExpire);
    }

    // Push min_commit_ts past the caller's snapshot so the reader may ignore the lock. A
    // zero min_commit_ts (very old clients) is never pushed.
    if lock.min_commit_ts != 0
        && f.caller_start_ts != TS_MAX
        && f.caller_start_ts >= lock.min_commit_ts
    {
        lock.min_commit_ts = next_ts(f.caller_start_ts).max(f.current_ts);
        txn.put_lock(primary.clone(), lock.clone());
    }

    let pushed = (f.caller_start_ts != 0 && lock.min_commit_ts > f.caller_start_ts)
        || f.caller_start_ts == TS_MAX;
    Ok(TxnStatus::Uncommitted {
        lock: Box::new(lock),
        min_commit_ts_pushed: pushed,
    })
}
