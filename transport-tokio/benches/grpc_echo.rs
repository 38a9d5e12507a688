//! gRPC echo over loopback: our gRPC layer next to a bare h2 echo with the same payload, so
//! the cost of the gRPC layer itself is visible. Run with `cargo bench -p tikv-tokio`.
//!
//! Measures latency at concurrency 1 (p50, p99) and throughput with 64 calls in flight on one
//! connection. A benchmark, not a test: it asserts nothing about speed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_core::GrpcCode;
use tikv_driver::grpc::server::boxed;
use tikv_driver::grpc::{
    Channel, ChannelConfig, Requests, Responses, ServerConfig, Service, Status, codec,
    serve_connection,
};
use tikv_driver::runtime::BoxFuture;
use tikv_proto::method::MethodKind;
use tikv_tokio::TokioRuntime;
use tokio::net::TcpListener;

const PAYLOAD: usize = 256;
const LATENCY_CALLS: usize = 5_000;
const THROUGHPUT_CALLS: usize = 50_000;
const IN_FLIGHT: usize = 64;

#[derive(Clone)]
struct Echo;

impl Service for Echo {
    fn kind(&self, _: &str) -> Option<MethodKind> {
        Some(MethodKind::Unary)
    }
    fn unary(&self, _: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        boxed(async move { codec::frame(&request) })
    }
    fn streaming(
        &self,
        _: &str,
        _: Requests,
        _: Responses,
    ) -> BoxFuture<'static, Result<(), Status>> {
        boxed(async { Err(Status::new(GrpcCode::Unimplemented, "")) })
    }
}

async fn grpc_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let rt = TokioRuntime::current();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            io.set_nodelay(true).unwrap();
            tokio::spawn(serve_connection(
                rt.clone(),
                io,
                Echo,
                ServerConfig::default(),
            ));
        }
    });
    address
}

/// The floor: an h2 server echoing the request body, without gRPC framing or status.
async fn h2_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            io.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        let mut got = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            got.extend_from_slice(&chunk);
                        }
                        let response = http::Response::builder().body(()).unwrap();
                        if let Ok(mut s) = respond.send_response(response, false) {
                            let _ = s.send_data(Bytes::from(got), true);
                        }
                    });
                }
            });
        }
    });
    address
}

#[derive(Clone)]
enum Client {
    Grpc(Channel, TokioRuntime),
    H2(h2::client::SendRequest<Bytes>, String),
}

impl Client {
    async fn call(&self, payload: Bytes) {
        match self {
            Client::Grpc(ch, rt) => {
                let framed = codec::frame(&payload).unwrap();
                ch.unary(rt, "/bench.Echo/Unary", framed, Duration::from_secs(10))
                    .await
                    .unwrap();
            }
            Client::H2(send, authority) => {
                let request = http::Request::post(format!("http://{authority}/echo"))
                    .body(())
                    .unwrap();
                let mut send = send.clone().ready().await.unwrap();
                let (response, mut stream) = send.send_request(request, false).unwrap();
                stream.send_data(payload, true).unwrap();
                let mut body = response.await.unwrap().into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

async fn measure(name: &str, client: Client) {
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    for _ in 0..500 {
        client.call(payload.clone()).await; // warm-up
    }
    let mut latencies = Vec::with_capacity(LATENCY_CALLS);
    for _ in 0..LATENCY_CALLS {
        let start = Instant::now();
        client.call(payload.clone()).await;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let start = Instant::now();
    let per_task = THROUGHPUT_CALLS / IN_FLIGHT;
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, payload) = (client.clone(), payload.clone());
            tokio::spawn(async move {
                for _ in 0..per_task {
                    client.call(payload.clone()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (per_task * IN_FLIGHT) as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name:<12} c=1 p50 {:>8.1?}  p99 {:>8.1?}   c={IN_FLIGHT} {:>9.0} calls/s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        rate
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("echo of {PAYLOAD} bytes over loopback, one connection");
        let h2_address = h2_server().await;
        let io = tokio::net::TcpStream::connect(&h2_address).await.unwrap();
        io.set_nodelay(true).unwrap();
        let (send, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(conn);
        measure("bare h2", Client::H2(send, h2_address)).await;

        let address = grpc_server().await;
        let rt = TokioRuntime::current();
        let ch = Channel::connect(&rt, &address, &ChannelConfig::default())
            .await
            .unwrap();
        measure("tikv gRPC", Client::Grpc(ch, rt)).await;
    });
}
