//! RawClient on tokio against the mock cluster over loopback gRPC.

use std::time::Duration;

use tikv_integration_tests::mock_cluster;
use tikv_tokio::{Config, Error, RawClient};

const SPLITS: &[&str] = &["b", "d", "k", "t"];

async fn client(pd: &str, batch_commands: bool) -> RawClient {
    let config = Config::default()
        .with_batch_commands(batch_commands)
        .with_rng_seed(7);
    RawClient::connect(&[pd], config)
        .await
        .expect("client connects")
}

async fn every_operation(batch_commands: bool) {
    let mock = mock_cluster(3, SPLITS).await;
    let c = client(mock.pd_address(), batch_commands).await;

    c.put("a1", "v1").await.unwrap();
    assert_eq!(c.get("a1").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(c.get("missing").await.unwrap(), None);

    let keys: Vec<String> = (0..200)
        .map(|i| format!("{}{i:03}", (b'a' + (i % 26) as u8) as char))
        .collect();
    c.batch_put(keys.iter().map(|k| (k.clone(), format!("val-{k}"))))
        .await
        .unwrap();
    let got = c.batch_get(keys.iter().cloned()).await.unwrap();
    assert_eq!(got.len(), 200);
    assert!(
        got.iter()
            .all(|p| p.value == format!("val-{}", String::from_utf8_lossy(p.key.as_bytes())))
    );

    // Scans cross the region boundaries at b, d, k and t, both ways.
    let all = c.scan(.., 10_000).await.unwrap();
    assert_eq!(all.len(), 201);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    let some = c.scan("c".."m", 1000).await.unwrap();
    assert!(
        some.iter()
            .all(|p| p.key >= "c".into() && p.key < "m".into())
    );
    let rev = c.reverse_scan("c".."m", 1000).await.unwrap();
    let mut fwd = some.clone();
    fwd.reverse();
    assert_eq!(rev, fwd);
    let limited = c.reverse_scan(.., 5).await.unwrap();
    assert_eq!(limited.len(), 5);
    assert_eq!(limited[0].key, all.last().unwrap().key);
    let keys_only = c.scan_keys("a".."c", 1000).await.unwrap();
    assert!(!keys_only.is_empty());

    c.delete("a1").await.unwrap();
    assert_eq!(c.get("a1").await.unwrap(), None);
    c.batch_delete(keys.iter().take(10).cloned()).await.unwrap();
    assert_eq!(
        c.batch_get(keys.iter().take(10).cloned())
            .await
            .unwrap()
            .len(),
        0
    );
    c.delete_range("c".."l").await.unwrap();
    assert!(c.scan("c".."l", 1000).await.unwrap().is_empty());

    let sum = c.checksum(..).await.unwrap();
    let remaining = c.scan(.., 10_000).await.unwrap();
    assert_eq!(sum.total_kvs, remaining.len() as u64);

    // TTL and CAS.
    c.put_with_ttl("ttl-key", "x", 100).await.unwrap();
    let ttl = c.get_key_ttl("ttl-key").await.unwrap().unwrap();
    assert!(ttl > 0 && ttl <= 100, "ttl {ttl}");
    let cas = c.with_atomic_for_cas();
    let r = cas
        .compare_and_swap("cas", None::<&str>, "1")
        .await
        .unwrap();
    assert!(r.swapped && r.previous.is_none());
    let r = cas.compare_and_swap("cas", Some("0"), "2").await.unwrap();
    assert!(!r.swapped && r.previous.as_deref() == Some(&b"1"[..]));
    assert!(
        c.compare_and_swap("cas", Some("1"), "2").await.is_err(),
        "CAS needs atomic mode"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_with_batch_commands() {
    every_operation(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_unary() {
    every_operation(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_and_leader_moves_during_a_workload_lose_nothing() {
    let mock = mock_cluster(3, &["m"]).await;
    let c = client(mock.pd_address(), true).await;
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..300u32 {
                let key = format!("{:02}-{i:04}", i % 26);
                c.put(key, i.to_string()).await.unwrap();
            }
        })
    };
    for (n, key) in ["05", "10", "15", "20"].iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut cluster = mock.cluster().lock();
        cluster.split_at(key.as_bytes()).unwrap();
        let region = cluster.topology().regions().next().map(|r| r.id()).unwrap();
        let _ = cluster.transfer_leader(region, (n as u64 % 3) + 1);
    }
    writer.await.unwrap();
    let all = c.scan(.., 10_000).await.unwrap();
    assert_eq!(all.len(), 300, "every acknowledged write is there");
}

#[tokio::test]
async fn bad_input_is_a_clear_error() {
    let mock = mock_cluster(1, &[]).await;
    let c = client(mock.pd_address(), true).await;
    assert!(matches!(
        c.scan("b".."a", 10).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.scan(.., 1_000_000).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(c.scan(.., 0).await.unwrap().is_empty());
    let huge = vec![0u8; 10 * 1024];
    assert!(
        c.put(huge, "v").await.is_err(),
        "keys over TiKV's 8 KiB limit are rejected"
    );
}

#[tokio::test]
async fn unreachable_pd_fails_fast_with_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let e = RawClient::connect(&[address], Config::default())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("no PD endpoint answered"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_going_down_is_ridden_out() {
    let mock = mock_cluster(3, &["m"]).await;
    let c = client(mock.pd_address(), true).await;
    c.put("a", "1").await.unwrap();
    // The leader's store dies; the region's leadership moves to another store.
    let (region, leader_store) = {
        let cluster = mock.cluster().lock();
        let r = cluster.topology().regions().next().unwrap();
        (r.id(), r.leader().map(|p| p.store_id).unwrap())
    };
    {
        let mut cluster = mock.cluster().lock();
        cluster.store_down(leader_store).unwrap();
        let other = (1..=3).find(|s| *s != leader_store).unwrap();
        cluster.transfer_leader(region, other).unwrap();
    }
    c.put("a", "2").await.unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));
    mock.cluster().lock().store_up(leader_store).unwrap();
}

#[tokio::test]
async fn oversized_values_are_refused_clearly() {
    let mock = mock_cluster(1, &[]).await;
    let c = client(mock.pd_address(), true).await;
    let e = c.put("big", vec![0u8; 9 << 20]).await.unwrap_err();
    assert!(e.to_string().contains("raft entry too large"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_leader_change_is_followed() {
    let config = tikv_mock::ClusterConfig {
        stores: 3,
        pd_members: 3,
        ..Default::default()
    };
    let mock = tikv_mock::server::MockServer::start(tikv_tokio::TokioRuntime::current(), config)
        .await
        .unwrap();
    let c = client(mock.pd_address(), true).await;
    c.put("before", "1").await.unwrap();
    let ts1 = c.pd().get_timestamp().await.unwrap();
    mock.cluster().lock().transfer_pd_leader(2).unwrap();
    // New regions force PD lookups, which now meet a follower first.
    mock.cluster().lock().split_at(b"m").unwrap();
    c.put("after", "2").await.unwrap();
    c.put("zzz", "3").await.unwrap();
    let ts2 = c.pd().get_timestamp().await.unwrap();
    assert!(
        ts2 > ts1,
        "timestamps keep increasing across the leader change"
    );
    assert_eq!(
        c.pd().leader_address().as_deref(),
        Some(mock.pd_addresses()[2].as_str())
    );
    assert_eq!(c.scan(.., 10).await.unwrap().len(), 3);
}

/// Streamed scans page through any number of pairs across regions, in order both ways, and
/// report a bad range as their one item.
#[tokio::test]
async fn streamed_scans_cover_large_ranges_in_pages() {
    use futures_util::StreamExt;
    let mock = mock_cluster(3, SPLITS).await;
    let c = client(mock.pd_address(), true).await;
    // 700 keys over five regions: several pages of 256.
    let keys: Vec<String> = (0..700)
        .map(|i| format!("{}{i:04}", ["a", "c", "h", "p", "w"][i % 5]))
        .collect();
    c.batch_put(keys.iter().map(|k| (k.clone(), "v")))
        .await
        .unwrap();
    let mut sorted = keys.clone();
    sorted.sort();

    let forward: Vec<String> = c
        .scan_stream(..)
        .map(|p| String::from_utf8(p.unwrap().key.to_bytes().to_vec()).unwrap())
        .collect()
        .await;
    assert_eq!(forward, sorted);
    let keys_only: Vec<_> = c.scan_keys_stream("c".."p").collect().await;
    assert_eq!(keys_only.len(), 280, "the c and h keys");
    let backward: Vec<String> = c
        .reverse_scan_stream(..)
        .map(|p| String::from_utf8(p.unwrap().key.to_bytes().to_vec()).unwrap())
        .collect()
        .await;
    sorted.reverse();
    assert_eq!(backward, sorted);

    let inverted: Vec<_> = c.scan_stream("z".."a").collect().await;
    assert!(matches!(inverted[..], [Err(Error::InvalidArgument(_))]));
}
