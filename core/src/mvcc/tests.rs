//! MVCC debug views: typed answers, storage errors, the walk by start timestamp.

use tikv_proto::kvrpcpb;

use super::*;
use crate::testing::resp::{self, Sent};
use crate::testing::{Harness, region};

fn harness() -> Harness {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "m", &[1]));
    h.cache(region(2, "m", "", &[2]));
    h
}

fn info() -> kvrpcpb::MvccInfo {
    kvrpcpb::MvccInfo {
        lock: Some(kvrpcpb::MvccLock {
            r#type: kvrpcpb::Op::Put as i32,
            start_ts: 30,
            primary: "p".into(),
            short_value: "v3".into(),
            ..Default::default()
        }),
        writes: vec![
            kvrpcpb::MvccWrite {
                r#type: kvrpcpb::Op::Put as i32,
                start_ts: 10,
                commit_ts: 11,
                short_value: "v1".into(),
                ..Default::default()
            },
            kvrpcpb::MvccWrite {
                r#type: kvrpcpb::Op::Rollback as i32,
                start_ts: 20,
                commit_ts: 20,
                ..Default::default()
            },
        ],
        values: vec![],
    }
}

#[test]
fn by_key_asks_the_keys_region_and_types_the_answer() {
    let mut h = harness();
    let out = h.run(MvccByKey::new(KeyspaceCodec::NONE, Key::from("x")), |e| {
        let sent = Sent::of(e).expect("an RPC");
        assert_eq!(sent.region, 2);
        resp::Resp(kvrpcpb::MvccGetByKeyResponse {
            info: Some(info()),
            ..Default::default()
        })
        .ok()
    });
    let info = out.unwrap();
    let lock = info.lock.clone().expect("a lock");
    assert_eq!((lock.op, lock.start_ts.as_u64()), (MvccOp::Put, 30));
    assert_eq!(lock.primary, Key::from("p"));
    assert_eq!(info.writes.len(), 2);
    assert_eq!(info.writes[1].op, MvccOp::Rollback);
    assert!(!info.is_empty());
}

#[test]
fn by_key_reports_a_storage_error_with_the_key() {
    let mut h = harness();
    let out = h.run(MvccByKey::new(KeyspaceCodec::NONE, Key::from("x")), |_| {
        resp::Resp(kvrpcpb::MvccGetByKeyResponse {
            error: "engine closed".into(),
            ..Default::default()
        })
        .ok()
    });
    let err = out.unwrap_err();
    assert!(
        err.to_string().contains("engine closed") && err.to_string().contains("x"),
        "{err}"
    );
}

#[test]
fn by_start_ts_walks_regions_until_one_names_a_key() {
    let mut h = harness();
    let out = h.run(
        MvccByStartTs::new(KeyspaceCodec::NONE, Timestamp::from_u64(10)),
        |e| {
            let sent = Sent::of(e).expect("an RPC");
            let reply = if sent.region == 1 {
                kvrpcpb::MvccGetByStartTsResponse {
                    info: Some(kvrpcpb::MvccInfo::default()),
                    ..Default::default()
                }
            } else {
                kvrpcpb::MvccGetByStartTsResponse {
                    key: "q".into(),
                    info: Some(info()),
                    ..Default::default()
                }
            };
            resp::Resp(reply).ok()
        },
    );
    let (key, info) = out.unwrap().expect("found in region 2");
    assert_eq!(key, Key::from("q"));
    assert_eq!(info.writes[0].commit_ts.as_u64(), 11);
    assert_eq!(resp::kinds(&h.effects).len(), 2);
}

#[test]
fn by_start_ts_of_an_unknown_transaction_is_none() {
    let mut h = harness();
    let out = h.run(
        MvccByStartTs::new(KeyspaceCodec::NONE, Timestamp::from_u64(10)),
        |_| {
            resp::Resp(kvrpcpb::MvccGetByStartTsResponse {
                info: Some(kvrpcpb::MvccInfo::default()),
                ..Default::default()
            })
            .ok()
        },
    );
    assert_eq!(out.unwrap(), None);
}
