//! `tikv-cli txn ...`: one transaction per invocation (no `begin`): reads at a fresh
//! timestamp, writes committed with the chosen protocol, and a transaction's status.
//!
//! Keys and values are text, or hex with `--hex`, as for `raw`. A write prints its commit and
//! start timestamps (`committed at <ts> (started at <ts>)`, or JSON with `--json`); the start
//! timestamp and the first key written (the primary) are what `txn status` takes.

use tikv_mock::server::MockServer;
use tikv_tokio::{
    Config, KeyRange, LockOptions, LockWait, Timestamp, TransactionClient, TransactionOptions,
    TxnStatus,
};

use crate::error::{CliError, Context};
use crate::format::{Out, json_bytes, parse_bytes, show};
use crate::{GlobalOpts, cluster};

/// Options of `tikv-cli txn`.
#[derive(Debug, clap::Args)]
pub(crate) struct TxnArgs {
    /// Lock keys as the transaction goes (pessimistic mode, TiDB's default) instead of
    /// checking for conflicts at commit.
    #[arg(long, global = true)]
    pessimistic: bool,

    /// Commit with async commit (decided once every key is prewritten).
    #[arg(long, global = true)]
    async_commit: bool,

    /// Commit in one phase when the writes fit one request.
    #[arg(long, global = true)]
    one_pc: bool,

    #[command(subcommand)]
    command: TxnCommand,
}

/// The transactional operations.
#[derive(Debug, clap::Subcommand)]
enum TxnCommand {
    /// Read keys as of a fresh timestamp (with --pessimistic: lock them and read the latest
    /// committed values, then release the locks).
    Get {
        /// Keys to read.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Lock keys and read their latest committed values (`SELECT ... FOR UPDATE`), then
    /// release the locks: `get --pessimistic` by its SQL name.
    GetForUpdate {
        /// Keys to lock and read.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Lock keys in a pessimistic transaction, hold the locks, then release them (rollback):
    /// to see other transactions wait, time out or fail at once meanwhile.
    Lock {
        /// Keys to lock.
        #[arg(required = true)]
        keys: Vec<String>,
        /// How long to hold the locks before releasing them (0 by default).
        #[arg(long, value_name = "DURATION", value_parser = crate::format::parse_duration)]
        hold: Option<std::time::Duration>,
        /// How long to wait for other transactions' locks: `forever` (the default), `nowait`
        /// (fail at once), or a duration such as `500ms`.
        #[arg(long, value_name = "WAIT", default_value = "forever", value_parser = parse_wait)]
        wait: LockWait,
    },
    /// Write KEY VALUE pairs in one transaction and commit it.
    Put {
        /// Alternating keys and values: `k1 v1 k2 v2 ...`.
        #[arg(required = true, num_args = 2.., value_name = "KEY VALUE")]
        pairs: Vec<String>,
    },
    /// Delete keys in one transaction and commit it.
    Delete {
        /// Keys to delete.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List pairs of [START, END) as of a fresh timestamp.
    Scan {
        /// First key; omitted: the start of the key space.
        start: Option<String>,
        /// First key excluded; omitted: to the end of the key space.
        end: Option<String>,
        /// At most this many pairs.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// List the locks in [START, END) of transactions started until now (`ScanLock`):
    /// key, owner's start ts, primary, kind and TTL.
    Locks {
        /// First key; omitted: the start of the key space.
        start: Option<String>,
        /// First key excluded; omitted: to the end of the key space.
        end: Option<String>,
        /// At most this many locks.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The status of the transaction started at START_TS whose primary key is PRIMARY
    /// (committed, rolled back, or running with its lock's TTL).
    Status {
        /// The transaction's start timestamp.
        start_ts: u64,
        /// Its primary key.
        primary: String,
    },
}

/// `--wait`: `forever`, `nowait` or a duration.
fn parse_wait(text: &str) -> Result<LockWait, String> {
    match text {
        "forever" => Ok(LockWait::Forever),
        "nowait" => Ok(LockWait::NoWait),
        other => crate::format::parse_duration(other)
            .map(LockWait::Timeout)
            .map_err(|e| format!("{e}; or use 'forever' or 'nowait'")),
    }
}

/// Runs one transactional command against `--pd` or a fresh embedded mock.
pub(crate) async fn run(global: &GlobalOpts, args: &TxnArgs) -> Result<(), CliError> {
    let key = |s: &String| parse_bytes(s, global.hex, "key");
    // Parse before connecting: a typo should not cost a connection attempt.
    let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = match &args.command {
        TxnCommand::Put { pairs } => {
            if pairs.len() % 2 != 0 {
                return Err(CliError::msg(format!(
                    "put takes KEY VALUE pairs; got {} arguments",
                    pairs.len()
                )));
            }
            pairs
                .chunks(2)
                .map(|kv| {
                    Ok((
                        key(&kv[0])?,
                        Some(parse_bytes(&kv[1], global.hex, "value")?),
                    ))
                })
                .collect::<Result<_, CliError>>()?
        }
        TxnCommand::Delete { keys } => keys
            .iter()
            .map(|k| Ok((key(k)?, None)))
            .collect::<Result<_, CliError>>()?,
        _ => Vec::new(),
    };
    let (client, _mock) = client(global).await?;
    let result = execute(global, args, &client, writes).await;
    // Secondaries committed after `commit` returned and lock cleanups run in the background:
    // let them finish before the process exits, so no lock is left behind.
    client
        .wait_background(std::time::Duration::from_secs(5))
        .await;
    result
}

async fn execute(
    global: &GlobalOpts,
    args: &TxnArgs,
    client: &TransactionClient,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<(), CliError> {
    let key = |s: &String| parse_bytes(s, global.hex, "key");
    let out = Out::new();
    let bytes = |b: &[u8]| {
        if global.json {
            json_bytes(b, global.hex)
        } else {
            show(b, global.hex)
        }
    };
    let options = TransactionOptions::default()
        .with_async_commit(args.async_commit)
        .with_try_one_pc(args.one_pc);
    let options = if args.pessimistic {
        options.with_mode(tikv_tokio::TxnMode::Pessimistic)
    } else {
        options
    };
    match &args.command {
        TxnCommand::Get { keys } | TxnCommand::GetForUpdate { keys } => {
            let for_update =
                args.pessimistic || matches!(args.command, TxnCommand::GetForUpdate { .. });
            let options = if for_update {
                options.with_mode(tikv_tokio::TxnMode::Pessimistic)
            } else {
                options
            };
            let keys: Vec<Vec<u8>> = keys.iter().map(key).collect::<Result<_, _>>()?;
            let mut t = client.begin_with(options).await.context("begin")?;
            let pairs = if for_update {
                let pairs = t
                    .batch_get_for_update(keys.clone())
                    .await
                    .context("get for update")?;
                t.rollback().await.context("rollback")?;
                pairs
            } else {
                let pairs = t.batch_get(keys.clone()).await.context("batch get")?;
                t.rollback().await.context("rollback")?;
                pairs
            };
            for k in &keys {
                let value = pairs.iter().find(|p| p.key.as_bytes() == &k[..]);
                let shown = value.map(|p| bytes(&p.value));
                if global.json {
                    out.line(format!(
                        "{{\"key\":{},\"value\":{}}}",
                        bytes(k),
                        shown.unwrap_or_else(|| "null".into())
                    ))?;
                } else if keys.len() == 1 {
                    out.line(shown.unwrap_or_else(|| "(not found)".into()))?;
                } else {
                    out.line(format!(
                        "{}\t{}",
                        bytes(k),
                        shown.unwrap_or_else(|| "(not found)".into())
                    ))?;
                }
            }
            Ok(())
        }
        TxnCommand::Put { .. } | TxnCommand::Delete { .. } => {
            let mut t = client.begin_with(options).await.context("begin")?;
            if args.pessimistic {
                let keys: Vec<Vec<u8>> = writes.iter().map(|(k, _)| k.clone()).collect();
                t.lock_keys(keys, LockOptions::default())
                    .await
                    .context("lock")?;
            }
            for (k, v) in writes {
                match v {
                    Some(v) => t.put(k, v).await.context("put")?,
                    None => t.delete(k).await.context("delete")?,
                }
            }
            let start_ts = t.start_ts().as_u64();
            let commit_ts = t.commit().await.context("commit")?.as_u64();
            if global.json {
                out.line(format!(
                    "{{\"start_ts\":{start_ts},\"commit_ts\":{commit_ts}}}"
                ))
            } else {
                out.line(format!("committed at {commit_ts} (started at {start_ts})"))
            }
        }
        TxnCommand::Lock { keys, hold, wait } => {
            let keys: Vec<Vec<u8>> = keys.iter().map(key).collect::<Result<_, _>>()?;
            let options = options.with_mode(tikv_tokio::TxnMode::Pessimistic);
            let mut t = client.begin_with(options).await.context("begin")?;
            let start_ts = t.start_ts().as_u64();
            let locked = t
                .lock_keys(keys.clone(), LockOptions::default().with_wait(*wait))
                .await
                .context("lock")?;
            let waited_ms = locked.stats.total.as_millis();
            let held_ms = hold.map_or(0, |h| h.as_millis());
            if global.json {
                out.line(format!(
                    "{{\"start_ts\":{start_ts},\"keys\":{},\"took_ms\":{waited_ms},\"hold_ms\":{held_ms}}}",
                    keys.len()
                ))?;
            } else {
                out.line(format!(
                    "locked {} keys (start ts {start_ts}, primary {}) in {waited_ms} ms; holding for {held_ms} ms",
                    keys.len(),
                    bytes(keys.iter().min().map_or(&[][..], |k| &k[..]))
                ))?;
            }
            if let Some(hold) = hold {
                tokio::time::sleep(*hold).await;
            }
            t.rollback().await.context("release (rollback)")
        }
        TxnCommand::Scan { start, end, limit } => {
            let start = start.as_ref().map(key).transpose()?.unwrap_or_default();
            let end = end.as_ref().map(key).transpose()?.unwrap_or_default();
            let t = client.begin_with(options).await.context("begin")?;
            let pairs = t
                .scan(KeyRange::new(start, end), *limit)
                .await
                .context("scan")?;
            t.rollback().await.context("rollback")?;
            if global.json {
                let items: Vec<String> = pairs
                    .iter()
                    .map(|p| {
                        format!(
                            "{{\"key\":{},\"value\":{}}}",
                            bytes(p.key.as_bytes()),
                            bytes(&p.value)
                        )
                    })
                    .collect();
                return out.line(format!("[{}]", items.join(",")));
            }
            for p in pairs {
                out.line(format!("{}\t{}", bytes(p.key.as_bytes()), bytes(&p.value)))?;
            }
            Ok(())
        }
        TxnCommand::Locks { start, end, limit } => {
            let start = start.as_ref().map(key).transpose()?.unwrap_or_default();
            let end = end.as_ref().map(key).transpose()?.unwrap_or_default();
            let now = client.current_timestamp().await.context("timestamp")?;
            let locks = client
                .scan_locks(KeyRange::new(start, end), now, *limit)
                .await
                .context("scan locks")?;
            if global.json {
                let items: Vec<String> = locks
                    .iter()
                    .map(|l| {
                        format!(
                            "{{\"key\":{},\"start_ts\":{},\"primary\":{},\"kind\":\"{}\",\"ttl_ms\":{}}}",
                            bytes(l.key.as_bytes()),
                            l.start_ts.as_u64(),
                            bytes(l.primary.as_bytes()),
                            l.kind(),
                            l.ttl_ms
                        )
                    })
                    .collect();
                return out.line(format!("[{}]", items.join(",")));
            }
            for l in locks {
                out.line(format!(
                    "{}\t{}\t{}\t{}\t{} ms",
                    bytes(l.key.as_bytes()),
                    l.start_ts.as_u64(),
                    bytes(l.primary.as_bytes()),
                    l.kind(),
                    l.ttl_ms
                ))?;
            }
            Ok(())
        }
        TxnCommand::Status { start_ts, primary } => {
            let status = client
                .check_txn_status(key(primary)?, Timestamp::from_u64(*start_ts))
                .await
                .context("check txn status")?;
            let line = match (status, global.json) {
                (TxnStatus::Committed(ts), false) => format!("committed at {}", ts.as_u64()),
                (TxnStatus::Committed(ts), true) => {
                    format!("{{\"status\":\"committed\",\"commit_ts\":{}}}", ts.as_u64())
                }
                (TxnStatus::RolledBack, false) => "rolled back".to_string(),
                (TxnStatus::RolledBack, true) => "{\"status\":\"rolled back\"}".to_string(),
                (TxnStatus::Alive { ttl_ms }, false) => {
                    format!("running (lock TTL {ttl_ms} ms from its start)")
                }
                (TxnStatus::Alive { ttl_ms }, true) => {
                    format!("{{\"status\":\"running\",\"ttl_ms\":{ttl_ms}}}")
                }
            };
            out.line(line)
        }
    }
}

/// A transactional client on `--pd`, or on an embedded mock kept alive by the returned
/// server.
pub(crate) async fn client(
    global: &GlobalOpts,
) -> Result<(TransactionClient, Option<MockServer>), CliError> {
    let (endpoints, mock) = if global.pd.is_empty() {
        eprintln!("note: no --pd given: using a fresh embedded mock cluster (discarded on exit)");
        let mock = cluster::start_mock(3, &[], "127.0.0.1").await?;
        (vec![mock.pd_address().to_string()], Some(mock))
    } else {
        (global.pd.clone(), None)
    };
    let connecting = TransactionClient::connect(&endpoints, Config::default());
    let shown = endpoints.join(",");
    let client = match global.timeout {
        Some(t) => tokio::time::timeout(t, connecting).await.map_err(|_| {
            CliError::msg(format!(
                "cannot connect to PD at {shown}: timed out after {t:?}"
            ))
        })?,
        None => connecting.await,
    }
    .map_err(|e| CliError::msg(format!("cannot connect to PD at {shown}: {e}")))?;
    Ok((client, mock))
}
