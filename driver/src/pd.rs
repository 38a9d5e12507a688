//! The PD client: discovery, leader following, region and store lookups, and the TSO stream
//! with request batching.
//!
//! Bootstrapping asks every endpoint for `GetMembers` (with an empty header, as PD expects
//! before the cluster id is known), takes the cluster id, and connects to the leader's first
//! client URL. Every later request carries the cluster id. A call that fails in transport or
//! with "not leader" makes the client rediscover the leader and retry once; further retries
//! are the caller's (with `pdRPC` backoff in the core machines).
//!
//! Timestamps come from one long-lived `Tso` stream driven by a background task: callers
//! queue, the task sends one request for all queued callers (`count = N`), and splits the
//! reply ([`TsoBlock`]). A failed stream fails the callers of that batch with an error (they
//! never hang) and is re-created for the next batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use prost::Message;
use tikv_core::codec::RegionKeys;
use tikv_core::tso::{MAX_BATCH, TsoBlock};
use tikv_core::{Error, GrpcCode, Region, Store, Target, Timestamp};
use tikv_proto::method::Method;
use tikv_proto::pdpb::{self, pd_service as pd};
use tracing::{debug, warn};

use crate::grpc::client::CallError;
use crate::runtime::Runtime;
use crate::transport::{SharedTransport, StreamRx, StreamTx};

/// PD requests carry a `RequestHeader`; PD responses a `ResponseHeader`.
pub trait PdMessage: Message + Default + 'static {
    /// The request header slot (requests), if this message has one.
    fn request_header(&mut self) -> Option<&mut Option<pdpb::RequestHeader>> {
        None
    }
    /// The response header (responses), if this message has one.
    fn response_header(&self) -> Option<&pdpb::ResponseHeader> {
        None
    }
}

macro_rules! pd_requests {
    ($($t:ident),*) => {$(
        impl PdMessage for pdpb::$t {
            fn request_header(&mut self) -> Option<&mut Option<pdpb::RequestHeader>> {
                Some(&mut self.header)
            }
        }
    )*};
}

macro_rules! pd_responses {
    ($($t:ident),*) => {$(
        impl PdMessage for pdpb::$t {
            fn response_header(&self) -> Option<&pdpb::ResponseHeader> {
                self.header.as_ref()
            }
        }
    )*};
}

pd_requests!(
    GetMembersRequest,
    GetRegionRequest,
    GetRegionByIdRequest,
    GetStoreRequest,
    GetAllStoresRequest,
    ScanRegionsRequest,
    TsoRequest,
    AllocIdRequest
);
pd_responses!(
    GetMembersResponse,
    GetRegionResponse,
    GetStoreResponse,
    GetAllStoresResponse,
    ScanRegionsResponse,
    TsoResponse,
    AllocIdResponse
);

impl PdMessage for tikv_proto::keyspacepb::LoadKeyspaceRequest {
    fn request_header(&mut self) -> Option<&mut Option<pdpb::RequestHeader>> {
        Some(&mut self.header)
    }
}

impl PdMessage for tikv_proto::keyspacepb::LoadKeyspaceResponse {
    fn response_header(&self) -> Option<&pdpb::ResponseHeader> {
        self.header.as_ref()
    }
}

/// PD client settings.
#[derive(Clone, Debug)]
pub struct PdConfig {
    /// Timeout of one PD RPC (`PDServerTimeout`, 3 s).
    pub timeout: Duration,
    /// `caller_component` in request headers.
    pub component: String,
    /// How region boundaries are written (memcomparable under API V2).
    pub region_keys: RegionKeys,
}

impl Default for PdConfig {
    fn default() -> Self {
        PdConfig {
            timeout: Duration::from_secs(3),
            component: "tikv-rust".into(),
            region_keys: RegionKeys::Raw,
        }
    }
}

struct TsoWaiter {
    count: u32,
    reply: oneshot::Sender<Result<TsoBlock, Error>>,
}

/// A client of one PD cluster. Cheap to clone.
pub struct PdClient<R: Runtime> {
    inner: Arc<Inner<R>>,
}

impl<R: Runtime> Clone for PdClient<R> {
    fn clone(&self) -> Self {
        PdClient {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<R: Runtime> {
    runtime: R,
    endpoints: Mutex<Vec<String>>,
    cluster_id: AtomicU64,
    leader: Mutex<Option<String>>,
    transport: SharedTransport,
    config: PdConfig,
    tso: mpsc::UnboundedSender<TsoWaiter>,
}

/// `host:port` from a PD URL (`http://host:port`, `https://...`, or already bare).
fn address_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.trim_end_matches('/').to_string()
}

fn pd_error(method: &'static str, e: CallError) -> Error {
    Error::Pd {
        method,
        kind: format!("{:?}", e.status.code),
        message: e.status.message,
    }
}

impl<R: Runtime> PdClient<R> {
    /// Connects to the PD cluster reachable at any of `endpoints` (`host:port` or URLs).
    pub async fn connect(
        runtime: R,
        transport: SharedTransport,
        endpoints: &[String],
        config: PdConfig,
    ) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument("no PD endpoints given".into()));
        }
        let (tso_tx, tso_rx) = mpsc::unbounded();
        let inner = Arc::new(Inner {
            runtime: runtime.clone(),
            endpoints: Mutex::new(endpoints.iter().map(|e| address_of(e)).collect()),
            cluster_id: AtomicU64::new(0),
            leader: Mutex::new(None),
            transport,
            config,
            tso: tso_tx,
        });
        let client = PdClient { inner };
        client.discover().await?;
        // The TSO task holds only a weak reference: when the last client handle is dropped, the
        // waiter channel closes and the task ends.
        let weak = Arc::downgrade(&client.inner);
        runtime.spawn(tso_loop(weak, tso_rx));
        Ok(client)
    }

    /// The cluster id learned at bootstrap.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id.load(Ordering::Relaxed)
    }

    /// The current leader's address.
    pub fn leader_address(&self) -> Option<String> {
        lock(&self.inner.leader).clone()
    }

    /// Asks the known endpoints for the members and adopts the leader.
    async fn discover(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let endpoints = lock(&inner.endpoints).clone();
        let mut last_error = None;
        for endpoint in &endpoints {
            // Discovery requests go out without a header: the cluster id may not be known.
            let request = pdpb::GetMembersRequest::default();
            let reply = match self
                .call_on::<pd::GetMembers>(endpoint, request, false)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last_error = Some(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let cluster_id = reply.header.as_ref().map_or(0, |h| h.cluster_id);
            let known = inner.cluster_id.load(Ordering::Relaxed);
            if cluster_id == 0 || (known != 0 && cluster_id != known) {
                last_error = Some(format!(
                    "{endpoint}: cluster id {cluster_id}, expected {known}"
                ));
                continue;
            }
            let Some(leader_url) = reply.leader.as_ref().and_then(|l| l.client_urls.first()) else {
                last_error = Some(format!("{endpoint}: no leader"));
                continue;
            };
            inner.cluster_id.store(cluster_id, Ordering::Relaxed);
            let mut members: Vec<String> = reply
                .members
                .iter()
                .flat_map(|m| m.client_urls.iter().map(|u| address_of(u)))
                .collect();
            members.sort();
            members.dedup();
            if !members.is_empty() {
                *lock(&inner.endpoints) = members;
            }
            let address = address_of(leader_url);
            debug!(leader = %address, cluster_id, "PD leader");
            *lock(&inner.leader) = Some(address);
            return Ok(());
        }
        Err(Error::Pd {
            method: "GetMembers",
            kind: "UNAVAILABLE".into(),
            message: format!(
                "no PD endpoint answered: {}",
                last_error.unwrap_or_default()
            ),
        })
    }

    fn header(&self) -> pdpb::RequestHeader {
        pdpb::RequestHeader {
            cluster_id: self.cluster_id(),
            caller_component: self.inner.config.component.clone(),
            ..Default::default()
        }
    }

    async fn call_on<M>(
        &self,
        address: &str,
        mut request: M::Request,
        header: bool,
    ) -> Result<M::Response, Error>
    where
        M: Method,
        M::Request: PdMessage,
        M::Response: PdMessage,
    {
        let method: &'static str = M::PATH.rsplit('/').next().unwrap_or(M::PATH);
        if header {
            if let Some(slot) = request.request_header() {
                *slot = Some(self.header());
            }
        }
        let body = Bytes::from(request.encode_to_vec());
        let reply = self
            .inner
            .transport
            .unary(address, M::PATH, body, self.inner.config.timeout)
            .await;
        let bytes = reply.map_err(|e| pd_error(method, e))?;
        let response = M::Response::decode(bytes).map_err(|e| Error::Protocol {
            target: Target::Pd {
                address: address.to_string(),
            },
            detail: format!("{method} reply does not decode: {e}"),
        })?;
        if let Some(error) = response.response_header().and_then(|h| h.error.as_ref()) {
            let kind = pdpb::ErrorType::try_from(error.r#type).map_or_else(
                |_| format!("{}", error.r#type),
                |t| t.as_str_name().to_string(),
            );
            return Err(Error::Pd {
                method,
                kind,
                message: error.message.clone(),
            });
        }
        Ok(response)
    }

    /// Calls `M` on the leader; on a transport failure or "not leader", rediscovers the leader
    /// and tries once more.
    pub async fn call<M>(&self, request: M::Request) -> Result<M::Response, Error>
    where
        M: Method,
        M::Request: PdMessage + Clone,
        M::Response: PdMessage,
    {
        let leader = self.leader().await?;
        match self.call_on::<M>(&leader, request.clone(), true).await {
            Err(e) if Self::worth_rediscovering(&e) => {
                warn!(error = %e, "PD call failed; looking for the leader again");
                self.discover().await?;
                let leader = self.leader().await?;
                self.call_on::<M>(&leader, request, true).await
            }
            other => other,
        }
    }

    fn worth_rediscovering(e: &Error) -> bool {
        is_leader_change(e) || matches!(e, Error::Pd { kind, .. } if kind == "DeadlineExceeded")
    }

    async fn leader(&self) -> Result<String, Error> {
        let current = lock(&self.inner.leader).clone();
        match current {
            Some(l) => Ok(l),
            None => {
                self.discover().await?;
                lock(&self.inner.leader).clone().ok_or_else(|| Error::Pd {
                    method: "GetMembers",
                    kind: "UNAVAILABLE".into(),
                    message: "no PD leader".into(),
                })
            }
        }
    }

    /// Converts PD's region (boundaries decoded per `region_keys`).
    fn region_from(
        &self,
        region: Option<tikv_proto::metapb::Region>,
        leader: Option<&tikv_proto::metapb::Peer>,
    ) -> Result<Option<Region>, Error> {
        let Some(mut region) = region else {
            return Ok(None);
        };
        self.inner.config.region_keys.decode_region(&mut region)?;
        Ok(Some(Region::from_meta(&region, leader)))
    }

    fn encode_key(&self, key: &[u8]) -> Bytes {
        Bytes::from(self.inner.config.region_keys.encode(key))
    }

    /// The region holding `key`, with its leader; `None` when PD has none.
    pub async fn get_region(&self, key: &[u8]) -> Result<Option<Region>, Error> {
        let request = pdpb::GetRegionRequest {
            region_key: self.encode_key(key),
            ..Default::default()
        };
        let r = self.call::<pd::GetRegion>(request).await;
        Self::region_or_none(r.and_then(|r| self.region_from(r.region, r.leader.as_ref())))
    }

    /// The region just before the one holding `key` (for reverse scans).
    pub async fn get_prev_region(&self, key: &[u8]) -> Result<Option<Region>, Error> {
        let request = pdpb::GetRegionRequest {
            region_key: self.encode_key(key),
            ..Default::default()
        };
        let r = self.call::<pd::GetPrevRegion>(request).await;
        Self::region_or_none(r.and_then(|r| self.region_from(r.region, r.leader.as_ref())))
    }

    /// The region with this id.
    pub async fn get_region_by_id(&self, id: u64) -> Result<Option<Region>, Error> {
        let request = pdpb::GetRegionByIdRequest {
            region_id: id,
            ..Default::default()
        };
        let r = self.call::<pd::GetRegionById>(request).await;
        Self::region_or_none(r.and_then(|r| self.region_from(r.region, r.leader.as_ref())))
    }

    fn region_or_none(r: Result<Option<Region>, Error>) -> Result<Option<Region>, Error> {
        match r {
            Err(Error::Pd { kind, .. }) if kind == "REGION_NOT_FOUND" => Ok(None),
            other => other,
        }
    }

    /// The id of the API V2 keyspace `name` (`LoadKeyspace`).
    pub async fn load_keyspace(&self, name: &str) -> Result<u32, Error> {
        use tikv_proto::keyspacepb::{self, keyspace_meta, keyspace_service as ks};
        let request = keyspacepb::LoadKeyspaceRequest {
            name: name.to_string(),
            ..Default::default()
        };
        let reply = self.call::<ks::LoadKeyspace>(request).await?;
        let meta = reply.keyspace.ok_or_else(|| Error::Pd {
            method: "LoadKeyspace",
            kind: "ENTRY_NOT_FOUND".into(),
            message: format!("keyspace {name} not found"),
        })?;
        if meta.state != keyspacepb::KeyspaceState::Enabled as i32 {
            return Err(Error::InvalidArgument(format!(
                "keyspace {name} is not enabled (state {})",
                meta.state
            )));
        }
        match meta.keyspace {
            Some(keyspace_meta::Keyspace::Id(id)) => Ok(id),
            _ => Err(Error::Pd {
                method: "LoadKeyspace",
                kind: "INVALID_RESPONSE".into(),
                message: format!(
                    "keyspace {name} has no API V2 id (API V3 keyspaces are not supported)"
                ),
            }),
        }
    }

    /// A store by id.
    pub async fn get_store(&self, id: u64) -> Result<Store, Error> {
        let request = pdpb::GetStoreRequest {
            store_id: id,
            ..Default::default()
        };
        let r = self.call::<pd::GetStore>(request).await?;
        r.store.as_ref().map(Store::from).ok_or_else(|| Error::Pd {
            method: "GetStore",
            kind: "STORE_NOT_FOUND".into(),
            message: format!("store {id} not found"),
        })
    }

    /// All stores (tombstones excluded).
    pub async fn get_all_stores(&self) -> Result<Vec<Store>, Error> {
        let request = pdpb::GetAllStoresRequest {
            exclude_tombstone_stores: true,
            ..Default::default()
        };
        let r = self.call::<pd::GetAllStores>(request).await?;
        Ok(r.stores.iter().map(Store::from).collect())
    }

    /// Up to `limit` regions from `start` (with leaders), in key order.
    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i32,
    ) -> Result<Vec<Region>, Error> {
        let request = pdpb::ScanRegionsRequest {
            start_key: self.encode_key(start),
            end_key: self.encode_key(end),
            limit,
            ..Default::default()
        };
        let r = self.call::<pd::ScanRegions>(request).await?;
        let mut out = Vec::new();
        if !r.regions.is_empty() {
            for x in r.regions {
                out.extend(self.region_from(x.region, x.leader.as_ref())?);
            }
        } else {
            for (i, m) in r.region_metas.into_iter().enumerate() {
                out.extend(self.region_from(Some(m), r.leaders.get(i))?);
            }
        }
        Ok(out)
    }

    /// `count` consecutive timestamps; returns the first. Requests from concurrent callers are
    /// batched into one PD request.
    pub async fn get_timestamps(&self, count: u32) -> Result<Timestamp, Error> {
        if count == 0 || count > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "cannot request {count} timestamps at once"
            )));
        }
        // A batch that met a leader change fails as a whole; the TSO task has looked for the
        // new leader by the time we hear of it, so asking again is cheap and usually succeeds
        // (client-go's GetTS retries leader changes the same way).
        let mut attempt = 0;
        loop {
            let (tx, rx) = oneshot::channel();
            self.inner
                .tso
                .unbounded_send(TsoWaiter { count, reply: tx })
                .map_err(|_| tso_closed())?;
            match rx.await.map_err(|_| tso_closed())? {
                Ok(block) => return block.get(0).ok_or_else(tso_closed),
                Err(e) if attempt < TSO_LEADER_CHANGE_RETRIES && is_leader_change(&e) => {
                    attempt += 1
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One timestamp.
    pub async fn get_timestamp(&self) -> Result<Timestamp, Error> {
        self.get_timestamps(1).await
    }
}

/// How often a timestamp request is retried after PD's leader changed under it.
const TSO_LEADER_CHANGE_RETRIES: u32 = 3;

/// Whether a PD error means "ask the new leader".
fn is_leader_change(e: &Error) -> bool {
    match e {
        Error::Pd { kind, message, .. } => {
            kind == "Unavailable"
                || message.contains("not leader")
                || message.contains("stream closed")
        }
        _ => false,
    }
}

fn tso_closed() -> Error {
    Error::Cancelled("the PD client's timestamp task has stopped".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while these locks are held (only field reads and writes), so poisoning
    // cannot leave the data half-updated; recover rather than propagate.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Shares a block among the batch's waiters, in queue order.
fn hand_out(mut block: TsoBlock, waiters: Vec<TsoWaiter>) {
    for w in waiters {
        let share = block.take(w.count).ok_or_else(|| Error::Pd {
            method: "Tso",
            kind: "INVALID_RESPONSE".into(),
            message: "TSO block smaller than the batch".into(),
        });
        let _ = w.reply.send(share);
    }
}

/// The TSO task: batches waiters onto one stream.
async fn tso_loop<R: Runtime>(
    client: std::sync::Weak<Inner<R>>,
    mut waiters: mpsc::UnboundedReceiver<TsoWaiter>,
) {
    let mut stream: Option<(StreamTx, StreamRx)> = None;
    let mut last = Timestamp::ZERO;
    // A waiter that did not fit in the previous batch opens the next one.
    let mut carry: Option<TsoWaiter> = None;
    loop {
        let first = match carry.take() {
            Some(w) => w,
            None => match waiters.next().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut total = first.count;
        let mut batch = vec![first];
        // Everyone who queued while the previous batch was in flight rides along.
        while let Ok(w) = waiters.try_recv() {
            if total + w.count > MAX_BATCH {
                carry = Some(w);
                break;
            }
            total += w.count;
            batch.push(w);
        }
        let Some(inner) = client.upgrade() else {
            return;
        };
        let pd = PdClient { inner };
        let result = tso_round(&pd, &mut stream, total, &mut last).await;
        match result {
            Ok(block) => hand_out(block, batch),
            Err(e) => {
                stream = None;
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
                // Find the leader again before the next batch (best effort).
                if let Err(e) = pd.discover().await {
                    debug!(error = %e, "PD rediscovery after a TSO failure failed");
                }
            }
        }
    }
}

async fn tso_round<R: Runtime>(
    pd: &PdClient<R>,
    stream: &mut Option<(StreamTx, StreamRx)>,
    count: u32,
    last: &mut Timestamp,
) -> Result<TsoBlock, Error> {
    if stream.is_none() {
        let leader = pd.leader().await?;
        let s = pd
            .inner
            .transport
            .open_stream(&leader, pd::Tso::PATH)
            .await
            .map_err(|e| pd_error("Tso", e))?;
        *stream = Some(s);
    }
    let Some((sender, receiver)) = stream.as_mut() else {
        return Err(Error::Cancelled("TSO stream unavailable".into()));
    };
    let request = pdpb::TsoRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id: pd.cluster_id(),
            ..Default::default()
        }),
        count,
        ..Default::default()
    };
    sender
        .send(Bytes::from(request.encode_to_vec()))
        .map_err(|e| pd_error("Tso", e))?;
    let timeout = pd.inner.config.timeout;
    let message =
        match crate::runtime::timeout(&pd.inner.runtime, timeout, receiver.message()).await {
            Some(Ok(Some(m))) => m,
            Some(Ok(None)) => {
                return Err(Error::Pd {
                    method: "Tso",
                    kind: "Unavailable".into(),
                    message: "TSO stream closed".into(),
                });
            }
            Some(Err(e)) => return Err(pd_error("Tso", e)),
            None => {
                return Err(Error::Pd {
                    method: "Tso",
                    kind: format!("{:?}", GrpcCode::DeadlineExceeded),
                    message: format!("no TSO reply within {timeout:?}"),
                });
            }
        };
    let reply = pdpb::TsoResponse::decode(message).map_err(|e| Error::Protocol {
        target: Target::Pd {
            address: pd.leader_address().unwrap_or_default(),
        },
        detail: format!("TSO reply does not decode: {e}"),
    })?;
    if let Some(error) = reply.header.as_ref().and_then(|h| h.error.as_ref()) {
        return Err(Error::Pd {
            method: "Tso",
            kind: format!("{}", error.r#type),
            message: error.message.clone(),
        });
    }
    TsoBlock::from_reply(&reply, count, last)
}
