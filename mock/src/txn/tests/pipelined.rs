//! Pipelined DML (flush, buffer batch get, status broadcast), the debug views, destroy
//! range and the retired `KvGC`, mirroring the cases of TiKV's `commands/flush.rs` tests.

use super::*;
use crate::error::Code;
use crate::txn::status_cache::CachedTxnState;
use tikv_proto::method::Method;
use tikv_proto::tikvpb::batch_commands_request::{Request as BatchReq, request::Cmd as ReqCmd};
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;

fn del(k: &str) -> Mutation {
    op(Op::Del, k)
}

fn insert(k: &str, v: &str) -> Mutation {
    Mutation {
        op: Op::Insert as i32,
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

impl T {
    fn flush_req(
        &self,
        muts: Vec<Mutation>,
        primary: &str,
        start: u64,
        generation: u64,
    ) -> (u64, kvrpcpb::FlushRequest) {
        let (s, ctx) = self.ctx(primary);
        (
            s,
            kvrpcpb::FlushRequest {
                context: Some(ctx),
                mutations: muts,
                primary_key: b(primary),
                start_ts: start,
                generation,
                lock_ttl: 3000,
                ..Default::default()
            },
        )
    }

    fn flush(
        &mut self,
        muts: Vec<Mutation>,
        primary: &str,
        start: u64,
        generation: u64,
    ) -> kvrpcpb::FlushResponse {
        let (s, req) = self.flush_req(muts, primary, start, generation);
        self.c.tikv::<t::KvFlush>(s, req, NOW).unwrap()
    }

    fn flush_ok(&mut self, muts: Vec<Mutation>, primary: &str, start: u64, generation: u64) {
        let r = self.flush(muts, primary, start, generation);
        assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
    }

    fn buffer_get(&mut self, keys: &[&str], version: u64) -> kvrpcpb::BufferBatchGetResponse {
        let (s, ctx) = self.ctx(keys.first().copied().unwrap_or(""));
        let req = kvrpcpb::BufferBatchGetRequest {
            context: Some(ctx),
            keys: keys.iter().map(|k| b(k)).collect(),
            version,
        };
        self.c.tikv::<t::KvBufferBatchGet>(s, req, NOW).unwrap()
    }

    fn resolve_txn(&mut self, any_key: &str, start: u64, commit: u64) {
        let (s, ctx) = self.ctx(any_key);
        let req = kvrpcpb::ResolveLockRequest {
            context: Some(ctx),
            start_version: start,
            commit_version: commit,
            ..Default::default()
        };
        let r = self.c.tikv::<t::KvResolveLock>(s, req, NOW).unwrap();
        assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    }

    fn lock_of(&self, key: &str) -> Option<crate::txn::types::Lock> {
        self.c.txn.store.lock(key.as_bytes()).cloned()
    }

    pub(super) fn mvcc(&mut self, key: &str) -> kvrpcpb::MvccGetByKeyResponse {
        let (s, ctx) = self.ctx(key);
        let req = kvrpcpb::MvccGetByKeyRequest {
            context: Some(ctx),
            key: b(key),
        };
        self.c.tikv::<t::MvccGetByKey>(s, req, NOW).unwrap()
    }
}

fn pairs(r: &kvrpcpb::BufferBatchGetResponse) -> Vec<(String, String)> {
    r.pairs
        .iter()
        .map(|p| {
            (
                String::from_utf8_lossy(&p.key).into_owned(),
                String::from_utf8_lossy(&p.value).into_owned(),
            )
        })
        .collect()
}

#[test]
fn flush_locks_without_committing_and_the_txn_commits_by_primary_then_range() {
    let mut t = T::new();
    t.flush_ok(vec![put("a", "1"), put("b", "2")], "a", 10, 1);
    t.flush_ok(vec![put("c", "3")], "a", 10, 2);
    let lock = t.lock_of("c").unwrap();
    assert_eq!(
        (lock.generation, lock.txn_size, lock.min_commit_ts, lock.ttl),
        (2, u64::MAX, 11, 3000)
    );
    assert!(t.get("b", 20).error.unwrap().locked.is_some());
    assert!(t.commit(&["a"], 10, 20).error.is_none());
    assert_eq!(
        t.c.cached_txn_status(10),
        Some(CachedTxnState::Committed { commit_ts: 20 })
    );
    // The secondaries: every lock of the transaction in the region, by range.
    t.resolve_txn("b", 10, 20);
    assert!(t.lock_of("b").is_none() && t.lock_of("c").is_none());
    assert_eq!(t.get("b", 21).value, b("2"));
    assert_eq!(t.get("c", 21).value, b("3"));
    assert!(t.get("c", 19).not_found);
}

#[test]
fn later_generations_overwrite_and_late_ones_are_skipped() {
    let mut t = T::new();
    let r = t.flush(vec![put("k", "v0")], "k", 10, 0);
    assert!(
        r.errors[0]
            .abort
            .contains("generation should be greater than 0")
    );
    t.flush_ok(vec![put("k", "v2")], "k", 10, 2);
    // Generation 1 arrives late: no error, no effect.
    t.flush_ok(vec![put("k", "v1")], "k", 10, 1);
    t.flush_ok(vec![put("k", "v2b")], "k", 10, 2);
    assert_eq!(t.lock_of("k").unwrap().value, Some(b("v2")));
    t.flush_ok(vec![put("k", "v3")], "k", 10, 3);
    assert!(t.commit(&["k"], 10, 20).error.is_none());
    assert_eq!(t.get("k", 30).value, b("v3"));
}

#[test]
fn a_flush_meeting_another_lock_still_writes_its_other_keys() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("a", "x")], "a", 5))
            .errors
            .is_empty()
    );
    let r = t.flush(vec![put("a", "1"), put("b", "2")], "b", 10, 1);
    assert_eq!(locked(&r.errors[0]).lock_version, 5);
    assert_eq!(t.lock_of("b").unwrap().ts, 10);
    // A prewrite in the same situation writes nothing.
    let r = t.prewrite(pw(vec![put("a", "1"), put("c", "2")], "c", 11));
    assert_eq!(r.errors.len(), 1);
    assert!(t.lock_of("c").is_none());
}

#[test]
fn flush_write_conflicts_and_late_flush_after_commit() {
    let mut t = T::new();
    t.write("k", "old", 20, 30);
    let r = t.flush(vec![put("k", "v")], "k", 10, 1);
    assert_eq!(
        conflict(&r.errors[0]).reason,
        write_conflict::Reason::Optimistic as i32
    );
    // A flush of a committed transaction succeeds without writing.
    t.flush_ok(vec![put("j", "1")], "j", 40, 1);
    assert!(t.commit(&["j"], 40, 50).error.is_none());
    t.write("j", "2", 60, 70);
    t.flush_ok(vec![put("j", "late")], "j", 40, 2);
    assert!(t.lock_of("j").is_none());
    assert_eq!(t.get("j", 80).value, b("2"));
}

#[test]
fn insert_after_an_earlier_flush_put_already_exists() {
    let mut t = T::new();
    t.flush_ok(vec![put("k", "v")], "k", 10, 1);
    let r = t.flush(vec![insert("k", "v")], "k", 10, 2);
    assert!(r.errors[0].already_exist.is_some());
    assert!(t.commit(&["k"], 10, 20).error.is_none());
    let r = t.flush(vec![insert("k", "v")], "k", 30, 1);
    assert!(r.errors[0].already_exist.is_some());
}

#[test]
fn only_the_first_flush_of_a_key_checks_its_assertion() {
    let mut t = T::new();
    let mut m = put("k", "v");
    m.assertion = Assertion::NotExist as i32;
    let (s, mut req) = t.flush_req(vec![m], "k", 10, 1);
    req.assertion_level = AssertionLevel::Strict as i32;
    assert!(
        t.c.tikv::<t::KvFlush>(s, req, NOW)
            .unwrap()
            .errors
            .is_empty()
    );
    let mut m = put("k", "v2");
    m.assertion = Assertion::Exist as i32;
    let (s, mut req) = t.flush_req(vec![m], "k", 10, 2);
    req.assertion_level = AssertionLevel::Strict as i32;
    assert!(
        t.c.tikv::<t::KvFlush>(s, req, NOW)
            .unwrap()
            .errors
            .is_empty()
    );
    // A first flush of another key does check it.
    let mut m = put("j", "v");
    m.assertion = Assertion::Exist as i32;
    let (s, mut req) = t.flush_req(vec![m], "k", 10, 3);
    req.assertion_level = AssertionLevel::Strict as i32;
    let r = t.c.tikv::<t::KvFlush>(s, req, NOW).unwrap();
    assert!(r.errors[0].assertion_failed.is_some());
}

#[test]
fn buffer_batch_get_reads_only_the_txns_own_flushed_values() {
    let mut t = T::new();
    t.write("c", "committed", 1, 2);
    assert!(
        t.prewrite(pw(vec![put("d", "other")], "d", 5))
            .errors
            .is_empty()
    );
    t.flush_ok(vec![put("b", "2"), del("a"), put("e", "5")], "b", 10, 1);
    let r = t.buffer_get(&["e", "a", "b", "c", "d", "b", "zz"], 10);
    assert_eq!(
        pairs(&r),
        [("a", ""), ("b", "2"), ("e", "5")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert_eq!(t.c.max_ts(), 10);
    // Another version sees nothing.
    assert!(t.buffer_get(&["b"], 11).pairs.is_empty());
}

#[test]
fn buffer_batch_get_reports_keys_outside_the_region_in_place() {
    let mut t = T::new();
    t.c.split_at(&encode_memcomparable(b"m")).unwrap();
    t.flush_ok(vec![put("a", "1")], "a", 10, 1);
    let r = t.buffer_get(&["a", "z"], 10);
    assert_eq!(r.pairs.len(), 2);
    assert_eq!(r.pairs[0].value, b("1"));
    assert!(r.pairs[1].error.is_some());
}

#[test]
fn expired_flushed_locks_roll_back_protected_and_block_later_flushes() {
    let mut t = T::new();
    t.flush_ok(vec![put("p", "1"), put("s", "2")], "p", ts(1000, 0), 1);
    let r = t.check_txn_status(kvrpcpb::CheckTxnStatusRequest {
        primary_key: b("p"),
        lock_ts: ts(1000, 0),
        caller_start_ts: ts(100_000, 0),
        current_ts: ts(100_000, 0),
        ..Default::default()
    });
    assert_eq!(r.action(), Action::TtlExpireRollback);
    t.resolve_txn("s", ts(1000, 0), 0);
    let m = t.mvcc("s");
    let w = &m.info.unwrap().writes[0];
    assert_eq!(w.r#type, Op::Rollback as i32);
    let (_, rb) = t.c.txn.store.writes_of(b"s").next().unwrap();
    assert!(rb.protected);
    // The secondary's rollback is protected: a late flush cannot lock the key again.
    let r = t.flush(vec![put("s", "3")], "p", ts(1000, 0), 2);
    assert_eq!(
        conflict(&r.errors[0]).reason,
        write_conflict::Reason::SelfRolledBack as i32
    );
    t.write("s", "x", ts(2000, 0), ts(2000, 1));
    t.write("s", "y", ts(3000, 0), ts(3000, 1));
    let r = t.flush(vec![put("s", "3")], "p", ts(1000, 0), 3);
    assert!(!r.errors.is_empty());
}

#[test]
fn heartbeat_pushes_a_flushed_primarys_min_commit_ts_and_a_reflush_resets_it() {
    let mut t = T::new();
    t.flush_ok(vec![put("k", "v")], "k", 10, 1);
    let (s, ctx) = t.ctx("k");
    let r =
        t.c.tikv::<t::KvTxnHeartBeat>(
            s,
            kvrpcpb::TxnHeartBeatRequest {
                context: Some(ctx),
                primary_lock: b("k"),
                start_version: 10,
                advise_lock_ttl: 5000,
                min_commit_ts: 50,
                ..Default::default()
            },
            NOW,
        )
        .unwrap();
    assert_eq!(r.lock_ttl, 5000);
    assert_eq!(t.lock_of("k").unwrap().min_commit_ts, 50);
    let e = t.commit(&["k"], 10, 40).error.unwrap();
    assert_eq!(e.commit_ts_expired.unwrap().min_commit_ts, 50);
    // TiKV rewrites the whole lock on a later flush: TTL and min_commit_ts go back.
    t.flush_ok(vec![put("k", "v2")], "k", 10, 2);
    let lock = t.lock_of("k").unwrap();
    assert_eq!((lock.ttl, lock.min_commit_ts), (3000, 11));
}

#[test]
fn broadcast_txn_status_fills_the_status_cache() {
    let mut t = T::new();
    let (s, ctx) = t.ctx("k");
    let status = |start, min, commit, rb, done| kvrpcpb::TxnStatus {
        start_ts: start,
        min_commit_ts: min,
        commit_ts: commit,
        rolled_back: rb,
        is_completed: done,
    };
    let req = kvrpcpb::BroadcastTxnStatusRequest {
        context: Some(ctx),
        txn_status: vec![
            status(10, 30, 0, false, false),
            status(20, 0, 25, false, true),
            status(40, 45, 0, false, true),
            status(50, 0, 0, true, false),
        ],
    };
    t.c.tikv::<t::BroadcastTxnStatus>(s, req, NOW).unwrap();
    assert_eq!(
        t.c.cached_txn_status(10),
        Some(CachedTxnState::Ongoing { min_commit_ts: 30 })
    );
    assert_eq!(
        t.c.cached_txn_status(20),
        Some(CachedTxnState::Committed { commit_ts: 25 })
    );
    // "Completed" but ongoing is contradictory (TiKV asserts): ignored.
    assert_eq!(t.c.cached_txn_status(40), None);
    assert_eq!(t.c.cached_txn_status(50), Some(CachedTxnState::RolledBack));
}

#[test]
fn a_late_pessimistic_prewrite_of_a_cached_committed_txn_is_checked_as_a_retry() {
    let mut t = T::new();
    // A pessimistic transaction whose key "i" was not pessimistically locked.
    let mut req = pw(vec![put("i", "1")], "i", 10);
    req.for_update_ts = 10;
    req.pessimistic_actions = vec![PessimisticAction::SkipPessimisticCheck as i32];
    assert!(t.prewrite(req.clone()).errors.is_empty());
    assert!(t.commit(&["i"], 10, 20).error.is_none());
    // The original prewrite arrives late, not marked as a retry. Without the cache it
    // would lock "i" again; knowing the transaction committed, TiKV re-checks the key.
    let r = t.prewrite(req);
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(t.lock_of("i").is_none());
}

#[test]
fn pipelined_requests_work_inside_batch_commands_and_gc_gets_no_reply() {
    let mut t = T::new();
    let (s, flush) = t.flush_req(vec![put("k", "v")], "k", 10, 1);
    let ctx = flush.context.clone();
    let req = tikv_proto::tikvpb::BatchCommandsRequest {
        requests: vec![
            BatchReq {
                cmd: Some(ReqCmd::Flush(flush)),
            },
            BatchReq {
                cmd: Some(ReqCmd::Gc(kvrpcpb::GcRequest {
                    context: ctx.clone(),
                    safe_point: 5,
                })),
            },
            BatchReq {
                cmd: Some(ReqCmd::BufferBatchGet(kvrpcpb::BufferBatchGetRequest {
                    context: ctx.clone(),
                    keys: vec![b("k")],
                    version: 10,
                })),
            },
            BatchReq {
                cmd: Some(ReqCmd::BroadcastTxnStatus(
                    kvrpcpb::BroadcastTxnStatusRequest {
                        context: ctx,
                        txn_status: Vec::new(),
                    },
                )),
            },
        ],
        request_ids: vec![1, 2, 3, 4],
        ..Default::default()
    };
    let resp = t.c.handle_batch_commands(s, req, NOW).unwrap();
    assert_eq!(resp.request_ids, vec![1, 3, 4]);
    assert!(matches!(resp.responses[0].cmd, Some(RespCmd::Flush(_))));
    match &resp.responses[1].cmd {
        Some(RespCmd::BufferBatchGet(g)) => assert_eq!(g.pairs[0].value, b("v")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        resp.responses[2].cmd,
        Some(RespCmd::BroadcastTxnStatus(_))
    ));
    // Unary KvGC: UNIMPLEMENTED, typed or by path.
    let e =
        t.c.tikv::<t::KvGc>(s, kvrpcpb::GcRequest::default(), NOW)
            .unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (Code::Unimplemented, ""));
    let e =
        t.c.handle_tikv(s, t::KvGc::PATH, Bytes::new(), NOW)
            .unwrap_err();
    assert_eq!(e.code, Code::Unimplemented);
}

#[test]
fn mvcc_get_by_key_shows_the_lock_writes_and_long_values() {
    let mut t = T::new();
    let long = "L".repeat(300);
    t.write("k", &long, 10, 11);
    t.write("k", "short", 20, 21);
    assert!(t.rollback(&["k"], 25).error.is_none());
    let mut req = pw(vec![put("k", "locked")], "p", 30);
    req.lock_ttl = 777;
    assert!(t.prewrite(req).errors.is_empty());
    let info = t.mvcc("k").info.unwrap();
    let lock = info.lock.unwrap();
    assert_eq!(
        (
            lock.r#type,
            lock.start_ts,
            &lock.primary[..],
            &lock.short_value[..]
        ),
        (Op::Put as i32, 30, &b"p"[..], &b"locked"[..])
    );
    // TiKV does not fill the lock's TTL.
    assert_eq!(lock.ttl, 0);
    let writes: Vec<(i32, u64, u64)> = info
        .writes
        .iter()
        .map(|w| (w.r#type, w.start_ts, w.commit_ts))
        .collect();
    assert_eq!(
        writes,
        [
            (Op::Rollback as i32, 25, 25),
            (Op::Put as i32, 20, 21),
            (Op::Put as i32, 10, 11)
        ]
    );
    assert_eq!(info.writes[1].short_value, b("short"));
    assert!(info.writes[2].short_value.is_empty());
    assert_eq!(info.values.len(), 1);
    assert_eq!(
        (info.values[0].start_ts, info.values[0].value.len()),
        (10, 300)
    );
    // Outside the region: an error string.
    t.c.split_at(&encode_memcomparable(b"m")).unwrap();
    let (s, ctx) = t.ctx("a");
    let r =
        t.c.tikv::<t::MvccGetByKey>(
            s,
            kvrpcpb::MvccGetByKeyRequest {
                context: Some(ctx),
                key: b("z"),
            },
            NOW,
        )
        .unwrap();
    assert!(!r.error.is_empty() && r.info.is_none());
}

#[test]
fn mvcc_get_by_start_ts_finds_the_first_key_with_a_record_of_that_txn() {
    let mut t = T::new();
    assert!(
        t.prewrite(pw(vec![put("b", "1"), put("c", "1")], "b", 10))
            .errors
            .is_empty()
    );
    assert!(t.commit(&["c"], 10, 11).error.is_none());
    assert!(t.rollback(&["a"], 12).error.is_none());
    let (s, ctx) = t.ctx("a");
    let by_ts = |t: &mut T, ts: u64| {
        t.c.tikv::<t::MvccGetByStartTs>(
            s,
            kvrpcpb::MvccGetByStartTsRequest {
                context: Some(ctx.clone()),
                start_ts: ts,
            },
            NOW,
        )
        .unwrap()
    };
    // "b" is only locked: the first key with a write record of txn 10 is "c".
    let r = by_ts(&mut t, 10);
    assert_eq!(r.key, b("c"));
    assert_eq!(r.info.unwrap().writes[0].commit_ts, 11);
    assert_eq!(by_ts(&mut t, 12).key, b("a"));
    let r = by_ts(&mut t, 99);
    assert!(r.key.is_empty() && r.info == Some(kvrpcpb::MvccInfo::default()));
}

#[test]
fn unsafe_destroy_range_drops_every_cf_without_region_checks() {
    let mut t = T::new();
    t.write("a", "1", 10, 11);
    t.write("b", "1", 10, 11);
    assert!(
        t.prewrite(pw(vec![put("c", "2")], "c", 20))
            .errors
            .is_empty()
    );
    t.write("d", "1", 10, 11);
    let destroy = |t: &mut T, start: &str, end: &str| {
        t.c.tikv::<t::UnsafeDestroyRange>(
            1,
            kvrpcpb::UnsafeDestroyRangeRequest {
                // A context TiKV never looks at.
                context: Some(Context {
                    region_id: 12345,
                    cluster_id: 999,
                    ..Default::default()
                }),
                start_key: b(start),
                end_key: b(end),
            },
            NOW,
        )
        .unwrap()
    };
    let r = destroy(&mut t, "b", "d");
    assert!(r.error.is_empty() && r.region_error.is_none());
    assert!(t.get("b", 30).not_found);
    assert!(t.lock_of("c").is_none());
    assert_eq!(t.get("a", 30).value, b("1"));
    assert_eq!(t.get("d", 30).value, b("1"));
    assert!(!destroy(&mut t, "", "z").error.is_empty());
}

#[test]
fn key_size_is_checked_on_the_encoded_key() {
    let mut t = T::new();
    // 8000 raw bytes encode to 9009 > 8192.
    let big = "x".repeat(8000);
    let r = t.flush(vec![put(&big, "v")], "k", 10, 1);
    assert!(r.errors[0].abort.contains("size: 9009"), "{r:?}");
    let ok = "x".repeat(7000);
    t.flush_ok(vec![put(&ok, "v")], "k", 10, 1);
}
