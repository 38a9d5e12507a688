//! The clients under test behind one enum, so that every workload runs the same code for
//! each of them (an enum rather than a trait object: no boxing of futures on either side).

use std::time::Duration;

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
