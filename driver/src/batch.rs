//! BatchCommands: many TiKV requests multiplexed onto a few long-lived streams per store.
//!
//! Each store gets `streams_per_store` `/tikvpb.Tikv/BatchCommands` stream slots (client-go:
//! one per connection, 4 connections). A caller picks a slot round-robin, registers with the
//! slot's [`StreamState`] (which hands out the request id and keeps the caller's reply), and
//! queues its request (already wrapped into the BatchCommands oneof on the caller's task). The
//! slot's send task drains everything queued into one `BatchCommandsRequest` (up to
//! `max_batch`), so under load many requests share one message and one write; a receive task
//! per stream routes each response by id to its caller, in any order.
//!
//! Every decision — ids, which stream generation wrote what, what fails when a stream ends,
//! whether to wait for more requests — is [`StreamState`]'s, in `tikv-core`; these tasks only
//! move bytes. A caller that gives up (deadline, or its future dropped) abandons its id; a late
//! answer for it is dropped. The queue is bounded, so memory stays bounded: callers wait for
//! room (within their deadline) when a store is overloaded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_util::{SinkExt, StreamExt};
use prost::Message;
use tikv_core::batch::{BatchPolicy, Generation, StreamState};
use tikv_core::{Delivery, GrpcCode, HealthBoard, StoreHealth};
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
    /// Requests that may wait per stream before callers are held back.
    pub queue_capacity: usize,
    /// Batching policy (message size, coalescing, health probes).
    pub policy: BatchPolicy,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            streams_per_store: 4,
            queue_capacity: 1024,
            policy: BatchPolicy::default(),
        }
    }
}

type Reply = oneshot::Sender<Result<batch_commands_response::response::Cmd, CallError>>;

/// A slot's state, shared by its callers, its send task and its receive tasks.
type SharedState = Arc<Mutex<StreamState<Reply>>>;

/// A request waiting for its slot's send task. The request is already encoded (as one
/// `BatchCommandsRequest.Request`) on the caller's task: the queue moves a pointer, not a
/// request struct of hundreds of bytes, and the send task only concatenates.
struct Queued {
    id: u64,
    encoded: bytes::Bytes,
    queued_at: tikv_core::Instant,
}

/// One `BatchCommandsRequest` made of already encoded requests: each as field 1 (`requests`),
/// then the ids as field 2 (`request_ids`, packed); `client_send_time_ns` stays 0, so absent.
/// The bytes are those prost would write for the decoded message.
fn encode_batch_message(batch: &[Queued], ids: &[u64]) -> bytes::Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let requests: usize = batch
        .iter()
        .map(|q| key_len(1) + encoded_len_varint(q.encoded.len() as u64) + q.encoded.len())
        .sum();
    let ids_len = prost::encoding::uint64::encoded_len_packed(2, ids);
    let mut buf = Vec::with_capacity(requests + ids_len);
    for q in batch {
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(q.encoded.len() as u64, &mut buf);
        buf.extend_from_slice(&q.encoded);
    }
    prost::encoding::uint64::encode_packed(2, ids, &mut buf);
    buf.into()
}

struct Slot {
    queue: mpsc::Sender<Queued>,
    state: SharedState,
}

struct Store {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// Abandons a caller's id when the caller goes away, however it goes (answered, timed out, or
/// its future dropped). Abandoning an id already answered is a no-op.
struct Abandon<'a> {
    state: &'a SharedState,
    id: u64,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        lock(self.state).abandon(self.id);
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

type HealthMap = Arc<HealthBoard>;

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
    // Only plain data updates happen under these locks; recover from poisoning.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn failure(delivery: Delivery, code: GrpcCode, message: impl Into<String>) -> CallError {
    CallError {
        delivery,
        status: Status::new(code, message),
        from_server: false,
    }
}

fn fail(replies: Vec<Reply>, e: &CallError) {
    for reply in replies {
        let _ = reply.send(Err(e.clone()));
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
            .flat_map(|s| s.slots.iter())
            .map(|s| lock(&s.state).in_flight())
            .sum()
    }

    /// What store `store_id` last reported about its health, if anything.
    pub fn store_health(&self, store_id: u64) -> Option<StoreHealth> {
        self.health.get(store_id)
    }

    /// The board the streams record health reports on (shared with replica selection).
    pub fn health_board(&self) -> Arc<HealthBoard> {
        self.health.clone()
    }

    fn store(&self, address: &str) -> Arc<Store> {
        let mut stores = lock(&self.stores);
        if let Some(s) = stores.get(address) {
            return s.clone();
        }
        let slots = (0..self.config.streams_per_store.max(1))
            .map(|index| {
                let (tx, rx) = mpsc::channel(self.config.queue_capacity);
                let state: SharedState = Arc::new(Mutex::new(StreamState::new(self.config.policy)));
                let task = SlotTask {
                    // One prober per store is enough.
                    probe_health: index == 0,
                    policy: self.config.policy,
                    runtime: self.runtime.clone(),
                    transport: self.transport.clone(),
                    address: address.to_string(),
                    state: state.clone(),
                    stats: self.stats.clone(),
                    health: self.health.clone(),
                };
                self.runtime.spawn(task.send_loop(rx));
                Slot { queue: tx, state }
            })
            .collect();
        let store = Arc::new(Store {
            slots,
            next: AtomicUsize::new(0),
        });
        stores.insert(address.to_string(), store.clone());
        store
    }

    /// Sends one request to the store at `address` and waits for its response, at most
    /// `deadline`. `encoded` is one `BatchCommandsRequest.Request`
    /// ([`TikvRequest::encode_batch`](tikv_core::TikvRequest::encode_batch)).
    pub async fn call(
        &self,
        address: &str,
        encoded: bytes::Bytes,
        deadline: Duration,
    ) -> Result<batch_commands_response::response::Cmd, CallError> {
        let store = self.store(address);
        let index = store.next.fetch_add(1, Ordering::Relaxed) % store.slots.len();
        let slot = &store.slots[index];
        let (reply, answer) = oneshot::channel();
        let id = lock(&slot.state).register(reply);
        // A caller that stops waiting (its future dropped) must not leave its entry behind.
        let _abandon = Abandon {
            state: &slot.state,
            id,
        };
        let mut queue = slot.queue.clone();
        let queued = async {
            queue
                .send(Queued {
                    id,
                    encoded,
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
                // Abandoned so a late answer is dropped and an unwritten request is skipped.
                // Already gone means it was answered or failed just now: it was written.
                let delivery = lock(&slot.state)
                    .abandon(id)
                    .unwrap_or(Delivery::MaybeDelivered);
                Err(failure(
                    delivery,
                    GrpcCode::DeadlineExceeded,
                    format!("{address}: no response within {deadline:?}"),
                ))
            }
        }
    }
}

/// What one slot's tasks share.
struct SlotTask<R: Runtime> {
    probe_health: bool,
    policy: BatchPolicy,
    runtime: R,
    transport: SharedTransport,
    address: String,
    state: SharedState,
    stats: Arc<BatchStats>,
    health: HealthMap,
}

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

impl<R: Runtime> SlotTask<R> {
    fn drain(&self, queue: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>, max: usize) {
        while batch.len() < max {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
    }

    /// The next request to send: a caller's, or (on an idle prober slot) a health-feedback
    /// request of our own. `None` once the client is gone.
    async fn next_request(&self, queue: &mut mpsc::Receiver<Queued>) -> Option<Queued> {
        let interval = self.policy.health_feedback_interval;
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
                let (reply, _) = oneshot::channel();
                let id = lock(&self.state).register(reply);
                let probe = batch_commands_request::Request {
                    cmd: Some(batch_commands_request::request::Cmd::GetHealthFeedback(
                        Default::default(),
                    )),
                };
                Some(Queued {
                    id,
                    encoded: probe.encode_to_vec().into(),
                    queued_at: self.runtime.now(),
                })
            }
        }
    }

    /// Takes requests off the queue, batches them, and writes them on the slot's current
    /// stream, opening a new one when the state says there is none.
    async fn send_loop(self, mut queue: mpsc::Receiver<Queued>) {
        let max = self.policy.max_batch.max(1);
        let mut sender: Option<(Generation, StreamTx)> = None;
        while let Some(first) = self.next_request(&mut queue).await {
            let mut batch = vec![first];
            self.drain(&mut queue, &mut batch, max);
            let coalesce = lock(&self.state).should_coalesce(batch.len());
            if coalesce {
                YieldNow(false).await;
                self.drain(&mut queue, &mut batch, max);
            }
            let current = lock(&self.state).current();
            if sender.as_ref().map(|(g, _)| *g) != current || current.is_none() {
                sender = None;
                match self
                    .transport
                    .open_stream(&self.address, BATCH_COMMANDS)
                    .await
                {
                    Ok((s, receiver)) => {
                        let generation = lock(&self.state).opened();
                        self.runtime.spawn(recv_loop(
                            receiver,
                            generation,
                            self.state.clone(),
                            self.health.clone(),
                            self.address.clone(),
                        ));
                        sender = Some((generation, s));
                    }
                    Err(e) => {
                        // Nothing of this batch reached the store.
                        let ids: Vec<u64> = batch.iter().map(|q| q.id).collect();
                        fail(lock(&self.state).open_failed(&ids), &e);
                        continue;
                    }
                }
            }
            let Some((generation, stream)) = sender.as_mut() else {
                continue;
            };
            let generation = *generation;
            // Drop requests whose callers already gave up; the rest are written now.
            let mut ids: Vec<u64> = batch.iter().map(|q| q.id).collect();
            lock(&self.state).writing(generation, &mut ids);
            if ids.len() < batch.len() {
                batch.retain(|q| ids.contains(&q.id));
            }
            if batch.is_empty() {
                continue;
            }
            let now = self.runtime.now();
            let waited: u64 = batch
                .iter()
                .map(|q| (now - q.queued_at).as_micros() as u64)
                .sum();
            let body = encode_batch_message(&batch, &ids);
            match stream.send(body) {
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
                    let e = CallError {
                        delivery: Delivery::NotSent,
                        ..e
                    };
                    fail(lock(&self.state).write_failed(generation, &ids), &e);
                    sender = None;
                }
            }
        }
    }
}

/// Routes the responses of stream `generation` to callers by id; when the stream ends, fails
/// whoever still waits on a request written on it.
async fn recv_loop(
    mut receiver: StreamRx,
    generation: Generation,
    state: SharedState,
    health: HealthMap,
    address: String,
) {
    let end = loop {
        match receiver.message().await {
            Ok(Some(bytes)) => match tikvpb::BatchCommandsResponse::decode(bytes) {
                Ok(message) => {
                    if let Some(h) = &message.health_feedback {
                        let report = StoreHealth {
                            slow_score: h.slow_score,
                            feedback_seq_no: h.feedback_seq_no,
                            transport_layer_load: message.transport_layer_load,
                        };
                        health.record(h.store_id, report);
                    }
                    let routed: Vec<(Reply, Option<batch_commands_response::response::Cmd>)> = {
                        let mut s = lock(&state);
                        message
                            .responses
                            .into_iter()
                            .zip(message.request_ids)
                            // Unknown ids belong to callers that gave up.
                            .filter_map(|(r, id)| {
                                s.answered(generation, id).map(|reply| (reply, r.cmd))
                            })
                            .collect()
                    };
                    for (reply, cmd) in routed {
                        let result = cmd.ok_or_else(|| {
                            failure(
                                Delivery::MaybeDelivered,
                                GrpcCode::Internal,
                                format!("{address}: empty BatchCommands response"),
                            )
                        });
                        let _ = reply.send(result);
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
    debug!(store = %address, generation, error = %end, "BatchCommands stream ended");
    // Requests written on this stream may have been applied; those written on a newer stream
    // or not yet written are not ours to fail.
    let replies = lock(&state).ended(generation);
    fail(replies, &end);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_proto::kvrpcpb;

    fn queued(id: u64, cmd: batch_commands_request::request::Cmd) -> Queued {
        let request = batch_commands_request::Request { cmd: Some(cmd) };
        Queued {
            id,
            encoded: request.encode_to_vec().into(),
            queued_at: tikv_core::Instant::from_origin(Duration::ZERO),
        }
    }

    #[test]
    fn a_batch_of_encoded_requests_is_the_message_prost_would_write() {
        use batch_commands_request::request::Cmd;
        let cmds = vec![
            Cmd::RawGet(kvrpcpb::RawGetRequest {
                key: "k".into(),
                ..Default::default()
            }),
            Cmd::Get(kvrpcpb::GetRequest {
                key: vec![7; 300].into(),
                version: 42,
                ..Default::default()
            }),
            Cmd::GetHealthFeedback(Default::default()),
        ];
        // Ids large enough to take several varint bytes.
        let ids = vec![1, 300, u64::MAX];
        let batch: Vec<Queued> = cmds
            .iter()
            .zip(&ids)
            .map(|(c, id)| queued(*id, c.clone()))
            .collect();
        let expected = tikvpb::BatchCommandsRequest {
            requests: cmds
                .into_iter()
                .map(|cmd| batch_commands_request::Request { cmd: Some(cmd) })
                .collect(),
            request_ids: ids.clone(),
            client_send_time_ns: 0,
        };
        let body = encode_batch_message(&batch, &ids);
        assert_eq!(body, expected.encode_to_vec());
        assert_eq!(
            tikvpb::BatchCommandsRequest::decode(body).unwrap(),
            expected
        );
    }
}
