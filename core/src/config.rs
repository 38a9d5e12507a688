//! Client configuration: one value per client, no process globals.
//!
//! Defaults are client-go's (see the field docs for the client-go name of each). `Config` is
//! `#[non_exhaustive]`: start from `Config::default()` and set what differs, with the
//! chainable `with_*` methods or by assigning fields, so that new settings are not a
//! breaking change:
//!
//! ```
//! use std::time::Duration;
//! use tikv_core::{ApiVersion, Config};
//!
//! let config = Config::default()
//!     .with_api_version(ApiVersion::V2)
//!     .with_keyspace("tenant-a")
//!     .with_rpc_timeout(Duration::from_secs(5));
//! assert_eq!(config.keyspace.as_deref(), Some("tenant-a"));
//! ```

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
///
/// ```
/// let tls = tikv_core::config::Security::new("ca.pem").with_client_cert("client.pem", "client.key");
/// assert!(tls.cert.is_some());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Security {
    /// CA certificate(s) that sign the servers' certificates.
    pub ca: std::path::PathBuf,
    /// This client's certificate chain, for servers that require client certificates.
    pub cert: Option<std::path::PathBuf>,
    /// The private key of `cert`.
    pub key: Option<std::path::PathBuf>,
}

impl Security {
    /// Servers verified against the CA certificate(s) in `ca`; no client certificate.
    pub fn new(ca: impl Into<std::path::PathBuf>) -> Self {
        Security {
            ca: ca.into(),
            cert: None,
            key: None,
        }
    }

    /// Presents `cert` (a PEM chain) with its private key `key` to servers that ask.
    pub fn with_client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }
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

/// Configuration of one client. See the [module docs](self) for how to build one.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
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
    /// API V2: the keyspace to work in, by name (`None`: `DEFAULT`). The client looks up its
    /// id with PD's `LoadKeyspace` when it connects.
    pub keyspace: Option<String>,
    /// `Context.request_source` stamped on every request (for TiKV's accounting).
    pub request_source: String,
    /// `Context.resource_group_tag` stamped on every request.
    pub resource_group_tag: Vec<u8>,
    /// Connections (and BatchCommands streams) per TiKV store (`GrpcConnectionCount`, 4).
    pub grpc_connection_count: usize,
    /// How often an open connection with calls in flight is pinged (`GrpcKeepAliveTime`,
    /// 10 s; zero turns keepalive off).
    pub grpc_keepalive_time: Duration,
    /// How long a keepalive ping may go unanswered before the connection is dropped
    /// (`GrpcKeepAliveTimeout`, 3 s).
    pub grpc_keepalive_timeout: Duration,
    /// HTTP/2 flow-control window per stream, in bytes (`GrpcInitialWindowSize`, 128 MiB).
    pub grpc_initial_window_size: u32,
    /// HTTP/2 flow-control window per connection, in bytes (`GrpcInitialConnWindowSize`,
    /// 128 MiB).
    pub grpc_initial_conn_window_size: u32,
    /// Time limit for opening a connection (TCP, TLS and HTTP/2 handshakes; 5 s).
    pub grpc_connect_timeout: Duration,
    /// Most requests per BatchCommands message (`MaxBatchSize`, 128).
    pub max_batch_size: usize,
    /// Send batchable requests inside BatchCommands streams (client-go's default); `false`
    /// sends every request as its own unary call.
    pub batch_commands: bool,
    /// Commit transactions that fit in one prewrite request in one phase (1PC: TiKV commits
    /// at prewrite). client-go's `Enable1PC` is off by default; so is this.
    pub try_one_pc: bool,
    /// Commit transactions asynchronously (the commit is decided once every key is
    /// prewritten; one round trip less): client-go's `EnableAsyncCommit`, off by default here
    /// as there; a transaction can also ask for it ([`TransactionOptions`]).
    ///
    /// [`TransactionOptions`]: crate::options::TransactionOptions
    pub async_commit: bool,
    /// Async commit only for transactions of at most this many keys (`AsyncCommit.KeysLimit`,
    /// 256): every key is listed in the primary lock.
    pub async_commit_keys_limit: usize,
    /// Async commit only while the keys total at most this many bytes
    /// (`AsyncCommit.TotalKeySizeLimit`, 4 KiB).
    pub async_commit_total_key_size_limit: usize,
    /// How far past the transaction's current time its commit timestamp may go under async
    /// commit or 1PC (`AsyncCommit.SafeWindow`, 2 s): the `max_commit_ts` TiKV enforces,
    /// falling back to 2PC beyond it.
    pub async_commit_safe_window: Duration,
    /// Transactions whose writes exceed this many bytes keep their primary lock alive with
    /// heartbeats while they commit (client-go's `TTLRefreshedTxnSize`, 32 MiB): prewriting
    /// them can take longer than their lock's TTL.
    pub ttl_refreshed_txn_size: usize,
    /// Local latches for optimistic commits (client-go's `TxnLocalLatches`, off by default):
    /// `Some(capacity)` makes the client's optimistic transactions writing the same keys
    /// commit one after another, and fail at once (a write conflict) when another committed
    /// a key since they started — instead of racing in TiKV. client-go's capacity is
    /// 2 048 000 slots.
    pub local_latches: Option<usize>,
    /// TLS for every connection; `None` for cleartext.
    pub security: Option<Security>,
    /// Seed of the client's random generator (jitter, replica choice); `None` seeds from the
    /// driver's entropy. Set it in tests for reproducible runs.
    pub rng_seed: Option<u64>,
    /// RawKV or transactional data: set by the client type when it connects ([`bind`]).
    ///
    /// [`bind`]: Config::bind
    key_mode: KeyMode,
    /// API V2: the keyspace id, looked up by the client when it connects ([`bind`]).
    ///
    /// [`bind`]: Config::bind
    keyspace_id: Option<u32>,
}

/// Chainable setters, one per setting: `Config::default().with_x(..).with_y(..)`.
macro_rules! setters {
    ($($(#[$doc:meta])* $setter:ident => $field:ident: $ty:ty;)*) => {
        impl Config {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Config::", stringify!($field), ").")]
                $(#[$doc])*
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    with_region_cache_ttl => region_cache_ttl: Duration;
    with_region_cache_ttl_jitter => region_cache_ttl_jitter: Duration;
    with_rpc_timeout => rpc_timeout: Duration;
    with_max_write_execution => max_write_execution: Duration;
    with_pd_timeout => pd_timeout: Duration;
    with_backoff_weight => backoff_weight: u32;
    with_raw_batch_pair_count => raw_batch_pair_count: usize;
    with_raw_batch_put_size => raw_batch_put_size: usize;
    with_raw_scan_limit_max => raw_scan_limit_max: u32;
    with_region_concurrency => region_concurrency: usize;
    with_api_version => api_version: ApiVersion;
    with_grpc_connection_count => grpc_connection_count: usize;
    with_grpc_keepalive_time => grpc_keepalive_time: Duration;
    with_grpc_keepalive_timeout => grpc_keepalive_timeout: Duration;
    with_grpc_initial_window_size => grpc_initial_window_size: u32;
    with_grpc_initial_conn_window_size => grpc_initial_conn_window_size: u32;
    with_grpc_connect_timeout => grpc_connect_timeout: Duration;
    with_max_batch_size => max_batch_size: usize;
    with_batch_commands => batch_commands: bool;
    with_try_one_pc => try_one_pc: bool;
    with_async_commit => async_commit: bool;
    with_async_commit_keys_limit => async_commit_keys_limit: usize;
    with_async_commit_total_key_size_limit => async_commit_total_key_size_limit: usize;
    with_async_commit_safe_window => async_commit_safe_window: Duration;
    with_ttl_refreshed_txn_size => ttl_refreshed_txn_size: usize;
    with_local_latches => local_latches: Option<usize>;
}

impl Config {
    /// Sets [`keyspace`](Config::keyspace): the API V2 keyspace to work in, by name.
    pub fn with_keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspace = Some(name.into());
        self
    }

    /// Sets [`request_source`](Config::request_source).
    pub fn with_request_source(mut self, source: impl Into<String>) -> Self {
        self.request_source = source.into();
        self
    }

    /// Sets [`resource_group_tag`](Config::resource_group_tag).
    pub fn with_resource_group_tag(mut self, tag: impl Into<Vec<u8>>) -> Self {
        self.resource_group_tag = tag.into();
        self
    }

    /// Sets [`security`](Config::security): TLS for every connection.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = Some(security);
        self
    }

    /// Sets [`rng_seed`](Config::rng_seed), for reproducible runs.
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Whether the client works on RawKV or transactional data (set when it connects).
    pub fn key_mode(&self) -> KeyMode {
        self.key_mode
    }

    /// The API V2 keyspace id the client works in (`None` before it connects, and under
    /// API V1).
    pub fn keyspace_id(&self) -> Option<u32> {
        self.keyspace_id
    }

    /// This configuration as a client of `mode` runs it, in keyspace `keyspace_id` (API V2).
    /// Clients call this when they connect; there is no need to call it otherwise.
    pub fn bind(mut self, mode: KeyMode, keyspace_id: Option<u32>) -> Self {
        self.key_mode = mode;
        self.keyspace_id = keyspace_id;
        self
    }
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
            grpc_keepalive_time: Duration::from_secs(10),
            grpc_keepalive_timeout: Duration::from_secs(3),
            grpc_initial_window_size: 1 << 27,
            grpc_initial_conn_window_size: 1 << 27,
            grpc_connect_timeout: Duration::from_secs(5),
            max_batch_size: 128,
            batch_commands: true,
            try_one_pc: false,
            async_commit: false,
            async_commit_keys_limit: 256,
            async_commit_total_key_size_limit: 4 * 1024,
            async_commit_safe_window: Duration::from_secs(2),
            ttl_refreshed_txn_size: 32 << 20,
            local_latches: None,
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
