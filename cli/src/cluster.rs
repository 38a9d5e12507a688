//! Where commands run: a real cluster named by `--pd`, or a mock cluster embedded in this
//! process.

use std::time::Duration;

use tikv_mock::ClusterConfig;
use tikv_mock::server::MockServer;
use tikv_tokio::Config;
use tikv_tokio::{RawClient, TokioRuntime};

use crate::error::CliError;

/// Starts a mock cluster on loopback with `stores` stores (up to 3 replicas per region),
/// split at `splits`.
pub(crate) async fn start_mock(
    stores: usize,
    splits: &[Vec<u8>],
    host: &str,
) -> Result<MockServer, CliError> {
    if stores == 0 {
        return Err(CliError::msg("a mock cluster needs at least one store"));
    }
    let config = ClusterConfig {
        stores,
        ..Default::default()
    };
    let cluster = tikv_mock::Cluster::new(config);
    let server = MockServer::start_on(TokioRuntime::current(), cluster, host)
        .await
        .map_err(|e| CliError::msg(format!("cannot start the mock cluster on {host}: {e}")))?;
    {
        // The cluster lock is a plain mutex: take it only for these synchronous updates.
        let mut cluster = server.cluster().lock();
        for key in splits {
            cluster.split_at(key).map_err(|e| {
                CliError::msg(format!(
                    "cannot split the mock cluster at '{}': {e}",
                    crate::format::escape(key)
                ))
            })?;
        }
    }
    Ok(server)
}

/// Moves region leaders round-robin over the mock's stores, so that work over many regions
/// reaches every store (a fresh mock has every leader on its first store).
pub(crate) fn spread_leaders(server: &MockServer) -> Result<(), CliError> {
    // The cluster lock is a plain mutex: take it only for these synchronous updates.
    let mut cluster = server.cluster().lock();
    let stores: Vec<u64> = cluster.topology().stores().map(|s| s.meta.id).collect();
    let regions: Vec<u64> = cluster.topology().regions().map(|r| r.id()).collect();
    for (i, region) in regions.iter().enumerate() {
        cluster
            .transfer_leader(*region, stores[i % stores.len()])
            .map_err(|e| {
                CliError::msg(format!("cannot move the leader of region {region}: {e}"))
            })?;
    }
    Ok(())
}

/// Connects a RawKV client to `endpoints`, within `timeout` when one is given (otherwise the
/// client's own PD timeout bounds each attempt).
pub(crate) async fn connect(
    endpoints: &[String],
    timeout: Option<Duration>,
) -> Result<RawClient, CliError> {
    connect_with(endpoints, timeout, Config::default()).await
}

/// Like [`connect`], with a client configuration.
pub(crate) async fn connect_with(
    endpoints: &[String],
    timeout: Option<Duration>,
    config: Config,
) -> Result<RawClient, CliError> {
    let connecting = RawClient::connect(endpoints, config);
    let shown = endpoints.join(",");
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, connecting).await.map_err(|_| {
            CliError::msg(format!(
                "cannot connect to PD at {shown}: timed out after {t:?}"
            ))
        })?,
        None => connecting.await,
    };
    let client =
        result.map_err(|e| CliError::msg(format!("cannot connect to PD at {shown}: {e}")))?;
    Ok(match timeout {
        Some(t) => client.with_timeout(t),
        None => client,
    })
}
