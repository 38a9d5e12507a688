//! Garbage collection against the mock's PD GC-state API and MVCC engine: a full round leaves
//! no lock below the safe point whatever the lock's owner was doing, barriers hold the safe
//! point back, reads below the txn safe point fail with a typed error, and PD's refusals are
//! typed.

use std::time::Duration;

use tikv_integration_tests::crashed::{Crashed, describe_locks, scan_locks};
use tikv_integration_tests::mock_txn_cluster;
use tikv_mock::server::MockServer;
use tikv_tokio::{
    Config, Error, KeyRange, LockOptions, PdErrorKind, Timestamp, TransactionClient,
    TransactionOptions,
};

/// Eight regions.
const SPLITS: [&str; 7] = ["b", "d", "f", "h", "j", "l", "n"];

async fn client(mock: &MockServer) -> TransactionClient {
    TransactionClient::connect(&[mock.pd_address()], Config::default().with_rng_seed(11))
        .await
        .unwrap()
}

async fn now(c: &TransactionClient) -> Timestamp {
    c.current_timestamp().await.unwrap()
}

/// Locks (of any owner) started at or below `ts` left in the mock.
fn locks_below(mock: &MockServer, ts: Timestamp) -> usize {
    scan_locks(&mut mock.cluster().lock())
        .iter()
        .filter(|l| l.lock_version <= ts.as_u64())
        .count()
}

#[tokio::test]
async fn a_gc_round_settles_every_lock_below_the_safe_point() {
    let mock = mock_txn_cluster(3, &SPLITS).await;
    let c = client(&mock).await;

    // Owners of every kind, their locks spread over the eight regions:
    // a live 2PC transaction (long TTL), one whose primary committed, one that prewrote
    // only part of its keys, and an async-commit one whose client died after prewriting.
    let live = now(&c).await.as_u64();
    Crashed::new(&["a", "c", "e"])
        .ttl(3_600_000)
        .leave(&mock, live);
    let committed = now(&c).await.as_u64();
    Crashed::new(&["g", "i", "k"])
        .committed_primary()
        .leave(&mock, committed);
    let partial = now(&c).await.as_u64();
    Crashed::new(&["m", "o", "a2"])
        .prewritten(2)
        .ttl(3_600_000)
        .leave(&mock, partial);
    let async_commit = now(&c).await.as_u64();
    Crashed::new(&["c2", "h2", "z"])
        .async_commit()
        .ttl(3_600_000)
        .leave(&mock, async_commit);
    // A pessimistic transaction still running (its heartbeat keeps the lock alive).
    let mut pessimistic = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    pessimistic
        .lock_keys(["p"], LockOptions::default())
        .await
        .unwrap();

    let safe_point = now(&c).await;
    // A lock above the safe point is not GC's business.
    let later = now(&c).await.as_u64();
    Crashed::new(&["q"]).ttl(3_600_000).leave(&mock, later);

    let report = c.gc(safe_point).await.unwrap();
    assert_eq!(report.txn_safe_point.new, safe_point);
    assert!(!report.txn_safe_point.is_blocked());
    assert_eq!(report.gc_safe_point.new, safe_point);
    assert!(report.locks_resolved >= 9, "{report:?}");
    assert_eq!(
        locks_below(&mock, safe_point),
        0,
        "locks left below the safe point: {}",
        describe_locks(&mut mock.cluster().lock())
    );
    assert_eq!(
        locks_below(&mock, Timestamp::MAX),
        1,
        "the later lock stays"
    );

    // Outcomes: the committed owner's secondaries are committed, the async-commit one's
    // keys too (all of them were prewritten), the live and partial ones rolled back.
    let r = c.begin().await.unwrap();
    for key in ["g", "i", "k", "c2", "h2", "z"] {
        let value = r.get(key).await.unwrap();
        assert_eq!(
            value.as_deref(),
            Some(Crashed::value(key).as_bytes()),
            "{key}"
        );
    }
    for key in ["a", "c", "e", "m", "o", "a2"] {
        assert_eq!(r.get(key).await.unwrap(), None, "{key} was rolled back");
    }
    // The pessimistic transaction lost its lock: another writer no longer waits for it,
    // and once that one committed, the old transaction cannot amend its lock at prewrite.
    let mut writer = c.begin().await.unwrap();
    writer.put("p", "new").await.unwrap();
    writer.commit().await.unwrap();
    pessimistic.put("p", "late").await.unwrap();
    let late = pessimistic.commit().await;
    assert!(late.is_err(), "{late:?}");

    let state = c.gc_state().await.unwrap();
    assert_eq!(state.txn_safe_point, safe_point);
    assert_eq!(state.gc_safe_point, safe_point);
    // No timestamp handed out from now on is below the keyspace groups' minimum.
    let min = c.min_timestamp_of_all_keyspace_groups().await.unwrap();
    assert!(min > safe_point && min < now(&c).await);
}

#[tokio::test]
async fn reads_below_the_txn_safe_point_fail_with_a_typed_error() {
    let mock = mock_txn_cluster(1, &["m"]).await;
    let c = client(&mock).await;
    let mut t = c.begin().await.unwrap();
    t.put("a", "1").await.unwrap();
    t.commit().await.unwrap();

    // A long read started before the round.
    let old = c.begin().await.unwrap();
    assert_eq!(old.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
    let safe_point = now(&c).await;
    c.gc(safe_point).await.unwrap();

    match old.get("a").await {
        Err(Error::TxnAbortedByGc {
            start_ts,
            txn_safe_point,
        }) => {
            assert_eq!(start_ts, old.start_ts().as_u64());
            assert_eq!(txn_safe_point, safe_point.as_u64());
        }
        other => panic!("expected TxnAbortedByGc, got {other:?}"),
    }
    assert!(old.scan(KeyRange::all(), 10).await.is_err());

    // Another client learns the safe point when it connects; a snapshot at the safe point
    // itself is still fine.
    let other = client(&mock).await;
    let stale = other.snapshot(Timestamp::from_u64(safe_point.as_u64() - 1));
    assert!(matches!(
        stale.get("a").await,
        Err(Error::TxnAbortedByGc { .. })
    ));
    let at = other.snapshot(safe_point);
    assert_eq!(at.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
}

#[tokio::test]
async fn barriers_hold_the_txn_safe_point_back() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    let held = now(&c).await;
    let barrier = c
        .set_gc_barrier("br", held, Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!((barrier.id.as_str(), barrier.ts), ("br", held));
    let global = now(&c).await;
    c.set_global_gc_barrier("cdc", global, None).await.unwrap();

    let report = c.gc(now(&c).await).await.unwrap();
    assert!(report.txn_safe_point.is_blocked());
    assert_eq!(report.txn_safe_point.new, held, "stopped at the barrier");
    let blocker = report.txn_safe_point.blocker.clone().unwrap_or_default();
    assert!(blocker.contains("br"), "{blocker}");
    assert_eq!(
        report.gc_safe_point.new, held,
        "the GC safe point follows what was granted"
    );

    let state = c.gc_state().await.unwrap();
    assert_eq!(state.barriers.len(), 1);
    assert_eq!(state.global_barriers.len(), 1);
    assert_eq!(state.global_barriers[0].ttl, None, "never expires");

    // With the keyspace barrier gone, the global one holds.
    let deleted = c.delete_gc_barrier("br").await.unwrap();
    assert_eq!(deleted.map(|b| b.ts), Some(held));
    assert_eq!(c.delete_gc_barrier("br").await.unwrap(), None);
    let report = c.gc(now(&c).await).await.unwrap();
    assert_eq!(report.txn_safe_point.new, global);
    c.delete_global_gc_barrier("cdc").await.unwrap();
    let target = now(&c).await;
    let report = c.gc(target).await.unwrap();
    assert_eq!(report.txn_safe_point.new, target);
}

#[tokio::test]
async fn pd_refusals_are_typed_and_not_retryable() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    let first = now(&c).await;
    c.gc(now(&c).await).await.unwrap();
    // Backwards.
    let err = c.gc(first).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Pd {
                kind: PdErrorKind::Refused,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    // A barrier below the txn safe point.
    let err = c
        .set_gc_barrier("late", first, Some(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("behind the txn safe point"),
        "{err}"
    );
    // A zero TTL never reaches PD.
    assert!(matches!(
        c.set_gc_barrier("zero", now(&c).await, Some(Duration::ZERO))
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn resolve_locks_in_range_leaves_other_ranges_alone() {
    let mock = mock_txn_cluster(3, &SPLITS).await;
    let c = client(&mock).await;
    let left = now(&c).await.as_u64();
    Crashed::new(&["c"]).ttl(3_600_000).leave(&mock, left);
    let right = now(&c).await.as_u64();
    Crashed::new(&["k"]).ttl(3_600_000).leave(&mock, right);
    let ts = now(&c).await;
    let stats = c
        .resolve_locks_in_range(KeyRange::new("a", "f"), ts, 2)
        .await
        .unwrap();
    assert_eq!(stats.locks_found, 1);
    let locks = scan_locks(&mut mock.cluster().lock());
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].lock_version, right);
}

/// A keyspace's transactional key `k` as stored (API V2: `x` + 3-byte id + key).
fn stored(keyspace: u32, k: &str) -> String {
    let id = keyspace.to_be_bytes();
    format!(
        "x{}{}{}{k}",
        char::from(id[1]),
        char::from(id[2]),
        char::from(id[3])
    )
}

#[tokio::test]
async fn keyspace_level_gc_stays_inside_its_keyspace() {
    use tikv_tokio::ApiVersion;
    let mock = tikv_integration_tests::mock_cluster(3, &[]).await;
    let a = mock.cluster().create_keyspace("tenant-a");
    let b = mock.cluster().create_keyspace("tenant-b");
    // Created with PD's default: unified GC.
    mock.cluster().create_keyspace("tenant-shared");
    {
        let mut c = mock.cluster().lock();
        c.register_keyspace_gc(a, "tenant-a", true);
        c.register_keyspace_gc(b, "tenant-b", true);
    }
    let v2 = |name: &str| {
        let mut config = Config::default()
            .with_api_version(ApiVersion::V2)
            .with_rng_seed(3);
        config.keyspace = Some(name.to_string());
        config
    };
    let pd = [mock.pd_address()];
    let ca = TransactionClient::connect(&pd, v2("tenant-a"))
        .await
        .unwrap();
    let cb = TransactionClient::connect(&pd, v2("tenant-b"))
        .await
        .unwrap();

    let in_a = now(&ca).await.as_u64();
    Crashed::new(&[&stored(a, "k1"), &stored(a, "k2")])
        .ttl(3_600_000)
        .leave(&mock, in_a);
    let in_b = now(&ca).await.as_u64();
    Crashed::new(&[&stored(b, "k1")])
        .ttl(3_600_000)
        .leave(&mock, in_b);

    let safe_point = now(&ca).await;
    let report = ca.gc(safe_point).await.unwrap();
    assert_eq!(report.locks_resolved, 2, "{report:?}");
    let owners: Vec<u64> = scan_locks(&mut mock.cluster().lock())
        .iter()
        .map(|l| l.lock_version)
        .collect();
    assert_eq!(
        owners,
        [in_b],
        "tenant-b's lock is tenant-b's GC's business"
    );

    let state_a = ca.gc_state().await.unwrap();
    assert_eq!(
        (state_a.keyspace_id, state_a.keyspace_level),
        (Some(a), true)
    );
    assert_eq!(state_a.txn_safe_point, safe_point);
    assert!(cb.gc_state().await.unwrap().txn_safe_point < safe_point);
    // tenant-a's reads below its safe point fail; tenant-b's do not.
    let old_b = cb.snapshot(Timestamp::from_u64(in_a));
    assert_eq!(old_b.get("k0").await.unwrap(), None);
    let old_a = ca.snapshot(Timestamp::from_u64(in_a));
    assert!(matches!(
        old_a.get("k0").await,
        Err(Error::TxnAbortedByGc { .. })
    ));

    // A keyspace under unified GC is collected with the cluster, not on its own.
    let cs = TransactionClient::connect(&pd, v2("tenant-shared"))
        .await
        .unwrap();
    let err = cs.gc(now(&cs).await).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Pd {
                kind: PdErrorKind::Refused,
                ..
            }
        ),
        "{err}"
    );
}
