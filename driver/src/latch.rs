//! Waiting for local latches: core's [`Latches`] table behind a lock, with a one-shot
//! wake-up per waiting commit. Runtime-neutral (no timers, no spawning).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::oneshot;
use tikv_core::latch::{LatchId, LatchState, Latches};
use tikv_core::{Key, Timestamp};

/// The latch table of one client.
#[derive(Debug)]
pub(crate) struct LatchTable {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    latches: Latches,
    /// Commits parked until their latches are theirs.
    wakers: HashMap<LatchId, oneshot::Sender<()>>,
}

/// Latches held (or asked for) by one commit; released when dropped, with the commit
/// timestamp if one was set.
#[derive(Debug)]
pub(crate) struct LatchGuard {
    table: Arc<LatchTable>,
    id: LatchId,
    commit_ts: Option<Timestamp>,
}

impl LatchTable {
    pub(crate) fn new(capacity: usize) -> Self {
        LatchTable {
            inner: Mutex::new(Inner {
                latches: Latches::new(capacity),
                wakers: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the table consistent (every method finishes
        // its bookkeeping before returning), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the latches of `keys` are the commit's, or it turns out stale. Dropping
    /// the future (or the guard) gives the latches back.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        start_ts: Timestamp,
        keys: impl IntoIterator<Item = Key>,
    ) -> (LatchGuard, LatchState) {
        let (id, mut state, mut parked) = {
            let mut inner = self.lock();
            let (id, state) = inner.latches.lock(start_ts, keys);
            let parked = (state == LatchState::Waiting).then(|| {
                let (tx, rx) = oneshot::channel();
                inner.wakers.insert(id, tx);
                rx
            });
            (id, state, parked)
        };
        let guard = LatchGuard {
            table: self.clone(),
            id,
            commit_ts: None,
        };
        while let Some(rx) = parked.take() {
            // A dropped sender (the table is gone) reads like a wake-up: ask again.
            let _ = rx.await;
            let mut inner = self.lock();
            state = inner.latches.state(id).unwrap_or(LatchState::Acquired);
            if state == LatchState::Waiting {
                let (tx, rx) = oneshot::channel();
                inner.wakers.insert(id, tx);
                parked = Some(rx);
            }
        }
        (guard, state)
    }
}

impl LatchGuard {
    /// The commit succeeded at `ts`: later commits that started before it are stale.
    pub(crate) fn committed_at(&mut self, ts: Timestamp) {
        self.commit_ts = Some(ts);
    }
}

impl Drop for LatchGuard {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.wakers.remove(&self.id);
        for woken in inner.latches.release(self.id, self.commit_ts) {
            if let Some(tx) = inner.wakers.remove(&woken) {
                let _ = tx.send(());
            }
        }
    }
}
