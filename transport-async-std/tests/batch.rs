//! BatchCommands on async-io (async-std's executor): many concurrent requests multiplexed on
//! a few streams, each answered to its own caller.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tikv_async_std::{AsyncIoRuntime, Runtime};
use tikv_core::GrpcCode;
use tikv_driver::batch::{BatchClient, BatchConfig};
use tikv_driver::grpc::server::boxed;
use tikv_driver::grpc::{
    ChannelConfig, Requests, Responses, ServerConfig, Service, Status, codec, serve_connection,
};
use tikv_driver::runtime::BoxFuture;
use tikv_driver::transport::GrpcTransport;
use tikv_proto::kvrpcpb;
use tikv_proto::method::MethodKind;
use tikv_proto::tikvpb::{self, batch_commands_request, batch_commands_response};
use tokio_util::compat::FuturesAsyncReadCompatExt;

/// Answers RawGet with value = key, in reverse order within each message.
#[derive(Clone)]
struct Store;

impl Service for Store {
    fn kind(&self, path: &str) -> Option<MethodKind> {
        (path == "/tikvpb.Tikv/BatchCommands").then_some(MethodKind::BidiStreaming)
    }

    fn unary(&self, _: &str, _: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {
        boxed(async { Err(Status::new(GrpcCode::Unimplemented, "unary")) })
    }

    fn streaming(
        &self,
        _: &str,
        mut requests: Requests,
        responses: Responses,
    ) -> BoxFuture<'static, Result<(), Status>> {
        boxed(async move {
            while let Some(m) = requests.message().await? {
                let req = tikvpb::BatchCommandsRequest::decode(m)
                    .map_err(|e| Status::new(GrpcCode::Internal, e.to_string()))?;
                let mut out = tikvpb::BatchCommandsResponse::default();
                for (r, id) in req.requests.into_iter().zip(req.request_ids).rev() {
                    let Some(batch_commands_request::request::Cmd::RawGet(get)) = r.cmd else {
                        continue;
                    };
                    let value = kvrpcpb::RawGetResponse {
                        value: get.key,
                        ..Default::default()
                    };
                    out.responses.push(batch_commands_response::Response {
                        cmd: Some(batch_commands_response::response::Cmd::RawGet(value)),
                    });
                    out.request_ids.push(id);
                }
                responses.send(codec::encode(&out)?)?;
            }
            Ok(())
        })
    }
}

/// `cmd` encoded as `BatchClient::call` takes it.
fn encode(cmd: batch_commands_request::request::Cmd) -> Bytes {
    batch_commands_request::Request { cmd: Some(cmd) }
        .encode_to_vec()
        .into()
}

#[test]
fn concurrent_requests_each_get_their_own_answer_on_async_std() {
    async_std::task::block_on(async {
        let rt = AsyncIoRuntime::new();
        let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server_rt = rt.clone();
        rt.spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                server_rt.spawn(serve_connection(
                    server_rt.clone(),
                    io.compat(),
                    Store,
                    ServerConfig::default(),
                ));
            }
        });
        let transport = Arc::new(GrpcTransport::new(rt.clone(), ChannelConfig::default(), 2));
        let batch = Arc::new(BatchClient::new(
            rt.clone(),
            transport,
            BatchConfig {
                streams_per_store: 2,
                ..Default::default()
            },
        ));
        let tasks: Vec<_> = (0..1000)
            .map(|i| {
                let (batch, address) = (batch.clone(), address.clone());
                async_std::task::spawn(async move {
                    let key = format!("key-{i}");
                    let cmd =
                        batch_commands_request::request::Cmd::RawGet(kvrpcpb::RawGetRequest {
                            key: key.clone().into_bytes().into(),
                            ..Default::default()
                        });
                    match batch
                        .call(&address, encode(cmd), Duration::from_secs(10))
                        .await
                        .unwrap()
                    {
                        batch_commands_response::response::Cmd::RawGet(r) => {
                            assert_eq!(r.value, key.as_bytes())
                        }
                        other => panic!("wrong variant {other:?}"),
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let sent = batch
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sent, 1000);
    });
}
