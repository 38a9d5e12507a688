//! The TiKV client for async-std and smol applications.
//!
//! [`AsyncIoRuntime`] implements `tikv-driver`'s [`Runtime`] on `async-io` (the reactor that
//! async-std and smol both run on) and `async-net`. The sockets are adapted to the tokio IO
//! traits h2 speaks with `tokio-util`'s compat layer; no tokio runtime is involved. Tasks are
//! spawned on `async-global-executor` (the executor async-std itself uses) unless you pass
//! your own spawner, e.g. smol's:
//!
//! ```no_run
//! use tikv_async_std::AsyncIoRuntime;
//!
//! let runtime = AsyncIoRuntime::with_spawner(|task| smol::spawn(task).detach());
//! # drop(runtime);
//! ```
//!
//! The async-std crate itself is discontinued, so this crate does not depend on it (only its
//! tests do, to prove the client runs under async-std's executor).
//!
//! ```no_run
//! use tikv_async_std::{Config, TransactionClient};
//!
//! # fn main() -> tikv_async_std::Result<()> {
//! smol::block_on(async {
//!     let client = TransactionClient::connect(&["127.0.0.1:2379"], Config::default()).await?;
//!     let mut txn = client.begin().await?;
//!     txn.put("k", "v").await?;
//!     txn.commit().await?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! This crate exports the same API as `tikv_tokio` (and the simulator's
//! `tikv_mock::sim::client`): a program written against one compiles against the other.
//!

#![doc = include_str!("../../docs/guide.md")]

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

tikv_driver::facade!(AsyncIoRuntime);
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// async-io as a [`Runtime`].
#[derive(Clone)]
pub struct AsyncIoRuntime {
    spawner: Spawner,
    origin: std::time::Instant,
}

impl fmt::Debug for AsyncIoRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncIoRuntime").finish_non_exhaustive()
    }
}

impl Default for AsyncIoRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncIoRuntime {
    /// A runtime spawning on `async-global-executor`.
    pub fn new() -> Self {
        Self::with_spawner(|task| async_global_executor::spawn(task).detach())
    }

    /// A runtime spawning detached tasks with `spawner`.
    pub fn with_spawner(spawner: impl Fn(BoxFuture<'static, ()>) + Send + Sync + 'static) -> Self {
        // The origin of the client's monotonic timeline; only differences are ever used.
        AsyncIoRuntime {
            spawner: Arc::new(spawner),
            origin: std::time::Instant::now(),
        }
    }
}

impl tikv_driver::CurrentRuntime for AsyncIoRuntime {
    fn current() -> Self {
        AsyncIoRuntime::new()
    }
}

/// An async-io timer that completes with `()`.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for AsyncIoRuntime {
    type Io = Compat<async_net::TcpStream>;
    type Sleep = Sleep;

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        (self.spawner)(Box::pin(future));
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep(async_io::Timer::after(duration))
    }

    fn now(&self) -> tikv_core::Instant {
        tikv_core::Instant::from_origin(self.origin.elapsed())
    }

    fn connect(&self, address: &str) -> BoxFuture<'static, io::Result<Self::Io>> {
        let address = address.to_string();
        Box::pin(async move {
            let stream = async_net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok(stream.compat())
        })
    }
}
