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

use std::collections::{BTreeMap, BTreeSet};

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

/// Both tables, keyed by start ts, and an index of their entries by last update for
/// eviction (a full sweep per insert made the mock slow down as commits piled up: tens of
/// thousands of entries live for 30 s under load).
#[derive(Clone, Debug, Default)]
pub(crate) struct TxnStatusCache {
    normal: BTreeMap<u64, Entry>,
    large: BTreeMap<u64, Entry>,
    /// `(updated_ms, is_large, start_ts)` of every entry of both tables.
    by_age: BTreeSet<(u64, bool, u64)>,
}

impl TxnStatusCache {
    fn table(&mut self, large: bool) -> &mut BTreeMap<u64, Entry> {
        if large {
            &mut self.large
        } else {
            &mut self.normal
        }
    }

    /// Sets the entry of `start_ts` in one table, keeping the age index in step.
    fn put(&mut self, large: bool, start_ts: u64, entry: Entry) {
        if let Some(old) = self.table(large).insert(start_ts, entry) {
            self.by_age.remove(&(old.updated_ms, large, start_ts));
        }
        self.by_age.insert((entry.updated_ms, large, start_ts));
    }

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
                let replace = match self.large.get(&start_ts) {
                    Some(e) => matches!(
                        e.state,
                        CachedTxnState::Ongoing { min_commit_ts: old } if min_commit_ts > old
                    ),
                    None => true,
                };
                if replace {
                    self.put(true, start_ts, entry);
                }
            }
            _ => {
                // Normal table: an ongoing entry may be finalised, a final one stays.
                if self
                    .normal
                    .get(&start_ts)
                    .is_none_or(|e| !e.state.is_final())
                {
                    self.put(false, start_ts, entry);
                }
                // A large entry learns the final state too (TiKV: "more up-to-date").
                if self
                    .large
                    .get(&start_ts)
                    .is_some_and(|e| !e.state.is_final())
                {
                    self.put(true, start_ts, entry);
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
        if let Some(old) = self.large.remove(&start_ts) {
            self.by_age.remove(&(old.updated_ms, true, start_ts));
        }
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

    /// Drops every entry not updated for more than `KEEP_MS` before `now_ms`, oldest first.
    fn evict(&mut self, now_ms: u64) {
        while let Some(&(updated_ms, large, start_ts)) = self.by_age.first() {
            if updated_ms.saturating_add(KEEP_MS) >= now_ms {
                break;
            }
            self.by_age.pop_first();
            self.table(large).remove(&start_ts);
        }
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

    #[test]
    fn an_updated_entry_lives_from_its_last_update_and_the_age_index_stays_in_step() {
        let mut c = TxnStatusCache::default();
        let ongoing = |m| CachedTxnState::Ongoing { min_commit_ts: m };
        c.upsert(10, ongoing(20), 0);
        c.upsert(10, ongoing(25), 20_000);
        c.upsert(50, ongoing(50), 0);
        // 31 s after the first update, 11 s after the second: only the stale one goes.
        c.insert_committed(60, 61, 31_000);
        assert_eq!(c.get(10), Some(ongoing(25)));
        assert_eq!(c.get(50), None);
        c.remove_large(10);
        assert_eq!(c.get(10), None);
        assert_eq!(c.by_age.len(), c.normal.len() + c.large.len());
        // Many commits: each insert evicts only what aged out (no full sweep needed).
        for ts in 100..10_100 {
            c.insert_committed(ts, ts + 1, ts * 10);
        }
        assert!(c.normal.len() <= 3_001, "{}", c.normal.len());
        assert_eq!(c.by_age.len(), c.normal.len() + c.large.len());
    }
}
