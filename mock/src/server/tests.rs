//! The gRPC front over loopback: PD's HTTP API next to gRPC on one port, stopping on drop,
//! injected delays.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tikv_driver::grpc::{Channel, ChannelConfig, codec};
use tikv_driver::runtime::{BoxFuture, Runtime};
use tikv_proto::method::Method;
use tikv_proto::pdpb::{self, pd_service};
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
            .regions(4)
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
            regions.contains("\r\n\r\n{\"count\":4,\"regions\":["),
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
            s
        })
        .await;
        drop(mock);

        for address in [pd.clone(), store] {
            let refused = blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match StdStream::connect(&address) {
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
