//! The gRPC front of the mock cluster: a PD endpoint and one endpoint per TiKV store, served
//! over loopback TCP with the project's HTTP/2 gRPC server.
//!
//! The engine stays sans-IO; this module owns the wall clock (PD's TSO physical time is the
//! host's, as on a real PD) and one lock around the cluster. Any gRPC client can talk to it:
//! unary TiKV and PD calls, the `BatchCommands` stream and the `Tso` stream.
//!
//! How engine failures look on the wire: a status is sent as that gRPC status; a request to a
//! down store, and a reply lost after the request was applied, both fail the call with
//! `Unavailable` (the client cannot tell whether they were applied, as with a real crash).
//! An injected delay ([`FaultAction::Delay`](crate::FaultAction::Delay)) is reported by the
//! engine and slept here, on the runtime, before the answer goes out.
//!
//! A `KvPessimisticLock` that meets another transaction's lock waits here as on TiKV: a
//! unary call stays open, a batched one is answered later in its own `BatchCommands`
//! message, until the lock is released, a deadlock is found or `wait_timeout` passes (see
//! `lock_waits`). Abandoned calls and ended streams cancel their waits.
//!
//! PD's port also speaks HTTP/1.1, as a real PD's does: each accepted connection is sniffed
//! (an HTTP/2 client starts with the `PRI * HTTP/2.0` preface) and anything that is not gRPC
//! is served PD's HTTP API subset (see [`Cluster::handle_pd_http`]).
//!
//! A [`MockServer`] is a handle: dropping it stops everything it started (listeners close,
//! connection tasks end). [`MockServer::builder`] starts a cluster in one line.

mod builder;
mod http1;
mod lock_waits;
mod sniff;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::FutureExt;
use futures_util::future::{Either, Shared, select};
use prost::Message;
use tikv_core::GrpcCode;
use tikv_driver::grpc::server::boxed;
use tikv_driver::grpc::{
    Requests, Responses, ServerConfig, Service, Status, codec, serve_connection,
};
use tikv_driver::runtime::{BoxFuture, Runtime};
use tikv_proto::kvrpcpb;
use tikv_proto::method::{Method, MethodKind};
use tikv_proto::pdpb::pd_service;
use tikv_proto::tikvpb::{self, tikv_service};
use tokio::net::TcpListener;

pub use self::builder::{MockServerBuilder, SplitEncoding, even_split_keys};
use self::lock_waits::LockWaits;
use crate::txn::LockWaitOutcome;
use crate::txn::lock_wait::LockWaitId;
use crate::{Cluster, ClusterConfig, FailureKind, MockError};

/// Milliseconds since the Unix epoch, from the host's clock (the mock PD's TSO source).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A cluster shared between the gRPC front and the test (or CLI) that steers it.
#[derive(Clone)]
pub struct SharedCluster(Arc<Mutex<Cluster>>);

impl SharedCluster {
    /// Wraps `cluster` (whose keyspace registry has `DEFAULT`, id 0, as a real PD's).
    pub fn new(cluster: Cluster) -> Self {
        SharedCluster(Arc::new(Mutex::new(cluster)))
    }

    /// Creates keyspace `name` (if new) and returns its id ([`Cluster::create_keyspace`]).
    /// Takes the cluster lock: do not call it while holding [`Self::lock`]'s guard.
    pub fn create_keyspace(&self, name: &str) -> u32 {
        self.lock().create_keyspace(name)
    }

    /// [`Self::handle_keyspace`] for a call that reached PD member `member`: like PD's
    /// keyspace service, a member that is not the leader answers "not leader".
    pub fn handle_keyspace_on(
        &self,
        member: usize,
        path: &str,
        body: Bytes,
    ) -> Option<Result<Bytes, MockError>> {
        let (count, leader) = {
            let cluster = self.lock();
            (cluster.pd_member_count(), cluster.pd_leader())
        };
        if member == leader {
            return self.handle_keyspace(path, body);
        }
        let known = tikv_proto::keyspacepb::keyspace_service::METHODS
            .iter()
            .any(|m| m.path == path);
        known.then(|| {
            Err(if member >= count {
                MockError::unreachable(format!("PD member {member} does not exist"))
            } else {
                MockError::status(crate::Code::Unavailable, "not leader")
            })
        })
    }

    /// Serves PD's keyspace service (`/keyspacepb.Keyspace/...`); `None` for other paths.
    pub fn handle_keyspace(&self, path: &str, body: Bytes) -> Option<Result<Bytes, MockError>> {
        use tikv_proto::keyspacepb::{self, keyspace_meta, keyspace_service};
        if path != <keyspace_service::LoadKeyspace as Method>::PATH {
            return keyspace_service::METHODS
                .iter()
                .any(|m| m.path == path)
                .then(|| Err(MockError::unimplemented(path)));
        }
        let request = match keyspacepb::LoadKeyspaceRequest::decode(body) {
            Ok(r) => r,
            Err(e) => return Some(Err(MockError::undecodable(path, &e))),
        };
        let (cluster_id, found) = {
            let cluster = self.lock();
            (cluster.cluster_id(), cluster.keyspace_id(&request.name))
        };
        let mut reply = keyspacepb::LoadKeyspaceResponse {
            header: Some(tikv_proto::pdpb::ResponseHeader {
                cluster_id,
                error: None,
            }),
            keyspace: None,
        };
        match found {
            Some(id) => {
                reply.keyspace = Some(keyspacepb::KeyspaceMeta {
                    name: request.name,
                    state: keyspacepb::KeyspaceState::Enabled as i32,
                    keyspace: Some(keyspace_meta::Keyspace::Id(id)),
                    ..Default::default()
                });
            }
            None => {
                if let Some(h) = reply.header.as_mut() {
                    h.error = Some(tikv_proto::pdpb::Error {
                        r#type: tikv_proto::pdpb::ErrorType::EntryNotFound as i32,
                        message: format!("keyspace {} not found", request.name),
                    });
                }
            }
        }
        Some(Ok(Bytes::from(reply.encode_to_vec())))
    }

    /// Locks the cluster (to split regions, move leaders, inject faults, inspect counters).
    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        // The engine returns errors rather than panicking, so a poisoned lock can only come
        // from a panicking caller; the cluster state is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn status(e: MockError) -> Status {
    let code = match e.kind {
        FailureKind::Status => GrpcCode::from_u32(e.code.as_i32().unsigned_abs()),
        FailureKind::Unreachable | FailureKind::ReplyLost => GrpcCode::Unavailable,
    };
    Status::new(code, e.message)
}

/// Resolves once the [`MockServer`] that started a task is dropped (its sender goes away).
#[derive(Clone)]
struct Stopped(Shared<oneshot::Receiver<()>>);

impl Stopped {
    /// Runs `work` until it finishes or the server stops, whichever comes first.
    async fn run_until(self, work: impl Future<Output = ()>) {
        let work = pin!(work);
        let _ = select(work, self.0).await;
    }
}

/// What the services need from the front besides the cluster: a timer (for injected delays),
/// the stop signal (so that a long delay does not outlive the server) and the parked lock
/// waits.
#[derive(Clone)]
struct Front {
    sleep: Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>,
    stopped: Stopped,
    waits: LockWaits,
}

impl Front {
    /// The front of `cluster`, with its lock-wait pump running on `runtime`.
    fn start<R: Runtime>(runtime: R, cluster: &SharedCluster, stopped: Stopped) -> Self {
        let (waits, woken) = LockWaits::new();
        let pump = lock_waits::pump(runtime.clone(), cluster.clone(), waits.clone(), woken);
        runtime.spawn(stopped.clone().run_until(pump));
        Front {
            sleep: Arc::new(move |d| Box::pin(runtime.sleep(d))),
            stopped,
            waits,
        }
    }

    /// A unary answer: the engine's reply, sent after the injected delay (if any).
    fn answer(
        &self,
        reply: Result<Bytes, MockError>,
        delay: Option<Duration>,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let front = self.clone();
        boxed(async move {
            front.delay(delay).await?;
            codec::frame(&reply.map_err(status)?)
        })
    }

    /// Waits out an injected delay before the answer is sent.
    async fn delay(&self, delay: Option<Duration>) -> Result<(), Status> {
        let Some(delay) = delay else {
            return Ok(());
        };
        match select((self.sleep)(delay), self.stopped.0.clone()).await {
            Either::Left(_) => Ok(()),
            Either::Right(_) => Err(Status::new(
                GrpcCode::Unavailable,
                "the mock server stopped",
            )),
        }
    }
}

/// Serves one store's TiKV methods.
#[derive(Clone)]
pub struct StoreService {
    cluster: SharedCluster,
    store_id: u64,
    front: Front,
}

impl Service for StoreService {
    fn kind(&self, path: &str) -> Option<MethodKind> {
        tikv_service::METHODS
            .iter()
            .find(|m| m.path == path)
            .map(|m| m.kind)
    }

    fn unary(&self, path: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        if path == <tikv_service::KvPessimisticLock as Method>::PATH {
            return self.pessimistic_lock(path, request);
        }
        let (reply, delay) = {
            let mut cluster = self.cluster.lock();
            let reply = cluster.handle_tikv(self.store_id, path, request, now_ms());
            (reply, cluster.take_injected_delay())
        };
        self.front.answer(reply, delay)
    }

    fn streaming(
        &self,
        path: &str,
        mut requests: Requests,
        responses: Responses,
    ) -> BoxFuture<'static, Result<(), Status>> {
        let this = self.clone();
        let batch = path == <tikv_service::BatchCommands as Method>::PATH;
        boxed(async move {
            if !batch {
                return Err(Status::new(
                    GrpcCode::Unimplemented,
                    "the mock serves no other TiKV stream",
                ));
            }
            // Waits parked by this stream, cancelled when it ends.
            let mut stream_waits = ParkedWaits {
                cluster: this.cluster.clone(),
                waits: this.front.waits.clone(),
                ids: Vec::new(),
            };
            while let Some(message) = requests.message().await? {
                let request = tikvpb::BatchCommandsRequest::decode(message).map_err(|e| {
                    Status::new(
                        GrpcCode::InvalidArgument,
                        format!("BatchCommandsRequest: {e}"),
                    )
                })?;
                let (reply, delay, any_parked) = {
                    let mut cluster = this.cluster.lock();
                    let mut parked = Vec::new();
                    let reply = cluster.handle_batch_commands_parking(
                        this.store_id,
                        request,
                        now_ms(),
                        &mut parked,
                    );
                    let any_parked = !parked.is_empty();
                    for (request_id, wait) in parked {
                        let late = responses.clone();
                        this.front.waits.register(
                            wait,
                            Box::new(move |answer| {
                                // The stream may have ended meanwhile; nobody is left to tell.
                                let _ = send_late_lock_answer(&late, request_id, answer);
                            }),
                        );
                        stream_waits.push(wait);
                    }
                    (reply, cluster.take_injected_delay(), any_parked)
                };
                this.front.delay(delay).await?;
                let reply = reply.map_err(status)?;
                // A message whose every request parked has nothing to say yet.
                if !(any_parked && reply.request_ids.is_empty()) {
                    responses.send(codec::encode(&reply)?)?;
                }
            }
            Ok(())
        })
    }
}

impl StoreService {
    /// A unary `KvPessimisticLock`: answered at once, or held open while it waits for
    /// another transaction's lock (until released, deadlocked or `wait_timeout`).
    fn pessimistic_lock(
        &self,
        path: &str,
        request: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, Status>> {
        let request = match kvrpcpb::PessimisticLockRequest::decode(request) {
            Ok(r) => r,
            Err(e) => {
                let e = status(MockError::undecodable(path, &e));
                return boxed(async move { Err(e) });
            }
        };
        let (answer_tx, answer_rx) = oneshot::channel();
        let (outcome, delay) = {
            let mut cluster = self.cluster.lock();
            let outcome = cluster.kv_pessimistic_lock_or_wait(self.store_id, request, now_ms());
            if let Ok(LockWaitOutcome::Waiting(wait)) = &outcome {
                self.front.waits.register(
                    *wait,
                    Box::new(move |answer| {
                        // The caller may have gone away; its wait was then cancelled.
                        let _ = answer_tx.send(answer);
                    }),
                );
            }
            (outcome, cluster.take_injected_delay())
        };
        let front = self.front.clone();
        let cluster = self.cluster.clone();
        boxed(async move {
            let answer = match outcome.map_err(status)? {
                LockWaitOutcome::Done(answer) => *answer,
                LockWaitOutcome::Waiting(wait) => {
                    let mut guard = ParkedWaits {
                        cluster,
                        waits: front.waits.clone(),
                        ids: vec![wait],
                    };
                    let answer = answer_rx.await.map_err(|_| {
                        Status::new(GrpcCode::Unavailable, "the mock server stopped")
                    })?;
                    guard.ids.clear();
                    answer
                }
            };
            front.delay(delay).await?;
            codec::frame(&Bytes::from(answer.encode_to_vec()))
        })
    }
}

/// Sends a parked `PessimisticLock`'s answer on its `BatchCommands` stream, alone in its
/// message.
fn send_late_lock_answer(
    responses: &Responses,
    request_id: u64,
    answer: kvrpcpb::PessimisticLockResponse,
) -> Result<(), Status> {
    let message = tikvpb::BatchCommandsResponse {
        responses: vec![tikvpb::batch_commands_response::Response {
            cmd: Some(tikvpb::batch_commands_response::response::Cmd::PessimisticLock(answer)),
        }],
        request_ids: vec![request_id],
        ..Default::default()
    };
    responses.send(codec::encode(&message)?)
}

/// Parked lock waits of a caller that may go away: dropping it cancels the ones still
/// waiting, so that an abandoned request stops holding a place in the lock's wait queue.
struct ParkedWaits {
    cluster: SharedCluster,
    waits: LockWaits,
    ids: Vec<LockWaitId>,
}

impl ParkedWaits {
    /// Adds a wait, first dropping answered ones once the list grows (a long stream parks
    /// many requests over its life).
    fn push(&mut self, id: LockWaitId) {
        if self.ids.len() >= 64 {
            let waits = &self.waits;
            self.ids.retain(|id| waits.is_waiting(*id));
        }
        self.ids.push(id);
    }
}

impl Drop for ParkedWaits {
    fn drop(&mut self) {
        let abandoned: Vec<LockWaitId> = self
            .ids
            .iter()
            .copied()
            .filter(|id| self.waits.forget(*id))
            .collect();
        if !abandoned.is_empty() {
            let mut cluster = self.cluster.lock();
            for id in abandoned {
                cluster.cancel_lock_wait(id);
            }
        }
    }
}

/// Serves one PD member.
#[derive(Clone)]
pub struct PdService {
    cluster: SharedCluster,
    member: usize,
    front: Front,
}

impl Service for PdService {
    fn kind(&self, path: &str) -> Option<MethodKind> {
        pd_service::METHODS
            .iter()
            .chain(tikv_proto::keyspacepb::keyspace_service::METHODS)
            .find(|m| m.path == path)
            .map(|m| m.kind)
    }

    fn unary(&self, path: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        let (reply, delay) =
            match self
                .cluster
                .handle_keyspace_on(self.member, path, request.clone())
            {
                Some(reply) => (reply, None),
                None => {
                    let mut cluster = self.cluster.lock();
                    let reply = cluster.handle_pd_on(self.member, path, request, now_ms());
                    (reply, cluster.take_injected_delay())
                }
            };
        self.front.answer(reply, delay)
    }

    fn streaming(
        &self,
        path: &str,
        mut requests: Requests,
        responses: Responses,
    ) -> BoxFuture<'static, Result<(), Status>> {
        let this = self.clone();
        let path = path.to_string();
        boxed(async move {
            if path != <pd_service::Tso as Method>::PATH {
                return Err(Status::new(
                    GrpcCode::Unimplemented,
                    format!("the mock does not serve {path}"),
                ));
            }
            while let Some(message) = requests.message().await? {
                let (reply, delay) = {
                    let mut cluster = this.cluster.lock();
                    let reply = cluster.handle_pd_on(this.member, &path, message, now_ms());
                    (reply, cluster.take_injected_delay())
                };
                this.front.delay(delay).await?;
                responses.send(codec::frame(&reply.map_err(status)?)?)?;
            }
            Ok(())
        })
    }
}

/// A running mock cluster: every PD member and every store listening on loopback (or the
/// host given), served by tasks on the runtime it was started on.
///
/// This is a handle: dropping it stops the cluster. Every listener closes (new connections
/// are refused) and every connection task ends, closing its connection.
pub struct MockServer {
    cluster: SharedCluster,
    pd_addresses: Vec<String>,
    store_addresses: Vec<(u64, String)>,
    /// Dropped with the server: its receivers, held by every task, then resolve.
    _stop: oneshot::Sender<()>,
}

impl MockServer {
    /// A builder to configure and start a cluster in one line, e.g.
    /// `MockServer::builder().stores(3).regions(16).api(ApiMode::V2).seed(7).start(runtime).await`.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder::default()
    }

    /// Builds a cluster from `config` and serves it on `127.0.0.1` ports picked by the OS, on
    /// the current tokio runtime (`runtime` runs the connection tasks).
    pub async fn start<R: Runtime>(runtime: R, config: ClusterConfig) -> io::Result<MockServer> {
        Self::start_on(runtime, Cluster::new(config), "127.0.0.1").await
    }

    /// Serves an existing cluster on `host` (ports picked by the OS).
    pub async fn start_on<R: Runtime>(
        runtime: R,
        cluster: Cluster,
        host: &str,
    ) -> io::Result<MockServer> {
        Self::serve(runtime, cluster, host, None).await
    }

    /// Serves `cluster`: PD member 0 on `pd_listen` when given (`host:port`), every other
    /// listener on `host` with a port picked by the OS.
    async fn serve<R: Runtime>(
        runtime: R,
        cluster: Cluster,
        host: &str,
        pd_listen: Option<&str>,
    ) -> io::Result<MockServer> {
        let cluster = SharedCluster::new(cluster);
        let (stop, stopped) = oneshot::channel();
        let stopped = Stopped(stopped.shared());
        let front = Front::start(runtime.clone(), &cluster, stopped.clone());
        let members = cluster.lock().pd_member_count();
        let mut pd_listeners = Vec::with_capacity(members);
        for member in 0..members {
            let listener = match (member, pd_listen) {
                (0, Some(address)) => TcpListener::bind(address).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen on {address}: {e}"))
                })?,
                _ => TcpListener::bind((host, 0)).await?,
            };
            let address = listener.local_addr()?.to_string();
            pd_listeners.push((listener, address));
        }
        let store_ids: Vec<u64> = cluster
            .lock()
            .topology()
            .stores()
            .map(|s| s.meta.id)
            .collect();
        // Bind everything before serving anything, so that a failed bind leaves no task behind.
        let mut store_listeners = Vec::with_capacity(store_ids.len());
        for id in store_ids {
            let listener = TcpListener::bind((host, 0)).await?;
            let address = listener.local_addr()?.to_string();
            cluster
                .lock()
                .set_store_address(id, address.clone())
                .map_err(io::Error::other)?;
            store_listeners.push((id, listener, address));
        }
        for (member, (_, address)) in pd_listeners.iter().enumerate() {
            cluster
                .lock()
                .set_pd_member_client_urls(member, vec![format!("http://{address}")])
                .map_err(io::Error::other)?;
        }
        let mut store_addresses = Vec::with_capacity(store_listeners.len());
        for (id, listener, address) in store_listeners {
            let service = StoreService {
                cluster: cluster.clone(),
                store_id: id,
                front: front.clone(),
            };
            accept(runtime.clone(), listener, stopped.clone(), move |rt, io| {
                serve_connection(rt, io, service.clone(), ServerConfig::default())
            });
            store_addresses.push((id, address));
        }
        let mut pd_addresses = Vec::with_capacity(members);
        for (member, (listener, address)) in pd_listeners.into_iter().enumerate() {
            let service = PdService {
                cluster: cluster.clone(),
                member,
                front: front.clone(),
            };
            accept(runtime.clone(), listener, stopped.clone(), move |rt, io| {
                serve_pd_connection(rt, io, service.clone())
            });
            pd_addresses.push(address);
        }
        Ok(MockServer {
            cluster,
            pd_addresses,
            store_addresses,
            _stop: stop,
        })
    }

    /// The PD endpoint (`host:port`) clients connect to: member 0, the leader at start. It
    /// also answers PD's HTTP API (`http://<pd_address>/pd/api/v1/...`).
    pub fn pd_address(&self) -> &str {
        // `ClusterConfig::pd_members` is at least 1, so member 0 always listens.
        self.pd_addresses.first().map_or("", String::as_str)
    }

    /// Every PD member's endpoint (`host:port`), by member index.
    pub fn pd_addresses(&self) -> &[String] {
        &self.pd_addresses
    }

    /// Every store's id and address.
    pub fn store_addresses(&self) -> &[(u64, String)] {
        &self.store_addresses
    }

    /// The cluster, to steer it (split, move leaders, inject faults) while clients run.
    pub fn cluster(&self) -> &SharedCluster {
        &self.cluster
    }
}

/// Accepts connections until the server stops, serving each with `serve` in its own task,
/// which also ends when the server stops (dropping the connection closes it).
fn accept<R, F, Fut>(runtime: R, listener: TcpListener, stopped: Stopped, serve: F)
where
    R: Runtime,
    F: Fn(R, tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rt = runtime.clone();
    let until = stopped.clone();
    runtime.spawn(until.run_until(async move {
        loop {
            match listener.accept().await {
                Ok((io, _)) => {
                    let _ = io.set_nodelay(true);
                    rt.spawn(stopped.clone().run_until(serve(rt.clone(), io)));
                }
                Err(e) => {
                    // Per-connection failures (the peer reset before accept, out of file
                    // descriptors for a moment) must not stop the listener: back off briefly.
                    tracing::warn!(error = %e, "mock server: accept failed");
                    rt.sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }));
}

/// One connection to a PD port: gRPC (HTTP/2) or PD's HTTP API (HTTP/1.1), told apart by its
/// first bytes.
async fn serve_pd_connection<R: Runtime>(
    runtime: R,
    io: tokio::net::TcpStream,
    service: PdService,
) {
    match sniff::sniff(io).await {
        Ok(sniff::Sniffed::Grpc(io)) => {
            serve_connection(runtime, io, service, ServerConfig::default()).await;
        }
        Ok(sniff::Sniffed::Http1(io, seen)) => http1::serve(io, seen, service.cluster).await,
        Ok(sniff::Sniffed::Closed) => {}
        Err(e) => {
            tracing::debug!(error = %e, "mock PD: connection failed before its first request")
        }
    }
}
