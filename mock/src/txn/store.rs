//! The transactional column families and the buffered transaction that changes them.
//!
//! TiKV keeps three column families: `lock` (one lock per key), `write` (commit and
//! rollback records under `key + commit_ts`, newest first) and `default` (long values
//! under `key + start_ts`). The mock keeps `lock` and `write` as ordered maps keyed by the
//! raw key (memcomparable encoding preserves byte order, so raw order is TiKV's order) and
//! keeps values inline in locks and write records.
//!
//! Every command reads a snapshot and buffers its changes in an [`MvccTxn`], exactly as
//! TiKV's `MvccTxn` buffers `Modify`s: a command that fails on its third key leaves nothing
//! behind, and reads inside one command never see that command's own writes (TiKV's
//! `SnapshotReader` does not either).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use tikv_proto::kvrpcpb::{LockInfo, Op};

use super::types::{Lock, Write, WriteType};

/// The shared locks on one key (TiKV's `SharedLocks`): each holder transaction's sub-lock
/// (pessimistic, or `Lock` once prewritten), and whether new holders are refused because an
/// exclusive locker waits for the key to drain (`shrink_only`, set once and kept until the
/// last holder goes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SharedLocks {
    pub(crate) shrink_only: bool,
    /// start ts → sub-lock.
    pub(crate) holders: BTreeMap<u64, Lock>,
}

impl SharedLocks {
    /// TiKV's wrapper `LockInfo`: type `SharedLock`, only the key set, the holders in
    /// `shared_lock_infos`.
    pub(crate) fn lock_info(&self, key: &[u8]) -> LockInfo {
        self.lock_info_upto(key, u64::MAX)
    }

    /// The wrapper with only the holders started at or before `max_ts` (ScanLock).
    pub(crate) fn lock_info_upto(&self, key: &[u8], max_ts: u64) -> LockInfo {
        LockInfo {
            key: Bytes::copy_from_slice(key),
            lock_type: Op::SharedLock as i32,
            shared_lock_infos: self
                .holders
                .range(..=max_ts)
                .map(|(_, l)| l.lock_info(key))
                .collect(),
            ..Default::default()
        }
    }
}

/// Lock and write column families of the whole key space (regions are checked in front).
#[derive(Clone, Debug, Default)]
pub(crate) struct TxnStore {
    locks: BTreeMap<Bytes, Lock>,
    /// Keys locked in shared mode (a key has an exclusive lock or shared locks, never both;
    /// TiKV keeps both kinds in its lock column family).
    shared: BTreeMap<Bytes, SharedLocks>,
    /// key → commit_ts → record.
    writes: BTreeMap<Bytes, BTreeMap<u64, Write>>,
}

/// Where a transaction's commit record for one key stands (`TxnCommitRecord`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommitRecord {
    /// No record of this transaction; `overlapped` is another transaction's commit record
    /// whose `commit_ts` equals this transaction's `start_ts`, if there is one.
    None { overlapped: Option<Write> },
    /// The transaction's own commit or rollback record.
    Single { commit_ts: u64, write: Write },
    /// Another transaction's commit record at `start_ts` carries this rollback as a flag.
    OverlappedRollback,
}

impl CommitRecord {
    /// The transaction committed (its record is not a rollback) at this ts.
    pub(crate) fn committed_ts(&self) -> Option<u64> {
        match self {
            CommitRecord::Single { commit_ts, write }
                if write.write_type != WriteType::Rollback =>
            {
                Some(*commit_ts)
            }
            _ => None,
        }
    }
}

/// A key range `[lower, upper)` over raw keys; `None` is unbounded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyRange<'a> {
    pub(crate) lower: Option<&'a [u8]>,
    pub(crate) upper: Option<&'a [u8]>,
}

impl KeyRange<'_> {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            self.lower.map_or(Bound::Unbounded, Bound::Included),
            self.upper.map_or(Bound::Unbounded, Bound::Excluded),
        )
    }

    fn is_empty(&self) -> bool {
        matches!((self.lower, self.upper), (Some(l), Some(u)) if l >= u)
    }
}

impl TxnStore {
    /// The lock on `key`, if any.
    pub(crate) fn lock(&self, key: &[u8]) -> Option<&Lock> {
        self.locks.get(key)
    }

    /// The shared locks on `key`, if any.
    pub(crate) fn shared(&self, key: &[u8]) -> Option<&SharedLocks> {
        self.shared.get(key)
    }

    /// Keys with shared locks in `range`, in key order.
    pub(crate) fn shared_in(
        &self,
        range: KeyRange<'_>,
    ) -> impl Iterator<Item = (&Bytes, &SharedLocks)> {
        let empty = range.is_empty();
        self.shared
            .range::<[u8], _>(range.bounds())
            .filter(move |_| !empty)
    }

    /// Locks in `range`, in key order.
    pub(crate) fn locks_in(&self, range: KeyRange<'_>) -> impl Iterator<Item = (&Bytes, &Lock)> {
        let empty = range.is_empty();
        self.locks
            .range::<[u8], _>(range.bounds())
            .filter(move |_| !empty)
    }

    /// The newest record with `commit_ts <= ts` (TiKV's `seek_write`).
    pub(crate) fn seek_write(&self, key: &[u8], ts: u64) -> Option<(u64, &Write)> {
        self.writes
            .get(key)?
            .range(..=ts)
            .next_back()
            .map(|(ts, w)| (*ts, w))
    }

    /// All records of `key`, newest first.
    pub(crate) fn writes_of(&self, key: &[u8]) -> impl Iterator<Item = (u64, &Write)> {
        self.writes
            .get(key)
            .into_iter()
            .flat_map(|m| m.iter().rev().map(|(ts, w)| (*ts, w)))
    }

    /// The newest data version (`Put`) visible at `ts`, skipping `Lock` and `Rollback`
    /// records; a `Delete` means none (`get_write_with_commit_ts`).
    pub(crate) fn get_write(&self, key: &[u8], ts: u64) -> Option<(u64, &Write)> {
        let versions = self.writes.get(key)?;
        for (commit_ts, w) in versions.range(..=ts).rev() {
            match w.write_type {
                WriteType::Put => return Some((*commit_ts, w)),
                WriteType::Delete => return None,
                WriteType::Lock | WriteType::Rollback => {}
            }
        }
        None
    }

    /// TiKV's `get_txn_commit_record`: scans from the newest record down to `start_ts`,
    /// because a pessimistic transaction with a smaller start ts may commit after one with
    /// a larger start ts.
    pub(crate) fn commit_record(&self, key: &[u8], start_ts: u64) -> CommitRecord {
        for (commit_ts, w) in self.writes_of(key) {
            if w.start_ts == start_ts {
                return CommitRecord::Single {
                    commit_ts,
                    write: w.clone(),
                };
            }
            if commit_ts == start_ts {
                if w.has_overlapped_rollback {
                    return CommitRecord::OverlappedRollback;
                }
                return CommitRecord::None {
                    overlapped: Some(w.clone()),
                };
            }
            if commit_ts < start_ts {
                break;
            }
        }
        CommitRecord::None { overlapped: None }
    }

    /// Distinct keys that have a lock or a write record in `range`, ascending or descending.
    pub(crate) fn keys_in(&self, range: KeyRange<'_>, reverse: bool) -> KeyWalk<'_> {
        let empty = range.is_empty();
        let (lo, hi) = range.bounds();
        let mut locks: Vec<&Bytes> = if empty {
            Vec::new()
        } else {
            self.locks
                .range::<[u8], _>((lo, hi))
                .map(|(k, _)| k)
                .collect()
        };
        let mut writes: Vec<&Bytes> = if empty {
            Vec::new()
        } else {
            self.writes
                .range::<[u8], _>((lo, hi))
                .map(|(k, _)| k)
                .collect()
        };
        if !reverse {
            locks.reverse();
            writes.reverse();
        }
        // Both stacks pop the next key in walk order from their end.
        KeyWalk {
            locks,
            writes,
            reverse,
        }
    }

    /// Applies a finished command's changes.
    pub(crate) fn apply(&mut self, modifies: Vec<Modify>) {
        for m in modifies {
            match m {
                Modify::PutLock(k, lock) => {
                    self.locks.insert(k, lock);
                }
                Modify::DelLock(k) => {
                    self.locks.remove(&k);
                }
                Modify::PutShared(k, shared) => {
                    self.shared.insert(k, shared);
                }
                Modify::DelShared(k) => {
                    self.shared.remove(&k);
                }
                Modify::PutWrite(k, ts, w) => {
                    self.writes.entry(k).or_default().insert(ts, w);
                }
                Modify::DelWrite(k, ts) => {
                    if let Some(v) = self.writes.get_mut(&k) {
                        v.remove(&ts);
                        if v.is_empty() {
                            self.writes.remove(&k);
                        }
                    }
                }
            }
        }
    }

    /// Removes everything in `range` (`UnsafeDestroyRange`, `DeleteRange` of all CFs).
    pub(crate) fn destroy_range(&mut self, range: KeyRange<'_>) {
        if range.is_empty() {
            return;
        }
        let locks: Vec<Bytes> = self
            .locks
            .range::<[u8], _>(range.bounds())
            .map(|(k, _)| k.clone())
            .collect();
        for k in locks {
            self.locks.remove(&k);
        }
        let shared: Vec<Bytes> = self
            .shared
            .range::<[u8], _>(range.bounds())
            .map(|(k, _)| k.clone())
            .collect();
        for k in shared {
            self.shared.remove(&k);
        }
        let writes: Vec<Bytes> = self
            .writes
            .range::<[u8], _>(range.bounds())
            .map(|(k, _)| k.clone())
            .collect();
        for k in writes {
            self.writes.remove(&k);
        }
    }

    /// GC below `safe_point` (TiKV's `gc` action): keeps the newest data version at or
    /// below the safe point (unless it is a `Delete`) and everything above it; drops older
    /// versions, and `Lock`/`Rollback` records at or below it.
    pub(crate) fn gc(&mut self, range: KeyRange<'_>, safe_point: u64) {
        if range.is_empty() {
            return;
        }
        let keys: Vec<Bytes> = self
            .writes
            .range::<[u8], _>(range.bounds())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(versions) = self.writes.get_mut(&key) else {
                continue;
            };
            let mut found_data = false;
            let old: Vec<u64> = versions
                .range(..=safe_point)
                .rev()
                .map(|(ts, _)| *ts)
                .collect();
            for ts in old {
                let remove = match versions.get(&ts).map(|w| w.write_type) {
                    Some(WriteType::Put) if !found_data => {
                        found_data = true;
                        false
                    }
                    Some(WriteType::Delete) if !found_data => {
                        // The newest version is a delete: the key is gone at the safe point.
                        found_data = true;
                        true
                    }
                    _ => true,
                };
                if remove {
                    versions.remove(&ts);
                }
            }
            if versions.is_empty() {
                self.writes.remove(&key);
            }
        }
    }
}

/// A merge of the lock and write key sets in walk order.
pub(crate) struct KeyWalk<'a> {
    locks: Vec<&'a Bytes>,
    writes: Vec<&'a Bytes>,
    reverse: bool,
}

impl<'a> Iterator for KeyWalk<'a> {
    type Item = &'a Bytes;

    fn next(&mut self) -> Option<&'a Bytes> {
        let (l, w) = (self.locks.last().copied(), self.writes.last().copied());
        let pick = match (l, w) {
            (None, None) => return None,
            (Some(l), None) => l,
            (None, Some(w)) => w,
            (Some(l), Some(w)) => {
                if (l <= w) != self.reverse || l == w {
                    l
                } else {
                    w
                }
            }
        };
        if self.locks.last() == Some(&pick) {
            self.locks.pop();
        }
        if self.writes.last() == Some(&pick) {
            self.writes.pop();
        }
        Some(pick)
    }
}

/// One buffered change.
#[derive(Clone, Debug)]
pub(crate) enum Modify {
    PutLock(Bytes, Lock),
    DelLock(Bytes),
    PutShared(Bytes, SharedLocks),
    DelShared(Bytes),
    PutWrite(Bytes, u64, Write),
    DelWrite(Bytes, u64),
}

/// A lock removed by a command: waiters on the key are woken with this information.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReleasedLock {
    pub(crate) key: Bytes,
    pub(crate) start_ts: u64,
    /// Zero when the lock was rolled back.
    pub(crate) commit_ts: u64,
}

/// The changes of one command, applied only when the whole command succeeds.
#[derive(Debug)]
pub(crate) struct MvccTxn {
    pub(crate) start_ts: u64,
    pub(crate) modifies: Vec<Modify>,
    pub(crate) released: Vec<ReleasedLock>,
    /// 1PC locks: committed directly at the end of a successful prewrite, or turned into
    /// ordinary locks on fallback. The flag says the key held this txn's pessimistic lock.
    pub(crate) locks_for_1pc: Vec<(Bytes, Lock, bool)>,
    /// Locks a pessimistic-lock request acquired (waiters are not woken by these).
    pub(crate) new_locks: usize,
}

impl MvccTxn {
    pub(crate) fn new(start_ts: u64) -> Self {
        MvccTxn {
            start_ts,
            modifies: Vec::new(),
            released: Vec::new(),
            locks_for_1pc: Vec::new(),
            new_locks: 0,
        }
    }

    pub(crate) fn put_lock(&mut self, key: Bytes, lock: Lock) {
        self.modifies.push(Modify::PutLock(key, lock));
    }

    /// Removes this transaction's lock; `commit_ts` is zero for a rollback.
    pub(crate) fn unlock_key(&mut self, key: Bytes, commit_ts: u64) {
        self.released.push(ReleasedLock {
            key: key.clone(),
            start_ts: self.start_ts,
            commit_ts,
        });
        self.modifies.push(Modify::DelLock(key));
    }

    /// The shared locks on `key` as this command left them so far (a resolve touches
    /// several holders of one key in one command).
    pub(crate) fn shared_view(&self, store: &TxnStore, key: &[u8]) -> Option<SharedLocks> {
        for m in self.modifies.iter().rev() {
            match m {
                Modify::PutShared(k, s) if k[..] == key[..] => return Some(s.clone()),
                Modify::DelShared(k) if k[..] == key[..] => return None,
                _ => {}
            }
        }
        store.shared(key).cloned()
    }

    pub(crate) fn put_shared(&mut self, key: Bytes, shared: SharedLocks) {
        self.modifies.push(Modify::PutShared(key, shared));
    }

    /// Removes this transaction's sub-lock from `shared` (the key's shared locks as seen by
    /// this command). The key is released — its waiters woken — only with its last holder.
    pub(crate) fn remove_shared(&mut self, key: Bytes, mut shared: SharedLocks, commit_ts: u64) {
        shared.holders.remove(&self.start_ts);
        if shared.holders.is_empty() {
            self.released.push(ReleasedLock {
                key: key.clone(),
                start_ts: self.start_ts,
                commit_ts,
            });
            self.modifies.push(Modify::DelShared(key));
        } else {
            self.modifies.push(Modify::PutShared(key, shared));
        }
    }

    pub(crate) fn put_write(&mut self, key: Bytes, commit_ts: u64, write: Write) {
        self.modifies.push(Modify::PutWrite(key, commit_ts, write));
    }

    pub(crate) fn delete_write(&mut self, key: Bytes, commit_ts: u64) {
        self.modifies.push(Modify::DelWrite(key, commit_ts));
    }

    /// Drops every buffered change (a prewrite found its transaction already committed).
    pub(crate) fn clear(&mut self) {
        self.modifies.clear();
        self.released.clear();
        self.locks_for_1pc.clear();
    }

    /// TiKV's `mark_rollback_on_mismatching_lock`: a protected rollback written under
    /// another async-commit transaction's lock is remembered in that lock, so committing it
    /// at exactly this ts keeps the rollback visible.
    pub(crate) fn mark_rollback_on_mismatching_lock(
        &mut self,
        key: &Bytes,
        mut lock: Lock,
        protected: bool,
    ) {
        if !protected || self.start_ts < lock.min_commit_ts || !lock.use_async_commit {
            return;
        }
        lock.rollback_ts.push(self.start_ts);
        self.put_lock(key.clone(), lock);
    }
}
