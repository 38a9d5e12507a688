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
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            streams_per_store: 4,
            max_batch: 128,
            queue_capacity: 1024,
        }
    }
}

type Reply = oneshot::Sender<Result<batch_commands_response::response::Cmd, CallError>>;

struct Queued {
    id: u64,
    cmd: batch_commands_request::request::Cmd,
}

/// Callers waiting for an answer, by request id, with whether their request was written.
/// Ordered, so that failing them happens in a deterministic order (simulation replays).
type Inflight = Arc<Mutex<BTreeMap<u64, (Reply, bool)>>>;

struct Stream {
    queue: mpsc::Sender<Queued>,
    waiting: Inflight,
    next_id: AtomicU64,
}

struct Store {
    streams: Vec<Stream>,
    next: AtomicUsize,
}

/// Counters of the batching layer.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Messages sent.
    pub batches: AtomicU64,
    /// Requests sent in them.
    pub requests: AtomicU64,
}

/// BatchCommands streams to every store.
pub struct BatchClient<R: Runtime> {
    runtime: R,
    transport: SharedTransport,
    config: BatchConfig,
    stores: Mutex<HashMap<String, Arc<Store>>>,
    /// Counters.
    pub stats: Arc<BatchStats>,
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
        }
    }

    fn store(&self, address: &str) -> Arc<Store> {
        let mut stores = lock(&self.stores);
        if let Some(s) = stores.get(address) {
            return s.clone();
        }
        let streams = (0..self.config.streams_per_store.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(self.config.queue_capacity);
                let waiting: Inflight = Arc::new(Mutex::new(BTreeMap::new()));
                self.runtime.spawn(send_loop(
                    self.runtime.clone(),
                    self.transport.clone(),
                    address.to_string(),
                    rx,
                    waiting.clone(),
                    self.config.max_batch,
                    self.stats.clone(),
                ));
                Stream {
                    queue: tx,
                    waiting,
                    next_id: AtomicU64::new(1),
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
        let mut queue = stream.queue.clone();
        let queued = async {
            queue.send(Queued { id, cmd }).await.map_err(|_| {
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

/// Takes requests off the queue, batches them, and writes them on the stream, re-creating the
/// stream when it broke.
async fn send_loop<R: Runtime>(
    runtime: R,
    transport: SharedTransport,
    address: String,
    mut queue: mpsc::Receiver<Queued>,
    waiting: Inflight,
    max_batch: usize,
    stats: Arc<BatchStats>,
) {
    let mut sender: Option<StreamTx> = None;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    while let Some(first) = queue.next().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        // Drop requests whose callers already gave up; mark the rest as written.
        {
            let mut w = lock(&waiting);
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
            match transport.open_stream(&address, BATCH_COMMANDS).await {
                Ok((s, receiver)) => {
                    broken.store(false, Ordering::Release);
                    runtime.spawn(recv_loop(
                        receiver,
                        waiting.clone(),
                        broken.clone(),
                        address.clone(),
                    ));
                    sender = Some(s);
                }
                Err(e) => {
                    // Nothing of this batch reached the store.
                    fail(&waiting, batch.iter().map(|q| q.id), &e);
                    continue;
                }
            }
        }
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
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats
                    .requests
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                broken.store(true, Ordering::Release);
                let e = CallError {
                    delivery: Delivery::NotSent,
                    ..e
                };
                fail(&waiting, ids.into_iter(), &e);
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
    address: String,
) {
    let end = loop {
        match receiver.message().await {
            Ok(Some(bytes)) => match tikvpb::BatchCommandsResponse::decode(bytes) {
                Ok(message) => {
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
