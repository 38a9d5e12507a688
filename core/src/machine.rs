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
//! Both take a [`Cx`]: the current time, the operation's RNG, the configuration, the shared
//! caches and the backoff budget the machine retries within. Nothing else reaches a machine,
//! so the same inputs always give the same effects.
//!
//! ## Composing machines
//!
//! Operations are built from smaller machines (a commit prewrites through a multi-region
//! plan, which sends through per-region RPC machines). A parent drives its children with two
//! tools, so that no effect and no result is lost on the way up:
//!
//! - [`ready!`](crate::ready) polls a child and evaluates to its output once it is done;
//!   until then it returns the child's effect (or wait) from the parent's `poll`.
//! - [`Children`] holds any number of concurrent children and routes each outcome to the
//!   child that asked for the effect.
//!
//! A child retries within the budget in [`Cx::backoff`]; the parent decides which budget that
//! is ([`Cx::with_backoff`]), so one operation (or one phase of it) has one budget however
//! many children share it. [`Budgeted`] gives a top-level machine its own budget.
//!
//! Background work (committing secondaries, heartbeats, asynchronous cleanup) is handed to the
//! executor with [`Effect::Spawn`]: a [`Detached`] machine that runs on its own, with its own
//! budget, until it finishes or the client closes. The spawning machine gets no outcome.

use std::time::Duration;

use crate::backoff::Backoffer;
use crate::config::Config;
use crate::error::{Delivery, Error};
use crate::key::Key;
use crate::options::ContextOptions;
use crate::region::{Region, RegionId, Store, StoreId};
use crate::region_cache::RegionCache;
use crate::rng::Rng;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::store_cache::StoreCache;
use crate::time::Instant;
use crate::timestamp::Timestamp;
use crate::txn::TxnStatusCache;

/// Identifies one effect of one operation; allocated by [`Cx::next_id`], so ids are unique
/// across the machines that make up an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EffectId(pub u64);

/// Which region to look up.
///
/// As the question of an [`Effect::Locate`] it is always one PD request: `Key` is
/// `GetRegion`, `Before` is `GetPrevRegion`, `Id` is `GetRegionByID`. `EndKey` is only asked of
/// the `Locate` machine, which answers it with those requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocateQuery {
    /// The region holding this key (`GetRegion`).
    Key(Key),
    /// The region holding the keys just below this key: the region of the key unless the key
    /// starts it, then the previous one; an empty key means the last region.
    EndKey(Key),
    /// The region just before the one holding this key (`GetPrevRegion`).
    Before(Key),
    /// The region with this id (`GetRegionByID`).
    Id(RegionId),
}

impl LocateQuery {
    /// Whether `region` answers the query (`Before(k)`: the region that ends at `k`).
    pub fn matches(&self, region: &Region) -> bool {
        match self {
            LocateQuery::Key(k) => region.contains(k),
            LocateQuery::EndKey(k) => region.contains_end_key(k),
            LocateQuery::Before(k) => !k.is_empty() && region.range.end() == k,
            LocateQuery::Id(id) => region.id == *id,
        }
    }
}

/// Something a machine needs done.
#[derive(Debug)]
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
    /// Run `task` in the background, detached from the machine that asks. Never answered:
    /// the spawning machine goes on at once (the id only keeps effect ids unique).
    Spawn {
        /// The effect's id.
        id: EffectId,
        /// The machine to run.
        task: Detached,
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
            | Effect::Sleep { id, .. }
            | Effect::Spawn { id, .. } => *id,
        }
    }

    /// Whether the machine that emitted this effect waits for an outcome (all but `Spawn`).
    pub fn expects_outcome(&self) -> bool {
        !matches!(self, Effect::Spawn { .. })
    }
}

/// A machine run in the background ([`Effect::Spawn`]): it owns everything it needs,
/// including its backoff budget, and produces nothing but its effects.
pub struct Detached {
    name: &'static str,
    backoff: Backoffer,
    machine: Box<dyn Machine<Output = ()> + Send>,
}

impl Detached {
    /// Wraps `machine`, which retries within `backoff`; `name` says what it does, for logs
    /// and tests.
    pub fn new(
        name: &'static str,
        backoff: Backoffer,
        machine: impl Machine<Output = ()> + Send + 'static,
    ) -> Self {
        Detached {
            name,
            backoff,
            machine: Box::new(machine),
        }
    }

    /// What the task does.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("name", &self.name)
            .finish()
    }
}

impl Machine for Detached {
    type Output = ();

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<()> {
        self.machine.poll(&mut cx.with_backoff(&mut self.backoff))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        self.machine
            .handle(&mut cx.with_backoff(&mut self.backoff), id, outcome)
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
    /// The same step with its output (if done) mapped through `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Effect(effect) => Step::Effect(effect),
            Step::Wait => Step::Wait,
            Step::Done(output) => Step::Done(f(output)),
        }
    }
}

/// Polls a child machine from a parent's `poll`: evaluates to the child's output when it is
/// done, and otherwise returns the child's effect (or `Wait`) from the enclosing function.
///
/// ```ignore
/// let region = ready!(self.locate.poll(cx))?;
/// ```
#[macro_export]
macro_rules! ready {
    ($step:expr) => {
        match $step {
            $crate::machine::Step::Done(output) => output,
            $crate::machine::Step::Effect(effect) => {
                return $crate::machine::Step::Effect(effect);
            }
            $crate::machine::Step::Wait => return $crate::machine::Step::Wait,
        }
    };
}

/// What a machine may read and update during one call.
pub struct Cx<'a> {
    /// The current time.
    pub now: Instant,
    /// The operation's random generator (forked from the client's seed when the operation
    /// started, so operations stay deterministic whatever runs beside them).
    pub rng: &'a mut Rng,
    /// The client's configuration.
    pub config: &'a Config,
    /// The shared region cache (shared by reference: it locks inside, briefly, per call).
    pub regions: &'a RegionCache,
    /// The shared store cache (likewise).
    pub stores: &'a StoreCache,
    /// Decided transaction outcomes, shared by every lock resolution (likewise).
    pub txn_statuses: &'a TxnStatusCache,
    /// The `Context` fields every request of this operation carries (priority, isolation,
    /// request source, ...), from its options.
    pub context: &'a ContextOptions,
    /// The next effect id to hand out.
    pub ids: &'a mut u64,
    /// The budget that retries of the current machine sleep against.
    pub backoff: &'a mut Backoffer,
}

impl Cx<'_> {
    /// A fresh effect id.
    pub fn next_id(&mut self) -> EffectId {
        *self.ids += 1;
        EffectId(*self.ids)
    }

    /// The same context, with `backoff` as the budget: how a parent makes its children retry
    /// within a budget it owns.
    pub fn with_backoff<'b>(&'b mut self, backoff: &'b mut Backoffer) -> Cx<'b> {
        Cx {
            now: self.now,
            rng: self.rng,
            config: self.config,
            regions: self.regions,
            stores: self.stores,
            txn_statuses: self.txn_statuses,
            context: self.context,
            ids: self.ids,
            backoff,
        }
    }

    /// Sleeps `kind` within the budget: the sleep effect to emit (its id allocated), or the
    /// error that ends the operation when the budget is spent.
    pub fn backoff_sleep(
        &mut self,
        kind: crate::backoff::BackoffKind,
        max: Option<Duration>,
        error: &Error,
    ) -> Result<Effect, Error> {
        let duration = self.backoff.next_sleep_capped(kind, max, error, self.rng)?;
        Ok(Effect::Sleep {
            id: self.next_id(),
            duration,
        })
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

/// A machine with a budget of its own: its children retry within `backoff` rather than within
/// whatever budget the caller's context carries. Top-level operations are built this way.
#[derive(Debug)]
pub struct Budgeted<M> {
    backoff: Backoffer,
    inner: M,
}

impl<M> Budgeted<M> {
    /// Runs `inner` within `backoff`.
    pub fn new(backoff: Backoffer, inner: M) -> Self {
        Budgeted { backoff, inner }
    }
}

impl<M: Machine> Machine for Budgeted<M> {
    type Output = M::Output;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<M::Output> {
        self.inner.poll(&mut cx.with_backoff(&mut self.backoff))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        self.inner
            .handle(&mut cx.with_backoff(&mut self.backoff), id, outcome)
    }
}

/// Identifies a child in [`Children`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(u64);

/// What [`Children::poll`] found.
#[derive(Debug)]
pub enum ChildStep<M: Machine> {
    /// A child wants this effect executed: pass it up.
    Effect(Effect),
    /// A child finished; it is removed and handed back with its output.
    Done(ChildId, M, M::Output),
    /// Every child waits for an outstanding effect.
    Wait,
    /// There are no children.
    Empty,
}

/// Concurrent children of one parent machine, with the routing of outcomes to the child that
/// asked. Children are polled in the order they were added, so the effects they emit are
/// deterministic.
#[derive(Debug)]
pub struct Children<M> {
    next: u64,
    live: std::collections::BTreeMap<ChildId, M>,
    owners: std::collections::BTreeMap<EffectId, ChildId>,
}

impl<M> Default for Children<M> {
    fn default() -> Self {
        Children {
            next: 0,
            live: Default::default(),
            owners: Default::default(),
        }
    }
}

impl<M: Machine> Children<M> {
    /// No children.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a child; it is polled from the next [`poll`](Self::poll) on.
    pub fn push(&mut self, child: M) -> ChildId {
        let id = ChildId(self.next);
        self.next += 1;
        self.live.insert(id, child);
        id
    }

    /// How many children are running.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no child is running.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The running children, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (ChildId, &M)> {
        self.live.iter().map(|(id, m)| (*id, m))
    }

    /// Polls the children in order: the first effect is returned (and its owner recorded),
    /// or the first child that finished.
    pub fn poll(&mut self, cx: &mut Cx<'_>) -> ChildStep<M> {
        if self.live.is_empty() {
            return ChildStep::Empty;
        }
        let mut finished = None;
        for (id, child) in self.live.iter_mut() {
            match child.poll(cx) {
                Step::Effect(effect) => {
                    if effect.expects_outcome() {
                        self.owners.insert(effect.id(), *id);
                    }
                    return ChildStep::Effect(effect);
                }
                Step::Done(output) => {
                    finished = Some((*id, output));
                    break;
                }
                Step::Wait => {}
            }
        }
        match finished {
            Some((id, output)) => match self.live.remove(&id) {
                Some(child) => {
                    // Outcomes still owed to the child are dropped when they arrive.
                    self.owners.retain(|_, owner| *owner != id);
                    ChildStep::Done(id, child, output)
                }
                // Just found in the map above.
                None => ChildStep::Wait,
            },
            None => ChildStep::Wait,
        }
    }

    /// Whether a running child waits for effect `id`.
    pub fn owns(&self, id: EffectId) -> bool {
        self.owners.contains_key(&id)
    }

    /// Delivers an outcome to the child that asked for it; `false` when no running child
    /// did (a late outcome of a finished or dropped child), and the outcome is dropped.
    pub fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) -> bool {
        let Some(owner) = self.owners.remove(&id) else {
            return false;
        };
        match self.live.get_mut(&owner) {
            Some(child) => {
                child.handle(cx, id, outcome);
                true
            }
            None => false,
        }
    }

    /// Stops every child (their outstanding outcomes will be dropped) and returns them.
    pub fn clear(&mut self) -> Vec<M> {
        self.owners.clear();
        std::mem::take(&mut self.live).into_values().collect()
    }
}
