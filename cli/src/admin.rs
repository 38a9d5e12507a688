//! `tikv-cli admin ...`: what operators run against a cluster — GC and its barriers, lock
//! resolution, range deletion, flashback, region splits and scatters, region and store
//! listings, MVCC views. Each command prints text, or one JSON value with `--json`.
//!
//! Keys are text, or hex with `--hex`; timestamps are TSO numbers (as `txn` prints them).

use std::time::Duration;

use tikv_tokio::{
    GcBarrier, GcState, KeyRange, MvccInfo, ScatterOptions, Timestamp, TransactionClient,
};

use crate::error::{CliError, Context};
use crate::format::{Out, json_bytes, json_str, parse_bytes, show};
use crate::{GlobalOpts, txn};

/// Options of `tikv-cli admin`.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

/// The operator commands.
#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Show the GC state: txn safe point, GC safe point, GC barriers and global barriers.
    GcState,
    /// Run one GC round: advance the txn safe point (barriers may hold it back), resolve every
    /// lock below it, advance the GC safe point.
    Gc {
        /// The target safe point (a TSO timestamp); omitted: now.
        safe_point: Option<u64>,
        /// Range tasks run at a time.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Set or renew a GC barrier: the txn safe point will not pass TS while it lives.
    SetBarrier {
        /// The barrier's id (the service holding it).
        id: String,
        /// The timestamp to keep readable; omitted: now.
        ts: Option<u64>,
        /// How long it lives (`never`: until deleted).
        #[arg(long, default_value = "never", value_parser = parse_ttl)]
        ttl: Ttl,
        /// A global barrier, holding back every keyspace.
        #[arg(long)]
        global: bool,
    },
    /// Delete a GC barrier.
    DeleteBarrier {
        /// The barrier's id.
        id: String,
        /// A global barrier.
        #[arg(long)]
        global: bool,
    },
    /// Settle every lock in [START, END) of transactions started at or before --max-ts
    /// (whatever their TTL: live ones are rolled back).
    ResolveLocks {
        /// First key; omitted: the start of the key space.
        start: Option<String>,
        /// First key excluded; omitted: to the end of the key space.
        end: Option<String>,
        /// Locks of transactions started after this stay; omitted: now.
        #[arg(long)]
        max_ts: Option<u64>,
        /// Range tasks run at a time.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Delete every version of every key in [START, END) (no MVCC: for dropped data).
    DeleteRange {
        /// First key.
        start: String,
        /// First key excluded.
        end: String,
        /// Only announce the deletion to observers (TiFlash, CDC).
        #[arg(long)]
        notify_only: bool,
    },
    /// Drop [START, END) from every store's engine at once, bypassing raft (after
    /// delete-range, to reclaim space).
    DestroyRange {
        /// First key.
        start: String,
        /// First key excluded.
        end: String,
    },
    /// Bring [START, END) back to how it was at VERSION (a new version of each changed key;
    /// the range's regions refuse other requests meanwhile).
    Flashback {
        /// First key.
        start: String,
        /// First key excluded.
        end: String,
        /// The timestamp to go back to.
        #[arg(value_name = "VERSION")]
        to_ts: u64,
    },
    /// The checksum of [START, END) as of now (or --ts): CRC-64 XOR of every key and value,
    /// pairs and bytes (TiKV's coprocessor checksum, what backup tools compare).
    Checksum {
        /// First key.
        start: String,
        /// First key excluded.
        end: String,
        /// Read as of this timestamp; omitted: now.
        #[arg(long)]
        ts: Option<u64>,
    },
    /// Split regions so that each KEY starts one; prints the new regions' ids.
    Split {
        /// Split keys.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Then have PD scatter the new regions.
        #[arg(long)]
        scatter: bool,
        /// With --scatter: wait until the scatters finish.
        #[arg(long)]
        wait: bool,
    },
    /// Have PD scatter regions over the stores.
    Scatter {
        /// Region ids.
        #[arg(required = true)]
        regions: Vec<u64>,
        /// Scatter the regions as one group.
        #[arg(long)]
        group: Option<String>,
        /// Wait until the scatters finish.
        #[arg(long)]
        wait: bool,
    },
    /// List the regions of [START, END): id, range, epoch, leader store, peers.
    Regions {
        /// First key; omitted: the start of the key space.
        start: Option<String>,
        /// First key excluded; omitted: to the end of the key space.
        end: Option<String>,
        /// At most this many regions.
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// List the stores: id, address, state, labels.
    Stores,
    /// The smallest safe ts (resolved ts) of the stores, or of those in --zone: stale reads
    /// at or below it are served by any replica.
    MinSafeTs {
        /// Only stores with this `zone` label.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Show a key's MVCC state (lock, write records, long values), or with --start-ts the
    /// first key a transaction wrote.
    Mvcc {
        /// The key (omit with --start-ts).
        key: Option<String>,
        /// Find the transaction started at this timestamp instead.
        #[arg(long, conflicts_with = "key")]
        start_ts: Option<u64>,
    },
}

/// A barrier TTL: a duration, or never.
#[derive(Clone, Copy, Debug)]
struct Ttl(Option<Duration>);

fn parse_ttl(text: &str) -> Result<Ttl, String> {
    if text == "never" {
        return Ok(Ttl(None));
    }
    let d = crate::format::parse_duration(text)?;
    if d.is_zero() {
        return Err("a TTL must be positive (or 'never')".into());
    }
    Ok(Ttl(Some(d)))
}

/// Runs one operator command against `--pd` or a fresh embedded mock.
pub(crate) async fn run(global: &GlobalOpts, args: &AdminArgs) -> Result<(), CliError> {
    let (client, _mock) = txn::client(global).await?;
    execute(global, &args.command, &client).await
}

fn range_of(
    global: &GlobalOpts,
    start: Option<&String>,
    end: Option<&String>,
) -> Result<KeyRange, CliError> {
    let key = |s: &String| parse_bytes(s, global.hex, "key");
    let start = start.map(key).transpose()?.unwrap_or_default();
    let end = end.map(key).transpose()?.unwrap_or_default();
    Ok(KeyRange::new(start, end))
}

async fn now(client: &TransactionClient) -> Result<Timestamp, CliError> {
    client.current_timestamp().await.context("timestamp")
}

fn ttl_text(ttl: Option<Duration>, json: bool) -> String {
    match (ttl, json) {
        (None, false) => "never expires".into(),
        (None, true) => "null".into(),
        (Some(d), false) => format!("{} s left", d.as_secs()),
        (Some(d), true) => d.as_secs().to_string(),
    }
}

fn barrier_json(b: &GcBarrier) -> String {
    format!(
        "{{\"id\":{},\"ts\":{},\"ttl_s\":{}}}",
        json_str(&b.id),
        b.ts,
        ttl_text(b.ttl, true)
    )
}

fn barrier_line(kind: &str, b: &GcBarrier) -> String {
    format!("{kind} {}\tts {}\t{}", b.id, b.ts, ttl_text(b.ttl, false))
}

fn gc_state_out(out: &Out, s: &GcState, json: bool) -> Result<(), CliError> {
    if json {
        let list = |bs: &[GcBarrier]| {
            let items: Vec<String> = bs.iter().map(barrier_json).collect();
            format!("[{}]", items.join(","))
        };
        return out.line(format!(
            "{{\"keyspace_id\":{},\"keyspace_level\":{},\"txn_safe_point\":{},\"gc_safe_point\":{},\"barriers\":{},\"global_barriers\":{}}}",
            s.keyspace_id.map_or("null".to_string(), |k| k.to_string()),
            s.keyspace_level,
            s.txn_safe_point,
            s.gc_safe_point,
            list(&s.barriers),
            list(&s.global_barriers)
        ));
    }
    out.line(format!("txn safe point\t{}", s.txn_safe_point))?;
    out.line(format!("gc safe point\t{}", s.gc_safe_point))?;
    for b in &s.barriers {
        out.line(barrier_line("barrier", b))?;
    }
    for b in &s.global_barriers {
        out.line(barrier_line("global barrier", b))?;
    }
    Ok(())
}

fn mvcc_out(out: &Out, global: &GlobalOpts, key: &[u8], info: &MvccInfo) -> Result<(), CliError> {
    let bytes = |b: &[u8]| {
        if global.json {
            json_bytes(b, global.hex)
        } else {
            show(b, global.hex)
        }
    };
    if global.json {
        let lock = info.lock.as_ref().map_or("null".to_string(), |l| {
            format!(
                "{{\"op\":\"{:?}\",\"start_ts\":{},\"primary\":{},\"short_value\":{}}}",
                l.op,
                l.start_ts,
                bytes(l.primary.as_bytes()),
                bytes(&l.short_value)
            )
        });
        let writes: Vec<String> = info
            .writes
            .iter()
            .map(|w| {
                format!(
                    "{{\"op\":\"{:?}\",\"start_ts\":{},\"commit_ts\":{},\"short_value\":{}}}",
                    w.op,
                    w.start_ts,
                    w.commit_ts,
                    bytes(&w.short_value)
                )
            })
            .collect();
        let values: Vec<String> = info
            .values
            .iter()
            .map(|(ts, v)| format!("{{\"start_ts\":{ts},\"value\":{}}}", bytes(v)))
            .collect();
        return out.line(format!(
            "{{\"key\":{},\"lock\":{lock},\"writes\":[{}],\"values\":[{}]}}",
            bytes(key),
            writes.join(","),
            values.join(",")
        ));
    }
    out.line(format!("key\t{}", bytes(key)))?;
    if let Some(l) = &info.lock {
        out.line(format!(
            "lock\t{:?}\tstart ts {}\tprimary {}\tvalue {}",
            l.op,
            l.start_ts,
            bytes(l.primary.as_bytes()),
            bytes(&l.short_value)
        ))?;
    }
    for w in &info.writes {
        out.line(format!(
            "write\t{:?}\tstart ts {}\tcommit ts {}\tvalue {}",
            w.op,
            w.start_ts,
            w.commit_ts,
            bytes(&w.short_value)
        ))?;
    }
    for (ts, v) in &info.values {
        out.line(format!("value\tstart ts {ts}\t{}", bytes(v)))?;
    }
    if info.is_empty() {
        out.line("(no versions)")?;
    }
    Ok(())
}

async fn wait_scatters(client: &TransactionClient, regions: &[u64]) -> Result<(), CliError> {
    for r in regions {
        client
            .wait_scatter_region_finish(*r, None)
            .await
            .context(format!("wait for the scatter of region {r}"))?;
    }
    Ok(())
}

fn ids_out(out: &Out, what: &str, ids: &[u64], json: bool) -> Result<(), CliError> {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    if json {
        out.line(format!("{{\"{what}\":[{}]}}", list.join(",")))
    } else if ids.is_empty() {
        out.line(format!("{what}: none"))
    } else {
        out.line(format!("{what}: {}", list.join(" ")))
    }
}

async fn execute(
    global: &GlobalOpts,
    command: &AdminCommand,
    client: &TransactionClient,
) -> Result<(), CliError> {
    let out = Out::new();
    let json = global.json;
    let key = |s: &String| parse_bytes(s, global.hex, "key");
    match command {
        AdminCommand::GcState => {
            let state = client.gc_state().await.context("GC state")?;
            gc_state_out(&out, &state, json)
        }
        AdminCommand::Gc {
            safe_point,
            concurrency,
        } => {
            let target = match safe_point {
                Some(ts) => Timestamp::from_u64(*ts),
                None => now(client).await?,
            };
            let r = client
                .gc_with_concurrency(target, *concurrency)
                .await
                .context("GC")?;
            let t = &r.txn_safe_point;
            if json {
                return out.line(format!(
                    "{{\"target\":{},\"txn_safe_point\":{},\"blocker\":{},\"locks_resolved\":{},\"gc_safe_point\":{}}}",
                    t.target,
                    t.new,
                    t.blocker.as_deref().map_or("null".to_string(), json_str),
                    r.locks_resolved,
                    r.gc_safe_point.new
                ));
            }
            out.line(format!("txn safe point\t{} -> {}", t.old, t.new))?;
            if let Some(b) = &t.blocker {
                out.line(format!("held back by\t{b}"))?;
            }
            out.line(format!("locks resolved\t{}", r.locks_resolved))?;
            out.line(format!(
                "gc safe point\t{} -> {}",
                r.gc_safe_point.old, r.gc_safe_point.new
            ))
        }
        AdminCommand::SetBarrier {
            id,
            ts,
            ttl,
            global: is_global,
        } => {
            let ts = match ts {
                Some(ts) => Timestamp::from_u64(*ts),
                None => now(client).await?,
            };
            let b = if *is_global {
                client.set_global_gc_barrier(id, ts, ttl.0).await
            } else {
                client.set_gc_barrier(id, ts, ttl.0).await
            }
            .context("set GC barrier")?;
            if json {
                out.line(barrier_json(&b))
            } else {
                out.line(barrier_line(
                    if *is_global {
                        "global barrier"
                    } else {
                        "barrier"
                    },
                    &b,
                ))
            }
        }
        AdminCommand::DeleteBarrier {
            id,
            global: is_global,
        } => {
            let b = if *is_global {
                client.delete_global_gc_barrier(id).await
            } else {
                client.delete_gc_barrier(id).await
            }
            .context("delete GC barrier")?;
            match (b, json) {
                (Some(b), true) => out.line(barrier_json(&b)),
                (None, true) => out.line("null"),
                (Some(b), false) => out.line(format!("deleted {}", barrier_line("barrier", &b))),
                (None, false) => out.line(format!("no barrier {id}")),
            }
        }
        AdminCommand::ResolveLocks {
            start,
            end,
            max_ts,
            concurrency,
        } => {
            let range = range_of(global, start.as_ref(), end.as_ref())?;
            let max_ts = match max_ts {
                Some(ts) => Timestamp::from_u64(*ts),
                None => now(client).await?,
            };
            let stats = client
                .resolve_locks_in_range(range, max_ts, *concurrency)
                .await
                .context("resolve locks")?;
            if json {
                out.line(format!(
                    "{{\"locks_resolved\":{},\"pages\":{}}}",
                    stats.locks_found, stats.pages
                ))
            } else {
                out.line(format!("resolved {} locks", stats.locks_found))
            }
        }
        AdminCommand::DeleteRange {
            start,
            end,
            notify_only,
        } => {
            let range = KeyRange::new(key(start)?, key(end)?);
            let regions = if *notify_only {
                client.notify_delete_range(range, 8).await
            } else {
                client.delete_range(range, 8).await
            }
            .context("delete range")?;
            if json {
                out.line(format!("{{\"regions\":{regions}}}"))
            } else {
                out.line(format!("done in {regions} regions"))
            }
        }
        AdminCommand::DestroyRange { start, end } => {
            let range = KeyRange::new(key(start)?, key(end)?);
            client
                .unsafe_destroy_range(range)
                .await
                .context("destroy range")?;
            if json {
                out.line("{\"destroyed\":true}")
            } else {
                out.line("destroyed on every store")
            }
        }
        AdminCommand::Flashback { start, end, to_ts } => {
            let range = KeyRange::new(key(start)?, key(end)?);
            let r = client
                .flashback_to_version(range, Timestamp::from_u64(*to_ts), 8)
                .await
                .context("flashback")?;
            if json {
                out.line(format!(
                    "{{\"start_ts\":{},\"commit_ts\":{},\"regions\":{}}}",
                    r.start_ts, r.commit_ts, r.regions
                ))
            } else {
                out.line(format!(
                    "flashed back {} regions at {} (started at {})",
                    r.regions, r.commit_ts, r.start_ts
                ))
            }
        }
        AdminCommand::Checksum { start, end, ts } => {
            let ts = match ts {
                Some(ts) => Timestamp::from_u64(*ts),
                None => now(client).await?,
            };
            let range = KeyRange::new(key(start)?, key(end)?);
            let sum = client.checksum(range, ts).await.context("checksum")?;
            if json {
                out.line(format!(
                    "{{\"crc64_xor\":{},\"total_kvs\":{},\"total_bytes\":{}}}",
                    sum.crc64_xor, sum.total_kvs, sum.total_bytes
                ))
            } else {
                out.line(format!(
                    "crc64_xor {:016x}\ttotal_kvs {}\ttotal_bytes {}",
                    sum.crc64_xor, sum.total_kvs, sum.total_bytes
                ))
            }
        }
        AdminCommand::Split {
            keys,
            scatter,
            wait,
        } => {
            let keys: Vec<Vec<u8>> = keys.iter().map(key).collect::<Result<_, _>>()?;
            let options = scatter.then(ScatterOptions::default);
            let regions = client.split_regions(keys, options).await.context("split")?;
            if *scatter && *wait {
                wait_scatters(client, &regions).await?;
            }
            ids_out(&out, "new regions", &regions, json)
        }
        AdminCommand::Scatter {
            regions,
            group,
            wait,
        } => {
            let mut options = ScatterOptions::default();
            if let Some(g) = group {
                options = options.with_group(g.clone());
            }
            client
                .scatter_regions(regions, &options)
                .await
                .context("scatter")?;
            if *wait {
                wait_scatters(client, regions).await?;
            }
            ids_out(&out, "scattered", regions, json)
        }
        AdminCommand::Regions { start, end, limit } => {
            let range = range_of(global, start.as_ref(), end.as_ref())?;
            let regions = client
                .pd()
                .scan_regions(range.start().as_bytes(), range.end().as_bytes(), *limit)
                .await
                .context("scan regions")?;
            let bytes = |b: &[u8]| {
                if json {
                    json_bytes(b, global.hex)
                } else {
                    show(b, global.hex)
                }
            };
            let mut items = Vec::new();
            for r in &regions {
                let leader = r.leader.map(|p| p.store_id);
                let stores: Vec<String> = r.peers.iter().map(|p| p.store_id.to_string()).collect();
                if json {
                    items.push(format!(
                        "{{\"id\":{},\"start\":{},\"end\":{},\"version\":{},\"conf_ver\":{},\"leader_store\":{},\"stores\":[{}]}}",
                        r.id,
                        bytes(r.range.start().as_bytes()),
                        bytes(r.range.end().as_bytes()),
                        r.epoch.version,
                        r.epoch.conf_ver,
                        leader.map_or("null".to_string(), |s| s.to_string()),
                        stores.join(",")
                    ));
                } else {
                    out.line(format!(
                        "{}\t[{}, {})\tv{}\tleader {}\tstores {}",
                        r.id,
                        bytes(r.range.start().as_bytes()),
                        bytes(r.range.end().as_bytes()),
                        r.epoch.version,
                        leader.map_or("-".to_string(), |s| s.to_string()),
                        stores.join(",")
                    ))?;
                }
            }
            if json {
                out.line(format!("[{}]", items.join(",")))?;
            }
            Ok(())
        }
        AdminCommand::Stores => {
            let stores = client.pd().get_all_stores().await.context("stores")?;
            let mut items = Vec::new();
            for s in &stores {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if json {
                    items.push(format!(
                        "{{\"id\":{},\"address\":{},\"state\":\"{:?}\",\"labels\":[{}]}}",
                        s.id,
                        json_str(&s.address),
                        s.state,
                        labels
                            .iter()
                            .map(|l| json_str(l))
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                } else {
                    out.line(format!(
                        "{}\t{}\t{:?}\t{}",
                        s.id,
                        s.address,
                        s.state,
                        labels.join(",")
                    ))?;
                }
            }
            if json {
                out.line(format!("[{}]", items.join(",")))?;
            }
            Ok(())
        }
        AdminCommand::MinSafeTs { zone } => {
            let ts = client
                .min_safe_ts(zone.as_deref())
                .await
                .context("min safe ts")?;
            if json {
                out.line(format!("{{\"min_safe_ts\":{ts}}}"))
            } else {
                out.line(ts.to_string())
            }
        }
        AdminCommand::Mvcc { key: k, start_ts } => match (k, start_ts) {
            (Some(k), _) => {
                let k = key(k)?;
                let info = client.mvcc_by_key(k.clone()).await.context("mvcc")?;
                mvcc_out(&out, global, &k, &info)
            }
            (None, Some(ts)) => {
                let found = client
                    .mvcc_by_start_ts(Timestamp::from_u64(*ts))
                    .await
                    .context("mvcc")?;
                match found {
                    Some((k, info)) => mvcc_out(&out, global, k.as_bytes(), &info),
                    None if json => out.line("null"),
                    None => out.line(format!("no record of a transaction started at {ts}")),
                }
            }
            (None, None) => Err(CliError::msg("mvcc takes a KEY or --start-ts")),
        },
    }
}
