//! The transactional kvrpcpb handlers of the mock TiKV.
//!
//! Each handler follows TiKV's order (`src/server/service/kv.rs`, `src/storage/mod.rs`):
//! API-version and key-size checks, then (reads) the `max_ts` update, then the region
//! checks of the snapshot, then the keys against the region, then the command. Region
//! failures go into `region_error`; everything else becomes a `KeyError` the way TiKV's
//! `extract_key_error` builds it.
//!
//! Transactional keys are memcomparable-encoded in region boundaries (TiKV's
//! `Key::from_raw`) under every API version.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    self, ApiVersion, Assertion, AssertionLevel, Context, IsolationLevel, KvPair, Op,
    PessimisticLockKeyResult, PessimisticLockKeyResultType, PessimisticLockWakeUpMode,
    prewrite_request::PessimisticAction,
};
use tikv_proto::metapb;

use super::actions::check_txn_status::CheckFlags;
use super::actions::pessimistic_lock::{KeyResult, LockParams};
use super::actions::prewrite::{CommitKind, Mutation, MutationOp, TxnKind, TxnProps};
use super::commands::{PrewriteCmd, RegionScope, SecondaryStatus};
use super::error::TxnError;
use super::lock_wait::{LockWaitId, Waiter, wait_ms};
use super::reader::{self, ReadOpts};
use super::store::KeyRange;
use super::types::TxnStatus;
use crate::check::{Access, RegionErr, point_read_in_region, seek_in_region, write_in_region};
use crate::cluster::{Cluster, RegionErrorResponse};
use crate::codec::{decode_memcomparable, encode_memcomparable, hex_upper};
use crate::config::ApiMode;
use crate::error::MockError;

/// What a pessimistic lock request came to: an answer, or a parked wait.
#[derive(Clone, Debug, PartialEq)]
pub enum LockWaitOutcome {
    /// The request finished (successfully or not).
    Done(Box<kvrpcpb::PessimisticLockResponse>),
    /// The request waits for another transaction's lock; its answer comes from
    /// [`Cluster::poll_lock_waits`].
    Waiting(LockWaitId),
}

/// A failed transactional request.
pub(super) enum Fail {
    Region(RegionErr),
    Key(TxnError),
}

impl From<RegionErr> for Fail {
    fn from(e: RegionErr) -> Self {
        Fail::Region(e)
    }
}

impl From<TxnError> for Fail {
    fn from(e: TxnError) -> Self {
        Fail::Key(e)
    }
}

/// Turns a result into a response: region errors into `region_error`, key errors by `f`.
pub(super) fn respond<R: RegionErrorResponse>(
    r: Result<R, Fail>,
    f: impl FnOnce(TxnError) -> R,
) -> R {
    match r {
        Ok(resp) => resp,
        Err(Fail::Region(e)) => R::from_region_error(*e),
        Err(Fail::Key(e)) => f(e),
    }
}

fn api_name(v: ApiVersion) -> &'static str {
    match v {
        ApiVersion::V1 => "V1",
        ApiVersion::V1ttl => "V1ttl",
        ApiVersion::V2 => "V2",
        ApiVersion::V3 => "V3",
    }
}

/// TiKV's `check_api_version` for transactional commands. In the mock's mixed mode a V1
/// request is judged by a V1 storage (a `V1Ttl` storage refuses transactions).
pub(super) fn check_api<'a>(
    mode: ApiMode,
    ctx: &Context,
    cmd: &'static str,
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), TxnError> {
    let request = ApiVersion::try_from(ctx.api_version).unwrap_or(ApiVersion::V3);
    let storage = match mode {
        ApiMode::V1 => ApiVersion::V1,
        ApiMode::V1Ttl => ApiVersion::V1ttl,
        ApiMode::V2 => ApiVersion::V2,
        _ if request == ApiVersion::V2 => ApiVersion::V2,
        _ => ApiVersion::V1,
    };
    let mode_of = |k: &[u8]| match k.first() {
        Some(b'x') => "txn",
        Some(b'r') => "raw",
        Some(b'm' | b't') => "tidb",
        _ => "unknown",
    };
    let want = match (storage, request) {
        (ApiVersion::V1, ApiVersion::V1) => return Ok(()),
        (ApiVersion::V2, ApiVersion::V1) => "tidb",
        (ApiVersion::V2, ApiVersion::V2) => "txn",
        _ => {
            return Err(TxnError::ApiVersionNotMatched {
                cmd,
                storage: api_name(storage),
                request: api_name(request),
            });
        }
    };
    for k in keys {
        if mode_of(k) != want {
            return Err(TxnError::InvalidKeyMode {
                cmd,
                storage: api_name(storage),
                key: hex_upper(k),
            });
        }
    }
    Ok(())
}

/// TiKV checks the size of the *encoded* key (`Key::from_raw`), which is 9 bytes per
/// started 8-byte group of the raw key: a raw key somewhat below the limit can be too
/// large.
pub(super) fn check_key_size<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> Result<(), TxnError> {
    for k in keys {
        let size = (k.len() / 8 + 1) * 9;
        if size > limit {
            return Err(TxnError::KeyTooLarge { size, limit });
        }
    }
    Ok(())
}

/// Writes apply only to keys inside the region.
pub(super) fn keys_in_region<'a>(
    keys: impl IntoIterator<Item = &'a Bytes>,
    region: &metapb::Region,
) -> Result<(), Fail> {
    for k in keys {
        write_in_region(&encode_memcomparable(k), region)?;
    }
    Ok(())
}

pub(super) fn in_region(raw: &[u8], region: &metapb::Region) -> bool {
    let k = encode_memcomparable(raw);
    k[..] >= region.start_key[..] && (region.end_key.is_empty() || k[..] < region.end_key[..])
}

/// The region's boundaries as raw keys where they decode; an undecodable boundary (a
/// split at a non-encoded key) leaves that side open and `in_region` filters precisely.
pub(super) fn raw_bounds(region: &metapb::Region) -> (Option<Bytes>, Option<Bytes>) {
    let dec = |b: &[u8]| {
        if b.is_empty() {
            None
        } else {
            decode_memcomparable(b).map(Bytes::from)
        }
    };
    (dec(&region.start_key), dec(&region.end_key))
}

/// Narrows `[lo, hi)` to the region's raw bounds.
pub(super) fn clamp<'a>(
    lo: Option<&'a [u8]>,
    hi: Option<&'a [u8]>,
    bounds: &'a (Option<Bytes>, Option<Bytes>),
) -> KeyRange<'a> {
    let lower = match (lo, bounds.0.as_deref()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let upper = match (hi, bounds.1.as_deref()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    KeyRange { lower, upper }
}

pub(super) fn read_opts(ctx: &Context, ts: u64, key_only: bool, need_commit_ts: bool) -> ReadOpts {
    ReadOpts {
        ts,
        isolation: IsolationLevel::try_from(ctx.isolation_level).unwrap_or(IsolationLevel::Si),
        bypass: ctx.resolved_locks.clone(),
        access: ctx.committed_locks.clone(),
        key_only,
        need_commit_ts,
    }
}

fn key_errors(e: TxnError) -> Vec<kvrpcpb::KeyError> {
    vec![e.key_error()]
}

impl Cluster {
    pub(super) fn txn_region(
        &self,
        store_id: u64,
        ctx: &Context,
        access: Access,
    ) -> Result<metapb::Region, Fail> {
        Ok(self.topology.check_request(store_id, ctx, access)?)
    }

    /// The region checks of a snapshot read at `read_ts`, then, for a stale read, the
    /// peer's safe ts (see `safe_ts`).
    pub(super) fn txn_read_region(
        &mut self,
        store_id: u64,
        ctx: &Context,
        read_ts: u64,
    ) -> Result<metapb::Region, Fail> {
        let region = self.txn_region(store_id, ctx, Access::ReadAt(read_ts))?;
        self.check_stale_read(store_id, ctx, &region, read_ts)?;
        Ok(region)
    }

    /// The `max_ts` the engine's concurrency manager holds (reads push it; async commit
    /// and 1PC commit above it).
    pub fn max_ts(&self) -> u64 {
        self.txn.cm.max_ts
    }

    pub(crate) fn kv_get(
        &mut self,
        store_id: u64,
        req: kvrpcpb::GetRequest,
        _now_ms: u64,
    ) -> kvrpcpb::GetResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                check_api(self.config.api, &ctx, "get", [&req.key[..]])?;
                if !ctx.stale_read {
                    self.txn.cm.update_max_ts(req.version);
                }
                let region = self.txn_read_region(store_id, &ctx, req.version)?;
                point_read_in_region(&encode_memcomparable(&req.key), &region)
                    .map_err(TxnError::KeyOutOfRegion)?;
                let opts = read_opts(&ctx, req.version, false, req.need_commit_ts);
                Ok(match reader::point_get(&self.txn.store, &req.key, &opts)? {
                    Some((value, commit_ts)) => kvrpcpb::GetResponse {
                        value,
                        commit_ts,
                        ..Default::default()
                    },
                    None => kvrpcpb::GetResponse {
                        not_found: true,
                        ..Default::default()
                    },
                })
            })(),
            |e| kvrpcpb::GetResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_batch_get(
        &mut self,
        store_id: u64,
        req: kvrpcpb::BatchGetRequest,
        _now_ms: u64,
    ) -> kvrpcpb::BatchGetResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                check_api(
                    self.config.api,
                    &ctx,
                    "batch_get",
                    req.keys.iter().map(|k| &k[..]),
                )?;
                if !ctx.stale_read {
                    self.txn.cm.update_max_ts(req.version);
                }
                let region = self.txn_read_region(store_id, &ctx, req.version)?;
                let opts = read_opts(&ctx, req.version, false, req.need_commit_ts);
                let mut pairs = Vec::new();
                for key in &req.keys {
                    let got = point_read_in_region(&encode_memcomparable(key), &region)
                        .map_err(TxnError::KeyOutOfRegion)
                        .and_then(|()| reader::point_get(&self.txn.store, key, &opts));
                    match got {
                        Ok(Some((value, commit_ts))) => pairs.push(KvPair {
                            key: key.clone(),
                            value,
                            commit_ts,
                            ..Default::default()
                        }),
                        Ok(None) => {}
                        Err(e) => pairs.push(KvPair {
                            error: Some(Box::new(e.key_error())),
                            ..Default::default()
                        }),
                    }
                }
                Ok(kvrpcpb::BatchGetResponse {
                    pairs,
                    ..Default::default()
                })
            })(),
            |e| {
                let ke = e.key_error();
                kvrpcpb::BatchGetResponse {
                    error: Some(Box::new(ke.clone())),
                    pairs: vec![KvPair {
                        error: Some(Box::new(ke)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            },
        )
    }

    pub(crate) fn kv_scan(
        &mut self,
        store_id: u64,
        req: kvrpcpb::ScanRequest,
        _now_ms: u64,
    ) -> kvrpcpb::ScanResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let end = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
                check_api(
                    self.config.api,
                    &ctx,
                    "scan",
                    [&req.start_key[..]].into_iter().chain(end),
                )?;
                if !ctx.stale_read {
                    self.txn.cm.update_max_ts(req.version);
                }
                let region = self.txn_read_region(store_id, &ctx, req.version)?;
                seek_in_region(&encode_memcomparable(&req.start_key), &region)?;
                let bounds = raw_bounds(&region);
                // Reverse scans take `start_key` as the exclusive upper bound and
                // `end_key` as the inclusive lower bound.
                let range = if req.reverse {
                    clamp(end, Some(&req.start_key[..]), &bounds)
                } else {
                    clamp(Some(&req.start_key[..]), end, &bounds)
                };
                let opts = read_opts(&ctx, req.version, req.key_only, false);
                let items = reader::scan(
                    &self.txn.store,
                    range,
                    req.reverse,
                    req.limit as usize,
                    req.sample_step as usize,
                    &opts,
                )?;
                let pairs = items
                    .into_iter()
                    .filter(|r| r.as_ref().map_or(true, |(k, _)| in_region(k, &region)))
                    .map(|r| match r {
                        Ok((key, value)) => KvPair {
                            key,
                            value,
                            ..Default::default()
                        },
                        Err(e) => KvPair {
                            error: Some(Box::new(e.key_error())),
                            ..Default::default()
                        },
                    })
                    .collect();
                Ok(kvrpcpb::ScanResponse {
                    pairs,
                    ..Default::default()
                })
            })(),
            |e| {
                let ke = e.key_error();
                kvrpcpb::ScanResponse {
                    error: Some(Box::new(ke.clone())),
                    pairs: vec![KvPair {
                        error: Some(Box::new(ke)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            },
        )
    }

    pub(crate) fn kv_prewrite(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PrewriteRequest,
        now_ms: u64,
    ) -> kvrpcpb::PrewriteResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let keys = req.mutations.iter().map(|m| &m.key[..]);
                check_api(self.config.api, &ctx, "prewrite", keys.clone())?;
                check_key_size(keys, self.config.max_key_size)?;
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region(req.mutations.iter().map(|m| &m.key), &region)?;
                let cmd = decode_prewrite(&req, &ctx)?;
                let out = self.txn.prewrite(cmd, now_ms)?;
                Ok(kvrpcpb::PrewriteResponse {
                    errors: out.locks.into_iter().map(|e| e.key_error()).collect(),
                    min_commit_ts: out.min_commit_ts,
                    one_pc_commit_ts: out.one_pc_commit_ts,
                    ..Default::default()
                })
            })(),
            |e| kvrpcpb::PrewriteResponse {
                errors: key_errors(e),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_commit(
        &mut self,
        store_id: u64,
        req: kvrpcpb::CommitRequest,
        now_ms: u64,
    ) -> kvrpcpb::CommitResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region(&req.keys, &region)?;
                let ts =
                    self.txn
                        .commit(&req.keys, req.start_version, req.commit_version, now_ms)?;
                Ok(kvrpcpb::CommitResponse {
                    commit_version: ts,
                    ..Default::default()
                })
            })(),
            |e| kvrpcpb::CommitResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_batch_rollback(
        &mut self,
        store_id: u64,
        req: kvrpcpb::BatchRollbackRequest,
        now_ms: u64,
    ) -> kvrpcpb::BatchRollbackResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region(&req.keys, &region)?;
                self.txn.rollback(&req.keys, req.start_version, now_ms)?;
                Ok(kvrpcpb::BatchRollbackResponse::default())
            })(),
            |e| kvrpcpb::BatchRollbackResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_cleanup(
        &mut self,
        store_id: u64,
        req: kvrpcpb::CleanupRequest,
        now_ms: u64,
    ) -> kvrpcpb::CleanupResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region([&req.key], &region)?;
                self.txn
                    .cleanup(&req.key, req.start_version, req.current_ts, now_ms)?;
                Ok(kvrpcpb::CleanupResponse::default())
            })(),
            |e| match e {
                // A committed transaction answers its commit ts instead of an error.
                TxnError::Committed { commit_ts, .. } => kvrpcpb::CleanupResponse {
                    commit_version: commit_ts,
                    ..Default::default()
                },
                e => kvrpcpb::CleanupResponse {
                    error: Some(Box::new(e.key_error())),
                    ..Default::default()
                },
            },
        )
    }

    pub(crate) fn kv_check_txn_status(
        &mut self,
        store_id: u64,
        req: kvrpcpb::CheckTxnStatusRequest,
        now_ms: u64,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        use kvrpcpb::Action;
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region([&req.primary_key], &region)?;
                let flags = CheckFlags {
                    current_ts: req.current_ts,
                    caller_start_ts: req.caller_start_ts,
                    force_sync_commit: req.force_sync_commit,
                    resolving_pessimistic_lock: req.resolving_pessimistic_lock,
                    verify_is_primary: req.verify_is_primary,
                    rollback_if_not_exist: req.rollback_if_not_exist,
                };
                let status =
                    self.txn
                        .check_txn_status(&req.primary_key, req.lock_ts, flags, now_ms)?;
                let mut resp = kvrpcpb::CheckTxnStatusResponse::default();
                match status {
                    TxnStatus::RolledBack => resp.set_action(Action::NoAction),
                    TxnStatus::TtlExpire => resp.set_action(Action::TtlExpireRollback),
                    TxnStatus::LockNotExist => resp.set_action(Action::LockNotExistRollback),
                    TxnStatus::Committed { commit_ts } => resp.commit_version = commit_ts,
                    TxnStatus::Uncommitted {
                        lock,
                        min_commit_ts_pushed,
                    } => {
                        if min_commit_ts_pushed {
                            resp.set_action(Action::MinCommitTsPushed);
                        }
                        resp.lock_ttl = lock.ttl;
                        // TiKV reports the lock under the primary key.
                        resp.lock_info = Some(lock.lock_info(&lock.primary));
                    }
                    TxnStatus::PessimisticRollBack => {
                        resp.set_action(Action::TtlExpirePessimisticRollback)
                    }
                    TxnStatus::LockNotExistDoNothing => {
                        resp.set_action(Action::LockNotExistDoNothing)
                    }
                }
                Ok(resp)
            })(),
            |e| kvrpcpb::CheckTxnStatusResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_check_secondary_locks(
        &mut self,
        store_id: u64,
        req: kvrpcpb::CheckSecondaryLocksRequest,
        now_ms: u64,
    ) -> kvrpcpb::CheckSecondaryLocksResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region(&req.keys, &region)?;
                let mut resp = kvrpcpb::CheckSecondaryLocksResponse::default();
                match self
                    .txn
                    .check_secondary_locks(&req.keys, req.start_version, now_ms)?
                {
                    SecondaryStatus::Locked(locks) => resp.locks = locks,
                    SecondaryStatus::Committed(ts) => resp.commit_ts = ts,
                    SecondaryStatus::RolledBack => {}
                }
                Ok(resp)
            })(),
            |e| kvrpcpb::CheckSecondaryLocksResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_resolve_lock(
        &mut self,
        store_id: u64,
        req: kvrpcpb::ResolveLockRequest,
        now_ms: u64,
    ) -> kvrpcpb::ResolveLockResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                if !req.keys.is_empty() {
                    if req.start_version == 0 {
                        // TiKV asserts this; the mock answers an error instead.
                        return Err(TxnError::TxnOther(
                            "resolve lock with keys needs a start version".to_owned(),
                        )
                        .into());
                    }
                    keys_in_region(&req.keys, &region)?;
                    self.txn.resolve_lock_keys(
                        &req.keys,
                        req.start_version,
                        req.commit_version,
                        now_ms,
                    )?;
                    return Ok(kvrpcpb::ResolveLockResponse::default());
                }
                let txn_status: BTreeMap<u64, u64> = if req.start_version > 0 {
                    BTreeMap::from([(req.start_version, req.commit_version)])
                } else {
                    req.txn_infos.iter().map(|i| (i.txn, i.status)).collect()
                };
                let bounds = raw_bounds(&region);
                let contains = |k: &[u8]| in_region(k, &region);
                let scope = RegionScope {
                    range: clamp(None, None, &bounds),
                    contains: &contains,
                };
                self.txn.resolve_lock_scan(&txn_status, &scope, now_ms)?;
                Ok(kvrpcpb::ResolveLockResponse::default())
            })(),
            |e| kvrpcpb::ResolveLockResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_txn_heart_beat(
        &mut self,
        store_id: u64,
        req: kvrpcpb::TxnHeartBeatRequest,
        now_ms: u64,
    ) -> kvrpcpb::TxnHeartBeatResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region([&req.primary_lock], &region)?;
                let ttl = self.txn.txn_heart_beat(
                    &req.primary_lock,
                    req.start_version,
                    req.advise_lock_ttl,
                    req.min_commit_ts,
                    now_ms,
                )?;
                Ok(kvrpcpb::TxnHeartBeatResponse {
                    lock_ttl: ttl,
                    ..Default::default()
                })
            })(),
            |e| kvrpcpb::TxnHeartBeatResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_scan_lock(
        &mut self,
        store_id: u64,
        req: kvrpcpb::ScanLockRequest,
        _now_ms: u64,
    ) -> kvrpcpb::ScanLockResponse {
        let mut ctx = req.context.clone().unwrap_or_default();
        // TiKV never serves ScanLock from a follower.
        ctx.replica_read = false;
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Read)?;
                let bounds = raw_bounds(&region);
                let end = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
                let contains = |k: &[u8]| in_region(k, &region);
                let scope = RegionScope {
                    range: clamp(Some(&req.start_key[..]), end, &bounds),
                    contains: &contains,
                };
                let locks = self
                    .txn
                    .scan_lock(req.max_version, &scope, req.limit as usize);
                Ok(kvrpcpb::ScanLockResponse {
                    locks,
                    ..Default::default()
                })
            })(),
            |e| kvrpcpb::ScanLockResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_pessimistic_rollback(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PessimisticRollbackRequest,
        now_ms: u64,
    ) -> kvrpcpb::PessimisticRollbackResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                let keys = if req.keys.is_empty() {
                    // No keys: every pessimistic lock of the transaction in the region.
                    let bounds = raw_bounds(&region);
                    let contains = |k: &[u8]| in_region(k, &region);
                    let scope = RegionScope {
                        range: clamp(None, None, &bounds),
                        contains: &contains,
                    };
                    self.txn.pessimistic_locks_of(req.start_version, &scope)
                } else {
                    keys_in_region(&req.keys, &region)?;
                    req.keys.clone()
                };
                self.txn
                    .pessimistic_rollback(&keys, req.start_version, req.for_update_ts, now_ms);
                Ok(kvrpcpb::PessimisticRollbackResponse::default())
            })(),
            |e| kvrpcpb::PessimisticRollbackResponse {
                errors: key_errors(e),
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_delete_range(
        &mut self,
        store_id: u64,
        req: kvrpcpb::DeleteRangeRequest,
        _now_ms: u64,
    ) -> kvrpcpb::DeleteRangeResponse {
        let ctx = req.context.clone().unwrap_or_default();
        match self.topology.check_request(store_id, &ctx, Access::Write) {
            Err(e) => kvrpcpb::DeleteRangeResponse::from_region_error(*e),
            Ok(region) => {
                if !req.notify_only {
                    let bounds = raw_bounds(&region);
                    let end = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
                    let range = clamp(Some(&req.start_key[..]), end, &bounds);
                    self.txn.store.destroy_range(range);
                }
                kvrpcpb::DeleteRangeResponse::default()
            }
        }
    }

    /// `KvPessimisticLock` as a unary call: a request that would wait answers at once as if
    /// its wait had timed out (`KeyIsLocked`), after deadlock detection against parked
    /// waiters. Fronts that can park requests use [`Cluster::kv_pessimistic_lock_or_wait`].
    pub(crate) fn kv_pessimistic_lock(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PessimisticLockRequest,
        now_ms: u64,
    ) -> kvrpcpb::PessimisticLockResponse {
        match self.pessimistic_lock_inner(store_id, req, now_ms, false) {
            LockWaitOutcome::Done(r) => *r,
            // Not reachable without `may_wait`; answer an empty response defensively.
            LockWaitOutcome::Waiting(_) => kvrpcpb::PessimisticLockResponse::default(),
        }
    }

    fn parking_pessimistic_lock(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PessimisticLockRequest,
        now_ms: u64,
    ) -> kvrpcpb::PessimisticLockResponse {
        match self.pessimistic_lock_inner(store_id, req, now_ms, true) {
            LockWaitOutcome::Done(r) => *r,
            LockWaitOutcome::Waiting(id) => {
                self.txn.parked = Some(id);
                kvrpcpb::PessimisticLockResponse::default()
            }
        }
    }

    /// Serves a `KvPessimisticLock` that may wait for a lock (TiKV's `wait_timeout`). A
    /// parked request's answer comes later from [`Cluster::poll_lock_waits`].
    pub fn kv_pessimistic_lock_or_wait(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PessimisticLockRequest,
        now_ms: u64,
    ) -> Result<LockWaitOutcome, MockError> {
        self.txn.parked = None;
        let r = self.serve(
            store_id,
            "KvPessimisticLock",
            req,
            now_ms,
            Cluster::parking_pessimistic_lock,
        );
        let parked = self.txn.parked.take();
        match (r, parked) {
            (Ok(_), Some(id)) => Ok(LockWaitOutcome::Waiting(id)),
            (Ok(resp), None) => Ok(LockWaitOutcome::Done(Box::new(resp))),
            (Err(e), parked) => {
                // Nobody will hear the parked request's answer.
                if let Some(id) = parked {
                    self.cancel_lock_wait(id);
                }
                Err(e)
            }
        }
    }

    /// Finishes parked lock waits that are due at `now_ms` (released locks, timeouts) and
    /// returns their answers.
    pub fn poll_lock_waits(
        &mut self,
        now_ms: u64,
    ) -> Vec<(LockWaitId, kvrpcpb::PessimisticLockResponse)> {
        let ids: Vec<LockWaitId> = self.txn.waits.waiters.keys().copied().collect();
        for id in ids {
            let Some(w) = self.txn.waits.waiters.get(&id) else {
                continue;
            };
            let force = w.request.wake_up_mode() == PessimisticLockWakeUpMode::WakeUpModeForceLock;
            match w.woken {
                Some((_, _, at)) if at <= now_ms => {
                    let Some(w) = self.txn.waits.waiters.remove(&id) else {
                        continue;
                    };
                    if force {
                        // Resumable: try again; it may park again under the same id.
                        match self.pessimistic_lock_inner(
                            w.store_id,
                            w.request.clone(),
                            now_ms,
                            true,
                        ) {
                            LockWaitOutcome::Done(r) => self.txn.waits.finished.push((id, *r)),
                            LockWaitOutcome::Waiting(new_id) => {
                                if let Some(again) = self.txn.waits.waiters.remove(&new_id) {
                                    self.txn.waits.waiters.insert(id, again);
                                }
                            }
                        }
                    } else {
                        let r = super::legacy_wake_up_response(&w);
                        self.txn.waits.finished.push((id, r));
                    }
                }
                _ if w.deadline_ms <= now_ms => {
                    let Some(w) = self.txn.waits.waiters.remove(&id) else {
                        continue;
                    };
                    let e = TxnError::KeyIsLocked(Box::new(w.lock_info.clone()));
                    self.txn.waits.finished.push((id, lock_failure(force, e)));
                }
                _ => {}
            }
        }
        std::mem::take(&mut self.txn.waits.finished)
    }

    /// When [`Cluster::poll_lock_waits`] next has something to do: `Some(0)` if answers are
    /// ready now, else the earliest deadline or wake-up, `None` if nothing waits.
    pub fn next_lock_wait_deadline(&self) -> Option<u64> {
        if !self.txn.waits.finished.is_empty() {
            return Some(0);
        }
        self.txn
            .waits
            .waiters
            .values()
            .map(|w| {
                w.woken
                    .map_or(w.deadline_ms, |(_, _, at)| at.min(w.deadline_ms))
            })
            .min()
    }

    /// Drops a parked request (its client went away); `true` if it was waiting.
    pub fn cancel_lock_wait(&mut self, id: LockWaitId) -> bool {
        let before = self.txn.waits.finished.len();
        self.txn.waits.finished.retain(|(i, _)| *i != id);
        self.txn.waits.waiters.remove(&id).is_some() || before != self.txn.waits.finished.len()
    }

    fn pessimistic_lock_inner(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PessimisticLockRequest,
        now_ms: u64,
        may_wait: bool,
    ) -> LockWaitOutcome {
        let ctx = req.context.clone().unwrap_or_default();
        let force = req.wake_up_mode() == PessimisticLockWakeUpMode::WakeUpModeForceLock;
        let r: Result<_, Fail> = (|| {
            let mut keys = Vec::with_capacity(req.mutations.len());
            for m in &req.mutations {
                let shared = match m.op() {
                    Op::PessimisticLock => false,
                    Op::SharedPessimisticLock => true,
                    // TiKV panics on any other op.
                    other => {
                        return Err(TxnError::TxnOther(format!(
                            "mismatch Op in pessimistic lock mutations: {other:?}"
                        ))
                        .into());
                    }
                };
                keys.push((m.key.clone(), m.assertion() == Assertion::NotExist, shared));
            }
            let raw = keys.iter().map(|(k, _, _)| &k[..]);
            check_api(
                self.config.api,
                &ctx,
                "acquire_pessimistic_lock",
                raw.clone(),
            )?;
            check_key_size(raw, self.config.max_key_size)?;
            let region = self.txn_region(store_id, &ctx, Access::Write)?;
            keys_in_region(keys.iter().map(|(k, _, _)| k), &region)?;
            let params = LockParams {
                primary: req.primary_lock.clone(),
                start_ts: req.start_version,
                lock_ttl: req.lock_ttl,
                for_update_ts: req.for_update_ts,
                need_value: req.return_values,
                need_check_existence: req.check_existence,
                min_commit_ts: req.min_commit_ts,
                lock_only_if_exists: req.lock_only_if_exists,
                allow_lock_with_conflict: force,
            };
            Ok(self.txn.acquire_pessimistic_locks(&keys, &params, now_ms))
        })();
        let results = match r {
            Err(Fail::Region(e)) => {
                return LockWaitOutcome::Done(Box::new(
                    kvrpcpb::PessimisticLockResponse::from_region_error(*e),
                ));
            }
            Err(Fail::Key(e)) => return LockWaitOutcome::Done(Box::new(errors_only(e))),
            Ok(r) => r,
        };
        match results {
            Ok(results) => LockWaitOutcome::Done(Box::new(lock_success(force, results))),
            Err(TxnError::KeyIsLocked(info)) => {
                let Some(timeout) = wait_ms(req.wait_timeout) else {
                    return LockWaitOutcome::Done(Box::new(lock_failure(
                        force,
                        TxnError::KeyIsLocked(info),
                    )));
                };
                let key = info.key.clone();
                // Shared locks: the request waits for every holder (one wait-for edge each).
                let holders: Vec<u64> = if info.shared_lock_infos.is_empty() {
                    vec![info.lock_version]
                } else {
                    info.shared_lock_infos
                        .iter()
                        .map(|l| l.lock_version)
                        .collect()
                };
                if !req.is_first_lock {
                    for &holder in &holders {
                        if let Some((hash, chain)) =
                            self.txn.waits.detect(req.start_version, holder, &key)
                        {
                            let e = TxnError::Deadlock {
                                start_ts: req.start_version,
                                lock_ts: holder,
                                lock_key: key,
                                deadlock_key_hash: hash,
                                wait_chain: chain,
                            };
                            return LockWaitOutcome::Done(Box::new(lock_failure(force, e)));
                        }
                    }
                }
                if !may_wait {
                    return LockWaitOutcome::Done(Box::new(lock_failure(
                        force,
                        TxnError::KeyIsLocked(info),
                    )));
                }
                let waiter = Waiter {
                    store_id,
                    start_ts: req.start_version,
                    key,
                    lock_ts: info.lock_version,
                    holders,
                    lock_info: (*info).clone(),
                    deadline_ms: now_ms.saturating_add(timeout),
                    detect: !req.is_first_lock,
                    request: req.clone(),
                    woken: None,
                };
                LockWaitOutcome::Waiting(self.txn.waits.park(waiter))
            }
            Err(e) => LockWaitOutcome::Done(Box::new(errors_only(e))),
        }
    }
}

fn errors_only(e: TxnError) -> kvrpcpb::PessimisticLockResponse {
    kvrpcpb::PessimisticLockResponse {
        errors: key_errors(e),
        ..Default::default()
    }
}

/// A lock failure: legacy requests fail as a whole, force-lock requests report the key as
/// failed as well.
fn lock_failure(force: bool, e: TxnError) -> kvrpcpb::PessimisticLockResponse {
    let mut resp = errors_only(e);
    if force {
        resp.results = vec![PessimisticLockKeyResult {
            r#type: PessimisticLockKeyResultType::LockResultFailed as i32,
            ..Default::default()
        }];
    }
    resp
}

fn lock_success(force: bool, results: Vec<KeyResult>) -> kvrpcpb::PessimisticLockResponse {
    let mut resp = kvrpcpb::PessimisticLockResponse::default();
    if force {
        resp.results = results
            .into_iter()
            .map(|r| {
                let mut pb = PessimisticLockKeyResult {
                    r#type: PessimisticLockKeyResultType::LockResultNormal as i32,
                    ..Default::default()
                };
                match r {
                    KeyResult::Empty => {}
                    KeyResult::Value(v) => {
                        pb.existence = v.is_some();
                        pb.value = v.unwrap_or_default();
                    }
                    KeyResult::Existence(e) => pb.existence = e,
                    KeyResult::LockedWithConflict { value, conflict_ts } => {
                        pb.r#type =
                            PessimisticLockKeyResultType::LockResultLockedWithConflict as i32;
                        pb.existence = value.is_some();
                        pb.value = value.unwrap_or_default();
                        pb.locked_with_conflict_ts = conflict_ts;
                    }
                }
                pb
            })
            .collect();
        return resp;
    }
    // Legacy: values / not_founds shaped by the first result's kind.
    match results.first() {
        Some(KeyResult::Existence(_)) => {
            resp.not_founds = results
                .iter()
                .map(|r| !matches!(r, KeyResult::Existence(true)))
                .collect();
        }
        Some(KeyResult::Value(_)) => {
            for r in results {
                match r {
                    KeyResult::Value(Some(v)) => {
                        resp.values.push(v);
                        resp.not_founds.push(false);
                    }
                    _ => {
                        resp.values.push(Bytes::new());
                        resp.not_founds.push(true);
                    }
                }
            }
        }
        _ => {}
    }
    resp
}

/// TiKV's `From<kvrpcpb::Mutation> for Mutation` (prewrite and flush).
pub(super) fn decode_mutation(m: &kvrpcpb::Mutation) -> Result<Mutation, TxnError> {
    let op = match m.op() {
        Op::Put => MutationOp::Put(m.value.clone()),
        Op::Del => MutationOp::Delete,
        Op::Lock => MutationOp::Lock,
        Op::Insert => MutationOp::Insert(m.value.clone()),
        Op::CheckNotExists => MutationOp::CheckNotExists,
        Op::SharedLock => MutationOp::SharedLock,
        // TiKV panics on these ops.
        other => {
            return Err(TxnError::TxnOther(format!(
                "mismatch Op in prewrite mutations: {other:?}"
            )));
        }
    };
    Ok(Mutation {
        key: m.key.clone(),
        op,
        assertion: m.assertion(),
    })
}

/// Decodes a `PrewriteRequest` into a command (TiKV's `From<PrewriteRequest>`).
fn decode_prewrite(req: &kvrpcpb::PrewriteRequest, ctx: &Context) -> Result<PrewriteCmd, TxnError> {
    let mutations = req
        .mutations
        .iter()
        .map(decode_mutation)
        .collect::<Result<Vec<_>, _>>()?;
    let kind = if req.for_update_ts == 0 {
        TxnKind::Optimistic {
            skip_constraint_check: req.skip_constraint_check,
        }
    } else {
        TxnKind::Pessimistic {
            for_update_ts: req.for_update_ts,
        }
    };
    let mutations: Vec<(Mutation, PessimisticAction, Option<u64>)> = match kind {
        TxnKind::Optimistic { .. } => mutations
            .into_iter()
            .map(|m| (m, PessimisticAction::SkipPessimisticCheck, None))
            .collect(),
        TxnKind::Pessimistic { .. } => {
            // TiKV zips mutations with their actions: extra mutations are dropped.
            let mut v: Vec<_> = mutations
                .into_iter()
                .zip(req.pessimistic_actions.iter())
                .map(|(m, a)| {
                    let a = PessimisticAction::try_from(*a)
                        .unwrap_or(PessimisticAction::SkipPessimisticCheck);
                    (m, a, None)
                })
                .collect();
            for c in &req.for_update_ts_constraints {
                let i = c.index as usize;
                match v.get_mut(i) {
                    Some(slot) => slot.2 = Some(c.expected_for_update_ts),
                    None => {
                        return Err(TxnError::TxnOther(format!(
                            "prewrite request invalid: for_update_ts constraint set for index {} while {} mutations were given",
                            i,
                            v.len()
                        )));
                    }
                }
            }
            v
        }
    };
    Ok(PrewriteCmd {
        mutations,
        props: TxnProps {
            start_ts: req.start_version,
            kind,
            commit_kind: CommitKind::TwoPc,
            primary: req.primary_lock.clone(),
            txn_size: req.txn_size,
            lock_ttl: req.lock_ttl,
            min_commit_ts: req.min_commit_ts,
            is_retry_request: ctx.is_retry_request,
            assertion_level: AssertionLevel::try_from(req.assertion_level)
                .unwrap_or(AssertionLevel::Off),
        },
        secondaries: req.use_async_commit.then(|| req.secondaries.clone()),
        try_one_pc: req.try_one_pc,
        max_commit_ts: req.max_commit_ts,
    })
}
