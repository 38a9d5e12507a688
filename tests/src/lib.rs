//! Shared helpers for the integration tests: a mock cluster on loopback with a given number
//! of stores and regions, and a RawKV client connected to it.

pub mod crashed;
pub mod elle;
pub mod linearizability;
pub mod sim;

use tikv_mock::ClusterConfig;
use tikv_mock::server::MockServer;
use tikv_tokio::TokioRuntime;

/// Starts a mock cluster with `stores` stores (3 replicas) and regions split at `splits`.
///
/// # Panics
///
/// If the cluster cannot be started (no loopback, or a bad split key): a test setup failure.
pub async fn mock_cluster(stores: usize, splits: &[&str]) -> MockServer {
    let config = ClusterConfig {
        stores,
        ..Default::default()
    };
    let server = MockServer::start(TokioRuntime::current(), config)
        .await
        .expect("mock cluster starts");
    {
        let mut cluster = server.cluster().lock();
        for key in splits {
            cluster
                .split_at(key.as_bytes())
                .expect("split the mock cluster");
        }
    }
    server
}

/// Like [`mock_cluster`], for transactional data: the split keys are user keys, encoded the way
/// TiKV writes transactional region boundaries (memcomparable).
pub async fn mock_txn_cluster(stores: usize, splits: &[&str]) -> MockServer {
    let server = mock_cluster(stores, &[]).await;
    {
        let mut cluster = server.cluster().lock();
        for key in splits {
            let encoded = tikv_core::codec::encode_memcomparable(key.as_bytes());
            cluster.split_at(&encoded).expect("split the mock cluster");
        }
    }
    server
}
