//! The checks TiKV's raftstore applies to every region-scoped request, in TiKV's order.
//!
//! 1. the request's `peer.store_id` is this store, else `StoreNotMatch`;
//! 2. the store has a peer of `region_id`, else `RegionNotFound`;
//! 3. `peer.id` is that peer, else `MismatchPeerId`;
//! 4. the peer is the leader, else `NotLeader` with the leader hint (reads with
//!    `replica_read` or `stale_read` may be served by any peer);
//! 5. `region_epoch` is present and its **version** equals the region's (normal requests
//!    do not compare `conf_ver`), else `EpochNotMatch` with the region and, when the sender
//!    is behind, the neighbours split off since (TiKV's `collect_sibling_region`).
//!
//! Key-range checks happen later in TiKV and differ by operation, so they are separate
//! functions here: point reads fail in the engine (an `error` string, not a region error),
//! scans fail when seeking outside the region (inclusive end), writes fail at apply
//! (exclusive end).

use tikv_proto::kvrpcpb::Context;
use tikv_proto::{errorpb, metapb};

use crate::codec::hex_upper;
use crate::region_error;
use crate::topology::{RegionInfo, Topology};

/// Whether a request only reads (may be served by followers when asked to) or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    /// A snapshot read at this ts: in a region in the flashback state, reads below the
    /// flashback's start ts are still served.
    ReadAt(u64),
    Write,
    /// A flashback's own request (TiKV flags it internally): the only writes a region in
    /// the flashback state takes.
    Flashback,
}

/// A region error; boxed because `errorpb::Error` is large.
pub(crate) type RegionErr = Box<errorpb::Error>;

/// TiKV attaches at most this many regions to `EpochNotMatch`.
const MAX_REGIONS_IN_ERROR: usize = 10;

impl Topology {
    /// Runs the raftstore checks; on success returns the region the request addresses.
    pub(crate) fn check_request(
        &self,
        store_id: u64,
        ctx: &Context,
        access: Access,
    ) -> Result<metapb::Region, RegionErr> {
        let peer = ctx.peer.unwrap_or_default();
        if peer.store_id != store_id {
            return Err(Box::new(region_error::store_not_match(
                peer.store_id,
                store_id,
            )));
        }
        let region = self
            .region(ctx.region_id)
            .filter(|r| r.peer_on(store_id).is_some())
            .ok_or_else(|| Box::new(region_error::region_not_found(ctx.region_id)))?;
        // `filter` above guarantees the peer exists; fall back defensively anyway.
        let local_peer_id = region.peer_on(store_id).map_or(0, |p| p.id);
        if peer.id != local_peer_id {
            return Err(Box::new(region_error::mismatch_peer_id(
                peer.id,
                local_peer_id,
            )));
        }
        let reads = matches!(access, Access::Read | Access::ReadAt(_));
        let follower_ok = reads && (ctx.replica_read || ctx.stale_read);
        if region.leader_peer_id != local_peer_id && !follower_ok {
            return Err(Box::new(region_error::not_leader(
                region.id(),
                region.leader().copied(),
            )));
        }
        let Some(sent) = ctx.region_epoch else {
            return Err(Box::new(region_error::missing_epoch()));
        };
        let current = region.epoch();
        if sent.version != current.version {
            let mut regions = vec![region.meta.clone()];
            self.collect_siblings(store_id, region, sent.version, &mut regions);
            return Err(Box::new(region_error::epoch_not_match(
                &region.meta,
                &sent,
                regions,
            )));
        }
        // raftstore's `check_flashback_state`.
        if let Some(start_ts) = region.flashback_start_ts {
            let allowed = match access {
                Access::Flashback => true,
                Access::ReadAt(ts) => ts != 0 && ts < start_ts,
                Access::Read | Access::Write => false,
            };
            if !allowed {
                return Err(Box::new(region_error::flashback_in_progress(
                    region.id(),
                    start_ts,
                )));
            }
        }
        Ok(region.meta.clone())
    }

    /// TiKV's `collect_sibling_region` with right-derived splits: walk left from the region
    /// through regions on this store until the version gap is explained.
    fn collect_siblings(
        &self,
        store_id: u64,
        region: &RegionInfo,
        requested_version: u64,
        out: &mut Vec<metapb::Region>,
    ) {
        let mut max_version = region.epoch().version;
        if requested_version >= max_version {
            return;
        }
        let mut collect_cnt = max_version - requested_version;
        let left = self
            .regions()
            .rev()
            .filter(|r| r.meta.start_key < region.meta.start_key)
            .filter(|r| r.peer_on(store_id).is_some());
        for r in left.take(MAX_REGIONS_IN_ERROR) {
            collect_cnt -= 1;
            let v = r.epoch().version;
            if v >= max_version {
                collect_cnt += v - max_version;
                max_version = v;
            }
            out.push(r.meta.clone());
            if collect_cnt == 0 {
                return;
            }
        }
    }
}

/// Point reads: the engine refuses keys outside `[start, end)`; TiKV reports it as a storage
/// error (`error` string / `KeyError.abort`), not as a region error.
pub(crate) fn point_read_in_region(key: &[u8], region: &metapb::Region) -> Result<(), String> {
    if in_region_exclusive(key, region) {
        Ok(())
    } else {
        Err(format!(
            "Key {} is out of [region {}] [{}, {})",
            hex_upper(key),
            region.id,
            hex_upper(&region.start_key),
            hex_upper(&region.end_key)
        ))
    }
}

/// Scans seek inside `[start, end]` (end inclusive), else `KeyNotInRegion`.
pub(crate) fn seek_in_region(key: &[u8], region: &metapb::Region) -> Result<(), RegionErr> {
    let ok =
        key >= &region.start_key[..] && (region.end_key.is_empty() || key <= &region.end_key[..]);
    if ok {
        Ok(())
    } else {
        Err(Box::new(region_error::key_not_in_region(key, region)))
    }
}

/// Writes apply only to keys in `[start, end)`, else `KeyNotInRegion`.
pub(crate) fn write_in_region(key: &[u8], region: &metapb::Region) -> Result<(), RegionErr> {
    if in_region_exclusive(key, region) {
        Ok(())
    } else {
        Err(Box::new(region_error::key_not_in_region(key, region)))
    }
}

/// `DeleteRange` at apply: the start must be in the region and the end must not pass the
/// region's end (an empty end means "to the end of the key space").
pub(crate) fn delete_range_in_region(
    start: &[u8],
    end: &[u8],
    region: &metapb::Region,
) -> Result<(), RegionErr> {
    if !end.is_empty() && start >= end {
        return Err(Box::new(region_error::other(format!(
            "\"invalid delete range command, start_key: {start:?}, end_key: {end:?}\""
        ))));
    }
    write_in_region(start, region)?;
    let past_end = match (end.is_empty(), region.end_key.is_empty()) {
        (_, true) => false,
        (true, false) => true,
        (false, false) => end > &region.end_key[..],
    };
    if past_end {
        return Err(Box::new(region_error::key_not_in_region(end, region)));
    }
    Ok(())
}

fn in_region_exclusive(key: &[u8], region: &metapb::Region) -> bool {
    key >= &region.start_key[..] && (region.end_key.is_empty() || key < &region.end_key[..])
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn ctx_for(t: &Topology, region_id: u64, store_id: u64) -> Context {
        let r = t.region(region_id).unwrap();
        Context {
            region_id,
            region_epoch: r.meta.region_epoch,
            peer: r.peer_on(store_id).copied(),
            ..Default::default()
        }
    }

    fn setup() -> (Topology, u64) {
        let t = Topology::bootstrap(3, 3, "v");
        let id = t.regions().next().unwrap().id();
        (t, id)
    }

    #[test]
    fn leader_request_passes() {
        let (t, id) = setup();
        let ctx = ctx_for(&t, id, 1);
        assert_eq!(t.check_request(1, &ctx, Access::Write).unwrap().id, id);
    }

    #[test]
    fn wrong_store_gives_store_not_match() {
        let (t, id) = setup();
        let ctx = ctx_for(&t, id, 1);
        let e = t.check_request(2, &ctx, Access::Read).unwrap_err();
        let s = e.store_not_match.unwrap();
        assert_eq!((s.request_store_id, s.actual_store_id), (1, 2));
        assert_eq!(e.message, "to store id 1, mine 2");
    }

    #[test]
    fn missing_context_gives_store_not_match_for_store_zero() {
        let (t, _) = setup();
        let e = t
            .check_request(1, &Context::default(), Access::Read)
            .unwrap_err();
        assert_eq!(e.store_not_match.unwrap().request_store_id, 0);
    }

    #[test]
    fn unknown_region_or_no_peer_gives_region_not_found() {
        let (mut t, id) = setup();
        let mut ctx = ctx_for(&t, id, 1);
        ctx.region_id = 999;
        let e = t.check_request(1, &ctx, Access::Read).unwrap_err();
        assert_eq!(e.region_not_found.unwrap().region_id, 999);
        assert_eq!(e.message, "region 999 not found");
        let ctx3 = ctx_for(&t, id, 3);
        t.remove_peer(id, 3).unwrap();
        let e = t.check_request(3, &ctx3, Access::Read).unwrap_err();
        assert!(e.region_not_found.is_some());
    }

    #[test]
    fn wrong_peer_id_gives_mismatch_peer_id() {
        let (t, id) = setup();
        let mut ctx = ctx_for(&t, id, 1);
        let real = ctx.peer.unwrap().id;
        ctx.peer.as_mut().unwrap().id = 777;
        let e = t.check_request(1, &ctx, Access::Read).unwrap_err();
        let m = e.mismatch_peer_id.unwrap();
        assert_eq!((m.request_peer_id, m.store_peer_id), (777, real));
    }

    #[test]
    fn follower_gives_not_leader_with_hint_after_transfer() {
        let (mut t, id) = setup();
        let ctx = ctx_for(&t, id, 1);
        t.transfer_leader(id, 2).unwrap();
        let e = t.check_request(1, &ctx, Access::Write).unwrap_err();
        let nl = e.not_leader.unwrap();
        assert_eq!(nl.region_id, id);
        assert_eq!(nl.leader.unwrap().store_id, 2);
        // A replica read is served by the follower.
        let mut read = ctx;
        read.replica_read = true;
        assert!(t.check_request(1, &read, Access::Read).is_ok());
        assert!(t.check_request(1, &read, Access::Write).is_err());
    }

    #[test]
    fn stale_epoch_after_split_lists_region_and_left_siblings() {
        let (mut t, id) = setup();
        let old = ctx_for(&t, id, 1);
        let new = t.split(id, &[Bytes::from("b"), Bytes::from("d")]).unwrap();
        let e = t.check_request(1, &old, Access::Read).unwrap_err();
        let regions: Vec<u64> = e
            .epoch_not_match
            .unwrap()
            .current_regions
            .iter()
            .map(|r| r.id)
            .collect();
        // Version went 1 → 3: the region itself, then both left neighbours.
        assert_eq!(regions, vec![id, new[1], new[0]]);
    }

    #[test]
    fn conf_ver_change_alone_does_not_fail_the_epoch_check() {
        let (mut t, id) = setup();
        let ctx = ctx_for(&t, id, 1);
        t.add_peer(id, 3).unwrap_err();
        t.remove_peer(id, 3).unwrap();
        assert!(t.check_request(1, &ctx, Access::Write).is_ok());
    }

    #[test]
    fn newer_epoch_than_store_gives_only_the_region() {
        let (t, id) = setup();
        let mut ctx = ctx_for(&t, id, 1);
        ctx.region_epoch.as_mut().unwrap().version = 9;
        let e = t.check_request(1, &ctx, Access::Read).unwrap_err();
        assert_eq!(e.epoch_not_match.unwrap().current_regions.len(), 1);
    }

    #[test]
    fn missing_epoch_is_an_untyped_region_error() {
        let (t, id) = setup();
        let mut ctx = ctx_for(&t, id, 1);
        ctx.region_epoch = None;
        let e = t.check_request(1, &ctx, Access::Read).unwrap_err();
        assert!(e.message.contains("missing epoch"));
        assert!(e.epoch_not_match.is_none());
    }

    #[test]
    fn key_range_checks_differ_by_operation() {
        let r = metapb::Region {
            id: 1,
            start_key: "b".into(),
            end_key: "d".into(),
            ..Default::default()
        };
        assert!(point_read_in_region(b"d", &r).is_err());
        assert!(seek_in_region(b"d", &r).is_ok());
        assert!(seek_in_region(b"e", &r).is_err());
        assert!(write_in_region(b"d", &r).is_err());
        assert!(delete_range_in_region(b"b", b"d", &r).is_ok());
        assert!(
            delete_range_in_region(b"b", b"", &r)
                .unwrap_err()
                .key_not_in_region
                .is_some()
        );
        let e = delete_range_in_region(b"c", b"b", &r).unwrap_err();
        assert!(e.message.contains("invalid delete range command"));
    }
}
