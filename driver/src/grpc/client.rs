//! The gRPC client: one HTTP/2 connection ([`Channel`]) carrying unary calls and streams.
//!
//! Every failure is classified where it happens: [`Delivery::NotSent`] when the request
//! certainly never reached the server's application (connection refused, stream refused,
//! connection already closed), [`Delivery::MaybeDelivered`] once the request may have been
//! read (reset, timeout, connection lost mid-call), and a gRPC [`Status`] when the server
//! answered with one.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderValue, Method, Request};
use tikv_core::{Delivery, GrpcCode};
use tracing::debug;

use super::codec::{
    Decoder, Status, code_for_http_status, code_for_reset, format_timeout, status_from_headers,
};
use crate::runtime::{Runtime, timeout};

/// Connection settings (client-go's values where it has them).
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Per-stream receive window (`GrpcInitialWindowSize`, 128 MiB).
    pub stream_window: u32,
    /// Connection receive window (`GrpcInitialConnWindowSize`, 128 MiB).
    pub connection_window: u32,
    /// Largest DATA frame the peer may send us.
    pub max_frame_size: u32,
    /// Largest message we accept (decoded length).
    pub max_message_size: usize,
    /// Time allowed to connect and complete the HTTP/2 handshake (`dialTimeout`, 5 s).
    pub connect_timeout: Duration,
    /// Keepalive ping interval while streams are open (`GrpcKeepAliveTime`, 10 s); zero
    /// disables keepalive.
    pub keepalive_interval: Duration,
    /// How long to wait for a ping's answer before closing the connection as dead
    /// (`GrpcKeepAliveTimeout`, 3 s).
    pub keepalive_timeout: Duration,
    /// TLS material; `None` speaks cleartext HTTP/2 (prior knowledge).
    pub tls: Option<crate::tls::SecurityConfig>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            stream_window: 1 << 27,
            connection_window: 1 << 27,
            max_frame_size: 1 << 20,
            max_message_size: 1 << 30,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(3),
            tls: None,
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// Whether the request may have reached the server.
    pub delivery: Delivery,
    /// What happened: a status from the server, or a local classification of a transport
    /// failure (then `code` is Unavailable, DeadlineExceeded, Cancelled, ...).
    pub status: Status,
    /// Whether the status came from the server (`true`) or was made up locally.
    pub from_server: bool,
}

impl CallError {
    fn local(delivery: Delivery, code: GrpcCode, message: impl Into<String>) -> Self {
        CallError {
            delivery,
            status: Status::new(code, message),
            from_server: false,
        }
    }

    fn server(status: Status) -> Self {
        CallError {
            delivery: Delivery::MaybeDelivered,
            status,
            from_server: true,
        }
    }

    /// Classifies an h2 error that ended a call after its request was handed to h2.
    fn from_h2(e: &h2::Error, sent: bool) -> Self {
        if let Some(reason) = e.reason() {
            // REFUSED_STREAM promises the stream was not processed; GOAWAY likewise covers
            // streams above its last id, which h2 reports as refused.
            if reason == h2::Reason::REFUSED_STREAM {
                return CallError::local(
                    Delivery::NotSent,
                    GrpcCode::Unavailable,
                    format!("stream refused: {e}"),
                );
            }
            if e.is_reset() || e.is_go_away() {
                let delivery = if sent {
                    Delivery::MaybeDelivered
                } else {
                    Delivery::NotSent
                };
                return CallError::local(
                    delivery,
                    code_for_reset(reason),
                    format!("stream reset: {e}"),
                );
            }
        }
        let delivery = if sent {
            Delivery::MaybeDelivered
        } else {
            Delivery::NotSent
        };
        CallError::local(
            delivery,
            GrpcCode::Unavailable,
            format!("connection error: {e}"),
        )
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.status, self.delivery)
    }
}

impl std::error::Error for CallError {}

/// Counts a channel's open calls, so keepalive pings only while streams are open (servers
/// punish pings on idle connections with GOAWAY "too many pings").
#[derive(Debug)]
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(count.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One HTTP/2 connection to a gRPC server. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Channel {
    send: SendRequest<Bytes>,
    authority: Arc<str>,
    parsed_authority: http::uri::Authority,
    max_message_size: usize,
    active: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("authority", &self.authority)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Channel {
    /// Connects to `address` (`host:port`) and completes the HTTP/2 handshake: over TLS when
    /// `config.tls` is set, else cleartext with prior knowledge. The connection is driven by a task spawned on `runtime`, which ends
    /// when every clone of the channel is dropped or the connection fails.
    pub async fn connect<R: Runtime>(
        runtime: &R,
        address: &str,
        config: &ChannelConfig,
    ) -> Result<Channel, CallError> {
        let unreachable = |m: String| CallError::local(Delivery::NotSent, GrpcCode::Unavailable, m);
        let io = match timeout(runtime, config.connect_timeout, runtime.connect(address)).await {
            Some(Ok(io)) => io,
            Some(Err(e)) => return Err(unreachable(format!("connect to {address}: {e}"))),
            None => {
                return Err(unreachable(format!(
                    "connect to {address}: timed out after {:?}",
                    config.connect_timeout
                )));
            }
        };
        match &config.tls {
            None => Channel::handshake(runtime, io, address, config).await,
            Some(tls) => {
                let io = match timeout(
                    runtime,
                    config.connect_timeout,
                    crate::tls::connect(tls, io, address),
                )
                .await
                {
                    Some(result) => result?,
                    None => {
                        return Err(unreachable(format!(
                            "TLS handshake with {address} timed out"
                        )));
                    }
                };
                Channel::handshake(runtime, io, address, config).await
            }
        }
    }

    /// Runs the HTTP/2 handshake over an established stream (e.g. an in-memory duplex or a
    /// TLS stream).
    pub async fn handshake<R: Runtime, T: crate::runtime::Io>(
        runtime: &R,
        io: T,
        authority: &str,
        config: &ChannelConfig,
    ) -> Result<Channel, CallError> {
        let parsed_authority: http::uri::Authority = authority.parse().map_err(|e| {
            CallError::local(
                Delivery::NotSent,
                GrpcCode::InvalidArgument,
                format!("{authority} is not a valid host:port: {e}"),
            )
        })?;
        let handshake = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(config.stream_window)
            .initial_connection_window_size(config.connection_window)
            .max_frame_size(config.max_frame_size)
            .handshake::<_, Bytes>(io);
        let (send, mut connection) = match timeout(runtime, config.connect_timeout, handshake).await
        {
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                return Err(CallError::local(
                    Delivery::NotSent,
                    GrpcCode::Unavailable,
                    format!("HTTP/2 handshake with {authority}: {e}"),
                ));
            }
            None => {
                return Err(CallError::local(
                    Delivery::NotSent,
                    GrpcCode::Unavailable,
                    format!("HTTP/2 handshake with {authority} timed out"),
                ));
            }
        };
        let active = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let ping_pong = connection.ping_pong();
        let (kill, killed) = futures_channel::oneshot::channel::<()>();
        if let (Some(ping_pong), false) = (ping_pong, config.keepalive_interval.is_zero()) {
            runtime.spawn(keepalive(
                runtime.clone(),
                ping_pong,
                active.clone(),
                closed.clone(),
                kill,
                config.clone(),
            ));
        }
        let task_closed = closed.clone();
        let name: Arc<str> = authority.into();
        let task_name = name.clone();
        runtime.spawn(async move {
            // Dropping the connection (keepalive found it dead) fails every stream on it.
            match select(connection, killed).await {
                Either::Left((Err(e), _)) => {
                    debug!(peer = %task_name, error = %e, "HTTP/2 connection failed")
                }
                Either::Left((Ok(()), _)) => debug!(peer = %task_name, "HTTP/2 connection closed"),
                Either::Right(_) => {
                    debug!(peer = %task_name, "HTTP/2 connection closed by keepalive")
                }
            }
            task_closed.store(true, Ordering::Release);
        });
        Ok(Channel {
            send,
            authority: name,
            parsed_authority,
            max_message_size: config.max_message_size,
            active,
            closed,
        })
    }

    /// Whether the connection has ended; a closed channel fails every call as NotSent.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Calls and streams open on the connection right now.
    pub fn active_calls(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The address the channel connects to.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn request(&self, path: &str, deadline: Option<Duration>) -> Result<Request<()>, CallError> {
        use http::header::{CONTENT_TYPE, HeaderName, TE, USER_AGENT};
        let bad = |e: &dyn std::fmt::Display| {
            CallError::local(
                Delivery::NotSent,
                GrpcCode::Internal,
                format!("cannot build request for {path}: {e}"),
            )
        };
        // The authority was parsed once at connect; only the path is parsed per call.
        let uri = http::Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(self.parsed_authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| bad(&e))?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tikv-rust/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(d) = deadline {
            let value = HeaderValue::from_str(&format_timeout(d)).map_err(|e| bad(&e))?;
            headers.insert(HeaderName::from_static("grpc-timeout"), value);
        }
        Ok(request)
    }

    async fn open(
        &self,
        path: &str,
        deadline: Option<Duration>,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), CallError> {
        if self.is_closed() {
            return Err(CallError::local(
                Delivery::NotSent,
                GrpcCode::Unavailable,
                "connection is closed",
            ));
        }
        let request = self.request(path, deadline)?;
        let send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(|e| CallError::from_h2(&e, false))?;
        let mut send = send;
        send.send_request(request, false)
            .map_err(|e| CallError::from_h2(&e, false))
    }

    /// A unary call: sends one framed message (see [`codec::encode`](super::codec::encode))
    /// and returns the one response message. `deadline` bounds the whole call and is sent to
    /// the server as `grpc-timeout`.
    pub async fn unary<R: Runtime>(
        &self,
        runtime: &R,
        path: &str,
        message: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, CallError> {
        let _active = ActiveGuard::new(&self.active);
        match timeout(runtime, deadline, self.unary_inner(path, message, deadline)).await {
            Some(result) => result,
            None => Err(CallError::local(
                Delivery::MaybeDelivered,
                GrpcCode::DeadlineExceeded,
                format!("{path}: no response within {deadline:?}"),
            )),
        }
    }

    async fn unary_inner(
        &self,
        path: &str,
        message: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, CallError> {
        let (response, stream) = self.open(path, Some(deadline)).await?;
        self.finish_unary(path, response, stream, message).await
    }

    /// Sends a unary call's body on an opened stream and reads the one reply.
    async fn finish_unary(
        &self,
        path: &str,
        response: ResponseFuture,
        mut stream: SendStream<Bytes>,
        message: Bytes,
    ) -> Result<Bytes, CallError> {
        let mut receiver = Receiver::new(response, self.max_message_size);
        if let Err(e) = stream.send_data(message, true) {
            // Until the body is handed over, the server cannot have acted on the call. It
            // may still have answered from the headers alone (an unknown method, a refused
            // call) and reset the stream, which is what failed the send: its status is the
            // call's outcome, the failed send only a consequence.
            let send_error = CallError::from_h2(&e, false);
            return Err(match receiver.message().await {
                Err(answer) if answer.from_server => answer,
                _ => send_error,
            });
        }
        let first = receiver.message().await?;
        let Some(first) = first else {
            return Err(CallError::local(
                Delivery::MaybeDelivered,
                GrpcCode::Internal,
                format!("{path}: no response message"),
            ));
        };
        match receiver.message().await? {
            None => Ok(first),
            Some(_) => Err(CallError::local(
                Delivery::MaybeDelivered,
                GrpcCode::Internal,
                format!("{path}: more than one response message"),
            )),
        }
    }

    /// Opens a bidirectional (or server-streaming) call: send framed messages with the
    /// [`Sender`], read responses from the [`Receiver`].
    pub async fn streaming(&self, path: &str) -> Result<(Sender, Receiver), CallError> {
        let active = ActiveGuard::new(&self.active);
        let (response, stream) = self.open(path, None).await?;
        let mut receiver = Receiver::new(response, self.max_message_size);
        receiver.guard = Some(active);
        Ok((Sender { stream }, receiver))
    }
}

async fn keepalive<R: Runtime>(
    runtime: R,
    mut ping_pong: h2::PingPong,
    active: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    kill: futures_channel::oneshot::Sender<()>,
    config: ChannelConfig,
) {
    loop {
        runtime.sleep(config.keepalive_interval).await;
        if closed.load(Ordering::Acquire) || kill.is_canceled() {
            return;
        }
        if active.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match timeout(
            &runtime,
            config.keepalive_timeout,
            ping_pong.ping(h2::Ping::opaque()),
        )
        .await
        {
            Some(Ok(_pong)) => {}
            Some(Err(_)) => return, // the connection is already failing
            None => {
                debug!(
                    "keepalive ping unanswered within {:?}; closing connection",
                    config.keepalive_timeout
                );
                let _ = kill.send(());
                return;
            }
        }
    }
}

/// The sending half of a streaming call.
#[derive(Debug)]
pub struct Sender {
    stream: SendStream<Bytes>,
}

impl Sender {
    /// Queues one framed message. Errors mean the stream is gone; messages sent before may
    /// or may not have been delivered.
    pub fn send(&mut self, message: Bytes) -> Result<(), CallError> {
        self.stream
            .send_data(message, false)
            .map_err(|e| CallError::from_h2(&e, true))
    }

    /// Ends the request stream (half-close).
    pub fn finish(&mut self) -> Result<(), CallError> {
        self.stream
            .send_data(Bytes::new(), true)
            .map_err(|e| CallError::from_h2(&e, true))
    }
}

/// The receiving half of a call.
#[derive(Debug)]
pub struct Receiver {
    response: Option<ResponseFuture>,
    body: Option<RecvStream>,
    decoder: Decoder,
    finished: bool,
    guard: Option<ActiveGuard>,
}

impl Receiver {
    fn new(response: ResponseFuture, max_message_size: usize) -> Self {
        Receiver {
            response: Some(response),
            body: None,
            decoder: Decoder::new(max_message_size),
            finished: false,
            guard: None,
        }
    }

    /// The next response message; `Ok(None)` when the call ended with status OK.
    pub async fn message(&mut self) -> Result<Option<Bytes>, CallError> {
        if self.finished {
            return Ok(None);
        }
        let result = self.next().await;
        if !matches!(result, Ok(Some(_))) {
            self.finished = true;
            self.guard = None;
        }
        result
    }

    async fn next(&mut self) -> Result<Option<Bytes>, CallError> {
        if let Some(response) = self.response.take() {
            let response = response.await.map_err(|e| CallError::from_h2(&e, true))?;
            let (parts, body) = response.into_parts();
            if parts.status != http::StatusCode::OK {
                let status = status_from_headers(&parts.headers).unwrap_or_else(|| {
                    Status::new(
                        code_for_http_status(parts.status),
                        format!("HTTP status {}", parts.status),
                    )
                });
                return Err(CallError::server(status));
            }
            if let Some(status) = status_from_headers(&parts.headers) {
                // Trailers-Only: the whole call's outcome is in the headers.
                return if status.code == GrpcCode::Ok {
                    Ok(None)
                } else {
                    Err(CallError::server(status))
                };
            }
            self.body = Some(body);
        }
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        loop {
            if let Some(message) = self
                .decoder
                .next_message()
                .map_err(CallError::server_side_decode)?
            {
                return Ok(Some(message));
            }
            match body.data().await {
                Some(Ok(chunk)) => {
                    // Give the window back at once: the decoder owns the bytes now.
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.decoder.push(&chunk);
                }
                Some(Err(e)) => return Err(CallError::from_h2(&e, true)),
                None => break,
            }
        }
        self.decoder
            .finish()
            .map_err(CallError::server_side_decode)?;
        let trailers = body
            .trailers()
            .await
            .map_err(|e| CallError::from_h2(&e, true))?;
        match trailers.as_ref().and_then(status_from_headers) {
            Some(status) if status.code == GrpcCode::Ok => Ok(None),
            Some(status) => Err(CallError::server(status)),
            None => Err(CallError::local(
                Delivery::MaybeDelivered,
                GrpcCode::Internal,
                "response ended without grpc-status",
            )),
        }
    }
}

impl CallError {
    /// A malformed response body: the server acted, but we cannot read its answer.
    fn server_side_decode(status: Status) -> Self {
        CallError {
            delivery: Delivery::MaybeDelivered,
            status,
            from_server: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::io;
    use std::time::Instant;

    use tokio::io::DuplexStream;

    use super::*;
    use crate::grpc::codec;
    use crate::runtime::BoxFuture;

    /// Tokio with in-memory pipes; nothing here dials out.
    #[derive(Clone)]
    struct Pipes(Arc<Instant>);

    impl Runtime for Pipes {
        type Io = DuplexStream;
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

        fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<DuplexStream>> {
            let address = address.to_string();
            Box::pin(async move { Err(io::Error::other(format!("no network: {address}"))) })
        }
    }

    /// A server that answers every call from its headers alone (Trailers-Only
    /// Unimplemented) without reading the body, as gRPC servers do for unknown methods;
    /// dropping the unread body makes h2 reset the stream (NO_ERROR) after the answer.
    async fn answer_from_headers(io: DuplexStream) {
        let mut connection = h2::server::handshake(io).await.expect("server handshake");
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "12")
                .header("grpc-message", "unknown method")
                .body(())
                .expect("valid response");
            respond.send_response(response, true).expect("answers");
            drop(request);
        }
    }

    /// Regression: the server's answer and reset can reach the connection task between
    /// opening a unary call and handing over its body (on a multi-threaded runtime under
    /// load). The send then fails, and the call used to report that local failure
    /// (Unavailable) instead of the server's status.
    #[test]
    fn a_server_answer_before_the_body_is_the_unary_outcome() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let runtime = Pipes(Arc::new(Instant::now()));
            let (client, server) = tokio::io::duplex(1 << 16);
            runtime.spawn(answer_from_headers(server));
            let channel = Channel::handshake(&runtime, client, "mock:1", &ChannelConfig::default())
                .await
                .expect("handshake");
            let path = "/echo.Echo/Missing";
            let (response, mut stream) = channel.open(path, None).await.expect("opens");
            // Wait until the reset has been processed: the state the race produces.
            let reason = futures_util::future::poll_fn(|cx| stream.poll_reset(cx))
                .await
                .expect("the server resets the stream");
            assert_eq!(reason, h2::Reason::NO_ERROR);
            let body = codec::frame(b"x").expect("frames");
            let e = channel
                .finish_unary(path, response, stream, body)
                .await
                .expect_err("the server refused the call");
            assert_eq!(
                (e.status.code, e.from_server),
                (GrpcCode::Unimplemented, true),
                "{e:?}"
            );
        });
    }
}
