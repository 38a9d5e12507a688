//! Operator calls against the mock: split then scatter then wait, delete and destroy ranges,
//! MVCC debug views.

use std::time::Duration;

use tikv_integration_tests::crashed::Crashed;
use tikv_integration_tests::mock_txn_cluster;
use tikv_mock::server::MockServer;
use tikv_tokio::{
    Config, Error, Key, KeyRange, MvccOp, ScatterOptions, Timestamp, TransactionClient,
};

async fn client(mock: &MockServer) -> TransactionClient {
    TransactionClient::connect(&[mock.pd_address()], Config::default().with_rng_seed(5))
        .await
        .unwrap()
}

async fn write(c: &TransactionClient, keys: &[&str]) -> Timestamp {
    let mut t = c.begin().await.unwrap();
    for k in keys {
        t.put(*k, format!("v-{k}")).await.unwrap();
    }
    t.commit().await.unwrap()
}

async fn keys_in(c: &TransactionClient) -> Vec<String> {
    let snapshot = c.snapshot(c.current_timestamp().await.unwrap());
    snapshot
        .scan(KeyRange::all(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| String::from_utf8_lossy(p.key.as_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn split_then_scatter_then_wait() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    write(&c, &["a", "c", "e", "g"]).await;

    let options = ScatterOptions::default().with_group("t1");
    let new = c
        .split_regions(["b", "d", "f", "d"], Some(options))
        .await
        .unwrap();
    assert_eq!(new.len(), 3, "one new region per distinct key: {new:?}");
    let regions = c.pd().scan_regions(b"", b"", 100).await.unwrap();
    assert_eq!(regions.len(), 4);
    // The mock's operators report RUNNING once before they apply: a wait on a moving
    // region polls, backs off and polls again.
    let polls = |mock: &MockServer| mock.cluster().lock().counters().rpcs_of("GetOperator");
    let before = polls(&mock);
    for id in &new {
        c.wait_scatter_region_finish(*id, Some(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    let waited = polls(&mock) - before;
    assert!(
        waited > new.len() as u64,
        "some wait saw a running scatter: {waited} polls"
    );
    for id in &new {
        assert!(!c.is_region_scattering(*id).await.unwrap());
    }
    // Splitting again at the same keys is a no-op.
    assert!(c.split_regions(["b", "d"], None).await.unwrap().is_empty());
    // The data is where it was.
    assert_eq!(keys_in(&c).await, ["a", "c", "e", "g"]);
    assert!(matches!(
        c.split_regions([""], None).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn delete_range_removes_every_version_across_regions() {
    let mock = mock_txn_cluster(3, &["c", "f", "k"]).await;
    let c = client(&mock).await;
    write(&c, &["a", "b", "d", "g", "h", "m", "z"]).await;
    write(&c, &["d", "g"]).await;
    let regions = c.delete_range(KeyRange::new("b", "n"), 2).await.unwrap();
    assert_eq!(regions, 4, "[b,c) [c,f) [f,k) [k,n)");
    assert_eq!(keys_in(&c).await, ["a", "z"]);
    let info = c.mvcc_by_key("d").await.unwrap();
    assert!(info.is_empty(), "no version left: {info:?}");
    // Notify-only deletes nothing.
    c.notify_delete_range(KeyRange::new("a", "b"), 1)
        .await
        .unwrap();
    assert_eq!(keys_in(&c).await, ["a", "z"]);
}

#[tokio::test]
async fn unsafe_destroy_range_drops_the_range_on_every_store() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    write(&c, &["a", "b", "x"]).await;
    c.unsafe_destroy_range(KeyRange::new("a", "c"))
        .await
        .unwrap();
    assert_eq!(keys_in(&c).await, ["x"]);
    assert!(matches!(
        c.unsafe_destroy_range(KeyRange::new("a", "")).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn mvcc_views_show_writes_and_locks() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    let first = write(&c, &["k"]).await;
    let second = write(&c, &["k", "x"]).await;
    let info = c.mvcc_by_key("k").await.unwrap();
    let commits: Vec<Timestamp> = info.writes.iter().map(|w| w.commit_ts).collect();
    assert_eq!(commits, [second, first], "newest first");
    assert!(info.writes.iter().all(|w| w.op == MvccOp::Put));
    assert!(info.lock.is_none());

    let owner = c.current_timestamp().await.unwrap();
    Crashed::new(&["x"])
        .ttl(60_000)
        .leave(&mock, owner.as_u64());
    let lock = c.mvcc_by_key("x").await.unwrap().lock.expect("a lock");
    assert_eq!((lock.start_ts, lock.primary), (owner, Key::from("x")));

    let start_of_second = c.mvcc_by_key("x").await.unwrap().writes[0].start_ts;
    let (key, found) = c
        .mvcc_by_start_ts(start_of_second)
        .await
        .unwrap()
        .expect("the transaction wrote k and x");
    assert_eq!(key, Key::from("k"), "the first key in key order");
    assert_eq!(found.writes[0].commit_ts, second);
    assert_eq!(
        c.mvcc_by_start_ts(Timestamp::from_u64(1)).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn generic_requests_are_routed_and_follow_region_errors() {
    use tikv_tokio::proto::kvrpcpb;
    use tikv_tokio::{TikvRequest, TikvResponse};

    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    let committed = write(&c, &["k", "q"]).await;
    let get = |key: &str| {
        TikvRequest::KvGet(kvrpcpb::GetRequest {
            key: key.to_string().into_bytes().into(),
            version: committed.as_u64(),
            ..Default::default()
        })
    };
    let TikvResponse::KvGet(r) = c.send_request("k", get("k")).await.unwrap() else {
        panic!("a get answer");
    };
    assert_eq!(r.value, "v-k");

    // The region splits behind the client's cache: the request follows.
    c.split_regions(["m"], None).await.unwrap();
    let TikvResponse::KvGet(r) = c.send_request("q", get("q")).await.unwrap() else {
        panic!("a get answer");
    };
    assert_eq!(r.value, "v-q");

    // A request without a region context cannot be routed: it goes to a store.
    let safe_ts = TikvRequest::GetStoreSafeTs(kvrpcpb::StoreSafeTsRequest::default());
    assert!(matches!(
        c.send_request("k", safe_ts).await,
        Err(Error::InvalidArgument(_))
    ));
    let destroy = TikvRequest::UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeRequest {
        start_key: "k".into(),
        end_key: "l".into(),
        ..Default::default()
    });
    let store = c.pd().get_all_stores().await.unwrap()[0].id;
    let TikvResponse::UnsafeDestroyRange(r) =
        c.send_request_to_store(store, destroy).await.unwrap()
    else {
        panic!("a destroy answer");
    };
    assert!(r.error.is_empty(), "{}", r.error);
}

#[tokio::test]
async fn flashback_restores_a_range_as_it_was() {
    let mock = mock_txn_cluster(3, &["m"]).await;
    let c = client(&mock).await;
    write(&c, &["a", "b", "n", "z"]).await;
    let version = c.current_timestamp().await.unwrap();
    // After the version: changes, a deletion, a new key, and a live lock of a running
    // transaction.
    let mut t = c.begin().await.unwrap();
    t.put("a", "changed").await.unwrap();
    t.delete("n").await.unwrap();
    t.put("c", "new").await.unwrap();
    t.put("z", "outside").await.unwrap();
    t.commit().await.unwrap();
    let owner = c.current_timestamp().await.unwrap();
    Crashed::new(&["b"])
        .ttl(600_000)
        .leave(&mock, owner.as_u64());

    let report = c
        .flashback_to_version(KeyRange::new("a", "x"), version, 2)
        .await
        .unwrap();
    assert!(
        report.commit_ts > report.start_ts && report.regions >= 2,
        "{report:?}"
    );
    let snapshot = c.snapshot(c.current_timestamp().await.unwrap());
    let pairs: Vec<(String, String)> = snapshot
        .scan(KeyRange::all(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                String::from_utf8_lossy(p.key.as_bytes()).into_owned(),
                String::from_utf8_lossy(&p.value).into_owned(),
            )
        })
        .collect();
    let expect = [("a", "v-a"), ("b", "v-b"), ("n", "v-n"), ("z", "outside")];
    assert_eq!(
        pairs,
        expect.map(|(k, v)| (k.to_string(), v.to_string())),
        "[a, x) as at the version; z is outside the range"
    );
    // The running transaction's lock was rolled back; nothing is left locked.
    assert!(tikv_integration_tests::crashed::scan_locks(&mut mock.cluster().lock()).is_empty());
    // The history is kept: the flashback is a new version.
    let info = c.mvcc_by_key("a").await.unwrap();
    assert_eq!(info.writes[0].commit_ts, report.commit_ts);
    // A version in the future is refused.
    let later = c.current_timestamp().await.unwrap().add_ms(60_000);
    assert!(matches!(
        c.flashback_to_version(KeyRange::new("a", "b"), later, 1)
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn min_safe_ts_is_the_lowest_of_the_zones_stores() {
    let mock = mock_txn_cluster(3, &[]).await;
    let c = client(&mock).await;
    write(&c, &["a"]).await;
    let before = c.current_timestamp().await.unwrap();
    let all = c.min_safe_ts(None).await.unwrap();
    assert!(
        all >= before,
        "nothing holds the resolvers back: {all} < {before}"
    );
    // A store whose resolver stalls holds the minimum back, wherever it is.
    mock.cluster().lock().stall_safe_ts(1);
    write(&c, &["b"]).await;
    let after = c.current_timestamp().await.unwrap();
    let stalled = c.min_safe_ts(None).await.unwrap();
    assert!(stalled < after && stalled >= all, "{stalled} vs {after}");
    // By zone: store 1 (stalled) in z1, the others in z2.
    {
        let mut cluster = mock.cluster().lock();
        for (store, zone) in [(1, "z1"), (2, "z2"), (3, "z2")] {
            cluster
                .set_store_labels(store, vec![("zone".into(), zone.into())])
                .unwrap();
        }
    }
    write(&c, &["c"]).await;
    let z2 = c.min_safe_ts(Some("z2")).await.unwrap();
    assert!(
        z2 > stalled,
        "z2 is not held back by store 1: {z2} vs {stalled}"
    );
    assert_eq!(c.min_safe_ts(Some("z1")).await.unwrap(), stalled);
    assert!(matches!(
        c.min_safe_ts(Some("nowhere")).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// CRC-64 XOR, pairs and bytes of `pairs`, as TiKV's checksum computes them.
fn expected(pairs: &[(&str, &str)]) -> (u64, u64, u64) {
    let mut sum = 0;
    let mut bytes = 0;
    for (k, v) in pairs {
        sum = tikv_mock::codec::checksum_crc64_xor(sum, k.as_bytes(), v.as_bytes());
        bytes += (k.len() + v.len()) as u64;
    }
    (sum, pairs.len() as u64, bytes)
}

#[tokio::test]
async fn coprocessor_checksum_covers_the_range_across_regions_at_its_timestamp() {
    let mock = mock_txn_cluster(3, &["f", "p"]).await;
    let c = client(&mock).await;
    let first = write(&c, &["a", "g", "q", "z"]).await;
    write(&c, &["g"]).await;
    let mut t = c.begin().await.unwrap();
    t.put("g", "newer").await.unwrap();
    t.delete("q").await.unwrap();
    t.commit().await.unwrap();
    // A crashed writer's expired lock inside the range: resolved, not waited for.
    let owner = c.current_timestamp().await.unwrap();
    Crashed::new(&["h"]).ttl(1).leave(&mock, owner.as_u64());

    let now = c.current_timestamp().await.unwrap();
    let sum = c.checksum(KeyRange::new("a", "y"), now).await.unwrap();
    let (crc, kvs, bytes) = expected(&[("a", "v-a"), ("g", "newer")]);
    assert_eq!(
        (sum.crc64_xor, sum.total_kvs, sum.total_bytes),
        (crc, kvs, bytes)
    );
    // As of the first commit.
    let old = c.checksum(KeyRange::new("a", "y"), first).await.unwrap();
    let (crc, kvs, _) = expected(&[("a", "v-a"), ("g", "v-g"), ("q", "v-q")]);
    assert_eq!((old.crc64_xor, old.total_kvs), (crc, kvs));
    // Payloads the mock has no executor for get TiKV's answer.
    let err = c
        .coprocessor(103, Default::default(), now, vec![KeyRange::new("a", "b")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported tp 103"), "{err}");
}

#[tokio::test]
async fn checksums_of_a_keyspace_count_user_keys() {
    use tikv_tokio::ApiVersion;
    let mock = tikv_integration_tests::mock_cluster(3, &[]).await;
    mock.cluster().create_keyspace("tenant-c");
    let mut config = Config::default().with_api_version(ApiVersion::V2);
    config.keyspace = Some("tenant-c".into());
    let c = TransactionClient::connect(&[mock.pd_address()], config)
        .await
        .unwrap();
    write(&c, &["k1", "k2"]).await;
    let now = c.current_timestamp().await.unwrap();
    let sum = c.checksum(KeyRange::new("k", "l"), now).await.unwrap();
    let (crc, kvs, bytes) = expected(&[("k1", "v-k1"), ("k2", "v-k2")]);
    assert_eq!(
        (sum.crc64_xor, sum.total_kvs, sum.total_bytes),
        (crc, kvs, bytes)
    );
}
