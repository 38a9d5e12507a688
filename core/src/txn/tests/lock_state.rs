//! `PessimisticLocks`: the primary, what each `lock_keys` sends and keeps, heartbeats, and
//! fair locking's attempts (client-go's aggressive-locking rules), without any I/O.

use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;
use crate::key::Key;
use crate::time::Instant;
use crate::timestamp::Timestamp;
use crate::txn::lock_state::{Changes, HeartbeatChange, PessimisticLocks, PreparedLock, Release};
use crate::txn::pessimistic::{LockOptions, LockStats, Locked, LockedValue};

const T0: Instant = Instant::ZERO;

fn ts(physical: u64) -> Timestamp {
    Timestamp::compose(physical, 0)
}

fn keys(list: &[&str]) -> Vec<Key> {
    list.iter().map(|k| Key::from(*k)).collect()
}

fn locked(values: Vec<LockedValue>) -> Result<Locked, Error> {
    let max = values.iter().filter_map(|v| v.locked_with_conflict).max();
    Ok(Locked {
        values,
        stats: LockStats::default(),
        max_locked_with_conflict: max,
    })
}

/// Prepares and finishes a lock of `list` as TiKV granting it plainly.
fn lock_ok(l: &mut PessimisticLocks, list: &[&str], at: Timestamp) -> (PreparedLock, Changes) {
    let prepared = l.prepare(keys(list), &LockOptions::default(), T0).unwrap();
    let seen = prepared.clone();
    let mut result = locked(Vec::new());
    let changes = l.finish(prepared, at, &mut result);
    (seen, changes)
}

fn conflict_value(key: &str, value: &str, at: Timestamp) -> LockedValue {
    LockedValue {
        locked_with_conflict: Some(at),
        ..LockedValue::new(
            key.into(),
            true,
            Some(Bytes::copy_from_slice(value.as_bytes())),
        )
    }
}

#[test]
fn the_first_lock_chooses_the_smallest_key_as_primary_and_starts_heartbeats() {
    let mut l = PessimisticLocks::new();
    let (p, changes) = lock_ok(&mut l, &["x", "b", "b"], ts(10));
    assert_eq!(p.send, keys(&["b", "x"]), "sorted, without duplicates");
    assert_eq!(p.primary, Key::from("b"));
    assert!(p.is_first_lock && !p.force && p.keep.is_empty());
    assert_eq!(changes.heartbeat, HeartbeatChange::Start("b".into()));
    let (p, changes) = lock_ok(&mut l, &["a", "x"], ts(20));
    assert_eq!(p.primary, Key::from("b"), "the primary stays");
    assert!(!p.is_first_lock);
    assert_eq!(p.keep, keys(&["x"]), "a failure keeps what was held before");
    assert_eq!(changes, Changes::default(), "heartbeats already run");
    assert_eq!(l.for_update_ts(), ts(20));
    let (plan, _) = l.commit_plan().unwrap();
    let plan = plan.unwrap();
    assert_eq!(plan.locked, keys(&["a", "b", "x"]));
    assert_eq!(plan.for_update_ts, ts(20));
    assert!(
        plan.checks.is_empty(),
        "only fair locking's locks are checked"
    );
}

#[test]
fn a_failed_first_lock_leaves_the_primary_to_the_next() {
    let mut l = PessimisticLocks::new();
    let prepared = l
        .prepare(keys(&["m"]), &LockOptions::default(), T0)
        .unwrap();
    let mut result = Err(Error::LockWaitTimeout {
        key: "m".into(),
        lock_ts: 5,
    });
    let changes = l.finish(prepared, ts(10), &mut result);
    assert_eq!(changes, Changes::default());
    assert!(l.primary().is_none() && l.is_empty());
    let (p, _) = lock_ok(&mut l, &["z"], ts(11));
    assert_eq!(p.primary, Key::from("z"));
}

#[test]
fn lock_only_if_exists_needs_values_and_a_primary_for_several_keys() {
    let mut l = PessimisticLocks::new();
    let only = LockOptions::default().with_lock_only_if_exists(true);
    assert!(matches!(
        l.prepare(keys(&["a"]), &only, T0),
        Err(Error::InvalidArgument(_))
    ));
    let only = only.with_return_values(true);
    assert!(matches!(
        l.prepare(keys(&["a", "b"]), &only, T0),
        Err(Error::InvalidArgument(_))
    ));
    // One missing key: nothing locked, so it is not the primary either.
    let prepared = l.prepare(keys(&["a"]), &only, T0).unwrap();
    let mut result = locked(vec![LockedValue::new("a".into(), false, None)]);
    let _ = l.finish(prepared, ts(10), &mut result);
    assert!(l.primary().is_none() && l.is_empty());
}

#[test]
fn fair_locking_forces_single_keys_and_reuses_a_conflicted_lock_on_retry() {
    let mut l = PessimisticLocks::new();
    l.start_fair_locking(T0).unwrap();
    assert!(matches!(
        l.start_fair_locking(T0),
        Err(Error::InvalidArgument(_))
    ));
    let prepared = l
        .prepare(keys(&["k"]), &LockOptions::default(), T0)
        .unwrap();
    assert!(prepared.force && prepared.is_first_lock);
    // TiKV locked it over a commit at 15 (newer than for_update_ts 10).
    let mut result = locked(vec![conflict_value("k", "new", ts(15))]);
    let changes = l.finish(prepared, ts(10), &mut result);
    assert_eq!(changes.heartbeat, HeartbeatChange::Start("k".into()));
    // The statement retries: the lock is reused with no request, its value current now.
    let changes = l.retry_fair_locking(T0 + Duration::from_secs(1)).unwrap();
    assert_eq!(changes, Changes::default(), "the heartbeat keeps running");
    let options = LockOptions::default().with_return_values(true);
    let prepared = l
        .prepare(keys(&["k"]), &options, T0 + Duration::from_secs(1))
        .unwrap();
    assert!(prepared.send.is_empty());
    assert_eq!(
        prepared.primary,
        Key::from("k"),
        "the last attempt's primary is chosen again"
    );
    assert_eq!(prepared.before, Changes::default());
    let mut result = Ok(Locked::default());
    let _ = l.finish(prepared, Timestamp::ZERO, &mut result);
    let values = result.unwrap().values;
    assert_eq!(
        values,
        [LockedValue::new("k".into(), true, Some("new".into()))]
    );
    assert_eq!(l.done_fair_locking().unwrap(), Changes::default());
    // Prewrite checks the lock is the one taken at the conflict's ts, and the commit takes
    // a fresh for_update_ts above it.
    assert!(l.needs_fresh_for_update_ts());
    let (plan, _) = l.commit_plan().unwrap();
    let plan = plan.unwrap();
    assert_eq!(plan.checks, [("k".into(), ts(15))]);
    assert_eq!(plan.primary, Key::from("k"));
    // Releasing covers the lock at the conflict's ts.
    assert_eq!(
        l.release_all().release,
        Some(Release {
            keys: keys(&["k"]),
            for_update_ts: ts(15)
        })
    );
}

#[test]
fn retries_release_what_the_attempt_before_locked_and_done_keeps_the_last() {
    let mut l = PessimisticLocks::new();
    let _ = lock_ok(&mut l, &["p"], ts(5)); // held before the stage: never released by it
    l.start_fair_locking(T0).unwrap();
    for k in ["a", "b"] {
        let (p, _) = lock_ok(&mut l, &[k], ts(10));
        assert!(p.force);
    }
    let _ = l.retry_fair_locking(T0).unwrap();
    let (p, _) = lock_ok(&mut l, &["a"], ts(20));
    assert!(p.send.is_empty(), "a is reused");
    let _ = lock_ok(&mut l, &["c"], ts(20));
    // The second retry releases b (asked for by neither of the last two attempts).
    let changes = l.retry_fair_locking(T0).unwrap();
    assert_eq!(
        changes.release,
        Some(Release {
            keys: keys(&["b"]),
            for_update_ts: ts(20)
        })
    );
    let _ = lock_ok(&mut l, &["c"], ts(30));
    // Done keeps c, releases a (the last attempt did not ask for it again).
    let changes = l.done_fair_locking().unwrap();
    assert_eq!(changes.release.map(|r| r.keys), Some(keys(&["a"])));
    let (plan, _) = l.commit_plan().unwrap();
    let plan = plan.unwrap();
    assert_eq!(plan.locked, keys(&["c", "p"]));
    assert_eq!(plan.primary, Key::from("p"));
    assert_eq!(
        plan.checks,
        [("c".into(), ts(20))],
        "c's lock was taken at 20"
    );
}

#[test]
fn cancel_releases_the_stage_but_not_what_was_held_before() {
    let mut l = PessimisticLocks::new();
    let _ = lock_ok(&mut l, &["p"], ts(5));
    l.start_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["a"], ts(10));
    let _ = l.retry_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["b"], ts(20));
    let changes = l.cancel_fair_locking().unwrap();
    let mut released = changes.release.unwrap().keys;
    released.sort();
    assert_eq!(released, keys(&["a", "b"]));
    assert_eq!(
        changes.heartbeat,
        HeartbeatChange::Keep,
        "p stays the primary"
    );
    assert!(!l.is_fair_locking());
    assert_eq!(l.primary(), Some(&"p".into()));
    assert_eq!(l.len(), 1);
}

#[test]
fn a_stage_that_chose_the_primary_gives_it_up_on_cancel() {
    let mut l = PessimisticLocks::new();
    l.start_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["a"], ts(10));
    let changes = l.cancel_fair_locking().unwrap();
    assert_eq!(changes.heartbeat, HeartbeatChange::Stop);
    assert!(l.primary().is_none() && l.is_empty());
}

#[test]
fn a_new_primary_relocks_the_keys_that_pointed_at_the_old_one() {
    let mut l = PessimisticLocks::new();
    l.start_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["b"], ts(10));
    let _ = l.retry_fair_locking(T0).unwrap();
    // The new attempt starts with another key: it becomes the primary, the old primary's
    // heartbeat stops (the new lock starts its own).
    let (p, changes) = lock_ok(&mut l, &["a"], ts(20));
    assert_eq!(p.primary, Key::from("a"));
    assert_eq!(p.before.heartbeat, HeartbeatChange::Stop);
    assert_eq!(changes.heartbeat, HeartbeatChange::Start("a".into()));
    // b's lock names the old primary: it is locked again rather than reused.
    let (p, _) = lock_ok(&mut l, &["b"], ts(21));
    assert_eq!(p.send, keys(&["b"]));
}

#[test]
fn locks_of_an_attempt_older_than_the_lock_ttl_are_taken_again() {
    let mut l = PessimisticLocks::new();
    l.start_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["a"], ts(10));
    let _ = l.retry_fair_locking(T0 + Duration::from_secs(1)).unwrap();
    let later = T0 + Duration::from_secs(30);
    let p = l
        .prepare(keys(&["a"]), &LockOptions::default(), later)
        .unwrap();
    assert_eq!(p.send, keys(&["a"]), "its TTL may have run out meanwhile");
}

#[test]
fn several_keys_leave_the_stage_first() {
    let mut l = PessimisticLocks::new();
    l.start_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["a"], ts(10));
    let _ = l.retry_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["c"], ts(20));
    let (p, _) = lock_ok(&mut l, &["x", "y"], ts(30));
    assert!(!l.is_fair_locking() && !p.force);
    assert_eq!(
        p.before.release.map(|r| r.keys),
        Some(keys(&["a"])),
        "the previous attempt's leftovers go"
    );
    let (plan, _) = l.commit_plan().unwrap();
    assert_eq!(plan.unwrap().locked, keys(&["c", "x", "y"]));
}

#[test]
fn commit_refuses_a_stage_holding_keys_and_leaves_an_empty_one() {
    let mut l = PessimisticLocks::new();
    l.start_fair_locking(T0).unwrap();
    let _ = lock_ok(&mut l, &["a"], ts(10));
    assert!(matches!(l.commit_plan(), Err(Error::InvalidArgument(_))));
    let _ = l.retry_fair_locking(T0).unwrap();
    let (plan, changes) = l.commit_plan().unwrap();
    assert!(plan.is_none(), "nothing is held once the stage is left");
    assert_eq!(changes.release.map(|r| r.keys), Some(keys(&["a"])));
}

#[test]
fn shared_locks_need_a_primary_skip_held_keys_and_are_never_upgraded() {
    let mut l = PessimisticLocks::new();
    let shared = LockOptions::default().with_shared(true);
    assert!(matches!(
        l.prepare(keys(&["s"]), &shared, T0),
        Err(Error::InvalidArgument(_))
    ));
    let _ = lock_ok(&mut l, &["p"], ts(10));
    let prepared = l.prepare(keys(&["p", "s", "t"]), &shared, T0).unwrap();
    assert_eq!(
        prepared.send,
        keys(&["s", "t"]),
        "the exclusive p stays as it is"
    );
    assert_eq!(prepared.primary, Key::from("p"));
    let mut result = locked(Vec::new());
    let _ = l.finish(prepared, ts(20), &mut result);
    assert!(l.is_shared(&"s".into()) && !l.is_shared(&"p".into()));
    assert!(matches!(
        l.prepare(keys(&["s"]), &LockOptions::default(), T0),
        Err(Error::InvalidArgument(_))
    ));
    let (plan, _) = l.commit_plan().unwrap();
    let plan = plan.unwrap();
    assert_eq!(plan.locked, keys(&["p", "s", "t"]));
    assert_eq!(plan.shared, keys(&["s", "t"]));
    l.start_fair_locking(T0).unwrap();
    assert!(matches!(
        l.prepare(keys(&["u"]), &shared, T0),
        Err(Error::InvalidArgument(_))
    ));
}
