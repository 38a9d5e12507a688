//! The effect model: how core machines ask for I/O without doing it.
//!
//! A machine is driven by two calls:
//!
//! - [`Machine::poll`] returns the next [`Step`]: an [`Effect`] to execute, [`Step::Wait`]
//!   (nothing to do until an outstanding effect completes), or [`Step::Done`] with the result.
//!   The driver calls `poll` until it returns `Wait` or `Done`, starting every effect it gets,
//!   so independent effects run concurrently.
//! - [`Machine::handle`] delivers the [`Outcome`] of an effect, by its [`EffectId`]. An outcome
//!   for an id the machine no longer waits for (late, duplicate) is ignored.
//!
//! Both take a [`Cx`]: the current time, the seeded RNG, the configuration and the shared
//! caches. Nothing else reaches a machine, so the same inputs always give the same effects.

use std::time::Duration;

use crate::config::Config;
use crate::error::{Delivery, Error};
use crate::key::Key;
use crate::region::{Region, RegionId, Store, StoreId};
use crate::region_cache::RegionCache;
use crate::rng::Rng;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::store_cache::StoreCache;
use crate::time::Instant;
use crate::timestamp::Timestamp;

/// Identifies one effect of one operation; allocated by [`Cx::next_id`], so ids are unique
/// across the machines that make up an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EffectId(pub u64);

/// Which region PD should look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocateQuery {
    /// The region holding this key (`GetRegion`).
    Key(Key),
    /// The region holding the keys just below this key (`GetPrevRegion` when the key starts
    /// a region); an empty key means the last region.
    EndKey(Key),
    /// The region with this id (`GetRegionByID`).
    Id(RegionId),
}

/// Something a machine needs done.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send a request to a TiKV store.
    Rpc {
        /// The effect's id.
        id: EffectId,
        /// The store.
        store_id: StoreId,
        /// Its address.
        address: String,
        /// The request (boxed: requests are large, effects move around).
        request: Box<TikvRequest>,
        /// Give up (as `MaybeDelivered`) after this long.
        timeout: Duration,
    },
    /// Ask PD for a region (and its leader). Answered with [`Outcome::Located`].
    Locate {
        /// The effect's id.
        id: EffectId,
        /// What to look up.
        query: LocateQuery,
    },
    /// Ask PD for a store. Answered with [`Outcome::Store`].
    ResolveStore {
        /// The effect's id.
        id: EffectId,
        /// The store.
        store_id: StoreId,
    },
    /// Get `count` consecutive timestamps from TSO. Answered with [`Outcome::Timestamps`].
    Tso {
        /// The effect's id.
        id: EffectId,
        /// How many.
        count: u32,
    },
    /// Wake up after `duration`. Answered with [`Outcome::Slept`].
    Sleep {
        /// The effect's id.
        id: EffectId,
        /// How long.
        duration: Duration,
    },
}

impl Effect {
    /// The effect's id.
    pub fn id(&self) -> EffectId {
        match self {
            Effect::Rpc { id, .. }
            | Effect::Locate { id, .. }
            | Effect::ResolveStore { id, .. }
            | Effect::Tso { id, .. }
            | Effect::Sleep { id, .. } => *id,
        }
    }
}

/// The result of an effect.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The store answered (the response may still carry a region or key error).
    Response(Box<TikvResponse>),
    /// The RPC failed; `delivery` says whether it may have been applied.
    RpcFailed {
        /// Whether the request may have reached the store.
        delivery: Delivery,
        /// What failed.
        error: Error,
    },
    /// PD's answer to a `Locate`: the region, or `None` when PD has none there.
    Located(Result<Option<Region>, Error>),
    /// PD's answer to a `ResolveStore`.
    Store(Result<Store, Error>),
    /// The first of the requested consecutive timestamps.
    Timestamps(Result<Timestamp, Error>),
    /// The sleep finished.
    Slept,
}

/// What a machine wants next.
#[derive(Debug)]
pub enum Step<T> {
    /// Execute this effect, then poll again.
    Effect(Effect),
    /// Nothing to do until an outstanding effect completes.
    Wait,
    /// Finished.
    Done(T),
}

impl<T> Step<T> {
    /// A child's effect or wait, passed up by a parent machine (the child's `Done` is the
    /// parent's to handle, so it maps to `Wait`: callers check for `Done` first).
    pub fn forward<U>(self) -> Step<U> {
        match self {
            Step::Effect(e) => Step::Effect(e),
            Step::Wait | Step::Done(_) => Step::Wait,
        }
    }
}

/// What a machine may read and update during one call.
pub struct Cx<'a> {
    /// The current time.
    pub now: Instant,
    /// The seeded random generator.
    pub rng: &'a mut Rng,
    /// The client's configuration.
    pub config: &'a Config,
    /// The shared region cache.
    pub regions: &'a mut RegionCache,
    /// The shared store cache.
    pub stores: &'a mut StoreCache,
    /// The next effect id to hand out.
    pub ids: &'a mut u64,
}

impl Cx<'_> {
    /// A fresh effect id.
    pub fn next_id(&mut self) -> EffectId {
        *self.ids += 1;
        EffectId(*self.ids)
    }
}

/// A protocol state machine.
pub trait Machine {
    /// What the machine produces when done.
    type Output;

    /// The next step. Called repeatedly until it returns `Wait` or `Done`.
    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output>;

    /// Delivers the outcome of effect `id`.
    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome);
}

/// A machine whose output is transformed by a function once it is done.
#[derive(Debug)]
pub struct Map<M, F> {
    inner: M,
    f: Option<F>,
}

impl<M, F> Map<M, F> {
    /// Applies `f` to `inner`'s output.
    pub fn new(inner: M, f: F) -> Self {
        Map { inner, f: Some(f) }
    }
}

impl<M: Machine, T, F: FnOnce(M::Output) -> T> Machine for Map<M, F> {
    type Output = T;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<T> {
        match self.inner.poll(cx) {
            Step::Effect(e) => Step::Effect(e),
            Step::Wait => Step::Wait,
            Step::Done(out) => match self.f.take() {
                Some(f) => Step::Done(f(out)),
                None => Step::Wait,
            },
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        self.inner.handle(cx, id, outcome);
    }
}
