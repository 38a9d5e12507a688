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

use crate::backoff::Backoffer;
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::machine::{Cx, EffectId, LocateQuery, Machine, Outcome, Step};
use crate::region::Region;
use crate::request::{Locate, RegionRpc, RegionRpcResult, RpcOptions};
use crate::rpc::{TikvRequest, TikvResponse};

/// Sends one request to the region holding a key, re-locating it as often as the region moves.
#[derive(Debug)]
pub struct SingleKey {
    key: Key,
    request: TikvRequest,
    options: RpcOptions,
    state: SingleState,
}

// One per operation and moved rarely; boxing the smaller variant too would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum SingleState {
    Locating(Locate),
    Sending(Box<RegionRpc>),
    Done,
}

impl SingleKey {
    /// Sends `request` (whose key is `key`) to the region holding `key`.
    pub fn new(key: Key, request: TikvRequest, options: RpcOptions, backoff: Backoffer) -> Self {
        let locate = Locate::new(LocateQuery::Key(key.clone()), backoff);
        SingleKey {
            key,
            request,
            options,
            state: SingleState::Locating(locate),
        }
    }
}

impl Machine for SingleKey {
    type Output = Result<TikvResponse, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            let state = std::mem::replace(&mut self.state, SingleState::Done);
            match state {
                SingleState::Done => return Step::Wait,
                SingleState::Locating(mut locate) => match locate.poll(cx) {
                    Step::Done(Ok(region)) => {
                        let rpc = RegionRpc::new(
                            region,
                            self.request.clone(),
                            self.options,
                            locate.into_backoff(),
                        );
                        self.state = SingleState::Sending(Box::new(rpc));
                    }
                    Step::Done(Err(e)) => return Step::Done(Err(e)),
                    other => {
                        self.state = SingleState::Locating(locate);
                        return other.forward();
                    }
                },
                SingleState::Sending(mut rpc) => match rpc.poll(cx) {
                    Step::Done(RegionRpcResult::Response(r)) => return Step::Done(Ok(*r)),
                    Step::Done(RegionRpcResult::Failed(e)) => return Step::Done(Err(e)),
                    Step::Done(RegionRpcResult::Relocate(backoff)) => {
                        self.state = SingleState::Locating(Locate::new(
                            LocateQuery::Key(self.key.clone()),
                            backoff,
                        ));
                    }
                    other => {
                        self.state = SingleState::Sending(rpc);
                        return other.forward();
                    }
                },
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            SingleState::Locating(l) => l.handle(cx, id, outcome),
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
}

#[derive(Debug)]
struct Batch<I> {
    rpc: RegionRpc,
    items: Vec<I>,
}

/// Routes items by region, and sends one request per batch, concurrently.
#[derive(Debug)]
pub struct MultiKey<P: BatchPlan> {
    plan: P,
    limits: BatchLimits,
    options: RpcOptions,
    backoff: Backoffer,
    unrouted: Vec<P::Item>,
    locating: Option<Locate>,
    ready: VecDeque<(Region, Vec<P::Item>)>,
    running: BTreeMap<u64, Batch<P::Item>>,
    next_batch: u64,
    owners: BTreeMap<EffectId, Owner>,
    done: Vec<(Vec<P::Item>, TikvResponse)>,
    failed: Option<Error>,
    finished: bool,
}

#[derive(Clone, Copy, Debug)]
enum Owner {
    Locate,
    Batch(u64),
}

impl<P: BatchPlan> MultiKey<P> {
    /// Sends `items` through `plan`.
    pub fn new(
        plan: P,
        items: Vec<P::Item>,
        limits: BatchLimits,
        options: RpcOptions,
        backoff: Backoffer,
    ) -> Self {
        MultiKey {
            plan,
            limits,
            options,
            backoff,
            unrouted: items,
            locating: None,
            ready: VecDeque::new(),
            running: BTreeMap::new(),
            next_batch: 0,
            owners: BTreeMap::new(),
            done: Vec::new(),
            failed: None,
            finished: false,
        }
    }

    /// Groups unrouted items by the cached regions; the first miss starts a `Locate`.
    fn route(&mut self, cx: &mut Cx<'_>) {
        let mut groups: BTreeMap<Key, (Region, Vec<P::Item>)> = BTreeMap::new();
        let mut missing = Vec::new();
        for item in std::mem::take(&mut self.unrouted) {
            match cx.regions.locate_key(P::key(&item), cx.now, cx.rng) {
                Some(region) => {
                    let start = region.range.start().clone();
                    match groups.get_mut(&start) {
                        Some((_, items)) => items.push(item),
                        None => {
                            groups.insert(start, (region.clone(), vec![item]));
                        }
                    }
                }
                None => missing.push(item),
            }
        }
        for (region, items) in groups.into_values() {
            self.split_into_batches(region, items);
        }
        if let Some(first) = missing.first() {
            let query = LocateQuery::Key(P::key(first).clone());
            self.locating = Some(Locate::new(query, self.backoff.clone()));
        }
        self.unrouted = missing;
    }

    fn split_into_batches(&mut self, region: Region, items: Vec<P::Item>) {
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

    fn on_batch_done(&mut self, key: u64, result: RegionRpcResult) {
        let Some(batch) = self.running.remove(&key) else {
            return;
        };
        match result {
            RegionRpcResult::Response(r) => self.done.push((batch.items, *r)),
            RegionRpcResult::Relocate(backoff) => {
                // Keep the most-slept backoff so the budget covers the whole operation.
                if backoff.total_sleep() > self.backoff.total_sleep() {
                    self.backoff = backoff;
                }
                self.unrouted.extend(batch.items);
            }
            RegionRpcResult::Failed(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }
}

impl<P: BatchPlan> Machine for MultiKey<P> {
    type Output = Result<Vec<(Vec<P::Item>, TikvResponse)>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            if self.finished {
                return Step::Wait;
            }
            if let Some(e) = self.failed.take() {
                // Outstanding effects of other batches are abandoned: their outcomes, if they
                // arrive, are ignored.
                self.finished = true;
                return Step::Done(Err(e));
            }
            if self.locating.is_none() && !self.unrouted.is_empty() {
                self.route(cx);
            }
            if let Some(locate) = self.locating.as_mut() {
                match locate.poll(cx) {
                    Step::Effect(e) => {
                        self.owners.insert(e.id(), Owner::Locate);
                        return Step::Effect(e);
                    }
                    Step::Done(Ok(_region)) => {
                        // Cached by `Locate`; route again.
                        self.locating = None;
                        continue;
                    }
                    Step::Done(Err(e)) => {
                        self.locating = None;
                        self.failed = Some(e);
                        continue;
                    }
                    Step::Wait => {}
                }
            }
            while self.running.len() < cx.config.region_concurrency.max(1) {
                let Some((region, items)) = self.ready.pop_front() else {
                    break;
                };
                let request = self.plan.build(&items);
                let rpc = RegionRpc::new(region, request, self.options, self.backoff.clone());
                self.running.insert(self.next_batch, Batch { rpc, items });
                self.next_batch += 1;
            }
            let mut finished_batch = None;
            for (&key, batch) in self.running.iter_mut() {
                match batch.rpc.poll(cx) {
                    Step::Effect(e) => {
                        self.owners.insert(e.id(), Owner::Batch(key));
                        return Step::Effect(e);
                    }
                    Step::Done(result) => {
                        finished_batch = Some((key, result));
                        break;
                    }
                    Step::Wait => {}
                }
            }
            if let Some((key, result)) = finished_batch {
                self.on_batch_done(key, result);
                continue;
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
        match self.owners.remove(&id) {
            Some(Owner::Locate) => {
                if let Some(l) = self.locating.as_mut() {
                    l.handle(cx, id, outcome);
                }
            }
            Some(Owner::Batch(key)) => {
                if let Some(b) = self.running.get_mut(&key) {
                    b.rpc.handle(cx, id, outcome);
                }
            }
            None => {}
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
}

/// Visits the regions of a range one at a time, forward or backward.
#[derive(Debug)]
pub struct RangeWalk<P: RangePlan> {
    plan: Option<P>,
    range: KeyRange,
    reverse: bool,
    options: RpcOptions,
    /// A fresh backoffer for each region step (each gets the whole budget, as in client-go).
    step_backoff: Backoffer,
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
    pub fn new(
        plan: P,
        range: KeyRange,
        reverse: bool,
        options: RpcOptions,
        backoff: Backoffer,
    ) -> Self {
        let cursor = if reverse {
            range.end().clone()
        } else {
            range.start().clone()
        };
        let query = if reverse {
            LocateQuery::EndKey(cursor.clone())
        } else {
            LocateQuery::Key(cursor.clone())
        };
        RangeWalk {
            plan: Some(plan),
            range,
            reverse,
            options,
            step_backoff: backoff.clone(),
            cursor,
            state: WalkState::Locating(Locate::new(query, backoff)),
        }
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

    fn finish(&mut self) -> Step<P::Output> {
        self.state = WalkState::Done;
        match self.plan.take() {
            Some(plan) => Step::Done(plan.finish()),
            None => Step::Wait,
        }
    }
}

impl<P: RangePlan> Machine for RangeWalk<P> {
    type Output = Result<P::Output, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match std::mem::replace(&mut self.state, WalkState::Done) {
                WalkState::Done => return Step::Wait,
                WalkState::Locating(mut locate) => match locate.poll(cx) {
                    Step::Done(Ok(region)) => {
                        let Some(part) = region.range.intersect(&self.remaining()) else {
                            // The located region does not overlap what is left: nothing left.
                            return match self.finish() {
                                Step::Done(out) => Step::Done(Ok(out)),
                                _ => Step::Wait,
                            };
                        };
                        let Some(plan) = self.plan.as_mut() else {
                            return Step::Wait;
                        };
                        let request = plan.build(&region, &part);
                        self.state = WalkState::Sending(Box::new(RegionRpc::new(
                            region,
                            request,
                            self.options,
                            locate.into_backoff(),
                        )));
                    }
                    Step::Done(Err(e)) => return Step::Done(Err(e)),
                    other => {
                        self.state = WalkState::Locating(locate);
                        return other.forward();
                    }
                },
                WalkState::Sending(mut rpc) => match rpc.poll(cx) {
                    Step::Done(RegionRpcResult::Response(response)) => {
                        let region = rpc.region().clone();
                        let Some(plan) = self.plan.as_mut() else {
                            return Step::Wait;
                        };
                        let more = match plan.absorb(&region, *response) {
                            Ok(more) => more,
                            Err(e) => return Step::Done(Err(e)),
                        };
                        if !more || !self.advance(&region) {
                            return match self.finish() {
                                Step::Done(out) => Step::Done(Ok(out)),
                                _ => Step::Wait,
                            };
                        }
                        let query = self.query();
                        self.state =
                            WalkState::Locating(Locate::new(query, self.step_backoff.clone()));
                    }
                    Step::Done(RegionRpcResult::Relocate(backoff)) => {
                        self.state = WalkState::Locating(Locate::new(self.query(), backoff));
                    }
                    Step::Done(RegionRpcResult::Failed(e)) => return Step::Done(Err(e)),
                    other => {
                        self.state = WalkState::Sending(rpc);
                        return other.forward();
                    }
                },
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            WalkState::Locating(l) => l.handle(cx, id, outcome),
            WalkState::Sending(r) => r.handle(cx, id, outcome),
            WalkState::Done => {}
        }
    }
}
