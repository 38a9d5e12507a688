//! Connection pools: a few HTTP/2 connections per address, opened lazily and reopened after
//! failures with backoff.
//!
//! client-go keeps 4 connections per TiKV store and spreads calls over them round-robin; so do
//! we. A slot whose connection failed is not redialled on every call: after a failed dial it
//! refuses (as NotSent, so callers may retry elsewhere) until its reconnect backoff passes
//! (100 ms, growing ×1.6 to 3 s, like gRPC's). Connections nobody used for
//! [`IDLE_TIMEOUT`] (and with no call or stream open) are closed by a sweeper task, so a
//! client that talked to many stores once does not keep their connections forever.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tikv_core::{Delivery, GrpcCode, Instant};

use crate::grpc::{CallError, Channel, ChannelConfig};
use crate::runtime::Runtime;

const RECONNECT_BASE: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(3);

/// How long an unused connection stays open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Slot {
    channel: Option<Channel>,
    /// When the slot last handed out its connection.
    last_used: Instant,
    /// No dial before this instant (after a failed dial).
    retry_at: Option<Instant>,
    backoff: Duration,
}

struct Slots {
    slots: Vec<Mutex<Slot>>,
    next: AtomicUsize,
}

/// Connections to many addresses.
pub struct Pool<R: Runtime> {
    runtime: R,
    config: ChannelConfig,
    per_address: usize,
    addresses: Arc<Mutex<HashMap<String, Arc<Slots>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only plain field updates happen under these locks; a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<R: Runtime> Pool<R> {
    /// A pool keeping `per_address` connections to each address, closing them after
    /// [`IDLE_TIMEOUT`] unused.
    pub fn new(runtime: R, config: ChannelConfig, per_address: usize) -> Self {
        Self::with_idle_timeout(runtime, config, per_address, IDLE_TIMEOUT)
    }

    /// Like [`new`](Self::new), with another idle timeout.
    pub fn with_idle_timeout(
        runtime: R,
        config: ChannelConfig,
        per_address: usize,
        idle_timeout: Duration,
    ) -> Self {
        let addresses: Arc<Mutex<HashMap<String, Arc<Slots>>>> = Arc::default();
        let weak = Arc::downgrade(&addresses);
        let rt = runtime.clone();
        runtime.spawn(async move {
            // Ends when the pool (the only strong owner of `addresses`) is dropped.
            loop {
                rt.sleep(idle_timeout / 2).await;
                let Some(addresses) = weak.upgrade() else {
                    return;
                };
                let now = rt.now();
                let all: Vec<Arc<Slots>> = lock(&addresses).values().cloned().collect();
                for slots in all {
                    for slot in &slots.slots {
                        let mut s = lock(slot);
                        let idle = s.channel.as_ref().is_some_and(|c| c.active_calls() == 0);
                        if idle && now.saturating_duration_since(s.last_used) >= idle_timeout {
                            s.channel = None;
                        }
                    }
                }
            }
        });
        Pool {
            runtime,
            config,
            per_address: per_address.max(1),
            addresses,
        }
    }

    /// Connections open now (all addresses).
    pub fn open_connections(&self) -> usize {
        let all: Vec<Arc<Slots>> = lock(&self.addresses).values().cloned().collect();
        all.iter()
            .map(|s| {
                s.slots
                    .iter()
                    .filter(|slot| lock(slot).channel.as_ref().is_some_and(|c| !c.is_closed()))
                    .count()
            })
            .sum()
    }

    fn slots(&self, address: &str) -> Arc<Slots> {
        let mut map = lock(&self.addresses);
        map.entry(address.to_string())
            .or_insert_with(|| {
                Arc::new(Slots {
                    slots: (0..self.per_address)
                        .map(|_| Mutex::new(Slot::default()))
                        .collect(),
                    next: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// A live connection to `address`, dialling one if needed.
    pub async fn get(&self, address: &str) -> Result<Channel, CallError> {
        let slots = self.slots(address);
        let index = slots.next.fetch_add(1, Ordering::Relaxed) % slots.slots.len();
        let slot = &slots.slots[index];
        {
            let mut s = lock(slot);
            s.last_used = self.runtime.now();
            if let Some(ch) = s.channel.as_ref().filter(|c| !c.is_closed()) {
                return Ok(ch.clone());
            }
            if let Some(at) = s.retry_at {
                if self.runtime.now() < at {
                    return Err(CallError {
                        delivery: Delivery::NotSent,
                        status: crate::grpc::Status::new(
                            GrpcCode::Unavailable,
                            format!("{address}: reconnecting after a failed dial"),
                        ),
                        from_server: false,
                    });
                }
            }
        }
        // Dial without holding the lock; a concurrent dial of the same slot may win, which
        // only costs a spare connection.
        match Channel::connect(&self.runtime, address, &self.config).await {
            Ok(ch) => {
                let mut s = lock(slot);
                s.channel = Some(ch.clone());
                s.retry_at = None;
                s.backoff = Duration::ZERO;
                Ok(ch)
            }
            Err(e) => {
                let mut s = lock(slot);
                s.backoff = if s.backoff.is_zero() {
                    RECONNECT_BASE
                } else {
                    (s.backoff.mul_f64(1.6)).min(RECONNECT_MAX)
                };
                s.retry_at = Some(self.runtime.now() + s.backoff);
                s.channel = None;
                Err(e)
            }
        }
    }

    /// Closes (forgets) every connection to `address`, e.g. after the store moved.
    pub fn forget(&self, address: &str) {
        lock(&self.addresses).remove(address);
    }
}
