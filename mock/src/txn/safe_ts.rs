//! Stale-read support: each peer's safe ts (TiKV's resolved ts), the `DataIsNotReady` check
//! of a stale read, and `GetStoreSafeTS`.
//!
//! Read from TiKV: `components/resolved_ts/src/resolver.rs` (a region resolves to
//! `min(oldest tracked lock's start_ts, min_ts)`, where `min_ts` is a timestamp fetched
//! from PD, and the published value never goes down), `components/raftstore/src/store/
//! worker/read.rs` (`check_stale_read_safe`: a stale read with `read_ts > safe_ts` fails
//! with `DataIsNotReady { region_id, peer_id, safe_ts }`; on the leader the read falls back
//! to an ordinary leader read instead), and `worker/check_leader.rs` (`GetStoreSafeTS`: the
//! minimum non-zero safe ts over the store's regions overlapping the key range, 0 if none).
//!
//! The mock resolves on demand rather than on TiKV's one-second tick: `min_ts` is the last
//! timestamp PD handed out, so a stale read at any timestamp the client already holds
//! succeeds unless a lock holds the region back. Tests that need a lagging follower stall
//! a store's resolver with [`Cluster::stall_safe_ts`] (as when a follower stops hearing
//! the leader's `CheckLeader`).

use std::collections::{BTreeMap, HashMap};

use tikv_proto::kvrpcpb::{self, Context};
use tikv_proto::metapb;

use super::handlers::raw_bounds;
use super::store::KeyRange;
use crate::check::RegionErr;
use crate::cluster::Cluster;
use crate::region_error;

/// The resolver state of every peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct SafeTsState {
    /// The last safe ts published per `(region id, store id)`; it never decreases.
    published: HashMap<(u64, u64), u64>,
    /// Stores whose resolver stopped advancing, with the `min_ts` they stopped at.
    stalled: BTreeMap<u64, u64>,
}

impl Cluster {
    /// Stops advancing the safe ts of every peer on `store_id` at the current TSO, as when a
    /// follower no longer hears the leader's `CheckLeader`: stale reads above it then get
    /// `DataIsNotReady` from that store's followers.
    pub fn stall_safe_ts(&mut self, store_id: u64) {
        let at = self.tso.last_ts();
        self.txn.safe_ts.stalled.entry(store_id).or_insert(at);
    }

    /// Lets a store's safe ts advance again after [`Cluster::stall_safe_ts`].
    pub fn resume_safe_ts(&mut self, store_id: u64) {
        self.txn.safe_ts.stalled.remove(&store_id);
    }

    /// The safe ts of the peer of `region` on `store_id`, resolving it now.
    pub(crate) fn peer_safe_ts(&mut self, region: &metapb::Region, store_id: u64) -> u64 {
        let min_ts = match self.txn.safe_ts.stalled.get(&store_id) {
            Some(&at) => at,
            None => self.tso.last_ts(),
        };
        // Only prewritten locks hold the resolver back; pessimistic locks are not tracked
        // (they cannot be committed without a prewrite first).
        let bounds = raw_bounds(region);
        let oldest = self
            .txn
            .store
            .locks_in(KeyRange {
                lower: bounds.0.as_deref(),
                upper: bounds.1.as_deref(),
            })
            .filter(|(key, lock)| {
                !lock.is_pessimistic_lock() && super::handlers::in_region(key, region)
            })
            .map(|(_, lock)| lock.ts)
            .min();
        let resolved = oldest.map_or(min_ts, |ts| ts.min(min_ts));
        let published = self
            .txn
            .safe_ts
            .published
            .entry((region.id, store_id))
            .or_insert(0);
        *published = (*published).max(resolved);
        *published
    }

    /// The minimum safe ts over the peers on `store_id` of regions overlapping
    /// `[start, end)` (region key space; empty `end` is unbounded), 0 when there are none.
    pub(crate) fn store_safe_ts(&mut self, store_id: u64, start: &[u8], end: &[u8]) -> u64 {
        let regions: Vec<metapb::Region> = self
            .topology
            .regions()
            .filter(|r| r.peer_on(store_id).is_some())
            .filter(|r| end.is_empty() || r.meta.start_key[..] < *end)
            .filter(|r| r.meta.end_key.is_empty() || r.meta.end_key[..] > *start)
            .map(|r| r.meta.clone())
            .collect();
        regions
            .iter()
            .map(|r| self.peer_safe_ts(r, store_id))
            .filter(|&ts| ts != 0)
            .min()
            .unwrap_or(0)
    }

    /// The minimum safe ts of the regions `store_id` leads (what a store reports to PD as
    /// its min resolved ts), `None` when it leads none.
    pub(crate) fn leader_safe_ts(&mut self, store_id: u64) -> Option<u64> {
        let led: Vec<metapb::Region> = self
            .topology
            .regions()
            .filter(|r| r.leader().is_some_and(|p| p.store_id == store_id))
            .map(|r| r.meta.clone())
            .collect();
        led.iter().map(|r| self.peer_safe_ts(r, store_id)).min()
    }

    /// `check_stale_read_safe` for a read the region checks already admitted: a stale read
    /// above the peer's safe ts fails with `DataIsNotReady`, except on the leader, which
    /// serves it as an ordinary read.
    pub(crate) fn check_stale_read(
        &mut self,
        store_id: u64,
        ctx: &Context,
        region: &metapb::Region,
        read_ts: u64,
    ) -> Result<(), RegionErr> {
        if !ctx.stale_read {
            return Ok(());
        }
        let Some(info) = self.topology.region(region.id) else {
            return Ok(());
        };
        let Some(peer_id) = info.peer_on(store_id).map(|p| p.id) else {
            return Ok(());
        };
        if info.leader_peer_id == peer_id {
            return Ok(());
        }
        let safe_ts = self.peer_safe_ts(region, store_id);
        if read_ts <= safe_ts {
            return Ok(());
        }
        Err(Box::new(region_error::data_is_not_ready(
            region.id, peer_id, safe_ts,
        )))
    }

    pub(crate) fn get_store_safe_ts(
        &mut self,
        store_id: u64,
        req: kvrpcpb::StoreSafeTsRequest,
        _now_ms: u64,
    ) -> kvrpcpb::StoreSafeTsResponse {
        let range = req.key_range.unwrap_or_default();
        kvrpcpb::StoreSafeTsResponse {
            safe_ts: self.store_safe_ts(store_id, &range.start_key, &range.end_key),
        }
    }
}

/// The request carries no context: TiKV answers without cluster-id or region checks.
impl crate::cluster::HasContext for kvrpcpb::StoreSafeTsRequest {
    fn context(&self) -> Option<&Context> {
        None
    }
}

/// The response has no `region_error` field; an injected region error can only come back
/// as the answer of a store that knows no initialized region, safe ts 0.
impl crate::cluster::RegionErrorResponse for kvrpcpb::StoreSafeTsResponse {
    fn from_region_error(_err: tikv_proto::errorpb::Error) -> Self {
        kvrpcpb::StoreSafeTsResponse { safe_ts: 0 }
    }
}
