//! GC's lock sweep over one key range (client-go's `ResolveLocksForRange`): every lock of a
//! transaction started at or before the safe point is settled, page by page.
//!
//! A page is at most [`SCAN_LOCK_PAGE`] locks from `KvScanLock` (walking regions in key
//! order from the cursor), handed to [`ResolveLocks::for_gc`], which settles each owner and
//! cleans its locks up wherever they route. A short page means the range is clean; a full one
//! moves the cursor to its last key (that key is scanned again, which is harmless: its lock is
//! gone or is rescanned and resolved). Each page runs within a budget of its own
//! (`budget::GC_RESOLVE_LOCK`, as client-go gives each of its iterations a fresh backoffer),
//! so a long range is not failed by the retries a handful of its regions needed.
//!
//! Keys here are stored keys: GC works on the whole key space (or a keyspace's part of it),
//! not on one client's user keys.

use crate::backoff::{Backoffer, budget};
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Budgeted, Cx, EffectId, Machine, Outcome, Step};
use crate::ready;
use crate::timestamp::Timestamp;
use crate::txn::lock::Lock;
use crate::txn::resolve::ResolveLocks;
use crate::txn::scan_lock::{SCAN_LOCK_PAGE, ScanLocks};

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepStats {
    /// Locks found below the safe point (a lock found twice, on a page boundary, counts
    /// twice).
    pub locks_found: usize,
    /// Pages scanned (`ScanLock` walks, each up to [`SCAN_LOCK_PAGE`] locks).
    pub pages: usize,
}

impl SweepStats {
    /// Adds another sweep's numbers (a range task's sub-ranges).
    pub fn add(&mut self, other: SweepStats) {
        self.locks_found += other.locks_found;
        self.pages += other.pages;
    }
}

#[derive(Debug)]
enum State {
    /// Scan the next page from the cursor.
    Scan,
    Scanning(Box<Budgeted<ScanLocks>>),
    Resolving(Box<Budgeted<ResolveLocks>>, Option<Key>),
    Done,
}

/// Settles every lock of a transaction started at or before `safe_point` in a range of stored
/// keys (see the module docs).
#[derive(Debug)]
pub struct ResolveRangeLocks {
    /// What is left to sweep.
    range: KeyRange,
    safe_point: Timestamp,
    stats: SweepStats,
    state: State,
}

impl ResolveRangeLocks {
    /// Sweeps `range` (stored keys; an empty end is the end of the key space).
    pub fn new(range: KeyRange, safe_point: Timestamp) -> Self {
        ResolveRangeLocks {
            range,
            safe_point,
            stats: SweepStats::default(),
            state: State::Scan,
        }
    }

    fn budget(cx: &Cx<'_>, what: &'static str) -> Backoffer {
        Backoffer::new(what, cx.config.budget(budget::GC_RESOLVE_LOCK))
    }

    /// Where the next page starts once `page` is resolved: `None` when the range is done.
    fn resume_after(&self, page: &[Lock]) -> Option<Key> {
        if page.len() < SCAN_LOCK_PAGE as usize {
            return None;
        }
        let last = page.last()?.key.clone();
        // The cursor must move: a page of one key's shared-lock holders alone would
        // otherwise be read forever.
        Some(if &last == self.range.start() {
            last.next_key()
        } else {
            last
        })
    }

    fn finish(&mut self, result: Result<SweepStats, Error>) -> Step<Result<SweepStats, Error>> {
        self.state = State::Done;
        Step::Done(result)
    }
}

impl Machine for ResolveRangeLocks {
    type Output = Result<SweepStats, Error>;

    fn poll(&mut self, cx: &mut Cx<'_>) -> Step<Self::Output> {
        loop {
            match &mut self.state {
                State::Done => return Step::Wait,
                State::Scan => {
                    if self.range.is_empty() {
                        let stats = self.stats;
                        return self.finish(Ok(stats));
                    }
                    let scan = ScanLocks::new(
                        KeyspaceCodec::NONE,
                        self.range.clone(),
                        self.safe_point,
                        SCAN_LOCK_PAGE as usize,
                    );
                    let backoff = Self::budget(cx, "GC: scan locks");
                    self.state = State::Scanning(Box::new(Budgeted::new(backoff, scan)));
                }
                State::Scanning(m) => {
                    let page = match ready!(m.poll(cx)) {
                        Ok(page) => page,
                        Err(e) => return self.finish(Err(e)),
                    };
                    self.stats.pages += 1;
                    self.stats.locks_found += page.len();
                    if page.is_empty() {
                        let stats = self.stats;
                        return self.finish(Ok(stats));
                    }
                    let resume = self.resume_after(&page);
                    let backoff = Self::budget(cx, "GC: resolve locks");
                    let resolve = Budgeted::new(backoff, ResolveLocks::for_gc(page));
                    self.state = State::Resolving(Box::new(resolve), resume);
                }
                State::Resolving(m, resume) => {
                    if let Err(e) = ready!(m.poll(cx)) {
                        return self.finish(Err(e));
                    }
                    match resume.take() {
                        Some(from) => {
                            self.range = KeyRange::new(from, self.range.end().clone());
                            self.state = State::Scan;
                        }
                        None => {
                            let stats = self.stats;
                            return self.finish(Ok(stats));
                        }
                    }
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<'_>, id: EffectId, outcome: Outcome) {
        match &mut self.state {
            State::Scanning(m) => m.handle(cx, id, outcome),
            State::Resolving(m, _) => m.handle(cx, id, outcome),
            State::Scan | State::Done => {}
        }
    }
}
