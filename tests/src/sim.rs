//! Simulation workloads and checkers over the real RawKV client, the in-memory network and
//! the mock cluster, on virtual time.
//!
//! A run is fully determined by its seed: the client's RNG, the network's faults and latency,
//! the nemesis's choices (splits, merges, leader moves, partitions) and the workload's keys
//! all derive from it. [`run`] returns the run's trace hash and the checker's verdict.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tikv_core::Rng;
use tikv_mock::server::SharedCluster;
use tikv_mock::sim::client::{Config, Error, RawClient, Runtime};
use tikv_mock::sim::{Faults, PD_ADDRESS, SimNetwork, SimRuntime};
use tikv_mock::{Cluster, ClusterConfig};

/// What a run produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Hash of every message delivered, in order.
    pub trace: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Virtual time the run took.
    pub elapsed: Duration,
    /// `Err` with the first violated invariant.
    pub verdict: Result<(), String>,
}

/// Per key: the last value a put of which was acknowledged, and the last value attempted.
#[derive(Clone, Copy, Debug, Default)]
struct Register {
    acked: u64,
    attempted: u64,
}

const WRITERS: u64 = 4;
const KEYS_PER_WRITER: u64 = 4;
const WRITES_PER_WRITER: u64 = 40;

fn key(writer: u64, k: u64) -> String {
    format!("w{writer}/k{k}")
}

/// Runs `workload` in a fresh simulated world for `seed` — a three-store cluster with
/// `pd_members` PD members, behind a lossy network — and collects the outcome. The workload
/// gets the runtime, the network and the seed's client configuration: its RNG seed, and
/// BatchCommands on even seeds (odd seeds send every request as a unary call).
fn simulate<F>(
    seed: u64,
    pd_members: usize,
    workload: impl FnOnce(SimRuntime, SimNetwork, Config) -> F,
) -> Outcome
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let runtime = SimRuntime::new();
    let cluster = SharedCluster::new(Cluster::new(ClusterConfig {
        stores: 3,
        pd_members,
        seed,
        ..Default::default()
    }));
    let network = SimNetwork::new(runtime.clone(), cluster, Faults::lossy(), seed);
    let config = Config::default()
        .with_rng_seed(seed)
        .with_batch_commands(seed % 2 == 0);
    let main = workload(runtime.clone(), network.clone(), config);
    let verdict = match runtime.block_on(main, Duration::from_secs(3600)) {
        Ok(v) => v,
        Err(stop) => Err(format!("simulation stopped: {stop:?}")),
    };
    Outcome {
        trace: network.trace_hash(),
        messages: network.delivered(),
        elapsed: runtime.elapsed(),
        verdict,
    }
}

/// Runs the register workload under faults and a nemesis, then checks that no acknowledged
/// write was lost and that scans agree with point reads.
pub fn run(seed: u64) -> Outcome {
    simulate(seed, 3, move |rt, net, config| async move {
        let regs: Arc<Mutex<BTreeMap<String, Register>>> = Arc::default();
        let client =
            RawClient::connect_over(rt.clone(), Arc::new(net.clone()), &[PD_ADDRESS], config)
                .await
                .map_err(|e| format!("connect: {e}"))?;
        let (done_tx, mut done_rx) = futures_channel::mpsc::unbounded::<()>();
        for writer in 0..WRITERS {
            let (client, regs, done) = (client.clone(), regs.clone(), done_tx.clone());
            let mut rng = Rng::seeded(seed ^ (writer + 1).wrapping_mul(0x9e37_79b9));
            rt.spawn(async move {
                for value in 1..=WRITES_PER_WRITER {
                    let k = key(writer, rng.below(KEYS_PER_WRITER));
                    regs.lock().unwrap().entry(k.clone()).or_default().attempted = value;
                    if client.put(k.clone(), value.to_string()).await.is_ok() {
                        regs.lock().unwrap().entry(k).or_default().acked = value;
                    }
                }
                let _ = done.unbounded_send(());
            });
        }
        drop(done_tx);
        // The nemesis: topology changes and partitions while the writers run.
        let nemesis = {
            let (rt, net, cluster) = (rt.clone(), net.clone(), net.cluster().clone());
            let mut rng = Rng::seeded(seed.rotate_left(17));
            async move {
                for _ in 0..12 {
                    rt.sleep(Duration::from_millis(rng.between(5, 60))).await;
                    let disruption = {
                        let mut c = cluster.lock();
                        let regions: Vec<(u64, Vec<u64>)> = c
                            .topology()
                            .regions()
                            .map(|r| (r.id(), r.meta.peers.iter().map(|p| p.store_id).collect()))
                            .collect();
                        match rng.below(7) {
                            0 | 1 => {
                                let at = key(rng.below(WRITERS), rng.below(KEYS_PER_WRITER));
                                let _ = c.split_at(at.as_bytes());
                                None
                            }
                            2 => {
                                let (region, stores) =
                                    &regions[rng.below(regions.len() as u64) as usize];
                                let store = stores[rng.below(stores.len() as u64) as usize];
                                let _ = c.transfer_leader(*region, store);
                                None
                            }
                            3 if regions.len() >= 2 => {
                                let i = rng.below(regions.len() as u64 - 1) as usize;
                                let _ = c.merge_regions(regions[i].0, regions[i + 1].0);
                                None
                            }
                            4 => {
                                let _ = c.transfer_pd_leader(rng.below(3) as usize);
                                None
                            }
                            5 => Some((rng.between(1, 3), true)),
                            _ => Some((rng.between(1, 3), false)),
                        }
                    };
                    // A store goes down (crash) or is cut off (partition) for a while.
                    if let Some((store, crash)) = disruption {
                        if crash {
                            let _ = cluster.lock().store_down(store);
                        } else {
                            net.partition(store);
                        }
                        rt.sleep(Duration::from_millis(rng.between(10, 200))).await;
                        let _ = cluster.lock().store_up(store);
                        net.heal();
                    }
                }
            }
        };
        nemesis.await;
        net.heal();
        for _ in 0..WRITERS {
            futures_util::StreamExt::next(&mut done_rx).await;
        }
        // The network is reliable again for the checks: they must see everything.
        net.set_faults(Faults::none());
        check(&client, &regs).await
    })
}

async fn check(client: &RawClient, regs: &Mutex<BTreeMap<String, Register>>) -> Result<(), String> {
    let registers = regs.lock().unwrap().clone();
    for (k, reg) in &registers {
        let got = client
            .get(k.clone())
            .await
            .map_err(|e| format!("read {k}: {e}"))?;
        let value: u64 = match got {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(format!("{k}: garbage value"))?,
            None => 0,
        };
        if value < reg.acked {
            return Err(format!(
                "lost write: {k} reads {value}, but {} was acknowledged",
                reg.acked
            ));
        }
        if value > reg.attempted {
            return Err(format!(
                "phantom write: {k} reads {value}, never written past {}",
                reg.attempted
            ));
        }
    }
    let scanned = client
        .scan(.., 10_000)
        .await
        .map_err(|e| format!("scan: {e}"))?;
    let written: Vec<&String> = registers
        .iter()
        .filter(|(_, r)| r.acked > 0)
        .map(|(k, _)| k)
        .collect();
    for k in written {
        if !scanned.iter().any(|p| p.key.as_bytes() == k.as_bytes()) {
            return Err(format!("scan misses acknowledged key {k}"));
        }
    }
    if scanned.windows(2).any(|w| w[0].key >= w[1].key) {
        return Err("scan out of order or duplicated".into());
    }
    Ok(())
}

/// Runs concurrent compare-and-swaps and reads on one key under faults and a nemesis, and
/// checks the history for linearizability. (Only CAS and reads: a put retried after a lost
/// reply may land again later, which no register client can avoid without idempotency
/// tokens, so puts are not part of this model.)
pub fn run_cas(seed: u64) -> Outcome {
    use crate::linearizability::{Event, Op, check};
    const CLIENTS: u64 = 3;
    const OPS: u64 = 12;
    simulate(seed, 1, move |rt, net, config| async move {
        let hist: Arc<Mutex<Vec<Event>>> = Arc::default();
        let client =
            RawClient::connect_over(rt.clone(), Arc::new(net.clone()), &[PD_ADDRESS], config)
                .await
                .map_err(|e| format!("connect: {e}"))?
                .with_atomic_for_cas();
        let (done_tx, mut done_rx) = futures_channel::mpsc::unbounded::<()>();
        for c in 0..CLIENTS {
            let (client, hist, rt, done) =
                (client.clone(), hist.clone(), rt.clone(), done_tx.clone());
            let mut rng = Rng::seeded(seed ^ (c + 7).wrapping_mul(0x2545_f491));
            rt.clone().spawn(async move {
                let mut last_seen: Option<u64> = None;
                for i in 0..OPS {
                    let invoked = rt.elapsed();
                    let event = if rng.below(3) == 0 {
                        match client.get("register").await {
                            Ok(v) => {
                                let v = v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok());
                                last_seen = v;
                                Some(Event {
                                    op: Op::Get(v),
                                    invoked,
                                    returned: Some(rt.elapsed()),
                                })
                            }
                            Err(_) => None, // a failed read has no effect
                        }
                    } else {
                        let new = (c + 1) * 1000 + i;
                        let expected = if rng.below(4) == 0 { None } else { last_seen };
                        let exp_bytes = expected.map(|v| v.to_string());
                        match client
                            .compare_and_swap("register", exp_bytes, new.to_string())
                            .await
                        {
                            Ok(r) => {
                                let previous = r
                                    .previous
                                    .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok());
                                last_seen = if r.swapped { Some(new) } else { previous };
                                let observed = Some((r.swapped, previous));
                                Some(Event {
                                    op: Op::Cas {
                                        expected,
                                        new,
                                        observed,
                                    },
                                    invoked,
                                    returned: Some(rt.elapsed()),
                                })
                            }
                            // Undetermined or given up: it may or may not have happened.
                            Err(_) => Some(Event {
                                op: Op::Cas {
                                    expected,
                                    new,
                                    observed: None,
                                },
                                invoked,
                                returned: None,
                            }),
                        }
                    };
                    hist.lock().unwrap().extend(event);
                }
                let _ = done.unbounded_send(());
            });
        }
        drop(done_tx);
        let mut rng = Rng::seeded(seed.rotate_left(29));
        for _ in 0..6 {
            rt.sleep(Duration::from_millis(rng.between(5, 40))).await;
            let mut c = net.cluster().lock();
            let regions: Vec<u64> = c.topology().regions().map(|r| r.id()).collect();
            let region = regions[rng.below(regions.len() as u64) as usize];
            let _ = c.transfer_leader(region, rng.between(1, 3));
            let _ = c.split_at(format!("register{}", rng.below(3)).as_bytes());
        }
        for _ in 0..CLIENTS {
            futures_util::StreamExt::next(&mut done_rx).await;
        }
        let history = hist.lock().unwrap().clone();
        if check(None, &history) {
            Ok(())
        } else {
            Err(format!("history is not linearizable: {history:#?}"))
        }
    })
}

/// A register read and swapped by transactions (read, write the new value, commit) under
/// faults and leader moves, committed with async commit, 1PC or 2PC by seed, checked for
/// linearizability: a transaction that starts after another committed must see it, which
/// async commit and 1PC owe to the fresh timestamp below their commit timestamp.
pub fn run_txn_register(seed: u64) -> Outcome {
    use crate::linearizability::{Event, Op, check};

    const CLIENTS: u64 = 3;
    const OPS: u64 = 10;
    simulate(seed, 1, move |rt, net, config| async move {
        let config = config
            .with_async_commit(seed % 3 == 0)
            .with_try_one_pc(seed % 3 == 1);
        let client = txn_client(&rt, &net, config).await?;
        let hist: Arc<Mutex<Vec<Event>>> = Arc::default();
        let parse =
            |v: Option<bytes::Bytes>| v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok());
        let (done_tx, mut done_rx) = futures_channel::mpsc::unbounded::<()>();
        for c in 0..CLIENTS {
            let (client, hist, rt, done) =
                (client.clone(), hist.clone(), rt.clone(), done_tx.clone());
            let mut rng = Rng::seeded(seed ^ (c + 3).wrapping_mul(0x9e37_79b9));
            rt.clone().spawn(async move {
                for i in 0..OPS {
                    let invoked = rt.elapsed();
                    let Ok(mut t) = client.begin().await else {
                        continue;
                    };
                    let Ok(seen) = t.get("register").await else {
                        continue;
                    };
                    let seen: Option<u64> = parse(seen);
                    if rng.below(3) == 0 {
                        hist.lock().unwrap().push(Event {
                            op: Op::Get(seen),
                            invoked,
                            returned: Some(rt.elapsed()),
                        });
                        continue;
                    }
                    let new = (c + 1) * 1000 + i;
                    if t.put("register", new.to_string()).await.is_err() {
                        continue;
                    }
                    let swap = |observed, returned| Event {
                        op: Op::Cas {
                            expected: seen,
                            new,
                            observed,
                        },
                        invoked,
                        returned,
                    };
                    match t.commit().await {
                        Ok(_) => hist
                            .lock()
                            .unwrap()
                            .push(swap(Some((true, seen)), Some(rt.elapsed()))),
                        // It may or may not have happened.
                        Err(Error::Undetermined { .. }) => {
                            hist.lock().unwrap().push(swap(None, None))
                        }
                        // Aborted: no effect.
                        Err(_) => {}
                    }
                }
                let _ = done.unbounded_send(());
            });
        }
        drop(done_tx);
        let mut rng = Rng::seeded(seed.rotate_left(17));
        for _ in 0..6 {
            rt.sleep(Duration::from_millis(rng.between(5, 40))).await;
            let mut c = net.cluster().lock();
            let regions: Vec<u64> = c.topology().regions().map(|r| r.id()).collect();
            let region = regions[rng.below(regions.len() as u64) as usize];
            let _ = c.transfer_leader(region, rng.between(1, 3));
        }
        for _ in 0..CLIENTS {
            futures_util::StreamExt::next(&mut done_rx).await;
        }
        let history = hist.lock().unwrap().clone();
        if !check(None, &history) {
            return Err(format!("history is not linearizable: {history:#?}"));
        }
        net.set_faults(Faults::none());
        no_locks_after_readers(&rt, &net, &client, vec!["register".into()]).await
    })
}

/// Concurrent bank transfers through the transactional client under faults, splits and leader
/// moves, and on even seeds GC rounds with a 20 ms life time; the total must be conserved
/// whatever committed, aborted (by a conflict or by GC) or stayed undetermined, and a GC round
/// once the transfers are over leaves no lock below its safe point.
pub fn run_bank(seed: u64) -> Outcome {
    use tikv_mock::sim::client::{LockOptions, LockWait, TransactionOptions};
    const ACCOUNTS: u64 = 5;
    const WORKERS: u64 = 3;
    const TRANSFERS: u64 = 8;
    simulate(seed, 1, move |rt, net, config| async move {
        // The commit path by seed: 1PC (single-region transactions), async commit, or 2PC;
        // and every other triple of seeds, pessimistic transfers (lock both accounts first).
        let pessimistic = (seed / 3) % 2 == 1;
        let gc = seed % 2 == 0;
        let config = config
            .with_try_one_pc(seed % 3 == 0)
            .with_async_commit(seed % 3 == 1);
        let client = txn_client(&rt, &net, config).await?;
        let account = |i: u64| format!("acct{i}");
        let parse = |v: Option<bytes::Bytes>| -> Result<i64, String> {
            let v = v.ok_or("missing account")?;
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "garbage balance".to_string())
        };
        // Opening balances, retried until they land (setup must not be undetermined).
        loop {
            let mut t = client.begin().await.map_err(|e| format!("begin: {e}"))?;
            for i in 0..ACCOUNTS {
                t.put(account(i), "100")
                    .await
                    .map_err(|e| format!("put: {e}"))?;
            }
            if t.commit().await.is_ok() {
                break;
            }
        }
        let (done_tx, mut done_rx) = futures_channel::mpsc::unbounded::<()>();
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for w in 0..WORKERS {
            let (client, done, committed) = (client.clone(), done_tx.clone(), committed.clone());
            let mut rng = Rng::seeded(seed ^ (w + 11).wrapping_mul(0x51_7cc1));
            rt.spawn(async move {
                for _ in 0..TRANSFERS {
                    let (a, b) = (rng.below(ACCOUNTS), rng.below(ACCOUNTS));
                    if a == b {
                        continue;
                    }
                    for _attempt in 0..5 {
                        let options = if pessimistic {
                            TransactionOptions::pessimistic()
                        } else {
                            TransactionOptions::default()
                        };
                        let Ok(mut t) = client.begin_with(options).await else {
                            continue;
                        };
                        let (x, y) = if pessimistic {
                            // Lock both accounts and read their latest balances; a wait that
                            // does not end (two transfers locking in opposite orders: the
                            // simulated stores answer waits at once, without a deadlock
                            // detector) gives up and retries.
                            let lock = LockOptions::default()
                                .with_return_values(true)
                                .with_wait(LockWait::Timeout(Duration::from_millis(300)));
                            let Ok(locked) = t.lock_keys([account(a), account(b)], lock).await
                            else {
                                let _ = t.rollback().await;
                                continue;
                            };
                            let value_of = |k: String| {
                                Ok(locked
                                    .values
                                    .iter()
                                    .find(|v| v.key.as_bytes() == k.as_bytes())
                                    .and_then(|v| v.value.clone()))
                            };
                            (value_of(account(a)), value_of(account(b)))
                        } else {
                            (t.get(account(a)).await, t.get(account(b)).await)
                        };
                        let (Ok(x), Ok(y)) = (x, y) else {
                            continue;
                        };
                        let (Ok(x), Ok(y)) = (parse(x), parse(y)) else {
                            continue;
                        };
                        let debit = t.put(account(a), (x - 1).to_string()).await;
                        let credit = t.put(account(b), (y + 1).to_string()).await;
                        if debit.is_err() || credit.is_err() {
                            continue;
                        }
                        match t.commit().await {
                            Ok(_) => {
                                committed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                break;
                            }
                            // Undetermined: it may have happened; the invariant holds either way.
                            Err(Error::Undetermined { .. }) => break,
                            Err(_) => continue,
                        }
                    }
                }
                let _ = done.unbounded_send(());
            });
        }
        drop(done_tx);
        let mut rng = Rng::seeded(seed.rotate_left(41));
        for _ in 0..6 {
            rt.sleep(Duration::from_millis(rng.between(5, 50))).await;
            {
                let mut c = net.cluster().lock();
                let split =
                    tikv_core::codec::encode_memcomparable(account(rng.below(ACCOUNTS)).as_bytes());
                let _ = c.split_at(&split);
                let regions: Vec<u64> = c.topology().regions().map(|r| r.id()).collect();
                let _ = c.transfer_leader(
                    regions[rng.below(regions.len() as u64) as usize],
                    rng.between(1, 3),
                );
            }
            if gc {
                // A GC round while transfers run: transactions older than the life time lose
                // their locks (rolled back, or committed where their primary was).
                if let Ok(now) = client.current_timestamp().await {
                    let _ = client.gc(now.sub_ms(20)).await;
                }
            }
        }
        for _ in 0..WORKERS {
            futures_util::StreamExt::next(&mut done_rx).await;
        }
        net.set_faults(Faults::none());
        if gc {
            let safe_point = client
                .current_timestamp()
                .await
                .map_err(|e| format!("timestamp: {e}"))?;
            let report = client
                .gc(safe_point)
                .await
                .map_err(|e| format!("final GC round: {e}"))?;
            if report.gc_safe_point.new != safe_point {
                return Err(format!(
                    "the GC safe point did not reach {safe_point}: {report:?}"
                ));
            }
            let below: Vec<_> = crate::crashed::scan_locks(&mut net.cluster().lock())
                .into_iter()
                .filter(|l| l.lock_version <= safe_point.as_u64())
                .collect();
            if !below.is_empty() {
                return Err(format!(
                    "{} lock(s) below the safe point after a GC round: {below:?}",
                    below.len()
                ));
            }
        }
        let check = client.begin().await.map_err(|e| format!("begin: {e}"))?;
        let pairs = check
            .batch_get((0..ACCOUNTS).map(account))
            .await
            .map_err(|e| format!("final read: {e}"))?;
        if pairs.len() as u64 != ACCOUNTS {
            let missing: Vec<String> = (0..ACCOUNTS)
                .map(account)
                .filter(|a| !pairs.iter().any(|p| p.key.as_bytes() == a.as_bytes()))
                .collect();
            let single = match missing.first() {
                Some(k) => format!("{:?}", check.get(k.clone()).await),
                None => String::new(),
            };
            return Err(format!(
                "{} of {ACCOUNTS} accounts readable; missing {missing:?}; a point read of the first says {single}",
                pairs.len()
            ));
        }
        let total: i64 = pairs
            .iter()
            .map(|p| parse(Some(p.value.clone())))
            .sum::<Result<i64, String>>()?;
        if total != 100 * ACCOUNTS as i64 {
            return Err(format!("money not conserved: total {total}"));
        }
        if committed.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return Err(format!(
                "no transfer committed (pessimistic: {pessimistic}): the workload checked nothing"
            ));
        }
        no_locks_after_readers(&rt, &net, &client, (0..ACCOUNTS).map(account).collect()).await
    })
}

/// A transactional client of the simulated cluster behind `net`.
async fn txn_client(
    rt: &SimRuntime,
    net: &SimNetwork,
    config: Config,
) -> Result<tikv_mock::sim::client::TransactionClient, String> {
    tikv_mock::sim::client::TransactionClient::connect_over(
        rt.clone(),
        Arc::new(net.clone()),
        &[PD_ADDRESS],
        config,
    )
    .await
    .map_err(|e| format!("connect: {e}"))
}

/// Once every lock left by abandoned or undetermined transactions has outlived its TTL, a
/// reader of `keys` resolves them all: none may remain in the cluster.
async fn no_locks_after_readers(
    rt: &SimRuntime,
    net: &SimNetwork,
    client: &tikv_mock::sim::client::TransactionClient,
    keys: Vec<String>,
) -> Result<(), String> {
    // The longest TTL a small transaction's lock has (client-go's default, 3 s).
    rt.sleep(Duration::from_secs(4)).await;
    let reader = client.begin().await.map_err(|e| format!("begin: {e}"))?;
    reader
        .batch_get(keys)
        .await
        .map_err(|e| format!("read after the run: {e}"))?;
    // Resolution of async-commit secondaries and background commits finish in the background.
    rt.sleep(Duration::from_secs(1)).await;
    // What is left now has a TTL longer than the wait above: pessimistic locks (readers pass
    // them) and the prewrite locks that replaced them (20 s past the transaction's age), left
    // by undetermined commits or failed rollbacks. A writer or GC resolves them once the TTL
    // has run out: do what they would.
    let leftover: Vec<tikv_core::txn::Lock> = crate::crashed::scan_locks(&mut net.cluster().lock())
        .iter()
        .map(tikv_core::txn::Lock::from)
        .collect();
    if !leftover.is_empty() {
        rt.sleep(Duration::from_secs(25)).await;
        let now = client
            .current_timestamp()
            .await
            .map_err(|e| format!("timestamp: {e}"))?;
        let resolved = client
            .resolve_locks(leftover, now)
            .await
            .map_err(|e| format!("resolving the locks left: {e}"))?;
        if resolved.alive > 0 {
            return Err(format!(
                "{} lock(s) still alive after their TTL",
                resolved.alive
            ));
        }
        rt.sleep(Duration::from_secs(1)).await;
    }
    let left = crate::crashed::count_locks(&mut net.cluster().lock(), None);
    if left > 0 {
        let detail = crate::crashed::describe_locks(&mut net.cluster().lock());
        return Err(format!(
            "{left} lock(s) left after every reader resolved: {detail}"
        ));
    }
    Ok(())
}

/// A pessimistic transaction that holds its lock for a minute of virtual time, three times
/// the lock's TTL, under a lossy network: its heartbeats keep the lock alive, so another
/// transaction cannot take it, and it commits at the end.
pub fn run_long_pessimistic(seed: u64) -> Outcome {
    use tikv_mock::sim::client::{LockOptions, LockWait, TransactionOptions};
    simulate(seed, 1, move |rt, net, config| async move {
        let client = txn_client(&rt, &net, config).await?;
        let mut long = client
            .begin_with(TransactionOptions::pessimistic())
            .await
            .map_err(|e| format!("begin: {e}"))?;
        long.lock_keys(["held"], LockOptions::default())
            .await
            .map_err(|e| format!("lock: {e}"))?;
        rt.sleep(Duration::from_secs(60)).await;
        let mut other = client
            .begin_with(TransactionOptions::pessimistic())
            .await
            .map_err(|e| format!("begin: {e}"))?;
        let no_wait = LockOptions::default().with_wait(LockWait::NoWait);
        match other.lock_keys(["held"], no_wait).await {
            Err(Error::LockAcquireFailAndNoWaitSet { .. }) => {}
            Ok(_) => {
                let counters = net.cluster().lock().counters().clone();
                return Err(format!(
                    "the lock was taken over: heartbeats did not keep it ({} heartbeats, {:?})",
                    counters.rpcs_of("KvTxnHeartBeat"),
                    counters.rpcs
                ));
            }
            Err(e) => return Err(format!("unexpected: {e}")),
        }
        let _ = other.rollback().await;
        long.put("held", "after a minute")
            .await
            .map_err(|e| format!("put: {e}"))?;
        match long.commit().await {
            Ok(_) | Err(Error::Undetermined { .. }) => Ok(()),
            Err(e) => Err(format!("the long transaction could not commit: {e}")),
        }
    })
}

/// List-append transactions under faults, splits and leader moves, pessimistic or optimistic
/// and committed with 2PC, async commit or 1PC by seed, checked by the Elle-style checker
/// ([`crate::elle`]): no G0, G1a, G1c or G-single anomaly, one version order per key. With
/// `planted_bug`, the workload reads through a snapshot taken before the transaction began
/// (a client bug that breaks snapshot isolation): the checker must catch it.
pub fn run_list_append(seed: u64, planted_bug: bool) -> Outcome {
    use crate::elle::{self, Op, Outcome as Fate, Txn};
    use tikv_mock::sim::client::TransactionOptions;

    const CLIENTS: u64 = 3;
    const TXNS: u64 = 8;
    const KEYS: u64 = 4;
    simulate(seed, 1, move |rt, net, config| async move {
        let pessimistic = (seed / 3) % 2 == 1;
        let config = config
            .with_async_commit(seed % 3 == 0)
            .with_try_one_pc(seed % 3 == 1);
        let client = txn_client(&rt, &net, config).await?;
        let key = |k: u64| format!("list{k}");
        let parse = |v: Option<bytes::Bytes>| -> Vec<u64> {
            v.map(|b| {
                std::str::from_utf8(&b)
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|e| e.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
        };
        let render = |list: &[u64]| {
            list.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let history: Arc<Mutex<Vec<Txn>>> = Arc::default();
        let (done_tx, mut done_rx) = futures_channel::mpsc::unbounded::<()>();
        for c in 0..CLIENTS {
            let (client, history, done) = (client.clone(), history.clone(), done_tx.clone());
            let mut rng = Rng::seeded(seed ^ (c + 7).wrapping_mul(0x2545_f491));
            rt.spawn(async move {
                for i in 0..TXNS {
                    let options = if pessimistic {
                        TransactionOptions::pessimistic()
                    } else {
                        TransactionOptions::default()
                    };
                    // The planted bug reads at a timestamp from before the transaction.
                    let stale = if planted_bug {
                        client.current_timestamp().await.ok()
                    } else {
                        None
                    };
                    let Ok(mut t) = client.begin_with(options).await else {
                        continue;
                    };
                    let mut ops = Vec::new();
                    let mut failed = false;
                    for j in 0..rng.between(1, 3) {
                        let k = rng.below(KEYS);
                        let read = match (&stale, rng.below(2)) {
                            (Some(ts), _) => client.snapshot(*ts).get(key(k)).await,
                            (None, _) if pessimistic => t.get_for_update(key(k)).await,
                            (None, _) => t.get(key(k)).await,
                        };
                        let Ok(value) = read else {
                            failed = true;
                            break;
                        };
                        let mut list = parse(value);
                        if rng.below(2) == 0 {
                            ops.push(Op::Read(k as u32, list));
                            continue;
                        }
                        let element = ((c * TXNS + i) << 8) | j;
                        list.push(element);
                        if t.put(key(k), render(&list)).await.is_err() {
                            failed = true;
                            break;
                        }
                        ops.push(Op::Append(k as u32, element));
                    }
                    let outcome = if failed {
                        let _ = t.rollback().await;
                        Fate::Aborted
                    } else {
                        match t.commit().await {
                            Ok(_) => Fate::Committed,
                            Err(Error::Undetermined { .. }) => Fate::Unknown,
                            Err(_) => Fate::Aborted,
                        }
                    };
                    if let Ok(mut h) = history.lock() {
                        h.push(Txn { ops, outcome });
                    }
                }
                let _ = done.unbounded_send(());
            });
        }
        drop(done_tx);
        let mut rng = Rng::seeded(seed.rotate_left(29));
        for _ in 0..4 {
            rt.sleep(Duration::from_millis(rng.between(5, 40))).await;
            let mut c = net.cluster().lock();
            let split = tikv_core::codec::encode_memcomparable(key(rng.below(KEYS)).as_bytes());
            let _ = c.split_at(&split);
            let regions: Vec<u64> = c.topology().regions().map(|r| r.id()).collect();
            let _ = c.transfer_leader(
                regions[rng.below(regions.len() as u64) as usize],
                rng.between(1, 3),
            );
        }
        for _ in 0..CLIENTS {
            futures_util::StreamExt::next(&mut done_rx).await;
        }
        net.set_faults(Faults::none());
        // A final read of every list gives each key's whole order.
        let last = client.begin().await.map_err(|e| format!("begin: {e}"))?;
        let mut ops = Vec::new();
        for k in 0..KEYS {
            let v = last
                .get(key(k))
                .await
                .map_err(|e| format!("final read: {e}"))?;
            ops.push(Op::Read(k as u32, parse(v)));
        }
        let mut history = history.lock().map_err(|_| "history poisoned")?.clone();
        history.push(Txn {
            ops,
            outcome: Fate::Committed,
        });
        let committed = history
            .iter()
            .filter(|t| {
                t.outcome == Fate::Committed && t.ops.iter().any(|o| matches!(o, Op::Append(..)))
            })
            .count();
        if committed == 0 {
            return Err("no append committed: the workload checked nothing".into());
        }
        let anomalies = elle::check(&history);
        if !anomalies.is_empty() {
            return Err(format!(
                "{} anomalies (pessimistic: {pessimistic}): {:?}",
                anomalies.len(),
                &anomalies[..anomalies.len().min(3)]
            ));
        }
        no_locks_after_readers(&rt, &net, &client, (0..KEYS).map(key).collect()).await
    })
}
