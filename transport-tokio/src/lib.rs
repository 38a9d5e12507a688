//! The TiKV client on tokio.
//!
//! ```
//! use tikv_tokio::{Config, RawClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A mock cluster stands in for a real one here; against a real cluster, pass its PD
//! # // address (e.g. "127.0.0.1:2379") instead.
//! # let mock = tikv_mock::server::MockServer::start(
//! #     tikv_tokio::TokioRuntime::current(),
//! #     tikv_mock::ClusterConfig { stores: 3, ..Default::default() },
//! # ).await?;
//! # let pd = mock.pd_address();
//! let client = RawClient::connect(&[pd], Config::default()).await?;
//!
//! client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//!
//! client.batch_put([("a", "1"), ("b", "2"), ("c", "3")]).await?;
//! let pairs = client.scan("a".."c", 10).await?; // a and b
//! assert_eq!(pairs.len(), 2);
//! let newest_first = client.reverse_scan(.., 2).await?; // greeting, c
//! assert_eq!(newest_first[0].key, "greeting".into());
//!
//! let cas = client.with_atomic_for_cas();
//! let swapped = cas.compare_and_swap("counter", None::<&str>, "1").await?;
//! assert!(swapped.swapped);
//! # Ok(())
//! # }
//! ```
//!
//! [`TokioRuntime`] implements [`Runtime`] with tokio's tasks, timers and TCP (with
//! `TCP_NODELAY`). It must be created inside a tokio runtime (it captures the current
//! handle), and works on both the current-thread and the multi-thread schedulers.
//!
//! This crate exports the same API as `tikv_async_std` (and the simulator's
//! `tikv_mock::sim::client`): a program written against one compiles against the other.
//!

#![doc = include_str!("../../docs/guide.md")]

use std::future::Future;
use std::io;
use std::time::Duration;

tikv_driver::facade!(TokioRuntime);

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
