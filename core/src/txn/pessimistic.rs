//! Pessimistic locking: a transaction's `lock_keys` as a machine (client-go's
//! `actionPessimisticLock`, TiKV's `AcquirePessimisticLock`).
//!
//! The keys are locked per region, concurrently; on a transaction's first lock the primary
//! key goes alone first, so that its lock exists before any secondary points at it. A request
//! that meets another transaction's lock waits inside TiKV (up to `wait_timeout`, at most
//! TiKV's own limit) and then answers with that lock: the machine resolves it as a writer
//! would (a dead owner's lock is cleaned up) and asks again, until the caller's wait is over
//! ([`LockWait`]). TiKV applies each request whole or not at all, so a failed batch is sent
//! again whole.
//!
//! A failure — a write conflict, a deadlock (TiKV's detector picked this transaction), an
//! existing key, a wait timeout, no-wait, a lost reply — rolls back every key this call tried
//! to lock, except those the transaction held before (`KvPessimisticRollback` at its
//! `for_update_ts`), before it is reported: whether to retry the statement with a newer
//! `for_update_ts` is the caller's choice.

use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::Key;
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Cx, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::{BatchLimits, KeyBatchPlan, MultiKey};
use crate::ready;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::time::Instant;
use crate::timestamp::Timestamp;
use crate::txn::lock::{KeyErrorKind, Lock, key_error};
use crate::txn::resolve::ResolveLocks;

/// TTL of a pessimistic lock beyond the transaction's age (client-go's `ManagedLockTTL`,
/// 20 s): long enough for the transaction to heartbeat or finish.
pub const MANAGED_LOCK_TTL_MS: u64 = 20_000;

/// How long `lock_keys` waits for other transactions' locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once with [`Error::LockAcquireFailAndNoWaitSet`] (client-go's `LockNoWait`).
    NoWait,
    /// Give up with [`Error::LockWaitTimeout`] after this long.
    Timeout(Duration),
    /// Wait until the lock goes, however long (client-go's `LockAlwaysWait`).
    Forever,
}

/// Stops a lock wait from outside (client-go's `LockCtx.Killed`): set it, and a `lock_keys`
/// call that is waiting fails with [`Error::Interrupted`] at its next step. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Interrupt {
    /// Interrupts the calls watching this flag.
    pub fn interrupt(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`interrupt`](Self::interrupt) was called.
    pub fn is_interrupted(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl PartialEq for Interrupt {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Interrupt {}

/// What one `lock_keys` call cost (client-go's `LockCtx.Stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStats {
    /// Keys it locked.
    pub keys: usize,
    /// `KvPessimisticLock` requests it sent (one per region and round).
    pub requests: usize,
    /// Rounds sent again after meeting other transactions' locks.
    pub retries: usize,
    /// Time spent from the call's start to its end, waits included.
    pub total: Duration,
}

/// What a successful `lock_keys` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Locked {
    /// Each key's value or existence, when asked for (in key order).
    pub values: Vec<LockedValue>,
    /// What the call cost.
    pub stats: LockStats,
    /// Fair locking: the newest commit a key was locked over (see
    /// [`LockedValue::locked_with_conflict`]); `None` when no key met one.
    pub max_locked_with_conflict: Option<Timestamp>,
}

/// Options of one `lock_keys` call (client-go's `LockCtx`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// How long to wait for other transactions' locks (forever, as client-go's default).
    pub wait: LockWait,
    /// Return each key's value (as of `for_update_ts`) with its lock.
    pub return_values: bool,
    /// Return whether each key exists (cheaper than its value).
    pub check_existence: bool,
    /// Lock only the keys that exist (needs `return_values`, as TiKV requires).
    pub lock_only_if_exists: bool,
    /// Fail with [`Error::Interrupted`] once the call has run this long, waits included
    /// (client-go's `MaxExecutionDeadline`; none by default).
    pub max_execution: Option<Duration>,
    /// Fail with [`Error::Interrupted`] once this is set (client-go's kill signal).
    pub interrupt: Option<Interrupt>,
    /// Lock in shared mode (client-go's `LockCtx.InShareMode`, TiKV's shared locks): other
    /// transactions may hold the keys in shared mode too, none exclusively; an exclusive
    /// locker waits until every holder is done. The transaction cannot write the keys, and
    /// commits without async commit or 1PC. Needs the transaction's primary locked first
    /// (a shared key is never a primary); not in fair locking.
    pub shared: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: LockWait::Forever,
            return_values: false,
            check_existence: false,
            lock_only_if_exists: false,
            max_execution: None,
            interrupt: None,
            shared: false,
        }
    }
}

impl LockOptions {
    /// Sets [`wait`](Self::wait).
    pub fn with_wait(mut self, wait: LockWait) -> Self {
        self.wait = wait;
        self
    }

    /// Sets [`return_values`](Self::return_values).
    pub fn with_return_values(mut self, on: bool) -> Self {
        self.return_values = on;
        self
    }

    /// Sets [`check_existence`](Self::check_existence).
    pub fn with_check_existence(mut self, on: bool) -> Self {
        self.check_existence = on;
        self
    }

    /// Sets [`lock_only_if_exists`](Self::lock_only_if_exists).
    pub fn with_lock_only_if_exists(mut self, on: bool) -> Self {
        self.lock_only_if_exists = on;
        self
    }

    /// Sets [`max_execution`](Self::max_execution).
    pub fn with_max_execution(mut self, limit: Duration) -> Self {
        self.max_execution = Some(limit);
        self
    }

    /// Sets [`shared`](Self::shared).
    pub fn with_shared(mut self, on: bool) -> Self {
        self.shared = on;
        self
    }

    /// Sets [`interrupt`](Self::interrupt).
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = Some(interrupt);
        self
    }
}

/// What one key's lock returned (with `return_values` or `check_existence`, and always for
/// a key locked with conflict).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockedValue {
    /// The key (user form).
    pub key: Key,
    /// Whether it exists as of `for_update_ts` (or, locked with conflict, as of the newer
    /// commit).
    pub exists: bool,
    /// Its value, with `return_values` (`None` if absent or not asked for); locked with
    /// conflict, always the newest value.
    pub value: Option<Bytes>,
    /// Fair locking: the key was locked although a transaction committed it after this
    /// statement's `for_update_ts`, at this timestamp (TiKV's `LockedWithConflict`). The value
    /// is that newer one: the statement's earlier reads are stale, so it should be retried
    /// ([`retry_fair_locking`]), which keeps the lock.
    ///
    /// [`retry_fair_locking`]: crate::txn::PessimisticLocks::retry_fair_locking
    pub locked_with_conflict: Option<Timestamp>,
}

impl LockedValue {
    /// A key's value as a lock returned it.
    pub fn new(key: Key, exists: bool, value: Option<Bytes>) -> Self {
        LockedValue {
            key,
            exists,
            value,
            locked_with_conflict: None,
        }
    }
}

/// Batch plan: `KvPessimisticLock`.
#[derive(Clone, Debug)]
pub struct PessimisticLockPlan {
    primary: Key,
    start_ts: Timestamp,
    for_update_ts: Timestamp,
    lock_ttl: u64,
    is_first_lock: bool,
    wait_timeout: i64,
    return_values: bool,
    check_existence: bool,
    lock_only_if_exists: bool,
    /// Fair locking's force-lock wake-up mode (one key per request): TiKV locks the key even
    /// over a newer commit, and a waiter gets the lock as soon as it is released.
    force: bool,
    /// Shared locks (`Op::SharedPessimisticLock`).
    shared: bool,
}

impl KeyBatchPlan for PessimisticLockPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::KvPessimisticLock(kvrpcpb::PessimisticLockRequest {
            mutations: items
                .iter()
                .map(|k| kvrpcpb::Mutation {
                    op: if self.shared {
                        kvrpcpb::Op::SharedPessimisticLock
                    } else {
                        kvrpcpb::Op::PessimisticLock
                    } as i32,
                    key: k.to_bytes(),
                    ..Default::default()
                })
                .collect(),
            primary_lock: self.primary.to_bytes(),
            start_version: self.start_ts.as_u64(),
            lock_ttl: self.lock_ttl,
            for_update_ts: self.for_update_ts.as_u64(),
            is_first_lock: self.is_first_lock,
            wait_timeout: self.wait_timeout,
            return_values: self.return_values,
            min_commit_ts: self.for_update_ts.next().as_u64(),
            check_existence: self.check_existence,
            lock_only_if_exists: self.lock_only_if_exists,
            wake_up_mode: if self.force {
                kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeForceLock as i32
            } else {
                kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeNormal as i32
            },
            ..Default::default()
        })
    }
}

/// Whether `e` is TiKV waking a lock request whose wait ended because the lock holder rolled
/// back (`WriteConflict` with reason `PessimisticRetry` and no conflicting commit): the key
/// was not written meanwhile, so retrying at the same `for_update_ts` is safe. (Woken by a
/// commit, the conflict carries the commit ts and is a real write conflict.)
fn woken_after_rollback(e: &kvrpcpb::KeyError) -> bool {
    e.conflict.as_ref().is_some_and(|c| {
        c.reason == kvrpcpb::write_conflict::Reason::PessimisticRetry as i32
            && c.conflict_commit_ts == 0
    })
}

/// Batch plan: `KvPessimisticRollback` of keys locked at `for_update_ts`.
#[derive(Clone, Debug)]
pub struct PessimisticRollbackPlan {
    start_ts: Timestamp,
    for_update_ts: Timestamp,
}

impl KeyBatchPlan for PessimisticRollbackPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::KvPessimisticRollback(kvrpcpb::PessimisticRollbackRequest {
            start_version: self.start_ts.as_u64(),
            for_update_ts: self.for_update_ts.as_u64(),
            keys: items.iter().map(Key::to_bytes).collect(),
            ..Default::default()
        })
    }
}

/// Rolls back pessimistic locks (stored keys) of the transaction started at `start_ts`,
/// taken at or below `for_update_ts`; `Ok(())` once every region answered.
pub fn pessimistic_rollback(
    start_ts: Timestamp,
    for_update_ts: Timestamp,
    keys: Vec<Key>,
) -> MultiKey<PessimisticRollbackPlan> {
    let plan = PessimisticRollbackPlan {
        start_ts,
        for_update_ts,
    };
    MultiKey::new(plan, keys, BatchLimits::UNLIMITED, RpcOptions::READ)
}

#[derive(Debug)]
enum State {
    /// Send the next round (the primary alone first, then the rest).
    Round,
    Locking(Box<MultiKey<PessimisticLockPlan>>, std::time::Duration),
    Resolving(Box<ResolveLocks>),
    /// TiKV answered without waiting: pause briefly before asking again.
    Pausing(EffectId),
    RollingBack(Box<MultiKey<PessimisticRollbackPlan>>, Box<Error>),
    Done,
}

/// Locks keys for a pessimistic transaction.
#[derive(Debug)]
pub struct LockKeys {
    codec: KeyspaceCodec,
    plan: PessimisticLockPlan,
    wait: LockWait,
    /// Keys to lock in the next round (stored form).
    pending: Vec<Key>,
    /// Keys waiting for the primary's lock (first lock only).
    after_primary: Vec<Key>,
    /// Keys this call has locked.
    locked: Vec<Key>,
    /// Every key of the call (stored form).
    call_keys: std::collections::BTreeSet<Key>,
    /// Keys rolled back if the call fails: every key it tried to lock (a lock whose reply was
    /// lost is held all the same) except those the transaction held before.
    attempted: Vec<Key>,
    values: Vec<LockedValue>,
    /// When the call started (for the wait timeout).
    started: Option<Instant>,
    /// The lock that last blocked a round, for the wait errors.
    blocker: Option<Lock>,
    /// The last round came back without TiKV having waited.
    blocker_fast: bool,
    max_execution: Option<Duration>,
    interrupt: Option<Interrupt>,
    stats: LockStats,
    /// The newest commit a key was locked over (fair locking).
    max_conflict: Option<Timestamp>,
    state: State,
}

impl LockKeys {
    /// Locks `keys` (user keys of `codec`'s keyspace) for the transaction started at
    /// `start_ts` with primary `primary` (user key), at `for_update_ts`. `is_first_lock`:
    /// the transaction holds no lock yet (the primary is then locked first, alone).
    /// `lock_ttl_ms`: the locks' TTL from the transaction's start.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        codec: KeyspaceCodec,
        keys: Vec<Key>,
        primary: Key,
        start_ts: Timestamp,
        for_update_ts: Timestamp,
        is_first_lock: bool,
        lock_ttl_ms: u64,
        options: &LockOptions,
    ) -> Self {
        let primary = codec.encode(primary);
        let mut keys = codec.encode_all(keys);
        keys.sort();
        keys.dedup();
        let attempted = keys.clone();
        let call_keys = keys.iter().cloned().collect();
        let (pending, after_primary) = if is_first_lock && keys.contains(&primary) {
            let rest = keys.into_iter().filter(|k| *k != primary).collect();
            (vec![primary.clone()], rest)
        } else {
            (keys, Vec::new())
        };
        LockKeys {
            codec,
            plan: PessimisticLockPlan {
                primary,
                start_ts,
                for_update_ts,
                lock_ttl: lock_ttl_ms,
                is_first_lock,
                wait_timeout: 0,
                return_values: options.return_values,
                check_existence: options.check_existence,
                lock_only_if_exists: options.lock_only_if_exists,
                force: false,
                shared: options.shared,
            },
            wait: options.wait,
            pending,
            after_primary,
            locked: Vec::new(),
            call_keys,
            attempted,
            values: Vec::new(),
            started: None,
            blocker: None,
            blocker_fast: false,
            max_execution: options.max_execution,
            interrupt: options.interrupt.clone(),
            stats: LockStats::default(),
            max_conflict: None,
            state: State::Round,
        }
    }

    /// Time left to wait, as TiKV's `wait_timeout` (ms; -1: no wait); `None` when the wait
    /// is over.
    fn wait_timeout(&self, now: Instant) -> Option<i64> {
        let waited = self
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        // A max execution time caps every wait (client-go's `calculateEffectiveWaitTime`).
        let until_deadline = self
            .max_execution
            .map(|limit| limit.saturating_sub(waited).as_millis())
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX).max(1));
        let capped = |ms: i64| until_deadline.map_or(ms, |d| if ms == 0 { d } else { ms.min(d) });
        match self.wait {
            LockWait::NoWait => Some(-1),
            // 0 is TiKV's "its own default wait"; the loop asks again after each one.
            LockWait::Forever => Some(capped(0)),
            LockWait::Timeout(limit) => {
                let left = limit.checked_sub(waited)?;
                let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
                (ms > 0).then_some(capped(ms))
            }
        }
    }

    /// The error that ends the call from outside: its interrupt was set, or it has run
    /// longer than its `max_execution`.
    fn interrupted(&self, now: Instant) -> Option<Error> {
        if self
            .interrupt
            .as_ref()
            .is_some_and(Interrupt::is_interrupted)
        {
            return Some(Error::Interrupted("lock_keys was interrupted".into()));
        }
        let ran = self
            .started
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        match self.max_execution {
            Some(limit) if ran >= limit => Some(Error::Interrupted(format!(
                "lock_keys ran past its max execution time of {limit:?}"
            ))),
            _ => None,
        }
    }

    /// The error that ends a wait, naming the key and owner that still block.
    fn wait_error(&self) -> Error {
        let (key, lock_ts) = self
            .blocker
            .as_ref()
            .map_or((Key::EMPTY, 0), |l| (l.key.clone(), l.start_ts.as_u64()));
        match self.wait {
            LockWait::NoWait => Error::LockAcquireFailAndNoWaitSet { key, lock_ts },
            _ => Error::LockWaitTimeout { key, lock_ts },
        }
    }

    /// Reads a round's replies: locks to resolve (their batches go back to `pending`), or
    /// the error that ends the call.
    fn absorb(&mut self, replies: Vec<(Vec<Key>, TikvResponse)>) -> Result<Vec<Lock>, Error> {
        self.stats.requests += replies.len();
        let mut locks = Vec::new();
        for (keys, reply) in replies {
            let first = keys.first().cloned().unwrap_or_default();
            let TikvResponse::KvPessimisticLock(r) = reply else {
                return Err(Error::KeyError {
                    key: first,
                    message: format!("pessimistic lock answered with {}", reply.method_name()),
                });
            };
            if r.errors.is_empty() {
                if self.plan.force {
                    self.record_results(&keys, &r)?;
                } else {
                    self.record(&keys, &r)?;
                }
                continue;
            }
            for e in &r.errors {
                if woken_after_rollback(e) {
                    // The lock waited for went away without a commit: nothing newer was
                    // written, so the same request may simply be sent again.
                    continue;
                }
                match key_error(e, self.plan.start_ts).on_key(&first) {
                    KeyErrorKind::Fail(Error::Deadlock {
                        key,
                        lock_ts,
                        deadlock_key_hash,
                        wait_chain,
                        deadlock_key,
                        ..
                    }) => {
                        // client-go's `hashInKeys`: the cycle closed on one of this call's
                        // keys, so retrying the statement alone may succeed.
                        let retryable = deadlock_key
                            .as_ref()
                            .is_some_and(|k| self.call_keys.contains(k));
                        return Err(Error::Deadlock {
                            key,
                            lock_ts,
                            deadlock_key_hash,
                            wait_chain,
                            deadlock_key,
                            retryable,
                        });
                    }
                    KeyErrorKind::Locked(lock) => locks.push(lock),
                    KeyErrorKind::SharedLocked(holders) => locks.extend(holders),
                    KeyErrorKind::Fail(e) => return Err(e),
                    other => {
                        return Err(Error::KeyError {
                            key: first,
                            message: format!("pessimistic lock: {other:?}"),
                        });
                    }
                }
            }
            // TiKV locked nothing of this batch: all of it again.
            self.pending.extend(keys);
        }
        Ok(locks)
    }

    /// Records a force-lock batch that was locked: one result per key (TiKV fills `results`
    /// instead of `values`/`not_founds` in this mode).
    fn record_results(
        &mut self,
        keys: &[Key],
        r: &kvrpcpb::PessimisticLockResponse,
    ) -> Result<(), Error> {
        use kvrpcpb::PessimisticLockKeyResultType as T;
        let corrupt = |why: String| Error::KeyError {
            key: keys.first().cloned().unwrap_or_default(),
            message: format!("force-lock reply: {why}"),
        };
        if r.results.len() != keys.len() {
            return Err(corrupt(format!(
                "{} results for {} keys",
                r.results.len(),
                keys.len()
            )));
        }
        self.locked.extend_from_slice(keys);
        for (key, result) in keys.iter().zip(&r.results) {
            let value = result.existence.then(|| result.value.clone());
            match T::try_from(result.r#type) {
                Ok(T::LockResultNormal) => {
                    if self.plan.return_values || self.plan.check_existence {
                        let value = if self.plan.return_values { value } else { None };
                        self.values
                            .push(LockedValue::new(key.clone(), result.existence, value));
                    }
                }
                Ok(T::LockResultLockedWithConflict) => {
                    let ts = Timestamp::from_u64(result.locked_with_conflict_ts);
                    if ts <= self.plan.for_update_ts {
                        return Err(corrupt(format!(
                            "locked with conflict at {ts}, not after for_update_ts {}",
                            self.plan.for_update_ts
                        )));
                    }
                    self.max_conflict = Some(self.max_conflict.map_or(ts, |m| m.max(ts)));
                    self.values.push(LockedValue {
                        locked_with_conflict: Some(ts),
                        ..LockedValue::new(key.clone(), result.existence, value)
                    });
                }
                // A failed key comes with its error, and then never without one.
                Ok(T::LockResultFailed) | Err(_) => {
                    return Err(corrupt(format!(
                        "result type {} without an error",
                        result.r#type
                    )));
                }
            }
        }
        Ok(())
    }

    /// Records a batch that was locked, with what TiKV returned for its keys.
    fn record(&mut self, keys: &[Key], r: &kvrpcpb::PessimisticLockResponse) -> Result<(), Error> {
        self.locked.extend_from_slice(keys);
        if !(self.plan.return_values || self.plan.check_existence) {
            return Ok(());
        }
        if r.not_founds.len() != keys.len()
            || (self.plan.return_values && r.values.len() != keys.len())
        {
            return Err(Error::KeyError {
                key: keys.first().cloned().unwrap_or_default(),
                message: format!(
                    "pessimistic lock of {} keys answered {} values and {} existence flags",
                    keys.len(),
                    r.values.len(),
                    r.not_founds.len()
                ),
            });
        }
        for (i, key) in keys.iter().enumerate() {
            let exists = !r.not_founds[i];
            let value = (self.plan.return_values && exists).then(|| r.values[i].clone());
            self.values
                .push(LockedValue::new(key.clone(), exists, value));
        }
        Ok(())
    }

    /// Keys the transaction already held before this call (user keys): a failure of the call
    /// leaves their locks in place.
    pub fn keeping(mut self, held: impl IntoIterator<Item = Key>) -> Self {
        let held: std::collections::BTreeSet<Key> =
            held.into_iter().map(|k| self.codec.encode(k)).collect();
        self.attempted.retain(|k| !held.contains(k));
        self
    }

    /// Locks in fair locking's force-lock mode (client-go's `WakeUpModeForceLock`): one key per
    /// request (TiKV refuses more), locked even over a commit newer than `for_update_ts`
    /// (reported in [`LockedValue::locked_with_conflict`], with the newest value), and a wait
    /// ends with the lock as soon as its holder is done instead of with a write conflict.
    pub fn force_lock(mut self) -> Self {
        self.plan.force = true;
        self
    }

    /// Fails the call, first rolling back every key it tried to lock (rolling back a key it
    /// did not lock is harmless; one whose reply was lost may be locked all the same).
    fn fail(&mut self, error: Error) {
        self.locked.clear();
        let keys = std::mem::take(&mut self.attempted);
        // A key locked over a newer commit holds its lock at that commit's ts, and TiKV only
        // removes locks at or below the rollback's `for_update_ts`.
        let ts = self
            .max_conflict
            .map_or(self.plan.for_update_ts, |c| c.max(self.plan.for_update_ts));
        let m = pessimistic_rollback(self.plan.start_ts, ts, keys);
        self.state = State::RollingBack(Box::new(m), Box::new(error));
    }

    fn finish(&mut self, result: Result<Locked, Error>) -> Step<Result<Locked, Error>> {
        self.state = State::Done;
        let codec = self.codec;
        let result = result.and_then(|locked| {
            let values = locked
                .values
                .into_iter()
                .map(|v| {
                    Ok(LockedValue {
                        key: codec.decode(v.key)?,
                        ..v
                    })
                })
                .collect::<Result<_, Error>>()?;
            Ok(Locked { values, ..locked })
        });
        Step::Done(codec.decode_result(result))
    }
}

impl Machine for LockKeys {
    type Output = Result<Locked, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                State::Done | State::Pausing(_) => return Step::Wait,
                State::Round => {
                    let started = *self.started.get_or_insert(cx.now);
                    if self.pending.is_empty() {
                        if self.after_primary.is_empty() {
                            let mut values = std::mem::take(&mut self.values);
                            values.sort_by(|a, b| a.key.cmp(&b.key));
                            self.stats.keys = self.locked.len();
                            self.stats.total = cx.now.saturating_duration_since(started);
                            let stats = self.stats;
                            let max_locked_with_conflict = self.max_conflict;
                            return self.finish(Ok(Locked {
                                values,
                                stats,
                                max_locked_with_conflict,
                            }));
                        }
                        // The primary is locked: the rest may point at it now.
                        self.pending = std::mem::take(&mut self.after_primary);
                        self.plan.is_first_lock = false;
                    }
                    if let Some(e) = self.interrupted(cx.now) {
                        self.fail(e);
                        continue;
                    }
                    let Some(wait_timeout) = self.wait_timeout(cx.now) else {
                        let e = self.wait_error();
                        self.fail(e);
                        continue;
                    };
                    let mut plan = self.plan.clone();
                    plan.wait_timeout = wait_timeout;
                    let keys = std::mem::take(&mut self.pending);
                    let options = RpcOptions {
                        idempotent: true,
                        max_execution: Some(cx.config.max_write_execution),
                        timeout: None,
                    };
                    let m = MultiKey::new(plan, keys, BatchLimits::UNLIMITED, options);
                    let sent_at = cx.now.saturating_duration_since(started);
                    self.state = State::Locking(Box::new(m), sent_at);
                }
                State::Locking(m, sent_at) => {
                    let sent_at = *sent_at;
                    let replies = ready!(m.poll(cx));
                    match replies.and_then(|r| self.absorb(r)) {
                        Ok(locks) if locks.is_empty() => self.state = State::Round,
                        Ok(locks) => {
                            // The blocked batches go again after the resolution.
                            self.stats.retries += 1;
                            self.blocker = locks.first().cloned();
                            // The round's duration tells whether TiKV waited.
                            let took = self
                                .started
                                .map_or(Duration::ZERO, |s| cx.now.saturating_duration_since(s))
                                .saturating_sub(sent_at);
                            let resolver = ResolveLocks::for_write(locks, Timestamp::ZERO);
                            self.state = State::Resolving(Box::new(resolver));
                            // Remember to pause if the owner turns out alive.
                            self.blocker_fast = took < Duration::from_millis(1);
                        }
                        Err(e) => self.fail(e),
                    }
                }
                State::Resolving(m) => match ready!(m.poll(cx)) {
                    Ok(resolved) if resolved.must_wait().is_none() => {
                        self.blocker_fast = false;
                        self.state = State::Round;
                    }
                    Ok(_) if self.wait == LockWait::NoWait => {
                        let e = self.wait_error();
                        self.fail(e);
                    }
                    Ok(_) if std::mem::take(&mut self.blocker_fast) => {
                        // TiKV answered at once (no wait on its side, as with a store that
                        // does not wait): pause a moment rather than spin.
                        let id = cx.next_id();
                        self.state = State::Pausing(id);
                        return Step::Effect(Effect::Sleep {
                            id,
                            duration: Duration::from_millis(5),
                        });
                    }
                    Ok(_) => self.state = State::Round,
                    Err(e) => self.fail(e),
                },
                State::RollingBack(m, _) => {
                    // Best effort: a lock left behind expires with its TTL.
                    let _ = ready!(m.poll(cx));
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
            State::Locking(m, _) => m.handle(cx, id, outcome),
            State::Resolving(m) => m.handle(cx, id, outcome),
            State::RollingBack(m, _) => m.handle(cx, id, outcome),
            State::Pausing(want) if *want == id => self.state = State::Round,
            _ => {}
        }
    }
}
