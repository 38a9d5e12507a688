//! `tikv-bench`: this project's RawKV client against client-rust (`tikv-client` 0.4), side by
//! side, on the same `tikv-cli mock` process.
//!
//! Fairness (perf-reliability.md §A3.5): both clients live in this one release binary and run
//! on the same tokio multi-thread runtime; they talk to the same mock process over loopback;
//! the data set is loaded once, and both run the same workloads with the same seeds, key and
//! value sizes and concurrency. Each workload runs A B A B (ours, client-rust, ours,
//! client-rust) to cancel drift, and each run is preceded by an untimed warm-up of the same
//! workload (connections established, region caches filled). The mock is a separate process,
//! so this process's rusage is the clients' CPU cost.
//!
//! If client-rust cannot connect to the mock, the reason is printed and our side runs alone.
//!
//! Usage: `cargo run --release -- [--duration SECS] [--rounds N] [--only NAME] [--unary]
//! [--ours-only] [--records N] [--value-size BYTES] [--regions N] [--concurrency N]
//! [--tikv-cli PATH]`; see README.md.

mod client;
mod mock;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::client::{Client, Clients, Commit, Side, TxnClient};
use crate::mock::MockProcess;
use crate::workload::{Data, Measurement, Op, Spec, SplitMix64};

/// Command-line options.
#[derive(Debug)]
struct Options {
    /// Timed length of each run.
    duration: Duration,
    /// Untimed warm-up before each run.
    warmup: Duration,
    /// A B rounds per workload.
    rounds: usize,
    /// Only workloads whose name contains this.
    only: Option<String>,
    /// Add our client in unary mode (no BatchCommands) as a third side.
    unary: bool,
    /// Skip client-rust.
    ours_only: bool,
    /// Records loaded.
    records: u64,
    /// Bytes per value.
    value_size: usize,
    /// Regions the mock is split into.
    regions: u64,
    /// Workers of the YCSB workloads.
    concurrency: usize,
    /// Workers of the batch workloads.
    batch_concurrency: usize,
    /// The `tikv-cli` binary that serves the mock.
    tikv_cli: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(300),
            rounds: 2,
            only: None,
            unary: false,
            ours_only: false,
            records: 10_000,
            value_size: 100,
            regions: 16,
            concurrency: 64,
            batch_concurrency: 8,
            // The release build of the main workspace, next to this one.
            tikv_cli: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/tikv-cli"
            )),
        }
    }
}

const USAGE: &str = "usage: tikv-bench [--duration SECS] [--warmup SECS] [--rounds N] [--only NAME] [--unary] [--ours-only] [--records N] [--value-size BYTES] [--regions N] [--concurrency N] [--batch-concurrency N] [--tikv-cli PATH]";

fn parse_args() -> Result<Options, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("{name}: '{text}' is not a number"))
        }
        fn secs(name: &str, text: &str) -> Result<Duration, String> {
            let s: f64 = num(name, text)?;
            Duration::try_from_secs_f64(s)
                .map_err(|_| format!("{name}: '{text}' is not a duration"))
        }
        match flag.as_str() {
            "--duration" => o.duration = secs(&flag, &value(&flag)?)?,
            "--warmup" => o.warmup = secs(&flag, &value(&flag)?)?,
            "--rounds" => o.rounds = num(&flag, &value(&flag)?)?,
            "--only" => o.only = Some(value(&flag)?),
            "--unary" => o.unary = true,
            "--ours-only" => o.ours_only = true,
            "--records" => o.records = num(&flag, &value(&flag)?)?,
            "--value-size" => o.value_size = num(&flag, &value(&flag)?)?,
            "--regions" => o.regions = num(&flag, &value(&flag)?)?,
            "--concurrency" => o.concurrency = num(&flag, &value(&flag)?)?,
            "--batch-concurrency" => o.batch_concurrency = num(&flag, &value(&flag)?)?,
            "--tikv-cli" => o.tikv_cli = PathBuf::from(value(&flag)?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    if o.records == 0 || o.regions == 0 || o.regions > o.records || o.rounds == 0 {
        return Err(
            "--records, --regions and --rounds must be positive, regions <= records".into(),
        );
    }
    if o.concurrency == 0 || o.batch_concurrency == 0 {
        return Err("concurrency must be positive".into());
    }
    Ok(o)
}

/// The workloads of perf-reliability.md §A3.2 that RawKV can run.
fn specs(o: &Options) -> Vec<Spec> {
    let spec = |name: String, op, concurrency| Spec {
        name,
        op,
        concurrency,
    };
    let mut all = vec![spec("P0 latency floor (get)".into(), Op::GetUniform, 1)];
    // The concurrency sweep is YCSB-C (zipfian point gets) at growing in-flight counts.
    for c in [1, 8, 64, 256] {
        all.push(spec(
            format!("CC YCSB-C c={c}"),
            Op::Ycsb { read_share: 1.0 },
            c,
        ));
    }
    all.push(spec(
        "YC YCSB-C".into(),
        Op::Ycsb { read_share: 1.0 },
        o.concurrency,
    ));
    all.push(spec(
        "YB YCSB-B".into(),
        Op::Ycsb { read_share: 0.95 },
        o.concurrency,
    ));
    all.push(spec(
        "YA YCSB-A".into(),
        Op::Ycsb { read_share: 0.5 },
        o.concurrency,
    ));
    all.push(spec(
        "BG batch get 10".into(),
        Op::BatchGet(10),
        o.batch_concurrency,
    ));
    all.push(spec(
        "BG batch get 100".into(),
        Op::BatchGet(100),
        o.batch_concurrency,
    ));
    all.push(spec(
        "BP batch put 100".into(),
        Op::BatchPut(100),
        o.batch_concurrency,
    ));
    // Commits: 2PC vs async commit vs 1PC (perf-reliability.md §A3.2's transaction rows).
    let commit = |keys: usize, mode: Commit, one_region: bool, concurrency: usize| {
        let place = if keys == 1 {
            String::new()
        } else if one_region {
            ", one region".to_string()
        } else {
            ", all regions".to_string()
        };
        spec(
            format!("TX commit {keys} key(s){place}, {}", mode.label()),
            Op::Commit {
                keys,
                mode,
                one_region,
            },
            concurrency,
        )
    };
    // Latency: one transaction at a time (no queueing on the shared cores).
    for mode in [Commit::TwoPc, Commit::Async, Commit::OnePc] {
        all.push(commit(1, mode, false, 1));
    }
    for mode in [Commit::TwoPc, Commit::Async] {
        all.push(commit(16, mode, false, 1));
    }
    all.push(commit(1, Commit::Pessimistic, false, 1));
    all.push(commit(16, Commit::Pessimistic, false, 1));
    // Throughput: the batch workloads' concurrency.
    let c = o.batch_concurrency;
    for mode in [Commit::TwoPc, Commit::Async, Commit::OnePc] {
        all.push(commit(1, mode, false, c));
    }
    for mode in [Commit::TwoPc, Commit::Async, Commit::OnePc] {
        all.push(commit(16, mode, true, c));
    }
    for mode in [Commit::TwoPc, Commit::Async] {
        all.push(commit(16, mode, false, c));
        all.push(commit(256, mode, false, c));
    }
    all.push(commit(1, Commit::Pessimistic, false, c));
    all.push(commit(16, Commit::Pessimistic, false, c));
    // Contention: every worker increments one of 4 counters, without and with local latches.
    for latches in [false, true] {
        let how = if latches {
            "local latches (ours only)"
        } else {
            "optimistic"
        };
        all.push(spec(
            format!("HC hot counters (4), {how}"),
            Op::HotIncrement { hot: 4, latches },
            c,
        ));
    }
    all.retain(|s| {
        o.only
            .as_deref()
            .is_none_or(|only| s.name.to_lowercase().contains(&only.to_lowercase()))
    });
    // YC at the default concurrency repeats a sweep point: run it once.
    if o.concurrency == 64 {
        all.retain(|s| s.name != "YC YCSB-C");
    }
    all
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // The same multi-thread runtime (one worker per core) drives both clients; client-rust
    // spawns onto the ambient runtime, ours onto the handle it captures at connect.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(options));
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(o: Options) -> Result<(), String> {
    let data = Data {
        records: o.records,
        value_size: o.value_size,
        regions: o.regions,
    };
    let specs = specs(&o);
    if specs.is_empty() {
        return Err("no workload matches --only".into());
    }
    let commits = specs
        .iter()
        .any(|s| matches!(s.op, Op::Commit { .. } | Op::HotIncrement { .. }));
    let splits: Vec<Vec<u8>> = (1..o.regions)
        .map(|i| workload::key(i * o.records / o.regions))
        .collect();
    let mock = MockProcess::start(&o.tikv_cli, 3, &splits, true)?;
    eprintln!(
        "mock: {} (3 stores, {} regions, leaders spread), PD at {}",
        o.tikv_cli.display(),
        o.regions,
        mock.pd
    );

    // RawKV V1 routes on raw-byte boundaries; transactions need them as TiKV writes them for
    // transactional data, memcomparable-encoded. They get a mock of their own.
    let txn_mock = if commits {
        let m = MockProcess::start(&o.tikv_cli, 3, &splits, false)?;
        eprintln!(
            "transactional mock: {} regions at encoded keys, PD at {}",
            o.regions, m.pd
        );
        Some(m)
    } else {
        None
    };
    let txn_pd = txn_mock.as_ref().map(|m| m.pd.clone());

    let mut sides = vec![(
        Side::Ours,
        connect(Side::Ours, &mock.pd, txn_pd.as_deref()).await?,
    )];
    load(&sides[0].1.raw, data).await?;
    if o.unary {
        let c = connect(Side::OursUnary, &mock.pd, txn_pd.as_deref()).await?;
        sides.push((Side::OursUnary, c));
    }
    let mut client_rust_problem = None;
    if o.ours_only {
        client_rust_problem = Some("skipped (--ours-only)".to_string());
    } else {
        match connect(Side::ClientRust, &mock.pd, txn_pd.as_deref()).await {
            Ok(c) => sides.push((Side::ClientRust, c)),
            Err(e) => {
                eprintln!("client-rust cannot run against the mock, running ours alone: {e}");
                client_rust_problem = Some(e);
            }
        }
    }
    // Fill every client's region cache and open its connections to every store: one key in
    // each region.
    let firsts: Vec<Vec<u8>> = (0..o.regions)
        .map(|i| workload::key(i * o.records / o.regions))
        .collect();
    for (side, client) in &sides {
        client
            .raw
            .batch_get(firsts.clone())
            .await
            .map_err(|e| format!("{}: warm-up batch get: {e}", side.label()))?;
    }

    let started = Instant::now();
    let mut results: Vec<(Spec, Vec<Measurement>)> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut per_side: Vec<Measurement> = sides.iter().map(|_| Measurement::empty()).collect();
        for round in 0..o.rounds {
            // A B A B: every round runs each side once, in the same order.
            for (s, (side, client)) in sides.iter().enumerate() {
                if spec.ours_only() && *side == Side::ClientRust {
                    continue;
                }
                // The same seed for every side and round: identical operation streams.
                let seed = 0x5eed ^ ((i as u64) << 8);
                let _ = workload::run(client, spec, data, o.warmup, seed ^ 0xfeed).await;
                let m = workload::run(client, spec, data, o.duration, seed).await;
                eprintln!(
                    "{:<24} round {} {:<12} {:>10.0} ops/s  p50 {:>6} µs  p99 {:>6} µs  cpu {:>6.1} µs/op  errors {}",
                    spec.name,
                    round + 1,
                    side.label(),
                    m.ops_per_sec(),
                    m.latency.value_at_quantile(0.5),
                    m.latency.value_at_quantile(0.99),
                    m.cpu_us_per_op(),
                    m.errors
                );
                per_side[s].merge(m);
            }
        }
        results.push((spec.clone(), per_side));
    }

    print_report(
        &o,
        &sides,
        &results,
        client_rust_problem.as_deref(),
        started.elapsed(),
    );
    drop(mock);
    drop(txn_mock);
    Ok(())
}

/// Connects `side`'s RawKV client to `pd` and, when `txn_pd` is given, its transactional
/// client to that mock.
async fn connect(side: Side, pd: &str, txn_pd: Option<&str>) -> Result<Clients, String> {
    let raw = connect_one(side, pd, Client::connect(side, pd)).await?;
    let txn = match txn_pd {
        Some(txn_pd) => Some(connect_one(side, txn_pd, TxnClient::connect(side, txn_pd)).await?),
        None => None,
    };
    let txn_latched = match (txn_pd, side) {
        (Some(txn_pd), Side::Ours) => {
            Some(connect_one(side, txn_pd, TxnClient::connect_with(side, txn_pd, true)).await?)
        }
        _ => None,
    };
    Ok(Clients {
        raw,
        txn,
        txn_latched,
    })
}

async fn connect_one<C>(
    side: Side,
    pd: &str,
    connecting: impl std::future::Future<Output = Result<C, String>>,
) -> Result<C, String> {
    // A bounded wait: a client that cannot speak to the mock should fail, not hang.
    match tokio::time::timeout(Duration::from_secs(20), connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!(
            "{} cannot connect to PD at {pd}: {e}",
            side.label()
        )),
        Err(_) => Err(format!(
            "{} did not connect to PD at {pd} within 20 s",
            side.label()
        )),
    }
}

/// Loads every record (through our client; the data is the same for both).
async fn load(client: &Client, data: Data) -> Result<(), String> {
    let started = Instant::now();
    let mut rng = SplitMix64::new(7);
    let mut n = 0;
    while n < data.records {
        let end = (n + 1000).min(data.records);
        let pairs = (n..end)
            .map(|i| (workload::key(i), workload::value(&mut rng, data.value_size)))
            .collect();
        client
            .batch_put(pairs)
            .await
            .map_err(|e| format!("loading records {n}..{end}: {e}"))?;
        n = end;
    }
    eprintln!(
        "loaded {} records of {} B in {:.2} s",
        data.records,
        data.value_size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The results as a Markdown table (readable on a terminal, pasteable into the README).
fn print_report(
    o: &Options,
    sides: &[(Side, Clients)],
    results: &[(Spec, Vec<Measurement>)],
    client_rust_problem: Option<&str>,
    took: Duration,
) {
    let ours = sides.iter().position(|(s, _)| *s == Side::Ours);
    let theirs = sides.iter().position(|(s, _)| *s == Side::ClientRust);
    println!(
        "\n{} rounds of {:.1} s per side and workload (A B A B), {} records of {} B, {} regions on 3 stores, {} cores, {:.0} s in all\n",
        o.rounds,
        o.duration.as_secs_f64(),
        o.records,
        o.value_size,
        o.regions,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        took.as_secs_f64()
    );
    let mut header = String::from("| workload | conc |");
    let mut rule = String::from("|---|---:|");
    for (side, _) in sides {
        let l = side.label();
        header.push_str(&format!(" {l} ops/s | {l} p50 | {l} p99 | {l} CPU/op |"));
        rule.push_str("---:|---:|---:|---:|");
    }
    if theirs.is_some() {
        header.push_str(" ratio ours/client-rust |");
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for (spec, per_side) in results {
        let mut line = format!("| {} | {} |", spec.name, spec.concurrency);
        for m in per_side {
            line.push_str(&format!(
                " {:.0} | {} | {} | {:.1} µs |",
                m.ops_per_sec(),
                micros(m.latency.value_at_quantile(0.5)),
                micros(m.latency.value_at_quantile(0.99)),
                m.cpu_us_per_op()
            ));
        }
        if let (Some(a), Some(b)) = (ours, theirs) {
            if spec.ours_only() {
                line.push_str(" — |");
            } else {
                let ratio = per_side[a].ops_per_sec() / per_side[b].ops_per_sec().max(1e-9);
                line.push_str(&format!(" {ratio:.2}× |"));
            }
        }
        println!("{line}");
    }
    println!(
        "\nops = calls (a batch call of 100 keys is one op); CPU/op = this process's user+system time per call (the mock runs in its own process)."
    );
    for (spec, per_side) in results {
        for ((side, _), m) in sides.iter().zip(per_side) {
            if m.errors > 0 {
                println!(
                    "errors: {} {}: {} failed calls, first: {}",
                    spec.name,
                    side.label(),
                    m.errors,
                    m.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
    if let Some(problem) = client_rust_problem {
        println!("client-rust: {problem}");
    }
}

/// Microseconds as `850 µs` or `12.3 ms`.
fn micros(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}
