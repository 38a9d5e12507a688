//! `DeleteRange` region by region, `DestroyRange` on every store.

use tikv_proto::kvrpcpb;

use super::*;
use crate::error::Delivery;
use crate::region::StoreState;
use crate::testing::resp::{self, Sent};
use crate::testing::{Harness, region};

fn harness() -> Harness {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "m", &[1]));
    h.cache(region(2, "m", "", &[2]));
    h
}

fn store(id: u64, state: StoreState) -> Store {
    Store {
        id,
        address: format!("store-{id}"),
        labels: vec![],
        state,
    }
}

#[test]
fn delete_range_sends_each_regions_part() {
    let mut h = harness();
    let out = h.run(delete_range(KeyRange::new("c", "x"), true), |e| {
        let sent = Sent::of(e).expect("only RPCs");
        let TikvRequest::KvDeleteRange(r) = &sent.request else {
            panic!("unexpected {:?}", sent.request);
        };
        assert!(r.notify_only);
        resp::Resp(kvrpcpb::DeleteRangeResponse::default()).ok()
    });
    assert_eq!(out.unwrap(), 2, "two regions done");
    let parts: Vec<(u64, String, String)> = resp::sent(&h.effects)
        .iter()
        .map(|s| match &s.request {
            TikvRequest::KvDeleteRange(r) => (
                s.region,
                String::from_utf8_lossy(&r.start_key).into_owned(),
                String::from_utf8_lossy(&r.end_key).into_owned(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        parts,
        [
            (1, "c".to_string(), "m".to_string()),
            (2, "m".to_string(), "x".to_string())
        ]
    );
}

#[test]
fn delete_range_fails_on_a_storage_error() {
    let mut h = harness();
    let out = h.run(delete_range(KeyRange::new("c", "d"), false), |_| {
        resp::Resp(kvrpcpb::DeleteRangeResponse {
            error: "engine: disk full".into(),
            ..Default::default()
        })
        .ok()
    });
    let err = out.unwrap_err().to_string();
    assert!(
        err.contains("disk full") && err.contains("region 1"),
        "{err}"
    );
}

#[test]
fn destroy_range_asks_every_live_store_and_names_the_failures() {
    let mut h = harness();
    let stores = vec![
        store(1, StoreState::Up),
        store(2, StoreState::Offline),
        store(3, StoreState::Tombstone),
        store(4, StoreState::Up),
    ];
    let m = DestroyRange::new(KeyRange::new("a", "b"), stores).unwrap();
    let out = h.run(m, |e| {
        let Effect::Rpc {
            store_id, request, ..
        } = e
        else {
            panic!("unexpected {e:?}");
        };
        assert!(matches!(**request, TikvRequest::UnsafeDestroyRange(_)));
        match store_id {
            2 => Outcome::RpcFailed {
                delivery: Delivery::NotSent,
                error: Error::Cancelled("connection refused".into()),
            },
            4 => resp::Resp(kvrpcpb::UnsafeDestroyRangeResponse {
                error: "io error".into(),
                ..Default::default()
            })
            .ok(),
            _ => resp::Resp(kvrpcpb::UnsafeDestroyRangeResponse::default()).ok(),
        }
    });
    let err = out.unwrap_err().to_string();
    assert!(
        err.contains("store 2: ") && err.contains("store 4: io error"),
        "{err}"
    );
    assert!(
        !err.contains("store 1:") && !err.contains("store 3"),
        "{err}"
    );
    assert_eq!(
        resp::kinds(&h.effects).len(),
        3,
        "no request to the tombstone"
    );
}

#[test]
fn destroy_range_refuses_unbounded_ranges() {
    assert!(DestroyRange::new(KeyRange::new("", "b"), vec![]).is_err());
    assert!(DestroyRange::new(KeyRange::new("a", ""), vec![]).is_err());
    assert!(DestroyRange::new(KeyRange::new("b", "a"), vec![]).is_err());
}
