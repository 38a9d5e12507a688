//! TiKV's transaction status cache (`src/storage/txn/txn_status_cache.rs`): what a store
//! knows about recently finished transactions and about ongoing large (pipelined) ones.
//!
//! TiKV fills it from two sources:
//! - every successful command that learns a commit ts (commit, resolve lock with a commit
//!   ts, a check-txn-status or check-secondary-locks that finds the transaction committed,
//!   a 1PC prewrite) inserts `Committed`;
//! - `BroadcastTxnStatus` upserts whatever the client sends: the `min_commit_ts` of an
//!   ongoing pipelined transaction, or its final state.
//!
//! It keeps two tables: *large* entries (ongoing, `min_commit_ts > start_ts`) and *normal*
//! entries (everything else). A final state never goes back to ongoing, and an ongoing
//! large entry only moves forward. TiKV guarantees an entry lives at least 30 s; the mock
//! evicts exactly what is older than that, on each insert, so behaviour depends only on
//! the `now_ms` the caller passes.
//!
//! What reads it: a pessimistic prewrite of a transaction the cache knows is committed is
//! treated as a retried request (so it re-checks non-locked keys against the write column,
//! tikv#11187); TiKV's resolved-ts worker uses the large entries' `min_commit_ts` to keep
//! advancing past a pipelined transaction's locks.

use std::collections::BTreeMap;

/// TiKV's `CACHE_ITEMS_REQUIRED_KEEP_TIME` (the same for both tables).
pub(crate) const KEEP_MS: u64 = 30_000;

/// A transaction's state as the cache holds it (TiKV's `TxnState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedTxnState {
    /// Still running; readers may treat its locks as committing at or above this ts.
    Ongoing {
        /// The transaction's `min_commit_ts` (at least its start ts).
        min_commit_ts: u64,
    },
    /// Committed at `commit_ts`.
    Committed {
        /// The transaction's commit ts.
        commit_ts: u64,
    },
    /// Rolled back.
    RolledBack,
}

impl CachedTxnState {
    /// TiKV's `TxnState::from_ts`: a rollback flag wins, then a commit ts, else ongoing.
    pub(crate) fn from_ts(start_ts: u64, min_commit_ts: u64, commit_ts: u64, rb: bool) -> Self {
        if rb {
            CachedTxnState::RolledBack
        } else if commit_ts == 0 {
            CachedTxnState::Ongoing {
                min_commit_ts: start_ts.max(min_commit_ts),
            }
        } else {
            CachedTxnState::Committed { commit_ts }
        }
    }

    fn is_final(self) -> bool {
        !matches!(self, CachedTxnState::Ongoing { .. })
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: CachedTxnState,
    updated_ms: u64,
}

/// Both tables, keyed by start ts.
#[derive(Clone, Debug, Default)]
pub(crate) struct TxnStatusCache {
    normal: BTreeMap<u64, Entry>,
    large: BTreeMap<u64, Entry>,
}

impl TxnStatusCache {
    /// TiKV's `upsert`.
    pub(crate) fn upsert(&mut self, start_ts: u64, state: CachedTxnState, now_ms: u64) {
        self.evict(now_ms);
        let entry = Entry {
            state,
            updated_ms: now_ms,
        };
        match state {
            CachedTxnState::Ongoing { min_commit_ts } if min_commit_ts > start_ts => {
                // A large transaction: only a larger min_commit_ts replaces an ongoing
                // entry, and a final state is never overwritten by an ongoing one.
                match self.large.get_mut(&start_ts) {
                    Some(e) => {
                        if let CachedTxnState::Ongoing { min_commit_ts: old } = e.state {
                            if min_commit_ts > old {
                                *e = entry;
                            }
                        }
                    }
                    None => {
                        self.large.insert(start_ts, entry);
                    }
                }
            }
            _ => {
                // Normal table: an ongoing entry may be finalised, a final one stays.
                match self.normal.get_mut(&start_ts) {
                    Some(e) => {
                        if !e.state.is_final() {
                            *e = entry;
                        }
                    }
                    None => {
                        self.normal.insert(start_ts, entry);
                    }
                }
                // A large entry learns the final state too (TiKV: "more up-to-date").
                if let Some(e) = self.large.get_mut(&start_ts) {
                    if !e.state.is_final() {
                        *e = entry;
                    }
                }
            }
        }
    }

    /// A committed transaction learnt by a command (`insert_committed`).
    pub(crate) fn insert_committed(&mut self, start_ts: u64, commit_ts: u64, now_ms: u64) {
        self.upsert(start_ts, CachedTxnState::Committed { commit_ts }, now_ms);
    }

    /// Drops a finished large transaction (`remove_large_txn`).
    pub(crate) fn remove_large(&mut self, start_ts: u64) {
        self.large.remove(&start_ts);
    }

    /// TiKV's `get`: the large table first, it is the more up-to-date one.
    pub(crate) fn get(&self, start_ts: u64) -> Option<CachedTxnState> {
        self.large
            .get(&start_ts)
            .or_else(|| self.normal.get(&start_ts))
            .map(|e| e.state)
    }

    /// The commit ts if the normal table knows the transaction committed
    /// (`get_committed_no_promote`).
    pub(crate) fn committed(&self, start_ts: u64) -> Option<u64> {
        match self.normal.get(&start_ts)?.state {
            CachedTxnState::Committed { commit_ts } => Some(commit_ts),
            _ => None,
        }
    }

    fn evict(&mut self, now_ms: u64) {
        let fresh = |e: &Entry| e.updated_ms.saturating_add(KEEP_MS) >= now_ms;
        self.normal.retain(|_, e| fresh(e));
        self.large.retain(|_, e| fresh(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_are_never_overwritten_and_large_entries_only_advance() {
        let mut c = TxnStatusCache::default();
        let ongoing = |m| CachedTxnState::Ongoing { min_commit_ts: m };
        c.upsert(10, ongoing(20), 0);
        c.upsert(10, ongoing(15), 0);
        assert_eq!(c.get(10), Some(ongoing(20)));
        c.upsert(10, CachedTxnState::Committed { commit_ts: 30 }, 0);
        assert_eq!(c.get(10), Some(CachedTxnState::Committed { commit_ts: 30 }));
        assert_eq!(c.committed(10), Some(30));
        c.upsert(10, CachedTxnState::RolledBack, 0);
        assert_eq!(c.committed(10), Some(30));
        // An "ongoing" entry whose min_commit_ts is its start ts is a normal entry.
        c.upsert(40, ongoing(40), 0);
        assert_eq!(c.get(40), Some(ongoing(40)));
        assert_eq!(c.committed(40), None);
    }

    #[test]
    fn entries_live_for_the_keep_time_and_then_go() {
        let mut c = TxnStatusCache::default();
        c.insert_committed(10, 11, 1_000);
        c.insert_committed(20, 21, 1_000 + KEEP_MS);
        assert_eq!(c.committed(10), Some(11));
        c.insert_committed(30, 31, 1_001 + KEEP_MS);
        assert_eq!(c.committed(10), None);
        assert_eq!(c.committed(20), Some(21));
    }
}
