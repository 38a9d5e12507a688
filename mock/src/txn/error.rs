//! Transactional errors and how TiKV reports them to clients.
//!
//! [`TxnError`] mirrors the variants of TiKV's `mvcc::ErrorInner`, `txn::ErrorInner` and
//! `storage::ErrorInner` that the transactional commands produce. [`TxnError::key_error`]
//! is TiKV's `extract_key_error` (`src/storage/errors.rs`): typed `KeyError` fields for the
//! errors clients act on, and the error's `Debug` text in `abort` for everything else. The
//! `Debug` texts follow TiKV's nesting (`Error(Txn(Error(Mvcc(Error(..)))))`) so that
//! clients matching on them see familiar strings; TiKV's exact byte-for-byte text is not a
//! contract.

use std::fmt::Write as _;

use bytes::Bytes;
use tikv_proto::deadlock::WaitForEntry;
use tikv_proto::kvrpcpb::{self, Assertion, KeyError, LockInfo, write_conflict};

/// Why a pessimistic prewrite found no pessimistic lock (`PessimisticLockNotFoundReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockNotFoundReason {
    LockTsMismatch,
    LockMissingAmendFail,
    NonLockKeyConflict,
    LockForUpdateTsMismatch,
}

/// A transactional command's failure.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TxnError {
    KeyIsLocked(Box<LockInfo>),
    /// `KeyIsLocked` that must not wait: an exclusive request met shared locks that still
    /// admitted new holders; they are shrink-only now, and the retry waits (TiKV's
    /// `NotInShrinkMode` handling in `AcquirePessimisticLock`).
    KeyIsLockedNoWait(Box<LockInfo>),
    /// An exclusive request met shared locks that admit new holders (internal: the command
    /// makes them shrink-only and answers `KeyIsLockedNoWait`).
    NotInShrinkMode {
        key: Bytes,
        shared: Box<crate::txn::store::SharedLocks>,
    },
    WriteConflict {
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        key: Bytes,
        primary: Bytes,
        reason: write_conflict::Reason,
    },
    AlreadyExist {
        key: Bytes,
        existing_start_ts: u64,
    },
    TxnLockNotFound {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
    },
    TxnNotFound {
        start_ts: u64,
        key: Bytes,
    },
    CommitTsExpired {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
        min_commit_ts: u64,
    },
    CommitTsTooLarge {
        start_ts: u64,
        min_commit_ts: u64,
        max_commit_ts: u64,
    },
    AssertionFailed {
        start_ts: u64,
        key: Bytes,
        assertion: Assertion,
        existing_start_ts: u64,
        existing_commit_ts: u64,
    },
    PrimaryMismatch(Box<LockInfo>),
    Deadlock {
        start_ts: u64,
        lock_ts: u64,
        lock_key: Bytes,
        deadlock_key_hash: u64,
        wait_chain: Vec<WaitForEntry>,
    },
    /// Rolling back a committed transaction (`cleanup`).
    Committed {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
    },
    PessimisticLockRolledBack {
        start_ts: u64,
        key: Bytes,
    },
    PessimisticLockNotFound {
        start_ts: u64,
        key: Bytes,
        reason: LockNotFoundReason,
    },
    LockTypeNotMatch {
        start_ts: u64,
        key: Bytes,
        pessimistic: bool,
    },
    LockIfExistsFailed {
        start_ts: u64,
        key: Bytes,
    },
    /// `commit_ts <= start_ts` in a commit or resolve-lock (a `txn::Error`).
    InvalidTxnTso {
        start_ts: u64,
        commit_ts: u64,
    },
    GenerationOutOfOrder {
        generation: u64,
        key: Bytes,
        lock_generation: u64,
    },
    /// `box_err!` text of an mvcc-level `Other`.
    MvccOther(String),
    /// `box_err!` text of a txn-level `Other`.
    TxnOther(String),
    /// Storage-level: a key longer than `max-key-size`.
    KeyTooLarge {
        size: usize,
        limit: usize,
    },
    /// Storage-level: the request's API version does not fit the storage.
    ApiVersionNotMatched {
        cmd: &'static str,
        storage: &'static str,
        request: &'static str,
    },
    /// Storage-level: a key of the wrong mode for the API version.
    InvalidKeyMode {
        cmd: &'static str,
        storage: &'static str,
        key: String,
    },
    /// The engine refused to read outside the region snapshot.
    KeyOutOfRegion(String),
}

/// `Vec<u8>`'s `Debug` form, as TiKV's derived `Debug` prints keys.
fn bytes_debug(b: &[u8]) -> String {
    let mut s = String::from("[");
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{x}");
    }
    s.push(']');
    s
}

fn ts(t: u64) -> String {
    format!("TimeStamp({t})")
}

impl TxnError {
    /// The `Debug` text of the error inside TiKV's `storage::Error`.
    pub(crate) fn debug_text(&self) -> String {
        let mvcc = |inner: String| format!("Error(Txn(Error(Mvcc(Error({inner})))))");
        match self {
            TxnError::KeyIsLocked(info) | TxnError::KeyIsLockedNoWait(info) => {
                mvcc(format!("KeyIsLocked({info:?})"))
            }
            TxnError::NotInShrinkMode { key, .. } => mvcc(format!("NotInShrinkMode(key: {key:?})")),
            TxnError::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => mvcc(format!(
                "WriteConflict {{ start_ts: {}, conflict_start_ts: {}, conflict_commit_ts: {}, key: {}, primary: {}, reason: {reason:?} }}",
                ts(*start_ts),
                ts(*conflict_start_ts),
                ts(*conflict_commit_ts),
                bytes_debug(key),
                bytes_debug(primary)
            )),
            TxnError::AlreadyExist {
                key,
                existing_start_ts,
            } => mvcc(format!(
                "AlreadyExist {{ key: {}, existing_start_ts: {} }}",
                bytes_debug(key),
                ts(*existing_start_ts)
            )),
            TxnError::TxnLockNotFound {
                start_ts,
                commit_ts,
                key,
            } => mvcc(format!(
                "TxnLockNotFound {{ start_ts: {}, commit_ts: {}, key: {}, mvcc_info: None }}",
                ts(*start_ts),
                ts(*commit_ts),
                bytes_debug(key)
            )),
            TxnError::TxnNotFound { start_ts, key } => mvcc(format!(
                "TxnNotFound {{ start_ts: {}, key: {} }}",
                ts(*start_ts),
                bytes_debug(key)
            )),
            TxnError::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => mvcc(format!(
                "CommitTsExpired {{ start_ts: {}, commit_ts: {}, key: {}, min_commit_ts: {}, mvcc_info: None }}",
                ts(*start_ts),
                ts(*commit_ts),
                bytes_debug(key),
                ts(*min_commit_ts)
            )),
            TxnError::CommitTsTooLarge {
                start_ts,
                min_commit_ts,
                max_commit_ts,
            } => mvcc(format!(
                "CommitTsTooLarge {{ start_ts: {}, min_commit_ts: {}, max_commit_ts: {} }}",
                ts(*start_ts),
                ts(*min_commit_ts),
                ts(*max_commit_ts)
            )),
            TxnError::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => mvcc(format!(
                "AssertionFailed {{ start_ts: {}, key: {}, assertion: {assertion:?}, existing_start_ts: {}, existing_commit_ts: {} }}",
                ts(*start_ts),
                bytes_debug(key),
                ts(*existing_start_ts),
                ts(*existing_commit_ts)
            )),
            TxnError::PrimaryMismatch(info) => mvcc(format!("PrimaryMismatch({info:?})")),
            TxnError::Deadlock {
                start_ts,
                lock_ts,
                lock_key,
                deadlock_key_hash,
                wait_chain,
            } => mvcc(format!(
                "Deadlock {{ start_ts: {}, lock_ts: {}, lock_key: {}, deadlock_key_hash: {deadlock_key_hash}, wait_chain: {wait_chain:?} }}",
                ts(*start_ts),
                ts(*lock_ts),
                bytes_debug(lock_key)
            )),
            TxnError::Committed {
                start_ts,
                commit_ts,
                key,
            } => mvcc(format!(
                "Committed {{ start_ts: {}, commit_ts: {}, key: {} }}",
                ts(*start_ts),
                ts(*commit_ts),
                bytes_debug(key)
            )),
            TxnError::PessimisticLockRolledBack { start_ts, key } => mvcc(format!(
                "PessimisticLockRolledBack {{ start_ts: {}, key: {} }}",
                ts(*start_ts),
                bytes_debug(key)
            )),
            TxnError::PessimisticLockNotFound {
                start_ts,
                key,
                reason,
            } => mvcc(format!(
                "PessimisticLockNotFound {{ start_ts: {}, key: {}, reason: {reason:?} }}",
                ts(*start_ts),
                bytes_debug(key)
            )),
            TxnError::LockTypeNotMatch {
                start_ts,
                key,
                pessimistic,
            } => mvcc(format!(
                "LockTypeNotMatch {{ start_ts: {}, key: {}, pessimistic: {pessimistic} }}",
                ts(*start_ts),
                bytes_debug(key)
            )),
            TxnError::LockIfExistsFailed { start_ts, key } => mvcc(format!(
                "LockIfExistsFailed {{ start_ts: {}, key: {} }}",
                ts(*start_ts),
                bytes_debug(key)
            )),
            TxnError::InvalidTxnTso {
                start_ts,
                commit_ts,
            } => format!(
                "Error(Txn(Error(InvalidTxnTso {{ start_ts: {}, commit_ts: {} }})))",
                ts(*start_ts),
                ts(*commit_ts)
            ),
            TxnError::GenerationOutOfOrder {
                generation,
                key,
                lock_generation,
            } => mvcc(format!(
                "GenerationOutOfOrder({generation}, {}, lock generation {lock_generation})",
                bytes_debug(key)
            )),
            TxnError::MvccOther(msg) => mvcc(format!("Other({msg:?})")),
            TxnError::TxnOther(msg) => format!("Error(Txn(Error(Other({msg:?}))))"),
            TxnError::KeyTooLarge { size, limit } => {
                format!("Error(KeyTooLarge {{ size: {size}, limit: {limit} }})")
            }
            TxnError::ApiVersionNotMatched {
                cmd,
                storage,
                request,
            } => format!(
                "Error(ApiVersionNotMatched {{ cmd: {cmd}, storage_api_version: {storage}, req_api_version: {request} }})"
            ),
            TxnError::InvalidKeyMode { cmd, storage, key } => format!(
                "Error(InvalidKeyMode {{ cmd: {cmd}, storage_api_version: {storage}, key: {key:?} }})"
            ),
            TxnError::KeyOutOfRegion(msg) => format!("Error(Kv(Error(Other({msg:?}))))"),
        }
    }

    /// TiKV's `extract_key_error`.
    pub(crate) fn key_error(&self) -> KeyError {
        let mut e = KeyError::default();
        match self {
            TxnError::KeyIsLocked(info) | TxnError::KeyIsLockedNoWait(info) => {
                e.locked = Some((**info).clone())
            }
            TxnError::NotInShrinkMode { key, shared } => {
                e.locked = Some(shared.lock_info(key));
            }
            TxnError::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => {
                e.conflict = Some(kvrpcpb::WriteConflict {
                    start_ts: *start_ts,
                    conflict_ts: *conflict_start_ts,
                    conflict_commit_ts: *conflict_commit_ts,
                    key: key.clone(),
                    primary: primary.clone(),
                    reason: *reason as i32,
                });
                // Older clients only look at `retryable`.
                e.retryable = self.debug_text();
            }
            TxnError::AlreadyExist { key, .. } => {
                e.already_exist = Some(kvrpcpb::AlreadyExist { key: key.clone() });
            }
            TxnError::TxnLockNotFound { key, .. } => {
                e.retryable = self.debug_text();
                e.txn_lock_not_found = Some(kvrpcpb::TxnLockNotFound { key: key.clone() });
            }
            TxnError::TxnNotFound { start_ts, key } => {
                e.txn_not_found = Some(kvrpcpb::TxnNotFound {
                    start_ts: *start_ts,
                    primary_key: key.clone(),
                });
            }
            TxnError::Deadlock {
                lock_ts,
                lock_key,
                deadlock_key_hash,
                wait_chain,
                ..
            } => {
                e.deadlock = Some(kvrpcpb::Deadlock {
                    lock_ts: *lock_ts,
                    lock_key: lock_key.clone(),
                    deadlock_key_hash: *deadlock_key_hash,
                    wait_chain: wait_chain.clone(),
                    ..Default::default()
                });
            }
            TxnError::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => {
                e.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                    start_ts: *start_ts,
                    attempted_commit_ts: *commit_ts,
                    key: key.clone(),
                    min_commit_ts: *min_commit_ts,
                });
            }
            TxnError::CommitTsTooLarge { min_commit_ts, .. } => {
                e.commit_ts_too_large = Some(kvrpcpb::CommitTsTooLarge {
                    commit_ts: *min_commit_ts,
                });
            }
            TxnError::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => {
                e.assertion_failed = Some(kvrpcpb::AssertionFailed {
                    start_ts: *start_ts,
                    key: key.clone(),
                    assertion: *assertion as i32,
                    existing_start_ts: *existing_start_ts,
                    existing_commit_ts: *existing_commit_ts,
                });
            }
            TxnError::PrimaryMismatch(info) => {
                e.primary_mismatch = Some(kvrpcpb::PrimaryMismatch {
                    lock_info: Some((**info).clone()),
                });
            }
            _ => e.abort = self.debug_text(),
        }
        e
    }
}

/// A result of a transactional action.
pub(crate) type TxnResult<T> = Result<T, TxnError>;

/// `KeyIsLocked` for `lock` on `key`.
pub(crate) fn locked(lock: &super::types::Lock, key: &[u8]) -> TxnError {
    TxnError::KeyIsLocked(Box::new(lock.lock_info(key)))
}
