//! The RawKV client: a key-value store API over TiKV's raw mode.
//!
//! ```no_run
//! # async fn demo<R: tikv_driver::Runtime>(runtime: R) -> Result<(), tikv_core::Error> {
//! use tikv_driver::RawClient;
//!
//! let client = RawClient::connect_with(runtime, &["127.0.0.1:2379"], Default::default()).await?;
//! client.put("key", "value").await?;
//! assert_eq!(client.get("key").await?.as_deref(), Some(&b"value"[..]));
//! let pairs = client.scan("a".."z", 100).await?;
//! # let _ = pairs;
//! # Ok(()) }
//! ```
//!
//! Every call routes by region, retries what TiKV and PD ask to retry within client-go's
//! budgets, and runs multi-region work concurrently (bounded by `Config::region_concurrency`).
//!
//! With `Config::api_version = ApiVersion::V2`, the client works inside one keyspace
//! (`Config::keyspace`, default `DEFAULT`): it looks the keyspace up in PD when it connects,
//! prefixes every key with the keyspace's raw-mode prefix, bounds every range to the keyspace,
//! and strips the prefix from every key it returns (the plans do, with
//! [`tikv_core::KeyspaceCodec`]). Callers never see the prefix.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use bytes::Bytes;
use tikv_core::raw::{self, CasResult, Checksum, KvPair, PutItem};
use tikv_core::{Config, Error, Key, KeyRange, Result};

use crate::executor::{ClientContext, run};
use crate::paging::{Page, SCAN_PAGE, paged};
use crate::pd::PdClient;
use crate::runtime::Runtime;
use crate::transport::SharedTransport;

/// A runtime that can be obtained from the calling context (e.g. tokio's current handle).
pub trait CurrentRuntime: Runtime {
    /// The runtime of the calling context.
    fn current() -> Self;
}

/// A RawKV client. Cheap to clone; clones share connections and caches.
pub struct RawClient<R: Runtime> {
    pub(crate) ctx: Arc<ClientContext<R>>,
    cf: String,
    atomic: bool,
    timeout: Option<Duration>,
}

impl<R: Runtime> Clone for RawClient<R> {
    fn clone(&self) -> Self {
        RawClient {
            ctx: self.ctx.clone(),
            cf: self.cf.clone(),
            atomic: self.atomic,
            timeout: self.timeout,
        }
    }
}

impl<R: CurrentRuntime> RawClient<R> {
    /// Connects to the cluster whose PD is reachable at `pd_endpoints`, on the current runtime.
    pub async fn connect(pd_endpoints: &[impl AsRef<str>], config: Config) -> Result<Self> {
        Self::connect_with(R::current(), pd_endpoints, config).await
    }
}

impl<R: Runtime> RawClient<R> {
    /// Connects on `runtime`, over gRPC (with TLS when `config.security` is set).
    pub async fn connect_with(
        runtime: R,
        pd_endpoints: &[impl AsRef<str>],
        config: Config,
    ) -> Result<Self> {
        let transport = ClientContext::grpc_transport(&runtime, &config);
        Self::connect_over(runtime, transport, pd_endpoints, config).await
    }

    /// Connects through `transport` (e.g. a simulated network) instead of gRPC.
    pub async fn connect_over(
        runtime: R,
        transport: SharedTransport,
        pd_endpoints: &[impl AsRef<str>],
        config: Config,
    ) -> Result<Self> {
        let mode = tikv_core::KeyMode::Raw;
        let ctx = ClientContext::connect(runtime, transport, pd_endpoints, config, mode).await?;
        Ok(RawClient {
            ctx: Arc::new(ctx),
            cf: String::new(),
            atomic: false,
            timeout: None,
        })
    }

    /// A handle on the same client that reads and writes column family `cf` (`"default"`,
    /// `"lock"` or `"write"`; empty for the default).
    pub fn with_cf(&self, cf: impl Into<String>) -> Self {
        RawClient {
            cf: cf.into(),
            ..self.clone()
        }
    }

    /// A handle whose writes are marked for compare-and-swap (TiKV's atomic mode). Every
    /// writer of keys that are compare-and-swapped must use it, or CAS is not linearizable.
    pub fn with_atomic_for_cas(&self) -> Self {
        RawClient {
            atomic: true,
            ..self.clone()
        }
    }

    /// A handle whose calls each fail with [`Error::Cancelled`] after `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        RawClient {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// The PD client underneath.
    pub fn pd(&self) -> &PdClient<R> {
        &self.ctx.pd
    }

    /// The API V2 keyspace id this client works in (`None` under API V1).
    pub fn keyspace_id(&self) -> Option<u32> {
        self.ctx.config.keyspace_id()
    }

    fn config(&self) -> &Config {
        &self.ctx.config
    }

    async fn exec<M: tikv_core::Machine<Output = Result<T>>, T>(&self, machine: M) -> Result<T> {
        match self.timeout {
            None => run(&self.ctx, machine).await,
            Some(t) => crate::runtime::timeout(&self.ctx.runtime, t, run(&self.ctx, machine))
                .await
                .unwrap_or_else(|| {
                    Err(Error::Cancelled(format!("operation timed out after {t:?}")))
                }),
        }
    }

    /// The value of `key`, or `None`.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Bytes>> {
        self.exec(raw::get(self.config(), key.into(), &self.cf))
            .await
    }

    /// The existing pairs among `keys`, in key order.
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        let keys: Vec<Key> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.exec(raw::batch_get(self.config(), keys, &self.cf))
            .await
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl Into<Key>, value: impl Into<Bytes>) -> Result<()> {
        self.put_with_ttl(key, value, 0).await
    }

    /// Sets `key` to `value`, expiring after `ttl_secs` seconds (0: never).
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Key>,
        value: impl Into<Bytes>,
        ttl_secs: u64,
    ) -> Result<()> {
        self.exec(raw::put(
            self.config(),
            key.into(),
            value.into(),
            ttl_secs,
            &self.cf,
            self.atomic,
        ))
        .await
    }

    /// Sets many pairs (a key given twice keeps its last value).
    pub async fn batch_put(
        &self,
        pairs: impl IntoIterator<Item = (impl Into<Key>, impl Into<Bytes>)>,
    ) -> Result<()> {
        let items = pairs
            .into_iter()
            .map(|(k, v)| PutItem {
                key: k.into(),
                value: v.into(),
                ttl: 0,
            })
            .collect();
        self.batch_put_items(items).await
    }

    /// Sets many pairs, each with its own TTL in seconds (0: never).
    pub async fn batch_put_with_ttl(
        &self,
        pairs: impl IntoIterator<Item = (impl Into<Key>, impl Into<Bytes>, u64)>,
    ) -> Result<()> {
        let items = pairs
            .into_iter()
            .map(|(k, v, ttl)| PutItem {
                key: k.into(),
                value: v.into(),
                ttl,
            })
            .collect();
        self.batch_put_items(items).await
    }

    async fn batch_put_items(&self, items: Vec<PutItem>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.exec(raw::batch_put(self.config(), items, &self.cf, self.atomic))
            .await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: impl Into<Key>) -> Result<()> {
        self.exec(raw::delete(
            self.config(),
            key.into(),
            &self.cf,
            self.atomic,
        ))
        .await
    }

    /// Deletes many keys.
    pub async fn batch_delete(&self, keys: impl IntoIterator<Item = impl Into<Key>>) -> Result<()> {
        let keys: Vec<Key> = keys.into_iter().map(Into::into).collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.exec(raw::batch_delete(
            self.config(),
            keys,
            &self.cf,
            self.atomic,
        ))
        .await
    }

    /// Deletes every key in `range`, region by region (not atomic across regions).
    pub async fn delete_range(&self, range: impl Into<KeyRange>) -> Result<()> {
        let range = range.into();
        check_range(&range)?;
        self.exec(raw::delete_range(self.config(), range, &self.cf)?)
            .await
    }

    /// Up to `limit` pairs of `range`, ascending.
    pub async fn scan(&self, range: impl Into<KeyRange>, limit: u32) -> Result<Vec<KvPair>> {
        self.scan_inner(range.into(), limit, false, false).await
    }

    /// Up to `limit` keys of `range`, ascending (values are not transferred).
    pub async fn scan_keys(&self, range: impl Into<KeyRange>, limit: u32) -> Result<Vec<Key>> {
        Ok(self
            .scan_inner(range.into(), limit, true, false)
            .await?
            .into_iter()
            .map(|p| p.key)
            .collect())
    }

    /// Up to `limit` pairs of `range`, descending from its end.
    pub async fn reverse_scan(
        &self,
        range: impl Into<KeyRange>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        self.scan_inner(range.into(), limit, false, true).await
    }

    /// Up to `limit` keys of `range`, descending from its end.
    pub async fn reverse_scan_keys(
        &self,
        range: impl Into<KeyRange>,
        limit: u32,
    ) -> Result<Vec<Key>> {
        Ok(self
            .scan_inner(range.into(), limit, true, true)
            .await?
            .into_iter()
            .map(|p| p.key)
            .collect())
    }

    async fn scan_inner(
        &self,
        range: KeyRange,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Result<Vec<KvPair>> {
        check_range(&range)?;
        let machine = raw::scan(self.config(), range, limit, key_only, reverse, &self.cf)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.exec(machine).await
    }

    /// Every pair of `range`, ascending, as a stream read [`SCAN_PAGE`] pairs at a time: a
    /// scan of any size holds one page in memory. The stream ends after the last pair or the
    /// first error.
    ///
    /// ```no_run
    /// # async fn demo<R: tikv_driver::Runtime>(client: tikv_driver::RawClient<R>) -> tikv_core::Result<()> {
    /// use futures_util::StreamExt;
    ///
    /// let mut pairs = std::pin::pin!(client.scan_stream("user/"..));
    /// while let Some(pair) = pairs.next().await {
    ///     let pair = pair?;
    ///     println!("{:?} = {:?}", pair.key, pair.value);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn scan_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<KvPair>> + Send + 'static {
        self.paged_scan(range.into(), false, false)
    }

    /// Every key of `range`, ascending, streamed like [`scan_stream`](Self::scan_stream)
    /// (values are not transferred).
    pub fn scan_keys_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<Key>> + Send + 'static {
        self.paged_scan(range.into(), true, false)
            .map(|pair| pair.map(|p| p.key))
    }

    /// Every pair of `range`, descending from its end, streamed like
    /// [`scan_stream`](Self::scan_stream).
    pub fn reverse_scan_stream(
        &self,
        range: impl Into<KeyRange>,
    ) -> impl Stream<Item = Result<KvPair>> + Send + 'static {
        self.paged_scan(range.into(), false, true)
    }

    fn paged_scan(
        &self,
        range: KeyRange,
        key_only: bool,
        reverse: bool,
    ) -> impl Stream<Item = Result<KvPair>> + Send + 'static {
        let client = self.clone();
        paged(range, move |range| {
            let client = client.clone();
            async move {
                let pairs = client
                    .scan_inner(range.clone(), SCAN_PAGE, key_only, reverse)
                    .await?;
                Ok(Page::of(&range, pairs, SCAN_PAGE, reverse))
            }
        })
    }

    /// Scans several ranges, up to `each_limit` pairs from each, concatenated in order.
    pub async fn batch_scan(
        &self,
        ranges: impl IntoIterator<Item = impl Into<KeyRange>>,
        each_limit: u32,
    ) -> Result<Vec<KvPair>> {
        let mut out = Vec::new();
        for range in ranges {
            out.extend(self.scan(range, each_limit).await?);
        }
        Ok(out)
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: the key must be absent). Needs
    /// [`with_atomic_for_cas`](Self::with_atomic_for_cas). A lost reply gives
    /// [`Error::Undetermined`].
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Key>,
        expected: Option<impl Into<Bytes>>,
        new: impl Into<Bytes>,
    ) -> Result<CasResult> {
        if !self.atomic {
            return Err(Error::InvalidArgument(
                "compare_and_swap needs atomic mode: use RawClient::with_atomic_for_cas".into(),
            ));
        }
        self.exec(raw::compare_and_swap(
            self.config(),
            key.into(),
            expected.map(Into::into),
            new.into(),
            &self.cf,
        ))
        .await
    }

    /// The remaining TTL of `key` in seconds (`Some(0)`: no TTL), `None` if absent.
    pub async fn get_key_ttl(&self, key: impl Into<Key>) -> Result<Option<u64>> {
        self.exec(raw::get_key_ttl(self.config(), key.into(), &self.cf))
            .await
    }

    /// CRC64-XOR checksum, pair count and byte count of `range` (under API V2 the bytes
    /// include the keyspace prefix, as TiKV counts them).
    pub async fn checksum(&self, range: impl Into<KeyRange>) -> Result<Checksum> {
        let range = range.into();
        check_range(&range)?;
        self.exec(raw::checksum(self.config(), range)?).await
    }
}

/// Rejects an inverted or empty range before it is mapped into a keyspace (where the
/// mapping could hide the inversion).
fn check_range(range: &KeyRange) -> Result<()> {
    if range.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "empty or inverted range {range}"
        )));
    }
    Ok(())
}
