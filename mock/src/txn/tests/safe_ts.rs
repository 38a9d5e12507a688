//! Stale reads against each peer's safe ts, and `GetStoreSafeTS`, as TiKV's
//! `check_stale_read_safe` and check-leader worker answer them.

use super::*;
use tikv_proto::errorpb;

/// A three-store cluster whose regions have a peer on every store.
fn three_stores() -> T {
    T {
        c: Cluster::new(ClusterConfig {
            api: ApiMode::V1,
            stores: 3,
            ..Default::default()
        }),
    }
}

impl T {
    /// A context addressing the peer of `key`'s region on a store other than the leader's.
    fn follower_ctx(&self, key: &str) -> (u64, Context) {
        let (leader_store, mut ctx) = self.ctx(key);
        let r = self.c.topology().region(ctx.region_id).unwrap();
        let follower = *r
            .meta
            .peers
            .iter()
            .find(|p| p.store_id != leader_store)
            .unwrap();
        ctx.peer = Some(follower);
        ctx.stale_read = true;
        (follower.store_id, ctx)
    }

    fn stale_get(&mut self, store: u64, ctx: &Context, key: &str, ts: u64) -> kvrpcpb::GetResponse {
        let req = kvrpcpb::GetRequest {
            context: Some(ctx.clone()),
            key: b(key),
            version: ts,
            ..Default::default()
        };
        self.c.tikv::<t::KvGet>(store, req, NOW).unwrap()
    }

    /// Prewrites `key` (its own primary) in a transaction that starts at `ms`; returns the
    /// start ts.
    fn prewrite_at(&mut self, key: &str, ms: u64) -> u64 {
        let start = self.tso_at(ms);
        let r = self.prewrite(pw(vec![put(key, "v")], key, start));
        assert!(r.errors.is_empty(), "{r:?}");
        start
    }

    /// Hands out one timestamp at `ms` and returns it.
    fn tso_at(&mut self, ms: u64) -> u64 {
        self.c.tso.allocate(ms, 1).unwrap();
        self.c.tso.last_ts()
    }

    fn store_safe_ts(&mut self, store: u64, start: &[u8], end: &[u8]) -> u64 {
        let req = kvrpcpb::StoreSafeTsRequest {
            key_range: Some(kvrpcpb::KeyRange {
                start_key: Bytes::copy_from_slice(start),
                end_key: Bytes::copy_from_slice(end),
            }),
        };
        self.c
            .tikv::<t::GetStoreSafeTs>(store, req, NOW)
            .unwrap()
            .safe_ts
    }
}

fn not_ready(r: &kvrpcpb::GetResponse) -> &errorpb::DataIsNotReady {
    r.region_error
        .as_ref()
        .and_then(|e| e.data_is_not_ready.as_ref())
        .unwrap_or_else(|| panic!("expected DataIsNotReady, got {r:?}"))
}

#[test]
fn follower_serves_stale_reads_up_to_the_last_tso_and_rejects_above() {
    let mut t = three_stores();
    t.write("k", "v", ts(1_000, 0), ts(1_000, 1));
    let now = t.tso_at(2_000);
    let (s, ctx) = t.follower_ctx("k");
    let ok = t.stale_get(s, &ctx, "k", now);
    assert_eq!((ok.region_error, ok.value), (None, b("v")));

    let r = t.stale_get(s, &ctx, "k", now + 1);
    let e = not_ready(&r);
    assert_eq!(
        (e.region_id, e.peer_id, e.safe_ts),
        (ctx.region_id, ctx.peer.unwrap().id, now)
    );
    assert_eq!(
        r.region_error.as_ref().unwrap().message,
        format!(
            "peer {} is not ready, safe_ts {now}, region {}",
            e.peer_id, e.region_id
        )
    );
}

#[test]
fn a_prewritten_lock_holds_the_safe_ts_at_its_start_ts_until_it_commits() {
    let mut t = three_stores();
    let start = t.prewrite_at("k", 1_000);
    let now = t.tso_at(2_000);
    let (s, ctx) = t.follower_ctx("k");
    assert_eq!(not_ready(&t.stale_get(s, &ctx, "k", now)).safe_ts, start);
    // Reading at the lock's own start ts is allowed, and meets the lock.
    let at_start = t.stale_get(s, &ctx, "k", start);
    assert!(at_start.region_error.is_none());
    assert_eq!(locked(at_start.error.as_ref().unwrap()).lock_version, start);

    let commit = t.tso_at(3_000);
    assert!(t.commit(&["k"], start, commit).error.is_none());
    let after = t.stale_get(s, &ctx, "k", commit);
    assert_eq!((after.region_error, after.value), (None, b("v")));
}

#[test]
fn pessimistic_locks_and_other_regions_locks_do_not_hold_it_back() {
    let mut t = three_stores();
    t.c.split_at(&encode_memcomparable(b"m")).unwrap();
    // A prewrite lock in the other region ("z") and a pessimistic lock in this one.
    let start = t.prewrite_at("z", 1_000);
    let (s, req) = t.lock_req(&["k"], "k", start + 1, start + 1);
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    let now = t.tso_at(2_000);
    let (s, ctx) = t.follower_ctx("k");
    let got = t.stale_get(s, &ctx, "k", now);
    assert!(got.region_error.is_none(), "{got:?}");
}

#[test]
fn the_leader_serves_a_stale_read_above_its_safe_ts_as_a_leader_read() {
    let mut t = three_stores();
    let now = t.tso_at(1_000);
    let got = t.get_with("k", now + 100, |c| c.stale_read = true);
    assert!(got.region_error.is_none(), "{got:?}");
    assert!(got.not_found);
}

#[test]
fn a_stalled_store_rejects_newer_stale_reads_until_resumed_and_never_goes_back() {
    let mut t = three_stores();
    let before = t.tso_at(1_000);
    let (s, ctx) = t.follower_ctx("k");
    t.c.stall_safe_ts(s);
    let now = t.tso_at(2_000);
    assert_eq!(not_ready(&t.stale_get(s, &ctx, "k", now)).safe_ts, before);
    t.c.resume_safe_ts(s);
    assert!(t.stale_get(s, &ctx, "k", now).region_error.is_none());
    // A late prewrite with an older start ts does not pull the published safe ts back.
    assert!(
        t.prewrite(pw(vec![put("k", "v")], "k", before))
            .errors
            .is_empty()
    );
    assert!(t.stale_get(s, &ctx, "k", now).region_error.is_none());
    assert_eq!(not_ready(&t.stale_get(s, &ctx, "k", now + 1)).safe_ts, now);
}

#[test]
fn get_store_safe_ts_is_the_minimum_over_the_overlapping_regions() {
    let mut t = three_stores();
    let split = encode_memcomparable(b"m");
    t.c.split_at(&split).unwrap();
    let start = t.prewrite_at("z", 1_000);
    let now = t.tso_at(2_000);
    assert_eq!(t.store_safe_ts(1, b"", b""), start);
    assert_eq!(t.store_safe_ts(2, &split, b""), start);
    assert_eq!(t.store_safe_ts(2, b"", &split), now);
    // The range is in region key space: the unencoded "z" sorts after the encoded "m".
    assert_eq!(t.store_safe_ts(3, b"", b"a"), now);
    // A store that does not exist has no regions.
    assert!(
        t.c.tikv::<t::GetStoreSafeTs>(9, Default::default(), NOW)
            .is_err()
    );
}

#[test]
fn pd_min_resolved_ts_is_held_by_the_oldest_prewrite_lock() {
    let mut t = three_stores();
    let start = t.prewrite_at("k", 1_000);
    t.tso_at(2_000);
    let body = t.c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts").body;
    assert!(
        body.contains(&format!("\"min_resolved_ts\": {start},")),
        "{body}"
    );
    let commit = t.tso_at(3_000);
    assert!(t.commit(&["k"], start, commit).error.is_none());
    let body = t.c.handle_pd_http("GET", "/pd/api/v1/min-resolved-ts").body;
    assert!(
        body.contains(&format!("\"min_resolved_ts\": {commit},")),
        "{body}"
    );
}
