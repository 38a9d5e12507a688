//! gRPC over h2 on async-io, under async-std's executor and under smol's: the same calls as
//! the tokio suite's core cases, over loopback TCP.

use std::time::Duration;

use bytes::Bytes;
use tikv_async_std::{AsyncIoRuntime, Runtime};
use tikv_core::{Delivery, GrpcCode};
use tikv_driver::grpc::server::boxed;
use tikv_driver::grpc::{
    Channel, ChannelConfig, Requests, Responses, ServerConfig, Service, Status, codec,
    serve_connection,
};
use tikv_driver::runtime::BoxFuture;
use tikv_proto::method::MethodKind;
use tokio_util::compat::FuturesAsyncReadCompatExt;

#[derive(Clone)]
struct Echo(AsyncIoRuntime);

impl Service for Echo {
    fn kind(&self, path: &str) -> Option<MethodKind> {
        match path {
            "/echo.Echo/Unary" | "/echo.Echo/Slow" => Some(MethodKind::Unary),
            "/echo.Echo/Bidi" => Some(MethodKind::BidiStreaming),
            _ => None,
        }
    }

    fn unary(&self, path: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        let slow = path == "/echo.Echo/Slow";
        let rt = self.0.clone();
        boxed(async move {
            if slow {
                rt.sleep(Duration::from_secs(5)).await;
            }
            codec::frame(&request)
        })
    }

    fn streaming(
        &self,
        _: &str,
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

async fn server(rt: &AsyncIoRuntime) -> String {
    let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let rt2 = rt.clone();
    rt.spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            rt2.spawn(serve_connection(
                rt2.clone(),
                io.compat(),
                Echo(rt2.clone()),
                ServerConfig::default(),
            ));
        }
    });
    address
}

async fn suite(rt: AsyncIoRuntime) {
    let address = server(&rt).await;
    let ch = Channel::connect(&rt, &address, &ChannelConfig::default())
        .await
        .unwrap();
    let second = Duration::from_secs(1);

    let reply = ch
        .unary(
            &rt,
            "/echo.Echo/Unary",
            codec::frame(b"ping").unwrap(),
            second,
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"ping");

    let (mut tx, mut rx) = ch.streaming("/echo.Echo/Bidi").await.unwrap();
    for i in 0..20u32 {
        tx.send(codec::frame(&i.to_be_bytes()).unwrap()).unwrap();
        assert_eq!(&rx.message().await.unwrap().unwrap()[..], &i.to_be_bytes());
    }
    tx.finish().unwrap();
    assert_eq!(rx.message().await.unwrap(), None);

    let e = ch
        .unary(
            &rt,
            "/echo.Echo/Slow",
            codec::frame(b"x").unwrap(),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status.code, e.delivery),
        (GrpcCode::DeadlineExceeded, Delivery::MaybeDelivered)
    );

    let e = ch
        .unary(
            &rt,
            "/echo.Echo/Missing",
            codec::frame(b"x").unwrap(),
            second,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status.code, GrpcCode::Unimplemented, "{e:?}");

    let closed = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let e = Channel::connect(&rt, &dead, &ChannelConfig::default())
        .await
        .unwrap_err();
    assert_eq!(e.delivery, Delivery::NotSent);
}

#[test]
fn under_async_std() {
    async_std::task::block_on(suite(AsyncIoRuntime::new()));
}

#[test]
fn under_smol() {
    smol::block_on(suite(AsyncIoRuntime::with_spawner(|task| {
        smol::spawn(task).detach()
    })));
}
