//! Workloads and the closed-loop runner that times them.
//!
//! Every workload is a list of closed-loop workers (one call in flight each) that run until a
//! deadline. Each worker draws its operations from its own seeded generator, so both clients
//! see the same operation streams. Latencies go into per-worker HDR histograms (merged after
//! the run); the process's CPU time (user + system, from `getrusage`) is read around the
//! timed window. The mock runs in another process, so that CPU time is the client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{Clients, Commit};

/// The operations a workload issues.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// Point gets of uniformly chosen records.
    GetUniform,
    /// YCSB: `read_share` point gets, the rest point puts, records by YCSB's scrambled zipfian.
    Ycsb {
        /// Fraction of reads (1.0 = YCSB-C, 0.95 = YCSB-B, 0.5 = YCSB-A).
        read_share: f64,
    },
    /// Batch gets of this many distinct, uniformly chosen records (spread over every region).
    BatchGet(usize),
    /// Batch puts of this many distinct, uniformly chosen records.
    BatchPut(usize),
    /// Transactions writing this many distinct records, committed with `mode`. Workers write
    /// disjoint records (no conflicts); `one_region` draws a transaction's keys from one
    /// region, otherwise from all.
    Commit {
        /// Keys written per transaction.
        keys: usize,
        /// How it commits.
        mode: Commit,
        /// Keys from one region (1PC needs one request).
        one_region: bool,
    },
    /// Optimistic read-modify-write increments of one of `hot` counters, retried until they
    /// commit (every worker contends); with `latches`, through the client with local latches
    /// (ours only).
    HotIncrement {
        /// Counters contended for.
        hot: u64,
        /// Use the client with local latches.
        latches: bool,
    },
}

/// One row of the comparison.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Row label.
    pub(crate) name: String,
    /// What each call does.
    pub(crate) op: Op,
    /// Closed-loop workers.
    pub(crate) concurrency: usize,
}

impl Spec {
    /// Whether only this project's client can run the workload.
    pub(crate) fn ours_only(&self) -> bool {
        matches!(self.op, Op::HotIncrement { latches: true, .. })
    }
}

/// The shape of the data set: records `0..records`, `value_size` bytes each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Data {
    /// Records loaded before any workload.
    pub(crate) records: u64,
    /// Bytes per value.
    pub(crate) value_size: usize,
    /// Regions, split at even record numbers.
    pub(crate) regions: u64,
}

/// The key of record `n` (16 bytes, sorted by record number).
pub(crate) fn key(n: u64) -> Vec<u8> {
    format!("user{n:012}").into_bytes()
}

/// A value of `size` bytes drawn from `rng`.
pub(crate) fn value(rng: &mut SplitMix64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(size);
    v
}

/// What one timed run measured.
pub(crate) struct Measurement {
    /// Successful calls.
    pub(crate) ops: u64,
    /// Failed calls.
    pub(crate) errors: u64,
    /// The first failure, if any.
    pub(crate) first_error: Option<String>,
    /// Call latencies in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Wall-clock time of the run.
    pub(crate) elapsed: Duration,
    /// CPU time of this process (user + system) during the run.
    pub(crate) cpu: Duration,
}

impl Measurement {
    /// An empty measurement, to merge runs into.
    pub(crate) fn empty() -> Self {
        Measurement {
            ops: 0,
            errors: 0,
            first_error: None,
            latency: histogram(),
            elapsed: Duration::ZERO,
            cpu: Duration::ZERO,
        }
    }

    /// Adds another run of the same workload.
    pub(crate) fn merge(&mut self, other: Measurement) {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.elapsed += other.elapsed;
        self.cpu += other.cpu;
    }

    /// Calls per second.
    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Client CPU time per call, in microseconds.
    pub(crate) fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / (self.ops.max(1) as f64)
    }
}

/// A latency histogram in microseconds (1 µs to 1 min, 3 significant digits).
fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// CPU time (user + system) this process has used so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to a rusage owned by this frame.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `spec` through `client` for `duration` and measures it. `seed` fixes every worker's
/// operation stream.
pub(crate) async fn run(
    client: &Clients,
    spec: &Spec,
    data: Data,
    duration: Duration,
    seed: u64,
) -> Measurement {
    let stop = Arc::new(AtomicBool::new(false));
    let zipf = ScrambledZipfian::new(data.records);
    let cpu_before = process_cpu();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..spec.concurrency as u64 {
        let client = client.clone();
        let stop = stop.clone();
        let op = spec.op;
        let zipf = zipf.clone();
        let workers = spec.concurrency as u64;
        let mut rng = SplitMix64::new(seed ^ worker.wrapping_mul(0xa076_1d64_78bd_642f));
        tasks.spawn(async move {
            let mut m = Measurement::empty();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let result = call(&client, op, data, &zipf, &mut rng, (worker, workers)).await;
                let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(()) => {
                        m.ops += 1;
                        m.latency.saturating_record(us.max(1));
                    }
                    Err(e) => {
                        m.errors += 1;
                        m.first_error.get_or_insert(e);
                    }
                }
            }
            m
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Measurement::empty();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(m) => total.merge(m),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("worker failed: {e}"));
            }
        }
    }
    // The run ends when the last in-flight call has returned: count that tail in the time.
    total.elapsed = start.elapsed();
    total.cpu = process_cpu().saturating_sub(cpu_before);
    total
}

/// One call of `op`.
async fn call(
    clients: &Clients,
    op: Op,
    data: Data,
    zipf: &ScrambledZipfian,
    rng: &mut SplitMix64,
    (worker, workers): (u64, u64),
) -> Result<(), String> {
    let client = &clients.raw;
    match op {
        Op::GetUniform => {
            let n = rng.below(data.records);
            found(client.get(key(n)).await?, n)
        }
        Op::Ycsb { read_share } => {
            let read = rng.next_f64() < read_share;
            let n = zipf.next(rng);
            if read {
                found(client.get(key(n)).await?, n)
            } else {
                client.put(key(n), value(rng, data.value_size)).await
            }
        }
        Op::BatchGet(count) => {
            let keys = distinct_keys(rng, data.records, count);
            let wanted = keys.len();
            let got = client.batch_get(keys).await?;
            if got == wanted {
                Ok(())
            } else {
                Err(format!("batch get found {got} of {wanted} loaded records"))
            }
        }
        Op::BatchPut(count) => {
            let pairs = distinct_keys(rng, data.records, count)
                .into_iter()
                .map(|k| (k, value(rng, data.value_size)))
                .collect();
            client.batch_put(pairs).await
        }
        Op::Commit {
            keys,
            mode,
            one_region,
        } => {
            let txn = clients
                .txn
                .as_ref()
                .ok_or("no transactional client for the commit workloads")?;
            let pairs = worker_keys(rng, data, keys, (worker, workers), one_region)
                .into_iter()
                .map(|k| (k, value(rng, data.value_size)))
                .collect();
            txn.commit(pairs, mode).await
        }
        Op::HotIncrement { hot, latches } => {
            let txn = if latches {
                clients.txn_latched.as_ref()
            } else {
                clients.txn.as_ref()
            }
            .ok_or("no transactional client for the hot-counter workloads")?;
            let mut counter = b"hot/".to_vec();
            counter.extend_from_slice(&rng.below(hot).to_be_bytes());
            txn.increment(counter).await
        }
    }
}

/// `count` distinct records of this worker's share (record numbers `≡ worker` modulo
/// `workers`), from one random region when `one_region`, else from all.
fn worker_keys(
    rng: &mut SplitMix64,
    data: Data,
    count: usize,
    (worker, workers): (u64, u64),
    one_region: bool,
) -> Vec<Vec<u8>> {
    let (first, span) = if one_region {
        let per_region = data.records / data.regions.max(1);
        (rng.below(data.regions.max(1)) * per_region, per_region)
    } else {
        (0, data.records)
    };
    // This worker's records in [first, first + span).
    let offset = (worker + workers - first % workers) % workers;
    let mine = span.saturating_sub(offset).div_ceil(workers);
    let count = count.min(usize::try_from(mine).unwrap_or(usize::MAX));
    let mut chosen: Vec<u64> = Vec::with_capacity(count);
    while chosen.len() < count {
        let n = first + offset + rng.below(mine) * workers;
        if !chosen.contains(&n) {
            chosen.push(n);
        }
    }
    chosen.into_iter().map(key).collect()
}

/// `count` distinct uniformly chosen record keys (all records when `count` exceeds them).
/// Distinct because the clients differ on repeated keys (client-rust returns a pair per
/// requested key, ours one per distinct key), and a benchmark must not measure that.
fn distinct_keys(rng: &mut SplitMix64, records: u64, count: usize) -> Vec<Vec<u8>> {
    let count = count.min(usize::try_from(records).unwrap_or(usize::MAX));
    let mut chosen: Vec<u64> = Vec::with_capacity(count);
    while chosen.len() < count {
        let n = rng.below(records);
        // Linear search: batches are small (at most a few hundred keys).
        if !chosen.contains(&n) {
            chosen.push(n);
        }
    }
    chosen.into_iter().map(key).collect()
}

/// Every record was loaded and none is deleted: a miss is an error, not a fast answer.
fn found(exists: bool, n: u64) -> Result<(), String> {
    if exists {
        Ok(())
    } else {
        Err(format!("record {n} was not found"))
    }
}

/// SplitMix64: small, fast and seeded; the workloads need reproducible streams, not
/// cryptographic quality. (The same generator as `tikv-cli bench`.)
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform double in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// YCSB's `ScrambledZipfianGenerator` (constant 0.99 over 10^10 items, FNV-hashed onto the
/// records), as in `tikv-cli bench`: hot records scattered over the key space.
#[derive(Clone, Debug)]
struct ScrambledZipfian {
    records: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl ScrambledZipfian {
    const THETA: f64 = 0.99;
    const ITEMS: f64 = 10_000_000_000.0;
    /// zeta(10^10, 0.99), precomputed by YCSB.
    const ZETAN: f64 = 26.469_028_201_783_02;

    fn new(records: u64) -> Self {
        let zeta2 = 1.0 + 1.0 / 2f64.powf(Self::THETA);
        ScrambledZipfian {
            records,
            alpha: 1.0 / (1.0 - Self::THETA),
            zetan: Self::ZETAN,
            eta: (1.0 - (2.0 / Self::ITEMS).powf(1.0 - Self::THETA)) / (1.0 - zeta2 / Self::ZETAN),
            half_pow_theta: 0.5f64.powf(Self::THETA),
        }
    }

    fn next(&self, rng: &mut SplitMix64) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zetan;
        let item = if uz < 1.0 {
            0
        } else if uz < 1.0 + self.half_pow_theta {
            1
        } else {
            (Self::ITEMS * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        fnv_hash64(item) % self.records
    }
}

/// YCSB's `fnvhash64`: FNV-1a over the 8 bytes of `value`, low first, made non-negative.
fn fnv_hash64(mut value: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(1_099_511_628_211);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}
