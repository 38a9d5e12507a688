//! Tests of the GC-state API against PD's rules.

use tikv_proto::pdpb::{self, keyspace_scope, pd_service as p};

use super::{NULL_KEYSPACE_ID, go_quote, go_utc_time};
use crate::error::Code;
use crate::test_util::{Harness, NOW};

fn header(h: &Harness) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: h.c.cluster_id(),
        ..Default::default()
    })
}

fn scope(id: u32) -> Option<pdpb::KeyspaceScope> {
    Some(pdpb::KeyspaceScope {
        keyspace: Some(keyspace_scope::Keyspace::KeyspaceId(id)),
    })
}

fn error_of(h: Option<pdpb::ResponseHeader>) -> Option<String> {
    h.and_then(|h| h.error).map(|e| {
        assert_eq!(e.r#type, pdpb::ErrorType::Unknown as i32);
        e.message
    })
}

fn advance_txn(
    h: &mut Harness,
    ks: Option<pdpb::KeyspaceScope>,
    target: u64,
    now: u64,
) -> pdpb::AdvanceTxnSafePointResponse {
    let req = pdpb::AdvanceTxnSafePointRequest {
        header: header(h),
        keyspace_scope: ks,
        target,
    };
    h.c.pd::<p::AdvanceTxnSafePoint>(req, now).unwrap()
}

fn advance_gc(
    h: &mut Harness,
    ks: Option<pdpb::KeyspaceScope>,
    target: u64,
) -> pdpb::AdvanceGcSafePointResponse {
    let req = pdpb::AdvanceGcSafePointRequest {
        header: header(h),
        keyspace_scope: ks,
        target,
    };
    h.c.pd::<p::AdvanceGcSafePoint>(req, NOW).unwrap()
}

fn set_barrier(
    h: &mut Harness,
    ks: Option<pdpb::KeyspaceScope>,
    id: &str,
    ts: u64,
    ttl: i64,
    now: u64,
) -> pdpb::SetGcBarrierResponse {
    let req = pdpb::SetGcBarrierRequest {
        header: header(h),
        keyspace_scope: ks,
        barrier_id: id.into(),
        barrier_ts: ts,
        ttl_seconds: ttl,
    };
    h.c.pd::<p::SetGcBarrier>(req, now).unwrap()
}

fn set_global(h: &mut Harness, id: &str, ts: u64, ttl: i64) -> pdpb::SetGlobalGcBarrierResponse {
    let req = pdpb::SetGlobalGcBarrierRequest {
        header: header(h),
        barrier_id: id.into(),
        barrier_ts: ts,
        ttl_seconds: ttl,
    };
    h.c.pd::<p::SetGlobalGcBarrier>(req, NOW).unwrap()
}

fn gc_state(
    h: &mut Harness,
    ks: Option<pdpb::KeyspaceScope>,
    now: u64,
) -> pdpb::GetGcStateResponse {
    let req = pdpb::GetGcStateRequest {
        header: header(h),
        keyspace_scope: ks,
        exclude_gc_barriers: false,
        include_global_gc_barriers: true,
    };
    h.c.pd::<p::GetGcState>(req, now).unwrap()
}

#[test]
fn fresh_cluster_reports_null_keyspace_zero_state() {
    let mut h = Harness::v1();
    let r = gc_state(&mut h, None, NOW);
    assert!(r.header.unwrap().error.is_none());
    let s = r.gc_state.unwrap();
    assert_eq!(s.keyspace_scope, scope(NULL_KEYSPACE_ID));
    assert!(!s.is_keyspace_level_gc);
    assert_eq!((s.txn_safe_point, s.gc_safe_point), (0, 0));
    assert!(s.gc_barriers.is_empty());
    assert_eq!(r.global_gc_barriers.unwrap().barriers, Vec::new());
    // Without the flag there is no global-barrier field at all.
    let req = pdpb::GetGcStateRequest {
        header: header(&h),
        ..Default::default()
    };
    let r = h.c.pd::<p::GetGcState>(req, NOW).unwrap();
    assert!(r.global_gc_barriers.is_none());
}

#[test]
fn txn_safe_point_never_decreases() {
    let mut h = Harness::v1();
    let r = advance_txn(&mut h, None, 100, NOW);
    assert_eq!((r.old_txn_safe_point, r.new_txn_safe_point), (0, 100));
    assert_eq!(r.blocker_description, "");
    let r = advance_txn(&mut h, None, 50, NOW);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:gc:ErrDecreasingTxnSafePoint]trying to update txn safe point to a smaller value, current value: 100, given: 50"
    );
    assert_eq!(h.c.gc_safe_points(None), Some((100, 0)));
}

#[test]
fn barrier_blocks_txn_safe_point_until_it_expires_or_is_deleted() {
    let mut h = Harness::v1();
    advance_txn(&mut h, None, 50, NOW);
    let r = set_barrier(&mut h, None, "br", 80, 60, NOW);
    assert!(r.header.unwrap().error.is_none());
    let info = r.new_barrier_info.unwrap();
    assert_eq!(
        (info.barrier_id.as_str(), info.barrier_ts, info.ttl_seconds),
        ("br", 80, 60)
    );
    let r = advance_txn(&mut h, None, 200, NOW);
    assert_eq!((r.old_txn_safe_point, r.new_txn_safe_point), (50, 80));
    // NOW is 2023-11-14 22:13:20 UTC; the barrier expires 60 s later.
    assert_eq!(
        r.blocker_description,
        "GCBarrier { BarrierID: \"br\", BarrierTS: 80, ExpirationTime: \"2023-11-14 22:14:20 +0000 UTC\" }"
    );
    // At the expiry instant it still holds; one millisecond later it is gone.
    let at_expiry = NOW + 60_000;
    assert_eq!(
        advance_txn(&mut h, None, 200, at_expiry).new_txn_safe_point,
        80
    );
    // An expired barrier is still listed (TTL 0) until an advance deletes it.
    let listed = gc_state(&mut h, None, at_expiry + 1)
        .gc_state
        .unwrap()
        .gc_barriers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].ttl_seconds, 0);
    assert_eq!(
        advance_txn(&mut h, None, 200, at_expiry + 1).new_txn_safe_point,
        200
    );
    assert!(
        gc_state(&mut h, None, at_expiry + 1)
            .gc_state
            .unwrap()
            .gc_barriers
            .is_empty()
    );

    set_barrier(&mut h, None, "again", 300, 10, NOW);
    let req = pdpb::DeleteGcBarrierRequest {
        header: header(&h),
        keyspace_scope: None,
        barrier_id: "again".into(),
    };
    let r = h.c.pd::<p::DeleteGcBarrier>(req.clone(), NOW).unwrap();
    assert_eq!(r.deleted_barrier_info.unwrap().barrier_ts, 300);
    let r = h.c.pd::<p::DeleteGcBarrier>(req, NOW).unwrap();
    assert!(r.header.unwrap().error.is_none() && r.deleted_barrier_info.is_none());
    assert_eq!(advance_txn(&mut h, None, 400, NOW).new_txn_safe_point, 400);
}

#[test]
fn expiry_is_rounded_up_to_a_whole_second_and_huge_ttls_never_expire() {
    let mut h = Harness::v1();
    let r = set_barrier(&mut h, None, "a", 1, 5, NOW + 300);
    // Expires at NOW + 6 s; 5.7 s remain, reported rounded down.
    assert_eq!(r.new_barrier_info.unwrap().ttl_seconds, 5);
    let listed = gc_state(&mut h, None, NOW + 1_000)
        .gc_state
        .unwrap()
        .gc_barriers;
    assert_eq!(listed[0].ttl_seconds, 5);
    let r = set_barrier(&mut h, None, "forever", 1, i64::MAX, NOW);
    assert_eq!(r.new_barrier_info.unwrap().ttl_seconds, i64::MAX);
    let r = set_barrier(&mut h, None, "long", 1, super::MAX_FINITE_TTL_SECONDS, NOW);
    assert_eq!(
        r.new_barrier_info.unwrap().ttl_seconds,
        super::MAX_FINITE_TTL_SECONDS
    );
}

#[test]
fn barrier_arguments_are_checked_as_pd_does() {
    let mut h = Harness::v1();
    advance_txn(&mut h, None, 100, NOW);
    let cases = [
        (
            "x",
            50,
            10,
            "[PD:gc:ErrGCBarrierTSBehindTxnSafePoint]trying to set a GC barrier on ts 50 which is already behind the txn safe point 100",
        ),
        (
            "gc_worker",
            150,
            10,
            "[PD:gc:ErrReservedGCBarrierID]trying to set a GC barrier with a barrier ID that is reserved: gc_worker",
        ),
        (
            "",
            150,
            10,
            "[PD:common:ErrInvalidArgument]invalid argument for barrierID: ",
        ),
        (
            "x",
            150,
            0,
            "[PD:common:ErrInvalidArgument]invalid argument for ttl: 0s",
        ),
        (
            "x",
            150,
            -3,
            "[PD:common:ErrInvalidArgument]invalid argument for ttl: 0s",
        ),
    ];
    for (id, ts, ttl, message) in cases {
        let r = set_barrier(&mut h, None, id, ts, ttl, NOW);
        assert_eq!(error_of(r.header).unwrap(), message, "{id} {ts} {ttl}");
        assert!(r.new_barrier_info.is_none());
    }
    let req = pdpb::DeleteGcBarrierRequest {
        header: header(&h),
        keyspace_scope: None,
        barrier_id: "gc_worker".into(),
    };
    let r = h.c.pd::<p::DeleteGcBarrier>(req, NOW).unwrap();
    assert!(
        error_of(r.header)
            .unwrap()
            .starts_with("[PD:gc:ErrReservedGCBarrierID]")
    );
}

#[test]
fn gc_safe_point_follows_txn_safe_point_and_never_decreases() {
    let mut h = Harness::v1();
    let r = advance_gc(&mut h, None, 10);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:gc:ErrGCSafePointExceedsTxnSafePoint]trying to update GC safe point to a too large value that exceeds the txn safe point, current value: 0, given: 10, current txn safe point: 0"
    );
    advance_txn(&mut h, None, 100, NOW);
    let r = advance_gc(&mut h, None, 60);
    assert_eq!((r.old_gc_safe_point, r.new_gc_safe_point), (0, 60));
    let r = advance_gc(&mut h, None, 40);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:gc:ErrDecreasingGCSafePoint]trying to update GC safe point to a smaller value, current value: 60, given: 40"
    );
    assert_eq!(h.c.gc_safe_points(None), Some((100, 60)));
}

#[test]
fn global_barriers_block_every_keyspace_and_respect_the_largest_txn_safe_point() {
    let mut h = Harness::v1();
    h.c.register_keyspace_gc(5, "ks5", true);
    advance_txn(&mut h, scope(5), 70, NOW);
    advance_txn(&mut h, None, 40, NOW);
    let r = set_global(&mut h, "br", 60, 100);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:gc:ErrGlobalGCBarrierTSBehindTxnSafePoint]trying to set a global GC barrier on ts 60 which is already behind the txn safe point 70 of keyspace { name: \"ks5\", id: 5 }"
    );
    let r = set_global(&mut h, "br", 90, 100);
    assert_eq!(r.new_barrier_info.unwrap().ttl_seconds, 100);
    let local = set_barrier(&mut h, None, "local", 95, 100, NOW);
    assert!(local.header.unwrap().error.is_none());
    let r = advance_txn(&mut h, None, 500, NOW);
    assert_eq!(r.new_txn_safe_point, 90);
    assert!(
        r.blocker_description
            .starts_with("GlobalGCBarrier { BarrierID: \"br\", BarrierTS: 90")
    );
    assert_eq!(
        advance_txn(&mut h, scope(5), 500, NOW).new_txn_safe_point,
        90
    );
    let state = gc_state(&mut h, None, NOW);
    assert_eq!(state.global_gc_barriers.unwrap().barriers.len(), 1);
    let req = pdpb::DeleteGlobalGcBarrierRequest {
        header: header(&h),
        barrier_id: "br".into(),
    };
    let r = h.c.pd::<p::DeleteGlobalGcBarrier>(req, NOW).unwrap();
    assert_eq!(r.deleted_barrier_info.unwrap().barrier_ts, 90);
    let r = advance_txn(&mut h, None, 500, NOW);
    assert_eq!(r.new_txn_safe_point, 95);
    assert!(
        r.blocker_description
            .starts_with("GCBarrier { BarrierID: \"local\"")
    );
    let r = set_global(&mut h, "", 900, 1);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:common:ErrInvalidArgument]invalid argument for barrierID: "
    );
}

#[test]
fn keyspaces_resolve_as_pd_does() {
    let mut h = Harness::v1();
    h.c.register_keyspace_gc(5, "ks5", true);
    h.c.register_keyspace_gc(6, "ks6", false);
    advance_txn(&mut h, None, 30, NOW);
    let r = advance_txn(&mut h, scope(5), 20, NOW);
    assert_eq!(r.new_txn_safe_point, 20);
    let s = gc_state(&mut h, scope(5), NOW).gc_state.unwrap();
    assert!(s.is_keyspace_level_gc);
    assert_eq!((s.keyspace_scope, s.txn_safe_point), (scope(5), 20));
    // Unified GC: user calls see the null keyspace's state, GC-driving calls are refused.
    for unified in [0, 6] {
        let s = gc_state(&mut h, scope(unified), NOW).gc_state.unwrap();
        assert_eq!(
            (s.keyspace_scope, s.txn_safe_point),
            (scope(NULL_KEYSPACE_ID), 30)
        );
    }
    let r = advance_txn(&mut h, scope(6), 40, NOW);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:gc:ErrGCOnInvalidKeyspace]trying to manage GC in keyspace ks6 (id: 6) where keyspace level GC is not enabled"
    );
    set_barrier(&mut h, scope(6), "via6", 35, 10, NOW);
    assert_eq!(advance_txn(&mut h, None, 40, NOW).new_txn_safe_point, 35);
    let r = gc_state(&mut h, scope(77), NOW);
    assert_eq!(
        error_of(r.header).unwrap(),
        "[PD:keyspace:ErrKeyspaceNotFound]keyspace does not exist"
    );
    assert!(r.gc_state.is_none());
    // Ids beyond 24 bits mean the null keyspace; a scope by identity reads as keyspace 0.
    let s = gc_state(&mut h, scope(0x0100_0000), NOW).gc_state.unwrap();
    assert_eq!(s.keyspace_scope, scope(NULL_KEYSPACE_ID));
    let by_identity = Some(pdpb::KeyspaceScope {
        keyspace: Some(keyspace_scope::Keyspace::KeyspaceIdentity(
            Default::default(),
        )),
    });
    let r = advance_txn(&mut h, by_identity, 50, NOW);
    assert!(
        error_of(r.header)
            .unwrap()
            .contains("keyspace DEFAULT (id: 0)")
    );
}

#[test]
fn all_keyspaces_gc_states_list_unified_keyspaces_with_zero_state() {
    let mut h = Harness::v1();
    h.c.register_keyspace_gc(5, "ks5", true);
    advance_txn(&mut h, None, 30, NOW);
    advance_txn(&mut h, scope(5), 20, NOW);
    set_barrier(&mut h, scope(5), "b5", 25, 10, NOW);
    set_global(&mut h, "g", 40, 10);
    let req = pdpb::GetAllKeyspacesGcStatesRequest {
        header: header(&h),
        exclude_gc_barriers: false,
        exclude_global_gc_barriers: false,
    };
    let r =
        h.c.pd::<p::GetAllKeyspacesGcStates>(req.clone(), NOW)
            .unwrap();
    let summary: Vec<(Option<pdpb::KeyspaceScope>, bool, u64, usize)> = r
        .gc_states
        .iter()
        .map(|s| {
            (
                s.keyspace_scope,
                s.is_keyspace_level_gc,
                s.txn_safe_point,
                s.gc_barriers.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (scope(0), false, 0, 0),
            (scope(5), true, 20, 1),
            (scope(NULL_KEYSPACE_ID), false, 30, 0),
        ]
    );
    assert_eq!(r.global_gc_barriers.len(), 1);
    let r =
        h.c.pd::<p::GetAllKeyspacesGcStates>(
            pdpb::GetAllKeyspacesGcStatesRequest {
                exclude_gc_barriers: true,
                exclude_global_gc_barriers: true,
                ..req
            },
            NOW,
        )
        .unwrap();
    assert!(r.gc_states.iter().all(|s| s.gc_barriers.is_empty()));
    assert!(r.global_gc_barriers.is_empty());
}

#[test]
fn legacy_update_gc_safe_point_ignores_smaller_values_but_not_larger_than_txn() {
    let mut h = Harness::v1();
    advance_txn(&mut h, None, 100, NOW);
    let update = |h: &mut Harness, safe_point: u64| {
        let req = pdpb::UpdateGcSafePointRequest {
            header: header(h),
            safe_point,
        };
        h.c.pd::<p::UpdateGcSafePoint>(req, NOW)
    };
    assert_eq!(update(&mut h, 60).unwrap().new_safe_point, 60);
    assert_eq!(update(&mut h, 0).unwrap().new_safe_point, 60);
    let e = update(&mut h, 150).unwrap_err();
    assert_eq!(e.code, Code::Unknown);
    assert!(
        e.message
            .starts_with("[PD:gc:ErrGCSafePointExceedsTxnSafePoint]")
    );
    let req = pdpb::GetGcSafePointRequest { header: header(&h) };
    assert_eq!(
        h.c.pd::<p::GetGcSafePoint>(req, NOW).unwrap().safe_point,
        60
    );
}

#[test]
fn legacy_service_safe_points_map_to_barriers_and_the_txn_safe_point() {
    let mut h = Harness::v1();
    let update = |h: &mut Harness, service: &str, ttl: i64, safe_point: u64| {
        let req = pdpb::UpdateServiceGcSafePointRequest {
            header: header(h),
            service_id: service.as_bytes().to_vec().into(),
            ttl,
            safe_point,
        };
        h.c.pd::<p::UpdateServiceGcSafePoint>(req, NOW)
    };
    let r = update(&mut h, "cdc", 600, 50).unwrap();
    assert_eq!(
        (r.service_id.as_ref(), r.min_safe_point),
        (&b"gc_worker"[..], 0)
    );
    assert_eq!(r.ttl, i64::MAX - (NOW / 1000) as i64);
    let r = update(&mut h, "gc_worker", i64::MAX, 80).unwrap();
    assert_eq!((r.service_id.as_ref(), r.min_safe_point), (&b"cdc"[..], 50));
    assert_eq!(h.c.gc_safe_points(None), Some((50, 0)));
    // A service safe point behind the txn safe point is silently not set.
    let r = update(&mut h, "late", 600, 10).unwrap();
    assert_eq!(r.min_safe_point, 50);
    // ttl <= 0 deletes.
    update(&mut h, "cdc", 0, 0).unwrap();
    let r = update(&mut h, "gc_worker", i64::MAX, 80).unwrap();
    assert_eq!(
        (r.service_id.as_ref(), r.min_safe_point),
        (&b"gc_worker"[..], 80)
    );
    let e = update(&mut h, "gc_worker", 10, 90).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            Code::Unknown,
            "TTL of gc_worker's service safe point must be infinity"
        )
    );
    // native_br is a global barrier.
    update(&mut h, "native_br", 600, 85).unwrap();
    let state = gc_state(&mut h, None, NOW);
    assert_eq!(
        state.global_gc_barriers.unwrap().barriers[0].barrier_id,
        "native_br"
    );
    let r = update(&mut h, "gc_worker", i64::MAX, 100).unwrap();
    assert_eq!(
        (r.service_id.as_ref(), r.min_safe_point),
        (&b"native_br"[..], 85)
    );
    let e = update(&mut h, "", 10, 90).unwrap_err();
    assert_eq!(e.code, Code::Unknown);
}

#[test]
fn get_min_ts_is_a_fresh_timestamp() {
    let mut h = Harness::v1();
    let min_ts = |h: &mut Harness| {
        let req = pdpb::GetMinTsRequest { header: header(h) };
        let ts = h.c.pd::<p::GetMinTs>(req, NOW).unwrap().timestamp.unwrap();
        crate::tso::compose(ts.physical, ts.logical)
    };
    let a = min_ts(&mut h);
    let b = min_ts(&mut h);
    assert!(b > a);
    assert_eq!(a >> 18, NOW);
}

#[test]
fn go_formatting_helpers() {
    assert_eq!(go_utc_time(0), "1970-01-01 00:00:00 +0000 UTC");
    assert_eq!(go_utc_time(951_825_600), "2000-02-29 12:00:00 +0000 UTC");
    assert_eq!(go_utc_time(1_700_000_000), "2023-11-14 22:13:20 +0000 UTC");
    assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(go_quote("é\u{1}"), "\"\\u00e9\\x01\"");
}
