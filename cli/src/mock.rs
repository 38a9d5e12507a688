//! `tikv-cli mock`: a mock PD + TiKV cluster served in the foreground, for trying the client,
//! for other programs' tests and for the benchmark harness.
//!
//! When ready it prints `PD endpoint: <host:port>` as its first line (scripts read it), then
//! one line per store; Ctrl-C (SIGINT) prints the request counters and exits 0. PD's port
//! also answers PD's HTTP API (`curl http://<pd>/pd/api/v1/stores`).

use std::fmt::Write as _;

use tikv_mock::server::{MockServer, SplitEncoding};
use tikv_mock::{ApiMode, Counters};
use tikv_tokio::TokioRuntime;

use crate::GlobalOpts;
use crate::error::CliError;
use crate::format::{Out, json_str, parse_bytes};

/// Options of `tikv-cli mock` (the global `--pd` is the address PD listens on).
#[derive(Debug, clap::Args)]
pub(crate) struct MockArgs {
    /// Number of TiKV stores (each region gets up to 3 replicas).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    stores: u16,

    /// Number of regions: the key space is split into this many even ranges by the keys'
    /// leading bytes, at memcomparable-encoded keys as TiKV writes transactional region
    /// boundaries (with --api-version 2: inside both of the DEFAULT keyspace's ranges, raw
    /// and transactional).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    regions: u32,

    /// API versions the stores accept: 1, 2, or both (a mock-only mode serving V1 and V2
    /// clients side by side).
    #[arg(long, default_value = "both", value_name = "1|2|both", value_parser = parse_api)]
    api_version: ApiMode,

    /// Also split at these keys, comma-separated (e.g. `b,m,t`; hex with --hex), encoded as
    /// TiKV encodes transactional keys in region boundaries (unless --raw-splits).
    #[arg(long, value_delimiter = ',', value_name = "KEYS")]
    splits: Vec<String>,

    /// Split at raw bytes instead (what RawKV API V1 boundaries look like; transactional
    /// clients cannot decode such boundaries). Ignored with --api-version 2.
    #[arg(long)]
    raw_splits: bool,

    /// Move region leaders round-robin over the stores (by default every leader starts on the
    /// first store), so that multi-region requests fan out to every store.
    #[arg(long)]
    spread_leaders: bool,

    /// Address the stores listen on (and PD, without --pd); ports are picked by the OS.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

/// `--api-version`'s values.
fn parse_api(text: &str) -> Result<ApiMode, String> {
    match text {
        // TiKV's `api-version = 1` without `enable-ttl`.
        "1" => Ok(ApiMode::V1),
        "2" => Ok(ApiMode::V2),
        "both" => Ok(ApiMode::V1AndV2),
        _ => Err(format!("'{text}' is not 1, 2 or both")),
    }
}

/// Starts the cluster, prints its addresses and serves until interrupted; then prints the
/// counters.
pub(crate) async fn run(global: &GlobalOpts, args: &MockArgs) -> Result<(), CliError> {
    let pd_listen = match global.pd.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => {
            return Err(CliError::msg(
                "'mock' serves one PD: give --pd a single host:port to listen on",
            ));
        }
    };
    let splits: Vec<Vec<u8>> = args
        .splits
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| parse_bytes(s, global.hex, "split key"))
        .map(|k| {
            k.map(|k| {
                if args.raw_splits && args.api_version != ApiMode::V2 {
                    k
                } else {
                    tikv_mock::codec::encode_memcomparable(&k)
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let encoding = if args.raw_splits {
        SplitEncoding::Raw
    } else {
        SplitEncoding::MemComparable
    };
    // Listen for Ctrl-C before announcing the address: whoever reads it may interrupt at once.
    let mut interrupted = Interrupt::listen()?;
    let mut builder = MockServer::builder()
        .stores(usize::from(args.stores))
        .regions(args.regions as usize)
        .split_encoding(encoding)
        .api(args.api_version)
        .split_at(splits)
        .spread_leaders(args.spread_leaders)
        .host(args.host.clone());
    if let Some(address) = &pd_listen {
        builder = builder.pd_address(address.clone());
    }
    let server = builder.start(TokioRuntime::current()).await.map_err(|e| {
        CliError::msg(format!(
            "cannot start the mock cluster on {}: {e}",
            pd_listen.as_deref().unwrap_or(&args.host)
        ))
    })?;
    // A server's job is to serve: if whoever reads our stdout goes away after taking the PD
    // address, keep serving rather than exit on the broken pipe.
    match announce(global, &server, args.api_version) {
        Ok(()) | Err(CliError::BrokenPipe) => {}
        Err(e) => return Err(e),
    }
    // The server's tasks run on the runtime; this task keeps `server` (which stops everything
    // when dropped) alive until the interrupt.
    interrupted.wait().await;
    let counters = server.cluster().lock().counters().clone();
    drop(server);
    match report(global, &counters) {
        Ok(()) | Err(CliError::BrokenPipe) => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGINT (Ctrl-C), listened for from creation on.
struct Interrupt {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn listen() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| CliError::msg(format!("cannot listen for Ctrl-C: {e}")))?;
            Ok(Interrupt { signal })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        {
            self.signal.recv().await;
        }
        #[cfg(not(unix))]
        {
            // Without a handler Ctrl-C ends the process, which is the best left to do.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Prints the addresses: `PD endpoint: <address>` first and alone on its line (scripts and
/// tests read it), then the stores; or one JSON object with `--json`.
fn announce(global: &GlobalOpts, server: &MockServer, api: ApiMode) -> Result<(), CliError> {
    let regions = server.cluster().lock().topology().regions().count();
    let out = Out::new();
    if global.json {
        let stores: Vec<String> = server
            .store_addresses()
            .iter()
            .map(|(id, address)| format!("{{\"id\":{id},\"address\":{}}}", json_str(address)))
            .collect();
        return out.line(format!(
            "{{\"pd\":{},\"stores\":[{}],\"regions\":{regions}}}",
            json_str(server.pd_address()),
            stores.join(",")
        ));
    }
    out.line(format!("PD endpoint: {}", server.pd_address()))?;
    for (id, address) in server.store_addresses() {
        out.line(format!("store {id} {address}"))?;
    }
    let pd = server.pd_address();
    // The tool's own raw commands speak API V1, which an API V2 store refuses.
    let hint = if api == ApiMode::V2 {
        String::new()
    } else {
        format!("; try: tikv-cli --pd {pd} raw put hello world")
    };
    out.line(format!(
        "serving {} stores and {regions} regions (PD HTTP API at http://{pd}/pd/api/v1/){hint}; Ctrl-C stops",
        server.store_addresses().len(),
    ))
}

/// Prints what the cluster served: RPCs per method, BatchCommands and TSO traffic.
fn report(global: &GlobalOpts, counters: &Counters) -> Result<(), CliError> {
    let out = Out::new();
    if global.json {
        let mut rpcs = String::new();
        for (i, (method, n)) in counters.rpcs.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(rpcs, "{comma}{}:{n}", json_str(method));
        }
        return out.line(format!(
            "{{\"rpcs\":{{{rpcs}}},\"batch_messages\":{},\"batch_requests\":{},\"tso_requests\":{},\"tso_timestamps\":{}}}",
            counters.batch_messages,
            counters.batch_requests,
            counters.tso_requests,
            counters.tso_timestamps
        ));
    }
    let total: u64 = counters.rpcs.values().sum();
    out.line(format!("counters: {total} RPCs"))?;
    for (method, n) in &counters.rpcs {
        out.line(format!("  {method} {n}"))?;
    }
    out.line(format!(
        "BatchCommands: {} messages, {} requests",
        counters.batch_messages, counters.batch_requests
    ))?;
    out.line(format!(
        "TSO: {} requests, {} timestamps",
        counters.tso_requests, counters.tso_timestamps
    ))
}
