//! The gRPC front over loopback: PD's HTTP API next to gRPC on one port, stopping on drop,
//! injected delays, pessimistic locks waiting (unary and batched).

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tikv_driver::grpc::{Channel, ChannelConfig, codec};
use tikv_driver::runtime::{BoxFuture, Runtime};
use tikv_proto::kvrpcpb;
use tikv_proto::method::Method;
use tikv_proto::pdpb::{self, pd_service};
use tikv_proto::tikvpb::{self, tikv_service};
use tokio::net::TcpStream;

use super::MockServer;
use crate::{FaultAction, FaultFilter};

/// The driver's runtime seam on tokio, for these tests only (`tikv-tokio` depends on this
/// crate's users, not the other way round).
#[derive(Clone)]
struct Tokio(std::sync::Arc<Instant>);

impl Runtime for Tokio {
    type Io = TcpStream;
    type Sleep = tokio::time::Sleep;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        drop(tokio::spawn(future));
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn now(&self) -> tikv_core::Instant {
        tikv_core::Instant::from_origin(self.0.elapsed())
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<TcpStream>> {
        let address = address.to_string();
        Box::pin(async move { TcpStream::connect(address).await })
    }
}

fn run<F: Future>(f: impl FnOnce(Tokio) -> F) -> F::Output {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tokio = Tokio(std::sync::Arc::new(Instant::now()));
    rt.block_on(f(tokio))
}

/// Sends raw bytes on a fresh blocking connection and reads until the server closes it.
fn exchange(address: &str, request: &[u8]) -> String {
    let mut stream = StdStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request).expect("writes");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("reads to the end");
    String::from_utf8_lossy(&out).into_owned()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn header() -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: crate::ClusterConfig::default().cluster_id,
        ..Default::default()
    })
}

#[test]
fn pd_port_serves_http_and_grpc_side_by_side() {
    run(|rt| async move {
        let mock = MockServer::builder()
            .stores(2)
            .regions(4) // and the DEFAULT keyspace's four boundaries: 8 regions
            .start(rt.clone())
            .await
            .expect("starts");
        let pd = mock.pd_address().to_string();

        // gRPC first, on the same port.
        let channel = Channel::connect(&rt, &pd, &ChannelConfig::default())
            .await
            .expect("gRPC connects");
        let request = pdpb::GetAllStoresRequest {
            header: header(),
            ..Default::default()
        };
        let reply = channel
            .unary(
                &rt,
                <pd_service::GetAllStores as Method>::PATH,
                codec::encode(&request).expect("encodes"),
                Duration::from_secs(5),
            )
            .await
            .expect("GetAllStores");
        let stores = pdpb::GetAllStoresResponse::decode(reply).expect("decodes");
        assert_eq!(stores.stores.len(), 2);

        // Two pipelined requests on one kept-alive connection, the second closing it.
        let address = pd.clone();
        let out = blocking(move || {
            exchange(
                &address,
                b"GET /pd/api/v1/regions HTTP/1.1\r\nHost: pd\r\n\r\nGET /pd/api/v1/health HTTP/1.1\r\nHost: pd\r\nConnection: close\r\n\r\n",
            )
        })
        .await;
        let mut responses = out.split("HTTP/1.1 ").skip(1);
        let regions = responses.next().expect("first response");
        assert!(regions.starts_with("200 OK\r\n"), "{regions}");
        assert!(
            regions.contains("Content-Type: application/json"),
            "{regions}"
        );
        assert!(
            regions.contains("\r\n\r\n{\"count\":8,\"regions\":["),
            "{regions}"
        );
        let health = responses.next().expect("second response");
        assert!(health.contains("Connection: close"), "{health}");
        assert!(
            health.contains(&format!("\"http://{pd}\"")) && health.contains("\"health\": true"),
            "{health}"
        );

        for (request, status) in [
            (
                "GET /pd/api/v1/stores HTTP/1.1\r\nConnection: close\r\n\r\n",
                "200 OK",
            ),
            ("GET /pd/api/v1/min-resolved-ts HTTP/1.0\r\n\r\n", "200 OK"),
            (
                "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n",
                "404 Not Found",
            ),
            (
                "DELETE /pd/api/v1/stores HTTP/1.1\r\nConnection: close\r\n\r\n",
                "405 Method Not Allowed",
            ),
            ("garbage\r\n\r\n", "400 Bad Request"),
        ] {
            let address = pd.clone();
            let out = blocking(move || exchange(&address, request.as_bytes())).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{request:?}: {out}"
            );
        }
        // gRPC still works after all that.
        let request = pdpb::GetMembersRequest::default();
        channel
            .unary(
                &rt,
                <pd_service::GetMembers as Method>::PATH,
                codec::encode(&request).expect("encodes"),
                Duration::from_secs(5),
            )
            .await
            .expect("GetMembers");
    });
}

#[test]
fn dropping_the_server_stops_it() {
    run(|rt| async move {
        let mock = MockServer::builder()
            .stores(2)
            .start(rt.clone())
            .await
            .expect("starts");
        let pd = mock.pd_address().to_string();
        let store = mock.store_addresses()[0].1.clone();
        let channel = Channel::connect(&rt, &pd, &ChannelConfig::default())
            .await
            .expect("connects");
        // An HTTP connection left open, to see it closed by the server.
        let address = pd.clone();
        let idle = blocking(move || {
            let mut s = StdStream::connect(address).expect("connects");
            s.write_all(b"GET /pd/api/v1/health HTTP/1.1\r\n\r\n")
                .expect("writes");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            // Wait for the answer to start arriving: the connection must be idle (answered,
            // kept alive) when the server stops, not still unread in its receive buffer.
            s.peek(&mut [0u8; 1]).expect("an answer");
            s
        })
        .await;
        drop(mock);

        for address in [pd.clone(), store] {
            let refused = blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match StdStream::connect(&address) {
                        // A connect racing the listener's close can be reset instead of
                        // refused (seen under load): try again.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(e) => return e.kind(),
                        Ok(_) if Instant::now() > deadline => return io::ErrorKind::Other,
                        Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .await;
            assert_eq!(refused, io::ErrorKind::ConnectionRefused);
        }
        // The open connections were closed: HTTP reads reach the end after the one answer,
        // and the gRPC channel fails.
        let rest = blocking(move || {
            let mut idle = idle;
            let mut out = Vec::new();
            idle.read_to_end(&mut out).map(|_| out)
        })
        .await;
        let rest = String::from_utf8_lossy(&rest.expect("closed, not timed out")).into_owned();
        assert_eq!(rest.matches("HTTP/1.1 200 OK").count(), 1, "{rest}");
        let request = pdpb::GetMembersRequest::default();
        let call = channel
            .unary(
                &rt,
                <pd_service::GetMembers as Method>::PATH,
                codec::encode(&request).expect("encodes"),
                Duration::from_secs(5),
            )
            .await;
        assert!(call.is_err(), "{call:?}");
    });
}

#[test]
fn injected_delays_hold_the_answer_back() {
    run(|rt| async move {
        let delay = Duration::from_millis(300);
        let mock = MockServer::builder()
            .fault(
                FaultFilter::any().method("GetMembers"),
                FaultAction::Delay(delay),
                1,
            )
            .start(rt.clone())
            .await
            .expect("starts");
        let channel = Channel::connect(&rt, mock.pd_address(), &ChannelConfig::default())
            .await
            .expect("connects");
        let call = |path: &'static str, message: Bytes| {
            let channel = channel.clone();
            let rt = rt.clone();
            async move {
                let started = Instant::now();
                let reply = channel
                    .unary(&rt, path, message, Duration::from_secs(10))
                    .await;
                (reply, started.elapsed())
            }
        };
        let members = codec::encode(&pdpb::GetMembersRequest::default()).expect("encodes");
        let path = <pd_service::GetMembers as Method>::PATH;
        let (reply, took) = call(path, members.clone()).await;
        reply.expect("answered after the delay");
        assert!(took >= delay, "{took:?}");
        // The rule fired once; the next call is not held back (no upper bound is asserted on
        // timing, but it must not wait for the delay again).
        let (reply, _) = call(path, members.clone()).await;
        reply.expect("answered");
        assert!(mock.cluster().lock().take_injected_delay().is_none());

        // A delay on a store method, together with a failure: the failure arrives late.
        let store = mock.store_addresses()[0].clone();
        mock.cluster().lock().inject_fault(
            FaultFilter::any().store(store.0).method("RawGet"),
            FaultAction::Delay(delay),
            1,
        );
        mock.cluster().lock().inject_fault(
            FaultFilter::any().method("RawGet"),
            FaultAction::Unreachable,
            1,
        );
        let store_channel = Channel::connect(&rt, &store.1, &ChannelConfig::default())
            .await
            .expect("connects");
        let started = Instant::now();
        let get = codec::encode(&tikv_proto::kvrpcpb::RawGetRequest::default()).expect("encodes");
        let reply = store_channel
            .unary(
                &rt,
                <tikv_proto::tikvpb::tikv_service::RawGet as Method>::PATH,
                get,
                Duration::from_secs(10),
            )
            .await;
        assert!(reply.is_err(), "{reply:?}");
        assert!(started.elapsed() >= delay);
    });
}

/// A pessimistic lock request on `key` for the transaction `start_ts` (its own primary),
/// addressed to the key's leader.
fn lock_request(
    mock: &MockServer,
    key: &[u8],
    start_ts: u64,
    wait_timeout: i64,
    mode: kvrpcpb::PessimisticLockWakeUpMode,
) -> (String, kvrpcpb::PessimisticLockRequest) {
    let cluster = mock.cluster().lock();
    let region = cluster
        .topology()
        .region_by_key(&crate::codec::encode_memcomparable(key))
        .expect("a region holds every key");
    let leader = *region.leader().expect("regions have leaders");
    let address = mock
        .store_addresses()
        .iter()
        .find(|(id, _)| *id == leader.store_id)
        .map(|(_, a)| a.clone())
        .expect("the leader's store is served");
    let request = kvrpcpb::PessimisticLockRequest {
        context: Some(kvrpcpb::Context {
            region_id: region.id(),
            region_epoch: region.meta.region_epoch,
            peer: Some(leader),
            ..Default::default()
        }),
        mutations: vec![kvrpcpb::Mutation {
            op: kvrpcpb::Op::PessimisticLock as i32,
            key: Bytes::copy_from_slice(key),
            ..Default::default()
        }],
        primary_lock: Bytes::copy_from_slice(key),
        start_version: start_ts,
        for_update_ts: start_ts,
        lock_ttl: 3_000,
        wait_timeout,
        wake_up_mode: mode as i32,
        ..Default::default()
    };
    (address, request)
}

fn rollback_request(lock: &kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticRollbackRequest {
    kvrpcpb::PessimisticRollbackRequest {
        context: lock.context.clone(),
        start_version: lock.start_version,
        for_update_ts: lock.for_update_ts,
        keys: vec![lock.primary_lock.clone()],
    }
}

/// Waits (without a time bound on the assertion) until the engine has parked a request.
async fn until_parked(rt: &Tokio, mock: &MockServer) {
    while mock.cluster().lock().next_lock_wait_deadline().is_none() {
        rt.sleep(Duration::from_millis(1)).await;
    }
}

async fn unary<Req: Message, Resp: Message + Default>(
    rt: &Tokio,
    channel: &Channel,
    path: &str,
    request: &Req,
) -> Resp {
    let reply = channel
        .unary(
            rt,
            path,
            codec::encode(request).expect("encodes"),
            Duration::from_secs(10),
        )
        .await
        .expect("answered");
    Resp::decode(reply).expect("decodes")
}

const LOCK_PATH: &str = <tikv_service::KvPessimisticLock as Method>::PATH;

/// Starts a mock cluster, connects to `key`'s leader and takes a pessimistic lock on `key`
/// for transaction 10; returns the server, the channel and the holder's request.
async fn lock_held(
    rt: &Tokio,
    key: &[u8],
) -> (MockServer, Channel, kvrpcpb::PessimisticLockRequest) {
    let mock = MockServer::builder()
        .start(rt.clone())
        .await
        .expect("starts");
    let (address, holder) = lock_request(
        &mock,
        key,
        10,
        0,
        kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeNormal,
    );
    let channel = Channel::connect(rt, &address, &ChannelConfig::default())
        .await
        .expect("connects");
    let held: kvrpcpb::PessimisticLockResponse = unary(rt, &channel, LOCK_PATH, &holder).await;
    assert!(held.errors.is_empty(), "{held:?}");
    (mock, channel, holder)
}

/// Sends a lock request from its own task, so that the test can act while it waits.
fn spawn_lock(
    rt: &Tokio,
    channel: &Channel,
    request: kvrpcpb::PessimisticLockRequest,
) -> tokio::task::JoinHandle<kvrpcpb::PessimisticLockResponse> {
    let (rt, channel) = (rt.clone(), channel.clone());
    tokio::spawn(async move { unary(&rt, &channel, LOCK_PATH, &request).await })
}

#[test]
fn unary_pessimistic_lock_waits_for_the_holder_and_times_out() {
    use kvrpcpb::PessimisticLockWakeUpMode::{WakeUpModeForceLock, WakeUpModeNormal};
    run(|rt| async move {
        let (mock, channel, holder) = lock_held(&rt, b"k").await;

        // A fair-locking waiter is held open until the holder rolls back, then locks.
        let (_, waiter) = lock_request(&mock, b"k", 20, 10_000, WakeUpModeForceLock);
        let call = spawn_lock(&rt, &channel, waiter);
        until_parked(&rt, &mock).await;
        assert!(!call.is_finished(), "answered while the lock was held");
        let rolled_back: kvrpcpb::PessimisticRollbackResponse = unary(
            &rt,
            &channel,
            <tikv_service::KvPessimisticRollback as Method>::PATH,
            &rollback_request(&holder),
        )
        .await;
        assert!(rolled_back.errors.is_empty(), "{rolled_back:?}");
        let woken = call.await.expect("the call task");
        assert!(woken.errors.is_empty(), "{woken:?}");
        assert_eq!(woken.results.len(), 1, "{woken:?}");

        // Now 20 holds the lock; a waiter with a short timeout gets KeyIsLocked with 20's
        // lock after waiting.
        let (_, short) = lock_request(&mock, b"k", 30, 50, WakeUpModeNormal);
        let started = Instant::now();
        let timed_out: kvrpcpb::PessimisticLockResponse =
            unary(&rt, &channel, LOCK_PATH, &short).await;
        // It waited: the engine's clock has millisecond steps, hence the small slack.
        assert!(started.elapsed() >= Duration::from_millis(45));
        let locked = timed_out.errors[0].locked.as_ref().expect("KeyIsLocked");
        assert_eq!(locked.lock_version, 20);
        assert!(mock.cluster().lock().next_lock_wait_deadline().is_none());
    });
}

#[test]
fn batched_pessimistic_lock_is_answered_later_on_its_stream() {
    use kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeNormal;
    use tikvpb::batch_commands_request::{Request, request::Cmd as ReqCmd};
    use tikvpb::batch_commands_response::response::Cmd as RespCmd;
    run(|rt| async move {
        let mock = MockServer::builder()
            .start(rt.clone())
            .await
            .expect("starts");
        let (address, holder) = lock_request(&mock, b"k", 10, 0, WakeUpModeNormal);
        let channel = Channel::connect(&rt, &address, &ChannelConfig::default())
            .await
            .expect("connects");
        let (mut tx, mut rx) = channel
            .streaming(<tikv_service::BatchCommands as Method>::PATH)
            .await
            .expect("opens the stream");
        let (_, waiter) = lock_request(&mock, b"k", 20, 10_000, WakeUpModeNormal);
        let lock = |id: u64, r: kvrpcpb::PessimisticLockRequest| tikvpb::BatchCommandsRequest {
            requests: vec![Request {
                cmd: Some(ReqCmd::PessimisticLock(r)),
            }],
            request_ids: vec![id],
            ..Default::default()
        };
        tx.send(codec::encode(&lock(1, holder.clone())).expect("encodes"))
            .expect("sends");
        let first = tikvpb::BatchCommandsResponse::decode(
            rx.message().await.expect("reads").expect("a message"),
        )
        .expect("decodes");
        assert_eq!(first.request_ids, vec![1]);

        // Request 2 waits; request 3 in the same message (a read) is answered at once.
        let mut both = lock(2, waiter);
        both.requests.push(Request {
            cmd: Some(ReqCmd::Get(kvrpcpb::GetRequest {
                context: holder.context.clone(),
                key: Bytes::from_static(b"k"),
                version: 5,
                ..Default::default()
            })),
        });
        both.request_ids.push(3);
        tx.send(codec::encode(&both).expect("encodes"))
            .expect("sends");
        let now = tikvpb::BatchCommandsResponse::decode(
            rx.message().await.expect("reads").expect("a message"),
        )
        .expect("decodes");
        assert_eq!(now.request_ids, vec![3]);
        until_parked(&rt, &mock).await;

        let rollback = tikvpb::BatchCommandsRequest {
            requests: vec![Request {
                cmd: Some(ReqCmd::PessimisticRollback(rollback_request(&holder))),
            }],
            request_ids: vec![4],
            ..Default::default()
        };
        tx.send(codec::encode(&rollback).expect("encodes"))
            .expect("sends");
        let mut answered = Vec::new();
        while answered.len() < 2 {
            let m = tikvpb::BatchCommandsResponse::decode(
                rx.message().await.expect("reads").expect("a message"),
            )
            .expect("decodes");
            answered.extend(m.request_ids.into_iter().zip(m.responses));
        }
        answered.sort_by_key(|(id, _)| *id);
        assert_eq!(answered[0].0, 2);
        let Some(RespCmd::PessimisticLock(woken)) = &answered[0].1.cmd else {
            panic!("{:?}", answered[0]);
        };
        // A legacy (NORMAL) waiter learns of the release as a PessimisticRetry conflict.
        assert!(woken.errors[0].conflict.is_some(), "{woken:?}");
        assert_eq!(answered[1].0, 4);
    });
}

#[test]
fn abandoning_a_waiting_call_cancels_its_wait() {
    use kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeNormal;
    run(|rt| async move {
        let (mock, channel, _) = lock_held(&rt, b"k").await;
        let (_, waiter) = lock_request(&mock, b"k", 20, 60_000, WakeUpModeNormal);
        let call = spawn_lock(&rt, &channel, waiter);
        until_parked(&rt, &mock).await;
        call.abort();
        // The server notices the reset stream and drops the wait.
        while mock.cluster().lock().next_lock_wait_deadline().is_some() {
            rt.sleep(Duration::from_millis(1)).await;
        }
    });
}

#[test]
fn a_wait_closing_a_cycle_is_answered_deadlock_over_grpc() {
    use kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeNormal;
    run(|rt| async move {
        let (mock, channel, _) = lock_held(&rt, b"a").await;
        let (_, b_holds) = lock_request(&mock, b"b", 20, 0, WakeUpModeNormal);
        let r: kvrpcpb::PessimisticLockResponse = unary(&rt, &channel, LOCK_PATH, &b_holds).await;
        assert!(r.errors.is_empty(), "{r:?}");
        // 10 waits for "b" (held by 20)...
        let (_, mut a_waits) = lock_request(&mock, b"b", 10, 10_000, WakeUpModeNormal);
        a_waits.primary_lock = Bytes::from_static(b"a");
        let call = spawn_lock(&rt, &channel, a_waits);
        until_parked(&rt, &mock).await;
        // ...so 20 waiting for "a" (held by 10) would close the cycle.
        let (_, mut b_waits) = lock_request(&mock, b"a", 20, 10_000, WakeUpModeNormal);
        b_waits.primary_lock = Bytes::from_static(b"b");
        let r: kvrpcpb::PessimisticLockResponse = unary(&rt, &channel, LOCK_PATH, &b_waits).await;
        let deadlock = r.errors[0].deadlock.as_ref().expect("Deadlock");
        assert_eq!(deadlock.lock_ts, 10, "{deadlock:?}");
        assert!(!call.is_finished(), "the first waiter keeps waiting");
        call.abort();
    });
}
