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
//! use tikv_core::{Backoffer, LocateQuery};
//! use std::time::Duration;
//!
//! let mut h = Harness::new(7);
//! let locate = Locate::new(LocateQuery::Key("k".into()), Backoffer::new("test", Duration::from_secs(1)));
//! let found = h.run(locate, |effect| match effect {
//!     Effect::Locate { .. } => Outcome::Located(Ok(Some(region(1, "", "", &[1])))),
//!     other => panic!("unexpected {other:?}"),
//! });
//! assert_eq!(found.unwrap().id, 1);
//! assert_eq!(h.regions.len(), 1, "PD's answer is cached");
//! ```

use std::time::Duration;

use crate::config::Config;
use crate::key::KeyRange;
use crate::machine::{Cx, Effect, Machine, Outcome, Step};
use crate::region::{Peer, PeerRole, Region, RegionEpoch, Store, StoreState};
use crate::region_cache::RegionCache;
use crate::rng::Rng;
use crate::store_cache::StoreCache;
use crate::time::Instant;

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
    /// Every effect executed so far, in order.
    pub effects: Vec<Effect>,
    ids: u64,
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
            config,
            effects: Vec::new(),
            ids: 0,
        }
    }

    /// Registers stores `1..=n` at addresses `store-<id>`.
    pub fn with_stores(mut self, n: u64) -> Self {
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
            ids: &mut self.ids,
        }
    }

    /// Runs `machine` to completion, answering each effect with `respond` (sleeps are answered
    /// by the harness itself, advancing the clock). Panics if the machine waits with nothing
    /// outstanding, or takes more than 10 000 effects (a livelock in a test).
    pub fn run<M: Machine>(
        &mut self,
        mut machine: M,
        mut respond: impl FnMut(&Effect) -> Outcome,
    ) -> M::Output {
        let mut pending: Vec<Effect> = Vec::new();
        loop {
            loop {
                let mut cx = self.cx();
                match machine.poll(&mut cx) {
                    Step::Effect(e) => pending.push(e),
                    Step::Wait => break,
                    Step::Done(out) => return out,
                }
            }
            assert!(
                !pending.is_empty(),
                "machine waits with no outstanding effect"
            );
            assert!(
                self.effects.len() < 10_000,
                "machine did not finish within 10 000 effects"
            );
            // Answer in issue order; tests that need reordering script it themselves.
            let effect = pending.remove(0);
            let outcome = match &effect {
                Effect::Sleep { duration, .. } => {
                    self.now += *duration;
                    Outcome::Slept
                }
                other => respond(other),
            };
            let id = effect.id();
            self.effects.push(effect);
            let mut cx = self.cx();
            machine.handle(&mut cx, id, outcome);
        }
    }

    /// Total time the machine slept (the clock's advance).
    pub fn slept(&self) -> Duration {
        self.now.since_origin()
    }
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
