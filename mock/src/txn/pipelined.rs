//! Pipelined DML, as TiKV implements it (`src/storage/txn/commands/flush.rs`,
//! `Storage::buffer_batch_get` and `Storage::update_txn_status_cache` in
//! `src/storage/mod.rs`, the handlers in `src/server/service/kv.rs`).
//!
//! A pipelined transaction streams its mutations to TiKV while it runs:
//!
//! - **`KvFlush`** prewrites a batch of mutations as one *generation* (`generation > 0`,
//!   growing with each flush) without committing. It is an optimistic prewrite with the
//!   constraint check on, `txn_size = u64::MAX` (so resolvers never resolve it key by key),
//!   the request's `lock_ttl`, and `min_commit_ts = start_ts + 1` whatever the request
//!   says. A key already locked by the same transaction with an *older* generation is
//!   simply overwritten (new value, TTL and min commit ts); a lock of the same or a *newer*
//!   generation means this flush arrived late, and the mutation is skipped without an
//!   error. The assertion of a key is only checked by its first flush. Unlike a prewrite, a
//!   flush that meets other transactions' locks still writes its other mutations and
//!   reports the locks. Inserting a key an earlier flush of the same transaction put is
//!   `AlreadyExist`.
//! - **`KvBufferBatchGet`** reads the transaction's own flushed values back at
//!   `version = start_ts`: only locks whose ts is exactly that start ts are looked at (other
//!   transactions' locks and committed data are invisible), a flushed delete is returned
//!   as a pair with an empty value, keys are answered sorted and deduplicated.
//! - **`BroadcastTxnStatus`** tells every store a transaction's status (the ongoing
//!   `min_commit_ts`, or its final state), filling the [`status cache`](super::status_cache).
//!   It never fails and answers nothing.
//!
//! The transaction commits like any other: `KvCommit` of the primary key, then the
//! secondaries by range — `KvResolveLock` with the start and commit versions and no keys
//! resolves every lock of the transaction in the region. Heartbeats may push the primary
//! lock's `min_commit_ts` (only for flushed locks); check-txn-status rolls an expired
//! flushed lock back like any other, and every rollback of a flushed lock is protected.

use bytes::Bytes;
use tikv_proto::kvrpcpb::prewrite_request::PessimisticAction;
use tikv_proto::kvrpcpb::{self, AssertionLevel, KvPair};
use tikv_proto::{errorpb, kvrpcpb::Context};

use super::TxnEngine;
use super::actions::prewrite::{CommitKind, Mutation, TxnKind, TxnProps, prewrite};
use super::error::{TxnError, TxnResult};
use super::handlers::{check_api, check_key_size, decode_mutation, keys_in_region, respond};
use super::status_cache::CachedTxnState;
use super::store::MvccTxn;
use super::types::{LockType, next_ts};
use crate::check::{Access, point_read_in_region};
use crate::cluster::{Cluster, HasContext, RegionErrorResponse};
use crate::codec::encode_memcomparable;

/// A `FlushRequest`, decoded.
#[derive(Clone, Debug)]
pub(crate) struct FlushCmd {
    pub(crate) start_ts: u64,
    pub(crate) primary: Bytes,
    pub(crate) mutations: Vec<Mutation>,
    pub(crate) generation: u64,
    pub(crate) lock_ttl: u64,
    pub(crate) assertion_level: AssertionLevel,
    pub(crate) is_retry_request: bool,
}

impl TxnEngine {
    /// `Flush`: returns the other transactions' locks met (as `KeyIsLocked` errors).
    pub(crate) fn flush(&mut self, cmd: FlushCmd, now_ms: u64) -> TxnResult<Vec<TxnError>> {
        if cmd.generation == 0 {
            return Err(TxnError::TxnOther(
                "generation should be greater than 0 for Flush requests".to_owned(),
            ));
        }
        let start_ts = cmd.start_ts;
        let props = TxnProps {
            start_ts,
            kind: TxnKind::Optimistic {
                skip_constraint_check: false,
            },
            commit_kind: CommitKind::TwoPc,
            primary: cmd.primary,
            // Unknown while the transaction runs: the maximum keeps resolvers from
            // resolving its locks one key at a time.
            txn_size: u64::MAX,
            lock_ttl: cmd.lock_ttl,
            // Non-zero, so that check-txn-status may push it for readers.
            min_commit_ts: next_ts(start_ts),
            is_retry_request: cmd.is_retry_request,
            assertion_level: cmd.assertion_level,
        };
        let mut txn = MvccTxn::new(start_ts);
        let mut locks = Vec::new();
        let mut assertion_failure = None;
        for m in cmd.mutations {
            let key = m.key.clone();
            let res = prewrite(
                &mut txn,
                &self.store,
                &mut self.cm,
                &props,
                m,
                &None,
                PessimisticAction::SkipPessimisticCheck,
                None,
                cmd.generation,
            );
            let committed = || self.store.commit_record(&key, start_ts).committed_ts();
            match res {
                Ok(_) => {}
                // A late flush after the transaction committed: succeed, writing nothing.
                Err(TxnError::WriteConflict {
                    start_ts: s,
                    conflict_commit_ts,
                    ..
                }) if conflict_commit_ts > s && committed().is_some() => return Ok(Vec::new()),
                Err(e @ TxnError::KeyIsLocked(_)) => {
                    if committed().is_some() {
                        return Ok(Vec::new());
                    }
                    locks.push(e);
                }
                Err(e @ TxnError::AssertionFailed { .. }) => {
                    assertion_failure.get_or_insert(e);
                }
                // This generation is older than the key's lock: a late flush, skipped.
                Err(TxnError::GenerationOutOfOrder { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = assertion_failure {
            return Err(e);
        }
        // Written even when some keys were locked by others (a prewrite would write
        // nothing then).
        self.finish(txn, now_ms);
        Ok(locks)
    }

    /// The transaction's own flushed values of `keys` (sorted, deduplicated).
    fn buffered_values(&self, keys: &[Bytes], start_ts: u64) -> Vec<(Bytes, Bytes)> {
        keys.iter()
            .filter_map(|k| {
                let lock = self.store.lock(k).filter(|l| l.ts == start_ts)?;
                match lock.lock_type {
                    LockType::Put => Some((k.clone(), lock.value.clone().unwrap_or_default())),
                    // Like the client's memory buffer, a delete is a pair with no value.
                    LockType::Delete => Some((k.clone(), Bytes::new())),
                    // TiKV treats these as unreachable (pipelined transactions are
                    // optimistic and never flush `Op::Lock`) and would crash; the mock
                    // answers nothing for the key.
                    LockType::Lock | LockType::Pessimistic => None,
                }
            })
            .collect()
    }
}

impl Cluster {
    pub(crate) fn kv_flush(
        &mut self,
        store_id: u64,
        req: kvrpcpb::FlushRequest,
        now_ms: u64,
    ) -> kvrpcpb::FlushResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                let keys = req.mutations.iter().map(|m| &m.key[..]);
                check_api(self.config.api, &ctx, "flush", keys.clone())?;
                check_key_size(keys, self.config.max_key_size)?;
                let region = self.txn_region(store_id, &ctx, Access::Write)?;
                keys_in_region(req.mutations.iter().map(|m| &m.key), &region)?;
                let mutations = req
                    .mutations
                    .iter()
                    .map(decode_mutation)
                    .collect::<Result<Vec<_>, _>>()?;
                let cmd = FlushCmd {
                    start_ts: req.start_ts,
                    primary: req.primary_key.clone(),
                    mutations,
                    generation: req.generation,
                    lock_ttl: req.lock_ttl,
                    assertion_level: AssertionLevel::try_from(req.assertion_level)
                        .unwrap_or(AssertionLevel::Off),
                    is_retry_request: ctx.is_retry_request,
                };
                let locks = self.txn.flush(cmd, now_ms)?;
                Ok(kvrpcpb::FlushResponse {
                    errors: locks.into_iter().map(|e| e.key_error()).collect(),
                    ..Default::default()
                })
            })(),
            |e| kvrpcpb::FlushResponse {
                errors: vec![e.key_error()],
                ..Default::default()
            },
        )
    }

    pub(crate) fn kv_buffer_batch_get(
        &mut self,
        store_id: u64,
        req: kvrpcpb::BufferBatchGetRequest,
        _now_ms: u64,
    ) -> kvrpcpb::BufferBatchGetResponse {
        let ctx = req.context.clone().unwrap_or_default();
        respond(
            (|| {
                check_api(
                    self.config.api,
                    &ctx,
                    "buffer_batch_get",
                    req.keys.iter().map(|k| &k[..]),
                )?;
                if !ctx.stale_read {
                    self.txn.cm.update_max_ts(req.version);
                }
                let region = self.txn_region(store_id, &ctx, Access::Read)?;
                let mut keys = req.keys.clone();
                keys.sort();
                keys.dedup();
                // A key outside the region fails alone, in place, like in KvBatchGet.
                let mut pairs = Vec::new();
                let mut inside = Vec::new();
                for key in keys {
                    match point_read_in_region(&encode_memcomparable(&key), &region) {
                        Ok(()) => inside.push(key),
                        Err(msg) => pairs.push((key, Err(TxnError::KeyOutOfRegion(msg)))),
                    }
                }
                pairs.extend(
                    self.txn
                        .buffered_values(&inside, req.version)
                        .into_iter()
                        .map(|(k, v)| (k, Ok(v))),
                );
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(kvrpcpb::BufferBatchGetResponse {
                    pairs: pairs
                        .into_iter()
                        .map(|(key, r)| match r {
                            Ok(value) => KvPair {
                                key,
                                value,
                                ..Default::default()
                            },
                            Err(e) => KvPair {
                                error: Some(Box::new(e.key_error())),
                                ..Default::default()
                            },
                        })
                        .collect(),
                    ..Default::default()
                })
            })(),
            // Unlike KvBatchGet, a whole-request error is not repeated as a pair.
            |e| kvrpcpb::BufferBatchGetResponse {
                error: Some(Box::new(e.key_error())),
                ..Default::default()
            },
        )
    }

    pub(crate) fn broadcast_txn_status(
        &mut self,
        _store_id: u64,
        req: kvrpcpb::BroadcastTxnStatusRequest,
        now_ms: u64,
    ) -> kvrpcpb::BroadcastTxnStatusResponse {
        // No region or API-version check: TiKV hands the statuses straight to the cache.
        for s in &req.txn_status {
            let state =
                CachedTxnState::from_ts(s.start_ts, s.min_commit_ts, s.commit_ts, s.rolled_back);
            if s.is_completed {
                if matches!(state, CachedTxnState::Ongoing { .. }) {
                    // TiKV asserts a completed transaction is committed or rolled back
                    // (and would crash); the mock ignores the entry.
                    continue;
                }
                self.txn.status.remove_large(s.start_ts);
            }
            self.txn.status.upsert(s.start_ts, state, now_ms);
        }
        kvrpcpb::BroadcastTxnStatusResponse::default()
    }

    /// What this cluster's transaction status cache knows about the transaction that
    /// started at `start_ts` (filled by commits, resolutions and `BroadcastTxnStatus`);
    /// lets tests check that a client broadcast its pipelined transaction's progress.
    pub fn cached_txn_status(&self, start_ts: u64) -> Option<CachedTxnState> {
        self.txn.status.get(start_ts)
    }
}

with_context!(
    FlushRequest => FlushResponse,
    BufferBatchGetRequest => BufferBatchGetResponse,
);

impl HasContext for kvrpcpb::BroadcastTxnStatusRequest {
    fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }
}

/// The response has no `region_error`: an injected region error answers an empty
/// response, which is all TiKV ever answers.
impl RegionErrorResponse for kvrpcpb::BroadcastTxnStatusResponse {
    fn from_region_error(_err: errorpb::Error) -> Self {
        kvrpcpb::BroadcastTxnStatusResponse::default()
    }
}
