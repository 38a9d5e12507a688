//! Snapshot reads: the values committed before a start timestamp, resolving the locks they
//! run into.
//!
//! A read that meets a lock hands it to [`ResolveLocks::for_read`]. If the lock's owner
//! committed, rolled back, or can only commit above the read's timestamp, the read is retried
//! at once, telling TiKV which owners it may pass (`resolved_locks` / `committed_locks`, kept
//! for the rest of the read); if the owner is still running and may commit below the read's
//! timestamp, the read backs off (`txnLockFast`, capped by the lock's remaining TTL) and
//! retries.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::backoff::BackoffKind;
use crate::error::Error;
use crate::key::Key;
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Cx, EffectId, Machine, Outcome, Step};
use crate::plan::{BatchLimits, KeyBatchPlan, MultiKey, SingleKey};
use crate::raw::KvPair;
use crate::ready;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::{KeyErrorKind, Lock, key_error};
use crate::txn::resolve::{Blocked, ReadBypass, ResolveLocks, Resolved};

/// The read-side loop shared by point and batch reads: read, resolve, maybe wait, read again.
#[derive(Debug)]
enum Phase<R> {
    Reading(Box<R>),
    Resolving(Box<ResolveLocks>),
    Sleeping(EffectId),
    Backoff(Blocked),
    Ready,
    Done,
}

/// A reply of the wrong kind for a read of `key` (the router already fails those naming the
/// store; this keeps the machines total).
fn unexpected(key: &Key, what: &str) -> Error {
    Error::KeyError {
        key: key.clone(),
        message: format!("unexpected reply to {what}"),
    }
}

/// After resolving: remember whom to pass, then read again now, or sleep until a live lock
/// may have gone.
fn after_resolve<R>(resolved: Resolved, bypass: &ReadBypass) -> Phase<R> {
    bypass.absorb(&resolved);
    match resolved.must_wait() {
        None => Phase::Ready,
        Some(blocked) => Phase::Backoff(blocked),
    }
}

/// Sleeps before reading again; `key` is one of the keys still locked (it names the wait
/// in the error if the budget runs out).
fn sleep_step<R, T>(
    resolved: Blocked,
    key: Key,
    cx: &mut Cx<'_>,
    phase: &mut Phase<R>,
) -> Step<Result<T, Error>> {
    let cap = std::time::Duration::from_millis(resolved.wait_ms.max(1));
    let why = Error::KeyError {
        key,
        message: format!(
            "{} lock(s) still held by running transactions",
            resolved.alive
        ),
    };
    match cx.backoff_sleep(BackoffKind::TxnLockFast, Some(cap), &why) {
        Ok(sleep) => {
            *phase = Phase::Sleeping(sleep.id());
            Step::Effect(sleep)
        }
        Err(e) => {
            *phase = Phase::Done;
            Step::Done(Err(e))
        }
    }
}

/// Reads one key at `start_ts`, retrying within the context's budget.
#[derive(Debug)]
pub struct SnapshotGet {
    codec: KeyspaceCodec,
    /// Stored form.
    key: Key,
    start_ts: Timestamp,
    bypass: ReadBypass,
    phase: Phase<SingleKey>,
}

impl SnapshotGet {
    /// Reads `key` (a user key of `codec`'s keyspace) as of `start_ts`.
    pub fn new(codec: KeyspaceCodec, key: Key, start_ts: Timestamp) -> Self {
        SnapshotGet {
            codec,
            key: codec.encode(key),
            start_ts,
            bypass: ReadBypass::default(),
            phase: Phase::Ready,
        }
    }

    /// Shares what the reads of one snapshot learn about lock owners (see [`ReadBypass`]).
    pub fn with_bypass(mut self, bypass: ReadBypass) -> Self {
        self.bypass = bypass;
        self
    }

    fn read(&self) -> SingleKey {
        let request = TikvRequest::KvGet(kvrpcpb::GetRequest {
            context: self.bypass.context(),
            key: self.key.to_bytes(),
            version: self.start_ts.as_u64(),
            ..Default::default()
        });
        SingleKey::new(self.key.clone(), request, RpcOptions::READ)
    }

    fn finish<T>(&mut self, result: Result<T, Error>) -> Step<Result<T, Error>> {
        self.phase = Phase::Done;
        Step::Done(result)
    }

    /// What the read's reply means: the value, or a lock to resolve.
    fn on_reply(&self, reply: TikvResponse) -> Result<Result<Option<Bytes>, Lock>, Error> {
        let TikvResponse::KvGet(r) = reply else {
            return Err(unexpected(&self.key, "KvGet"));
        };
        match &r.error {
            None => Ok(Ok((!r.not_found).then_some(r.value))),
            Some(e) => match key_error(e, self.start_ts).on_key(&self.key) {
                KeyErrorKind::Locked(lock) => Ok(Err(lock)),
                KeyErrorKind::Fail(e) => Err(e),
                other => Err(Error::KeyError {
                    key: self.key.clone(),
                    message: format!("{other:?}"),
                }),
            },
        }
    }
}

impl Machine for SnapshotGet {
    type Output = Result<Option<Bytes>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        let codec = self.codec;
        self.poll_stored(cx).map(|r| codec.decode_result(r))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.phase {
            Phase::Reading(m) => m.handle(cx, id, outcome),
            Phase::Resolving(m) => m.handle(cx, id, outcome),
            Phase::Sleeping(want) if *want == id => self.phase = Phase::Ready,
            _ => {}
        }
    }
}

impl SnapshotGet {
    /// The read in stored keys; `poll` turns the keys its errors name into user keys.
    fn poll_stored(&mut self, cx: &mut Cx<'_>) -> Step<Result<Option<Bytes>, Error>> {
        loop {
            match &mut self.phase {
                Phase::Done | Phase::Sleeping(_) => return Step::Wait,
                Phase::Ready => self.phase = Phase::Reading(Box::new(self.read())),
                Phase::Backoff(blocked) => {
                    let blocked = *blocked;
                    return sleep_step(blocked, self.key.clone(), cx, &mut self.phase);
                }
                Phase::Reading(m) => {
                    let reply = ready!(m.poll(cx));
                    match reply.and_then(|r| self.on_reply(r)) {
                        Ok(Ok(value)) => return self.finish(Ok(value)),
                        Ok(Err(lock)) => {
                            let resolver = ResolveLocks::for_read(vec![lock], self.start_ts);
                            self.phase = Phase::Resolving(Box::new(resolver));
                        }
                        Err(e) => return self.finish(Err(e)),
                    }
                }
                Phase::Resolving(m) => match ready!(m.poll(cx)) {
                    Ok(resolved) => self.phase = after_resolve(resolved, &self.bypass),
                    Err(e) => return self.finish(Err(e)),
                },
            }
        }
    }
}

/// Batch plan: `KvBatchGet` at a timestamp.
#[derive(Debug)]
pub struct BatchGetPlan {
    version: u64,
    bypass: ReadBypass,
}

impl KeyBatchPlan for BatchGetPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::KvBatchGet(kvrpcpb::BatchGetRequest {
            context: self.bypass.context(),
            keys: items.iter().map(Key::to_bytes).collect(),
            version: self.version,
            ..Default::default()
        })
    }
}

/// Reads many keys at `start_ts`; only the keys that met locks are read again.
#[derive(Debug)]
pub struct SnapshotBatchGet {
    codec: KeyspaceCodec,
    start_ts: Timestamp,
    limits: BatchLimits,
    remaining: Vec<Key>,
    found: Vec<KvPair>,
    bypass: ReadBypass,
    phase: Phase<MultiKey<BatchGetPlan>>,
}

impl SnapshotBatchGet {
    /// Reads `keys` (user keys of `codec`'s keyspace) as of `start_ts`, `max_keys` per
    /// request, retrying within the context's budget.
    pub fn new(codec: KeyspaceCodec, keys: Vec<Key>, start_ts: Timestamp, max_keys: usize) -> Self {
        let mut keys = codec.encode_all(keys);
        keys.sort();
        keys.dedup();
        SnapshotBatchGet {
            codec,
            start_ts,
            limits: BatchLimits {
                max_items: max_keys.max(1),
                max_bytes: usize::MAX,
            },
            remaining: keys,
            found: Vec::new(),
            bypass: ReadBypass::default(),
            phase: Phase::Ready,
        }
    }

    /// Shares what the reads of one snapshot learn about lock owners (see [`ReadBypass`]).
    pub fn with_bypass(mut self, bypass: ReadBypass) -> Self {
        self.bypass = bypass;
        self
    }

    /// Collects values and locks from the batch replies.
    fn absorb(&mut self, replies: Vec<(Vec<Key>, TikvResponse)>) -> Result<Vec<Lock>, Error> {
        let mut locks = Vec::new();
        for (keys, reply) in replies {
            let TikvResponse::KvBatchGet(r) = reply else {
                return Err(unexpected(
                    &keys.first().cloned().unwrap_or_default(),
                    "KvBatchGet",
                ));
            };
            if let Some(e) = &r.error {
                match key_error(e, self.start_ts) {
                    // A whole-batch lock error: re-read the batch after resolving.
                    KeyErrorKind::Locked(lock) => {
                        locks.push(lock);
                        self.remaining.extend(keys);
                        continue;
                    }
                    KeyErrorKind::Fail(e) => return Err(e),
                    other => {
                        return Err(Error::KeyError {
                            key: keys.first().cloned().unwrap_or_default(),
                            message: format!("{other:?}"),
                        });
                    }
                }
            }
            for pair in r.pairs {
                match pair.error.as_ref().map(|e| key_error(e, self.start_ts)) {
                    None => self.found.push(KvPair {
                        key: Key::from(pair.key),
                        value: pair.value,
                    }),
                    // TiKV leaves `pair.key` empty on errors: the key is in the lock.
                    Some(KeyErrorKind::Locked(lock)) => {
                        self.remaining.push(lock.key.clone());
                        locks.push(lock);
                    }
                    Some(KeyErrorKind::Fail(e)) => return Err(e),
                    Some(other) => {
                        return Err(Error::KeyError {
                            key: Key::from(pair.key),
                            message: format!("{other:?}"),
                        });
                    }
                }
            }
        }
        Ok(locks)
    }
}

impl Machine for SnapshotBatchGet {
    type Output = Result<Vec<KvPair>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        let codec = self.codec;
        self.poll_stored(cx)
            .map(|r| codec.decode_result(r).and_then(|p| codec.decode_pairs(p)))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.phase {
            Phase::Reading(m) => m.handle(cx, id, outcome),
            Phase::Resolving(m) => m.handle(cx, id, outcome),
            Phase::Sleeping(want) if *want == id => self.phase = Phase::Ready,
            _ => {}
        }
    }
}

impl SnapshotBatchGet {
    /// The reads in stored keys; `poll` returns user keys.
    fn poll_stored(&mut self, cx: &mut Cx<'_>) -> Step<Result<Vec<KvPair>, Error>> {
        loop {
            match &mut self.phase {
                Phase::Done | Phase::Sleeping(_) => return Step::Wait,
                Phase::Ready => {
                    if self.remaining.is_empty() {
                        let mut found = std::mem::take(&mut self.found);
                        found.sort();
                        self.phase = Phase::Done;
                        return Step::Done(Ok(found));
                    }
                    let keys = std::mem::take(&mut self.remaining);
                    let plan = BatchGetPlan {
                        version: self.start_ts.as_u64(),
                        bypass: self.bypass.clone(),
                    };
                    let m = MultiKey::new(plan, keys, self.limits, RpcOptions::READ);
                    self.phase = Phase::Reading(Box::new(m));
                }
                Phase::Backoff(blocked) => {
                    let blocked = *blocked;
                    let key = self.remaining.first().cloned().unwrap_or_default();
                    return sleep_step(blocked, key, cx, &mut self.phase);
                }
                Phase::Reading(m) => {
                    let replies = ready!(m.poll(cx));
                    match replies.and_then(|r| self.absorb(r)) {
                        Ok(locks) if locks.is_empty() => self.phase = Phase::Ready,
                        Ok(locks) => {
                            let resolver = ResolveLocks::for_read(locks, self.start_ts);
                            self.phase = Phase::Resolving(Box::new(resolver));
                        }
                        Err(e) => {
                            self.phase = Phase::Done;
                            return Step::Done(Err(e));
                        }
                    }
                }
                Phase::Resolving(m) => match ready!(m.poll(cx)) {
                    Ok(resolved) => self.phase = after_resolve(resolved, &self.bypass),
                    Err(e) => {
                        self.phase = Phase::Done;
                        return Step::Done(Err(e));
                    }
                },
            }
        }
    }
}
