//! Splitting and scattering regions (client-go's `KVStore.SplitRegions`,
//! `WaitScatterRegionFinish`, `CheckRegionInScattering`).
//!
//! **Split** goes through TiKV, as client-go does: the keys are grouped by the region holding
//! them, a key that already starts its region is dropped (that split exists), and each region
//! gets `SplitRegion` requests of at most [`SPLIT_BATCH_LIMIT`] keys, concurrently. A region
//! error regroups the batch's keys against fresh regions (the plan machinery's routing). TiKV
//! answers with the resulting regions, the original one last (it keeps the right-most part):
//! the others are the new regions.
//!
//! **Scatter** is PD's (`ScatterRegion`, driven by the driver); whether a scatter is still
//! running is read from the region's operator ([`scatter_progress`]).

use tikv_proto::{kvrpcpb, pdpb};

use crate::error::Error;
use crate::key::Key;
use crate::machine::{Cx, EffectId, Machine, Outcome, Step};
use crate::plan::{BatchLimits, BatchPlan, MultiKey};
use crate::ready;
use crate::region::{Region, RegionId};
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};

/// Most split keys in one request (client-go's `splitBatchRegionLimit`).
pub const SPLIT_BATCH_LIMIT: usize = 2048;

/// The description PD gives the operators of `ScatterRegion`.
pub const SCATTER_OPERATOR: &str = "scatter-region";

/// Batch plan: `SplitRegion` of one region's keys.
#[derive(Debug)]
pub struct SplitPlan {
    raw: bool,
}

impl BatchPlan for SplitPlan {
    type Item = Key;

    fn key(item: &Key) -> &Key {
        item
    }

    fn size(item: &Key) -> usize {
        item.len()
    }

    fn build(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::SplitRegion(kvrpcpb::SplitRegionRequest {
            split_keys: items.iter().map(Key::to_bytes).collect(),
            is_raw_kv: self.raw,
            ..Default::default()
        })
    }

    /// A key that starts its region is a split already made.
    fn needed(region: &Region, item: &Key) -> bool {
        region.range.start() != item
    }
}

/// Splits the regions holding `keys` (stored keys) so that each key starts a region; the
/// output is the ids of the regions the splits created, in key order per request.
#[derive(Debug)]
pub struct SplitRegions {
    split: MultiKey<SplitPlan>,
    done: bool,
}

impl SplitRegions {
    /// Splits at `keys` (stored keys, transactional unless `raw`). Duplicates are dropped
    /// (TiKV refuses a request that repeats a key).
    pub fn new(mut keys: Vec<Key>, raw: bool) -> Self {
        keys.sort();
        keys.dedup();
        let limits = BatchLimits {
            max_items: SPLIT_BATCH_LIMIT,
            max_bytes: usize::MAX,
        };
        let options = RpcOptions {
            // A split applied twice is refused as a region error, never applied twice.
            idempotent: true,
            ..RpcOptions::READ
        };
        SplitRegions {
            split: MultiKey::new(SplitPlan { raw }, keys, limits, options),
            done: false,
        }
    }

    fn new_regions(replies: Vec<(Vec<Key>, TikvResponse)>) -> Result<Vec<RegionId>, Error> {
        let mut ids = Vec::new();
        for (keys, reply) in replies {
            let TikvResponse::SplitRegion(r) = reply else {
                return Err(Error::KeyError {
                    key: keys.first().cloned().unwrap_or_default(),
                    message: format!("SplitRegion answered with {}", reply.method_name()),
                });
            };
            // The last region is the original one, which kept the right-most part.
            let made = r.regions.len().saturating_sub(1);
            ids.extend(r.regions.iter().take(made).map(|region| region.id));
        }
        Ok(ids)
    }
}

impl Machine for SplitRegions {
    type Output = Result<Vec<RegionId>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        if self.done {
            return Step::Wait;
        }
        let replies = ready!(self.split.poll(cx));
        self.done = true;
        Step::Done(replies.and_then(Self::new_regions))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        self.split.handle(cx, id, outcome);
    }
}

/// How PD scatters regions (PD's `ScatterRegion` options; client-go's `WithGroup`,
/// `WithRetry`, `WithSkipStoreLimit`).
///
/// ```
/// use tikv_core::split::ScatterOptions;
///
/// let options = ScatterOptions::default().with_group("table-42").with_retry_limit(3);
/// assert_eq!(options.group.as_deref(), Some("table-42"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScatterOptions {
    /// Regions of one group are spread together (client-go passes a table id).
    pub group: Option<String>,
    /// How often PD retries a region it could not place (0: PD's default).
    pub retry_limit: u64,
    /// Ignore the stores' scheduling limits.
    pub skip_store_limit: bool,
}

impl ScatterOptions {
    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets PD's retry limit.
    pub fn with_retry_limit(mut self, limit: u64) -> Self {
        self.retry_limit = limit;
        self
    }

    /// Ignores the stores' limits.
    pub fn with_skip_store_limit(mut self, skip: bool) -> Self {
        self.skip_store_limit = skip;
        self
    }

    /// PD's request for `regions`.
    pub fn request(&self, regions: &[RegionId]) -> pdpb::ScatterRegionRequest {
        pdpb::ScatterRegionRequest {
            regions_id: regions.to_vec(),
            group: self.group.clone().unwrap_or_default(),
            retry_limit: self.retry_limit,
            skip_store_limit: self.skip_store_limit,
            ..Default::default()
        }
    }
}

/// Where a region's scatter stands, from PD's `GetOperator` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterProgress {
    /// A scatter operator is running.
    Running,
    /// No scatter is running: it finished (successfully, timed out, was cancelled or
    /// replaced: PD no longer moves the region), or the region has another operator or none.
    Finished,
}

/// Reads PD's `GetOperator` answer the way client-go's `WaitScatterRegionFinish` does: the
/// scatter is over unless the region's operator is a running `scatter-region`.
pub fn scatter_progress(r: &pdpb::GetOperatorResponse) -> ScatterProgress {
    let running = r.status == pdpb::OperatorStatus::Running as i32;
    if running && r.desc.as_ref() == SCATTER_OPERATOR.as_bytes() {
        ScatterProgress::Running
    } else {
        ScatterProgress::Finished
    }
}

#[cfg(test)]
mod tests;
