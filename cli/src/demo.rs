//! `tikv-cli demo`: a guided tour of the client that checks its own results.
//!
//! Everything it writes lives under one key prefix. Against the embedded mock it also splits a
//! region and moves a leader while concurrent writers run, then checks that every
//! acknowledged write is readable with its value. Then transactions: a write conflict, a
//! pessimistic lock wait and a deadlock, the three commit protocols, and (on the mock only)
//! a GC round (`demo/txn.rs`). Against `--pd` those two steps are skipped
//! (a client cannot order a real cluster to split or move leaders) and the prefix is deleted at
//! the end. Any failed call or check stops the demo with one error line naming the step (a
//! failed run may leave keys under the prefix; the next run clears them first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tikv_mock::server::MockServer;
use tikv_tokio::RawClient;
use tikv_tokio::{Key, KeyRange, Region};
use tokio::sync::Notify;

use crate::error::{CliError, Context};
use crate::format::{Out, elapsed, escape};
use crate::{GlobalOpts, cluster};

mod txn;

/// Options of `tikv-cli demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Prefix of every key the demo writes (with --pd, everything under it is deleted first and
    /// at the end).
    #[arg(long, default_value = "tikv-cli-demo/")]
    prefix: String,

    /// Keys written by the initial batch put (at most 10000: it is scanned in one call).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(20..=10_000))]
    keys: u32,

    /// Concurrent writers in the workload.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    writers: u32,

    /// Puts per writer in the workload.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(3..=100_000))]
    writes: u32,
}

/// Stores in the embedded cluster: enough for leaders to move between them.
const MOCK_STORES: usize = 3;
/// Page size when reading the whole prefix back (below TiKV's scan limit).
const PAGE: u32 = 1000;

/// Runs the demo and prints what it does.
pub(crate) async fn run(global: &GlobalOpts, args: &DemoArgs) -> Result<(), CliError> {
    if args.prefix.is_empty() {
        return Err(CliError::msg(
            "--prefix must not be empty: the demo deletes everything under it",
        ));
    }
    let mut demo = Demo {
        out: Out::new(),
        prefix: args.prefix.as_bytes().to_vec(),
        args,
        steps: Vec::new(),
        current: "start",
        step_started: Instant::now(),
        expected: BTreeMap::new(),
    };
    let result = demo.run(global).await;
    result.map_err(|e| match e {
        CliError::BrokenPipe => e,
        e => CliError::msg(format!("demo failed in step '{}': {e}", demo.current)),
    })
}

/// The demo's state: what it printed, timed and wrote.
struct Demo<'a> {
    out: Out,
    prefix: Vec<u8>,
    args: &'a DemoArgs,
    /// Each finished step and how long it took.
    steps: Vec<(&'static str, Duration)>,
    /// The step running now, named in errors.
    current: &'static str,
    /// When the current step began.
    step_started: Instant,
    /// Every pair the demo believes is stored under the prefix, for the final checks.
    expected: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What the concurrent workload left behind (it fails as a whole if any write failed).
struct Workload {
    /// Indices of the acknowledged writes, ascending.
    acked: Vec<u32>,
    took: Duration,
}

impl<'a> Demo<'a> {
    async fn run(&mut self, global: &GlobalOpts) -> Result<(), CliError> {
        let mock = if global.pd.is_empty() {
            self.out.line(
                "tikv-cli demo: the TiKV client against an embedded mock cluster (use --pd host:port for a real one)",
            )?;
            self.begin("start a mock cluster")?;
            let mock = self.start_mock().await?;
            self.end()?;
            Some(mock)
        } else {
            self.out.line(format!(
                "tikv-cli demo: the TiKV client against the cluster at {} (keys under '{}')",
                global.pd.join(","),
                escape(&self.prefix)
            ))?;
            None
        };
        let endpoints = match &mock {
            Some(m) => vec![m.pd_address().to_string()],
            None => global.pd.clone(),
        };

        self.begin("connect")?;
        let client = cluster::connect(&endpoints, global.timeout).await?;
        self.show_cluster(&client).await?;
        self.end()?;

        self.begin("clear the prefix")?;
        client
            .delete_range(self.prefix_range())
            .await
            .context("delete_range")?;
        let left = client
            .scan_keys(self.prefix_range(), 1)
            .await
            .context("scan_keys")?;
        check(
            left.is_empty(),
            "keys are left under the prefix after delete_range",
        )?;
        self.say(format!(
            "delete_range '{}' .. '{}': the prefix is empty",
            escape(&self.prefix),
            escape(self.prefix_range().end().as_bytes())
        ))?;
        self.end()?;

        self.begin("batch put")?;
        self.batch_put(&client).await?;
        self.end()?;

        self.begin("point reads")?;
        self.reads(&client).await?;
        self.end()?;

        self.begin("scans across regions")?;
        self.scans(&client).await?;
        self.end()?;

        self.begin("concurrent writes with a split and a leader transfer")?;
        let workload = self.workload(&client, mock.as_ref()).await?;
        self.end()?;

        self.begin("consistency check")?;
        self.consistency(&client, &workload).await?;
        self.end()?;

        self.begin("compare and swap")?;
        self.cas(&client).await?;
        self.end()?;

        self.begin("time to live")?;
        self.ttl(&client, mock.is_some()).await?;
        self.end()?;

        self.begin("checksum and full read-back")?;
        self.checksum(&client).await?;
        self.end()?;

        self.begin("transactions: a write conflict")?;
        // The RawKV steps' regions are cut at raw keys; transactional data lives between
        // encoded boundaries (as TiKV writes them): on the embedded path it gets a cluster
        // of its own, split between the transactional keys.
        let (txn_endpoints, _txn_mock) = match &mock {
            Some(_) => {
                let split = tikv_mock::codec::encode_memcomparable(&self.key("txn-lock", 2));
                let m = cluster::start_mock(MOCK_STORES, &[split], "127.0.0.1").await?;
                self.say(format!(
                    "a second embedded cluster for transactions: PD at {}, split between the locked keys",
                    m.pd_address()
                ))?;
                (vec![m.pd_address().to_string()], Some(m))
            }
            None => (endpoints.clone(), None),
        };
        let txns = self.txn_client(&txn_endpoints, global.timeout).await?;
        self.write_conflict(&txns).await?;
        self.end()?;

        self.begin("pessimistic transactions: a lock wait")?;
        self.lock_wait(&txns).await?;
        self.end()?;

        self.begin("pessimistic transactions: a deadlock")?;
        self.deadlock(&txns).await?;
        self.end()?;

        self.begin("two-phase, async and one-phase commit")?;
        self.commit_protocols(&txns).await?;
        self.end()?;

        if mock.is_some() {
            // Never on a cluster given by --pd: GC there is its operators' business.
            self.begin("garbage collection")?;
            self.gc_round(&txns).await?;
            self.end()?;
        }

        self.begin("clean up")?;
        self.txn_cleanup(&txns).await?;
        client
            .delete_range(self.prefix_range())
            .await
            .context("delete_range")?;
        let left = client
            .scan_keys(self.prefix_range(), 1)
            .await
            .context("scan_keys")?;
        check(
            left.is_empty(),
            "keys are left under the prefix after delete_range",
        )?;
        self.say(format!(
            "delete_range removed all {} pairs under the prefix",
            self.expected.len()
        ))?;
        self.end()?;

        self.summary(mock.as_ref(), &workload)
    }

    // --- reporting -------------------------------------------------------------------------

    fn begin(&mut self, step: &'static str) -> Result<(), CliError> {
        self.current = step;
        self.out
            .line(format!("\n{:>2}. {step}", self.steps.len() + 1))?;
        self.step_started = Instant::now();
        Ok(())
    }

    fn end(&mut self) -> Result<(), CliError> {
        let took = self.step_started.elapsed();
        self.steps.push((self.current, took));
        self.say(format!("ok ({})", elapsed(took)))
    }

    fn say(&self, line: impl AsRef<str>) -> Result<(), CliError> {
        self.out.line(format!("    {}", line.as_ref()))
    }

    fn summary(&self, mock: Option<&MockServer>, workload: &Workload) -> Result<(), CliError> {
        self.out.line("\nsummary")?;
        let total: Duration = self.steps.iter().map(|(_, d)| *d).sum();
        for (name, took) in &self.steps {
            self.out
                .line(format!("    {name:<55} {:>10}", elapsed(*took)))?;
        }
        self.out
            .line(format!("    {:<55} {:>10}", "total", elapsed(total)))?;
        if let Some(mock) = mock {
            let counters = mock.cluster().lock().counters().clone();
            let rpcs: u64 = counters.rpcs.values().sum();
            self.out.line(format!(
                "    the mock served {rpcs} TiKV/PD requests, {} of them in {} BatchCommands messages",
                counters.batch_requests, counters.batch_messages
            ))?;
        }
        let survived = if mock.is_some() {
            ", through a region split and a leader transfer"
        } else {
            ""
        };
        self.out.line(format!(
            "demo passed: {} pairs written and verified, {} concurrent writes acknowledged and read back{survived}",
            self.expected.len(),
            workload.acked.len()
        ))
    }

    // --- keys ------------------------------------------------------------------------------

    fn key(&self, kind: &str, i: u32) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(format!("{kind}-{i:06}").as_bytes());
        k
    }

    fn prefix_range(&self) -> KeyRange {
        KeyRange::prefix(self.prefix.clone())
    }

    /// Every key whose name starts with `start` (under the prefix).
    fn kind_range_prefix(&self, start: &str) -> KeyRange {
        let mut k = self.prefix.clone();
        k.extend_from_slice(start.as_bytes());
        KeyRange::prefix(k)
    }

    /// `[start, end)` of the keys named `kind-*`.
    fn kind_range(&self, kind: &str) -> KeyRange {
        let mut start = self.prefix.clone();
        start.extend_from_slice(kind.as_bytes());
        start.push(b'-');
        KeyRange::prefix(start)
    }

    fn show_key(&self, key: &[u8]) -> String {
        // The prefix is the same on every key; leaving it out keeps lines short.
        let short = key.strip_prefix(&self.prefix[..]).unwrap_or(key);
        escape(short)
    }

    // --- steps -----------------------------------------------------------------------------

    async fn start_mock(&mut self) -> Result<MockServer, CliError> {
        let n = self.args.keys;
        let splits = vec![
            self.key("key", n / 4),
            self.key("key", n / 2),
            self.key("key", 3 * n / 4),
            self.kind_range("load").start().as_bytes().to_vec(),
        ];
        let mock = cluster::start_mock(MOCK_STORES, &splits, "127.0.0.1").await?;
        self.say(format!(
            "PD at {}; stores {}",
            mock.pd_address(),
            mock.store_addresses()
                .iter()
                .map(|(id, a)| format!("{id} at {a}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let regions = {
            // Spread leaders over the stores so that multi-region calls fan out to all of them.
            let mut cluster = mock.cluster().lock();
            let stores: Vec<u64> = cluster.topology().stores().map(|s| s.meta.id).collect();
            let regions: Vec<u64> = cluster.topology().regions().map(|r| r.id()).collect();
            for (i, region) in regions.iter().enumerate() {
                cluster
                    .transfer_leader(*region, stores[i % stores.len()])
                    .map_err(|e| CliError::msg(format!("transfer_leader: {e}")))?;
            }
            regions.len()
        };
        self.say(format!(
            "split at {}: {regions} regions, leaders spread over the {MOCK_STORES} stores",
            splits
                .iter()
                .map(|k| self.show_key(k))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        Ok(mock)
    }

    async fn show_cluster(&self, c: &RawClient) -> Result<(), CliError> {
        let pd = c.pd();
        let stores = pd.get_all_stores().await.context("get_all_stores")?;
        let ts = pd.get_timestamp().await.context("get_timestamp")?;
        self.say(format!(
            "cluster id {}, {} stores, current timestamp {}",
            pd.cluster_id(),
            stores.len(),
            ts.as_u64()
        ))?;
        let regions = self.regions(c, &self.prefix_range()).await?;
        self.say(format!(
            "{} region(s) hold the prefix '{}':",
            regions.len(),
            escape(&self.prefix)
        ))?;
        const SHOWN: usize = 8;
        for r in regions.iter().take(SHOWN) {
            self.say(format!("  {}", self.describe(r)))?;
        }
        if regions.len() > SHOWN {
            self.say(format!("  ... and {} more", regions.len() - SHOWN))?;
        }
        Ok(())
    }

    /// The regions overlapping `range`, from PD.
    async fn regions(&self, c: &RawClient, range: &KeyRange) -> Result<Vec<Region>, CliError> {
        c.pd()
            .scan_regions(range.start().as_bytes(), range.end().as_bytes(), 1000)
            .await
            .context("scan_regions")
    }

    fn describe(&self, r: &Region) -> String {
        let bound = |k: &Key, open: &str| {
            if k.is_empty() {
                open.to_string()
            } else {
                format!("'{}'", escape(k.as_bytes()))
            }
        };
        let leader = r
            .leader
            .map_or("unknown".into(), |p| format!("store {}", p.store_id));
        format!(
            "region {:<4} [{}, {})  leader on {leader}",
            r.id,
            bound(r.range.start(), "-inf"),
            bound(r.range.end(), "+inf"),
        )
    }

    async fn batch_put(&mut self, c: &RawClient) -> Result<(), CliError> {
        let n = self.args.keys;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
            .map(|i| (self.key("key", i), format!("value-{i}").into_bytes()))
            .collect();
        let started = Instant::now();
        c.batch_put(pairs.clone()).await.context("batch_put")?;
        let took = started.elapsed();
        let regions = self.regions(c, &self.kind_range("key")).await?.len();
        self.expected.extend(pairs);
        self.say(format!(
            "batch_put of {n} keys ({} .. {}) spanning {regions} regions in {}",
            self.show_key(&self.key("key", 0)),
            self.show_key(&self.key("key", n - 1)),
            elapsed(took)
        ))
    }

    async fn reads(&self, c: &RawClient) -> Result<(), CliError> {
        let n = self.args.keys;
        let i = n / 3;
        let got = c.get(self.key("key", i)).await.context("get")?;
        check(
            got.as_deref() == Some(format!("value-{i}").as_bytes()),
            format!(
                "get {} returned {got:?}",
                self.show_key(&self.key("key", i))
            ),
        )?;
        self.say(format!(
            "get {} = {}",
            self.show_key(&self.key("key", i)),
            escape(got.as_deref().unwrap_or_default())
        ))?;
        let missing = self.key("missing", 0);
        let got = c.get(missing.clone()).await.context("get")?;
        check(got.is_none(), "a key never written was found")?;
        self.say(format!(
            "get {} = (not found), as expected",
            self.show_key(&missing)
        ))?;

        // Ten keys spread over every region, plus one that does not exist.
        let wanted: Vec<u32> = (0..10).map(|k| k * n / 10 + n / 20).collect();
        let mut keys: Vec<Vec<u8>> = wanted.iter().map(|&i| self.key("key", i)).collect();
        keys.push(missing);
        let started = Instant::now();
        let pairs = c.batch_get(keys).await.context("batch_get")?;
        let took = started.elapsed();
        check(
            pairs.len() == wanted.len(),
            format!("batch_get found {} of {} keys", pairs.len(), wanted.len()),
        )?;
        for (pair, i) in pairs.iter().zip(&wanted) {
            check(
                pair.key.as_bytes() == &self.key("key", *i)[..]
                    && pair.value[..] == *format!("value-{i}").as_bytes(),
                format!("batch_get returned a wrong pair for key {i}"),
            )?;
        }
        self.say(format!(
            "batch_get of 11 keys across all regions: the 10 that exist, with the right values, in {}",
            elapsed(took)
        ))
    }

    async fn scans(&self, c: &RawClient) -> Result<(), CliError> {
        let n = self.args.keys;
        let all = self.kind_range("key");

        let pairs = c.scan(all.clone(), n + 10).await.context("scan")?;
        check(
            pairs.len() == n as usize,
            format!("scan returned {} pairs, expected {n}", pairs.len()),
        )?;
        for (i, p) in (0..n).zip(&pairs) {
            check(
                p.key.as_bytes() == &self.key("key", i)[..]
                    && p.value[..] == *format!("value-{i}").as_bytes(),
                format!("scan returned a wrong or out-of-order pair at position {i}"),
            )?;
        }
        let regions = self.regions(c, &all).await?.len();
        self.say(format!(
            "scan of all {n} keys over {regions} regions: in order, values right"
        ))?;

        // A short scan that starts just before a region boundary must continue in the next
        // region.
        let boundary = n / 4;
        let from = boundary - 3;
        let range = KeyRange::new(self.key("key", from), all.end().clone());
        let pairs = c.scan(range, 6).await.context("scan")?;
        let got: Vec<Vec<u8>> = pairs.iter().map(|p| p.key.as_bytes().to_vec()).collect();
        let want: Vec<Vec<u8>> = (from..from + 6).map(|i| self.key("key", i)).collect();
        check(
            got == want,
            "a scan across a region boundary returned the wrong keys",
        )?;
        self.say(format!(
            "scan from {} limit 6: {} .. {} (crosses into the region starting at {})",
            self.show_key(&want[0]),
            self.show_key(&want[0]),
            self.show_key(&want[5]),
            self.show_key(&self.key("key", boundary)),
        ))?;

        let pairs = c
            .reverse_scan(all.clone(), 5)
            .await
            .context("reverse_scan")?;
        let got: Vec<Vec<u8>> = pairs.iter().map(|p| p.key.as_bytes().to_vec()).collect();
        let want: Vec<Vec<u8>> = (n - 5..n).rev().map(|i| self.key("key", i)).collect();
        check(got == want, "reverse_scan returned the wrong keys")?;
        self.say(format!(
            "reverse_scan limit 5: {} down to {}",
            self.show_key(&want[0]),
            self.show_key(&want[4])
        ))?;

        let upto = boundary + 3;
        let range = KeyRange::new(all.start().clone(), self.key("key", upto));
        let keys = c
            .reverse_scan_keys(range, 6)
            .await
            .context("reverse_scan_keys")?;
        let got: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        let want: Vec<Vec<u8>> = (upto - 6..upto).rev().map(|i| self.key("key", i)).collect();
        check(
            got == want,
            "a reverse scan across a region boundary returned the wrong keys",
        )?;
        self.say(format!(
            "reverse_scan_keys below {} limit 6: {} down to {} (crosses a region boundary backwards)",
            self.show_key(&self.key("key", upto)),
            self.show_key(&want[0]),
            self.show_key(&want[5])
        ))?;

        let keys = c.scan_keys(all, n + 10).await.context("scan_keys")?;
        check(
            keys.len() == n as usize,
            format!("scan_keys returned {} keys, expected {n}", keys.len()),
        )?;
        self.say(format!("scan_keys (no values transferred): {n} keys"))
    }

    async fn workload(
        &self,
        c: &RawClient,
        mock: Option<&MockServer>,
    ) -> Result<Workload, CliError> {
        let writers = self.args.writers;
        let total = writers * self.args.writes;
        let progress = Arc::new(Progress {
            acked: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            marks: [total as usize / 3, 2 * total as usize / 3],
            notify: Notify::new(),
        });
        self.say(format!(
            "{writers} writers each put {} keys concurrently ({total} in all, one put at a time per writer)",
            self.args.writes
        ))?;
        let started = Instant::now();
        let mut handles = Vec::new();
        for w in 0..writers {
            let c = c.clone();
            let progress = progress.clone();
            let keys: Vec<(u32, Vec<u8>)> = (w..total)
                .step_by(writers as usize)
                .map(|i| (i, self.key("load", i)))
                .collect();
            handles.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut failed = Vec::new();
                for (i, key) in keys {
                    match c.put(key, load_value(i)).await {
                        Ok(()) => {
                            acked.push(i);
                            progress.ack();
                        }
                        Err(e) => failed.push((i, e.to_string())),
                    }
                }
                progress.finished.fetch_add(1, Ordering::SeqCst);
                progress.notify.notify_one();
                (acked, failed)
            }));
        }

        match mock {
            Some(mock) => {
                let writers = writers as usize;
                progress.wait_for(0, writers).await;
                self.split(mock, total, &progress)?;
                progress.wait_for(1, writers).await;
                self.transfer(mock, total, &progress)?;
            }
            None => self.say(
                "(the split and leader transfer are mock-only: a client cannot order a real cluster to do them)",
            )?,
        }

        let mut acked = Vec::new();
        let mut failed = Vec::new();
        for h in handles {
            let (a, f) = h
                .await
                .map_err(|e| CliError::msg(format!("a writer task died: {e}")))?;
            acked.extend(a);
            failed.extend(f);
        }
        let took = started.elapsed();
        acked.sort_unstable();
        self.say(format!(
            "{} writes acknowledged, {} failed, in {} ({:.0} writes/s)",
            acked.len(),
            failed.len(),
            elapsed(took),
            acked.len() as f64 / took.as_secs_f64().max(1e-9)
        ))?;
        if let Some((i, e)) = failed.first() {
            return Err(CliError::msg(format!(
                "{} of {total} writes failed; the first, to {}: {e}",
                failed.len(),
                self.show_key(&self.key("load", *i))
            )));
        }
        Ok(Workload { acked, took })
    }

    /// Splits the workload's region in the middle of its key range while writers run.
    fn split(&self, mock: &MockServer, total: u32, progress: &Progress) -> Result<(), CliError> {
        let at = self.key("load", total / 2);
        let acked = progress.acked.load(Ordering::SeqCst);
        let (before, after) = {
            let mut cluster = mock.cluster().lock();
            let before = cluster.topology().regions().count();
            cluster
                .split_at(&at)
                .map_err(|e| CliError::msg(format!("split_at: {e}")))?;
            (before, cluster.topology().regions().count())
        };
        self.say(format!(
            "split the region holding the workload at {} with {acked}/{total} writes acknowledged: {before} -> {after} regions",
            self.show_key(&at)
        ))
    }

    /// Moves the leader of the region under the first writes to another store.
    fn transfer(&self, mock: &MockServer, total: u32, progress: &Progress) -> Result<(), CliError> {
        let key = self.key("load", total / 4);
        let acked = progress.acked.load(Ordering::SeqCst);
        let moved = {
            let mut cluster = mock.cluster().lock();
            let region = cluster
                .topology()
                .region_by_key(&key)
                .ok_or_else(|| CliError::msg("no region holds the workload's keys"))?;
            let id = region.id();
            let from = region.leader().map(|p| p.store_id);
            let to = region
                .meta
                .peers
                .iter()
                .map(|p| p.store_id)
                .find(|s| Some(*s) != from);
            match (from, to) {
                (Some(from), Some(to)) => {
                    cluster
                        .transfer_leader(id, to)
                        .map_err(|e| CliError::msg(format!("transfer_leader: {e}")))?;
                    Some((id, from, to))
                }
                _ => None,
            }
        };
        match moved {
            Some((id, from, to)) => self.say(format!(
                "moved the leader of region {id} (holding {}) from store {from} to store {to} with {acked}/{total} writes acknowledged",
                self.show_key(&key)
            )),
            None => self.say("(leader transfer skipped: the region has a single replica)"),
        }
    }

    async fn consistency(&mut self, c: &RawClient, w: &Workload) -> Result<(), CliError> {
        let keys: Vec<Vec<u8>> = w.acked.iter().map(|&i| self.key("load", i)).collect();
        let found: BTreeMap<Vec<u8>, Vec<u8>> = c
            .batch_get(keys)
            .await
            .context("batch_get")?
            .into_iter()
            .map(|p| (p.key.as_bytes().to_vec(), p.value.to_vec()))
            .collect();
        let mut missing = Vec::new();
        let mut wrong = Vec::new();
        for &i in &w.acked {
            match found.get(&self.key("load", i)) {
                None => missing.push(i),
                Some(v) if v[..] != *load_value(i).as_bytes() => wrong.push(i),
                Some(_) => {}
            }
        }
        let scanned = scan_all(c, self.kind_range("load")).await?.len();
        let regions = self.regions(c, &self.kind_range("load")).await?.len();
        let acked = w.acked.len();
        if !missing.is_empty() || !wrong.is_empty() || scanned != acked {
            return Err(CliError::msg(format!(
                "consistency check FAILED: of {acked} acknowledged writes {} are missing and {} have a wrong value; a scan sees {scanned} keys (first missing: {:?}, first wrong: {:?})",
                missing.len(),
                wrong.len(),
                missing.first(),
                wrong.first()
            )));
        }
        let written: Vec<(Vec<u8>, Vec<u8>)> = w
            .acked
            .iter()
            .map(|&i| (self.key("load", i), load_value(i).into_bytes()))
            .collect();
        self.expected.extend(written);
        self.say(format!(
            "consistency check passed: {acked}/{acked} acknowledged writes read back with the right values; a scan over the {regions} workload regions sees exactly {scanned} keys"
        ))?;
        self.say(format!(
            "(the workload took {}; the demo never retries: the client rode out the split and the leader move by itself)",
            elapsed(w.took)
        ))
    }

    async fn cas(&mut self, c: &RawClient) -> Result<(), CliError> {
        // CAS needs atomic mode on every writer of the key; this handle is the only one.
        let c = c.with_atomic_for_cas();
        let key = self.key("cas", 0);
        let shown = self.show_key(&key);
        let r = c
            .compare_and_swap(key.clone(), None::<Vec<u8>>, "1")
            .await
            .context("compare_and_swap")?;
        check(
            r.swapped && r.previous.is_none(),
            "CAS from absent to 1 did not swap",
        )?;
        self.say(format!("cas {shown}: absent -> 1: swapped"))?;
        let r = c
            .compare_and_swap(key.clone(), Some("1"), "2")
            .await
            .context("compare_and_swap")?;
        check(
            r.swapped && r.previous.as_deref() == Some(&b"1"[..]),
            "CAS from 1 to 2 did not swap",
        )?;
        self.say(format!("cas {shown}: 1 -> 2: swapped"))?;
        let r = c
            .compare_and_swap(key.clone(), Some("1"), "3")
            .await
            .context("compare_and_swap")?;
        check(
            !r.swapped && r.previous.as_deref() == Some(&b"2"[..]),
            "CAS with a stale expected value swapped",
        )?;
        self.say(format!(
            "cas {shown}: 1 -> 3: not swapped, the value is {} (a stale expectation loses)",
            escape(r.previous.as_deref().unwrap_or_default())
        ))?;
        let got = c.get(key.clone()).await.context("get")?;
        check(
            got.as_deref() == Some(&b"2"[..]),
            "the CAS key does not hold 2",
        )?;
        self.expected.insert(key, b"2".to_vec());
        Ok(())
    }

    async fn ttl(&mut self, c: &RawClient, on_mock: bool) -> Result<(), CliError> {
        const TTL: u64 = 600;
        let key = self.key("ttl", 0);
        let plain = self.key("ttl", 1);
        let result: Result<(Option<u64>, Option<u64>), tikv_tokio::Error> = async {
            c.put_with_ttl(key.clone(), "expiring", TTL).await?;
            c.put(plain.clone(), "lasting").await?;
            Ok((
                c.get_key_ttl(key.clone()).await?,
                c.get_key_ttl(plain.clone()).await?,
            ))
        }
        .await;
        let (ttl, none) = match result {
            Ok(r) => r,
            // Real clusters run with TTL off unless configured (storage.enable-ttl); that is
            // the cluster's choice, not a client failure.
            Err(e) if !on_mock => {
                self.say(format!("skipped: the cluster refused a TTL write ({e})"))?;
                // The plain key may have been written before the refusal.
                if c.get(plain.clone()).await.context("get")?.is_some() {
                    self.expected.insert(plain, b"lasting".to_vec());
                }
                return Ok(());
            }
            Err(e) => return Err(CliError::msg(format!("ttl: {e}"))),
        };
        check(
            matches!(ttl, Some(t) if t > 0 && t <= TTL),
            format!("the TTL of a key put with {TTL}s is {ttl:?}"),
        )?;
        check(
            none == Some(0),
            format!("a key put without TTL reports {none:?}"),
        )?;
        let missing = c
            .get_key_ttl(self.key("missing", 0))
            .await
            .context("get_key_ttl")?;
        check(missing.is_none(), "a missing key reports a TTL")?;
        self.say(format!(
            "put_with_ttl {} for {TTL}s: get_key_ttl says {}s left",
            self.show_key(&key),
            ttl.unwrap_or_default()
        ))?;
        self.say(format!(
            "{} put without TTL: no TTL; a missing key: none",
            self.show_key(&plain)
        ))?;
        self.expected.insert(key, b"expiring".to_vec());
        self.expected.insert(plain, b"lasting".to_vec());
        Ok(())
    }

    async fn checksum(&self, c: &RawClient) -> Result<(), CliError> {
        let sum = c.checksum(self.prefix_range()).await.context("checksum")?;
        let kvs = self.expected.len() as u64;
        let bytes: u64 = self
            .expected
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        check(
            sum.total_kvs == kvs && sum.total_bytes == bytes,
            format!(
                "checksum counts {} pairs and {} bytes, the demo wrote {kvs} pairs and {bytes} bytes",
                sum.total_kvs, sum.total_bytes
            ),
        )?;
        self.say(format!(
            "checksum of the prefix: crc64_xor {:016x}, {kvs} pairs, {bytes} bytes: matches what the demo wrote",
            sum.crc64_xor
        ))?;

        // Read everything back and compare with what the demo believes it wrote.
        let stored: BTreeMap<Vec<u8>, Vec<u8>> = scan_all(c, self.prefix_range()).await?;
        check(
            stored == self.expected,
            format!(
                "reading the prefix back gives {} pairs that differ from the {kvs} written",
                stored.len()
            ),
        )?;
        self.say(format!(
            "paged scan of the whole prefix ({PAGE} per page): exactly the {kvs} pairs written"
        ))
    }
}

/// Every pair of `range`, page by page (one scan is capped by TiKV's scan limit).
async fn scan_all(c: &RawClient, range: KeyRange) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, CliError> {
    let mut all = BTreeMap::new();
    let (mut start, end) = range.into_keys();
    loop {
        let page = c
            .scan(KeyRange::new(start.clone(), end.clone()), PAGE)
            .await
            .context("scan")?;
        let full = page.len() == PAGE as usize;
        if let Some(last) = page.last() {
            start = last.key.next_key();
        }
        all.extend(
            page.into_iter()
                .map(|p| (p.key.as_bytes().to_vec(), p.value.to_vec())),
        );
        if !full {
            return Ok(all);
        }
    }
}

/// The value the workload writes at index `i` (derived from `i`, so checks need no record).
fn load_value(i: u32) -> String {
    format!("load-value-{i}")
}

/// Fails with `message` unless `ok`.
fn check(ok: bool, message: impl Into<String>) -> Result<(), CliError> {
    if ok {
        Ok(())
    } else {
        Err(CliError::msg(format!("check failed: {}", message.into())))
    }
}

/// Shared between the writers and the task that splits and moves leaders mid-workload.
struct Progress {
    acked: AtomicUsize,
    finished: AtomicUsize,
    /// Acknowledged-write counts at which the split and the transfer happen.
    marks: [usize; 2],
    notify: Notify,
}

impl Progress {
    fn ack(&self) {
        let n = self.acked.fetch_add(1, Ordering::SeqCst) + 1;
        if self.marks.contains(&n) {
            self.notify.notify_one();
        }
    }

    /// Waits until `marks[mark]` writes are acknowledged or every writer has finished (a
    /// writer that fails stops adding acknowledgements, so the mark may never come).
    async fn wait_for(&self, mark: usize, writers: usize) {
        // `notify_one` keeps a permit when nobody waits, so a wake-up between the check and
        // the wait is not lost.
        while self.acked.load(Ordering::SeqCst) < self.marks[mark]
            && self.finished.load(Ordering::SeqCst) < writers
        {
            self.notify.notified().await;
        }
    }
}
