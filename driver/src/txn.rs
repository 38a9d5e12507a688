//! The transactional client: snapshot-isolated transactions over TiKV (Percolator 2PC).
//!
//! ```no_run
//! # async fn demo<R: tikv_driver::CurrentRuntime>() -> Result<(), tikv_core::Error> {
//! use tikv_driver::TransactionClient;
//!
//! let client = TransactionClient::<R>::connect(&["127.0.0.1:2379"], Default::default()).await?;
//! let mut txn = client.begin().await?;
//! let balance = txn.get("alice").await?;
//! txn.put("alice", "90");
//! txn.put("bob", "110");
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

use std::sync::Arc;

use bytes::Bytes;
use tikv_core::backoff::{Backoffer, budget};
use tikv_core::machine::Budgeted;
use tikv_core::raw::KvPair;
use tikv_core::txn::{
    Committer, Mutation, SnapshotBatchGet, SnapshotGet, SnapshotScan, WriteBuffer,
};
use tikv_core::{Config, Error, Key, KeyMode, KeyRange, Result, Timestamp};

use crate::executor::{ClientContext, run};
use crate::pd::PdClient;
use crate::raw::CurrentRuntime;
use crate::runtime::Runtime;
use crate::transport::SharedTransport;

/// A client for transactions. Cheap to clone.
pub struct TransactionClient<R: Runtime> {
    ctx: Arc<ClientContext<R>>,
}

impl<R: Runtime> Clone for TransactionClient<R> {
    fn clone(&self) -> Self {
        TransactionClient {
            ctx: self.ctx.clone(),
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
        let ctx =
            ClientContext::connect(runtime, transport, pd_endpoints, config, KeyMode::Txn).await?;
        Ok(TransactionClient { ctx: Arc::new(ctx) })
    }

    /// A fresh timestamp from PD.
    pub async fn current_timestamp(&self) -> Result<Timestamp> {
        self.ctx.pd.get_timestamp().await
    }

    /// Starts an optimistic transaction at a fresh timestamp.
    pub async fn begin(&self) -> Result<Transaction<R>> {
        let start_ts = self.current_timestamp().await?;
        Ok(Transaction {
            ctx: self.ctx.clone(),
            start_ts,
            buffer: WriteBuffer::new(),
        })
    }

    /// A read-only view of the database as of `ts`.
    pub fn snapshot(&self, ts: Timestamp) -> Snapshot<R> {
        Snapshot {
            ctx: self.ctx.clone(),
            ts,
        }
    }

    /// The PD client underneath.
    pub fn pd(&self) -> &PdClient<R> {
        &self.ctx.pd
    }
}

/// Reads as of one timestamp.
pub struct Snapshot<R: Runtime> {
    ctx: Arc<ClientContext<R>>,
    ts: Timestamp,
}

impl<R: Runtime> Snapshot<R> {
    /// The snapshot's timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.ts
    }

    /// The value of `key` as of the snapshot.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Bytes>> {
        snapshot_get(&self.ctx, self.ts, key.into()).await
    }

    /// The pairs among `keys` that exist as of the snapshot, in key order.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        snapshot_batch_get(
            &self.ctx,
            self.ts,
            keys.into_iter().map(Into::into).collect(),
        )
        .await
    }

    /// Up to `limit` pairs of `range` as of the snapshot, ascending.
    pub async fn scan(&self, range: impl Into<KeyRange>, limit: u32) -> Result<Vec<KvPair>> {
        snapshot_scan(&self.ctx, self.ts, range.into(), limit, false).await
    }

    /// Up to `limit` pairs of `range` as of the snapshot, descending from its end.
    pub async fn reverse_scan(
        &self,
        range: impl Into<KeyRange>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        snapshot_scan(&self.ctx, self.ts, range.into(), limit, true).await
    }
}

async fn snapshot_scan<R: Runtime>(
    ctx: &Arc<ClientContext<R>>,
    ts: Timestamp,
    range: KeyRange,
    limit: u32,
    reverse: bool,
) -> Result<Vec<KvPair>> {
    if range.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "empty or inverted range {range}"
        )));
    }
    let backoff = Backoffer::new("scan", ctx.config.budget(budget::SCAN));
    let codec = ctx.config.keyspace_codec();
    let scan = SnapshotScan::new(codec, ts, range, limit, false, reverse);
    run(ctx, Budgeted::new(backoff, scan)).await
}

async fn snapshot_get<R: Runtime>(
    ctx: &Arc<ClientContext<R>>,
    ts: Timestamp,
    key: Key,
) -> Result<Option<Bytes>> {
    let backoff = Backoffer::new("get", ctx.config.budget(budget::GET));
    run(
        ctx,
        Budgeted::new(
            backoff,
            SnapshotGet::new(ctx.config.keyspace_codec(), key, ts),
        ),
    )
    .await
}

async fn snapshot_batch_get<R: Runtime>(
    ctx: &Arc<ClientContext<R>>,
    ts: Timestamp,
    keys: Vec<Key>,
) -> Result<Vec<KvPair>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let backoff = Backoffer::new("batch get", ctx.config.budget(budget::BATCH_GET));
    let codec = ctx.config.keyspace_codec();
    let get = SnapshotBatchGet::new(codec, keys, ts, ctx.config.raw_batch_pair_count);
    run(ctx, Budgeted::new(backoff, get)).await
}

/// An optimistic transaction: reads at its start timestamp, writes buffered until `commit`.
pub struct Transaction<R: Runtime> {
    ctx: Arc<ClientContext<R>>,
    start_ts: Timestamp,
    buffer: WriteBuffer,
}

impl<R: Runtime> Transaction<R> {
    /// The start timestamp: what the transaction reads as of.
    pub fn start_ts(&self) -> Timestamp {
        self.start_ts
    }

    /// The value of `key`: the transaction's own write if any, else the snapshot's.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Bytes>> {
        let key = key.into();
        match self.buffer.get(&key) {
            Some(own) => Ok(own.cloned()),
            None => snapshot_get(&self.ctx, self.start_ts, key).await,
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
        let snapshot = snapshot_batch_get(&self.ctx, self.start_ts, remote).await?;
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
        let snapshot =
            snapshot_scan(&self.ctx, self.start_ts, range.clone(), wanted, reverse).await?;
        Ok(self.buffer.overlay_scan(&range, snapshot, limit, reverse))
    }

    /// Sets `key` to `value` (buffered until commit).
    pub fn put(&mut self, key: impl Into<Key>, value: impl Into<Bytes>) {
        self.buffer.set(key.into(), Mutation::Put(value.into()));
    }

    /// Sets `key` to `value`, making the commit fail with [`Error::KeyExists`] if the key
    /// exists by then.
    pub fn insert(&mut self, key: impl Into<Key>, value: impl Into<Bytes>) {
        self.buffer.set(key.into(), Mutation::Insert(value.into()));
    }

    /// Deletes `key` (buffered until commit).
    pub fn delete(&mut self, key: impl Into<Key>) {
        self.buffer.set(key.into(), Mutation::Delete);
    }

    /// Commits the buffered writes; returns the commit timestamp (the start timestamp for a
    /// transaction that wrote nothing).
    pub async fn commit(self) -> Result<Timestamp> {
        let committer = Committer::new(&self.ctx.config, self.start_ts, &self.buffer);
        run(&self.ctx, committer).await
    }

    /// Abandons the transaction. Nothing was written to TiKV yet, so this only drops the
    /// buffer.
    pub fn rollback(self) {}
}
