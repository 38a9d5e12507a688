//! Transactions on API V2: the keyspace's transactional prefix on every key sent, ranges
//! bounded to the keyspace, user keys in everything returned (pairs and errors), keyspaces
//! and RawKV data isolated from each other.

use tikv_core::codec::encode_memcomparable;
use tikv_integration_tests::mock_cluster;
use tikv_tokio::{ApiVersion, Config, Error, Key, RawClient, TransactionClient};

fn v2(keyspace: Option<&str>) -> Config {
    let mut config = Config::default()
        .with_api_version(ApiVersion::V2)
        .with_rng_seed(11);
    config.keyspace = keyspace.map(str::to_string);
    config
}

#[tokio::test]
async fn transactions_work_inside_a_keyspace_and_only_there() {
    let mock = mock_cluster(3, &[]).await;
    let ks = mock.cluster().create_keyspace("tenant-t");
    // Region boundaries inside the keyspace's transactional range, memcomparable-encoded as
    // PD stores them under API V2: "f" and "p" land in different regions.
    {
        let mut c = mock.cluster().lock();
        for split in ["f", "p"] {
            let mut key = b"x".to_vec();
            key.extend_from_slice(&ks.to_be_bytes()[1..]);
            key.extend_from_slice(split.as_bytes());
            c.split_at(&encode_memcomparable(&key)).unwrap();
        }
    }
    let pd = [mock.pd_address()];
    let tenant = TransactionClient::connect(&pd, v2(Some("tenant-t")))
        .await
        .unwrap();
    let default = TransactionClient::connect(&pd, v2(None)).await.unwrap();
    let raw = RawClient::connect(&pd, v2(Some("tenant-t"))).await.unwrap();

    let mut t = tenant.begin().await.unwrap();
    for c in b'a'..=b'z' {
        t.put(vec![c], vec![c, c]).await.unwrap();
    }
    t.commit().await.unwrap();
    let mut d = default.begin().await.unwrap();
    d.put("a", "default's a").await.unwrap();
    d.commit().await.unwrap();
    raw.put("a", "raw a").await.unwrap();

    let r = tenant.begin().await.unwrap();
    assert_eq!(r.get("a").await.unwrap().as_deref(), Some(&b"aa"[..]));
    let got = r.batch_get(["a", "g", "q", "zz"]).await.unwrap();
    let keys: Vec<Key> = got.iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        ["a", "g", "q"].map(Key::from),
        "user keys, across regions"
    );
    let all = r.scan(.., 100).await.unwrap();
    assert_eq!(all.len(), 26, "the whole keyspace and nothing else");
    assert_eq!(
        (all[0].key.clone(), all[25].key.clone()),
        ("a".into(), "z".into())
    );
    let rev = r.reverse_scan("c".."x", 3).await.unwrap();
    let rev: Vec<Key> = rev.into_iter().map(|p| p.key).collect();
    assert_eq!(rev, ["w", "v", "u"].map(Key::from));

    let d = default.begin().await.unwrap();
    assert_eq!(
        d.get("a").await.unwrap().as_deref(),
        Some(&b"default's a"[..])
    );
    assert_eq!(
        d.scan(.., 100).await.unwrap().len(),
        1,
        "keyspaces are apart"
    );
    assert_eq!(raw.get("a").await.unwrap().as_deref(), Some(&b"raw a"[..]));
    assert_eq!(
        raw.scan(.., 100).await.unwrap().len(),
        1,
        "RawKV data is apart"
    );
}

#[tokio::test]
async fn errors_name_the_callers_keys() {
    let mock = mock_cluster(1, &[]).await;
    let pd = [mock.pd_address()];
    let c = TransactionClient::connect(&pd, v2(None)).await.unwrap();
    let mut seed = c.begin().await.unwrap();
    seed.put("taken", "1").await.unwrap();
    seed.commit().await.unwrap();

    let mut slow = c.begin().await.unwrap();
    let mut fast = c.begin().await.unwrap();
    fast.put("k", "fast").await.unwrap();
    fast.commit().await.unwrap();
    slow.put("k", "slow").await.unwrap();
    match slow.commit().await {
        Err(Error::WriteConflict { key, .. }) => assert_eq!(key, Key::from("k")),
        other => panic!("expected a write conflict on k, got {other:?}"),
    }

    let mut t = c.begin().await.unwrap();
    t.insert("taken", "again").await.unwrap();
    match t.commit().await {
        Err(Error::KeyExists { key }) => assert_eq!(key, Key::from("taken")),
        other => panic!("expected KeyExists on taken, got {other:?}"),
    }
}
