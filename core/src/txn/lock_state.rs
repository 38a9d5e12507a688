//! What a pessimistic transaction holds, and fair locking's attempts over it: the decisions
//! around each `lock_keys` call (which primary, which keys to send, in which mode, what to
//! release, when heartbeats start and stop), kept apart from the I/O that carries them out.
//!
//! The driver asks [`PessimisticLocks::prepare`] before a `lock_keys` call, runs the
//! [`LockKeys`](super::LockKeys) machine it describes, and reports the outcome to
//! [`PessimisticLocks::finish`]; both hand back [`Changes`] — locks to release
//! (`KvPessimisticRollback`, in the background) and what to do with the heartbeat.
//!
//! # Fair locking
//!
//! client-go's "aggressive locking" (TiDB's fair locking) serves hot rows: a statement
//! that meets a conflict keeps the locks it took while it is retried, so waiters queue once
//! instead of re-queueing after every write conflict. Between
//! [`start_fair_locking`](PessimisticLocks::start_fair_locking) and
//! [`done_fair_locking`](PessimisticLocks::done_fair_locking) (or
//! [`cancel_fair_locking`](PessimisticLocks::cancel_fair_locking)) a statement's locks are
//! kept by attempt: each single-key lock is taken in TiKV's force-lock mode (locked even
//! over a newer commit, reported as "locked with conflict" with that commit's value), and
//! [`retry_fair_locking`](PessimisticLocks::retry_fair_locking) starts a new attempt that
//! keeps the previous attempt's locks until it is known whether the new one wants them
//! again. What an attempt asks for again is reused without a request when the lock is
//! still trustworthy (same primary, taken under [`MANAGED_LOCK_TTL_MS`] ago, the value it
//! needs known); what the last attempt did not ask for is released when the stage ends.
//! Keys locked before the stage began are never released by it.
//!
//! # Shared locks
//!
//! A `lock_keys` with [`LockOptions::shared`] holds its keys in shared mode (client-go's
//! `InShareMode`): it needs the primary locked first (a shared key is never a primary),
//! skips keys the transaction already holds in either mode, is refused in a fair-locking
//! stage, and a shared key is never upgraded to an exclusive lock (nor written).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::Error;
use crate::key::Key;
use crate::time::Instant;
use crate::timestamp::Timestamp;
use crate::txn::pessimistic::{LockOptions, Locked, LockedValue, MANAGED_LOCK_TTL_MS};

/// Locks to release with `KvPessimisticRollback` (user keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// The keys.
    pub keys: Vec<Key>,
    /// The rollback's `for_update_ts`: at least that of every lock released (TiKV keeps
    /// locks taken at a newer one).
    pub for_update_ts: Timestamp,
}

/// What to do with the heartbeat that keeps the primary's lock alive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HeartbeatChange {
    /// Nothing changes.
    #[default]
    Keep,
    /// Stop the running heartbeat (its primary is no longer the transaction's).
    Stop,
    /// Start heartbeats for this primary (user key): its lock is taken. Any running
    /// heartbeat for another primary is stopped first.
    Start(Key),
}

/// What the driver does after a decision: release locks, change the heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "locks to release and heartbeat changes must be carried out"]
pub struct Changes {
    /// Locks to release (in the background: nothing waits for them).
    pub release: Option<Release>,
    /// The heartbeat's change.
    pub heartbeat: HeartbeatChange,
}

impl Changes {
    fn then(mut self, later: Changes) -> Changes {
        self.release = match (self.release, later.release) {
            (Some(mut a), Some(b)) => {
                a.keys.extend(b.keys);
                a.for_update_ts = a.for_update_ts.max(b.for_update_ts);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        if later.heartbeat != HeartbeatChange::Keep {
            self.heartbeat = later.heartbeat;
        }
        self
    }
}

/// What the commit of a pessimistic transaction needs of its locks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PessimisticCommit {
    /// The primary (user key).
    pub primary: Key,
    /// The `for_update_ts` to prewrite at.
    pub for_update_ts: Timestamp,
    /// Every key locked (user keys).
    pub locked: Vec<Key>,
    /// The `for_update_ts` each fair-locked key's lock must have at prewrite.
    pub checks: Vec<(Key, Timestamp)>,
    /// Keys held in shared mode (prewritten as `Op::SharedLock`; no async commit or 1PC).
    pub shared: Vec<Key>,
}

/// One `lock_keys` call, as [`PessimisticLocks::prepare`] planned it.
#[derive(Clone, Debug)]
#[must_use = "a prepared lock must be reported to PessimisticLocks::finish"]
pub struct PreparedLock {
    /// Carry these out before sending (fair locking left because the call has several
    /// keys, a heartbeat stopped because the primary moved).
    pub before: Changes,
    /// Keys to send, sorted and unique; empty: nothing to send, the call is done.
    pub send: Vec<Key>,
    /// The transaction's primary for this call.
    pub primary: Key,
    /// The transaction holds no lock yet: the primary goes alone first, and TiKV skips
    /// deadlock detection for it.
    pub is_first_lock: bool,
    /// Send in force-lock mode (fair locking; one key).
    pub force: bool,
    /// Keys held before this call: a failure of the call leaves them locked.
    pub keep: Vec<Key>,
    /// Values of keys reused from the previous attempt (no request sent for them).
    pub reused: Vec<LockedValue>,
    /// This call chose the primary.
    assigned_primary: bool,
    return_values: bool,
    check_existence: bool,
    lock_only_if_exists: bool,
    shared: bool,
}

/// A key locked during a fair-locking attempt.
#[derive(Clone, Debug)]
struct Entry {
    /// Taken with `return_values` / `check_existence`: what `value` can answer.
    has_value: bool,
    has_existence: bool,
    value: LockedValue,
    /// The `for_update_ts` of the lock in TiKV (the conflicting commit's, if locked with
    /// conflict): prewrite checks the lock is still that one.
    actual_for_update_ts: Timestamp,
}

impl Entry {
    /// Whether a new attempt asking with these options can reuse the entry without a
    /// request (client-go's `trySkipLockingOnRetry`), and what it answers then.
    fn reuse(&self, return_values: bool, check_existence: bool) -> Option<LockedValue> {
        let conflict = self.value.locked_with_conflict.is_some();
        // A lock over a conflict always came with its value and existence.
        let knows_value = self.has_value || conflict;
        let knows_existence = knows_value || self.has_existence;
        if (return_values && !knows_value) || (check_existence && !knows_existence) {
            return None;
        }
        let mut value = self.value.clone();
        // The lock has been held since that commit: the value is current now.
        value.locked_with_conflict = None;
        if !return_values {
            value.value = None;
        }
        Some(value)
    }
}

/// A fair-locking stage.
#[derive(Debug)]
struct FairLocking {
    /// Keys locked by the current attempt.
    current: BTreeMap<Key, Entry>,
    /// The previous attempt's keys not asked for again yet.
    previous: BTreeMap<Key, Entry>,
    /// The current attempt chose the transaction's primary.
    assigned_primary: bool,
    /// The previous attempts' primary and whether an attempt chose it.
    last_primary: Option<Key>,
    last_assigned_primary: bool,
    attempt_started: Instant,
    last_attempt_started: Option<Instant>,
    /// The newest commit any key of the stage was locked over.
    max_conflict: Timestamp,
}

/// The locks of a pessimistic transaction (user keys), and fair locking's attempts.
#[derive(Debug, Default)]
pub struct PessimisticLocks {
    /// The first key locked: the transaction's primary.
    primary: Option<Key>,
    /// Keys held (outside the fair-locking stage), with the `for_update_ts` prewrite must
    /// find on their lock when fair locking took them.
    held: BTreeMap<Key, Option<Timestamp>>,
    /// Keys among `held` that are held in shared mode.
    shared: BTreeSet<Key>,
    /// The newest `for_update_ts` locks were taken at.
    for_update_ts: Timestamp,
    /// The newest commit a key was locked over (fair locking); zero: none.
    max_conflict: Timestamp,
    /// The primary the running heartbeat keeps alive.
    heartbeat: Option<Key>,
    fair: Option<FairLocking>,
}

impl PessimisticLocks {
    /// No locks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transaction's primary, once a lock chose it.
    pub fn primary(&self) -> Option<&Key> {
        self.primary.as_ref()
    }

    /// Whether `key` is locked (before or during a fair-locking stage).
    pub fn holds(&self, key: &Key) -> bool {
        self.held.contains_key(key)
            || self
                .fair
                .as_ref()
                .is_some_and(|f| f.current.contains_key(key) || f.previous.contains_key(key))
    }

    /// Whether `key` is held in shared mode (it cannot be written).
    pub fn is_shared(&self, key: &Key) -> bool {
        self.shared.contains(key)
    }

    /// Whether `key` was locked by the current attempt of the fair-locking stage (client-go's
    /// `IsInAggressiveLockingStage`): not by an earlier attempt, nor before the stage.
    pub fn in_fair_locking_stage(&self, key: &Key) -> bool {
        self.fair
            .as_ref()
            .is_some_and(|f| f.current.contains_key(key))
    }

    /// Whether a fair-locking stage is on.
    pub fn is_fair_locking(&self) -> bool {
        self.fair.is_some()
    }

    /// The newest `for_update_ts` locks were taken at.
    pub fn for_update_ts(&self) -> Timestamp {
        self.for_update_ts
    }

    /// The rollback `for_update_ts` covering every lock held.
    fn release_ts(&self) -> Timestamp {
        let fair = self
            .fair
            .as_ref()
            .map_or(Timestamp::ZERO, |f| f.max_conflict);
        self.for_update_ts.max(self.max_conflict).max(fair)
    }

    fn release(&self, keys: Vec<Key>) -> Option<Release> {
        (!keys.is_empty()).then(|| Release {
            keys,
            for_update_ts: self.release_ts(),
        })
    }

    /// Starts a fair-locking stage (client-go's `StartAggressiveLocking`).
    pub fn start_fair_locking(&mut self, now: Instant) -> Result<(), Error> {
        if self.fair.is_some() {
            return Err(Error::InvalidArgument(
                "fair locking is already on: retry, cancel or finish the stage first".into(),
            ));
        }
        self.fair = Some(FairLocking {
            current: BTreeMap::new(),
            previous: BTreeMap::new(),
            assigned_primary: false,
            last_primary: None,
            last_assigned_primary: false,
            attempt_started: now,
            last_attempt_started: None,
            max_conflict: Timestamp::ZERO,
        });
        Ok(())
    }

    fn stage(&mut self, what: &str) -> Result<&mut FairLocking, Error> {
        self.fair
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument(format!("{what}: fair locking is not on")))
    }

    /// Releases what the previous attempt locked and the current one did not ask for again.
    fn release_previous(&mut self) -> Option<Release> {
        let keys: Vec<Key> = self
            .fair
            .as_mut()
            .map(|f| std::mem::take(&mut f.previous).into_keys().collect())
            .unwrap_or_default();
        self.release(keys)
    }

    /// Starts a new attempt of the statement (client-go's `RetryAggressiveLocking`): the
    /// current attempt's locks are kept for the new one to reuse, the attempt before's
    /// leftovers are released. A primary the ending attempt chose is chosen again by the new
    /// attempt's first lock (the heartbeat keeps running meanwhile).
    pub fn retry_fair_locking(&mut self, now: Instant) -> Result<Changes, Error> {
        self.stage("retry_fair_locking")?;
        let release = self.release_previous();
        let primary = self.primary.clone();
        let f = self.stage("retry_fair_locking")?;
        let reset_primary = f.assigned_primary;
        if f.assigned_primary {
            f.assigned_primary = false;
            f.last_assigned_primary = true;
        }
        f.last_primary = primary;
        f.last_attempt_started = Some(std::mem::replace(&mut f.attempt_started, now));
        f.previous = std::mem::take(&mut f.current);
        if reset_primary {
            self.primary = None;
        }
        Ok(Changes {
            release,
            heartbeat: HeartbeatChange::Keep,
        })
    }

    /// Ends the stage, releasing every lock it took (client-go's `CancelAggressiveLocking`);
    /// locks held before the stage stay.
    pub fn cancel_fair_locking(&mut self) -> Result<Changes, Error> {
        self.stage("cancel_fair_locking")?;
        let release = self.release_previous();
        let ts = self.release_ts();
        let Some(f) = self.fair.take() else {
            return Ok(Changes::default()); // checked just above
        };
        let mut heartbeat = HeartbeatChange::Keep;
        if f.assigned_primary || f.last_assigned_primary {
            // The primary was the stage's own: it is released with the stage.
            self.primary = None;
            self.heartbeat = None;
            heartbeat = HeartbeatChange::Stop;
        }
        let current: Vec<Key> = f.current.into_keys().collect();
        let current = (!current.is_empty()).then_some(Release {
            keys: current,
            for_update_ts: ts,
        });
        Ok(Changes { release, heartbeat }.then(Changes {
            release: current,
            heartbeat: HeartbeatChange::Keep,
        }))
    }

    /// Ends the stage keeping the last attempt's locks as the transaction's (client-go's
    /// `DoneAggressiveLocking`); what earlier attempts locked and the last did not ask for is
    /// released.
    pub fn done_fair_locking(&mut self) -> Result<Changes, Error> {
        self.stage("done_fair_locking")?;
        let release = self.release_previous();
        let Some(f) = self.fair.take() else {
            return Ok(Changes::default()); // checked just above
        };
        let mut heartbeat = HeartbeatChange::Keep;
        if f.last_assigned_primary && !f.assigned_primary {
            // An earlier attempt's primary, not chosen again: nothing of it is kept.
            self.heartbeat = None;
            heartbeat = HeartbeatChange::Stop;
        }
        for (key, entry) in f.current {
            self.held
                .entry(key)
                .or_insert(Some(entry.actual_for_update_ts));
        }
        self.max_conflict = self.max_conflict.max(f.max_conflict);
        Ok(Changes { release, heartbeat })
    }

    /// Plans a `lock_keys` of `keys` with `options` (see the module docs).
    pub fn prepare(
        &mut self,
        keys: Vec<Key>,
        options: &LockOptions,
        now: Instant,
    ) -> Result<PreparedLock, Error> {
        let mut keys = keys;
        keys.sort();
        keys.dedup();
        if options.lock_only_if_exists {
            let first = keys.first().cloned().unwrap_or_default();
            if !options.return_values {
                return Err(Error::InvalidArgument(format!(
                    "lock_only_if_exists needs return_values (locking {first:?})"
                )));
            }
            if self.primary.is_none() && keys.len() > 1 {
                // The primary must be locked for sure; a missing key is not.
                return Err(Error::InvalidArgument(format!(
                    "lock_only_if_exists of {} keys before the transaction has a primary \
                     (locking {first:?}): lock the primary first",
                    keys.len()
                )));
            }
        }
        if let Some(key) = keys.iter().find(|k| self.shared.contains(*k)) {
            if !options.shared {
                return Err(Error::InvalidArgument(format!(
                    "{key:?} is held in shared mode: a shared lock is not upgraded to an \
                     exclusive one"
                )));
            }
        }
        if options.shared {
            let first = keys.first().cloned().unwrap_or_default();
            if self.fair.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "shared locks are not taken in fair locking (locking {first:?})"
                )));
            }
            if self.primary.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "a shared lock needs the transaction's primary locked first (locking \
                     {first:?}): a shared key is never a primary"
                )));
            }
            // Keys already held, in either mode, stay as they are.
            keys.retain(|k| !self.held.contains_key(k));
        }
        let mut before = Changes::default();
        if self.fair.is_some() && keys.len() > 1 {
            // Fair locking works key by key (TiKV's force-lock mode takes one): a statement
            // locking several keys leaves the stage first, keeping what it locked.
            before = self.done_fair_locking()?;
        }
        let mut assigned_primary = false;
        if self.primary.is_none() {
            let last = self.fair.as_ref().and_then(|f| f.last_primary.clone());
            let chosen = match last {
                Some(last) if keys.contains(&last) => Some(last),
                _ => keys.first().cloned(),
            };
            if let Some(chosen) = chosen {
                self.primary = Some(chosen);
                assigned_primary = true;
                if let Some(f) = self.fair.as_mut() {
                    f.assigned_primary = true;
                }
            }
        }
        let primary = self.primary.clone().unwrap_or_default();
        let is_first_lock = !self.holds_any();
        let keep: Vec<Key> = keys.iter().filter(|k| self.holds(k)).cloned().collect();
        let mut send = keys;
        let mut reused = Vec::new();
        if let Some(f) = self.fair.as_mut() {
            let can_reuse = (!f.assigned_primary || f.last_primary == self.primary)
                && f.last_attempt_started.is_none_or(|t| {
                    now.saturating_duration_since(t) < Duration::from_millis(MANAGED_LOCK_TTL_MS)
                });
            let mut rest = Vec::new();
            for key in send {
                match f.previous.remove(&key) {
                    Some(entry) if can_reuse => {
                        match entry.reuse(options.return_values, options.check_existence) {
                            Some(value) => {
                                reused.push(value);
                                f.current.insert(key, entry);
                            }
                            None => rest.push(key),
                        }
                    }
                    // Locked again below (which also rewrites its primary).
                    _ => rest.push(key),
                }
            }
            send = rest;
            if assigned_primary
                && !send.is_empty()
                && self.heartbeat.is_some()
                && self.heartbeat != self.primary
            {
                // The new primary's lock starts heartbeats of its own.
                self.heartbeat = None;
                before = before.then(Changes {
                    release: None,
                    heartbeat: HeartbeatChange::Stop,
                });
            }
        }
        let force = self.fair.is_some() && send.len() == 1;
        Ok(PreparedLock {
            before,
            send,
            primary,
            is_first_lock,
            force,
            keep,
            reused,
            assigned_primary,
            return_values: options.return_values,
            check_existence: options.check_existence,
            lock_only_if_exists: options.lock_only_if_exists,
            shared: options.shared,
        })
    }

    fn holds_any(&self) -> bool {
        !self.held.is_empty()
            || self
                .fair
                .as_ref()
                .is_some_and(|f| !f.current.is_empty() || !f.previous.is_empty())
    }

    /// Records how the call [`prepare`](Self::prepare) planned went: its keys are held (in
    /// the fair-locking stage, if one is on), and the values reused without a request are
    /// merged into `result`. `for_update_ts`: the one the call locked at.
    pub fn finish(
        &mut self,
        prepared: PreparedLock,
        for_update_ts: Timestamp,
        result: &mut Result<Locked, Error>,
    ) -> Changes {
        let mut changes = Changes::default();
        match result {
            Ok(locked) => {
                if !prepared.send.is_empty() {
                    self.for_update_ts = self.for_update_ts.max(for_update_ts);
                }
                let conflict = locked.max_locked_with_conflict.unwrap_or(Timestamp::ZERO);
                let values: BTreeMap<&Key, &LockedValue> =
                    locked.values.iter().map(|v| (&v.key, v)).collect();
                let entries: Vec<(Key, Entry)> = prepared
                    .send
                    .iter()
                    .filter_map(|key| {
                        let value = values.get(key).map(|v| (*v).clone());
                        let exists = value.as_ref().is_none_or(|v| v.exists);
                        // TiKV takes shared locks whether or not the key exists.
                        if prepared.lock_only_if_exists && !prepared.shared && !exists {
                            return None; // TiKV did not lock it
                        }
                        let value =
                            value.unwrap_or_else(|| LockedValue::new(key.clone(), true, None));
                        let actual = value
                            .locked_with_conflict
                            .map_or(for_update_ts, |c| c.max(for_update_ts));
                        Some((
                            key.clone(),
                            Entry {
                                has_value: prepared.return_values,
                                has_existence: prepared.check_existence,
                                value,
                                actual_for_update_ts: actual,
                            },
                        ))
                    })
                    .collect();
                match self.fair.as_mut() {
                    Some(f) => {
                        f.max_conflict = f.max_conflict.max(conflict);
                        f.current.extend(entries);
                    }
                    None => {
                        self.max_conflict = self.max_conflict.max(conflict);
                        if prepared.shared {
                            self.shared.extend(entries.iter().map(|(k, _)| k.clone()));
                        }
                        for (key, entry) in entries {
                            let check = entry.value.locked_with_conflict.map(|_| {
                                // Prewrite must find the lock at the conflict's ts.
                                entry.actual_for_update_ts
                            });
                            let slot = self.held.entry(key).or_insert(None);
                            if slot.is_none() {
                                *slot = check;
                            }
                        }
                    }
                }
                locked.values.extend(prepared.reused);
                locked.values.sort_by(|a, b| a.key.cmp(&b.key));
                if prepared.assigned_primary
                    && self.primary.as_ref().is_some_and(|p| !self.holds(p))
                {
                    // Lock-only-if-exists of a missing key: nothing was locked, so the key
                    // is not the primary after all (client-go's `unsetPrimaryKeyIfNeeded`).
                    self.primary = None;
                    if let Some(f) = self.fair.as_mut() {
                        f.assigned_primary = false;
                    }
                }
                if self.heartbeat.is_none() {
                    if let Some(primary) = self.primary.clone().filter(|p| self.holds(p)) {
                        self.heartbeat = Some(primary.clone());
                        changes.heartbeat = HeartbeatChange::Start(primary);
                    }
                }
            }
            Err(_) => {
                if prepared.assigned_primary {
                    // The primary was not kept: the next lock chooses again.
                    self.primary = None;
                    if let Some(f) = self.fair.as_mut() {
                        f.assigned_primary = false;
                    }
                    if self.heartbeat.take().is_some() {
                        changes.heartbeat = HeartbeatChange::Stop;
                    }
                }
            }
        }
        changes
    }

    /// What commit needs of the locks; `None` when nothing was locked. Fails while a
    /// fair-locking stage holds keys (finish or cancel it first); an empty stage is left,
    /// with the [`Changes`] that leaving it makes.
    pub fn commit_plan(&mut self) -> Result<(Option<PessimisticCommit>, Changes), Error> {
        let mut changes = Changes::default();
        if let Some(f) = &self.fair {
            if !f.current.is_empty() {
                return Err(Error::InvalidArgument(
                    "commit while fair locking holds keys: call done_fair_locking or \
                     cancel_fair_locking first"
                        .into(),
                ));
            }
            changes = self.cancel_fair_locking()?;
        }
        let Some(primary) = self.primary.clone().filter(|_| !self.held.is_empty()) else {
            return Ok((None, changes));
        };
        let plan = PessimisticCommit {
            primary,
            for_update_ts: self.for_update_ts,
            locked: self.held.keys().cloned().collect(),
            checks: self
                .held
                .iter()
                .filter_map(|(k, ts)| ts.map(|ts| (k.clone(), ts)))
                .collect(),
            shared: self.shared.iter().cloned().collect(),
        };
        Ok((Some(plan), changes))
    }

    /// Whether the commit must take a fresh `for_update_ts`: a key was locked over a commit
    /// at or after the newest one (client-go leaves this to TiDB's statement retry; without
    /// it, an async commit's timestamp could fall below that commit).
    pub fn needs_fresh_for_update_ts(&self) -> bool {
        self.max_conflict >= self.for_update_ts && self.max_conflict > Timestamp::ZERO
    }

    /// Ends the transaction without committing: every lock to release, and the heartbeat
    /// stopped.
    pub fn release_all(&mut self) -> Changes {
        let ts = self.release_ts();
        self.shared.clear();
        let mut keys: Vec<Key> = std::mem::take(&mut self.held).into_keys().collect();
        if let Some(f) = self.fair.take() {
            keys.extend(f.current.into_keys());
            keys.extend(f.previous.into_keys());
        }
        keys.sort();
        keys.dedup();
        self.primary = None;
        let heartbeat = if self.heartbeat.take().is_some() {
            HeartbeatChange::Stop
        } else {
            HeartbeatChange::Keep
        };
        Changes {
            release: (!keys.is_empty()).then_some(Release {
                keys,
                for_update_ts: ts,
            }),
            heartbeat,
        }
    }

    /// Whether any lock is held.
    pub fn is_empty(&self) -> bool {
        !self.holds_any()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.held.len()
            + self
                .fair
                .as_ref()
                .map_or(0, |f| f.current.len() + f.previous.len())
    }
}
