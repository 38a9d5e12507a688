//! The committer: Percolator two-phase commit of a transaction's buffered writes.
//!
//! 1. **Prewrite** every key (grouped by region, batches sent concurrently), all naming the
//!    primary key, with `min_commit_ts` at least `start_ts + 1` (so readers can push it past
//!    themselves instead of waiting). Locks of other transactions met on the way are
//!    resolved and the affected batches prewritten again; a write conflict or an existing key
//!    aborts the transaction, which rolls back what it prewrote.
//! 2. Take a **commit timestamp** from TSO.
//! 3. **Commit the primary**: the commit point. If the reply is lost the outcome is
//!    [`Error::Undetermined`], never a silent retry. `CommitTsExpired` takes a newer
//!    timestamp; a vanished lock means another client rolled the transaction back.
//! 4. **Commit the secondaries** in the background. The transaction is already committed; a
//!    failure here only leaves locks that readers resolve to committed.
//!
//! Two strategies move the commit point into the prewrite, chosen up front, each falling back
//! to the steps above when TiKV declines:
//!
//! - **Async commit** (at most `async_commit_keys_limit` keys of at most
//!   `async_commit_total_key_size_limit` bytes): every lock is marked async-commit and the
//!   primary's lists the secondaries, so that anyone can tell from the locks alone whether the
//!   transaction committed. It is committed once every prewrite succeeded, at the largest
//!   `min_commit_ts` TiKV returned; all keys are then committed in the background. A prewrite
//!   answered with `min_commit_ts = 0` (TiKV could not keep the `max_commit_ts` bound) falls
//!   back to 2PC.
//! - **1PC** (the writes fit one request): TiKV commits at prewrite and returns
//!   `one_pc_commit_ts`; a reply without it falls back to 2PC (async commit off too, as
//!   client-go does).
//!
//! Both need a commit timestamp above every snapshot already taken (linearizability): the
//! first prewrite's `min_commit_ts` is a fresh TSO timestamp + 1, unless the transaction opted
//! for causal consistency. Both bound the commit timestamp with `max_commit_ts` = the
//! transaction's current time + `async_commit_safe_window`. And as the prewrite is the commit
//! point, a prewrite whose delivery is unknown makes the outcome [`Error::Undetermined`]
//! instead of a rollback.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::backoff::{BackoffKind, Backoffer, budget};
use crate::config::Config;
use crate::error::Error;
use crate::key::Key;
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Cx, Detached, Effect, EffectId, Machine, Map, Outcome, Step};
use crate::options::{Assertion, AssertionLevel, PrewriteLockPolicy};
use crate::plan::{BatchLimits, BatchPlan, KeyBatchPlan, MultiKey, SingleKey};
use crate::ready;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::time::Instant;
use crate::timestamp::Timestamp;
use crate::txn::buffer::{Mutation, WriteBuffer};
use crate::txn::heartbeat::{Heartbeat, HeartbeatStop};
use crate::txn::lock::{KeyErrorKind, Lock, key_error};
use crate::txn::resolve::{Blocked, ResolveLocks};

/// Bytes per prewrite/commit request (client-go's `TxnCommitBatchSize`, 16 KiB).
pub const COMMIT_BATCH_SIZE: usize = 16 * 1024;

/// Lock TTL for a transaction of `size` bytes (client-go's `txnLockTTL`): 3 s for small
/// transactions, growing with the square root of the size, at most 20 s.
pub fn lock_ttl_ms(size: usize) -> u64 {
    const DEFAULT_TTL: u64 = 3000;
    const MAX_TTL: u64 = 20_000;
    if size < COMMIT_BATCH_SIZE {
        return DEFAULT_TTL;
    }
    let mib = size as f64 / (1024.0 * 1024.0);
    ((6000.0 * mib.sqrt()) as u64).clamp(DEFAULT_TTL, MAX_TTL)
}

/// A key and its intended change.
type Item = (Key, Mutation);

/// Locks met by a prewrite, and the items to prewrite again once they are resolved.
type LockedItems = (Vec<Lock>, Vec<Item>);

/// Batch plan: `KvPrewrite`.
#[derive(Debug)]
pub struct PrewritePlan {
    primary: Key,
    start_ts: Timestamp,
    lock_ttl: u64,
    txn_size: u64,
    /// Ask for 1PC — honoured only by a request that carries every mutation, so a
    /// transaction split over regions can never be committed piecewise.
    try_one_pc: bool,
    min_commit_ts: Timestamp,
    /// Zero: no bound (plain 2PC).
    max_commit_ts: Timestamp,
    /// Async commit: every lock is marked, and the batch holding the primary lists these.
    secondaries: Option<Arc<[Bytes]>>,
    /// A pessimistic transaction's locks.
    pessimistic: Option<Arc<PessimisticPrewrite>>,
    /// `kvrpcpb::AssertionLevel` of the prewrites, and the keys' assertions (stored keys).
    assertion_level: i32,
    assertions: Option<Arc<BTreeMap<Key, Assertion>>>,
}

impl BatchPlan for PrewritePlan {
    type Item = (Key, Mutation);
    fn key(item: &Self::Item) -> &Key {
        &item.0
    }
    fn size(item: &Self::Item) -> usize {
        item.0.len() + item.1.value().map_or(0, |v| v.len())
    }
    fn build(&self, items: &[Self::Item]) -> TikvRequest {
        TikvRequest::KvPrewrite(kvrpcpb::PrewriteRequest {
            mutations: items
                .iter()
                .map(|(k, m)| {
                    let mut proto = m.to_proto(k);
                    if let Some(a) = self.assertions.as_ref().and_then(|a| a.get(k)) {
                        proto.assertion = match a {
                            Assertion::Exists => kvrpcpb::Assertion::Exist,
                            Assertion::NotExists => kvrpcpb::Assertion::NotExist,
                        } as i32;
                    }
                    proto
                })
                .collect(),
            assertion_level: self.assertion_level,
            primary_lock: self.primary.to_bytes(),
            start_version: self.start_ts.as_u64(),
            lock_ttl: self.lock_ttl,
            txn_size: self.txn_size,
            // Never below start_ts + 1 (client-go does the same): with a min_commit_ts set,
            // TiKV can push it above a reader's timestamp, so that readers pass the lock
            // (`MinCommitTsPushed`) instead of waiting for this transaction.
            min_commit_ts: self.min_commit_ts.as_u64(),
            max_commit_ts: self.max_commit_ts.as_u64(),
            try_one_pc: self.try_one_pc && items.len() as u64 == self.txn_size,
            use_async_commit: self.secondaries.is_some(),
            for_update_ts: self
                .pessimistic
                .as_ref()
                .map_or(0, |p| p.for_update_ts.as_u64()),
            for_update_ts_constraints: match &self.pessimistic {
                Some(p) if !p.checks.is_empty() => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (k, _))| {
                        let ts = p.checks.get(k)?;
                        Some(kvrpcpb::prewrite_request::ForUpdateTsConstraint {
                            index: u32::try_from(i).ok()?,
                            expected_for_update_ts: ts.as_u64(),
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            },
            pessimistic_actions: match &self.pessimistic {
                Some(p) => items
                    .iter()
                    .map(|(k, _)| {
                        use kvrpcpb::prewrite_request::PessimisticAction;
                        if p.locked.contains(k) {
                            PessimisticAction::DoPessimisticCheck as i32
                        } else {
                            // Written without a lock: checked for newer writes at prewrite,
                            // as an optimistic write is (TiKV skips that check otherwise,
                            // which would let a concurrent update be lost).
                            PessimisticAction::DoConstraintCheck as i32
                        }
                    })
                    .collect(),
                None => Vec::new(),
            },
            secondaries: match &self.secondaries {
                Some(list) if items.iter().any(|(k, _)| *k == self.primary) => list.to_vec(),
                _ => Vec::new(),
            },
            ..Default::default()
        })
    }
}

/// What prewrite checks of a pessimistic transaction's locks (stored keys).
#[derive(Debug)]
struct PessimisticPrewrite {
    for_update_ts: Timestamp,
    /// Keys it locked: each checked for its lock; the others for newer writes.
    locked: BTreeSet<Key>,
    /// Keys whose lock must have exactly this `for_update_ts` (fair locking's): a lock lost
    /// and taken again by a replayed force-lock request is not the one the statement read
    /// under.
    checks: BTreeMap<Key, Timestamp>,
}

/// Batch plan: `KvCommit` of secondaries, or `KvBatchRollback`.
#[derive(Debug)]
pub struct KeysPlan {
    start_ts: Timestamp,
    /// `Some(commit_ts)` commits; `None` rolls back.
    commit_ts: Option<Timestamp>,
}

impl KeyBatchPlan for KeysPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        let keys = items.iter().map(Key::to_bytes).collect();
        match self.commit_ts {
            Some(ts) => TikvRequest::KvCommit(kvrpcpb::CommitRequest {
                start_version: self.start_ts.as_u64(),
                commit_version: ts.as_u64(),
                keys,
                ..Default::default()
            }),
            None => TikvRequest::KvBatchRollback(kvrpcpb::BatchRollbackRequest {
                start_version: self.start_ts.as_u64(),
                keys,
                ..Default::default()
            }),
        }
    }
}

/// What to do after a backoff sleep.
#[derive(Debug)]
enum AfterSleep {
    /// Prewrite these items (again: their locks were alive, or TSO failed before the first
    /// prewrite).
    Prewrite(Vec<Item>),
    /// Ask TSO again (it failed, or lagged behind the commit-wait target).
    CommitTs,
    /// Ask TSO again for the latest timestamp (it lagged behind the commit-wait target).
    LatestTs(Vec<Item>),
}

/// The commit timestamp must exceed `target` (client-go's `SetCommitWaitUntilTSO`).
#[derive(Clone, Copy, Debug)]
struct CommitWait {
    target: Timestamp,
    /// Longest wait for PD's clock to pass the target (0: fail at once).
    timeout: Duration,
    /// When TSO first lagged, and the next backoff.
    lagging_since: Option<Instant>,
    next_sleep: Duration,
}

/// What to do with a timestamp TSO gave under a [`CommitWait`].
enum LagCheck {
    Ok,
    Wait(Duration),
    Fail(Error),
}

impl CommitWait {
    /// client-go's `GetTimestampForCommit`: above the target is fine; below, wait (backing
    /// off 2 ms doubling to 500 ms) unless the clock drift alone exceeds the timeout, or the
    /// wait has run out.
    fn check(&mut self, ts: Timestamp, now: Instant) -> LagCheck {
        if ts > self.target {
            return LagCheck::Ok;
        }
        let lag = |why: String| {
            LagCheck::Fail(Error::CommitTsLag {
                ts: ts.as_u64(),
                target: self.target.as_u64(),
                message: why,
            })
        };
        if self.timeout.is_zero() {
            return lag("no wait allowed (timeout 0)".into());
        }
        let drift =
            Duration::from_millis(self.target.physical_ms().saturating_sub(ts.physical_ms()));
        let since = *self.lagging_since.get_or_insert(now);
        if drift > self.timeout {
            return lag(format!(
                "clock drift {drift:?} exceeds the allowed {:?}",
                self.timeout
            ));
        }
        let waited = now.saturating_duration_since(since);
        if waited >= self.timeout {
            return lag(format!("still behind after waiting {waited:?}"));
        }
        let sleep = self.next_sleep.max(Duration::from_millis(2));
        self.next_sleep = (sleep * 2).min(Duration::from_millis(500));
        LagCheck::Wait(sleep.min(self.timeout - waited))
    }
}

// Sub-machines are boxed to keep the state small.
#[derive(Debug)]
enum State {
    StartPrewrite(Vec<Item>),
    /// Async commit or 1PC: a fresh timestamp bounds `min_commit_ts` from below first.
    NeedLatestTs(Vec<Item>),
    GettingLatestTs(EffectId, Vec<Item>),
    LatestTsFailed(Box<Error>, Vec<Item>),
    /// The prewrite in flight, and whether it asked for 1PC.
    Prewriting(Box<MultiKey<PrewritePlan>>, bool),
    Resolving(Box<ResolveLocks>, Vec<Item>),
    WaitBeforeRetry(Blocked, Vec<Item>),
    Sleeping(EffectId, AfterSleep),
    /// TSO is behind the commit-wait target: sleep this long, then ask again.
    LagWait(Duration, AfterSleep),
    /// Failed before anything was written: report it.
    Failed(Box<Error>),
    NeedCommitTs,
    GettingCommitTs(EffectId),
    /// TSO failed after a successful prewrite: back off within the commit budget (the locks
    /// are in place and still valid), then ask again.
    CommitTsFailed(Box<Error>),
    CommittingPrimary(Box<SingleKey>),
    /// The primary is committed: hand the secondaries to a background task, then report.
    SpawnSecondaries,
    /// Committed at `commit_ts`: report it.
    Committed,
    RollingBack(Box<MultiKey<KeysPlan>>, Box<Error>),
    Done,
}

/// Commits one transaction's writes.
#[derive(Debug)]
pub struct Committer {
    codec: KeyspaceCodec,
    start_ts: Timestamp,
    primary: Key,
    keys: Vec<Key>,
    lock_ttl: u64,
    txn_size: u64,
    commit_ts: Timestamp,
    /// Prewriting, resolving the locks it meets and waiting for them share one budget.
    prewrite_backoff: Backoffer,
    /// Getting the commit timestamp and committing the primary.
    commit_backoff: Backoffer,
    /// Rolling back after a failure.
    cleanup_backoff: Backoffer,
    /// For the background secondary commit.
    secondary_budget: Duration,
    limits: BatchLimits,
    write_options: RpcOptions,
    /// Whether the first prewrite asks for 1PC.
    try_one_pc: bool,
    /// Whether the writes fit one prewrite request (1PC needs that).
    fits_one_request: bool,
    /// Whether async commit is used (set up front; cleared by a fallback to 2PC).
    async_commit: bool,
    /// Whether the transaction is small enough for async commit.
    async_eligible: bool,
    /// Skip the fresh timestamp async commit and 1PC otherwise take first.
    causal_consistency: bool,
    /// `min_commit_ts` and `max_commit_ts` of the prewrites are settled.
    bounds_set: bool,
    min_commit_ts: Timestamp,
    max_commit_ts: Timestamp,
    /// When the transaction began (its time counts towards `max_commit_ts`); the commit's
    /// first poll if not given.
    started_at: Option<Instant>,
    safe_window: Duration,
    /// Whether the prewrite in flight is the commit point (async commit or 1PC asked).
    prewrite_decides: bool,
    /// A pessimistic transaction's `for_update_ts` and locks (stored form).
    pessimistic: Option<Arc<PessimisticPrewrite>>,
    /// A large transaction: heartbeat its primary once it is prewritten (`None`: small, or
    /// already beating).
    wants_heartbeat: bool,
    assertion_level: i32,
    assertions: Option<Arc<BTreeMap<Key, Assertion>>>,
    /// What a prewrite does on meeting another transaction's lock.
    lock_policy: PrewriteLockPolicy,
    /// The commit timestamp's lower bound, if any.
    commit_wait: Option<CommitWait>,
    /// Ends the heartbeats this commit started.
    heartbeat: Option<HeartbeatStop>,
    /// The heartbeat task to spawn on the next poll.
    spawn_heartbeat: Option<Detached>,
    state: State,
}

impl Committer {
    /// Commits `buffer` (user keys, stored in `config`'s keyspace) for the transaction
    /// started at `start_ts`. The first key (in key order) is the primary. An empty buffer
    /// commits trivially.
    pub fn new(config: &Config, start_ts: Timestamp, buffer: &WriteBuffer) -> Self {
        let codec = config.keyspace_codec();
        // The keyspace prefix keeps key order: the primary is the first key either way.
        let mutations: Vec<(Key, Mutation)> = buffer
            .iter()
            .map(|(k, m)| (codec.encode(k.clone()), m.clone()))
            .collect();
        let primary = mutations
            .first()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let keys: Vec<Key> = mutations.iter().map(|(k, _)| k.clone()).collect();
        let fits_one_request = buffer.size() <= COMMIT_BATCH_SIZE;
        let key_bytes: usize = keys.iter().map(Key::len).sum();
        let async_eligible = keys.len() <= config.async_commit_keys_limit
            && key_bytes <= config.async_commit_total_key_size_limit;
        Committer {
            codec,
            start_ts,
            primary,
            keys,
            lock_ttl: lock_ttl_ms(buffer.size()),
            txn_size: buffer.len() as u64,
            commit_ts: Timestamp::ZERO,
            prewrite_backoff: Backoffer::new("prewrite", config.budget(budget::PREWRITE)),
            commit_backoff: Backoffer::new("commit", config.budget(budget::COMMIT)),
            cleanup_backoff: Backoffer::new("rollback", config.budget(budget::CLEANUP)),
            secondary_budget: config.budget(budget::COMMIT_SECONDARY),
            limits: BatchLimits {
                max_items: usize::MAX,
                max_bytes: COMMIT_BATCH_SIZE,
            },
            write_options: RpcOptions {
                idempotent: true,
                max_execution: Some(config.max_write_execution),
                timeout: None,
            },
            try_one_pc: config.try_one_pc && fits_one_request,
            fits_one_request,
            async_commit: config.async_commit && async_eligible,
            async_eligible,
            causal_consistency: false,
            bounds_set: false,
            min_commit_ts: start_ts.next(),
            max_commit_ts: Timestamp::ZERO,
            started_at: None,
            safe_window: config.async_commit_safe_window,
            prewrite_decides: false,
            pessimistic: None,
            wants_heartbeat: buffer.size() > config.ttl_refreshed_txn_size,
            assertion_level: 0,
            lock_policy: PrewriteLockPolicy::TryResolve,
            commit_wait: None,
            assertions: None,
            heartbeat: None,
            spawn_heartbeat: None,
            state: State::StartPrewrite(mutations),
        }
    }

    /// Commits a pessimistic transaction: `primary` (user key) is the primary it locked
    /// first, `locked` (user keys) every key it locked, at `for_update_ts` at the latest.
    /// Locked keys it did not write are prewritten as `Lock` mutations (their locks are then
    /// released by the commit); every locked key is checked for its pessimistic lock.
    pub fn with_pessimistic(
        mut self,
        primary: Key,
        for_update_ts: Timestamp,
        locked: impl IntoIterator<Item = Key>,
    ) -> Self {
        let State::StartPrewrite(items) = &mut self.state else {
            return self; // only before the commit starts
        };
        let locked: BTreeSet<Key> = locked.into_iter().map(|k| self.codec.encode(k)).collect();
        let written: BTreeSet<Key> = items.iter().map(|(k, _)| k.clone()).collect();
        for key in locked.difference(&written) {
            items.push((key.clone(), Mutation::Lock));
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        self.keys = items.iter().map(|(k, _)| k.clone()).collect();
        self.txn_size = self.keys.len() as u64;
        self.primary = self.codec.encode(primary);
        self.pessimistic = Some(Arc::new(PessimisticPrewrite {
            for_update_ts,
            locked,
            checks: BTreeMap::new(),
        }));
        // The transaction's own heartbeats (started with its first lock) keep the primary
        // alive through the commit.
        self.wants_heartbeat = false;
        self
    }

    /// The commit timestamp must exceed `target` (client-go's `SetCommitWaitUntilTSO`, for
    /// active-active replication): when PD's TSO is behind it, the commit waits up to
    /// `timeout` for it to pass (client-go's default 1 s), then fails with
    /// [`Error::CommitTsLag`]; a drift larger than `timeout` fails at once. Async commit and
    /// 1PC then always take a fresh timestamp first, as for linearizability.
    pub fn with_commit_wait_until(mut self, target: Timestamp, timeout: Duration) -> Self {
        if !target.is_zero() {
            self.commit_wait = Some(CommitWait {
                target,
                timeout,
                lagging_since: None,
                next_sleep: Duration::from_millis(2),
            });
        }
        self
    }

    /// What prewrite does on meeting another transaction's lock (client-go's
    /// `SetPrewriteEncounterLockPolicy`).
    pub fn with_prewrite_lock_policy(mut self, policy: PrewriteLockPolicy) -> Self {
        self.lock_policy = policy;
        self
    }

    /// Keys (user keys, among the locked ones) the transaction holds in shared mode: they
    /// are prewritten as `Op::SharedLock`, and the commit uses neither async commit nor 1PC
    /// (TiKV refuses both for shared locks). After [`with_pessimistic`](Self::with_pessimistic).
    pub fn with_shared_locks(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        let State::StartPrewrite(items) = &mut self.state else {
            return self; // only before the commit starts
        };
        let shared: BTreeSet<Key> = keys.into_iter().map(|k| self.codec.encode(k)).collect();
        if shared.is_empty() {
            return self;
        }
        for (key, mutation) in items.iter_mut() {
            if shared.contains(key) && *mutation == Mutation::Lock {
                *mutation = Mutation::SharedLock;
            }
        }
        self.async_commit = false;
        self.async_eligible = false;
        self.try_one_pc = false;
        self.fits_one_request = false;
        self
    }

    /// Makes prewrite check that each key's pessimistic lock has exactly this
    /// `for_update_ts` (user keys; fair locking's locks, taken at the `for_update_ts` TiKV
    /// reported): a lock lost and taken again meanwhile fails the commit. After
    /// [`with_pessimistic`](Self::with_pessimistic).
    pub fn with_lock_checks(mut self, checks: impl IntoIterator<Item = (Key, Timestamp)>) -> Self {
        if let Some(p) = self.pessimistic.as_mut().and_then(Arc::get_mut) {
            let codec = self.codec;
            p.checks
                .extend(checks.into_iter().map(|(k, ts)| (codec.encode(k), ts)));
        }
        self
    }

    /// Checks `assertions` (user keys: what each write expects of its key) at prewrite, as
    /// strictly as `level` says; a failed one fails the commit with
    /// [`Error::AssertionFailed`].
    pub fn with_assertions(
        mut self,
        level: AssertionLevel,
        assertions: impl IntoIterator<Item = (Key, Assertion)>,
    ) -> Self {
        self.assertion_level = match level {
            AssertionLevel::Off => kvrpcpb::AssertionLevel::Off,
            AssertionLevel::Fast => kvrpcpb::AssertionLevel::Fast,
            AssertionLevel::Strict => kvrpcpb::AssertionLevel::Strict,
        } as i32;
        let map: BTreeMap<Key, Assertion> = assertions
            .into_iter()
            .map(|(k, a)| (self.codec.encode(k), a))
            .collect();
        self.assertions = (!map.is_empty()).then(|| Arc::new(map));
        self
    }

    /// Whether to use async commit (when the transaction is small enough: see
    /// [`Config::async_commit_keys_limit`]), overriding the client's `Config::async_commit`.
    pub fn with_async_commit(mut self, async_commit: bool) -> Self {
        self.async_commit = async_commit && self.async_eligible;
        self
    }

    /// Under async commit or 1PC, skip the fresh timestamp that makes the commit timestamp
    /// exceed every snapshot already taken: a transaction that started after this one
    /// committed may then not see it (causal consistency), for one TSO round trip less.
    pub fn with_causal_consistency(mut self, causal: bool) -> Self {
        self.causal_consistency = causal;
        self
    }

    /// When the transaction began: its age counts towards the `max_commit_ts` bound of
    /// async commit and 1PC.
    pub fn with_started_at(mut self, started_at: Instant) -> Self {
        self.started_at = Some(started_at);
        self
    }

    /// Whether the commit point is in the prewrite (async commit, or 1PC still asked).
    fn commit_at_prewrite(&self) -> bool {
        self.async_commit || self.try_one_pc
    }

    /// Settles the prewrites' `min_commit_ts` (above `latest`, a fresh TSO timestamp, when
    /// given) and, for async commit and 1PC, `max_commit_ts`: the transaction's current time
    /// (its start plus its age, or `latest` if that is later) plus the safe window.
    /// Checks a timestamp against the commit-wait target, if any.
    fn lag_check(&mut self, ts: Timestamp, now: Instant) -> LagCheck {
        match self.commit_wait.as_mut() {
            Some(w) => w.check(ts, now),
            None => LagCheck::Ok,
        }
    }

    fn set_bounds(&mut self, latest: Option<Timestamp>, now: Instant) {
        self.bounds_set = true;
        if let Some(latest) = latest {
            self.min_commit_ts = self.min_commit_ts.max(latest.next());
        }
        if !self.commit_at_prewrite() {
            return;
        }
        let age = now.saturating_duration_since(*self.started_at.get_or_insert(now));
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let current = self.start_ts.add_ms(age_ms).max(latest.unwrap_or_default());
        let window_ms = u64::try_from(self.safe_window.as_millis()).unwrap_or(u64::MAX);
        self.max_commit_ts = current.add_ms(window_ms);
    }

    /// The prewrite plan for the current strategy.
    fn prewrite_plan(&mut self) -> PrewritePlan {
        let secondaries = self.async_commit.then(|| {
            self.keys
                .iter()
                .filter(|k| **k != self.primary)
                .map(Key::to_bytes)
                .collect::<Arc<[Bytes]>>()
        });
        let try_one_pc = std::mem::take(&mut self.try_one_pc);
        self.prewrite_decides = self.async_commit || try_one_pc;
        PrewritePlan {
            primary: self.primary.clone(),
            start_ts: self.start_ts,
            lock_ttl: self.lock_ttl,
            txn_size: self.txn_size,
            // Only the first attempt: a retry after resolving locks carries part of the
            // keys, and those already prewritten hold locks anyway.
            try_one_pc,
            min_commit_ts: self.min_commit_ts,
            max_commit_ts: if self.prewrite_decides {
                self.max_commit_ts
            } else {
                Timestamp::ZERO
            },
            secondaries,
            pessimistic: self.pessimistic.clone(),
            assertion_level: self.assertion_level,
            assertions: self.assertions.clone(),
        }
    }

    /// Reads what the successful prewrites say about the commit strategy: under async commit,
    /// the commit timestamp (the largest `min_commit_ts`), or a fallback to 2PC; after a 1PC
    /// request that TiKV did not commit, a fallback to 2PC.
    fn note_prewritten(&mut self, replies: &[(Vec<Item>, TikvResponse)], one_pc_asked: bool) {
        if one_pc_asked {
            // TiKV declined 1PC (it would have committed otherwise): plain 2PC from here.
            self.async_commit = false;
        }
        if !self.async_commit {
            return;
        }
        for (_, reply) in replies {
            let TikvResponse::KvPrewrite(r) = reply else {
                continue;
            };
            if !r.errors.is_empty() {
                continue;
            }
            if r.min_commit_ts == 0 {
                // TiKV could not honour the bounds: the locks are ordinary 2PC locks.
                self.async_commit = false;
                return;
            }
            self.commit_ts = self.commit_ts.max(Timestamp::from_u64(r.min_commit_ts));
        }
    }

    /// Whether to ask for 1PC (when the writes fit one prewrite request), overriding the
    /// client's `Config::try_one_pc`.
    pub fn with_one_pc(mut self, try_one_pc: bool) -> Self {
        self.try_one_pc = try_one_pc && self.fits_one_request;
        self
    }

    /// The primary key as stored (empty for an empty transaction).
    pub fn primary(&self) -> &Key {
        &self.primary
    }

    fn rollback(&mut self, error: Error) {
        let plan = KeysPlan {
            start_ts: self.start_ts,
            commit_ts: None,
        };
        // Keys only: client-go sizes these batches by key bytes too.
        let m = MultiKey::new(plan, self.keys.clone(), self.limits, self.write_options);
        self.state = State::RollingBack(Box::new(m), Box::new(error));
    }

    /// Ends the commit; the keys an error names are given in user form.
    fn finish(&mut self, result: Result<Timestamp, Error>) -> Step<Result<Timestamp, Error>> {
        self.state = State::Done;
        // Committed or not, there is nothing left to keep alive.
        if let Some(stop) = self.heartbeat.take() {
            stop.stop();
        }
        Step::Done(self.codec.decode_result(result))
    }

    /// Once a large transaction's primary is prewritten, prepares the heartbeats that keep
    /// it alive until the commit ends (client-go starts its TTL manager there too).
    fn start_heartbeat(&mut self, replies: &[(Vec<Item>, TikvResponse)], cx: &Cx<'_>) {
        if !self.wants_heartbeat {
            return;
        }
        let primary_done = replies.iter().any(|(items, reply)| {
            matches!(reply, TikvResponse::KvPrewrite(r) if r.errors.is_empty())
                && items.iter().any(|(k, _)| *k == self.primary)
        });
        if !primary_done {
            return;
        }
        self.wants_heartbeat = false;
        let stop = HeartbeatStop::default();
        let started = self.started_at.unwrap_or(cx.now);
        let beat = Heartbeat::new(self.primary.clone(), self.start_ts, started, stop.clone());
        let backoff = Backoffer::new("heartbeat", cx.config.budget(budget::HEARTBEAT));
        self.spawn_heartbeat = Some(Detached::new("heartbeat", backoff, beat));
        self.heartbeat = Some(stop);
    }

    /// Reads the prewrite replies: locks to resolve (and the items to prewrite again), or the
    /// error that aborts the transaction.
    fn prewrite_results(
        &self,
        replies: Vec<(Vec<Item>, TikvResponse)>,
    ) -> Result<LockedItems, Error> {
        let mut locks = Vec::new();
        let mut retry = Vec::new();
        for (items, reply) in replies {
            let first = items.first().map(|(k, _)| k.clone()).unwrap_or_default();
            let TikvResponse::KvPrewrite(r) = reply else {
                return Err(Error::KeyError {
                    key: first,
                    message: format!("prewrite answered with {}", reply.method_name()),
                });
            };
            let mut batch_locked = false;
            for e in &r.errors {
                let found = match key_error(e, self.start_ts).on_key(&first) {
                    KeyErrorKind::Locked(lock) => vec![lock],
                    KeyErrorKind::SharedLocked(holders) => holders,
                    KeyErrorKind::Fail(e) => return Err(e),
                    other => {
                        return Err(Error::KeyError {
                            key: first,
                            message: format!("prewrite: {other:?}"),
                        });
                    }
                };
                for lock in found {
                    // client-go's shortcut: an optimistic transaction cannot commit over a
                    // younger transaction's lock unless that one rolls back — fail now
                    // rather than wait for it. With `NoResolve`, never wait.
                    let younger = lock.start_ts > self.start_ts && self.pessimistic.is_none();
                    if younger || self.lock_policy == PrewriteLockPolicy::NoResolve {
                        return Err(Error::WriteConflict {
                            key: lock.key,
                            primary: self.primary.clone(),
                            start_ts: self.start_ts.as_u64(),
                            conflict_ts: lock.start_ts.as_u64(),
                            conflict_commit_ts: 0,
                            reason: "Optimistic".to_string(),
                        });
                    }
                    locks.push(lock);
                    batch_locked = true;
                }
            }
            if batch_locked {
                // Prewrite is idempotent: the batch's locked keys are written again whole.
                retry.extend(items);
            }
        }
        Ok((locks, retry))
    }

    fn after_prewrite(
        &mut self,
        result: Result<Vec<(Vec<Item>, TikvResponse)>, Error>,
        one_pc_asked: bool,
    ) -> Option<Error> {
        let replies = match result {
            Ok(replies) => replies,
            // The prewrite was the commit point and may have happened: rolling back could
            // undo a commit that readers already see. Report it instead.
            Err(e @ Error::Undetermined { .. }) if self.prewrite_decides => return Some(e),
            Err(e) => {
                self.rollback(e);
                return None;
            }
        };
        if let Some(commit_ts) = one_pc_commit_ts(&replies) {
            // Committed at prewrite: no locks to commit.
            self.commit_ts = commit_ts;
            self.state = State::Committed;
            return None;
        }
        self.note_prewritten(&replies, one_pc_asked);
        match self.prewrite_results(replies) {
            Ok((locks, _))
                if locks.is_empty() && self.async_commit && !self.commit_ts.is_zero() =>
            {
                // Every key is prewritten: committed, at the largest min_commit_ts.
                self.state = State::SpawnSecondaries;
            }
            Ok((locks, _)) if locks.is_empty() => self.state = State::NeedCommitTs,
            Ok((locks, retry)) => {
                let resolver = ResolveLocks::for_write(locks, self.start_ts);
                self.state = State::Resolving(Box::new(resolver), retry);
            }
            Err(e) => self.rollback(e),
        }
        None
    }

    /// The primary commit's reply decides the transaction.
    fn after_primary(&mut self, result: Result<TikvResponse, Error>) -> Option<Error> {
        let reply = match result {
            Ok(TikvResponse::KvCommit(r)) => r,
            Ok(other) => {
                self.rollback(Error::KeyError {
                    key: self.primary.clone(),
                    message: format!("commit answered with {}", other.method_name()),
                });
                return None;
            }
            // A lost reply leaves the outcome unknown: report it, never guess.
            Err(e @ Error::Undetermined { .. }) => return Some(e),
            Err(e) => {
                self.rollback(e);
                return None;
            }
        };
        match reply
            .error
            .as_ref()
            .map(|e| key_error(e, self.start_ts).on_key(&self.primary))
        {
            None => self.state = State::SpawnSecondaries,
            // The commit timestamp is too old for a lock that was pushed: take a newer one and
            // commit again.
            Some(KeyErrorKind::CommitTsExpired { .. }) => self.state = State::NeedCommitTs,
            Some(KeyErrorKind::Fail(e @ Error::TxnAborted { .. })) => return Some(e),
            Some(KeyErrorKind::Fail(e)) => self.rollback(e),
            Some(other) => self.rollback(Error::KeyError {
                key: self.primary.clone(),
                message: format!("commit: {other:?}"),
            }),
        }
        None
    }

    /// The background task committing the secondaries (and, under async commit, the primary
    /// too: nothing committed it yet), if there are any.
    fn secondaries(&self) -> Option<Detached> {
        let secondaries: Vec<Key> = self
            .keys
            .iter()
            .filter(|k| self.async_commit || **k != self.primary)
            .cloned()
            .collect();
        if secondaries.is_empty() {
            return None;
        }
        let plan = KeysPlan {
            start_ts: self.start_ts,
            commit_ts: Some(self.commit_ts),
        };
        let m = MultiKey::new(plan, secondaries, self.limits, self.write_options);
        // Committed (at the primary, or by async commit); locks left behind resolve to
        // committed.
        let task = Map::new(m, |_| ());
        let backoff = Backoffer::new("commit secondaries", self.secondary_budget);
        Some(Detached::new("commit secondaries", backoff, task))
    }

    fn primary_commit(&self) -> SingleKey {
        let request = TikvRequest::KvCommit(kvrpcpb::CommitRequest {
            start_version: self.start_ts.as_u64(),
            commit_version: self.commit_ts.as_u64(),
            keys: vec![self.primary.to_bytes()],
            primary_key: self.primary.to_bytes(),
            ..Default::default()
        });
        // Not idempotent for the caller: a lost reply is Undetermined.
        let options = RpcOptions {
            idempotent: false,
            max_execution: self.write_options.max_execution,
            timeout: None,
        };
        SingleKey::new(self.primary.clone(), request, options)
    }
}

impl Machine for Committer {
    type Output = Result<Timestamp, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                State::Done
                | State::Sleeping(..)
                | State::GettingCommitTs(_)
                | State::GettingLatestTs(..) => return Step::Wait,
                State::StartPrewrite(items) => {
                    let items = std::mem::take(items);
                    if items.is_empty() && self.keys.is_empty() {
                        // Nothing written: nothing to commit; the start timestamp stands.
                        return self.finish(Ok(self.start_ts));
                    }
                    if !self.bounds_set {
                        if self.commit_at_prewrite()
                            && (!self.causal_consistency || self.commit_wait.is_some())
                        {
                            self.state = State::NeedLatestTs(items);
                            continue;
                        }
                        self.set_bounds(None, cx.now);
                    }
                    let plan = self.prewrite_plan();
                    let one_pc_asked = plan.try_one_pc;
                    // At the commit point a lost reply must not be resent blindly: it is
                    // reported as undetermined.
                    let options = RpcOptions {
                        idempotent: !self.prewrite_decides,
                        ..self.write_options
                    };
                    let m = MultiKey::new(plan, items, self.limits, options);
                    self.state = State::Prewriting(Box::new(m), one_pc_asked);
                }
                State::NeedLatestTs(items) => {
                    let items = std::mem::take(items);
                    let id = cx.next_id();
                    self.state = State::GettingLatestTs(id, items);
                    return Step::Effect(Effect::Tso { id, count: 1 });
                }
                State::LatestTsFailed(error, items) => {
                    // Nothing is written yet: out of budget, the commit just fails.
                    let items = std::mem::take(items);
                    let mut cx = cx.with_backoff(&mut self.prewrite_backoff);
                    match cx.backoff_sleep(BackoffKind::PdRpc, None, error) {
                        Ok(sleep) => {
                            self.state = State::Sleeping(sleep.id(), AfterSleep::Prewrite(items));
                            return Step::Effect(sleep);
                        }
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                State::Prewriting(m, one_pc_asked) => {
                    let one_pc_asked = *one_pc_asked;
                    let result = ready!(m.poll(&mut cx.with_backoff(&mut self.prewrite_backoff)));
                    if let Ok(replies) = &result {
                        if one_pc_commit_ts(replies).is_none() {
                            self.start_heartbeat(replies, cx);
                        }
                    }
                    if let Some(e) = self.after_prewrite(result, one_pc_asked) {
                        return self.finish(Err(e));
                    }
                    if let Some(task) = self.spawn_heartbeat.take() {
                        // No outcome to wait for: the executor polls again at once.
                        let id = cx.next_id();
                        return Step::Effect(Effect::Spawn { id, task });
                    }
                }
                State::Resolving(m, retry) => {
                    let result = ready!(m.poll(&mut cx.with_backoff(&mut self.prewrite_backoff)));
                    let retry = std::mem::take(retry);
                    match result.map(|r| r.must_wait()) {
                        Ok(None) => self.state = State::StartPrewrite(retry),
                        Ok(Some(blocked)) => self.state = State::WaitBeforeRetry(blocked, retry),
                        Err(e) => self.rollback(e),
                    }
                }
                State::WaitBeforeRetry(blocked, retry) => {
                    let cap = Duration::from_millis(blocked.wait_ms.max(1));
                    let why = Error::KeyError {
                        key: retry.first().map(|(k, _)| k.clone()).unwrap_or_default(),
                        message: format!("{} key(s) locked by running transactions", blocked.alive),
                    };
                    let retry = std::mem::take(retry);
                    let mut cx = cx.with_backoff(&mut self.prewrite_backoff);
                    match cx.backoff_sleep(BackoffKind::TxnLock, Some(cap), &why) {
                        Ok(sleep) => {
                            self.state = State::Sleeping(sleep.id(), AfterSleep::Prewrite(retry));
                            return Step::Effect(sleep);
                        }
                        Err(e) => self.rollback(e),
                    }
                }
                State::Failed(e) => {
                    let e = std::mem::replace(&mut **e, Error::Cancelled(String::new()));
                    return self.finish(Err(e));
                }
                State::LagWait(duration, then) => {
                    let duration = *duration;
                    let then = std::mem::replace(then, AfterSleep::CommitTs);
                    let id = cx.next_id();
                    self.state = State::Sleeping(id, then);
                    return Step::Effect(Effect::Sleep { id, duration });
                }
                State::NeedCommitTs => {
                    let id = cx.next_id();
                    self.state = State::GettingCommitTs(id);
                    return Step::Effect(Effect::Tso { id, count: 1 });
                }
                State::CommitTsFailed(error) => {
                    let mut cx = cx.with_backoff(&mut self.commit_backoff);
                    match cx.backoff_sleep(BackoffKind::PdRpc, None, error) {
                        Ok(sleep) => {
                            self.state = State::Sleeping(sleep.id(), AfterSleep::CommitTs);
                            return Step::Effect(sleep);
                        }
                        Err(e) => self.rollback(e),
                    }
                }
                State::CommittingPrimary(m) => {
                    let result = ready!(m.poll(&mut cx.with_backoff(&mut self.commit_backoff)));
                    if let Some(e) = self.after_primary(result) {
                        return self.finish(Err(e));
                    }
                }
                State::SpawnSecondaries => {
                    self.state = State::Committed;
                    if let Some(task) = self.secondaries() {
                        // The commit is reported on the next poll; the executor polls again at
                        // once, as a spawn has no outcome to wait for.
                        let id = cx.next_id();
                        return Step::Effect(Effect::Spawn { id, task });
                    }
                }
                State::Committed => return self.finish(Ok(self.commit_ts)),
                State::RollingBack(m, _) => {
                    // Best effort: locks left behind expire and are rolled back by readers.
                    let _ = ready!(m.poll(&mut cx.with_backoff(&mut self.cleanup_backoff)));
                    let State::RollingBack(_, error) =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        return Step::Wait; // matched just above
                    };
                    return self.finish(Err(*error));
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::Prewriting(m, _) => m.handle(
                &mut cx.with_backoff(&mut self.prewrite_backoff),
                id,
                outcome,
            ),
            State::GettingLatestTs(want, items) if *want == id => {
                let items = std::mem::take(items);
                match outcome {
                    Outcome::Timestamps(Ok(latest)) => match self.lag_check(latest, cx.now) {
                        LagCheck::Ok => {
                            self.set_bounds(Some(latest), cx.now);
                            self.state = State::StartPrewrite(items);
                        }
                        LagCheck::Wait(d) => {
                            self.state = State::LagWait(d, AfterSleep::LatestTs(items))
                        }
                        // Nothing written yet: the commit just fails.
                        LagCheck::Fail(e) => self.state = State::Failed(Box::new(e)),
                    },
                    Outcome::Timestamps(Err(e)) => {
                        self.state = State::LatestTsFailed(Box::new(e), items)
                    }
                    _ => self.state = State::NeedLatestTs(items),
                }
            }
            State::Resolving(m, _) => m.handle(
                &mut cx.with_backoff(&mut self.prewrite_backoff),
                id,
                outcome,
            ),
            State::Sleeping(want, then) if *want == id => {
                self.state = match std::mem::replace(then, AfterSleep::CommitTs) {
                    AfterSleep::Prewrite(retry) => State::StartPrewrite(retry),
                    AfterSleep::CommitTs => State::NeedCommitTs,
                    AfterSleep::LatestTs(items) => State::NeedLatestTs(items),
                }
            }
            State::GettingCommitTs(want) if *want == id => match outcome {
                Outcome::Timestamps(Ok(ts)) => match self.lag_check(ts, cx.now) {
                    LagCheck::Ok => {
                        self.commit_ts = ts;
                        self.state = State::CommittingPrimary(Box::new(self.primary_commit()));
                    }
                    LagCheck::Wait(d) => self.state = State::LagWait(d, AfterSleep::CommitTs),
                    // The locks are in place: roll them back.
                    LagCheck::Fail(e) => self.rollback(e),
                },
                Outcome::Timestamps(Err(e)) => self.state = State::CommitTsFailed(Box::new(e)),
                _ => {}
            },
            State::CommittingPrimary(m) => {
                m.handle(&mut cx.with_backoff(&mut self.commit_backoff), id, outcome)
            }
            State::RollingBack(m, _) => {
                m.handle(&mut cx.with_backoff(&mut self.cleanup_backoff), id, outcome)
            }
            _ => {}
        }
    }
}

/// The 1PC commit timestamp when the prewrite committed the transaction: one request, no
/// errors, and a non-zero `one_pc_commit_ts`.
fn one_pc_commit_ts(replies: &[(Vec<Item>, TikvResponse)]) -> Option<Timestamp> {
    match replies {
        [(_, TikvResponse::KvPrewrite(r))] if r.errors.is_empty() && r.one_pc_commit_ts > 0 => {
            Some(Timestamp::from_u64(r.one_pc_commit_ts))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ttl_grows_with_size() {
        assert_eq!(lock_ttl_ms(10), 3000);
        assert_eq!(lock_ttl_ms(4 << 20), 12_000);
        assert_eq!(lock_ttl_ms(1 << 30), 20_000);
    }
}
