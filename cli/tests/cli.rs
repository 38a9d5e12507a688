//! The built `tikv-cli` binary, run as a user would: the demo, raw commands against a
//! `tikv-cli mock` process, short benchmark runs, and the one-line errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tikv-cli");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("tikv-cli runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed and returns its stdout.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts a failure reported as exactly one `error: ...` line; returns that line.
fn one_line_error(args: &[&str], code: i32) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} printed: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    lines[0].to_string()
}

/// A `tikv-cli mock` process, killed when dropped.
struct MockProcess {
    child: Child,
    pd: String,
    /// Kept open so that the server's later lines do not meet a closed pipe.
    stdout: BufReader<ChildStdout>,
}

impl MockProcess {
    fn start(args: &[&str]) -> MockProcess {
        let mut child = Command::new(BIN)
            .arg("mock")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("tikv-cli mock starts");
        let out = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(out);
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("mock prints its PD address");
        let pd = first
            .strip_prefix("PD endpoint: ")
            .unwrap_or_else(|| panic!("first line is 'PD endpoint: <address>', got {first:?}"))
            .trim()
            .to_string();
        MockProcess { child, pd, stdout }
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn demo_exits_zero_and_checks_consistency() {
    let out = ok(&["demo"]);
    assert!(out.contains("consistency check passed"), "{out}");
    assert!(out.contains("split the region"), "{out}");
    assert!(out.contains("moved the leader"), "{out}");
    // The transaction steps, each checked.
    for step in [
        "the second fails with a write conflict",
        "then read the committed 70",
        "TiKV found the deadlock",
        "async commit",
        "a snapshot from before it is refused",
    ] {
        assert!(out.contains(step), "missing '{step}': {out}");
    }
    assert!(out.contains("demo passed"), "{out}");
}

#[test]
fn demo_runs_against_a_cluster_given_by_pd() {
    let mock = MockProcess::start(&["--stores", "3", "--splits", "tikv-cli-demo/key-000050"]);
    let out = ok(&["demo", "--pd", &mock.pd, "--writes", "20"]);
    assert!(out.contains("consistency check passed"), "{out}");
    assert!(
        out.contains("mock-only"),
        "the split and transfer are skipped: {out}"
    );
    assert!(out.contains("TiKV found the deadlock"), "{out}");
    assert!(
        !out.contains("garbage collection"),
        "no GC on a given cluster: {out}"
    );
    // It cleaned up after itself.
    let left = ok(&["--pd", &mock.pd, "raw", "scan", "--keys-only"]);
    assert_eq!(left, "", "keys left behind");
    assert_eq!(
        ok(&["--pd", &mock.pd, "txn", "scan"]),
        "",
        "transactional keys left behind"
    );
}

#[test]
fn raw_commands_against_a_mock_process() {
    let mock = MockProcess::start(&["--stores", "3", "--splits", "b,m"]);
    let pd = mock.pd.as_str();

    assert_eq!(ok(&["--pd", pd, "raw", "put", "hello", "world"]), "OK\n");
    // --pd after the subcommand works too.
    assert_eq!(ok(&["raw", "get", "hello", "--pd", pd]), "world\n");
    assert_eq!(ok(&["--pd", pd, "raw", "get", "absent"]), "(not found)\n");
    ok(&["--pd", pd, "raw", "put", "apple", "red"]);
    ok(&["--pd", pd, "raw", "put", "zebra", "striped"]);

    // A scan across the three regions, text and JSON.
    assert_eq!(
        ok(&["--pd", pd, "raw", "scan"]),
        "apple\tred\nhello\tworld\nzebra\tstriped\n"
    );
    assert_eq!(
        ok(&["--pd", pd, "raw", "scan", "b", "z", "--keys-only"]),
        "hello\n"
    );
    assert_eq!(
        ok(&["--pd", pd, "raw", "reverse-scan", "--limit", "2"]),
        "zebra\tstriped\nhello\tworld\n"
    );
    assert_eq!(
        ok(&["--pd", pd, "--json", "raw", "scan", "--limit", "2"]),
        "[{\"key\":\"apple\",\"value\":\"red\"},{\"key\":\"hello\",\"value\":\"world\"}]\n"
    );

    // Binary keys: hex in, hex out; escaped in text output.
    ok(&["--pd", pd, "--hex", "raw", "put", "00ff", "0a"]);
    assert_eq!(ok(&["--pd", pd, "--hex", "raw", "get", "0x00ff"]), "0a\n");
    assert_eq!(
        ok(&["--pd", pd, "raw", "scan", "", "a"]),
        "\\x00\\xff\t\\x0a\n"
    );

    assert_eq!(
        ok(&[
            "--pd",
            pd,
            "raw",
            "cas",
            "hello",
            "there",
            "--expected",
            "world"
        ]),
        "swapped (previous value: world)\n"
    );
    assert_eq!(
        ok(&[
            "--pd",
            pd,
            "--json",
            "raw",
            "cas",
            "hello",
            "x",
            "--expected",
            "world"
        ]),
        "{\"swapped\":false,\"previous\":\"there\"}\n"
    );

    ok(&["--pd", pd, "raw", "put", "short-lived", "v", "--ttl", "100"]);
    let ttl = ok(&["--pd", pd, "raw", "ttl", "short-lived"]);
    let secs: u64 = ttl.trim().trim_end_matches('s').parse().expect("seconds");
    assert!(secs > 0 && secs <= 100, "{ttl}");
    assert_eq!(ok(&["--pd", pd, "raw", "ttl", "apple"]), "no TTL\n");

    let sum = ok(&["--pd", pd, "--json", "raw", "checksum"]);
    assert!(sum.contains("\"total_kvs\":5"), "{sum}");

    assert_eq!(ok(&["--pd", pd, "raw", "delete", "apple", "zebra"]), "OK\n");
    assert_eq!(ok(&["--pd", pd, "raw", "delete-range", "h", "i"]), "OK\n");
    assert_eq!(
        ok(&["--pd", pd, "raw", "scan", "a", "--keys-only"]),
        "short-lived\n"
    );
}

#[test]
fn mock_prints_json_addresses() {
    let mut child = Command::new(BIN)
        .args(["--json", "mock", "--stores", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.expect("reads");
    assert!(line.starts_with("{\"pd\":\"127.0.0.1:"), "{line}");
    assert_eq!(line.matches("\"address\"").count(), 2, "{line}");
}

/// `GET path` on PD's port over plain HTTP/1.1; returns the whole response.
fn http_get(pd: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(pd).expect("connects to PD");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {pd}\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("reads");
    out
}

#[test]
fn mock_serves_until_sigint_then_prints_counters() {
    let mut mock = MockProcess::start(&["--stores", "2", "--regions", "4", "--api-version", "1"]);
    let mut stores = String::new();
    for _ in 0..2 {
        mock.stdout.read_line(&mut stores).expect("store line");
    }
    assert_eq!(stores.matches("store ").count(), 2, "{stores}");

    assert_eq!(ok(&["--pd", &mock.pd, "raw", "put", "k", "v"]), "OK\n");
    // PD's HTTP API on PD's gRPC port.
    let regions = http_get(&mock.pd, "/pd/api/v1/regions");
    assert!(regions.starts_with("HTTP/1.1 200 OK\r\n"), "{regions}");
    assert!(regions.contains("{\"count\":4,\"regions\":["), "{regions}");
    let stores = http_get(&mock.pd, "/pd/api/v1/stores");
    assert!(stores.contains("\"count\": 2"), "{stores}");

    let status = Command::new("kill")
        .args(["-INT", &mock.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = mock.child.wait().expect("mock exits");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let mut rest = String::new();
    mock.stdout
        .read_to_string(&mut rest)
        .expect("reads the rest");
    assert!(rest.contains("counters: "), "{rest}");
    assert!(rest.contains("  RawPut 1\n"), "{rest}");
    assert!(rest.contains("TSO: "), "{rest}");
}

#[test]
fn mock_listens_on_the_pd_address_given() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let mock = MockProcess::start(&["--pd", &address]);
    assert_eq!(mock.pd, address);
    assert_eq!(ok(&["--pd", &address, "raw", "put", "a", "b"]), "OK\n");
    let health = http_get(&address, "/pd/api/v1/health");
    assert!(
        health.contains(&format!("\"http://{address}\"")),
        "{health}"
    );
    let e = one_line_error(&["mock", "--api-version", "3"], 2);
    assert!(e.contains("1, 2 or both"), "{e}");
    let e = one_line_error(&["mock", "--pd", "127.0.0.1:1,127.0.0.1:2"], 1);
    assert!(e.contains("single host:port"), "{e}");
}

#[test]
fn raw_without_pd_uses_an_embedded_mock() {
    let o = run(&["raw", "put", "k", "v"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "OK\n");
    assert!(stderr(&o).contains("embedded mock"), "{}", stderr(&o));
}

#[test]
fn bench_runs_a_short_workload_and_prints_the_table() {
    let out = ok(&[
        "bench",
        "--ops",
        "500",
        "--records",
        "1000",
        "--concurrency",
        "4",
    ]);
    assert!(out.contains("loaded 1000 records"), "{out}");
    let header = out
        .lines()
        .find(|l| l.starts_with("operation"))
        .unwrap_or_else(|| panic!("no table header: {out}"));
    for column in ["ops/s", "p50", "p99", "p99.9"] {
        assert!(header.contains(column), "{header}");
    }
    let total = out
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total row: {out}"));
    // The total row counts every operation and no error.
    let cells: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(cells[1], "500", "{total}");
    assert_eq!(cells.last(), Some(&"0"), "{total}");
    assert!(out.lines().any(|l| l.starts_with("read ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("update ")), "{out}");
}

#[test]
fn bench_against_a_mock_process_prints_json_and_cleans_up() {
    let mock = MockProcess::start(&[
        "--stores",
        "3",
        "--splits",
        "tikv-cli-bench/user000000000100",
        "--spread-leaders",
    ]);
    let out = ok(&[
        "--pd",
        &mock.pd,
        "--json",
        "bench",
        "--workload",
        "f",
        "--distribution",
        "uniform",
        "--ops",
        "300",
        "--records",
        "200",
        "--value-size",
        "16",
    ]);
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    assert!(
        out.starts_with("{\"workload\":\"F\",\"distribution\":\"uniform\","),
        "{out}"
    );
    assert!(out.contains("\"operation\":\"read-modify-write\""), "{out}");
    assert!(
        out.contains("\"operation\":\"total\",\"count\":300,\"errors\":0,"),
        "{out}"
    );
    // The records were deleted at the end.
    assert_eq!(ok(&["--pd", &mock.pd, "raw", "scan", "--keys-only"]), "");
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let e = one_line_error(&["--bogus", "demo"], 2);
    assert!(e.contains("--bogus"), "{e}");
    let e = one_line_error(&["raw", "get"], 2);
    assert!(e.contains("<KEYS>"), "{e}");
    let e = one_line_error(&["--pd", "no-port", "demo"], 2);
    assert!(e.contains("host:port"), "{e}");
    let e = one_line_error(&["--pd", "127.0.0.1:1", "raw", "get", "k"], 1);
    assert!(e.contains("cannot connect to PD at 127.0.0.1:1"), "{e}");
    let e = one_line_error(&["--pd", "127.0.0.1:1", "demo"], 1);
    assert!(e.contains("cannot connect to PD"), "{e}");
    // Arguments are checked before connecting: no connection error hides the typo.
    let e = one_line_error(&["--pd", "127.0.0.1:1", "--hex", "raw", "get", "zz"], 1);
    assert!(e.contains("not valid hex"), "{e}");
    let e = one_line_error(&["--pd", "127.0.0.1:1", "raw", "scan", "b", "a"], 1);
    assert!(e.contains("after its end"), "{e}");
    let e = one_line_error(&["bench", "--ops", "5", "--duration", "1s"], 2);
    assert!(e.contains("--duration"), "{e}");
    let e = one_line_error(&["bench", "--workload", "z"], 2);
    assert!(e.contains("'z'"), "{e}");
    let e = one_line_error(&["--pd", "127.0.0.1:1", "bench", "--regions", "4"], 1);
    assert!(
        e.contains("--regions applies only to the embedded mock"),
        "{e}"
    );
}

#[test]
fn help_and_version_exit_zero() {
    assert!(ok(&["--help"]).contains("demo"));
    assert!(ok(&["raw", "--help"]).contains("reverse-scan"));
    assert!(ok(&["bench", "--help"]).contains("--distribution"));
    assert!(ok(&["--version"]).starts_with("tikv-cli "));
}

#[test]
fn txn_commands_against_a_mock_process() {
    let mock = MockProcess::start(&["--stores", "3", "--regions", "4"]);
    let pd = mock.pd.as_str();

    let committed = ok(&["--pd", pd, "txn", "put", "apple", "red", "zebra", "striped"]);
    // "committed at C (started at S)"
    let numbers: Vec<u64> = committed
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("a number"))
        .collect();
    let [commit_ts, start_ts] = numbers[..] else {
        panic!("{committed}");
    };
    assert!(commit_ts > start_ts);
    assert_eq!(ok(&["--pd", pd, "txn", "get", "apple"]), "red\n");
    assert_eq!(
        ok(&["--pd", pd, "txn", "get", "apple", "pear"]),
        "apple\tred\npear\t(not found)\n"
    );
    // Every commit protocol, and pessimistic locking.
    for flags in [&["--async-commit"][..], &["--one-pc"], &["--pessimistic"]] {
        let mut args = vec!["--pd", pd, "txn", "put", "pear", "green"];
        args.extend_from_slice(flags);
        assert!(ok(&args).starts_with("committed at "), "{flags:?}");
    }
    assert_eq!(
        ok(&["--pd", pd, "txn", "--pessimistic", "get", "pear"]),
        "green\n"
    );
    assert_eq!(
        ok(&["--pd", pd, "txn", "scan", "--limit", "2"]),
        "apple\tred\npear\tgreen\n"
    );
    assert_eq!(
        ok(&["--pd", pd, "--json", "txn", "scan", "p"]),
        "[{\"key\":\"pear\",\"value\":\"green\"},{\"key\":\"zebra\",\"value\":\"striped\"}]\n"
    );
    assert!(ok(&["--pd", pd, "txn", "delete", "pear"]).starts_with("committed at "));
    assert_eq!(ok(&["--pd", pd, "txn", "get", "pear"]), "(not found)\n");
    // A transaction that never existed is settled as rolled back.
    assert_eq!(
        ok(&["--pd", pd, "txn", "status", "12345", "nothing"]),
        "rolled back\n"
    );
    // The first transaction's primary is its first key.
    assert_eq!(
        ok(&[
            "--pd",
            pd,
            "--json",
            "txn",
            "status",
            &start_ts.to_string(),
            "apple",
        ]),
        format!("{{\"status\":\"committed\",\"commit_ts\":{commit_ts}}}\n")
    );
    // Committed transactions leave no lock behind.
    assert_eq!(ok(&["--pd", pd, "txn", "locks"]), "");
    assert_eq!(
        ok(&["--pd", pd, "--json", "txn", "locks", "a", "z"]),
        "[]\n"
    );
    // An odd number of put arguments is a usage mistake, said in one line.
    let e = one_line_error(&["--pd", pd, "txn", "put", "a", "1", "b"], 1);
    assert!(e.contains("KEY VALUE pairs"), "{e}");
}

/// `txn lock --hold` keeps its locks while other invocations run: they see the lock, a no-wait
/// lock of the same key fails at once, a bounded wait times out; once released nothing is left
/// and the key can be locked again.
#[test]
fn txn_lock_holds_locks_that_others_meet() {
    let mock = MockProcess::start(&["--stores", "1", "--regions", "2"]);
    let pd = mock.pd.as_str();
    assert!(ok(&["--pd", pd, "txn", "put", "apple", "red"]).starts_with("committed at "));

    let mut holder = Command::new(BIN)
        .args(["--pd", pd, "txn", "lock", "apple", "pear", "--hold", "4s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tikv-cli runs");
    let mut first = String::new();
    BufReader::new(holder.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("the holder reports its locks");
    assert!(
        first.starts_with("locked 2 keys (start ts ") && first.contains("primary apple"),
        "{first}"
    );

    let locks = ok(&["--pd", pd, "--json", "txn", "locks"]);
    assert_eq!(
        locks.matches("\"kind\":\"PessimisticLock\"").count(),
        2,
        "{locks}"
    );
    let e = one_line_error(&["--pd", pd, "txn", "lock", "pear", "--wait", "nowait"], 1);
    assert!(e.contains("lock"), "{e}");
    let e = one_line_error(&["--pd", pd, "txn", "lock", "pear", "--wait", "300ms"], 1);
    assert!(e.contains("timed out") || e.contains("timeout"), "{e}");
    // Readers are never blocked by pessimistic locks.
    assert_eq!(ok(&["--pd", pd, "txn", "get", "apple"]), "red\n");

    assert!(holder.wait().expect("the holder exits").success());
    assert_eq!(ok(&["--pd", pd, "txn", "locks"]), "");
    assert_eq!(ok(&["--pd", pd, "txn", "get-for-update", "apple"]), "red\n");
    let e = one_line_error(&["--pd", pd, "txn", "lock", "x", "--wait", "soon"], 2);
    assert!(e.contains("forever"), "{e}");
}

/// Every `admin` command against a `tikv-cli mock` process, text and JSON.
#[test]
fn admin_commands_against_a_mock_process() {
    let mock = MockProcess::start(&["--stores", "3"]);
    let pd = mock.pd.as_str();
    let admin = |args: &[&str]| {
        let mut all = vec!["--pd", pd, "admin"];
        all.extend_from_slice(args);
        ok(&all)
    };
    let committed = ok(&[
        "--pd", pd, "--json", "txn", "put", "b", "1", "d", "2", "x", "3",
    ]);
    let start_ts: u64 = committed
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .expect("a start ts");

    // Regions: split, scatter and wait, list.
    let before = admin(&["regions"]).lines().count();
    let split = admin(&["split", "c", "m", "--scatter", "--wait"]);
    assert!(split.starts_with("new regions: "), "{split}");
    assert_eq!(
        split.split_whitespace().count(),
        4,
        "two new regions: {split}"
    );
    assert_eq!(admin(&["regions"]).lines().count(), before + 2);
    let regions = admin(&["--json", "regions", "a", "d"]);
    assert!(
        regions.starts_with("[{\"id\":") && regions.contains("\"leader_store\""),
        "{regions}"
    );
    let id = admin(&["regions"])
        .split('\t')
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        admin(&["scatter", &id, "--wait"]),
        format!("scattered: {id}\n")
    );
    assert!(admin(&["stores"]).lines().count() == 3);
    let safe: u64 = admin(&["min-safe-ts"]).trim().parse().expect("a timestamp");
    assert!(safe > 0);
    assert!(admin(&["--json", "stores"]).contains("\"address\":\"127.0.0.1:"));

    // MVCC views.
    let mvcc = admin(&["mvcc", "d"]);
    assert!(
        mvcc.contains("write\tPut") && mvcc.contains(&format!("start ts {start_ts}")),
        "{mvcc}"
    );
    let by_ts = admin(&["--json", "mvcc", "--start-ts", &start_ts.to_string()]);
    assert!(by_ts.starts_with("{\"key\":\"b\""), "{by_ts}");

    // GC: a barrier holds the safe point back, then goes.
    let state = admin(&["gc-state"]);
    assert!(state.starts_with("txn safe point\t"), "{state}");
    let barrier = admin(&["set-barrier", "br", "--ttl", "10m"]);
    assert!(barrier.starts_with("barrier br\tts "), "{barrier}");
    let held = admin(&["--json", "gc"]);
    assert!(
        held.contains("\"blocker\":\"") && held.contains("br"),
        "{held}"
    );
    assert!(admin(&["--json", "gc-state"]).contains("\"barriers\":[{\"id\":\"br\""));
    assert!(admin(&["delete-barrier", "br"]).starts_with("deleted barrier br"));
    assert_eq!(admin(&["delete-barrier", "br"]), "no barrier br\n");
    let gc = admin(&["gc"]);
    assert!(
        gc.contains("locks resolved\t0") && !gc.contains("held back"),
        "{gc}"
    );
    assert!(
        admin(&["set-barrier", "--global", "cdc", "--ttl", "1m"]).starts_with("global barrier cdc")
    );
    assert!(admin(&["delete-barrier", "--global", "cdc"]).starts_with("deleted"));
    assert_eq!(admin(&["resolve-locks"]), "resolved 0 locks\n");
    // The txn safe point only moves forward: PD's refusal is one line.
    let e = one_line_error(&["--pd", pd, "admin", "gc", "1"], 1);
    assert!(e.contains("smaller"), "{e}");

    let sum = admin(&["--json", "checksum", "a", "z"]);
    assert!(sum.contains("\"total_kvs\":3,"), "b, d and x: {sum}");

    // Flashback to before "x" was overwritten.
    let version = ok(&["--pd", pd, "--json", "txn", "put", "x", "4"]);
    let version: u64 = version
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .expect("a start ts");
    ok(&["--pd", pd, "txn", "put", "x", "5"]);
    let back = admin(&["flashback", "w", "y", &version.to_string()]);
    assert!(back.starts_with("flashed back "), "{back}");
    assert_eq!(ok(&["--pd", pd, "txn", "get", "x"]), "3\n");

    // Ranges.
    assert_eq!(admin(&["delete-range", "a", "c"]), "done in 1 regions\n");
    assert_eq!(ok(&["--pd", pd, "txn", "get", "b"]), "(not found)\n");
    assert_eq!(
        admin(&["destroy-range", "c", "e"]),
        "destroyed on every store\n"
    );
    assert_eq!(ok(&["--pd", pd, "txn", "scan"]), "x\t3\n");
}

/// A bench whose cluster dies mid-run still stops at --duration (operations in flight are
/// cancelled, not waited out) and its cleanup gives up after --timeout, in one error line.
#[test]
fn bench_stops_on_time_when_the_cluster_dies() {
    let mock = MockProcess::start(&["--stores", "3"]);
    let mut bench = Command::new(BIN)
        .args([
            "--pd",
            &mock.pd,
            "--timeout",
            "2s",
            "bench",
            "--workload",
            "a",
            "--duration",
            "3s",
            "--records",
            "100",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tikv-cli bench starts");
    let mut out = BufReader::new(bench.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    while !line.starts_with("loaded ") {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("bench output") > 0,
            "the bench ended before loading"
        );
    }
    drop(mock); // killed: every later request fails to connect
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = bench.try_wait().expect("wait for the bench") {
            break status;
        }
        // Far above --duration plus --timeout, far below the minutes of backoff it used to
        // wait out: a functional bound, not a speed target.
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = bench.kill();
            panic!("the bench did not stop after its duration");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("bench output");
    let mut err = String::new();
    bench
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut err)
        .expect("bench errors");
    assert!(!status.success(), "{rest}{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains("delete the benchmark's keys"),
        "{err}"
    );
    assert!(rest.contains("ran for "), "the report is printed: {rest}");
}
