//! Client configuration: one value per client, no process globals.
//!
//! Defaults are client-go's (see the field docs for the client-go name of each).

use std::time::Duration;

/// The TiKV API version requests are encoded for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// API V1: raw and transactional keys share no prefix; no keyspaces.
    #[default]
    V1,
    /// API V2: keys carry a mode byte (`r` raw, `x` txn) and a 3-byte keyspace id.
    V2,
}

/// TLS material for connections to TiKV and PD (PEM files), re-read on every new connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// CA certificate(s) that sign the servers' certificates.
    pub ca: std::path::PathBuf,
    /// This client's certificate chain, for servers that require client certificates.
    pub cert: Option<std::path::PathBuf>,
    /// The private key of `cert`.
    pub key: Option<std::path::PathBuf>,
}

/// Which kind of data a client works on; decides how region boundaries are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyMode {
    /// RawKV.
    #[default]
    Raw,
    /// Transactional (Percolator) data.
    Txn,
}

/// Configuration of one client.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How long a cached region lives after its last use (`regionCacheTTLSec`, 600 s).
    pub region_cache_ttl: Duration,
    /// Random extra life per region entry, so entries do not expire together
    /// (`regionCacheTTLJitterSec`, 60 s).
    pub region_cache_ttl_jitter: Duration,
    /// Timeout of one TiKV RPC (`ReadTimeoutShort`, 30 s).
    pub rpc_timeout: Duration,
    /// Execution limit TiKV applies to writes (`max_execution_duration_ms`,
    /// `MaxWriteExecutionTime`, 20 s).
    pub max_write_execution: Duration,
    /// Timeout of one PD RPC (`PDServerTimeout`, 3 s).
    pub pd_timeout: Duration,
    /// Multiplier of every operation's backoff budget (`BackOffWeight`, 2).
    pub backoff_weight: u32,
    /// Keys per raw batch get/delete request (`rawBatchPairCount`, 512).
    pub raw_batch_pair_count: usize,
    /// Bytes (keys + values) per raw batch put request (`rawBatchPutSize`, 16 KiB).
    pub raw_batch_put_size: usize,
    /// Largest raw scan limit (`MaxRawKVScanLimit`, 10240).
    pub raw_scan_limit_max: u32,
    /// How many region requests of one multi-region operation run at once (client-go does not
    /// bound this; unbounded fan-out hurts tail latency, so we do).
    pub region_concurrency: usize,
    /// API version of requests.
    pub api_version: ApiVersion,
    /// RawKV or transactional data. Set by the client type (a `TransactionClient` sets `Txn`);
    /// there is no need to set it by hand.
    pub key_mode: KeyMode,
    /// API V2: the keyspace to work in, by name (`None`: `DEFAULT`). The client looks up its
    /// id with PD's `LoadKeyspace` when it connects.
    pub keyspace: Option<String>,
    /// API V2: the keyspace id, filled in by the client at connect time from `keyspace`.
    pub keyspace_id: Option<u32>,
    /// `Context.request_source` stamped on every request (for TiKV's accounting).
    pub request_source: String,
    /// `Context.resource_group_tag` stamped on every request.
    pub resource_group_tag: Vec<u8>,
    /// Connections (and BatchCommands streams) per TiKV store (`GrpcConnectionCount`, 4).
    pub grpc_connection_count: usize,
    /// Most requests per BatchCommands message (`MaxBatchSize`, 128).
    pub max_batch_size: usize,
    /// Send batchable requests inside BatchCommands streams (client-go's default); `false`
    /// sends every request as its own unary call.
    pub batch_commands: bool,
    /// Commit transactions that fit in one prewrite request in one phase (1PC: TiKV commits
    /// at prewrite). client-go's `Enable1PC` is off by default; so is this.
    pub try_one_pc: bool,
    /// TLS for every connection; `None` for cleartext.
    pub security: Option<Security>,
    /// Seed of the client's random generator (jitter, replica choice); `None` seeds from the
    /// driver's entropy. Set it in tests for reproducible runs.
    pub rng_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region_cache_ttl: Duration::from_secs(600),
            region_cache_ttl_jitter: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(30),
            max_write_execution: Duration::from_secs(20),
            pd_timeout: Duration::from_secs(3),
            backoff_weight: 2,
            raw_batch_pair_count: 512,
            raw_batch_put_size: 16 * 1024,
            raw_scan_limit_max: 10240,
            region_concurrency: 16,
            api_version: ApiVersion::V1,
            key_mode: KeyMode::Raw,
            keyspace: None,
            keyspace_id: None,
            request_source: String::new(),
            resource_group_tag: Vec::new(),
            grpc_connection_count: 4,
            max_batch_size: 128,
            batch_commands: true,
            try_one_pc: false,
            security: None,
            rng_seed: None,
        }
    }
}

impl Config {
    /// How PD and TiKV write region boundaries for this API version.
    pub fn region_keys(&self) -> crate::codec::RegionKeys {
        // TiKV encodes transactional keys (and every key under API V2) before using them as
        // region boundaries; API V1 raw keys are boundaries as they are.
        match (self.api_version, self.key_mode) {
            (ApiVersion::V1, KeyMode::Raw) => crate::codec::RegionKeys::Raw,
            _ => crate::codec::RegionKeys::MemComparable,
        }
    }

    /// The effective budget for an operation whose client-go budget is `base`.
    pub fn budget(&self, base: Duration) -> Duration {
        base.saturating_mul(self.backoff_weight.max(1))
    }
}
