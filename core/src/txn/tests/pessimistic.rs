//! `LockKeys`: the primary first, locks waited for and resolved, failures rolling back what
//! the call locked; and the committer's prewrite of a pessimistic transaction.

use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::*;
use crate::error::Error;
use crate::key::Key;
use crate::keyspace::KeyspaceCodec;
use crate::testing::resp::{keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::buffer::{Mutation, WriteBuffer};
use crate::txn::commit::Committer;
use crate::txn::pessimistic::{Interrupt, LockKeys, LockOptions, LockWait, LockedValue};

const START: Timestamp = Timestamp::compose(1000, 0);
const FOR_UPDATE: Timestamp = Timestamp::compose(1100, 0);

fn lock_keys(keys: &[&str], first: bool, options: LockOptions) -> LockKeys {
    LockKeys::new(
        KeyspaceCodec::NONE,
        keys.iter().map(|k| Key::from(*k)).collect(),
        "a".into(),
        START,
        FOR_UPDATE,
        first,
        20_000,
        &options,
    )
}

#[test]
fn the_first_lock_takes_the_primary_alone_then_the_rest() {
    let mut h = harness();
    let out = h.run(
        lock_keys(&["x", "a", "b"], true, LockOptions::default()),
        cluster([], |_| resp::pessimistic_lock().ok()),
    );
    let out = out.unwrap();
    assert!(out.values.is_empty());
    assert_eq!(
        (out.stats.keys, out.stats.requests, out.stats.retries),
        (3, 3, 0),
        "the primary's request, then one per region"
    );
    let sent = resp::sent(&h.effects);
    let rounds: Vec<_> = sent.iter().map(|s| (s.store, s.keys.clone())).collect();
    assert_eq!(
        rounds,
        [(1, keys(&["a"])), (1, keys(&["b"])), (2, keys(&["x"]))],
        "the primary's lock exists before any secondary points at it"
    );
    let primary = req!(sent[0], KvPessimisticLock);
    assert!(primary.is_first_lock);
    assert_eq!(primary.primary_lock, "a");
    assert_eq!(primary.start_version, START.as_u64());
    assert_eq!(primary.for_update_ts, FOR_UPDATE.as_u64());
    assert_eq!(primary.min_commit_ts, FOR_UPDATE.next().as_u64());
    assert_eq!(primary.lock_ttl, 20_000);
    assert_eq!(
        primary.wait_timeout, 0,
        "forever: TiKV's own wait, then again"
    );
    assert!(!req!(sent[1], KvPessimisticLock).is_first_lock);
}

#[test]
fn values_and_existence_come_back_per_key() {
    let mut h = harness();
    let options = LockOptions::default().with_return_values(true);
    let out = h.run(
        lock_keys(&["b", "c"], false, options),
        cluster([], |_| resp::pessimistic_lock().values(&[Some("2"), None])),
    );
    assert_eq!(
        out.unwrap().values,
        [
            LockedValue::new("b".into(), true, Some(Bytes::from_static(b"2"))),
            LockedValue::new("c".into(), false, None)
        ]
    );
    assert!(req!(resp::sent(&h.effects)[0], KvPessimisticLock).return_values);
}

#[test]
fn a_write_conflict_rolls_back_what_the_call_locked() {
    let mut h = harness();
    let out = h.run(
        lock_keys(&["a", "x"], true, LockOptions::default()),
        cluster([], |s| match (s.method, s.store) {
            ("KvPessimisticLock", 1) => resp::pessimistic_lock().ok(),
            ("KvPessimisticLock", _) => {
                resp::pessimistic_lock().key_error(resp::conflict("x", ts(1200)))
            }
            ("KvPessimisticRollback", _) => resp::pessimistic_rollback().ok(),
            other => panic!("unexpected {other:?}"),
        }),
    );
    assert!(matches!(out, Err(Error::WriteConflict { .. })), "{out:?}");
    let mut rolled_back: Vec<Key> = resp::sent(&h.effects)
        .iter()
        .filter(|s| s.method == "KvPessimisticRollback")
        .flat_map(|s| {
            assert_eq!(
                req!(s, KvPessimisticRollback).for_update_ts,
                FOR_UPDATE.as_u64()
            );
            s.keys.clone()
        })
        .collect();
    rolled_back.sort();
    assert_eq!(
        rolled_back,
        keys(&["a", "x"]),
        "every key the call tried to lock (\"x\" failed; rolling it back is harmless)"
    );
}

#[test]
fn a_live_lock_fails_a_no_wait_call_and_times_out_a_waiting_one() {
    let holder = lock("b", "p", ts(990)).ttl(20_000).pessimistic();
    for (wait, no_wait) in [
        (LockWait::NoWait, true),
        (LockWait::Timeout(Duration::from_millis(50)), false),
    ] {
        let mut h = harness();
        let options = LockOptions::default().with_wait(wait);
        let out = h.run(
            lock_keys(&["b"], false, options),
            cluster(
                std::iter::repeat_with(|| resp::tso(ts(1200))),
                |s| match s.method {
                    "KvPessimisticLock" => {
                        let sent = req!(s, KvPessimisticLock).wait_timeout;
                        if no_wait {
                            assert_eq!(sent, -1);
                        } else {
                            assert!((1..=50).contains(&sent), "{sent}");
                        }
                        resp::pessimistic_lock().key_error(resp::locked(holder.clone()))
                    }
                    "KvCheckTxnStatus" => resp::check_txn_status().alive(20_000),
                    "KvPessimisticRollback" => resp::pessimistic_rollback().ok(),
                    other => panic!("unexpected {other}"),
                },
            ),
        );
        match (no_wait, out) {
            (true, Err(Error::LockAcquireFailAndNoWaitSet { key, lock_ts })) => {
                assert_eq!((key, lock_ts), (Key::from("b"), ts(990).as_u64()));
            }
            (false, Err(Error::LockWaitTimeout { key, .. })) => assert_eq!(key, Key::from("b")),
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_dead_owners_lock_is_resolved_and_the_lock_taken() {
    let mut h = harness();
    let dead = lock("b", "p", ts(100)).ttl(10);
    let mut rounds = 0;
    let out = h.run(
        lock_keys(&["b"], false, LockOptions::default()),
        cluster([resp::tso(ts(1200))], |s| match s.method {
            "KvPessimisticLock" => {
                rounds += 1;
                if rounds == 1 {
                    resp::pessimistic_lock().key_error(resp::locked(dead.clone()))
                } else {
                    resp::pessimistic_lock().ok()
                }
            }
            "KvCheckTxnStatus" => resp::check_txn_status().rolled_back(),
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(rounds, 2);
}

#[test]
fn the_commit_of_a_pessimistic_transaction_checks_its_locks_and_releases_lock_only_keys() {
    let mut h = harness();
    let config = h.config.clone();
    let mut buffer = WriteBuffer::new();
    buffer.set("b".into(), Mutation::Put("1".into()));
    buffer.set("c".into(), Mutation::Put("2".into()));
    let committer = Committer::new(&config, START, &buffer).with_pessimistic(
        "x".into(),
        FOR_UPDATE,
        ["b".into(), "x".into()],
    );
    let out = h.run(
        committer,
        cluster([resp::tso(ts(1300))], |s| match s.method {
            "KvPrewrite" => resp::prewrite().ok(),
            _ => resp::commit().ok(),
        }),
    );
    assert_eq!(out.unwrap(), ts(1300));
    let sent = resp::sent(&h.effects);
    for s in sent.iter().filter(|s| s.method == "KvPrewrite") {
        let p = req!(s, KvPrewrite);
        assert_eq!(p.primary_lock, "x", "the primary is the first locked key");
        assert_eq!(p.for_update_ts, FOR_UPDATE.as_u64());
        use kvrpcpb::prewrite_request::PessimisticAction as A;
        let actions: Vec<(Key, i32, i32)> = p
            .mutations
            .iter()
            .zip(&p.pessimistic_actions)
            .map(|(m, a)| (Key::from(m.key.clone()), m.op, *a))
            .collect();
        for (key, op, action) in actions {
            let expected = match key.as_bytes() {
                b"b" => (kvrpcpb::Op::Put as i32, A::DoPessimisticCheck as i32),
                // Written without a lock: checked for newer writes, never skipped.
                b"c" => (kvrpcpb::Op::Put as i32, A::DoConstraintCheck as i32),
                b"x" => (kvrpcpb::Op::Lock as i32, A::DoPessimisticCheck as i32),
                other => panic!("unexpected key {other:?}"),
            };
            assert_eq!((op, action), expected, "{key}");
        }
    }
    let primary_commit = sent.iter().find(|s| s.method == "KvCommit").unwrap();
    assert_eq!(primary_commit.keys, keys(&["x"]));
}

#[test]
fn heartbeats_extend_the_primary_every_half_ttl_until_stopped() {
    use crate::txn::heartbeat::{Heartbeat, HeartbeatStop};
    let mut h = harness();
    let stop = HeartbeatStop::default();
    let started = h.cx().now;
    let beat = Heartbeat::new("a".into(), START, started, stop.clone());
    let mut ttls = Vec::new();
    h.run(
        beat,
        cluster([], |s| {
            let r = req!(s, KvTxnHeartBeat);
            assert_eq!(r.primary_lock, "a");
            assert_eq!(r.start_version, START.as_u64());
            ttls.push(r.advise_lock_ttl);
            if ttls.len() == 3 {
                stop.stop();
            }
            let ttl = r.advise_lock_ttl;
            resp::heartbeat().with(|r| r.lock_ttl = ttl).ok()
        }),
    );
    assert_eq!(
        ttls,
        [30_000, 40_000, 50_000],
        "age (10, 20, 30 s) + the 20 s managed TTL"
    );
}

#[test]
fn heartbeats_stop_when_the_primary_is_gone() {
    use crate::txn::heartbeat::{Heartbeat, HeartbeatStop};
    let mut h = harness();
    let started = h.cx().now;
    let beat = Heartbeat::new("a".into(), START, started, HeartbeatStop::default());
    let mut beats = 0;
    h.run(
        beat,
        cluster([], |_| {
            beats += 1;
            resp::heartbeat().key_error(resp::abort("txn not found"))
        }),
    );
    assert_eq!(beats, 1, "no lock to keep alive: the task ends");
}

#[test]
fn an_interrupt_or_the_max_execution_time_ends_a_wait() {
    let holder = lock("b", "p", ts(990)).ttl(20_000).pessimistic();
    let interrupt = Interrupt::default();
    for options in [
        LockOptions::default().with_interrupt(interrupt.clone()),
        LockOptions::default().with_max_execution(Duration::from_millis(30)),
    ] {
        let mut h = harness();
        let by_flag = options.interrupt.is_some();
        let mut rounds = 0;
        let out = h.run(
            lock_keys(&["b"], false, options),
            cluster(
                std::iter::repeat_with(|| resp::tso(ts(1200))),
                |s| match s.method {
                    "KvPessimisticLock" => {
                        rounds += 1;
                        if by_flag && rounds == 2 {
                            interrupt.interrupt();
                        }
                        resp::pessimistic_lock().key_error(resp::locked(holder.clone()))
                    }
                    "KvCheckTxnStatus" => resp::check_txn_status().alive(20_000),
                    "KvPessimisticRollback" => resp::pessimistic_rollback().ok(),
                    other => panic!("unexpected {other}"),
                },
            ),
        );
        assert!(matches!(out, Err(Error::Interrupted(_))), "{out:?}");
        if by_flag {
            assert_eq!(rounds, 2, "stopped at the next step after the flag");
        }
    }
}

#[test]
fn force_lock_sends_one_key_in_force_mode_and_returns_a_conflicts_value() {
    let mut h = harness();
    let machine = lock_keys(&["a"], true, LockOptions::default()).force_lock();
    let out = h.run(
        machine,
        cluster([], |s| {
            let r = req!(s, KvPessimisticLock);
            assert_eq!(
                r.wake_up_mode,
                kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeForceLock as i32
            );
            resp::pessimistic_lock()
                .with(|r| {
                    r.results = vec![kvrpcpb::PessimisticLockKeyResult {
                        r#type: kvrpcpb::PessimisticLockKeyResultType::LockResultLockedWithConflict
                            as i32,
                        value: Bytes::from_static(b"newer"),
                        existence: true,
                        locked_with_conflict_ts: ts(1200).as_u64(),
                        ..Default::default()
                    }]
                })
                .ok()
        }),
    );
    let out = out.unwrap();
    assert_eq!(out.max_locked_with_conflict, Some(ts(1200)));
    assert_eq!(out.values.len(), 1);
    assert_eq!(out.values[0].value.as_deref(), Some(&b"newer"[..]));
    assert_eq!(out.values[0].locked_with_conflict, Some(ts(1200)));
}

#[test]
fn a_force_lock_reply_without_its_result_is_an_error_not_a_lock() {
    let mut h = harness();
    let machine = lock_keys(&["a"], true, LockOptions::default()).force_lock();
    let out = h.run(
        machine,
        cluster([], |s| match s.method {
            "KvPessimisticLock" => resp::pessimistic_lock().ok(),
            _ => resp::pessimistic_rollback().ok(),
        }),
    );
    assert!(matches!(out, Err(Error::KeyError { .. })), "{out:?}");
    let sent = resp::sent(&h.effects);
    assert_eq!(
        sent.last().map(|s| s.method),
        Some("KvPessimisticRollback"),
        "whatever TiKV did is undone"
    );
}

#[test]
fn prewrite_checks_the_for_update_ts_of_fair_locked_keys_by_mutation_index() {
    let mut h = harness();
    let config = h.config.clone();
    let mut buffer = WriteBuffer::new();
    buffer.set("b".into(), Mutation::Put("1".into()));
    buffer.set("c".into(), Mutation::Put("2".into()));
    let committer = Committer::new(&config, START, &buffer)
        .with_pessimistic("b".into(), FOR_UPDATE, ["b".into(), "c".into()])
        .with_lock_checks([("c".into(), ts(1150))]);
    let out = h.run(
        committer,
        cluster([resp::tso(ts(1300))], |s| match s.method {
            "KvPrewrite" => resp::prewrite().ok(),
            _ => resp::commit().ok(),
        }),
    );
    assert_eq!(out.unwrap(), ts(1300));
    let prewrite = resp::sent(&h.effects)
        .into_iter()
        .find(|s| s.method == "KvPrewrite")
        .unwrap();
    let p = req!(prewrite, KvPrewrite);
    let constraints: Vec<(Key, u64)> = p
        .for_update_ts_constraints
        .iter()
        .map(|c| {
            (
                Key::from(p.mutations[c.index as usize].key.clone()),
                c.expected_for_update_ts,
            )
        })
        .collect();
    assert_eq!(constraints, [("c".into(), ts(1150).as_u64())]);
}

#[test]
fn shared_keys_are_prewritten_as_shared_locks_without_async_commit() {
    let mut h = harness();
    let config = h.config.clone();
    let mut buffer = WriteBuffer::new();
    buffer.set("b".into(), Mutation::Put("1".into()));
    let committer = Committer::new(&config, START, &buffer)
        .with_async_commit(true)
        .with_one_pc(true)
        .with_pessimistic("b".into(), FOR_UPDATE, ["b".into(), "c".into()])
        .with_shared_locks(["c".into()]);
    let out = h.run(
        committer,
        cluster([resp::tso(ts(1300))], |s| match s.method {
            "KvPrewrite" => resp::prewrite().ok(),
            _ => resp::commit().ok(),
        }),
    );
    assert_eq!(out.unwrap(), ts(1300));
    let prewrite = resp::sent(&h.effects)
        .into_iter()
        .find(|s| s.method == "KvPrewrite")
        .unwrap();
    let p = req!(prewrite, KvPrewrite);
    let ops: Vec<(Key, i32)> = p
        .mutations
        .iter()
        .map(|m| (Key::from(m.key.clone()), m.op))
        .collect();
    assert_eq!(
        ops,
        [
            ("b".into(), kvrpcpb::Op::Put as i32),
            ("c".into(), kvrpcpb::Op::SharedLock as i32)
        ]
    );
    assert!(!p.use_async_commit && !p.try_one_pc && p.secondaries.is_empty());
}

#[test]
fn a_shared_key_error_resolves_every_holder() {
    let wrapper = kvrpcpb::KeyError {
        locked: Some(kvrpcpb::LockInfo {
            key: Bytes::from_static(b"k"),
            lock_type: kvrpcpb::Op::SharedLock as i32,
            shared_lock_infos: vec![
                lock("k", "p1", ts(10)).pessimistic().into(),
                lock("k", "p2", ts(20)).into(),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    let kind = crate::txn::key_error(&wrapper, START);
    let crate::txn::lock::KeyErrorKind::SharedLocked(holders) = kind else {
        panic!("{kind:?}");
    };
    let owners: Vec<(Key, Timestamp)> = holders
        .iter()
        .map(|l| (l.primary.clone(), l.start_ts))
        .collect();
    assert_eq!(owners, [("p1".into(), ts(10)), ("p2".into(), ts(20))]);
}

/// A deadlock reply naming its closing key in the wait chain (TiKV's `deadlock_key_hash`).
fn deadlock_on(closing_key: &str) -> kvrpcpb::KeyError {
    let hash = 0xfeed;
    kvrpcpb::KeyError {
        deadlock: Some(kvrpcpb::Deadlock {
            lock_ts: ts(900).as_u64(),
            lock_key: Bytes::from_static(b"b"),
            deadlock_key_hash: hash,
            wait_chain: vec![
                tikv_proto::deadlock::WaitForEntry {
                    txn: ts(900).as_u64(),
                    wait_for_txn: START.as_u64(),
                    key_hash: hash,
                    key: Bytes::copy_from_slice(closing_key.as_bytes()),
                    ..Default::default()
                },
                tikv_proto::deadlock::WaitForEntry {
                    txn: START.as_u64(),
                    wait_for_txn: ts(900).as_u64(),
                    key_hash: 1,
                    key: Bytes::from_static(b"b"),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_deadlock_closed_on_a_key_of_the_call_is_retryable() {
    for (closing, retryable) in [("a", true), ("q", false)] {
        let mut h = harness();
        let out = h.run(
            lock_keys(&["a", "b"], false, LockOptions::default()),
            cluster([], |s| match s.method {
                "KvPessimisticLock" if s.keys.contains(&Key::from("b")) => {
                    resp::pessimistic_lock().key_error(deadlock_on(closing))
                }
                "KvPessimisticLock" => resp::pessimistic_lock().ok(),
                _ => resp::pessimistic_rollback().ok(),
            }),
        );
        let Err(Error::Deadlock {
            deadlock_key,
            retryable: got,
            ..
        }) = out
        else {
            panic!("{out:?}");
        };
        assert_eq!(deadlock_key, Some(Key::from(closing)));
        assert_eq!(got, retryable, "closed on {closing:?}");
    }
}
