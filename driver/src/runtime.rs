//! The runtime seam: what the driver needs from an async runtime, and nothing more.
//!
//! Modelled on hyper 1.x's `rt` traits: spawning a detached task, sleeping, reading a
//! monotonic clock, and opening a connection. The IO type uses tokio's `AsyncRead` /
//! `AsyncWrite` because h2 speaks them; runtimes on other reactors (async-io for async-std and
//! smol) adapt their sockets with `tokio-util`'s compat layer. `tikv-tokio` and
//! `tikv-async-std` implement this trait; a simulation can implement it with virtual time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future (what the runtime hands back for connects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bidirectional byte stream the driver can speak HTTP/2 over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An async runtime the driver runs on.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected stream.
    type Io: Io;
    /// A timer future.
    type Sleep: Future<Output = ()> + Send + 'static;

    /// Runs `future` to completion in the background; the task is detached.
    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static);

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep;

    /// The current point on the runtime's monotonic clock (virtual under simulation).
    fn now(&self) -> tikv_core::Instant;

    /// Opens a connection to `address` (`host:port`; name resolution included), with
    /// `TCP_NODELAY` set where it applies.
    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<Self::Io>>;
}

/// Runs `future` with a deadline; `None` if the deadline passed first.
pub async fn timeout<R: Runtime, T>(
    runtime: &R,
    duration: Duration,
    future: impl Future<Output = T>,
) -> Option<T> {
    use futures_util::future::{Either, select};
    let sleep = runtime.sleep(duration);
    futures_util::pin_mut!(future);
    futures_util::pin_mut!(sleep);
    match select(future, sleep).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(((), _)) => None,
    }
}
