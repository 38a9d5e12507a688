//! BatchCommands: many TiKV requests multiplexed onto a few long-lived streams per store.
//!
//! Each store gets `streams_per_store` `/tikvpb.Tikv/BatchCommands` streams (client-go: one
//! per connection, 4 connections). A caller picks a stream round-robin, takes a request id from
//! it, registers where the answer goes, and queues its request (already wrapped into the
//! BatchCommands oneof on the caller's task). The stream's send task drains everything queued
//! into one `BatchCommandsRequest` (up to `max_batch`), so under load many requests share one
//! message and one write; when idle, a request goes out alone at once. A receive task routes
//! each response by id to its caller, in any order.
//!
//! Failure: when a stream breaks, every request written on it completes as MaybeDelivered, and
//! the next request re-creates the stream. A caller that gives up (deadline) deregisters its
//! id; a late answer for it is dropped. The queue is bounded, so memory stays bounded: callers
//! wait for room (within their deadline) when a store is overloaded.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::{SinkExt, StreamExt};
use prost::Message;
use tikv_core::{Delivery, GrpcCode};
use tikv_proto::tikvpb::{self, batch_commands_request, batch_commands_response};
use tracing::debug;

use crate::grpc::{CallError, Status};
use crate::runtime::{Runtime, timeout};
use crate::transport::{SharedTransport, StreamRx, StreamTx};

const BATCH_COMMANDS: &str = "/tikvpb.Tikv/BatchCommands";

/// BatchCommands settings.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Streams per store (client-go: `GrpcConnectionCount`, 4).
    pub streams_per_store: usize,
    /// Most requests per message (client-go: `MaxBatchSize`, 128).
    pub max_batch: usize,
    /// Requests that may wait per stream before callers are held back.
    pub queue_capacity: usize,
    /// When the previous message carried several requests (the store is busy), let other
    /// tasks run once before sending, so that the requests they are about to queue share the
    /// message (client-go's "standard" policy waits ~100 µs; a yield costs far less).
    pub coalesce_when_busy: bool,
    /// When a store's first stream has been idle this long, it asks the store for health
    /// feedback (`GetHealthFeedback`), which otherwise only comes with responses; zero
    /// disables.
    pub health_feedback_interval: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            streams_per_store: 4,
            max_batch: 128,
            queue_capacity: 1024,
            coalesce_when_busy: true,
            health_feedback_interval: Duration::from_secs(10),
        }
    }
}

type Reply = oneshot::Sender<Result<batch_commands_response::response::Cmd, CallError>>;

struct Queued {
    id: u64,
    cmd: batch_commands_request::request::Cmd,
    queued_at: tikv_core::Instant,
}

/// Callers waiting for an answer, by request id, with whether their request was written.
/// Ordered, so that failing them happens in a deterministic order (simulation replays).
type Inflight = Arc<Mutex<BTreeMap<u64, (Reply, bool)>>>;

struct Stream {
    queue: mpsc::Sender<Queued>,
    waiting: Inflight,
    next_id: Arc<AtomicU64>,
}

struct Store {
    streams: Vec<Stream>,
    next: AtomicUsize,
}

/// Removes a caller's entry from the in-flight map when the caller goes away, however it
/// goes (answered, timed out, or its future dropped). Removing an entry already answered is a
/// no-op.
struct Deregister<'a> {
    waiting: &'a Inflight,
    id: u64,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        lock(self.waiting).remove(&self.id);
    }
}

/// Counters of the batching layer.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Messages sent.
    pub batches: AtomicU64,
    /// Requests sent in them.
    pub requests: AtomicU64,
    /// Total time requests spent queued before being written, in microseconds.
    pub queue_wait_us: AtomicU64,
}

/// What a store last said about its health (piggybacked on BatchCommands responses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// TiKV's slow score (1 = healthy, up to 100).
    pub slow_score: i32,
    /// Sequence number of the feedback, to order reports.
    pub feedback_seq_no: u64,
    /// TiKV's transport-layer load (its gRPC thread busyness).
    pub transport_layer_load: u64,
}

type HealthMap = Arc<Mutex<BTreeMap<u64, StoreHealth>>>;

/// BatchCommands streams to every store.
pub struct BatchClient<R: Runtime> {
    runtime: R,
    transport: SharedTransport,
    config: BatchConfig,
    stores: Mutex<HashMap<String, Arc<Store>>>,
    /// Counters.
    pub stats: Arc<BatchStats>,
    health: HealthMap,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only map inserts and removals happen under these locks; recover from poisoning.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn failure(delivery: Delivery, code: GrpcCode, message: impl Into<String>) -> CallError {
    CallError {
        delivery,
        status: Status::new(code, message),
        from_server: false,
    }
}

impl<R: Runtime> BatchClient<R> {
    /// Batching over streams opened through `transport`.
    pub fn new(runtime: R, transport: SharedTransport, config: BatchConfig) -> Self {
        BatchClient {
            runtime,
            transport,
            config,
            stores: Mutex::new(HashMap::new()),
            stats: Arc::new(BatchStats::default()),
            health: Arc::default(),
        }
    }

    /// Requests registered and not yet answered or abandoned, over all streams (for tests
    /// and diagnostics).
    pub fn in_flight(&self) -> usize {
        let stores: Vec<Arc<Store>> = lock(&self.stores).values().cloned().collect();
        stores
            .iter()
            .flat_map(|s| s.streams.iter())
            .map(|s| lock(&s.waiting).len())
            .sum()
    }

    /// What store `store_id` last reported about its health, if anything.
    pub fn store_health(&self, store_id: u64) -> Option<StoreHealth> {
        lock(&self.health).get(&store_id).copied()
    }

    fn store(&self, address: &str) -> Arc<Store> {
        let mut stores = lock(&self.stores);
        if let Some(s) = stores.get(address) {
            return s.clone();
        }
        let streams = (0..self.config.streams_per_store.max(1))
            .map(|index| {
                let (tx, rx) = mpsc::channel(self.config.queue_capacity);
                let waiting: Inflight = Arc::new(Mutex::new(BTreeMap::new()));
                let next_id = Arc::new(AtomicU64::new(1));
                let task = StreamTask {
                    // One prober per store is enough.
                    probe_health: index == 0,
                    ids: next_id.clone(),
                    runtime: self.runtime.clone(),
                    transport: self.transport.clone(),
                    address: address.to_string(),
                    waiting: waiting.clone(),
                    config: self.config.clone(),
                    stats: self.stats.clone(),
                    health: self.health.clone(),
                };
                self.runtime.spawn(task.send_loop(rx));
                Stream {
                    queue: tx,
                    waiting,
                    next_id,
                }
            })
            .collect();
        let store = Arc::new(Store {
            streams,
            next: AtomicUsize::new(0),
        });
        stores.insert(address.to_string(), store.clone());
        store
    }

    /// Sends one request to the store at `address` and waits for its response, at most
    /// `deadline`.
    pub async fn call(
        &self,
        address: &str,
        cmd: batch_commands_request::request::Cmd,
        deadline: Duration,
    ) -> Result<batch_commands_response::response::Cmd, CallError> {
        let store = self.store(address);
        let index = store.next.fetch_add(1, Ordering::Relaxed) % store.streams.len();
        let stream = &store.streams[index];
        let id = stream.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        lock(&stream.waiting).insert(id, (reply, false));
        // A caller that stops waiting (its future dropped) must not leave its entry behind.
        let _deregister = Deregister {
            waiting: &stream.waiting,
            id,
        };
        let mut queue = stream.queue.clone();
        let queued = async {
            queue
                .send(Queued {
                    id,
                    cmd,
                    queued_at: self.runtime.now(),
                })
                .await
                .map_err(|_| {
                    failure(
                        Delivery::NotSent,
                        GrpcCode::Unavailable,
                        format!("{address}: batch stream task stopped"),
                    )
                })?;
            answer.await.map_err(|_| {
                failure(
                    Delivery::MaybeDelivered,
                    GrpcCode::Unavailable,
                    format!("{address}: batch stream dropped the request"),
                )
            })?
        };
        match timeout(&self.runtime, deadline, queued).await {
            Some(result) => result,
            None => {
                // Deregister so a late answer is dropped, and so the send task skips the
                // request if it has not written it yet.
                let written = lock(&stream.waiting)
                    .remove(&id)
                    .is_none_or(|(_, written)| written);
                let delivery = if written {
                    Delivery::MaybeDelivered
                } else {
                    Delivery::NotSent
                };
                Err(failure(
                    delivery,
                    GrpcCode::DeadlineExceeded,
                    format!("{address}: no response within {deadline:?}"),
                ))
            }
        }
    }
}

/// What one stream's tasks share.
struct StreamTask<R: Runtime> {
    probe_health: bool,
    ids: Arc<AtomicU64>,
    runtime: R,
    transport: SharedTransport,
    address: String,
    waiting: Inflight,
    config: BatchConfig,
    stats: Arc<BatchStats>,
    health: HealthMap,
}

/// Yields before sending while the store is busy (see `BatchConfig::coalesce_when_busy`).
const COALESCE_YIELDS: usize = 1;

/// Returns `Pending` once (waking itself), so that other ready tasks run before we continue.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

impl<R: Runtime> StreamTask<R> {
    fn drain(&self, queue: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
        while batch.len() < self.config.max_batch {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
    }

    /// The next request to send: a caller's, or (on an idle prober stream) a health-feedback
    /// request of our own. `None` once the client is gone.
    async fn next_request(&self, queue: &mut mpsc::Receiver<Queued>) -> Option<Queued> {
        let interval = self.config.health_feedback_interval;
        if !self.probe_health || interval.is_zero() {
            return queue.next().await;
        }
        let sleep = self.runtime.sleep(interval);
        futures_util::pin_mut!(sleep);
        match futures_util::future::select(queue.next(), sleep).await {
            futures_util::future::Either::Left((next, _)) => next,
            futures_util::future::Either::Right(_) => {
                // Registered like a caller whose answer nobody reads: the response's piggybacked
                // health feedback is what we are after.
                let id = self.ids.fetch_add(1, Ordering::Relaxed);
                let (reply, _) = oneshot::channel();
                lock(&self.waiting).insert(id, (reply, false));
                let cmd =
                    batch_commands_request::request::Cmd::GetHealthFeedback(Default::default());
                Some(Queued {
                    id,
                    cmd,
                    queued_at: self.runtime.now(),
                })
            }
        }
    }

    /// Takes requests off the queue, batches them, and writes them on the stream, re-creating
    /// the stream when it broke.
    async fn send_loop(self, mut queue: mpsc::Receiver<Queued>) {
        let mut sender: Option<StreamTx> = None;
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
        while let Some(first) = self.next_request(&mut queue).await {
            let mut batch = vec![first];
            self.drain(&mut queue, &mut batch);
            // Busy: other requests of this stream are still waiting for answers, so more are
            // likely on their way; give their callers a moment to queue them.
            let busy = lock(&self.waiting).len() > batch.len();
            if busy && self.config.coalesce_when_busy && batch.len() < self.config.max_batch {
                for _ in 0..COALESCE_YIELDS {
                    YieldNow(false).await;
                }
                self.drain(&mut queue, &mut batch);
            }
            // Drop requests whose callers already gave up; mark the rest as written.
            {
                let mut w = lock(&self.waiting);
                batch.retain(|q| match w.get_mut(&q.id) {
                    Some((_, written)) => {
                        *written = true;
                        true
                    }
                    None => false,
                });
            }
            if batch.is_empty() {
                continue;
            }
            if broken.load(Ordering::Acquire) {
                sender = None;
            }
            if sender.is_none() {
                match self
                    .transport
                    .open_stream(&self.address, BATCH_COMMANDS)
                    .await
                {
                    Ok((s, receiver)) => {
                        broken.store(false, Ordering::Release);
                        let receiving = recv_loop(
                            receiver,
                            self.waiting.clone(),
                            broken.clone(),
                            self.health.clone(),
                            self.address.clone(),
                        );
                        self.runtime.spawn(receiving);
                        sender = Some(s);
                    }
                    Err(e) => {
                        // Nothing of this batch reached the store.
                        fail(&self.waiting, batch.iter().map(|q| q.id), &e);
                        continue;
                    }
                }
            }
            let now = self.runtime.now();
            let waited: u64 = batch
                .iter()
                .map(|q| (now - q.queued_at).as_micros() as u64)
                .sum();
            let ids: Vec<u64> = batch.iter().map(|q| q.id).collect();
            let message = tikvpb::BatchCommandsRequest {
                requests: batch
                    .into_iter()
                    .map(|q| batch_commands_request::Request { cmd: Some(q.cmd) })
                    .collect(),
                request_ids: ids.clone(),
                client_send_time_ns: 0,
            };
            let body = bytes::Bytes::from(message.encode_to_vec());
            let sent = sender.as_mut().map_or(Ok(()), |s| s.send(body));
            match sent {
                Ok(()) => {
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .requests
                        .fetch_add(ids.len() as u64, Ordering::Relaxed);
                    self.stats
                        .queue_wait_us
                        .fetch_add(waited, Ordering::Relaxed);
                }
                Err(e) => {
                    broken.store(true, Ordering::Release);
                    let e = CallError {
                        delivery: Delivery::NotSent,
                        ..e
                    };
                    fail(&self.waiting, ids.into_iter(), &e);
                }
            }
        }
    }
}

fn fail(waiting: &Inflight, ids: impl Iterator<Item = u64>, e: &CallError) {
    let mut w = lock(waiting);
    for id in ids {
        if let Some((reply, _)) = w.remove(&id) {
            let _ = reply.send(Err(e.clone()));
        }
    }
}

/// Routes responses to callers by id; when the stream ends, fails whoever still waits on it.
async fn recv_loop(
    mut receiver: StreamRx,
    waiting: Inflight,
    broken: Arc<std::sync::atomic::AtomicBool>,
    health: HealthMap,
    address: String,
) {
    let end = loop {
        match receiver.message().await {
            Ok(Some(bytes)) => match tikvpb::BatchCommandsResponse::decode(bytes) {
                Ok(message) => {
                    if let Some(h) = &message.health_feedback {
                        let mut map = lock(&health);
                        let newer = map
                            .get(&h.store_id)
                            .is_none_or(|old| old.feedback_seq_no <= h.feedback_seq_no);
                        if newer {
                            map.insert(
                                h.store_id,
                                StoreHealth {
                                    slow_score: h.slow_score,
                                    feedback_seq_no: h.feedback_seq_no,
                                    transport_layer_load: message.transport_layer_load,
                                },
                            );
                        }
                    }
                    let mut w = lock(&waiting);
                    for (response, id) in message.responses.into_iter().zip(message.request_ids) {
                        // Unknown ids belong to callers that gave up.
                        if let Some((reply, _)) = w.remove(&id) {
                            let result = response.cmd.ok_or_else(|| {
                                failure(
                                    Delivery::MaybeDelivered,
                                    GrpcCode::Internal,
                                    format!("{address}: empty BatchCommands response"),
                                )
                            });
                            let _ = reply.send(result);
                        }
                    }
                }
                Err(e) => {
                    break failure(
                        Delivery::MaybeDelivered,
                        GrpcCode::Internal,
                        format!("{address}: undecodable BatchCommands response: {e}"),
                    );
                }
            },
            Ok(None) => {
                break failure(
                    Delivery::MaybeDelivered,
                    GrpcCode::Unavailable,
                    format!("{address}: batch stream ended"),
                );
            }
            Err(e) => {
                break CallError {
                    delivery: Delivery::MaybeDelivered,
                    ..e
                };
            }
        }
    };
    debug!(store = %address, error = %end, "BatchCommands stream ended");
    // Requests written on this stream may have been applied; those not yet written go out on
    // the next stream. Fail them before flagging the stream broken, so that no request written
    // on the next stream is mistaken for one of ours.
    let ids: Vec<u64> = lock(&waiting)
        .iter()
        .filter(|(_, (_, written))| *written)
        .map(|(id, _)| *id)
        .collect();
    fail(&waiting, ids.into_iter(), &end);
    broken.store(true, Ordering::Release);
}
