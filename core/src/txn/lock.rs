//! Locks, transaction statuses, and key errors turned into typed results.

use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::Key;
use crate::timestamp::Timestamp;

/// A lock another transaction holds on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lock {
    /// The locked key.
    pub key: Key,
    /// The owning transaction's primary key (where its fate is decided).
    pub primary: Key,
    /// The owning transaction's start timestamp.
    pub start_ts: Timestamp,
    /// How long (ms, from `start_ts`'s physical time) the lock is held before it may be
    /// cleaned up.
    pub ttl_ms: u64,
    /// Keys in the owning transaction (sizes TiKV's resolution work).
    pub txn_size: u64,
    /// Whether the owner uses async commit (its fate then needs `CheckSecondaryLocks`).
    pub use_async_commit: bool,
    /// The lock's kind (put, delete, lock, pessimistic lock).
    pub lock_type: i32,
    /// For a pessimistic lock, the `for_update_ts` it was taken at (zero otherwise).
    pub for_update_ts: Timestamp,
    /// The smallest timestamp the owner may commit at (zero when the owner set none).
    pub min_commit_ts: Timestamp,
}

impl From<&kvrpcpb::LockInfo> for Lock {
    fn from(l: &kvrpcpb::LockInfo) -> Self {
        Lock {
            key: Key::from(l.key.clone()),
            primary: Key::from(l.primary_lock.clone()),
            start_ts: Timestamp::from_u64(l.lock_version),
            ttl_ms: l.lock_ttl,
            txn_size: l.txn_size,
            use_async_commit: l.use_async_commit,
            lock_type: l.lock_type,
            for_update_ts: Timestamp::from_u64(l.lock_for_update_ts),
            min_commit_ts: Timestamp::from_u64(l.min_commit_ts),
        }
    }
}

impl Lock {
    /// The locks a `LockInfo` stands for: itself, or — for a key held in shared mode
    /// (`Op::SharedLock`) — one lock per holder transaction (TiKV's wrapper carries only the
    /// key; the holders are in `shared_lock_infos`).
    pub fn all_from(info: &kvrpcpb::LockInfo) -> Vec<Lock> {
        if info.shared_lock_infos.is_empty() {
            vec![Lock::from(info)]
        } else {
            info.shared_lock_infos.iter().map(Lock::from).collect()
        }
    }

    /// A prewrite (`Put`) lock on `key` of the transaction started at `start_ts` whose
    /// primary is `primary`, living `ttl_ms` from its start — what a reader reports; set the
    /// other fields (`txn_size`, `use_async_commit`, `lock_type`, ...) as TiKV reported them.
    /// Locks listed by `TransactionClient::scan_locks` come complete.
    pub fn new(
        key: impl Into<Key>,
        primary: impl Into<Key>,
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Self {
        Lock {
            key: key.into(),
            primary: primary.into(),
            start_ts,
            ttl_ms,
            txn_size: 1,
            use_async_commit: false,
            lock_type: kvrpcpb::Op::Put as i32,
            for_update_ts: Timestamp::ZERO,
            min_commit_ts: Timestamp::ZERO,
        }
    }

    /// Whether the lock's TTL has run out by `now` (judged on TSO time, the only clock).
    pub fn expired(&self, now: Timestamp) -> bool {
        now.physical_ms() >= self.start_ts.physical_ms().saturating_add(self.ttl_ms)
    }

    /// The lock's kind, as TiKV names it (`Put`, `Del`, `Lock`, `PessimisticLock`, ...).
    pub fn kind(&self) -> &'static str {
        kvrpcpb::Op::try_from(self.lock_type).map_or("unknown", |op| op.as_str_name())
    }

    /// Whether this is a pessimistic lock (taken by `lock_keys`, not yet prewritten). It
    /// never blocks reads, and a dead owner's pessimistic lock is removed with
    /// `PessimisticRollback`, not `ResolveLock`.
    pub fn is_pessimistic(&self) -> bool {
        self.lock_type == kvrpcpb::Op::PessimisticLock as i32
    }
}

/// What TiKV knows about a transaction, from its primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// Committed at this timestamp.
    Committed(Timestamp),
    /// Rolled back (or never written and now prevented).
    RolledBack,
    /// Still running; the lock lives `ttl_ms` more.
    Alive {
        /// Remaining time to live of the primary lock, in ms from its start.
        ttl_ms: u64,
    },
}

impl TxnStatus {
    /// Whether the transaction committed.
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnStatus::Committed(_))
    }

    /// Whether the transaction was rolled back.
    pub fn is_rolled_back(&self) -> bool {
        matches!(self, TxnStatus::RolledBack)
    }

    /// Whether the outcome is final (committed or rolled back): it can never change.
    pub fn is_decided(&self) -> bool {
        !matches!(self, TxnStatus::Alive { .. })
    }

    /// The commit timestamp, if the transaction committed.
    pub fn commit_ts(&self) -> Option<Timestamp> {
        match self {
            TxnStatus::Committed(ts) => Some(*ts),
            _ => None,
        }
    }

    /// The primary lock's time to live (ms from the transaction's start), if it is running.
    pub fn ttl_ms(&self) -> Option<u64> {
        match self {
            TxnStatus::Alive { ttl_ms } => Some(*ttl_ms),
            _ => None,
        }
    }
}

/// A key error classified for the machines that meet it.
#[derive(Clone, Debug)]
pub enum KeyErrorKind {
    /// The key is locked by another transaction: resolve, then retry.
    Locked(Lock),
    /// The key is held in shared mode by these transactions (each a lock to resolve).
    SharedLocked(Vec<Lock>),
    /// The commit timestamp is below the lock's min_commit_ts: take a newer one and retry.
    CommitTsExpired {
        /// The smallest acceptable commit timestamp.
        min_commit_ts: Timestamp,
    },
    /// Anything else: the operation fails with this error.
    Fail(Error),
}

impl KeyErrorKind {
    /// Names `key` in a failure that TiKV's key error did not name a key for (an abort, a
    /// retryable error), so the caller learns which key it concerns.
    pub fn on_key(self, key: &Key) -> Self {
        match self {
            KeyErrorKind::Fail(Error::KeyError { key: k, message }) if k.is_empty() => {
                KeyErrorKind::Fail(Error::KeyError {
                    key: key.clone(),
                    message,
                })
            }
            other => other,
        }
    }
}

/// Classifies a key error returned for `key` by a transaction started at `start_ts`.
pub fn key_error(e: &kvrpcpb::KeyError, start_ts: Timestamp) -> KeyErrorKind {
    // A deadlock first: TiKV may describe the lock waited for alongside it.
    if let Some(d) = &e.deadlock {
        return KeyErrorKind::Fail(Error::Deadlock {
            key: Key::from(d.lock_key.clone()),
            lock_ts: d.lock_ts,
            deadlock_key_hash: d.deadlock_key_hash,
            wait_chain: d
                .wait_chain
                .iter()
                .map(|w| (w.txn, w.wait_for_txn, Key::from(w.key.clone())))
                .collect(),
            // TiKV names the key only by its hash; the wait chain has the key itself.
            deadlock_key: if d.deadlock_key.is_empty() {
                d.wait_chain
                    .iter()
                    .find(|w| w.key_hash == d.deadlock_key_hash && !w.key.is_empty())
                    .map(|w| Key::from(w.key.clone()))
            } else {
                Some(Key::from(d.deadlock_key.clone()))
            },
            // Decided by the lock call, which knows its keys.
            retryable: false,
        });
    }
    if let Some(lock) = &e.locked {
        if !lock.shared_lock_infos.is_empty() {
            return KeyErrorKind::SharedLocked(Lock::all_from(lock));
        }
        return KeyErrorKind::Locked(Lock::from(lock));
    }
    if let Some(c) = &e.conflict {
        let reason = kvrpcpb::write_conflict::Reason::try_from(c.reason)
            .map_or("unknown", |r| r.as_str_name());
        return KeyErrorKind::Fail(Error::WriteConflict {
            key: Key::from(c.key.clone()),
            primary: Key::from(c.primary.clone()),
            start_ts: c.start_ts,
            conflict_ts: c.conflict_ts,
            conflict_commit_ts: c.conflict_commit_ts,
            reason: reason.to_string(),
        });
    }
    if let Some(a) = &e.assertion_failed {
        return KeyErrorKind::Fail(Error::AssertionFailed {
            key: Key::from(a.key.clone()),
            expected_exists: a.assertion == kvrpcpb::Assertion::Exist as i32,
            existing_start_ts: a.existing_start_ts,
            existing_commit_ts: a.existing_commit_ts,
        });
    }
    if let Some(a) = &e.already_exist {
        return KeyErrorKind::Fail(Error::KeyExists {
            key: Key::from(a.key.clone()),
        });
    }
    if let Some(x) = &e.commit_ts_expired {
        return KeyErrorKind::CommitTsExpired {
            min_commit_ts: Timestamp::from_u64(x.min_commit_ts),
        };
    }
    if let Some(n) = &e.txn_lock_not_found {
        return KeyErrorKind::Fail(Error::TxnAborted {
            start_ts: start_ts.as_u64(),
            detail: format!(
                "its lock on {} is gone (rolled back by another client)",
                Key::from(n.key.clone())
            ),
        });
    }
    if let Some(n) = &e.txn_not_found {
        return KeyErrorKind::Fail(Error::TxnAborted {
            start_ts: n.start_ts,
            detail: format!(
                "no lock or commit record for primary {}",
                Key::from(n.primary_key.clone())
            ),
        });
    }
    let message = if !e.abort.is_empty() {
        e.abort.clone()
    } else if !e.retryable.is_empty() {
        e.retryable.clone()
    } else {
        format!("{e:?}")
    };
    KeyErrorKind::Fail(Error::KeyError {
        key: Key::EMPTY,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let locked = kvrpcpb::KeyError {
            locked: Some(kvrpcpb::LockInfo {
                key: "k".into(),
                primary_lock: "p".into(),
                lock_version: 5,
                lock_ttl: 3000,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(key_error(&locked, Timestamp::ZERO), KeyErrorKind::Locked(l) if l.primary == "p".into())
        );
        let conflict = kvrpcpb::KeyError {
            conflict: Some(kvrpcpb::WriteConflict {
                key: "k".into(),
                start_ts: 1,
                conflict_ts: 2,
                conflict_commit_ts: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            key_error(&conflict, Timestamp::ZERO),
            KeyErrorKind::Fail(Error::WriteConflict {
                conflict_commit_ts: 3,
                ..
            })
        ));
        let exists = kvrpcpb::KeyError {
            already_exist: Some(kvrpcpb::AlreadyExist { key: "k".into() }),
            ..Default::default()
        };
        assert!(matches!(
            key_error(&exists, Timestamp::ZERO),
            KeyErrorKind::Fail(Error::KeyExists { .. })
        ));
        let abort = kvrpcpb::KeyError {
            abort: "boom".into(),
            ..Default::default()
        };
        assert!(
            matches!(key_error(&abort, Timestamp::ZERO), KeyErrorKind::Fail(Error::KeyError { message, .. }) if message == "boom")
        );
    }

    #[test]
    fn status_accessors() {
        let committed = TxnStatus::Committed(Timestamp::compose(5, 0));
        assert!(committed.is_committed() && committed.is_decided());
        assert_eq!(committed.commit_ts(), Some(Timestamp::compose(5, 0)));
        assert!(TxnStatus::RolledBack.is_rolled_back() && TxnStatus::RolledBack.is_decided());
        let alive = TxnStatus::Alive { ttl_ms: 3000 };
        assert!(!alive.is_decided());
        assert_eq!((alive.ttl_ms(), alive.commit_ts()), (Some(3000), None));
    }

    #[test]
    fn expiry_uses_tso_time() {
        let l = Lock {
            key: "k".into(),
            primary: "p".into(),
            start_ts: Timestamp::compose(1000, 0),
            ttl_ms: 3000,
            txn_size: 1,
            use_async_commit: false,
            lock_type: 0,
            for_update_ts: Timestamp::ZERO,
            min_commit_ts: Timestamp::ZERO,
        };
        assert!(!l.expired(Timestamp::compose(3999, 5)));
        assert!(l.expired(Timestamp::compose(4000, 0)));
    }
}
