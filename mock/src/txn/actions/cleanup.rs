//! Rolling back: `cleanup`, `rollback_lock`, rollback records and their collapsing, and the
//! "lock is missing" status check (TiKV's `actions/cleanup.rs` and the shared helpers of
//! `actions/check_txn_status.rs`).

use bytes::Bytes;

use crate::txn::error::{TxnError, TxnResult, locked};
use crate::txn::store::{CommitRecord, MvccTxn, TxnStore};
use crate::txn::types::{Lock, TxnStatus, Write, WriteType, physical};

/// What to do when the lock of the checked transaction is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MissingLockAction {
    /// Write a collapsible rollback record (and collapse the previous one).
    Rollback,
    /// Write a protected rollback record.
    ProtectedRollback,
    /// Fail with `TxnNotFound`.
    ReturnError,
}

impl MissingLockAction {
    pub(crate) fn rollback_protect(protect: bool) -> Self {
        if protect {
            MissingLockAction::ProtectedRollback
        } else {
            MissingLockAction::Rollback
        }
    }

    /// check_txn_status's `rollback_if_not_exist` always writes a *protected* rollback.
    pub(crate) fn rollback(rollback_if_not_exist: bool) -> Self {
        if rollback_if_not_exist {
            MissingLockAction::ProtectedRollback
        } else {
            MissingLockAction::ReturnError
        }
    }
}

/// Whether a lock's TTL has run out at `current_ts` (`physical(ts) + ttl < physical(now)`).
pub(crate) fn ttl_expired(lock: &Lock, current_ts: u64) -> bool {
    physical(lock.ts).saturating_add(lock.ttl) < physical(current_ts)
}

/// Rolls back this transaction's lock on `key` (or records the rollback if the lock is
/// gone). With a non-zero `current_ts`, a lock whose TTL has not expired is reported as
/// `KeyIsLocked` instead. Rolling back a committed transaction fails with `Committed`.
pub(crate) fn cleanup(
    txn: &mut MvccTxn,
    store: &TxnStore,
    key: &Bytes,
    current_ts: u64,
    protect_rollback: bool,
) -> TxnResult<()> {
    if let Some(holders) = txn.shared_view(store, key) {
        if let Some(own) = holders.holders.get(&txn.start_ts).cloned() {
            if current_ts != 0 && !ttl_expired(&own, current_ts) {
                return Err(TxnError::KeyIsLocked(Box::new(holders.lock_info(key))));
            }
            // TiKV's `rollback_shared_lock`: an unprotected rollback record (a shared key
            // is never a primary), none over another transaction's commit at start_ts.
            if let CommitRecord::None { overlapped: None } = store.commit_record(key, txn.start_ts)
            {
                if !protect_rollback {
                    collapse_prev_rollback(txn, store, key);
                }
                txn.put_write(
                    key.clone(),
                    txn.start_ts,
                    Write::rollback(txn.start_ts, false),
                );
            }
            txn.remove_shared(key.clone(), holders, 0);
            return Ok(());
        }
    }
    match store.lock(key) {
        Some(lock) if lock.ts == txn.start_ts => {
            // A lock is still alive at exactly its expiry instant (TiKV: `expire >= now`).
            if current_ts != 0 && !ttl_expired(lock, current_ts) {
                return Err(locked(lock, key));
            }
            rollback_lock(txn, store, key, lock, !protect_rollback)
        }
        other => {
            let status = check_txn_status_missing_lock(
                txn,
                store,
                key,
                other.cloned(),
                MissingLockAction::rollback_protect(protect_rollback),
                false,
            )?;
            match status {
                TxnStatus::Committed { commit_ts } => Err(TxnError::Committed {
                    start_ts: txn.start_ts,
                    commit_ts,
                    key: key.clone(),
                }),
                _ => Ok(()),
            }
        }
    }
}

/// Removes `lock` (owned by `txn`) and writes its rollback record; the primary's (and a
/// pipelined transaction's) rollback is protected.
pub(crate) fn rollback_lock(
    txn: &mut MvccTxn,
    store: &TxnStore,
    key: &Bytes,
    lock: &Lock,
    collapse_rollback: bool,
) -> TxnResult<()> {
    let overlapped = match store.commit_record(key, txn.start_ts) {
        CommitRecord::None { overlapped } => overlapped,
        CommitRecord::Single { write, .. } if write.write_type != WriteType::Rollback => {
            // TiKV panics here: a lock and a commit record of one transaction cannot
            // coexist. The mock reports it instead of crashing.
            return Err(TxnError::MvccOther(
                "txn record found but not expected".to_owned(),
            ));
        }
        _ => {
            txn.unlock_key(key.clone(), 0);
            return Ok(());
        }
    };
    let protected = key[..] == lock.primary[..] || lock.generation > 0;
    if let Some(w) = make_rollback(txn.start_ts, protected, overlapped) {
        txn.put_write(key.clone(), txn.start_ts, w);
    }
    if collapse_rollback {
        collapse_prev_rollback(txn, store, key);
    }
    txn.unlock_key(key.clone(), 0);
    Ok(())
}

/// Deletes the newest record at or below `start_ts` if it is a collapsible rollback: only
/// the latest unprotected rollback of a key is kept.
pub(crate) fn collapse_prev_rollback(txn: &mut MvccTxn, store: &TxnStore, key: &Bytes) {
    if let Some((commit_ts, w)) = store.seek_write(key, txn.start_ts) {
        if w.is_collapsible_rollback() {
            txn.delete_write(key.clone(), commit_ts);
        }
    }
}

/// The record that rolls back `start_ts`: a new rollback record, or — when another
/// transaction committed exactly at `start_ts` — that record flagged as overlapping a
/// rollback (only if the rollback must be protected; otherwise nothing).
pub(crate) fn make_rollback(
    start_ts: u64,
    protected: bool,
    overlapped: Option<Write>,
) -> Option<Write> {
    match overlapped {
        Some(mut w) => {
            if protected {
                w.has_overlapped_rollback = true;
                Some(w)
            } else {
                None
            }
        }
        None => Some(Write::rollback(start_ts, protected)),
    }
}

/// The status of a transaction whose primary lock is absent (or belongs to another
/// transaction, `mismatch_lock`), rolling it back per `action` when it left no record.
pub(crate) fn check_txn_status_missing_lock(
    txn: &mut MvccTxn,
    store: &TxnStore,
    key: &Bytes,
    mismatch_lock: Option<Lock>,
    action: MissingLockAction,
    resolving_pessimistic_lock: bool,
) -> TxnResult<TxnStatus> {
    match store.commit_record(key, txn.start_ts) {
        CommitRecord::Single { commit_ts, write } => {
            if write.write_type == WriteType::Rollback {
                Ok(TxnStatus::RolledBack)
            } else {
                Ok(TxnStatus::Committed { commit_ts })
            }
        }
        CommitRecord::OverlappedRollback => Ok(TxnStatus::RolledBack),
        CommitRecord::None { overlapped } => {
            if action == MissingLockAction::ReturnError {
                return Err(TxnError::TxnNotFound {
                    start_ts: txn.start_ts,
                    key: key.clone(),
                });
            }
            if resolving_pessimistic_lock {
                return Ok(TxnStatus::LockNotExistDoNothing);
            }
            if action == MissingLockAction::Rollback {
                collapse_prev_rollback(txn, store, key);
            }
            if let (Some(l), None) = (mismatch_lock, overlapped.as_ref()) {
                txn.mark_rollback_on_mismatching_lock(
                    key,
                    l,
                    action == MissingLockAction::ProtectedRollback,
                );
            }
            let protected = action != MissingLockAction::Rollback;
            if let Some(w) = make_rollback(txn.start_ts, protected, overlapped) {
                txn.put_write(key.clone(), txn.start_ts, w);
            }
            Ok(TxnStatus::LockNotExist)
        }
    }
}
