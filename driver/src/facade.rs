//! The user-facing API, declared once for every runtime crate.
//!
//! `tikv-tokio` and `tikv-async-std` each expand [`facade!`](crate::facade) with their runtime
//! type, so the two export the same clients, transactions, options, errors and data types by
//! construction: a program written against one compiles against the other by changing the
//! crate name. Nothing a user needs to name lives only in `tikv-driver` or `tikv-core`.

/// Declares the user-facing API for runtime `$rt` in the calling crate (see the module docs).
#[doc(hidden)]
#[macro_export]
macro_rules! facade {
    ($rt:ty) => {
        pub use $crate::__facade::{
            ApiVersion, Assertion, AssertionLevel, BoxFuture, Bytes, CasResult, Checksum, Config,
            CopResponse, Delivery, DiskFullOpt, Error, FlashbackReport, GcBarrier, GcReport,
            GcSafePointAdvance, GcState, GrpcCode, Instant, Interrupt, IsolationLevel, Key,
            KeyRange, KvPair, Lock, LockOptions, LockStats, LockWait, Locked, LockedValue,
            MvccInfo, MvccLock, MvccOp, MvccWrite, PdErrorKind, PdErrorType, Peer, PeerRole,
            PrewriteLockPolicy, Priority, ReadOptions, Region, RegionEpoch, RegionId, RegionVerId,
            ReplicaRead, Resolved, Result, Runtime, ScatterOptions, Security, StagingHandle, Store,
            StoreId, StoreState, SweepStats, Target, TikvRequest, TikvResponse, Timestamp,
            TransactionOptions, TxnMode, TxnSafePointAdvance, TxnStatus, WriteBuffer,
        };

        /// The wire messages (kvproto's), for `send_request`.
        pub use $crate::__facade::proto;

        /// The runtime this crate's clients run on (what `connect_with` takes).
        pub type ClientRuntime = $rt;

        /// The RawKV client. Cheap to clone; clones share connections and caches.
        pub type RawClient = $crate::RawClient<$rt>;

        /// The transactional client. Cheap to clone.
        pub type TransactionClient = $crate::TransactionClient<$rt>;

        /// A transaction: reads at its start timestamp, writes buffered until `commit`.
        pub type Transaction = $crate::Transaction<$rt>;

        /// Reads as of one timestamp.
        pub type Snapshot = $crate::Snapshot<$rt>;

        /// The PD client a [`RawClient`] or [`TransactionClient`] runs on (`client.pd()`):
        /// timestamps, regions and stores.
        pub type PdClient = $crate::pd::PdClient<$rt>;
    };
}

/// What [`facade!`](crate::facade) re-exports, gathered in one place.
#[doc(hidden)]
pub mod exports {
    pub use bytes::Bytes;
    pub use tikv_core::config::Security;
    pub use tikv_core::coprocessor::CopResponse;
    pub use tikv_core::gc::{
        GcBarrier, GcReport, GcSafePointAdvance, GcState, TxnSafePointAdvance,
    };
    pub use tikv_core::mvcc::{MvccInfo, MvccLock, MvccOp, MvccWrite};
    pub use tikv_core::options::{
        Assertion, AssertionLevel, DiskFullOpt, IsolationLevel, PrewriteLockPolicy, Priority,
        ReadOptions, ReplicaRead, TransactionOptions, TxnMode,
    };
    pub use tikv_core::raw::{CasResult, Checksum, KvPair};
    pub use tikv_core::split::ScatterOptions;
    pub use tikv_core::txn::{
        Interrupt, Lock, LockOptions, LockStats, LockWait, Locked, LockedValue, Resolved,
        StagingHandle, SweepStats, TxnStatus, WriteBuffer,
    };
    pub use tikv_core::{
        ApiVersion, Config, Delivery, Error, GrpcCode, Instant, Key, KeyRange, PdErrorKind,
        PdErrorType, Peer, PeerRole, Region, RegionEpoch, RegionId, RegionVerId, Result, Store,
        StoreId, StoreState, Target, TikvRequest, TikvResponse, Timestamp,
    };
    /// The wire messages that [`TikvRequest`] and [`TikvResponse`] carry (for
    /// `send_request`).
    pub use tikv_proto as proto;

    pub use crate::admin::FlashbackReport;
    pub use crate::runtime::{BoxFuture, Runtime};
}
