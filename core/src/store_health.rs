//! Store health as TiKV reports it: the slow score and load each store piggybacks on
//! BatchCommands responses (`HealthFeedback`), kept per store for replica selection.
//!
//! Reports can arrive out of order (several streams per store, each with its own receive
//! task); a report older than the one kept is dropped, judged by the feedback sequence
//! number TiKV stamps on them.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::id_map::IdMap;
use crate::region::StoreId;

/// What a store last said about its health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// TiKV's slow score (1 = healthy, up to 100).
    pub slow_score: i32,
    /// Sequence number of the feedback, to order reports.
    pub feedback_seq_no: u64,
    /// TiKV's transport-layer load (its gRPC thread busyness).
    pub transport_layer_load: u64,
}

/// The latest health report of every store; shared by the client's streams and its replica
/// selection (internally locked, briefly, per call).
#[derive(Debug, Default)]
pub struct HealthBoard {
    reports: RwLock<IdMap<StoreHealth>>,
}

impl HealthBoard {
    /// An empty board.
    pub fn new() -> Self {
        HealthBoard::default()
    }

    // A lock poisoned by a panic elsewhere still guards valid reports.
    fn read(&self) -> RwLockReadGuard<'_, IdMap<StoreHealth>> {
        self.reports.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IdMap<StoreHealth>> {
        self.reports.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `report` from store `store_id` unless a newer one is already kept; returns
    /// whether it was recorded.
    pub fn record(&self, store_id: StoreId, report: StoreHealth) -> bool {
        let mut reports = self.write();
        let newer = reports
            .get(&store_id)
            .is_none_or(|kept| kept.feedback_seq_no <= report.feedback_seq_no);
        if newer {
            reports.insert(store_id, report);
        }
        newer
    }

    /// The latest report of store `store_id`, if it sent any.
    pub fn get(&self, store_id: StoreId) -> Option<StoreHealth> {
        self.read().get(&store_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: u64, score: i32) -> StoreHealth {
        StoreHealth {
            slow_score: score,
            feedback_seq_no: seq,
            transport_layer_load: 0,
        }
    }

    #[test]
    fn a_late_older_report_does_not_replace_a_newer_one() {
        let board = HealthBoard::new();
        assert_eq!(board.get(1), None);
        assert!(board.record(1, report(5, 80)));
        assert!(!board.record(1, report(4, 1)), "older, from another stream");
        assert_eq!(board.get(1), Some(report(5, 80)));
        assert!(board.record(1, report(6, 1)));
        assert_eq!(board.get(1).map(|h| h.slow_score), Some(1));
        assert!(board.record(2, report(1, 3)), "stores are apart");
        assert_eq!(board.get(1).map(|h| h.feedback_seq_no), Some(6));
    }
}
