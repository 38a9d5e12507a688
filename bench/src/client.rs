//! The clients under test behind one enum, so that every workload runs the same code for
//! each of them (an enum rather than a trait object: no boxing of futures on either side).

use std::sync::Arc;
use std::time::Duration;

/// One side's clients: RawKV (against the raw mock) and, for the commit workloads,
/// transactional (against the mock split at encoded keys).
#[derive(Clone)]
pub(crate) struct Clients {
    /// The RawKV client.
    pub(crate) raw: Client,
    /// The transactional client, when the commit workloads run.
    pub(crate) txn: Option<TxnClient>,
    /// Ours with local latches, for the hot-counter comparison.
    pub(crate) txn_latched: Option<TxnClient>,
}

/// How a benchmark transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Two-phase commit.
    TwoPc,
    /// Async commit (falls back to 2PC when not eligible).
    Async,
    /// One-phase commit (falls back to 2PC when the keys need several requests).
    OnePc,
    /// A pessimistic transaction: lock every key (one `lock_keys` call), write, commit.
    Pessimistic,
}

impl Commit {
    /// The mode's label in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Commit::TwoPc => "2PC",
            Commit::Async => "async commit",
            Commit::OnePc => "1PC",
            Commit::Pessimistic => "pessimistic",
        }
    }
}

/// A transactional client under test.
#[derive(Clone)]
pub(crate) enum TxnClient {
    /// This project's client (`tikv-tokio`).
    Ours(tikv_tokio::TransactionClient),
    /// client-rust (`tikv-client` 0.4), whose client is not `Clone`.
    ClientRust(Arc<tikv_client::TransactionClient>),
}

impl TxnClient {
    /// Connects `side` to the PD at `pd`.
    pub(crate) async fn connect(side: Side, pd: &str) -> Result<TxnClient, String> {
        Self::connect_with(side, pd, false).await
    }

    /// Connects `side` (with local latches if `latches`: ours only) to the PD at `pd`.
    pub(crate) async fn connect_with(
        side: Side,
        pd: &str,
        latches: bool,
    ) -> Result<TxnClient, String> {
        match side {
            Side::Ours | Side::OursUnary => {
                let config = tikv_tokio::Config::default()
                    .with_batch_commands(side == Side::Ours)
                    .with_region_concurrency(16)
                    .with_local_latches(latches.then_some(1 << 16));
                tikv_tokio::TransactionClient::connect(&[pd], config)
                    .await
                    .map(TxnClient::Ours)
                    .map_err(|e| e.to_string())
            }
            Side::ClientRust => {
                let config = tikv_client::Config::default().with_timeout(CALL_TIMEOUT);
                tikv_client::TransactionClient::new_with_config(vec![pd.to_string()], config)
                    .await
                    .map(|c| TxnClient::ClientRust(Arc::new(c)))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Increments the counter at `key` in an optimistic transaction (read, write, commit),
    /// starting over on a write conflict until it commits (at most 1000 attempts).
    pub(crate) async fn increment(&self, key: Vec<u8>) -> Result<(), String> {
        let parse = |v: Option<Vec<u8>>| -> u64 {
            v.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
                .unwrap_or(0)
        };
        let mut last = String::new();
        for _ in 0..1000 {
            let attempt: Result<(), String> = match self {
                TxnClient::Ours(c) => {
                    async {
                        let mut t = c.begin().await.map_err(|e| e.to_string())?;
                        let n = parse(
                            t.get(key.clone())
                                .await
                                .map_err(|e| e.to_string())?
                                .map(|b| b.to_vec()),
                        );
                        t.put(key.clone(), (n + 1).to_string())
                            .await
                            .map_err(|e| e.to_string())?;
                        t.commit().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    .await
                }
                TxnClient::ClientRust(c) => {
                    async {
                        let options = tikv_client::TransactionOptions::new_optimistic();
                        let mut t = c
                            .begin_with_options(options)
                            .await
                            .map_err(|e| e.to_string())?;
                        let n = parse(t.get(key.clone()).await.map_err(|e| e.to_string())?);
                        t.put(key.clone(), (n + 1).to_string())
                            .await
                            .map_err(|e| e.to_string())?;
                        t.commit().await.map(|_| ()).map_err(|e| e.to_string())
                    }
                    .await
                }
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if e.to_lowercase().contains("conflict") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!("no commit in 1000 attempts; last: {last}"))
    }

    /// One optimistic transaction that writes `pairs` and commits with `mode`.
    pub(crate) async fn commit(
        &self,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        mode: Commit,
    ) -> Result<(), String> {
        match self {
            TxnClient::Ours(c) => {
                let options = if mode == Commit::Pessimistic {
                    tikv_tokio::TransactionOptions::pessimistic()
                } else {
                    tikv_tokio::TransactionOptions::default()
                        .with_async_commit(mode == Commit::Async)
                        .with_try_one_pc(mode == Commit::OnePc)
                };
                let mut t = c.begin_with(options).await.map_err(|e| e.to_string())?;
                if mode == Commit::Pessimistic {
                    let keys: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
                    t.lock_keys(keys, tikv_tokio::LockOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                for (k, v) in pairs {
                    t.put(k, v).await.map_err(|e| e.to_string())?;
                }
                t.commit().await.map(|_| ()).map_err(|e| e.to_string())
            }
            TxnClient::ClientRust(c) => {
                let optimistic = tikv_client::TransactionOptions::new_optimistic();
                let options = match mode {
                    Commit::TwoPc => optimistic,
                    Commit::Async => optimistic.use_async_commit(),
                    Commit::OnePc => optimistic.try_one_pc(),
                    Commit::Pessimistic => tikv_client::TransactionOptions::new_pessimistic(),
                };
                let mut t = c
                    .begin_with_options(options)
                    .await
                    .map_err(|e| e.to_string())?;
                if mode == Commit::Pessimistic {
                    let keys: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
                    t.lock_keys(keys).await.map_err(|e| e.to_string())?;
                }
                for (k, v) in pairs {
                    t.put(k, v).await.map_err(|e| e.to_string())?;
                }
                t.commit().await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

/// A RawKV client under test.
#[derive(Clone)]
pub(crate) enum Client {
    /// This project's client (`tikv-tokio`).
    Ours(tikv_tokio::RawClient),
    /// client-rust (`tikv-client` 0.4).
    ClientRust(tikv_client::RawClient),
}

/// Which client, for labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// This project's client with BatchCommands (its default).
    Ours,
    /// This project's client with one unary call per request (`--unary`).
    OursUnary,
    /// client-rust.
    ClientRust,
}

impl Side {
    /// The side's label in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::OursUnary => "ours-unary",
            Side::ClientRust => "client-rust",
        }
    }
}

/// Time limit of one call on both sides (client-rust's default is 2 s; a benchmark on
/// loopback should never come near either).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects `side` to the PD at `pd`.
    pub(crate) async fn connect(side: Side, pd: &str) -> Result<Client, String> {
        match side {
            Side::Ours | Side::OursUnary => {
                // client-rust runs at most 16 region requests of one call at once
                // (MULTI_REGION_CONCURRENCY); ours defaults to the same bound.
                let config = tikv_tokio::Config::default()
                    .with_batch_commands(side == Side::Ours)
                    .with_region_concurrency(16);
                tikv_tokio::RawClient::connect(&[pd], config)
                    .await
                    .map(|c| Client::Ours(c.with_timeout(CALL_TIMEOUT)))
                    .map_err(|e| e.to_string())
            }
            Side::ClientRust => {
                let config = tikv_client::Config::default().with_timeout(CALL_TIMEOUT);
                tikv_client::RawClient::new_with_config(vec![pd.to_string()], config)
                    .await
                    .map(Client::ClientRust)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// A point get; `Ok(true)` when the key exists.
    pub(crate) async fn get(&self, key: Vec<u8>) -> Result<bool, String> {
        match self {
            Client::Ours(c) => c
                .get(key)
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.to_string()),
            Client::ClientRust(c) => c
                .get(key)
                .await
                .map(|v| v.is_some())
                .map_err(|e| e.to_string()),
        }
    }

    /// A point put.
    pub(crate) async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        match self {
            Client::Ours(c) => c.put(key, value).await.map_err(|e| e.to_string()),
            Client::ClientRust(c) => c.put(key, value).await.map_err(|e| e.to_string()),
        }
    }

    /// A batch get; returns how many of the keys exist.
    pub(crate) async fn batch_get(&self, keys: Vec<Vec<u8>>) -> Result<usize, String> {
        match self {
            Client::Ours(c) => c
                .batch_get(keys)
                .await
                .map(|p| p.len())
                .map_err(|e| e.to_string()),
            Client::ClientRust(c) => c
                .batch_get(keys)
                .await
                .map(|p| p.len())
                .map_err(|e| e.to_string()),
        }
    }

    /// A batch put.
    pub(crate) async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), String> {
        match self {
            Client::Ours(c) => c.batch_put(pairs).await.map_err(|e| e.to_string()),
            Client::ClientRust(c) => c.batch_put(pairs).await.map_err(|e| e.to_string()),
        }
    }
}
