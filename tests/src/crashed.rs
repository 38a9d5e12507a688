//! Transactions whose client "crashed" part-way, written straight into the mock's engine: the
//! locks such a client leaves behind, for readers and writers to resolve.
//!
//! Each lock is written as the real client would have written it (`KvPrewrite` with the
//! transaction's options), so the resolver meets exactly what TiKV would show it.

use tikv_mock::server::MockServer;
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::tikv_service;

/// A transaction that prewrote some keys (the first is the primary) and then stopped.
#[derive(Clone, Debug)]
pub struct Crashed {
    keys: Vec<String>,
    ttl_ms: u64,
    commit_primary: bool,
    min_commit_ts: bool,
    async_commit: bool,
    prewritten: Option<usize>,
}

impl Crashed {
    /// Prewrites `keys` (the first is the primary) with a 3 s TTL, no `min_commit_ts`, 2PC.
    pub fn new(keys: &[&str]) -> Self {
        Crashed {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            ttl_ms: 3000,
            commit_primary: false,
            min_commit_ts: false,
            async_commit: false,
            prewritten: None,
        }
    }

    /// The locks' TTL.
    pub fn ttl(mut self, ms: u64) -> Self {
        self.ttl_ms = ms;
        self
    }

    /// Committed at the primary (at `start_ts + 1`) before the crash: the transaction is
    /// committed, its secondaries still locked.
    pub fn committed_primary(mut self) -> Self {
        self.commit_primary = true;
        self
    }

    /// Prewritten with `min_commit_ts = start_ts + 1`, as client-go (and this client) do:
    /// readers can push the commit timestamp past themselves.
    pub fn pushable(mut self) -> Self {
        self.min_commit_ts = true;
        self
    }

    /// Async commit: every lock marked so, the primary listing the secondaries. Once every
    /// key is prewritten the transaction is committed, whatever became of its client.
    pub fn async_commit(mut self) -> Self {
        self.async_commit = true;
        self.min_commit_ts = true;
        self
    }

    /// Only the first `n` keys were prewritten before the crash.
    pub fn prewritten(mut self, n: usize) -> Self {
        self.prewritten = Some(n);
        self
    }

    /// The value each key was given.
    pub fn value(key: &str) -> String {
        format!("crashed {key}")
    }

    /// Writes the locks into `mock` for the transaction started at `start_ts`.
    ///
    /// # Panics
    ///
    /// If the mock refuses a write (a test setup failure).
    pub fn leave(&self, mock: &MockServer, start_ts: u64) {
        let now = now_ms();
        let mut cluster = mock.cluster().lock();
        let primary = self.keys[0].as_bytes().to_vec();
        let secondaries: Vec<bytes::Bytes> = self.keys[1..]
            .iter()
            .map(|k| k.as_bytes().to_vec().into())
            .collect();
        let count = self.prewritten.unwrap_or(self.keys.len());
        for key in &self.keys[..count] {
            let (store, ctx) = context_for(&cluster, key.as_bytes());
            let is_primary = key.as_bytes() == primary.as_slice();
            let request = kvrpcpb::PrewriteRequest {
                context: Some(ctx),
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::Put as i32,
                    key: key.as_bytes().to_vec().into(),
                    value: Self::value(key).into(),
                    assertion: 0,
                }],
                primary_lock: primary.clone().into(),
                start_version: start_ts,
                lock_ttl: self.ttl_ms,
                txn_size: self.keys.len() as u64,
                min_commit_ts: if self.min_commit_ts { start_ts + 1 } else { 0 },
                use_async_commit: self.async_commit,
                secondaries: if self.async_commit && is_primary {
                    secondaries.clone()
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            let r = cluster
                .tikv::<tikv_service::KvPrewrite>(store, request, now)
                .expect("prewrite");
            assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
        }
        if self.commit_primary {
            let (store, ctx) = context_for(&cluster, &primary);
            let request = kvrpcpb::CommitRequest {
                context: Some(ctx),
                start_version: start_ts,
                commit_version: start_ts + 1,
                keys: vec![primary.clone().into()],
                ..Default::default()
            };
            let r = cluster
                .tikv::<tikv_service::KvCommit>(store, request, now)
                .expect("commit");
            assert!(r.error.is_none(), "{r:?}");
        }
    }
}

/// How many locks of the transaction started at `start_ts` remain anywhere in `mock`.
///
/// # Panics
///
/// If the mock refuses the scan (a test setup failure).
pub fn locks_left(mock: &MockServer, start_ts: u64) -> usize {
    count_locks(&mut mock.cluster().lock(), Some(start_ts))
}

/// Waits (up to 2 s, polling) for the transaction started at `start_ts` to have no lock left
/// in `mock` — background cleanups and commits finish shortly after the operation that
/// started them returns — and says how many remain.
///
/// # Panics
///
/// If the mock refuses the scan (a test setup failure).
pub async fn locks_left_after_cleanup(mock: &MockServer, start_ts: u64) -> usize {
    let mut left = locks_left(mock, start_ts);
    for _ in 0..200 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        left = locks_left(mock, start_ts);
    }
    left
}

/// How many locks remain anywhere in `cluster`: of the transaction started at `start_ts`, or
/// of any transaction.
///
/// # Panics
///
/// If the cluster refuses the scan (a test setup failure).
pub fn count_locks(cluster: &mut tikv_mock::Cluster, start_ts: Option<u64>) -> usize {
    scan_locks(cluster)
        .iter()
        .filter(|l| start_ts.is_none_or(|ts| l.lock_version == ts))
        .count()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

/// The store and request context that reach the region holding transactional `key`.
///
/// # Panics
///
/// If no region holds the key (the mock always covers the whole key space).
pub fn context_for(cluster: &tikv_mock::Cluster, key: &[u8]) -> (u64, kvrpcpb::Context) {
    let encoded = tikv_core::codec::encode_memcomparable(key);
    let region = cluster
        .topology()
        .regions()
        .find(|r| {
            let m = &r.meta;
            m.start_key.as_ref() <= encoded.as_slice()
                && (m.end_key.is_empty() || encoded.as_slice() < m.end_key.as_ref())
        })
        .expect("a region holds every key");
    let leader = *region.leader().expect("every mock region has a leader");
    let ctx = kvrpcpb::Context {
        region_id: region.id(),
        region_epoch: region.meta.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    (leader.store_id, ctx)
}

/// Every lock left in `cluster`, as TiKV's `ScanLock` reports them (a shared key's holders each
/// as a lock of its own).
///
/// # Panics
///
/// If the cluster refuses the scan (a test setup failure).
pub fn scan_locks(cluster: &mut tikv_mock::Cluster) -> Vec<kvrpcpb::LockInfo> {
    let now = now_ms();
    let regions: Vec<(u64, kvrpcpb::Context)> = cluster
        .topology()
        .regions()
        .map(|r| {
            let leader = *r.leader().expect("every mock region has a leader");
            let ctx = kvrpcpb::Context {
                region_id: r.id(),
                region_epoch: r.meta.region_epoch,
                peer: Some(leader),
                ..Default::default()
            };
            (leader.store_id, ctx)
        })
        .collect();
    let mut out = Vec::new();
    for (store, ctx) in regions {
        let request = kvrpcpb::ScanLockRequest {
            context: Some(ctx),
            max_version: u64::MAX,
            ..Default::default()
        };
        let r = cluster
            .tikv::<tikv_service::KvScanLock>(store, request, now)
            .expect("scan lock");
        // A shared key's wrapper stands for one lock per holder.
        for lock in r.locks {
            if lock.shared_lock_infos.is_empty() {
                out.push(lock);
            } else {
                out.extend(lock.shared_lock_infos);
            }
        }
    }
    out
}

/// Every lock left in `cluster`, described for a failure message.
///
/// # Panics
///
/// If the cluster refuses the scan (a test setup failure).
pub fn describe_locks(cluster: &mut tikv_mock::Cluster) -> String {
    scan_locks(cluster)
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join("; ")
}
