//! Acquiring a pessimistic lock on one key (TiKV's `actions/acquire_pessimistic_lock.rs`).
//!
//! Pessimistic transactions read at `for_update_ts` (read-committed per statement): a
//! commit newer than `for_update_ts` is a `WriteConflict` (reason `PessimisticRetry`), or,
//! in force-lock (fair locking) mode, the lock is taken anyway at the conflicting commit ts
//! and reported as `LockedWithConflict`.
//!
//! A shared request (`Op::SharedPessimisticLock`) joins the key's shared locks: several
//! transactions may hold one key in shared mode, none while it is locked exclusively. An
//! exclusive request meeting shared locks first makes them shrink-only (no new holders) and
//! fails at once; its retry waits for the last holder to go.

use bytes::Bytes;
use tikv_proto::kvrpcpb::write_conflict;

use super::ConcurrencyManager;
use super::prewrite::check_data_constraint;
use crate::txn::error::{TxnError, TxnResult, locked};
use crate::txn::store::{MvccTxn, SharedLocks, TxnStore};
use crate::txn::types::{Lock, LockType, TS_MAX, Write, WriteType, prev_ts};

/// The request-wide parameters of a pessimistic lock request.
#[derive(Clone, Debug)]
pub(crate) struct LockParams {
    pub(crate) primary: Bytes,
    pub(crate) start_ts: u64,
    pub(crate) lock_ttl: u64,
    pub(crate) for_update_ts: u64,
    pub(crate) need_value: bool,
    pub(crate) need_check_existence: bool,
    pub(crate) min_commit_ts: u64,
    pub(crate) lock_only_if_exists: bool,
    pub(crate) allow_lock_with_conflict: bool,
}

/// The outcome for one key (`PessimisticLockKeyResult`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum KeyResult {
    Empty,
    Value(Option<Bytes>),
    Existence(bool),
    LockedWithConflict {
        value: Option<Bytes>,
        conflict_ts: u64,
    },
}

impl KeyResult {
    fn success(params: &LockParams, conflict_ts: Option<u64>, value: Option<Bytes>) -> Self {
        if let Some(conflict_ts) = conflict_ts {
            KeyResult::LockedWithConflict { value, conflict_ts }
        } else if params.need_value {
            KeyResult::Value(value)
        } else if params.need_check_existence {
            KeyResult::Existence(value.is_some())
        } else {
            KeyResult::Empty
        }
    }
}

fn pessimistic_lock(params: &LockParams, for_update_ts: u64, conflict: bool) -> Lock {
    let mut lock = Lock::new(
        LockType::Pessimistic,
        params.primary.clone(),
        params.start_ts,
        params.lock_ttl,
    );
    lock.for_update_ts = for_update_ts;
    lock.min_commit_ts = params.min_commit_ts;
    lock.is_locked_with_conflict = conflict;
    lock
}

fn write_conflict(params: &LockParams, key: &Bytes, start: u64, commit: u64) -> TxnError {
    TxnError::WriteConflict {
        start_ts: params.start_ts,
        conflict_start_ts: start,
        conflict_commit_ts: commit,
        key: key.clone(),
        primary: params.primary.clone(),
        reason: write_conflict::Reason::PessimisticRetry,
    }
}

/// The value of the newest data version at or below `ts`.
fn value_at(store: &TxnStore, key: &[u8], ts: u64) -> Option<Bytes> {
    store
        .get_write(key, ts)
        .map(|(_, w)| w.value.clone().unwrap_or_default())
}

/// Acquires (or refreshes) this transaction's pessimistic lock on `key`.
pub(crate) fn acquire_pessimistic_lock(
    txn: &mut MvccTxn,
    store: &TxnStore,
    cm: &mut ConcurrencyManager,
    key: &Bytes,
    should_not_exist: bool,
    shared: bool,
    params: &LockParams,
) -> TxnResult<KeyResult> {
    let start_ts = params.start_ts;
    if params.lock_only_if_exists && !params.need_value {
        return Err(TxnError::LockIfExistsFailed {
            start_ts,
            key: key.clone(),
        });
    }
    // Any of these reads the key at for_update_ts.
    if should_not_exist || params.need_value || params.need_check_existence {
        cm.update_max_ts(params.for_update_ts);
    }
    if let Some(lock) = store.lock(key) {
        if shared {
            // An exclusive lock is never shared, nor downgraded by its own owner.
            return Err(locked(lock, key));
        }
        return existing_lock(txn, store, key, should_not_exist, params, lock);
    }
    let mut joining: Option<SharedLocks> = None;
    if let Some(mut holders) = txn.shared_view(store, key) {
        if !shared {
            if !holders.shrink_only {
                return Err(TxnError::NotInShrinkMode {
                    key: key.clone(),
                    shared: Box::new(holders),
                });
            }
            return Err(TxnError::KeyIsLocked(Box::new(holders.lock_info(key))));
        }
        if let Some(own) = holders.holders.get(&start_ts) {
            // Our own shared lock: a newer for_update_ts refreshes it; no value is loaded.
            if params.for_update_ts > own.for_update_ts {
                let refreshed =
                    pessimistic_lock(params, params.for_update_ts, own.is_locked_with_conflict);
                holders.holders.insert(start_ts, refreshed);
                txn.put_shared(key.clone(), holders);
            }
            return Ok(KeyResult::success(params, None, None));
        }
        if holders.shrink_only {
            return Err(TxnError::KeyIsLocked(Box::new(holders.lock_info(key))));
        }
        joining = Some(holders);
    }

    let mut for_update_ts = params.for_update_ts;
    let mut conflict: Option<(u64, u64)> = None;
    let mut val = None;
    if let Some((commit_ts, write)) = store.seek_write(key, TS_MAX) {
        if commit_ts > for_update_ts {
            if params.allow_lock_with_conflict {
                conflict = Some((write.start_ts, commit_ts));
                for_update_ts = commit_ts;
            } else {
                return Err(write_conflict(params, key, write.start_ts, commit_ts));
            }
        }
        let rolled_back = |ts: u64, w: &Write| {
            ts == start_ts && (w.write_type == WriteType::Rollback || w.has_overlapped_rollback)
        };
        if rolled_back(commit_ts, write) {
            return Err(TxnError::PessimisticLockRolledBack {
                start_ts,
                key: key.clone(),
            });
        }
        if commit_ts > start_ts {
            if let Some((older_ts, older)) = store.seek_write(key, start_ts) {
                if rolled_back(older_ts, older) {
                    return Err(TxnError::PessimisticLockRolledBack {
                        start_ts,
                        key: key.clone(),
                    });
                }
            }
        }
        if let Err(e) = check_data_constraint(store, should_not_exist, write, commit_ts, key) {
            // With a conflict, tell the client to retry rather than that the key exists.
            if let (TxnError::AlreadyExist { .. }, Some((s, c))) = (&e, conflict) {
                return Err(write_conflict(params, key, s, c));
            }
            return Err(e);
        }
        if params.need_value || params.need_check_existence || conflict.is_some() {
            val = match write.write_type {
                WriteType::Put => Some(write.value.clone().unwrap_or_default()),
                WriteType::Delete => None,
                WriteType::Lock | WriteType::Rollback => {
                    if commit_ts == 0 {
                        None
                    } else {
                        value_at(store, key, prev_ts(commit_ts))
                    }
                }
            };
            // Existence checks do not ship the value.
            let load = params.need_value || conflict.is_some();
            if !load {
                val = val.map(|_| Bytes::new());
            }
        }
    }

    if shared {
        // TiKV ignores lock_only_if_exists for shared locks: the lock is always taken.
        let mut holders = joining.unwrap_or_default();
        holders.holders.insert(
            start_ts,
            pessimistic_lock(params, for_update_ts, conflict.is_some()),
        );
        txn.put_shared(key.clone(), holders);
        txn.new_locks += 1;
    } else if !params.lock_only_if_exists || val.is_some() {
        txn.put_lock(
            key.clone(),
            pessimistic_lock(params, for_update_ts, conflict.is_some()),
        );
        txn.new_locks += 1;
    } else if let Some((s, c)) = conflict {
        return Err(write_conflict(params, key, s, c));
    }
    Ok(KeyResult::success(params, conflict.map(|(_, c)| c), val))
}

fn existing_lock(
    txn: &mut MvccTxn,
    store: &TxnStore,
    key: &Bytes,
    should_not_exist: bool,
    params: &LockParams,
    lock: &Lock,
) -> TxnResult<KeyResult> {
    if lock.ts != params.start_ts {
        return Err(locked(lock, key));
    }
    if !lock.is_pessimistic_lock() {
        return Err(TxnError::LockTypeNotMatch {
            start_ts: params.start_ts,
            key: key.clone(),
            pessimistic: false,
        });
    }
    let mut for_update_ts = params.for_update_ts;
    let mut need_load = params.need_value;
    let conflict_ts = if params.allow_lock_with_conflict && for_update_ts < lock.for_update_ts {
        need_load = true;
        for_update_ts = lock.for_update_ts;
        Some(lock.for_update_ts)
    } else {
        None
    };
    let mut val = None;
    if need_load || params.need_check_existence || should_not_exist {
        if let Some((commit_ts, write)) = store.get_write(key, for_update_ts) {
            if let Err(e) = check_data_constraint(store, should_not_exist, write, commit_ts, key) {
                if matches!(e, TxnError::AlreadyExist { .. }) && commit_ts > params.for_update_ts {
                    return Err(write_conflict(params, key, write.start_ts, commit_ts));
                }
                return Err(e);
            }
            if need_load {
                val = Some(write.value.clone().unwrap_or_default());
            } else if params.need_check_existence {
                val = Some(Bytes::new());
            }
        }
    }
    if for_update_ts > lock.for_update_ts {
        let mut l = pessimistic_lock(params, for_update_ts, lock.is_locked_with_conflict);
        l.for_update_ts = for_update_ts;
        txn.put_lock(key.clone(), l);
    }
    Ok(KeyResult::success(params, conflict_ts, val))
}
