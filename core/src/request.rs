//! Sending one request to one region: the building block of every operation.
//!
//! [`RegionRpc`] takes a region (as the cache described it) and a request, resolves the
//! leader's store, sends, and follows what comes back: a new leader is retried at once, a busy
//! or recovering region after a backoff, a transport failure after a `tikvRPC` backoff on
//! another replica. When the region itself is gone (split, merged, moved), it hands the work
//! back with [`RegionRpcResult::Relocate`]: the caller owns the keys, so the caller re-routes
//! them. [`Locate`] is the matching building block for a cache miss: it asks PD, retrying
//! with `pdRPC` backoff, and caches the answer.

use std::sync::Arc;
use std::time::Duration;

use tikv_proto::kvrpcpb;

use crate::backoff::BackoffKind;
use crate::config::{ApiVersion, Config};
use crate::error::{Delivery, Error, Target};
use crate::key::Key;
use crate::machine::{Cx, Effect, EffectId, LocateQuery, Machine, Outcome, Step};
use crate::region::{Peer, PeerRole, Region};
use crate::region_error::{RegionErrorAction, RoutingState, SentTo, on_region_error};
use crate::rpc::{TikvRequest, TikvResponse};
use crate::store_cache::StoreLookup;

/// After this many immediate retries in a row (leader hints bouncing between stores), the
/// next retry backs off `regionScheduling` instead, so a confused cluster cannot make the
/// client spin.
const MAX_IMMEDIATE_RETRIES: u32 = 10;

/// How a request may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcOptions {
    /// Whether applying the request twice is harmless (reads, puts, deletes). A
    /// non-idempotent request (compare-and-swap, a primary commit) whose delivery is unknown
    /// fails with [`Error::Undetermined`] instead of being resent.
    pub idempotent: bool,
    /// `max_execution_duration_ms` for TiKV, for writes.
    pub max_execution: Option<Duration>,
    /// How long one attempt may wait for its answer (`Config::rpc_timeout` when `None`).
    pub timeout: Option<Duration>,
}

impl RpcOptions {
    /// A read: idempotent, no execution limit.
    pub const READ: RpcOptions = RpcOptions {
        idempotent: true,
        max_execution: None,
        timeout: None,
    };
}

/// The keyspace id that means "no keyspace" (API V1).
pub const NULL_KEYSPACE_ID: u32 = 0xffff_ffff;

/// The keyspace API V2 clients use when none is configured.
pub const DEFAULT_KEYSPACE: &str = "DEFAULT";

/// Fills the fields of `ctx` that come from the client's configuration (the operation's own
/// [`ContextOptions`](crate::options::ContextOptions) are applied after, and win).
pub fn stamp_context(ctx: &mut kvrpcpb::Context, config: &Config, options: &RpcOptions) {
    use kvrpcpb::context::Keyspace;
    match config.api_version {
        ApiVersion::V1 => {
            ctx.api_version = kvrpcpb::ApiVersion::V1 as i32;
            // "No keyspace", as client-go's V1 codec says it.
            ctx.keyspace = Some(Keyspace::KeyspaceId(NULL_KEYSPACE_ID));
        }
        ApiVersion::V2 => {
            ctx.api_version = kvrpcpb::ApiVersion::V2 as i32;
            ctx.keyspace = Some(Keyspace::KeyspaceId(config.keyspace_id().unwrap_or(0)));
            ctx.keyspace_name = config
                .keyspace
                .clone()
                .unwrap_or_else(|| DEFAULT_KEYSPACE.into());
        }
    }
    if !config.request_source.is_empty() {
        ctx.request_source = config.request_source.clone();
    }
    if !config.resource_group_tag.is_empty() {
        ctx.resource_group_tag = config.resource_group_tag.clone().into();
    }
    if let Some(limit) = options.max_execution {
        ctx.max_execution_duration_ms = limit.as_millis().min(u128::from(u64::MAX)) as u64;
    }
}

/// What became of a [`RegionRpc`].
#[derive(Debug)]
pub enum RegionRpcResult {
    /// The store answered without a region error (a key error may be inside).
    Response(Box<TikvResponse>),
    /// The region is gone or changed: route the request's keys again (what was slept so far
    /// stays in the caller's budget).
    Relocate,
    /// Failed for good.
    Failed(Error),
}

#[derive(Debug)]
enum RpcState {
    /// Ready to pick the leader and send.
    Ready,
    ResolvingStore(EffectId),
    InFlight(EffectId, SentTo),
    /// Decided to back off; the next poll computes the sleep and emits it.
    Backoff(BackoffKind, Box<Error>, AfterSleep),
    Sleeping(EffectId, AfterSleep),
    Finished(Option<RegionRpcResult>),
}

#[derive(Debug, Clone, Copy)]
enum AfterSleep {
    Resend,
    Relocate,
}

/// Sends one request to one region until it is answered, must be re-routed, or fails.
#[derive(Debug)]
pub struct RegionRpc {
    /// The cached view the request is routed by (shared with the cache until it changes).
    region: Arc<Region>,
    request: TikvRequest,
    options: RpcOptions,
    state: RpcState,
    immediate_retries: u32,
}

impl RegionRpc {
    /// Sends `request` to `region` (the context is filled in here). Retries sleep within the
    /// context's budget ([`Cx::backoff`]).
    pub fn new(region: impl Into<Arc<Region>>, request: TikvRequest, options: RpcOptions) -> Self {
        RegionRpc {
            region: region.into(),
            request,
            options,
            state: RpcState::Ready,
            immediate_retries: 0,
        }
    }

    /// The region the request is routed to.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The request (without the routing part of its context).
    pub fn request(&self) -> &TikvRequest {
        &self.request
    }

    /// Takes the request back (to route it again after [`RegionRpcResult::Relocate`]).
    pub fn into_request(self) -> TikvRequest {
        self.request
    }

    fn finish(&mut self, result: RegionRpcResult) {
        self.state = RpcState::Finished(Some(result));
    }

    fn back_off(&mut self, kind: BackoffKind, error: Error, then: AfterSleep) {
        self.state = RpcState::Backoff(kind, Box::new(error), then);
    }

    /// The peer to send to: the cached leader, else the first voter.
    fn target(&self) -> Option<Peer> {
        self.region.leader.or_else(|| {
            self.region
                .peers
                .iter()
                .copied()
                .find(|p| p.role != PeerRole::Learner)
        })
    }

    /// Picks up the latest cached view of our region (e.g. a leader switch); `false` when it
    /// is no longer cached at this epoch and the caller must relocate.
    fn refresh_region(&mut self, cx: &mut Cx<'_>) -> bool {
        match cx.regions.peek_by_id(self.region.id) {
            Some(r) if r.ver_id() == self.region.ver_id() => {
                self.region = r;
                true
            }
            _ => false,
        }
    }

    fn region_error(&self, message: String) -> Error {
        Error::Region {
            region: self.region.ver_id(),
            message,
        }
    }

    fn send(&mut self, cx: &mut Cx<'_>) -> Step<RegionRpcResult> {
        let Some(peer) = self.target() else {
            let e = self.region_error("region has no voter peer".into());
            cx.regions.invalidate(self.region.ver_id());
            self.back_off(BackoffKind::RegionMiss, e, AfterSleep::Relocate);
            return Step::Wait;
        };
        match cx.stores.lookup(peer.store_id) {
            StoreLookup::Unknown => {
                let id = cx.next_id();
                self.state = RpcState::ResolvingStore(id);
                Step::Effect(Effect::ResolveStore {
                    id,
                    store_id: peer.store_id,
                })
            }
            StoreLookup::Tombstone => {
                // The region still lists a removed store: PD has newer information.
                let e = self.region_error(format!(
                    "peer on store {}, which is a tombstone",
                    peer.store_id
                ));
                cx.regions.invalidate(self.region.ver_id());
                self.back_off(BackoffKind::RegionMiss, e, AfterSleep::Relocate);
                Step::Wait
            }
            StoreLookup::Ready(store) => {
                let address = store.address.clone();
                let mut request = self.request.clone();
                if let Some(ctx) = request.context_mut() {
                    let fresh = self.region.context_for(peer);
                    ctx.region_id = fresh.region_id;
                    ctx.region_epoch = fresh.region_epoch;
                    ctx.peer = fresh.peer;
                    stamp_context(ctx, cx.config, &self.options);
                    cx.context.apply(ctx);
                }
                let id = cx.next_id();
                let sent = SentTo {
                    region: self.region.ver_id(),
                    store_id: peer.store_id,
                };
                self.state = RpcState::InFlight(id, sent);
                Step::Effect(Effect::Rpc {
                    id,
                    store_id: peer.store_id,
                    address,
                    request: Box::new(request),
                    timeout: self.options.timeout.unwrap_or(cx.config.rpc_timeout),
                })
            }
        }
    }

    fn on_response(&mut self, cx: &mut Cx<'_>, sent: SentTo, mut response: Box<TikvResponse>) {
        if response.method_name() != self.request.method_name() {
            // Only a broken transport can do this; the plans that read the reply rely on it
            // not happening, and the error names the store so it can be found.
            let address = match cx.stores.lookup(sent.store_id) {
                StoreLookup::Ready(store) => store.address.clone(),
                _ => String::new(),
            };
            let detail = format!(
                "{}: {} answered with {}",
                self.region.ver_id(),
                self.request.method_name(),
                response.method_name()
            );
            let target = Target::Store {
                id: sent.store_id,
                address,
            };
            self.finish(RegionRpcResult::Failed(Error::Protocol { target, detail }));
            return;
        }
        let Some(region_error) = response.take_region_error() else {
            self.finish(RegionRpcResult::Response(response));
            return;
        };
        let mut routing = RoutingState {
            regions: cx.regions,
            stores: cx.stores,
            now: cx.now,
            rng: cx.rng,
            region_keys: cx.config.region_keys(),
        };
        let action = on_region_error(&region_error, sent, &mut routing);
        let error = self.region_error(region_error.message.clone());
        match action {
            RegionErrorAction::RetryNow => {
                self.immediate_retries += 1;
                if self.immediate_retries > MAX_IMMEDIATE_RETRIES {
                    self.immediate_retries = 0;
                    self.back_off(BackoffKind::RegionScheduling, error, AfterSleep::Resend);
                } else if !self.refresh_region(cx) {
                    self.finish(RegionRpcResult::Relocate);
                }
            }
            RegionErrorAction::Backoff(kind) => self.back_off(kind, error, AfterSleep::Resend),
            RegionErrorAction::Relocate(Some(kind)) => {
                self.back_off(kind, error, AfterSleep::Relocate)
            }
            RegionErrorAction::Relocate(None) => self.finish(RegionRpcResult::Relocate),
            RegionErrorAction::Undetermined => {
                self.finish(RegionRpcResult::Failed(Error::Undetermined {
                    operation: response.method_name(),
                    detail: format!("{}: {}", self.region.ver_id(), region_error.message),
                }))
            }
            RegionErrorAction::Fail(message) => {
                self.finish(RegionRpcResult::Failed(self.region_error(message)))
            }
        }
    }

    fn on_failure(&mut self, cx: &mut Cx<'_>, sent: SentTo, delivery: Delivery, error: Error) {
        if delivery == Delivery::MaybeDelivered && !self.options.idempotent {
            self.finish(RegionRpcResult::Failed(Error::Undetermined {
                operation: self.request.method_name(),
                detail: error.to_string(),
            }));
            return;
        }
        // The store may be down or gone: the next attempt asks another replica (which names the
        // leader if it is not one), and a store that refused connections is resolved again in
        // case it moved.
        cx.regions.rotate_leader(sent.region, sent.store_id);
        if delivery == Delivery::NotSent {
            cx.stores.invalidate(sent.store_id);
        }
        self.back_off(BackoffKind::TikvRpc, error, AfterSleep::Resend);
    }
}

impl Machine for RegionRpc {
    type Output = RegionRpcResult;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<RegionRpcResult> {
        match std::mem::replace(&mut self.state, RpcState::Ready) {
            RpcState::Finished(result) => {
                self.state = RpcState::Finished(None);
                result.map_or(Step::Wait, Step::Done)
            }
            waiting @ (RpcState::ResolvingStore(_)
            | RpcState::InFlight(..)
            | RpcState::Sleeping(..)) => {
                self.state = waiting;
                Step::Wait
            }
            RpcState::Ready => match self.send(cx) {
                // Sending decided to back off first: emit the sleep now, or the caller would
                // wait for an effect that was never issued.
                Step::Wait if matches!(self.state, RpcState::Backoff(..)) => self.poll(cx),
                step => step,
            },
            RpcState::Backoff(kind, error, then) => {
                match cx.backoff_sleep(kind, None, &error) {
                    Ok(sleep) => {
                        self.state = RpcState::Sleeping(sleep.id(), then);
                        Step::Effect(sleep)
                    }
                    Err(exhausted) => {
                        // A transport failure that outlived the budget reports the transport error
                        // itself, which says more than "budget exhausted" (client-go does the same).
                        let result = if kind == BackoffKind::TikvRpc {
                            *error
                        } else {
                            exhausted
                        };
                        self.state = RpcState::Finished(None);
                        Step::Done(RegionRpcResult::Failed(result))
                    }
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match std::mem::replace(&mut self.state, RpcState::Ready) {
            RpcState::ResolvingStore(want) if want == id => match outcome {
                Outcome::Store(Ok(store)) => cx.stores.insert(store),
                Outcome::Store(Err(e)) => self.back_off(BackoffKind::PdRpc, e, AfterSleep::Resend),
                _ => self.state = RpcState::ResolvingStore(want),
            },
            RpcState::InFlight(want, sent) if want == id => match outcome {
                Outcome::Response(response) => self.on_response(cx, sent, response),
                Outcome::RpcFailed { delivery, error } => {
                    self.on_failure(cx, sent, delivery, error)
                }
                _ => self.state = RpcState::InFlight(want, sent),
            },
            RpcState::Sleeping(want, then) if want == id => match then {
                AfterSleep::Resend => {
                    if !self.refresh_region(cx) {
                        self.finish(RegionRpcResult::Relocate);
                    }
                }
                AfterSleep::Relocate => self.finish(RegionRpcResult::Relocate),
            },
            // Not the effect we wait for: a late or duplicate outcome. Keep waiting.
            other => self.state = other,
        }
    }
}

#[derive(Debug)]
enum LocateState {
    Ready,
    /// Asked PD this question (one PD request).
    Asking(EffectId, LocateQuery),
    /// PD's answer leads to another question (the walk of an `EndKey` query).
    Next(LocateQuery),
    Backoff(BackoffKind, Box<Error>),
    Sleeping(EffectId),
    Finished(Option<Result<Arc<Region>, Error>>),
}

/// Finds the region for a query, from the cache or from PD (caching PD's answer).
#[derive(Debug)]
pub struct Locate {
    query: LocateQuery,
    /// Regions followed so far looking for the last one (an `EndKey` query for +inf).
    hops: u32,
    state: LocateState,
}

/// Where the search for the last region starts: PD cannot name "the region holding +inf", so
/// the walk asks for a very large key and follows region ends until the unbounded one.
const LAST_REGION_PROBE: [u8; 64] = [0xff; 64];

/// The most region ends followed looking for the last region (regions past 0xff×64 are rare).
const MAX_LAST_REGION_HOPS: u32 = 64;

impl Locate {
    /// Looks up `query`; PD failures back off `pdRPC` (and "no region" `regionMiss`) within
    /// the context's budget.
    pub fn new(query: LocateQuery) -> Self {
        Locate {
            query,
            hops: 0,
            state: LocateState::Ready,
        }
    }

    /// The first PD request for the query. `GetRegion`, `GetPrevRegion` and `GetRegionByID`
    /// each answer one of them directly; an `EndKey` query starts with the region of the key
    /// itself (client-go's `LocateEndKey`).
    fn first_question(&self) -> LocateQuery {
        match &self.query {
            LocateQuery::EndKey(k) if k.is_empty() => {
                LocateQuery::Key(Key::from(LAST_REGION_PROBE.to_vec()))
            }
            LocateQuery::EndKey(k) => LocateQuery::Key(k.clone()),
            other => other.clone(),
        }
    }

    /// What PD's answer to `asked` means for the query: the region, another question, or
    /// `None` when PD's view does not cover the query (yet).
    fn follow(
        &mut self,
        asked: &LocateQuery,
        region: Region,
    ) -> Option<Result<Region, LocateQuery>> {
        if self.matches(&region) {
            return Some(Ok(region));
        }
        match (&self.query, asked) {
            // The key starts its region: the keys below it are in the previous one.
            (LocateQuery::EndKey(k), LocateQuery::Key(_))
                if !k.is_empty() && region.range.start() == k =>
            {
                Some(Err(LocateQuery::Before(k.clone())))
            }
            // Looking for the last region: follow region ends.
            (LocateQuery::EndKey(k), LocateQuery::Key(_))
                if k.is_empty() && self.hops < MAX_LAST_REGION_HOPS =>
            {
                self.hops += 1;
                Some(Err(LocateQuery::Key(region.range.end().clone())))
            }
            _ => None,
        }
    }

    fn cached(&self, cx: &mut Cx<'_>) -> Option<Arc<Region>> {
        match &self.query {
            LocateQuery::Key(k) => cx.regions.locate_key(k, cx.now),
            LocateQuery::EndKey(k) | LocateQuery::Before(k) => cx.regions.locate_end_key(k, cx.now),
            LocateQuery::Id(id) => cx.regions.get_by_id(*id, cx.now),
        }
    }

    fn matches(&self, region: &Region) -> bool {
        self.query.matches(region)
    }

    /// Asks PD one question.
    fn ask(&mut self, cx: &mut Cx<'_>, question: LocateQuery) -> Step<Result<Arc<Region>, Error>> {
        let id = cx.next_id();
        self.state = LocateState::Asking(id, question.clone());
        Step::Effect(Effect::Locate {
            id,
            query: question,
        })
    }

    /// PD has no region there, or one that does not cover the query: its view is moving (a
    /// split in progress); ask again shortly.
    fn region_miss(&self, found: Option<Region>) -> LocateState {
        let e = Error::Pd {
            method: "GetRegion",
            address: "PD".into(),
            kind: crate::pd::PdErrorKind::NotFound,
            message: format!(
                "no region for {:?} (got {:?})",
                self.query,
                found.map(|r| r.range)
            ),
        };
        LocateState::Backoff(BackoffKind::RegionMiss, Box::new(e))
    }
}

impl Machine for Locate {
    type Output = Result<Arc<Region>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Result<Arc<Region>, Error>> {
        match std::mem::replace(&mut self.state, LocateState::Ready) {
            LocateState::Finished(result) => {
                self.state = LocateState::Finished(None);
                result.map_or(Step::Wait, Step::Done)
            }
            waiting @ (LocateState::Asking(..) | LocateState::Sleeping(_)) => {
                self.state = waiting;
                Step::Wait
            }
            LocateState::Ready => match self.cached(cx) {
                Some(region) => {
                    self.state = LocateState::Finished(None);
                    Step::Done(Ok(region))
                }
                None => {
                    self.hops = 0;
                    self.ask(cx, self.first_question())
                }
            },
            LocateState::Next(question) => self.ask(cx, question),
            LocateState::Backoff(kind, error) => match cx.backoff_sleep(kind, None, &error) {
                Ok(sleep) => {
                    self.state = LocateState::Sleeping(sleep.id());
                    Step::Effect(sleep)
                }
                Err(exhausted) => {
                    self.state = LocateState::Finished(None);
                    Step::Done(Err(exhausted))
                }
            },
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match std::mem::replace(&mut self.state, LocateState::Ready) {
            LocateState::Asking(want, asked) if want == id => match outcome {
                Outcome::Located(Ok(Some(region))) => match self.follow(&asked, region.clone()) {
                    Some(Ok(region)) => {
                        let region = Arc::new(region);
                        cx.regions.insert(region.clone(), cx.now, cx.rng);
                        self.state = LocateState::Finished(Some(Ok(region)));
                    }
                    Some(Err(next)) => self.state = LocateState::Next(next),
                    None => self.state = self.region_miss(Some(region)),
                },
                Outcome::Located(Ok(None)) => self.state = self.region_miss(None),
                // An answer that cannot improve on retry (PD's region description is invalid,
                // the cluster is another one) fails the lookup now instead of spending the
                // whole budget on it.
                Outcome::Located(Err(e)) if !e.is_retryable() => {
                    self.state = LocateState::Finished(Some(Err(e)))
                }
                Outcome::Located(Err(e)) => {
                    self.state = LocateState::Backoff(BackoffKind::PdRpc, Box::new(e))
                }
                _ => self.state = LocateState::Asking(want, asked),
            },
            LocateState::Sleeping(want) if want == id => self.state = LocateState::Ready,
            other => self.state = other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tikv_proto::{errorpb, metapb};

    use super::*;
    use crate::error::Target;
    use crate::region::{Store, StoreState};
    use crate::testing::{Harness, region};

    fn get(key: &str) -> TikvRequest {
        TikvRequest::RawGet(kvrpcpb::RawGetRequest {
            key: key.to_owned().into_bytes().into(),
            ..Default::default()
        })
    }

    fn ok_get(value: &str) -> Outcome {
        Outcome::Response(Box::new(TikvResponse::RawGet(kvrpcpb::RawGetResponse {
            value: value.to_owned().into_bytes().into(),
            ..Default::default()
        })))
    }

    fn region_error(f: impl FnOnce(&mut errorpb::Error)) -> Outcome {
        let mut e = errorpb::Error {
            message: "scripted".into(),
            ..Default::default()
        };
        f(&mut e);
        Outcome::Response(Box::new(TikvResponse::RawGet(kvrpcpb::RawGetResponse {
            region_error: Some(Box::new(e)),
            ..Default::default()
        })))
    }

    fn transport(delivery: Delivery) -> Outcome {
        Outcome::RpcFailed {
            delivery,
            error: Error::Transport {
                method: "RawGet",
                target: Target::Store {
                    id: 1,
                    address: "store-1".into(),
                },
                delivery,
                detail: "connection reset".into(),
            },
        }
    }

    fn rpc(region: Region, request: TikvRequest, options: RpcOptions) -> RegionRpc {
        RegionRpc::new(region, request, options)
    }

    /// The (store, region id, epoch version) each RPC was sent with.
    fn sends(h: &Harness) -> Vec<(u64, u64, u64)> {
        h.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Rpc {
                    store_id, request, ..
                } => {
                    let mut r = request.clone();
                    let ctx = r.context_mut().unwrap();
                    Some((*store_id, ctx.region_id, ctx.region_epoch.unwrap().version))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sends_to_leader_with_full_context() {
        let mut h = Harness::new(1).with_stores(3);
        h.config.request_source = "external_test".into();
        let r = region(7, "a", "z", &[2, 1, 3]);
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |_| ok_get("v"));
        assert!(
            matches!(out, RegionRpcResult::Response(ref r) if matches!(**r, TikvResponse::RawGet(ref g) if g.value == "v"))
        );
        let Effect::Rpc {
            address, request, ..
        } = &h.effects[0]
        else {
            panic!()
        };
        assert_eq!(address, "store-2");
        let mut req = request.clone();
        let ctx = req.context_mut().unwrap();
        assert_eq!(ctx.peer.unwrap().id, 702);
        assert_eq!(ctx.request_source, "external_test");
    }

    #[test]
    fn resolves_unknown_store_first() {
        let mut h = Harness::new(1);
        let out = h.run(
            rpc(region(7, "", "", &[4]), get("k"), RpcOptions::READ),
            |e| match e {
                Effect::ResolveStore { store_id: 4, .. } => Outcome::Store(Ok(Store {
                    id: 4,
                    address: "s4:20160".into(),
                    labels: vec![],
                    state: StoreState::Up,
                })),
                Effect::Rpc { address, .. } if address == "s4:20160" => ok_get("v"),
                other => panic!("unexpected {other:?}"),
            },
        );
        assert!(matches!(out, RegionRpcResult::Response(_)));
    }

    #[test]
    fn follows_not_leader_hint_without_sleeping() {
        let mut h = Harness::new(1).with_stores(3);
        let r = region(7, "a", "z", &[1, 2, 3]);
        h.cache(r.clone());
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |e| match e {
            Effect::Rpc { store_id: 1, .. } => region_error(|e| {
                e.not_leader = Some(errorpb::NotLeader {
                    region_id: 7,
                    leader: Some(metapb::Peer {
                        id: 703,
                        store_id: 3,
                        ..Default::default()
                    }),
                })
            }),
            _ => ok_get("v"),
        });
        assert!(matches!(out, RegionRpcResult::Response(_)));
        assert_eq!(sends(&h), vec![(1, 7, 1), (3, 7, 1)]);
        assert_eq!(h.slept(), Duration::ZERO);
    }

    #[test]
    fn busy_server_backs_off_then_resends() {
        let mut h = Harness::new(1).with_stores(1);
        let r = region(7, "", "", &[1]);
        h.cache(r.clone());
        let mut calls = 0;
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |_| {
            calls += 1;
            if calls < 3 {
                region_error(|e| e.server_is_busy = Some(Default::default()))
            } else {
                ok_get("v")
            }
        });
        assert!(matches!(out, RegionRpcResult::Response(_)));
        assert!(
            h.slept() >= Duration::from_secs(2),
            "server-busy backoff starts at 2 s, slept {:?}",
            h.slept()
        );
    }

    #[test]
    fn epoch_not_match_hands_keys_back_for_relocation() {
        let mut h = Harness::new(1).with_stores(1);
        let r = region(7, "a", "z", &[1]);
        h.cache(r.clone());
        let mut left = region(7, "a", "m", &[1]).to_meta();
        left.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 2,
        });
        let mut right = region(8, "m", "z", &[1]).to_meta();
        right.region_epoch = Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 2,
        });
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), move |_| {
            region_error(|e| {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: vec![left.clone(), right.clone()],
                })
            })
        });
        assert!(matches!(out, RegionRpcResult::Relocate));
        assert_eq!(h.regions.len(), 2, "the split is cached without asking PD");
    }

    #[test]
    fn maybe_delivered_write_is_undetermined_but_reads_retry() {
        let mut h = Harness::new(1).with_stores(2);
        let cas = TikvRequest::RawCompareAndSwap(Default::default());
        let opts = RpcOptions {
            idempotent: false,
            max_execution: Some(Duration::from_secs(20)),
            timeout: None,
        };
        let out = h.run(rpc(region(7, "", "", &[1, 2]), cas, opts), |_| {
            transport(Delivery::MaybeDelivered)
        });
        assert!(matches!(
            out,
            RegionRpcResult::Failed(Error::Undetermined {
                operation: "RawCompareAndSwap",
                ..
            })
        ));

        let mut h = Harness::new(1).with_stores(2);
        let r = region(7, "", "", &[1, 2]);
        h.cache(r.clone());
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |e| match e {
            Effect::Rpc { store_id: 1, .. } => transport(Delivery::MaybeDelivered),
            _ => ok_get("v"),
        });
        assert!(matches!(out, RegionRpcResult::Response(_)));
        assert_eq!(
            sends(&h).iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![1, 2],
            "retried on the other replica"
        );
    }

    #[test]
    fn persistent_transport_failure_reports_the_transport_error() {
        let mut h = Harness::new(1).with_stores(2);
        let r = region(7, "", "", &[1, 2]);
        h.cache(r.clone());
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |e| match e {
            Effect::ResolveStore { store_id, .. } => Outcome::Store(Ok(Store {
                id: *store_id,
                address: format!("store-{store_id}"),
                labels: vec![],
                state: StoreState::Up,
            })),
            _ => transport(Delivery::NotSent),
        });
        assert!(
            matches!(out, RegionRpcResult::Failed(Error::Transport { .. })),
            "{out:?}"
        );
        assert!(
            h.slept() >= crate::backoff::budget::RAWKV,
            "kept trying for the whole budget"
        );
    }

    /// Regression: a region listing a tombstone store made the machine wait without having
    /// issued its backoff sleep (found by the `raw_get` fuzz harness).
    #[test]
    fn tombstone_peer_backs_off_and_relocates() {
        let mut h = Harness::new(1);
        h.stores.insert(Store {
            id: 1,
            address: String::new(),
            labels: vec![],
            state: StoreState::Tombstone,
        });
        let r = region(7, "", "", &[1]);
        h.cache(r.clone());
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |e| {
            panic!("nothing should be sent: {e:?}")
        });
        assert!(matches!(out, RegionRpcResult::Relocate));
        assert!(matches!(h.effects[0], Effect::Sleep { .. }));
        assert!(h.regions.is_empty(), "the stale region is dropped");
    }

    #[test]
    fn locate_retries_pd_until_a_region_covers_the_key() {
        let mut h = Harness::new(1);
        let mut asks = 0;
        let found = h.run(Locate::new(LocateQuery::Key("k".into())), |_| {
            asks += 1;
            match asks {
                1 => Outcome::Located(Err(Error::Pd {
                    method: "GetRegion",
                    address: "pd".into(),
                    kind: crate::pd::PdErrorKind::NotLeader,
                    message: "down".into(),
                })),
                2 => Outcome::Located(Ok(None)),
                3 => Outcome::Located(Ok(Some(region(1, "a", "b", &[1])))),
                _ => Outcome::Located(Ok(Some(region(2, "b", "", &[1])))),
            }
        });
        assert_eq!(found.unwrap().id, 2);
        assert_eq!(asks, 4);
        // A cached answer needs no PD at all.
        let again = h.run(Locate::new(LocateQuery::Key("k".into())), |e| {
            panic!("unexpected {e:?}")
        });
        assert_eq!(again.unwrap().id, 2);
    }

    #[test]
    fn the_operations_context_options_are_stamped_on_every_request() {
        let mut h = Harness::new(1).with_stores(1);
        h.context = crate::options::ContextOptions {
            priority: crate::options::Priority::High,
            request_source: Some("checkout".into()),
            task_id: 9,
            ..Default::default()
        };
        let r = region(7, "", "", &[1]);
        h.cache(r.clone());
        let mut sent = None;
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |e| {
            if let Effect::Rpc { request, .. } = e {
                sent = request.clone().context_mut().cloned();
            }
            Outcome::Response(Box::new(TikvResponse::RawGet(Default::default())))
        });
        assert!(matches!(out, RegionRpcResult::Response(_)));
        let ctx = sent.expect("a request with a context");
        assert_eq!(ctx.priority, kvrpcpb::CommandPri::High as i32);
        assert_eq!((ctx.request_source.as_str(), ctx.task_id), ("checkout", 9));
        assert_eq!(ctx.region_id, 7, "and the routing fields still");
    }

    #[test]
    fn a_reply_for_another_method_fails_naming_the_store() {
        let mut h = Harness::new(1).with_stores(1);
        let r = region(7, "", "", &[1]);
        h.cache(r.clone());
        let out = h.run(rpc(r, get("k"), RpcOptions::READ), |_| {
            Outcome::Response(Box::new(TikvResponse::RawPut(Default::default())))
        });
        let RegionRpcResult::Failed(Error::Protocol { target, detail }) = out else {
            panic!("expected a protocol error, got {out:?}");
        };
        assert_eq!(
            target,
            Target::Store {
                id: 1,
                address: "store-1".into()
            }
        );
        assert!(detail.contains("RawGet answered with RawPut"), "{detail}");
    }

    /// Regression: a region boundary PD sent that does not decode was retried for the whole
    /// budget (a commit hung 80 s before failing).
    #[test]
    fn locate_fails_at_once_on_an_answer_no_retry_can_fix() {
        let mut h = Harness::new(1);
        let invalid = Error::Pd {
            method: "GetRegion",
            address: "127.0.0.1:2379".into(),
            kind: crate::pd::PdErrorKind::InvalidResponse,
            message: "region 7: region boundary \"k\" is not memcomparable".into(),
        };
        let mut asks = 0;
        let out = h.run(Locate::new(LocateQuery::Key("k".into())), |_| {
            asks += 1;
            Outcome::Located(Err(invalid.clone()))
        });
        assert_eq!(out.unwrap_err(), invalid);
        assert_eq!(asks, 1, "asked once, no backoff");
        assert!(h.effects.iter().all(|e| !matches!(e, Effect::Sleep { .. })));
    }
}
