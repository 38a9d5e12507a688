//! Per-operation options: what a transaction or a read asks of TiKV beyond its keys.
//!
//! [`TransactionOptions`] and [`ReadOptions`] are what users set (client-go's `TxnOption`s and
//! `KVSnapshot` setters, with client-go's defaults); both are `#[non_exhaustive]`, built from
//! `default()` with chainable `with_*` methods. Each reduces to a [`ContextOptions`]: the
//! `kvrpcpb::Context` fields every request of the operation carries, which the router stamps
//! on each request it sends ([`Cx::context`](crate::machine::Cx::context)).
//!
//! An option the client does not implement yet fails the operation with
//! [`Error::Unsupported`] when it is used; none is silently ignored.

use std::time::Duration;

use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::timestamp::Timestamp;

/// How urgently TiKV should run a request (`kvrpcpb::CommandPri`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// The default.
    #[default]
    Normal,
    /// Background work that should yield to foreground traffic.
    Low,
    /// Latency-critical work.
    High,
}

/// What a read sees (`kvrpcpb::IsolationLevel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IsolationLevel {
    /// Snapshot isolation: the data committed before the read timestamp; locks of
    /// transactions that may commit before it are resolved or waited for.
    #[default]
    SnapshotIsolation,
    /// Read committed: the data committed before the read timestamp, ignoring locks.
    ReadCommitted,
    /// Read committed that fails (instead of reading) when it meets a newer version, so the
    /// caller can retry with a fresh timestamp (TiDB's `RCCheckTS`).
    ReadCommittedCheckTs,
}

/// Whether TiKV may take a write when its disk is (almost) full (`kvrpcpb::DiskFullOpt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DiskFullOpt {
    /// Refuse writes once the disk is almost full (the default).
    #[default]
    NotAllowedOnFull,
    /// Allow writes while the disk is almost full.
    AllowedOnAlmostFull,
    /// Allow writes even when the disk is full (for deletes that free space).
    AllowedOnAlreadyFull,
}

/// How strictly prewrite checks the mutations' existence assertions (`kvrpcpb::AssertionLevel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AssertionLevel {
    /// No checks (the default).
    #[default]
    Off,
    /// Checks that cost no extra reads.
    Fast,
    /// Every assertion checked.
    Strict,
}

/// What a prewrite does on meeting another transaction's lock (client-go's
/// `PrewriteEncounterLockPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PrewriteLockPolicy {
    /// Resolve it (wait for its owner if alive) and prewrite again; an optimistic
    /// transaction meeting a younger transaction's lock fails at once with a write conflict
    /// (it could only commit if that one rolled back). The default.
    #[default]
    TryResolve,
    /// Fail at once with [`Error::WriteConflict`], so the caller can retry, say, in
    /// pessimistic mode.
    NoResolve,
}

/// What a write expects of its key's current state, checked at prewrite under an
/// [`AssertionLevel`] other than `Off` (client-go's assertion flags on the mem-buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Assertion {
    /// The key exists.
    Exists,
    /// The key does not exist.
    NotExists,
}

/// Which replica serves reads (client-go's `kv.ReplicaReadType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReplicaRead {
    /// The leader (the default).
    #[default]
    Leader,
    /// Followers (after a read-index round trip to the leader).
    Follower,
    /// Leader and followers, chosen evenly.
    LeaderAndFollower,
    /// Learners.
    Learner,
    /// The leader unless it is busy or slow, then a follower.
    PreferLeader,
    /// Any replica, preferring matching labels.
    Mixed,
}

/// Optimistic or pessimistic concurrency control.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TxnMode {
    /// Conflicts are found at commit (prewrite fails with a write conflict); the default.
    #[default]
    Optimistic,
    /// Writes lock their keys as they are made, waiting for other holders.
    Pessimistic,
}

/// The `kvrpcpb::Context` fields every request of one operation carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextOptions {
    /// `priority`.
    pub priority: Priority,
    /// `isolation_level`.
    pub isolation: IsolationLevel,
    /// `not_fill_cache`: do not fill TiKV's block cache with what this operation reads.
    pub not_fill_cache: bool,
    /// `sync_log`: make the raft log durable before answering a write.
    pub sync_log: bool,
    /// `disk_full_opt`.
    pub disk_full_opt: DiskFullOpt,
    /// `txn_source`: the source of the transaction (CDC filters by it).
    pub txn_source: u64,
    /// `task_id`: groups the requests of one task for TiKV's scheduling.
    pub task_id: u64,
    /// `request_source`, overriding the client's `Config::request_source`.
    pub request_source: Option<String>,
    /// `resource_group_tag`, overriding the client's `Config::resource_group_tag`.
    pub resource_group_tag: Option<Vec<u8>>,
    /// `resource_control_context.resource_group_name`.
    pub resource_group_name: Option<String>,
}

impl ContextOptions {
    /// Writes these options into `ctx` (fields left at their default stay as they are).
    pub fn apply(&self, ctx: &mut kvrpcpb::Context) {
        ctx.priority = match self.priority {
            Priority::Normal => kvrpcpb::CommandPri::Normal,
            Priority::Low => kvrpcpb::CommandPri::Low,
            Priority::High => kvrpcpb::CommandPri::High,
        } as i32;
        ctx.isolation_level = match self.isolation {
            IsolationLevel::SnapshotIsolation => kvrpcpb::IsolationLevel::Si,
            IsolationLevel::ReadCommitted => kvrpcpb::IsolationLevel::Rc,
            IsolationLevel::ReadCommittedCheckTs => kvrpcpb::IsolationLevel::RcCheckTs,
        } as i32;
        ctx.disk_full_opt = match self.disk_full_opt {
            DiskFullOpt::NotAllowedOnFull => kvrpcpb::DiskFullOpt::NotAllowedOnFull,
            DiskFullOpt::AllowedOnAlmostFull => kvrpcpb::DiskFullOpt::AllowedOnAlmostFull,
            DiskFullOpt::AllowedOnAlreadyFull => kvrpcpb::DiskFullOpt::AllowedOnAlreadyFull,
        } as i32;
        ctx.not_fill_cache |= self.not_fill_cache;
        ctx.sync_log |= self.sync_log;
        if self.txn_source != 0 {
            ctx.txn_source = self.txn_source;
        }
        if self.task_id != 0 {
            ctx.task_id = self.task_id;
        }
        if let Some(source) = &self.request_source {
            ctx.request_source.clone_from(source);
        }
        if let Some(tag) = &self.resource_group_tag {
            ctx.resource_group_tag = tag.clone().into();
        }
        if let Some(name) = &self.resource_group_name {
            let control = ctx
                .resource_control_context
                .get_or_insert_with(Default::default);
            control.resource_group_name.clone_from(name);
        }
    }
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(what.to_string())
}

/// Options of reads: snapshot reads and a transaction's reads (client-go's `KVSnapshot`
/// setters). The default reads the leader under snapshot isolation.
///
/// ```
/// use std::time::Duration;
/// use tikv_core::options::{Priority, ReadOptions};
///
/// let background = ReadOptions::default()
///     .with_priority(Priority::Low)
///     .with_not_fill_cache(true)
///     .with_timeout(Duration::from_secs(30));
/// assert!(background.check().is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadOptions {
    /// What the read sees (snapshot isolation).
    pub isolation: IsolationLevel,
    /// Which replica serves the read (the leader).
    pub replica_read: ReplicaRead,
    /// Serve the read from any replica's local data at a timestamp in the past (off).
    pub stale_read: bool,
    /// Request priority (normal).
    pub priority: Priority,
    /// Do not fill TiKV's block cache (false).
    pub not_fill_cache: bool,
    /// Scans return keys only, with empty values (false).
    pub key_only: bool,
    /// Prefer replicas on stores with these labels (none).
    pub match_store_labels: Vec<(String, String)>,
    /// `resource_group_tag` for these reads (the client's).
    pub resource_group_tag: Option<Vec<u8>>,
    /// `request_source` for these reads (the client's).
    pub request_source: Option<String>,
    /// TiKV task id (0: none).
    pub task_id: u64,
    /// Fail the call with [`Error::Cancelled`] after this long (none: the retry budget
    /// bounds it).
    pub timeout: Option<Duration>,
}

impl ReadOptions {
    /// Sets [`isolation`](Self::isolation).
    pub fn with_isolation(mut self, isolation: IsolationLevel) -> Self {
        self.isolation = isolation;
        self
    }

    /// Sets [`replica_read`](Self::replica_read).
    pub fn with_replica_read(mut self, replica_read: ReplicaRead) -> Self {
        self.replica_read = replica_read;
        self
    }

    /// Sets [`stale_read`](Self::stale_read).
    pub fn with_stale_read(mut self, stale_read: bool) -> Self {
        self.stale_read = stale_read;
        self
    }

    /// Sets [`priority`](Self::priority).
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`not_fill_cache`](Self::not_fill_cache).
    pub fn with_not_fill_cache(mut self, not_fill_cache: bool) -> Self {
        self.not_fill_cache = not_fill_cache;
        self
    }

    /// Sets [`key_only`](Self::key_only).
    pub fn with_key_only(mut self, key_only: bool) -> Self {
        self.key_only = key_only;
        self
    }

    /// Adds a store label replicas should match.
    pub fn with_store_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.match_store_labels.push((key.into(), value.into()));
        self
    }

    /// Sets [`resource_group_tag`](Self::resource_group_tag).
    pub fn with_resource_group_tag(mut self, tag: impl Into<Vec<u8>>) -> Self {
        self.resource_group_tag = Some(tag.into());
        self
    }

    /// Sets [`request_source`](Self::request_source).
    pub fn with_request_source(mut self, source: impl Into<String>) -> Self {
        self.request_source = Some(source.into());
        self
    }

    /// Sets [`task_id`](Self::task_id).
    pub fn with_task_id(mut self, task_id: u64) -> Self {
        self.task_id = task_id;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `Err(Error::Unsupported)` naming the first option this client cannot honour yet.
    pub fn check(&self) -> Result<(), Error> {
        if self.replica_read != ReplicaRead::Leader {
            return Err(unsupported("reads from replicas other than the leader"));
        }
        if self.stale_read {
            return Err(unsupported("stale reads"));
        }
        if !self.match_store_labels.is_empty() {
            return Err(unsupported("matching store labels"));
        }
        Ok(())
    }

    /// The request context of these reads.
    pub fn context(&self) -> ContextOptions {
        ContextOptions {
            priority: self.priority,
            isolation: self.isolation,
            not_fill_cache: self.not_fill_cache,
            task_id: self.task_id,
            request_source: self.request_source.clone(),
            resource_group_tag: self.resource_group_tag.clone(),
            ..ContextOptions::default()
        }
    }
}

/// Options of one transaction (client-go's `TxnOption`s and `KVTxn` setters, with its
/// defaults). The default is an optimistic transaction that starts at a fresh timestamp.
///
/// ```
/// use tikv_core::options::{Priority, TransactionOptions};
///
/// let options = TransactionOptions::default()
///     .with_try_one_pc(true)
///     .with_priority(Priority::High)
///     .with_request_source("checkout");
/// assert!(options.check().is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionOptions {
    /// Optimistic or pessimistic (optimistic).
    pub mode: TxnMode,
    /// Start at this timestamp instead of a fresh one from PD (none).
    pub start_ts: Option<Timestamp>,
    /// Commit in one phase when the writes fit one prewrite request (the client's
    /// `Config::try_one_pc`).
    pub try_one_pc: Option<bool>,
    /// Commit with async commit when the transaction is small enough (client-go's
    /// `EnableAsyncCommit`; the client's `Config::async_commit`).
    pub async_commit: Option<bool>,
    /// With async commit or 1PC, give up linearizability for causal consistency: skips a
    /// timestamp fetch before the prewrite, but a transaction that starts after this one
    /// commits may not see it (off).
    pub causal_consistency: bool,
    /// How strictly prewrite checks assertions (off).
    pub assertion_level: AssertionLevel,
    /// What prewrite does on meeting another transaction's lock (resolve it).
    pub prewrite_lock_policy: PrewriteLockPolicy,
    /// `txn_source`, for CDC (0).
    pub txn_source: u64,
    /// Resource group the transaction is accounted to (none: `default`).
    pub resource_group_name: Option<String>,
    /// `request_source` for the transaction's requests (the client's).
    pub request_source: Option<String>,
    /// Priority of the transaction's requests (normal).
    pub priority: Priority,
    /// Whether writes may proceed on a (almost) full disk (not allowed).
    pub disk_full_opt: DiskFullOpt,
    /// Make the raft log durable before answering each write (off).
    pub sync_log: bool,
    /// Largest key + value of one write, in bytes (client-go's entry size limit; none by
    /// default, as in client-go — TiDB sets 6 MiB): a larger write fails with
    /// [`Error::EntryTooLarge`].
    pub entry_size_limit: Option<usize>,
    /// Largest total of the buffered writes, in bytes (none by default; TiDB sets 100 MiB):
    /// a write past it fails with [`Error::TxnTooLarge`].
    pub total_size_limit: Option<usize>,
    /// How the transaction reads.
    pub read: ReadOptions,
}

impl TransactionOptions {
    /// A pessimistic transaction (the other options at their defaults).
    pub fn pessimistic() -> Self {
        TransactionOptions::default().with_mode(TxnMode::Pessimistic)
    }

    /// Sets [`mode`](Self::mode).
    pub fn with_mode(mut self, mode: TxnMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`start_ts`](Self::start_ts).
    pub fn with_start_ts(mut self, start_ts: Timestamp) -> Self {
        self.start_ts = Some(start_ts);
        self
    }

    /// Sets [`try_one_pc`](Self::try_one_pc).
    pub fn with_try_one_pc(mut self, try_one_pc: bool) -> Self {
        self.try_one_pc = Some(try_one_pc);
        self
    }

    /// Sets [`async_commit`](Self::async_commit).
    pub fn with_async_commit(mut self, async_commit: bool) -> Self {
        self.async_commit = Some(async_commit);
        self
    }

    /// Sets [`causal_consistency`](Self::causal_consistency).
    pub fn with_causal_consistency(mut self, causal: bool) -> Self {
        self.causal_consistency = causal;
        self
    }

    /// Sets [`prewrite_lock_policy`](Self::prewrite_lock_policy).
    pub fn with_prewrite_lock_policy(mut self, policy: PrewriteLockPolicy) -> Self {
        self.prewrite_lock_policy = policy;
        self
    }

    /// Sets [`assertion_level`](Self::assertion_level).
    pub fn with_assertion_level(mut self, level: AssertionLevel) -> Self {
        self.assertion_level = level;
        self
    }

    /// Sets [`txn_source`](Self::txn_source).
    pub fn with_txn_source(mut self, source: u64) -> Self {
        self.txn_source = source;
        self
    }

    /// Sets [`resource_group_name`](Self::resource_group_name).
    pub fn with_resource_group(mut self, name: impl Into<String>) -> Self {
        self.resource_group_name = Some(name.into());
        self
    }

    /// Sets [`request_source`](Self::request_source).
    pub fn with_request_source(mut self, source: impl Into<String>) -> Self {
        self.request_source = Some(source.into());
        self
    }

    /// Sets [`priority`](Self::priority).
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`disk_full_opt`](Self::disk_full_opt).
    pub fn with_disk_full_opt(mut self, opt: DiskFullOpt) -> Self {
        self.disk_full_opt = opt;
        self
    }

    /// Sets [`sync_log`](Self::sync_log).
    pub fn with_sync_log(mut self, sync_log: bool) -> Self {
        self.sync_log = sync_log;
        self
    }

    /// Sets [`entry_size_limit`](Self::entry_size_limit) and
    /// [`total_size_limit`](Self::total_size_limit) (client-go's `SetEntrySizeLimit`).
    pub fn with_size_limits(mut self, entry: Option<usize>, total: Option<usize>) -> Self {
        self.entry_size_limit = entry;
        self.total_size_limit = total;
        self
    }

    /// Sets [`read`](Self::read).
    pub fn with_read(mut self, read: ReadOptions) -> Self {
        self.read = read;
        self
    }

    /// `Err(Error::Unsupported)` naming the first option this client cannot honour yet.
    pub fn check(&self) -> Result<(), Error> {
        self.read.check()
    }

    /// The request context of the transaction's writes (and of its lock resolution).
    pub fn context(&self) -> ContextOptions {
        ContextOptions {
            priority: self.priority,
            sync_log: self.sync_log,
            disk_full_opt: self.disk_full_opt,
            txn_source: self.txn_source,
            request_source: self
                .request_source
                .clone()
                .or_else(|| self.read.request_source.clone()),
            resource_group_name: self.resource_group_name.clone(),
            resource_group_tag: self.read.resource_group_tag.clone(),
            task_id: self.read.task_id,
            ..ContextOptions::default()
        }
    }

    /// The request context of the transaction's reads: its read options, within the
    /// transaction's resource group and source.
    pub fn read_context(&self) -> ContextOptions {
        let mut context = self.read.context();
        context.txn_source = self.txn_source;
        context.resource_group_name = self.resource_group_name.clone();
        if context.request_source.is_none() {
            context.request_source = self.request_source.clone();
        }
        if self.read.priority == Priority::Normal {
            context.priority = self.priority;
        }
        context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_change_nothing_in_the_context() {
        let mut ctx = kvrpcpb::Context::default();
        ContextOptions::default().apply(&mut ctx);
        assert_eq!(ctx, kvrpcpb::Context::default());
        assert!(TransactionOptions::default().check().is_ok());
        assert!(ReadOptions::default().check().is_ok());
    }

    #[test]
    fn options_land_in_the_context() {
        let options = TransactionOptions::default()
            .with_priority(Priority::High)
            .with_sync_log(true)
            .with_disk_full_opt(DiskFullOpt::AllowedOnAlmostFull)
            .with_txn_source(7)
            .with_resource_group("rg1")
            .with_request_source("checkout")
            .with_read(
                ReadOptions::default()
                    .with_isolation(IsolationLevel::ReadCommitted)
                    .with_not_fill_cache(true)
                    .with_task_id(9),
            );
        let mut write = kvrpcpb::Context::default();
        options.context().apply(&mut write);
        assert_eq!(write.priority, kvrpcpb::CommandPri::High as i32);
        assert!(write.sync_log && !write.not_fill_cache);
        assert_eq!(
            write.disk_full_opt,
            kvrpcpb::DiskFullOpt::AllowedOnAlmostFull as i32
        );
        assert_eq!((write.txn_source, write.task_id), (7, 9));
        assert_eq!(write.request_source, "checkout");
        assert_eq!(
            write.resource_control_context.unwrap().resource_group_name,
            "rg1"
        );
        let mut read = kvrpcpb::Context::default();
        options.read_context().apply(&mut read);
        assert_eq!(read.isolation_level, kvrpcpb::IsolationLevel::Rc as i32);
        assert_eq!(read.priority, kvrpcpb::CommandPri::High as i32);
        assert!(read.not_fill_cache && !read.sync_log);
        assert_eq!(read.request_source, "checkout");
    }

    #[test]
    fn what_is_not_implemented_fails_loudly() {
        let follower = TransactionOptions::default()
            .with_read(ReadOptions::default().with_replica_read(ReplicaRead::Follower));
        assert!(
            matches!(follower.check(), Err(Error::Unsupported(_))),
            "{follower:?}"
        );
        for read in [
            ReadOptions::default().with_stale_read(true),
            ReadOptions::default().with_store_label("zone", "z1"),
        ] {
            assert!(
                matches!(read.check(), Err(Error::Unsupported(_))),
                "{read:?}"
            );
        }
    }
}
