//! Operations on whole key ranges of transactional data, for operators and GC workers:
//!
//! - [`delete_range`] (client-go's `DeleteRangeTask`): `KvDeleteRange` region by region, each
//!   region's part of the range deleted through raft (or, with `notify_only`, only announced
//!   to observers such as TiFlash and CDC). The data goes without MVCC: no versions, no
//!   locks, no safe point — it is what TiDB does to dropped tables after GC lets it.
//! - [`DestroyRange`] (client-go's `UnsafeDestroyRange`): sent to **every store**, which drops
//!   the range from its engine directly, bypassing raft; used by GC after `DeleteRange` to
//!   reclaim space at once. Store-level: no region, no retry on region errors (TiKV reports
//!   none); a store that fails is named in the error and the call may simply be repeated.

use std::collections::BTreeMap;
use std::time::Duration;

use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::KeyRange;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::{RangePlan, RangeWalk};
use crate::region::{Region, Store, StoreId};
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};

/// How long one store may take to destroy a range (client-go's `unsafeDestroyRangeTimeout`).
pub const DESTROY_RANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Range plan: `KvDeleteRange` of each region's part.
#[derive(Debug)]
pub struct DeleteRangePlan {
    notify_only: bool,
    regions: usize,
}

impl RangePlan for DeleteRangePlan {
    type Output = usize;

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        TikvRequest::KvDeleteRange(kvrpcpb::DeleteRangeRequest {
            start_key: part.start().to_bytes(),
            end_key: part.end().to_bytes(),
            notify_only: self.notify_only,
            ..Default::default()
        })
    }

    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool, Error> {
        let TikvResponse::KvDeleteRange(r) = response else {
            return Err(Error::KeyError {
                key: region.range.start().clone(),
                message: format!("DeleteRange answered with {}", response.method_name()),
            });
        };
        if !r.error.is_empty() {
            return Err(Error::KeyError {
                key: region.range.start().clone(),
                message: format!("DeleteRange in region {}: {}", region.id, r.error),
            });
        }
        self.regions += 1;
        Ok(true)
    }

    fn finish(self) -> usize {
        self.regions
    }
}

/// Deletes `range` (stored keys) region by region, or with `notify_only` only announces the
/// deletion; the walk's output is the number of regions done.
pub fn delete_range(range: KeyRange, notify_only: bool) -> RangeWalk<DeleteRangePlan> {
    let plan = DeleteRangePlan {
        notify_only,
        regions: 0,
    };
    let options = RpcOptions {
        // Deleting what is already deleted changes nothing.
        idempotent: true,
        ..RpcOptions::READ
    };
    RangeWalk::new(plan, range, false, options)
}

/// Destroys a range of stored keys on every given store at once, and reports the stores that
/// failed (see the module docs).
#[derive(Debug)]
pub struct DestroyRange {
    range: KeyRange,
    /// Stores not asked yet.
    todo: Vec<Store>,
    /// Stores asked, by effect.
    asked: BTreeMap<EffectId, StoreId>,
    /// Stores that answered (successfully or not).
    answered: usize,
    failures: Vec<String>,
    done: bool,
}

impl DestroyRange {
    /// Destroys `range` (stored keys; both ends must be bounded: TiKV would crash on an
    /// empty key) on `stores` (tombstones are skipped).
    pub fn new(range: KeyRange, stores: Vec<Store>) -> Result<Self, Error> {
        if range.start().is_empty() || range.end().is_empty() {
            return Err(Error::InvalidArgument(format!(
                "unsafe destroy range needs both ends bounded, got {range}"
            )));
        }
        if range.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "empty or inverted range {range}"
            )));
        }
        let todo = stores
            .into_iter()
            .filter(|s| s.state != crate::region::StoreState::Tombstone)
            .collect();
        Ok(DestroyRange {
            range,
            todo,
            asked: BTreeMap::new(),
            answered: 0,
            failures: Vec::new(),
            done: false,
        })
    }

    fn request(&self) -> TikvRequest {
        TikvRequest::UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeRequest {
            start_key: self.range.start().to_bytes(),
            end_key: self.range.end().to_bytes(),
            ..Default::default()
        })
    }
}

impl Machine for DestroyRange {
    /// The number of stores that destroyed the range.
    type Output = Result<usize, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        if self.done {
            return Step::Wait;
        }
        if let Some(store) = self.todo.pop() {
            let id = cx.next_id();
            self.asked.insert(id, store.id);
            return Step::Effect(Effect::Rpc {
                id,
                store_id: store.id,
                address: store.address,
                request: Box::new(self.request()),
                timeout: DESTROY_RANGE_TIMEOUT,
            });
        }
        if !self.asked.is_empty() {
            return Step::Wait;
        }
        self.done = true;
        if self.failures.is_empty() {
            return Step::Done(Ok(self.answered));
        }
        self.failures.sort();
        Step::Done(Err(Error::KeyError {
            key: self.range.start().clone(),
            message: format!(
                "destroy range {} finished with errors: {}",
                self.range,
                self.failures.join("; ")
            ),
        }))
    }

    fn handle(&mut self, _cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        let Some(store) = self.asked.remove(&id) else {
            return;
        };
        self.answered += 1;
        let failure = match outcome {
            Outcome::Response(r) => match *r {
                TikvResponse::UnsafeDestroyRange(r) if r.error.is_empty() => r
                    .region_error
                    .map(|e| format!("region error {}", e.message)),
                TikvResponse::UnsafeDestroyRange(r) => Some(r.error),
                other => Some(format!("answered with {}", other.method_name())),
            },
            Outcome::RpcFailed { error, .. } => Some(error.to_string()),
            other => Some(format!("unexpected outcome {other:?}")),
        };
        if let Some(f) = failure {
            self.failures.push(format!("store {store}: {f}"));
        }
    }
}

#[cfg(test)]
mod tests;
