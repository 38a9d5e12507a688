//! Transactions in an API V2 keyspace: every key the plans send carries the keyspace prefix,
//! ranges stay inside the keyspace, and what comes back (pairs, errors) names user keys.

use bytes::Bytes;

use super::*;
use crate::config::{ApiVersion, Config, KeyMode};
use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::raw::KvPair;
use crate::testing::resp::{keys, lock, ts};
use crate::timestamp::Timestamp;
use crate::txn::buffer::{Mutation, WriteBuffer};
use crate::txn::commit::Committer;
use crate::txn::scan::SnapshotScan;
use crate::txn::snapshot::{SnapshotBatchGet, SnapshotGet};

const START: Timestamp = Timestamp::compose(5000, 0);

/// Keyspace 1, transactional mode: stored keys start with `x\0\0\x01`.
fn v2_config() -> Config {
    Config::default()
        .with_api_version(ApiVersion::V2)
        .bind(KeyMode::Txn, Some(1))
}

fn codec() -> KeyspaceCodec {
    v2_config().keyspace_codec()
}

/// The stored form of a user key, as text for the reply builders.
fn stored(key: &str) -> String {
    format!("x\0\0\x01{key}")
}

fn user_pairs(out: Result<Vec<KvPair>, Error>) -> Vec<(Key, Bytes)> {
    out.unwrap().into_iter().map(|p| (p.key, p.value)).collect()
}

#[test]
fn a_point_read_sends_the_stored_key() {
    let mut h = harness();
    let get = SnapshotGet::new(codec(), "k".into(), START);
    let out = h.run(get, cluster([], |_| resp::get("v")));
    assert_eq!(out.unwrap(), Some(Bytes::from_static(b"v")));
    let sent = resp::sent(&h.effects);
    assert_eq!(req!(sent[0], KvGet).key.as_ref(), stored("k").as_bytes());
}

#[test]
fn a_batch_read_answers_with_user_keys_and_resolves_locks_on_stored_ones() {
    let mut h = harness();
    let get = SnapshotBatchGet::new(codec(), vec!["a".into(), "b".into()], START, 8);
    let blocker = lock(&stored("b"), &stored("b"), ts(1000));
    let mut reads = 0;
    let out = h.run(
        get,
        cluster([resp::tso(ts(6000))], |s| match s.method {
            "KvBatchGet" => {
                reads += 1;
                if reads == 1 {
                    assert_eq!(s.keys, keys(&[&stored("a"), &stored("b")]));
                    resp::batch_get()
                        .pair(&stored("a"), "1")
                        .locked_pair(blocker.clone())
                        .ok()
                } else {
                    assert_eq!(s.keys, keys(&[&stored("b")]), "only the locked key again");
                    resp::batch_get().pair(&stored("b"), "2").ok()
                }
            }
            "KvCheckTxnStatus" => {
                let r = req!(s, KvCheckTxnStatus);
                assert_eq!(r.primary_key.as_ref(), stored("b").as_bytes());
                resp::check_txn_status().committed(ts(1500))
            }
            "KvResolveLock" => resp::resolve_lock().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(
        user_pairs(out),
        [
            (Key::from("a"), Bytes::from_static(b"1")),
            (Key::from("b"), Bytes::from_static(b"2"))
        ]
    );
}

#[test]
fn a_scan_of_everything_stays_inside_the_keyspace() {
    let mut h = harness();
    let scan = SnapshotScan::new(codec(), START, KeyRange::all(), 10, false, false);
    let out = h.run(
        scan,
        cluster([], |s| {
            let r = req!(s, KvScan);
            assert_eq!(r.start_key.as_ref(), b"x\0\0\x01");
            assert_eq!(r.end_key.as_ref(), b"x\0\0\x02", "the keyspace's end");
            resp::scan()
                .pairs(&[(&stored("a"), "1"), (&stored("z"), "2")])
                .ok()
        }),
    );
    let keys: Vec<Key> = user_pairs(out).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [Key::from("a"), Key::from("z")]);
}

#[test]
fn a_key_from_another_keyspace_is_an_error_not_a_user_key() {
    let mut h = harness();
    let scan = SnapshotScan::new(codec(), START, KeyRange::all(), 10, false, false);
    let foreign = "x\0\0\x02a";
    let out = h.run(scan, cluster([], |_| resp::scan().pair(foreign, "1").ok()));
    match out {
        Err(Error::KeyError { key, message }) => {
            assert_eq!(key.as_bytes(), foreign.as_bytes());
            assert!(message.contains("outside keyspace"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_commit_writes_stored_keys_and_reports_conflicts_on_user_keys() {
    let config = v2_config();
    let mut buffer = WriteBuffer::new();
    buffer.set("a".into(), Mutation::Put("1".into()));
    buffer.set("k".into(), Mutation::Put("2".into()));

    let mut h = harness();
    let committer = Committer::new(&config, START, &buffer);
    assert_eq!(committer.primary().as_bytes(), stored("a").as_bytes());
    let commit_ts = ts(6000);
    let out = h.run(
        committer,
        cluster([resp::tso(commit_ts)], |s| match s.method {
            "KvPrewrite" => {
                let r = req!(s, KvPrewrite);
                assert_eq!(r.primary_lock.as_ref(), stored("a").as_bytes());
                assert_eq!(s.keys, keys(&[&stored("a"), &stored("k")]));
                resp::prewrite().ok()
            }
            "KvCommit" => resp::commit().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    assert_eq!(out.unwrap(), commit_ts);

    let mut h = harness();
    let out = h.run(
        Committer::new(&config, START, &buffer),
        cluster([], |s| match s.method {
            "KvPrewrite" => resp::prewrite().key_error(resp::write_conflict(
                &stored("k"),
                &stored("a"),
                START,
                ts(4000),
                ts(4500),
            )),
            "KvBatchRollback" => resp::batch_rollback().ok(),
            other => panic!("unexpected {other}"),
        }),
    );
    match out {
        Err(Error::WriteConflict { key, primary, .. }) => {
            assert_eq!((key, primary), (Key::from("k"), Key::from("a")));
        }
        other => panic!("{other:?}"),
    }
}
