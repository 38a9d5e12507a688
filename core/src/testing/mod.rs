//! Helpers for driving machines in tests without any I/O.
//!
//! [`Harness`] owns everything a [`Cx`] borrows (caches, RNG, config, clock) and runs a machine
//! to completion against a responder: a function that answers each effect with an outcome,
//! the way a scripted server would. Sleeps advance the harness's virtual clock. Every effect is
//! recorded, so a test can assert what was sent, in order.
//!
//! ```
//! use tikv_core::machine::{Effect, Outcome};
//! use tikv_core::request::{Locate};
//! use tikv_core::testing::{Harness, region};
//! use tikv_core::LocateQuery;
//!
//! let mut h = Harness::new(7);
//! let locate = Locate::new(LocateQuery::Key("k".into()));
//! let found = h.run(locate, |effect| match effect {
//!     Effect::Locate { .. } => Outcome::Located(Ok(Some(region(1, "", "", &[1])))),
//!     other => panic!("unexpected {other:?}"),
//! });
//! assert_eq!(found.unwrap().id, 1);
//! assert_eq!(h.regions.len(), 1, "PD's answer is cached");
//! ```

use std::time::Duration;

use crate::backoff::{Backoffer, budget};
use crate::config::Config;
use crate::key::KeyRange;
use crate::machine::{Cx, Detached, Effect, Machine, Outcome, Step};
use crate::region::{Peer, PeerRole, Region, RegionEpoch, Store, StoreState};
use crate::region_cache::RegionCache;
use crate::rng::Rng;
use crate::store_cache::StoreCache;
use crate::time::Instant;

pub mod resp;

/// Owns what machines borrow through [`Cx`], and runs them against scripted responders.
pub struct Harness {
    /// The clock; sleeps advance it.
    pub now: Instant,
    /// The seeded RNG.
    pub rng: Rng,
    /// The configuration.
    pub config: Config,
    /// The region cache.
    pub regions: RegionCache,
    /// The store cache.
    pub stores: StoreCache,
    /// The shared cache of decided transaction outcomes.
    pub txn_statuses: crate::txn::TxnStatusCache,
    /// The request context operations run with.
    pub context: crate::options::ContextOptions,
    /// The budget machines run within unless they bring their own ([`crate::machine::Budgeted`]);
    /// 20 s, like a RawKV operation.
    pub backoff: Backoffer,
    /// Every effect executed so far, in order (spawned tasks' effects included; a `Spawn`
    /// itself is recorded too, with its task already taken out to run).
    pub effects: Vec<Effect>,
    /// The names of the background tasks machines spawned, in order.
    pub spawned: Vec<&'static str>,
    ids: u64,
}

/// A background task the harness runs beside the machine under test.
struct Task {
    machine: Detached,
    pending: Vec<Effect>,
    done: bool,
}

impl Harness {
    /// A harness with default configuration and the given RNG seed.
    pub fn new(seed: u64) -> Self {
        let config = Config::default();
        Harness {
            now: Instant::ZERO,
            rng: Rng::seeded(seed),
            regions: RegionCache::new(config.region_cache_ttl, config.region_cache_ttl_jitter),
            stores: StoreCache::new(),
            txn_statuses: crate::txn::TxnStatusCache::default(),
            context: crate::options::ContextOptions::default(),
            config,
            backoff: Backoffer::new("test", budget::RAWKV),
            effects: Vec::new(),
            spawned: Vec::new(),
            ids: 0,
        }
    }

    /// Registers stores `1..=n` at addresses `store-<id>`.
    pub fn with_stores(self, n: u64) -> Self {
        for id in 1..=n {
            self.stores.insert(Store {
                id,
                address: format!("store-{id}"),
                labels: vec![],
                state: StoreState::Up,
            });
        }
        self
    }

    /// Caches `region`.
    pub fn cache(&mut self, region: Region) {
        self.regions.insert(region, self.now, &mut self.rng);
    }

    /// A context borrowing the harness.
    pub fn cx(&mut self) -> Cx<'_> {
        Cx {
            now: self.now,
            rng: &mut self.rng,
            config: &self.config,
            regions: &mut self.regions,
            stores: &mut self.stores,
            txn_statuses: &self.txn_statuses,
            context: &self.context,
            ids: &mut self.ids,
            backoff: &mut self.backoff,
        }
    }

    /// Runs `machine` to completion, answering each effect with `respond` (sleeps are answered
    /// by the harness itself, advancing the clock). Background tasks the machine spawns run
    /// beside it and are driven to completion too before this returns. Effects are answered
    /// one at a time in the order they were issued, the machine's first. Panics if a machine
    /// waits with nothing outstanding, or after 10 000 effects (a livelock in a test).
    pub fn run<M: Machine>(
        &mut self,
        mut machine: M,
        mut respond: impl FnMut(&Effect) -> Outcome,
    ) -> M::Output {
        let mut pending: Vec<Effect> = Vec::new();
        let mut tasks: Vec<Task> = Vec::new();
        let mut output = None;
        loop {
            if output.is_none() {
                loop {
                    let mut cx = self.cx();
                    match machine.poll(&mut cx) {
                        Step::Effect(e) => self.issue(e, &mut pending, &mut tasks),
                        Step::Wait => break,
                        Step::Done(out) => {
                            output = Some(out);
                            break;
                        }
                    }
                }
            }
            for i in 0..tasks.len() {
                while !tasks[i].done {
                    let mut cx = self.cx();
                    match tasks[i].machine.poll(&mut cx) {
                        Step::Effect(e) => {
                            let mut own = std::mem::take(&mut tasks[i].pending);
                            self.issue(e, &mut own, &mut tasks);
                            tasks[i].pending = own;
                        }
                        Step::Wait => break,
                        Step::Done(()) => tasks[i].done = true,
                    }
                }
            }
            assert!(
                self.effects.len() < 10_000,
                "machine did not finish within 10 000 effects"
            );
            // The machine first, then each task, one effect at a time.
            if output.is_none() {
                assert!(
                    !pending.is_empty(),
                    "machine waits with no outstanding effect"
                );
                let effect = pending.remove(0);
                let (id, outcome) = self.answer(effect, &mut respond);
                let mut cx = self.cx();
                machine.handle(&mut cx, id, outcome);
                continue;
            }
            let Some(task) = tasks.iter_mut().find(|t| !t.done) else {
                // Only reached with the output set.
                return output.expect("the machine finished");
            };
            assert!(
                !task.pending.is_empty(),
                "spawned task waits with no outstanding effect"
            );
            let effect = task.pending.remove(0);
            let (id, outcome) = self.answer(effect, &mut respond);
            let mut cx = self.cx();
            task.machine.handle(&mut cx, id, outcome);
        }
    }

    /// Queues an effect for answering, or starts a spawned task.
    fn issue(&mut self, effect: Effect, pending: &mut Vec<Effect>, tasks: &mut Vec<Task>) {
        match effect {
            Effect::Spawn { id, task } => {
                self.spawned.push(task.name());
                // Recorded with a finished stand-in: the real task runs below.
                let name = task.name();
                tasks.push(Task {
                    machine: task,
                    pending: Vec::new(),
                    done: false,
                });
                self.effects.push(Effect::Spawn {
                    id,
                    task: Detached::new(name, Backoffer::new(name, Duration::ZERO), Finished),
                });
            }
            other => pending.push(other),
        }
    }

    /// Answers one effect (sleeps by advancing the clock) and records it.
    fn answer(
        &mut self,
        effect: Effect,
        respond: &mut impl FnMut(&Effect) -> Outcome,
    ) -> (crate::machine::EffectId, Outcome) {
        let outcome = match &effect {
            Effect::Sleep { duration, .. } => {
                self.now += *duration;
                Outcome::Slept
            }
            other => respond(other),
        };
        let id = effect.id();
        self.effects.push(effect);
        (id, outcome)
    }

    /// Total time the machine slept (the clock's advance).
    pub fn slept(&self) -> Duration {
        self.now.since_origin()
    }
}

/// A task that is already done (stands in for a spawned task in [`Harness::effects`]).
struct Finished;

impl Machine for Finished {
    type Output = ();
    fn poll(&mut self, _: &mut Cx<'_>) -> Step<()> {
        Step::Done(())
    }
    fn handle(&mut self, _: &mut Cx<'_>, _: crate::machine::EffectId, _: Outcome) {}
}

/// A region `[start, end)` at epoch (1, 1) with one voter peer per listed store (peer id
/// `id * 100 + store`), led by the first.
pub fn region(id: u64, start: &str, end: &str, stores: &[u64]) -> Region {
    let peers: Vec<Peer> = stores
        .iter()
        .map(|&s| Peer {
            id: id * 100 + s,
            store_id: s,
            role: PeerRole::Voter,
        })
        .collect();
    Region {
        id,
        range: KeyRange::new(start, end),
        epoch: RegionEpoch {
            conf_ver: 1,
            version: 1,
        },
        leader: peers.first().copied(),
        peers,
    }
}
