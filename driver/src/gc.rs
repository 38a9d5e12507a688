//! Garbage collection: PD's GC-state API, GC rounds, range tasks, and the txn-safe-point
//! watch behind the read-visibility check. The decisions are `tikv_core::gc`'s (the steps of
//! a round, the visibility rule) and `tikv_core::txn::gc_locks`'s (the lock sweep); this
//! module performs them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tikv_core::backoff::{Backoffer, budget};
use tikv_core::gc::{
    self, GcBarrier, GcReport, GcRound, GcSafePointAdvance, GcState, GcStep, TxnSafePointAdvance,
    TxnSafePointCache, Visibility,
};
use tikv_core::machine::Budgeted;
use tikv_core::range_task::{REGIONS_PER_TASK, next_task};
use tikv_core::txn::{ResolveRangeLocks, SweepStats};
use tikv_core::{Error, KeyRange, PdErrorKind, Timestamp};
use tikv_proto::pdpb::{self, pd_service as pd};
use tracing::{debug, info, warn};

use crate::executor::{ClientContext, run};
use crate::pd::PdClient;
use crate::runtime::Runtime;

fn missing(method: &'static str, address: String, what: &str) -> Error {
    Error::Pd {
        method,
        address,
        kind: PdErrorKind::InvalidResponse,
        message: format!("the reply has no {what}"),
    }
}

/// PD's GC-state API (PD 9.0 and later), for one keyspace (`None`: the null keyspace, i.e. the
/// cluster under unified GC).
impl<R: Runtime> PdClient<R> {
    /// The keyspace's GC state; barriers only when asked for.
    pub async fn get_gc_state(
        &self,
        keyspace: Option<u32>,
        with_barriers: bool,
        with_global_barriers: bool,
    ) -> Result<GcState, Error> {
        let request = pdpb::GetGcStateRequest {
            keyspace_scope: Some(gc::keyspace_scope(keyspace)),
            exclude_gc_barriers: !with_barriers,
            include_global_gc_barriers: with_global_barriers,
            ..Default::default()
        };
        let r = self.call::<pd::GetGcState>(request).await?;
        let state = r
            .gc_state
            .as_ref()
            .ok_or_else(|| missing("GetGCState", self.address(), "GC state"))?;
        let global = r
            .global_gc_barriers
            .as_ref()
            .map_or(&[][..], |g| &g.barriers[..]);
        Ok(GcState::from_pd(state, global))
    }

    /// Every enabled keyspace's GC state and the global barriers.
    pub async fn get_all_keyspaces_gc_states(
        &self,
        with_barriers: bool,
    ) -> Result<(Vec<GcState>, Vec<GcBarrier>), Error> {
        let request = pdpb::GetAllKeyspacesGcStatesRequest {
            exclude_gc_barriers: !with_barriers,
            exclude_global_gc_barriers: !with_barriers,
            ..Default::default()
        };
        let r = self.call::<pd::GetAllKeyspacesGcStates>(request).await?;
        let states = r
            .gc_states
            .iter()
            .map(|s| GcState::from_pd(s, &[]))
            .collect();
        let global = r
            .global_gc_barriers
            .iter()
            .map(GcBarrier::from_pd_global)
            .collect();
        Ok((states, global))
    }

    /// Moves the txn safe point towards `target` (it may stop short at a barrier).
    pub async fn advance_txn_safe_point(
        &self,
        keyspace: Option<u32>,
        target: Timestamp,
    ) -> Result<TxnSafePointAdvance, Error> {
        let request = pdpb::AdvanceTxnSafePointRequest {
            keyspace_scope: Some(gc::keyspace_scope(keyspace)),
            target: target.as_u64(),
            ..Default::default()
        };
        let r = self.call::<pd::AdvanceTxnSafePoint>(request).await?;
        Ok(TxnSafePointAdvance::from_pd(target, &r))
    }

    /// Moves the GC safe point to `target` (at most the txn safe point).
    pub async fn advance_gc_safe_point(
        &self,
        keyspace: Option<u32>,
        target: Timestamp,
    ) -> Result<GcSafePointAdvance, Error> {
        let request = pdpb::AdvanceGcSafePointRequest {
            keyspace_scope: Some(gc::keyspace_scope(keyspace)),
            target: target.as_u64(),
            ..Default::default()
        };
        let r = self.call::<pd::AdvanceGcSafePoint>(request).await?;
        Ok(GcSafePointAdvance::from_pd(target, &r))
    }

    /// Sets (or renews) the barrier `id` at `ts` for `ttl` (`None`: until deleted).
    pub async fn set_gc_barrier(
        &self,
        keyspace: Option<u32>,
        id: &str,
        ts: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier, Error> {
        let request = pdpb::SetGcBarrierRequest {
            keyspace_scope: Some(gc::keyspace_scope(keyspace)),
            barrier_id: id.to_string(),
            barrier_ts: ts.as_u64(),
            ttl_seconds: gc::ttl_to_seconds(ttl)?,
            ..Default::default()
        };
        let r = self.call::<pd::SetGcBarrier>(request).await?;
        r.new_barrier_info
            .as_ref()
            .map(GcBarrier::from_pd)
            .ok_or_else(|| missing("SetGCBarrier", self.address(), "barrier"))
    }

    /// Deletes the barrier `id`; the deleted barrier, `None` if there was none.
    pub async fn delete_gc_barrier(
        &self,
        keyspace: Option<u32>,
        id: &str,
    ) -> Result<Option<GcBarrier>, Error> {
        let request = pdpb::DeleteGcBarrierRequest {
            keyspace_scope: Some(gc::keyspace_scope(keyspace)),
            barrier_id: id.to_string(),
            ..Default::default()
        };
        let r = self.call::<pd::DeleteGcBarrier>(request).await?;
        Ok(r.deleted_barrier_info.as_ref().map(GcBarrier::from_pd))
    }

    /// Sets (or renews) the global barrier `id`, which holds back every keyspace.
    pub async fn set_global_gc_barrier(
        &self,
        id: &str,
        ts: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier, Error> {
        let request = pdpb::SetGlobalGcBarrierRequest {
            barrier_id: id.to_string(),
            barrier_ts: ts.as_u64(),
            ttl_seconds: gc::ttl_to_seconds(ttl)?,
            ..Default::default()
        };
        let r = self.call::<pd::SetGlobalGcBarrier>(request).await?;
        r.new_barrier_info
            .as_ref()
            .map(GcBarrier::from_pd_global)
            .ok_or_else(|| missing("SetGlobalGCBarrier", self.address(), "barrier"))
    }

    /// Deletes the global barrier `id`; the deleted barrier, `None` if there was none.
    pub async fn delete_global_gc_barrier(&self, id: &str) -> Result<Option<GcBarrier>, Error> {
        let request = pdpb::DeleteGlobalGcBarrierRequest {
            barrier_id: id.to_string(),
            ..Default::default()
        };
        let r = self.call::<pd::DeleteGlobalGcBarrier>(request).await?;
        Ok(r.deleted_barrier_info
            .as_ref()
            .map(GcBarrier::from_pd_global))
    }

    /// The smallest current timestamp over every TSO keyspace group (PD's `GetMinTS`): a
    /// bound below every timestamp any client can still be handed, what a GC worker takes
    /// its safe point under.
    pub async fn get_min_ts(&self) -> Result<Timestamp, Error> {
        let r = self
            .call::<pd::GetMinTs>(pdpb::GetMinTsRequest::default())
            .await?;
        r.timestamp
            .as_ref()
            .map(Timestamp::from_pd)
            .ok_or_else(|| missing("GetMinTS", self.address(), "timestamp"))
    }

    fn address(&self) -> String {
        self.leader_address().unwrap_or_default()
    }
}

/// The txn safe point a client's reads are checked against, reloaded from PD as
/// [`TxnSafePointCache`] says.
#[derive(Debug, Default)]
pub struct SafePointWatch {
    cache: Mutex<TxnSafePointCache>,
    /// A background reload is running.
    refreshing: AtomicBool,
}

impl SafePointWatch {
    fn cache(&self) -> std::sync::MutexGuard<'_, TxnSafePointCache> {
        // Each update is one assignment: a panic elsewhere cannot leave it half-made.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: Runtime> ClientContext<R> {
    /// The keyspace GC-state calls address: the client's under API V2, else the null one.
    pub fn gc_keyspace(&self) -> Option<u32> {
        self.config.keyspace_id()
    }

    /// The stored-key range GC covers: the client's keyspace (transactional keys) under API
    /// V2, the whole key space otherwise.
    pub fn gc_range(&self) -> KeyRange {
        self.config.keyspace_codec().encode_range(KeyRange::all())
    }

    /// Loads the txn safe point from PD into the visibility cache.
    pub async fn load_txn_safe_point(&self) -> Result<Timestamp, Error> {
        let state = self
            .pd
            .get_gc_state(self.gc_keyspace(), false, false)
            .await?;
        let now = self.runtime.now();
        self.txn_safe_point
            .cache()
            .loaded(state.txn_safe_point, now);
        Ok(state.txn_safe_point)
    }

    /// Whether a read at `start_ts` may stand (client-go's `CheckVisibility`), reloading the
    /// safe point when it is due.
    pub async fn check_visibility(self: &Arc<Self>, start_ts: Timestamp) -> Result<(), Error> {
        let verdict = self
            .txn_safe_point
            .cache()
            .check(start_ts, self.runtime.now());
        match verdict {
            Visibility::Visible => Ok(()),
            Visibility::Aborted(e) => Err(e),
            Visibility::VisibleRefresh => {
                if !self.txn_safe_point.refreshing.swap(true, Ordering::AcqRel) {
                    let weak = Arc::downgrade(self);
                    self.runtime.spawn(async move {
                        let Some(ctx) = weak.upgrade() else {
                            return;
                        };
                        if let Err(e) = ctx.load_txn_safe_point().await {
                            debug!(error = %e, "reloading the txn safe point failed");
                        }
                        ctx.txn_safe_point
                            .refreshing
                            .store(false, Ordering::Release);
                    });
                }
                Ok(())
            }
            Visibility::MustRefresh => {
                self.load_txn_safe_point().await.map_err(|e| Error::Pd {
                    method: "GetGCState",
                    address: self.pd.leader_address().unwrap_or_default(),
                    kind: PdErrorKind::Unreachable(tikv_core::Delivery::MaybeDelivered),
                    message: format!(
                        "start ts {start_ts} may be behind the txn safe point, which cannot \
                         be loaded: {e}"
                    ),
                })?;
                match self
                    .txn_safe_point
                    .cache()
                    .check(start_ts, self.runtime.now())
                {
                    Visibility::Aborted(e) => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Runs `task` on each task of `range` (stored keys) — about 128 regions each, at most
    /// `concurrency` at a time — and returns their results in completion order. The first
    /// failure stops the run (tasks in flight are dropped).
    pub async fn run_range_tasks<T, F, Fut>(
        &self,
        range: KeyRange,
        concurrency: usize,
        mut task: F,
    ) -> Result<Vec<T>, Error>
    where
        F: FnMut(KeyRange) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let concurrency = concurrency.max(1);
        let mut rest = (!range.is_empty()).then_some(range);
        let mut running = FuturesUnordered::new();
        let mut done = Vec::new();
        loop {
            while running.len() < concurrency {
                let Some(left) = rest.take() else { break };
                let limit = i32::try_from(REGIONS_PER_TASK).unwrap_or(i32::MAX);
                let regions = self
                    .pd
                    .scan_regions(left.start().as_bytes(), left.end().as_bytes(), limit)
                    .await?;
                let pd = self.pd.leader_address().unwrap_or_default();
                let (next, after) = next_task(&left, &regions, &pd)?;
                running.push(task(next));
                rest = after;
            }
            match running.next().await {
                Some(result) => done.push(result?),
                None => return Ok(done),
            }
        }
    }

    /// Settles every lock below `safe_point` in `range` (stored keys), `concurrency` range
    /// tasks at a time.
    pub async fn sweep_locks(
        self: &Arc<Self>,
        range: KeyRange,
        safe_point: Timestamp,
        concurrency: usize,
    ) -> Result<SweepStats, Error> {
        let stats = self
            .run_range_tasks(range, concurrency, |task| {
                let ctx = self.clone();
                async move {
                    let backoff = Backoffer::new(
                        "GC: lock sweep",
                        ctx.config.budget(budget::GC_RESOLVE_LOCK),
                    );
                    let sweep = ResolveRangeLocks::new(task, safe_point);
                    run(&ctx, Budgeted::new(backoff, sweep)).await
                }
            })
            .await?;
        let mut total = SweepStats::default();
        for s in stats {
            total.add(s);
        }
        Ok(total)
    }

    /// One GC round towards `target` (see `tikv_core::gc`).
    pub async fn gc_round(
        self: &Arc<Self>,
        target: Timestamp,
        concurrency: usize,
    ) -> Result<GcReport, Error> {
        let keyspace = self.gc_keyspace();
        let mut round = GcRound::new(target);
        let mut step = round.start();
        loop {
            step = match step {
                GcStep::AdvanceTxnSafePoint(target) => {
                    let advance = self.pd.advance_txn_safe_point(keyspace, target).await?;
                    if advance.is_blocked() {
                        warn!(
                            target = %advance.target,
                            granted = %advance.new,
                            blocker = advance.blocker.as_deref().unwrap_or(""),
                            "GC: the txn safe point is held back"
                        );
                    }
                    // Reads below the new safe point must fail from now on.
                    self.txn_safe_point
                        .cache()
                        .loaded(advance.new, self.runtime.now());
                    round.on_txn_safe_point(advance)
                }
                GcStep::ResolveLocks(safe_point) => {
                    let stats = self
                        .sweep_locks(self.gc_range(), safe_point, concurrency)
                        .await?;
                    debug!(
                        locks = stats.locks_found,
                        pages = stats.pages,
                        "GC: locks settled"
                    );
                    round.on_locks_resolved(stats.locks_found)
                }
                GcStep::AdvanceGcSafePoint(target) => {
                    let advance = self.pd.advance_gc_safe_point(keyspace, target).await?;
                    round.on_gc_safe_point(advance)
                }
                GcStep::Done(report) => {
                    info!(
                        txn_safe_point = %report.txn_safe_point.new,
                        gc_safe_point = %report.gc_safe_point.new,
                        locks = report.locks_resolved,
                        "GC round done"
                    );
                    return Ok(report);
                }
            };
        }
    }
}

/// Garbage collection and GC barriers (client-go's `KVStore.GC` and PD's GC-states client).
///
/// Under API V2 these address the client's keyspace (a keyspace without keyspace-level GC
/// shares the cluster's state: its barriers and state calls are redirected there by PD, and
/// only a null-keyspace client may run GC for it); otherwise the whole cluster.
impl<R: Runtime> crate::txn::TransactionClient<R> {
    /// Runs one GC round towards `safe_point` with client-go's concurrency (8 range tasks):
    /// the txn safe point is advanced (PD may stop it at a barrier: the round then goes on
    /// with what PD granted, and the report says so), every lock of a transaction started at
    /// or before it is settled, then the GC safe point follows. Versions below the GC safe
    /// point are then TiKV's to delete.
    ///
    /// Fails with a [`PdErrorKind::Refused`] PD error when the safe point would go backwards.
    pub async fn gc(&self, safe_point: Timestamp) -> Result<GcReport, Error> {
        self.gc_with_concurrency(safe_point, tikv_core::range_task::DEFAULT_CONCURRENCY)
            .await
    }

    /// [`gc`](Self::gc) with `concurrency` range tasks at a time.
    pub async fn gc_with_concurrency(
        &self,
        safe_point: Timestamp,
        concurrency: usize,
    ) -> Result<GcReport, Error> {
        self.ctx.gc_round(safe_point, concurrency).await
    }

    /// The smallest current timestamp over all TSO keyspace groups (client-go's
    /// `CurrentAllTSOKeyspaceGroupMinTs`): no transaction can start below it any more.
    pub async fn min_timestamp_of_all_keyspace_groups(&self) -> Result<Timestamp, Error> {
        self.ctx.pd.get_min_ts().await
    }

    /// Settles every lock of a transaction started at or before `max_ts` in `range` (user
    /// keys), `concurrency` range tasks at a time, whatever the locks' TTLs: the lock sweep
    /// of a GC round, for operators (client-go's `ResolveLocksForRange`). Live transactions
    /// below `max_ts` are rolled back.
    pub async fn resolve_locks_in_range(
        &self,
        range: impl Into<KeyRange>,
        max_ts: Timestamp,
        concurrency: usize,
    ) -> Result<SweepStats, Error> {
        let range = self.ctx.config.keyspace_codec().encode_range(range.into());
        self.ctx.sweep_locks(range, max_ts, concurrency).await
    }

    /// The GC state (safe points and barriers, the cluster's global barriers included).
    pub async fn gc_state(&self) -> Result<GcState, Error> {
        self.ctx
            .pd
            .get_gc_state(self.ctx.gc_keyspace(), true, true)
            .await
    }

    /// Every enabled keyspace's GC state, and the global barriers.
    pub async fn all_keyspaces_gc_states(&self) -> Result<(Vec<GcState>, Vec<GcBarrier>), Error> {
        self.ctx.pd.get_all_keyspaces_gc_states(true).await
    }

    /// Sets (or renews) the GC barrier `id` at `ts` for `ttl` (`None`: until deleted): the
    /// txn safe point will not pass `ts` while it lives, so reads at `ts` stay possible
    /// (what backup and change-data-capture tools hold). Refused
    /// ([`PdErrorKind::Refused`]) below the current txn safe point.
    pub async fn set_gc_barrier(
        &self,
        id: &str,
        ts: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier, Error> {
        self.ctx
            .pd
            .set_gc_barrier(self.ctx.gc_keyspace(), id, ts, ttl)
            .await
    }

    /// Deletes the GC barrier `id`; the deleted barrier, `None` if there was none.
    pub async fn delete_gc_barrier(&self, id: &str) -> Result<Option<GcBarrier>, Error> {
        self.ctx
            .pd
            .delete_gc_barrier(self.ctx.gc_keyspace(), id)
            .await
    }

    /// Sets (or renews) the global GC barrier `id`, which holds back every keyspace's txn
    /// safe point.
    pub async fn set_global_gc_barrier(
        &self,
        id: &str,
        ts: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier, Error> {
        self.ctx.pd.set_global_gc_barrier(id, ts, ttl).await
    }

    /// Deletes the global GC barrier `id`; the deleted barrier, `None` if there was none.
    pub async fn delete_global_gc_barrier(&self, id: &str) -> Result<Option<GcBarrier>, Error> {
        self.ctx.pd.delete_global_gc_barrier(id).await
    }
}
