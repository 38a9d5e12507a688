//! `tikv-cli bench`: YCSB-style workloads on RawKV.
//!
//! A run has two phases. The load phase writes `--records` records with batch puts (which
//! also warms the client's region cache and connections, so the timed phase measures steady
//! state). The timed phase runs `--concurrency` closed-loop workers, each picking operations
//! by the workload's mix and records by the key distribution, until `--ops` operations are
//! done or `--duration` has passed. Every latency goes into a per-worker HDR histogram; the
//! histograms are merged into the final table (or JSON) at the end.
//!
//! | workload | mix | as in YCSB |
//! |---|---|---|
//! | A | 50 % read, 50 % update | update heavy |
//! | B | 95 % read, 5 % update | read mostly |
//! | C | 100 % read | read only |
//! | F | 50 % read, 50 % read-modify-write | read-modify-write (get, then put, timed as one) |
//!
//! Everything random (the operation mix, the records, the values) comes from `--seed`, so two
//! runs with the same options issue the same operations (their interleaving across workers
//! depends on timing). Keys are `<prefix>user<record number, 12 digits>`, so they sort by
//! record number and the embedded mock can split them into even regions.
//!
//! Without `--pd`, the cluster is a mock embedded in this process: it shares the CPU with the
//! client, so for numbers about the client alone run `tikv-cli mock` in another process and
//! point `--pd` at it.

mod keygen;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tikv_mock::server::MockServer;
use tikv_tokio::KeyRange;
use tikv_tokio::RawClient;

use self::keygen::{KeyChooser, ScrambledZipfian, SplitMix64};
use self::report::{Limit, Live, OpKind, Recorder};
use crate::error::{CliError, Context};
use crate::format::{Out, elapsed, escape, json_str};
use crate::{GlobalOpts, cluster};

/// Options of `tikv-cli bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Operation mix: a (50% read, 50% update), b (95/5), c (read only), f (50% read, 50%
    /// read-modify-write).
    #[arg(long, value_enum, default_value = "a")]
    workload: Workload,

    /// How records are picked: YCSB's scrambled zipfian (constant 0.99) or uniform.
    #[arg(long, value_enum, default_value = "zipfian")]
    distribution: Distribution,

    /// Records loaded (with batch puts) before the timed phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    records: u64,

    /// Bytes per value.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=8_388_608))]
    value_size: u32,

    /// Concurrent closed-loop workers (each has one operation in flight).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,

    /// Length of the timed phase, e.g. `10s`, `500ms`, `2m` (default 10s).
    #[arg(long, value_parser = crate::format::parse_duration, conflicts_with = "ops")]
    duration: Option<Duration>,

    /// Stop after this many operations instead of after a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ops: Option<u64>,

    /// Seed of every random choice (operation mix, records, values).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Prefix of every key (with --pd, everything under it is deleted at the end).
    #[arg(long, default_value = "tikv-cli-bench/")]
    prefix: String,

    /// Regions of the embedded mock, split evenly over the records (not with --pd).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    regions: Option<u32>,

    /// Send each request as its own unary gRPC call instead of multiplexing requests on
    /// BatchCommands streams (to measure what batching brings).
    #[arg(long)]
    unary: bool,
}

/// The YCSB core workloads that RawKV can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// 50 % read, 50 % update.
    A,
    /// 95 % read, 5 % update.
    B,
    /// 100 % read.
    C,
    /// 50 % read, 50 % read-modify-write.
    F,
}

impl Workload {
    /// The share of reads; the rest is the workload's write kind.
    fn read_share(self) -> f64 {
        match self {
            Workload::A | Workload::F => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
        }
    }

    /// The kind of the operations that are not plain reads.
    fn write_kind(self) -> OpKind {
        match self {
            Workload::F => OpKind::ReadModifyWrite,
            _ => OpKind::Update,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Workload::A => "A (50% read, 50% update)",
            Workload::B => "B (95% read, 5% update)",
            Workload::C => "C (100% read)",
            Workload::F => "F (50% read, 50% read-modify-write)",
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Workload::A => "A",
            Workload::B => "B",
            Workload::C => "C",
            Workload::F => "F",
        }
    }
}

/// Key distributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Distribution {
    /// YCSB's scrambled zipfian: a few hot records, scattered over the key space.
    Zipfian,
    /// Every record equally likely.
    Uniform,
}

impl Distribution {
    fn name(self) -> &'static str {
        match self {
            Distribution::Zipfian => "zipfian",
            Distribution::Uniform => "uniform",
        }
    }
}

/// How long the cleanup of a real cluster may take when --timeout is not given.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Timed phase length when neither --ops nor --duration is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Regions of the embedded mock when --regions is not given.
const DEFAULT_MOCK_REGIONS: u32 = 8;
/// Stores of the embedded mock.
const MOCK_STORES: usize = 3;
/// Records per batch put in the load phase (the client splits batches by region and size).
const LOAD_BATCH: u64 = 1000;
/// Batch puts in flight during the load phase.
const LOAD_CONCURRENCY: usize = 8;

/// Runs the benchmark and prints its results.
pub(crate) async fn run(global: &GlobalOpts, args: &BenchArgs) -> Result<(), CliError> {
    if args.prefix.is_empty() && !global.pd.is_empty() {
        return Err(CliError::msg(
            "--prefix must not be empty with --pd: the benchmark deletes everything under it",
        ));
    }
    if args.regions.is_some() && !global.pd.is_empty() {
        return Err(CliError::msg(
            "--regions applies only to the embedded mock, not to a cluster given by --pd",
        ));
    }
    if u64::from(args.regions.unwrap_or(1)) > args.records {
        return Err(CliError::msg(format!(
            "--regions ({}) cannot exceed --records ({})",
            args.regions.unwrap_or(1),
            args.records
        )));
    }
    let keys = Keys {
        prefix: args.prefix.as_bytes().to_vec(),
    };
    let (client, mock) = connect(global, args, &keys).await?;
    let out = Out::new();
    let target = match &mock {
        Some(m) => format!(
            "an embedded mock ({MOCK_STORES} stores, {} regions, PD at {})",
            m.cluster().lock().topology().regions().count(),
            m.pd_address()
        ),
        None => format!("the cluster at {}", global.pd.join(",")),
    };
    let limit = match (args.ops, args.duration) {
        (Some(n), _) => Limit::Ops(n),
        (None, d) => Limit::Time(d.unwrap_or(DEFAULT_DURATION)),
    };
    let bound = match limit {
        Limit::Ops(n) => format!("{n} operations"),
        Limit::Time(d) => elapsed(d),
    };
    if !global.json {
        out.line(format!(
            "tikv-cli bench: workload {}, {} keys, {} records of {} B, concurrency {}, {bound}, seed {}",
            args.workload.describe(),
            args.distribution.name(),
            args.records,
            args.value_size,
            args.concurrency,
            args.seed
        ))?;
        out.line(format!("target: {target}"))?;
    }

    let load_took = load(&client, args, &keys).await?;
    if !global.json {
        out.line(format!(
            "loaded {} records in {} ({:.0} records/s)",
            args.records,
            elapsed(load_took),
            args.records as f64 / load_took.as_secs_f64().max(1e-9)
        ))?;
    }

    let (recorder, took) = timed(&client, args, &keys, limit).await;
    let rows = report::rows(&recorder, took);

    if global.json {
        out.line(format!(
            "{{\"workload\":{},\"distribution\":{},\"records\":{},\"value_size\":{},\"concurrency\":{},\"seed\":{},\"target\":{},\"load_secs\":{:.3},\"elapsed_secs\":{:.3},\"operations\":{}}}",
            json_str(args.workload.letter()),
            json_str(args.distribution.name()),
            args.records,
            args.value_size,
            args.concurrency,
            args.seed,
            json_str(&target),
            load_took.as_secs_f64(),
            took.as_secs_f64(),
            report::json_rows(&rows)
        ))?;
    } else {
        out.line(format!("ran for {}", elapsed(took)))?;
        for line in report::table(&rows) {
            out.line(line)?;
        }
        if let Some(m) = &mock {
            // How well BatchCommands batched: the embedded mock counts what it received.
            let c = m.cluster().lock().counters().clone();
            if c.batch_messages > 0 {
                out.line(format!(
                    "BatchCommands: {} requests in {} messages ({:.2} per message)",
                    c.batch_requests,
                    c.batch_messages,
                    c.batch_requests as f64 / c.batch_messages as f64
                ))?;
            }
        }
    }

    let cut = recorder.cut_off_count();
    if cut > 0 && !global.json {
        out.line(format!(
            "{cut} operations were still running at the deadline and were cancelled (not counted)"
        ))?;
    }
    if mock.is_none() {
        // A real cluster keeps what it is given: leave nothing behind under the prefix, in
        // bounded time (a cluster that stopped answering must not hold the exit).
        let bound = global.timeout.unwrap_or(CLEANUP_TIMEOUT);
        let what = format!(
            "delete the benchmark's keys under '{}'",
            escape(&keys.prefix)
        );
        match tokio::time::timeout(bound, client.delete_range(keys.all())).await {
            Ok(deleted) => deleted.context(&what)?,
            Err(_) => {
                return Err(CliError::msg(format!(
                    "{what}: timed out after {} ({} operations had failed)",
                    elapsed(bound),
                    recorder.total_errors()
                )));
            }
        }
    }
    match recorder.first_error() {
        None => Ok(()),
        Some(first) => Err(CliError::msg(format!(
            "{} operations failed (first: {first})",
            recorder.total_errors()
        ))),
    }
}

/// Names of the benchmark's records.
#[derive(Clone)]
struct Keys {
    prefix: Vec<u8>,
}

impl Keys {
    /// The key of record `n`: zero-padded so that keys sort by record number.
    fn key(&self, n: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 16);
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(format!("user{n:012}").as_bytes());
        k
    }

    /// Every key of the benchmark.
    fn all(&self) -> KeyRange {
        KeyRange::prefix(self.prefix.clone())
    }
}

/// A client on `--pd`, or on an embedded mock split into even regions (kept alive by the
/// returned server).
async fn connect(
    global: &GlobalOpts,
    args: &BenchArgs,
    keys: &Keys,
) -> Result<(RawClient, Option<MockServer>), CliError> {
    let config = tikv_tokio::Config::default().with_batch_commands(!args.unary);
    if !global.pd.is_empty() {
        return Ok((
            cluster::connect_with(&global.pd, global.timeout, config).await?,
            None,
        ));
    }
    eprintln!(
        "note: no --pd given: using an embedded mock cluster, which shares this process's CPU with the client"
    );
    let regions = u64::from(args.regions.unwrap_or(DEFAULT_MOCK_REGIONS)).min(args.records);
    let splits: Vec<Vec<u8>> = (1..regions)
        .map(|i| keys.key(i * args.records / regions))
        .collect();
    let mock = cluster::start_mock(MOCK_STORES, &splits, "127.0.0.1").await?;
    // Spread leaders so that the load reaches every store, as on a real cluster.
    cluster::spread_leaders(&mock)?;
    let client =
        cluster::connect_with(&[mock.pd_address().to_string()], global.timeout, config).await?;
    Ok((client, Some(mock)))
}

/// A value of `size` bytes drawn from `rng`.
fn random_value(rng: &mut SplitMix64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(size);
    v
}

/// Writes every record with batch puts, several in flight.
async fn load(client: &RawClient, args: &BenchArgs, keys: &Keys) -> Result<Duration, CliError> {
    let started = Instant::now();
    let size = args.value_size as usize;
    let batches = args.records.div_ceil(LOAD_BATCH);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks: tokio::task::JoinSet<Result<(), CliError>> = tokio::task::JoinSet::new();
    for _ in 0..LOAD_CONCURRENCY.min(batches as usize) {
        let client = client.clone();
        let next = next.clone();
        let keys = keys.clone();
        let (records, seed) = (args.records, args.seed);
        tasks.spawn(async move {
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return Ok(());
                }
                let first = batch * LOAD_BATCH;
                let last = (first + LOAD_BATCH).min(records);
                // Per-batch seeds keep the loaded values independent of task scheduling.
                let mut rng = SplitMix64::new(seed ^ batch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = (first..last)
                    .map(|n| (keys.key(n), random_value(&mut rng, size)))
                    .collect();
                client
                    .batch_put(pairs)
                    .await
                    .context(format!("load records {first}..{last}"))?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => result?,
            Err(e) => return Err(CliError::msg(format!("a load task failed: {e}"))),
        }
    }
    Ok(started.elapsed())
}

/// The timed phase: returns the merged measurements and how long it ran.
async fn timed(
    client: &RawClient,
    args: &BenchArgs,
    keys: &Keys,
    limit: Limit,
) -> (Recorder, Duration) {
    let live = Arc::new(Live::default());
    let chooser = match args.distribution {
        Distribution::Uniform => KeyChooser::Uniform(args.records),
        Distribution::Zipfian => KeyChooser::Zipfian(ScrambledZipfian::new(args.records)),
    };
    let start = Instant::now();
    let deadline = match limit {
        Limit::Time(d) => Some(start + d),
        Limit::Ops(_) => None,
    };
    let budget = match limit {
        Limit::Ops(n) => Some(Arc::new(AtomicU64::new(n))),
        Limit::Time(_) => None,
    };
    let display = tokio::spawn(report::progress(live.clone(), limit, start));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..u64::from(args.concurrency) {
        let w = Worker {
            client: client.clone(),
            keys: keys.clone(),
            chooser: chooser.clone(),
            rng: SplitMix64::new(
                args.seed
                    .wrapping_add(worker.wrapping_mul(0xa076_1d64_78bd_642f)),
            ),
            read_share: args.workload.read_share(),
            write_kind: args.workload.write_kind(),
            value_size: args.value_size as usize,
            live: live.clone(),
            recorder: Recorder::new(),
        };
        let budget = budget.clone();
        tasks.spawn(w.run(deadline, budget));
    }
    let mut total = Recorder::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(recorder) => total.merge(recorder),
            // A worker that panicked (a bug) is reported like a failed operation.
            Err(e) => total.error(OpKind::Read, format!("a worker task failed: {e}")),
        }
    }
    let took = start.elapsed();
    live.finished.store(true, Ordering::Relaxed);
    // The display notices `finished` within one tick and clears its line.
    let _ = display.await;
    (total, took)
}

/// One closed-loop worker: one operation in flight at a time.
struct Worker {
    client: RawClient,
    keys: Keys,
    chooser: KeyChooser,
    rng: SplitMix64,
    read_share: f64,
    write_kind: OpKind,
    value_size: usize,
    live: Arc<Live>,
    recorder: Recorder,
}

impl Worker {
    async fn run(mut self, deadline: Option<Instant>, budget: Option<Arc<AtomicU64>>) -> Recorder {
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if let Some(b) = &budget {
                // Claim one operation of the shared budget; stop when it is spent.
                if b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
                {
                    break;
                }
            }
            let kind = if self.rng.next_f64() < self.read_share {
                OpKind::Read
            } else {
                self.write_kind
            };
            let record = self.chooser.next(&mut self.rng);
            let key = self.keys.key(record);
            let started = Instant::now();
            let result = match deadline {
                // An operation still retrying at the deadline (a cluster that stopped
                // answering) is cancelled there: the run ends on time.
                Some(d) => {
                    match tokio::time::timeout_at(d.into(), self.op(kind, key, record)).await {
                        Ok(result) => result,
                        Err(_) => {
                            self.recorder.cut_off();
                            break;
                        }
                    }
                }
                None => self.op(kind, key, record).await,
            };
            let took = started.elapsed();
            match result {
                Ok(()) => self.recorder.ok(kind, took),
                Err(message) => {
                    self.live.failed.fetch_add(1, Ordering::Relaxed);
                    self.recorder.error(kind, message);
                }
            }
            self.live.done.fetch_add(1, Ordering::Relaxed);
        }
        self.recorder
    }

    /// Runs one operation; a failure is described for the report.
    async fn op(&mut self, kind: OpKind, key: Vec<u8>, record: u64) -> Result<(), String> {
        match kind {
            OpKind::Read => self.read(key, record).await,
            OpKind::Update => {
                let value = random_value(&mut self.rng, self.value_size);
                self.client
                    .put(key, value)
                    .await
                    .map_err(|e| format!("update of record {record}: {e}"))
            }
            OpKind::ReadModifyWrite => {
                self.read(key.clone(), record).await?;
                let value = random_value(&mut self.rng, self.value_size);
                self.client
                    .put(key, value)
                    .await
                    .map_err(|e| format!("read-modify-write of record {record}: {e}"))
            }
        }
    }

    /// A get that must find the record (every record was loaded and none is deleted).
    async fn read(&self, key: Vec<u8>, record: u64) -> Result<(), String> {
        match self.client.get(key).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("record {record} was not found")),
            Err(e) => Err(format!("read of record {record}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_record_number() {
        let keys = Keys {
            prefix: b"p/".to_vec(),
        };
        assert_eq!(keys.key(42), b"p/user000000000042");
        assert!(keys.key(9) < keys.key(10));
        assert!(keys.all().contains(&keys.key(7).into()));
    }

    #[test]
    fn workload_mixes_match_ycsb() {
        assert_eq!(Workload::A.read_share(), 0.5);
        assert_eq!(Workload::B.read_share(), 0.95);
        assert_eq!(Workload::C.read_share(), 1.0);
        assert_eq!(Workload::F.write_kind(), OpKind::ReadModifyWrite);
        assert_eq!(Workload::A.write_kind(), OpKind::Update);
    }

    #[test]
    fn values_have_the_requested_size() {
        let mut rng = SplitMix64::new(1);
        assert_eq!(random_value(&mut rng, 1).len(), 1);
        assert_eq!(random_value(&mut rng, 100).len(), 100);
    }
}
