//! The TiKV client on tokio.
//!
//! [`TokioRuntime`] implements `tikv-driver`'s [`Runtime`] with tokio's tasks, timers and TCP
//! (with `TCP_NODELAY`). It must be created inside a tokio runtime (it captures the current
//! handle), and works on both the current-thread and the multi-thread schedulers.

use std::future::Future;
use std::io;
use std::time::Duration;

use tikv_driver::runtime::BoxFuture;
pub use tikv_driver::{
    CasResult, Checksum, Config, Error, Key, KeyRange, KvPair, Result, Runtime, grpc,
};

/// The RawKV client on tokio: `RawClient::connect(&["127.0.0.1:2379"], Config::default())`
/// inside a tokio runtime.
pub type RawClient = tikv_driver::RawClient<TokioRuntime>;
use tokio::net::TcpStream;

/// tokio as a [`Runtime`].
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
    origin: tokio::time::Instant,
}

impl TokioRuntime {
    /// The runtime of the calling context.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (tokio's own rule for `Handle::current`).
    pub fn current() -> Self {
        Self::from_handle(tokio::runtime::Handle::current())
    }

    /// A runtime that spawns onto `handle`.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime {
            handle,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl tikv_driver::CurrentRuntime for TokioRuntime {
    fn current() -> Self {
        TokioRuntime::current()
    }
}

impl Runtime for TokioRuntime {
    type Io = TcpStream;
    type Sleep = tokio::time::Sleep;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        // Detached: the JoinHandle is dropped, the task runs to completion on its own.
        drop(self.handle.spawn(future));
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn now(&self) -> tikv_core::Instant {
        tikv_core::Instant::from_origin(self.origin.elapsed())
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<TcpStream>> {
        let address = address.to_string();
        Box::pin(async move {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}
