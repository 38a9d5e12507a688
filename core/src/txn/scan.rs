//! Snapshot scans: a key range read region by region at a start timestamp, resolving the
//! locks met on the way.
//!
//! Each region is scanned with `KvScan` (forward, or backward from the range's end). A locked
//! key stops the walk there: the pairs before it are kept, the locks are resolved, and the
//! walk resumes at the locked key, so results stay in order and complete.

use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::backoff::BackoffKind;
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Cx, EffectId, Machine, Outcome, Step};
use crate::plan::{RangePlan, RangeWalk};
use crate::raw::{ABOVE_ALL_KEYS, KvPair};
use crate::ready;
use crate::region::Region;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::{KeyErrorKind, Lock, key_error};
use crate::txn::resolve::{Blocked, ReadBypass, ResolveLocks};

/// Range plan: `KvScan` at a timestamp until `limit` pairs or the first lock.
#[derive(Debug)]
pub struct KvScanPlan {
    version: u64,
    limit: u32,
    key_only: bool,
    reverse: bool,
    pairs: Vec<KvPair>,
    locks: Vec<Lock>,
    /// Where to resume after resolving `locks`: the first locked key.
    resume: Option<Key>,
    /// Owners whose locks the scan may pass.
    bypass: ReadBypass,
}

impl RangePlan for KvScanPlan {
    type Output = KvScanPlan;

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        let remaining = self.limit.saturating_sub(self.pairs.len() as u32);
        // As for raw scans: a reverse scan's `start_key` is its exclusive upper bound, and an
        // empty one would mean nothing to TiKV outside the first region.
        let (start_key, end_key) = if self.reverse {
            let upper = if part.end().is_empty() {
                Bytes::from_static(ABOVE_ALL_KEYS)
            } else {
                part.end().to_bytes()
            };
            (upper, part.start().to_bytes())
        } else {
            (part.start().to_bytes(), part.end().to_bytes())
        };
        TikvRequest::KvScan(kvrpcpb::ScanRequest {
            context: self.bypass.context(),
            start_key,
            end_key,
            limit: remaining,
            version: self.version,
            key_only: self.key_only,
            reverse: self.reverse,
            ..Default::default()
        })
    }

    fn absorb(&mut self, _region: &Region, response: TikvResponse) -> Result<bool, Error> {
        let TikvResponse::KvScan(r) = response else {
            return Err(Error::KeyError {
                key: Key::EMPTY,
                message: "unexpected reply to KvScan".into(),
            });
        };
        let ts = Timestamp::from_u64(self.version);
        if let Some(e) = &r.error {
            return match key_error(e, ts) {
                KeyErrorKind::Locked(lock) => {
                    self.resume = Some(lock.key.clone());
                    self.locks.push(lock);
                    Ok(false)
                }
                KeyErrorKind::Fail(e) => Err(e),
                other => Err(Error::KeyError {
                    key: Key::EMPTY,
                    message: format!("scan: {other:?}"),
                }),
            };
        }
        for pair in r.pairs {
            match pair.error.as_ref().map(|e| key_error(e, ts)) {
                None => {
                    if self.pairs.len() as u32 >= self.limit {
                        break;
                    }
                    let value = if self.key_only {
                        Bytes::new()
                    } else {
                        pair.value
                    };
                    self.pairs.push(KvPair {
                        key: Key::from(pair.key),
                        value,
                    });
                }
                Some(KeyErrorKind::Locked(lock)) => {
                    // Stop at the first lock; everything after it is read again later.
                    self.resume = Some(lock.key.clone());
                    self.locks.push(lock);
                    return Ok(false);
                }
                Some(KeyErrorKind::Fail(e)) => return Err(e),
                Some(other) => {
                    return Err(Error::KeyError {
                        key: Key::EMPTY,
                        message: format!("scan: {other:?}"),
                    });
                }
            }
        }
        Ok((self.pairs.len() as u32) < self.limit)
    }

    fn finish(self) -> KvScanPlan {
        self
    }
}

// Sub-machines are boxed: states move when the scan resumes.
#[derive(Debug)]
enum Phase {
    Walking(Box<RangeWalk<KvScanPlan>>),
    Resolving(Box<ResolveLocks>),
    Backoff(Blocked),
    Sleeping(EffectId),
    Resume,
    Done,
}

/// Scans `range` at `start_ts`, up to `limit` pairs, forward or backward.
#[derive(Debug)]
pub struct SnapshotScan {
    codec: KeyspaceCodec,
    start_ts: Timestamp,
    /// What is left to scan, in stored keys.
    range: KeyRange,
    limit: u32,
    key_only: bool,
    reverse: bool,
    pairs: Vec<KvPair>,
    bypass: ReadBypass,
    phase: Phase,
}

impl SnapshotScan {
    /// A scan of `range` (user keys of `codec`'s keyspace, bounded to it) as of `start_ts`,
    /// retrying within the context's budget (each region step afresh).
    pub fn new(
        codec: KeyspaceCodec,
        start_ts: Timestamp,
        range: KeyRange,
        limit: u32,
        key_only: bool,
        reverse: bool,
    ) -> Self {
        SnapshotScan {
            codec,
            start_ts,
            range: codec.encode_range(range),
            limit,
            key_only,
            reverse,
            pairs: Vec::new(),
            bypass: ReadBypass::default(),
            phase: Phase::Resume,
        }
    }

    /// Shares what the reads of one snapshot learn about lock owners (see [`ReadBypass`]).
    pub fn with_bypass(mut self, bypass: ReadBypass) -> Self {
        self.bypass = bypass;
        self
    }

    fn walk(&self) -> RangeWalk<KvScanPlan> {
        let plan = KvScanPlan {
            version: self.start_ts.as_u64(),
            limit: self.limit - self.pairs.len() as u32,
            key_only: self.key_only,
            reverse: self.reverse,
            pairs: Vec::new(),
            locks: Vec::new(),
            resume: None,
            bypass: self.bypass.clone(),
        };
        RangeWalk::new(plan, self.range.clone(), self.reverse, RpcOptions::READ)
    }
}

impl SnapshotScan {
    /// Ends the scan with the pairs found, keys (in pairs and errors) in user form.
    fn finish(&mut self, result: Result<(), Error>) -> Step<Result<Vec<KvPair>, Error>> {
        self.phase = Phase::Done;
        let pairs = result.map(|()| std::mem::take(&mut self.pairs));
        let codec = self.codec;
        Step::Done(
            codec
                .decode_result(pairs)
                .and_then(|p| codec.decode_pairs(p)),
        )
    }
}

impl Machine for SnapshotScan {
    type Output = Result<Vec<KvPair>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.phase {
                Phase::Done | Phase::Sleeping(_) => return Step::Wait,
                Phase::Resume => {
                    if self.pairs.len() as u32 >= self.limit || self.range.is_empty() {
                        return self.finish(Ok(()));
                    }
                    self.phase = Phase::Walking(Box::new(self.walk()));
                }
                Phase::Walking(m) => {
                    let plan = match ready!(m.poll(cx)) {
                        Ok(plan) => plan,
                        Err(e) => return self.finish(Err(e)),
                    };
                    self.pairs.extend(plan.pairs);
                    let Some(resume) = plan.resume else {
                        return self.finish(Ok(()));
                    };
                    // Continue from the locked key, once its lock is dealt with.
                    self.range = if self.reverse {
                        KeyRange::new(self.range.start().clone(), resume.next_key())
                    } else {
                        KeyRange::new(resume, self.range.end().clone())
                    };
                    let resolver = ResolveLocks::for_read(plan.locks, self.start_ts);
                    self.phase = Phase::Resolving(Box::new(resolver));
                }
                Phase::Resolving(m) => match ready!(m.poll(cx)) {
                    Ok(r) => {
                        self.bypass.absorb(&r);
                        self.phase = match r.must_wait() {
                            None => Phase::Resume,
                            Some(blocked) => Phase::Backoff(blocked),
                        };
                    }
                    Err(e) => return self.finish(Err(e)),
                },
                Phase::Backoff(r) => {
                    let cap = Duration::from_millis(r.wait_ms.max(1));
                    let why = Error::KeyError {
                        key: self.range.start().clone(),
                        message: format!("{} lock(s) held by running transactions", r.alive),
                    };
                    match cx.backoff_sleep(BackoffKind::TxnLockFast, Some(cap), &why) {
                        Ok(sleep) => {
                            self.phase = Phase::Sleeping(sleep.id());
                            return Step::Effect(sleep);
                        }
                        Err(e) => return self.finish(Err(e)),
                    }
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.phase {
            Phase::Walking(m) => m.handle(cx, id, outcome),
            Phase::Resolving(m) => m.handle(cx, id, outcome),
            Phase::Sleeping(want) if *want == id => self.phase = Phase::Resume,
            _ => {}
        }
    }
}
