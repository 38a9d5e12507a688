//! An in-memory network between the client and the mock cluster, with seeded faults.
//!
//! Implements the driver's [`Transport`]: unary calls and streams are delivered to the
//! [`Cluster`] engine directly, after seeded delays, on the [`SimRuntime`]'s virtual clock.
//! Faults are drawn from one seeded generator in a fixed order, so a seed replays exactly:
//! dropped requests (never applied; the caller times out), lost replies (applied, then the
//! caller times out), refused connections to partitioned stores, and latency jitter.
//! Delays injected into the cluster ([`FaultAction::Delay`](crate::FaultAction::Delay)) are
//! slept on the virtual clock before the answer travels back.
//! Every delivered message is folded into a trace hash that identifies the run.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::StreamExt;
use prost::Message;
use tikv_core::{Delivery, GrpcCode};
use tikv_driver::grpc::{CallError, Status};
use tikv_driver::runtime::{BoxFuture, Runtime};
use tikv_driver::transport::{StreamRecv, StreamRx, StreamSend, StreamTx, Transport};
use tikv_proto::tikvpb;

use super::runtime::SimRuntime;
use crate::rng::SplitMix64;
use crate::server::SharedCluster;
use crate::txn::LockWaitOutcome;
use crate::txn::lock_wait::LockWaitId;
use crate::{FailureKind, MockError};

/// The address the simulated PD answers on (PD member 0, the leader at start).
pub const PD_ADDRESS: &str = "pd.sim:2379";

/// The address of PD member `member`: [`PD_ADDRESS`] for member 0, `pd{N}.sim:2379` for the
/// others.
pub fn pd_member_address(member: usize) -> String {
    if member == 0 {
        PD_ADDRESS.to_owned()
    } else {
        format!("pd{member}.sim:2379")
    }
}

/// The PD member an address names, if it names one (it may not exist in the cluster).
fn pd_member_of(address: &str) -> Option<usize> {
    if address == PD_ADDRESS {
        return Some(0);
    }
    let n = address.strip_prefix("pd")?.strip_suffix(".sim:2379")?;
    n.parse::<usize>().ok().filter(|&m| m > 0)
}

/// Virtual wall-clock origin for the engine (PD's TSO physical time): 2023-11-14.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Fault probabilities (in parts per 1000) and latencies.
#[derive(Clone, Debug)]
pub struct Faults {
    /// A request is lost before reaching the server.
    pub drop_request: u64,
    /// A request is applied but its reply is lost.
    pub lose_reply: u64,
    /// One-way latency range.
    pub latency: (Duration, Duration),
}

impl Faults {
    /// No faults, fixed small latency.
    pub fn none() -> Self {
        Faults {
            drop_request: 0,
            lose_reply: 0,
            latency: (Duration::from_micros(200), Duration::from_micros(200)),
        }
    }

    /// A lossy network: 1% dropped requests, 1% lost replies, 0.1–5 ms latency.
    pub fn lossy() -> Self {
        Faults {
            drop_request: 10,
            lose_reply: 10,
            latency: (Duration::from_micros(100), Duration::from_millis(5)),
        }
    }
}

struct State {
    rng: SplitMix64,
    faults: Faults,
    partitioned: Vec<u64>,
    trace: u64,
    delivered: u64,
    /// Parked `KvPessimisticLock` requests (waiting for another transaction's lock, as on
    /// TiKV) and how to answer each.
    waits: std::collections::BTreeMap<LockWaitId, Deliver>,
    /// Whether the task polling the engine's lock waits runs.
    pumping: bool,
}

/// Delivers one parked lock request's answer.
type Deliver = Box<dyn FnOnce(tikv_proto::kvrpcpb::PessimisticLockResponse) + Send>;

/// How often, in virtual time, parked lock requests are looked at (as the gRPC front does).
const LOCK_WAIT_TICK: Duration = Duration::from_millis(5);

/// The simulated network.
#[derive(Clone)]
pub struct SimNetwork {
    runtime: SimRuntime,
    cluster: SharedCluster,
    state: Arc<Mutex<State>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// FNV-1a step, for the trace hash.
fn fold(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn store_address(id: u64) -> String {
    format!("store{id}.sim:20160")
}

fn call_error(delivery: Delivery, code: GrpcCode, message: String) -> CallError {
    CallError {
        delivery,
        status: Status::new(code, message),
        from_server: false,
    }
}

fn from_mock(e: MockError) -> CallError {
    match e.kind {
        FailureKind::Status => CallError {
            delivery: Delivery::MaybeDelivered,
            status: Status::new(
                GrpcCode::from_u32(e.code.as_i32().unsigned_abs()),
                e.message,
            ),
            from_server: true,
        },
        FailureKind::Unreachable => call_error(Delivery::NotSent, GrpcCode::Unavailable, e.message),
        FailureKind::ReplyLost => {
            call_error(Delivery::MaybeDelivered, GrpcCode::Unavailable, e.message)
        }
    }
}

enum Fate {
    Deliver,
    DropRequest,
    LoseReply,
}

impl SimNetwork {
    /// A network to `cluster` (whose store and PD addresses it sets) on `runtime`, with
    /// faults drawn from `seed`.
    pub fn new(runtime: SimRuntime, cluster: SharedCluster, faults: Faults, seed: u64) -> Self {
        {
            let mut c = cluster.lock();
            let ids: Vec<u64> = c.topology().stores().map(|s| s.meta.id).collect();
            for id in ids {
                // Every store exists, so setting its address cannot fail.
                let _ = c.set_store_address(id, store_address(id));
            }
            for member in 0..c.pd_member_count() {
                // Every member index below the count exists, so this cannot fail.
                let _ = c.set_pd_member_client_urls(
                    member,
                    vec![format!("http://{}", pd_member_address(member))],
                );
            }
        }
        let state = State {
            rng: SplitMix64::new(seed),
            faults,
            partitioned: Vec::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            delivered: 0,
            waits: std::collections::BTreeMap::new(),
            pumping: false,
        };
        SimNetwork {
            runtime,
            cluster,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The cluster behind the network.
    pub fn cluster(&self) -> &SharedCluster {
        &self.cluster
    }

    /// Cuts store `id` off the network (connections refused) until [`heal`](Self::heal).
    pub fn partition(&self, id: u64) {
        lock(&self.state).partitioned.push(id);
    }

    /// Reconnects every partitioned store.
    pub fn heal(&self) {
        lock(&self.state).partitioned.clear();
    }

    /// Changes the fault model.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// A hash of every message delivered so far, in order: equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        lock(&self.state).trace
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        lock(&self.state).delivered
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.runtime.elapsed().as_millis() as u64
    }

    fn latency(&self) -> Duration {
        let mut s = lock(&self.state);
        let (lo, hi) = s.faults.latency;
        let spread = hi.saturating_sub(lo).as_nanos() as u64;
        lo + Duration::from_nanos(if spread == 0 {
            0
        } else {
            s.rng.below(spread + 1)
        })
    }

    fn fate(&self) -> Fate {
        let mut s = lock(&self.state);
        let (drop, lose) = (s.faults.drop_request, s.faults.lose_reply);
        let roll = s.rng.below(1000);
        if roll < drop {
            Fate::DropRequest
        } else if roll < drop + lose {
            Fate::LoseReply
        } else {
            Fate::Deliver
        }
    }

    /// The store an address names, `None` for PD; an error for unknown or partitioned ones.
    fn route(&self, address: &str) -> Result<Option<u64>, CallError> {
        if pd_member_of(address).is_some() {
            return Ok(None);
        }
        let id = address
            .strip_prefix("store")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                call_error(
                    Delivery::NotSent,
                    GrpcCode::Unavailable,
                    format!("no route to {address}"),
                )
            })?;
        if lock(&self.state).partitioned.contains(&id) {
            return Err(call_error(
                Delivery::NotSent,
                GrpcCode::Unavailable,
                format!("connection to {address} refused"),
            ));
        }
        Ok(Some(id))
    }

    fn record(&self, address: &str, path: &str, body: &[u8]) {
        let mut s = lock(&self.state);
        let now = self.runtime.elapsed().as_nanos() as u64;
        s.trace = fold(
            fold(fold(s.trace, &now.to_le_bytes()), address.as_bytes()),
            path.as_bytes(),
        );
        s.trace = fold(s.trace, body);
        s.delivered += 1;
    }

    /// Serves one call; also returns the delay injected into it (see
    /// [`FaultAction::Delay`](crate::FaultAction::Delay)), which the caller sleeps on the
    /// virtual clock before answering.
    fn serve(
        &self,
        address: &str,
        store: Option<u64>,
        path: &str,
        body: Bytes,
    ) -> (Result<Bytes, MockError>, Option<Duration>) {
        let member = pd_member_of(address).unwrap_or(0);
        if store.is_none() {
            if let Some(reply) = self.cluster.handle_keyspace_on(member, path, body.clone()) {
                return (reply, None);
            }
        }
        let now = self.now_ms();
        let mut cluster = self.cluster.lock();
        let reply = match store {
            None => cluster.handle_pd_on(member, path, body, now),
            Some(id) => cluster.handle_tikv(id, path, body, now),
        };
        (reply, cluster.take_injected_delay())
    }
}

impl SimNetwork {
    /// Registers how to answer the parked lock request `id` (call it under the cluster lock
    /// that parked it) and makes sure the pump runs.
    fn park(&self, id: LockWaitId, deliver: Deliver) {
        let start = {
            let mut state = lock(&self.state);
            state.waits.insert(id, deliver);
            !std::mem::replace(&mut state.pumping, true)
        };
        if start {
            let net = self.clone();
            self.runtime.spawn(async move { net.pump().await });
        }
    }

    /// Polls the engine's lock waits every tick of virtual time while any request is
    /// parked, delivering the answers (released, deadlocked or timed out), as TiKV's lock
    /// manager wakes its waiters.
    async fn pump(self) {
        loop {
            self.runtime.sleep(LOCK_WAIT_TICK).await;
            let now = self.now_ms();
            let answers = self.cluster.lock().poll_lock_waits(now);
            for (id, answer) in answers {
                let deliver = lock(&self.state).waits.remove(&id);
                if let Some(deliver) = deliver {
                    deliver(answer);
                }
            }
            let mut state = lock(&self.state);
            if state.waits.is_empty() {
                state.pumping = false;
                return;
            }
        }
    }

    /// A unary `KvPessimisticLock` to store `store`: answered at once, or once its wait
    /// ends (in virtual time).
    async fn pessimistic_lock(&self, store: u64, message: Bytes) -> Result<Bytes, MockError> {
        use tikv_proto::kvrpcpb::PessimisticLockRequest;
        let path = <tikv_proto::tikvpb::tikv_service::KvPessimisticLock as tikv_proto::method::Method>::PATH;
        let request = PessimisticLockRequest::decode(message)
            .map_err(|e| MockError::undecodable(path, &e))?;
        let (answer_tx, answer_rx) = futures_channel::oneshot::channel();
        let outcome = {
            let mut cluster = self.cluster.lock();
            let outcome = cluster.kv_pessimistic_lock_or_wait(store, request, self.now_ms())?;
            if let LockWaitOutcome::Waiting(id) = &outcome {
                self.park(
                    *id,
                    Box::new(move |answer| {
                        let _ = answer_tx.send(answer);
                    }),
                );
            }
            outcome
        };
        let answer = match outcome {
            LockWaitOutcome::Done(answer) => *answer,
            LockWaitOutcome::Waiting(_) => answer_rx
                .await
                .map_err(|_| MockError::unreachable("the simulated store stopped"))?,
        };
        Ok(Bytes::from(answer.encode_to_vec()))
    }
}

impl Transport for SimNetwork {
    fn unary(
        &self,
        address: &str,
        path: &'static str,
        message: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, CallError>> {
        let net = self.clone();
        let address = address.to_string();
        Box::pin(async move {
            let store = net.route(&address)?;
            let fate = if store.is_some() {
                net.fate()
            } else {
                Fate::Deliver
            };
            let there = net.latency();
            if let Fate::DropRequest = fate {
                net.runtime.sleep(timeout).await;
                return Err(call_error(
                    Delivery::MaybeDelivered,
                    GrpcCode::DeadlineExceeded,
                    format!("{path}: request lost"),
                ));
            }
            net.runtime.sleep(there).await;
            net.record(&address, path, &message);
            let lock_path =
                <tikv_proto::tikvpb::tikv_service::KvPessimisticLock as tikv_proto::method::Method>::PATH;
            let (reply, delay) = match store {
                Some(id) if path == lock_path => (net.pessimistic_lock(id, message).await, None),
                _ => net.serve(&address, store, path, message),
            };
            if let Some(delay) = delay {
                net.runtime.sleep(delay).await;
            }
            if let Fate::LoseReply = fate {
                net.runtime.sleep(timeout.saturating_sub(there)).await;
                return Err(call_error(
                    Delivery::MaybeDelivered,
                    GrpcCode::DeadlineExceeded,
                    format!("{path}: reply lost"),
                ));
            }
            let back = net.latency();
            net.runtime.sleep(back).await;
            reply.map_err(from_mock)
        })
    }

    fn open_stream(
        &self,
        address: &str,
        path: &'static str,
    ) -> BoxFuture<'static, Result<(StreamTx, StreamRx), CallError>> {
        let net = self.clone();
        let address = address.to_string();
        Box::pin(async move {
            let store = net.route(&address)?;
            let (to_server, mut from_client) = mpsc::unbounded::<Bytes>();
            let (to_client, from_server) = mpsc::unbounded::<Result<Bytes, CallError>>();
            let server = net.clone();
            net.runtime.spawn(async move {
                while let Some(message) = from_client.next().await {
                    // PD's TSO stream is kept reliable, like the PD calls; store streams get
                    // the same faults as unary calls, per message.
                    let fate = if store.is_some() {
                        server.fate()
                    } else {
                        Fate::Deliver
                    };
                    server.runtime.sleep(server.latency()).await;
                    if let Fate::DropRequest = fate {
                        continue;
                    }
                    if store.is_some_and(|id| lock(&server.state).partitioned.contains(&id)) {
                        let _ = to_client.unbounded_send(Err(call_error(
                            Delivery::MaybeDelivered,
                            GrpcCode::Unavailable,
                            "stream cut".into(),
                        )));
                        return;
                    }
                    server.record(&address, path, &message);
                    let now = server.now_ms();
                    let (reply, delay) = {
                        let mut cluster = server.cluster.lock();
                        let reply = match store {
                            Some(id) => match tikvpb::BatchCommandsRequest::decode(message) {
                                Ok(req) => {
                                    let mut parked = Vec::new();
                                    let reply = cluster
                                        .handle_batch_commands_parking(id, req, now, &mut parked)
                                        .map(|r| Bytes::from(r.encode_to_vec()));
                                    // A parked lock request is answered later on this stream,
                                    // alone in its message, as the gRPC front does.
                                    for (request_id, wait) in parked {
                                        let to_client = to_client.clone();
                                        server.park(
                                            wait,
                                            Box::new(move |answer| {
                                                let _ = to_client.unbounded_send(Ok(late_answer(
                                                    request_id, answer,
                                                )));
                                            }),
                                        );
                                    }
                                    reply
                                }
                                Err(e) => Err(MockError::undecodable(path, &e)),
                            },
                            None => cluster.handle_pd_on(
                                pd_member_of(&address).unwrap_or(0),
                                path,
                                message,
                                now,
                            ),
                        };
                        (reply, cluster.take_injected_delay())
                    };
                    if let Some(delay) = delay {
                        server.runtime.sleep(delay).await;
                    }
                    if let Fate::LoseReply = fate {
                        continue;
                    }
                    server.runtime.sleep(server.latency()).await;
                    let failed = reply.is_err();
                    if to_client.unbounded_send(reply.map_err(from_mock)).is_err() || failed {
                        return;
                    }
                }
            });
            Ok((
                Box::new(SimTx(to_server)) as StreamTx,
                Box::new(SimRx(from_server)) as StreamRx,
            ))
        })
    }
}

/// A parked lock request's answer, as a `BatchCommands` message of its own.
fn late_answer(request_id: u64, answer: tikv_proto::kvrpcpb::PessimisticLockResponse) -> Bytes {
    use tikvpb::batch_commands_response::{Response, response::Cmd};
    let message = tikvpb::BatchCommandsResponse {
        responses: vec![Response {
            cmd: Some(Cmd::PessimisticLock(answer)),
        }],
        request_ids: vec![request_id],
        ..Default::default()
    };
    Bytes::from(message.encode_to_vec())
}

struct SimTx(mpsc::UnboundedSender<Bytes>);

impl StreamSend for SimTx {
    fn send(&mut self, message: Bytes) -> Result<(), CallError> {
        self.0.unbounded_send(message).map_err(|_| {
            call_error(
                Delivery::NotSent,
                GrpcCode::Unavailable,
                "stream closed".into(),
            )
        })
    }
}

struct SimRx(mpsc::UnboundedReceiver<Result<Bytes, CallError>>);

impl StreamRecv for SimRx {
    fn message(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, CallError>> {
        Box::pin(async move {
            match self.0.next().await {
                Some(Ok(m)) => Ok(Some(m)),
                Some(Err(e)) => Err(e),
                None => Err(call_error(
                    Delivery::MaybeDelivered,
                    GrpcCode::Unavailable,
                    "stream ended".into(),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cluster, ClusterConfig, FaultAction, FaultFilter};
    use tikv_proto::method::Method;
    use tikv_proto::pdpb::{self, pd_service};

    #[test]
    fn injected_delays_pass_on_the_virtual_clock() {
        let runtime = SimRuntime::new();
        let cluster = SharedCluster::new(Cluster::new(ClusterConfig::default()));
        cluster.lock().inject_fault(
            FaultFilter::any().method("GetMembers"),
            FaultAction::Delay(Duration::from_secs(30)),
            1,
        );
        let network = SimNetwork::new(runtime.clone(), cluster, Faults::none(), 1);
        let rt = runtime.clone();
        let took = runtime
            .block_on(
                async move {
                    let body = Bytes::from(pdpb::GetMembersRequest::default().encode_to_vec());
                    let path = <pd_service::GetMembers as Method>::PATH;
                    let t = Duration::from_secs(60);
                    let start = rt.elapsed();
                    let first = network.unary(PD_ADDRESS, path, body.clone(), t).await;
                    let slow = rt.elapsed() - start;
                    let second = network.unary(PD_ADDRESS, path, body, t).await;
                    (
                        first.is_ok(),
                        second.is_ok(),
                        slow,
                        rt.elapsed() - start - slow,
                    )
                },
                Duration::from_secs(600),
            )
            .unwrap();
        let (first, second, slow, fast) = took;
        assert!(first && second);
        assert!(slow >= Duration::from_secs(30), "{slow:?}");
        assert!(fast < Duration::from_secs(30), "{fast:?}");
    }
}
