//! `ResolveLocks`: one status check per owning transaction, then the lock committed, rolled
//! back, or counted as alive.

use tikv_proto::kvrpcpb;

use super::*;
use crate::error::Error;
use crate::machine::Machine;
use crate::testing::resp::{LockBuilder, keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::lock::TxnStatus;
use crate::txn::resolve::{ResolveLocks, Resolved};

/// The reader's start timestamp.
const CALLER: Timestamp = Timestamp::compose(5000, 0);

/// A resolver for a write (locks must go; live owners are waited for).
fn resolver(locks: &[LockBuilder]) -> impl Machine<Output = Result<Resolved, Error>> {
    ResolveLocks::for_write(locks.iter().map(LockBuilder::to_lock).collect(), CALLER)
}

/// A resolver for a read at `CALLER`.
fn reader(locks: &[LockBuilder]) -> impl Machine<Output = Result<Resolved, Error>> {
    ResolveLocks::for_read(locks.iter().map(LockBuilder::to_lock).collect(), CALLER)
}

/// A lock on `key` of the transaction started at 1000 ms with primary "n" (region 2).
fn owned(key: &str) -> LockBuilder {
    lock(key, "n", ts(1000)).ttl(3000)
}

#[test]
fn committed_owner_resolves_lock_with_its_commit_ts() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(1500)),
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        Resolved {
            cleaned: 1,
            alive: 0,
            wait_ms: 0,
            ..Default::default()
        }
    );
    assert_eq!(
        resp::kinds(&h.effects),
        ["Tso", "KvCheckTxnStatus", "KvResolveLock"]
    );
    let sent = resp::sent(&h.effects);
    let check = req!(sent[0], KvCheckTxnStatus);
    assert_eq!(sent[0].store, 2, "asked at the primary's region");
    assert_eq!(check.primary_key, "n");
    assert_eq!(check.lock_ts, ts(1000).as_u64());
    assert_eq!(check.caller_start_ts, CALLER.as_u64());
    assert_eq!(check.current_ts, ts(2000).as_u64());
    assert!(
        !check.rollback_if_not_exist,
        "a live lock's primary may still be on its way"
    );
    let resolve = req!(sent[1], KvResolveLock);
    assert_eq!(sent[1].store, 1, "resolved at the lock's region");
    assert_eq!(resolve.start_version, ts(1000).as_u64());
    assert_eq!(resolve.commit_version, ts(1500).as_u64());
    assert_eq!(sent[1].keys, keys(&["b"]));
}

#[test]
fn rolled_back_owner_resolves_lock_with_commit_version_zero() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("x")]),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().rolled_back(),
            _ => resp::resolve_lock().ok(),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
    let sent = resp::sent(&h.effects);
    let resolve = req!(sent[1], KvResolveLock);
    assert_eq!(resolve.commit_version, 0, "0 means roll back");
    assert_eq!(resolve.start_version, ts(1000).as_u64());
    assert_eq!((sent[1].store, sent[1].keys.clone()), (2, keys(&["x"])));
}

#[test]
fn alive_owner_is_counted_with_the_time_until_its_lock_expires() {
    let mut h = harness();
    // Started at 1000 ms, alive for 3000 ms: expires at 4000; now is 2500.
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(2500))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().alive(3000),
            other => panic!("a live lock is left alone, got {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        Resolved {
            cleaned: 0,
            alive: 1,
            wait_ms: 1500,
            ..Default::default()
        }
    );
    assert_eq!(resp::kinds(&h.effects), ["Tso", "KvCheckTxnStatus"]);
}

#[test]
fn several_live_owners_wait_for_the_earliest_expiry() {
    let mut h = harness();
    let early = lock("a", "a", ts(1000));
    let late = lock("x", "x", ts(1200));
    let out = h.run(
        ResolveLocks::for_write(vec![late.to_lock(), early.to_lock()], CALLER),
        cluster([resp::tso(ts(2000))], |s| match (s.method, s.store) {
            // "a" expires at 1000 + 1500, "x" at 1200 + 3000.
            ("KvCheckTxnStatus", 1) => resp::check_txn_status().alive(1500),
            ("KvCheckTxnStatus", 2) => resp::check_txn_status().alive(3000),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        Resolved {
            cleaned: 0,
            alive: 2,
            wait_ms: 500,
            ..Default::default()
        }
    );
}

#[test]
fn status_is_checked_once_per_owning_transaction() {
    let mut h = harness();
    let other = lock("c", "c", ts(1100));
    let locks = [owned("a"), owned("b"), other, owned("x")];
    let out = h.run(
        resolver(&locks),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" if s.keys == keys(&["n"]) => {
                resp::check_txn_status().committed(ts(1500))
            }
            "KvCheckTxnStatus" => resp::check_txn_status().rolled_back(),
            _ => resp::resolve_lock().ok(),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 4);
    let sent = resp::sent(&h.effects);
    let checks: Vec<_> = sent
        .iter()
        .filter(|s| s.method == "KvCheckTxnStatus")
        .map(|s| s.keys.clone())
        .collect();
    assert_eq!(
        checks,
        [keys(&["n"]), keys(&["c"])],
        "one check per transaction"
    );
    let resolved: Vec<_> = sent
        .iter()
        .filter(|s| s.method == "KvResolveLock")
        .map(|s| (s.keys.clone(), req!(s, KvResolveLock).commit_version))
        .collect();
    assert_eq!(
        resolved,
        [
            (keys(&["a", "b"]), ts(1500).as_u64()),
            (keys(&["x"]), ts(1500).as_u64()),
        ],
        "an owner's locks are resolved together, one request per region; \
         \"c\" is its owner's primary, settled by the status check itself"
    );
    assert_eq!(
        resp::kinds(&h.effects)
            .iter()
            .filter(|k| **k == "Tso")
            .count(),
        1,
        "one current timestamp for the whole set"
    );
}

#[test]
fn expired_lock_check_may_roll_back_a_primary_that_never_arrived() {
    let mut h = harness();
    // Started at 1000 ms with a 3000 ms TTL: expired at 9000. The first check only asks;
    // told the primary is missing, the second one has TiKV write the rollback.
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(9000))], |s| match s.method {
            "KvCheckTxnStatus" if !req!(s, KvCheckTxnStatus).rollback_if_not_exist => {
                resp::check_txn_status().txn_not_found(ts(1000), "n")
            }
            "KvCheckTxnStatus" => resp::check_txn_status()
                .with(|r| r.action = kvrpcpb::Action::LockNotExistRollback as i32)
                .ok(),
            _ => resp::resolve_lock().ok(),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
    assert_eq!(
        resp::kinds(&h.effects),
        [
            "Tso",
            "KvCheckTxnStatus",
            "KvCheckTxnStatus",
            "KvResolveLock"
        ]
    );
    let sent = resp::sent(&h.effects);
    assert_eq!(req!(sent[2], KvResolveLock).commit_version, 0);
}

#[test]
fn txn_not_found_for_a_live_lock_waits_out_the_locks_ttl() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().txn_not_found(ts(1000), "n"),
            other => panic!("nothing is resolved yet, got {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        Resolved {
            cleaned: 0,
            alive: 1,
            wait_ms: 2000,
            ..Default::default()
        },
        "the prewrite of the primary may still arrive within the lock's TTL"
    );
}

#[test]
fn tso_failure_backs_off_and_asks_again() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso_failed(), resp::tso(ts(2000))], |s| {
            match s.method {
                "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(1500)),
                _ => resp::resolve_lock().ok(),
            }
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
    assert_eq!(
        resp::kinds(&h.effects),
        ["Tso", "Sleep", "Tso", "KvCheckTxnStatus", "KvResolveLock"]
    );
    assert!(
        h.slept() >= std::time::Duration::from_millis(250),
        "pdRPC backoff, slept {:?}",
        h.slept()
    );
    let sent = resp::sent(&h.effects);
    assert_eq!(
        req!(sent[0], KvCheckTxnStatus).current_ts,
        ts(2000).as_u64()
    );
}

#[test]
fn tso_failing_for_the_whole_budget_fails_before_any_lock_is_judged() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b")]),
        cluster(std::iter::repeat_with(resp::tso_failed), |s| {
            panic!(
                "nothing can be judged without a timestamp, got {}",
                s.method
            )
        }),
    );
    match out {
        Err(Error::BackoffExhausted { last, .. }) => {
            assert!(matches!(*last, Error::Pd { .. }), "{last:?}")
        }
        other => panic!("expected the budget to run out, got {other:?}"),
    }
    assert!(resp::sent(&h.effects).is_empty());
}

#[test]
fn check_txn_status_region_error_is_retried() {
    for (name, error) in [
        ("server busy", resp::server_busy()),
        ("not leader", resp::not_leader(2, None)),
        ("stale command", resp::stale_command()),
    ] {
        let mut h = harness();
        let mut checks = 0;
        let out = h.run(
            resolver(&[owned("b")]),
            cluster([resp::tso(ts(2000))], |s| match s.method {
                "KvCheckTxnStatus" => {
                    checks += 1;
                    if checks == 1 {
                        resp::check_txn_status().region_error(error.clone())
                    } else {
                        resp::check_txn_status().committed(ts(1500))
                    }
                }
                _ => resp::resolve_lock().ok(),
            }),
        );
        assert_eq!(out.unwrap().cleaned, 1, "{name}");
        assert_eq!(
            resp::kinds(&h.effects),
            [
                "Tso",
                "KvCheckTxnStatus",
                "Sleep",
                "KvCheckTxnStatus",
                "KvResolveLock"
            ],
            "{name}"
        );
    }
}

#[test]
fn check_txn_status_epoch_not_match_follows_the_split_to_the_primary() {
    let mut h = harness();
    let split = [resp_region(2, "m", "p", 2), resp_region(3, "p", "", 2)];
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(2000))], |s| {
            match (s.method, s.region, s.version) {
                ("KvCheckTxnStatus", 2, 1) => {
                    resp::check_txn_status().region_error(resp::epoch_not_match(&split))
                }
                ("KvCheckTxnStatus", 2, 2) => resp::check_txn_status().committed(ts(1500)),
                ("KvResolveLock", 1, _) => resp::resolve_lock().ok(),
                other => panic!("unexpected {other:?}"),
            }
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
}

fn resp_region(id: u64, start: &str, end: &str, version: u64) -> crate::region::Region {
    let mut r = region(id, start, end, &[2]);
    r.epoch.version = version;
    r
}

#[test]
fn resolve_lock_key_error_fails_the_resolution() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(1500)),
            _ => resp::resolve_lock().key_error(resp::abort("resolve failed")),
        }),
    );
    assert!(
        matches!(out, Err(Error::KeyError { ref message, .. }) if message.contains("resolve failed")),
        "{out:?}"
    );
}

#[test]
fn no_locks_resolve_without_effects() {
    let mut h = harness();
    let out = h.run(resolver(&[]), |e| panic!("unexpected {e:?}"));
    assert_eq!(out.unwrap(), Resolved::default());
    assert!(h.effects.is_empty());
}

#[test]
fn a_live_async_commit_owner_is_waited_for() {
    let mut h = harness();
    // TTL not yet run out (1000 + 3000 > 2000): the owner may still be prewriting.
    let out = h.run(
        resolver(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().alive_with(3000, async_primary()),
            other => panic!("a live owner's secondaries are not checked, got {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        Resolved {
            cleaned: 0,
            alive: 1,
            wait_ms: 2000,
            ..Default::default()
        }
    );
}

/// Runs one resolution of `lock` in `h` (sharing its status cache with earlier runs) and
/// returns the methods it sent.
fn resolve_once(
    h: &mut Harness,
    lock: &LockBuilder,
    status: impl Fn() -> Outcome,
) -> Vec<&'static str> {
    let before = h.effects.len();
    h.run(
        resolver(std::slice::from_ref(lock)),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => status(),
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    )
    .unwrap();
    resp::kinds(&h.effects[before..]).to_vec()
}

#[test]
fn decided_outcomes_are_shared_with_later_resolutions() {
    for decided in [
        resp::check_txn_status().committed(ts(1500)),
        resp::check_txn_status().rolled_back(),
        resp::check_txn_status()
            .with(|r| r.action = kvrpcpb::Action::TtlExpireRollback as i32)
            .ok(),
    ] {
        let mut h = harness();
        let first = resolve_once(&mut h, &owned("b"), || decided.clone());
        assert_eq!(first, ["Tso", "KvCheckTxnStatus", "KvResolveLock"]);
        // Another operation meets another lock of the same transaction: no second check.
        let second = resolve_once(&mut h, &owned("c"), || panic!("checked again"));
        assert_eq!(
            second,
            ["KvResolveLock"],
            "no check, so no timestamp either"
        );
        assert_eq!(h.txn_statuses.len(), 1);
    }
}

#[test]
fn undecided_outcomes_are_asked_again() {
    for undecided in [
        resp::check_txn_status().alive(3000),
        // A pessimistic rollback removes the lock but writes no rollback record.
        resp::check_txn_status()
            .with(|r| r.action = kvrpcpb::Action::TtlExpirePessimisticRollback as i32)
            .ok(),
    ] {
        let mut h = harness();
        resolve_once(&mut h, &owned("b"), || undecided.clone());
        let again = resolve_once(&mut h, &owned("c"), || undecided.clone());
        assert!(again.contains(&"KvCheckTxnStatus"), "{again:?}");
        assert!(h.txn_statuses.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Reads: what a reader learns besides cleanup

#[test]
fn a_read_passes_an_owner_whose_commit_ts_was_pushed_above_it() {
    // The owner is alive, but TiKV moved its min_commit_ts above the reader: it cannot
    // commit below the reader, so its locks hide nothing. No waiting, nothing to clean.
    let mut h = harness();
    let out = h
        .run(
            reader(&[owned("b")]),
            cluster([resp::tso(ts(2000))], |s| match s.method {
                "KvCheckTxnStatus" => resp::check_txn_status().pushed(3000),
                other => panic!("a pushed lock is left in place, got {other}"),
            }),
        )
        .unwrap();
    assert_eq!(out.must_wait(), None);
    assert_eq!(out.bypass, [ts(1000)]);
    assert!(out.committed.is_empty());
    let sent = resp::sent(&h.effects);
    let check = req!(sent[0], KvCheckTxnStatus);
    assert_eq!(
        check.caller_start_ts,
        CALLER.as_u64(),
        "TiKV pushes above this"
    );
    assert!(check.verify_is_primary);
}

#[test]
fn a_write_waits_for_an_owner_whose_commit_ts_was_pushed() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(2000))], |_| {
            resp::check_txn_status().pushed(3000)
        }),
    );
    let out = out.unwrap();
    assert_eq!(out.alive, 1, "a write must see the lock gone");
    assert!(out.bypass.is_empty());
}

#[test]
fn a_read_learns_which_decided_owners_it_may_pass_or_read_through() {
    // Committed below the reader: read through (committed_locks). Committed above it, or
    // rolled back: pass (resolved_locks).
    let below = lock("a", "n", ts(1000));
    let above = lock("b", "o", ts(1100));
    let rolled = lock("x", "p", ts(1200));
    let mut h = harness();
    let out = h
        .run(
            reader(&[below, above, rolled]),
            cluster([resp::tso(ts(6000))], |s| {
                match (s.method, s.keys.clone()) {
                    ("KvCheckTxnStatus", k) if k == keys(&["n"]) => {
                        resp::check_txn_status().committed(ts(4000))
                    }
                    ("KvCheckTxnStatus", k) if k == keys(&["o"]) => {
                        resp::check_txn_status().committed(ts(5500))
                    }
                    ("KvCheckTxnStatus", _) => resp::check_txn_status().rolled_back(),
                    ("KvResolveLock", _) => resp::resolve_lock().ok(),
                    other => panic!("unexpected {other:?}"),
                }
            }),
        )
        .unwrap();
    assert_eq!(out.committed, [ts(1000)]);
    assert_eq!(out.bypass, [ts(1100), ts(1200)]);
    assert_eq!(out.cleaned, 3);
}

#[test]
fn a_read_is_not_failed_by_a_cleanup_that_fails() {
    let mut h = harness();
    let out = h
        .run(
            reader(&[owned("b")]),
            cluster([resp::tso(ts(2000))], |s| match s.method {
                "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(1500)),
                _ => resp::resolve_lock().key_error(resp::abort("resolve failed")),
            }),
        )
        .unwrap();
    assert_eq!(
        out.committed,
        [ts(1000)],
        "the read goes on, reading through the lock"
    );
}

// ---------------------------------------------------------------------------------------------
// Cleanup: lite, region-wide, pessimistic

#[test]
fn a_large_owner_is_resolved_region_by_region() {
    // 1000 keys: past client-go's lite threshold, one region-wide ResolveLock per region.
    let big = |key: &str| owned(key).txn_size(1000);
    let mut h = harness();
    let out = h.run(
        resolver(&[big("a"), big("b"), big("x")]),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(1500)),
            _ => resp::resolve_lock().ok(),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 3);
    let resolves: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvResolveLock")
        .map(|s| (s.store, s.keys))
        .collect();
    assert_eq!(
        resolves,
        [(1, Vec::new()), (2, Vec::new())],
        "no keys: every lock of the owner in the region"
    );
}

#[test]
fn a_dead_owners_pessimistic_lock_is_rolled_back_pessimistically() {
    let mut h = harness();
    let out = h.run(
        resolver(&[owned("b").pessimistic().ttl(0)]),
        cluster([], |s| match s.method {
            "KvCheckTxnStatus" => {
                let check = req!(s, KvCheckTxnStatus);
                assert!(check.resolving_pessimistic_lock);
                assert_eq!(check.current_ts, u64::MAX, "TTL 0: resolve unconditionally");
                resp::check_txn_status()
                    .with(|r| r.action = kvrpcpb::Action::TtlExpirePessimisticRollback as i32)
                    .ok()
            }
            "KvPessimisticRollback" => resp::pessimistic_rollback().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
    assert_eq!(
        resp::kinds(&h.effects),
        ["KvCheckTxnStatus", "KvPessimisticRollback"],
        "no timestamp needed for a lock TiKV says to resolve at once"
    );
    let sent = resp::sent(&h.effects);
    let rollback = req!(sent[1], KvPessimisticRollback);
    assert_eq!(rollback.start_version, ts(1000).as_u64());
    assert_eq!(rollback.for_update_ts, u64::MAX);
    assert_eq!(sent[1].keys, keys(&["b"]));
    assert!(
        h.txn_statuses.is_empty(),
        "a pessimistic rollback decides nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// Async commit: the secondaries decide

/// The primary "n" of an async-commit transaction started at 1000 ms, secondaries "b" and
/// "x" (one in each region), min commit ts 1500 ms.
fn async_primary() -> LockBuilder {
    lock("n", "n", ts(1000))
        .async_commit()
        .min_commit_ts(ts(1500))
        .secondaries(&["b", "x"])
}

fn async_secondary(key: &str, min_commit: u64) -> LockBuilder {
    lock(key, "n", ts(1000))
        .async_commit()
        .min_commit_ts(ts(min_commit))
}

#[test]
fn an_expired_async_commit_owner_with_every_lock_present_committed_at_the_largest_min_commit_ts() {
    let mut h = harness();
    let out = h.run(
        reader(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(9000))], |s| match (s.method, s.store) {
            ("KvCheckTxnStatus", _) => resp::check_txn_status().alive_with(3000, async_primary()),
            ("KvCheckSecondaryLocks", 1) => {
                resp::check_secondary_locks().still_locked([async_secondary("b", 1400)])
            }
            ("KvCheckSecondaryLocks", _) => {
                resp::check_secondary_locks().still_locked([async_secondary("x", 1700)])
            }
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    let out = out.unwrap();
    assert_eq!(out.must_wait(), None);
    assert_eq!(
        out.committed,
        [ts(1000)],
        "committed at 1700, below the reader"
    );
    let sent = resp::sent(&h.effects);
    let checks: Vec<_> = sent
        .iter()
        .filter(|s| s.method == "KvCheckSecondaryLocks")
        .map(|s| {
            (
                s.store,
                s.keys.clone(),
                req!(s, KvCheckSecondaryLocks).start_version,
            )
        })
        .collect();
    assert_eq!(
        checks,
        [
            (1, keys(&["b"]), ts(1000).as_u64()),
            (2, keys(&["x"]), ts(1000).as_u64())
        ],
        "each secondary's region asked, concurrently"
    );
    let resolves: Vec<_> = sent
        .iter()
        .filter(|s| s.method == "KvResolveLock")
        .map(|s| (s.keys.clone(), req!(s, KvResolveLock).commit_version))
        .collect();
    assert_eq!(
        resolves,
        [
            (keys(&["b"]), ts(1700).as_u64()),
            (keys(&["n", "x"]), ts(1700).as_u64())
        ],
        "every lock, the primary too, committed at the largest min_commit_ts"
    );
    assert_eq!(
        h.txn_statuses.get(ts(1000)),
        Some(TxnStatus::Committed(ts(1700)))
    );
}

#[test]
fn a_missing_secondary_tells_the_async_commit_owner_rolled_back() {
    let mut h = harness();
    let out = h.run(
        resolver(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(9000))], |s| match (s.method, s.store) {
            ("KvCheckTxnStatus", _) => resp::check_txn_status().alive_with(3000, async_primary()),
            ("KvCheckSecondaryLocks", 1) => {
                resp::check_secondary_locks().still_locked([async_secondary("b", 1400)])
            }
            // "x" is gone and TiKV reports no commit: rolled back.
            ("KvCheckSecondaryLocks", _) => resp::check_secondary_locks().missing(Timestamp::ZERO),
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(out.unwrap().must_wait(), None);
    let resolves: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvResolveLock")
        .map(|s| (s.keys.clone(), req!(s, KvResolveLock).commit_version))
        .collect();
    assert_eq!(
        resolves,
        [(keys(&["b"]), 0), (keys(&["n", "x"]), 0)],
        "the locks still there, the missing key's batch (TiKV lists none of its locks) and \
         the primary, rolled back"
    );
    assert_eq!(h.txn_statuses.get(ts(1000)), Some(TxnStatus::RolledBack));
}

#[test]
fn a_secondary_committed_elsewhere_gives_the_commit_ts() {
    let mut h = harness();
    let out = h.run(
        reader(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(9000))], |s| match (s.method, s.store) {
            ("KvCheckTxnStatus", _) => resp::check_txn_status().alive_with(3000, async_primary()),
            ("KvCheckSecondaryLocks", 1) => resp::check_secondary_locks().missing(ts(1800)),
            ("KvCheckSecondaryLocks", _) => {
                resp::check_secondary_locks().still_locked([async_secondary("x", 1700)])
            }
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(out.unwrap().committed, [ts(1000)]);
    assert_eq!(
        h.txn_statuses.get(ts(1000)),
        Some(TxnStatus::Committed(ts(1800))),
        "the commit ts TiKV reports, not the largest min_commit_ts"
    );
}

#[test]
fn secondaries_that_disagree_fail_the_resolution() {
    let mut h = harness();
    let out = h.run(
        resolver(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(9000))], |s| match (s.method, s.store) {
            ("KvCheckTxnStatus", _) => resp::check_txn_status().alive_with(3000, async_primary()),
            ("KvCheckSecondaryLocks", 1) => resp::check_secondary_locks().missing(ts(1800)),
            ("KvCheckSecondaryLocks", _) => resp::check_secondary_locks().missing(Timestamp::ZERO),
            other => panic!("nothing is resolved on a contradiction, got {other:?}"),
        }),
    );
    assert!(
        matches!(&out, Err(Error::KeyError { message, .. }) if message.contains("disagree")),
        "{out:?}"
    );
}

#[test]
fn a_secondary_that_is_not_async_commit_sends_the_check_back_with_force_sync_commit() {
    let mut h = harness();
    let mut checks = 0;
    let out = h.run(
        resolver(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(9000))], |s| match (s.method, s.store) {
            ("KvCheckTxnStatus", _) => {
                checks += 1;
                let check = req!(s, KvCheckTxnStatus);
                if checks == 1 {
                    assert!(!check.force_sync_commit);
                    resp::check_txn_status().alive_with(3000, async_primary())
                } else {
                    assert!(
                        check.force_sync_commit,
                        "second check forces a normal 2PC view"
                    );
                    resp::check_txn_status()
                        .with(|r| r.action = kvrpcpb::Action::TtlExpireRollback as i32)
                        .ok()
                }
            }
            ("KvCheckSecondaryLocks", 1) => {
                resp::check_secondary_locks().still_locked([lock("b", "n", ts(1000))])
            }
            ("KvCheckSecondaryLocks", _) => {
                resp::check_secondary_locks().still_locked([async_secondary("x", 1700)])
            }
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
    assert_eq!(checks, 2);
    assert_eq!(h.txn_statuses.get(ts(1000)), Some(TxnStatus::RolledBack));
}

#[test]
fn secondaries_check_region_error_regroups_and_asks_again() {
    let mut h = harness();
    let mut busy = true;
    let out = h.run(
        resolver(&[async_secondary("b", 1400)]),
        cluster([resp::tso(ts(9000))], |s| match (s.method, s.store) {
            ("KvCheckTxnStatus", _) => resp::check_txn_status().alive_with(3000, async_primary()),
            ("KvCheckSecondaryLocks", 1) if std::mem::take(&mut busy) => {
                resp::check_secondary_locks().region_error(resp::server_busy())
            }
            ("KvCheckSecondaryLocks", 1) => {
                resp::check_secondary_locks().still_locked([async_secondary("b", 1400)])
            }
            ("KvCheckSecondaryLocks", _) => {
                resp::check_secondary_locks().still_locked([async_secondary("x", 1700)])
            }
            ("KvResolveLock", _) => resp::resolve_lock().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert_eq!(out.unwrap().must_wait(), None);
    assert_eq!(
        h.txn_statuses.get(ts(1000)),
        Some(TxnStatus::Committed(ts(1700)))
    );
}

// ---------------------------------------------------------------------------------------------
// CheckTxnStatus: the public status query

#[test]
fn status_query_settles_a_missing_primary_and_shares_decided_outcomes() {
    use crate::keyspace::KeyspaceCodec;
    use crate::txn::resolve::CheckTxnStatus;
    let mut h = harness();
    let out = h.run(
        CheckTxnStatus::new(KeyspaceCodec::NONE, "n".into(), ts(1000), Timestamp::ZERO),
        cluster([resp::tso(ts(2000))], |s| {
            let check = req!(s, KvCheckTxnStatus);
            assert!(check.rollback_if_not_exist, "as client-go's GetTxnStatus");
            assert_eq!(check.current_ts, ts(2000).as_u64());
            resp::check_txn_status().committed(ts(1500))
        }),
    );
    assert_eq!(out.unwrap(), TxnStatus::Committed(ts(1500)));
    // Asked again: the cache answers, nothing is sent.
    let before = h.effects.len();
    let out = h.run(
        CheckTxnStatus::new(KeyspaceCodec::NONE, "n".into(), ts(1000), Timestamp::ZERO),
        |e| panic!("unexpected {e:?}"),
    );
    assert_eq!(out.unwrap(), TxnStatus::Committed(ts(1500)));
    assert_eq!(h.effects.len(), before);
}

#[test]
fn status_query_reports_a_live_owner_and_caches_nothing() {
    use crate::keyspace::KeyspaceCodec;
    use crate::txn::resolve::CheckTxnStatus;
    let mut h = harness();
    let out = h.run(
        CheckTxnStatus::new(KeyspaceCodec::NONE, "n".into(), ts(1000), Timestamp::ZERO),
        cluster([resp::tso(ts(2000))], |_| {
            resp::check_txn_status().alive(3000)
        }),
    );
    assert_eq!(out.unwrap(), TxnStatus::Alive { ttl_ms: 3000 });
    assert!(h.txn_statuses.is_empty());
}

#[test]
fn a_resolution_waits_for_a_concurrent_check_of_the_same_owner_instead_of_asking_again() {
    use crate::machine::{Effect, Outcome, Step};
    let mut h = harness();
    // Another resolution is asking the primary of the owner started at 1000 ms.
    let other = h.txn_statuses.claim(ts(1000)).expect("no check in flight");
    let locks = [owned("b")];
    let mut m = resolver(&locks);
    let Step::Effect(Effect::Tso { id, .. }) = m.poll(&mut h.cx()) else {
        panic!("a timestamp first");
    };
    m.handle(&mut h.cx(), id, Outcome::Timestamps(Ok(ts(2000))));
    let Step::Effect(Effect::Sleep { id, duration }) = m.poll(&mut h.cx()) else {
        panic!("waits instead of sending a second CheckTxnStatus");
    };
    assert!(
        duration <= std::time::Duration::from_millis(2),
        "{duration:?}"
    );
    // The other check decides the transaction and lets go.
    h.txn_statuses
        .insert(ts(1000), TxnStatus::Committed(ts(1500)));
    drop(other);
    m.handle(&mut h.cx(), id, Outcome::Slept);
    match m.poll(&mut h.cx()) {
        Step::Effect(e @ Effect::Rpc { .. }) => {
            let sent = resp::Sent::of(&e).unwrap();
            assert_eq!(
                sent.method, "KvResolveLock",
                "straight to cleanup, no check"
            );
            assert_eq!(req!(sent, KvResolveLock).commit_version, ts(1500).as_u64());
        }
        other => panic!("expected the cleanup, got {other:?}"),
    }
}
