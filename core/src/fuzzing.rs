//! Entry points for fuzzing (the `fuzz/` targets) and for replaying the fuzz corpus in
//! `cargo test`: each takes arbitrary bytes and must never panic or loop forever.
//!
//! - [`region_cache_ops`]: a sequence of cache operations decoded from the bytes; the cache's
//!   invariants must hold after every step.
//! - [`machines_with_responses`]: the core's machines (raw reads and scans, snapshot reads and
//!   scans, the committer, the lock resolver) driven to completion against a "server" whose
//!   every answer is decoded from the bytes (any shape: region errors, key errors, garbage);
//!   each must end in a result or an error within a bounded number of effects.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tikv_proto::{errorpb, metapb};

use crate::config::Config;
use crate::key::{Key, KeyRange};
use crate::machine::{Cx, Effect, Machine, Outcome, Step};
use crate::region::{Peer, PeerRole, Region, RegionEpoch, RegionVerId, Store, StoreState};
use crate::region_cache::RegionCache;
use crate::rng::Rng;
use crate::rpc::TikvResponse;
use crate::store_cache::StoreCache;
use crate::time::Instant;

/// A cursor over the fuzzer's bytes; runs dry as zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn key(&mut self) -> Key {
        // Short keys from a small alphabet, so that operations collide often.
        let len = self.u8() % 3;
        Key::from((0..len).map(|_| b'a' + self.u8() % 6).collect::<Vec<u8>>())
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn region(id: u64, a: Key, b: Key, version: u64, conf_ver: u64) -> Region {
    let (start, end) = if b.is_empty() || a < b {
        (a, b)
    } else {
        (b, a)
    };
    Region {
        id,
        range: KeyRange::new(start, end),
        epoch: RegionEpoch { conf_ver, version },
        peers: (1..=3)
            .map(|s| Peer {
                id: id * 10 + s,
                store_id: s,
                role: PeerRole::Voter,
            })
            .collect(),
        leader: None,
    }
}

/// Applies operations decoded from `data` to a region cache, checking its invariants after
/// each one. Panics (for the fuzzer to report) when an invariant breaks.
pub fn region_cache_ops(data: &[u8]) {
    let mut input = Input(data);
    let cache = RegionCache::new(Duration::from_secs(10), Duration::from_secs(1));
    let mut rng = Rng::seeded(1);
    let mut now = Instant::ZERO;
    while !input.is_empty() {
        let op = input.u8();
        let id = u64::from(input.u8() % 8) + 1;
        match op % 8 {
            0 | 1 => {
                let (a, b) = (input.key(), input.key());
                let (v, c) = (u64::from(input.u8() % 4), u64::from(input.u8() % 4));
                cache.insert(region(id, a, b, v, c), now, &mut rng);
            }
            2 => {
                let k = input.key();
                if let Some(r) = cache.locate_key(&k, now) {
                    assert!(r.contains(&k), "located region {} does not hold {k}", r.id);
                }
            }
            3 => {
                let k = input.key();
                if let Some(r) = cache.locate_end_key(&k, now) {
                    assert!(
                        r.contains_end_key(&k),
                        "region {} does not end-contain {k}",
                        r.id
                    );
                }
            }
            4 => {
                let ver = RegionVerId {
                    id,
                    conf_ver: u64::from(input.u8() % 4),
                    version: u64::from(input.u8() % 4),
                };
                cache.invalidate(ver);
            }
            5 => {
                let ver = RegionVerId {
                    id,
                    conf_ver: u64::from(input.u8() % 4),
                    version: u64::from(input.u8() % 4),
                };
                cache.update_leader(ver, u64::from(input.u8() % 5));
            }
            6 => now += Duration::from_secs(u64::from(input.u8() % 16)),
            _ => {
                let (a, b) = (input.key(), input.key());
                let range = if b.is_empty() || a < b {
                    KeyRange::new(a, b)
                } else {
                    KeyRange::new(b, a)
                };
                if let Ok(parts) = cache.split_range(&range, now) {
                    for (r, part) in parts {
                        assert!(
                            r.range.intersect(&range) == Some(part.clone()),
                            "part {part} of {range} not in {}",
                            r.range
                        );
                    }
                }
            }
        }
        if let Err(e) = cache.check_invariants() {
            panic!("region cache invariant broken: {e}");
        }
    }
}

/// Drives `machine` to completion against answers decoded from `input`: PD lookups get a
/// region decoded from the bytes, RPCs get a response of the right method decoded from the
/// bytes (with, half the time, a region error decoded from the bytes), timestamps are read
/// from the bytes. Returns the number of effects; panics if the machine waits with nothing
/// outstanding or does not finish within 10 000 effects.
fn drive<M: Machine>(mut machine: M, input: &mut Input<'_>) -> usize {
    let config = Config::default();
    let mut regions = RegionCache::new(config.region_cache_ttl, config.region_cache_ttl_jitter);
    let mut stores = StoreCache::new();
    let txn_statuses = crate::txn::TxnStatusCache::default();
    let context = crate::options::ContextOptions::default();
    let mut rng = Rng::seeded(u64::from(input.u8()));
    let mut ids = 0;
    let mut now = Instant::ZERO;
    let mut backoff = crate::backoff::Backoffer::new("fuzz", std::time::Duration::from_secs(20));
    let mut pending: Vec<Effect> = Vec::new();
    let mut spawned = Vec::new();
    for effects in 0..10_000 {
        loop {
            let mut cx = Cx {
                now,
                rng: &mut rng,
                config: &config,
                regions: &mut regions,
                stores: &mut stores,
                txn_statuses: &txn_statuses,
                context: &context,
                ids: &mut ids,
                backoff: &mut backoff,
            };
            match machine.poll(&mut cx) {
                Step::Effect(Effect::Spawn { task, .. }) => spawned.push(task),
                Step::Effect(e) => pending.push(e),
                Step::Wait => break,
                Step::Done(_) => {
                    // Background tasks meet the rest of the input.
                    return effects + spawned.into_iter().map(|t| drive(t, input)).sum::<usize>();
                }
            }
        }
        let Some(effect) = (!pending.is_empty()).then(|| pending.remove(0)) else {
            panic!("machine waits with nothing outstanding");
        };
        let outcome = match &effect {
            // Taken out when polled; never queued.
            Effect::Spawn { .. } => continue,
            Effect::Sleep { duration, .. } => {
                now += *duration;
                Outcome::Slept
            }
            Effect::Locate { .. } => {
                let len = usize::from(input.u8());
                let meta = metapb::Region::decode(input.take(len)).unwrap_or_default();
                let leader = meta.peers.first().cloned();
                Outcome::Located(Ok(Some(Region::from_meta(&meta, leader.as_ref()))))
            }
            Effect::ResolveStore { store_id, .. } => Outcome::Store(Ok(Store {
                id: *store_id,
                address: format!("s{store_id}"),
                labels: vec![],
                state: if input.u8() % 8 == 0 {
                    StoreState::Tombstone
                } else {
                    StoreState::Up
                },
            })),
            Effect::Rpc { request, .. } => {
                let len = usize::from(input.u8());
                let body = Bytes::copy_from_slice(input.take(len));
                match request.decode_response(body) {
                    Ok(mut response) => {
                        if input.u8() % 2 == 0 {
                            let len = usize::from(input.u8());
                            let e = errorpb::Error::decode(Bytes::copy_from_slice(input.take(len)))
                                .unwrap_or_default();
                            set_region_error(&mut response, e);
                        }
                        Outcome::Response(Box::new(response))
                    }
                    Err(_) => Outcome::RpcFailed {
                        delivery: if input.u8() % 2 == 0 {
                            crate::error::Delivery::NotSent
                        } else {
                            crate::error::Delivery::MaybeDelivered
                        },
                        error: crate::error::Error::Cancelled("garbage response".into()),
                    },
                }
            }
            Effect::Tso { .. } => match input.u8() {
                0 => Outcome::Timestamps(Err(crate::error::Error::Cancelled("no TSO".into()))),
                b => Outcome::Timestamps(Ok(crate::timestamp::Timestamp::compose(
                    1000 + u64::from(b),
                    0,
                ))),
            },
        };
        let id = effect.id();
        let mut cx = Cx {
            now,
            rng: &mut rng,
            config: &config,
            regions: &mut regions,
            stores: &mut stores,
            txn_statuses: &txn_statuses,
            context: &context,
            ids: &mut ids,
            backoff: &mut backoff,
        };
        machine.handle(&mut cx, id, outcome);
    }
    panic!("machine did not finish within 10 000 effects");
}

/// Puts a region error into a response of any method that can carry one.
fn set_region_error(response: &mut TikvResponse, e: errorpb::Error) {
    macro_rules! set {
        ($($v:ident),*) => {
            match response {
                $(TikvResponse::$v(r) => r.region_error = Some(Box::new(e)),)*
                _ => {}
            }
        };
    }
    set!(
        RawGet,
        RawBatchGet,
        RawScan,
        KvGet,
        KvBatchGet,
        KvScan,
        KvPrewrite,
        KvCommit,
        KvBatchRollback,
        KvCheckTxnStatus,
        KvResolveLock
    );
}

/// Runs one of the core machines (chosen by the first byte) against answers decoded from
/// `data`: a raw get, a raw batch get, a raw scan (either way), a snapshot get, a snapshot
/// batch get, a snapshot scan, a commit of three keys, or a lock resolution; under API V1
/// or (when the first byte is 128 or more) in an API V2 keyspace, where the answers' keys
/// are mostly outside it. Returns the number of effects it took.
pub fn machines_with_responses(data: &[u8]) -> usize {
    use crate::timestamp::Timestamp;
    use crate::txn::{
        Committer, Lock, Mutation, ResolveLocks, SnapshotBatchGet, SnapshotGet, SnapshotScan,
        WriteBuffer,
    };
    let mut config = Config::default();
    if data.first().is_some_and(|b| *b >= 128) {
        config.api_version = crate::config::ApiVersion::V2;
        config = config.bind(crate::config::KeyMode::Txn, Some(1));
    }
    let codec = config.keyspace_codec();
    let mut input = Input(data);
    let ts = Timestamp::compose(1000, 0);
    let keys = || vec![Key::from("a"), Key::from("k"), Key::from("z")];
    match input.u8() % 12 {
        0 => drive(crate::raw::get(&config, Key::from("k"), ""), &mut input),
        1 => drive(crate::raw::batch_get(&config, keys(), ""), &mut input),
        2 | 3 => {
            match crate::raw::scan(&config, KeyRange::all(), 10, false, data.len() % 2 == 0, "") {
                Ok(m) => drive(m, &mut input),
                Err(_) => 0,
            }
        }
        4 => drive(SnapshotGet::new(codec, Key::from("k"), ts), &mut input),
        5 => drive(SnapshotBatchGet::new(codec, keys(), ts, 2), &mut input),
        6 => drive(
            SnapshotScan::new(codec, ts, KeyRange::all(), 10, false, data.len() % 2 == 0),
            &mut input,
        ),
        7 => {
            let mut buffer = WriteBuffer::new();
            for k in keys() {
                buffer.set(k, Mutation::Put("v".into()));
            }
            drive(Committer::new(&config, ts, &buffer), &mut input)
        }
        9 => {
            let options = crate::txn::LockOptions::default()
                .with_return_values(data.len() % 2 == 0)
                .with_wait(crate::txn::LockWait::Timeout(
                    std::time::Duration::from_millis(50),
                ));
            let m = crate::txn::LockKeys::new(
                codec,
                keys(),
                Key::from("a"),
                ts,
                ts.add_ms(10),
                data.len() % 3 == 0,
                20_000,
                &options,
            );
            drive(m, &mut input)
        }
        10 => drive(
            crate::txn::ScanLocks::new(codec, KeyRange::all(), ts, 2000),
            &mut input,
        ),
        11 => drive(
            crate::txn::CheckTxnStatus::new(codec, Key::from("a"), ts, ts.add_ms(5)),
            &mut input,
        ),
        _ => {
            let lock = Lock {
                key: "k".into(),
                primary: "a".into(),
                start_ts: Timestamp::compose(900, 0),
                ttl_ms: 50,
                txn_size: 2,
                use_async_commit: false,
                lock_type: 0,
                for_update_ts: Timestamp::ZERO,
                min_commit_ts: Timestamp::ZERO,
            };
            let async_commit = Lock {
                key: "q".into(),
                start_ts: Timestamp::compose(901, 0),
                use_async_commit: true,
                ..lock.clone()
            };
            let locks = vec![lock.clone(), async_commit, lock];
            if input.u8() & 1 == 1 {
                drive(ResolveLocks::for_write(locks, ts), &mut input)
            } else {
                drive(ResolveLocks::for_read(locks, ts), &mut input)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the checked-in fuzz corpus (and a few fixed inputs) through both harnesses.
    #[test]
    fn corpus_replays_without_panics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let mut inputs: Vec<(String, Vec<u8>)> = vec![
            ("empty".into(), vec![]),
            ("zeros".into(), vec![0; 64]),
            ("ones".into(), vec![0xff; 64]),
            ("ramp".into(), (0..=255).collect()),
        ];
        for target in ["region_cache", "machines"] {
            if let Ok(dir) = std::fs::read_dir(root.join(target)) {
                let mut files: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                files.sort();
                for f in files {
                    inputs.push((f.display().to_string(), std::fs::read(&f).unwrap()));
                }
            }
        }
        for (name, data) in &inputs {
            region_cache_ops(data);
            let effects = machines_with_responses(data);
            assert!(effects < 10_000, "{name}");
        }
    }
}

#[cfg(test)]
mod random_smoke {
    #[test]
    #[ignore = "long: run by hand"]
    fn random_inputs_never_panic() {
        let mut rng = crate::rng::Rng::seeded(42);
        let n: u64 = std::env::var("FUZZ_ITERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        for _ in 0..n {
            let len = rng.below(512) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let effects = super::machines_with_responses(&data);
            assert!(effects < 10_000, "{data:?}");
        }
    }
}
