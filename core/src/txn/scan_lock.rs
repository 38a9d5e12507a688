//! `ScanLock` over a key range: the locks of transactions started at or before a timestamp,
//! region by region, in key order (what GC and operators list before resolving).

use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Cx, EffectId, Machine, Outcome, Step};
use crate::plan::{RangePlan, RangeWalk};
use crate::ready;
use crate::region::Region;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::Lock;

/// Locks asked of one region per request (client-go's GC uses 1024).
pub const SCAN_LOCK_PAGE: u32 = 1024;

/// Range plan: `KvScanLock` until `limit` locks are found.
#[derive(Debug)]
pub struct ScanLockPlan {
    max_ts: Timestamp,
    limit: usize,
    locks: Vec<Lock>,
    /// Where to continue when a region had more locks than one page.
    resume: Option<Key>,
}

impl RangePlan for ScanLockPlan {
    type Output = ScanLockPlan;

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        let wanted = self.limit.saturating_sub(self.locks.len());
        TikvRequest::KvScanLock(kvrpcpb::ScanLockRequest {
            max_version: self.max_ts.as_u64(),
            start_key: part.start().to_bytes(),
            end_key: part.end().to_bytes(),
            limit: u32::try_from(wanted)
                .unwrap_or(u32::MAX)
                .min(SCAN_LOCK_PAGE),
            ..Default::default()
        })
    }

    fn absorb(&mut self, _region: &Region, response: TikvResponse) -> Result<bool, Error> {
        let TikvResponse::KvScanLock(r) = response else {
            return Err(Error::KeyError {
                key: Key::EMPTY,
                message: format!("ScanLock answered with {}", response.method_name()),
            });
        };
        if let Some(e) = r.error {
            return Err(Error::KeyError {
                key: Key::EMPTY,
                message: format!("ScanLock: {e:?}"),
            });
        }
        // The page limit counts a shared key's holders each, and may cut them short.
        let holders: usize = r
            .locks
            .iter()
            .map(|l| l.shared_lock_infos.len().max(1))
            .sum();
        let full_page = holders as u64 >= u64::from(SCAN_LOCK_PAGE);
        let last_shared = r
            .locks
            .last()
            .filter(|l| !l.shared_lock_infos.is_empty())
            .map(|l| Key::from(l.key.clone()));
        let before = self.locks.len();
        for lock in r.locks.iter().flat_map(Lock::all_from) {
            // A shared key read again (below) repeats the holders already listed.
            let seen = self
                .locks
                .iter()
                .rev()
                .take_while(|l| l.key == lock.key)
                .any(|l| l.start_ts == lock.start_ts);
            if !seen {
                self.locks.push(lock);
            }
        }
        if self.locks.len() >= self.limit {
            self.locks.truncate(self.limit);
            return Ok(false);
        }
        if full_page {
            // More in this region: continue after the last lock, or at the last key when
            // its holders may have been cut (unless that page brought nothing new).
            self.resume = match last_shared {
                Some(key) if self.locks.len() > before => Some(key),
                _ => self.locks.last().map(|l| l.key.next_key()),
            };
            return Ok(false);
        }
        Ok(true)
    }

    fn finish(self) -> ScanLockPlan {
        self
    }
}

/// Lists the locks in `range` of transactions started at or before `max_ts`, at most
/// `limit`, in key order.
#[derive(Debug)]
pub struct ScanLocks {
    codec: KeyspaceCodec,
    /// What is left to scan (stored keys).
    range: KeyRange,
    max_ts: Timestamp,
    limit: usize,
    found: Vec<Lock>,
    walk: Option<Box<RangeWalk<ScanLockPlan>>>,
    done: bool,
}

impl ScanLocks {
    /// Scans `range` (user keys of `codec`'s keyspace).
    pub fn new(codec: KeyspaceCodec, range: KeyRange, max_ts: Timestamp, limit: usize) -> Self {
        ScanLocks {
            codec,
            range: codec.encode_range(range),
            max_ts,
            limit,
            found: Vec::new(),
            walk: None,
            done: false,
        }
    }

    fn walk(&self) -> RangeWalk<ScanLockPlan> {
        let plan = ScanLockPlan {
            max_ts: self.max_ts,
            limit: self.limit - self.found.len(),
            locks: Vec::new(),
            resume: None,
        };
        RangeWalk::new(plan, self.range.clone(), false, RpcOptions::READ)
    }

    fn finish(&mut self, result: Result<Vec<Lock>, Error>) -> Step<Result<Vec<Lock>, Error>> {
        self.done = true;
        self.walk = None;
        let codec = self.codec;
        let result = result.and_then(|locks| {
            locks
                .into_iter()
                .map(|l| {
                    Ok(Lock {
                        key: codec.decode(l.key)?,
                        primary: codec.decode(l.primary)?,
                        ..l
                    })
                })
                .collect()
        });
        Step::Done(codec.decode_result(result))
    }
}

impl Machine for ScanLocks {
    type Output = Result<Vec<Lock>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            if self.done {
                return Step::Wait;
            }
            if self.found.len() >= self.limit || self.range.is_empty() {
                let found = std::mem::take(&mut self.found);
                return self.finish(Ok(found));
            }
            let walk = match &mut self.walk {
                Some(w) => w,
                None => {
                    let w = Box::new(self.walk());
                    self.walk.insert(w)
                }
            };
            let plan = match ready!(walk.poll(cx)) {
                Ok(plan) => plan,
                Err(e) => return self.finish(Err(e)),
            };
            self.walk = None;
            self.found.extend(plan.locks);
            match plan.resume {
                Some(resume) if self.found.len() < self.limit => {
                    self.range = KeyRange::new(resume, self.range.end().clone());
                }
                _ => {
                    let found = std::mem::take(&mut self.found);
                    return self.finish(Ok(found));
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        if let Some(w) = self.walk.as_mut() {
            w.handle(cx, id, outcome);
        }
    }
}
