//! The client's error type: what went wrong, with the key, region, store or timestamp it
//! concerns.
//!
//! One enum for the whole client, `#[non_exhaustive]` so that new failure kinds are not a
//! breaking change. [`Error::is_retryable`] says whether retrying the whole operation may
//! succeed (a write conflict, a region that was unavailable for a while) as opposed to a
//! definite failure (a bad argument, a key that exists, an assertion).

use std::fmt;
use std::time::Duration;

use crate::key::Key;
use crate::pd::PdErrorKind;
use crate::region::{RegionVerId, StoreId};

/// Where a request was going.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A TiKV store.
    Store {
        /// The store's id.
        id: StoreId,
        /// Its address.
        address: String,
    },
    /// The PD cluster (its leader, or the endpoint being tried).
    Pd {
        /// The endpoint.
        address: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Store { id, address } => write!(f, "store {id} ({address})"),
            Target::Pd { address } => write!(f, "PD {address}"),
        }
    }
}

/// gRPC status codes (the `grpc-status` trailer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the standard gRPC code names
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code for a `grpc-status` value; unknown values map to `Unknown`, as gRPC specifies.
    pub fn from_u32(v: u32) -> Self {
        use GrpcCode::*;
        const ALL: [GrpcCode; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        ALL.get(v as usize).copied().unwrap_or(Unknown)
    }
}

/// Whether a failed request may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// It certainly did not (connection refused, stream refused, above GOAWAY's last id):
    /// retrying is always safe.
    NotSent,
    /// It may have been applied (reset, timeout or connection loss after it was written).
    MaybeDelivered,
}

/// An error of the TiKV client.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A request failed in transport (connect, stream, timeout).
    #[error("{method} to {target} failed ({delivery:?}): {detail}")]
    Transport {
        /// The method.
        method: &'static str,
        /// Where it was going.
        target: Target,
        /// Whether it may have been applied.
        delivery: Delivery,
        /// What the transport reported.
        detail: String,
    },

    /// The server answered with a non-OK gRPC status.
    #[error("{method} to {target}: gRPC status {code:?}: {message}")]
    Grpc {
        /// The method.
        method: &'static str,
        /// Where it was going.
        target: Target,
        /// The status code.
        code: GrpcCode,
        /// The status message.
        message: String,
    },

    /// A PD call failed: PD answered with an error, or could not be reached.
    #[error("PD {method} at {address}: {kind}: {message}")]
    Pd {
        /// The PD method.
        method: &'static str,
        /// The PD member asked (or the endpoints tried, comma-separated).
        address: String,
        /// Why, by kind.
        kind: PdErrorKind,
        /// PD's (or the transport's) message.
        message: String,
    },

    /// A region error that the client does not retry (or no longer can).
    #[error("{region}: region error: {message}")]
    Region {
        /// The region at the epoch the request named.
        region: RegionVerId,
        /// The error, as TiKV described it.
        message: String,
    },

    /// The operation kept failing until its backoff budget ran out.
    #[error(
        "{operation}: {reason}: gave up after {attempts} retries and {slept:?} of backoff (budget {budget:?}); recent errors: {recent}"
    )]
    BackoffExhausted {
        /// What was being attempted.
        operation: &'static str,
        /// What the longest backoff was waiting for (e.g. "region unavailable").
        reason: &'static str,
        /// How many times it was tried.
        attempts: u32,
        /// Total backoff sleep.
        slept: Duration,
        /// The budget that ran out.
        budget: Duration,
        /// The last few errors, most recent last.
        recent: String,
        /// The last error.
        last: Box<Error>,
    },

    /// A TiKV key error the client does not interpret further.
    #[error("key error on {key}: {message}")]
    KeyError {
        /// The key concerned (empty when TiKV did not name one).
        key: Key,
        /// TiKV's description.
        message: String,
    },

    /// A write may or may not have been applied: the client cannot tell (e.g. the reply to a
    /// primary commit or a compare-and-swap was lost).
    #[error("{operation}: result undetermined: {detail}")]
    Undetermined {
        /// What was being attempted.
        operation: &'static str,
        /// Why the result is unknown.
        detail: String,
    },

    /// A transaction's write conflicts with a newer committed write (or lock): retry the
    /// whole transaction with a new start timestamp.
    #[error(
        "write conflict on {key}: transaction {start_ts} conflicts with one that started at {conflict_ts} and committed at {conflict_commit_ts} (primary {primary}, {reason})"
    )]
    WriteConflict {
        /// The key written by both.
        key: Key,
        /// The primary key of this transaction.
        primary: Key,
        /// This transaction's start timestamp.
        start_ts: u64,
        /// The conflicting transaction's start timestamp.
        conflict_ts: u64,
        /// When the conflicting transaction committed (0 if it holds a lock instead).
        conflict_commit_ts: u64,
        /// TiKV's reason (optimistic, pessimistic retry, ...).
        reason: String,
    },

    /// An insert found the key already present.
    #[error("key {key} already exists")]
    KeyExists {
        /// The key.
        key: Key,
    },

    /// A pessimistic lock waited for another transaction's lock longer than the caller's
    /// wait timeout (client-go's `ErrLockWaitTimeout`). Nothing this call locked stays locked.
    #[error("lock wait timeout on key {key}: still locked by transaction {lock_ts}")]
    LockWaitTimeout {
        /// The key that stayed locked.
        key: Key,
        /// The start timestamp of the transaction holding it.
        lock_ts: u64,
    },

    /// A pessimistic lock asked not to wait met another transaction's lock
    /// (client-go's `ErrLockAcquireFailAndNoWaitSet`).
    #[error("key {key} is locked by transaction {lock_ts} and the lock was asked not to wait")]
    LockAcquireFailAndNoWaitSet {
        /// The locked key.
        key: Key,
        /// The start timestamp of the transaction holding it.
        lock_ts: u64,
    },

    /// Waiting for the lock would close a cycle of transactions waiting for each other: TiKV
    /// chose this transaction as the victim (client-go's `ErrDeadlock`). Rolling back and
    /// retrying usually succeeds.
    #[error("deadlock on key {key}: transaction {lock_ts} holds it, wait chain {wait_chain:?}")]
    Deadlock {
        /// The key this transaction wanted.
        key: Key,
        /// The start timestamp of the transaction holding it.
        lock_ts: u64,
        /// TiKV's hash of the key that closed the cycle.
        deadlock_key_hash: u64,
        /// The cycle: `(txn, waits for txn, on key)` entries as TiKV reported them.
        wait_chain: Vec<(u64, u64, Key)>,
        /// The key that closed the cycle (the wait-chain entry of `deadlock_key_hash`).
        deadlock_key: Option<Key>,
        /// The cycle closed on a key of this `lock_keys` call (client-go's
        /// `ErrDeadlock.IsRetryable`): the statement may be retried alone rather than the
        /// whole transaction.
        retryable: bool,
    },

    /// A key longer than TiKV accepts (64 KiB - 1; client-go's `ErrKeyTooLarge`).
    #[error("key of {size} bytes is too large (the limit is {limit})")]
    KeyTooLarge {
        /// The key's size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// One write (key + value) larger than the transaction's entry size limit (client-go's
    /// `ErrEntryTooLarge`); the write was not buffered.
    #[error("write of {size} bytes to key {key} is larger than the entry limit of {limit}")]
    EntryTooLarge {
        /// The key.
        key: Key,
        /// Key + value size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// The buffered writes would pass the transaction's total size limit (client-go's
    /// `ErrTxnTooLarge`); the write was not buffered.
    #[error("transaction of {size} bytes is larger than its limit of {limit}")]
    TxnTooLarge {
        /// The size the buffer would have had.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// A write's assertion about its key did not hold at prewrite (client-go's
    /// `ErrAssertionFailed`): the transaction rolled back.
    #[error(
        "assertion failed on key {key}: expected it to {}, but {}",
        if *expected_exists { "exist" } else { "not exist" },
        if *existing_commit_ts > 0 { format!("it was written at {existing_commit_ts}") } else { "it is absent".to_string() }
    )]
    AssertionFailed {
        /// The key.
        key: Key,
        /// What was asserted: that the key exists (`true`) or not.
        expected_exists: bool,
        /// The start ts of the version found (0: none).
        existing_start_ts: u64,
        /// The commit ts of the version found (0: none).
        existing_commit_ts: u64,
    },

    /// PD's TSO stayed at or below the timestamp the commit had to exceed
    /// (`commit_wait_until`, client-go's `ErrCommitTSLag`): the clocks of the clusters drift
    /// more than allowed. Nothing was committed.
    #[error("commit timestamp {ts} lags behind the required {target}: {message}")]
    CommitTsLag {
        /// The last timestamp PD gave.
        ts: u64,
        /// The timestamp the commit had to exceed.
        target: u64,
        /// Why the commit gave up.
        message: String,
    },

    /// The operation was stopped from outside: its interrupt flag was set, or it ran past
    /// its max execution time (client-go's `ErrQueryInterrupted`). Nothing it locked stays
    /// locked.
    #[error("interrupted: {0}")]
    Interrupted(String),

    /// The transaction was rolled back (by another client resolving its locks, or because its
    /// locks expired) before it could commit.
    #[error("transaction {start_ts} aborted: {detail}")]
    TxnAborted {
        /// The transaction's start timestamp.
        start_ts: u64,
        /// What happened.
        detail: String,
    },

    /// The read's start timestamp is below the txn safe point (client-go's
    /// `ErrTxnAbortedByGC`): GC may already have removed versions it would see, so it is
    /// refused rather than answered wrongly. Start a new transaction, or give GC a longer
    /// life time (a GC barrier) for long reads.
    #[error(
        "GC life time is shorter than the transaction's: start ts {start_ts} is below the txn \
         safe point {txn_safe_point}"
    )]
    TxnAbortedByGc {
        /// The read's start timestamp.
        start_ts: u64,
        /// The txn safe point it fell below.
        txn_safe_point: u64,
    },

    /// A read asked for a timestamp above every timestamp PD has allocated (client-go's
    /// `ErrFutureTSRead`): it could see a later commit appear under it. A caller bug; take
    /// read timestamps from PD.
    #[error("read ts {read_ts} is in the future: PD's latest timestamp is {current_ts}")]
    FutureTsRead {
        /// The timestamp asked for.
        read_ts: u64,
        /// The latest timestamp PD allocated.
        current_ts: u64,
    },

    /// The server sent something this client cannot make sense of.
    #[error("protocol violation from {target}: {detail}")]
    Protocol {
        /// Who sent it.
        target: Target,
        /// What was wrong.
        detail: String,
    },

    /// The client was shut down or the operation was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),

    /// An option or feature this client does not implement yet (named in the message);
    /// the operation was not started.
    #[error("not supported yet: {0}")]
    Unsupported(String),
}

impl Error {
    /// Whether retrying the operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport {
                delivery: Delivery::NotSent,
                ..
            } => true,
            Error::Transport {
                delivery: Delivery::MaybeDelivered,
                ..
            } => true,
            Error::Grpc { code, .. } => matches!(
                code,
                GrpcCode::Unavailable
                    | GrpcCode::DeadlineExceeded
                    | GrpcCode::ResourceExhausted
                    | GrpcCode::Aborted
            ),
            Error::Region { .. } | Error::BackoffExhausted { .. } => true,
            Error::WriteConflict { .. } | Error::TxnAborted { .. } => true,
            Error::LockWaitTimeout { .. }
            | Error::LockAcquireFailAndNoWaitSet { .. }
            | Error::Deadlock { .. } => true,
            // PD's clock may catch up.
            Error::CommitTsLag { .. } => true,
            Error::Interrupted(_)
            | Error::AssertionFailed { .. }
            | Error::KeyTooLarge { .. }
            | Error::EntryTooLarge { .. }
            | Error::TxnTooLarge { .. } => false,
            Error::KeyExists { .. } => false,
            Error::Pd { kind, .. } => kind.is_retryable(),
            // The same timestamp stays below the safe point: only a new transaction helps.
            Error::TxnAbortedByGc { .. } | Error::FutureTsRead { .. } => false,
            Error::InvalidArgument(_)
            | Error::KeyError { .. }
            | Error::Undetermined { .. }
            | Error::Protocol { .. }
            | Error::Cancelled(_)
            | Error::Unsupported(_) => false,
        }
    }
}

impl Error {
    /// Whether the operation may or may not have taken effect (a lost reply to a
    /// non-idempotent request such as a primary commit or a compare-and-swap): check before
    /// retrying.
    pub fn is_undetermined(&self) -> bool {
        matches!(self, Error::Undetermined { .. })
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_and_unknown_values_are_unknown() {
        assert_eq!(GrpcCode::from_u32(14), GrpcCode::Unavailable);
        assert_eq!(GrpcCode::from_u32(0), GrpcCode::Ok);
        assert_eq!(GrpcCode::from_u32(99), GrpcCode::Unknown);
    }

    #[test]
    fn messages_carry_context() {
        let e = Error::Grpc {
            method: "RawGet",
            target: Target::Store {
                id: 4,
                address: "127.0.0.1:20160".into(),
            },
            code: GrpcCode::Unavailable,
            message: "shutting down".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("RawGet") && text.contains("store 4") && text.contains("shutting down"),
            "{text}"
        );
        assert!(e.is_retryable());
        assert!(!Error::InvalidArgument("empty key".into()).is_retryable());
    }
}
