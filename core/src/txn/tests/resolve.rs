//! `ResolveLocks`: one status check per owning transaction, then the lock committed, rolled
//! back, or counted as alive.

use tikv_proto::kvrpcpb;

use super::*;
use crate::error::Error;
use crate::machine::Machine;
use crate::testing::resp::{LockBuilder, keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::resolve::{ResolveLocks, Resolved};

/// The reader's start timestamp.
const CALLER: Timestamp = Timestamp::compose(5000, 0);

fn resolver(locks: &[LockBuilder]) -> impl Machine<Output = Result<Resolved, Error>> {
    ResolveLocks::new(locks.iter().map(LockBuilder::to_lock).collect(), CALLER)
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
            wait_ms: 0
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
            wait_ms: 1500
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
        ResolveLocks::new(vec![late.to_lock(), early.to_lock()], CALLER),
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
            wait_ms: 500
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
            (keys(&["a"]), ts(1500).as_u64()),
            (keys(&["b"]), ts(1500).as_u64()),
            (keys(&["c"]), 0),
            (keys(&["x"]), ts(1500).as_u64()),
        ],
        "the cached status applies to the owner's later locks"
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
    // Started at 1000 ms with a 3000 ms TTL: expired at 9000.
    let out = h.run(
        resolver(&[owned("b")]),
        cluster([resp::tso(ts(9000))], |s| match s.method {
            "KvCheckTxnStatus" => {
                assert!(req!(s, KvCheckTxnStatus).rollback_if_not_exist);
                resp::check_txn_status().rolled_back()
            }
            _ => resp::resolve_lock().ok(),
        }),
    );
    assert_eq!(out.unwrap().cleaned, 1);
    let sent = resp::sent(&h.effects);
    assert_eq!(req!(sent[1], KvResolveLock).commit_version, 0);
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
            wait_ms: 2000
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
fn async_commit_lock_that_tikv_keeps_is_left_alone_as_alive() {
    let mut h = harness();
    // Expired by TTL, but TiKV never rolls back an async-commit primary from CheckTxnStatus:
    // it answers with the lock's TTL, and the lock waits for its owner.
    let out = h.run(
        resolver(&[owned("b").async_commit()]),
        cluster([resp::tso(ts(9000))], |s| match s.method {
            "KvCheckTxnStatus" => resp::check_txn_status().alive(3000),
            other => panic!("an async-commit lock is not resolved here, got {other}"),
        }),
    );
    assert_eq!(
        out.unwrap(),
        Resolved {
            cleaned: 0,
            alive: 1,
            wait_ms: 0
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
        assert_eq!(second, ["Tso", "KvResolveLock"]);
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
