//! The async layer of the TiKV client, generic over a [`Runtime`].
//!
//! It executes what `tikv-core`'s machines ask for: gRPC calls over HTTP/2 (written on the
//! `h2` crate, no tonic), PD lookups, timestamps and sleeps. It names no runtime: the
//! `tikv-tokio` and `tikv-async-std` crates provide [`Runtime`] implementations and re-export
//! the client API.

pub mod admin;
pub mod batch;
pub mod executor;
pub mod facade;
pub mod gc;
pub mod grpc;
mod latch;
pub mod paging;
mod passthrough;
pub mod pd;
pub mod pool;
pub mod raw;
pub mod runtime;
pub mod tls;
pub mod transport;
pub mod txn;

pub use raw::{CurrentRuntime, RawClient};
pub use runtime::Runtime;
pub use tikv_core::raw::{CasResult, Checksum, KvPair};
pub use tikv_core::{Config, Error, Key, KeyRange, Result, Timestamp};
pub use txn::{Snapshot, Transaction, TransactionClient};

#[doc(hidden)]
pub use facade::exports as __facade;
