//! Snapshot reads with TiKV's lock checks (`mvcc/reader/point_getter.rs`,
//! `mvcc/reader/scanner`, and `txn_types::check_ts_conflict`).
//!
//! Isolation levels:
//! - **SI**: a lock blocks a read at `ts` unless the lock is newer (`lock.ts > ts`), is a
//!   `Lock`/pessimistic lock (they never change data), has `min_commit_ts > ts` (it will
//!   commit above the snapshot), or its transaction is listed in `resolved_locks`. A read
//!   at `u64::MAX` ignores the primary lock of a non-async, non-1PC transaction.
//! - **RC**: locks are ignored.
//! - **RCCheckTS**: any data lock is a `WriteConflict` (reason `RcCheckTs`), and so is a
//!   point read meeting a version newer than its ts.
//!
//! A blocking lock whose transaction is listed in `committed_locks` is read through: its
//! own value is returned as if committed (not when the commit ts is asked for).

use bytes::Bytes;
use tikv_proto::kvrpcpb::{IsolationLevel, write_conflict};

use super::error::{TxnError, TxnResult, locked};
use super::store::{KeyRange, TxnStore};
use super::types::{Lock, LockType, TS_MAX, WriteType};

/// The parameters of one snapshot read.
#[derive(Clone, Debug)]
pub(crate) struct ReadOpts {
    pub(crate) ts: u64,
    pub(crate) isolation: IsolationLevel,
    /// `Context.resolved_locks`: transactions known rolled back or committed above `ts`.
    pub(crate) bypass: Vec<u64>,
    /// `Context.committed_locks`: transactions known committed below `ts`.
    pub(crate) access: Vec<u64>,
    pub(crate) key_only: bool,
    pub(crate) need_commit_ts: bool,
}

/// A value read: the bytes and, when asked for, the commit ts of the version.
pub(crate) type Entry = (Bytes, u64);

/// `check_ts_conflict`: `Ok(())` when the lock does not block the read.
pub(crate) fn check_lock(lock: &Lock, key: &[u8], opts: &ReadOpts) -> TxnResult<()> {
    match opts.isolation {
        IsolationLevel::Si => {
            if lock.ts > opts.ts
                || lock.lock_type == LockType::Lock
                || lock.is_pessimistic_lock()
                || lock.min_commit_ts > opts.ts
                || opts.bypass.contains(&lock.ts)
            {
                return Ok(());
            }
            if opts.ts == TS_MAX && key == &lock.primary[..] && !lock.use_async_commit {
                // Reading the latest version of a primary key: the lock's transaction is
                // not committed yet, so the latest committed version is the answer.
                return Ok(());
            }
            Err(locked(lock, key))
        }
        IsolationLevel::RcCheckTs => {
            if lock.lock_type == LockType::Lock
                || lock.is_pessimistic_lock()
                || opts.bypass.contains(&lock.ts)
            {
                return Ok(());
            }
            Err(TxnError::WriteConflict {
                start_ts: opts.ts,
                conflict_start_ts: lock.ts,
                conflict_commit_ts: 0,
                key: Bytes::copy_from_slice(key),
                primary: lock.primary.clone(),
                reason: write_conflict::Reason::RcCheckTs,
            })
        }
        IsolationLevel::Rc => Ok(()),
    }
}

fn needs_lock_check(iso: IsolationLevel) -> bool {
    matches!(iso, IsolationLevel::Si | IsolationLevel::RcCheckTs)
}

/// Reads `key` at `opts.ts` (`PointGetter::get_entry`).
pub(crate) fn point_get(store: &TxnStore, key: &[u8], opts: &ReadOpts) -> TxnResult<Option<Entry>> {
    if needs_lock_check(opts.isolation) {
        if let Some(lock) = store.lock(key) {
            if let Err(e) = check_lock(lock, key, opts) {
                if !opts.need_commit_ts && opts.access.contains(&lock.ts) {
                    return Ok(value_from_lock(lock, opts));
                }
                return Err(e);
            }
        }
    }
    if opts.isolation == IsolationLevel::RcCheckTs {
        if let Some((commit_ts, _)) = store.seek_write(key, TS_MAX) {
            if commit_ts > opts.ts {
                return Err(TxnError::WriteConflict {
                    start_ts: opts.ts,
                    conflict_start_ts: 0,
                    conflict_commit_ts: commit_ts,
                    key: Bytes::copy_from_slice(key),
                    primary: Bytes::new(),
                    reason: write_conflict::Reason::RcCheckTs,
                });
            }
        }
    }
    Ok(committed_value(store, key, opts))
}

fn value_from_lock(lock: &Lock, opts: &ReadOpts) -> Option<Entry> {
    match lock.lock_type {
        LockType::Put if opts.key_only => Some((Bytes::new(), 0)),
        LockType::Put => Some((lock.value.clone().unwrap_or_default(), 0)),
        // Only data locks can conflict, so only Put and Delete get here.
        _ => None,
    }
}

fn committed_value(store: &TxnStore, key: &[u8], opts: &ReadOpts) -> Option<Entry> {
    let (commit_ts, w) = store.get_write(key, opts.ts)?;
    debug_assert_eq!(w.write_type, WriteType::Put);
    let value = if opts.key_only {
        Bytes::new()
    } else {
        w.value.clone().unwrap_or_default()
    };
    Some((value, if opts.need_commit_ts { commit_ts } else { 0 }))
}

/// One scan result: a pair, or a lock error for a key (scans report locked keys in place
/// and keep going; they count against the limit).
pub(crate) type ScanItem = TxnResult<(Bytes, Bytes)>;

/// Scans `range` in order (descending if `reverse`), returning at most `limit` items; with
/// `sample_step > 0`, only every `sample_step`-th key is returned.
pub(crate) fn scan(
    store: &TxnStore,
    range: KeyRange<'_>,
    reverse: bool,
    limit: usize,
    sample_step: usize,
    opts: &ReadOpts,
) -> TxnResult<Vec<ScanItem>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut row_count = 0usize;
    for key in store.keys_in(range, reverse) {
        let mut from_lock = None;
        if needs_lock_check(opts.isolation) {
            if let Some(lock) = store.lock(key) {
                if let Err(e) = check_lock(lock, key, opts) {
                    if opts.access.contains(&lock.ts) {
                        from_lock = Some(value_from_lock(lock, opts));
                    } else if matches!(e, TxnError::KeyIsLocked(_)) {
                        out.push(Err(e));
                        if out.len() >= limit {
                            break;
                        }
                        continue;
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        let value = match from_lock {
            Some(v) => v.map(|(v, _)| v),
            None => committed_value(store, key, opts).map(|(v, _)| v),
        };
        let Some(value) = value else { continue };
        if sample_step > 0 {
            row_count += 1;
            if (row_count - 1) % sample_step != 0 {
                continue;
            }
        }
        out.push(Ok((key.clone(), value)));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
