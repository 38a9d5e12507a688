//! `Committer`: prewrite → commit timestamp → primary commit → secondaries; aborts roll back,
//! an unknown primary commit is undetermined, 1PC commits at prewrite.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::*;
use crate::config::Config;
use crate::error::{Delivery, Error};
use crate::machine::{Machine, Step};
use crate::testing::resp::{keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::buffer::{Mutation, WriteBuffer};
use crate::txn::commit::Committer;

const START: Timestamp = Timestamp::compose(100, 0);
const COMMIT: Timestamp = Timestamp::compose(200, 0);
/// A fresh timestamp taken before the prewrite of async commit and 1PC.
const LATEST: Timestamp = Timestamp::compose(150, 0);

fn committer(config: &Config, writes: &[(&str, Mutation)]) -> Committer {
    let mut buffer = WriteBuffer::new();
    for (k, m) in writes {
        buffer.set((*k).into(), m.clone());
    }
    Committer::new(config, START, &buffer)
}

fn put(v: &str) -> Mutation {
    Mutation::Put(Bytes::copy_from_slice(v.as_bytes()))
}

/// Writes "a" and "b" (region 1, store 1) and "x" (region 2, store 2); "a" is the primary.
fn three_keys() -> Vec<(&'static str, Mutation)> {
    vec![("a", put("1")), ("b", Mutation::Delete), ("x", put("3"))]
}

/// (method, store, keys) of every RPC sent, in order.
fn trace(h: &Harness) -> Vec<(&'static str, u64, Vec<crate::key::Key>)> {
    resp::sent(&h.effects)
        .into_iter()
        .map(|s| (s.method, s.store, s.keys))
        .collect()
}

/// A cluster in which every request succeeds.
fn all_ok(s: &resp::Sent) -> Outcome {
    match s.method {
        "KvPrewrite" => resp::prewrite().ok(),
        "KvCommit" => resp::commit().ok(),
        "KvBatchRollback" => resp::batch_rollback().ok(),
        "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(150)),
        "KvResolveLock" => resp::resolve_lock().ok(),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn commit_prewrites_every_key_then_takes_a_commit_ts_then_commits_the_primary() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let kinds = resp::kinds(&h.effects);
    assert_eq!(
        kinds[..4],
        ["KvPrewrite", "KvPrewrite", "Tso", "KvCommit"],
        "prewrite everything before the commit point"
    );
    let sent = resp::sent(&h.effects);
    let mut prewrites: Vec<_> = sent[..2]
        .iter()
        .map(|s| (s.store, s.keys.clone()))
        .collect();
    prewrites.sort();
    assert_eq!(prewrites, [(1, keys(&["a", "b"])), (2, keys(&["x"]))]);
    for s in &sent[..2] {
        let p = req!(s, KvPrewrite);
        assert_eq!(p.primary_lock, "a", "every prewrite names the primary");
        assert_eq!(p.start_version, START.as_u64());
        assert_eq!(p.lock_ttl, 3000);
        assert_eq!(p.txn_size, 3);
        assert_eq!(
            p.min_commit_ts,
            START.next().as_u64(),
            "a reader can push the commit ts only when one is set"
        );
        assert!(!p.try_one_pc, "1PC is off by default");
    }
    let primary = req!(sent[2], KvCommit);
    assert_eq!((sent[2].store, sent[2].keys.clone()), (1, keys(&["a"])));
    assert_eq!(primary.start_version, START.as_u64());
    assert_eq!(primary.commit_version, COMMIT.as_u64());
}

#[test]
fn commit_prewrite_carries_each_mutation_kind() {
    let mut h = harness();
    let config = h.config.clone();
    let writes = vec![
        ("a", put("1")),
        ("b", Mutation::Delete),
        ("c", Mutation::Insert("3".into())),
    ];
    h.run(
        committer(&config, &writes),
        cluster([resp::tso(COMMIT)], all_ok),
    )
    .unwrap();
    let sent = resp::sent(&h.effects);
    let ops: Vec<(i32, Bytes)> = req!(sent[0], KvPrewrite)
        .mutations
        .iter()
        .map(|m| (m.op, m.value.clone()))
        .collect();
    use tikv_proto::kvrpcpb::Op;
    assert_eq!(
        ops,
        [
            (Op::Put as i32, Bytes::from("1")),
            (Op::Del as i32, Bytes::new()),
            (Op::Insert as i32, Bytes::from("3")),
        ]
    );
}

#[test]
fn commit_write_conflict_rolls_back_every_key_and_fails_with_the_conflict() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([], |s| match (s.method, s.store) {
            ("KvPrewrite", 2) => {
                resp::prewrite().key_error(resp::write_conflict("x", "a", START, ts(90), ts(120)))
            }
            _ => all_ok(s),
        }),
    );
    match out {
        Err(Error::WriteConflict {
            key,
            start_ts,
            conflict_commit_ts,
            ..
        }) => {
            assert_eq!(key, "x".into());
            assert_eq!(start_ts, START.as_u64());
            assert_eq!(conflict_commit_ts, ts(120).as_u64());
        }
        other => panic!("expected a write conflict, got {other:?}"),
    }
    let t = trace(&h);
    let mut rollbacks: Vec<_> = t
        .iter()
        .filter(|(m, ..)| *m == "KvBatchRollback")
        .map(|(_, store, k)| (*store, k.clone()))
        .collect();
    rollbacks.sort();
    assert_eq!(rollbacks, [(1, keys(&["a", "b"])), (2, keys(&["x"]))]);
    assert!(
        !resp::kinds(&h.effects).contains(&"Tso") && !t.iter().any(|(m, ..)| *m == "KvCommit"),
        "never reaches the commit point: {t:?}"
    );
    let sent = resp::sent(&h.effects);
    let rb = sent.iter().find(|s| s.method == "KvBatchRollback").unwrap();
    assert_eq!(req!(rb, KvBatchRollback).start_version, START.as_u64());
}

#[test]
fn commit_insert_of_an_existing_key_rolls_back_and_fails_with_key_exists() {
    let mut h = harness();
    let config = h.config.clone();
    let writes = vec![("a", Mutation::Insert("1".into())), ("b", put("2"))];
    let out = h.run(
        committer(&config, &writes),
        cluster([], |s| match s.method {
            "KvPrewrite" => resp::prewrite().key_error(resp::already_exists("a")),
            _ => all_ok(s),
        }),
    );
    assert!(
        matches!(out, Err(Error::KeyExists { ref key }) if *key == "a".into()),
        "{out:?}"
    );
    assert_eq!(resp::kinds(&h.effects), ["KvPrewrite", "KvBatchRollback"]);
    assert_eq!(resp::sent(&h.effects)[1].keys, keys(&["a", "b"]));
}

#[test]
fn commit_prewrite_meeting_a_lock_resolves_it_and_prewrites_only_the_blocked_batch() {
    let mut h = harness();
    let config = h.config.clone();
    let mut blocked = true;
    let other = lock("x", "y", ts(50));
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(ts(150)), resp::tso(COMMIT)], |s| {
            match (s.method, s.store) {
                ("KvPrewrite", 2) if std::mem::take(&mut blocked) => {
                    resp::prewrite().locked(other.clone())
                }
                ("KvCheckTxnStatus", _) => resp::check_txn_status().rolled_back(),
                _ => all_ok(s),
            }
        }),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let t = trace(&h);
    assert_eq!(
        t[2..5],
        [
            ("KvCheckTxnStatus", 2, keys(&["y"])),
            ("KvResolveLock", 2, keys(&["x"])),
            ("KvPrewrite", 2, keys(&["x"])),
        ],
        "the other transaction's lock is cleaned, then only its batch is prewritten again"
    );
    assert_eq!(
        t.iter().filter(|(m, ..)| *m == "KvPrewrite").count(),
        3,
        "region 1's batch is not prewritten again: {t:?}"
    );
    let sent = resp::sent(&h.effects);
    let check = req!(sent[2], KvCheckTxnStatus);
    assert_eq!(check.caller_start_ts, START.as_u64());
    assert_eq!(check.lock_ts, ts(50).as_u64());
    let kinds = resp::kinds(&h.effects);
    let commit_ts_at = kinds.iter().rposition(|k| *k == "Tso").unwrap();
    assert_eq!(kinds[commit_ts_at + 1], "KvCommit", "{kinds:?}");
    assert_eq!(
        req!(sent[4], KvPrewrite).primary_lock,
        "a",
        "the retry still names the primary"
    );
}

#[test]
fn commit_prewrite_meeting_a_live_lock_waits_then_prewrites_again() {
    let mut h = harness();
    let config = h.config.clone();
    let mut blocked = true;
    let out = h.run(
        committer(&config, &[("a", put("1"))]),
        // The lock of an older transaction, started at 90 ms, lives until 90 + 3000.
        cluster([resp::tso(ts(150)), resp::tso(COMMIT)], |s| {
            match s.method {
                "KvPrewrite" if std::mem::take(&mut blocked) => {
                    resp::prewrite().locked(lock("a", "a", ts(90)))
                }
                "KvCheckTxnStatus" => resp::check_txn_status().alive(3000),
                _ => all_ok(s),
            }
        }),
    );
    assert_eq!(out.unwrap(), COMMIT);
    assert_eq!(
        resp::kinds(&h.effects),
        [
            "KvPrewrite",
            "Tso",
            "KvCheckTxnStatus",
            "Sleep",
            "KvPrewrite",
            "Tso",
            "KvCommit"
        ]
    );
    assert!(
        h.slept() <= std::time::Duration::from_millis(2990),
        "a wait no longer than the lock's remaining TTL, slept {:?}",
        h.slept()
    );
}

#[test]
fn an_optimistic_prewrite_meeting_a_younger_lock_fails_at_once_as_client_go_does() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([], |s| match s.method {
            "KvPrewrite" if s.keys.contains(&crate::Key::from("b")) => {
                resp::prewrite().locked(lock("b", "x", ts(140)))
            }
            _ => all_ok(s),
        }),
    );
    let Err(Error::WriteConflict {
        key, conflict_ts, ..
    }) = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (key, conflict_ts),
        (crate::Key::from("b"), ts(140).as_u64())
    );
    let kinds = resp::kinds(&h.effects);
    assert!(
        !kinds.contains(&"KvCheckTxnStatus"),
        "no wait for it: {kinds:?}"
    );
    assert!(
        kinds.contains(&"KvBatchRollback"),
        "what was prewritten is rolled back"
    );
}

#[test]
fn the_no_resolve_policy_turns_any_lock_into_a_write_conflict() {
    let mut h = harness();
    let config = h.config.clone();
    let committer = committer(&config, &[("a", put("1"))])
        .with_prewrite_lock_policy(crate::options::PrewriteLockPolicy::NoResolve);
    let out = h.run(
        committer,
        cluster([], |s| match s.method {
            "KvPrewrite" => resp::prewrite().locked(lock("a", "a", ts(90))),
            _ => all_ok(s),
        }),
    );
    assert!(matches!(out, Err(Error::WriteConflict { .. })), "{out:?}");
    assert!(!resp::kinds(&h.effects).contains(&"KvCheckTxnStatus"));
}

#[test]
fn a_commit_waits_for_tso_to_pass_its_commit_wait_bound() {
    let mut h = harness();
    let config = h.config.clone();
    // PD's clock is 30 ms behind the bound at first.
    let target = ts(230);
    let committer = committer(&config, &[("a", put("1"))])
        .with_commit_wait_until(target, std::time::Duration::from_secs(1));
    let out = h.run(
        committer,
        cluster(
            [resp::tso(ts(200)), resp::tso(ts(215)), resp::tso(ts(231))],
            all_ok,
        ),
    );
    assert_eq!(out.unwrap(), ts(231));
    let kinds = resp::kinds(&h.effects);
    assert_eq!(
        kinds,
        [
            "KvPrewrite",
            "Tso",
            "Sleep",
            "Tso",
            "Sleep",
            "Tso",
            "KvCommit"
        ],
        "backed off until TSO passed the bound"
    );
}

#[test]
fn a_commit_fails_on_a_drift_beyond_its_wait_and_rolls_back() {
    // A 4.8 s drift with 1 s allowed; any lag with no wait allowed.
    for (timeout, first, target) in [(1_000, ts(200), ts(5_000)), (0, ts(229), ts(230))] {
        let mut h = harness();
        let config = h.config.clone();
        let committer = committer(&config, &[("a", put("1"))])
            .with_commit_wait_until(target, std::time::Duration::from_millis(timeout));
        let out = h.run(committer, cluster([resp::tso(first)], all_ok));
        assert!(
            matches!(out, Err(Error::CommitTsLag { .. })),
            "timeout {timeout} ms: {out:?}"
        );
        assert!(resp::kinds(&h.effects).contains(&"KvBatchRollback"));
    }
}

#[test]
fn a_commit_gives_up_once_tso_lags_for_longer_than_its_wait() {
    let mut h = harness();
    let config = h.config.clone();
    let committer = committer(&config, &[("a", put("1"))])
        .with_commit_wait_until(ts(205), std::time::Duration::from_millis(10));
    // PD's clock never moves.
    let out = h.run(committer, cluster(vec![resp::tso(ts(200)); 10], all_ok));
    assert!(matches!(out, Err(Error::CommitTsLag { .. })), "{out:?}");
    assert!(
        h.slept() <= std::time::Duration::from_millis(10),
        "{:?}",
        h.slept()
    );
    assert!(resp::kinds(&h.effects).contains(&"KvBatchRollback"));
}

#[test]
fn async_commit_with_a_wait_bound_takes_a_fresh_timestamp_even_when_causal() {
    let mut h = harness();
    let config = h.config.clone();
    let committer = committer(&config, &[("a", put("1"))])
        .with_async_commit(true)
        .with_causal_consistency(true)
        .with_commit_wait_until(ts(230), std::time::Duration::from_secs(1));
    let out = h.run(
        committer,
        cluster([resp::tso(ts(240))], |s| match s.method {
            "KvPrewrite" => {
                let p = req!(s, KvPrewrite);
                assert!(
                    p.min_commit_ts > ts(240).as_u64(),
                    "above the fresh timestamp"
                );
                resp::prewrite()
                    .with(|r| r.min_commit_ts = ts(241).as_u64())
                    .ok()
            }
            _ => all_ok(s),
        }),
    );
    assert_eq!(out.unwrap(), ts(241));
}

#[test]
fn commit_tso_failure_after_prewrite_backs_off_and_asks_again_keeping_the_locks() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso_failed(), resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let kinds = resp::kinds(&h.effects);
    assert_eq!(
        kinds[..6],
        [
            "KvPrewrite",
            "KvPrewrite",
            "Tso",
            "Sleep",
            "Tso",
            "KvCommit"
        ],
        "the prewritten locks stay valid while TSO recovers"
    );
    assert!(!kinds.contains(&"KvBatchRollback"));
}

#[test]
fn commit_tso_failing_for_the_whole_budget_rolls_back_and_fails() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster(std::iter::repeat_with(resp::tso_failed), all_ok),
    );
    match out {
        Err(Error::BackoffExhausted { last, .. }) => {
            assert!(matches!(*last, Error::Pd { .. }), "{last:?}")
        }
        other => panic!("expected the budget to run out, got {other:?}"),
    }
    let kinds = resp::kinds(&h.effects);
    assert!(!kinds.contains(&"KvCommit"), "{kinds:?}");
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["KvBatchRollback", "KvBatchRollback"],
        "the prewritten locks are rolled back"
    );
}

#[test]
fn commit_ts_expired_takes_a_newer_commit_ts_and_commits_again() {
    let mut h = harness();
    let config = h.config.clone();
    let newer = ts(300);
    let mut first = true;
    let out = h.run(
        committer(&config, &[("a", put("1"))]),
        cluster([resp::tso(COMMIT), resp::tso(newer)], |s| match s.method {
            "KvCommit" if std::mem::take(&mut first) => resp::commit().commit_ts_expired(ts(250)),
            _ => all_ok(s),
        }),
    );
    assert_eq!(out.unwrap(), newer);
    assert_eq!(
        resp::kinds(&h.effects),
        ["KvPrewrite", "Tso", "KvCommit", "Tso", "KvCommit"]
    );
    let sent = resp::sent(&h.effects);
    assert_eq!(req!(sent[1], KvCommit).commit_version, COMMIT.as_u64());
    assert_eq!(req!(sent[2], KvCommit).commit_version, newer.as_u64());
}

#[test]
fn commit_primary_reply_lost_is_undetermined_and_nothing_is_rolled_back() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], |s| match s.method {
            "KvCommit" => resp::rpc_failed(Delivery::MaybeDelivered),
            _ => all_ok(s),
        }),
    );
    assert!(
        matches!(
            out,
            Err(Error::Undetermined {
                operation: "KvCommit",
                ..
            })
        ),
        "{out:?}"
    );
    let kinds = resp::kinds(&h.effects);
    assert_eq!(
        kinds,
        ["KvPrewrite", "KvPrewrite", "Tso", "KvCommit"],
        "neither resent nor rolled back, and no secondary is committed"
    );
}

#[test]
fn commit_primary_not_sent_is_retried() {
    let mut h = harness();
    h.cache(region(1, "", "m", &[1, 2]));
    let config = h.config.clone();
    let mut first = true;
    let out = h.run(
        committer(&config, &[("a", put("1"))]),
        cluster([resp::tso(COMMIT)], |s| match s.method {
            "KvCommit" if std::mem::take(&mut first) => resp::rpc_failed(Delivery::NotSent),
            _ => all_ok(s),
        }),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let commits: Vec<u64> = resp::sent(&h.effects)
        .iter()
        .filter(|s| s.method == "KvCommit")
        .map(|s| s.store)
        .collect();
    assert_eq!(
        commits,
        [1, 2],
        "a request never sent is safe to send elsewhere"
    );
}

#[test]
fn commit_primary_lock_gone_means_aborted_without_rollback() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], |s| match s.method {
            "KvCommit" => resp::commit().lock_not_found("a"),
            _ => all_ok(s),
        }),
    );
    assert!(
        matches!(out, Err(Error::TxnAborted { start_ts, .. }) if start_ts == START.as_u64()),
        "{out:?}"
    );
    assert!(!resp::kinds(&h.effects).contains(&"KvBatchRollback"));
}

#[test]
fn commit_primary_region_error_is_retried_with_the_same_commit_ts() {
    let mut h = harness();
    h.cache(region(1, "", "m", &[1, 2]));
    let config = h.config.clone();
    let leader = h.regions.peek_by_id(1).unwrap().peer_on_store(2);
    let mut first = true;
    let out = h.run(
        committer(&config, &[("a", put("1"))]),
        cluster([resp::tso(COMMIT)], |s| match s.method {
            "KvCommit" if std::mem::take(&mut first) => {
                resp::commit().region_error(resp::not_leader(1, leader))
            }
            _ => all_ok(s),
        }),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let commits: Vec<(u64, u64)> = resp::sent(&h.effects)
        .iter()
        .filter(|s| s.method == "KvCommit")
        .map(|s| (s.store, req!(s, KvCommit).commit_version))
        .collect();
    assert_eq!(commits, [(1, COMMIT.as_u64()), (2, COMMIT.as_u64())]);
}

#[test]
fn commit_in_one_phase_when_tikv_commits_at_prewrite() {
    let mut h = harness();
    h.config.try_one_pc = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &[("a", put("1")), ("b", put("2"))]),
        cluster([resp::tso(LATEST)], |s| {
            let p = req!(s, KvPrewrite);
            assert!(p.try_one_pc, "one request carries every key");
            assert_eq!(
                p.min_commit_ts,
                LATEST.next().as_u64(),
                "above every snapshot taken before the commit"
            );
            assert!(p.max_commit_ts > LATEST.as_u64());
            resp::prewrite().one_pc(ts(180))
        }),
    );
    assert_eq!(out.unwrap(), ts(180));
    assert_eq!(
        resp::kinds(&h.effects),
        ["Tso", "KvPrewrite"],
        "a lower bound for the commit ts, then the commit itself"
    );
}

#[test]
fn commit_never_asks_for_one_phase_when_keys_span_regions() {
    let mut h = harness();
    h.config.try_one_pc = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(LATEST), resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let sent = resp::sent(&h.effects);
    assert!(
        sent.iter()
            .filter(|s| s.method == "KvPrewrite")
            .all(|s| !req!(s, KvPrewrite).try_one_pc),
        "a split transaction must not commit piecewise"
    );
}

#[test]
fn commit_declined_one_phase_continues_as_two_phase_commit() {
    let mut h = harness();
    h.config.try_one_pc = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &[("a", put("1")), ("b", put("2"))]),
        // TiKV declined 1PC: ordinary locks, no one_pc_commit_ts.
        cluster([resp::tso(LATEST), resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let kinds = resp::kinds(&h.effects);
    assert_eq!(kinds[..4], ["Tso", "KvPrewrite", "Tso", "KvCommit"]);
    let sent = resp::sent(&h.effects);
    assert!(req!(sent[0], KvPrewrite).try_one_pc);
    assert_eq!(sent[1].keys, keys(&["a"]), "the primary commits first");
}

#[test]
fn commit_of_an_empty_transaction_succeeds_at_its_start_ts_without_effects() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(committer(&config, &[]), |e| panic!("unexpected {e:?}"));
    assert_eq!(out.unwrap(), START);
    assert!(h.effects.is_empty());
}

#[test]
fn commit_prewrite_epoch_not_match_prewrites_the_split_region_again() {
    let mut h = harness();
    let config = h.config.clone();
    let mut split = [region(1, "", "b", &[1]), region(3, "b", "m", &[1])];
    for r in &mut split {
        r.epoch.version = 2;
    }
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], |s| {
            match (s.method, s.region, s.version) {
                ("KvPrewrite", 1, 1) => {
                    resp::prewrite().region_error(resp::epoch_not_match(&split))
                }
                _ => all_ok(s),
            }
        }),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let mut prewrites: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvPrewrite")
        .map(|s| (s.region, s.version, s.keys))
        .collect();
    prewrites.sort();
    assert_eq!(
        prewrites,
        [
            (1, 1, keys(&["a", "b"])),
            (1, 2, keys(&["a"])),
            (2, 1, keys(&["x"])),
            (3, 2, keys(&["b"])),
        ]
    );
}

#[test]
fn commit_primary_undetermined_region_error_is_undetermined_and_nothing_is_rolled_back() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], |s| match s.method {
            "KvCommit" => resp::commit().region_error(resp::undetermined_result()),
            _ => all_ok(s),
        }),
    );
    assert!(matches!(out, Err(Error::Undetermined { .. })), "{out:?}");
    assert_eq!(
        resp::kinds(&h.effects),
        ["KvPrewrite", "KvPrewrite", "Tso", "KvCommit"]
    );
}

#[test]
fn commit_prewrite_reply_lost_is_sent_again() {
    let mut h = harness();
    h.cache(region(1, "", "m", &[1, 2]));
    let config = h.config.clone();
    let mut first = true;
    let out = h.run(
        committer(&config, &[("a", put("1")), ("b", put("2"))]),
        cluster([resp::tso(COMMIT)], |s| match s.method {
            "KvPrewrite" if std::mem::take(&mut first) => {
                resp::rpc_failed(Delivery::MaybeDelivered)
            }
            _ => all_ok(s),
        }),
    );
    assert_eq!(
        out.unwrap(),
        COMMIT,
        "prewrite is idempotent: resending is safe"
    );
    let prewrites: Vec<(u64, Vec<crate::key::Key>)> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvPrewrite")
        .map(|s| (s.store, s.keys))
        .collect();
    assert_eq!(prewrites, [(1, keys(&["a", "b"])), (2, keys(&["a", "b"]))]);
}

// Secondaries last: they are committed by a background task (`Effect::Spawn`).

#[test]
fn commit_secondaries_are_committed_with_the_primarys_commit_ts_after_it() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    assert_eq!(h.spawned, ["commit secondaries"]);
    let kinds = resp::kinds(&h.effects);
    let spawn_at = kinds.iter().position(|k| *k == "Spawn").expect("a spawn");
    assert_eq!(
        kinds[spawn_at - 1],
        "KvCommit",
        "spawned once the primary is committed"
    );
    let sent = resp::sent(&h.effects);
    let commits: Vec<_> = sent.iter().filter(|s| s.method == "KvCommit").collect();
    assert_eq!(commits[0].keys, keys(&["a"]), "the primary first");
    let mut secondaries: Vec<_> = commits[1..]
        .iter()
        .map(|s| (s.store, s.keys.clone(), req!(s, KvCommit).commit_version))
        .collect();
    secondaries.sort();
    assert_eq!(
        secondaries,
        [
            (1, keys(&["b"]), COMMIT.as_u64()),
            (2, keys(&["x"]), COMMIT.as_u64())
        ]
    );
    assert!(
        commits[1..]
            .iter()
            .all(|s| req!(s, KvCommit).start_version == START.as_u64())
    );
}

#[test]
fn commit_secondary_failure_leaves_the_transaction_committed() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], |s| match (s.method, s.store) {
            ("KvCommit", 2) => resp::commit().region_error(resp::raft_entry_too_large()),
            _ => all_ok(s),
        }),
    );
    assert_eq!(
        out.unwrap(),
        COMMIT,
        "committed at the primary; readers resolve the leftover lock"
    );
    assert!(!resp::kinds(&h.effects).contains(&"KvBatchRollback"));
}

#[test]
fn commit_of_a_single_key_has_no_secondaries() {
    let mut h = harness();
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &[("x", put("1"))]),
        cluster([resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    assert_eq!(resp::kinds(&h.effects), ["KvPrewrite", "Tso", "KvCommit"]);
    assert_eq!(resp::sent(&h.effects)[1].store, 2);
}

#[test]
fn commit_reports_the_commit_without_waiting_for_the_secondaries() {
    let mut h = harness();
    let config = h.config.clone();
    let (out, spawned) = run_without_background(
        &mut h,
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    assert_eq!(spawned, ["commit secondaries"]);
    let commits: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvCommit")
        .map(|s| s.keys)
        .collect();
    assert_eq!(commits, [keys(&["a"])], "only the primary before reporting");
}

/// Drives `machine` as the harness does, but leaves the tasks it spawns unrun: what its
/// caller sees before any background work happens. Returns the output and the spawned tasks'
/// names.
fn run_without_background<M: Machine>(
    h: &mut Harness,
    mut machine: M,
    mut respond: impl FnMut(&Effect) -> Outcome,
) -> (M::Output, Vec<&'static str>) {
    let mut pending = std::collections::VecDeque::new();
    let mut spawned = Vec::new();
    loop {
        loop {
            let mut cx = h.cx();
            match machine.poll(&mut cx) {
                Step::Effect(Effect::Spawn { task, .. }) => spawned.push(task.name()),
                Step::Effect(e) => pending.push_back(e),
                Step::Wait => break,
                Step::Done(out) => return (out, spawned),
            }
        }
        let effect = pending.pop_front().expect("waits with nothing outstanding");
        let outcome = match &effect {
            Effect::Sleep { .. } => Outcome::Slept,
            other => respond(other),
        };
        let id = effect.id();
        h.effects.push(effect);
        let mut cx = h.cx();
        machine.handle(&mut cx, id, outcome);
    }
}

// Async commit: the prewrite is the commit point.

/// Async commit on, "a" "b" in region 1 and "x" in region 2 prewritten with min commit
/// timestamps 160 and 170.
fn async_cluster(s: &resp::Sent) -> Outcome {
    match (s.method, s.store) {
        ("KvPrewrite", 1) => resp::prewrite().min_commit(ts(160)),
        ("KvPrewrite", _) => resp::prewrite().min_commit(ts(170)),
        _ => all_ok(s),
    }
}

#[test]
fn async_commit_is_decided_by_the_prewrites_at_their_largest_min_commit_ts() {
    let mut h = harness();
    h.config.async_commit = true;
    let config = h.config.clone();
    let (out, spawned) = run_without_background(
        &mut h,
        committer(&config, &three_keys()),
        cluster([resp::tso(LATEST)], async_cluster),
    );
    assert_eq!(
        out.unwrap(),
        ts(170),
        "no commit ts from TSO: the largest min_commit_ts"
    );
    assert_eq!(spawned, ["commit secondaries"]);
    assert_eq!(
        resp::kinds(&h.effects),
        ["Tso", "KvPrewrite", "KvPrewrite"],
        "reported once every key is prewritten; nothing committed before"
    );
    let sent = resp::sent(&h.effects);
    for s in &sent {
        let p = req!(s, KvPrewrite);
        assert!(p.use_async_commit);
        assert_eq!(p.min_commit_ts, LATEST.next().as_u64());
        assert_eq!(
            p.max_commit_ts,
            LATEST.add_ms(2000).as_u64(),
            "the transaction's time (here the fresh timestamp) + the 2 s safe window"
        );
        let listed: Vec<crate::key::Key> = p.secondaries.iter().cloned().map(Into::into).collect();
        if s.keys.contains(&"a".into()) {
            assert_eq!(
                listed,
                keys(&["b", "x"]),
                "the primary's lock lists the rest"
            );
        } else {
            assert!(
                listed.is_empty(),
                "only the primary's batch lists secondaries"
            );
        }
    }
}

#[test]
fn async_commit_commits_every_key_in_the_background() {
    let mut h = harness();
    h.config.async_commit = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(LATEST)], async_cluster),
    );
    assert_eq!(out.unwrap(), ts(170));
    let mut commits: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvCommit")
        .map(|s| (s.store, s.keys.clone(), req!(s, KvCommit).commit_version))
        .collect();
    commits.sort();
    assert_eq!(
        commits,
        [
            (1, keys(&["a", "b"]), ts(170).as_u64()),
            (2, keys(&["x"]), ts(170).as_u64())
        ],
        "the primary with the secondaries: nothing committed it yet"
    );
}

#[test]
fn async_commit_falls_back_to_two_phase_commit_when_tikv_returns_no_min_commit_ts() {
    let mut h = harness();
    h.config.async_commit = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(LATEST), resp::tso(COMMIT)], |s| {
            match (s.method, s.store) {
                // Region 2 could not keep max_commit_ts: an ordinary lock.
                ("KvPrewrite", 2) => resp::prewrite().min_commit(Timestamp::ZERO),
                _ => async_cluster(s),
            }
        }),
    );
    assert_eq!(out.unwrap(), COMMIT, "a commit ts from TSO, as in 2PC");
    let kinds = resp::kinds(&h.effects);
    assert_eq!(
        kinds[..5],
        ["Tso", "KvPrewrite", "KvPrewrite", "Tso", "KvCommit"],
        "the primary commit is the commit point again"
    );
    assert_eq!(resp::sent(&h.effects)[2].keys, keys(&["a"]));
}

#[test]
fn async_commit_prewrite_reply_lost_is_undetermined_and_never_rolled_back() {
    let mut h = harness();
    h.config.async_commit = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(LATEST)], |s| match (s.method, s.store) {
            ("KvPrewrite", 2) => resp::rpc_failed(Delivery::MaybeDelivered),
            _ => async_cluster(s),
        }),
    );
    assert!(matches!(out, Err(Error::Undetermined { .. })), "{out:?}");
    assert!(
        !resp::kinds(&h.effects).contains(&"KvBatchRollback"),
        "if it arrived, the transaction is committed: rolling back could break it"
    );
}

#[test]
fn async_commit_is_not_used_for_transactions_over_its_key_limit() {
    let mut h = harness();
    h.config.async_commit = true;
    h.config.async_commit_keys_limit = 2;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    let sent = resp::sent(&h.effects);
    assert!(
        sent.iter()
            .filter(|s| s.method == "KvPrewrite")
            .all(
                |s| !req!(s, KvPrewrite).use_async_commit && req!(s, KvPrewrite).max_commit_ts == 0
            )
    );
    assert_eq!(
        resp::kinds(&h.effects)[0],
        "KvPrewrite",
        "no fresh timestamp first"
    );
}

#[test]
fn causal_consistency_skips_the_fresh_timestamp() {
    let mut h = harness();
    h.config.async_commit = true;
    let config = h.config.clone();
    let mut buffer = WriteBuffer::new();
    for (k, m) in three_keys() {
        buffer.set(k.into(), m);
    }
    let out = h.run(
        Committer::new(&config, START, &buffer).with_causal_consistency(true),
        cluster([], async_cluster),
    );
    assert_eq!(out.unwrap(), ts(170));
    let sent = resp::sent(&h.effects);
    let p = req!(sent[0], KvPrewrite);
    assert_eq!(p.min_commit_ts, START.next().as_u64());
    assert_eq!(
        p.max_commit_ts,
        START.add_ms(2000).as_u64(),
        "the transaction's own time bounds the commit ts"
    );
}

#[test]
fn async_commit_tso_failure_before_the_prewrite_fails_without_writing() {
    let mut h = harness();
    h.config.async_commit = true;
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster(std::iter::repeat_with(resp::tso_failed), |s| {
            panic!("nothing may be written without the bound, got {}", s.method)
        }),
    );
    assert!(
        matches!(out, Err(Error::BackoffExhausted { .. })),
        "{out:?}"
    );
}

#[test]
fn a_large_commit_heartbeats_its_primary_until_it_ends() {
    let mut h = harness();
    h.config.ttl_refreshed_txn_size = 0; // every transaction counts as large here
    let config = h.config.clone();
    let out = h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], all_ok),
    );
    assert_eq!(out.unwrap(), COMMIT);
    assert_eq!(
        h.spawned,
        ["heartbeat", "commit secondaries"],
        "heartbeats start once the primary is prewritten"
    );
    assert!(
        !resp::kinds(&h.effects).contains(&"KvTxnHeartBeat"),
        "the commit ended before the first beat was due: the task stopped without one"
    );
}

#[test]
fn a_small_commit_needs_no_heartbeat() {
    let mut h = harness();
    let config = h.config.clone();
    h.run(
        committer(&config, &three_keys()),
        cluster([resp::tso(COMMIT)], all_ok),
    )
    .unwrap();
    assert_eq!(h.spawned, ["commit secondaries"]);
}

#[test]
fn prewrite_carries_the_assertion_level_and_each_keys_assertion() {
    use crate::options::{Assertion, AssertionLevel};
    let mut h = harness();
    let config = h.config.clone();
    let mut buffer = WriteBuffer::new();
    for (k, m) in three_keys() {
        buffer.set(k.into(), m);
    }
    let committer = Committer::new(&config, START, &buffer).with_assertions(
        AssertionLevel::Fast,
        [
            ("a".into(), Assertion::Exists),
            ("x".into(), Assertion::NotExists),
        ],
    );
    let out = h.run(committer, cluster([resp::tso(COMMIT)], all_ok));
    assert_eq!(out.unwrap(), COMMIT);
    for s in resp::sent(&h.effects)
        .iter()
        .filter(|s| s.method == "KvPrewrite")
    {
        let p = req!(s, KvPrewrite);
        assert_eq!(p.assertion_level, kvrpcpb::AssertionLevel::Fast as i32);
        for m in &p.mutations {
            let expected = match &m.key[..] {
                b"a" => kvrpcpb::Assertion::Exist,
                b"x" => kvrpcpb::Assertion::NotExist,
                _ => kvrpcpb::Assertion::None,
            };
            assert_eq!(m.assertion, expected as i32, "{:?}", m.key);
        }
    }
}
