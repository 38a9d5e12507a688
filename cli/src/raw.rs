//! `tikv-cli raw ...`: one RawKV operation per invocation.
//!
//! Keys and values are taken as the bytes of their text, or as hex with `--hex` (which also
//! prints them in hex). Text output escapes bytes that are not printable (see
//! [`escape`](crate::format::escape)); pairs are printed one per line as `key<TAB>value`.

use std::collections::BTreeMap;

use tikv_mock::server::MockServer;
use tikv_tokio::RawClient;
use tikv_tokio::{Key, KeyRange, KvPair};

use crate::error::{CliError, Context};
use crate::format::{Out, json_bytes, json_str, parse_bytes, show};
use crate::{GlobalOpts, cluster};

/// Options of `tikv-cli raw`.
#[derive(Debug, clap::Args)]
pub(crate) struct RawArgs {
    /// Column family to use: default, lock or write.
    #[arg(long, global = true, value_name = "CF")]
    cf: Option<String>,

    #[command(subcommand)]
    command: RawCommand,
}

/// The RawKV operations.
#[derive(Debug, clap::Subcommand)]
enum RawCommand {
    /// Read the value of one or more keys.
    Get {
        /// Keys to read (several: one batch get).
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Write a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Expire the pair after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// Delete one or more keys.
    Delete {
        /// Keys to delete (several: one batch delete).
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List pairs of [START, END) in ascending key order.
    Scan(ScanArgs),
    /// List pairs of [START, END) in descending key order, from END down.
    ReverseScan(ScanArgs),
    /// Delete every key of [START, END).
    DeleteRange {
        /// First key deleted.
        start: String,
        /// First key kept; omitted: to the end of the key space.
        end: Option<String>,
    },
    /// Compare and swap: set KEY to NEW if it holds --expected (or, without it, is absent).
    ///
    /// Runs in TiKV's atomic mode; CAS is linearizable only if every concurrent writer of KEY
    /// uses atomic mode too.
    Cas {
        /// The key.
        key: String,
        /// The value to write.
        new: String,
        /// The value KEY must have now; omitted: KEY must be absent.
        #[arg(long, value_name = "VALUE")]
        expected: Option<String>,
    },
    /// Remaining time to live of a key, in seconds.
    Ttl {
        /// The key.
        key: String,
    },
    /// CRC64-XOR checksum, pair count and byte count of [START, END).
    Checksum {
        /// First key; omitted: the start of the key space.
        start: Option<String>,
        /// First key excluded; omitted: to the end of the key space.
        end: Option<String>,
    },
}

/// Range and limit of a scan.
#[derive(Debug, clap::Args)]
struct ScanArgs {
    /// First key of the range; omitted: the start of the key space.
    start: Option<String>,
    /// First key excluded; omitted: to the end of the key space.
    end: Option<String>,
    /// At most this many pairs.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print keys only (values are not fetched).
    #[arg(long)]
    keys_only: bool,
}

/// Runs one raw command against `--pd` or a fresh embedded mock.
pub(crate) async fn run(global: &GlobalOpts, args: &RawArgs) -> Result<(), CliError> {
    // Parse every argument before connecting: a typo should not cost a connection attempt.
    let op = Op::parse(&args.command, global.hex)?;
    let (client, _mock) = client(global).await?;
    let mut client = client;
    if let Some(cf) = &args.cf {
        client = client.with_cf(cf.clone());
    }
    let view = View {
        out: Out::new(),
        json: global.json,
        hex: global.hex,
    };
    op.execute(&client, &view).await
}

/// A client on `--pd`, or on an embedded mock kept alive by the returned server.
async fn client(global: &GlobalOpts) -> Result<(RawClient, Option<MockServer>), CliError> {
    if !global.pd.is_empty() {
        return Ok((cluster::connect(&global.pd, global.timeout).await?, None));
    }
    eprintln!("note: no --pd given: using a fresh embedded mock cluster (discarded on exit)");
    let mock = cluster::start_mock(3, &[], "127.0.0.1").await?;
    let client = cluster::connect(&[mock.pd_address().to_string()], global.timeout).await?;
    Ok((client, Some(mock)))
}

/// A raw command with its arguments parsed into bytes.
enum Op {
    Get(Vec<Vec<u8>>),
    Put(Vec<u8>, Vec<u8>, Option<u64>),
    Delete(Vec<Vec<u8>>),
    Scan {
        range: KeyRange,
        limit: u32,
        keys_only: bool,
        reverse: bool,
    },
    DeleteRange(KeyRange),
    Cas(Vec<u8>, Option<Vec<u8>>, Vec<u8>),
    Ttl(Vec<u8>),
    Checksum(KeyRange),
}

impl Op {
    fn parse(command: &RawCommand, hex: bool) -> Result<Op, CliError> {
        let key = |s: &str| parse_bytes(s, hex, "key");
        let value = |s: &str| parse_bytes(s, hex, "value");
        let range = |start: Option<&String>, end: Option<&String>| -> Result<KeyRange, CliError> {
            let start = start.map(|s| key(s)).transpose()?.unwrap_or_default();
            let end = end.map(|s| key(s)).transpose()?.unwrap_or_default();
            if !end.is_empty() && start > end {
                return Err(CliError::msg(format!(
                    "the range start '{}' is after its end '{}'",
                    show(&start, hex),
                    show(&end, hex)
                )));
            }
            Ok(KeyRange::new(start, end))
        };
        Ok(match command {
            RawCommand::Get { keys } => {
                Op::Get(keys.iter().map(|k| key(k)).collect::<Result<_, _>>()?)
            }
            RawCommand::Put {
                key: k,
                value: v,
                ttl,
            } => Op::Put(key(k)?, value(v)?, *ttl),
            RawCommand::Delete { keys } => {
                Op::Delete(keys.iter().map(|k| key(k)).collect::<Result<_, _>>()?)
            }
            RawCommand::Scan(s) | RawCommand::ReverseScan(s) => Op::Scan {
                range: range(s.start.as_ref(), s.end.as_ref())?,
                limit: s.limit,
                keys_only: s.keys_only,
                reverse: matches!(command, RawCommand::ReverseScan(_)),
            },
            RawCommand::DeleteRange { start, end } => {
                Op::DeleteRange(range(Some(start), end.as_ref())?)
            }
            RawCommand::Cas {
                key: k,
                new,
                expected,
            } => Op::Cas(
                key(k)?,
                expected.as_deref().map(value).transpose()?,
                value(new)?,
            ),
            RawCommand::Ttl { key: k } => Op::Ttl(key(k)?),
            RawCommand::Checksum { start, end } => {
                Op::Checksum(range(start.as_ref(), end.as_ref())?)
            }
        })
    }

    async fn execute(self, c: &RawClient, view: &View) -> Result<(), CliError> {
        match self {
            Op::Get(keys) => {
                let found: BTreeMap<Vec<u8>, Vec<u8>> = if let [k] = &keys[..] {
                    let v = c.get(k.clone()).await.context("get")?;
                    v.map(|v| (k.clone(), v.to_vec())).into_iter().collect()
                } else {
                    let pairs = c
                        .batch_get(keys.iter().cloned())
                        .await
                        .context("batch get")?;
                    pairs
                        .into_iter()
                        .map(|p| (p.key.as_bytes().to_vec(), p.value.to_vec()))
                        .collect()
                };
                view.values(&keys, &found)
            }
            Op::Put(k, v, ttl) => {
                match ttl {
                    Some(ttl) => c.put_with_ttl(k, v, ttl).await.context("put")?,
                    None => c.put(k, v).await.context("put")?,
                }
                view.ok()
            }
            Op::Delete(keys) => {
                if let [k] = &keys[..] {
                    c.delete(k.clone()).await.context("delete")?;
                } else {
                    c.batch_delete(keys).await.context("batch delete")?;
                }
                view.ok()
            }
            Op::Scan {
                range,
                limit,
                keys_only,
                reverse,
            } => {
                let what = if reverse { "reverse scan" } else { "scan" };
                let pairs: Vec<(Key, Option<Vec<u8>>)> = match (keys_only, reverse) {
                    (true, false) => keys_of(c.scan_keys(range, limit).await.context(what)?),
                    (true, true) => keys_of(c.reverse_scan_keys(range, limit).await.context(what)?),
                    (false, false) => pairs_of(c.scan(range, limit).await.context(what)?),
                    (false, true) => pairs_of(c.reverse_scan(range, limit).await.context(what)?),
                };
                view.pairs(&pairs)
            }
            Op::DeleteRange(range) => {
                c.delete_range(range).await.context("delete range")?;
                view.ok()
            }
            Op::Cas(k, expected, new) => {
                // Only `cas` runs in TiKV's atomic mode: plain puts keep TiKV's ordinary write
                // path (and its checks), and one-shot commands do not race each other.
                let r = c
                    .with_atomic_for_cas()
                    .compare_and_swap(k, expected, new)
                    .await
                    .context("compare and swap")?;
                view.cas(r.swapped, r.previous.as_deref())
            }
            Op::Ttl(k) => {
                let ttl = c.get_key_ttl(k.clone()).await.context("ttl")?;
                view.ttl(&k, ttl)
            }
            Op::Checksum(range) => {
                let sum = c.checksum(range).await.context("checksum")?;
                view.checksum(sum.crc64_xor, sum.total_kvs, sum.total_bytes)
            }
        }
    }
}

fn keys_of(keys: Vec<Key>) -> Vec<(Key, Option<Vec<u8>>)> {
    keys.into_iter().map(|k| (k, None)).collect()
}

fn pairs_of(pairs: Vec<KvPair>) -> Vec<(Key, Option<Vec<u8>>)> {
    pairs
        .into_iter()
        .map(|p| (p.key, Some(p.value.to_vec())))
        .collect()
}

/// How results are printed: text or JSON, escaped or hex.
struct View {
    out: Out,
    json: bool,
    hex: bool,
}

impl View {
    fn bytes(&self, b: &[u8]) -> String {
        if self.json {
            json_bytes(b, self.hex)
        } else {
            show(b, self.hex)
        }
    }

    fn ok(&self) -> Result<(), CliError> {
        self.out
            .line(if self.json { "{\"ok\":true}" } else { "OK" })
    }

    /// One line per requested key, in the order given; missing keys say so.
    fn values(&self, keys: &[Vec<u8>], found: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), CliError> {
        if self.json {
            let items: Vec<String> = keys
                .iter()
                .map(|k| {
                    let v = found.get(k).map_or("null".into(), |v| self.bytes(v));
                    format!("{{\"key\":{},\"value\":{v}}}", self.bytes(k))
                })
                .collect();
            return self.out.line(format!("[{}]", items.join(",")));
        }
        if let [k] = keys {
            // A lone value prints bare, so `$(tikv-cli raw get k)` is the value.
            return self
                .out
                .line(found.get(k).map_or("(not found)".into(), |v| self.bytes(v)));
        }
        for k in keys {
            let v = found.get(k).map_or("(not found)".into(), |v| self.bytes(v));
            self.out.line(format!("{}\t{v}", self.bytes(k)))?;
        }
        Ok(())
    }

    fn pairs(&self, pairs: &[(Key, Option<Vec<u8>>)]) -> Result<(), CliError> {
        if self.json {
            let items: Vec<String> = pairs
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!(
                        "{{\"key\":{},\"value\":{}}}",
                        self.bytes(k.as_bytes()),
                        self.bytes(v)
                    ),
                    None => format!("{{\"key\":{}}}", self.bytes(k.as_bytes())),
                })
                .collect();
            return self.out.line(format!("[{}]", items.join(",")));
        }
        for (k, v) in pairs {
            match v {
                Some(v) => {
                    self.out
                        .line(format!("{}\t{}", self.bytes(k.as_bytes()), self.bytes(v)))?
                }
                None => self.out.line(self.bytes(k.as_bytes()))?,
            }
        }
        Ok(())
    }

    fn cas(&self, swapped: bool, previous: Option<&[u8]>) -> Result<(), CliError> {
        if self.json {
            let previous = previous.map_or("null".into(), |p| self.bytes(p));
            return self
                .out
                .line(format!("{{\"swapped\":{swapped},\"previous\":{previous}}}"));
        }
        let previous = previous.map_or("(absent)".into(), |p| self.bytes(p));
        self.out.line(if swapped {
            format!("swapped (previous value: {previous})")
        } else {
            format!("not swapped (current value: {previous})")
        })
    }

    fn ttl(&self, key: &[u8], ttl: Option<u64>) -> Result<(), CliError> {
        if self.json {
            // `ttl`: seconds left, 0 for no TTL, null for a missing key.
            let ttl = ttl.map_or("null".into(), |t| t.to_string());
            return self
                .out
                .line(format!("{{\"key\":{},\"ttl\":{ttl}}}", self.bytes(key)));
        }
        self.out.line(match ttl {
            None => "(not found)".to_string(),
            Some(0) => "no TTL".to_string(),
            Some(t) => format!("{t}s"),
        })
    }

    fn checksum(&self, crc: u64, kvs: u64, bytes: u64) -> Result<(), CliError> {
        if self.json {
            // The CRC as a hex string: JSON readers that use doubles would round a u64.
            return self.out.line(format!(
                "{{\"crc64_xor\":{},\"total_kvs\":{kvs},\"total_bytes\":{bytes}}}",
                json_str(&format!("{crc:016x}"))
            ));
        }
        self.out
            .line(format!("crc64_xor {crc:016x}, {kvs} pairs, {bytes} bytes"))
    }
}
