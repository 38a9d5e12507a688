//! RawClient on async-io (async-std's and smol's reactor) against the mock cluster, which runs
//! on its own tokio thread as a separate server would.

use tikv_async_std::{AsyncIoRuntime, Config, RawClient};
use tikv_integration_tests::mock_cluster;

/// Starts the mock on a background tokio runtime; returns its PD address and keeps it alive.
fn background_mock() -> (String, std::sync::mpsc::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mock = mock_cluster(3, &["g", "p"]).await;
            addr_tx.send(mock.pd_address().to_string()).unwrap();
            // Serve until the test ends (its sender drops).
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            drop(mock);
        });
    });
    (addr_rx.recv().unwrap(), stop_tx)
}

async fn workload(client: RawClient) {
    client
        .batch_put((0..50).map(|i| (format!("k{i:02}"), format!("v{i}"))))
        .await
        .unwrap();
    client.put("a", "first").await.unwrap();
    client.put("z", "last").await.unwrap();
    assert_eq!(
        client.get("k07").await.unwrap().as_deref(),
        Some(&b"v7"[..])
    );
    let all = client.scan(.., 1000).await.unwrap();
    assert_eq!(all.len(), 52);
    let rev = client.reverse_scan(.., 3).await.unwrap();
    assert_eq!(
        rev.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        vec!["z".into(), "k49".into(), "k48".into()]
    );
    client.delete_range("k".."l").await.unwrap();
    assert_eq!(client.scan(.., 1000).await.unwrap().len(), 2);
}

#[test]
fn under_async_std() {
    let (pd, _stop) = background_mock();
    async_std::task::block_on(async {
        let client = RawClient::connect(&[pd], Config::default()).await.unwrap();
        workload(client).await;
    });
}

#[test]
fn under_smol() {
    let (pd, _stop) = background_mock();
    smol::block_on(async {
        let runtime = AsyncIoRuntime::with_spawner(|task| smol::spawn(task).detach());
        let client = RawClient::connect_with(runtime, &[pd], Config::default())
            .await
            .unwrap();
        workload(client).await;
    });
}
