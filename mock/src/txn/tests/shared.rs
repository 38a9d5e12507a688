//! Shared locks (`Op::SharedPessimisticLock` / `Op::SharedLock`), following TiKV's
//! `test_shared_exclusive_lock_conflict` and client-go's shared-lock tests: holders share a
//! key, an exclusive locker makes the key shrink-only and waits for the last holder, each
//! holder prewrites, commits and rolls back only its own sub-lock, and ScanLock, resolution,
//! status checks and reads treat the key as TiKV does.

use super::*;

impl T {
    fn shared_req(
        &self,
        key: &str,
        primary: &str,
        start: u64,
    ) -> (u64, kvrpcpb::PessimisticLockRequest) {
        let (_, mut req) = self.lock_req(&[key], primary, start, start);
        req.mutations = vec![op(Op::SharedPessimisticLock, key)];
        (self.ctx(key).0, req)
    }

    fn shared(&mut self, key: &str, primary: &str, start: u64) -> kvrpcpb::PessimisticLockResponse {
        let (s, req) = self.shared_req(key, primary, start);
        self.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap()
    }

    /// A pessimistic prewrite of `muts` (every key locked: `DoPessimisticCheck`).
    fn prewrite_locked(
        &mut self,
        muts: Vec<Mutation>,
        primary: &str,
        start: u64,
    ) -> kvrpcpb::PrewriteResponse {
        let n = muts.len();
        let mut req = pw(muts, primary, start);
        req.for_update_ts = start;
        req.pessimistic_actions =
            vec![kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32; n];
        self.prewrite(req)
    }

    fn scan_locks(&mut self, max: u64, limit: u32) -> Vec<kvrpcpb::LockInfo> {
        let (s, ctx) = self.ctx("a");
        let r = self
            .c
            .tikv::<t::KvScanLock>(
                s,
                kvrpcpb::ScanLockRequest {
                    context: Some(ctx),
                    max_version: max,
                    limit,
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        r.locks
    }

    fn holders(&self, key: &str) -> Vec<u64> {
        self.c
            .txn
            .store
            .shared(key.as_bytes())
            .map(|s| s.holders.keys().copied().collect())
            .unwrap_or_default()
    }
}

#[test]
fn holders_share_a_key_and_an_exclusive_locker_waits_for_the_last_of_them() {
    let mut t = T::new();
    assert!(t.shared("k", "p10", 10).errors.is_empty());
    assert!(t.shared("k", "p20", 20).errors.is_empty());
    assert_eq!(t.holders("k"), [10, 20]);
    // Seen as one wrapper lock with a pessimistic sub-lock per holder.
    let locks = t.scan_locks(u64::MAX, 0);
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].lock_type, Op::SharedLock as i32);
    let subs: Vec<(u64, i32)> = locks[0]
        .shared_lock_infos
        .iter()
        .map(|l| (l.lock_version, l.lock_type))
        .collect();
    assert_eq!(
        subs,
        [
            (10, Op::PessimisticLock as i32),
            (20, Op::PessimisticLock as i32)
        ]
    );

    // The first exclusive request only closes the key to new holders: it fails at once,
    // even though it would wait.
    let (s, mut req) = t.lock_req(&["k"], "p30", 30, 30);
    req.wait_timeout = 500;
    let first =
        t.c.kv_pessimistic_lock_or_wait(s, req.clone(), NOW)
            .unwrap();
    let LockWaitOutcome::Done(r) = first else {
        panic!("expected an answer at once, got {first:?}")
    };
    assert_eq!(locked(&r.errors[0]).lock_type, Op::SharedLock as i32);
    assert!(t.c.txn.store.shared(b"k").unwrap().shrink_only);
    // New holders are refused now; the retry of the exclusive request waits.
    assert_eq!(
        locked(&t.shared("k", "p40", 40).errors[0]).lock_type,
        Op::SharedLock as i32
    );
    let LockWaitOutcome::Waiting(_) =
        t.c.kv_pessimistic_lock_or_wait(s, req.clone(), NOW)
            .unwrap()
    else {
        panic!("the retry waits")
    };

    // One holder commits: the key is still held, the waiter still waits.
    assert!(
        t.prewrite_locked(vec![op(Op::SharedLock, "k"), put("p10", "x")], "p10", 10)
            .errors
            .is_empty()
    );
    assert!(t.commit(&["p10", "k"], 10, 15).error.is_none());
    assert!(t.c.poll_lock_waits(NOW + 10).is_empty());
    assert_eq!(t.holders("k"), [20]);
    // The last holder rolls back: the waiter is woken (a legacy waiter with a conflict).
    let (s2, ctx) = t.ctx("k");
    t.c.tikv::<t::KvPessimisticRollback>(
        s2,
        kvrpcpb::PessimisticRollbackRequest {
            context: Some(ctx),
            start_version: 20,
            for_update_ts: 20,
            keys: vec![b("k")],
        },
        NOW,
    )
    .unwrap();
    assert!(t.c.txn.store.shared(b"k").is_none());
    let woken = t.c.poll_lock_waits(NOW + 10);
    assert_eq!(woken.len(), 1);
    assert!(woken[0].1.errors[0].conflict.is_some(), "{woken:?}");
    // Its statement retry (newer for_update_ts than the Lock record) locks the key.
    let (s, mut req) = t.lock_req(&["k"], "p30", 30, 31);
    req.wait_timeout = -1;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
}

#[test]
fn exclusive_and_shared_locks_never_mix_even_within_one_transaction() {
    let mut t = T::new();
    assert!(t.lock(&["k"], "k", 10, 10).errors.is_empty());
    assert_eq!(locked(&t.shared("k", "p20", 20).errors[0]).lock_version, 10);
    assert_eq!(
        locked(&t.shared("k", "k", 10).errors[0]).lock_version,
        10,
        "no downgrade of an exclusive lock"
    );
    assert!(t.shared("s", "p30", 30).errors.is_empty());
    let r = t.lock(&["s"], "p30", 30, 30);
    assert_eq!(
        locked(&r.errors[0]).lock_type,
        Op::SharedLock as i32,
        "no upgrade of a shared lock"
    );
    // A holder asking again refreshes its lock (no value is loaded).
    let (s, mut req) = t.shared_req("s", "p30", 30);
    req.for_update_ts = 35;
    req.return_values = true;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert!(r.errors.is_empty());
    assert_eq!(r.not_founds, [true]);
    let sub = &t.c.txn.store.shared(b"s").unwrap().holders[&30];
    assert_eq!(sub.for_update_ts, 35);
}

#[test]
fn holders_prewrite_commit_and_roll_back_only_their_own_sub_lock() {
    let mut t = T::new();
    t.write("k", "v", 1, 2);
    for start in [10, 20, 30] {
        assert!(t.shared("k", &format!("p{start}"), start).errors.is_empty());
    }
    // A holder cannot write the key; a non-holder's shared prewrite finds no lock; an
    // ordinary writer meets the shared locks.
    let r = t.prewrite_locked(vec![put("k", "x")], "p10", 10);
    assert!(r.errors[0].abort.contains("use Op::SharedLock"), "{r:?}");
    let r = t.prewrite_locked(vec![op(Op::SharedLock, "k")], "p40", 40);
    assert!(
        r.errors[0].abort.contains("PessimisticLockNotFound"),
        "{r:?}"
    );
    let r = t.prewrite(pw(vec![put("k", "x")], "k", 50));
    assert_eq!(locked(&r.errors[0]).lock_type, Op::SharedLock as i32);
    // Shared locks rule out async commit and 1PC.
    let mut req = pw(vec![op(Op::SharedLock, "k"), put("p10", "x")], "p10", 10);
    req.for_update_ts = 10;
    req.pessimistic_actions =
        vec![kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32; 2];
    req.try_one_pc = true;
    let r = t.prewrite(req);
    assert!(r.errors[0].abort.contains("one-phase commit"), "{r:?}");

    // 10 commits (a Lock record), 20 rolls back (a rollback record), 30 is left alone.
    assert!(
        t.prewrite_locked(vec![op(Op::SharedLock, "k"), put("p10", "x")], "p10", 10)
            .errors
            .is_empty()
    );
    // A retried prewrite is idempotent.
    assert!(
        t.prewrite_locked(vec![op(Op::SharedLock, "k")], "p10", 10)
            .errors
            .is_empty()
    );
    assert_eq!(
        t.c.txn.store.shared(b"k").unwrap().holders[&10].lock_type,
        crate::txn::types::LockType::Lock
    );
    assert!(t.commit(&["k"], 10, 15).error.is_none());
    assert!(t.rollback(&["k"], 20).error.is_none());
    assert_eq!(t.holders("k"), [30]);
    let records: Vec<(u64, crate::txn::types::WriteType)> =
        t.c.txn
            .store
            .writes_of(b"k")
            .map(|(ts, w)| (ts, w.write_type))
            .collect();
    use crate::txn::types::WriteType as W;
    assert_eq!(records, [(20, W::Rollback), (15, W::Lock), (2, W::Put)]);
    // Reads never see shared locks and skip the Lock record.
    assert_eq!(t.get("k", 100).value, b("v"));
    // A shared key is never a primary.
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("k"),
        lock_ts: 30,
        ..Default::default()
    });
    assert!(r.error.unwrap().primary_mismatch.is_some());
}

#[test]
fn scan_lock_filters_holders_by_max_ts_and_counts_each_against_the_limit() {
    let mut t = T::new();
    for start in [10, 20, 30] {
        assert!(t.shared("k", &format!("p{start}"), start).errors.is_empty());
    }
    assert!(t.lock(&["m"], "m", 25, 25).errors.is_empty());
    let holders = |locks: &[kvrpcpb::LockInfo]| -> Vec<u64> {
        locks
            .iter()
            .flat_map(|l| {
                if l.shared_lock_infos.is_empty() {
                    vec![l.lock_version]
                } else {
                    l.shared_lock_infos.iter().map(|s| s.lock_version).collect()
                }
            })
            .collect()
    };
    assert!(t.scan_locks(9, 0).is_empty());
    assert_eq!(holders(&t.scan_locks(10, 0)), [10]);
    assert_eq!(holders(&t.scan_locks(25, 0)), [10, 20, 25]);
    assert_eq!(
        holders(&t.scan_locks(u64::MAX, 2)),
        [10, 20],
        "the oldest holders first"
    );
    assert_eq!(holders(&t.scan_locks(u64::MAX, 4)), [10, 20, 30, 25]);
}

#[test]
fn region_wide_resolution_settles_several_holders_of_one_key() {
    let mut t = T::new();
    for start in [10, 20, 30] {
        assert!(t.shared("k", &format!("p{start}"), start).errors.is_empty());
    }
    assert!(
        t.prewrite_locked(vec![op(Op::SharedLock, "k")], "p10", 10)
            .errors
            .is_empty()
    );
    let (s, ctx) = t.ctx("k");
    let r =
        t.c.tikv::<t::KvResolveLock>(
            s,
            kvrpcpb::ResolveLockRequest {
                context: Some(ctx),
                txn_infos: vec![
                    kvrpcpb::TxnInfo {
                        txn: 10,
                        status: 15,
                        ..Default::default()
                    },
                    kvrpcpb::TxnInfo {
                        txn: 20,
                        status: 0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(t.holders("k"), [30], "both settled, the live holder kept");
    let records: Vec<u64> = t.c.txn.store.writes_of(b"k").map(|(ts, _)| ts).collect();
    assert_eq!(records, [20, 15]);
}
