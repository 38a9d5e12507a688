//! Shared locks (`LockOptions::with_shared`, client-go's `InShareMode`) against the mock over
//! loopback gRPC, after client-go's `shared_lock_test.go`: holders share a key and block an
//! exclusive locker until the last of them is done (and the other way round), ScanLock lists
//! each holder, commit and rollback release only their own holder, a dead holder is resolved
//! by a writer, and the client's own rules (primary first, no upgrade, no async commit).

use std::time::Duration;

use tikv_integration_tests::crashed::{context_for, locks_left_after_cleanup};
use tikv_integration_tests::mock_txn_cluster;
use tikv_mock::server::MockServer;
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::tikv_service;
use tikv_tokio::{
    Config, Error, KeyRange, LockOptions, LockWait, Timestamp, Transaction, TransactionClient,
    TransactionOptions,
};

async fn client(mock: &MockServer) -> TransactionClient {
    TransactionClient::connect(&[mock.pd_address()], Config::default().with_rng_seed(3))
        .await
        .unwrap()
}

fn shared() -> LockOptions {
    LockOptions::default().with_shared(true)
}

fn waiting(ms: u64) -> LockOptions {
    LockOptions::default().with_wait(LockWait::Timeout(Duration::from_millis(ms)))
}

/// A pessimistic transaction holding its own primary `pk` and `key` in shared mode.
async fn holder(c: &TransactionClient, pk: &str, key: &str) -> Transaction {
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.lock_keys([pk], LockOptions::default()).await.unwrap();
    t.lock_keys([key], shared()).await.unwrap();
    t
}

/// Locks of `key` started at or before `max_ts`: one per holder.
async fn holders(c: &TransactionClient, key: &str, max_ts: Timestamp) -> Vec<u64> {
    let mut end = key.as_bytes().to_vec();
    end.push(0);
    c.scan_locks(KeyRange::new(key, end), max_ts, 100)
        .await
        .unwrap()
        .iter()
        .map(|l| l.start_ts.as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_block_an_exclusive_locker_until_the_last_of_them_is_done() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    for commit in [true, false] {
        let t1 = holder(&c, "pk1", "k").await;
        let t2 = holder(&c, "pk2", "k").await;
        let mut t3 = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        t3.lock_keys(["pk3"], LockOptions::default()).await.unwrap();
        let waiter = tokio::spawn(async move {
            let r = t3.lock_keys(["k"], waiting(5_000)).await;
            (t3, r)
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "the exclusive locker waits");
        if commit {
            t1.commit().await.unwrap();
        } else {
            t1.rollback().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "one holder is left");
        if commit {
            t2.commit().await.unwrap();
        } else {
            t2.rollback().await.unwrap();
        }
        let (mut t3, r) = waiter.await.unwrap();
        if commit {
            // The holders committed after t3's for_update_ts: a write conflict, and the
            // statement's retry locks at a newer one.
            assert!(matches!(r, Err(Error::WriteConflict { .. })), "{r:?}");
            t3.lock_keys(["k"], LockOptions::default()).await.unwrap();
        } else {
            r.unwrap();
        }
        t3.rollback().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_lock_blocks_shared_lockers() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    let mut t1 = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t1.lock_keys(["k"], LockOptions::default()).await.unwrap();
    let mut waiters = Vec::new();
    for pk in ["pk2", "pk3"] {
        let mut t = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        t.lock_keys([pk], LockOptions::default()).await.unwrap();
        waiters.push(tokio::spawn(async move {
            let r = t
                .lock_keys(
                    ["k"],
                    shared().with_wait(LockWait::Timeout(Duration::from_secs(5))),
                )
                .await;
            (t, r)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(waiters.iter().all(|w| !w.is_finished()));
    t1.rollback().await.unwrap();
    // Released without a commit: both get the key, together.
    for w in waiters {
        let (t, r) = w.await.unwrap();
        r.unwrap();
        t.rollback().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_lock_lists_each_holder_and_each_finish_releases_only_its_own() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let mut txns = Vec::new();
    for pk in ["a1", "a2", "a3"] {
        txns.push(holder(&c, pk, "key").await);
    }
    let starts: Vec<u64> = txns.iter().map(|t| t.start_ts().as_u64()).collect();
    let before = Timestamp::from_u64(starts[0] - 1);
    assert!(holders(&c, "key", before).await.is_empty());
    for (i, start) in starts.iter().enumerate() {
        let found = holders(&c, "key", Timestamp::from_u64(*start)).await;
        assert_eq!(found, starts[..=i], "holders started by {start}");
    }
    // Reads pass shared locks.
    assert_eq!(c.begin().await.unwrap().get("key").await.unwrap(), None);
    let now = c.current_timestamp().await.unwrap();
    let mut left = starts.clone();
    for (i, t) in txns.into_iter().enumerate() {
        let start = t.start_ts().as_u64();
        if i % 2 == 0 {
            t.commit().await.unwrap();
        } else {
            t.rollback().await.unwrap();
        }
        assert_eq!(locks_left_after_cleanup(&mock, start).await, 0);
        left.retain(|s| *s != start);
        assert_eq!(holders(&c, "key", now).await, left);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_resolves_a_dead_holder_and_commits() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    // A holder that crashed: its primary and its shared lock, with a TTL of 1 ms.
    let dead = c.current_timestamp().await.unwrap().as_u64();
    {
        let mut cluster = mock.cluster().lock();
        for (key, op) in [
            ("dead-pk", kvrpcpb::Op::PessimisticLock),
            ("k", kvrpcpb::Op::SharedPessimisticLock),
        ] {
            let (store, ctx) = context_for(&cluster, key.as_bytes());
            let request = kvrpcpb::PessimisticLockRequest {
                context: Some(ctx),
                mutations: vec![kvrpcpb::Mutation {
                    op: op as i32,
                    key: key.as_bytes().to_vec().into(),
                    ..Default::default()
                }],
                primary_lock: b"dead-pk".to_vec().into(),
                start_version: dead,
                for_update_ts: dead,
                lock_ttl: 1,
                wait_timeout: -1,
                ..Default::default()
            };
            let r = cluster
                .tikv::<tikv_service::KvPessimisticLock>(store, request, 0)
                .unwrap();
            assert!(r.errors.is_empty(), "{r:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // An optimistic writer meets the shared lock at prewrite, resolves it, commits.
    let mut t = c.begin().await.unwrap();
    t.put("k", "v").await.unwrap();
    let start = t.start_ts().as_u64();
    t.commit().await.unwrap();
    let read = c.begin().await.unwrap().get("k").await.unwrap();
    assert_eq!(read.as_deref(), Some(&b"v"[..]));
    assert_eq!(locks_left_after_cleanup(&mock, start).await, 0);
    assert_eq!(
        holders(&c, "k", c.current_timestamp().await.unwrap()).await,
        Vec::<u64>::new(),
        "the dead holder is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_rules_for_shared_locks() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    let mut t = c
        .begin_with(TransactionOptions::pessimistic().with_async_commit(true))
        .await
        .unwrap();
    // A shared key is never a primary: one must be locked first.
    let e = t.lock_keys(["k"], shared()).await;
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    t.lock_keys(["pk"], LockOptions::default()).await.unwrap();
    t.lock_keys(["k", "pk"], shared()).await.unwrap();
    // Neither upgraded nor written.
    let e = t.lock_keys(["k"], LockOptions::default()).await;
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    let e = t.put("k", "v").await;
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    t.start_fair_locking().unwrap();
    let e = t.lock_keys(["j"], shared()).await;
    assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    t.cancel_fair_locking().unwrap();
    // Async commit was asked for: TiKV refuses it with shared locks, so the commit is 2PC.
    t.put("pk", "1").await.unwrap();
    let start = t.start_ts().as_u64();
    t.commit().await.unwrap();
    assert_eq!(locks_left_after_cleanup(&mock, start).await, 0);
    let read = c.begin().await.unwrap().get("pk").await.unwrap();
    assert_eq!(read.as_deref(), Some(&b"1"[..]));
}
