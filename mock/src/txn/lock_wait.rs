//! Pessimistic lock waiting and deadlock detection (TiKV's `storage/lock_manager/` and
//! `server/lock_manager/`), sans-IO.
//!
//! A `KvPessimisticLock` that meets another transaction's lock and has a `wait_timeout`
//! (0 = TiKV's default of 1 s, negative = no wait, positive = that many ms capped at the
//! default) parks here instead of answering. It ends in one of four ways, as in TiKV:
//! - the lock is released: the oldest waiter on the key (smallest start ts) gets a
//!   `WriteConflict` (reason `PessimisticRetry`) at once, so its client retries with a new
//!   `for_update_ts`; the other legacy waiters on the key get the same answer 20 ms later
//!   (`wake-up-delay-duration`). Requests in force-lock mode (`WakeUpModeForceLock`) are
//!   re-executed instead and may acquire the lock with a conflict;
//! - the timeout passes: `KeyIsLocked` with the lock that blocked it;
//! - waiting would close a cycle in the wait-for graph: `Deadlock` with the wait chain,
//!   at once (the first lock of a transaction never takes part in detection: a
//!   transaction holding no lock cannot be waited for);
//! - the front cancels it (the client went away).
//!
//! The engine has no clock: a front passes `now_ms` and asks for finished waits with
//! [`crate::Cluster::poll_lock_waits`] at or after [`crate::Cluster::next_lock_wait_deadline`].

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::deadlock::WaitForEntry;
use tikv_proto::kvrpcpb::{LockInfo, PessimisticLockRequest, PessimisticLockResponse};

use crate::codec::fingerprint64;

/// TiKV's `wait-for-lock-timeout` default: the default and the ceiling of a wait.
pub(crate) const DEFAULT_WAIT_MS: u64 = 1000;
/// TiKV's `wake-up-delay-duration` default.
pub(crate) const WAKE_UP_DELAY_MS: u64 = 20;

/// Identifies a parked `KvPessimisticLock` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockWaitId(pub u64);

/// How long a request may wait (`WaitTimeout::from_encoded`): `None` means no waiting.
pub(crate) fn wait_ms(encoded: i64) -> Option<u64> {
    match encoded {
        0 => Some(DEFAULT_WAIT_MS),
        t if t < 0 => None,
        // Positive and not above the ceiling.
        t => Some(
            u64::try_from(t)
                .unwrap_or(DEFAULT_WAIT_MS)
                .min(DEFAULT_WAIT_MS),
        ),
    }
}

/// The hash TiKV puts in `deadlock_key_hash` and wait-for entries (`Key::gen_hash`):
/// FarmHash's fingerprint of the raw key — client-go compares it with its own keys'
/// fingerprints to tell a deadlock its statement can retry.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    fingerprint64(key)
}

/// A parked request.
#[derive(Clone, Debug)]
pub(crate) struct Waiter {
    pub(crate) store_id: u64,
    pub(crate) start_ts: u64,
    pub(crate) key: Bytes,
    /// The transaction holding the lock we wait for (0: shared locks, woken when the last
    /// holder goes).
    pub(crate) lock_ts: u64,
    /// The transactions it waits for (every holder of shared locks): its wait-for edges.
    pub(crate) holders: Vec<u64>,
    pub(crate) lock_info: LockInfo,
    pub(crate) deadline_ms: u64,
    /// Takes part in deadlock detection (not the transaction's first lock).
    pub(crate) detect: bool,
    pub(crate) request: PessimisticLockRequest,
    /// Set when the lock was released: `(conflict_start_ts, conflict_commit_ts, at_ms)`.
    pub(crate) woken: Option<(u64, u64, u64)>,
}

/// All parked requests and the answers of finished ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct LockWaits {
    next_id: u64,
    pub(crate) waiters: BTreeMap<LockWaitId, Waiter>,
    pub(crate) finished: Vec<(LockWaitId, PessimisticLockResponse)>,
}

impl LockWaits {
    pub(crate) fn park(&mut self, w: Waiter) -> LockWaitId {
        self.next_id += 1;
        let id = LockWaitId(self.next_id);
        self.waiters.insert(id, w);
        id
    }

    /// Whether `start_ts` waiting for `lock_ts` on `key` closes a cycle; if so, TiKV's
    /// `(deadlock_key_hash, wait_chain)`: the edges from `lock_ts` back to `start_ts`, then
    /// the new edge.
    pub(crate) fn detect(
        &self,
        start_ts: u64,
        lock_ts: u64,
        key: &Bytes,
    ) -> Option<(u64, Vec<WaitForEntry>)> {
        // Edges waiter → holder, the first (oldest) waiter's key standing for the pair.
        let mut edges: BTreeMap<u64, BTreeMap<u64, Bytes>> = BTreeMap::new();
        for w in self.waiters.values().filter(|w| w.detect) {
            for &holder in &w.holders {
                edges
                    .entry(w.start_ts)
                    .or_default()
                    .entry(holder)
                    .or_insert_with(|| w.key.clone());
            }
        }
        if edges
            .get(&start_ts)
            .is_some_and(|m| m.contains_key(&lock_ts))
        {
            // Already known to wait for that transaction: no new edge, no new cycle.
            return None;
        }
        // Depth-first from the holder, remembering each vertex's predecessor.
        let mut pred: BTreeMap<u64, u64> = BTreeMap::new();
        let mut stack = vec![lock_ts];
        pred.insert(lock_ts, 0);
        while let Some(cur) = stack.pop() {
            let Some(next) = edges.get(&cur) else {
                continue;
            };
            for (&holder, k) in next {
                if holder == start_ts {
                    let entry = |txn: u64, wait_for: u64, key: &Bytes| WaitForEntry {
                        txn,
                        wait_for_txn: wait_for,
                        key_hash: key_hash(key),
                        key: key.clone(),
                        ..Default::default()
                    };
                    let mut chain = vec![entry(cur, holder, k)];
                    let mut v = cur;
                    while let Some(&p) = pred.get(&v) {
                        if p == 0 {
                            break;
                        }
                        // `edges[p][v]` exists: `v` was reached from `p`.
                        if let Some(k) = edges.get(&p).and_then(|m| m.get(&v)) {
                            chain.push(entry(p, v, k));
                        }
                        v = p;
                    }
                    chain.reverse();
                    let hash = key_hash(k);
                    chain.push(entry(start_ts, lock_ts, key));
                    return Some((hash, chain));
                }
                if let std::collections::btree_map::Entry::Vacant(e) = pred.entry(holder) {
                    e.insert(cur);
                    stack.push(holder);
                }
            }
        }
        None
    }
}
