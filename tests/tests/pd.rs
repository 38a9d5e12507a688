//! The PD client against the mock PD over loopback: bootstrap, lookups, and TSO batching.

use std::collections::BTreeSet;

use tikv_driver::pd::{PdClient, PdConfig};
use tikv_driver::transport::GrpcTransport;
use tikv_integration_tests::mock_cluster;
use tikv_tokio::TokioRuntime;

async fn pd(address: &str) -> PdClient<TokioRuntime> {
    let rt = TokioRuntime::current();
    let transport = std::sync::Arc::new(GrpcTransport::new(rt.clone(), Default::default(), 1));
    PdClient::connect(
        rt,
        transport,
        &[format!("http://{address}")],
        PdConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn bootstraps_and_looks_up_regions_and_stores() {
    let mock = mock_cluster(3, &["m"]).await;
    let client = pd(mock.pd_address()).await;
    assert_eq!(client.cluster_id(), mock.cluster().lock().cluster_id());
    assert_eq!(client.leader_address().as_deref(), Some(mock.pd_address()));

    let left = client.get_region(b"a").await.unwrap().unwrap();
    let right = client.get_region(b"z").await.unwrap().unwrap();
    assert_eq!(left.range.end(), &"m".into());
    assert_eq!(right.range.start(), &"m".into());
    assert!(left.leader.is_some(), "PD names the leader");
    assert_eq!(
        client.get_prev_region(b"m").await.unwrap().unwrap().id,
        left.id
    );
    assert_eq!(
        client
            .get_region_by_id(right.id)
            .await
            .unwrap()
            .unwrap()
            .range,
        right.range
    );
    assert_eq!(client.scan_regions(b"", b"", 10).await.unwrap().len(), 2);

    let stores = client.get_all_stores().await.unwrap();
    assert_eq!(stores.len(), 3);
    let one = client.get_store(stores[0].id).await.unwrap();
    assert!(
        mock.store_addresses()
            .iter()
            .any(|(id, a)| *id == one.id && *a == one.address)
    );
    assert!(client.get_store(999).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_timestamp_requests_are_batched_unique_and_increasing() {
    let mock = mock_cluster(1, &[]).await;
    let client = pd(mock.pd_address()).await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..50 {
                    mine.push(client.get_timestamp().await.unwrap());
                }
                assert!(
                    mine.windows(2).all(|w| w[0] < w[1]),
                    "one caller's timestamps increase"
                );
                mine
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        for ts in t.await.unwrap() {
            assert!(all.insert(ts), "timestamp {ts} handed out twice");
        }
    }
    assert_eq!(all.len(), 64 * 50);
    let counters = mock.cluster().lock().counters().clone();
    assert_eq!(counters.tso_timestamps, 64 * 50);
    assert!(
        counters.tso_requests < 64 * 50,
        "callers shared requests ({} for {})",
        counters.tso_requests,
        64 * 50
    );

    let first = client.get_timestamps(10).await.unwrap();
    let next = client.get_timestamp().await.unwrap();
    assert!(
        next.as_u64() >= first.as_u64() + 10,
        "a block of 10 is reserved"
    );
    assert!(client.get_timestamps(0).await.is_err());
}

#[tokio::test]
async fn the_oracle_estimates_from_the_last_timestamp_and_external_ts_only_moves_forward() {
    use std::time::Duration;
    use tikv_tokio::{Error, PdErrorKind, PdErrorType, Timestamp};

    let mock = mock_cluster(1, &[]).await;
    let client = pd(mock.pd_address()).await;
    let ts = client.get_timestamps(3).await.unwrap();
    let last = client.last_timestamp();
    assert_eq!(last.as_u64(), ts.as_u64() + 2, "the last of a batch");
    assert_eq!(client.low_resolution_timestamp().await.unwrap(), last);
    let stale = client
        .stale_timestamp(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(stale < last && stale.physical_ms() + 6_000 > last.physical_ms());

    client.validate_read_ts(last, false).await.unwrap();
    let future = last.add_ms(600_000);
    assert!(matches!(
        client.validate_read_ts(future, false).await,
        Err(Error::FutureTsRead { .. })
    ));

    assert_eq!(client.external_timestamp().await.unwrap(), Timestamp::ZERO);
    let now = client.get_timestamp().await.unwrap();
    client.set_external_timestamp(now).await.unwrap();
    assert_eq!(client.external_timestamp().await.unwrap(), now);
    let invalid = |r: Result<(), Error>| {
        matches!(
            r,
            Err(Error::Pd {
                kind: PdErrorKind::Header(PdErrorType::InvalidValue),
                ..
            })
        )
    };
    assert!(
        invalid(client.set_external_timestamp(now).await),
        "not larger"
    );
    assert!(
        invalid(client.set_external_timestamp(future).await),
        "above PD's TSO"
    );
}
