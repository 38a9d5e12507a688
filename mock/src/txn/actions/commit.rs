//! Committing one key (TiKV's `actions/commit.rs`).

use bytes::Bytes;

use crate::txn::error::{TxnError, TxnResult};
use crate::txn::store::{CommitRecord, MvccTxn, TxnStore};
use crate::txn::types::{Write, WriteType};

/// Commits this transaction's lock on `key` at `commit_ts`.
///
/// - No lock of this transaction: fine if it is already committed (a retried commit),
///   `TxnLockNotFound` if it was rolled back or never prewritten.
/// - `commit_ts < min_commit_ts`: `CommitTsExpired` (the lock's min commit ts was pushed by
///   a reader, the client must get a newer ts).
/// - A pessimistic lock (never prewritten) is removed rather than committed: it is a
///   leftover of the transaction, not a value to write.
/// - A shared lock: this transaction's sub-lock goes (the key is released with its last
///   holder), leaving a `Lock` record if it was prewritten.
pub(crate) fn commit(
    txn: &mut MvccTxn,
    store: &TxnStore,
    key: &Bytes,
    commit_ts: u64,
) -> TxnResult<()> {
    if let Some(holders) = txn.shared_view(store, key) {
        if let Some(own) = holders.holders.get(&txn.start_ts).cloned() {
            if commit_ts < own.min_commit_ts {
                return Err(TxnError::CommitTsExpired {
                    start_ts: txn.start_ts,
                    commit_ts,
                    key: key.clone(),
                    min_commit_ts: own.min_commit_ts,
                });
            }
            if own.is_pessimistic_lock() {
                txn.remove_shared(key.clone(), holders, 0);
                return Ok(());
            }
            let mut write = Write::new(WriteType::Lock, txn.start_ts, None);
            write.has_overlapped_rollback = own.rollback_ts.contains(&commit_ts);
            txn.put_write(key.clone(), commit_ts, write);
            txn.remove_shared(key.clone(), holders, commit_ts);
            return Ok(());
        }
    }
    let lock = match store.lock(key) {
        Some(l) if l.ts == txn.start_ts => l,
        _ => return lock_not_found(txn, store, key, commit_ts),
    };
    if commit_ts < lock.min_commit_ts {
        return Err(TxnError::CommitTsExpired {
            start_ts: txn.start_ts,
            commit_ts,
            key: key.clone(),
            min_commit_ts: lock.min_commit_ts,
        });
    }
    let Some(write_type) = WriteType::from_lock_type(lock.lock_type) else {
        txn.unlock_key(key.clone(), 0);
        return Ok(());
    };
    let mut write = Write::new(write_type, txn.start_ts, lock.value.clone());
    // A protected rollback of another transaction at exactly this ts was recorded in the
    // lock; keep it visible as a flag on the commit record.
    write.has_overlapped_rollback = lock.rollback_ts.contains(&commit_ts);
    txn.put_write(key.clone(), commit_ts, write);
    txn.unlock_key(key.clone(), commit_ts);
    Ok(())
}

fn lock_not_found(txn: &MvccTxn, store: &TxnStore, key: &Bytes, commit_ts: u64) -> TxnResult<()> {
    match store.commit_record(key, txn.start_ts) {
        CommitRecord::Single { write, .. } if write.write_type != WriteType::Rollback => Ok(()),
        _ => Err(TxnError::TxnLockNotFound {
            start_ts: txn.start_ts,
            commit_ts,
            key: key.clone(),
        }),
    }
}
