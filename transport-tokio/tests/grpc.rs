//! gRPC over h2 on tokio, over loopback TCP: unary and streaming calls, statuses, deadlines,
//! failure classification. (The same suite runs on async-io in `tikv-async-std`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tikv_core::{Delivery, GrpcCode};
use tikv_driver::grpc::server::boxed;
use tikv_driver::grpc::{
    Channel, ChannelConfig, Requests, Responses, ServerConfig, Service, Status, codec,
    serve_connection,
};
use tikv_driver::runtime::BoxFuture;
use tikv_proto::method::MethodKind;
use tikv_tokio::{Runtime, TokioRuntime};
use tokio::net::TcpListener;

#[derive(Clone)]
struct Echo {
    runtime: TokioRuntime,
    calls: Arc<AtomicUsize>,
}

impl Service for Echo {
    fn kind(&self, path: &str) -> Option<MethodKind> {
        match path {
            "/echo.Echo/Unary" | "/echo.Echo/Fail" | "/echo.Echo/Slow" | "/echo.Echo/Big" => {
                Some(MethodKind::Unary)
            }
            "/echo.Echo/Bidi" => Some(MethodKind::BidiStreaming),
            _ => None,
        }
    }

    fn unary(&self, path: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let path = path.to_string();
        let runtime = self.runtime.clone();
        boxed(async move {
            match path.as_str() {
                "/echo.Echo/Unary" => codec::frame(&request),
                "/echo.Echo/Fail" => Err(Status::new(
                    GrpcCode::FailedPrecondition,
                    "100% broken: ünïcode\nline",
                )),
                "/echo.Echo/Slow" => {
                    runtime.sleep(Duration::from_secs(5)).await;
                    codec::frame(&request)
                }
                _ => codec::frame(&vec![1u8; 2 << 20]),
            }
        })
    }

    fn streaming(
        &self,
        _path: &str,
        mut requests: Requests,
        responses: Responses,
    ) -> BoxFuture<'static, Result<(), Status>> {
        boxed(async move {
            while let Some(m) = requests.message().await? {
                responses.send(codec::frame(&m)?)?;
            }
            Ok(())
        })
    }
}

/// Starts an echo server on loopback; returns its address and the call counter.
async fn server() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let runtime = TokioRuntime::current();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = Echo {
        runtime: runtime.clone(),
        calls: calls.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            io.set_nodelay(true).unwrap();
            runtime.spawn(serve_connection(
                runtime.clone(),
                io,
                service.clone(),
                ServerConfig::default(),
            ));
        }
    });
    (address, calls, task)
}

async fn channel(address: &str) -> Channel {
    Channel::connect(&TokioRuntime::current(), address, &ChannelConfig::default())
        .await
        .unwrap()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn unary_round_trip() {
    let (address, _, _server) = server().await;
    let ch = channel(&address).await;
    let rt = TokioRuntime::current();
    let reply = ch
        .unary(
            &rt,
            "/echo.Echo/Unary",
            codec::frame(b"ping").unwrap(),
            SECOND,
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"ping");
    // An empty message is a valid message.
    let reply = ch
        .unary(&rt, "/echo.Echo/Unary", codec::frame(b"").unwrap(), SECOND)
        .await
        .unwrap();
    assert!(reply.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_on_one_connection() {
    let (address, calls, _server) = server().await;
    let ch = channel(&address).await;
    let rt = TokioRuntime::current();
    let tasks: Vec<_> = (0..1000u32)
        .map(|i| {
            let ch = ch.clone();
            let rt = rt.clone();
            tokio::spawn(async move {
                let body = i.to_be_bytes();
                let reply = ch
                    .unary(
                        &rt,
                        "/echo.Echo/Unary",
                        codec::frame(&body).unwrap(),
                        10 * SECOND,
                    )
                    .await
                    .unwrap();
                assert_eq!(&reply[..], &body, "call {i} got another call's reply");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1000);
}

#[tokio::test]
async fn bidi_stream_interleaves() {
    let (address, _, _server) = server().await;
    let ch = channel(&address).await;
    let (mut tx, mut rx) = ch.streaming("/echo.Echo/Bidi").await.unwrap();
    for i in 0..50u32 {
        tx.send(codec::frame(&i.to_be_bytes()).unwrap()).unwrap();
        let m = rx.message().await.unwrap().unwrap();
        assert_eq!(&m[..], &i.to_be_bytes());
    }
    // Many messages at once, then half-close: all come back, then a clean end.
    for i in 0..100u32 {
        tx.send(codec::frame(&i.to_be_bytes()).unwrap()).unwrap();
    }
    tx.finish().unwrap();
    for i in 0..100u32 {
        assert_eq!(&rx.message().await.unwrap().unwrap()[..], &i.to_be_bytes());
    }
    assert_eq!(rx.message().await.unwrap(), None);
}

#[tokio::test]
async fn error_status_is_decoded() {
    let (address, _, _server) = server().await;
    let ch = channel(&address).await;
    let rt = TokioRuntime::current();
    let e = ch
        .unary(&rt, "/echo.Echo/Fail", codec::frame(b"x").unwrap(), SECOND)
        .await
        .unwrap_err();
    assert_eq!(e.status.code, GrpcCode::FailedPrecondition);
    assert_eq!(e.status.message, "100% broken: ünïcode\nline");
    assert!(e.from_server);
    // Unknown method: a Trailers-Only Unimplemented.
    let e = ch
        .unary(&rt, "/echo.Echo/Nope", codec::frame(b"x").unwrap(), SECOND)
        .await
        .unwrap_err();
    assert_eq!(e.status.code, GrpcCode::Unimplemented);
}

#[tokio::test]
async fn deadline_exceeded_is_maybe_delivered() {
    let (address, _, _server) = server().await;
    let ch = channel(&address).await;
    let rt = TokioRuntime::current();
    let e = ch
        .unary(
            &rt,
            "/echo.Echo/Slow",
            codec::frame(b"x").unwrap(),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status.code, GrpcCode::DeadlineExceeded);
    assert_eq!(e.delivery, Delivery::MaybeDelivered);
    // The connection is still usable.
    ch.unary(&rt, "/echo.Echo/Unary", codec::frame(b"x").unwrap(), SECOND)
        .await
        .unwrap();
}

#[tokio::test]
async fn connection_refused_is_not_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let e = Channel::connect(
        &TokioRuntime::current(),
        &address,
        &ChannelConfig::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.delivery, Delivery::NotSent);
    assert_eq!(e.status.code, GrpcCode::Unavailable);
}

#[tokio::test]
async fn oversized_message_is_rejected() {
    let (address, _, _server) = server().await;
    let config = ChannelConfig {
        max_message_size: 1 << 20,
        ..Default::default()
    };
    let ch = Channel::connect(&TokioRuntime::current(), &address, &config)
        .await
        .unwrap();
    let rt = TokioRuntime::current();
    let e = ch
        .unary(&rt, "/echo.Echo/Big", codec::frame(b"x").unwrap(), SECOND)
        .await
        .unwrap_err();
    assert_eq!(e.status.code, GrpcCode::ResourceExhausted, "{e}");
}

#[tokio::test]
async fn server_gone_mid_call_is_maybe_delivered_and_channel_closes() {
    // A server whose one connection we can kill while a call is in flight.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let rt = TokioRuntime::current();
    let service = Echo {
        runtime: rt.clone(),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let server_rt = rt.clone();
    let connection = tokio::spawn(async move {
        let (io, _) = listener.accept().await.unwrap();
        serve_connection(server_rt, io, service, ServerConfig::default()).await;
    });
    let ch = channel(&address).await;
    let call = {
        let ch = ch.clone();
        let rt = rt.clone();
        tokio::spawn(async move {
            ch.unary(
                &rt,
                "/echo.Echo/Slow",
                codec::frame(b"x").unwrap(),
                10 * SECOND,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.abort(); // drops the server's end of the connection
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(e.delivery, Delivery::MaybeDelivered, "{e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ch.is_closed());
    let e = ch
        .unary(&rt, "/echo.Echo/Unary", codec::frame(b"x").unwrap(), SECOND)
        .await
        .unwrap_err();
    assert_eq!(
        e.delivery,
        Delivery::NotSent,
        "a closed channel never sends: {e}"
    );
}

#[tokio::test]
async fn unary_and_streaming_over_an_in_memory_duplex() {
    let rt = TokioRuntime::current();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let service = Echo {
        runtime: rt.clone(),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    rt.spawn(serve_connection(
        rt.clone(),
        server_io,
        service,
        ServerConfig::default(),
    ));
    let ch = Channel::handshake(&rt, client_io, "in-memory:0", &ChannelConfig::default())
        .await
        .unwrap();
    let reply = ch
        .unary(
            &rt,
            "/echo.Echo/Unary",
            codec::frame(&[5u8; 100_000]).unwrap(),
            SECOND,
        )
        .await
        .unwrap();
    assert_eq!(
        reply.len(),
        100_000,
        "a message larger than the duplex buffer crosses in many frames"
    );
    let (mut tx, mut rx) = ch.streaming("/echo.Echo/Bidi").await.unwrap();
    tx.send(codec::frame(b"one").unwrap()).unwrap();
    assert_eq!(&rx.message().await.unwrap().unwrap()[..], b"one");
}
