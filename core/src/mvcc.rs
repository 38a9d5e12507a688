//! MVCC debug views (`MvccGetByKey`, `MvccGetByStartTs`): a key's lock, its write records
//! newest first and the long values kept beside them — what an operator looks at when a
//! transaction's outcome is in doubt.
//!
//! By key, one request to the key's region. By start timestamp, TiKV looks in one region per
//! request, so the regions are walked in key order until one names a key (a transaction that
//! only left locks has no write record and is not found).

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Cx, EffectId, Machine, Outcome, Step};
use crate::plan::{RangePlan, RangeWalk, SingleKey};
use crate::ready;
use crate::region::Region;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;

/// What a lock or write record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MvccOp {
    /// Writes a value.
    Put,
    /// Deletes the key.
    Delete,
    /// Locks without writing (`SELECT ... FOR UPDATE` committed as a lock record).
    Lock,
    /// A rollback record.
    Rollback,
    /// A pessimistic lock.
    PessimisticLock,
    /// A value this client does not know (a newer server's).
    Other(i32),
}

impl MvccOp {
    fn from_i32(v: i32) -> Self {
        use kvrpcpb::Op;
        match Op::try_from(v) {
            Ok(Op::Put) => MvccOp::Put,
            Ok(Op::Del) => MvccOp::Delete,
            Ok(Op::Lock) => MvccOp::Lock,
            Ok(Op::Rollback) => MvccOp::Rollback,
            Ok(Op::PessimisticLock) => MvccOp::PessimisticLock,
            _ => MvccOp::Other(v),
        }
    }
}

/// A key's lock, as TiKV's debug view shows it (TiKV fills only these fields).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MvccLock {
    /// What the lock will write.
    pub op: MvccOp,
    /// The owner's start timestamp.
    pub start_ts: Timestamp,
    /// The owner's primary key.
    pub primary: Key,
    /// The value, when short enough to live in the lock.
    pub short_value: Bytes,
}

/// One write record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MvccWrite {
    /// What it did.
    pub op: MvccOp,
    /// The writer's start timestamp.
    pub start_ts: Timestamp,
    /// Its commit timestamp.
    pub commit_ts: Timestamp,
    /// The value, when short enough to live in the record.
    pub short_value: Bytes,
}

/// A key's MVCC state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MvccInfo {
    /// Its lock, if any.
    pub lock: Option<MvccLock>,
    /// Its write records, newest first.
    pub writes: Vec<MvccWrite>,
    /// Long values (by the writer's start timestamp), newest first.
    pub values: Vec<(Timestamp, Bytes)>,
}

impl MvccInfo {
    /// From TiKV's answer; the lock's primary is given in user form by `codec`.
    fn from_proto(info: kvrpcpb::MvccInfo, codec: &KeyspaceCodec) -> Result<Self, Error> {
        let lock = match info.lock {
            Some(l) => Some(MvccLock {
                op: MvccOp::from_i32(l.r#type),
                start_ts: Timestamp::from_u64(l.start_ts),
                primary: codec.decode(Key::from(l.primary))?,
                short_value: l.short_value,
            }),
            None => None,
        };
        Ok(MvccInfo {
            lock,
            writes: info
                .writes
                .into_iter()
                .map(|w| MvccWrite {
                    op: MvccOp::from_i32(w.r#type),
                    start_ts: Timestamp::from_u64(w.start_ts),
                    commit_ts: Timestamp::from_u64(w.commit_ts),
                    short_value: w.short_value,
                })
                .collect(),
            values: info
                .values
                .into_iter()
                .map(|v| (Timestamp::from_u64(v.start_ts), v.value))
                .collect(),
        })
    }

    /// Whether nothing is recorded for the key.
    pub fn is_empty(&self) -> bool {
        self.lock.is_none() && self.writes.is_empty() && self.values.is_empty()
    }
}

fn storage_error(key: &Key, method: &str, error: &str) -> Error {
    Error::KeyError {
        key: key.clone(),
        message: format!("{method}: {error}"),
    }
}

/// `MvccGetByKey` of one key.
#[derive(Debug)]
pub struct MvccByKey {
    codec: KeyspaceCodec,
    key: Key,
    get: SingleKey,
    done: bool,
}

impl MvccByKey {
    /// The MVCC state of `key` (a user key of `codec`'s keyspace).
    pub fn new(codec: KeyspaceCodec, key: Key) -> Self {
        let stored = codec.encode(key.clone());
        let request = TikvRequest::MvccGetByKey(kvrpcpb::MvccGetByKeyRequest {
            key: stored.to_bytes(),
            ..Default::default()
        });
        MvccByKey {
            codec,
            key,
            get: SingleKey::new(stored, request, RpcOptions::READ),
            done: false,
        }
    }

    fn read(&self, response: TikvResponse) -> Result<MvccInfo, Error> {
        let TikvResponse::MvccGetByKey(r) = response else {
            return Err(storage_error(
                &self.key,
                "MvccGetByKey",
                &format!("answered with {}", response.method_name()),
            ));
        };
        if !r.error.is_empty() {
            return Err(storage_error(&self.key, "MvccGetByKey", &r.error));
        }
        MvccInfo::from_proto(r.info.unwrap_or_default(), &self.codec)
    }
}

impl Machine for MvccByKey {
    type Output = Result<MvccInfo, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        if self.done {
            return Step::Wait;
        }
        let reply = ready!(self.get.poll(cx));
        self.done = true;
        Step::Done(reply.and_then(|r| self.read(r)))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        self.get.handle(cx, id, outcome);
    }
}

/// Range plan: `MvccGetByStartTs` region by region until one names a key.
#[derive(Debug)]
pub struct ByStartTsPlan {
    start_ts: Timestamp,
    /// The keys looked for (TiKV answers for the whole region, which under API V2 may hold
    /// other keyspaces' keys).
    range: KeyRange,
    found: Option<(Key, kvrpcpb::MvccInfo)>,
}

impl RangePlan for ByStartTsPlan {
    type Output = Option<(Key, kvrpcpb::MvccInfo)>;

    fn build(&mut self, _region: &Region, _part: &KeyRange) -> TikvRequest {
        TikvRequest::MvccGetByStartTs(kvrpcpb::MvccGetByStartTsRequest {
            start_ts: self.start_ts.as_u64(),
            ..Default::default()
        })
    }

    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool, Error> {
        let TikvResponse::MvccGetByStartTs(r) = response else {
            return Err(storage_error(
                region.range.start(),
                "MvccGetByStartTs",
                &format!("answered with {}", response.method_name()),
            ));
        };
        if !r.error.is_empty() {
            return Err(storage_error(
                region.range.start(),
                "MvccGetByStartTs",
                &format!("region {}: {}", region.id, r.error),
            ));
        }
        let key = Key::from(r.key.clone());
        if r.key.is_empty() || !self.range.contains(&key) {
            return Ok(true);
        }
        self.found = Some((key, r.info.unwrap_or_default()));
        Ok(false)
    }

    fn finish(self) -> Self::Output {
        self.found
    }
}

/// Finds the key a transaction (by start timestamp) wrote first in key order, with its MVCC
/// state; `None` when no region knows the transaction.
#[derive(Debug)]
pub struct MvccByStartTs {
    codec: KeyspaceCodec,
    walk: RangeWalk<ByStartTsPlan>,
    done: bool,
}

impl MvccByStartTs {
    /// Looks for the transaction started at `start_ts` in `codec`'s keyspace.
    pub fn new(codec: KeyspaceCodec, start_ts: Timestamp) -> Self {
        let range = codec.encode_range(KeyRange::all());
        let plan = ByStartTsPlan {
            start_ts,
            range: range.clone(),
            found: None,
        };
        MvccByStartTs {
            codec,
            walk: RangeWalk::new(plan, range, false, RpcOptions::READ),
            done: false,
        }
    }
}

impl Machine for MvccByStartTs {
    type Output = Result<Option<(Key, MvccInfo)>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        if self.done {
            return Step::Wait;
        }
        let found = ready!(self.walk.poll(cx));
        self.done = true;
        let codec = self.codec;
        Step::Done(found.and_then(|f| match f {
            None => Ok(None),
            Some((key, info)) => {
                let key = codec.decode(key)?;
                Ok(Some((key, MvccInfo::from_proto(info, &codec)?)))
            }
        }))
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        self.walk.handle(cx, id, outcome);
    }
}

#[cfg(test)]
mod tests;
