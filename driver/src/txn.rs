//! The transactional client: snapshot-isolated transactions over TiKV (Percolator 2PC).
//!
//! ```no_run
//! # async fn demo<R: tikv_driver::CurrentRuntime>() -> Result<(), tikv_core::Error> {
//! use tikv_driver::TransactionClient;
//!
//! let client = TransactionClient::<R>::connect(&["127.0.0.1:2379"], Default::default()).await?;
//! let mut txn = client.begin().await?;
//! let balance = txn.get("alice").await?;
//! txn.put("alice", "90").await?;
//! txn.put("bob", "110").await?;
//! let commit_ts = txn.commit().await?; // both or neither, at commit_ts
//! # let _ = (balance, commit_ts);
//! # Ok(()) }
//! ```
//!
//! A transaction reads the database as of its start timestamp (plus its own writes) and
//! buffers its writes locally; `commit` runs two-phase commit. A concurrent transaction that
//! committed a write to one of the same keys first makes `commit` fail with
//! [`Error::WriteConflict`] (retry the whole transaction); an undetermined outcome (the reply
//! to the commit point was lost) is [`Error::Undetermined`], never guessed.
//!
//! [`TransactionClient::begin_with`] takes [`TransactionOptions`] (priority, request source,
//! resource group, 1PC, read options, ...); [`TransactionClient::snapshot_with`] takes
//! [`ReadOptions`]. Options this client does not implement yet fail with
//! [`Error::Unsupported`] instead of being ignored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tikv_core::backoff::{Backoffer, budget};
use tikv_core::latch::LatchState;
use tikv_core::machine::Budgeted;
use tikv_core::options::{
    Assertion, AssertionLevel, ContextOptions, PrewriteLockPolicy, ReadOptions, TransactionOptions,
    TxnMode,
};
use tikv_core::raw::KvPair;
use tikv_core::txn::heartbeat::{Heartbeat, HeartbeatStop};
use tikv_core::txn::pessimistic::{MANAGED_LOCK_TTL_MS, pessimistic_rollback};
use tikv_core::txn::{
    Changes, CheckTxnStatus, Committer, HeartbeatChange, Lock, LockKeys, LockOptions, Locked,
    Mutation, PessimisticLocks, ReadBypass, Release, ResolveLocks, Resolved, ScanLocks,
    SnapshotBatchGet, SnapshotGet, SnapshotScan, StagingHandle, TxnStatus, WriteBuffer,
};
use tikv_core::{Config, Error, Key, KeyMode, KeyRange, Machine, Result, Timestamp};
use tracing::warn;

use crate::executor::{ClientContext, run_with};
use crate::latch::LatchTable;
use crate::paging::{Page, SCAN_PAGE, paged};
use crate::pd::PdClient;
use crate::raw::CurrentRuntime;
use crate::runtime::Runtime;
use crate::transport::SharedTransport;

/// A client for transactions. Cheap to clone.
pub struct TransactionClient<R: Runtime> {
    pub(crate) ctx: Arc<ClientContext<R>>,
    /// Local latches of optimistic commits (`Config::local_latches`).
    latches: Option<Arc<LatchTable>>,
}

impl<R: Runtime> Clone for TransactionClient<R> {
    fn clone(&self) -> Self {
        TransactionClient {
            ctx: self.ctx.clone(),
            latches: self.latches.clone(),
        }
    }
}

impl<R: CurrentRuntime> TransactionClient<R> {
    /// Connects to the cluster whose PD is reachable at `pd_endpoints`, on the current runtime.
    pub async fn connect(pd_endpoints: &[impl AsRef<str>], config: Config) -> Result<Self> {
        Self::connect_with(R::current(), pd_endpoints, config).await
    }
}

impl<R: Runtime> TransactionClient<R> {
    /// Connects on `runtime`, over gRPC (with TLS when `config.security` is set).
    pub async fn connect_with(
        runtime: R,
        pd_endpoints: &[impl AsRef<str>],
        config: Config,
    ) -> Result<Self> {
        let transport = ClientContext::grpc_transport(&runtime, &config);
        Self::connect_over(runtime, transport, pd_endpoints, config).await
    }

    /// Connects through `transport` (e.g. a simulated network).
    pub async fn connect_over(
        runtime: R,
        transport: SharedTransport,
        pd_endpoints: &[impl AsRef<str>],
        config: Config,
    ) -> Result<Self> {
        let latches = config
            .local_latches
            .map(|capacity| Arc::new(LatchTable::new(capacity)));
        let ctx =
            ClientContext::connect(runtime, transport, pd_endpoints, config, KeyMode::Txn).await?;
        // As client-go: a client that cannot learn the txn safe point cannot judge its reads.
        ctx.load_txn_safe_point().await?;
        Ok(TransactionClient {
            ctx: Arc::new(ctx),
            latches,
        })
    }

    /// Waits until the client's background work — secondaries committed after `commit`
    /// returned, lock cleanups started by reads — has finished, for at most `timeout`;
    /// `true` if it all did. A process about to exit calls this so that it leaves no lock
    /// for others to resolve (they would be resolved, but later and at a cost).
    pub async fn wait_background(&self, timeout: Duration) -> bool {
        let started = self.ctx.runtime.now();
        loop {
            if self
                .ctx
                .background
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
            {
                return true;
            }
            if self.ctx.runtime.now().saturating_duration_since(started) >= timeout {
                return false;
            }
            self.ctx.runtime.sleep(Duration::from_millis(2)).await;
        }
    }

    /// A fresh timestamp from PD.
    pub async fn current_timestamp(&self) -> Result<Timestamp> {
        self.ctx.pd.get_timestamp().await
    }

    /// The status of the transaction started at `start_ts` whose primary key is `primary`
    /// (client-go's `LockResolver.GetTxnStatus`): committed (at a timestamp), rolled back, or
    /// alive (with its lock's TTL). Like client-go, it settles a transaction whose primary
    /// lock expired or never arrived as rolled back, so a late prewrite cannot revive it.
    pub async fn check_txn_status(
        &self,
        primary: impl Into<Key>,
        start_ts: Timestamp,
    ) -> Result<TxnStatus> {
        let codec = self.ctx.config.keyspace_codec();
        let check = CheckTxnStatus::new(codec, primary.into(), start_ts, Timestamp::ZERO);
        let backoff = Backoffer::new(
            "check txn status",
            self.ctx.config.budget(budget::TXN_STATUS),
        );
        run_with(
            &self.ctx,
            Budgeted::new(backoff, check),
            Arc::new(ContextOptions::default()),
        )
        .await
    }

    /// Resolves `locks` (keys in user form, as TiKV reported them to a transaction started at
    /// `caller_start_ts`) the way a writer must (client-go's `LockResolver.ResolveLocks`):
    /// locks of committed or rolled-back owners are cleaned up, expired owners are rolled
    /// back (async-commit ones recovered from their secondaries), and live owners are
    /// reported in [`Resolved::alive`] with the time until the first of them expires.
    pub async fn resolve_locks(
        &self,
        locks: Vec<Lock>,
        caller_start_ts: Timestamp,
    ) -> Result<Resolved> {
        let locks = self.stored_locks(locks);
        self.run_resolution(ResolveLocks::for_write(locks, caller_start_ts))
            .await
    }

    /// Resolves `locks` the way a reader at `caller_start_ts` may (client-go's
    /// `ResolveLocksForRead`): [`Resolved::bypass`] lists the owners whose locks the reader
    /// may pass and [`Resolved::committed`] those it may read through (send them as the
    /// request context's `resolved_locks` / `committed_locks`); the cleanup of decided
    /// owners' locks goes on in the background after this returns.
    pub async fn resolve_locks_for_read(
        &self,
        locks: Vec<Lock>,
        caller_start_ts: Timestamp,
    ) -> Result<Resolved> {
        let locks = self.stored_locks(locks);
        self.run_resolution(ResolveLocks::for_read(locks, caller_start_ts))
            .await
    }

    /// The locks in `range` of transactions started at or before `max_ts`, at most `limit`, in
    /// key order (`KvScanLock` region by region, 1024 per request): what GC and operators list
    /// before resolving them ([`resolve_locks`](Self::resolve_locks)).
    pub async fn scan_locks(
        &self,
        range: impl Into<KeyRange>,
        max_ts: Timestamp,
        limit: usize,
    ) -> Result<Vec<Lock>> {
        let scan = ScanLocks::new(
            self.ctx.config.keyspace_codec(),
            range.into(),
            max_ts,
            limit,
        );
        let backoff = Backoffer::new("scan locks", self.ctx.config.budget(budget::SCAN));
        run_with(
            &self.ctx,
            Budgeted::new(backoff, scan),
            Arc::new(ContextOptions::default()),
        )
        .await
    }

    fn stored_locks(&self, locks: Vec<Lock>) -> Vec<Lock> {
        let codec = self.ctx.config.keyspace_codec();
        locks
            .into_iter()
            .map(|mut l| {
                l.key = codec.encode(l.key);
                l.primary = codec.encode(l.primary);
                l
            })
            .collect()
    }

    async fn run_resolution(&self, resolver: ResolveLocks) -> Result<Resolved> {
        let codec = self.ctx.config.keyspace_codec();
        let backoff = Backoffer::new("resolve locks", self.ctx.config.budget(budget::CLEANUP));
        let result = run_with(
            &self.ctx,
            Budgeted::new(backoff, resolver),
            Arc::new(ContextOptions::default()),
        )
        .await;
        codec.decode_result(result)
    }

    /// Starts an optimistic transaction at a fresh timestamp.
    pub async fn begin(&self) -> Result<Transaction<R>> {
        self.begin_with(TransactionOptions::default()).await
    }

    /// Starts a transaction with `options` (at `options.start_ts`, or a fresh timestamp).
    /// Fails with [`Error::Unsupported`] if an option is not implemented yet.
    ///
    /// ```no_run
    /// # async fn demo<R: tikv_driver::Runtime>(client: tikv_driver::TransactionClient<R>) -> tikv_core::Result<()> {
    /// use tikv_core::options::{Priority, TransactionOptions};
    ///
    /// let options = TransactionOptions::default()
    ///     .with_priority(Priority::High)
    ///     .with_request_source("checkout");
    /// let mut txn = client.begin_with(options).await?;
    /// txn.put("order-1", "paid").await?;
    /// txn.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin_with(&self, options: TransactionOptions) -> Result<Transaction<R>> {
        options.check()?;
        let start_ts = match options.start_ts {
            Some(ts) => ts,
            None => self.current_timestamp().await?,
        };
        Ok(Transaction {
            reads: Reads::new(&self.ctx, start_ts, &options.read, options.read_context()),
            write_context: Arc::new(options.context()),
            try_one_pc: options.try_one_pc.unwrap_or(self.ctx.config.try_one_pc),
            async_commit: options.async_commit.unwrap_or(self.ctx.config.async_commit),
            causal_consistency: options.causal_consistency,
            started_at: self.ctx.runtime.now(),
            buffer: WriteBuffer::new(),
            pessimistic: (options.mode == TxnMode::Pessimistic).then(Pessimistic::default),

            assertion_level: options.assertion_level,
            lock_policy: options.prewrite_lock_policy,
            // client-go's default wait for a lagging TSO: 1 s.
            commit_wait_until: (Timestamp::ZERO, Duration::from_secs(1)),
            entry_size_limit: options.entry_size_limit,
            total_size_limit: options.total_size_limit,
            assertions: std::collections::BTreeMap::new(),
            latches: self.latches.clone(),
            finished: false,
        })
    }

    /// A read-only view of the database as of `ts`.
    pub fn snapshot(&self, ts: Timestamp) -> Snapshot<R> {
        let options = ReadOptions::default();
        let context = options.context();
        Snapshot {
            reads: Reads::new(&self.ctx, ts, &options, context),
        }
    }

    /// A read-only view as of `ts`, read with `options`. Fails with [`Error::Unsupported`]
    /// if an option is not implemented yet.
    pub fn snapshot_with(&self, ts: Timestamp, options: ReadOptions) -> Result<Snapshot<R>> {
        options.check()?;
        let context = options.context();
        Ok(Snapshot {
            reads: Reads::new(&self.ctx, ts, &options, context),
        })
    }

    /// The PD client underneath.
    pub fn pd(&self) -> &PdClient<R> {
        &self.ctx.pd
    }
}

/// How one snapshot (or transaction) reads: its timestamp, request context and limits.
/// Cheap to clone (streamed scans hold a clone).
struct Reads<R: Runtime> {
    ctx: Arc<ClientContext<R>>,
    ts: Timestamp,
    context: Arc<ContextOptions>,
    key_only: bool,
    timeout: Option<Duration>,
    /// Lock owners these reads may pass, learnt by any of them.
    bypass: ReadBypass,
}

impl<R: Runtime> Clone for Reads<R> {
    fn clone(&self) -> Self {
        Reads {
            ctx: self.ctx.clone(),
            ts: self.ts,
            context: self.context.clone(),
            key_only: self.key_only,
            timeout: self.timeout,
            bypass: self.bypass.clone(),
        }
    }
}

impl<R: Runtime> Reads<R> {
    fn new(
        ctx: &Arc<ClientContext<R>>,
        ts: Timestamp,
        options: &ReadOptions,
        context: ContextOptions,
    ) -> Self {
        Reads {
            ctx: ctx.clone(),
            ts,
            context: Arc::new(context),
            key_only: options.key_only,
            timeout: options.timeout,
            bypass: ReadBypass::default(),
        }
    }

    /// Runs one read, within the read timeout if one is set, once its timestamp is known
    /// not to lie in the future. A read that completed is then
    /// checked against the txn safe point (client-go's `CheckVisibility`, after the read as
    /// there: GC may have passed its timestamp while it ran), so that no answer from below
    /// the safe point, where versions may be missing, reaches the caller.
    async fn run<M: Machine<Output = Result<T>>, T>(&self, machine: M) -> Result<T> {
        // A read above every timestamp PD allocated could see a later commit appear under
        // it (client-go's read-ts validation): refused before it is sent.
        self.ctx.pd.validate_read_ts(self.ts, false).await?;
        let read = run_with(&self.ctx, machine, self.context.clone());
        let out = match self.timeout {
            None => read.await,
            Some(t) => crate::runtime::timeout(&self.ctx.runtime, t, read)
                .await
                .unwrap_or_else(|| Err(Error::Cancelled(format!("read timed out after {t:?}")))),
        }?;
        self.ctx.check_visibility(self.ts).await?;
        Ok(out)
    }

    async fn get(&self, key: Key) -> Result<Option<Bytes>> {
        let codec = self.ctx.config.keyspace_codec();
        let backoff = Backoffer::new("get", self.ctx.config.budget(budget::GET));
        self.run(Budgeted::new(
            backoff,
            SnapshotGet::new(codec, key, self.ts).with_bypass(self.bypass.clone()),
        ))
        .await
    }

    async fn batch_get(&self, keys: Vec<Key>) -> Result<Vec<KvPair>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let config = &self.ctx.config;
        let backoff = Backoffer::new("batch get", config.budget(budget::BATCH_GET));
        let get = SnapshotBatchGet::new(
            config.keyspace_codec(),
            keys,
            self.ts,
            config.raw_batch_pair_count,
        )
        .with_bypass(self.bypass.clone());
        self.run(Budgeted::new(backoff, get)).await
    }

    async fn scan(&self, range: KeyRange, limit: u32, reverse: bool) -> Result<Vec<KvPair>> {
        if range.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "empty or inverted range {range}"
            )));
        }
        let config = &self.ctx.config;
        let backoff = Backoffer::new("scan", config.budget(budget::SCAN));
        let codec = config.keyspace_codec();
        let scan = SnapshotScan::new(codec, self.ts, range, limit, self.key_only, reverse)
            .with_bypass(self.bypass.clone());
        self.run(Budgeted::new(backoff, scan)).await
    }
}

/// Reads as of one timestamp.
pub struct Snapshot<R: Runtime> {
    reads: Reads<R>,
}

impl<R: Runtime> Snapshot<R> {
    /// The snapshot's timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.reads.ts
    }

    /// The value of `key` as of the snapshot.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Bytes>> {
        self.reads.get(key.into()).await
    }

    /// The pairs among `keys` that exist as of the snapshot, in key order.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        self.reads
            .batch_get(keys.into_iter().map(Into::into).collect())
            .await
    }

    /// Up to `limit` pairs of `range` as of the snapshot, ascending (values empty with
    /// [`ReadOptions::key_only`]).
    pub async fn scan(&self, range: impl Into<KeyRange>, limit: u32) -> Result<Vec<KvPair>> {
        self.reads.scan(range.into(), limit, false).await
    }

    /// Up to `limit` pairs of `range` as of the snapshot, descending from its end.
    pub async fn reverse_scan(
        &self,
        range: impl Into<KeyRange>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.reads.scan(range.into(), limit, true).await
    }

    /// Every pair of `range` as of the snapshot, ascending, as a stream read [`SCAN_PAGE`]
    /// pairs at a time (one page in memory at once). Ends after the last pair or the first
    /// error.
    pub fn scan_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<KvPair>> + Send + 'static {
        self.paged(range.into(), false)
    }

    /// Every pair of `range` as of the snapshot, descending from its end, streamed like
    /// [`scan_stream`](Self::scan_stream).
    pub fn reverse_scan_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<KvPair>> + Send + 'static {
        self.paged(range.into(), true)
    }

    fn paged(
        &self,
        range: KeyRange,
        reverse: bool,
    ) -> impl Stream<Item = Result<KvPair>> + Send + 'static {
        let reads = self.reads.clone();
        paged(range, move |range| {
            let reads = reads.clone();
            async move {
                let pairs = reads.scan(range.clone(), SCAN_PAGE, reverse).await?;
                Ok(Page::of(&range, pairs, SCAN_PAGE, reverse))
            }
        })
    }
}

/// A transaction: reads at its start timestamp, writes buffered until [`commit`].
///
/// Dropping a transaction that has writes and was neither committed nor rolled back
/// discards them (with a warning in the log): an optimistic transaction has written
/// nothing to TiKV before `commit`.
///
/// [`commit`]: Transaction::commit
pub struct Transaction<R: Runtime> {
    reads: Reads<R>,
    /// The request context of the transaction's writes.
    write_context: Arc<ContextOptions>,
    try_one_pc: bool,
    async_commit: bool,
    causal_consistency: bool,
    /// When the transaction began (bounds the commit timestamp of async commit and 1PC).
    started_at: tikv_core::Instant,
    buffer: WriteBuffer,
    /// Pessimistic mode: the keys locked so far, the primary, the latest `for_update_ts`.
    pessimistic: Option<Pessimistic>,
    /// How strictly prewrite checks `assertions`.
    assertion_level: AssertionLevel,
    /// What prewrite does on meeting another transaction's lock.
    lock_policy: PrewriteLockPolicy,
    /// The commit timestamp must exceed this (zero: no bound), waiting up to the duration.
    commit_wait_until: (Timestamp, Duration),
    /// Largest key + value of one write, and of all of them.
    entry_size_limit: Option<usize>,
    total_size_limit: Option<usize>,
    /// What writes expect of their keys (checked at prewrite).
    assertions: std::collections::BTreeMap<Key, Assertion>,
    /// The client's local latches, if on (optimistic commits take them).
    latches: Option<Arc<LatchTable>>,
    /// Committed or rolled back: nothing to warn about on drop.
    finished: bool,
}

/// What a pessimistic transaction holds in TiKV before it commits.
#[derive(Debug, Default)]
struct Pessimistic {
    /// Its locks and the decisions about them (core's bookkeeping).
    locks: PessimisticLocks,
    /// Ends the heartbeats that keep the primary alive (started with the primary's lock).
    heartbeat: Option<HeartbeatStop>,
}

impl Pessimistic {
    /// The transaction is over: no more heartbeats.
    fn stop_heartbeat(&mut self) {
        if let Some(stop) = self.heartbeat.take() {
            stop.stop();
        }
    }
}

impl<R: Runtime> Transaction<R> {
    /// The start timestamp: what the transaction reads as of.
    pub fn start_ts(&self) -> Timestamp {
        self.reads.ts
    }

    /// Asserts that `key` exists (or not) when the transaction commits: prewrite checks it as
    /// strictly as the transaction's [`AssertionLevel`] says
    /// ([`TransactionOptions::with_assertion_level`]; with `Off`, the default, nothing is
    /// checked) and a failed assertion fails the commit with [`Error::AssertionFailed`]. A
    /// safety net for applications that know what they expect (an insert path, an update of a
    /// row read earlier); it applies to keys the transaction writes or locks.
    pub fn set_assertion(&mut self, key: impl Into<Key>, assertion: Assertion) {
        self.assertions.insert(key.into(), assertion);
    }

    /// Sets what prewrite does on meeting another transaction's lock (client-go's
    /// `SetPrewriteEncounterLockPolicy`; [`TransactionOptions::with_prewrite_lock_policy`]
    /// at begin).
    pub fn set_prewrite_lock_policy(&mut self, policy: PrewriteLockPolicy) {
        self.lock_policy = policy;
    }

    /// Opens a stage of the write buffer (client-go's `GetMemBuffer().Staging()`, what TiDB
    /// wraps around each statement): the writes made after it are kept with
    /// [`release_stage`](Self::release_stage) or undone with
    /// [`cleanup_stage`](Self::cleanup_stage), as one. Stages nest and end innermost first.
    /// Locks taken meanwhile stay taken either way (as in client-go).
    pub fn stage(&mut self) -> StagingHandle {
        self.buffer.staging()
    }

    /// Keeps the writes of the innermost stage `handle` (they join the enclosing stage).
    /// [`Error::InvalidArgument`] if `handle` is not the innermost open stage.
    pub fn release_stage(&mut self, handle: StagingHandle) -> Result<()> {
        self.buffer.release(handle)
    }

    /// Undoes the writes of the innermost stage `handle`. [`Error::InvalidArgument`] if
    /// `handle` is not the innermost open stage.
    pub fn cleanup_stage(&mut self, handle: StagingHandle) -> Result<()> {
        self.buffer.cleanup(handle)
    }

    /// The buffered writes (read-only): `len`, `size`, `get`, and `range` in either order.
    pub fn buffer(&self) -> &WriteBuffer {
        &self.buffer
    }

    /// Whether the transaction has written nothing and holds no lock (client-go's
    /// `IsReadOnly`): its commit costs nothing.
    pub fn is_read_only(&self) -> bool {
        self.buffer.is_empty() && self.pessimistic.as_ref().is_none_or(|p| p.locks.is_empty())
    }

    /// Makes the commit timestamp exceed `ts` (client-go's `SetCommitWaitUntilTSO`, for
    /// active-active replication between clusters): a larger bound replaces a smaller one.
    /// When PD's TSO is behind it, the commit waits for it (see
    /// [`set_commit_wait_until_tso_timeout`](Self::set_commit_wait_until_tso_timeout)), then
    /// fails with [`Error::CommitTsLag`].
    pub fn set_commit_wait_until_tso(&mut self, ts: Timestamp) {
        self.commit_wait_until.0 = self.commit_wait_until.0.max(ts);
    }

    /// The bound set by [`set_commit_wait_until_tso`](Self::set_commit_wait_until_tso) (zero:
    /// none).
    pub fn commit_wait_until_tso(&self) -> Timestamp {
        self.commit_wait_until.0
    }

    /// How long the commit may wait for PD's TSO to pass the bound (1 s, client-go's
    /// default; zero: fail at once). A clock drift larger than this fails at once.
    pub fn set_commit_wait_until_tso_timeout(&mut self, timeout: Duration) {
        self.commit_wait_until.1 = timeout;
    }

    /// Whether the transaction locks keys as it goes (pessimistic mode).
    pub fn is_pessimistic(&self) -> bool {
        self.pessimistic.is_some()
    }

    /// The value of `key`: the transaction's own write if any, else the snapshot's.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Bytes>> {
        let key = key.into();
        match self.buffer.get(&key) {
            Some(own) => Ok(own.cloned()),
            None => self.reads.get(key).await,
        }
    }

    /// The existing pairs among `keys` (the transaction's own writes included), in key order.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        let (own, remote) = self
            .buffer
            .partition_reads(keys.into_iter().map(Into::into));
        let snapshot = self.reads.batch_get(remote).await?;
        Ok(WriteBuffer::merge_reads(own, snapshot))
    }

    /// Up to `limit` pairs of `range`, ascending: the snapshot merged with the transaction's
    /// own writes.
    pub async fn scan(&self, range: impl Into<KeyRange>, limit: u32) -> Result<Vec<KvPair>> {
        self.scan_merged(range.into(), limit, false).await
    }

    /// Up to `limit` pairs of `range`, descending from its end, with the transaction's own
    /// writes.
    pub async fn reverse_scan(
        &self,
        range: impl Into<KeyRange>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_merged(range.into(), limit, true).await
    }

    async fn scan_merged(&self, range: KeyRange, limit: u32, reverse: bool) -> Result<Vec<KvPair>> {
        let wanted = self.buffer.scan_limit(&range, limit);
        let snapshot = self.reads.scan(range.clone(), wanted, reverse).await?;
        let mut pairs = self.buffer.overlay_scan(&range, snapshot, limit, reverse);
        if self.reads.key_only {
            // The transaction's own values are not read back either.
            pairs.iter_mut().for_each(|p| p.value = Bytes::new());
        }
        Ok(pairs)
    }

    /// Every pair of `range` the transaction sees (the snapshot with its own writes),
    /// ascending, as a stream read a page at a time. Borrows the transaction: its writes
    /// cannot change while the stream runs.
    pub fn scan_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<KvPair>> + Send + '_ {
        self.paged(range.into(), false)
    }

    /// Every pair of `range` the transaction sees, descending from its end, streamed like
    /// [`scan_stream`](Self::scan_stream).
    pub fn reverse_scan_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<KvPair>> + Send + '_ {
        self.paged(range.into(), true)
    }

    fn paged(
        &self,
        range: KeyRange,
        reverse: bool,
    ) -> impl Stream<Item = Result<KvPair>> + Send + '_ {
        paged(range, move |range| async move {
            // A page of the snapshot, sized so that SCAN_PAGE survive the buffer's deletes;
            // the buffer is overlaid on the part of the range that page covers.
            let wanted = self.buffer.scan_limit(&range, SCAN_PAGE);
            let snapshot = self.reads.scan(range.clone(), wanted, reverse).await?;
            let read = Page::of(&range, snapshot, wanted, reverse);
            let covered = match (&read.rest, read.pairs.last()) {
                (Some(_), Some(last)) if reverse => {
                    KeyRange::new(last.key.clone(), range.end().clone())
                }
                (Some(_), Some(last)) => KeyRange::new(range.start().clone(), last.key.next_key()),
                _ => range.clone(),
            };
            let mut pairs = self
                .buffer
                .overlay_scan(&covered, read.pairs, u32::MAX, reverse);
            if self.reads.key_only {
                pairs.iter_mut().for_each(|p| p.value = Bytes::new());
            }
            Ok(Page {
                pairs,
                rest: read.rest,
            })
        })
    }

    /// Sets `key` to `value` (buffered until commit). A pessimistic transaction first locks
    /// the key (waiting for other transactions' locks), so the commit cannot meet a write
    /// conflict on it.
    pub async fn put(&mut self, key: impl Into<Key>, value: impl Into<Bytes>) -> Result<()> {
        let key = key.into();
        let mutation = Mutation::Put(value.into());
        self.check_size(&key, &mutation)?;
        self.lock_for_write(&key).await?;
        self.buffer.set(key, mutation);
        Ok(())
    }

    /// Whether writing `mutation` to `key` stays within TiKV's key size and the transaction's
    /// size limits (client-go's mem-buffer checks); nothing is buffered otherwise.
    fn check_size(&self, key: &Key, mutation: &Mutation) -> Result<()> {
        // TiKV's (and client-go's) largest key: 64 KiB - 1.
        const MAX_KEY_LEN: usize = u16::MAX as usize;
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                size: key.len(),
                limit: MAX_KEY_LEN,
            });
        }
        let entry = key.len() + mutation.value().map_or(0, Bytes::len);
        if let Some(limit) = self.entry_size_limit.filter(|l| entry > *l) {
            return Err(Error::EntryTooLarge {
                key: key.clone(),
                size: entry,
                limit,
            });
        }
        let total = self.buffer.size_after(key, mutation);
        if let Some(limit) = self.total_size_limit.filter(|l| total > *l) {
            return Err(Error::TxnTooLarge { size: total, limit });
        }
        Ok(())
    }

    /// Sets `key` to `value`, making the commit fail with [`Error::KeyExists`] if the key
    /// exists by then. A pessimistic transaction locks the key first and fails at once with
    /// [`Error::KeyExists`] if it exists (the lock is kept until the transaction ends).
    pub async fn insert(&mut self, key: impl Into<Key>, value: impl Into<Bytes>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        self.check_size(&key, &Mutation::Insert(value.clone()))?;
        if self.pessimistic.is_some() && self.buffer.get(&key).is_none() {
            let options = LockOptions::default().with_check_existence(true);
            let locked = self.lock_keys([key.clone()], options).await?;
            if locked.values.iter().any(|v| v.exists) {
                return Err(Error::KeyExists { key });
            }
        }
        self.buffer.set(key, Mutation::Insert(value));
        Ok(())
    }

    /// Deletes `key` (buffered until commit); a pessimistic transaction locks it first.
    pub async fn delete(&mut self, key: impl Into<Key>) -> Result<()> {
        let key = key.into();
        self.check_size(&key, &Mutation::Delete)?;
        self.lock_for_write(&key).await?;
        self.buffer.set(key, Mutation::Delete);
        Ok(())
    }

    /// In a pessimistic transaction, locks `key` before it is written (once).
    async fn lock_for_write(&mut self, key: &Key) -> Result<()> {
        match &self.pessimistic {
            Some(p) if p.locks.is_shared(key) => Err(Error::InvalidArgument(format!(
                "{key:?} is held in shared mode: it cannot be written (a shared lock is not \
                 upgraded to an exclusive one)"
            ))),
            Some(p) if !p.locks.holds(key) => {
                self.lock_keys([key.clone()], LockOptions::default())
                    .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Commits the buffered writes; returns the commit timestamp (the start timestamp for a
    /// transaction that wrote nothing). A pessimistic transaction in a fair-locking stage
    /// that holds keys fails with [`Error::InvalidArgument`] (finish or cancel the stage
    /// first; the failed transaction releases its locks).
    pub async fn commit(mut self) -> Result<Timestamp> {
        let ctx = self.reads.ctx.clone();
        let mut pessimistic = None;
        if let Some(p) = self.pessimistic.as_mut() {
            let (plan, changes) = p.locks.commit_plan()?;
            let fresh = p.locks.needs_fresh_for_update_ts();
            self.apply(changes);
            if let Some(mut plan) = plan {
                if fresh {
                    // A key was locked over a newer commit: prewrite (and async commit's
                    // timestamp) must be above it.
                    plan.for_update_ts = plan.for_update_ts.max(ctx.pd.get_timestamp().await?);
                }
                pessimistic = Some(plan);
            }
        }
        self.finished = true;
        let mut committer = Committer::new(&ctx.config, self.reads.ts, &self.buffer)
            .with_one_pc(self.try_one_pc)
            .with_async_commit(self.async_commit)
            .with_causal_consistency(self.causal_consistency)
            .with_started_at(self.started_at)
            .with_assertions(self.assertion_level, std::mem::take(&mut self.assertions))
            .with_prewrite_lock_policy(self.lock_policy)
            .with_commit_wait_until(self.commit_wait_until.0, self.commit_wait_until.1);
        if let Some(plan) = pessimistic {
            committer = committer
                .with_pessimistic(plan.primary, plan.for_update_ts, plan.locked)
                .with_lock_checks(plan.checks)
                .with_shared_locks(plan.shared);
        }
        let heartbeat = self.pessimistic.as_mut().and_then(|p| p.heartbeat.take());
        // Optimistic commits of one client writing the same keys take turns (local latches).
        let mut latch = None;
        if let Some(table) = self.latches.as_ref().filter(|_| self.pessimistic.is_none()) {
            let keys = self.buffer.iter().map(|(k, _)| k.clone());
            let (guard, state) = table.acquire(self.reads.ts, keys).await;
            if let LatchState::Stale { key, commit_ts } = state {
                // Committed over since this transaction started: TiKV would refuse it.
                return Err(Error::WriteConflict {
                    key,
                    primary: Key::EMPTY,
                    start_ts: self.reads.ts.as_u64(),
                    conflict_ts: 0,
                    conflict_commit_ts: commit_ts.as_u64(),
                    reason: "LocalLatch".to_string(),
                });
            }
            latch = Some(guard);
        }
        let result = run_with(&ctx, committer, self.write_context.clone()).await;
        if let (Some(guard), Ok(ts)) = (latch.as_mut(), &result) {
            guard.committed_at(*ts);
        }
        drop(latch);
        // Committed or not, the transaction is over (a failed commit rolled back).
        if let Some(stop) = heartbeat {
            stop.stop();
        }
        self.pessimistic = None;
        result
    }

    /// Abandons the transaction. An optimistic transaction has written nothing to TiKV
    /// before commit, so this only drops its buffered writes; a pessimistic one also
    /// releases the locks it took (`KvPessimisticRollback`).
    pub async fn rollback(mut self) -> Result<()> {
        self.finished = true;
        let Some(mut p) = self.pessimistic.take() else {
            return Ok(());
        };
        p.stop_heartbeat();
        match p.locks.release_all().release {
            Some(release) => {
                let ctx = &self.reads.ctx;
                run_with(ctx, self.unlock(release), self.write_context.clone()).await
            }
            None => Ok(()),
        }
    }

    /// Locks `keys` (pessimistic transactions): until the transaction ends, no other
    /// transaction can write them, and this one's commit cannot meet a write conflict on them.
    /// Waits for other transactions' locks as `options.wait` says. The locks are taken at a
    /// fresh `for_update_ts`, so a key written and committed by another transaction since this
    /// one started fails with [`Error::WriteConflict`]; retrying the statement (call again)
    /// then locks at a newer `for_update_ts`. On any failure nothing this call locked stays
    /// locked. Returns the keys' values or existence when `options` asks for them, and what
    /// the call cost ([`Locked::stats`]). With `options.max_execution` or `options.interrupt`
    /// a wait ends early with [`Error::Interrupted`].
    ///
    /// In a fair-locking stage ([`start_fair_locking`](Self::start_fair_locking)) a single
    /// key is locked even when it was committed after the `for_update_ts`
    /// ([`LockedValue::locked_with_conflict`](tikv_core::txn::LockedValue::locked_with_conflict));
    /// a call with several keys ends the stage first ([`done_fair_locking`](Self::done_fair_locking)).
    ///
    /// An optimistic transaction gets [`Error::InvalidArgument`]: its keys are checked at
    /// commit instead.
    pub async fn lock_keys(
        &mut self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
        options: LockOptions,
    ) -> Result<Locked> {
        let keys: Vec<Key> = keys.into_iter().map(Into::into).collect();
        let ctx = self.reads.ctx.clone();
        let now = ctx.runtime.now();
        let Some(p) = self.pessimistic.as_mut() else {
            return Err(Error::InvalidArgument(
                "lock_keys needs a pessimistic transaction (TransactionOptions::pessimistic())"
                    .into(),
            ));
        };
        if keys.is_empty() {
            return Ok(Locked::default());
        }
        let mut prepared = p.locks.prepare(keys, &options, now)?;
        self.apply(std::mem::take(&mut prepared.before));
        let mut for_update_ts = Timestamp::ZERO;
        let mut result = if prepared.send.is_empty() {
            Ok(Locked::default())
        } else {
            for_update_ts = ctx.pd.get_timestamp().await?;
            let age_ms = now.saturating_duration_since(self.started_at).as_millis();
            let ttl = u64::try_from(age_ms)
                .unwrap_or(u64::MAX)
                .saturating_add(MANAGED_LOCK_TTL_MS);
            let mut machine = LockKeys::new(
                ctx.config.keyspace_codec(),
                prepared.send.clone(),
                prepared.primary.clone(),
                self.reads.ts,
                for_update_ts,
                prepared.is_first_lock,
                ttl,
                &options,
            )
            .keeping(prepared.keep.iter().cloned());
            if prepared.force {
                machine = machine.force_lock();
            }
            let backoff = Backoffer::new("lock keys", ctx.config.budget(budget::PESSIMISTIC_LOCK));
            run_with(
                &ctx,
                Budgeted::new(backoff, machine),
                self.write_context.clone(),
            )
            .await
        };
        let Some(p) = self.pessimistic.as_mut() else {
            return result; // set above; the call holds `&mut self`
        };
        let changes = p.locks.finish(prepared, for_update_ts, &mut result);
        self.apply(changes);
        result
    }

    /// Starts a fair-locking stage (client-go's `StartAggressiveLocking`, TiDB's fair
    /// locking) for a statement that locks keys one by one and is retried on conflicts:
    /// each key is locked even over a newer commit (its newer value is returned, marked
    /// [`locked_with_conflict`](tikv_core::txn::LockedValue::locked_with_conflict)), and a
    /// waiter gets the lock as soon as its holder is done. On such a conflict, call
    /// [`retry_fair_locking`](Self::retry_fair_locking) and run the statement again: the keys
    /// it locks again are reused without a request. End the stage with
    /// [`done_fair_locking`](Self::done_fair_locking) (keep the last attempt's locks) or
    /// [`cancel_fair_locking`](Self::cancel_fair_locking) (release them).
    ///
    /// Fails with [`Error::InvalidArgument`] in an optimistic transaction or when a stage is
    /// already on.
    pub fn start_fair_locking(&mut self) -> Result<()> {
        let now = self.reads.ctx.runtime.now();
        self.pessimistic_locks("start_fair_locking")?
            .start_fair_locking(now)
    }

    /// Starts the statement's next attempt: what the last attempt locked stays locked for
    /// the new one to reuse; what the attempt before locked and the last did not ask for is
    /// released (client-go's `RetryAggressiveLocking`).
    pub fn retry_fair_locking(&mut self) -> Result<()> {
        let now = self.reads.ctx.runtime.now();
        let changes = self
            .pessimistic_locks("retry_fair_locking")?
            .retry_fair_locking(now)?;
        self.apply(changes);
        Ok(())
    }

    /// Ends the stage, keeping the last attempt's locks as the transaction's and releasing
    /// what earlier attempts locked and the last did not (client-go's
    /// `DoneAggressiveLocking`).
    pub fn done_fair_locking(&mut self) -> Result<()> {
        let changes = self
            .pessimistic_locks("done_fair_locking")?
            .done_fair_locking()?;
        self.apply(changes);
        Ok(())
    }

    /// Ends the stage, releasing every lock it took; locks taken before it stay (client-go's
    /// `CancelAggressiveLocking`).
    pub fn cancel_fair_locking(&mut self) -> Result<()> {
        let changes = self
            .pessimistic_locks("cancel_fair_locking")?
            .cancel_fair_locking()?;
        self.apply(changes);
        Ok(())
    }

    /// Whether a fair-locking stage is on.
    pub fn is_fair_locking(&self) -> bool {
        self.pessimistic
            .as_ref()
            .is_some_and(|p| p.locks.is_fair_locking())
    }

    /// Whether the current attempt of the fair-locking stage locked `key` (client-go's
    /// `IsInAggressiveLockingStage`): not an earlier attempt, nor the transaction before the
    /// stage.
    pub fn is_in_fair_locking_stage(&self, key: impl Into<Key>) -> bool {
        let key = key.into();
        self.pessimistic
            .as_ref()
            .is_some_and(|p| p.locks.in_fair_locking_stage(&key))
    }

    fn pessimistic_locks(&mut self, what: &str) -> Result<&mut PessimisticLocks> {
        match self.pessimistic.as_mut() {
            Some(p) => Ok(&mut p.locks),
            None => Err(Error::InvalidArgument(format!(
                "{what} needs a pessimistic transaction (TransactionOptions::pessimistic())"
            ))),
        }
    }

    /// Carries out what the lock bookkeeping decided: locks released in the background,
    /// heartbeats stopped or started for the primary.
    fn apply(&mut self, changes: Changes) {
        let ctx = self.reads.ctx.clone();
        if let Some(release) = changes.release {
            let unlock = self.unlock(release);
            let context = self.write_context.clone();
            let task_ctx = ctx.clone();
            ctx.runtime.spawn(async move {
                // Best effort: a lock left behind expires with its TTL.
                let _ = run_with(&task_ctx, unlock, context).await;
            });
        }
        let Some(p) = self.pessimistic.as_mut() else {
            return;
        };
        match changes.heartbeat {
            HeartbeatChange::Keep => {}
            HeartbeatChange::Stop => p.stop_heartbeat(),
            HeartbeatChange::Start(primary) => {
                p.stop_heartbeat();
                // The primary is locked: keep it alive for as long as the transaction runs.
                let stop = HeartbeatStop::default();
                let primary = ctx.config.keyspace_codec().encode(primary);
                let beat = Heartbeat::new(primary, self.reads.ts, self.started_at, stop.clone());
                let backoff = Backoffer::new("heartbeat", ctx.config.budget(budget::HEARTBEAT));
                let (task_ctx, context) = (ctx.clone(), self.write_context.clone());
                ctx.runtime.spawn(async move {
                    run_with(&task_ctx, Budgeted::new(backoff, beat), context).await;
                });
                p.heartbeat = Some(stop);
            }
        }
    }

    /// Locks `key` and reads its latest committed value (`SELECT ... FOR UPDATE`), waiting
    /// for other transactions' locks as long as it takes. Pessimistic transactions only.
    pub async fn get_for_update(&mut self, key: impl Into<Key>) -> Result<Option<Bytes>> {
        let key = key.into();
        if let Some(own) = self.buffer.get(&key) {
            let own = own.cloned();
            self.lock_keys([key], LockOptions::default()).await?;
            return Ok(own);
        }
        let options = LockOptions::default().with_return_values(true);
        let mut locked = self.lock_keys([key], options).await?;
        Ok(locked.values.pop().and_then(|v| v.value))
    }

    /// [`get_for_update`](Self::get_for_update) of many keys: the pairs that exist, in key
    /// order (the transaction's own writes win over what TiKV returned).
    pub async fn batch_get_for_update(
        &mut self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        let options = LockOptions::default().with_return_values(true);
        let locked = self.lock_keys(keys, options).await?;
        Ok(locked
            .values
            .into_iter()
            .filter_map(|v| {
                let value = match self.buffer.get(&v.key) {
                    Some(own) => own.cloned(),
                    None => v.value,
                };
                value.map(|value| KvPair { key: v.key, value })
            })
            .collect())
    }

    /// The release of pessimistic locks (before anything was prewritten).
    fn unlock(&self, release: Release) -> impl Machine<Output = Result<()>> + Send + 'static {
        let codec = self.reads.ctx.config.keyspace_codec();
        let keys = codec.encode_all(release.keys);
        let backoff = Backoffer::new(
            "pessimistic rollback",
            self.reads.ctx.config.budget(budget::PESSIMISTIC_ROLLBACK),
        );
        let m = pessimistic_rollback(self.reads.ts, release.for_update_ts, keys);
        let m = tikv_core::machine::Map::new(m, |r: Result<Vec<(Vec<Key>, _)>>| r.map(|_| ()));
        Budgeted::new(backoff, m)
    }
}

impl<R: Runtime> Drop for Transaction<R> {
    fn drop(&mut self) {
        if let Some(mut p) = self.pessimistic.take() {
            p.stop_heartbeat();
            let changes = p.locks.release_all();
            if let Some(release) = changes.release.filter(|_| !self.finished) {
                // A live client never leaves its locks for their TTL to expire: release them
                // in the background.
                warn!(
                    start_ts = %self.reads.ts,
                    locks = release.keys.len(),
                    "pessimistic transaction dropped without commit or rollback; releasing its locks"
                );
                self.apply(Changes {
                    release: Some(release),
                    heartbeat: HeartbeatChange::Keep,
                });
            }
        }
        if !self.finished && !self.buffer.is_empty() {
            warn!(
                start_ts = %self.reads.ts,
                writes = self.buffer.len(),
                "transaction dropped without commit or rollback; its writes are discarded"
            );
        }
    }
}
