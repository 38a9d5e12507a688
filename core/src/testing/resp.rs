//! Response builders: short ways to write what a scripted TiKV, PD or TSO answers in a
//! [`Harness`](super::Harness) responder, and to read back what a machine sent.
//!
//! Every TiKV method a machine test meets has a builder named after it ([`prewrite`],
//! [`commit`], [`check_txn_status`], ...). A builder ends in the [`Outcome`] it stands for:
//! `.ok()` for a plain success, `.region_error(e)` for a routing failure, `.key_error(e)` /
//! `.locked(lock)` for a key error, or a method-specific ending (`.committed(ts)`,
//! `.commit_ts_expired(ts)`, ...). Region errors ([`not_leader`], [`epoch_not_match`],
//! [`server_busy`], ...), key errors ([`write_conflict`], [`already_exists`], ...) and locks
//! ([`lock`]) are values of their own, so they combine freely.
//!
//! ```
//! use tikv_core::testing::resp;
//! use tikv_core::Outcome;
//!
//! let lock = resp::lock("b", "a", resp::ts(100)).ttl(3000);
//! let blocked: Outcome = resp::prewrite().locked(lock);
//! let busy: Outcome = resp::prewrite().region_error(resp::server_busy());
//! let alive: Outcome = resp::check_txn_status().alive(2000);
//! let lost: Outcome = resp::rpc_failed(tikv_core::Delivery::MaybeDelivered);
//! # let _ = (blocked, busy, alive, lost);
//! ```

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};

use crate::error::{Delivery, Error, Target};
use crate::key::Key;
use crate::machine::{Effect, LocateQuery, Outcome};
use crate::region::{Peer, Region, RegionId, Store, StoreId, StoreState};
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::Lock;

/// A timestamp at `physical_ms` (logical 0): TSO time is the only clock locks are judged by.
pub fn ts(physical_ms: u64) -> Timestamp {
    Timestamp::compose(physical_ms, 0)
}

// ---------------------------------------------------------------------------------------------
// Response messages

/// A response message the builders can wrap.
pub trait Reply: Default {
    /// The message as the response enum.
    fn into_response(self) -> TikvResponse;
    /// Sets the message's region error.
    fn set_region_error(&mut self, e: errorpb::Error);
}

/// A response message whose reply may carry a key error.
pub trait HasKeyError: Reply {
    /// Adds `e` (sets the single `error` field, or appends to `errors`).
    fn add_key_error(&mut self, e: kvrpcpb::KeyError);
}

/// A response message that carries key-value pairs.
pub trait HasPairs: Reply {
    /// Appends a pair (or a per-key error).
    fn push_pair(&mut self, pair: kvrpcpb::KvPair);
}

macro_rules! replies {
    ($($msg:ident => $variant:ident;)*) => {
        $(impl Reply for kvrpcpb::$msg {
            fn into_response(self) -> TikvResponse {
                TikvResponse::$variant(self)
            }
            fn set_region_error(&mut self, e: errorpb::Error) {
                self.region_error = Some(Box::new(e));
            }
        })*
    };
}

replies! {
    GetResponse => KvGet;
    BatchGetResponse => KvBatchGet;
    ScanResponse => KvScan;
    PrewriteResponse => KvPrewrite;
    CommitResponse => KvCommit;
    BatchRollbackResponse => KvBatchRollback;
    CheckTxnStatusResponse => KvCheckTxnStatus;
    ResolveLockResponse => KvResolveLock;
    CheckSecondaryLocksResponse => KvCheckSecondaryLocks;
    PessimisticRollbackResponse => KvPessimisticRollback;
    PessimisticLockResponse => KvPessimisticLock;
    TxnHeartBeatResponse => KvTxnHeartBeat;
    ScanLockResponse => KvScanLock;
    SplitRegionResponse => SplitRegion;
    DeleteRangeResponse => KvDeleteRange;
    MvccGetByKeyResponse => MvccGetByKey;
    PrepareFlashbackToVersionResponse => KvPrepareFlashbackToVersion;
    FlashbackToVersionResponse => KvFlashbackToVersion;
    MvccGetByStartTsResponse => MvccGetByStartTs;
    UnsafeDestroyRangeResponse => UnsafeDestroyRange;
    RawGetResponse => RawGet;
    RawBatchGetResponse => RawBatchGet;
    RawScanResponse => RawScan;
}

macro_rules! single_key_error {
    ($($msg:ident),*) => {
        $(impl HasKeyError for kvrpcpb::$msg {
            fn add_key_error(&mut self, e: kvrpcpb::KeyError) {
                self.error = Some(Box::new(e));
            }
        })*
    };
}

single_key_error!(
    GetResponse,
    BatchGetResponse,
    ScanResponse,
    CommitResponse,
    BatchRollbackResponse,
    CheckTxnStatusResponse,
    ResolveLockResponse,
    CheckSecondaryLocksResponse,
    TxnHeartBeatResponse,
    ScanLockResponse
);

impl HasKeyError for kvrpcpb::PrewriteResponse {
    fn add_key_error(&mut self, e: kvrpcpb::KeyError) {
        self.errors.push(e);
    }
}

impl HasKeyError for kvrpcpb::PessimisticLockResponse {
    fn add_key_error(&mut self, e: kvrpcpb::KeyError) {
        self.errors.push(e);
    }
}

impl HasKeyError for kvrpcpb::PessimisticRollbackResponse {
    fn add_key_error(&mut self, e: kvrpcpb::KeyError) {
        self.errors.push(e);
    }
}

impl HasPairs for kvrpcpb::BatchGetResponse {
    fn push_pair(&mut self, pair: kvrpcpb::KvPair) {
        self.pairs.push(pair);
    }
}

impl HasPairs for kvrpcpb::ScanResponse {
    fn push_pair(&mut self, pair: kvrpcpb::KvPair) {
        self.pairs.push(pair);
    }
}

impl HasPairs for kvrpcpb::RawBatchGetResponse {
    fn push_pair(&mut self, pair: kvrpcpb::KvPair) {
        self.pairs.push(pair);
    }
}

impl HasPairs for kvrpcpb::RawScanResponse {
    fn push_pair(&mut self, pair: kvrpcpb::KvPair) {
        self.kvs.push(pair);
    }
}

/// A response under construction; ends in an [`Outcome`].
#[derive(Clone, Debug, Default)]
pub struct Resp<R>(pub R);

impl<R: Reply> Resp<R> {
    /// Edits the message directly, for fields no builder method covers.
    pub fn with(mut self, f: impl FnOnce(&mut R)) -> Self {
        f(&mut self.0);
        self
    }

    /// The response itself.
    pub fn response(self) -> TikvResponse {
        self.0.into_response()
    }

    /// The store answered with this message.
    pub fn ok(self) -> Outcome {
        Outcome::Response(Box::new(self.response()))
    }

    /// The store rejected the request with region error `e`.
    pub fn region_error(mut self, e: errorpb::Error) -> Outcome {
        self.0.set_region_error(e);
        self.ok()
    }
}

impl<R: HasKeyError> Resp<R> {
    /// The reply carries key error `e`.
    pub fn key_error(mut self, e: kvrpcpb::KeyError) -> Outcome {
        self.0.add_key_error(e);
        self.ok()
    }

    /// The reply carries several key errors (prewrite: one per failed key).
    pub fn key_errors(mut self, errors: impl IntoIterator<Item = kvrpcpb::KeyError>) -> Outcome {
        for e in errors {
            self.0.add_key_error(e);
        }
        self.ok()
    }

    /// The key is locked by another transaction.
    pub fn locked(self, lock: impl Into<kvrpcpb::LockInfo>) -> Outcome {
        self.key_error(locked(lock))
    }
}

impl<R: HasPairs> Resp<R> {
    /// Adds a found pair.
    pub fn pair(mut self, key: &str, value: &str) -> Self {
        self.0.push_pair(kvrpcpb::KvPair {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        });
        self
    }

    /// Adds found pairs.
    pub fn pairs(self, pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(self, |r, (k, v)| r.pair(k, v))
    }

    /// Adds a per-key lock error (TiKV leaves the pair's key empty; the key is in the lock).
    pub fn locked_pair(mut self, lock: impl Into<kvrpcpb::LockInfo>) -> Self {
        self.0.push_pair(kvrpcpb::KvPair {
            error: Some(Box::new(locked(lock))),
            ..Default::default()
        });
        self
    }
}

/// A `KvGet` reply builder (see [`get`] for the common found-value case).
pub fn kv_get() -> Resp<kvrpcpb::GetResponse> {
    Resp::default()
}

/// `KvGet` found `value`.
pub fn get(value: &str) -> Outcome {
    kv_get()
        .with(|r| r.value = Bytes::copy_from_slice(value.as_bytes()))
        .ok()
}

/// `KvGet` found nothing.
pub fn get_not_found() -> Outcome {
    kv_get().with(|r| r.not_found = true).ok()
}

/// A `KvBatchGet` reply builder.
pub fn batch_get() -> Resp<kvrpcpb::BatchGetResponse> {
    Resp::default()
}

/// A `KvScan` reply builder.
pub fn scan() -> Resp<kvrpcpb::ScanResponse> {
    Resp::default()
}

/// A `KvPrewrite` reply builder.
pub fn prewrite() -> Resp<kvrpcpb::PrewriteResponse> {
    Resp::default()
}

impl Resp<kvrpcpb::PrewriteResponse> {
    /// TiKV committed the transaction in one phase at `commit_ts`.
    pub fn one_pc(self, commit_ts: Timestamp) -> Outcome {
        self.with(|r| r.one_pc_commit_ts = commit_ts.as_u64()).ok()
    }

    /// Async commit: the keys are locked with this smallest commit timestamp (zero: TiKV
    /// could not keep the bounds, the locks are ordinary 2PC locks).
    pub fn min_commit(self, min_commit_ts: Timestamp) -> Outcome {
        self.with(|r| r.min_commit_ts = min_commit_ts.as_u64()).ok()
    }
}

/// A `KvCommit` reply builder.
pub fn commit() -> Resp<kvrpcpb::CommitResponse> {
    Resp::default()
}

impl Resp<kvrpcpb::CommitResponse> {
    /// The commit timestamp is below the lock's `min_commit_ts`.
    pub fn commit_ts_expired(self, min_commit_ts: Timestamp) -> Outcome {
        self.key_error(kvrpcpb::KeyError {
            commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                min_commit_ts: min_commit_ts.as_u64(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The transaction's lock on `key` is gone (another client rolled it back).
    pub fn lock_not_found(self, key: &str) -> Outcome {
        self.key_error(kvrpcpb::KeyError {
            txn_lock_not_found: Some(kvrpcpb::TxnLockNotFound {
                key: Bytes::copy_from_slice(key.as_bytes()),
            }),
            ..Default::default()
        })
    }
}

/// A `KvBatchRollback` reply builder.
pub fn batch_rollback() -> Resp<kvrpcpb::BatchRollbackResponse> {
    Resp::default()
}

/// A `KvResolveLock` reply builder.
pub fn resolve_lock() -> Resp<kvrpcpb::ResolveLockResponse> {
    Resp::default()
}

/// A `KvCheckTxnStatus` reply builder.
pub fn check_txn_status() -> Resp<kvrpcpb::CheckTxnStatusResponse> {
    Resp::default()
}

impl Resp<kvrpcpb::CheckTxnStatusResponse> {
    /// The transaction committed at `commit_ts`.
    pub fn committed(self, commit_ts: Timestamp) -> Outcome {
        self.with(|r| r.commit_version = commit_ts.as_u64()).ok()
    }

    /// The transaction was rolled back (or its primary lock has just been).
    pub fn rolled_back(self) -> Outcome {
        self.ok()
    }

    /// The transaction is running; its primary lock lives `ttl_ms` from its start.
    pub fn alive(self, ttl_ms: u64) -> Outcome {
        self.with(|r| r.lock_ttl = ttl_ms).ok()
    }

    /// The transaction is running and TiKV keeps its primary lock (given here): an
    /// async-commit primary, whose fate is in its secondaries.
    pub fn alive_with(self, ttl_ms: u64, primary: LockBuilder) -> Outcome {
        self.with(|r| {
            r.lock_ttl = ttl_ms;
            r.lock_info = Some(primary.0);
        })
        .ok()
    }

    /// The transaction is running, but its `min_commit_ts` is now above the caller's start
    /// timestamp: its locks cannot hide anything from the caller.
    pub fn pushed(self, ttl_ms: u64) -> Outcome {
        self.with(|r| {
            r.lock_ttl = ttl_ms;
            r.action = kvrpcpb::Action::MinCommitTsPushed as i32;
        })
        .ok()
    }

    /// No lock and no commit record for the transaction at its primary.
    pub fn txn_not_found(self, start_ts: Timestamp, primary: &str) -> Outcome {
        self.key_error(kvrpcpb::KeyError {
            txn_not_found: Some(kvrpcpb::TxnNotFound {
                start_ts: start_ts.as_u64(),
                primary_key: Bytes::copy_from_slice(primary.as_bytes()),
            }),
            ..Default::default()
        })
    }
}

/// A `KvScanLock` reply builder.
pub fn scan_lock() -> Resp<kvrpcpb::ScanLockResponse> {
    Resp::default()
}

impl Resp<kvrpcpb::ScanLockResponse> {
    /// The region's locks (in key order, as TiKV lists them).
    pub fn locks(self, locks: impl IntoIterator<Item = LockBuilder>) -> Outcome {
        self.with(|r| r.locks.extend(locks.into_iter().map(|l| l.0)))
            .ok()
    }
}

/// A `KvCheckSecondaryLocks` reply builder.
pub fn check_secondary_locks() -> Resp<kvrpcpb::CheckSecondaryLocksResponse> {
    Resp::default()
}

impl Resp<kvrpcpb::CheckSecondaryLocksResponse> {
    /// Every key asked about is still locked (by these locks).
    pub fn still_locked(self, locks: impl IntoIterator<Item = LockBuilder>) -> Outcome {
        self.with(|r| r.locks = locks.into_iter().map(|l| l.0).collect())
            .ok()
    }

    /// A key is no longer locked: the transaction committed at `commit_ts` (zero: rolled
    /// back).
    pub fn missing(self, commit_ts: Timestamp) -> Outcome {
        self.with(|r| r.commit_ts = commit_ts.as_u64()).ok()
    }
}

/// A `KvTxnHeartBeat` reply builder.
pub fn heartbeat() -> Resp<kvrpcpb::TxnHeartBeatResponse> {
    Resp::default()
}

/// A `KvPessimisticLock` reply builder.
pub fn pessimistic_lock() -> Resp<kvrpcpb::PessimisticLockResponse> {
    Resp::default()
}

impl Resp<kvrpcpb::PessimisticLockResponse> {
    /// Locked, returning these values (`None`: the key does not exist).
    pub fn values(self, values: &[Option<&str>]) -> Outcome {
        self.with(|r| {
            r.values = values
                .iter()
                .map(|v| Bytes::copy_from_slice(v.unwrap_or("").as_bytes()))
                .collect();
            r.not_founds = values.iter().map(Option::is_none).collect();
        })
        .ok()
    }
}

/// A `WriteConflict` key error for `key`, conflicting with a commit at `commit_ts`.
pub fn conflict(key: &str, commit_ts: Timestamp) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        conflict: Some(kvrpcpb::WriteConflict {
            key: Bytes::copy_from_slice(key.as_bytes()),
            conflict_commit_ts: commit_ts.as_u64(),
            reason: kvrpcpb::write_conflict::Reason::PessimisticRetry as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A `KvPessimisticRollback` reply builder.
pub fn pessimistic_rollback() -> Resp<kvrpcpb::PessimisticRollbackResponse> {
    Resp::default()
}

/// A `RawGet` reply builder.
pub fn raw_get() -> Resp<kvrpcpb::RawGetResponse> {
    Resp::default()
}

/// A `RawBatchGet` reply builder.
pub fn raw_batch_get() -> Resp<kvrpcpb::RawBatchGetResponse> {
    Resp::default()
}

/// A `RawScan` reply builder.
pub fn raw_scan() -> Resp<kvrpcpb::RawScanResponse> {
    Resp::default()
}

/// An empty successful reply to `request`, whatever its method.
pub fn ok_for(request: &TikvRequest) -> Outcome {
    let response = request
        .decode_response(Bytes::new())
        .expect("an empty message decodes");
    Outcome::Response(Box::new(response))
}

/// A reply to `request`, whatever its method, rejecting it with region error `e`.
pub fn region_error_for(request: &TikvRequest, e: errorpb::Error) -> Outcome {
    // Every region-addressed response has its region error as field 1.
    let mut wire = Vec::new();
    prost::encoding::message::encode(1, &e, &mut wire);
    let response = request
        .decode_response(wire.into())
        .expect("a region error decodes");
    assert!(
        response.region_error().is_some(),
        "{} has no region error in field 1",
        request.method_name()
    );
    Outcome::Response(Box::new(response))
}

// ---------------------------------------------------------------------------------------------
// Region errors

/// A region error with a message, edited by `f`.
pub fn region_error_with(f: impl FnOnce(&mut errorpb::Error)) -> errorpb::Error {
    let mut e = errorpb::Error {
        message: "scripted region error".into(),
        ..Default::default()
    };
    f(&mut e);
    e
}

/// `NotLeader` for `region_id`, naming the new leader or nobody.
pub fn not_leader(region_id: RegionId, leader: Option<Peer>) -> errorpb::Error {
    region_error_with(|e| {
        e.not_leader = Some(errorpb::NotLeader {
            region_id,
            leader: leader.map(Into::into),
        })
    })
}

/// `EpochNotMatch`, with the regions the store now holds in place of the requested one.
pub fn epoch_not_match(current: &[Region]) -> errorpb::Error {
    region_error_with(|e| {
        e.epoch_not_match = Some(errorpb::EpochNotMatch {
            current_regions: current.iter().map(Region::to_meta).collect(),
        })
    })
}

/// `ServerIsBusy`.
pub fn server_busy() -> errorpb::Error {
    region_error_with(|e| e.server_is_busy = Some(Default::default()))
}

/// `StaleCommand`.
pub fn stale_command() -> errorpb::Error {
    region_error_with(|e| e.stale_command = Some(Default::default()))
}

/// `RegionNotFound` for `region_id`.
pub fn region_not_found(region_id: RegionId) -> errorpb::Error {
    region_error_with(|e| e.region_not_found = Some(errorpb::RegionNotFound { region_id }))
}

/// `KeyNotInRegion` for `key` and region `region_id`.
pub fn key_not_in_region(key: &str, region_id: RegionId) -> errorpb::Error {
    region_error_with(|e| {
        e.key_not_in_region = Some(errorpb::KeyNotInRegion {
            key: Bytes::copy_from_slice(key.as_bytes()),
            region_id,
            ..Default::default()
        })
    })
}

/// `StoreNotMatch`.
pub fn store_not_match() -> errorpb::Error {
    region_error_with(|e| e.store_not_match = Some(Default::default()))
}

/// `UndeterminedResult`: the store cannot tell whether the request was applied.
pub fn undetermined_result() -> errorpb::Error {
    region_error_with(|e| e.undetermined_result = Some(Default::default()))
}

/// `RaftEntryTooLarge`: a region error no retry can fix.
pub fn raft_entry_too_large() -> errorpb::Error {
    region_error_with(|e| e.raft_entry_too_large = Some(Default::default()))
}

// ---------------------------------------------------------------------------------------------
// Key errors and locks

/// A lock another transaction holds, as TiKV describes it in a `Locked` key error.
#[derive(Clone, Debug, PartialEq)]
pub struct LockBuilder(pub kvrpcpb::LockInfo);

/// A lock on `key` by the transaction with `primary` started at `start_ts`: TTL 3 s, one key.
pub fn lock(key: &str, primary: &str, start_ts: Timestamp) -> LockBuilder {
    LockBuilder(kvrpcpb::LockInfo {
        key: Bytes::copy_from_slice(key.as_bytes()),
        primary_lock: Bytes::copy_from_slice(primary.as_bytes()),
        lock_version: start_ts.as_u64(),
        lock_ttl: 3000,
        txn_size: 1,
        ..Default::default()
    })
}

impl LockBuilder {
    /// The lock's TTL, in ms from its start.
    pub fn ttl(mut self, ms: u64) -> Self {
        self.0.lock_ttl = ms;
        self
    }

    /// The owner's number of keys.
    pub fn txn_size(mut self, n: u64) -> Self {
        self.0.txn_size = n;
        self
    }

    /// The owner uses async commit.
    pub fn async_commit(mut self) -> Self {
        self.0.use_async_commit = true;
        self
    }

    /// The owner's smallest commit timestamp.
    pub fn min_commit_ts(mut self, ts: Timestamp) -> Self {
        self.0.min_commit_ts = ts.as_u64();
        self
    }

    /// The owner's secondaries (recorded on an async-commit primary).
    pub fn secondaries(mut self, keys: &[&str]) -> Self {
        self.0.secondaries = keys
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        self
    }

    /// A pessimistic lock (taken by `lock_keys`, not yet prewritten).
    pub fn pessimistic(mut self) -> Self {
        self.0.lock_type = kvrpcpb::Op::PessimisticLock as i32;
        self
    }

    /// The lock as the machines see it.
    pub fn to_lock(&self) -> Lock {
        Lock::from(&self.0)
    }
}

impl From<LockBuilder> for kvrpcpb::LockInfo {
    fn from(b: LockBuilder) -> Self {
        b.0
    }
}

impl From<LockBuilder> for Lock {
    fn from(b: LockBuilder) -> Self {
        b.to_lock()
    }
}

/// A `Locked` key error.
pub fn locked(lock: impl Into<kvrpcpb::LockInfo>) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        locked: Some(lock.into()),
        ..Default::default()
    }
}

/// A write conflict on `key`: the transaction started at `start_ts` lost to one started at
/// `conflict_ts` and committed at `conflict_commit_ts`.
pub fn write_conflict(
    key: &str,
    primary: &str,
    start_ts: Timestamp,
    conflict_ts: Timestamp,
    conflict_commit_ts: Timestamp,
) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        conflict: Some(kvrpcpb::WriteConflict {
            key: Bytes::copy_from_slice(key.as_bytes()),
            primary: Bytes::copy_from_slice(primary.as_bytes()),
            start_ts: start_ts.as_u64(),
            conflict_ts: conflict_ts.as_u64(),
            conflict_commit_ts: conflict_commit_ts.as_u64(),
            reason: kvrpcpb::write_conflict::Reason::Optimistic as i32,
        }),
        ..Default::default()
    }
}

/// An insert found `key` already present.
pub fn already_exists(key: &str) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        already_exist: Some(kvrpcpb::AlreadyExist {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }),
        ..Default::default()
    }
}

/// A key error the client does not interpret (`abort`).
pub fn abort(message: &str) -> kvrpcpb::KeyError {
    kvrpcpb::KeyError {
        abort: message.into(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Transport, PD and TSO

/// The RPC failed in transport.
pub fn rpc_failed(delivery: Delivery) -> Outcome {
    Outcome::RpcFailed {
        delivery,
        error: Error::Transport {
            method: "scripted",
            target: Target::Store {
                id: 0,
                address: "scripted".into(),
            },
            delivery,
            detail: "scripted transport failure".into(),
        },
    }
}

/// PD's answer to a `Locate`: `region`.
pub fn located(region: Region) -> Outcome {
    Outcome::Located(Ok(Some(region)))
}

/// PD's answer to `query` from the regions of a scripted cluster: the one that covers it, or
/// none.
pub fn locate(regions: &[Region], query: &LocateQuery) -> Outcome {
    let found = regions.iter().find(|r| query.matches(r));
    Outcome::Located(Ok(found.cloned()))
}

/// PD failed to answer.
pub fn pd_failed() -> Outcome {
    Outcome::Located(Err(pd_error()))
}

/// PD's answer to a `ResolveStore`: store `id` at `store-<id>`.
pub fn store(id: StoreId) -> Outcome {
    Outcome::Store(Ok(Store {
        id,
        address: format!("store-{id}"),
        labels: vec![],
        state: StoreState::Up,
    }))
}

/// TSO's answer: `ts`.
pub fn tso(ts: Timestamp) -> Outcome {
    Outcome::Timestamps(Ok(ts))
}

/// TSO failed.
pub fn tso_failed() -> Outcome {
    Outcome::Timestamps(Err(pd_error()))
}

fn pd_error() -> Error {
    Error::Pd {
        method: "scripted",
        address: "pd".into(),
        kind: crate::pd::PdErrorKind::NotLeader,
        message: "scripted PD failure".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading back what was sent

/// One RPC as a test sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    /// The store it went to.
    pub store: StoreId,
    /// The region its context named.
    pub region: RegionId,
    /// The region epoch version its context named.
    pub version: u64,
    /// The method's name (`"KvPrewrite"`).
    pub method: &'static str,
    /// The keys it concerns ([`keys_of`]).
    pub keys: Vec<Key>,
    /// The request itself.
    pub request: TikvRequest,
}

impl Sent {
    /// The RPC `effect` is, if it is one.
    pub fn of(effect: &Effect) -> Option<Sent> {
        let Effect::Rpc {
            store_id, request, ..
        } = effect
        else {
            return None;
        };
        let mut r = (**request).clone();
        let (region, version) = r.context_mut().map_or((0, 0), |c| {
            (c.region_id, c.region_epoch.map_or(0, |e| e.version))
        });
        Some(Sent {
            store: *store_id,
            region,
            version,
            method: request.method_name(),
            keys: keys_of(request),
            request: r,
        })
    }
}

/// The RPCs among `effects`, in order.
pub fn sent(effects: &[Effect]) -> Vec<Sent> {
    effects.iter().filter_map(Sent::of).collect()
}

/// What each effect was: the RPC's method name, or `Locate`, `ResolveStore`, `Tso`, `Sleep`,
/// `Spawn`.
pub fn kinds(effects: &[Effect]) -> Vec<&'static str> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Rpc { request, .. } => request.method_name(),
            Effect::Locate { .. } => "Locate",
            Effect::ResolveStore { .. } => "ResolveStore",
            Effect::Tso { .. } => "Tso",
            Effect::Sleep { .. } => "Sleep",
            Effect::Spawn { .. } => "Spawn",
        })
        .collect()
}

/// The keys a request concerns: the key(s) read or written, a prewrite's mutation keys, a
/// status check's primary, a scan's start and end.
pub fn keys_of(request: &TikvRequest) -> Vec<Key> {
    fn keys(v: &[Bytes]) -> Vec<Key> {
        v.iter().cloned().map(Key::from).collect()
    }
    match request {
        TikvRequest::KvGet(r) => vec![Key::from(r.key.clone())],
        TikvRequest::KvBatchGet(r) => keys(&r.keys),
        TikvRequest::KvScan(r) => vec![r.start_key.clone().into(), r.end_key.clone().into()],
        TikvRequest::KvPrewrite(r) => r
            .mutations
            .iter()
            .map(|m| Key::from(m.key.clone()))
            .collect(),
        TikvRequest::KvCommit(r) => keys(&r.keys),
        TikvRequest::KvBatchRollback(r) => keys(&r.keys),
        TikvRequest::KvResolveLock(r) => keys(&r.keys),
        TikvRequest::KvCheckTxnStatus(r) => vec![Key::from(r.primary_key.clone())],
        TikvRequest::KvCheckSecondaryLocks(r) => keys(&r.keys),
        TikvRequest::KvPessimisticRollback(r) => keys(&r.keys),
        TikvRequest::KvPessimisticLock(r) => r
            .mutations
            .iter()
            .map(|m| Key::from(m.key.clone()))
            .collect(),
        TikvRequest::RawGet(r) => vec![Key::from(r.key.clone())],
        TikvRequest::RawBatchGet(r) => keys(&r.keys),
        TikvRequest::RawScan(r) => vec![r.start_key.clone().into(), r.end_key.clone().into()],
        TikvRequest::SplitRegion(r) => keys(&r.split_keys),
        TikvRequest::KvScanLock(r) => vec![r.start_key.clone().into(), r.end_key.clone().into()],
        _ => Vec::new(),
    }
}

/// `keys` as [`Key`]s, for comparing with [`Sent::keys`].
pub fn keys(keys: &[&str]) -> Vec<Key> {
    keys.iter().map(|k| Key::from(*k)).collect()
}
