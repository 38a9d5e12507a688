//! The Percolator transactional engine of the mock TiKV, with TiKV's semantics.
//!
//! Read from TiKV's source (`src/storage/txn/actions/`, `src/storage/txn/commands/`,
//! `src/storage/mvcc/`, `src/storage/lock_manager/`, `components/txn_types/`):
//!
//! - `store`: the lock and write column families and the buffered per-command
//!   transaction (`store::MvccTxn`) that applies all of a command's changes or none;
//! - `actions`: prewrite, commit, cleanup/rollback, check-txn-status, pessimistic lock;
//! - `commands`: the commands built from them (prewrite with async commit and 1PC,
//!   commit, rollback, cleanup, check txn status, check secondary locks, resolve lock,
//!   heartbeat, scan lock, pessimistic lock and rollback);
//! - `reader`: point get, batch get and scans with lock checks by isolation level;
//! - [`lock_wait`]: waiting for pessimistic locks and deadlock detection;
//! - `handlers`: the kvrpcpb handlers behind [`crate::Cluster`] (API-version and region
//!   checks in TiKV's order, errors as TiKV reports them);
//! - `pipelined`: pipelined DML (`KvFlush`, `KvBufferBatchGet`, `BroadcastTxnStatus`);
//! - [`status_cache`]: TiKV's transaction status cache, which commands and
//!   `BroadcastTxnStatus` fill;
//! - `safe_ts`: stale reads (`DataIsNotReady`) and `GetStoreSafeTS`;
//! - `debug`: `MvccGetByKey`, `MvccGetByStartTs`, `UnsafeDestroyRange` and the retired
//!   `KvGC`.
//!
//! Reads below the GC safe point are *not* rejected, because TiKV does not reject them:
//! nothing on TiKV's read path (`src/storage/mod.rs`, `mvcc/reader`) looks at the safe
//! point; such a read simply misses versions GC already removed. The check a client sees
//! (`GCTooEarly`) is client-go's own (`KVStore::CheckVisibility`), so it belongs in the
//! client.
//!
//! The data is one keyspace-wide store, like the RawKV store: regions are checked in
//! front of it, so splits and merges never move data. `max_ts` (TiKV's concurrency
//! manager) is cluster-wide: TiKV keeps it per store and re-syncs it from PD's TSO when a
//! leader moves, which only ever raises it past every read, so one cluster-wide maximum is
//! at least as safe for async commit and 1PC.

/// `HasContext` and `RegionErrorResponse` for request/response pairs served here.
macro_rules! with_context {
    ($($req:ident => $resp:ident),* $(,)?) => {
        $(
            impl crate::cluster::HasContext for tikv_proto::kvrpcpb::$req {
                fn context(&self) -> Option<&tikv_proto::kvrpcpb::Context> {
                    self.context.as_ref()
                }
            }
            impl crate::cluster::RegionErrorResponse for tikv_proto::kvrpcpb::$resp {
                fn from_region_error(err: tikv_proto::errorpb::Error) -> Self {
                    tikv_proto::kvrpcpb::$resp {
                        region_error: Some(Box::new(err)),
                        ..Default::default()
                    }
                }
            }
        )*
    };
}

pub(crate) mod actions;
pub(crate) mod commands;
mod coprocessor;
mod debug;
pub(crate) mod error;
mod flashback;
mod handlers;
pub mod lock_wait;
mod pipelined;
pub(crate) mod reader;
mod safe_ts;
pub mod status_cache;
pub(crate) mod store;
#[cfg(test)]
mod tests;
pub(crate) mod types;

use tikv_proto::kvrpcpb::{self, PessimisticLockResponse};

use self::actions::ConcurrencyManager;
use self::error::TxnError;
use self::lock_wait::{LockWaitId, LockWaits};
use self::status_cache::TxnStatusCache;
use self::store::{ReleasedLock, TxnStore};

pub(crate) use self::debug::gc_in_batch;
pub use self::handlers::LockWaitOutcome;

/// The transactional state of the cluster.
#[derive(Clone, Debug, Default)]
pub(crate) struct TxnEngine {
    pub(crate) store: TxnStore,
    pub(crate) cm: ConcurrencyManager,
    pub(crate) waits: LockWaits,
    /// Set by the pessimistic-lock handler when the request parked (see `handlers`).
    pub(crate) parked: Option<LockWaitId>,
    /// Recently learnt transaction statuses (TiKV keeps one per store; the mock's data is
    /// cluster-wide, and so is this).
    pub(crate) status: TxnStatusCache,
    /// Every peer's resolved ts, for stale reads.
    pub(crate) safe_ts: safe_ts::SafeTsState,
}

impl crate::Cluster {
    /// Garbage-collects transactional versions below `safe_point` over the whole key
    /// space, as TiKV's GC worker does per region: for each key the newest version at or
    /// below the safe point survives (unless it is a delete), older versions and
    /// `Lock`/`Rollback` records go. Reads below the safe point may then miss data.
    pub fn gc_txn(&mut self, safe_point: u64) {
        self.txn.store.gc(
            store::KeyRange {
                lower: None,
                upper: None,
            },
            safe_point,
        );
    }
}

impl TxnEngine {
    /// Wakes the waiters of released keys: the oldest legacy waiter of each key answers
    /// `WriteConflict` now, the rest after the wake-up delay; force-lock waiters are
    /// re-executed by the next poll.
    pub(crate) fn on_released(&mut self, released: &[ReleasedLock], now_ms: u64) {
        for r in released {
            // A shared-lock waiter (lock_ts 0) is released with the key's last holder.
            let mut on_key: Vec<(LockWaitId, u64, bool)> = self
                .waits
                .waiters
                .iter()
                .filter(|(_, w)| {
                    w.key == r.key
                        && w.woken.is_none()
                        && (w.lock_ts == r.start_ts || w.lock_ts == 0)
                })
                .map(|(id, w)| (*id, w.start_ts, is_shared_request(&w.request)))
                .collect();
            on_key.sort_by_key(|(id, ts, _)| (*ts, *id));
            // The oldest waiter is woken now; when it asks for a shared lock, so are the
            // shared requests right behind it (they can all hold the key together).
            let now_count = on_key
                .iter()
                .take_while(|(_, _, shared)| *shared)
                .count()
                .max(1);
            for (i, (id, _, _)) in on_key.into_iter().enumerate() {
                let at = if i < now_count {
                    now_ms
                } else {
                    now_ms.saturating_add(lock_wait::WAKE_UP_DELAY_MS)
                };
                if let Some(w) = self.waits.waiters.get_mut(&id) {
                    w.woken = Some((r.start_ts, r.commit_ts, at));
                }
            }
        }
        // Legacy waiters due now answer at once, so a front sees them on its next poll.
        let due: Vec<LockWaitId> = self
            .waits
            .waiters
            .iter()
            .filter(|(_, w)| {
                w.woken.is_some_and(|(_, _, at)| at <= now_ms)
                    && w.request.wake_up_mode()
                        == kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeNormal
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(w) = self.waits.waiters.remove(&id) {
                let resp = legacy_wake_up_response(&w);
                self.waits.finished.push((id, resp));
            }
        }
    }
}

/// Whether a lock request asks for shared locks.
fn is_shared_request(r: &kvrpcpb::PessimisticLockRequest) -> bool {
    r.mutations
        .iter()
        .any(|m| m.op() == kvrpcpb::Op::SharedPessimisticLock)
}

/// The `WriteConflict` a woken legacy waiter answers.
fn legacy_wake_up_response(w: &lock_wait::Waiter) -> PessimisticLockResponse {
    let (conflict_start_ts, conflict_commit_ts, _) = w.woken.unwrap_or_default();
    let e = TxnError::WriteConflict {
        start_ts: w.start_ts,
        conflict_start_ts,
        conflict_commit_ts,
        key: w.key.clone(),
        primary: w.request.primary_lock.clone(),
        reason: kvrpcpb::write_conflict::Reason::PessimisticRetry,
    };
    PessimisticLockResponse {
        errors: vec![e.key_error()],
        ..Default::default()
    }
}
