//! The sans-IO core of the TiKV client.
//!
//! Every protocol decision the client makes lives here as plain data and pure functions:
//! keys and ranges, TSO timestamps, the region cache and routing, backoff, region-error
//! handling, and the operation state machines. Nothing here performs I/O, reads a clock,
//! spawns a thread or draws from a global random generator: time ([`Instant`]) and
//! randomness ([`Rng`]) are passed in by the caller, so the same inputs always produce the
//! same outputs. The async driver (`tikv-driver`) executes what the machines ask for; a
//! deterministic simulation can drive them just as well.
//!
//! # Layout
//!
//! - The effect model and composition kit: [`machine`] (`Machine`, `Effect`, `Cx`, `ready!`,
//!   `Children`, `Budgeted`, `Detached` for background work).
//! - Shared protocol state, plain data with pure methods: [`region_cache`], [`store_cache`],
//!   [`store_health`], [`region_error`] (the region-error table), [`backoff`], [`pd`] (PD
//!   session and call policy, typed PD errors), [`tso`] (the TSO batcher), [`batch`]
//!   (BatchCommands stream state per generation), [`keyspace`] (API V2 key codec),
//!   [`latch`] (local latches of optimistic commits), [`oracle`] (what the last timestamps
//!   say about time), and the transaction-status cache in
//!   [`txn`]. The caches a client shares between concurrent
//!   operations lock inside, briefly, per call: no lock is held while a machine computes.
//! - Building blocks: [`request`] (`RegionRpc`, `Locate`), [`plan`] (`SingleKey`,
//!   `MultiKey`, `RangeWalk`) and [`range_task`] (a long range cut into concurrent tasks).
//! - Operations: [`raw`] (RawKV), [`txn`] (commit, lock resolution, snapshot reads) and
//!   [`gc`] (GC rounds, PD's GC state, the read-visibility check), [`split`] (split and
//!   scatter regions), [`range_ops`] (delete and destroy ranges), [`mvcc`] (MVCC debug
//!   views), [`passthrough`] (any TiKV request, routed or to one store), [`coprocessor`]
//!   (a coprocessor payload over ranges, region by region), [`flashback`] (a range back to
//!   an earlier version).
//! - Test support: [`testing`] (a harness and response builders) and [`fuzzing`].
//!
//! `docs/architecture.md` traces one request from the public API to the wire and back.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod batch;
pub mod codec;
pub mod config;
pub mod coprocessor;
pub mod error;
pub mod flashback;
pub mod fuzzing;
pub mod gc;
pub mod id_map;
pub mod key;
pub mod keyspace;
pub mod latch;
pub mod machine;
pub mod mvcc;
pub mod options;
pub mod oracle;
pub mod passthrough;
pub mod pd;
pub mod plan;
pub mod range_ops;
pub mod range_task;
pub mod raw;
pub mod region;
pub mod region_cache;
pub mod region_error;
pub mod request;
pub mod rng;
pub mod rpc;
pub mod split;
pub mod store_cache;
pub mod store_health;
pub mod testing;
pub mod time;
pub mod timestamp;
pub mod tso;
pub mod txn;

pub use backoff::{BackoffKind, Backoffer};
pub use config::{ApiVersion, Config, KeyMode};
pub use error::{Delivery, Error, GrpcCode, Result, Target};
pub use key::{Key, KeyRange};
pub use keyspace::KeyspaceCodec;
pub use machine::{Cx, Effect, EffectId, LocateQuery, Machine, Outcome, Step};
pub use pd::{PdErrorKind, PdErrorType};
pub use region::{
    Peer, PeerRole, Region, RegionEpoch, RegionId, RegionVerId, Store, StoreId, StoreState,
};
pub use region_cache::{LeaderUpdate, RegionCache};
pub use rng::{Rng, RngForks};
pub use rpc::{TikvRequest, TikvResponse};
pub use store_cache::{StoreCache, StoreLookup};
pub use store_health::{HealthBoard, StoreHealth};
pub use time::Instant;
pub use timestamp::Timestamp;
