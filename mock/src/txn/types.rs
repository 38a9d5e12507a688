//! Percolator records as TiKV keeps them (`components/txn_types`): locks, write records,
//! timestamps and the transaction statuses the actions compute.
//!
//! The mock stores these values directly instead of TiKV's byte encodings; the fields are
//! the ones whose behaviour a client can observe (through errors, `LockInfo`, reads, or
//! `MvccGetByKey`). Values are always kept inline (TiKV moves values longer than 255 bytes
//! to the default column family; nothing a client sees depends on where they live).

use bytes::Bytes;
use tikv_proto::kvrpcpb::{LockInfo, Op};

/// The largest timestamp; a read at `u64::MAX` means "latest committed" (autocommit point
/// get) and is treated specially by lock checks and max-ts tracking.
pub(crate) const TS_MAX: u64 = u64::MAX;

/// The physical (millisecond) part of a TSO timestamp.
pub(crate) fn physical(ts: u64) -> u64 {
    ts >> 18
}

/// `TimeStamp::next`; saturating so a client-supplied `u64::MAX` cannot overflow.
pub(crate) fn next_ts(ts: u64) -> u64 {
    ts.saturating_add(1)
}

/// `TimeStamp::prev`; saturating at zero.
pub(crate) fn prev_ts(ts: u64) -> u64 {
    ts.saturating_sub(1)
}

/// The kind of a lock in the lock column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockType {
    /// A prewritten put (or insert).
    Put,
    /// A prewritten delete.
    Delete,
    /// A prewritten `Op::Lock` (locks the key without changing it).
    Lock,
    /// A pessimistic lock, acquired before prewrite.
    Pessimistic,
}

/// A lock on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lock {
    pub(crate) lock_type: LockType,
    pub(crate) primary: Bytes,
    /// The owner's start ts.
    pub(crate) ts: u64,
    /// Milliseconds after `physical(ts)` until the lock may be cleaned up.
    pub(crate) ttl: u64,
    /// The value a committed `Put` will write.
    pub(crate) value: Option<Bytes>,
    /// Non-zero for pessimistic transactions.
    pub(crate) for_update_ts: u64,
    pub(crate) txn_size: u64,
    pub(crate) min_commit_ts: u64,
    pub(crate) use_async_commit: bool,
    /// Only on the primary lock of an async-commit transaction.
    pub(crate) secondaries: Vec<Bytes>,
    /// Timestamps of protected rollbacks written over this (async-commit) lock: committing
    /// it at one of them marks the commit record as overlapping a rollback.
    pub(crate) rollback_ts: Vec<u64>,
    /// Acquired in force-lock (fair locking) mode despite a newer write.
    pub(crate) is_locked_with_conflict: bool,
    /// Pipelined DML flush generation (0 for ordinary prewrites).
    pub(crate) generation: u64,
}

impl Lock {
    /// A lock with the common fields set and the rest zero.
    pub(crate) fn new(lock_type: LockType, primary: Bytes, ts: u64, ttl: u64) -> Self {
        Lock {
            lock_type,
            primary,
            ts,
            ttl,
            value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            secondaries: Vec::new(),
            rollback_ts: Vec::new(),
            is_locked_with_conflict: false,
            generation: 0,
        }
    }

    pub(crate) fn is_pessimistic_lock(&self) -> bool {
        self.lock_type == LockType::Pessimistic
    }

    pub(crate) fn is_pessimistic_lock_with_conflict(&self) -> bool {
        self.is_pessimistic_lock() && self.is_locked_with_conflict
    }

    /// TiKV's `Lock::into_lock_info`: what a client sees of a lock.
    pub(crate) fn lock_info(&self, key: &[u8]) -> LockInfo {
        let lock_type = match self.lock_type {
            LockType::Put => Op::Put,
            LockType::Delete => Op::Del,
            LockType::Lock => Op::Lock,
            LockType::Pessimistic => Op::PessimisticLock,
        };
        LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.ts,
            key: Bytes::copy_from_slice(key),
            lock_ttl: self.ttl,
            txn_size: self.txn_size,
            lock_type: lock_type as i32,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
            ..Default::default()
        }
    }
}

/// The kind of a record in the write column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteType {
    Put,
    Delete,
    Lock,
    Rollback,
}

impl WriteType {
    /// The record a committed lock becomes; pessimistic locks are never committed.
    pub(crate) fn from_lock_type(t: LockType) -> Option<WriteType> {
        match t {
            LockType::Put => Some(WriteType::Put),
            LockType::Delete => Some(WriteType::Delete),
            LockType::Lock => Some(WriteType::Lock),
            LockType::Pessimistic => None,
        }
    }
}

/// A write record, stored under `(key, commit_ts)`; rollbacks use `commit_ts = start_ts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) write_type: WriteType,
    pub(crate) start_ts: u64,
    pub(crate) value: Option<Bytes>,
    /// This commit record's `commit_ts` equals another transaction's `start_ts` that was
    /// rolled back (TiKV keeps one record per `(key, ts)`, so the rollback is a flag).
    pub(crate) has_overlapped_rollback: bool,
    /// A protected rollback is never collapsed by later rollbacks.
    pub(crate) protected: bool,
}

impl Write {
    pub(crate) fn new(write_type: WriteType, start_ts: u64, value: Option<Bytes>) -> Self {
        Write {
            write_type,
            start_ts,
            value,
            has_overlapped_rollback: false,
            protected: false,
        }
    }

    pub(crate) fn rollback(start_ts: u64, protected: bool) -> Self {
        Write {
            protected,
            ..Write::new(WriteType::Rollback, start_ts, None)
        }
    }

    /// A rollback that later rollbacks may delete (`WriteRef::is_protected` is false).
    pub(crate) fn is_collapsible_rollback(&self) -> bool {
        self.write_type == WriteType::Rollback && !self.protected
    }
}

/// The state of a transaction as check-txn-status and friends determine it
/// (`storage::types::TxnStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TxnStatus {
    /// A rollback record exists.
    RolledBack,
    /// The primary lock's TTL had expired and the lock was rolled back now.
    TtlExpire,
    /// There was no lock and no record; a rollback record was written now.
    LockNotExist,
    Committed {
        commit_ts: u64,
    },
    /// The primary lock is alive.
    Uncommitted {
        lock: Box<Lock>,
        min_commit_ts_pushed: bool,
    },
    /// An expired pessimistic primary lock was removed without a rollback record.
    PessimisticRollBack,
    /// Resolving a pessimistic lock found no primary lock; nothing was written.
    LockNotExistDoNothing,
}
