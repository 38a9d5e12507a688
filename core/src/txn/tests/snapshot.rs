//! `SnapshotGet` and `SnapshotBatchGet`: reads at a start timestamp that resolve the locks they
//! meet and read again.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::error::Error;
use crate::key::Key;
use crate::keyspace::KeyspaceCodec;
use crate::machine::Machine;
use crate::raw::KvPair;
use crate::testing::resp::{keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::snapshot::{SnapshotBatchGet, SnapshotGet};

const START: Timestamp = Timestamp::compose(5000, 0);

fn get(key: &str) -> impl Machine<Output = Result<Option<Bytes>, Error>> {
    SnapshotGet::new(KeyspaceCodec::NONE, key.into(), START)
}

fn batch_get(keys: &[&str], max_keys: usize) -> impl Machine<Output = Result<Vec<KvPair>, Error>> {
    SnapshotBatchGet::new(
        KeyspaceCodec::NONE,
        keys.iter().map(|k| Key::from(*k)).collect(),
        START,
        max_keys,
    )
}

fn pairs(spec: &[(&str, &str)]) -> Vec<KvPair> {
    spec.iter()
        .map(|(k, v)| KvPair {
            key: Key::from(*k),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .collect()
}

#[test]
fn get_reads_at_the_start_ts_from_the_keys_region() {
    for (reply, expected) in [
        (resp::get("v"), Some(Bytes::from_static(b"v"))),
        (resp::get_not_found(), None),
    ] {
        let mut h = harness();
        let out = h.run(get("x"), cluster([], |_| reply.clone()));
        assert_eq!(out.unwrap(), expected);
        let sent = resp::sent(&h.effects);
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].store, sent[0].region), (2, 2));
        let r = req!(sent[0], KvGet);
        assert_eq!((r.key.as_ref(), r.version), (&b"x"[..], START.as_u64()));
    }
}

#[test]
fn get_meeting_a_committed_lock_resolves_it_and_reads_again() {
    let mut h = harness();
    let mut reads = 0;
    let blocker = lock("b", "x", ts(1000));
    let out = h.run(
        get("b"),
        cluster([resp::tso(ts(6000))], |s| match s.method {
            "KvGet" => {
                reads += 1;
                if reads == 1 {
                    resp::kv_get().locked(blocker.clone())
                } else {
                    let ctx = req!(s, KvGet).context.clone().unwrap_or_default();
                    assert_eq!(
                        ctx.committed_locks,
                        [ts(1000).as_u64()],
                        "committed before the read: read through its lock"
                    );
                    resp::get("new")
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().committed(ts(1500)),
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap(), Some(Bytes::from_static(b"new")));
    assert_eq!(
        resp::kinds(&h.effects),
        [
            "KvGet",
            "Tso",
            "KvCheckTxnStatus",
            "Spawn",
            "KvGet",
            "KvResolveLock"
        ],
        "read again at once; the lock is cleaned up in the background"
    );
    assert_eq!(h.spawned, ["resolve locks"]);
    let sent = resp::sent(&h.effects);
    assert_eq!(
        req!(sent[1], KvCheckTxnStatus).caller_start_ts,
        START.as_u64()
    );
    assert_eq!(
        sent[1].store, 2,
        "the owner's primary \"x\" lives in region 2"
    );
    assert_eq!(
        req!(sent[3], KvResolveLock).commit_version,
        ts(1500).as_u64()
    );
}

#[test]
fn get_meeting_a_live_lock_sleeps_no_longer_than_its_ttl_then_reads_again() {
    let mut h = harness();
    let mut reads = 0;
    // Started at 1000 ms, alive for 1003 ms: expires 3 ms after "now" (2000).
    let blocker = lock("b", "b", ts(1000));
    let out = h.run(
        get("b"),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvGet" => {
                reads += 1;
                if reads == 1 {
                    resp::kv_get().locked(blocker.clone())
                } else {
                    resp::get("v")
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().alive(1003),
            other => panic!("a live lock is not resolved, got {other}"),
        }),
    );
    assert_eq!(out.unwrap(), Some(Bytes::from_static(b"v")));
    assert_eq!(
        resp::kinds(&h.effects),
        ["KvGet", "Tso", "KvCheckTxnStatus", "Sleep", "KvGet"]
    );
    assert_eq!(
        h.slept(),
        Duration::from_millis(3),
        "txnLockFast (at least 5 ms) is capped by the lock's remaining 3 ms"
    );
}

#[test]
fn get_key_error_surfaces_with_the_key() {
    let mut h = harness();
    let out = h.run(
        get("b"),
        cluster([], |_| resp::kv_get().key_error(resp::abort("corrupted"))),
    );
    match out {
        Err(Error::KeyError { key, message }) => {
            assert!(message.contains("corrupted"), "{message}");
            assert_eq!(key, Key::from("b"), "the error names the key that failed");
        }
        other => panic!("expected a key error, got {other:?}"),
    }
}

#[test]
fn get_key_error_fails_the_read_without_retrying() {
    let mut h = harness();
    let out = h.run(
        get("b"),
        cluster([], |_| resp::kv_get().key_error(resp::abort("corrupted"))),
    );
    assert!(
        matches!(out, Err(Error::KeyError { ref message, .. }) if message.contains("corrupted")),
        "{out:?}"
    );
    assert_eq!(resp::kinds(&h.effects), ["KvGet"]);
}

#[test]
fn get_fails_when_the_resolver_gets_no_timestamp_within_the_budget() {
    let mut h = harness();
    let out = h.run(
        get("b"),
        cluster(std::iter::repeat_with(resp::tso_failed), |s| {
            match s.method {
                "KvGet" => resp::kv_get().locked(lock("b", "b", ts(1000))),
                other => panic!("no lock can be judged without a timestamp, got {other}"),
            }
        }),
    );
    match out {
        Err(Error::BackoffExhausted { last, .. }) => {
            assert!(matches!(*last, Error::Pd { .. }), "{last:?}")
        }
        other => panic!("expected the budget to run out, got {other:?}"),
    }
    assert_eq!(resp::sent(&h.effects).len(), 1, "read once, never again");
}

#[test]
fn batch_get_reads_each_region_once_and_returns_sorted_found_pairs() {
    let mut h = harness();
    let out = h.run(
        batch_get(&["y", "a", "n", "b", "a"], 100),
        cluster([], |s| match s.store {
            1 => resp::batch_get().pairs(&[("a", "1"), ("b", "2")]).ok(),
            // "y" does not exist: TiKV leaves it out.
            _ => resp::batch_get().pair("n", "3").ok(),
        }),
    );
    assert_eq!(out.unwrap(), pairs(&[("a", "1"), ("b", "2"), ("n", "3")]));
    let sent = resp::sent(&h.effects);
    let mut routed: Vec<_> = sent.iter().map(|s| (s.store, s.keys.clone())).collect();
    routed.sort();
    assert_eq!(
        routed,
        [(1, keys(&["a", "b"])), (2, keys(&["n", "y"]))],
        "sorted, deduplicated, grouped by region"
    );
    assert!(
        sent.iter()
            .all(|s| req!(s, KvBatchGet).version == START.as_u64())
    );
}

#[test]
fn batch_get_rereads_only_the_keys_that_met_locks() {
    let mut h = harness();
    let mut reads = 0;
    let out = h.run(
        batch_get(&["a", "b", "n"], 100),
        cluster([resp::tso(ts(6000))], |s| match s.method {
            "KvBatchGet" => {
                reads += 1;
                match (reads, s.store) {
                    (_, 2) => resp::batch_get().pair("n", "3").ok(),
                    (1, 1) => resp::batch_get()
                        .pair("a", "1")
                        .locked_pair(lock("b", "b", ts(1000)))
                        .ok(),
                    _ => resp::batch_get().pair("b", "2").ok(),
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().rolled_back(),
            _ => resp::resolve_lock().ok(),
        }),
    );
    assert_eq!(out.unwrap(), pairs(&[("a", "1"), ("b", "2"), ("n", "3")]));
    let reads: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .filter(|s| s.method == "KvBatchGet")
        .map(|s| s.keys)
        .collect();
    assert_eq!(reads.len(), 3);
    assert_eq!(reads[2], keys(&["b"]), "only the locked key is read again");
}

#[test]
fn batch_get_with_a_live_lock_sleeps_then_rereads_the_key() {
    let mut h = harness();
    let mut reads = 0;
    let out = h.run(
        batch_get(&["a"], 100),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvBatchGet" => {
                reads += 1;
                if reads == 1 {
                    resp::batch_get().locked_pair(lock("a", "a", ts(1000))).ok()
                } else {
                    resp::batch_get().pair("a", "1").ok()
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().alive(1002),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap(), pairs(&[("a", "1")]));
    assert_eq!(
        resp::kinds(&h.effects),
        [
            "KvBatchGet",
            "Tso",
            "KvCheckTxnStatus",
            "Sleep",
            "KvBatchGet"
        ]
    );
    assert_eq!(h.slept(), Duration::from_millis(2));
}

#[test]
fn batch_get_splits_a_region_by_max_keys() {
    let mut h = harness();
    let out = h.run(
        batch_get(&["a", "b", "c"], 2),
        cluster([], |s| {
            let mut r = resp::batch_get();
            for k in &s.keys {
                r = r.pair(std::str::from_utf8(k.as_bytes()).unwrap(), "v");
            }
            r.ok()
        }),
    );
    assert_eq!(out.unwrap().len(), 3);
    let batches: Vec<_> = resp::sent(&h.effects).into_iter().map(|s| s.keys).collect();
    assert_eq!(batches, [keys(&["a", "b"]), keys(&["c"])]);
}

#[test]
fn batch_get_epoch_not_match_rereads_only_that_regions_keys() {
    let mut h = harness();
    let mut split = [region(2, "m", "t", &[2]), region(3, "t", "", &[2])];
    for r in &mut split {
        r.epoch.version = 2;
    }
    let out = h.run(
        batch_get(&["a", "n", "x"], 100),
        cluster([], |s| match (s.region, s.version) {
            (2, 1) => resp::batch_get().region_error(resp::epoch_not_match(&split)),
            (1, _) => resp::batch_get().pair("a", "1").ok(),
            (2, _) => resp::batch_get().pair("n", "2").ok(),
            _ => resp::batch_get().pair("x", "3").ok(),
        }),
    );
    assert_eq!(out.unwrap(), pairs(&[("a", "1"), ("n", "2"), ("x", "3")]));
    let mut routed: Vec<_> = resp::sent(&h.effects)
        .into_iter()
        .map(|s| (s.region, s.version, s.keys))
        .collect();
    routed.sort();
    assert_eq!(
        routed,
        [
            (1, 1, keys(&["a"])),
            (2, 1, keys(&["n", "x"])),
            (2, 2, keys(&["n"])),
            (3, 2, keys(&["x"])),
        ]
    );
}

#[test]
fn batch_get_key_error_fails_the_read() {
    let mut h = harness();
    let out = h.run(
        batch_get(&["a", "n"], 100),
        cluster([], |s| match s.store {
            1 => resp::batch_get().key_error(resp::abort("boom")),
            _ => resp::batch_get().ok(),
        }),
    );
    assert!(
        matches!(out, Err(Error::KeyError { ref message, .. }) if message == "boom"),
        "{out:?}"
    );
}

#[test]
fn get_passes_a_lock_whose_commit_ts_was_pushed_without_waiting() {
    // The owner is alive, but TiKV pushed its min_commit_ts above the reader: the read is
    // sent again at once, naming the owner in `resolved_locks`.
    let mut h = harness();
    let mut reads = 0;
    let out = h.run(
        get("b"),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvGet" => {
                reads += 1;
                let ctx = req!(s, KvGet).context.clone().unwrap_or_default();
                if reads == 1 {
                    assert!(ctx.resolved_locks.is_empty());
                    resp::kv_get().locked(lock("b", "x", ts(1000)))
                } else {
                    assert_eq!(ctx.resolved_locks, [ts(1000).as_u64()]);
                    resp::get("old")
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().pushed(3000),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap(), Some(Bytes::from_static(b"old")));
    assert_eq!(
        resp::kinds(&h.effects),
        ["KvGet", "Tso", "KvCheckTxnStatus", "KvGet"],
        "no sleep, no cleanup"
    );
}

#[test]
fn batch_get_rereads_with_what_it_learnt_about_lock_owners() {
    let mut h = harness();
    let mut reads = 0;
    let out = h.run(
        batch_get(&["a", "b"], 100),
        cluster([resp::tso(ts(2000))], |s| match s.method {
            "KvBatchGet" => {
                reads += 1;
                let ctx = req!(s, KvBatchGet).context.clone().unwrap_or_default();
                if reads == 1 {
                    resp::batch_get()
                        .pair("a", "1")
                        .locked_pair(lock("b", "x", ts(1000)))
                        .ok()
                } else {
                    assert_eq!(ctx.resolved_locks, [ts(1000).as_u64()]);
                    assert_eq!(s.keys, keys(&["b"]), "only the locked key again");
                    resp::batch_get().pair("b", "2").ok()
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().pushed(3000),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap().len(), 2);
}
