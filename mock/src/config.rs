//! Cluster configuration: what the mock pretends to be.

use tikv_proto::kvrpcpb::ApiVersion;

/// Which API versions the mock TiKV storage accepts (TiKV's `storage.api-version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiMode {
    /// `api-version = 1`: raw and transactional requests of API V1, no TTL.
    V1,
    /// `api-version = 1` with `enable-ttl`: raw requests of API V1 only, TTL allowed.
    V1Ttl,
    /// `api-version = 2`: keys carry a mode prefix (`r` raw, `x` txn); V1 requests are
    /// accepted only for TiDB keys of transactional commands.
    V2,
    /// A mock-only convenience: V1 requests are served as by a `V1Ttl` store and V2 requests
    /// as by a `V2` store, so one cluster serves clients of either version. Real TiKV cannot
    /// do this; the two key spaces simply share the cluster.
    V1AndV2,
}

impl ApiMode {
    /// The storage version TiKV would judge a request of `request` version against.
    pub(crate) fn storage_for(self, request: ApiVersion) -> ApiVersion {
        match self {
            ApiMode::V1 => ApiVersion::V1,
            ApiMode::V1Ttl => ApiVersion::V1ttl,
            ApiMode::V2 => ApiVersion::V2,
            ApiMode::V1AndV2 => match request {
                ApiVersion::V2 => ApiVersion::V2,
                _ => ApiVersion::V1ttl,
            },
        }
    }
}

/// Static parameters of a mock cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The PD cluster id reported in every PD response header.
    pub cluster_id: u64,
    /// Number of TiKV stores created at start.
    pub stores: usize,
    /// Replicas per region at start (capped by the number of stores).
    pub replicas: usize,
    /// Storage API version(s) accepted.
    pub api: ApiMode,
    /// Seed of the cluster's random generator.
    pub seed: u64,
    /// TiKV `storage.max-key-size`: longer keys are rejected on writes (8 KiB by default).
    pub max_key_size: usize,
    /// TiKV `raftstore.raft-entry-max-size`: larger writes get `RaftEntryTooLarge` (8 MiB).
    pub raft_entry_max_size: u64,
    /// Split a region automatically once it holds more than this many raw keys (like TiKV's
    /// split checker); `None` disables automatic splits.
    pub auto_split_keys: Option<usize>,
    /// The version string stores report to PD.
    pub store_version: String,
    /// Number of PD members (at least 1). Member 0 leads at start; only the leader serves
    /// most calls, as on a real PD (see `Cluster::transfer_pd_leader`).
    pub pd_members: usize,
    /// How many `GetOperator` calls see a scheduling operator (scatter) as `RUNNING` before
    /// it is applied and reported as `SUCCESS`. `0` applies operators as they are created.
    /// A count of calls rather than time keeps runs reproducible whatever the clock.
    pub operator_running_polls: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            cluster_id: 7_000_000_000_000_000_001,
            stores: 1,
            replicas: 3,
            api: ApiMode::V1AndV2,
            seed: 0,
            max_key_size: 8 * 1024,
            raft_entry_max_size: 8 * 1024 * 1024,
            auto_split_keys: None,
            store_version: "8.5.0".to_owned(),
            pd_members: 1,
            operator_running_polls: 1,
        }
    }
}
