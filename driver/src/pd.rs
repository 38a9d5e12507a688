//! The PD client: region and store lookups, keyspaces, and the TSO stream — the I/O only.
//!
//! Every decision is `tikv-core`'s: [`PdSession`] knows the members, the leader and the
//! cluster id; each call is a [`PdCall`] that says where to send and whether to rediscover
//! and retry after a failure; timestamps are batched by a [`TsoBatcher`]. This module encodes
//! requests, moves them over the [`Transport`](crate::transport::Transport), and reports what
//! came back, typed at the boundary ([`PdFailure`], [`header_error`]).
//!
//! Timestamps come from one long-lived `Tso` stream driven by a background task: callers
//! queue in the batcher and wake the task, which sends one request for everyone queued and
//! hands out the reply as the batcher says. The task holds the client weakly and ends with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use prost::Message;
use tikv_core::codec::RegionKeys;
use tikv_core::oracle::{LOW_RESOLUTION_INTERVAL, LastTimestamp, validate_read_ts};
use tikv_core::pd::{PdCall, PdErrorKind, PdErrorType, PdFailure, PdSession, PdStep, header_error};
use tikv_core::tso::{Ticket, TsoBatcher};
use tikv_core::{Error, Region, Store, Timestamp};
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
    AllocIdRequest,
    GetGcStateRequest,
    GetAllKeyspacesGcStatesRequest,
    AdvanceTxnSafePointRequest,
    AdvanceGcSafePointRequest,
    SetGcBarrierRequest,
    DeleteGcBarrierRequest,
    SetGlobalGcBarrierRequest,
    DeleteGlobalGcBarrierRequest,
    ScatterRegionRequest,
    GetOperatorRequest,
    GetMinTsRequest,
    SetExternalTimestampRequest,
    GetExternalTimestampRequest
);
pd_responses!(
    GetMembersResponse,
    GetRegionResponse,
    GetStoreResponse,
    GetAllStoresResponse,
    ScanRegionsResponse,
    TsoResponse,
    AllocIdResponse,
    GetGcStateResponse,
    GetAllKeyspacesGcStatesResponse,
    AdvanceTxnSafePointResponse,
    AdvanceGcSafePointResponse,
    SetGcBarrierResponse,
    DeleteGcBarrierResponse,
    SetGlobalGcBarrierResponse,
    DeleteGlobalGcBarrierResponse,
    ScatterRegionResponse,
    GetOperatorResponse,
    GetMinTsResponse,
    SetExternalTimestampResponse,
    GetExternalTimestampResponse
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
    /// Timeout of one PD RPC, and of one TSO round (`PDServerTimeout`, 3 s).
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

/// The TSO batcher and where each ticket's answer goes.
#[derive(Default)]
struct Tso {
    batcher: TsoBatcher,
    waiters: BTreeMap<Ticket, oneshot::Sender<Result<Timestamp, Error>>>,
}

struct Inner<R: Runtime> {
    runtime: R,
    transport: SharedTransport,
    config: PdConfig,
    session: Mutex<PdSession>,
    tso: Mutex<Tso>,
    /// Wakes the TSO task when a caller queued.
    tso_wake: mpsc::UnboundedSender<()>,
    /// The latest timestamp handed out, for the oracle's estimates.
    last_ts: Mutex<LastTimestamp>,
}

/// The PD method name of `M` (the last part of its path).
fn method_name<M: Method>() -> &'static str {
    M::PATH.rsplit('/').next().unwrap_or(M::PATH)
}

/// How a transport failure looks to the PD session.
fn failure(e: CallError) -> PdFailure {
    PdFailure {
        delivery: e.delivery,
        status: e.from_server.then_some(e.status.code),
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
        let session = PdSession::new(endpoints, config.component.clone())?;
        let (tso_wake, woken) = mpsc::unbounded();
        let inner = Arc::new(Inner {
            runtime: runtime.clone(),
            transport,
            config,
            session: Mutex::new(session),
            tso: Mutex::default(),
            tso_wake,
            last_ts: Mutex::default(),
        });
        let client = PdClient { inner };
        client.discover().await?;
        // The TSO task holds only a weak reference: when the last client handle is dropped, the
        // wake channel closes and the task ends.
        runtime.spawn(tso_loop(Arc::downgrade(&client.inner), woken));
        Ok(client)
    }

    /// The cluster id learned at bootstrap.
    pub fn cluster_id(&self) -> u64 {
        lock(&self.inner.session).cluster_id()
    }

    /// The current leader's address.
    pub fn leader_address(&self) -> Option<String> {
        lock(&self.inner.session).leader().map(str::to_string)
    }

    /// Asks the members for the leader, as the session says.
    async fn discover(&self) -> Result<(), Error> {
        let mut call = PdCall::discovery();
        self.drive(&mut call, |_| async { unreachable_send() })
            .await?;
        Ok(())
    }

    /// One request to `address`: encoded, sent, decoded; failures typed.
    async fn unary<M>(&self, address: &str, request: &M::Request) -> Result<M::Response, Error>
    where
        M: Method,
        M::Response: PdMessage,
    {
        let method = method_name::<M>();
        let body = Bytes::from(request.encode_to_vec());
        let reply = self
            .inner
            .transport
            .unary(address, M::PATH, body, self.inner.config.timeout)
            .await;
        let bytes = reply.map_err(|e| failure(e).into_error(method, address))?;
        let response = M::Response::decode(bytes).map_err(|e| Error::Pd {
            method,
            address: address.to_string(),
            kind: PdErrorKind::InvalidResponse,
            message: format!("reply does not decode: {e}"),
        })?;
        header_error(method, address, response.response_header())?;
        Ok(response)
    }

    /// Runs `call` to its end: members asked and the request sent (by `send`) where the
    /// session says. Returns the last send's answer (`None` for a discovery-only call).
    async fn drive<T, F, Fut>(&self, call: &mut PdCall, mut send: F) -> Result<Option<T>, Error>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        loop {
            let step = call.next(&lock(&self.inner.session));
            match step {
                None => return Ok(None),
                Some(PdStep::Fail(e)) => return Err(e),
                Some(PdStep::AskMembers(endpoint)) => {
                    // No header: the cluster id may not be known yet.
                    let request = pdpb::GetMembersRequest::default();
                    let reply = self.unary::<pd::GetMembers>(&endpoint, &request).await;
                    if let Err(e) = &reply {
                        debug!(endpoint = %endpoint, error = %e, "PD member did not answer");
                    }
                    let mut session = lock(&self.inner.session);
                    if let Some(done) = call.on_members(&mut session, &endpoint, reply) {
                        done?;
                        debug!(leader = ?session.leader(), cluster_id = session.cluster_id(), "PD leader");
                    }
                }
                Some(PdStep::Send(address)) => {
                    let reply = send(address.clone()).await;
                    let verdict = reply.as_ref().map(|_| ()).map_err(Clone::clone);
                    if let Err(e) = &verdict {
                        warn!(error = %e, "PD call failed");
                    }
                    match call.on_reply(&mut lock(&self.inner.session), &address, verdict) {
                        Some(Ok(())) | Some(Err(_)) => return reply.map(Some),
                        None => {}
                    }
                }
            }
        }
    }

    /// Calls `M` on the leader, rediscovering and retrying once when the leader changed.
    /// (The typed methods cover what users need; this is for the driver and tests.)
    #[doc(hidden)]
    pub async fn call<M>(&self, request: M::Request) -> Result<M::Response, Error>
    where
        M: Method,
        M::Request: PdMessage + Clone,
        M::Response: PdMessage,
    {
        let mut call = PdCall::new(method_name::<M>());
        let this = self.clone();
        let reply = self
            .drive(&mut call, |address| {
                let mut request = request.clone();
                if let Some(slot) = request.request_header() {
                    *slot = Some(lock(&this.inner.session).header());
                }
                let this = this.clone();
                async move { this.unary::<M>(&address, &request).await }
            })
            .await?;
        reply.ok_or_else(|| {
            Error::Cancelled(format!("PD {} ended without an answer", method_name::<M>()))
        })
    }

    /// Converts PD's region (boundaries decoded per `region_keys`).
    /// A region from a `method` reply, boundaries decoded. A boundary that does not decode
    /// is PD's invalid answer (never worth retrying), named with the region and the PD
    /// leader that gave it.
    fn region_from(
        &self,
        method: &'static str,
        region: Option<tikv_proto::metapb::Region>,
        leader: Option<&tikv_proto::metapb::Peer>,
    ) -> Result<Option<Region>, Error> {
        let Some(mut region) = region else {
            return Ok(None);
        };
        if let Err(e) = self.inner.config.region_keys.decode_region(&mut region) {
            return Err(Error::Pd {
                method,
                address: self.leader_address().unwrap_or_default(),
                kind: PdErrorKind::InvalidResponse,
                message: format!("region {}: {e}", region.id),
            });
        }
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
        Self::region_or_none(
            r.and_then(|r| self.region_from("GetRegion", r.region, r.leader.as_ref())),
        )
    }

    /// The region just before the one holding `key` (for reverse scans).
    pub async fn get_prev_region(&self, key: &[u8]) -> Result<Option<Region>, Error> {
        let request = pdpb::GetRegionRequest {
            region_key: self.encode_key(key),
            ..Default::default()
        };
        let r = self.call::<pd::GetPrevRegion>(request).await;
        Self::region_or_none(
            r.and_then(|r| self.region_from("GetPrevRegion", r.region, r.leader.as_ref())),
        )
    }

    /// The region with this id.
    pub async fn get_region_by_id(&self, id: u64) -> Result<Option<Region>, Error> {
        let request = pdpb::GetRegionByIdRequest {
            region_id: id,
            ..Default::default()
        };
        let r = self.call::<pd::GetRegionById>(request).await;
        Self::region_or_none(
            r.and_then(|r| self.region_from("GetRegionByID", r.region, r.leader.as_ref())),
        )
    }

    /// PD's leader answers an unknown key with no region; a follower with `REGION_NOT_FOUND`.
    fn region_or_none(r: Result<Option<Region>, Error>) -> Result<Option<Region>, Error> {
        match r {
            Err(Error::Pd {
                kind: PdErrorKind::Header(PdErrorType::RegionNotFound),
                ..
            }) => Ok(None),
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
        let address = self.leader_address().unwrap_or_default();
        let error = |kind, message: String| Error::Pd {
            method: "LoadKeyspace",
            address: address.clone(),
            kind,
            message,
        };
        let meta = reply
            .keyspace
            .ok_or_else(|| error(PdErrorKind::NotFound, format!("keyspace {name} not found")))?;
        if meta.state != keyspacepb::KeyspaceState::Enabled as i32 {
            return Err(Error::InvalidArgument(format!(
                "keyspace {name} is not enabled (state {})",
                meta.state
            )));
        }
        match meta.keyspace {
            Some(keyspace_meta::Keyspace::Id(id)) => Ok(id),
            _ => Err(error(
                PdErrorKind::InvalidResponse,
                format!("keyspace {name} has no API V2 id (API V3 keyspaces are not supported)"),
            )),
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
            address: self.leader_address().unwrap_or_default(),
            kind: PdErrorKind::NotFound,
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
                out.extend(self.region_from("ScanRegions", x.region, x.leader.as_ref())?);
            }
        } else {
            for (i, m) in r.region_metas.into_iter().enumerate() {
                out.extend(self.region_from("ScanRegions", Some(m), r.leaders.get(i))?);
            }
        }
        Ok(out)
    }

    /// `count` consecutive timestamps; returns the first. Requests from concurrent callers are
    /// batched into one PD request; a leader change sends them again (the batcher decides).
    pub async fn get_timestamps(&self, count: u32) -> Result<Timestamp, Error> {
        let (reply, answer) = oneshot::channel();
        let ticket = {
            let mut tso = lock(&self.inner.tso);
            let ticket = tso.batcher.enqueue(count)?;
            tso.waiters.insert(ticket, reply);
            ticket
        };
        // A caller that stops waiting (its future dropped) leaves the batcher.
        let _cancel = CancelTicket {
            tso: &self.inner.tso,
            ticket,
        };
        self.inner
            .tso_wake
            .unbounded_send(())
            .map_err(|_| tso_closed())?;
        let first = answer.await.map_err(|_| tso_closed())??;
        let last = Timestamp::from_u64(first.as_u64() + u64::from(count.max(1)) - 1);
        lock(&self.inner.last_ts).observe(last, self.inner.runtime.now());
        Ok(first)
    }

    /// One timestamp.
    pub async fn get_timestamp(&self) -> Result<Timestamp, Error> {
        self.get_timestamps(1).await
    }

    /// The latest timestamp this client was handed (zero before any).
    pub fn last_timestamp(&self) -> Timestamp {
        lock(&self.inner.last_ts).latest()
    }

    /// A recent timestamp without a round trip while the last one is under 2 s old
    /// (client-go's `GetLowResolutionTimestamp`); otherwise a fresh one.
    pub async fn low_resolution_timestamp(&self) -> Result<Timestamp, Error> {
        let now = self.inner.runtime.now();
        let cached = lock(&self.inner.last_ts).low_resolution(now, LOW_RESOLUTION_INTERVAL);
        match cached {
            Some(ts) => Ok(ts),
            None => self.get_timestamp().await,
        }
    }

    /// A timestamp about `ago` in the past (client-go's `GetStaleTimestamp`), estimated from
    /// the last timestamp and the local clock since (fetching one first if there is none);
    /// for stale reads "at most N seconds old".
    pub async fn stale_timestamp(&self, ago: Duration) -> Result<Timestamp, Error> {
        if self.last_timestamp().is_zero() {
            self.get_timestamp().await?;
        }
        let now = self.inner.runtime.now();
        lock(&self.inner.last_ts).stale(now, ago).ok_or_else(|| {
            Error::InvalidArgument(format!("{ago:?} ago is before the start of TSO time"))
        })
    }

    /// Refuses a read timestamp above every timestamp PD allocated (client-go's
    /// `ValidateReadTS`): checked against the last one seen, and when above it, against a
    /// fresh one.
    pub async fn validate_read_ts(&self, read_ts: Timestamp, stale: bool) -> Result<(), Error> {
        if validate_read_ts(read_ts, self.last_timestamp(), stale).is_ok() {
            return Ok(());
        }
        let fresh = self.get_timestamp().await?;
        validate_read_ts(read_ts, fresh, stale)
    }

    /// Sets PD's external timestamp (client-go's `SetExternalTimestamp`: a timestamp an
    /// outside system reports, e.g. how far a replication source has applied). PD refuses
    /// one above its current TSO or not above the current external timestamp
    /// (`PdErrorType::InvalidValue`).
    pub async fn set_external_timestamp(&self, ts: Timestamp) -> Result<(), Error> {
        let request = pdpb::SetExternalTimestampRequest {
            timestamp: ts.as_u64(),
            ..Default::default()
        };
        self.call::<pd::SetExternalTimestamp>(request).await?;
        Ok(())
    }

    /// PD's external timestamp (zero until one is set).
    pub async fn external_timestamp(&self) -> Result<Timestamp, Error> {
        let r = self
            .call::<pd::GetExternalTimestamp>(pdpb::GetExternalTimestampRequest::default())
            .await?;
        Ok(Timestamp::from_u64(r.timestamp))
    }
}

/// Only discovery-only calls use `drive` without a sender, and they never send.
fn unreachable_send() -> Result<(), Error> {
    Err(Error::Cancelled("a discovery sends no request".into()))
}

/// Removes a ticket from the batcher when its caller goes away; a no-op once answered.
struct CancelTicket<'a> {
    tso: &'a Mutex<Tso>,
    ticket: Ticket,
}

impl Drop for CancelTicket<'_> {
    fn drop(&mut self) {
        let mut tso = lock(self.tso);
        if tso.waiters.remove(&self.ticket).is_some() {
            tso.batcher.cancel(self.ticket);
        }
    }
}

fn tso_closed() -> Error {
    Error::Cancelled("the PD client's timestamp task has stopped".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while these locks are held (plain data updates), so poisoning cannot
    // leave the data half-updated; recover rather than propagate.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The TSO task: sends what the batcher asks for on one stream, and hands out the replies.
async fn tso_loop<R: Runtime>(client: Weak<Inner<R>>, mut woken: mpsc::UnboundedReceiver<()>) {
    let mut stream: Option<(String, StreamTx, StreamRx)> = None;
    loop {
        let Some(inner) = client.upgrade() else {
            return;
        };
        let pd = PdClient { inner };
        let header = lock(&pd.inner.session).header();
        let request = lock(&pd.inner.tso).batcher.poll_request(header);
        let Some(request) = request else {
            drop(pd);
            if woken.next().await.is_none() {
                return;
            }
            continue;
        };
        let (address, reply) = tso_round(&pd, &mut stream, request).await;
        let round = {
            let mut tso = lock(&pd.inner.tso);
            let round = tso.batcher.handle_reply(&address, reply);
            for (ticket, answer) in round.answers.iter().cloned() {
                if let Some(waiter) = tso.waiters.remove(&ticket) {
                    let _ = waiter.send(answer);
                }
            }
            round
        };
        if round.rediscover {
            stream = None;
            lock(&pd.inner.session).leader_failed(&address);
            if let Err(e) = pd.discover().await {
                debug!(error = %e, "PD rediscovery after a TSO failure failed");
            }
        }
        if let Some(wait) = round.retry_after.filter(|w| !w.is_zero()) {
            pd.inner.runtime.sleep(wait).await;
        }
    }
}

/// Sends one TSO request on the stream (opened to the leader first if needed) and waits for
/// the reply, at most the PD timeout. Returns where it went and what came back.
async fn tso_round<R: Runtime>(
    pd: &PdClient<R>,
    stream: &mut Option<(String, StreamTx, StreamRx)>,
    request: pdpb::TsoRequest,
) -> (String, Result<pdpb::TsoResponse, Error>) {
    if stream.is_none() {
        let leader = match pd.leader_address() {
            Some(l) => l,
            None => match pd.discover().await.map(|()| pd.leader_address()) {
                Ok(Some(l)) => l,
                Ok(None) => return (String::new(), Err(no_leader(pd))),
                Err(e) => return (String::new(), Err(e)),
            },
        };
        match pd.inner.transport.open_stream(&leader, pd::Tso::PATH).await {
            Ok((tx, rx)) => *stream = Some((leader, tx, rx)),
            Err(e) => return (leader.clone(), Err(failure(e).into_error("Tso", &leader))),
        }
    }
    let Some((address, sender, receiver)) = stream.as_mut() else {
        return (String::new(), Err(no_leader(pd)));
    };
    let address = address.clone();
    if let Err(e) = sender.send(Bytes::from(request.encode_to_vec())) {
        return (address.clone(), Err(failure(e).into_error("Tso", &address)));
    }
    let timeout = pd.inner.config.timeout;
    let reply = match crate::runtime::timeout(&pd.inner.runtime, timeout, receiver.message()).await
    {
        Some(Ok(Some(m))) => pdpb::TsoResponse::decode(m).map_err(|e| Error::Pd {
            method: "Tso",
            address: address.clone(),
            kind: PdErrorKind::InvalidResponse,
            message: format!("reply does not decode: {e}"),
        }),
        Some(Ok(None)) => Err(Error::Pd {
            method: "Tso",
            address: address.clone(),
            kind: PdErrorKind::Unreachable(tikv_core::Delivery::MaybeDelivered),
            message: "TSO stream closed".into(),
        }),
        Some(Err(e)) => Err(failure(e).into_error("Tso", &address)),
        None => Err(Error::Pd {
            method: "Tso",
            address: address.clone(),
            kind: PdErrorKind::Unreachable(tikv_core::Delivery::MaybeDelivered),
            message: format!("no TSO reply within {timeout:?}"),
        }),
    };
    (address, reply)
}

/// No member named a leader: the error lists the members asked.
fn no_leader<R: Runtime>(pd: &PdClient<R>) -> Error {
    let members = lock(&pd.inner.session).endpoints().join(",");
    Error::Pd {
        method: "Tso",
        address: members,
        kind: PdErrorKind::NotLeader,
        message: "no PD member names a leader".into(),
    }
}
