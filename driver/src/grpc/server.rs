//! The gRPC server side, used by the mock cluster and by tests: serves one HTTP/2 connection,
//! routing each stream by path to a [`Service`].

use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use tikv_core::GrpcCode;
use tikv_proto::method::MethodKind;
use tracing::debug;

use super::codec::{Decoder, Status, percent_encode};
use crate::runtime::{BoxFuture, Io, Runtime};

/// A gRPC service: answers calls by path.
pub trait Service: Clone + Send + Sync + 'static {
    /// The method's kind, or `None` when the path is not served (answered Unimplemented).
    fn kind(&self, path: &str) -> Option<MethodKind>;

    /// Answers a unary call with the response message, or a status.
    fn unary(&self, path: &str, request: Bytes) -> BoxFuture<'static, Result<Bytes, Status>>;

    /// Serves a streaming call: read requests from `requests`, write responses to
    /// `responses`, and return the call's final status.
    fn streaming(
        &self,
        path: &str,
        requests: Requests,
        responses: Responses,
    ) -> BoxFuture<'static, Result<(), Status>>;
}

/// Server connection settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request message accepted.
    pub max_message_size: usize,
    /// Receive windows, as on the client.
    pub window: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_message_size: 1 << 30,
            window: 1 << 27,
        }
    }
}

/// Serves one connection until the client goes away. Each call runs in its own task.
pub async fn serve_connection<R: Runtime, S: Service, T: Io>(
    runtime: R,
    io: T,
    service: S,
    config: ServerConfig,
) {
    let handshake = h2::server::Builder::new()
        .initial_window_size(config.window)
        .initial_connection_window_size(config.window)
        .handshake::<_, Bytes>(io);
    let mut connection = match handshake.await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "HTTP/2 server handshake failed");
            return;
        }
    };
    while let Some(accepted) = connection.accept().await {
        match accepted {
            Ok((request, respond)) => {
                let service = service.clone();
                let max = config.max_message_size;
                runtime.spawn(async move { serve_call(request, respond, service, max).await });
            }
            Err(e) => {
                debug!(error = %e, "HTTP/2 server connection error");
                return;
            }
        }
    }
}

async fn serve_call<S: Service>(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    service: S,
    max: usize,
) {
    let path = request.uri().path().to_string();
    let grpc = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        trailers_only(
            &mut respond,
            &Status::new(GrpcCode::Internal, "content-type is not application/grpc"),
        );
        return;
    }
    let Some(kind) = service.kind(&path) else {
        trailers_only(
            &mut respond,
            &Status::new(GrpcCode::Unimplemented, format!("unknown method {path}")),
        );
        return;
    };
    let mut requests = Requests {
        body: request.into_body(),
        decoder: Decoder::new(max),
        ended: false,
    };
    match kind {
        MethodKind::Unary => {
            let message = match requests.single().await {
                Ok(m) => m,
                Err(status) => return trailers_only(&mut respond, &status),
            };
            match service.unary(&path, message).await {
                Ok(reply) => {
                    let Some(mut stream) = start_response(&mut respond) else {
                        return;
                    };
                    if stream.send_data(reply, false).is_ok() {
                        send_trailers(&mut stream, &Status::new(GrpcCode::Ok, ""));
                    }
                }
                Err(status) => trailers_only(&mut respond, &status),
            }
        }
        _ => {
            let Some(stream) = start_response(&mut respond) else {
                return;
            };
            let responses = Responses {
                stream: Arc::new(Mutex::new(stream)),
            };
            let status = match service.streaming(&path, requests, responses.clone()).await {
                Ok(()) => Status::new(GrpcCode::Ok, ""),
                Err(status) => status,
            };
            let mut stream = responses
                .stream
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            send_trailers(&mut stream, &status);
        }
    }
}

fn start_response(respond: &mut SendResponse<Bytes>) -> Option<SendStream<Bytes>> {
    let response = Response::builder()
        .status(200)
        .header("content-type", HeaderValue::from_static("application/grpc"))
        .body(())
        .ok()?;
    respond.send_response(response, false).ok()
}

fn status_headers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(status.code as u32));
    if !status.message.is_empty() {
        // percent_encode only produces visible ASCII, which is always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&status.message)) {
            headers.insert("grpc-message", v);
        }
    }
    headers
}

fn send_trailers(stream: &mut SendStream<Bytes>, status: &Status) {
    let _ = stream.send_trailers(status_headers(status));
}

fn trailers_only(respond: &mut SendResponse<Bytes>, status: &Status) {
    let mut builder = Response::builder()
        .status(200)
        .header("content-type", HeaderValue::from_static("application/grpc"));
    for (name, value) in &status_headers(status) {
        builder = builder.header(name, value);
    }
    if let Ok(response) = builder.body(()) {
        let _ = respond.send_response(response, true);
    }
}

/// The request messages of a call.
#[derive(Debug)]
pub struct Requests {
    body: RecvStream,
    decoder: Decoder,
    ended: bool,
}

impl Requests {
    /// The next request message; `Ok(None)` once the client half-closed.
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            if let Some(m) = self.decoder.next_message()? {
                return Ok(Some(m));
            }
            if self.ended {
                self.decoder.finish()?;
                return Ok(None);
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.decoder.push(&chunk);
                }
                Some(Err(e)) => {
                    return Err(Status::new(
                        GrpcCode::Cancelled,
                        format!("request stream failed: {e}"),
                    ));
                }
                None => self.ended = true,
            }
        }
    }

    async fn single(&mut self) -> Result<Bytes, Status> {
        let first = self
            .message()
            .await?
            .ok_or_else(|| Status::new(GrpcCode::Internal, "no request message"))?;
        match self.message().await? {
            None => Ok(first),
            Some(_) => Err(Status::new(
                GrpcCode::Internal,
                "more than one request message in a unary call",
            )),
        }
    }
}

/// The response side of a streaming call. Clones share the stream, so a service may answer
/// from several tasks; the server sends the trailers on it once the service returns.
#[derive(Clone, Debug)]
pub struct Responses {
    stream: Arc<Mutex<SendStream<Bytes>>>,
}

impl Responses {
    /// Sends one framed response message.
    pub fn send(&self, message: Bytes) -> Result<(), Status> {
        // Never held across an await: sending only queues the frame.
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stream
            .send_data(message, false)
            .map_err(|e| Status::new(GrpcCode::Cancelled, format!("response stream failed: {e}")))
    }

    /// Ends the call abruptly with `RST_STREAM` (`INTERNAL_ERROR`) instead of trailers, as a
    /// crashing server or a proxy does: both directions fail at once, and responses not yet
    /// written are dropped. For fault injection (the mock, tests).
    pub fn reset(&self) {
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        stream.send_reset(h2::Reason::INTERNAL_ERROR);
    }
}

/// Helper for services: wraps an async block into the boxed future the trait returns.
pub fn boxed<T, F: Future<Output = T> + Send + 'static>(f: F) -> BoxFuture<'static, T> {
    Box::pin(f)
}
