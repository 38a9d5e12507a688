//! The RPC-level seam between the client and the network.
//!
//! Everything above this trait (PD client, BatchCommands, the executor) speaks in protobuf
//! message bytes to an address and a method path; everything below decides how they travel.
//! [`GrpcTransport`] is the real one: gRPC over HTTP/2 connections from a [`Pool`]. A
//! deterministic simulation implements the same trait in memory, which is how the real client
//! code runs unchanged under simulated time and faults.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::grpc::client::{Receiver, Sender};
use crate::grpc::{CallError, ChannelConfig, codec};
use crate::pool::Pool;
use crate::runtime::{BoxFuture, Runtime};

/// The sending half of a stream opened through a [`Transport`].
pub trait StreamSend: Send {
    /// Queues one message (protobuf bytes).
    fn send(&mut self, message: Bytes) -> Result<(), CallError>;
}

/// The receiving half of a stream opened through a [`Transport`].
pub trait StreamRecv: Send {
    /// The next message; `Ok(None)` when the stream ended cleanly.
    fn message(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, CallError>>;
}

/// A boxed sending half.
pub type StreamTx = Box<dyn StreamSend>;
/// A boxed receiving half.
pub type StreamRx = Box<dyn StreamRecv>;

/// Moves request and response messages to and from servers.
pub trait Transport: Send + Sync + 'static {
    /// One request, one response, within `timeout`.
    fn unary(
        &self,
        address: &str,
        path: &'static str,
        message: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, CallError>>;

    /// Opens a bidirectional stream.
    fn open_stream(
        &self,
        address: &str,
        path: &'static str,
    ) -> BoxFuture<'static, Result<(StreamTx, StreamRx), CallError>>;
}

/// A shared transport.
pub type SharedTransport = Arc<dyn Transport>;

/// gRPC over HTTP/2.
pub struct GrpcTransport<R: Runtime> {
    runtime: R,
    pool: Arc<Pool<R>>,
}

impl<R: Runtime> GrpcTransport<R> {
    /// A transport keeping `connections_per_address` HTTP/2 connections to each address.
    pub fn new(runtime: R, config: ChannelConfig, connections_per_address: usize) -> Self {
        let pool = Arc::new(Pool::new(runtime.clone(), config, connections_per_address));
        GrpcTransport { runtime, pool }
    }
}

struct GrpcSend(Sender);

impl StreamSend for GrpcSend {
    fn send(&mut self, message: Bytes) -> Result<(), CallError> {
        let framed = codec::frame(&message).map_err(|status| CallError {
            delivery: tikv_core::Delivery::NotSent,
            status,
            from_server: false,
        })?;
        self.0.send(framed)
    }
}

struct GrpcRecv(Receiver);

impl StreamRecv for GrpcRecv {
    fn message(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, CallError>> {
        Box::pin(self.0.message())
    }
}

impl<R: Runtime> Transport for GrpcTransport<R> {
    fn unary(
        &self,
        address: &str,
        path: &'static str,
        message: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, CallError>> {
        let pool = self.pool.clone();
        let runtime = self.runtime.clone();
        let address = address.to_string();
        Box::pin(async move {
            let channel = pool.get(&address).await?;
            let framed = codec::frame(&message).map_err(|status| CallError {
                delivery: tikv_core::Delivery::NotSent,
                status,
                from_server: false,
            })?;
            channel.unary(&runtime, path, framed, timeout).await
        })
    }

    fn open_stream(
        &self,
        address: &str,
        path: &'static str,
    ) -> BoxFuture<'static, Result<(StreamTx, StreamRx), CallError>> {
        let pool = self.pool.clone();
        let address = address.to_string();
        Box::pin(async move {
            let channel = pool.get(&address).await?;
            let (tx, rx) = channel.streaming(path).await?;
            Ok((
                Box::new(GrpcSend(tx)) as StreamTx,
                Box::new(GrpcRecv(rx)) as StreamRx,
            ))
        })
    }
}
