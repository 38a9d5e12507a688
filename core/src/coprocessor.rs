//! Coprocessor passthrough (what client-go gives TiDB's coprocessor client): one request
//! payload (`tp` and `data`, e.g. a checksum) run over key ranges, split by region, each
//! region asked for its part of the ranges, the answers returned per region in key order.
//!
//! Regions are visited one after another from the first range's start. For each region the
//! request carries the parts of every remaining range it holds. A region error sends the same
//! ranges through routing again (fresh region); `other_error` "Request range exceeds bound"
//! (the region changed under the request) drops the cached region and does the same; a lock
//! (`locked`) is resolved as a reader at `start_ts` would, and the region asked again with the
//! owners the read may pass; any other `other_error` fails the operation.

use std::sync::Arc;

use tikv_proto::coprocessor as copr;

use crate::backoff::BackoffKind;
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::machine::{Cx, EffectId, LocateQuery, Machine, Outcome, Step};
use crate::region::{Region, RegionId};
use crate::request::{Locate, RegionRpc, RegionRpcResult, RpcOptions};
use crate::rpc::{TikvRequest, TikvResponse};
use crate::timestamp::Timestamp;
use crate::txn::lock::Lock;
use crate::txn::resolve::{ReadBypass, ResolveLocks};

/// TiKV's "range changed under the request" answer.
const EXCEEDS_BOUND: &str = "Request range exceeds bound";

/// One region's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopResponse {
    /// The region that answered.
    pub region: RegionId,
    /// The parts of the ranges it was asked for (stored keys).
    pub ranges: Vec<KeyRange>,
    /// Its payload (e.g. an encoded checksum response).
    pub data: bytes::Bytes,
}

#[derive(Debug)]
enum State {
    /// Find the region holding the first remaining key.
    Locate(Locate),
    Sending(Box<RegionRpc>, Vec<KeyRange>),
    Resolving(Box<ResolveLocks>, Arc<Region>, Vec<KeyRange>),
    Sleeping(EffectId, Arc<Region>, Vec<KeyRange>),
    Done,
}

/// Runs a coprocessor payload over ranges of stored keys (see the module docs).
#[derive(Debug)]
pub struct Coprocessor {
    tp: i64,
    data: bytes::Bytes,
    start_ts: Timestamp,
    /// What is left, in key order (bounded ends: TiKV reads an empty end as an empty range).
    ranges: Vec<KeyRange>,
    bypass: ReadBypass,
    out: Vec<CopResponse>,
    state: State,
    /// The output was handed over.
    finished: bool,
}

impl Coprocessor {
    /// Runs payload `data` of type `tp` at `start_ts` over `ranges` (stored keys; sorted and
    /// merged here; an unbounded end is refused, TiKV would read nothing).
    pub fn new(
        tp: i64,
        data: bytes::Bytes,
        start_ts: Timestamp,
        mut ranges: Vec<KeyRange>,
    ) -> Result<Self, Error> {
        if let Some(r) = ranges.iter().find(|r| r.end().is_empty() || r.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "coprocessor ranges need a bounded, non-empty extent, got {r}"
            )));
        }
        ranges.sort_by(|a, b| a.start().cmp(b.start()));
        let mut merged: Vec<KeyRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start() <= last.end() => {
                    if r.end() > last.end() {
                        *last = KeyRange::new(last.start().clone(), r.end().clone());
                    }
                }
                _ => merged.push(r),
            }
        }
        let state = match merged.first() {
            Some(first) => State::Locate(Locate::new(LocateQuery::Key(first.start().clone()))),
            None => State::Done,
        };
        Ok(Coprocessor {
            tp,
            data,
            start_ts,
            ranges: merged,
            bypass: ReadBypass::default(),
            out: Vec::new(),
            state,
            finished: false,
        })
    }

    /// The parts of the remaining ranges inside `region`.
    fn parts(&self, region: &Region) -> Vec<KeyRange> {
        self.ranges
            .iter()
            .filter_map(|r| r.intersect(&region.range))
            .collect()
    }

    fn send(&mut self, region: Arc<Region>, parts: Vec<KeyRange>) {
        let context = self.bypass.context().unwrap_or_default();
        let request = TikvRequest::Coprocessor(copr::Request {
            context: Some(context),
            tp: self.tp,
            data: self.data.clone(),
            start_ts: self.start_ts.as_u64(),
            ranges: parts
                .iter()
                .map(|r| copr::KeyRange {
                    start: r.start().to_bytes(),
                    end: r.end().to_bytes(),
                })
                .collect(),
            ..Default::default()
        });
        let rpc = RegionRpc::new(region, request, RpcOptions::READ);
        self.state = State::Sending(Box::new(rpc), parts);
    }

    /// Drops what `region` answered for from the remaining ranges, and moves on.
    fn advance(&mut self, region: &Region) {
        let end = region.range.end().clone();
        self.ranges.retain(|r| !end.is_empty() && r.end() > &end);
        if let Some(first) = self.ranges.first_mut() {
            if !end.is_empty() && first.start() < &end {
                *first = KeyRange::new(end, first.end().clone());
            }
        }
        self.relocate();
    }

    fn relocate(&mut self) {
        self.state = match self.ranges.first() {
            Some(first) => State::Locate(Locate::new(LocateQuery::Key(first.start().clone()))),
            None => State::Done,
        };
    }

    fn finish(&mut self, result: Result<(), Error>) -> Step<Result<Vec<CopResponse>, Error>> {
        self.state = State::Done;
        self.finished = true;
        Step::Done(result.map(|()| std::mem::take(&mut self.out)))
    }

    fn on_response(
        &mut self,
        cx: &mut Cx<'_>,
        region: Arc<Region>,
        parts: Vec<KeyRange>,
        r: copr::Response,
    ) -> Result<(), Error> {
        if let Some(lock) = r.locked {
            let lock = Lock::from(&lock);
            let resolve = ResolveLocks::for_read(vec![lock], self.start_ts);
            self.state = State::Resolving(Box::new(resolve), region, parts);
            return Ok(());
        }
        if r.other_error.contains(EXCEEDS_BOUND) {
            cx.regions.invalidate(region.ver_id());
            self.relocate();
            return Ok(());
        }
        if !r.other_error.is_empty() {
            return Err(Error::KeyError {
                key: parts
                    .first()
                    .map(|p| p.start().clone())
                    .unwrap_or(Key::EMPTY),
                message: format!("coprocessor in region {}: {}", region.id, r.other_error),
            });
        }
        self.out.push(CopResponse {
            region: region.id,
            ranges: parts,
            data: r.data,
        });
        self.advance(&region);
        Ok(())
    }
}

impl Machine for Coprocessor {
    type Output = Result<Vec<CopResponse>, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                State::Done if self.finished => return Step::Wait,
                // Every range answered.
                State::Done => return self.finish(Ok(())),
                State::Locate(locate) => {
                    let region = match crate::ready!(locate.poll(cx)) {
                        Ok(region) => region,
                        Err(e) => return self.finish(Err(e)),
                    };
                    let parts = self.parts(&region);
                    if parts.is_empty() {
                        // PD's region does not cover the key asked: look again.
                        self.relocate();
                        continue;
                    }
                    self.send(region, parts);
                }
                State::Sending(rpc, _) => {
                    let result = crate::ready!(rpc.poll(cx));
                    let State::Sending(rpc, parts) =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        return Step::Wait; // matched just above
                    };
                    let region = Arc::new(rpc.region().clone());
                    match result {
                        RegionRpcResult::Response(r) => {
                            let TikvResponse::Coprocessor(r) = *r else {
                                return self.finish(Err(Error::KeyError {
                                    key: Key::EMPTY,
                                    message: "Coprocessor answered with another method".into(),
                                }));
                            };
                            if let Err(e) = self.on_response(cx, region, parts, r) {
                                return self.finish(Err(e));
                            }
                        }
                        RegionRpcResult::Relocate => self.relocate(),
                        RegionRpcResult::Failed(e) => return self.finish(Err(e)),
                    }
                }
                State::Resolving(resolve, _, _) => {
                    let resolved = crate::ready!(resolve.poll(cx));
                    let State::Resolving(_, region, parts) =
                        std::mem::replace(&mut self.state, State::Done)
                    else {
                        return Step::Wait; // matched just above
                    };
                    let resolved = match resolved {
                        Ok(r) => r,
                        Err(e) => return self.finish(Err(e)),
                    };
                    self.bypass.absorb(&resolved);
                    if let Some(blocked) = resolved.must_wait() {
                        let why = Error::KeyError {
                            key: parts
                                .first()
                                .map(|p| p.start().clone())
                                .unwrap_or(Key::EMPTY),
                            message: format!("{} lock(s) of running transactions", blocked.alive),
                        };
                        let cap = Some(std::time::Duration::from_millis(blocked.wait_ms.max(1)));
                        match cx.backoff_sleep(BackoffKind::TxnLockFast, cap, &why) {
                            Ok(sleep) => {
                                self.state = State::Sleeping(sleep.id(), region, parts);
                                return Step::Effect(sleep);
                            }
                            Err(e) => return self.finish(Err(e)),
                        }
                    }
                    self.send(region, parts);
                }
                State::Sleeping(..) => return Step::Wait,
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::Locate(l) => l.handle(cx, id, outcome),
            State::Sending(rpc, _) => rpc.handle(cx, id, outcome),
            State::Resolving(r, _, _) => r.handle(cx, id, outcome),
            State::Sleeping(want, _, _) if *want == id => {
                let State::Sleeping(_, region, parts) =
                    std::mem::replace(&mut self.state, State::Done)
                else {
                    return;
                };
                // Ask again: the lock may be gone now (or resolvable).
                self.send(region, parts);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
