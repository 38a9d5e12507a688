//! Debugging and maintenance requests: `MvccGetByKey`, `MvccGetByStartTs`,
//! `UnsafeDestroyRange`, and `KvGC`, which TiKV no longer serves.
//!
//! - The MVCC views (`src/storage/txn/commands/mvcc_by_key.rs`, `mvcc_by_start_ts.rs`,
//!   `actions/mvcc.rs`, `MvccInfo::into_proto` in `src/storage/types.rs`) show a key's lock,
//!   its write records newest first, and the values kept in the default column family
//!   (values longer than 255 bytes, newest start ts first; shorter ones sit in the lock or
//!   write record as `short_value`). TiKV fills only the lock's type, start ts, primary and
//!   short value — not its TTL, for_update_ts, txn size or async-commit fields. Errors are
//!   a plain string (the error's `Display`). `MvccGetByStartTs` walks the region's write
//!   records in key order and answers the first key with a record of that start ts
//!   (commit or rollback); a transaction that only left locks is not found, and "not
//!   found" is an empty `info`, not a missing one.
//! - `UnsafeDestroyRange` (`src/server/gc_worker/gc_worker.rs`) is store-level: no region,
//!   no epoch, no context checks; it drops the lock, write and default column families in
//!   `[start_key, end_key)` and reports failures as a string. TiKV asserts both keys are
//!   non-empty (it would crash); the mock answers an error string instead. The mock's data
//!   is shared by all stores, so the first store's call already destroys the range that
//!   a GC run destroys store by store.
//! - `KvGC` answers the gRPC status `UNIMPLEMENTED`; inside `BatchCommands` TiKV sends no
//!   response at all for it (the batch loop drops failed sub-requests).

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, MvccInfo, MvccLock, MvccValue, MvccWrite, Op};
use tikv_proto::method::Method;
use tikv_proto::tikvpb::tikv_service;

use super::handlers::{Fail, clamp, in_region, raw_bounds};
use super::store::{KeyRange, TxnStore};
use super::types::{LockType, WriteType};
use crate::check::{Access, point_read_in_region};
use crate::cluster::{Cluster, HasContext};
use crate::codec::encode_memcomparable;
use crate::dispatch::TikvMethod;
use crate::error::{Code, FailureKind, MockError};

/// TiKV's `SHORT_VALUE_MAX_LEN`: longer values live in the default column family.
const SHORT_VALUE_MAX_LEN: usize = 255;

fn short(v: &Option<Bytes>) -> Bytes {
    match v {
        Some(v) if v.len() <= SHORT_VALUE_MAX_LEN => v.clone(),
        _ => Bytes::new(),
    }
}

/// TiKV's `find_mvcc_infos_by_key` + `MvccInfo::into_proto`.
fn mvcc_info(store: &TxnStore, key: &[u8]) -> MvccInfo {
    let mut long_values: Vec<(u64, Bytes)> = Vec::new();
    let lock = store.lock(key).map(|l| {
        if let Some(v) = l.value.as_ref().filter(|v| v.len() > SHORT_VALUE_MAX_LEN) {
            long_values.push((l.ts, v.clone()));
        }
        let op = match l.lock_type {
            LockType::Put => Op::Put,
            LockType::Delete => Op::Del,
            LockType::Lock => Op::Lock,
            LockType::Pessimistic => Op::PessimisticLock,
        };
        MvccLock {
            r#type: op as i32,
            start_ts: l.ts,
            primary: l.primary.clone(),
            short_value: short(&l.value),
            ..Default::default()
        }
    });
    let writes = store
        .writes_of(key)
        .map(|(commit_ts, w)| {
            if let Some(v) = w.value.as_ref().filter(|v| v.len() > SHORT_VALUE_MAX_LEN) {
                long_values.push((w.start_ts, v.clone()));
            }
            let op = match w.write_type {
                WriteType::Put => Op::Put,
                WriteType::Delete => Op::Del,
                WriteType::Lock => Op::Lock,
                WriteType::Rollback => Op::Rollback,
            };
            MvccWrite {
                r#type: op as i32,
                start_ts: w.start_ts,
                commit_ts,
                short_value: short(&w.value),
                has_overlapped_rollback: w.has_overlapped_rollback,
                ..Default::default()
            }
        })
        .collect();
    // The default CF orders a key's values by start ts, newest first.
    long_values.sort_by_key(|(ts, _)| std::cmp::Reverse(*ts));
    long_values.dedup_by_key(|(ts, _)| *ts);
    MvccInfo {
        lock,
        writes,
        values: long_values
            .into_iter()
            .map(|(start_ts, value)| MvccValue { start_ts, value })
            .collect(),
    }
}

/// A key outside the region snapshot, as TiKV's `Display` words the engine error.
fn out_of_region(msg: &str) -> String {
    format!("unknown error {msg:?}")
}

impl Cluster {
    pub(crate) fn mvcc_get_by_key(
        &mut self,
        store_id: u64,
        req: kvrpcpb::MvccGetByKeyRequest,
        _now_ms: u64,
    ) -> kvrpcpb::MvccGetByKeyResponse {
        let ctx = req.context.clone().unwrap_or_default();
        let region = match self.txn_region(store_id, &ctx, Access::Read) {
            Ok(r) => r,
            Err(Fail::Region(e)) => {
                return kvrpcpb::MvccGetByKeyResponse {
                    region_error: Some(e),
                    ..Default::default()
                };
            }
            Err(Fail::Key(e)) => {
                return kvrpcpb::MvccGetByKeyResponse {
                    error: format!("{e:?}"),
                    ..Default::default()
                };
            }
        };
        if let Err(msg) = point_read_in_region(&encode_memcomparable(&req.key), &region) {
            return kvrpcpb::MvccGetByKeyResponse {
                error: out_of_region(&msg),
                ..Default::default()
            };
        }
        kvrpcpb::MvccGetByKeyResponse {
            info: Some(mvcc_info(&self.txn.store, &req.key)),
            ..Default::default()
        }
    }

    pub(crate) fn mvcc_get_by_start_ts(
        &mut self,
        store_id: u64,
        req: kvrpcpb::MvccGetByStartTsRequest,
        _now_ms: u64,
    ) -> kvrpcpb::MvccGetByStartTsResponse {
        let ctx = req.context.clone().unwrap_or_default();
        let region = match self.txn_region(store_id, &ctx, Access::Read) {
            Ok(r) => r,
            Err(Fail::Region(e)) => {
                return kvrpcpb::MvccGetByStartTsResponse {
                    region_error: Some(e),
                    ..Default::default()
                };
            }
            Err(Fail::Key(e)) => {
                return kvrpcpb::MvccGetByStartTsResponse {
                    error: format!("{e:?}"),
                    ..Default::default()
                };
            }
        };
        let bounds = raw_bounds(&region);
        let store = &self.txn.store;
        let found = store
            .keys_in(clamp(None, None, &bounds), false)
            .filter(|k| in_region(k, &region))
            .find(|k| store.writes_of(k).any(|(_, w)| w.start_ts == req.start_ts));
        match found {
            Some(key) => kvrpcpb::MvccGetByStartTsResponse {
                key: key.clone(),
                info: Some(mvcc_info(store, key)),
                ..Default::default()
            },
            None => kvrpcpb::MvccGetByStartTsResponse {
                info: Some(MvccInfo::default()),
                ..Default::default()
            },
        }
    }

    pub(crate) fn unsafe_destroy_range(
        &mut self,
        _store_id: u64,
        req: kvrpcpb::UnsafeDestroyRangeRequest,
        _now_ms: u64,
    ) -> kvrpcpb::UnsafeDestroyRangeResponse {
        if req.start_key.is_empty() || req.end_key.is_empty() {
            return kvrpcpb::UnsafeDestroyRangeResponse {
                error: "unsafe destroy range needs a non-empty start key and end key".to_owned(),
                ..Default::default()
            };
        }
        // Raw order is the memcomparable order of the encoded keys TiKV compares.
        self.txn.store.destroy_range(KeyRange {
            lower: Some(&req.start_key),
            upper: Some(&req.end_key),
        });
        kvrpcpb::UnsafeDestroyRangeResponse::default()
    }
}

with_context!(
    MvccGetByKeyRequest => MvccGetByKeyResponse,
    MvccGetByStartTsRequest => MvccGetByStartTsResponse,
);

/// TiKV's handler never reads the context (no cluster-id check, no region).
impl HasContext for kvrpcpb::UnsafeDestroyRangeRequest {
    fn context(&self) -> Option<&kvrpcpb::Context> {
        None
    }
}

/// "Region error is impossible here" (TiKV): an injected one is the only way to get one.
impl crate::cluster::RegionErrorResponse for kvrpcpb::UnsafeDestroyRangeResponse {
    fn from_region_error(err: tikv_proto::errorpb::Error) -> Self {
        kvrpcpb::UnsafeDestroyRangeResponse {
            region_error: Some(Box::new(err)),
            ..Default::default()
        }
    }
}

/// `KvGC` is retired: TiKV answers `UNIMPLEMENTED` (with no message) to every request,
/// before looking at it; GC is driven by PD's safe points and TiKV's own GC worker.
impl TikvMethod for tikv_service::KvGc {
    fn call(
        cluster: &mut Cluster,
        store_id: u64,
        _request: kvrpcpb::GcRequest,
        _now_ms: u64,
    ) -> Result<kvrpcpb::GcResponse, MockError> {
        cluster.counters.rpc(kv_gc_name());
        cluster.admit_store(store_id)?;
        Err(MockError::status(Code::Unimplemented, ""))
    }
}

fn kv_gc_name() -> &'static str {
    let path = <tikv_service::KvGc as Method>::PATH;
    path.rsplit('/').next().unwrap_or(path)
}

/// What a `Gc` inside `BatchCommands` gets: no response at all. The batch front leaves
/// a sub-request whose failure is of kind [`FailureKind::ReplyLost`] out of the answer,
/// which is exactly what TiKV does with the failed `Gc` (nothing was applied).
pub(crate) fn gc_in_batch() -> MockError {
    MockError {
        code: Code::Unimplemented,
        message: String::new(),
        kind: FailureKind::ReplyLost,
    }
}
