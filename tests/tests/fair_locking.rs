//! Fair locking (client-go's aggressive locking) against the mock over loopback gRPC: a key
//! committed after the statement's `for_update_ts` is locked anyway and its newer value
//! returned; a waiter gets the lock the moment its holder commits (no write conflict, no
//! re-queueing); a retried statement reuses its locks without a request; what the last
//! attempt did not ask for is released, and cancel releases the whole stage.

use std::time::Duration;

use tikv_integration_tests::crashed::locks_left_after_cleanup;
use tikv_integration_tests::mock_txn_cluster;
use tikv_mock::server::MockServer;
use tikv_tokio::{
    Config, Error, LockOptions, LockWait, Timestamp, TransactionClient, TransactionOptions,
};

async fn client(mock: &MockServer) -> TransactionClient {
    TransactionClient::connect(&[mock.pd_address()], Config::default().with_rng_seed(5))
        .await
        .unwrap()
}

async fn put(c: &TransactionClient, key: &str, value: &str) -> Timestamp {
    let mut t = c.begin().await.unwrap();
    t.put(key, value.to_string()).await.unwrap();
    t.commit().await.unwrap()
}

fn values() -> LockOptions {
    LockOptions::default().with_return_values(true)
}

/// Whether another transaction can lock `key` within `ms` (0: at once; then releases it).
async fn lockable(c: &TransactionClient, key: &str, ms: u64) -> bool {
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    let wait = match ms {
        0 => LockWait::NoWait,
        ms => LockWait::Timeout(Duration::from_millis(ms)),
    };
    let ok = t
        .lock_keys([key], LockOptions::default().with_wait(wait))
        .await
        .is_ok();
    t.rollback().await.unwrap();
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_commit_is_locked_over_and_the_retry_reuses_the_lock() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    put(&c, "k", "old").await;
    // Without a conflict a force lock is a plain lock (answering the latest value).
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.start_fair_locking().unwrap();
    let locked = t.lock_keys(["k"], values()).await.unwrap();
    assert_eq!(locked.max_locked_with_conflict, None);
    assert_eq!(locked.values[0].value.as_deref(), Some(&b"old"[..]));
    t.cancel_fair_locking().unwrap();
    t.rollback().await.unwrap();

    // Now a real conflict: the holder commits while t waits in force-lock mode.
    let mut holder = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    holder
        .lock_keys(["k"], LockOptions::default())
        .await
        .unwrap();
    holder.put("k", "holder's").await.unwrap();
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.start_fair_locking().unwrap();
    let waiter = tokio::spawn(async move {
        let r = t.lock_keys(["k"], values()).await;
        (t, r)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let holder_commit = holder.commit().await.unwrap();
    let (mut t, locked) = waiter.await.unwrap();
    let locked = locked.expect("the waiter gets the lock when the holder commits");
    assert_eq!(locked.max_locked_with_conflict, Some(holder_commit));
    assert_eq!(locked.values[0].locked_with_conflict, Some(holder_commit));
    assert_eq!(locked.values[0].value.as_deref(), Some(&b"holder's"[..]));

    // The statement is retried (its reads were older than the value it locked): the lock is
    // still held, so locking k again needs no request and answers the current value.
    t.retry_fair_locking().unwrap();
    let again = t.lock_keys(["k"], values()).await.unwrap();
    assert_eq!(again.stats.requests, 0, "reused without a request");
    assert_eq!(again.values[0].locked_with_conflict, None);
    assert_eq!(again.values[0].value.as_deref(), Some(&b"holder's"[..]));
    assert!(!lockable(&c, "k", 0).await, "still locked by t");
    t.done_fair_locking().unwrap();
    t.put("k", "t's").await.unwrap();
    let start = t.start_ts().as_u64();
    let committed = t.commit().await.unwrap();
    assert!(committed > holder_commit);
    let read = c.begin().await.unwrap().get("k").await.unwrap();
    assert_eq!(read.as_deref(), Some(&b"t's"[..]));
    assert_eq!(locks_left_after_cleanup(&mock, start).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_release_what_the_last_attempt_no_longer_wants() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.lock_keys(["p"], LockOptions::default()).await.unwrap();
    t.start_fair_locking().unwrap();
    assert!(t.is_fair_locking());
    t.lock_keys(["a"], LockOptions::default()).await.unwrap();
    t.lock_keys(["z"], LockOptions::default()).await.unwrap();
    t.retry_fair_locking().unwrap();
    assert!(
        !t.is_in_fair_locking_stage("a"),
        "a belongs to the previous attempt"
    );
    t.lock_keys(["a"], LockOptions::default()).await.unwrap();
    assert!(t.is_in_fair_locking_stage("a"));
    assert!(
        !t.is_in_fair_locking_stage("p"),
        "p was locked before the stage"
    );
    t.done_fair_locking().unwrap();
    assert!(!t.is_fair_locking());
    // z was not asked for by the last attempt: released (in the background).
    assert!(lockable(&c, "z", 2_000).await);
    assert!(!lockable(&c, "a", 0).await);
    assert!(!lockable(&c, "p", 0).await);
    t.put("a", "1").await.unwrap();
    let start = t.start_ts().as_u64();
    t.commit().await.unwrap();
    assert_eq!(locks_left_after_cleanup(&mock, start).await, 0);

    // Cancel releases the stage's locks and keeps those held before it.
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.lock_keys(["p"], LockOptions::default()).await.unwrap();
    t.start_fair_locking().unwrap();
    t.lock_keys(["b"], LockOptions::default()).await.unwrap();
    t.retry_fair_locking().unwrap();
    t.lock_keys(["y"], LockOptions::default()).await.unwrap();
    t.cancel_fair_locking().unwrap();
    assert!(lockable(&c, "b", 2_000).await);
    assert!(lockable(&c, "y", 2_000).await);
    assert!(!lockable(&c, "p", 0).await);
    t.rollback().await.unwrap();
    assert!(lockable(&c, "p", 2_000).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_refuses_a_pending_stage_and_optimistic_transactions_refuse_the_mode() {
    let mock = mock_txn_cluster(1, &[]).await;
    let c = client(&mock).await;
    let mut optimistic = c.begin().await.unwrap();
    assert!(matches!(
        optimistic.start_fair_locking(),
        Err(Error::InvalidArgument(_))
    ));
    let mut t = c
        .begin_with(TransactionOptions::pessimistic())
        .await
        .unwrap();
    t.start_fair_locking().unwrap();
    t.lock_keys(["a"], LockOptions::default()).await.unwrap();
    t.put("a", "1").await.unwrap();
    assert!(matches!(t.commit().await, Err(Error::InvalidArgument(_))));
    // The failed transaction released its lock.
    assert!(lockable(&c, "a", 2_000).await);
    assert_eq!(c.begin().await.unwrap().get("a").await.unwrap(), None);
}

/// A statement locking several keys leaves the stage (TiKV's force-lock mode takes one key
/// per request) and keeps what it locked, as on async-std's runtime too.
#[test]
fn several_keys_leave_the_stage_on_async_std() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(mock_txn_cluster(3, &["m"]));
    let pd = mock.pd_address().to_string();
    async_std::task::block_on(async move {
        let c = tikv_async_std::TransactionClient::connect(&[pd], Config::default())
            .await
            .unwrap();
        let mut t = c
            .begin_with(TransactionOptions::pessimistic())
            .await
            .unwrap();
        t.start_fair_locking().unwrap();
        t.lock_keys(["a"], LockOptions::default()).await.unwrap();
        let locked = t
            .lock_keys(["b", "x"], LockOptions::default())
            .await
            .unwrap();
        assert_eq!(locked.stats.keys, 2);
        assert!(!t.is_fair_locking());
        t.put("x", "1").await.unwrap();
        t.commit().await.unwrap();
        let read = c.begin().await.unwrap().get("x").await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"1"[..]));
    });
    drop(mock);
}
