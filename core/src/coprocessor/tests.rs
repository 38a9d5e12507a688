//! `Coprocessor`: ranges split by region in key order, locks resolved, errors.

use tikv_proto::coprocessor as copr;

use super::*;
use crate::machine::Effect;
use crate::testing::resp::{self, Sent};
use crate::testing::{Harness, region};

fn harness() -> Harness {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "m", &[1]));
    h.cache(region(2, "m", "", &[2]));
    h
}

fn cop(ranges: &[(&str, &str)]) -> Coprocessor {
    let ranges = ranges.iter().map(|(a, b)| KeyRange::new(*a, *b)).collect();
    Coprocessor::new(
        105,
        bytes::Bytes::from_static(b"payload"),
        Timestamp::from_u64(500),
        ranges,
    )
    .unwrap()
}

fn request(e: &Effect) -> copr::Request {
    let sent = Sent::of(e).expect("an RPC");
    match sent.request {
        TikvRequest::Coprocessor(r) => r,
        other => panic!("{other:?}"),
    }
}

fn answer(data: &'static str) -> Outcome {
    Outcome::Response(Box::new(TikvResponse::Coprocessor(copr::Response {
        data: bytes::Bytes::from_static(data.as_bytes()),
        ..Default::default()
    })))
}

fn text(r: &copr::KeyRange) -> (String, String) {
    (
        String::from_utf8_lossy(&r.start).into_owned(),
        String::from_utf8_lossy(&r.end).into_owned(),
    )
}

#[test]
fn each_region_is_asked_for_its_parts_of_every_range_in_key_order() {
    let mut h = harness();
    let mut asked = Vec::new();
    let out = h.run(cop(&[("k", "p"), ("a", "c"), ("b", "d")]), |e| {
        let r = request(e);
        assert_eq!((r.tp, r.start_ts, &r.data[..]), (105, 500, &b"payload"[..]));
        asked.push(r.ranges.iter().map(text).collect::<Vec<_>>());
        answer(if asked.len() == 1 { "one" } else { "two" })
    });
    let out = out.unwrap();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        asked,
        [vec![s("a", "d"), s("k", "m")], vec![s("m", "p")]],
        "overlapping ranges merged, each region asked once"
    );
    assert_eq!(
        out.iter()
            .map(|r| (r.region, &r.data[..]))
            .collect::<Vec<_>>(),
        [(1, &b"one"[..]), (2, &b"two"[..])]
    );
}

#[test]
fn a_lock_is_resolved_and_the_region_asked_again_passing_its_owner() {
    let mut h = harness();
    let mut sent = 0;
    let out = h.run(cop(&[("a", "b")]), |e| match e {
        Effect::Tso { .. } => resp::tso(resp::ts(2000)),
        Effect::Rpc { .. } => {
            let s = Sent::of(e).expect("an RPC");
            match s.method {
                "Coprocessor" => {
                    sent += 1;
                    let r = request(e);
                    if sent == 1 {
                        let lock = resp::lock("a", "a", Timestamp::from_u64(400)).ttl(10);
                        return Outcome::Response(Box::new(TikvResponse::Coprocessor(
                            copr::Response {
                                locked: Some(lock.0),
                                ..Default::default()
                            },
                        )));
                    }
                    let ctx = r.context.unwrap_or_default();
                    assert_eq!(ctx.resolved_locks, [400], "the rolled-back owner is passed");
                    answer("ok")
                }
                "KvCheckTxnStatus" => resp::check_txn_status().rolled_back(),
                _ => resp::resolve_lock().ok(),
            }
        }
        Effect::Spawn { .. } | Effect::Sleep { .. } => Outcome::Slept,
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(out.unwrap().len(), 1);
    assert_eq!(sent, 2);
}

#[test]
fn other_errors_fail_and_unbounded_ranges_are_refused() {
    let mut h = harness();
    let out = h.run(cop(&[("a", "b")]), |_| {
        Outcome::Response(Box::new(TikvResponse::Coprocessor(copr::Response {
            other_error: "unsupported tp 105".into(),
            ..Default::default()
        })))
    });
    let err = out.unwrap_err().to_string();
    assert!(
        err.contains("unsupported tp") && err.contains("region 1"),
        "{err}"
    );
    assert!(
        Coprocessor::new(
            105,
            Default::default(),
            Timestamp::from_u64(1),
            vec![KeyRange::new("a", "")]
        )
        .is_err()
    );
}
