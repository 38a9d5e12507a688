//! Readers and writers meeting the locks other clients leave behind, against the mock's MVCC
//! engine over loopback gRPC: pushed locks passed without waiting, orphaned async-commit
//! transactions recovered to their true outcome, and many locks of one transaction resolved
//! in a handful of requests. The RPC counts come from the mock's counters.

use std::time::Duration;

use tikv_integration_tests::crashed::{Crashed, locks_left, locks_left_after_cleanup};
use tikv_integration_tests::mock_txn_cluster;
use tikv_mock::server::MockServer;
use tikv_tokio::{Config, Error, ReadOptions, TransactionClient};

async fn client(mock: &MockServer) -> TransactionClient {
    TransactionClient::connect(&[mock.pd_address()], Config::default().with_rng_seed(7))
        .await
        .unwrap()
}

/// RPCs of `method` the mock has served so far.
fn rpcs(mock: &MockServer, method: &str) -> u64 {
    mock.cluster().lock().counters().rpcs_of(method)
}

/// A read that must not wait for a lock's TTL: it fails if it takes a second.
fn prompt() -> ReadOptions {
    ReadOptions::default().with_timeout(Duration::from_secs(1))
}

async fn start_ts(c: &TransactionClient) -> u64 {
    c.current_timestamp().await.unwrap().as_u64()
}

#[tokio::test]
async fn a_running_transactions_locks_do_not_block_later_readers() {
    // A transaction prewrote "a" and "b" (min_commit_ts = start + 1, as this client and
    // client-go write them) and is still running: its locks live 60 s. A reader that started
    // after it pushes its commit timestamp past itself and reads the old values at once —
    // every read of the snapshot, after one status check.
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let mut t = c.begin().await.unwrap();
    t.put("a", "old a").await.unwrap();
    t.put("x", "old x").await.unwrap();
    t.commit().await.unwrap();
    let owner = start_ts(&c).await;
    Crashed::new(&["a", "x"])
        .pushable()
        .ttl(60_000)
        .leave(&mock, owner);

    let checks = rpcs(&mock, "KvCheckTxnStatus");
    let now = c.current_timestamp().await.unwrap();
    let snapshot = c.snapshot_with(now, prompt()).unwrap();
    assert_eq!(
        snapshot.get("a").await.unwrap().as_deref(),
        Some(&b"old a"[..])
    );
    assert_eq!(
        snapshot.get("x").await.unwrap().as_deref(),
        Some(&b"old x"[..])
    );
    assert_eq!(snapshot.batch_get(["a", "x"]).await.unwrap().len(), 2);
    assert_eq!(snapshot.scan("a".., 10).await.unwrap().len(), 2);
    assert_eq!(
        rpcs(&mock, "KvCheckTxnStatus") - checks,
        1,
        "one check for the owner; the snapshot's other reads pass its locks"
    );
    assert_eq!(rpcs(&mock, "KvResolveLock"), 0, "a live owner's locks stay");
    assert_eq!(locks_left(&mock, owner), 2);

    // Without a min_commit_ts TiKV cannot push the owner: the reader has to wait for it (and
    // here gives up after its one-second timeout). What this client writes never does this.
    let stuck = start_ts(&c).await;
    Crashed::new(&["b"]).ttl(60_000).leave(&mock, stuck);
    let now = c.current_timestamp().await.unwrap();
    let snapshot = c.snapshot_with(now, prompt()).unwrap();
    assert!(matches!(snapshot.get("b").await, Err(Error::Cancelled(_))));
}

#[tokio::test]
async fn an_orphaned_async_commit_transaction_that_prewrote_everything_is_committed() {
    // Every key prewritten with async commit, then the client vanished before telling anyone:
    // by the async-commit protocol the transaction is committed. A reader after the TTL
    // finds that out from the secondaries and cleans up every lock.
    let mock = mock_txn_cluster(3, &["k3", "k6"]).await;
    let c = client(&mock).await;
    let owner = start_ts(&c).await;
    let keys = ["k1", "k4", "k7", "k8"];
    Crashed::new(&keys)
        .async_commit()
        .ttl(50)
        .leave(&mock, owner);
    tokio::time::sleep(Duration::from_millis(60)).await;

    let before = mock.cluster().lock().counters().clone();
    let t = c.begin().await.unwrap();
    let got = t.get("k7").await.unwrap();
    assert_eq!(got.as_deref(), Some(Crashed::value("k7").as_bytes()));
    let after = mock.cluster().lock().counters().clone();
    let sent: u64 = after.rpcs.values().sum::<u64>() - before.rpcs.values().sum::<u64>();
    let of = |m: &str| after.rpcs_of(m) - before.rpcs_of(m);
    assert!(sent < 20, "{sent} RPCs: {:?}", after.rpcs);
    assert_eq!(of("KvCheckTxnStatus"), 1);
    assert_eq!(
        of("KvCheckSecondaryLocks"),
        2,
        "one per region holding a secondary"
    );
    assert_eq!(
        locks_left_after_cleanup(&mock, owner).await,
        0,
        "every lock resolved, the primary too"
    );
    // Everyone now sees the commit, with no further checks.
    let t = c.begin().await.unwrap();
    assert_eq!(t.batch_get(keys).await.unwrap().len(), 4);
}

#[tokio::test]
async fn an_orphaned_async_commit_transaction_that_did_not_prewrite_everything_is_rolled_back() {
    let mock = mock_txn_cluster(3, &["k3", "k6"]).await;
    let c = client(&mock).await;
    let mut t = c.begin().await.unwrap();
    t.put("k4", "before").await.unwrap();
    t.commit().await.unwrap();
    let owner = start_ts(&c).await;
    // The client crashed before prewriting "k8".
    Crashed::new(&["k1", "k4", "k7", "k8"])
        .async_commit()
        .ttl(50)
        .prewritten(3)
        .leave(&mock, owner);
    tokio::time::sleep(Duration::from_millis(60)).await;

    let t = c.begin().await.unwrap();
    assert_eq!(t.get("k4").await.unwrap().as_deref(), Some(&b"before"[..]));
    assert_eq!(locks_left_after_cleanup(&mock, owner).await, 0);
    // The missing key can never be prewritten now: its slot is rolled back.
    let t = c.begin().await.unwrap();
    assert!(t.batch_get(["k1", "k7", "k8"]).await.unwrap().is_empty());
}

#[tokio::test]
async fn many_locks_of_one_dead_transaction_cost_a_request_per_region() {
    // 100 secondaries of a transaction committed at its primary, in 4 regions: one status
    // check, and one ResolveLock per region (client-go's lite resolve batches per region).
    let mock = mock_txn_cluster(3, &["k025", "k050", "k075"]).await;
    let c = client(&mock).await;
    let keys: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let owner = start_ts(&c).await;
    Crashed::new(&refs)
        .committed_primary()
        .ttl(60_000)
        .leave(&mock, owner);

    let (checks, resolves) = (
        rpcs(&mock, "KvCheckTxnStatus"),
        rpcs(&mock, "KvResolveLock"),
    );
    let t = c.begin().await.unwrap();
    let got = t.batch_get(refs.clone()).await.unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(rpcs(&mock, "KvCheckTxnStatus") - checks, 1);
    let resolved = rpcs(&mock, "KvResolveLock") - resolves;
    assert!(
        (1..=4).contains(&resolved),
        "{resolved} ResolveLock requests for 99 locks in 4 regions"
    );
    assert_eq!(locks_left_after_cleanup(&mock, owner).await, 0);
}

#[tokio::test]
async fn a_decided_transaction_is_checked_once_per_client() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let owner = start_ts(&c).await;
    Crashed::new(&["a", "b", "x"])
        .committed_primary()
        .ttl(60_000)
        .leave(&mock, owner);
    let checks = rpcs(&mock, "KvCheckTxnStatus");
    // Two separate transactions, each meeting a different lock of the committed owner.
    let t = c.begin().await.unwrap();
    assert!(t.get("b").await.unwrap().is_some());
    let t = c.begin().await.unwrap();
    assert!(t.get("x").await.unwrap().is_some());
    assert_eq!(
        rpcs(&mock, "KvCheckTxnStatus") - checks,
        1,
        "the outcome is cached client-wide"
    );
}

#[tokio::test]
async fn async_commit_and_one_pc_transactions_are_seen_by_every_later_transaction() {
    // Async commit reports the commit once every key is prewritten and commits the keys in
    // the background; 1PC commits at prewrite. Either way a transaction that starts after
    // the commit returned sees it (the commit ts is above every earlier snapshot), and no
    // lock stays behind.
    let mock = mock_txn_cluster(3, &["k3", "k6"]).await;
    let c = client(&mock).await;
    for (round, options) in [
        tikv_tokio::TransactionOptions::default().with_async_commit(true),
        tikv_tokio::TransactionOptions::default().with_try_one_pc(true),
        tikv_tokio::TransactionOptions::default()
            .with_async_commit(true)
            .with_causal_consistency(true),
    ]
    .into_iter()
    .enumerate()
    {
        let commits = rpcs(&mock, "KvCommit");
        let mut t = c.begin_with(options).await.unwrap();
        let start = t.start_ts();
        let keys: Vec<String> = if round == 1 {
            vec!["k1".into(), "k2".into()] // 1PC needs one region
        } else {
            vec!["k1".into(), "k4".into(), "k7".into()]
        };
        for k in &keys {
            t.put(k.clone(), format!("round {round}")).await.unwrap();
        }
        let commit_ts = t.commit().await.unwrap();
        assert!(commit_ts > start);
        let reader = c.begin().await.unwrap();
        assert!(reader.start_ts() >= commit_ts, "round {round}");
        let got = reader.batch_get(keys.clone()).await.unwrap();
        assert_eq!(got.len(), keys.len(), "round {round}");
        assert!(
            got.iter()
                .all(|p| p.value == format!("round {round}").as_bytes()),
            "round {round}: {got:?}"
        );
        if round == 1 {
            assert_eq!(rpcs(&mock, "KvCommit"), commits, "1PC sends no commit");
        }
        // The background commit finishes shortly after.
        let left = locks_left_after_cleanup(&mock, start.as_u64()).await;
        assert_eq!(left, 0, "round {round}: no lock stays behind");
    }
}

#[tokio::test]
async fn the_lock_resolver_api_checks_statuses_and_resolves_given_locks() {
    use tikv_tokio::{Lock, Timestamp, TxnStatus};
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;

    // Committed at its primary, then crashed.
    let committed = start_ts(&c).await;
    Crashed::new(&["p", "s"])
        .committed_primary()
        .ttl(60_000)
        .leave(&mock, committed);
    let ts = Timestamp::from_u64(committed);
    assert_eq!(
        c.check_txn_status("p", ts).await.unwrap(),
        TxnStatus::Committed(Timestamp::from_u64(committed + 1))
    );
    // Still running: alive, with its lock's TTL.
    let running = start_ts(&c).await;
    Crashed::new(&["q"])
        .pushable()
        .ttl(60_000)
        .leave(&mock, running);
    assert!(matches!(
        c.check_txn_status("q", Timestamp::from_u64(running))
            .await
            .unwrap(),
        TxnStatus::Alive { ttl_ms: 60_000 }
    ));
    // Never wrote its primary: settled as rolled back.
    let never = start_ts(&c).await;
    assert_eq!(
        c.check_txn_status("z", Timestamp::from_u64(never))
            .await
            .unwrap(),
        TxnStatus::RolledBack
    );

    // The committed transaction's secondary, as a reader would report it.
    let mut lock = Lock::new("s", "p", ts, 60_000);
    lock.txn_size = 2;
    let caller = c.current_timestamp().await.unwrap();
    let resolved = c
        .resolve_locks_for_read(vec![lock.clone()], caller)
        .await
        .unwrap();
    assert_eq!(
        resolved.committed,
        [ts],
        "committed before the caller: read through"
    );
    assert_eq!(locks_left_after_cleanup(&mock, committed).await, 0);
    // The live one stays, and a writer is told how long to wait.
    let live = Lock::new("q", "q", Timestamp::from_u64(running), 60_000);
    let resolved = c.resolve_locks(vec![live], caller).await.unwrap();
    assert_eq!(resolved.alive, 1);
    assert!(resolved.wait_ms > 50_000, "{resolved:?}");
    assert_eq!(locks_left(&mock, running), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_readers_meeting_one_crashed_transaction_check_it_once() {
    // 32 readers at once meet locks of one transaction committed at its primary: one of them
    // asks the primary; the others wait for its answer instead of asking too.
    let mock = mock_txn_cluster(3, &["k3", "k6"]).await;
    let c = client(&mock).await;
    let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let owner = start_ts(&c).await;
    Crashed::new(&refs)
        .committed_primary()
        .ttl(60_000)
        .leave(&mock, owner);
    let checks = rpcs(&mock, "KvCheckTxnStatus");
    let mut readers = Vec::new();
    for i in 0..32 {
        let (c, key) = (c.clone(), keys[1 + i % 7].clone());
        readers.push(tokio::spawn(async move {
            let t = c.begin().await.unwrap();
            t.get(key).await.unwrap()
        }));
    }
    for r in readers {
        assert!(r.await.unwrap().is_some());
    }
    assert_eq!(rpcs(&mock, "KvCheckTxnStatus") - checks, 1);
    assert_eq!(locks_left_after_cleanup(&mock, owner).await, 0);
}

#[tokio::test]
async fn locks_are_listed_page_by_page_and_resolved_like_gc_does() {
    use tikv_tokio::Timestamp;
    // 1500 locks of one crashed transaction over two regions, the first holding more than
    // one ScanLock page (1024), plus a running transaction's lock.
    let mock = mock_txn_cluster(3, &["k1200"]).await;
    let c = client(&mock).await;
    let keys: Vec<String> = (0..1500).map(|i| format!("k{i:04}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let dead = start_ts(&c).await;
    Crashed::new(&refs)
        .committed_primary()
        .ttl(1)
        .leave(&mock, dead);
    let live = start_ts(&c).await;
    Crashed::new(&["z"])
        .pushable()
        .ttl(60_000)
        .leave(&mock, live);

    let now = c.current_timestamp().await.unwrap();
    let scans = rpcs(&mock, "KvScanLock");
    let all = c.scan_locks(.., now, usize::MAX).await.unwrap();
    assert_eq!(
        all.len(),
        1500,
        "the committed primary holds no lock; 1499 + z"
    );
    assert_eq!(
        rpcs(&mock, "KvScanLock") - scans,
        3,
        "two pages of the first region, one of the second"
    );
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "in key order");
    assert_eq!(c.scan_locks(.., now, 10).await.unwrap().len(), 10);
    // Only transactions started at or before max_ts.
    let before_live = Timestamp::from_u64(live - 1);
    assert_eq!(
        c.scan_locks(.., before_live, usize::MAX)
            .await
            .unwrap()
            .len(),
        1499
    );

    // Resolve what was listed (as GC's lock resolution does): the dead transaction's locks
    // go, the live one stays.
    let resolved = c.resolve_locks(all, now).await.unwrap();
    assert_eq!(resolved.alive, 1);
    let left = c.scan_locks(.., now, usize::MAX).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key.as_bytes(), b"z");
    assert_eq!(left[0].start_ts.as_u64(), live);
}

#[tokio::test]
async fn waiting_for_background_work_leaves_no_lock_behind() {
    let mock = mock_txn_cluster(3, &["k3", "k6"]).await;
    let c = client(&mock).await;
    let mut t = c.begin().await.unwrap();
    for k in ["k1", "k4", "k7"] {
        t.put(k, "v").await.unwrap();
    }
    let start = t.start_ts().as_u64();
    t.commit().await.unwrap();
    // The secondaries are committed by a background task after `commit` returned.
    assert!(c.wait_background(Duration::from_secs(5)).await);
    assert_eq!(
        locks_left(&mock, start),
        0,
        "nothing left once the background work is done"
    );
}
