//! Multi-region operations built from [`Locate`] and [`RegionRpc`]:
//!
//! - [`SingleKey`]: one request for the region holding one key.
//! - [`MultiKey`]: items (keys, pairs) grouped by region, split into batches by count and
//!   size, sent concurrently (bounded), with only the failed batches re-routed when a region
//!   changes under them.
//! - [`RangeWalk`]: a range visited region by region, forward or backward, one request per
//!   region, stopping when the plan says it has enough.
//!
//! The request contents come from small plan traits, so RawKV and transactional operations
//! share the routing and retry logic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::backoff::Backoffer;
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::machine::{
    ChildId, ChildStep, Children, Cx, EffectId, LocateQuery, Machine, Outcome, Step,
};
use crate::ready;
use crate::region::Region;
use crate::request::{Locate, RegionRpc, RegionRpcResult, RpcOptions};
use crate::rpc::{TikvRequest, TikvResponse};

/// Sends one request to the region holding a key, re-locating it as often as the region moves.
#[derive(Debug)]
pub struct SingleKey {
    key: Key,
    options: RpcOptions,
    state: SingleState,
}

// One per operation and moved rarely; boxing the smaller variant too would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum SingleState {
    /// Finding the region; the request waits here.
    Locating(Locate, TikvRequest),
    Sending(Box<RegionRpc>),
    Done,
}

impl SingleKey {
    /// Sends `request` (whose key is `key`) to the region holding `key`, retrying within the
    /// context's budget.
    pub fn new(key: Key, request: TikvRequest, options: RpcOptions) -> Self {
        let locate = Locate::new(LocateQuery::Key(key.clone()));
        SingleKey {
            key,
            options,
            state: SingleState::Locating(locate, request),
        }
    }

    fn finish(&mut self, result: Result<TikvResponse, Error>) -> Step<Result<TikvResponse, Error>> {
        self.state = SingleState::Done;
        Step::Done(result)
    }
}

impl Machine for SingleKey {
    type Output = Result<TikvResponse, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                SingleState::Done => return Step::Wait,
                SingleState::Locating(locate, _) => {
                    let region = match ready!(locate.poll(cx)) {
                        Ok(region) => region,
                        Err(e) => return self.finish(Err(e)),
                    };
                    let SingleState::Locating(_, request) =
                        std::mem::replace(&mut self.state, SingleState::Done)
                    else {
                        return Step::Wait; // matched just above
                    };
                    let rpc = RegionRpc::new(region, request, self.options);
                    self.state = SingleState::Sending(Box::new(rpc));
                }
                SingleState::Sending(rpc) => match ready!(rpc.poll(cx)) {
                    RegionRpcResult::Response(r) => return self.finish(Ok(*r)),
                    RegionRpcResult::Failed(e) => return self.finish(Err(e)),
                    RegionRpcResult::Relocate => {
                        let SingleState::Sending(rpc) =
                            std::mem::replace(&mut self.state, SingleState::Done)
                        else {
                            return Step::Wait; // matched just above
                        };
                        let locate = Locate::new(LocateQuery::Key(self.key.clone()));
                        self.state = SingleState::Locating(locate, rpc.into_request());
                    }
                },
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            SingleState::Locating(l, _) => l.handle(cx, id, outcome),
            SingleState::Sending(r) => r.handle(cx, id, outcome),
            SingleState::Done => {}
        }
    }
}

/// Limits on one batch request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most items per request.
    pub max_items: usize,
    /// Most bytes (by [`BatchPlan::size`]) per request; a batch closes once it reaches this.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// No limit: one request per region.
    pub const UNLIMITED: BatchLimits = BatchLimits {
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// How a batch operation turns a region's items into a request.
pub trait BatchPlan {
    /// One unit of work: a key, or a key with its value.
    type Item: Clone + std::fmt::Debug;

    /// The key that routes the item.
    fn key(item: &Self::Item) -> &Key;

    /// The item's size for [`BatchLimits::max_bytes`].
    fn size(item: &Self::Item) -> usize;

    /// The request for one batch of items of one region.
    fn build(&self, items: &[Self::Item]) -> TikvRequest;

    /// Whether `item` still needs a request to `region` (by default, always). An item whose
    /// work the region already shows done (a split key that starts it) is dropped, never
    /// sent.
    fn needed(_region: &Region, _item: &Self::Item) -> bool {
        true
    }
}

/// A batch plan whose items are bare keys, sized by their length: implement this and
/// [`BatchPlan`] comes with it.
pub trait KeyBatchPlan {
    /// The request for one batch of keys of one region.
    fn build_keys(&self, keys: &[Key]) -> TikvRequest;
}

impl<T: KeyBatchPlan> BatchPlan for T {
    type Item = Key;
    fn key(item: &Key) -> &Key {
        item
    }
    fn size(item: &Key) -> usize {
        item.len()
    }
    fn build(&self, items: &[Key]) -> TikvRequest {
        self.build_keys(items)
    }
}

/// Routes items by region, and sends one request per batch, concurrently.
#[derive(Debug)]
pub struct MultiKey<P: BatchPlan> {
    plan: P,
    limits: BatchLimits,
    options: RpcOptions,
    unrouted: Vec<P::Item>,
    locating: Option<Locate>,
    ready: VecDeque<(Arc<Region>, Vec<P::Item>)>,
    running: Children<RegionRpc>,
    /// The items of each running batch.
    items: BTreeMap<ChildId, Vec<P::Item>>,
    done: Vec<(Vec<P::Item>, TikvResponse)>,
    finished: bool,
}

impl<P: BatchPlan> MultiKey<P> {
    /// Sends `items` through `plan`, retrying within the context's budget (shared by every
    /// batch: one operation, one budget).
    pub fn new(plan: P, items: Vec<P::Item>, limits: BatchLimits, options: RpcOptions) -> Self {
        MultiKey {
            plan,
            limits,
            options,
            unrouted: items,
            locating: None,
            ready: VecDeque::new(),
            running: Children::new(),
            items: BTreeMap::new(),
            done: Vec::new(),
            finished: false,
        }
    }

    /// Groups unrouted items by the cached regions; the first miss starts a `Locate`.
    fn route(&mut self, cx: &mut Cx<'_>) {
        let unrouted = std::mem::take(&mut self.unrouted);
        let grouped = cx.regions.group_by_region(unrouted, P::key, cx.now);
        let missing = grouped.missing;
        for (region, mut items) in grouped.groups {
            items.retain(|item| P::needed(&region, item));
            self.split_into_batches(region, items);
        }
        if let Some(first) = missing.first() {
            let query = LocateQuery::Key(P::key(first).clone());
            self.locating = Some(Locate::new(query));
        }
        self.unrouted = missing;
    }

    fn split_into_batches(&mut self, region: Arc<Region>, items: Vec<P::Item>) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for item in items {
            let size = P::size(&item);
            if !batch.is_empty()
                && (batch.len() >= self.limits.max_items || bytes >= self.limits.max_bytes)
            {
                self.ready
                    .push_back((region.clone(), std::mem::take(&mut batch)));
                bytes = 0;
            }
            bytes += size;
            batch.push(item);
        }
        if !batch.is_empty() {
            self.ready.push_back((region, batch));
        }
    }

    /// Ends the operation with `error`; outstanding effects of other batches are abandoned
    /// (their outcomes, if they arrive, are dropped).
    fn fail(&mut self, error: Error) -> Step<<Self as Machine>::Output> {
        self.finished = true;
        self.running.clear();
        self.locating = None;
        Step::Done(Err(error))
    }
}

impl<P: BatchPlan> Machine for MultiKey<P> {
    type Output = Result<Vec<(Vec<P::Item>, TikvResponse)>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            if self.finished {
                return Step::Wait;
            }
            if self.locating.is_none() && !self.unrouted.is_empty() {
                self.route(cx);
            }
            if let Some(locate) = self.locating.as_mut() {
                match locate.poll(cx) {
                    Step::Effect(e) => return Step::Effect(e),
                    // Cached by `Locate`; route again.
                    Step::Done(Ok(_region)) => {
                        self.locating = None;
                        continue;
                    }
                    Step::Done(Err(e)) => return self.fail(e),
                    Step::Wait => {}
                }
            }
            while self.running.len() < cx.config.region_concurrency.max(1) {
                let Some((region, items)) = self.ready.pop_front() else {
                    break;
                };
                let request = self.plan.build(&items);
                let child = self
                    .running
                    .push(RegionRpc::new(region, request, self.options));
                self.items.insert(child, items);
            }
            match self.running.poll(cx) {
                ChildStep::Effect(e) => return Step::Effect(e),
                ChildStep::Done(child, _, result) => {
                    let items = self.items.remove(&child).unwrap_or_default();
                    match result {
                        RegionRpcResult::Response(r) => self.done.push((items, *r)),
                        RegionRpcResult::Relocate => self.unrouted.extend(items),
                        RegionRpcResult::Failed(e) => return self.fail(e),
                    }
                    continue;
                }
                ChildStep::Wait | ChildStep::Empty => {}
            }
            let idle = self.running.is_empty() && self.ready.is_empty() && self.locating.is_none();
            if idle && self.unrouted.is_empty() {
                self.finished = true;
                return Step::Done(Ok(std::mem::take(&mut self.done)));
            }
            if idle {
                continue; // re-route what came back
            }
            return Step::Wait;
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        if self.running.owns(id) {
            self.running.handle(cx, id, outcome);
        } else if let Some(l) = self.locating.as_mut() {
            l.handle(cx, id, outcome);
        }
    }
}

/// How a range operation visits regions.
pub trait RangePlan {
    /// What the walk produces.
    type Output;

    /// The request for the part `part` of the range that `region` holds.
    fn build(&mut self, region: &Region, part: &KeyRange) -> TikvRequest;

    /// Takes one region's response; `Ok(true)` to continue with the next region.
    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool, Error>;

    /// The result, once the walk ends.
    fn finish(self) -> Self::Output;

    /// A region's request failed for good (`error`, after the routing retries): by default
    /// the walk fails; a plan for which that failure means the region needs nothing (a
    /// flashback finding the region not prepared) returns `Ok(true)` to go on.
    fn on_region_failure(&mut self, _region: &Region, error: Error) -> Result<bool, Error> {
        Err(error)
    }
}

/// Visits the regions of a range one at a time, forward or backward.
#[derive(Debug)]
pub struct RangeWalk<P: RangePlan> {
    plan: Option<P>,
    range: KeyRange,
    reverse: bool,
    options: RpcOptions,
    /// The budget of the current region step: each region gets the whole of the context's
    /// budget afresh, as each `next()` of a client-go scanner does.
    step: Option<Backoffer>,
    /// Forward: the next start key. Reverse: the next (exclusive) end key, empty = +inf.
    cursor: Key,
    state: WalkState,
}

// One per operation and moved rarely (see `SingleState`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum WalkState {
    Locating(Locate),
    Sending(Box<RegionRpc>),
    Done,
}

impl<P: RangePlan> RangeWalk<P> {
    /// Walks `range` (reverse: from its end down to its start) with `plan`.
    pub fn new(plan: P, range: KeyRange, reverse: bool, options: RpcOptions) -> Self {
        let cursor = if reverse {
            range.end().clone()
        } else {
            range.start().clone()
        };
        let mut walk = RangeWalk {
            plan: Some(plan),
            range,
            reverse,
            options,
            step: None,
            cursor,
            state: WalkState::Done,
        };
        walk.state = WalkState::Locating(Locate::new(walk.query()));
        walk
    }

    fn query(&self) -> LocateQuery {
        if self.reverse {
            LocateQuery::EndKey(self.cursor.clone())
        } else {
            LocateQuery::Key(self.cursor.clone())
        }
    }

    /// The part of the range the walk still has to visit.
    fn remaining(&self) -> KeyRange {
        if self.reverse {
            KeyRange::new(self.range.start().clone(), self.cursor.clone())
        } else {
            KeyRange::new(self.cursor.clone(), self.range.end().clone())
        }
    }

    /// Moves the cursor past `region`; `false` when the range is exhausted.
    fn advance(&mut self, region: &Region) -> bool {
        if self.reverse {
            let start = region.range.start();
            if start.is_empty() || start <= self.range.start() {
                return false;
            }
            self.cursor = start.clone();
        } else {
            let end = region.range.end();
            if end.is_empty() || (!self.range.is_unbounded() && end >= self.range.end()) {
                return false;
            }
            self.cursor = end.clone();
        }
        true
    }

    fn finish(&mut self, error: Option<Error>) -> Step<<Self as Machine>::Output> {
        self.state = WalkState::Done;
        match (error, self.plan.take()) {
            (Some(e), _) => Step::Done(Err(e)),
            (None, Some(plan)) => Step::Done(Ok(plan.finish())),
            (None, None) => Step::Wait,
        }
    }

    /// Polls the current step within its own budget.
    fn poll_step(&mut self, cx: &mut Cx<'_>) -> Step<Walked> {
        let step = self.step.get_or_insert_with(|| cx.backoff.renewed());
        let mut cx = cx.with_backoff(step);
        let cx = &mut cx;
        match &mut self.state {
            WalkState::Done => Step::Wait,
            WalkState::Locating(locate) => {
                let region = match ready!(locate.poll(cx)) {
                    Ok(region) => region,
                    Err(e) => return Step::Done(Walked::Failed(e)),
                };
                let Some(part) = region.range.intersect(&self.remaining()) else {
                    // The located region does not overlap what is left: nothing left.
                    return Step::Done(Walked::End);
                };
                let Some(plan) = self.plan.as_mut() else {
                    return Step::Wait;
                };
                let request = plan.build(&region, &part);
                let rpc = RegionRpc::new(region, request, self.options);
                self.state = WalkState::Sending(Box::new(rpc));
                Step::Done(Walked::Next)
            }
            WalkState::Sending(rpc) => match ready!(rpc.poll(cx)) {
                result @ (RegionRpcResult::Response(_) | RegionRpcResult::Failed(_)) => {
                    let region = rpc.region().clone();
                    let Some(plan) = self.plan.as_mut() else {
                        return Step::Wait;
                    };
                    let verdict = match result {
                        RegionRpcResult::Response(response) => plan.absorb(&region, *response),
                        RegionRpcResult::Failed(e) => plan.on_region_failure(&region, e),
                        RegionRpcResult::Relocate => return Step::Wait, // excluded above
                    };
                    let more = match verdict {
                        Ok(more) => more,
                        Err(e) => return Step::Done(Walked::Failed(e)),
                    };
                    if !more || !self.advance(&region) {
                        return Step::Done(Walked::End);
                    }
                    // The next region starts with a fresh budget.
                    self.step = None;
                    self.state = WalkState::Locating(Locate::new(self.query()));
                    Step::Done(Walked::Next)
                }
                RegionRpcResult::Relocate => {
                    self.state = WalkState::Locating(Locate::new(self.query()));
                    Step::Done(Walked::Next)
                }
            },
        }
    }
}

/// Where one step of a [`RangeWalk`] left it.
#[derive(Debug)]
enum Walked {
    /// Moved to its next state (poll again).
    Next,
    /// The walk is over.
    End,
    /// The walk failed.
    Failed(Error),
}

impl<P: RangePlan> Machine for RangeWalk<P> {
    type Output = Result<P::Output, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            if matches!(self.state, WalkState::Done) && self.plan.is_none() {
                return Step::Wait;
            }
            match ready!(self.poll_step(cx)) {
                Walked::Failed(e) => return self.finish(Some(e)),
                Walked::End => return self.finish(None),
                Walked::Next => {}
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        let Some(step) = self.step.as_mut() else {
            return;
        };
        let mut cx = cx.with_backoff(step);
        match &mut self.state {
            WalkState::Locating(l) => l.handle(&mut cx, id, outcome),
            WalkState::Sending(r) => r.handle(&mut cx, id, outcome),
            WalkState::Done => {}
        }
    }
}

#[cfg(test)]
mod tests;
