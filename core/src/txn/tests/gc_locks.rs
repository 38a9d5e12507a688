//! `ResolveRangeLocks` and `ResolveLocks::for_gc`: GC settles every lock below the safe point,
//! whatever its TTL, page by page.

use tikv_proto::kvrpcpb;

use super::*;
use crate::key::{Key, KeyRange};
use crate::testing::resp::{LockBuilder, keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::gc_locks::{ResolveRangeLocks, SweepStats};
use crate::txn::scan_lock::SCAN_LOCK_PAGE;

const SAFE_POINT: Timestamp = Timestamp::compose(9000, 0);

fn sweep(range: KeyRange) -> ResolveRangeLocks {
    ResolveRangeLocks::new(range, SAFE_POINT)
}

/// Locks of the given builders in the region holding `start` of the request (the harness's
/// regions split at "m").
fn in_region(req: &kvrpcpb::ScanLockRequest, locks: &[LockBuilder]) -> Vec<LockBuilder> {
    let start = Key::from(req.start_key.clone());
    let end = Key::from(req.end_key.clone());
    locks
        .iter()
        .filter(|l| {
            let key = l.to_lock().key;
            key >= start && (end.is_empty() || key < end)
        })
        .cloned()
        .collect()
}

#[test]
fn every_owner_is_settled_at_the_end_of_time_in_every_region() {
    let mut h = harness();
    // A live lock (long TTL) in region 1 and a committed owner's lock in region 2.
    let locks = [
        lock("b", "b", ts(1000)).ttl(3_600_000),
        lock("x", "n", ts(2000)).ttl(3000),
    ];
    let out = h.run(
        sweep(KeyRange::all()),
        cluster([], |s| match s.method {
            "KvScanLock" => {
                let r = req!(s, KvScanLock);
                assert_eq!(
                    r.max_version,
                    SAFE_POINT.as_u64(),
                    "only locks below the safe point"
                );
                resp::scan_lock().locks(in_region(r, &locks))
            }
            "KvCheckTxnStatus" => {
                let r = req!(s, KvCheckTxnStatus);
                if r.lock_ts == ts(2000).as_u64() {
                    resp::check_txn_status().committed(ts(2500))
                } else {
                    // TiKV rolls the live primary back: it is judged at the end of time.
                    resp::check_txn_status().rolled_back()
                }
            }
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        SweepStats {
            locks_found: 2,
            pages: 1
        }
    );
    assert!(
        !resp::kinds(&h.effects).contains(&"Tso"),
        "GC needs no timestamp"
    );
    let sent = resp::sent(&h.effects);
    let checks: Vec<_> = sent
        .iter()
        .filter(|s| s.method == "KvCheckTxnStatus")
        .collect();
    assert_eq!(checks.len(), 2);
    for check in checks {
        let r = req!(check, KvCheckTxnStatus);
        assert_eq!(
            r.current_ts,
            u64::MAX,
            "every lock below the safe point expired"
        );
        assert_eq!(r.caller_start_ts, 0);
        assert!(r.rollback_if_not_exist, "a missing primary is rolled back");
    }
    let resolved: Vec<_> = sent
        .iter()
        .filter(|s| s.method == "KvResolveLock")
        .map(|s| (s.keys.clone(), req!(s, KvResolveLock).commit_version))
        .collect();
    assert_eq!(
        resolved,
        [(keys(&["x"]), ts(2500).as_u64())],
        "the committed owner's secondary is committed; the primary 'b' was settled by its check"
    );
}

#[test]
fn a_full_page_is_followed_by_a_scan_from_its_last_key() {
    let mut h = harness();
    let page: Vec<LockBuilder> = (0..SCAN_LOCK_PAGE)
        .map(|i| lock(&format!("k{i:05}"), "a", ts(1000)).ttl(3000))
        .collect();
    let last = page.last().map(|l| l.to_lock().key).unwrap_or_default();
    let mut scans = Vec::new();
    let out = h.run(
        sweep(KeyRange::new("a", "m")),
        cluster([], |s| match s.method {
            "KvScanLock" => {
                let r = req!(s, KvScanLock);
                scans.push(Key::from(r.start_key.clone()));
                if scans.len() == 1 {
                    resp::scan_lock().locks(page.clone())
                } else {
                    resp::scan_lock().locks([])
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().rolled_back(),
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        SweepStats {
            locks_found: SCAN_LOCK_PAGE as usize,
            pages: 2
        }
    );
    assert_eq!(
        scans,
        [Key::from("a"), last],
        "the second page starts at the last lock"
    );
    let checks = resp::kinds(&h.effects)
        .iter()
        .filter(|k| **k == "KvCheckTxnStatus")
        .count();
    assert_eq!(checks, 1, "one status check for one owner's 1024 locks");
}

#[test]
fn an_owner_still_alive_after_a_forced_check_fails_the_sweep() {
    let mut h = harness();
    let out = h.run(
        sweep(KeyRange::all()),
        cluster([], |s| match s.method {
            "KvScanLock" => {
                let r = req!(s, KvScanLock);
                resp::scan_lock().locks(in_region(r, &[lock("b", "b", ts(1000))]))
            }
            "KvCheckTxnStatus" => resp::check_txn_status().alive(3000),
            other => panic!("unexpected {other}"),
        }),
    );
    let err = out.unwrap_err();
    assert!(err.to_string().contains("still alive"), "{err}");
}

#[test]
fn an_async_commit_owner_is_recovered_from_its_secondaries() {
    let mut h = harness();
    let primary = lock("b", "b", ts(1000))
        .async_commit()
        .min_commit_ts(ts(1100))
        .secondaries(&["x"]);
    let secondary = lock("x", "b", ts(1000))
        .async_commit()
        .min_commit_ts(ts(1200));
    let locks = [primary.clone(), secondary.clone()];
    let out = h.run(
        sweep(KeyRange::all()),
        cluster([], |s| match s.method {
            "KvScanLock" => {
                let r = req!(s, KvScanLock);
                resp::scan_lock().locks(in_region(r, &locks))
            }
            // TiKV never rolls back an async-commit primary: its secondaries decide.
            "KvCheckTxnStatus" => resp::check_txn_status().alive_with(3000, primary.clone()),
            "KvCheckSecondaryLocks" => {
                resp::check_secondary_locks().still_locked([secondary.clone()])
            }
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap().locks_found, 2);
    let sent = resp::sent(&h.effects);
    let commits: Vec<u64> = sent
        .iter()
        .filter(|s| s.method == "KvResolveLock")
        .map(|s| req!(s, KvResolveLock).commit_version)
        .collect();
    assert!(
        !commits.is_empty() && commits.iter().all(|c| *c == ts(1200).as_u64()),
        "committed at the largest min_commit_ts: {commits:?}"
    );
}

#[test]
fn a_clean_range_costs_one_scan_per_region() {
    let mut h = harness();
    let out = h.run(
        sweep(KeyRange::all()),
        cluster([], |s| match s.method {
            "KvScanLock" => resp::scan_lock().locks([]),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        SweepStats {
            locks_found: 0,
            pages: 1
        }
    );
    assert_eq!(resp::kinds(&h.effects), ["KvScanLock", "KvScanLock"]);
}
