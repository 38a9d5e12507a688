//! Property test: seeded random interleavings of a few transactions, driven through the
//! cluster's requests as a client would send them, checked against a tiny reference model
//! of snapshot isolation.
//!
//! Each seed runs optimistic 2PC and pipelined (flush) transactions over four keys in two
//! regions, interleaving prewrites/flushes, commits (primary first, then secondaries or a
//! range resolve), client-side aborts, abandoned transactions (a crashed client), reads
//! and scans that resolve the locks they meet (check-txn-status, then resolve-lock), and
//! GC rounds (resolve every lock below the safe point, then collect). The model only
//! learns what the client learns: a transaction is committed once its primary commit
//! succeeded, at that commit ts.
//!
//! Invariants:
//! - a successful read at `ts` returns exactly the latest version the model has committed
//!   at or below `ts` — when it happens, and again at the end (no later commit may slip
//!   under an earlier read);
//! - check-txn-status never contradicts the model (no transaction both committed and
//!   rolled back; a reported commit ts is the one the client committed with);
//! - at the end, after resolving every lock: no lock is left, every committed transaction
//!   has its commit record on every key, no key has both a commit and a rollback record of
//!   one start ts, every commit record belongs to a committed transaction, committed data
//!   is readable at every ts not below the GC safe point, and no two committed
//!   transactions that overlap in time wrote the same key.
//!
//! A failure names the seed and prints the trace of its steps; the same seed always
//! replays the same run.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::rng::SplitMix64;

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];
/// Lock TTL in milliseconds of physical time: short, so locks expire during a run.
const TTL_MS: u64 = 120;
const SEEDS: u64 = 300;
const STEPS: usize = 120;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Prewriting,
    Committing,
    Secondaries,
    Finished,
}

#[derive(Debug)]
struct Txn {
    start: u64,
    /// `keys[0]` is the primary.
    keys: Vec<&'static str>,
    values: BTreeMap<&'static str, Option<Bytes>>,
    pipelined: bool,
    prewritten: usize,
    generation: u64,
    commit_ts: u64,
    next_secondary: usize,
    phase: Phase,
}

struct Sim {
    t: T,
    rng: SplitMix64,
    phys: u64,
    logical: u64,
    issued: Vec<u64>,
    txns: Vec<Txn>,
    /// start ts → commit ts of transactions whose primary commit succeeded.
    committed: BTreeMap<u64, u64>,
    rolled_back: BTreeSet<u64>,
    reads: Vec<(&'static str, u64, Option<Bytes>)>,
    safe_point: u64,
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut t = T::new();
        t.c.split_at(&encode_memcomparable(b"k2")).unwrap();
        Sim {
            t,
            rng: SplitMix64::new(seed),
            phys: 1_000,
            logical: 0,
            issued: Vec::new(),
            txns: Vec::new(),
            committed: BTreeMap::new(),
            rolled_back: BTreeSet::new(),
            reads: Vec::new(),
            safe_point: 0,
            trace: Vec::new(),
        }
    }

    /// A fresh, strictly increasing timestamp; physical time moves by 0..12 ms.
    fn tso(&mut self) -> u64 {
        self.phys += self.rng.below(12);
        self.logical += 1;
        let ts = ts(self.phys, self.logical);
        self.issued.push(ts);
        ts
    }

    fn fail(&self, msg: String) -> ! {
        panic!("{msg}\ntrace:\n{}", self.trace.join("\n"));
    }

    /// The model's answer to a read of `key` at `ts`.
    fn expected(&self, key: &str, ts: u64) -> Option<Bytes> {
        self.txns
            .iter()
            .filter_map(|x| {
                let c = *self.committed.get(&x.start)?;
                let v = x.values.get(key)?;
                (c <= ts).then_some((c, v.clone()))
            })
            .max_by_key(|(c, _)| *c)
            .and_then(|(_, v)| v)
    }

    fn index_of(&self, start: u64) -> Option<usize> {
        self.txns.iter().position(|x| x.start == start)
    }

    fn step(&mut self) {
        match self.rng.below(20) {
            0..=3 => self.begin(),
            4..=11 => {
                let live: Vec<usize> = (0..self.txns.len())
                    .filter(|&i| self.txns[i].phase != Phase::Finished)
                    .collect();
                if !live.is_empty() {
                    let i = live[self.rng.below(live.len() as u64) as usize];
                    if self.rng.chance(1, 25) {
                        self.trace.push(format!("abandon {}", self.txns[i].start));
                        self.txns[i].phase = Phase::Finished;
                    } else {
                        self.advance(i);
                    }
                }
            }
            12..=15 => self.read(),
            16..=18 => self.scan(),
            _ => self.gc(),
        }
    }

    fn begin(&mut self) {
        let live = self
            .txns
            .iter()
            .filter(|x| x.phase != Phase::Finished)
            .count();
        if live >= 3 {
            return;
        }
        let start = self.tso();
        let mut keys = KEYS.to_vec();
        let n = 1 + self.rng.below(3) as usize;
        let mut chosen = Vec::new();
        for _ in 0..n {
            let j = self.rng.below(keys.len() as u64) as usize;
            chosen.push(keys.remove(j));
        }
        let mut values = BTreeMap::new();
        for k in &chosen {
            let v = if self.rng.chance(1, 4) {
                None
            } else {
                Some(Bytes::from(format!("{start}/{k}")))
            };
            values.insert(*k, v);
        }
        let pipelined = self.rng.chance(1, 3);
        self.trace.push(format!(
            "begin {start} keys {chosen:?} pipelined {pipelined}"
        ));
        self.txns.push(Txn {
            start,
            keys: chosen,
            values,
            pipelined,
            prewritten: 0,
            generation: 0,
            commit_ts: 0,
            next_secondary: 1,
            phase: Phase::Prewriting,
        });
    }

    fn mutation(key: &str, v: &Option<Bytes>) -> Mutation {
        match v {
            Some(v) => Mutation {
                op: Op::Put as i32,
                key: b(key),
                value: v.clone(),
                ..Default::default()
            },
            None => op(Op::Del, key),
        }
    }

    fn advance(&mut self, i: usize) {
        match self.txns[i].phase {
            Phase::Prewriting if self.txns[i].pipelined => self.flush(i),
            Phase::Prewriting => self.prewrite(i),
            Phase::Committing => self.commit_primary(i),
            Phase::Secondaries => self.commit_secondary(i),
            Phase::Finished => {}
        }
    }

    fn prewrite(&mut self, i: usize) {
        let x = &self.txns[i];
        let key = x.keys[x.prewritten];
        let mut req = pw(
            vec![Self::mutation(key, &x.values[key])],
            x.keys[0],
            x.start,
        );
        req.lock_ttl = TTL_MS;
        // As client-go does: readers may then push the primary's min_commit_ts.
        req.min_commit_ts = x.start + 1;
        let (s, ctx) = self.t.ctx(key);
        req.context = Some(ctx);
        let r = self.t.c.tikv::<t::KvPrewrite>(s, req, NOW).unwrap();
        self.trace
            .push(format!("prewrite {} {key}: {:?}", x.start, r.errors));
        self.after_prewrite(i, &r.errors);
    }

    fn flush(&mut self, i: usize) {
        let done = self.txns[i].prewritten as u64;
        // Sometimes a later generation rewrites an already flushed key.
        let rewrite = (done > 0 && self.rng.chance(1, 4)).then(|| self.rng.below(done));
        let x = &mut self.txns[i];
        x.generation += 1;
        let key = x.keys[rewrite.map_or(x.prewritten, |j| j as usize)];
        let rewrite = rewrite.is_some();
        if rewrite {
            let v = Some(Bytes::from(format!("{}/{key}/g{}", x.start, x.generation)));
            x.values.insert(key, v);
        }
        let (s, ctx) = self.t.ctx(key);
        let req = kvrpcpb::FlushRequest {
            context: Some(ctx),
            mutations: vec![Self::mutation(key, &x.values[key])],
            primary_key: b(x.keys[0]),
            start_ts: x.start,
            generation: x.generation,
            lock_ttl: TTL_MS,
            ..Default::default()
        };
        let r = self.t.c.tikv::<t::KvFlush>(s, req, NOW).unwrap();
        self.trace.push(format!(
            "flush {} {key} gen {}: {:?}",
            x.start, x.generation, r.errors
        ));
        if rewrite && r.errors.is_empty() {
            return;
        }
        self.after_prewrite(i, &r.errors);
    }

    fn after_prewrite(&mut self, i: usize, errors: &[KeyError]) {
        if errors.is_empty() {
            self.txns[i].prewritten += 1;
            if self.txns[i].prewritten == self.txns[i].keys.len() {
                // The commit ts is fetched now and used later: readers in between may
                // push the primary's min_commit_ts past it.
                self.txns[i].commit_ts = self.tso();
                self.txns[i].phase = Phase::Committing;
            }
        } else if errors[0].locked.is_some() && self.rng.chance(1, 2) {
            // Wait: somebody may resolve the lock.
        } else {
            self.abort(i);
        }
    }

    /// The client gives up before committing: roll every key back.
    fn abort(&mut self, i: usize) {
        let start = self.txns[i].start;
        if self.committed.contains_key(&start) {
            self.fail(format!("aborting committed txn {start}"));
        }
        for key in self.txns[i].keys.clone() {
            let r = self.t.rollback(&[key], start);
            if r.error.is_some() {
                self.fail(format!("rollback of {start} on {key}: {r:?}"));
            }
        }
        self.trace.push(format!("abort {start}"));
        self.rolled_back.insert(start);
        self.txns[i].phase = Phase::Finished;
    }

    fn commit_primary(&mut self, i: usize) {
        let commit_ts = self.txns[i].commit_ts;
        let (start, primary) = (self.txns[i].start, self.txns[i].keys[0]);
        let r = self.t.commit(&[primary], start, commit_ts);
        self.trace
            .push(format!("commit {start} at {commit_ts}: {:?}", r.error));
        match r.error {
            None => {
                if self.rolled_back.contains(&start) {
                    self.fail(format!("txn {start} committed after a rollback"));
                }
                self.committed.insert(start, commit_ts);
                self.txns[i].phase = Phase::Secondaries;
            }
            Some(e) if e.txn_lock_not_found.is_some() => self.abort(i),
            // A reader pushed min_commit_ts: try again with a newer ts.
            Some(e) if e.commit_ts_expired.is_some() => self.txns[i].commit_ts = self.tso(),
            Some(e) => self.fail(format!("commit of {start}: {e:?}")),
        }
    }

    fn commit_secondary(&mut self, i: usize) {
        let x = &self.txns[i];
        let (start, commit_ts) = (x.start, x.commit_ts);
        if x.pipelined {
            // Pipelined: every lock of the transaction, region by region.
            for key in ["k0", "k2"] {
                self.resolve(key, start, commit_ts);
            }
            self.txns[i].phase = Phase::Finished;
            return;
        }
        if x.next_secondary >= x.keys.len() {
            self.txns[i].phase = Phase::Finished;
            return;
        }
        let key = x.keys[x.next_secondary];
        let r = self.t.commit(&[key], start, commit_ts);
        self.trace.push(format!(
            "commit secondary {start} {key} at {commit_ts}: {:?}",
            r.error
        ));
        if r.error.is_some() {
            self.fail(format!("secondary commit of {start}: {r:?}"));
        }
        self.txns[i].next_secondary += 1;
    }

    /// KvResolveLock of one transaction over the region holding `key`.
    fn resolve(&mut self, key: &str, start: u64, commit_ts: u64) {
        let (s, ctx) = self.t.ctx(key);
        let req = kvrpcpb::ResolveLockRequest {
            context: Some(ctx),
            start_version: start,
            commit_version: commit_ts,
            ..Default::default()
        };
        let r = self.t.c.tikv::<t::KvResolveLock>(s, req, NOW).unwrap();
        self.trace.push(format!(
            "resolve {start}->{commit_ts} near {key}: {:?}",
            r.error
        ));
        if r.error.is_some() || r.region_error.is_some() {
            self.fail(format!("resolve lock: {r:?}"));
        }
    }

    /// What a reader does with a lock: ask the primary, then resolve. `force` expires any
    /// lock (the end of the run, GC).
    fn resolve_lock(&mut self, lock: &kvrpcpb::LockInfo, caller_ts: u64, force: bool) {
        let current = if force {
            ts(self.phys + 1_000_000, 0)
        } else {
            self.tso()
        };
        let rollback_if_not_exist = force || self.rng.chance(1, 2);
        let primary = String::from_utf8_lossy(&lock.primary_lock).into_owned();
        let r = self.t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            primary_key: lock.primary_lock.clone(),
            lock_ts: lock.lock_version,
            caller_start_ts: caller_ts,
            current_ts: current,
            rollback_if_not_exist,
            ..Default::default()
        });
        let start = lock.lock_version;
        self.trace.push(format!(
            "check {start} on {primary}: commit {} action {:?} ttl {} err {:?}",
            r.commit_version,
            r.action(),
            r.lock_ttl,
            r.error
        ));
        if r.error.is_some() {
            if force {
                self.fail(format!("forced check of {start}: {r:?}"));
            }
            return;
        }
        let key = String::from_utf8_lossy(&lock.key).into_owned();
        if r.commit_version > 0 {
            if self.committed.get(&start) != Some(&r.commit_version) {
                self.fail(format!(
                    "txn {start} reported committed at {}, model {:?}",
                    r.commit_version,
                    self.committed.get(&start)
                ));
            }
            self.resolve(&key, start, r.commit_version);
        } else if r.lock_ttl == 0 {
            if self.committed.contains_key(&start) {
                self.fail(format!("committed txn {start} reported rolled back"));
            }
            self.rolled_back.insert(start);
            self.resolve(&key, start, 0);
        } else if force {
            self.fail(format!("forced check left {start} alive: {r:?}"));
        }
    }

    /// A snapshot ts: usually fresh, sometimes an older one not below the safe point.
    fn read_ts(&mut self) -> u64 {
        let old: Vec<u64> = self
            .issued
            .iter()
            .copied()
            .filter(|&t| t > self.safe_point)
            .collect();
        if !old.is_empty() && self.rng.chance(1, 3) {
            old[self.rng.below(old.len() as u64) as usize]
        } else {
            self.tso()
        }
    }

    fn check_read(&mut self, key: &'static str, ts: u64, got: Option<Bytes>) {
        let want = self.expected(key, ts);
        if got != want {
            self.fail(format!("read {key}@{ts}: got {got:?}, model {want:?}"));
        }
        self.reads.push((key, ts, got));
    }

    fn read(&mut self) {
        let key = KEYS[self.rng.below(KEYS.len() as u64) as usize];
        let ts = self.read_ts();
        let r = self.t.get(key, ts);
        self.trace.push(format!(
            "get {key}@{ts}: {:?} nf {} err {:?}",
            r.value, r.not_found, r.error
        ));
        match r.error {
            Some(e) => match e.locked {
                Some(lock) => self.resolve_lock(&lock, ts, false),
                None => self.fail(format!("get: {e:?}")),
            },
            None => {
                let got = (!r.not_found).then_some(r.value);
                self.check_read(key, ts, got);
            }
        }
    }

    fn scan(&mut self) {
        let (lo, hi) = if self.rng.chance(1, 2) {
            ("k0", "k2")
        } else {
            ("k2", "")
        };
        let ts = self.read_ts();
        let (s, ctx) = self.t.ctx(lo);
        let req = kvrpcpb::ScanRequest {
            context: Some(ctx),
            start_key: b(lo),
            end_key: b(hi),
            limit: 10,
            version: ts,
            ..Default::default()
        };
        let r = self.t.c.tikv::<t::KvScan>(s, req, NOW).unwrap();
        if let Some(e) = &r.error {
            self.fail(format!("scan: {e:?}"));
        }
        let mut locks = Vec::new();
        let mut seen = BTreeMap::new();
        for p in &r.pairs {
            match &p.error {
                Some(e) => match &e.locked {
                    Some(l) => locks.push(l.clone()),
                    None => self.fail(format!("scan pair: {e:?}")),
                },
                None => {
                    seen.insert(p.key.clone(), p.value.clone());
                }
            }
        }
        self.trace.push(format!(
            "scan {lo}..{hi}@{ts}: {seen:?} locks {}",
            locks.len()
        ));
        for key in KEYS {
            let inside = key >= lo && (hi.is_empty() || key < hi);
            let locked = locks.iter().any(|l| l.key[..] == *key.as_bytes());
            if inside && !locked {
                let got = seen.get(key.as_bytes()).cloned();
                self.check_read(key, ts, got);
            }
        }
        if let Some(l) = locks.first() {
            self.resolve_lock(&l.clone(), ts, false);
        }
    }

    /// Every lock in the cluster with `lock_ts < below`.
    fn locks_below(&mut self, below: u64) -> Vec<kvrpcpb::LockInfo> {
        let mut out = Vec::new();
        for key in ["k0", "k2"] {
            let (s, ctx) = self.t.ctx(key);
            let req = kvrpcpb::ScanLockRequest {
                context: Some(ctx),
                max_version: below.saturating_sub(1),
                ..Default::default()
            };
            out.extend(self.t.c.tikv::<t::KvScanLock>(s, req, NOW).unwrap().locks);
        }
        out
    }

    /// A GC round as a client runs it: resolve every lock below the safe point, then
    /// collect. The safe point stays below every running transaction.
    fn gc(&mut self) {
        let now = self.tso();
        let sp = self
            .txns
            .iter()
            .filter(|x| x.phase != Phase::Finished)
            .map(|x| x.start)
            .min()
            .unwrap_or(now)
            - 1;
        if sp <= self.safe_point {
            return;
        }
        for lock in self.locks_below(sp) {
            self.resolve_lock(&lock, 0, true);
        }
        self.trace.push(format!("gc at {sp}"));
        self.t.c.gc_txn(sp);
        self.safe_point = sp;
    }

    fn finish(&mut self) {
        for lock in self.locks_below(u64::MAX) {
            self.resolve_lock(&lock, 0, true);
        }
        if !self.locks_below(u64::MAX).is_empty() {
            self.fail("locks left after resolving everything".to_owned());
        }
        let sp = self.safe_point;
        for key in KEYS {
            let info = self.t.mvcc(key).info.unwrap_or_default();
            let mut commits = BTreeMap::new();
            let mut rollbacks = BTreeSet::new();
            for w in &info.writes {
                if w.r#type == Op::Rollback as i32 {
                    rollbacks.insert(w.start_ts);
                } else {
                    commits.insert(w.start_ts, (w.commit_ts, w.r#type));
                }
            }
            for (start, (commit_ts, ty)) in &commits {
                if rollbacks.contains(start) {
                    self.fail(format!("{key}: txn {start} committed and rolled back"));
                }
                if self.committed.get(start) != Some(commit_ts) {
                    self.fail(format!(
                        "{key}: commit record {start}->{commit_ts} unknown to the model"
                    ));
                }
                let Some(x) = self.index_of(*start).map(|i| &self.txns[i]) else {
                    self.fail(format!("{key}: record of unknown txn {start}"));
                };
                let want = match x.values.get(key) {
                    Some(Some(_)) => Op::Put as i32,
                    Some(None) => Op::Del as i32,
                    None => self.fail(format!("{key}: txn {start} did not write it")),
                };
                if *ty != want {
                    self.fail(format!("{key}: txn {start} record type {ty}"));
                }
            }
            // Every committed writer of the key has its record (unless GC took it).
            for x in &self.txns {
                if let (Some(&c), true) = (self.committed.get(&x.start), x.values.contains_key(key))
                {
                    if c > sp && !commits.contains_key(&x.start) {
                        self.fail(format!("{key}: committed txn {} lost its record", x.start));
                    }
                }
            }
        }
        // Earlier reads still hold, and committed data is readable at every commit ts.
        for (key, ts, got) in std::mem::take(&mut self.reads) {
            if ts > sp && self.expected(key, ts) != got {
                self.fail(format!("read {key}@{ts} no longer matches the model"));
            }
        }
        let mut points: Vec<u64> = self
            .committed
            .values()
            .copied()
            .filter(|&c| c > sp)
            .collect();
        points.push(self.tso());
        for ts in points {
            for key in KEYS {
                let r = self.t.get(key, ts);
                if r.error.is_some() {
                    self.fail(format!("final read {key}@{ts}: {r:?}"));
                }
                self.check_read(key, ts, (!r.not_found).then_some(r.value));
            }
        }
        // Snapshot isolation: committed writers of a key never overlap in time.
        let done: Vec<(&Txn, u64)> = self
            .txns
            .iter()
            .filter_map(|x| Some((x, *self.committed.get(&x.start)?)))
            .collect();
        for (a, ca) in &done {
            for (b, cb) in &done {
                let shared = a.values.keys().any(|k| b.values.contains_key(k));
                if a.start < b.start && shared && b.start < *ca {
                    self.fail(format!(
                        "overlapping writers {}..{ca} and {}..{cb}",
                        a.start, b.start
                    ));
                }
            }
        }
    }
}

#[test]
fn random_interleavings_keep_snapshot_isolation() {
    let mut committed = 0;
    let mut rolled_back = 0;
    for seed in 0..SEEDS {
        let mut sim = Sim::new(seed);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..STEPS {
                sim.step();
            }
            sim.finish();
            (sim.committed.len(), sim.rolled_back.len())
        }));
        match run {
            Ok((c, r)) => {
                committed += c;
                rolled_back += r;
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".to_owned());
                panic!("seed {seed}: {msg}");
            }
        }
    }
    // The runs must exercise both outcomes, or the test checks little.
    assert!(committed > SEEDS as usize && rolled_back > SEEDS as usize / 4);
}
