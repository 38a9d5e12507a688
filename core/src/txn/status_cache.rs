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

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

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
}
