//! Lock waiting on the gRPC front: a `KvPessimisticLock` that meets another transaction's
//! lock is held open (unary) or answered later on its stream (`BatchCommands`), as TiKV's
//! lock manager does, instead of failing at once.
//!
//! The engine parks such a request and hands back a [`LockWaitId`]; the front registers
//! how to deliver its answer, and one pump task per server polls the engine
//! ([`Cluster::poll_lock_waits`](crate::Cluster::poll_lock_waits)) whenever something waits:
//! at the earliest wait deadline, and at least every [`TICK`] so that a lock released by
//! another request (commit, rollback) wakes its waiters promptly.
//!
//! Registration happens under the cluster lock, in the same critical section that parked
//! the request, so the pump (which polls under that lock) can never see an answer before
//! its delivery is registered. The server owns every wait of the cluster it serves: an
//! answer nobody registered for (a wait parked in-process by a test) is dropped.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use tikv_driver::runtime::Runtime;
use tikv_proto::kvrpcpb::PessimisticLockResponse;

use super::{SharedCluster, now_ms};
use crate::txn::lock_wait::LockWaitId;

/// The longest the pump sleeps while something waits.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// Delivers one parked request's answer.
pub(super) type Deliver = Box<dyn FnOnce(PessimisticLockResponse) + Send>;

/// The parked requests of one server and the pump's wake-up signal.
#[derive(Clone)]
pub(super) struct LockWaits {
    waiting: Arc<Mutex<HashMap<LockWaitId, Deliver>>>,
    wake: mpsc::UnboundedSender<()>,
}

impl LockWaits {
    /// A registry and the receiver its pump listens on.
    pub(super) fn new() -> (LockWaits, mpsc::UnboundedReceiver<()>) {
        let (wake, woken) = mpsc::unbounded();
        let waits = LockWaits {
            waiting: Arc::new(Mutex::new(HashMap::new())),
            wake,
        };
        (waits, woken)
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<LockWaitId, Deliver>> {
        // A panic while holding this lock cannot leave the map half-updated (single
        // insert/remove calls), so a poisoned lock is still usable.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers how to answer the parked request `id`; call it under the cluster lock
    /// that parked the request.
    pub(super) fn register(&self, id: LockWaitId, deliver: Deliver) {
        self.waiting().insert(id, deliver);
        // The pump may be idle; a closed channel means the server stopped.
        let _ = self.wake.unbounded_send(());
    }

    /// Forgets `id` (its caller went away); `true` if it was still waiting, in which case
    /// the caller cancels the engine's wait too.
    pub(super) fn forget(&self, id: LockWaitId) -> bool {
        self.waiting().remove(&id).is_some()
    }

    /// Whether `id` still waits for its answer.
    pub(super) fn is_waiting(&self, id: LockWaitId) -> bool {
        self.waiting().contains_key(&id)
    }

    fn is_empty(&self) -> bool {
        self.waiting().is_empty()
    }

    fn take(&self, id: LockWaitId) -> Option<Deliver> {
        self.waiting().remove(&id)
    }
}

/// Polls the engine's lock waits while any request is parked and delivers their answers.
/// Runs until the server stops (it holds a [`LockWaits`] handle itself, so the wake-up
/// channel never closes first).
pub(super) async fn pump<R: Runtime>(
    runtime: R,
    cluster: SharedCluster,
    waits: LockWaits,
    mut woken: mpsc::UnboundedReceiver<()>,
) {
    loop {
        if waits.is_empty() {
            if woken.next().await.is_none() {
                return;
            }
            continue;
        }
        let next = cluster.lock().next_lock_wait_deadline();
        let now = now_ms();
        let wait = next.map_or(TICK, |at| {
            Duration::from_millis(at.saturating_sub(now)).min(TICK)
        });
        if !wait.is_zero() {
            // A new registration cuts the sleep short: its deadline may be the earliest.
            let sleep = pin!(runtime.sleep(wait));
            if let Either::Right((None, _)) = select(sleep, woken.next()).await {
                return;
            }
        }
        let answers = cluster.lock().poll_lock_waits(now_ms());
        for (id, answer) in answers {
            if let Some(deliver) = waits.take(id) {
                deliver(answer);
            }
        }
    }
}
