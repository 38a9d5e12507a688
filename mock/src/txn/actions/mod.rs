//! The per-key MVCC actions of TiKV's `src/storage/txn/actions/`: each reads the snapshot
//! ([`TxnStore`](super::store::TxnStore)) and buffers its changes in an
//! [`MvccTxn`](super::store::MvccTxn). Commands (`super::commands`) compose them.

pub(crate) mod check_txn_status;
pub(crate) mod cleanup;
pub(crate) mod commit;
pub(crate) mod pessimistic_lock;
pub(crate) mod prewrite;

/// TiKV's concurrency manager, reduced to what a single-threaded engine needs: the
/// largest timestamp any read (or read-like write check) has used. Async commit and 1PC
/// take their `min_commit_ts` above it so a committed value can never appear under a
/// snapshot that was already read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ConcurrencyManager {
    pub(crate) max_ts: u64,
}

impl ConcurrencyManager {
    /// `update_max_ts`: `u64::MAX` (an autocommit point get) never moves it.
    pub(crate) fn update_max_ts(&mut self, ts: u64) {
        if ts != super::types::TS_MAX {
            self.max_ts = self.max_ts.max(ts);
        }
    }
}
