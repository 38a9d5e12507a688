//! Flashback: bring a key range back to how it was at an earlier timestamp (TiDB's
//! `FLASHBACK CLUSTER`, whose region-by-region RPC flow this is).
//!
//! Two walks over the range, region by region:
//!
//! 1. **Prepare** (`KvPrepareFlashbackToVersion` with a fresh `start_ts` and the target
//!    `version`): TiKV puts the region in the flashback state — every request but the
//!    flashback's own then fails with `FlashbackInProgress`, except reads below `start_ts` —
//!    rolls back every lock in the range, and writes a lock at the first key changed since
//!    `version`, the flashback's own "primary".
//! 2. **Flashback** (`KvFlashbackToVersion` with a fresh `commit_ts`): TiKV rewrites every key
//!    changed since `version` to its value at `version` (a put of the old value, or a delete),
//!    commits that first key, and takes the region out of the flashback state. A region that
//!    answers `FlashbackNotPrepared` had nothing to flash back (or finished already): it
//!    counts as done, as in TiDB.
//!
//! The caller gets both timestamps from TSO in between (the driver does).

use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::KeyRange;

use crate::plan::{RangePlan, RangeWalk};
use crate::region::Region;
use crate::region_error::FLASHBACK_NOT_PREPARED;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;

/// Which of the two walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashbackPhase {
    /// Lock the regions and their ranges (`KvPrepareFlashbackToVersion`).
    Prepare,
    /// Rewrite and release them (`KvFlashbackToVersion`) at this commit timestamp.
    Flashback(Timestamp),
}

/// Range plan: one flashback phase per region.
#[derive(Debug)]
pub struct FlashbackPlan {
    phase: FlashbackPhase,
    version: Timestamp,
    start_ts: Timestamp,
    regions: usize,
}

impl RangePlan for FlashbackPlan {
    type Output = usize;

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        let (start_key, end_key) = (part.start().to_bytes(), part.end().to_bytes());
        match self.phase {
            FlashbackPhase::Prepare => TikvRequest::KvPrepareFlashbackToVersion(
                kvrpcpb::PrepareFlashbackToVersionRequest {
                    start_key,
                    end_key,
                    start_ts: self.start_ts.as_u64(),
                    version: self.version.as_u64(),
                    ..Default::default()
                },
            ),
            FlashbackPhase::Flashback(commit_ts) => {
                TikvRequest::KvFlashbackToVersion(kvrpcpb::FlashbackToVersionRequest {
                    start_key,
                    end_key,
                    start_ts: self.start_ts.as_u64(),
                    commit_ts: commit_ts.as_u64(),
                    version: self.version.as_u64(),
                    ..Default::default()
                })
            }
        }
    }

    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool, Error> {
        let error = match response {
            TikvResponse::KvPrepareFlashbackToVersion(r) => r.error,
            TikvResponse::KvFlashbackToVersion(r) => r.error,
            other => format!("answered with {}", other.method_name()),
        };
        if !error.is_empty() {
            return Err(Error::KeyError {
                key: region.range.start().clone(),
                message: format!(
                    "flashback ({:?}) in region {}: {error}",
                    self.phase, region.id
                ),
            });
        }
        self.regions += 1;
        Ok(true)
    }

    fn finish(self) -> usize {
        self.regions
    }

    fn on_region_failure(&mut self, region: &Region, error: Error) -> Result<bool, Error> {
        let not_prepared = matches!(
            (&self.phase, &error),
            (FlashbackPhase::Flashback(_), Error::Region { message, .. })
                if message.contains(FLASHBACK_NOT_PREPARED)
        );
        if not_prepared {
            // Nothing changed there since the version, or this region is done already.
            let _ = region;
            self.regions += 1;
            return Ok(true);
        }
        Err(error)
    }
}

/// The `phase` of the flashback of `range` (stored keys) to `version`, identified by
/// `start_ts`, as a region walk whose output is the number of regions done.
pub fn flashback(
    range: KeyRange,
    version: Timestamp,
    start_ts: Timestamp,
    phase: FlashbackPhase,
) -> RangeWalk<FlashbackPlan> {
    let plan = FlashbackPlan {
        phase,
        version,
        start_ts,
        regions: 0,
    };
    let options = RpcOptions {
        // Both phases may be repeated: TiKV recognises its own lock and its own commit.
        idempotent: true,
        ..RpcOptions::READ
    };
    RangeWalk::new(plan, range, false, options)
}

#[cfg(test)]
mod tests {
    use tikv_proto::{errorpb, kvrpcpb};

    use super::*;
    use crate::testing::resp::{self, Sent};
    use crate::testing::{Harness, region};

    fn harness() -> Harness {
        let mut h = Harness::new(1).with_stores(2);
        h.cache(region(1, "", "m", &[1]));
        h.cache(region(2, "m", "", &[2]));
        h
    }

    const V: Timestamp = Timestamp::from_u64(100);
    const START: Timestamp = Timestamp::from_u64(200);
    const COMMIT: Timestamp = Timestamp::from_u64(300);

    #[test]
    fn prepare_visits_every_region_with_its_part_of_the_range() {
        let mut h = harness();
        let m = flashback(KeyRange::new("c", "x"), V, START, FlashbackPhase::Prepare);
        let out = h.run(m, |e| {
            let sent = Sent::of(e).expect("an RPC");
            let TikvRequest::KvPrepareFlashbackToVersion(r) = &sent.request else {
                panic!("{:?}", sent.request);
            };
            assert_eq!((r.version, r.start_ts), (100, 200));
            resp::Resp(kvrpcpb::PrepareFlashbackToVersionResponse::default()).ok()
        });
        assert_eq!(out.unwrap(), 2);
    }

    #[test]
    fn an_unprepared_region_counts_as_done_in_the_second_phase_only() {
        let not_prepared = || errorpb::Error {
            message: "not prepared".into(),
            flashback_not_prepared: Some(errorpb::FlashbackNotPrepared { region_id: 1 }),
            ..Default::default()
        };
        let mut h = harness();
        let m = flashback(
            KeyRange::new("c", "x"),
            V,
            START,
            FlashbackPhase::Flashback(COMMIT),
        );
        let out = h.run(m, |e| {
            let sent = Sent::of(e).expect("an RPC");
            if sent.region == 1 {
                resp::Resp(kvrpcpb::FlashbackToVersionResponse::default())
                    .region_error(not_prepared())
            } else {
                resp::Resp(kvrpcpb::FlashbackToVersionResponse::default()).ok()
            }
        });
        assert_eq!(out.unwrap(), 2);

        let mut h = harness();
        let m = flashback(KeyRange::new("c", "x"), V, START, FlashbackPhase::Prepare);
        let out = h.run(m, |_| {
            resp::Resp(kvrpcpb::PrepareFlashbackToVersionResponse::default())
                .region_error(not_prepared())
        });
        assert!(out.is_err());
    }

    #[test]
    fn a_storage_error_fails_the_phase() {
        let mut h = harness();
        let m = flashback(
            KeyRange::new("c", "d"),
            V,
            START,
            FlashbackPhase::Flashback(COMMIT),
        );
        let out = h.run(m, |_| {
            resp::Resp(kvrpcpb::FlashbackToVersionResponse {
                error: "Invalid transaction tso".into(),
                ..Default::default()
            })
            .ok()
        });
        let err = out.unwrap_err().to_string();
        assert!(err.contains("Invalid transaction tso"), "{err}");
    }
}
