//! The mock's region layout as a real cluster has it, seen by clients over gRPC: what
//! `tikv-cli mock --stores 3 --regions 8` builds (`MockServer::builder()`), in each API mode.
//! Transactional clients decode region boundaries as memcomparable-encoded keys, so the even
//! splits must be written that way; under API V2 regions are also split at the DEFAULT
//! keyspace's boundaries, as PD does when it creates a keyspace.

use tikv_mock::ApiMode;
use tikv_mock::server::MockServer;
use tikv_tokio::{ApiVersion, Config, RawClient, TokioRuntime, TransactionClient};

async fn mock(api: ApiMode) -> MockServer {
    MockServer::builder()
        .stores(3)
        .regions(8)
        .api(api)
        .spread_leaders(true)
        .start(TokioRuntime::current())
        .await
        .unwrap()
}

fn config(version: ApiVersion) -> Config {
    Config::default().with_api_version(version).with_rng_seed(3)
}

/// Keys whose leading bytes spread over all eight even regions.
fn spread_keys() -> Vec<Vec<u8>> {
    (0u8..16).map(|i| vec![i * 16 + 1, b'k']).collect()
}

/// Writes a key in every region, commits, and reads them back with a scan over the whole
/// key space and one to its end.
async fn transactions_work(mock: &MockServer, version: ApiVersion) {
    let c = TransactionClient::connect(&[mock.pd_address()], config(version))
        .await
        .unwrap();
    let mut t = c.begin().await.unwrap();
    for k in spread_keys() {
        t.put(k.clone(), k).await.unwrap();
    }
    t.commit().await.unwrap();
    let t = c.begin().await.unwrap();
    let all = t.scan(.., 100).await.unwrap();
    assert_eq!(all.len(), 16, "{version:?}: a scan across every region");
    let tail = t.scan(vec![0x80u8].., 100).await.unwrap();
    assert_eq!(
        tail.len(),
        8,
        "{version:?}: a scan to the end of the key space"
    );
    let back = t.reverse_scan(.., 3).await.unwrap();
    assert_eq!(back[0].key.as_bytes(), &[0xf1, b'k'][..]);
}

#[tokio::test]
async fn transactional_clients_work_against_even_regions_in_api_v1() {
    let mock = mock(ApiMode::V1).await;
    transactions_work(&mock, ApiVersion::V1).await;
}

#[tokio::test]
async fn transactional_clients_work_against_even_regions_in_api_v2() {
    let mock = mock(ApiMode::V2).await;
    transactions_work(&mock, ApiVersion::V2).await;
}

#[tokio::test]
async fn transactional_clients_of_both_versions_work_against_the_mixed_mode() {
    let mock = mock(ApiMode::V1AndV2).await;
    transactions_work(&mock, ApiVersion::V1).await;
    transactions_work(&mock, ApiVersion::V2).await;
}

#[tokio::test]
async fn raw_clients_route_on_encoded_boundaries_too() {
    let mock = mock(ApiMode::V1).await;
    let c = RawClient::connect(&[mock.pd_address()], config(ApiVersion::V1))
        .await
        .unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        spread_keys().into_iter().map(|k| (k.clone(), k)).collect();
    c.batch_put(pairs).await.unwrap();
    assert_eq!(c.scan(.., 100).await.unwrap().len(), 16);
    assert_eq!(c.scan(vec![0x80u8].., 100).await.unwrap().len(), 8);
}

#[tokio::test]
async fn api_v2_regions_end_at_the_keyspace_and_unbounded_scans_stay_in_it() {
    let mock = mock(ApiMode::V2).await;
    // PD's regions (as its HTTP API and every client see them) start at the DEFAULT
    // keyspace's raw and transactional boundaries.
    let starts: Vec<Vec<u8>> = {
        let cluster = mock.cluster().lock();
        cluster
            .topology()
            .regions()
            .map(|r| r.meta.start_key.to_vec())
            .collect()
    };
    for boundary in [&b"r\0\0\0"[..], b"r\0\0\x01", b"x\0\0\0", b"x\0\0\x01"] {
        let encoded = tikv_core::codec::encode_memcomparable(boundary);
        assert!(
            starts.contains(&encoded),
            "no region starts at {boundary:?}"
        );
    }
    // An unbounded raw scan from inside the keyspace, across its last region, ends at the
    // keyspace's end with user keys only.
    let c = RawClient::connect(&[mock.pd_address()], config(ApiVersion::V2))
        .await
        .unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        spread_keys().into_iter().map(|k| (k.clone(), k)).collect();
    c.batch_put(pairs).await.unwrap();
    let from_k1 = c.scan(vec![0x11u8].., 100).await.unwrap();
    assert_eq!(from_k1.len(), 15);
    assert!(from_k1.iter().all(|p| p.key.len() == 2));
    // A keyspace created later gets its own boundaries too.
    let id = mock.cluster().create_keyspace("tenant");
    let starts: Vec<Vec<u8>> = {
        let cluster = mock.cluster().lock();
        cluster
            .topology()
            .regions()
            .map(|r| r.meta.start_key.to_vec())
            .collect()
    };
    let mut tenant_raw = b"r".to_vec();
    tenant_raw.extend_from_slice(&id.to_be_bytes()[1..]);
    assert!(starts.contains(&tikv_core::codec::encode_memcomparable(&tenant_raw)));
}
