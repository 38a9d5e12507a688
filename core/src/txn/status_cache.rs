//! The client-wide cache of decided transaction outcomes, shared by every lock resolution.
//!
//! Once TiKV has said a transaction committed (at some timestamp) or rolled back, that never
//! changes, so one `CheckTxnStatus` answers for every later lock of that transaction that any
//! operation of the client meets: a reader that finds a hundred locks of one crashed
//! transaction asks its primary once, and so does the next reader. Transactions still
//! running are never cached (their TTL and min-commit timestamp move).
//!
//! Bounded like client-go's `LockResolver.resolved` (2048 entries, oldest entry evicted
//! first). Internally locked, briefly, per call; a lock poisoned by a panic elsewhere still
//! guards a valid cache.
//!
//! It also collapses concurrent status checks of one transaction: a resolution about to ask
//! a primary [`claim`](TxnStatusCache::claim)s the check, and another one meeting the same
//! transaction meanwhile waits for the outcome instead of asking too (a crashed
//! transaction's locks are often met by many readers at once). A claim ends when its
//! [`CheckClaim`] is dropped, so a cancelled resolution never blocks the others.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::id_map::IdMap;
use crate::timestamp::Timestamp;
use crate::txn::lock::TxnStatus;

/// Decided transaction statuses by start timestamp, oldest evicted first.
#[derive(Debug)]
pub struct TxnStatusCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    statuses: IdMap<TxnStatus>,
    /// Insertion order, for eviction.
    order: VecDeque<u64>,
    /// Status checks in flight, by start ts: live while their claim is held.
    checking: IdMap<Weak<()>>,
}

/// A claim on checking one transaction's status; dropping it lets others check.
#[derive(Debug)]
pub struct CheckClaim {
    _live: Arc<()>,
}

impl Default for TxnStatusCache {
    fn default() -> Self {
        TxnStatusCache::new(TxnStatusCache::DEFAULT_CAPACITY)
    }
}

impl TxnStatusCache {
    /// client-go's `ResolvedCacheSize`.
    pub const DEFAULT_CAPACITY: usize = 2048;

    /// An empty cache holding at most `capacity` statuses (at least one).
    pub fn new(capacity: usize) -> Self {
        TxnStatusCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decided status of the transaction started at `start_ts`, if known.
    pub fn get(&self, start_ts: Timestamp) -> Option<TxnStatus> {
        self.lock().statuses.get(&start_ts.as_u64()).copied()
    }

    /// Remembers a decided status. A running transaction's status is ignored, and so is a
    /// second decision for a transaction already cached (the first one stands: TiKV cannot
    /// change a decided outcome).
    pub fn insert(&self, start_ts: Timestamp, status: TxnStatus) {
        if matches!(status, TxnStatus::Alive { .. }) {
            return;
        }
        let mut inner = self.lock();
        let id = start_ts.as_u64();
        if inner.statuses.contains_key(&id) {
            return;
        }
        inner.statuses.insert(id, status);
        inner.order.push_back(id);
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.statuses.remove(&oldest);
            }
        }
    }

    /// Claims the status check of the transaction started at `start_ts`: `None` while
    /// another resolution holds a live claim (wait for its outcome, then look again).
    pub fn claim(&self, start_ts: Timestamp) -> Option<CheckClaim> {
        let mut inner = self.lock();
        let id = start_ts.as_u64();
        if inner
            .checking
            .get(&id)
            .is_some_and(|w| w.strong_count() > 0)
        {
            return None;
        }
        if inner.checking.len() >= self.capacity {
            // Claims are dropped without telling the cache: sweep the dead ones now and
            // then, so the map stays as small as the checks in flight.
            inner.checking.retain(|_, w| w.strong_count() > 0);
        }
        let live = Arc::new(());
        inner.checking.insert(id, Arc::downgrade(&live));
        Some(CheckClaim { _live: live })
    }

    /// How many statuses are cached.
    pub fn len(&self) -> usize {
        self.lock().statuses.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(n: u64) -> Timestamp {
        Timestamp::compose(n, 0)
    }

    #[test]
    fn only_decided_statuses_are_kept_and_the_first_decision_stands() {
        let cache = TxnStatusCache::default();
        cache.insert(ts(1), TxnStatus::Alive { ttl_ms: 3000 });
        assert_eq!(
            cache.get(ts(1)),
            None,
            "a running transaction is not cached"
        );
        cache.insert(ts(1), TxnStatus::Committed(ts(2)));
        cache.insert(ts(1), TxnStatus::RolledBack);
        assert_eq!(cache.get(ts(1)), Some(TxnStatus::Committed(ts(2))));
        cache.insert(ts(3), TxnStatus::RolledBack);
        assert_eq!(cache.get(ts(3)), Some(TxnStatus::RolledBack));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_oldest_entry_goes_first() {
        let cache = TxnStatusCache::new(2);
        for n in 1..=3 {
            cache.insert(ts(n), TxnStatus::RolledBack);
        }
        assert_eq!(cache.get(ts(1)), None);
        assert_eq!(cache.get(ts(2)), Some(TxnStatus::RolledBack));
        assert_eq!(cache.get(ts(3)), Some(TxnStatus::RolledBack));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn one_check_per_transaction_at_a_time_until_its_claim_is_dropped() {
        let cache = TxnStatusCache::new(4);
        let first = cache.claim(ts(1)).expect("nobody checks yet");
        assert!(
            cache.claim(ts(1)).is_none(),
            "another check of the same transaction waits"
        );
        assert!(
            cache.claim(ts(2)).is_some(),
            "other transactions are independent"
        );
        drop(first);
        assert!(
            cache.claim(ts(1)).is_some(),
            "a dropped claim frees the check"
        );
        // Dead claims are swept once the map reaches the capacity.
        for n in 10..100 {
            drop(cache.claim(ts(n)));
        }
        assert!(cache.lock().checking.len() <= 5);
    }
}
