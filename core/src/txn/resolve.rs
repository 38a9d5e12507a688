//! The lock resolver: decides the fate of other transactions' locks and cleans them up.
//!
//! Locks are handled one owning transaction at a time (many locks of one transaction cost one
//! status check), in the order they were met:
//!
//! 1. **Status.** A decided outcome is taken from the client-wide
//!    [`TxnStatusCache`](crate::txn::TxnStatusCache); otherwise the owner's primary is asked
//!    (`KvCheckTxnStatus` at a current TSO timestamp). TiKV rolls back an expired primary
//!    there, and pushes a live primary's `min_commit_ts` above a reader's start timestamp.
//! 2. **Async commit.** A live primary of an async-commit transaction whose TTL ran out is
//!    never rolled back by TiKV: its fate is in its secondaries. They are checked
//!    (`KvCheckSecondaryLocks`, per region, concurrently): if every one is still locked the
//!    transaction committed at the largest `min_commit_ts`; a missing one tells its outcome.
//!    A secondary that turns out not to be async-commit sends the check back to step 1 with
//!    `force_sync_commit`.
//! 3. **Cleanup.** A committed or rolled-back owner's locks are resolved per region:
//!    `KvResolveLock` on the exact keys for small transactions (client-go's lite resolve,
//!    under 512 keys), region-wide for large ones; pessimistic locks with
//!    `KvPessimisticRollback`. The primary needs nothing: its status check settled it.
//!
//! **Reads** ([`ResolveLocks::for_read`]) get more than cleanup: the transactions whose locks
//! they may now pass — rolled back, committed after the reader's timestamp, or pushed past
//! it (`MinCommitTsPushed`) — in [`Resolved::bypass`], and those committed before it in
//! [`Resolved::committed`]. The reader sends them with its retries (`Context.resolved_locks`
//! and `committed_locks`), so TiKV lets it through even where a lock is still in place; a read
//! therefore never waits for a live transaction that cannot affect it, and does not wait for
//! the cleanup either: that runs in a background task (`Effect::Spawn`), whose failure only
//! leaves the locks to the next reader. **Writes**
//! ([`ResolveLocks::for_write`]) must see the locks gone: a live owner means waiting.
//! **GC** ([`ResolveLocks::for_gc`], client-go's `BatchResolveLocks`) settles every owner
//! whatever its TTL: locks below the txn safe point belong to transactions that may no longer
//! commit, so each status check is made at the end of time (`current_ts = u64::MAX`, caller
//! 0, `rollback_if_not_exist`), which makes TiKV roll back any primary still locked; an
//! owner still alive after that is a protocol error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tikv_proto::kvrpcpb;

use crate::backoff::{BackoffKind, Backoffer, budget};
use crate::error::Error;
use crate::key::Key;
use crate::machine::{Cx, Detached, Effect, EffectId, Machine, Outcome, Step};
use crate::plan::{BatchLimits, KeyBatchPlan, MultiKey, SingleKey};
use crate::ready;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::{KeyErrorKind, Lock, TxnStatus, key_error};
use crate::txn::status_cache::CheckClaim;

/// Transactions of at most this many keys have their locks resolved key by key; larger ones
/// region by region (client-go's `ResolveLockLiteThreshold`).
pub const RESOLVE_LITE_THRESHOLD: u64 = 512;

/// What resolving a set of locks achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolved {
    /// Locks committed or rolled back by us.
    pub cleaned: usize,
    /// Locks whose owners are still running and block the caller (it must wait).
    pub alive: usize,
    /// Milliseconds until the earliest blocking lock expires (0 if none blocks).
    pub wait_ms: u64,
    /// Reads only: owners whose locks the reader may pass (`Context.resolved_locks`).
    pub bypass: Vec<Timestamp>,
    /// Reads only: owners committed at or before the reader's timestamp, whose locks the
    /// reader may read through (`Context.committed_locks`).
    pub committed: Vec<Timestamp>,
}

impl Resolved {
    /// Whether the caller must wait before trying again (some owner is still running).
    pub fn must_wait(&self) -> Option<Blocked> {
        (self.alive > 0).then_some(Blocked {
            alive: self.alive,
            wait_ms: self.wait_ms,
        })
    }
}

/// Locks that still block a caller after resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// How many.
    pub alive: usize,
    /// Milliseconds until the earliest of them expires.
    pub wait_ms: u64,
}

/// The lock owners a snapshot has learnt it may pass, shared by all of its reads and sent
/// with each of their requests (client-go's per-snapshot `resolvedLocks` /
/// `committedLocks`): once one read has found that a transaction cannot affect the snapshot,
/// no other read of that snapshot waits for or re-checks its locks.
///
/// A cheap handle: clones share the same lists. The lists only grow, and only with facts
/// that hold for the snapshot's timestamp, so sharing them between concurrent reads is safe.
#[derive(Clone, Debug, Default)]
pub struct ReadBypass {
    known: Arc<Mutex<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    resolved: Vec<u64>,
    committed: Vec<u64>,
}

impl ReadBypass {
    fn known(&self) -> MutexGuard<'_, Known> {
        // A panic elsewhere cannot leave the lists half-updated (each push is whole).
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what a resolution found.
    pub fn absorb(&self, r: &Resolved) {
        if r.bypass.is_empty() && r.committed.is_empty() {
            return;
        }
        let mut known = self.known();
        for ts in &r.bypass {
            if !known.resolved.contains(&ts.as_u64()) {
                known.resolved.push(ts.as_u64());
            }
        }
        for ts in &r.committed {
            if !known.committed.contains(&ts.as_u64()) {
                known.committed.push(ts.as_u64());
            }
        }
    }

    /// Whether nothing is known yet.
    pub fn is_empty(&self) -> bool {
        let known = self.known();
        known.resolved.is_empty() && known.committed.is_empty()
    }

    /// A request context carrying the lists (`None` when they are empty: the request then
    /// needs no context of its own).
    pub fn context(&self) -> Option<kvrpcpb::Context> {
        let known = self.known();
        if known.resolved.is_empty() && known.committed.is_empty() {
            return None;
        }
        Some(kvrpcpb::Context {
            resolved_locks: known.resolved.clone(),
            committed_locks: known.committed.clone(),
            ..Default::default()
        })
    }
}

/// Whether locks are resolved for a read or for a write (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Read,
    Write,
    Gc,
}

/// The locks of one owning transaction, and how far its status check has got.
#[derive(Debug)]
struct Owner {
    start_ts: Timestamp,
    primary: Key,
    locks: Vec<Lock>,
    /// Check again with `force_sync_commit`: a secondary was not async-commit.
    force_sync: bool,
    /// Ask TiKV to roll back a primary that is not there (only once the lock expired).
    rollback_if_not_exist: bool,
}

impl Owner {
    /// The lock that speaks for the owner in a status check: a prewrite lock if there is one
    /// (the transaction is then committing and its primary cannot change).
    fn representative(&self) -> &Lock {
        self.locks
            .iter()
            .find(|l| !l.is_pessimistic())
            .unwrap_or(&self.locks[0]) // an owner is created with its first lock
    }

    fn is_small(&self) -> bool {
        self.locks
            .iter()
            .all(|l| l.txn_size < RESOLVE_LITE_THRESHOLD)
    }
}

/// A status check's answer.
#[derive(Debug)]
struct Checked {
    status: TxnStatus,
    action: kvrpcpb::Action,
    /// The primary lock, when TiKV left it in place (async-commit recovery needs it).
    primary_lock: Option<kvrpcpb::LockInfo>,
}

/// Batch plan: `KvCheckSecondaryLocks` for one transaction.
#[derive(Debug)]
pub struct CheckSecondariesPlan {
    start_ts: Timestamp,
}

impl KeyBatchPlan for CheckSecondariesPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::KvCheckSecondaryLocks(kvrpcpb::CheckSecondaryLocksRequest {
            keys: items.iter().map(Key::to_bytes).collect(),
            start_version: self.start_ts.as_u64(),
            ..Default::default()
        })
    }
}

/// How a cleanup request names what it cleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cleanup {
    /// `KvResolveLock` of exactly these keys.
    Keys,
    /// `KvResolveLock` of every lock of the transaction in the keys' region.
    Region,
    /// `KvPessimisticRollback` of these keys.
    Pessimistic,
}

/// Batch plan: the cleanup of one transaction's locks.
#[derive(Debug)]
pub struct CleanupPlan {
    start_ts: Timestamp,
    /// Zero rolls back.
    commit_ts: Timestamp,
    /// For pessimistic rollback: the locks' `for_update_ts` (`u64::MAX` covers any).
    for_update_ts: u64,
    how: Cleanup,
}

impl KeyBatchPlan for CleanupPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        let keys = || items.iter().map(Key::to_bytes).collect();
        match self.how {
            Cleanup::Pessimistic => {
                TikvRequest::KvPessimisticRollback(kvrpcpb::PessimisticRollbackRequest {
                    start_version: self.start_ts.as_u64(),
                    for_update_ts: self.for_update_ts,
                    keys: keys(),
                    ..Default::default()
                })
            }
            Cleanup::Keys | Cleanup::Region => {
                TikvRequest::KvResolveLock(kvrpcpb::ResolveLockRequest {
                    start_version: self.start_ts.as_u64(),
                    commit_version: self.commit_ts.as_u64(),
                    // No keys: every lock of the transaction in the region.
                    keys: if self.how == Cleanup::Keys {
                        keys()
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })
            }
        }
    }
}

/// What the secondaries of an async-commit transaction say (client-go's `asyncResolveData`).
#[derive(Debug, Default)]
struct SecondaryCheck {
    /// The commit timestamp: the largest `min_commit_ts` while every lock is present, or the
    /// one TiKV reports once a lock is missing (zero: rolled back).
    commit_ts: u64,
    /// Some secondary was no longer locked: the transaction was decided.
    missing: bool,
    /// Secondaries still locked, to resolve.
    keys: Vec<Key>,
}

/// What the secondary check found out.
enum SecondaryVerdict {
    Decided(TxnStatus),
    /// A secondary is not async-commit: check the primary again with `force_sync_commit`.
    NotAsyncCommit,
}

impl SecondaryCheck {
    fn absorb(
        &mut self,
        start_ts: Timestamp,
        sent: &[Key],
        r: kvrpcpb::CheckSecondaryLocksResponse,
    ) -> Result<bool, String> {
        if let Some(e) = r.error {
            return Err(format!("key error {e:?}"));
        }
        if r.locks.len() < sent.len() {
            // A lock is gone: the transaction was committed (at `commit_ts`) or rolled back.
            // TiKV then lists none of the batch's locks, though some may remain: all of the
            // batch's keys are resolved (client-go leaves those to later readers).
            self.keys.extend_from_slice(sent);
            if !self.missing {
                if r.commit_ts != 0 && r.commit_ts < self.commit_ts {
                    return Err(format!(
                        "commit ts {} is below a secondary's min commit ts {}",
                        r.commit_ts, self.commit_ts
                    ));
                }
                self.commit_ts = r.commit_ts;
            }
            self.missing = true;
            if self.commit_ts != r.commit_ts {
                return Err(format!(
                    "secondaries disagree on the commit ts: {} and {}",
                    self.commit_ts, r.commit_ts
                ));
            }
            return Ok(true);
        }
        for lock in r.locks {
            if lock.lock_version != start_ts.as_u64() {
                return Err(format!(
                    "a secondary lock of {} belongs to {}",
                    start_ts.as_u64(),
                    lock.lock_version
                ));
            }
            if !lock.use_async_commit {
                return Ok(false);
            }
            if !self.missing && lock.min_commit_ts > self.commit_ts {
                self.commit_ts = lock.min_commit_ts;
            }
            self.keys.push(Key::from(lock.key));
        }
        Ok(true)
    }

    fn verdict(&self) -> TxnStatus {
        if self.commit_ts == 0 {
            TxnStatus::RolledBack
        } else {
            TxnStatus::Committed(Timestamp::from_u64(self.commit_ts))
        }
    }
}

// Sub-machines are boxed: this state sits inside every reader and the committer.
#[derive(Debug)]
enum State {
    /// Take the next owner.
    Next,
    NeedTs,
    WaitingTs(EffectId),
    /// TSO failed: back off `pdRPC` within the budget and ask again.
    TsoFailed(Box<Error>),
    SleepingBeforeTs(EffectId),
    /// Check the current owner's status (a timestamp is at hand).
    Check,
    /// Another resolution is checking the same owner: wait a moment for its outcome.
    WaitingForOther(EffectId),
    Checking(Box<SingleKey>),
    CheckingSecondaries(Box<MultiKey<CheckSecondariesPlan>>, SecondaryCheck),
    /// Run the queued cleanups of the current owner, one kind after another.
    Cleaning(Box<MultiKey<CleanupPlan>>),
    /// Hand the queued cleanups to a background task (reads).
    SpawnCleanup,
    /// The resolution cannot go on.
    Failed(Box<Error>),
    Done,
}

/// Resolves locks met by a transaction started at `caller_start_ts`.
#[derive(Debug)]
pub struct ResolveLocks {
    purpose: Purpose,
    owners: Vec<Owner>,
    /// The owner being handled (`owners` are popped from the back; they were reversed).
    current: Option<Owner>,
    cleanups: Vec<MultiKey<CleanupPlan>>,
    /// This resolution's claim on checking the current owner (see
    /// [`TxnStatusCache::claim`](crate::txn::TxnStatusCache::claim)).
    claim: Option<CheckClaim>,
    caller_start_ts: Timestamp,
    current_ts: Timestamp,
    result: Resolved,
    state: State,
}

impl ResolveLocks {
    /// Resolves locks a read at `caller_start_ts` met (see the module docs for what a read
    /// learns besides).
    pub fn for_read(locks: Vec<Lock>, caller_start_ts: Timestamp) -> Self {
        Self::new(Purpose::Read, locks, caller_start_ts)
    }

    /// Resolves locks a write of the transaction started at `caller_start_ts` met: they must
    /// be gone before it writes again.
    pub fn for_write(locks: Vec<Lock>, caller_start_ts: Timestamp) -> Self {
        Self::new(Purpose::Write, locks, caller_start_ts)
    }

    /// Settles the owners of locks that GC found below the txn safe point (see the module
    /// docs): every owner ends committed or rolled back, and its locks are cleaned up.
    pub fn for_gc(locks: Vec<Lock>) -> Self {
        let mut resolver = Self::new(Purpose::Gc, locks, Timestamp::ZERO);
        // Judged at the end of time: no timestamp needed, every lock is expired.
        resolver.current_ts = Timestamp::MAX;
        for owner in &mut resolver.owners {
            owner.rollback_if_not_exist = true;
        }
        resolver
    }

    fn new(purpose: Purpose, locks: Vec<Lock>, caller_start_ts: Timestamp) -> Self {
        // Group by owner, in the order they were met; duplicates are dropped.
        let mut owners: Vec<Owner> = Vec::new();
        let mut index: BTreeMap<Timestamp, usize> = BTreeMap::new();
        for lock in locks {
            match index.get(&lock.start_ts) {
                Some(&i) => {
                    if !owners[i].locks.iter().any(|l| l.key == lock.key) {
                        owners[i].locks.push(lock);
                    }
                }
                None => {
                    index.insert(lock.start_ts, owners.len());
                    owners.push(Owner {
                        start_ts: lock.start_ts,
                        primary: lock.primary.clone(),
                        locks: vec![lock],
                        force_sync: false,
                        rollback_if_not_exist: false,
                    });
                }
            }
        }
        owners.reverse();
        ResolveLocks {
            purpose,
            owners,
            current: None,
            cleanups: Vec::new(),
            claim: None,
            caller_start_ts,
            current_ts: Timestamp::ZERO,
            result: Resolved::default(),
            state: State::Next,
        }
    }

    fn options() -> RpcOptions {
        RpcOptions::READ
    }

    fn check_request(&self, owner: &Owner) -> SingleKey {
        let lock = owner.representative();
        // A lock with TTL 0 is TiKV telling a pessimistic prewrite to resolve it at once:
        // judge it against the end of time, as client-go does.
        let current_ts = if lock.ttl_ms == 0 {
            Timestamp::MAX
        } else {
            self.current_ts
        };
        let request = TikvRequest::KvCheckTxnStatus(kvrpcpb::CheckTxnStatusRequest {
            primary_key: owner.primary.to_bytes(),
            lock_ts: owner.start_ts.as_u64(),
            caller_start_ts: self.caller_start_ts.as_u64(),
            current_ts: current_ts.as_u64(),
            rollback_if_not_exist: owner.rollback_if_not_exist,
            force_sync_commit: owner.force_sync,
            resolving_pessimistic_lock: lock.is_pessimistic(),
            verify_is_primary: true,
            ..Default::default()
        });
        SingleKey::new(owner.primary.clone(), request, Self::options())
    }

    /// Reads a status check's reply. `Ok(None)`: ask again (with `rollback_if_not_exist`).
    fn checked(&self, owner: &mut Owner, response: TikvResponse) -> Result<Option<Checked>, Error> {
        let TikvResponse::KvCheckTxnStatus(r) = response else {
            return Err(Error::KeyError {
                key: owner.primary.clone(),
                message: "unexpected reply to CheckTxnStatus".into(),
            });
        };
        let lock = owner.representative();
        let expired = lock.ttl_ms == 0 || lock.expired(self.current_ts);
        if let Some(e) = &r.error {
            if e.txn_not_found.is_some() {
                if expired && !owner.rollback_if_not_exist {
                    // The lock outlived its TTL and its primary never arrived: have TiKV
                    // write a rollback so that the primary cannot arrive later.
                    owner.rollback_if_not_exist = true;
                    return Ok(None);
                }
                // The primary may still be on its way (prewrites of other regions can be
                // faster): wait for the lock's TTL.
                return Ok(Some(Checked {
                    status: TxnStatus::Alive {
                        ttl_ms: lock.ttl_ms,
                    },
                    action: kvrpcpb::Action::NoAction,
                    primary_lock: None,
                }));
            }
            if e.primary_mismatch.is_some() && lock.is_pessimistic() {
                // The pessimistic lock names a primary that is not its transaction's (any
                // more): the lock is stale, roll it back.
                return Ok(Some(Checked {
                    status: TxnStatus::RolledBack,
                    action: kvrpcpb::Action::TtlExpirePessimisticRollback,
                    primary_lock: None,
                }));
            }
            return Err(match key_error(e, owner.start_ts) {
                KeyErrorKind::Fail(e) => e,
                other => Error::KeyError {
                    key: owner.primary.clone(),
                    message: format!("CheckTxnStatus: {other:?}"),
                },
            });
        }
        let action = kvrpcpb::Action::try_from(r.action).unwrap_or(kvrpcpb::Action::NoAction);
        let status = if r.commit_version > 0 {
            TxnStatus::Committed(Timestamp::from_u64(r.commit_version))
        } else if r.lock_ttl > 0 {
            TxnStatus::Alive { ttl_ms: r.lock_ttl }
        } else {
            TxnStatus::RolledBack
        };
        Ok(Some(Checked {
            status,
            action,
            primary_lock: r.lock_info,
        }))
    }

    /// Whether a checked status is final (and may be shared through the client's cache):
    /// committed, or rolled back with a rollback record (client-go's `IsRolledBack`); a
    /// pessimistic rollback or a lock TiKV left alone is not.
    fn decided(checked: &Checked) -> bool {
        use kvrpcpb::Action;
        match checked.status {
            TxnStatus::Committed(_) => true,
            TxnStatus::RolledBack => matches!(
                checked.action,
                Action::NoAction | Action::TtlExpireRollback | Action::LockNotExistRollback
            ),
            TxnStatus::Alive { .. } => false,
        }
    }

    /// Acts on the current owner's checked status.
    fn act(&mut self, cx: &mut Cx<'_>, checked: Checked) {
        let Some(owner) = self.current.as_ref() else {
            self.state = State::Next;
            return;
        };
        if Self::decided(&checked) {
            cx.txn_statuses.insert(owner.start_ts, checked.status);
        }
        match checked.status {
            TxnStatus::Alive { ttl_ms } => {
                let expires_at = owner.start_ts.physical_ms().saturating_add(ttl_ms);
                let expired = self.current_ts.physical_ms() >= expires_at;
                let recover = expired && !owner.force_sync;
                if let Some(primary) = checked
                    .primary_lock
                    .filter(|p| recover && p.use_async_commit)
                {
                    self.check_secondaries(owner.start_ts, primary);
                    return;
                }
                if self.purpose == Purpose::Gc {
                    // Checked at the end of time, TiKV must have rolled it back.
                    let error = Error::KeyError {
                        key: owner.primary.clone(),
                        message: format!(
                            "GC: transaction {} is still alive (TTL {ttl_ms} ms) after a \
                             status check that had to roll it back",
                            owner.start_ts.as_u64()
                        ),
                    };
                    self.state = State::Failed(Box::new(error));
                    return;
                }
                if self.purpose == Purpose::Read
                    && checked.action == kvrpcpb::Action::MinCommitTsPushed
                {
                    // It will commit above our timestamp: invisible to us, pass it.
                    self.result.bypass.push(owner.start_ts);
                } else {
                    let wait = expires_at.saturating_sub(self.current_ts.physical_ms());
                    let blocked = owner.locks.len();
                    self.result.wait_ms = if self.result.alive == 0 {
                        wait
                    } else {
                        self.result.wait_ms.min(wait)
                    };
                    self.result.alive += blocked;
                }
                self.state = State::Next;
            }
            status => self.clean(status, None),
        }
    }

    fn check_secondaries(&mut self, start_ts: Timestamp, primary: kvrpcpb::LockInfo) {
        let check = SecondaryCheck {
            commit_ts: primary.min_commit_ts,
            ..Default::default()
        };
        let secondaries: Vec<Key> = primary.secondaries.into_iter().map(Key::from).collect();
        let plan = CheckSecondariesPlan { start_ts };
        let m = MultiKey::new(plan, secondaries, BatchLimits::UNLIMITED, Self::options());
        self.state = State::CheckingSecondaries(Box::new(m), check);
    }

    fn after_secondaries(
        &self,
        replies: Vec<(Vec<Key>, TikvResponse)>,
        check: &mut SecondaryCheck,
    ) -> Result<SecondaryVerdict, Error> {
        let start_ts = self
            .current
            .as_ref()
            .map_or(Timestamp::ZERO, |o| o.start_ts);
        for (keys, reply) in replies {
            let first = keys.first().cloned().unwrap_or_default();
            let TikvResponse::KvCheckSecondaryLocks(r) = reply else {
                return Err(Error::KeyError {
                    key: first,
                    message: format!("CheckSecondaryLocks answered with {}", reply.method_name()),
                });
            };
            match check.absorb(start_ts, &keys, r) {
                Ok(true) => {}
                Ok(false) => return Ok(SecondaryVerdict::NotAsyncCommit),
                Err(message) => {
                    return Err(Error::KeyError {
                        key: first,
                        message: format!(
                            "async-commit recovery of {}: {message}",
                            start_ts.as_u64()
                        ),
                    });
                }
            }
        }
        Ok(SecondaryVerdict::Decided(check.verdict()))
    }

    /// Queues the cleanup of the current owner's locks for a decided `status`; `async_keys`
    /// are the still-locked keys of an async-commit transaction (resolved with its primary).
    fn clean(&mut self, status: TxnStatus, async_keys: Option<Vec<Key>>) {
        let Some(owner) = self.current.as_ref() else {
            self.state = State::Next;
            return;
        };
        let commit_ts = match status {
            TxnStatus::Committed(ts) => ts,
            _ => Timestamp::ZERO,
        };
        if self.purpose == Purpose::Read {
            if !commit_ts.is_zero() && commit_ts <= self.caller_start_ts {
                self.result.committed.push(owner.start_ts);
            } else {
                self.result.bypass.push(owner.start_ts);
            }
        }
        let plan = |how, for_update_ts| CleanupPlan {
            start_ts: owner.start_ts,
            commit_ts,
            for_update_ts,
            how,
        };
        let mut cleanups = Vec::new();
        if let Some(mut keys) = async_keys {
            // Every lock of an async-commit transaction, the primary included: TiKV did not
            // touch it in the status check.
            keys.push(owner.primary.clone());
            keys.sort();
            keys.dedup();
            cleanups.push((plan(Cleanup::Keys, 0), keys));
        } else {
            // The status check settled the primary itself.
            let met = owner.locks.iter().filter(|l| l.key != owner.primary);
            let (pessimistic, prewritten): (Vec<&Lock>, Vec<&Lock>) =
                met.partition(|l| l.is_pessimistic());
            if !prewritten.is_empty() {
                let how = if owner.is_small() {
                    Cleanup::Keys
                } else {
                    Cleanup::Region
                };
                let keys = prewritten.iter().map(|l| l.key.clone()).collect();
                cleanups.push((plan(how, 0), keys));
            }
            if !pessimistic.is_empty() {
                // One request covers every for_update_ts only with u64::MAX (client-go uses
                // the lock's own when it knows it).
                let for_update_ts = match pessimistic.as_slice() {
                    [one] if !one.for_update_ts.is_zero() => one.for_update_ts.as_u64(),
                    _ => u64::MAX,
                };
                let keys = pessimistic.iter().map(|l| l.key.clone()).collect();
                cleanups.push((plan(Cleanup::Pessimistic, for_update_ts), keys));
            }
        }
        let options = RpcOptions {
            idempotent: true,
            max_execution: None,
            timeout: None,
        };
        // Popped from the back.
        self.cleanups = cleanups
            .into_iter()
            .rev()
            .map(|(plan, keys)| {
                let limits = if plan.how == Cleanup::Region {
                    // One request per region, however many keys route there.
                    BatchLimits::UNLIMITED
                } else {
                    BatchLimits {
                        max_items: usize::MAX,
                        max_bytes: crate::txn::commit::COMMIT_BATCH_SIZE,
                    }
                };
                MultiKey::new(plan, keys, limits, options)
            })
            .collect();
        self.result.cleaned += owner.locks.len();
        if self.purpose == Purpose::Read && !self.cleanups.is_empty() {
            // A read already knows whom to pass: it goes on at once and leaves the cleanup
            // to a background task (client-go's async resolve for reads).
            self.state = State::SpawnCleanup;
            return;
        }
        self.next_cleanup();
    }

    fn next_cleanup(&mut self) {
        self.state = match self.cleanups.pop() {
            Some(m) => State::Cleaning(Box::new(m)),
            None => State::Next,
        };
    }

    /// A write's cleanup replies: a key error fails the resolution (the locks must go).
    /// (Reads clean up in the background and ignore failures.)
    fn after_cleanup(&self, replies: Vec<(Vec<Key>, TikvResponse)>) -> Result<(), Error> {
        for (keys, reply) in replies {
            let failure = match reply {
                TikvResponse::KvResolveLock(r) => r.error.map(|e| format!("ResolveLock: {e:?}")),
                TikvResponse::KvPessimisticRollback(r) => r
                    .errors
                    .first()
                    .map(|e| format!("PessimisticRollback: {e:?}")),
                other => Some(format!("unexpected reply {}", other.method_name())),
            };
            if let Some(message) = failure {
                return Err(Error::KeyError {
                    key: keys.first().cloned().unwrap_or_default(),
                    message,
                });
            }
        }
        Ok(())
    }

    fn finish(&mut self, result: Result<Resolved, Error>) -> Step<Result<Resolved, Error>> {
        self.state = State::Done;
        self.claim = None;
        Step::Done(result)
    }
}

impl Machine for ResolveLocks {
    type Output = Result<Resolved, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                State::Done
                | State::WaitingTs(_)
                | State::SleepingBeforeTs(_)
                | State::WaitingForOther(_) => {
                    return Step::Wait;
                }
                State::Next => {
                    // Done with the previous owner: others may check it now.
                    self.claim = None;
                    let Some(owner) = self.owners.pop() else {
                        self.current = None;
                        let result = std::mem::take(&mut self.result);
                        return self.finish(Ok(result));
                    };
                    let known = cx.txn_statuses.get(owner.start_ts);
                    // A TTL-0 lock is judged against the end of time: no timestamp needed.
                    let needs_ts = self.current_ts.is_zero() && owner.representative().ttl_ms != 0;
                    self.current = Some(owner);
                    match known {
                        Some(status) => {
                            let checked = Checked {
                                status,
                                action: kvrpcpb::Action::NoAction,
                                primary_lock: None,
                            };
                            self.act(cx, checked);
                        }
                        None if needs_ts => self.state = State::NeedTs,
                        None => self.state = State::Check,
                    }
                }
                State::Failed(_) => {
                    let State::Failed(e) = std::mem::replace(&mut self.state, State::Done) else {
                        continue; // matched just above
                    };
                    return self.finish(Err(*e));
                }
                State::NeedTs => {
                    let id = cx.next_id();
                    self.state = State::WaitingTs(id);
                    return Step::Effect(Effect::Tso { id, count: 1 });
                }
                State::TsoFailed(error) => {
                    match cx.backoff_sleep(BackoffKind::PdRpc, None, error) {
                        Ok(sleep) => {
                            self.state = State::SleepingBeforeTs(sleep.id());
                            return Step::Effect(sleep);
                        }
                        // Without a current timestamp no lock can be judged.
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                State::Check => {
                    let Some(owner) = self.current.as_ref() else {
                        self.state = State::Next;
                        continue;
                    };
                    if self.claim.is_none() {
                        // Decided meanwhile by another resolution?
                        if let Some(status) = cx.txn_statuses.get(owner.start_ts) {
                            let checked = Checked {
                                status,
                                action: kvrpcpb::Action::NoAction,
                                primary_lock: None,
                            };
                            self.act(cx, checked);
                            continue;
                        }
                        match cx.txn_statuses.claim(owner.start_ts) {
                            Some(claim) => self.claim = Some(claim),
                            None => {
                                // Another resolution is asking this primary right now: its
                                // answer will be in the cache in a round trip.
                                let why = Error::KeyError {
                                    key: owner.primary.clone(),
                                    message: format!(
                                        "waiting for another status check of transaction {}",
                                        owner.start_ts.as_u64()
                                    ),
                                };
                                let cap = Some(std::time::Duration::from_millis(2));
                                match cx.backoff_sleep(BackoffKind::TxnLockFast, cap, &why) {
                                    Ok(sleep) => {
                                        self.state = State::WaitingForOther(sleep.id());
                                        return Step::Effect(sleep);
                                    }
                                    Err(e) => return self.finish(Err(e)),
                                }
                            }
                        }
                    }
                    self.state = State::Checking(Box::new(self.check_request(owner)));
                }
                State::Checking(m) => {
                    let reply = ready!(m.poll(cx));
                    let Some(mut owner) = self.current.take() else {
                        self.state = State::Next;
                        continue;
                    };
                    let checked = reply.and_then(|r| self.checked(&mut owner, r));
                    self.current = Some(owner);
                    match checked {
                        Ok(Some(checked)) => self.act(cx, checked),
                        Ok(None) => self.state = State::Check,
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                State::CheckingSecondaries(m, _) => {
                    let replies = ready!(m.poll(cx));
                    let State::CheckingSecondaries(_, mut check) =
                        std::mem::replace(&mut self.state, State::Next)
                    else {
                        continue; // matched just above
                    };
                    match replies.and_then(|r| self.after_secondaries(r, &mut check)) {
                        Ok(SecondaryVerdict::Decided(status)) => {
                            if let Some(owner) = &self.current {
                                cx.txn_statuses.insert(owner.start_ts, status);
                            }
                            self.clean(status, Some(check.keys));
                        }
                        Ok(SecondaryVerdict::NotAsyncCommit) => {
                            if let Some(owner) = self.current.as_mut() {
                                owner.force_sync = true;
                            }
                            self.state = State::Check;
                        }
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                State::SpawnCleanup => {
                    let task = CleanupTask {
                        queue: std::mem::take(&mut self.cleanups),
                    };
                    let backoff =
                        Backoffer::new("resolve locks", cx.config.budget(budget::CLEANUP));
                    let task = Detached::new("resolve locks", backoff, task);
                    self.state = State::Next;
                    // No outcome to wait for: the executor polls again at once.
                    let id = cx.next_id();
                    return Step::Effect(Effect::Spawn { id, task });
                }
                State::Cleaning(m) => {
                    let replies = ready!(m.poll(cx));
                    match replies.and_then(|r| self.after_cleanup(r)) {
                        Ok(()) => self.next_cleanup(),
                        Err(e) => return self.finish(Err(e)),
                    }
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::WaitingTs(want) if *want == id => match outcome {
                Outcome::Timestamps(Ok(ts)) => {
                    self.current_ts = ts;
                    self.state = State::Check;
                }
                Outcome::Timestamps(Err(e)) => self.state = State::TsoFailed(Box::new(e)),
                _ => {}
            },
            State::SleepingBeforeTs(want) if *want == id => self.state = State::NeedTs,
            State::WaitingForOther(want) if *want == id => self.state = State::Check,
            State::Checking(m) => m.handle(cx, id, outcome),
            State::CheckingSecondaries(m, _) => m.handle(cx, id, outcome),
            State::Cleaning(m) => m.handle(cx, id, outcome),
            _ => {}
        }
    }
}

/// The background cleanup of a read's resolution: the queued requests, one kind after
/// another, failures ignored (the locks stay for the next reader, who passes or cleans them).
#[derive(Debug)]
struct CleanupTask {
    /// Popped from the back.
    queue: Vec<MultiKey<CleanupPlan>>,
}

impl Machine for CleanupTask {
    type Output = ();

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<()> {
        loop {
            let Some(m) = self.queue.last_mut() else {
                return Step::Done(());
            };
            match m.poll(cx) {
                Step::Effect(e) => return Step::Effect(e),
                Step::Wait => return Step::Wait,
                Step::Done(_) => {
                    self.queue.pop();
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        if let Some(m) = self.queue.last_mut() {
            m.handle(cx, id, outcome);
        }
    }
}

#[derive(Debug)]
enum StatusState {
    NeedTs,
    WaitingTs(EffectId),
    TsoFailed(Box<Error>),
    SleepingBeforeTs(EffectId),
    Checking(Box<SingleKey>),
    Done,
}

/// Asks a transaction's primary for its status (client-go's `LockResolver.GetTxnStatus`): at
/// a fresh timestamp, rolling back a transaction whose primary lock has expired or was never
/// written (TiKV then writes a rollback record, so that a late prewrite cannot revive it). A
/// decided outcome is shared through the client's status cache.
#[derive(Debug)]
pub struct CheckTxnStatus {
    codec: crate::keyspace::KeyspaceCodec,
    /// Stored form.
    primary: Key,
    start_ts: Timestamp,
    caller_start_ts: Timestamp,
    state: StatusState,
}

impl CheckTxnStatus {
    /// Checks the transaction started at `start_ts` whose primary is `primary` (a user key
    /// of `codec`'s keyspace), on behalf of a caller started at `caller_start_ts` (zero for
    /// none: TiKV then pushes nothing).
    pub fn new(
        codec: crate::keyspace::KeyspaceCodec,
        primary: Key,
        start_ts: Timestamp,
        caller_start_ts: Timestamp,
    ) -> Self {
        CheckTxnStatus {
            codec,
            primary: codec.encode(primary),
            start_ts,
            caller_start_ts,
            state: StatusState::NeedTs,
        }
    }

    fn status(&self, response: TikvResponse) -> Result<TxnStatus, Error> {
        let TikvResponse::KvCheckTxnStatus(r) = response else {
            return Err(Error::KeyError {
                key: self.primary.clone(),
                message: "unexpected reply to CheckTxnStatus".into(),
            });
        };
        if let Some(e) = &r.error {
            return Err(match key_error(e, self.start_ts).on_key(&self.primary) {
                KeyErrorKind::Fail(e) => e,
                other => Error::KeyError {
                    key: self.primary.clone(),
                    message: format!("CheckTxnStatus: {other:?}"),
                },
            });
        }
        Ok(if r.commit_version > 0 {
            TxnStatus::Committed(Timestamp::from_u64(r.commit_version))
        } else if r.lock_ttl > 0 {
            TxnStatus::Alive { ttl_ms: r.lock_ttl }
        } else {
            TxnStatus::RolledBack
        })
    }

    fn finish(&mut self, result: Result<TxnStatus, Error>) -> Step<Result<TxnStatus, Error>> {
        self.state = StatusState::Done;
        Step::Done(self.codec.decode_result(result))
    }
}

impl Machine for CheckTxnStatus {
    type Output = Result<TxnStatus, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        match &mut self.state {
            StatusState::Done | StatusState::WaitingTs(_) | StatusState::SleepingBeforeTs(_) => {
                Step::Wait
            }
            StatusState::NeedTs => {
                if let Some(status) = cx.txn_statuses.get(self.start_ts) {
                    return self.finish(Ok(status));
                }
                let id = cx.next_id();
                self.state = StatusState::WaitingTs(id);
                Step::Effect(Effect::Tso { id, count: 1 })
            }
            StatusState::TsoFailed(error) => {
                match cx.backoff_sleep(BackoffKind::PdRpc, None, error) {
                    Ok(sleep) => {
                        self.state = StatusState::SleepingBeforeTs(sleep.id());
                        Step::Effect(sleep)
                    }
                    Err(e) => self.finish(Err(e)),
                }
            }
            StatusState::Checking(m) => {
                let reply = ready!(m.poll(cx));
                let status = reply.and_then(|r| self.status(r));
                if let Ok(status @ (TxnStatus::Committed(_) | TxnStatus::RolledBack)) = status {
                    // With rollback_if_not_exist, "gone without a commit" is final.
                    cx.txn_statuses.insert(self.start_ts, status);
                }
                self.finish(status)
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            StatusState::WaitingTs(want) if *want == id => match outcome {
                Outcome::Timestamps(Ok(now)) => {
                    let request = TikvRequest::KvCheckTxnStatus(kvrpcpb::CheckTxnStatusRequest {
                        primary_key: self.primary.to_bytes(),
                        lock_ts: self.start_ts.as_u64(),
                        caller_start_ts: self.caller_start_ts.as_u64(),
                        current_ts: now.as_u64(),
                        rollback_if_not_exist: true,
                        verify_is_primary: true,
                        ..Default::default()
                    });
                    let m = SingleKey::new(self.primary.clone(), request, RpcOptions::READ);
                    self.state = StatusState::Checking(Box::new(m));
                }
                Outcome::Timestamps(Err(e)) => self.state = StatusState::TsoFailed(Box::new(e)),
                _ => {}
            },
            StatusState::SleepingBeforeTs(want) if *want == id => self.state = StatusState::NeedTs,
            StatusState::Checking(m) => m.handle(cx, id, outcome),
            _ => {}
        }
    }
}
