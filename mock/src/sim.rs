//! Deterministic simulation: the real client on virtual time, talking to the mock cluster
//! through an in-memory network with seeded faults.
//!
//! ```
//! use std::time::Duration;
//! use tikv_mock::sim::{Faults, SimNetwork, SimRuntime, PD_ADDRESS};
//! use tikv_mock::{Cluster, ClusterConfig, server::SharedCluster};
//!
//! let runtime = SimRuntime::new();
//! let cluster = SharedCluster::new(Cluster::new(ClusterConfig { stores: 3, ..Default::default() }));
//! let network = SimNetwork::new(runtime.clone(), cluster, Faults::lossy(), 42);
//! let rt = runtime.clone();
//! let out = runtime.block_on(async move {
//!     let config = tikv_mock::sim::client::Config::default().with_rng_seed(42);
//!     let network = std::sync::Arc::new(network);
//!     let client = tikv_mock::sim::client::RawClient::connect_over(rt, network, &[PD_ADDRESS], config)
//!         .await
//!         .unwrap();
//!     client.put("k", "v").await.unwrap();
//!     client.get("k").await.unwrap()
//! }, Duration::from_secs(600));
//! assert_eq!(out.unwrap().as_deref(), Some(&b"v"[..]));
//! ```

mod network;
mod runtime;

pub use network::{Faults, PD_ADDRESS, SimNetwork, pd_member_address};
pub use runtime::{SimRuntime, SimSleep, SimStop};

/// The client API on the simulator's runtime, the same surface as `tikv_tokio` and
/// `tikv_async_std`: connect with `connect_over(runtime, Arc::new(network), &[PD_ADDRESS],
/// config)` to run a workload on virtual time.
pub mod client {
    tikv_driver::facade!(super::SimRuntime);
}
