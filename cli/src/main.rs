//! `tikv-cli`: the command-line tool of the TiKV client.
//!
//! - `tikv-cli demo` walks through the client against an embedded mock cluster (or a real one
//!   with `--pd`), including a region split and a leader transfer under a concurrent write
//!   workload (checking that no acknowledged write is lost) and transactions: a conflict, a
//!   lock wait, a deadlock, the commit protocols and a GC round.
//! - `tikv-cli raw ...` runs single RawKV operations; `tikv-cli txn ...` one transaction.
//! - `tikv-cli admin ...` runs operator commands: GC, barriers, lock resolution, range
//!   deletion, splits and scatters, region and store listings, MVCC views.
//! - `tikv-cli mock ...` serves a mock PD + TiKV cluster on loopback until interrupted.
//! - `tikv-cli bench ...` runs YCSB-style workloads (A, B, C, F) on RawKV and reports
//!   throughput and latency percentiles.
//!
//! Every failure ends as one line on stderr and a non-zero exit status: the process never
//! panics on anything a user or a server can cause.

mod admin;
mod bench;
mod cluster;
mod demo;
mod error;
mod format;
mod mock;
mod raw;
mod txn;

use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use crate::error::CliError;

/// Exit status for a failed operation (connect, read, write, check).
const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line that does not parse (clap's convention).
const EXIT_USAGE: u8 = 2;

/// A TiKV client on the command line: a guided demo, RawKV commands, a mock cluster and a
/// benchmark.
///
/// Without --pd, commands run against a fresh embedded mock cluster.
#[derive(Debug, Parser)]
#[command(name = "tikv-cli", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,

    #[command(subcommand)]
    command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Clone, Debug, clap::Args)]
struct GlobalOpts {
    /// PD endpoint(s) of the cluster to use, `host:port` (comma-separated for several).
    /// Without it, an embedded mock cluster is started. For `mock`: the address its PD
    /// listens on (default: a port picked by the OS).
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        value_delimiter = ',',
        value_parser = format::parse_endpoint
    )]
    pd: Vec<String>,

    /// Time limit for each client call (and for connecting), e.g. `500ms`, `5s`, `1m`.
    #[arg(long, global = true, value_name = "DURATION", value_parser = format::parse_duration)]
    timeout: Option<Duration>,

    /// Print data as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Raw commands: keys and values on the command line are hex, and are printed as hex.
    #[arg(long, global = true)]
    hex: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Show the client at work, checking every result (the main job: start here).
    ///
    /// Writes, reads and scans across regions, a region split and a leader transfer under
    /// concurrent writes, a consistency check, CAS, TTL and checksum; then transactions (a
    /// write conflict, a pessimistic lock wait, a deadlock, 2PC / async commit / 1PC, a GC
    /// round on the mock), then a timed summary.
    /// Without --pd it runs on an embedded mock cluster; with --pd it uses that cluster, skips
    /// the split and the transfer, and deletes its key prefix at the end.
    Demo(demo::DemoArgs),
    /// Run one RawKV operation.
    Raw(raw::RawArgs),
    /// Run one transaction: read, write (committed with 2PC, async commit, 1PC or
    /// pessimistic locking), scan, or look up a transaction's status.
    Txn(txn::TxnArgs),
    /// Operator commands: GC state and rounds, GC barriers, lock resolution, delete and
    /// destroy ranges, split and scatter regions, list regions and stores, MVCC views.
    Admin(admin::AdminArgs),
    /// Serve a mock PD + TiKV cluster on loopback until interrupted (Ctrl-C).
    ///
    /// Prints `PD endpoint: <host:port>` first, then the stores; Ctrl-C prints the request
    /// counters and exits 0. PD's port also serves PD's HTTP API (/pd/api/v1/regions, stores,
    /// min-resolved-ts, health).
    Mock(mock::MockArgs),
    /// Run a YCSB-style workload (A, B, C or F) on RawKV and report throughput and latency.
    ///
    /// Loads --records records with batch puts, then runs --concurrency closed-loop workers
    /// for --duration (or --ops operations), showing live throughput on stderr, and prints
    /// ops/s and p50/p99/p99.9 latency per operation kind (JSON with --json).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(&CliError::msg(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (connection loops, the embedded mock's listeners) never finish on their
    // own: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`tikv-cli raw scan | head`): nothing left to say to anyone.
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Demo(args) => demo::run(&cli.global, &args).await,
        Command::Raw(args) => raw::run(&cli.global, &args).await,
        Command::Txn(args) => txn::run(&cli.global, &args).await,
        Command::Admin(args) => admin::run(&cli.global, &args).await,
        Command::Mock(args) => mock::run(&cli.global, &args).await,
        Command::Bench(args) => bench::run(&cli.global, &args).await,
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!("error: {}", shorten(&e.to_string(), MAX_ERROR_CHARS));
    ExitCode::from(EXIT_FAILURE)
}

/// Errors can quote whole keys (up to 8 KiB and more); past this an error line stops being
/// readable.
const MAX_ERROR_CHARS: usize = 1000;

/// `text` cut to at most `max` characters, saying how much was left out.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} more bytes)", &text[..cut], text.len() - cut),
    }
}

/// Help and version go to stdout with status 0; real parse errors become one line (clap's
/// own rendering adds usage and tips over several lines).
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // A failed write of help text (closed stdout) leaves nothing useful to report.
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            // clap's first paragraph is the error itself (a list of missing arguments continues
            // on indented lines); tips and usage follow after a blank line.
            let rendered = e.to_string();
            let first: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!("error: {first} (see 'tikv-cli --help')");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A panic is a bug in this tool or a library under it; report it in one line instead of the
/// default multi-line message with a backtrace hint.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in tikv-cli): {}{location}",
            message.replace('\n', " ")
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pd_is_global_and_takes_a_list() {
        let before = Cli::try_parse_from(["tikv-cli", "--pd", "a:1,b:2", "raw", "get", "k"]);
        let after = Cli::try_parse_from(["tikv-cli", "raw", "get", "k", "--pd", "a:1,b:2"]);
        for cli in [before, after] {
            let cli = cli.expect("parses");
            assert_eq!(cli.global.pd, ["a:1", "b:2"]);
        }
    }

    #[test]
    fn long_errors_are_shortened_on_a_char_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("ééé", 2), "éé... (2 more bytes)");
    }

    #[test]
    fn a_malformed_endpoint_is_a_parse_error() {
        assert!(Cli::try_parse_from(["tikv-cli", "--pd", "nohost", "demo"]).is_err());
    }
}
