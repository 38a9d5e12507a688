//! RawClient on API V2: keyspaces by name, keys prefixed and stripped, ranges bounded to the
//! keyspace, region boundaries in memcomparable form (split while the client works).

use tikv_core::codec::encode_memcomparable;
use tikv_integration_tests::mock_cluster;
use tikv_tokio::{ApiVersion, Config, RawClient};

async fn v2_client(pd: &str, keyspace: Option<&str>) -> RawClient {
    let mut config = Config::default()
        .with_api_version(ApiVersion::V2)
        .with_rng_seed(3);
    config.keyspace = keyspace.map(str::to_string);
    RawClient::connect(&[pd], config).await.unwrap()
}

#[tokio::test]
async fn keyspaces_are_isolated_and_prefixes_invisible() {
    let mock = mock_cluster(3, &[]).await;
    let ks = mock.cluster().create_keyspace("tenant-a");
    // Region boundaries inside the keyspace, as PD stores them for API V2.
    {
        let mut c = mock.cluster().lock();
        let mut prefix = b"r".to_vec();
        prefix.extend_from_slice(&ks.to_be_bytes()[1..]);
        for split in ["f", "p"] {
            let mut key = prefix.clone();
            key.extend_from_slice(split.as_bytes());
            c.split_at(&encode_memcomparable(&key)).unwrap();
        }
    }
    let a = v2_client(mock.pd_address(), Some("tenant-a")).await;
    let default = v2_client(mock.pd_address(), None).await;
    assert_eq!(a.keyspace_id(), Some(ks));
    assert_eq!(default.keyspace_id(), Some(0));

    a.batch_put((b'a'..=b'z').map(|c| (vec![c], vec![c, c])))
        .await
        .unwrap();
    default.put("a", "default's a").await.unwrap();

    assert_eq!(a.get("a").await.unwrap().as_deref(), Some(&b"aa"[..]));
    assert_eq!(
        default.get("a").await.unwrap().as_deref(),
        Some(&b"default's a"[..])
    );
    assert_eq!(
        default.get("b").await.unwrap(),
        None,
        "other keyspace's keys are invisible"
    );

    let all = a.scan(.., 100).await.unwrap();
    assert_eq!(all.len(), 26, "the scan stays inside the keyspace");
    assert_eq!(all[0].key, "a".into(), "prefix stripped");
    let rev = a.reverse_scan("c".."x", 100).await.unwrap();
    assert_eq!(rev.len(), 21);
    assert_eq!(rev[0].key, "w".into());
    let last = a.reverse_scan(.., 1).await.unwrap();
    assert_eq!(last[0].key, "z".into());
    assert_eq!(a.batch_get(["a", "q", "zz"]).await.unwrap().len(), 2);

    a.delete_range("g".."r").await.unwrap();
    assert_eq!(a.scan(.., 100).await.unwrap().len(), 26 - 11);
    assert_eq!(default.scan(.., 100).await.unwrap().len(), 1);
    assert_eq!(a.checksum(..).await.unwrap().total_kvs, 15);
}

#[tokio::test]
async fn unknown_keyspace_is_a_clear_error() {
    let mock = mock_cluster(1, &[]).await;
    let config = Config::default()
        .with_api_version(ApiVersion::V2)
        .with_keyspace("nope");
    let e = RawClient::connect(&[mock.pd_address()], config)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("keyspace nope not found"), "{e}");
}
