// A tour of the client, shared word for word by the tokio, async-std and smol examples: each
// binds `tikv` to its runtime's crate (`use tikv_tokio as tikv;`) and includes this file, so
// the same program compiles and runs on every runtime.

/// The PD endpoint: the first argument, else `$TIKV_PD`.
fn pd_endpoint() -> String {
    std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TIKV_PD").ok())
        .unwrap_or_else(|| {
            eprintln!(
                "usage: give the PD endpoint as the first argument or in $TIKV_PD\n\
                 (start a local mock cluster with `cargo run -p tikv-cli -- mock`)"
            );
            std::process::exit(2)
        })
}

/// Runs an optimistic transaction `body` until it commits, retrying write conflicts (the
/// documented way to handle them) at most `attempts` times.
async fn with_retries<F, Fut>(
    client: &tikv::TransactionClient,
    attempts: u32,
    mut body: F,
) -> tikv::Result<tikv::Timestamp>
where
    F: FnMut(tikv::Transaction) -> Fut,
    Fut: std::future::Future<Output = tikv::Result<tikv::Transaction>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let txn = body(client.begin().await?).await?;
        match txn.commit().await {
            Err(e @ tikv::Error::WriteConflict { .. }) if attempt < attempts => {
                println!("  attempt {attempt}: {e}; retrying");
            }
            other => return other,
        }
    }
}

async fn tour(runtime: tikv::ClientRuntime, pd: &str) -> tikv::Result<()> {
    use tikv::{
        Config, Error, IsolationLevel, Priority, RawClient, ReadOptions, TransactionClient,
        TransactionOptions,
    };

    // Keys unique to this run, so the tour can run again on the same cluster.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let key = |name: &str| format!("tour/{run}/{name}");

    println!("RawKV");
    let raw = RawClient::connect_with(runtime.clone(), &[pd], Config::default()).await?;
    raw.put(key("greeting"), "hello").await?;
    let greeting = raw.get(key("greeting")).await?;
    println!("  get greeting -> {:?}", greeting.as_deref().map(String::from_utf8_lossy));
    raw.batch_put((0..5).map(|i| (key(&format!("n{i}")), i.to_string())))
        .await?;
    let numbers = raw.scan(key("n0")..key("n9"), 10).await?;
    println!("  scan n0..n9 -> {} pairs", numbers.len());
    let counter = raw.with_atomic_for_cas();
    let swap = counter
        .compare_and_swap(key("counter"), None::<&str>, "1")
        .await?;
    println!("  compare-and-swap on an absent key -> swapped: {}", swap.swapped);

    println!("transactions");
    let txns = TransactionClient::connect_with(runtime, &[pd], Config::default()).await?;
    let mut setup = txns.begin().await?;
    setup.put(key("alice"), "100").await?;
    setup.put(key("bob"), "100").await?;
    setup.commit().await?;
    let (alice, bob) = (key("alice"), key("bob"));
    let commit_ts = with_retries(&txns, 5, |mut t| {
        let (alice, bob) = (alice.clone(), bob.clone());
        async move {
            let balance = |v: Option<tikv::Bytes>| -> i64 {
                v.and_then(|v| String::from_utf8_lossy(&v).parse().ok())
                    .unwrap_or(0)
            };
            let a = balance(t.get(alice.clone()).await?);
            let b = balance(t.get(bob.clone()).await?);
            t.put(alice, (a - 10).to_string()).await?;
            t.put(bob, (b + 10).to_string()).await?;
            Ok(t)
        }
    })
    .await?;
    println!("  transfer of 10 committed at {commit_ts}");

    // A second writer of the same key that started earlier loses at commit.
    let mut early = txns.begin().await?;
    let mut late = txns.begin().await?;
    late.put(key("alice"), "late").await?;
    late.commit().await?;
    early.put(key("alice"), "early").await?;
    match early.commit().await {
        Err(e @ Error::WriteConflict { .. }) => {
            println!("  concurrent writer -> {e} (retryable: {})", e.is_retryable())
        }
        other => println!("  unexpected: {other:?}"),
    }

    println!("options");
    let options = TransactionOptions::default()
        .with_priority(Priority::High)
        .with_request_source("tour")
        .with_try_one_pc(true);
    let mut fast = txns.begin_with(options).await?;
    fast.put(key("one-pc"), "committed in one phase").await?;
    fast.commit().await?;
    let now = txns.current_timestamp().await?;
    let read_committed = ReadOptions::default().with_isolation(IsolationLevel::ReadCommitted);
    let snapshot = txns.snapshot_with(now, read_committed)?;
    let all = snapshot.scan(key("")..key("~"), 100).await?;
    println!("  read-committed scan of this run's keys -> {} pairs", all.len());
    // Pessimistic: lock a key and read its latest value, then write it.
    let mut locking = txns.begin_with(TransactionOptions::pessimistic()).await?;
    let before = locking.get_for_update(key("one-pc")).await?;
    locking.put(key("one-pc"), "rewritten under a pessimistic lock").await?;
    locking.commit().await?;
    println!(
        "  pessimistic: locked {:?} (was {} bytes) and rewrote it",
        key("one-pc"),
        before.map_or(0, |v| v.len())
    );
    Ok(())
}
