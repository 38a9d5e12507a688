//! Garbage collection as the client sees it: PD's GC-state API in plain types, the steps of
//! a GC round, and the visibility check that keeps reads from going below the txn safe
//! point.
//!
//! PD keeps, per keyspace (or for the whole cluster, the "null keyspace"):
//!
//! - the **txn safe point**: transactions and snapshots started before it may no longer read
//!   or commit. It only grows, and never past a live **GC barrier** (a timestamp a service
//!   such as backup or CDC asked to keep readable, with a TTL);
//! - the **GC safe point**: versions older than it may be deleted by TiKV. It only grows, and
//!   never past the txn safe point.
//!
//! A GC round ([`GcRound`]) is therefore: advance the txn safe point towards the target
//! (PD may stop it early at a barrier: the round goes on with what PD granted), settle every
//! lock below it across the key space ([`ResolveRangeLocks`](crate::txn::gc_locks)), then
//! advance the GC safe point to the same timestamp. Client-go does the same, ending with the
//! deprecated `UpdateGCSafePoint`; this client uses `AdvanceGCSafePoint`.
//!
//! Reads check their start timestamp against a cached txn safe point
//! ([`TxnSafePointCache`], client-go's `CheckVisibility`): a read below it could miss
//! versions GC already deleted, so it fails with [`Error::TxnAbortedByGc`] instead of
//! returning wrong data.

use std::time::Duration;

use tikv_proto::pdpb;

use crate::error::Error;
use crate::time::Instant;
use crate::timestamp::Timestamp;

pub use crate::request::NULL_KEYSPACE_ID;

/// How often a client reloads the txn safe point for its visibility checks (client-go's
/// `pollTxnSafePointInterval`).
pub const TXN_SAFE_POINT_REFRESH: Duration = Duration::from_secs(10);

/// How long a loaded txn safe point is trusted: GC may have moved it since, by at most the
/// GC run interval (client-go: `GcStateCacheInterval` 100 s less a 10 s clock bound).
pub const TXN_SAFE_POINT_TRUSTED: Duration = Duration::from_secs(90);

/// The TTL PD treats as "never expires" (Go's largest `time.Duration`, in seconds; anything
/// at least this large is saturated by PD).
const NEVER_EXPIRES_SECONDS: i64 = i64::MAX / 1_000_000_000;

/// The scope of a GC-state request: a keyspace id, or the null keyspace.
pub fn keyspace_scope(keyspace_id: Option<u32>) -> pdpb::KeyspaceScope {
    pdpb::KeyspaceScope {
        keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(
            keyspace_id.unwrap_or(NULL_KEYSPACE_ID),
        )),
    }
}

fn keyspace_of(scope: Option<&pdpb::KeyspaceScope>) -> Option<u32> {
    match scope.and_then(|s| s.keyspace.as_ref()) {
        Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(id)) if *id != NULL_KEYSPACE_ID => {
            Some(*id)
        }
        _ => None,
    }
}

/// A barrier's TTL in PD's form: whole seconds rounded up, `None` (never expires) as
/// `i64::MAX`. A zero TTL is refused here (PD refuses it too): a barrier is removed by
/// deleting it, not by a zero TTL.
pub fn ttl_to_seconds(ttl: Option<Duration>) -> Result<i64, Error> {
    let Some(ttl) = ttl else {
        return Ok(i64::MAX);
    };
    if ttl.is_zero() {
        return Err(Error::InvalidArgument(
            "a GC barrier needs a positive TTL (None: never expires)".into(),
        ));
    }
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Ok(i64::try_from(seconds)
        .ok()
        .filter(|s| *s < NEVER_EXPIRES_SECONDS)
        .unwrap_or(i64::MAX))
}

/// PD's TTL reply as a duration: `None` never expires; a negative value is an expired
/// barrier (zero).
pub fn ttl_from_seconds(seconds: i64) -> Option<Duration> {
    if seconds >= NEVER_EXPIRES_SECONDS {
        return None;
    }
    Some(Duration::from_secs(seconds.max(0).unsigned_abs()))
}

/// A GC barrier: while it lives, the txn safe point stays at or below `ts`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcBarrier {
    /// Who set it (a service name, e.g. `"br"` or `"cdc-changefeed-1"`).
    pub id: String,
    /// The timestamp it keeps readable.
    pub ts: Timestamp,
    /// Time left, as PD reported it (whole seconds, rounded down); `None` never expires.
    pub ttl: Option<Duration>,
}

impl GcBarrier {
    /// From PD's keyspace-level barrier.
    pub fn from_pd(b: &pdpb::GcBarrierInfo) -> Self {
        GcBarrier {
            id: b.barrier_id.clone(),
            ts: Timestamp::from_u64(b.barrier_ts),
            ttl: ttl_from_seconds(b.ttl_seconds),
        }
    }

    /// From PD's global barrier (same fields).
    pub fn from_pd_global(b: &pdpb::GlobalGcBarrierInfo) -> Self {
        GcBarrier {
            id: b.barrier_id.clone(),
            ts: Timestamp::from_u64(b.barrier_ts),
            ttl: ttl_from_seconds(b.ttl_seconds),
        }
    }
}

/// One keyspace's GC state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcState {
    /// The keyspace (`None`: the null keyspace, i.e. the whole cluster under unified GC).
    pub keyspace_id: Option<u32>,
    /// Whether the keyspace runs its own GC (otherwise it shares the null keyspace's).
    pub keyspace_level: bool,
    /// Reads and commits below it are refused.
    pub txn_safe_point: Timestamp,
    /// Versions below it may be gone.
    pub gc_safe_point: Timestamp,
    /// The keyspace's barriers (empty unless asked for).
    pub barriers: Vec<GcBarrier>,
    /// The cluster's global barriers (empty unless asked for).
    pub global_barriers: Vec<GcBarrier>,
}

impl GcState {
    /// From PD's answer (`global` comes beside the state in `GetGCState`).
    pub fn from_pd(s: &pdpb::GcState, global: &[pdpb::GlobalGcBarrierInfo]) -> Self {
        GcState {
            keyspace_id: keyspace_of(s.keyspace_scope.as_ref()),
            keyspace_level: s.is_keyspace_level_gc,
            txn_safe_point: Timestamp::from_u64(s.txn_safe_point),
            gc_safe_point: Timestamp::from_u64(s.gc_safe_point),
            barriers: s.gc_barriers.iter().map(GcBarrier::from_pd).collect(),
            global_barriers: global.iter().map(GcBarrier::from_pd_global).collect(),
        }
    }
}

/// What `AdvanceTxnSafePoint` did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnSafePointAdvance {
    /// The txn safe point before.
    pub old: Timestamp,
    /// What was asked for.
    pub target: Timestamp,
    /// The txn safe point now: below `target` when a barrier held it back.
    pub new: Timestamp,
    /// What held it back (PD's description of the barrier), if anything did.
    pub blocker: Option<String>,
}

impl TxnSafePointAdvance {
    /// From PD's answer to a request for `target`.
    pub fn from_pd(target: Timestamp, r: &pdpb::AdvanceTxnSafePointResponse) -> Self {
        TxnSafePointAdvance {
            old: Timestamp::from_u64(r.old_txn_safe_point),
            target,
            new: Timestamp::from_u64(r.new_txn_safe_point),
            blocker: (!r.blocker_description.is_empty()).then(|| r.blocker_description.clone()),
        }
    }

    /// Whether a barrier kept the txn safe point below the target.
    pub fn is_blocked(&self) -> bool {
        self.new < self.target
    }
}

/// What `AdvanceGCSafePoint` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcSafePointAdvance {
    /// The GC safe point before.
    pub old: Timestamp,
    /// What was asked for.
    pub target: Timestamp,
    /// The GC safe point now.
    pub new: Timestamp,
}

impl GcSafePointAdvance {
    /// From PD's answer to a request for `target`.
    pub fn from_pd(target: Timestamp, r: &pdpb::AdvanceGcSafePointResponse) -> Self {
        GcSafePointAdvance {
            old: Timestamp::from_u64(r.old_gc_safe_point),
            target,
            new: Timestamp::from_u64(r.new_gc_safe_point),
        }
    }
}

/// What a GC round did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// The txn safe point's move (possibly short of the target).
    pub txn_safe_point: TxnSafePointAdvance,
    /// Locks found below the new txn safe point, all settled.
    pub locks_resolved: usize,
    /// The GC safe point's move.
    pub gc_safe_point: GcSafePointAdvance,
}

/// The next step of a GC round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcStep {
    /// Ask PD to advance the txn safe point to this target.
    AdvanceTxnSafePoint(Timestamp),
    /// Settle every lock of transactions started at or before this timestamp.
    ResolveLocks(Timestamp),
    /// Ask PD to advance the GC safe point to this target.
    AdvanceGcSafePoint(Timestamp),
    /// The round is over.
    Done(GcReport),
}

/// The steps of one GC round towards a target safe point (see the module docs), as a small
/// sans-IO sequence: the driver performs each [`GcStep`] and reports back.
///
/// ```
/// use tikv_core::gc::{GcRound, GcStep};
/// use tikv_core::Timestamp;
///
/// let mut round = GcRound::new(Timestamp::from_u64(100));
/// assert_eq!(round.start(), GcStep::AdvanceTxnSafePoint(Timestamp::from_u64(100)));
/// ```
#[derive(Debug)]
pub struct GcRound {
    target: Timestamp,
    txn: Option<TxnSafePointAdvance>,
    locks: usize,
}

impl GcRound {
    /// A round towards `target`.
    pub fn new(target: Timestamp) -> Self {
        GcRound {
            target,
            txn: None,
            locks: 0,
        }
    }

    /// The first step.
    pub fn start(&self) -> GcStep {
        GcStep::AdvanceTxnSafePoint(self.target)
    }

    /// PD moved the txn safe point: settle the locks below what it granted. A blocked advance
    /// is not a failure (a barrier is doing its job); the round collects what it may.
    pub fn on_txn_safe_point(&mut self, advance: TxnSafePointAdvance) -> GcStep {
        let granted = advance.new;
        self.txn = Some(advance);
        GcStep::ResolveLocks(granted)
    }

    /// Every lock below the granted safe point is settled: the GC safe point may follow.
    pub fn on_locks_resolved(&mut self, locks: usize) -> GcStep {
        self.locks = locks;
        let granted = self.txn.as_ref().map_or(Timestamp::ZERO, |t| t.new);
        GcStep::AdvanceGcSafePoint(granted)
    }

    /// PD moved the GC safe point: the round is over.
    pub fn on_gc_safe_point(&mut self, advance: GcSafePointAdvance) -> GcStep {
        let txn = self.txn.clone().unwrap_or(TxnSafePointAdvance {
            old: Timestamp::ZERO,
            target: self.target,
            new: Timestamp::ZERO,
            blocker: None,
        });
        GcStep::Done(GcReport {
            txn_safe_point: txn,
            locks_resolved: self.locks,
            gc_safe_point: advance,
        })
    }
}

/// What a read must do about the txn safe point ([`TxnSafePointCache::check`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Visibility {
    /// The read is above the safe point.
    Visible,
    /// The read is above the safe point, and the cached value is due for a reload (start one
    /// in the background unless one is running).
    VisibleRefresh,
    /// The cached value is too old to judge by: reload it, then check again.
    MustRefresh,
    /// The read is below the safe point: it fails with this error.
    Aborted(Error),
}

/// The txn safe point as last loaded from PD, and the visibility rule for reads (client-go's
/// `CheckVisibility`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnSafePointCache {
    value: Timestamp,
    loaded_at: Option<Instant>,
}

impl TxnSafePointCache {
    /// The cached txn safe point (zero before the first load).
    pub fn value(&self) -> Timestamp {
        self.value
    }

    /// Records a load made at `now`. The value never goes back (PD's never does; an older
    /// answer arriving late must not undo a newer one).
    pub fn loaded(&mut self, value: Timestamp, now: Instant) {
        self.value = self.value.max(value);
        self.loaded_at = Some(self.loaded_at.map_or(now, |t| t.max(now)));
    }

    /// Whether a read at `start_ts` may go on at `now` (strictly below the safe point fails;
    /// at it is fine, as in client-go).
    pub fn check(&self, start_ts: Timestamp, now: Instant) -> Visibility {
        let Some(loaded_at) = self.loaded_at else {
            return Visibility::MustRefresh;
        };
        let age = now - loaded_at;
        if age > TXN_SAFE_POINT_TRUSTED {
            return Visibility::MustRefresh;
        }
        if start_ts < self.value {
            return Visibility::Aborted(Error::TxnAbortedByGc {
                start_ts: start_ts.as_u64(),
                txn_safe_point: self.value.as_u64(),
            });
        }
        if age >= TXN_SAFE_POINT_REFRESH {
            Visibility::VisibleRefresh
        } else {
            Visibility::Visible
        }
    }
}

#[cfg(test)]
mod tests;
