//! Flashback: `KvPrepareFlashbackToVersion` and `KvFlashbackToVersion`.
//!
//! Semantics follow tikv/tikv `src/server/service/kv.rs` (`future_prepare_flashback_to_version`,
//! `future_flashback_to_version`), `src/storage/txn/commands/flashback_to_version*.rs`,
//! `src/storage/txn/actions/flashback_to_version.rs` and raftstore's flashback admin commands
//! and `check_flashback_state`:
//!
//! - **Prepare**: the region enters the flashback state (`flashback_start_ts`; unconditional,
//!   epoch-neutral, so a repeat is harmless), after the usual leader and epoch checks. Then
//!   every lock in `[start_key, end_key)` of the region whose ts is not `start_ts` is rolled
//!   back (a rollback record at its ts, the primary's protected), and the *first user key*
//!   — the first key whose newest Put/Delete record is newer than `version` — gets the
//!   flashback's own lock (ts `start_ts`, itself as primary, TTL 0, a Put of its value at
//!   `version` or a Delete), unless it is locked already.
//! - **Flashback**: `commit_ts` must exceed `start_ts` (else `InvalidTxnTso`, in `error`).
//!   With no first user key there is nothing to do. Otherwise the first key must carry the
//!   flashback's lock — or already its commit at `commit_ts` (a retry: success) — else the
//!   region error `FlashbackNotPrepared`. Every other key whose newest Put/Delete record lies
//!   in `(version, commit_ts)` gets, at `commit_ts` (start ts `start_ts`), a Put of its value
//!   at `version` or a Delete; then the first key's lock is committed, and the region leaves
//!   the flashback state.
//! - While a region is in the flashback state, every other request fails with
//!   `FlashbackInProgress`, except snapshot reads below `start_ts` (`check.rs`); splits,
//!   merges and leader moves are refused.
//! - Failures are the `error` string (TiKV's `Display`), region errors in `region_error`.

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::metapb;

use super::actions::cleanup::rollback_lock;
use super::error::{TxnError, TxnResult};
use super::handlers::{Fail, clamp, in_region, raw_bounds};
use super::store::{MvccTxn, TxnStore};
use super::types::{Lock, LockType, Write, WriteType};
use crate::check::Access;
use crate::cluster::Cluster;
use crate::region_error;

/// The newest Put or Delete record of `key` at or below `max_ts` (Lock and Rollback records
/// are skipped): `(commit_ts, record)`.
fn latest_change(store: &TxnStore, key: &[u8], max_ts: u64) -> Option<(u64, Write)> {
    store
        .writes_of(key)
        .filter(|(commit_ts, _)| *commit_ts <= max_ts)
        .find(|(_, w)| matches!(w.write_type, WriteType::Put | WriteType::Delete))
        .map(|(ts, w)| (ts, w.clone()))
}

/// The keys of the request's range inside `region`, ascending.
fn keys_of(store: &TxnStore, region: &metapb::Region, start: &[u8], end: &[u8]) -> Vec<Bytes> {
    let bounds = raw_bounds(region);
    let hi = (!end.is_empty()).then_some(end);
    let range = clamp(Some(start), hi, &bounds);
    store
        .keys_in(range, false)
        .filter(|k| in_region(k, region))
        .cloned()
        .collect()
}

/// The first key whose newest Put/Delete is newer than `version`.
fn first_user_key(store: &TxnStore, keys: &[Bytes], version: u64) -> Option<Bytes> {
    keys.iter()
        .find(|k| latest_change(store, k, u64::MAX).is_some_and(|(ts, _)| ts > version))
        .cloned()
}

/// The value a key had at `version`: `Some(value)` for a Put, `None` for nothing or a
/// Delete.
fn value_at(store: &TxnStore, key: &[u8], version: u64) -> Option<Bytes> {
    match latest_change(store, key, version) {
        Some((_, w)) if w.write_type == WriteType::Put => Some(w.value.unwrap_or_default()),
        _ => None,
    }
}

impl Cluster {
    pub(crate) fn kv_prepare_flashback_to_version(
        &mut self,
        store_id: u64,
        req: kvrpcpb::PrepareFlashbackToVersionRequest,
        now_ms: u64,
    ) -> kvrpcpb::PrepareFlashbackToVersionResponse {
        let ctx = req.context.clone().unwrap_or_default();
        let region = match self
            .topology
            .check_request(store_id, &ctx, Access::Flashback)
        {
            Ok(r) => r,
            Err(e) => {
                return kvrpcpb::PrepareFlashbackToVersionResponse {
                    region_error: Some(e),
                    ..Default::default()
                };
            }
        };
        // `start_flashback`: the admin command succeeded.
        if let Err(e) = self.topology.set_flashback(region.id, Some(req.start_ts)) {
            return kvrpcpb::PrepareFlashbackToVersionResponse {
                error: e.to_string(),
                ..Default::default()
            };
        }
        match self.prepare_flashback(&region, &req, now_ms) {
            Ok(()) => kvrpcpb::PrepareFlashbackToVersionResponse::default(),
            Err(e) => kvrpcpb::PrepareFlashbackToVersionResponse {
                error: e.debug_text(),
                ..Default::default()
            },
        }
    }

    fn prepare_flashback(
        &mut self,
        region: &metapb::Region,
        req: &kvrpcpb::PrepareFlashbackToVersionRequest,
        now_ms: u64,
    ) -> TxnResult<()> {
        let store = &self.txn.store;
        let keys = keys_of(store, region, &req.start_key, &req.end_key);
        // Phase 1: roll back every other lock of the range.
        let locked: Vec<(Bytes, Lock)> = keys
            .iter()
            .filter_map(|k| store.lock(k).map(|l| (k.clone(), l.clone())))
            .filter(|(_, l)| l.ts != req.start_ts)
            .collect();
        let mut all = MvccTxn::new(0);
        for (key, lock) in &locked {
            let mut txn = MvccTxn::new(lock.ts);
            rollback_lock(&mut txn, store, key, lock, true)?;
            all.modifies.extend(txn.modifies);
            all.released.extend(txn.released);
        }
        self.txn.finish(all, now_ms);
        // Phase 2: the flashback's own lock on the first user key.
        let store = &self.txn.store;
        let Some(first) = first_user_key(store, &keys, req.version) else {
            return Ok(());
        };
        if store.lock(&first).is_some() {
            return Ok(());
        }
        let old = value_at(store, &first, req.version);
        let lock_type = if old.is_some() {
            LockType::Put
        } else {
            LockType::Delete
        };
        let mut lock = Lock::new(lock_type, first.clone(), req.start_ts, 0);
        lock.txn_size = 1;
        lock.value = old;
        let mut txn = MvccTxn::new(req.start_ts);
        txn.put_lock(first, lock);
        self.txn.finish(txn, now_ms);
        Ok(())
    }

    pub(crate) fn kv_flashback_to_version(
        &mut self,
        store_id: u64,
        req: kvrpcpb::FlashbackToVersionRequest,
        now_ms: u64,
    ) -> kvrpcpb::FlashbackToVersionResponse {
        let ctx = req.context.clone().unwrap_or_default();
        let region = match self
            .topology
            .check_request(store_id, &ctx, Access::Flashback)
        {
            Ok(r) => r,
            Err(e) => {
                return kvrpcpb::FlashbackToVersionResponse {
                    region_error: Some(e),
                    ..Default::default()
                };
            }
        };
        match self.flashback(&region, &req, now_ms) {
            Ok(()) => {
                // `end_flashback`.
                let _ = self.topology.set_flashback(region.id, None);
                kvrpcpb::FlashbackToVersionResponse::default()
            }
            Err(Fail::Region(e)) => kvrpcpb::FlashbackToVersionResponse {
                region_error: Some(e),
                ..Default::default()
            },
            Err(Fail::Key(e)) => kvrpcpb::FlashbackToVersionResponse {
                error: e.debug_text(),
                ..Default::default()
            },
        }
    }

    fn flashback(
        &mut self,
        region: &metapb::Region,
        req: &kvrpcpb::FlashbackToVersionRequest,
        now_ms: u64,
    ) -> Result<(), Fail> {
        if req.commit_ts <= req.start_ts {
            return Err(TxnError::InvalidTxnTso {
                start_ts: req.start_ts,
                commit_ts: req.commit_ts,
            }
            .into());
        }
        let store = &self.txn.store;
        let keys = keys_of(store, region, &req.start_key, &req.end_key);
        let Some(first) = first_user_key(store, &keys, req.version) else {
            return Ok(());
        };
        // `check_flashback_commit`.
        match store.lock(&first) {
            Some(l) if l.ts == req.start_ts => {}
            None if store
                .get_write(&first, req.commit_ts)
                .is_some_and(|(ts, w)| ts == req.commit_ts && w.start_ts == req.start_ts) =>
            {
                return Ok(());
            }
            _ => {
                return Err(Fail::Region(Box::new(
                    region_error::flashback_not_prepared(region.id),
                )));
            }
        }
        let mut txn = MvccTxn::new(req.start_ts);
        for key in keys.iter().filter(|k| **k != first) {
            let changed = latest_change(store, key, u64::MAX)
                .is_some_and(|(ts, _)| ts > req.version && ts < req.commit_ts);
            if !changed {
                continue;
            }
            let write = match value_at(store, key, req.version) {
                Some(v) => Write::new(WriteType::Put, req.start_ts, Some(v)),
                None => Write::new(WriteType::Delete, req.start_ts, None),
            };
            txn.put_write(key.clone(), req.commit_ts, write);
        }
        // `commit_flashback_key`.
        let Some(lock) = store.lock(&first).cloned() else {
            return Err(TxnError::TxnLockNotFound {
                start_ts: req.start_ts,
                commit_ts: req.commit_ts,
                key: first,
            }
            .into());
        };
        let write_type = WriteType::from_lock_type(lock.lock_type).unwrap_or(WriteType::Delete);
        txn.put_write(
            first.clone(),
            req.commit_ts,
            Write::new(write_type, req.start_ts, lock.value.clone()),
        );
        txn.unlock_key(first, req.commit_ts);
        self.txn.finish(txn, now_ms);
        Ok(())
    }
}

with_context!(
    PrepareFlashbackToVersionRequest => PrepareFlashbackToVersionResponse,
    FlashbackToVersionRequest => FlashbackToVersionResponse,
);
