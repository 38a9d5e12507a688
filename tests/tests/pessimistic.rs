//! Pessimistic transactions against the mock over loopback gRPC: locks that make other
//! writers wait, waits that end by release, timeout, no-wait or deadlock, values read under a
//! lock, commit of locked-only keys, rollback and drop releasing locks, and readers that
//! pessimistic locks never block.

use std::time::Duration;

use tikv_integration_tests::crashed::locks_left_after_cleanup;
use tikv_integration_tests::mock_txn_cluster;
use tikv_mock::server::MockServer;
use tikv_tokio::{
    Config, Error, LockOptions, LockWait, ReadOptions, TransactionClient, TransactionOptions,
};

async fn client(mock: &MockServer) -> TransactionClient {
    TransactionClient::connect(&[mock.pd_address()], Config::default().with_rng_seed(9))
        .await
        .unwrap()
}

fn waiting(ms: u64) -> LockOptions {
    LockOptions::default().with_wait(LockWait::Timeout(Duration::from_millis(ms)))
}

async fn put(c: &TransactionClient, key: &str, value: &str) {
    let mut t = c.begin().await.unwrap();
    t.put(key, value.to_string()).await.unwrap();
    t.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_read_write_commit() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    put(&c, "a", "1").await;
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    assert_eq!(
        t.get_for_update("a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    t.put("a", "2").await.unwrap();
    // Locked but not written: released by the commit (a Lock mutation).
    let locked = t
        .lock_keys(["x"], LockOptions::default().with_check_existence(true))
        .await
        .unwrap();
    assert!(!locked.values[0].exists);
    assert_eq!((locked.stats.keys, locked.stats.requests), (1, 1));
    let start = t.start_ts().as_u64();
    t.commit().await.unwrap();
    assert_eq!(
        c.begin().await.unwrap().get("a").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(
        locks_left_after_cleanup(&mock, start).await,
        0,
        "no lock left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_writers_wait_time_out_or_fail_at_once_and_readers_never_wait() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    put(&c, "k", "old").await;
    let mut holder = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    holder
        .lock_keys(["k"], LockOptions::default())
        .await
        .unwrap();

    let mut other = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    match other.lock_keys(["k"], waiting(300)).await {
        Err(Error::LockWaitTimeout { key, lock_ts }) => {
            assert_eq!(key.as_bytes(), b"k");
            assert_eq!(lock_ts, holder.start_ts().as_u64());
        }
        other => panic!("expected a lock wait timeout, got {other:?}"),
    }
    let no_wait = LockOptions::default().with_wait(LockWait::NoWait);
    assert!(matches!(
        other.lock_keys(["k"], no_wait).await,
        Err(Error::LockAcquireFailAndNoWaitSet { .. })
    ));
    // A reader passes a pessimistic lock at once (TiKV ignores them for reads).
    let now = c.current_timestamp().await.unwrap();
    let prompt = ReadOptions::default().with_timeout(Duration::from_millis(500));
    let snapshot = c.snapshot_with(now, prompt).unwrap();
    assert_eq!(
        snapshot.get("k").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    // An optimistic writer's commit meets the lock and waits for it: here it times out of
    // its budget only if the holder never finishes, so finish the holder first.
    holder.rollback().await.unwrap();
    other
        .lock_keys(["k"], LockOptions::default().with_wait(LockWait::NoWait))
        .await
        .unwrap();
    other.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_when_the_holder_commits_and_a_retry_locks_at_a_newer_ts() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    put(&c, "k", "0").await;
    let mut holder = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    holder
        .lock_keys(["k"], LockOptions::default())
        .await
        .unwrap();
    let waiter_client = c.clone();
    let waiter = tokio::spawn(async move {
        let mut t = waiter_client
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        let first = t.get_for_update("k").await;
        // The holder committed a newer version while we waited: a write conflict, after
        // which the statement is retried at a newer for_update_ts.
        assert!(
            matches!(first, Err(Error::WriteConflict { .. })),
            "{first:?}"
        );
        let value = t.get_for_update("k").await.unwrap();
        t.put("k", "2").await.unwrap();
        t.commit().await.unwrap();
        value
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.put("k", "1").await.unwrap();
    holder.commit().await.unwrap();
    let seen = waiter.await.unwrap();
    assert_eq!(
        seen.as_deref(),
        Some(&b"1"[..]),
        "read under the lock: the latest"
    );
    assert_eq!(
        c.begin().await.unwrap().get("k").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_fails_exactly_one_of_the_two_transactions() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    let mut t1 = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    let mut t2 = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t1.lock_keys(["a"], LockOptions::default()).await.unwrap();
    t2.lock_keys(["b"], LockOptions::default()).await.unwrap();
    let first = tokio::spawn(async move {
        let r = t1.lock_keys(["b"], waiting(5_000)).await;
        (t1, r)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = t2.lock_keys(["a"], waiting(5_000)).await;
    // The victim gives up its locks (rolling back); the other one's wait then ends.
    t2.rollback().await.unwrap();
    let (t1, first) = first.await.unwrap();
    let outcomes = [first.is_ok(), second.is_ok()];
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        1,
        "exactly one victim: {first:?} / {second:?}"
    );
    assert!(
        matches!(
            (&first, &second),
            (Ok(_), Err(Error::Deadlock { .. })) | (Err(Error::Deadlock { .. }), Ok(_))
        ),
        "{first:?} / {second:?}"
    );
    let victim = first.as_ref().err().or(second.as_ref().err());
    if let Some(Error::Deadlock {
        wait_chain,
        deadlock_key,
        retryable,
        ..
    }) = victim
    {
        assert!(!wait_chain.is_empty(), "the cycle is reported");
        // The cycle closed on the key the victim locked in an earlier call: retrying this
        // call alone would not break it.
        assert!(deadlock_key.is_some(), "{victim:?}");
        assert!(!retryable, "{victim:?}");
    }
    t1.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pessimistic_transaction_releases_its_locks() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.lock_keys(["a", "x"], LockOptions::default())
        .await
        .unwrap();
    let start = t.start_ts().as_u64();
    drop(t);
    assert_eq!(locks_left_after_cleanup(&mock, start).await, 0);
    let mut other = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    other
        .lock_keys(
            ["a", "x"],
            LockOptions::default().with_wait(LockWait::NoWait),
        )
        .await
        .unwrap();
    other.rollback().await.unwrap();
}

#[tokio::test]
async fn optimistic_transactions_cannot_lock() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    let mut t = c.begin().await.unwrap();
    assert!(matches!(
        t.lock_keys(["a"], LockOptions::default()).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_a_pessimistic_transaction_lock_their_keys_first() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    put(&c, "taken", "x").await;
    let mut t1 = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t1.put("k", "from t1").await.unwrap();
    // Another pessimistic writer of the same key waits for t1's lock.
    let mut t2 = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    assert!(matches!(
        t2.lock_keys(["k"], waiting(200)).await,
        Err(Error::LockWaitTimeout { .. })
    ));
    // An insert of an existing key fails at once, not at commit.
    assert!(matches!(
        t1.insert("taken", "y").await,
        Err(Error::KeyExists { .. })
    ));
    t1.commit().await.unwrap();
    t2.put("k", "from t2").await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(
        c.begin().await.unwrap().get("k").await.unwrap().as_deref(),
        Some(&b"from t2"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_party_deadlock_has_exactly_one_victim() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    let mut txns = Vec::new();
    for key in ["a", "b", "c"] {
        let mut t = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        t.lock_keys([key], LockOptions::default()).await.unwrap();
        txns.push(t);
    }
    // t1 waits for b (t2), t2 for c (t3); t3 asking for a (t1) closes the cycle.
    let mut t3 = txns.pop().unwrap();
    let mut t2 = txns.pop().unwrap();
    let mut t1 = txns.pop().unwrap();
    let first = tokio::spawn(async move {
        let r = t1.lock_keys(["b"], waiting(5_000)).await;
        (t1, r)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(async move {
        let r = t2.lock_keys(["c"], waiting(5_000)).await;
        // Done (or failed): release, so that the first waiter can go on.
        let _ = t2.rollback().await;
        r
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = t3.lock_keys(["a"], waiting(5_000)).await;
    t3.rollback().await.unwrap();
    let second = second.await.unwrap();
    let (t1, first) = first.await.unwrap();
    t1.rollback().await.unwrap();
    let results = [&first, &second, &third];
    let victims = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Deadlock { .. })))
        .count();
    assert_eq!(victims, 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        2,
        "the others get their locks once the victim lets go: {results:?}"
    );
}

#[tokio::test]
async fn lock_only_if_exists_leaves_missing_keys_unlocked() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    put(&c, "present", "1").await;
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    // TiKV requires return_values with lock_only_if_exists.
    let options = LockOptions::default()
        .with_return_values(true)
        .with_lock_only_if_exists(true);
    let e = t
        .lock_keys(
            ["present"],
            LockOptions::default().with_lock_only_if_exists(true),
        )
        .await;
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    // Several keys need a primary locked for sure first (client-go's rule): a missing key
    // could not be one.
    let e = t.lock_keys(["present", "zmissing"], options.clone()).await;
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    // A single missing key is not kept as the primary.
    let locked = t.lock_keys(["amissing"], options.clone()).await.unwrap();
    assert!(!locked.values[0].exists);
    t.lock_keys(["a"], LockOptions::default()).await.unwrap();
    let locked = t.lock_keys(["present", "zmissing"], options).await.unwrap();
    let exists: Vec<(Vec<u8>, bool)> = locked
        .values
        .iter()
        .map(|v| (v.key.as_bytes().to_vec(), v.exists))
        .collect();
    assert_eq!(
        exists,
        [(b"present".to_vec(), true), (b"zmissing".to_vec(), false)]
    );
    let mut other = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    let no_wait = || LockOptions::default().with_wait(LockWait::NoWait);
    assert!(matches!(
        other.lock_keys(["present"], no_wait()).await,
        Err(Error::LockAcquireFailAndNoWaitSet { .. })
    ));
    // The missing key is free: another transaction writes it meanwhile.
    other.lock_keys(["zmissing"], no_wait()).await.unwrap();
    other.put("zmissing", "theirs").await.unwrap();
    other.commit().await.unwrap();
    // Only what was locked is checked at commit (a check of the unlocked key would find
    // no lock and a newer write, and fail the commit).
    t.put("present", "2").await.unwrap();
    t.commit().await.unwrap();
}

/// A lock holder that crashed: its pessimistic lock outlives it, and a locker resolves it once
/// its TTL has passed (CheckTxnStatus on its primary, then PessimisticRollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lock_is_resolved_after_its_ttl() {
    use tikv_integration_tests::crashed::context_for;
    use tikv_proto::kvrpcpb;
    use tikv_proto::tikvpb::tikv_service;

    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let dead = c.current_timestamp().await.unwrap().as_u64();
    {
        let mut cluster = mock.cluster().lock();
        // Its primary on one region, the key on another, 50 ms of TTL.
        for key in ["dead-primary", "x"] {
            let (store, ctx) = context_for(&cluster, key.as_bytes());
            let request = kvrpcpb::PessimisticLockRequest {
                context: Some(ctx),
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::PessimisticLock as i32,
                    key: key.as_bytes().to_vec().into(),
                    ..Default::default()
                }],
                primary_lock: b"dead-primary".to_vec().into(),
                start_version: dead,
                for_update_ts: dead,
                lock_ttl: 50,
                wait_timeout: -1,
                ..Default::default()
            };
            let r = cluster
                .tikv::<tikv_service::KvPessimisticLock>(store, request, 0)
                .unwrap();
            assert!(r.errors.is_empty(), "{r:?}");
        }
    }
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let locked = t.lock_keys(["x"], waiting(5_000)).await.unwrap();
    assert!(
        locked.stats.retries >= 1,
        "it met the dead lock: {locked:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not a full wait"
    );
    t.put("x", "mine").await.unwrap();
    t.commit().await.unwrap();
    // Its expired primary was rolled back by the status check as well.
    assert_eq!(locks_left_after_cleanup(&mock, dead).await, 0);
}

/// The same waits on async-std's runtime: a waiter gets the key once its holder rolls back,
/// a no-wait locker fails at once.
#[test]
fn waits_end_by_release_on_async_std() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(mock_txn_cluster(3, &["m"]));
    let pd = mock.pd_address().to_string();
    async_std::task::block_on(async move {
        let c = tikv_async_std::TransactionClient::connect(&[pd], Config::default())
            .await
            .unwrap();
        let mut holder = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        holder
            .lock_keys(["k"], LockOptions::default())
            .await
            .unwrap();
        let mut other = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        let no_wait = LockOptions::default().with_wait(LockWait::NoWait);
        assert!(matches!(
            other.lock_keys(["k"], no_wait).await,
            Err(Error::LockAcquireFailAndNoWaitSet { .. })
        ));
        let waiter = async_std::task::spawn(async move {
            let r = other.lock_keys(["k"], waiting(5_000)).await;
            (other, r)
        });
        async_std::task::sleep(Duration::from_millis(100)).await;
        holder.rollback().await.unwrap();
        let (other, r) = waiter.await;
        r.unwrap();
        other.rollback().await.unwrap();
    });
    drop(mock);
}
