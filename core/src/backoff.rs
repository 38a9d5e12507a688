//! Backoff: client-go's named backoff kinds and per-operation budgets, as data.
//!
//! Each [`BackoffKind`] has a base, a cap and a jitter mode; successive sleeps of one kind grow
//! exponentially from the base to the cap. A [`Backoffer`] belongs to one operation: it keeps
//! the per-kind attempt counters, the total slept, and a budget. The budget is checked
//! *before* each sleep (so the last sleep may overshoot it by up to one cap, as in client-go);
//! once the time slept (server-busy sleeps excluded, which have their own 10-minute limit)
//! reaches the budget, the next request for a sleep fails with
//! [`Error::BackoffExhausted`], naming the kind that slept longest and the last errors seen.
//!
//! Jitter comes from the caller's seeded [`Rng`]; the backoffer itself never sleeps — the
//! machine that owns it emits a `Sleep` effect for the returned duration.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::rng::Rng;

/// How a kind randomises its sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// `min(cap, base * 2^n)` exactly.
    None,
    /// Uniform in `[0, v)` where `v = min(cap, base * 2^n)`.
    Full,
    /// Uniform in `[v/2, v)`.
    Equal,
    /// `min(cap, base + uniform[0, 3 * last - base))`.
    Decorrelated,
}

/// The named backoff kinds of client-go (`config/retry/config.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackoffKind {
    /// A TiKV RPC failed in transport.
    TikvRpc,
    /// Waiting for a conflicting lock to be resolved.
    TxnLock,
    /// Waiting for a lock, fast variant (base 10 ms).
    TxnLockFast,
    /// A PD RPC failed.
    PdRpc,
    /// The region was not where the cache said.
    RegionMiss,
    /// The region is being scheduled (no leader, read index not ready, merging).
    RegionScheduling,
    /// TiKV reported it is busy; excluded from the operation budget.
    ServerBusy,
    /// TiKV's disk is full.
    DiskFull,
    /// The region is in online unsafe recovery.
    RegionRecoveryInProgress,
    /// A transaction's status was not found yet.
    TxnNotFound,
    /// TiKV reported a stale Raft command.
    StaleCmd,
    /// The store's max timestamp is not synced yet (after a leader change).
    MaxTsNotSynced,
    /// The commit timestamp lags.
    CommitTsLag,
    /// The region's peer is not initialized yet.
    RegionNotInitialized,
    /// The peer is a witness and cannot serve.
    IsWitness,
}

/// A kind's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffSpec {
    /// The kind's name, as client-go's metrics call it.
    pub name: &'static str,
    /// First sleep, in milliseconds.
    pub base_ms: u64,
    /// Largest sleep, in milliseconds.
    pub cap_ms: u64,
    /// Randomisation.
    pub jitter: Jitter,
    /// What running out of budget while backing off this kind means, for the error message.
    pub gave_up: &'static str,
}

impl BackoffKind {
    /// Every kind, in a fixed order.
    pub const ALL: [BackoffKind; 15] = [
        BackoffKind::TikvRpc,
        BackoffKind::TxnLock,
        BackoffKind::TxnLockFast,
        BackoffKind::PdRpc,
        BackoffKind::RegionMiss,
        BackoffKind::RegionScheduling,
        BackoffKind::ServerBusy,
        BackoffKind::DiskFull,
        BackoffKind::RegionRecoveryInProgress,
        BackoffKind::TxnNotFound,
        BackoffKind::StaleCmd,
        BackoffKind::MaxTsNotSynced,
        BackoffKind::CommitTsLag,
        BackoffKind::RegionNotInitialized,
        BackoffKind::IsWitness,
    ];

    /// The kind's parameters (client-go's values).
    pub const fn spec(self) -> BackoffSpec {
        use BackoffKind::*;
        let (name, base_ms, cap_ms, jitter, gave_up) = match self {
            TikvRpc => ("tikvRPC", 100, 2000, Jitter::Equal, "tikv server timeout"),
            TxnLock => ("txnLock", 100, 3000, Jitter::Equal, "resolve lock timeout"),
            TxnLockFast => (
                "txnLockFast",
                10,
                3000,
                Jitter::Equal,
                "resolve lock timeout",
            ),
            PdRpc => ("pdRPC", 500, 3000, Jitter::Equal, "pd server timeout"),
            RegionMiss => ("regionMiss", 2, 500, Jitter::None, "region unavailable"),
            RegionScheduling => (
                "regionScheduling",
                2,
                500,
                Jitter::None,
                "region unavailable",
            ),
            ServerBusy => (
                "tikvServerBusy",
                2000,
                10000,
                Jitter::Equal,
                "tikv server busy",
            ),
            DiskFull => ("tikvDiskFull", 500, 5000, Jitter::None, "tikv disk full"),
            RegionRecoveryInProgress => (
                "regionRecoveryInProgress",
                100,
                10000,
                Jitter::Equal,
                "region is in recovery",
            ),
            TxnNotFound => ("txnNotFound", 2, 500, Jitter::None, "resolve lock timeout"),
            StaleCmd => ("staleCommand", 2, 1000, Jitter::None, "tikv stale command"),
            MaxTsNotSynced => (
                "maxTsNotSynced",
                2,
                500,
                Jitter::None,
                "tikv max timestamp not synced",
            ),
            CommitTsLag => ("commitTSLag", 2, 500, Jitter::None, "commit ts lag"),
            RegionNotInitialized => (
                "regionNotInitialized",
                2,
                1000,
                Jitter::None,
                "region not initialized",
            ),
            IsWitness => ("isWitness", 1000, 10000, Jitter::Equal, "peer is witness"),
        };
        BackoffSpec {
            name,
            base_ms,
            cap_ms,
            jitter,
            gave_up,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether sleeps of this kind count against the operation's budget (server-busy sleeps do
    /// not; they are limited to [`EXCLUDED_SLEEP_LIMIT`] instead).
    pub const fn counts_against_budget(self) -> bool {
        !matches!(self, BackoffKind::ServerBusy)
    }
}

impl fmt::Display for BackoffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec().name)
    }
}

/// The most time an operation may sleep on kinds excluded from its budget (server busy).
pub const EXCLUDED_SLEEP_LIMIT: Duration = Duration::from_secs(600);

/// How many recent errors a backoffer remembers for its exhaustion message.
pub const RECORDED_ERRORS: usize = 3;

#[derive(Clone, Copy, Debug, Default)]
struct KindState {
    attempts: u32,
    last_sleep_ms: u64,
    total: Duration,
    times: u32,
}

/// One operation's backoff state and budget.
#[derive(Clone, Debug)]
pub struct Backoffer {
    operation: &'static str,
    budget: Duration,
    total: Duration,
    excluded: Duration,
    // Boxed: backoffers live inside machines, which should stay small; allocated on the first
    // sleep, so that an operation that never retries (nearly all) allocates nothing here.
    kinds: Option<Box<[KindState; BackoffKind::ALL.len()]>>,
    recent: VecDeque<String>,
    errors: u32,
}

impl Backoffer {
    /// A backoffer for `operation` that may sleep `budget` in total; a zero budget means
    /// unlimited.
    pub fn new(operation: &'static str, budget: Duration) -> Self {
        Backoffer {
            operation,
            budget,
            total: Duration::ZERO,
            excluded: Duration::ZERO,
            kinds: None,
            recent: VecDeque::new(),
            errors: 0,
        }
    }

    /// A fresh backoffer for the same operation and budget, nothing slept yet.
    pub fn renewed(&self) -> Backoffer {
        Backoffer::new(self.operation, self.budget)
    }

    /// The operation this backoffer belongs to.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// Total time slept so far (all kinds).
    pub fn total_sleep(&self) -> Duration {
        self.total
    }

    /// How many times `kind` was slept.
    pub fn times(&self, kind: BackoffKind) -> u32 {
        self.kind(kind).times
    }

    /// How long to sleep before retrying after `error`, which made the caller back off
    /// `kind`; or the exhaustion error when the budget is spent.
    pub fn next_sleep(
        &mut self,
        kind: BackoffKind,
        error: &Error,
        rng: &mut Rng,
    ) -> Result<Duration, Error> {
        self.next_sleep_capped(kind, None, error, rng)
    }

    /// Like [`next_sleep`](Self::next_sleep), with this one sleep capped at `max` (e.g. a lock's
    /// remaining TTL).
    pub fn next_sleep_capped(
        &mut self,
        kind: BackoffKind,
        max: Option<Duration>,
        error: &Error,
        rng: &mut Rng,
    ) -> Result<Duration, Error> {
        if !self.budget.is_zero() {
            let counted = self.total.saturating_sub(self.excluded);
            let over = counted >= self.budget
                || (!kind.counts_against_budget()
                    && self.excluded >= EXCLUDED_SLEEP_LIMIT
                    && self.excluded >= self.budget);
            if over {
                return Err(self.exhausted(error));
            }
        }
        self.errors += 1;
        if self.recent.len() == RECORDED_ERRORS {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{kind}: {error}"));

        let spec = kind.spec();
        let kinds = self
            .kinds
            .get_or_insert_with(|| Box::new([KindState::default(); BackoffKind::ALL.len()]));
        let state = &mut kinds[kind.index()];
        let sleep_ms = next_sleep_ms(&spec, state.attempts, state.last_sleep_ms, rng);
        let real_ms = match max {
            Some(max) => sleep_ms.min(max.as_millis().min(u128::from(u64::MAX)) as u64),
            None => sleep_ms,
        };
        state.attempts = state.attempts.saturating_add(1);
        state.last_sleep_ms = sleep_ms;
        let real = Duration::from_millis(real_ms);
        state.total += real;
        state.times += 1;
        self.total += real;
        if !kind.counts_against_budget() {
            self.excluded += real;
        }
        Ok(real)
    }

    /// What `kind` has slept so far.
    fn kind(&self, kind: BackoffKind) -> KindState {
        self.kinds
            .as_ref()
            .map_or_else(KindState::default, |k| k[kind.index()])
    }

    fn exhausted(&self, last: &Error) -> Error {
        // Name the kind that slept longest (server busy aside), as client-go does.
        let longest = BackoffKind::ALL
            .iter()
            .filter(|k| k.counts_against_budget() && self.kind(**k).total > Duration::ZERO)
            .max_by_key(|k| self.kind(**k).total);
        Error::BackoffExhausted {
            operation: self.operation,
            reason: longest.map_or("backoff budget exhausted", |k| k.spec().gave_up),
            attempts: self.errors,
            slept: self.total,
            budget: self.budget,
            recent: self.recent.iter().cloned().collect::<Vec<_>>().join("; "),
            last: Box::new(last.clone()),
        }
    }
}

/// client-go's sleep formula for attempt `attempts` (0-based) of a kind.
fn next_sleep_ms(spec: &BackoffSpec, attempts: u32, last_sleep_ms: u64, rng: &mut Rng) -> u64 {
    let base = spec.base_ms.max(2);
    let cap = spec.cap_ms;
    let expo = || -> u64 {
        let factor = 1u64.checked_shl(attempts.min(62)).unwrap_or(u64::MAX);
        base.saturating_mul(factor).min(cap)
    };
    match spec.jitter {
        Jitter::None => expo(),
        Jitter::Full => rng.below(expo()),
        Jitter::Equal => {
            let v = expo();
            v / 2 + rng.below(v / 2)
        }
        Jitter::Decorrelated => {
            let last = if last_sleep_ms == 0 {
                base
            } else {
                last_sleep_ms
            };
            let spread = last.saturating_mul(3).saturating_sub(base);
            (base + rng.below(spread)).min(cap)
        }
    }
}

/// client-go's per-operation budgets (before the weight), in milliseconds.
pub mod budget {
    use std::time::Duration;

    /// Point get (`getMaxBackoff`).
    pub const GET: Duration = Duration::from_millis(20_000);
    /// Batch get (`batchGetMaxBackoff`).
    pub const BATCH_GET: Duration = Duration::from_millis(20_000);
    /// One scan batch (`scannerNextMaxBackoff`).
    pub const SCAN: Duration = Duration::from_millis(20_000);
    /// Prewrite (`PrewriteMaxBackoff`).
    pub const PREWRITE: Duration = Duration::from_millis(40_000);
    /// Primary commit (`CommitMaxBackoff`).
    pub const COMMIT: Duration = Duration::from_millis(40_000);
    /// Secondary commit and async rollback (`CommitSecondaryMaxBackoff`).
    pub const COMMIT_SECONDARY: Duration = Duration::from_millis(41_000);
    /// Cleanup after a failed commit (`cleanupMaxBackoff`).
    pub const CLEANUP: Duration = Duration::from_millis(20_000);
    /// Pessimistic lock (`pessimisticLockMaxBackoff`).
    pub const PESSIMISTIC_LOCK: Duration = Duration::from_millis(20_000);
    /// Pessimistic rollback (`pessimisticRollbackMaxBackoff`).
    pub const PESSIMISTIC_ROLLBACK: Duration = Duration::from_millis(20_000);
    /// TTL heartbeat (`keepAliveMaxBackoff`).
    pub const HEARTBEAT: Duration = Duration::from_millis(20_000);
    /// TSO (`TsoMaxBackoff`).
    pub const TSO: Duration = Duration::from_millis(15_000);
    /// RawKV operations (`rawkvMaxBackoff`).
    pub const RAWKV: Duration = Duration::from_millis(20_000);
    /// Transaction status check (`getTxnStatusMaxBackoff`, not weighted in client-go).
    pub const TXN_STATUS: Duration = Duration::from_millis(20_000);
    /// Split one region (`splitRegionBackoff`, per key, at most `SPLIT_MAX`).
    pub const SPLIT_PER_KEY: Duration = Duration::from_millis(20_000);
    /// Largest split budget (`maxSplitRegionsBackoff`).
    pub const SPLIT_MAX: Duration = Duration::from_millis(120_000);
    /// Waiting for a scatter to finish (`waitScatterRegionFinishBackoff`).
    pub const SCATTER_WAIT: Duration = Duration::from_millis(120_000);
    /// GC lock resolution per range task (`gcResolveLockMaxBackoff`).
    pub const GC_RESOLVE_LOCK: Duration = Duration::from_millis(100_000);
    /// Delete range, per region (`deleteRangeOneRegionMaxBackoff`).
    pub const DELETE_RANGE_REGION: Duration = Duration::from_millis(100_000);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> Error {
        Error::InvalidArgument("probe".into())
    }

    #[test]
    fn no_jitter_doubles_to_cap() {
        let mut bo = Backoffer::new("t", Duration::ZERO);
        let mut rng = Rng::seeded(1);
        let sleeps: Vec<u64> = (0..10)
            .map(|_| {
                bo.next_sleep(BackoffKind::RegionMiss, &err(), &mut rng)
                    .unwrap()
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(sleeps, [2, 4, 8, 16, 32, 64, 128, 256, 500, 500]);
    }

    #[test]
    fn equal_jitter_stays_in_half_open_upper_half() {
        let mut bo = Backoffer::new("t", Duration::ZERO);
        let mut rng = Rng::seeded(2);
        let expected = [100u64, 200, 400, 800, 1600, 2000, 2000];
        for v in expected {
            let s = bo
                .next_sleep(BackoffKind::TikvRpc, &err(), &mut rng)
                .unwrap()
                .as_millis() as u64;
            assert!(s >= v / 2 && s < v, "sleep {s} not in [{}, {v})", v / 2);
        }
    }

    #[test]
    fn kinds_count_attempts_separately() {
        let mut bo = Backoffer::new("t", Duration::ZERO);
        let mut rng = Rng::seeded(3);
        bo.next_sleep(BackoffKind::RegionMiss, &err(), &mut rng)
            .unwrap();
        bo.next_sleep(BackoffKind::RegionMiss, &err(), &mut rng)
            .unwrap();
        let s = bo
            .next_sleep(BackoffKind::StaleCmd, &err(), &mut rng)
            .unwrap();
        assert_eq!(s, Duration::from_millis(2));
        assert_eq!(bo.times(BackoffKind::RegionMiss), 2);
    }

    #[test]
    fn budget_is_checked_before_sleeping_and_names_longest_kind() {
        let mut bo = Backoffer::new("raw get", Duration::from_millis(10));
        let mut rng = Rng::seeded(4);
        // 2 + 4 = 6 < 10, then 8 more: 14 slept, overshooting by one sleep.
        for _ in 0..3 {
            bo.next_sleep(BackoffKind::RegionMiss, &err(), &mut rng)
                .unwrap();
        }
        assert_eq!(bo.total_sleep(), Duration::from_millis(14));
        match bo
            .next_sleep(BackoffKind::RegionMiss, &err(), &mut rng)
            .unwrap_err()
        {
            Error::BackoffExhausted {
                operation,
                reason,
                attempts,
                recent,
                ..
            } => {
                assert_eq!(operation, "raw get");
                assert_eq!(reason, "region unavailable");
                assert_eq!(attempts, 3);
                assert_eq!(recent.matches("regionMiss").count(), RECORDED_ERRORS);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn server_busy_is_excluded_from_the_budget() {
        let mut bo = Backoffer::new("t", Duration::from_millis(10));
        let mut rng = Rng::seeded(5);
        for _ in 0..5 {
            bo.next_sleep(BackoffKind::ServerBusy, &err(), &mut rng)
                .unwrap();
        }
        assert!(bo.total_sleep() > Duration::from_secs(5));
        // Counted sleep is still zero, so other kinds may back off.
        bo.next_sleep(BackoffKind::RegionMiss, &err(), &mut rng)
            .unwrap();
    }

    #[test]
    fn capped_sleep_and_same_seed_same_sleeps() {
        let mut bo = Backoffer::new("t", Duration::ZERO);
        let mut rng = Rng::seeded(6);
        let s = bo
            .next_sleep_capped(
                BackoffKind::TxnLock,
                Some(Duration::from_millis(7)),
                &err(),
                &mut rng,
            )
            .unwrap();
        assert_eq!(s, Duration::from_millis(7));

        let run = |seed| {
            let mut bo = Backoffer::new("t", Duration::ZERO);
            let mut rng = Rng::seeded(seed);
            (0..6)
                .map(|_| bo.next_sleep(BackoffKind::PdRpc, &err(), &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
    }

    #[test]
    fn decorrelated_jitter_is_bounded() {
        let spec = BackoffSpec {
            name: "d",
            base_ms: 10,
            cap_ms: 100,
            jitter: Jitter::Decorrelated,
            gave_up: "",
        };
        let mut rng = Rng::seeded(7);
        let mut last = 0;
        for n in 0..50 {
            let s = next_sleep_ms(&spec, n, last, &mut rng);
            assert!((10..=100).contains(&s), "{s}");
            last = s;
        }
    }
}
