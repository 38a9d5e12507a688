//! Tests of the transactional engine, driven through [`Cluster`] requests exactly as a
//! client sends them (sans-IO: no network, time passed in).

use bytes::Bytes;
use tikv_proto::kvrpcpb::{
    self, Action, Assertion, AssertionLevel, Context, IsolationLevel, KeyError, Mutation, Op,
    PessimisticLockWakeUpMode, prewrite_request::PessimisticAction, write_conflict,
};
use tikv_proto::tikvpb::tikv_service as t;

use crate::codec::encode_memcomparable;
use crate::test_util::{NOW, b};
use crate::txn::lock_wait::key_hash;
use crate::{ApiMode, Cluster, ClusterConfig, LockWaitOutcome};

mod coprocessor;
mod flashback;
mod model;
mod pipelined;
mod safe_ts;
mod shared;

/// A TSO timestamp at physical time `ms` with logical part `l`.
fn ts(ms: u64, l: u64) -> u64 {
    (ms << 18) | l
}

struct T {
    c: Cluster,
}

fn put(k: &str, v: &str) -> Mutation {
    Mutation {
        op: Op::Put as i32,
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn op(o: Op, k: &str) -> Mutation {
    Mutation {
        op: o as i32,
        key: b(k),
        ..Default::default()
    }
}

fn pw(muts: Vec<Mutation>, primary: &str, start: u64) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        mutations: muts,
        primary_lock: b(primary),
        start_version: start,
        lock_ttl: 3000,
        ..Default::default()
    }
}

impl T {
    fn new() -> Self {
        T {
            c: Cluster::new(ClusterConfig {
                api: ApiMode::V1,
                ..Default::default()
            }),
        }
    }

    fn ctx(&self, key: &str) -> (u64, Context) {
        let r = self
            .c
            .topology()
            .region_by_key(&encode_memcomparable(key.as_bytes()))
            .unwrap();
        let leader = *r.leader().unwrap();
        (
            leader.store_id,
            Context {
                region_id: r.id(),
                region_epoch: r.meta.region_epoch,
                peer: Some(leader),
                ..Default::default()
            },
        )
    }

    fn prewrite(&mut self, mut req: kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse {
        let (s, ctx) = self.ctx(std::str::from_utf8(&req.primary_lock).unwrap());
        req.context = Some(ctx);
        self.c.tikv::<t::KvPrewrite>(s, req, NOW).unwrap()
    }

    fn commit(&mut self, keys: &[&str], start: u64, commit: u64) -> kvrpcpb::CommitResponse {
        let (s, ctx) = self.ctx(keys.first().copied().unwrap_or(""));
        let req = kvrpcpb::CommitRequest {
            context: Some(ctx),
            keys: keys.iter().map(|k| b(k)).collect(),
            start_version: start,
            commit_version: commit,
            ..Default::default()
        };
        self.c.tikv::<t::KvCommit>(s, req, NOW).unwrap()
    }

    fn rollback(&mut self, keys: &[&str], start: u64) -> kvrpcpb::BatchRollbackResponse {
        let (s, ctx) = self.ctx(keys[0]);
        let req = kvrpcpb::BatchRollbackRequest {
            context: Some(ctx),
            keys: keys.iter().map(|k| b(k)).collect(),
            start_version: start,
            ..Default::default()
        };
        self.c.tikv::<t::KvBatchRollback>(s, req, NOW).unwrap()
    }

    fn get_with(
        &mut self,
        key: &str,
        version: u64,
        f: impl FnOnce(&mut Context),
    ) -> kvrpcpb::GetResponse {
        let (s, mut ctx) = self.ctx(key);
        f(&mut ctx);
        let req = kvrpcpb::GetRequest {
            context: Some(ctx),
            key: b(key),
            version,
            ..Default::default()
        };
        self.c.tikv::<t::KvGet>(s, req, NOW).unwrap()
    }

    fn get(&mut self, key: &str, version: u64) -> kvrpcpb::GetResponse {
        self.get_with(key, version, |_| {})
    }

    /// Prewrites and commits `k = v` in one optimistic transaction.
    fn write(&mut self, k: &str, v: &str, start: u64, commit: u64) {
        let r = self.prewrite(pw(vec![put(k, v)], k, start));
        assert!(r.errors.is_empty(), "{r:?}");
        let r = self.commit(&[k], start, commit);
        assert!(r.error.is_none(), "{r:?}");
    }

    fn check_txn_status(
        &mut self,
        req: kvrpcpb::CheckTxnStatusRequest,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        let (s, ctx) = self.ctx(std::str::from_utf8(&req.primary_key).unwrap());
        let req = kvrpcpb::CheckTxnStatusRequest {
            context: Some(ctx),
            ..req
        };
        self.c.tikv::<t::KvCheckTxnStatus>(s, req, NOW).unwrap()
    }

    fn lock_req(
        &self,
        keys: &[&str],
        primary: &str,
        start: u64,
        for_update: u64,
    ) -> (u64, kvrpcpb::PessimisticLockRequest) {
        let (s, ctx) = self.ctx(primary);
        (
            s,
            kvrpcpb::PessimisticLockRequest {
                context: Some(ctx),
                mutations: keys.iter().map(|k| op(Op::PessimisticLock, k)).collect(),
                primary_lock: b(primary),
                start_version: start,
                for_update_ts: for_update,
                lock_ttl: 3000,
                wait_timeout: -1,
                ..Default::default()
            },
        )
    }

    fn lock(
        &mut self,
        keys: &[&str],
        primary: &str,
        start: u64,
        for_update: u64,
    ) -> kvrpcpb::PessimisticLockResponse {
        let (s, req) = self.lock_req(keys, primary, start, for_update);
        self.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap()
    }
}

fn locked(e: &KeyError) -> &kvrpcpb::LockInfo {
    e.locked
        .as_ref()
        .unwrap_or_else(|| panic!("expected locked, got {e:?}"))
}

fn conflict(e: &KeyError) -> &kvrpcpb::WriteConflict {
    e.conflict
        .as_ref()
        .unwrap_or_else(|| panic!("expected conflict, got {e:?}"))
}

// ---- reads ----

#[test]
fn get_sees_only_versions_committed_at_or_before_read_ts() {
    let mut t = T::new();
    t.write("k", "v1", 10, 20);
    t.write("k", "v2", 30, 40);
    assert!(t.get("k", 19).not_found);
    assert_eq!(t.get("k", 20).value, b("v1"));
    assert_eq!(t.get("k", 39).value, b("v1"));
    assert_eq!(t.get("k", 40).value, b("v2"));
    let (s, ctx) = t.ctx("k");
    let r =
        t.c.tikv::<t::KvGet>(
            s,
            kvrpcpb::GetRequest {
                context: Some(ctx),
                key: b("k"),
                version: 35,
                need_commit_ts: true,
            },
            NOW,
        )
        .unwrap();
    assert_eq!((r.value, r.commit_ts), (b("v1"), 20));
}

#[test]
fn reads_are_blocked_by_a_lock_only_when_lock_ts_is_at_most_read_ts() {
    let mut t = T::new();
    t.write("k", "old", 5, 6);
    assert!(
        t.prewrite(pw(vec![put("k", "new")], "k", 10))
            .errors
            .is_empty()
    );
    // Older snapshot: the lock is from the future, read the old value.
    assert_eq!(t.get("k", 9).value, b("old"));
    let r = t.get("k", 10);
    let info = locked(r.error.as_ref().unwrap());
    assert_eq!(
        (info.lock_version, &info.key[..], &info.primary_lock[..]),
        (10, &b"k"[..], &b"k"[..])
    );
    assert_eq!(info.lock_ttl, 3000);
    assert_eq!(info.lock_type, Op::Put as i32);
    // resolved_locks bypasses it; committed_locks reads the lock's own value.
    assert_eq!(
        t.get_with("k", 11, |c| c.resolved_locks = vec![10]).value,
        b("old")
    );
    assert_eq!(
        t.get_with("k", 11, |c| c.committed_locks = vec![10]).value,
        b("new")
    );
    // RC ignores locks.
    let rc = t.get_with("k", 11, |c| c.isolation_level = IsolationLevel::Rc as i32);
    assert_eq!(rc.value, b("old"));
}

#[test]
fn pessimistic_and_lock_type_locks_do_not_block_reads() {
    let mut t = T::new();
    t.write("k", "v", 5, 6);
    assert!(t.lock(&["k"], "k", 10, 10).errors.is_empty());
    assert_eq!(t.get("k", 20).value, b("v"));
    let mut t = T::new();
    t.write("k", "v", 5, 6);
    assert!(
        t.prewrite(pw(vec![op(Op::Lock, "k")], "k", 10))
            .errors
            .is_empty()
    );
    assert_eq!(t.get("k", 20).value, b("v"));
}

#[test]
fn autocommit_read_at_max_ts_ignores_a_primary_lock_but_not_a_secondary() {
    let mut t = T::new();
    t.write("a", "1", 1, 2);
    t.write("b", "1", 1, 2);
    assert!(
        t.prewrite(pw(vec![put("a", "2"), put("b", "2")], "a", 10))
            .errors
            .is_empty()
    );
    assert_eq!(t.get("a", u64::MAX).value, b("1"));
    assert!(t.get("b", u64::MAX).error.is_some());
    // A read at u64::MAX never pushes max_ts (and plain prewrites do not read).
    assert_eq!(t.c.max_ts(), 0);
}

#[test]
fn rc_check_ts_reports_newer_versions_and_locks_as_write_conflicts() {
    let mut t = T::new();
    t.write("k", "v", 10, 20);
    let r = t.get_with("k", 15, |c| {
        c.isolation_level = IsolationLevel::RcCheckTs as i32
    });
    let c = conflict(r.error.as_ref().unwrap());
    assert_eq!(
        (c.conflict_commit_ts, c.reason),
        (20, write_conflict::Reason::RcCheckTs as i32)
    );
    assert!(
        t.prewrite(pw(vec![put("k", "x")], "k", 30))
            .errors
            .is_empty()
    );
    let r = t.get_with("k", 25, |c| {
        c.isolation_level = IsolationLevel::RcCheckTs as i32
    });
    assert_eq!(conflict(r.error.as_ref().unwrap()).conflict_ts, 30);
}

#[test]
fn batch_get_skips_missing_keys_and_reports_locked_keys_in_place() {
    let mut t = T::new();
    t.write("a", "1", 1, 2);
    assert!(
        t.prewrite(pw(vec![put("c", "3")], "c", 5))
            .errors
            .is_empty()
    );
    let (s, ctx) = t.ctx("a");
    let r =
        t.c.tikv::<t::KvBatchGet>(
            s,
            kvrpcpb::BatchGetRequest {
                context: Some(ctx),
                keys: vec![b("a"), b("b"), b("c")],
                version: 10,
                need_commit_ts: true,
            },
            NOW,
        )
        .unwrap();
    assert_eq!(r.pairs.len(), 2);
    assert_eq!(
        (&r.pairs[0].key, &r.pairs[0].value, r.pairs[0].commit_ts),
        (&b("a"), &b("1"), 2)
    );
    assert_eq!(locked(r.pairs[1].error.as_ref().unwrap()).key, b("c"));
}

fn scan_req(
    t: &T,
    start: &str,
    end: &str,
    limit: u32,
    reverse: bool,
    key_only: bool,
) -> (u64, kvrpcpb::ScanRequest) {
    let (s, ctx) = t.ctx("a");
    (
        s,
        kvrpcpb::ScanRequest {
            context: Some(ctx),
            start_key: b(start),
            end_key: b(end),
            limit,
            version: 100,
            key_only,
            reverse,
            ..Default::default()
        },
    )
}

fn keys_of(r: &kvrpcpb::ScanResponse) -> Vec<String> {
    r.pairs
        .iter()
        .map(|p| String::from_utf8(p.key.to_vec()).unwrap())
        .collect()
}

#[test]
fn scan_forward_reverse_key_only_and_limit() {
    let mut t = T::new();
    for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
        t.write(k, &format!("v{k}"), 10 + 2 * i as u64, 11 + 2 * i as u64);
    }
    // A deleted key disappears.
    assert!(
        t.prewrite(pw(vec![op(Op::Del, "c")], "c", 50))
            .errors
            .is_empty()
    );
    assert!(t.commit(&["c"], 50, 51).error.is_none());
    let (s, req) = scan_req(&t, "a", "", 10, false, false);
    let r = t.c.tikv::<t::KvScan>(s, req, NOW).unwrap();
    assert_eq!(keys_of(&r), ["a", "b", "d"]);
    assert_eq!(r.pairs[1].value, b("vb"));
    let (s, req) = scan_req(&t, "b", "d", 10, false, true);
    let r = t.c.tikv::<t::KvScan>(s, req, NOW).unwrap();
    assert_eq!(keys_of(&r), ["b"]);
    assert!(r.pairs[0].value.is_empty());
    // Reverse: start_key is the exclusive upper bound, end_key the inclusive lower one.
    let (s, req) = scan_req(&t, "d", "a", 10, true, false);
    assert_eq!(
        keys_of(&t.c.tikv::<t::KvScan>(s, req, NOW).unwrap()),
        ["b", "a"]
    );
    let (s, req) = scan_req(&t, "a", "", 2, false, false);
    assert_eq!(
        keys_of(&t.c.tikv::<t::KvScan>(s, req, NOW).unwrap()),
        ["a", "b"]
    );
    let (s, req) = scan_req(&t, "a", "", 0, false, false);
    assert!(t.c.tikv::<t::KvScan>(s, req, NOW).unwrap().pairs.is_empty());
}

#[test]
fn scan_reports_a_locked_key_in_place_and_counts_it_against_the_limit() {
    let mut t = T::new();
    t.write("a", "1", 1, 2);
    t.write("c", "3", 1, 2);
    assert!(
        t.prewrite(pw(vec![put("b", "2")], "b", 5))
            .errors
            .is_empty()
    );
    let (s, req) = scan_req(&t, "a", "", 2, false, false);
    let r = t.c.tikv::<t::KvScan>(s, req, NOW).unwrap();
    assert_eq!(r.pairs.len(), 2);
    assert_eq!(r.pairs[0].key, b("a"));
    assert_eq!(locked(r.pairs[1].error.as_ref().unwrap()).key, b("b"));
}

#[test]
fn reads_push_max_ts_but_stale_reads_do_not() {
    let mut t = T::new();
    t.get("k", 77);
    assert_eq!(t.c.max_ts(), 77);
    t.get_with("k", 99, |c| c.stale_read = true);
    assert_eq!(t.c.max_ts(), 77);
}

// ---- prewrite ----

#[test]
fn optimistic_prewrite_after_a_newer_commit_is_a_write_conflict() {
    let mut t = T::new();
    t.write("k", "v", 10, 20);
    let r = t.prewrite(pw(vec![put("k", "x"), put("j", "y")], "k", 15));
    assert_eq!(r.errors.len(), 1);
    let c = conflict(&r.errors[0]);
    assert_eq!(
        (
            c.start_ts,
            c.conflict_ts,
            c.conflict_commit_ts,
            &c.key[..],
            &c.primary[..]
        ),
        (15, 10, 20, &b"k"[..], &b"k"[..])
    );
    assert_eq!(c.reason, write_conflict::Reason::Optimistic as i32);
    assert!(r.errors[0].retryable.contains("WriteConflict"));
    // Nothing was written, not even the other key.
    assert!(t.get("j", 100).not_found);
}

#[test]
fn prewrite_meeting_another_lock_reports_all_locks_and_writes_nothing() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("a", "1"), put("b", "1")], "a", 10))
            .errors
            .is_empty()
    );
    let r = t.prewrite(pw(
        vec![put("a", "2"), put("b", "2"), put("c", "2")],
        "a",
        20,
    ));
    assert_eq!(r.errors.len(), 2);
    assert_eq!(locked(&r.errors[0]).lock_version, 10);
    assert!(t.get("c", 100).not_found);
}

#[test]
fn insert_of_an_existing_key_is_already_exist_and_check_not_exists_writes_nothing() {
    let mut t = T::new();
    t.write("k", "v", 10, 20);
    let mut ins = put("k", "x");
    ins.op = Op::Insert as i32;
    let r = t.prewrite(pw(vec![ins.clone()], "k", 30));
    assert_eq!(r.errors[0].already_exist.as_ref().unwrap().key, b("k"));
    let r = t.prewrite(pw(vec![op(Op::CheckNotExists, "k")], "k", 30));
    assert!(r.errors[0].already_exist.is_some());
    // On a missing key both pass; CheckNotExists leaves no lock.
    let r = t.prewrite(pw(vec![op(Op::CheckNotExists, "n")], "n", 30));
    assert!(r.errors.is_empty());
    assert!(t.get("n", 40).not_found);
    let mut ins = put("m", "x");
    ins.op = Op::Insert as i32;
    assert!(t.prewrite(pw(vec![ins], "m", 30)).errors.is_empty());
}

#[test]
fn retried_prewrite_is_idempotent_and_retry_after_commit_succeeds() {
    let mut t = T::new();
    let req = pw(vec![put("k", "v")], "k", 10);
    assert!(t.prewrite(req.clone()).errors.is_empty());
    assert!(t.prewrite(req.clone()).errors.is_empty());
    assert!(t.commit(&["k"], 10, 20).error.is_none());
    // Someone else writes afterwards; the stale retry sees its own commit record.
    t.write("k", "w", 30, 40);
    assert!(t.prewrite(req).errors.is_empty());
    assert_eq!(t.get("k", 100).value, b("w"));
}

#[test]
fn assertions_fail_only_at_a_checking_level() {
    let mut t = T::new();
    t.write("k", "v", 10, 20);
    let mut m = put("k", "x");
    m.assertion = Assertion::NotExist as i32;
    let mut req = pw(vec![m], "k", 30);
    req.assertion_level = AssertionLevel::Strict as i32;
    let r = t.prewrite(req.clone());
    let af = r.errors[0].assertion_failed.as_ref().unwrap();
    assert_eq!(
        (af.start_ts, af.existing_start_ts, af.existing_commit_ts),
        (30, 10, 20)
    );
    assert_eq!(af.assertion, Assertion::NotExist as i32);
    req.assertion_level = AssertionLevel::Off as i32;
    assert!(t.prewrite(req).errors.is_empty());
    let mut m = put("missing", "x");
    m.assertion = Assertion::Exist as i32;
    let mut req = pw(vec![m], "missing", 30);
    req.assertion_level = AssertionLevel::Fast as i32;
    let af = t.prewrite(req).errors[0].assertion_failed.clone().unwrap();
    assert_eq!((af.existing_start_ts, af.existing_commit_ts), (0, 0));
}

#[test]
fn prewrite_after_own_rollback_is_a_self_rolled_back_conflict() {
    let mut t = T::new();
    assert!(t.rollback(&["k"], 10).error.is_none());
    let r = t.prewrite(pw(vec![put("k", "v")], "k", 10));
    assert_eq!(
        conflict(&r.errors[0]).reason,
        write_conflict::Reason::SelfRolledBack as i32
    );
}

#[test]
fn async_commit_min_commit_ts_is_above_max_ts_after_a_read() {
    let mut t = T::new();
    t.get("x", 100);
    let mut req = pw(vec![put("a", "1"), put("b", "2")], "a", 50);
    req.use_async_commit = true;
    req.secondaries = vec![b("b")];
    let r = t.prewrite(req);
    assert!(r.errors.is_empty());
    assert!(r.min_commit_ts >= 101, "{r:?}");
    let (s, ctx) = t.ctx("a");
    let sec =
        t.c.tikv::<t::KvCheckSecondaryLocks>(
            s,
            kvrpcpb::CheckSecondaryLocksRequest {
                context: Some(ctx),
                keys: vec![b("a"), b("b")],
                start_version: 50,
            },
            NOW,
        )
        .unwrap();
    assert_eq!(sec.locks.len(), 2);
    assert!(
        sec.locks
            .iter()
            .all(|l| l.use_async_commit && l.min_commit_ts == r.min_commit_ts)
    );
    assert_eq!(sec.locks[0].secondaries, vec![b("b")]);
    assert!(sec.locks[1].secondaries.is_empty());
}

#[test]
fn async_commit_above_max_commit_ts_falls_back_to_2pc() {
    let mut t = T::new();
    t.get("x", 100);
    let mut req = pw(vec![put("a", "1")], "a", 50);
    req.use_async_commit = true;
    req.max_commit_ts = 80;
    let r = t.prewrite(req);
    assert!(r.errors.is_empty());
    assert_eq!(r.min_commit_ts, 0);
    let lock = locked(t.get("a", 200).error.as_ref().unwrap()).clone();
    assert!(!lock.use_async_commit);
}

#[test]
fn one_pc_commit_is_visible_at_one_pc_commit_ts_without_locks() {
    let mut t = T::new();
    t.get("x", 70);
    let mut req = pw(vec![put("a", "1"), put("b", "2")], "a", 50);
    req.try_one_pc = true;
    let r = t.prewrite(req);
    assert!(r.errors.is_empty());
    assert_eq!(r.one_pc_commit_ts, 71);
    assert!(t.get("a", 70).not_found);
    assert_eq!(t.get("a", 71).value, b("1"));
    assert_eq!(t.get("b", 71).value, b("2"));
    let (s, ctx) = t.ctx("a");
    let locks =
        t.c.tikv::<t::KvScanLock>(
            s,
            kvrpcpb::ScanLockRequest {
                context: Some(ctx),
                max_version: u64::MAX - 1,
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    assert!(locks.locks.is_empty());
}

#[test]
fn one_pc_over_max_commit_ts_leaves_ordinary_locks() {
    let mut t = T::new();
    t.get("x", 100);
    let mut req = pw(vec![put("a", "1"), put("b", "2")], "a", 50);
    req.try_one_pc = true;
    req.max_commit_ts = 60;
    let r = t.prewrite(req);
    assert_eq!((r.one_pc_commit_ts, r.errors.len()), (0, 0));
    assert!(t.get("a", 200).error.is_some());
    assert!(t.commit(&["a", "b"], 50, 120).error.is_none());
    assert_eq!(t.get("b", 200).value, b("2"));
}

// ---- commit, rollback, cleanup ----

#[test]
fn commit_of_a_rolled_back_txn_fails_with_txn_lock_not_found() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("k", "v")], "k", 10))
            .errors
            .is_empty()
    );
    assert!(t.rollback(&["k"], 10).error.is_none());
    let r = t.commit(&["k"], 10, 20);
    let e = r.error.unwrap();
    assert_eq!(e.txn_lock_not_found.unwrap().key, b("k"));
    assert!(e.retryable.contains("TxnLockNotFound"));
    assert!(t.get("k", 30).not_found);
}

#[test]
fn commit_is_idempotent_and_all_or_nothing() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("a", "1")], "a", 10))
            .errors
            .is_empty()
    );
    // "b" was never prewritten: the whole commit fails and "a" stays locked.
    assert!(t.commit(&["a", "b"], 10, 20).error.is_some());
    assert!(t.get("a", 30).error.is_some());
    assert_eq!(t.commit(&["a"], 10, 20).commit_version, 20);
    assert!(t.commit(&["a"], 10, 20).error.is_none());
    let e = t.commit(&["a"], 10, 10).error.unwrap();
    assert!(e.abort.contains("InvalidTxnTso"), "{e:?}");
}

#[test]
fn commit_below_a_pushed_min_commit_ts_is_commit_ts_expired() {
    let mut t = T::new();
    let mut req = pw(vec![put("k", "v")], "k", 10);
    req.min_commit_ts = 11;
    assert!(t.prewrite(req).errors.is_empty());
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("k"),
        lock_ts: 10,
        caller_start_ts: 30,
        current_ts: 30,
        ..Default::default()
    });
    assert_eq!(r.action, Action::MinCommitTsPushed as i32);
    assert_eq!(r.lock_info.unwrap().min_commit_ts, 31);
    let e = t
        .commit(&["k"], 10, 25)
        .error
        .unwrap()
        .commit_ts_expired
        .unwrap();
    assert_eq!((e.attempted_commit_ts, e.min_commit_ts), (25, 31));
    assert!(t.commit(&["k"], 10, 31).error.is_none());
}

#[test]
fn rollback_of_a_committed_txn_fails_and_primary_rollback_is_protected() {
    let mut t = T::new();
    t.write("k", "v", 10, 20);
    let e = t.rollback(&["k"], 10).error.unwrap();
    assert!(e.abort.contains("Committed"), "{e:?}");
    // Unprotected rollbacks of a key collapse: only the newest survives.
    assert!(t.rollback(&["x"], 30).error.is_none());
    assert!(t.rollback(&["x"], 40).error.is_none());
    let writes: Vec<u64> = t.c.txn.store.writes_of(b"x").map(|(ts, _)| ts).collect();
    assert_eq!(writes, vec![40]);
    // A rolled-back primary lock leaves a protected record that later rollbacks keep
    // (writing it still collapses the unprotected record before it).
    assert!(
        t.prewrite(pw(vec![put("x", "v")], "x", 50))
            .errors
            .is_empty()
    );
    assert!(t.rollback(&["x"], 50).error.is_none());
    assert!(t.rollback(&["x"], 60).error.is_none());
    let writes: Vec<u64> = t.c.txn.store.writes_of(b"x").map(|(ts, _)| ts).collect();
    assert_eq!(writes, vec![60, 50]);
}

#[test]
fn cleanup_of_a_live_lock_is_key_is_locked_and_of_a_committed_txn_returns_commit_ts() {
    let mut t = T::new();
    let start = ts(1000, 0);
    assert!(
        t.prewrite(pw(vec![put("k", "v")], "k", start))
            .errors
            .is_empty()
    );
    let (s, ctx) = t.ctx("k");
    let req = kvrpcpb::CleanupRequest {
        context: Some(ctx),
        key: b("k"),
        start_version: start,
        current_ts: ts(2000, 0),
    };
    let r = t.c.tikv::<t::KvCleanup>(s, req.clone(), NOW).unwrap();
    assert!(r.error.unwrap().locked.is_some());
    assert!(t.commit(&["k"], start, ts(2000, 1)).error.is_none());
    let r = t.c.tikv::<t::KvCleanup>(s, req, NOW).unwrap();
    assert_eq!(r.commit_version, ts(2000, 1));
}

// ---- check txn status ----

#[test]
fn check_txn_status_rolls_back_an_expired_primary_lock() {
    let mut t = T::new();
    let start = ts(1000, 0);
    assert!(
        t.prewrite(pw(vec![put("k", "v")], "k", start))
            .errors
            .is_empty()
    );
    let base = kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("k"),
        lock_ts: start,
        caller_start_ts: ts(2000, 0),
        current_ts: ts(2000, 0),
        ..Default::default()
    };
    // TTL 3000 ms: alive at 2 s.
    let r = t.check_txn_status(base.clone());
    assert_eq!(r.lock_ttl, 3000);
    assert_eq!(r.lock_info.unwrap().key, b("k"));
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        current_ts: ts(4001, 0),
        ..base.clone()
    });
    assert_eq!(r.action, Action::TtlExpireRollback as i32);
    assert!(
        t.commit(&["k"], start, ts(5000, 0))
            .error
            .unwrap()
            .txn_lock_not_found
            .is_some()
    );
    // Asking again: the rollback record answers.
    let r = t.check_txn_status(base);
    assert_eq!((r.action, r.commit_version), (Action::NoAction as i32, 0));
}

#[test]
fn check_txn_status_on_a_missing_lock() {
    let mut t = T::new();
    let base = kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("k"),
        lock_ts: 10,
        caller_start_ts: 20,
        current_ts: 20,
        ..Default::default()
    };
    let r = t.check_txn_status(base.clone());
    assert_eq!(r.error.unwrap().txn_not_found.unwrap().start_ts, 10);
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        rollback_if_not_exist: true,
        ..base.clone()
    });
    assert_eq!(r.action, Action::LockNotExistRollback as i32);
    // The rollback is protected: a late prewrite cannot succeed.
    let r = t.prewrite(pw(vec![put("k", "v")], "k", 10));
    assert_eq!(
        conflict(&r.errors[0]).reason,
        write_conflict::Reason::SelfRolledBack as i32
    );
    t.write("j", "v", 30, 40);
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("j"),
        lock_ts: 30,
        ..base
    });
    assert_eq!(r.commit_version, 40);
}

#[test]
fn check_txn_status_never_rolls_back_an_async_commit_primary() {
    let mut t = T::new();
    let start = ts(1000, 0);
    let mut req = pw(vec![put("k", "v")], "k", start);
    req.use_async_commit = true;
    assert!(t.prewrite(req).errors.is_empty());
    let base = kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("k"),
        lock_ts: start,
        caller_start_ts: ts(9000, 0),
        current_ts: ts(9000, 0),
        ..Default::default()
    };
    let r = t.check_txn_status(base.clone());
    assert_eq!(r.action, Action::NoAction as i32);
    assert!(r.lock_info.unwrap().use_async_commit);
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        force_sync_commit: true,
        ..base
    });
    assert_eq!(r.action, Action::TtlExpireRollback as i32);
}

#[test]
fn check_txn_status_resolving_an_expired_pessimistic_primary_writes_no_rollback() {
    let mut t = T::new();
    let start = ts(1000, 0);
    assert!(t.lock(&["k"], "k", start, start).errors.is_empty());
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("k"),
        lock_ts: start,
        caller_start_ts: ts(9000, 0),
        current_ts: ts(9000, 0),
        resolving_pessimistic_lock: true,
        ..Default::default()
    });
    assert_eq!(r.action, Action::TtlExpirePessimisticRollback as i32);
    assert!(t.c.txn.store.writes_of(b"k").next().is_none());
}

// ---- secondary locks, resolve, heartbeat, scan lock ----

#[test]
fn check_secondary_locks_rolls_back_a_missing_secondary_with_protection() {
    let mut t = T::new();
    let (s, ctx) = t.ctx("a");
    let r =
        t.c.tikv::<t::KvCheckSecondaryLocks>(
            s,
            kvrpcpb::CheckSecondaryLocksRequest {
                context: Some(ctx),
                keys: vec![b("a")],
                start_version: 10,
            },
            NOW,
        )
        .unwrap();
    assert!(r.locks.is_empty() && r.commit_ts == 0 && r.error.is_none());
    let mut req = pw(vec![put("a", "1")], "p", 10);
    req.use_async_commit = true;
    let r = t.prewrite(req);
    assert_eq!(
        conflict(&r.errors[0]).reason,
        write_conflict::Reason::SelfRolledBack as i32
    );
}

#[test]
fn resolve_lock_commits_or_rolls_back_by_scan_by_keys_and_by_txn_infos() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("a", "1"), put("b", "1")], "a", 10))
            .errors
            .is_empty()
    );
    assert!(
        t.prewrite(pw(vec![put("c", "2")], "c", 20))
            .errors
            .is_empty()
    );
    assert!(
        t.prewrite(pw(vec![put("d", "3")], "d", 30))
            .errors
            .is_empty()
    );
    let (s, ctx) = t.ctx("a");
    let resolve = |t: &mut T, r: kvrpcpb::ResolveLockRequest| {
        t.c.tikv::<t::KvResolveLock>(
            s,
            kvrpcpb::ResolveLockRequest {
                context: Some(ctx.clone()),
                ..r
            },
            NOW,
        )
        .unwrap()
    };
    let r = resolve(
        &mut t,
        kvrpcpb::ResolveLockRequest {
            start_version: 10,
            commit_version: 15,
            ..Default::default()
        },
    );
    assert!(r.error.is_none());
    assert_eq!(t.get("b", 16).value, b("1"));
    let r = resolve(
        &mut t,
        kvrpcpb::ResolveLockRequest {
            start_version: 20,
            commit_version: 0,
            keys: vec![b("c")],
            ..Default::default()
        },
    );
    assert!(r.error.is_none());
    assert!(t.get("c", 100).not_found);
    let r = resolve(
        &mut t,
        kvrpcpb::ResolveLockRequest {
            txn_infos: vec![kvrpcpb::TxnInfo {
                txn: 30,
                status: 35,
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    assert!(r.error.is_none());
    assert_eq!(t.get("d", 40).value, b("3"));
}

#[test]
fn heartbeat_extends_but_never_shortens_ttl() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("k", "v")], "k", 10))
            .errors
            .is_empty()
    );
    let (s, ctx) = t.ctx("k");
    let hb = |t: &mut T, ttl: u64, start: u64| {
        t.c.tikv::<t::KvTxnHeartBeat>(
            s,
            kvrpcpb::TxnHeartBeatRequest {
                context: Some(ctx.clone()),
                primary_lock: b("k"),
                start_version: start,
                advise_lock_ttl: ttl,
                ..Default::default()
            },
            NOW,
        )
        .unwrap()
    };
    assert_eq!(hb(&mut t, 9000, 10).lock_ttl, 9000);
    assert_eq!(hb(&mut t, 10, 10).lock_ttl, 9000);
    assert!(hb(&mut t, 10, 11).error.unwrap().txn_not_found.is_some());
}

#[test]
fn scan_lock_returns_locks_up_to_max_version_with_limit() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("a", "1"), put("b", "1")], "a", 10))
            .errors
            .is_empty()
    );
    assert!(
        t.prewrite(pw(vec![put("c", "1")], "c", 20))
            .errors
            .is_empty()
    );
    let (s, ctx) = t.ctx("a");
    let scan = |t: &mut T, max: u64, limit: u32| {
        t.c.tikv::<t::KvScanLock>(
            s,
            kvrpcpb::ScanLockRequest {
                context: Some(ctx.clone()),
                max_version: max,
                limit,
                ..Default::default()
            },
            NOW,
        )
        .unwrap()
        .locks
    };
    assert_eq!(scan(&mut t, 15, 0).len(), 2);
    assert_eq!(scan(&mut t, 25, 0).len(), 3);
    assert_eq!(scan(&mut t, 25, 1)[0].key, b("a"));
}

// ---- pessimistic ----

#[test]
fn pessimistic_lock_then_prewrite_then_commit() {
    let mut t = T::new();
    t.write("k", "old", 1, 2);
    let (s, mut req) = t.lock_req(&["k"], "k", 10, 10);
    req.return_values = true;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert_eq!(
        (r.values.clone(), r.not_founds.clone()),
        (vec![b("old")], vec![false])
    );
    let mut req = pw(vec![put("k", "new")], "k", 10);
    req.for_update_ts = 10;
    req.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck as i32];
    assert!(t.prewrite(req).errors.is_empty());
    assert!(t.commit(&["k"], 10, 20).error.is_none());
    assert_eq!(t.get("k", 20).value, b("new"));
}

#[test]
fn pessimistic_lock_below_a_newer_commit_is_a_pessimistic_retry_conflict() {
    let mut t = T::new();
    t.write("k", "v", 10, 20);
    let r = t.lock(&["k"], "k", 5, 15);
    let c = conflict(&r.errors[0]);
    assert_eq!(
        (c.conflict_commit_ts, c.reason),
        (20, write_conflict::Reason::PessimisticRetry as i32)
    );
    // Force-lock mode locks anyway and reports the conflict.
    let (s, mut req) = t.lock_req(&["k"], "k", 5, 15);
    req.wake_up_mode = PessimisticLockWakeUpMode::WakeUpModeForceLock as i32;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert!(r.errors.is_empty());
    assert_eq!(r.results[0].locked_with_conflict_ts, 20);
    assert_eq!(r.results[0].value, b("v"));
}

#[test]
fn pessimistic_lock_check_existence_and_lock_only_if_exists() {
    let mut t = T::new();
    t.write("a", "1", 1, 2);
    let (s, mut req) = t.lock_req(&["a", "b"], "a", 10, 10);
    req.check_existence = true;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert_eq!(r.not_founds, vec![false, true]);
    assert!(r.values.is_empty());
    let (s, mut req) = t.lock_req(&["z"], "z", 20, 20);
    req.lock_only_if_exists = true;
    let r =
        t.c.tikv::<t::KvPessimisticLock>(s, req.clone(), NOW)
            .unwrap();
    assert!(r.errors[0].abort.contains("LockIfExistsFailed"));
    req.return_values = true;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert!(r.errors.is_empty());
    assert!(t.c.txn.store.lock(b"z").is_none());
}

#[test]
fn pessimistic_rollback_removes_only_own_older_pessimistic_locks() {
    let mut t = T::new();
    assert!(t.lock(&["a", "b"], "a", 10, 12).errors.is_empty());
    let (s, ctx) = t.ctx("a");
    let rb = |t: &mut T, for_update: u64, keys: Vec<Bytes>| {
        t.c.tikv::<t::KvPessimisticRollback>(
            s,
            kvrpcpb::PessimisticRollbackRequest {
                context: Some(ctx.clone()),
                start_version: 10,
                for_update_ts: for_update,
                keys,
            },
            NOW,
        )
        .unwrap()
    };
    assert!(rb(&mut t, 11, vec![b("a")]).errors.is_empty());
    assert!(t.c.txn.store.lock(b"a").is_some());
    rb(&mut t, 12, vec![b("a")]);
    assert!(t.c.txn.store.lock(b"a").is_none());
    // No keys: every pessimistic lock of the transaction in the region.
    rb(&mut t, 12, vec![]);
    assert!(t.c.txn.store.lock(b"b").is_none());
}

#[test]
fn deadlock_between_two_txns_is_detected_with_the_wait_chain() {
    let mut t = T::new();
    assert!(t.lock(&["a"], "a", 10, 10).errors.is_empty());
    assert!(t.lock(&["b"], "b", 20, 20).errors.is_empty());
    // Txn 10 waits for "b" (held by 20).
    let (s, mut req) = t.lock_req(&["b"], "a", 10, 10);
    req.wait_timeout = 500;
    let w = t.c.kv_pessimistic_lock_or_wait(s, req, NOW).unwrap();
    let LockWaitOutcome::Waiting(id) = w else {
        panic!("expected to wait, got {w:?}")
    };
    // Txn 20 now wants "a" (held by 10): a cycle.
    let (s, mut req) = t.lock_req(&["a"], "b", 20, 20);
    req.wait_timeout = 500;
    let LockWaitOutcome::Done(r) = t.c.kv_pessimistic_lock_or_wait(s, req, NOW).unwrap() else {
        panic!("expected a deadlock answer")
    };
    let d = r.errors[0].deadlock.clone().unwrap();
    assert_eq!((d.lock_ts, &d.lock_key[..]), (10, &b"a"[..]));
    assert_eq!(d.deadlock_key_hash, key_hash(b"b"));
    let chain: Vec<(u64, u64)> = d
        .wait_chain
        .iter()
        .map(|e| (e.txn, e.wait_for_txn))
        .collect();
    assert_eq!(chain, vec![(10, 20), (20, 10)]);
    // The waiter times out with the lock that blocked it.
    assert_eq!(t.c.next_lock_wait_deadline(), Some(NOW + 500));
    assert!(t.c.poll_lock_waits(NOW + 499).is_empty());
    let done = t.c.poll_lock_waits(NOW + 500);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, id);
    assert_eq!(locked(&done[0].1.errors[0]).lock_version, 20);
}

#[test]
fn a_waiter_is_woken_by_the_commit_with_a_write_conflict() {
    let mut t = T::new();
    assert!(t.lock(&["k"], "k", 10, 10).errors.is_empty());
    let (s, mut req) = t.lock_req(&["k"], "k", 20, 20);
    req.wait_timeout = 0;
    let LockWaitOutcome::Waiting(id) = t.c.kv_pessimistic_lock_or_wait(s, req, NOW).unwrap() else {
        panic!("expected to wait")
    };
    assert_eq!(t.c.next_lock_wait_deadline(), Some(NOW + 1000));
    let mut p = pw(vec![put("k", "v")], "k", 10);
    p.for_update_ts = 10;
    p.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck as i32];
    assert!(t.prewrite(p).errors.is_empty());
    assert!(t.commit(&["k"], 10, 30).error.is_none());
    let done = t.c.poll_lock_waits(NOW);
    assert_eq!(done[0].0, id);
    let c = conflict(&done[0].1.errors[0]);
    assert_eq!(
        (c.start_ts, c.conflict_ts, c.conflict_commit_ts),
        (20, 10, 30)
    );
    assert_eq!(t.c.next_lock_wait_deadline(), None);
}

#[test]
fn unary_lock_request_that_would_wait_answers_key_is_locked_at_once() {
    let mut t = T::new();
    assert!(t.lock(&["k"], "k", 10, 10).errors.is_empty());
    let (s, mut req) = t.lock_req(&["k"], "k", 20, 20);
    req.wait_timeout = 1000;
    let r = t.c.tikv::<t::KvPessimisticLock>(s, req, NOW).unwrap();
    assert_eq!(locked(&r.errors[0]).lock_version, 10);
    assert_eq!(t.c.next_lock_wait_deadline(), None);
}

// ---- bad requests, routing, GC ----

#[test]
fn bad_requests_get_tikv_errors_not_panics() {
    let mut t = T::new();
    // An op TiKV would panic on.
    let r = t.prewrite(pw(vec![op(Op::Rollback, "k")], "k", 10));
    assert!(r.errors[0].abort.contains("mismatch Op"));
    let r = t.lock(&[], "k", 10, 10);
    assert!(r.errors.is_empty());
    let (s, mut req) = t.lock_req(&["k"], "k", 10, 10);
    req.mutations[0].op = Op::Put as i32;
    assert!(
        !t.c.tikv::<t::KvPessimisticLock>(s, req, NOW)
            .unwrap()
            .errors
            .is_empty()
    );
    // Key too large.
    let big = "x".repeat(9000);
    let r = t.prewrite(pw(vec![put(&big, "v")], "k", 10));
    assert!(r.errors[0].abort.contains("KeyTooLarge"));
    // Missing context: a region error.
    let r =
        t.c.tikv::<t::KvGet>(1, kvrpcpb::GetRequest::default(), NOW)
            .unwrap();
    assert!(r.region_error.is_some());
    // Constraint index out of range.
    let mut req = pw(vec![put("k", "v")], "k", 10);
    req.for_update_ts = 10;
    req.pessimistic_actions = vec![0];
    req.for_update_ts_constraints = vec![kvrpcpb::prewrite_request::ForUpdateTsConstraint {
        index: 5,
        expected_for_update_ts: 1,
    }];
    assert!(
        t.prewrite(req).errors[0]
            .abort
            .contains("for_update_ts constraint")
    );
}

#[test]
fn a_v1ttl_storage_refuses_transactional_requests() {
    let mut c = Cluster::new(ClusterConfig {
        api: ApiMode::V1Ttl,
        ..Default::default()
    });
    let t = T::new();
    let (s, ctx) = t.ctx("k");
    let r = c
        .tikv::<t::KvGet>(
            s,
            kvrpcpb::GetRequest {
                context: Some(ctx),
                key: b("k"),
                version: 1,
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    assert!(r.error.unwrap().abort.contains("ApiVersionNotMatched"));
}

#[test]
fn writes_outside_the_region_get_key_not_in_region() {
    let mut t = T::new();
    t.c.split_at(&encode_memcomparable(b"m")).unwrap();
    let (s, ctx) = t.ctx("a");
    let mut req = pw(vec![put("a", "1"), put("z", "1")], "a", 10);
    req.context = Some(ctx);
    let r = t.c.tikv::<t::KvPrewrite>(s, req, NOW).unwrap();
    assert!(r.region_error.unwrap().key_not_in_region.is_some());
    // Scans stop at the region end.
    t.write("b", "1", 10, 11);
    t.write("y", "1", 10, 11);
    let (s, req) = scan_req(&t, "a", "", 10, false, false);
    assert_eq!(keys_of(&t.c.tikv::<t::KvScan>(s, req, NOW).unwrap()), ["b"]);
}

#[test]
fn transactional_requests_work_inside_batch_commands() {
    use tikv_proto::tikvpb::batch_commands_request::{Request as BatchReq, request::Cmd as ReqCmd};
    use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
    let mut t = T::new();
    let (s, ctx) = t.ctx("k");
    let mut p = pw(vec![put("k", "v")], "k", 10);
    p.context = Some(ctx.clone());
    let c = kvrpcpb::CommitRequest {
        context: Some(ctx.clone()),
        keys: vec![b("k")],
        start_version: 10,
        commit_version: 20,
        ..Default::default()
    };
    let g = kvrpcpb::GetRequest {
        context: Some(ctx),
        key: b("k"),
        version: 30,
        ..Default::default()
    };
    let req = tikv_proto::tikvpb::BatchCommandsRequest {
        requests: vec![
            BatchReq {
                cmd: Some(ReqCmd::Prewrite(p)),
            },
            BatchReq {
                cmd: Some(ReqCmd::Commit(c)),
            },
            BatchReq {
                cmd: Some(ReqCmd::Get(g)),
            },
        ],
        request_ids: vec![1, 2, 3],
        ..Default::default()
    };
    let resp = t.c.handle_batch_commands(s, req, NOW).unwrap();
    assert!(matches!(resp.responses[0].cmd, Some(RespCmd::Prewrite(_))));
    assert!(matches!(resp.responses[1].cmd, Some(RespCmd::Commit(_))));
    match &resp.responses[2].cmd {
        Some(RespCmd::Get(g)) => assert_eq!(g.value, b("v")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn gc_drops_versions_below_the_safe_point_but_keeps_the_visible_one() {
    let mut t = T::new();
    t.write("k", "v1", 10, 11);
    t.write("k", "v2", 20, 21);
    t.write("k", "v3", 30, 31);
    t.c.gc_txn(25);
    assert_eq!(t.get("k", 25).value, b("v2"));
    assert!(t.get("k", 15).not_found);
    assert_eq!(t.get("k", 40).value, b("v3"));
}
