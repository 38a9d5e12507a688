//! A faithful mock of a PD + TiKV cluster, as a sans-IO engine.
//!
//! [`Cluster`] holds the whole cluster — stores, regions, RawKV data, the timestamp oracle,
//! injected faults and counters — and answers requests synchronously. There is no
//! networking, no threads and no clock inside: callers pass the time (`now_ms`, milliseconds
//! since the Unix epoch), randomness comes from a seeded generator, and every collection is
//! ordered, so the same inputs always give the same outputs.
//!
//! The engine behaves as TiKV and PD do, closely enough that any TiKV client works against
//! it unchanged: region checks in TiKV's order with TiKV's region errors, RawKV semantics
//! (TTL, reverse scans, CAS, CRC-64 checksums), PD's region and store queries and TSO block
//! arithmetic. Fronts (a gRPC server, an in-process transport for simulation) call it
//! through [`Cluster::handle_tikv`], [`Cluster::handle_pd`] and
//! [`Cluster::handle_batch_commands`], or through the typed [`Cluster::tikv`] and
//! [`Cluster::pd`].
//!
//! ```
//! use tikv_mock::{Cluster, ClusterConfig};
//! use tikv_proto::kvrpcpb::{Context, RawGetRequest, RawPutRequest};
//! use tikv_proto::pdpb::{GetRegionRequest, RequestHeader};
//! use tikv_proto::{pdpb::pd_service, tikvpb::tikv_service};
//!
//! let mut cluster = Cluster::new(ClusterConfig::default());
//! let now = 1_700_000_000_000;
//! let header = Some(RequestHeader { cluster_id: cluster.cluster_id(), ..Default::default() });
//! let located = cluster
//!     .pd::<pd_service::GetRegion>(GetRegionRequest { header, region_key: "k".into(), ..Default::default() }, now)
//!     .unwrap();
//! let region = located.region.unwrap();
//! let leader = located.leader.unwrap();
//! let ctx = Context {
//!     region_id: region.id,
//!     region_epoch: region.region_epoch,
//!     peer: Some(leader),
//!     ..Default::default()
//! };
//! let put = RawPutRequest { context: Some(ctx.clone()), key: "k".into(), value: "v".into(), ..Default::default() };
//! cluster.tikv::<tikv_service::RawPut>(leader.store_id, put, now).unwrap();
//! let get = RawGetRequest { context: Some(ctx), key: "k".into(), ..Default::default() };
//! let got = cluster.tikv::<tikv_service::RawGet>(leader.store_id, get, now).unwrap();
//! assert_eq!(got.value, "v");
//! ```
//!
//! The fronts are features, both on by default: `server` (the gRPC server, [`server`]) and
//! `sim` (the simulated network and runtime, `sim`). Without them the crate is the engine
//! alone, with no tokio, driver or runtime among its dependencies.
//!
//! The transactional (Percolator) engine ([`txn`]) plugs into the same [`Cluster`],
//! topology and checks: KvGet/KvBatchGet/KvScan, prewrite (optimistic, pessimistic, async
//! commit, 1PC), commit, rollback, cleanup, check-txn-status, check-secondary-locks,
//! resolve-lock, heartbeat, scan-lock, pessimistic lock (with lock waiting and deadlock
//! detection) and pessimistic rollback, with TiKV's semantics and errors.

mod check;
mod cluster;
pub mod codec;
mod config;
mod counters;
mod dispatch;
mod error;
mod fault;
mod gc;
mod pd;
mod pd_http;
mod pd_members;
mod raw;
mod region_error;
pub mod rng;
mod scheduling;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;
mod split;
#[cfg(test)]
mod test_util;
pub mod topology;
pub mod tso;
pub mod txn;

pub use cluster::{Cluster, HasContext, RegionErrorResponse};
pub use config::{ApiMode, ClusterConfig};
pub use counters::Counters;
pub use dispatch::{PdMethod, TikvMethod};
pub use error::{Code, FailureKind, MockError};
pub use fault::{FaultAction, FaultFilter, FaultId, Faults};
pub use gc::NULL_KEYSPACE_ID;
pub use pd_http::HttpReply;
pub use pd_members::UnknownPdMember;
pub use txn::LockWaitOutcome;
pub use txn::lock_wait::LockWaitId;

/// Builders for region errors as TiKV words them, for fault injection.
pub mod region_errors {
    pub use crate::region_error::{
        data_is_not_ready, epoch_not_match, flashback_in_progress, flashback_not_prepared,
        key_not_in_region, max_timestamp_not_synced, mismatch_peer_id, missing_epoch, not_leader,
        other, raft_entry_too_large, region_not_found, server_is_busy, stale_command,
        store_not_match,
    };
}
