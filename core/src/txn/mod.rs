//! Transactions: Percolator two-phase commit, snapshot reads and lock resolution, as machines.
//!
//! - [`buffer`]: the transaction's local writes.
//! - [`lock`]: locks found by reads and writes, and what TiKV says about their transactions.
//! - [`heartbeat`]: the TTL manager keeping a long transaction's primary lock alive.
//! - [`pessimistic`]: pessimistic locks (`lock_keys`), with waits for other transactions.
//! - [`lock_state`]: what a pessimistic transaction holds, and fair locking's attempts.
//! - [`resolve`]: the lock resolver — asks the lock owner's primary for its fate
//!   (`CheckTxnStatus`), then commits or rolls back the lock (`ResolveLock`).
//! - [`scan_lock`]: the locks in a key range (`ScanLock`), for operators and GC.
//! - [`gc_locks`]: GC's sweep settling every lock below the safe point in a range.
//! - [`snapshot`]: reads at a start timestamp that resolve the locks they meet.
//! - [`status_cache`]: decided transaction outcomes, shared by the client's resolutions.
//! - [`commit`]: the committer — prewrite every key, take a commit timestamp, commit the
//!   primary (the commit point), then the secondaries.

pub mod buffer;
pub mod commit;
pub mod gc_locks;
pub mod heartbeat;
pub mod lock;
pub mod lock_state;
pub mod pessimistic;
pub mod resolve;
pub mod scan;
pub mod scan_lock;
pub mod snapshot;
pub mod status_cache;

pub use buffer::{Mutation, StagingHandle, WriteBuffer};
pub use commit::Committer;
pub use gc_locks::{ResolveRangeLocks, SweepStats};
pub use lock::{Lock, TxnStatus, key_error};
pub use lock_state::{
    Changes, HeartbeatChange, PessimisticCommit, PessimisticLocks, PreparedLock, Release,
};
pub use pessimistic::{Interrupt, LockKeys, LockOptions, LockStats, LockWait, Locked, LockedValue};
pub use resolve::{CheckTxnStatus, ReadBypass, ResolveLocks, Resolved};
pub use scan::SnapshotScan;
pub use scan_lock::ScanLocks;
pub use snapshot::{SnapshotBatchGet, SnapshotGet};
pub use status_cache::TxnStatusCache;

#[cfg(test)]
mod tests;
