//! Connection lifecycle: keepalive finds a dead peer, GOAWAY leads to a fresh connection, and
//! dropping every handle ends the connection's tasks.

use std::time::Duration;

use bytes::Bytes;
use tikv_core::Delivery;
use tikv_driver::grpc::{Channel, ChannelConfig, codec};
use tikv_driver::transport::{GrpcTransport, Transport};
use tikv_tokio::TokioRuntime;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A peer that accepts TCP and then never answers anything (a hung host).
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut io, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut sink = vec![0u8; 4096];
                while let Ok(n) = io.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn keepalive_closes_a_connection_to_a_dead_peer() {
    let address = black_hole().await;
    let config = ChannelConfig {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let rt = TokioRuntime::current();
    let ch = Channel::connect(&rt, &address, &config).await.unwrap();
    // An open stream makes keepalive ping; the peer never answers.
    let (_tx, mut rx) = ch.streaming("/echo.Echo/Bidi").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), rx.message())
        .await
        .expect("keepalive gave up within 5 s");
    let e = waited.unwrap_err();
    assert_eq!(e.delivery, Delivery::MaybeDelivered, "{e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(ch.is_closed());
}

/// A server that answers one unary call per connection with an echo, then sends GOAWAY.
async fn goaway_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(io).await.unwrap();
                if let Some(Ok((request, mut respond))) = conn.accept().await {
                    let mut body = request.into_body();
                    let mut got = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        got.extend_from_slice(&chunk);
                    }
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let mut stream = respond.send_response(response, false).unwrap();
                    stream.send_data(Bytes::from(got), false).unwrap();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    stream.send_trailers(trailers).unwrap();
                }
                conn.graceful_shutdown();
                while let Some(Ok(_)) = conn.accept().await {}
            });
        }
    });
    (address, connections)
}

#[tokio::test]
async fn goaway_is_followed_by_a_fresh_connection() {
    let (address, connections) = goaway_server().await;
    let rt = TokioRuntime::current();
    let transport = GrpcTransport::new(rt, ChannelConfig::default(), 1);
    for i in 0..4u8 {
        // A call may race the GOAWAY of the previous connection: it is refused (NotSent)
        // and retrying is safe; within a few tries each call succeeds.
        let mut answer = None;
        for _ in 0..20 {
            match transport
                .unary(
                    &address,
                    "/echo.Echo/Unary",
                    Bytes::from(vec![i]),
                    Duration::from_secs(2),
                )
                .await
            {
                Ok(reply) => {
                    answer = Some(reply);
                    break;
                }
                Err(e) => {
                    assert_eq!(
                        e.delivery,
                        Delivery::NotSent,
                        "only refused calls are retried here: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        }
        assert_eq!(
            answer.expect("a call succeeds after GOAWAY").as_ref(),
            &[i][..]
        );
    }
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "each GOAWAY led to a new connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_channel_ends_its_tasks() {
    let address = black_hole().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = metrics.num_alive_tasks();
    let config = ChannelConfig {
        keepalive_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let ch = Channel::connect(&TokioRuntime::current(), &address, &config)
        .await
        .unwrap();
    let rt = TokioRuntime::current();
    let _ = ch
        .unary(
            &rt,
            "/x.X/Y",
            codec::frame(b"").unwrap(),
            Duration::from_millis(10),
        )
        .await;
    assert!(
        metrics.num_alive_tasks() > before,
        "the connection runs tasks"
    );
    drop(ch);
    let mut after = usize::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = metrics.num_alive_tasks();
        if after <= before {
            break;
        }
    }
    assert!(
        after <= before,
        "tasks left behind: {after} alive, {before} before the channel"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_but_busy_ones_kept() {
    let idle = black_hole().await;
    let busy = black_hole().await;
    let rt = TokioRuntime::current();
    let pool = tikv_driver::pool::Pool::with_idle_timeout(
        rt,
        ChannelConfig::default(),
        1,
        Duration::from_millis(100),
    );
    drop(pool.get(&idle).await.unwrap());
    let streaming = pool.get(&busy).await.unwrap();
    let (_tx, _rx) = streaming.streaming("/echo.Echo/Bidi").await.unwrap();
    assert_eq!(pool.open_connections(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        pool.open_connections(),
        1,
        "the idle connection is closed, the one with a stream is kept"
    );
}
