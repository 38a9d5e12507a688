//! `tikv-cli mock`: a mock PD + TiKV cluster served in the foreground, for trying the client,
//! for other programs' tests and for the benchmark harness.

use tikv_mock::server::MockServer;

use crate::error::CliError;
use crate::format::{Out, json_str, parse_bytes};
use crate::{GlobalOpts, cluster};

/// Options of `tikv-cli mock`.
#[derive(Debug, clap::Args)]
pub(crate) struct MockArgs {
    /// Number of TiKV stores (each region gets up to 3 replicas).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    stores: u16,

    /// Keys at which to split the initial region, comma-separated (e.g. `b,m,t`; hex with
    /// --hex).
    #[arg(long, value_delimiter = ',', value_name = "KEYS")]
    splits: Vec<String>,

    /// Move region leaders round-robin over the stores (by default every leader starts on the
    /// first store), so that multi-region requests fan out to every store.
    #[arg(long)]
    spread_leaders: bool,

    /// Address to listen on; ports are picked by the OS and printed.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
}

/// Starts the cluster, prints its addresses and serves until the process is interrupted.
pub(crate) async fn run(global: &GlobalOpts, args: &MockArgs) -> Result<(), CliError> {
    if !global.pd.is_empty() {
        return Err(CliError::msg(
            "--pd does not apply to 'mock': it serves its own PD",
        ));
    }
    let splits: Vec<Vec<u8>> = args
        .splits
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| parse_bytes(s, global.hex, "split key"))
        .collect::<Result<_, _>>()?;
    let server = cluster::start_mock(usize::from(args.stores), &splits, &args.host).await?;
    if args.spread_leaders {
        cluster::spread_leaders(&server)?;
    }
    // A server's job is to serve: if whoever reads our stdout goes away after taking the PD
    // address, keep serving rather than exit on the broken pipe.
    match announce(global, args, &server) {
        Ok(()) | Err(CliError::BrokenPipe) => {}
        Err(e) => return Err(e),
    }
    // The server's tasks run on the runtime; this task only has to keep the process (and
    // `server`, which owns the cluster handle) alive. Ctrl-C's default action ends the process.
    std::future::pending::<()>().await;
    drop(server);
    Ok(())
}

/// Prints the addresses: `pd <address>` first and alone on its line (scripts and tests read
/// it), or one JSON object with `--json`.
fn announce(global: &GlobalOpts, args: &MockArgs, server: &MockServer) -> Result<(), CliError> {
    let regions = server.cluster().lock().topology().regions().count();
    let out = Out::new();
    if global.json {
        let stores: Vec<String> = server
            .store_addresses()
            .iter()
            .map(|(id, address)| format!("{{\"id\":{id},\"address\":{}}}", json_str(address)))
            .collect();
        out.line(format!(
            "{{\"pd\":{},\"stores\":[{}],\"regions\":{regions}}}",
            json_str(server.pd_address()),
            stores.join(",")
        ))?;
    } else {
        out.line(format!("pd {}", server.pd_address()))?;
        for (id, address) in server.store_addresses() {
            out.line(format!("store {id} {address}"))?;
        }
        out.line(format!(
            "serving {} stores and {regions} regions; try: tikv-cli --pd {} raw put hello world; Ctrl-C stops",
            args.stores,
            server.pd_address()
        ))?;
    }
    Ok(())
}
