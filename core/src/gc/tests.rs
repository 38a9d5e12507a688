//! GC state conversions, the steps of a round, and the visibility rule.

use std::time::Duration;

use tikv_proto::pdpb;

use super::*;

fn ts(n: u64) -> Timestamp {
    Timestamp::from_u64(n)
}

fn at(secs: u64) -> Instant {
    Instant::from_origin(Duration::from_secs(secs))
}

#[test]
fn ttls_round_up_to_seconds_and_none_never_expires() {
    assert_eq!(ttl_to_seconds(None).unwrap(), i64::MAX);
    assert_eq!(
        ttl_to_seconds(Some(Duration::from_millis(1500))).unwrap(),
        2
    );
    assert_eq!(ttl_to_seconds(Some(Duration::from_secs(60))).unwrap(), 60);
    assert_eq!(
        ttl_to_seconds(Some(Duration::from_secs(u64::MAX))).unwrap(),
        i64::MAX,
        "a TTL beyond Go's durations is PD's 'never'"
    );
    assert!(matches!(
        ttl_to_seconds(Some(Duration::ZERO)),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(ttl_from_seconds(i64::MAX), None);
    assert_eq!(ttl_from_seconds(30), Some(Duration::from_secs(30)));
    assert_eq!(ttl_from_seconds(-5), Some(Duration::ZERO));
}

#[test]
fn the_null_keyspace_is_none_both_ways() {
    let scope = keyspace_scope(None);
    assert_eq!(
        scope.keyspace,
        Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(NULL_KEYSPACE_ID))
    );
    let state = pdpb::GcState {
        keyspace_scope: Some(scope),
        txn_safe_point: 7,
        gc_safe_point: 5,
        gc_barriers: vec![pdpb::GcBarrierInfo {
            barrier_id: "br".into(),
            barrier_ts: 9,
            ttl_seconds: i64::MAX,
        }],
        ..Default::default()
    };
    let global = [pdpb::GlobalGcBarrierInfo {
        barrier_id: "cdc".into(),
        barrier_ts: 8,
        ttl_seconds: 10,
    }];
    let s = GcState::from_pd(&state, &global);
    assert_eq!(s.keyspace_id, None);
    assert_eq!((s.txn_safe_point, s.gc_safe_point), (ts(7), ts(5)));
    assert_eq!(s.barriers[0].ttl, None);
    assert_eq!(s.global_barriers[0].ttl, Some(Duration::from_secs(10)));
    let s = GcState::from_pd(
        &pdpb::GcState {
            keyspace_scope: Some(keyspace_scope(Some(3))),
            ..Default::default()
        },
        &[],
    );
    assert_eq!(s.keyspace_id, Some(3));
}

#[test]
fn a_round_resolves_and_advances_to_what_pd_granted() {
    let mut round = GcRound::new(ts(100));
    assert_eq!(round.start(), GcStep::AdvanceTxnSafePoint(ts(100)));
    // A barrier at 80 holds the txn safe point back: the round goes on at 80.
    let advance = TxnSafePointAdvance::from_pd(
        ts(100),
        &pdpb::AdvanceTxnSafePointResponse {
            old_txn_safe_point: 50,
            new_txn_safe_point: 80,
            blocker_description: "GCBarrier { BarrierID: \"br\" }".into(),
            ..Default::default()
        },
    );
    assert!(advance.is_blocked());
    assert!(advance.blocker.as_deref().unwrap_or("").contains("br"));
    assert_eq!(
        round.on_txn_safe_point(advance),
        GcStep::ResolveLocks(ts(80))
    );
    assert_eq!(
        round.on_locks_resolved(3),
        GcStep::AdvanceGcSafePoint(ts(80))
    );
    let gc = GcSafePointAdvance::from_pd(
        ts(80),
        &pdpb::AdvanceGcSafePointResponse {
            old_gc_safe_point: 40,
            new_gc_safe_point: 80,
            ..Default::default()
        },
    );
    let GcStep::Done(report) = round.on_gc_safe_point(gc) else {
        panic!("the round ends after the GC safe point");
    };
    assert_eq!(report.locks_resolved, 3);
    assert_eq!(report.txn_safe_point.new, ts(80));
    assert_eq!(report.gc_safe_point.new, ts(80));
}

#[test]
fn an_unblocked_advance_has_no_blocker() {
    let advance = TxnSafePointAdvance::from_pd(
        ts(100),
        &pdpb::AdvanceTxnSafePointResponse {
            old_txn_safe_point: 50,
            new_txn_safe_point: 100,
            ..Default::default()
        },
    );
    assert!(!advance.is_blocked());
    assert_eq!(advance.blocker, None);
}

#[test]
fn reads_below_the_txn_safe_point_are_refused() {
    let mut cache = TxnSafePointCache::default();
    assert_eq!(cache.check(ts(10), at(0)), Visibility::MustRefresh);
    cache.loaded(ts(100), at(0));
    assert_eq!(
        cache.check(ts(100), at(1)),
        Visibility::Visible,
        "at it is fine"
    );
    assert_eq!(
        cache.check(ts(99), at(1)),
        Visibility::Aborted(Error::TxnAbortedByGc {
            start_ts: 99,
            txn_safe_point: 100
        })
    );
    assert_eq!(cache.check(ts(200), at(10)), Visibility::VisibleRefresh);
    assert!(matches!(
        cache.check(ts(99), at(10)),
        Visibility::Aborted(_)
    ));
    assert_eq!(
        cache.check(ts(200), at(91)),
        Visibility::MustRefresh,
        "too old to trust"
    );
}

#[test]
fn a_late_older_load_does_not_lower_the_safe_point() {
    let mut cache = TxnSafePointCache::default();
    cache.loaded(ts(100), at(20));
    cache.loaded(ts(50), at(5));
    assert_eq!(cache.value(), ts(100));
    assert_eq!(cache.check(ts(150), at(21)), Visibility::Visible);
}
