//! Table tests of the multi-region plans: what each sends, to which store and region, and how
//! it follows region errors, transport failures and PD.

use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::*;
use crate::error::Delivery;
use crate::machine::{Effect, Machine};
use crate::region::RegionEpoch;
use crate::testing::resp::{self, Sent, keys};
use crate::testing::{Harness, region};

// --- construction (one place, so the machines' constructors can change under the tests) ---
// The machines retry within the harness's budget (`Harness::backoff`, 20 s).

fn single(
    key: &str,
    request: TikvRequest,
    options: RpcOptions,
) -> impl Machine<Output = Result<TikvResponse, Error>> {
    SingleKey::new(key.into(), request, options)
}

/// What a `MultiKey` of [`SizedKeys`] returns: each batch's items with its reply.
type Batches = Result<Vec<(Vec<(Key, usize)>, TikvResponse)>, Error>;

fn multi(items: Vec<(Key, usize)>, limits: BatchLimits) -> impl Machine<Output = Batches> {
    MultiKey::new(SizedKeys, items, limits, RpcOptions::READ)
}

fn walk(
    range: KeyRange,
    reverse: bool,
    stop_after: usize,
) -> impl Machine<Output = Result<Visited, Error>> {
    let plan = Visit {
        reverse,
        stop_after,
        visited: Visited::default(),
    };
    RangeWalk::new(plan, range, reverse, RpcOptions::READ)
}

// --- plans under test ---

/// Batch plan: `RawBatchGet` of keys with a scripted size each.
#[derive(Debug)]
struct SizedKeys;

impl BatchPlan for SizedKeys {
    type Item = (Key, usize);
    fn key(item: &Self::Item) -> &Key {
        &item.0
    }
    fn size(item: &Self::Item) -> usize {
        item.1
    }
    fn build(&self, items: &[Self::Item]) -> TikvRequest {
        TikvRequest::RawBatchGet(kvrpcpb::RawBatchGetRequest {
            keys: items.iter().map(|(k, _)| k.to_bytes()).collect(),
            ..Default::default()
        })
    }
}

/// Range plan: `RawScan` of each region's part; records what it visited.
#[derive(Debug)]
struct Visit {
    reverse: bool,
    stop_after: usize,
    visited: Visited,
}

#[derive(Debug, Default, PartialEq)]
struct Visited {
    /// Region ids, in visiting order.
    regions: Vec<u64>,
    /// The parts requested, as (start, end).
    parts: Vec<(Key, Key)>,
}

impl RangePlan for Visit {
    type Output = Visited;
    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        self.visited
            .parts
            .push((part.start().clone(), part.end().clone()));
        TikvRequest::RawScan(kvrpcpb::RawScanRequest {
            start_key: part.start().to_bytes(),
            end_key: part.end().to_bytes(),
            reverse: self.reverse,
            ..Default::default()
        })
    }
    fn absorb(&mut self, region: &Region, _response: TikvResponse) -> Result<bool, Error> {
        self.visited.regions.push(region.id);
        Ok(self.visited.regions.len() < self.stop_after)
    }
    fn finish(self) -> Visited {
        self.visited
    }
}

// --- helpers ---

fn raw_get(key: &str) -> TikvRequest {
    TikvRequest::RawGet(kvrpcpb::RawGetRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    })
}

fn raw_value(out: &Result<TikvResponse, Error>) -> &[u8] {
    match out {
        Ok(TikvResponse::RawGet(r)) => &r.value,
        other => panic!("expected a RawGet reply, got {other:?}"),
    }
}

fn value(v: &str) -> Outcome {
    resp::raw_get()
        .with(|r| r.value = Bytes::copy_from_slice(v.as_bytes()))
        .ok()
}

/// `region` at epoch version `version`.
fn at_version(mut r: Region, version: u64) -> Region {
    r.epoch = RegionEpoch {
        conf_ver: 1,
        version,
    };
    r
}

fn items(spec: &[(&str, usize)]) -> Vec<(Key, usize)> {
    spec.iter().map(|(k, s)| (Key::from(*k), *s)).collect()
}

fn limits(max_items: usize, max_bytes: usize) -> BatchLimits {
    BatchLimits {
        max_items,
        max_bytes,
    }
}

/// (store, region, keys) of every RPC sent.
fn routes(sent: &[Sent]) -> Vec<(u64, u64, Vec<Key>)> {
    sent.iter()
        .map(|s| (s.store, s.region, s.keys.clone()))
        .collect()
}

fn key_sets<I>(out: &[(Vec<(Key, usize)>, I)]) -> Vec<Vec<Key>> {
    let mut sets: Vec<Vec<Key>> = out
        .iter()
        .map(|(items, _)| items.iter().map(|(k, _)| k.clone()).collect())
        .collect();
    sets.sort();
    sets
}

// --- SingleKey ---

#[test]
fn single_key_locates_then_sends_to_the_leader_with_the_region_context() {
    let mut h = Harness::new(1).with_stores(3);
    let r = region(4, "a", "m", &[2, 1, 3]);
    let pd = [r.clone()];
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Locate { query, .. } => {
            assert_eq!(*query, LocateQuery::Key("k".into()));
            resp::locate(&pd, query)
        }
        Effect::Rpc { .. } => value("v"),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    assert_eq!(resp::kinds(&h.effects), ["Locate", "RawGet"]);
    let sent = resp::sent(&h.effects);
    assert_eq!((sent[0].store, sent[0].region, sent[0].version), (2, 4, 1));
    assert_eq!(h.regions.len(), 1, "PD's answer is cached");
}

#[test]
fn single_key_with_a_cached_region_never_asks_pd() {
    let mut h = Harness::new(1).with_stores(1);
    h.cache(region(1, "", "", &[1]));
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Rpc { .. } => value("v"),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    assert_eq!(resp::kinds(&h.effects), ["RawGet"]);
}

#[test]
fn single_key_not_leader_naming_a_peer_retries_that_store_at_once() {
    let mut h = Harness::new(1).with_stores(3);
    let r = region(7, "", "", &[1, 2, 3]);
    h.cache(r.clone());
    let new_leader = r.peer_on_store(3);
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Rpc { store_id: 1, .. } => {
            resp::raw_get().region_error(resp::not_leader(7, new_leader))
        }
        Effect::Rpc { store_id: 3, .. } => value("v"),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    let stores: Vec<u64> = resp::sent(&h.effects).iter().map(|s| s.store).collect();
    assert_eq!(stores, [1, 3]);
    assert_eq!(
        h.slept(),
        Duration::ZERO,
        "a named leader is retried without sleeping"
    );
    assert_eq!(
        h.regions.peek_by_id(7).unwrap().leader,
        new_leader,
        "the cache learns it"
    );
}

#[test]
fn single_key_not_leader_without_a_leader_backs_off_then_asks_the_next_replica() {
    let mut h = Harness::new(1).with_stores(3);
    h.cache(region(7, "", "", &[1, 2, 3]));
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Rpc { store_id: 1, .. } => resp::raw_get().region_error(resp::not_leader(7, None)),
        Effect::Rpc { store_id: 2, .. } => value("v"),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    assert_eq!(resp::kinds(&h.effects), ["RawGet", "Sleep", "RawGet"]);
    let stores: Vec<u64> = resp::sent(&h.effects).iter().map(|s| s.store).collect();
    assert_eq!(stores, [1, 2]);
}

#[test]
fn single_key_epoch_not_match_resends_to_the_new_region_without_pd() {
    let mut h = Harness::new(1).with_stores(1);
    h.cache(region(1, "a", "z", &[1]));
    let left = at_version(region(1, "a", "m", &[1]), 2);
    let right = at_version(region(2, "m", "z", &[1]), 2);
    let split = [left, right];
    let out = h.run(single("p", raw_get("p"), RpcOptions::READ), |e| match e {
        Effect::Rpc { request, .. } => match Sent::of(e).unwrap().region {
            1 => resp::region_error_for(request, resp::epoch_not_match(&split)),
            _ => value("v"),
        },
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    let sent = resp::sent(&h.effects);
    assert_eq!(
        sent.iter()
            .map(|s| (s.region, s.version))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)],
        "the key moved to the right half of the split"
    );
    assert_eq!(
        resp::kinds(&h.effects),
        ["RawGet", "RawGet"],
        "no PD lookup, no sleep"
    );
}

#[test]
fn single_key_region_not_found_drops_the_region_backs_off_and_asks_pd() {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "", &[1]));
    let moved = [region(9, "", "", &[2])];
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Rpc { store_id: 1, .. } => resp::raw_get().region_error(resp::region_not_found(1)),
        Effect::Rpc { store_id: 2, .. } => value("v"),
        Effect::Locate { query, .. } => resp::locate(&moved, query),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    assert_eq!(
        resp::kinds(&h.effects),
        ["RawGet", "Sleep", "Locate", "RawGet"]
    );
    assert_eq!(resp::sent(&h.effects)[1].region, 9);
}

#[test]
fn single_key_busy_or_stale_command_backs_off_and_resends_to_the_same_region() {
    for (name, error, min_sleep) in [
        (
            "server busy",
            resp::server_busy(),
            Duration::from_millis(1000),
        ),
        (
            "stale command",
            resp::stale_command(),
            Duration::from_millis(1),
        ),
    ] {
        let mut h = Harness::new(1).with_stores(1);
        h.cache(region(1, "", "", &[1]));
        let mut calls = 0;
        let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |_| {
            calls += 1;
            if calls == 1 {
                resp::raw_get().region_error(error.clone())
            } else {
                value("v")
            }
        });
        assert_eq!(raw_value(&out), b"v", "{name}");
        assert_eq!(
            resp::kinds(&h.effects),
            ["RawGet", "Sleep", "RawGet"],
            "{name}"
        );
        let sent = resp::sent(&h.effects);
        assert_eq!((sent[1].store, sent[1].region), (1, 1), "{name}");
        assert!(h.slept() >= min_sleep, "{name}: slept {:?}", h.slept());
    }
}

#[test]
fn single_key_not_sent_failure_backs_off_and_tries_another_replica() {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "", &[1, 2]));
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Rpc { store_id: 1, .. } => resp::rpc_failed(Delivery::NotSent),
        Effect::Rpc { store_id: 2, .. } => value("v"),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(raw_value(&out), b"v");
    assert_eq!(resp::kinds(&h.effects), ["RawGet", "Sleep", "RawGet"]);
    assert!(
        matches!(h.stores.lookup(1), crate::store_cache::StoreLookup::Unknown),
        "a store that refused the connection is resolved again next time"
    );
}

#[test]
fn single_key_maybe_delivered_is_undetermined_for_writes_and_retried_for_reads() {
    // A non-idempotent request whose reply was lost: never resent.
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "", &[1, 2]));
    let cas = TikvRequest::RawCompareAndSwap(kvrpcpb::RawCasRequest {
        key: "k".into(),
        ..Default::default()
    });
    let write = RpcOptions {
        idempotent: false,
        max_execution: None,
        timeout: None,
    };
    let out = h.run(single("k", cas, write), |_| {
        resp::rpc_failed(Delivery::MaybeDelivered)
    });
    assert!(
        matches!(
            out,
            Err(Error::Undetermined {
                operation: "RawCompareAndSwap",
                ..
            })
        ),
        "{out:?}"
    );
    assert_eq!(resp::kinds(&h.effects), ["RawCompareAndSwap"]);

    // A read: retried on the other replica.
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "", &[1, 2]));
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Rpc { store_id: 1, .. } => resp::rpc_failed(Delivery::MaybeDelivered),
        _ => value("v"),
    });
    assert_eq!(raw_value(&out), b"v");
    let stores: Vec<u64> = resp::sent(&h.effects).iter().map(|s| s.store).collect();
    assert_eq!(stores, [1, 2]);
}

#[test]
fn single_key_undetermined_result_and_unfixable_region_errors_fail() {
    let mut h = Harness::new(1).with_stores(1);
    h.cache(region(1, "", "", &[1]));
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |_| {
        resp::raw_get().region_error(resp::undetermined_result())
    });
    assert!(matches!(out, Err(Error::Undetermined { .. })), "{out:?}");

    let mut h = Harness::new(1).with_stores(1);
    h.cache(region(1, "", "", &[1]));
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |_| {
        resp::raw_get().region_error(resp::raft_entry_too_large())
    });
    assert!(
        matches!(out, Err(Error::Region { ref region, .. }) if region.id == 1),
        "{out:?}"
    );
    assert_eq!(resp::kinds(&h.effects), ["RawGet"], "not retried");
}

#[test]
fn single_key_pd_failure_backs_off_then_locates_again() {
    let mut h = Harness::new(1).with_stores(1);
    let pd = [region(1, "", "", &[1])];
    let mut asks = 0;
    let out = h.run(single("k", raw_get("k"), RpcOptions::READ), |e| match e {
        Effect::Locate { query, .. } => {
            asks += 1;
            if asks == 1 {
                resp::pd_failed()
            } else {
                resp::locate(&pd, query)
            }
        }
        _ => value("v"),
    });
    assert_eq!(raw_value(&out), b"v");
    assert_eq!(
        resp::kinds(&h.effects),
        ["Locate", "Sleep", "Locate", "RawGet"]
    );
    assert!(
        h.slept() >= Duration::from_millis(250),
        "pdRPC backoff starts at 500 ms (equal jitter)"
    );
}

// --- MultiKey ---

/// Two regions split at "m": `[, m)` on store 1, `[m, )` on store 2.
fn two_regions(h: &mut Harness) {
    h.cache(region(1, "", "m", &[1]));
    h.cache(region(2, "m", "", &[2]));
}

#[test]
fn multi_key_groups_items_by_region_one_request_each() {
    let mut h = Harness::new(1).with_stores(2);
    two_regions(&mut h);
    let m = multi(
        items(&[("a", 1), ("x", 1), ("b", 1), ("n", 1)]),
        limits(100, 1000),
    );
    let out = h.run(m, |e| match e {
        Effect::Rpc { .. } => resp::raw_batch_get().ok(),
        other => panic!("unexpected {other:?}"),
    });
    let out = out.unwrap();
    assert_eq!(key_sets(&out), [keys(&["a", "b"]), keys(&["x", "n"])]);
    let mut r = routes(&resp::sent(&h.effects));
    r.sort();
    assert_eq!(r, [(1, 1, keys(&["a", "b"])), (2, 2, keys(&["x", "n"]))]);
}

#[test]
fn multi_key_splits_a_region_batch_by_item_count() {
    let mut h = Harness::new(1).with_stores(1);
    h.cache(region(1, "", "", &[1]));
    let m = multi(
        items(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]),
        limits(2, 1000),
    );
    let out = h.run(m, |_| resp::raw_batch_get().ok()).unwrap();
    assert_eq!(out.len(), 3);
    let batches: Vec<Vec<Key>> = resp::sent(&h.effects).into_iter().map(|s| s.keys).collect();
    assert_eq!(
        batches,
        [keys(&["a", "b"]), keys(&["c", "d"]), keys(&["e"])]
    );
}

#[test]
fn multi_key_closes_a_batch_once_it_reaches_the_byte_limit() {
    let mut h = Harness::new(1).with_stores(1);
    h.cache(region(1, "", "", &[1]));
    // 4 + 4 + 4 reaches 10: the batch closes after the item that crossed the limit; an
    // oversized item travels alone.
    let m = multi(
        items(&[("a", 4), ("b", 4), ("c", 4), ("d", 4), ("e", 25), ("f", 1)]),
        limits(100, 10),
    );
    h.run(m, |_| resp::raw_batch_get().ok()).unwrap();
    let batches: Vec<Vec<Key>> = resp::sent(&h.effects).into_iter().map(|s| s.keys).collect();
    assert_eq!(
        batches,
        [keys(&["a", "b", "c"]), keys(&["d", "e"]), keys(&["f"])]
    );
}

#[test]
fn multi_key_locates_each_uncached_region_once() {
    let mut h = Harness::new(1).with_stores(2);
    let pd = [region(1, "", "m", &[1]), region(2, "m", "", &[2])];
    let m = multi(
        items(&[("a", 1), ("b", 1), ("n", 1), ("x", 1)]),
        limits(100, 1000),
    );
    let out = h.run(m, |e| match e {
        Effect::Locate { query, .. } => resp::locate(&pd, query),
        Effect::Rpc { .. } => resp::raw_batch_get().ok(),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(
        key_sets(&out.unwrap()),
        [keys(&["a", "b"]), keys(&["n", "x"])]
    );
    let kinds = resp::kinds(&h.effects);
    assert_eq!(
        kinds.iter().filter(|k| **k == "Locate").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "RawBatchGet").count(),
        2,
        "{kinds:?}"
    );
}

#[test]
fn multi_key_epoch_not_match_reroutes_only_the_failed_batch() {
    let mut h = Harness::new(1).with_stores(2);
    two_regions(&mut h);
    // Region 2 split at "t" while the batch was on its way.
    let split = [
        at_version(region(2, "m", "t", &[2]), 2),
        at_version(region(3, "t", "", &[2]), 2),
    ];
    let m = multi(
        items(&[("a", 1), ("c", 1), ("n", 1), ("x", 1)]),
        limits(100, 1000),
    );
    let out = h.run(m, |e| match e {
        Effect::Rpc { request, .. }
            if Sent::of(e).unwrap().version == 1 && Sent::of(e).unwrap().region == 2 =>
        {
            resp::region_error_for(request, resp::epoch_not_match(&split))
        }
        Effect::Rpc { .. } => resp::raw_batch_get().ok(),
        other => panic!("unexpected {other:?}"),
    });
    let out = out.unwrap();
    assert_eq!(
        key_sets(&out),
        [keys(&["a", "c"]), keys(&["n"]), keys(&["x"])],
        "every item answered exactly once"
    );
    let sent = routes(&resp::sent(&h.effects));
    assert_eq!(
        sent.iter().filter(|(_, region, _)| *region == 1).count(),
        1,
        "the healthy region's batch is not resent: {sent:?}"
    );
    assert!(sent.contains(&(2, 2, keys(&["n"]))), "{sent:?}");
    assert!(sent.contains(&(2, 3, keys(&["x"]))), "{sent:?}");
    assert!(
        !resp::kinds(&h.effects).contains(&"Locate"),
        "the split came with the error"
    );
}

#[test]
fn multi_key_one_failing_batch_fails_the_operation() {
    let mut h = Harness::new(1).with_stores(2);
    two_regions(&mut h);
    let m = multi(items(&[("a", 1), ("x", 1)]), limits(100, 1000));
    let out = h.run(m, |e| match e {
        Effect::Rpc { store_id: 2, .. } => {
            resp::raw_batch_get().region_error(resp::raft_entry_too_large())
        }
        Effect::Rpc { .. } => resp::raw_batch_get().ok(),
        other => panic!("unexpected {other:?}"),
    });
    match out {
        Err(Error::Region { region, message }) => {
            assert_eq!(region.id, 2);
            assert!(message.contains("raft entry too large"), "{message}");
        }
        other => panic!("expected the region error, got {other:?}"),
    }
}

#[test]
fn multi_key_not_leader_in_one_batch_retries_only_that_batch_on_the_new_leader() {
    let mut h = Harness::new(1).with_stores(3);
    h.cache(region(1, "", "m", &[1]));
    let r2 = region(2, "m", "", &[2, 3]);
    h.cache(r2.clone());
    let leader = r2.peer_on_store(3);
    let m = multi(items(&[("a", 1), ("x", 1)]), limits(100, 1000));
    let out = h.run(m, |e| match e {
        Effect::Rpc { store_id: 2, .. } => {
            resp::raw_batch_get().region_error(resp::not_leader(2, leader))
        }
        Effect::Rpc { .. } => resp::raw_batch_get().ok(),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(key_sets(&out.unwrap()), [keys(&["a"]), keys(&["x"])]);
    let stores: Vec<u64> = resp::sent(&h.effects).iter().map(|s| s.store).collect();
    assert_eq!(stores, [1, 2, 3]);
}

#[test]
fn multi_key_region_concurrency_bounds_requests_in_flight() {
    for (concurrency, in_flight) in [(16, 3), (1, 1)] {
        let setup = || {
            let mut h = Harness::new(1).with_stores(1);
            h.config.region_concurrency = concurrency;
            h.cache(region(1, "", "c", &[1]));
            h.cache(region(2, "c", "f", &[1]));
            h.cache(region(3, "f", "", &[1]));
            (
                h,
                multi(items(&[("a", 1), ("d", 1), ("g", 1)]), limits(100, 1000)),
            )
        };
        // Before any answer: how many requests are out at once.
        let (mut h, mut m) = setup();
        let mut cx = h.cx();
        let mut issued = 0;
        while let Step::Effect(_) = m.poll(&mut cx) {
            issued += 1;
        }
        assert_eq!(issued, in_flight, "concurrency {concurrency}");
        // And it still completes, a batch at a time.
        let (mut h, m) = setup();
        assert_eq!(h.run(m, |_| resp::raw_batch_get().ok()).unwrap().len(), 3);
    }
}

#[test]
fn multi_key_batches_share_one_backoff_budget() {
    let mut h = Harness::new(1).with_stores(2);
    two_regions(&mut h);
    let m = multi(items(&[("a", 1), ("x", 1)]), limits(100, 1000));
    let out = h.run(m, |_| {
        resp::raw_batch_get().region_error(resp::stale_command())
    });
    assert!(
        matches!(out, Err(Error::BackoffExhausted { .. })),
        "{out:?}"
    );
    let budget = crate::backoff::budget::RAWKV; // the harness's budget
    assert!(
        h.slept() >= budget && h.slept() <= budget + Duration::from_secs(2),
        "both batches slept against one {budget:?} budget, slept {:?}",
        h.slept()
    );
    let stores: Vec<u64> = resp::sent(&h.effects).iter().map(|s| s.store).collect();
    assert!(stores.contains(&1) && stores.contains(&2));
}

#[test]
fn multi_key_with_no_items_finishes_without_effects() {
    let mut h = Harness::new(1);
    let out = h.run(multi(vec![], limits(10, 10)), |e| {
        panic!("unexpected {e:?}")
    });
    assert!(out.unwrap().is_empty());
    assert!(h.effects.is_empty());
}

// --- RangeWalk ---

/// Three regions: `[, c)` on store 1, `[c, f)` on store 2, `[f, )` on store 3.
fn three_regions() -> Vec<Region> {
    vec![
        region(1, "", "c", &[1]),
        region(2, "c", "f", &[2]),
        region(3, "f", "", &[3]),
    ]
}

fn parts(spec: &[(&str, &str)]) -> Vec<(Key, Key)> {
    spec.iter()
        .map(|(s, e)| (Key::from(*s), Key::from(*e)))
        .collect()
}

#[test]
fn range_walk_forward_visits_regions_in_order_clipped_to_the_range() {
    let mut h = Harness::new(1).with_stores(3);
    let pd = three_regions();
    let out = h.run(
        walk(KeyRange::new("b", "g"), false, usize::MAX),
        |e| match e {
            Effect::Locate { query, .. } => resp::locate(&pd, query),
            Effect::Rpc { .. } => resp::raw_scan().ok(),
            other => panic!("unexpected {other:?}"),
        },
    );
    let visited = out.unwrap();
    assert_eq!(visited.regions, [1, 2, 3]);
    assert_eq!(visited.parts, parts(&[("b", "c"), ("c", "f"), ("f", "g")]));
    let stores: Vec<u64> = resp::sent(&h.effects).iter().map(|s| s.store).collect();
    assert_eq!(stores, [1, 2, 3]);
    let queries: Vec<LocateQuery> = h
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Locate { query, .. } => Some(query.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        queries,
        [
            LocateQuery::Key("b".into()),
            LocateQuery::Key("c".into()),
            LocateQuery::Key("f".into())
        ]
    );
}

#[test]
fn range_walk_reverse_visits_regions_from_the_end_by_end_key() {
    let mut h = Harness::new(1).with_stores(3);
    let pd = three_regions();
    let out = h.run(
        walk(KeyRange::new("b", "g"), true, usize::MAX),
        |e| match e {
            Effect::Locate { query, .. } => resp::locate(&pd, query),
            Effect::Rpc { .. } => resp::raw_scan().ok(),
            other => panic!("unexpected {other:?}"),
        },
    );
    let visited = out.unwrap();
    assert_eq!(visited.regions, [3, 2, 1]);
    assert_eq!(visited.parts, parts(&[("f", "g"), ("c", "f"), ("b", "c")]));
    let first = h.effects.iter().find_map(|e| match e {
        Effect::Locate { query, .. } => Some(query.clone()),
        _ => None,
    });
    // PD is asked for the region holding the end key itself (it does not start there).
    assert_eq!(first, Some(LocateQuery::Key("g".into())));
}

#[test]
fn range_walk_unbounded_range_ends_at_the_last_region() {
    for reverse in [false, true] {
        let mut h = Harness::new(1).with_stores(3);
        for r in three_regions() {
            h.cache(r);
        }
        let out = h.run(walk(KeyRange::all(), reverse, usize::MAX), |_| {
            resp::raw_scan().ok()
        });
        let mut visited = out.unwrap().regions;
        if reverse {
            visited.reverse();
        }
        assert_eq!(visited, [1, 2, 3], "reverse: {reverse}");
        assert_eq!(
            h.effects.len(),
            3,
            "one request per region, reverse: {reverse}"
        );
    }
}

#[test]
fn range_walk_stops_when_the_plan_has_enough() {
    let mut h = Harness::new(1).with_stores(3);
    for r in three_regions() {
        h.cache(r);
    }
    let out = h.run(walk(KeyRange::new("a", "z"), false, 1), |_| {
        resp::raw_scan().ok()
    });
    assert_eq!(out.unwrap().regions, [1]);
    assert_eq!(resp::kinds(&h.effects), ["RawScan"]);
}

#[test]
fn range_walk_relocates_mid_walk_and_resumes_at_the_cursor() {
    let mut h = Harness::new(1).with_stores(3);
    for r in three_regions() {
        h.cache(r);
    }
    // Region 2 split at "d" under the walk.
    let split = [
        at_version(region(2, "c", "d", &[2]), 2),
        at_version(region(4, "d", "f", &[2]), 2),
    ];
    let out = h.run(
        walk(KeyRange::new("b", "g"), false, usize::MAX),
        |e| match e {
            Effect::Rpc { request, .. } => {
                let s = Sent::of(e).unwrap();
                if (s.region, s.version) == (2, 1) {
                    resp::region_error_for(request, resp::epoch_not_match(&split))
                } else {
                    resp::raw_scan().ok()
                }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    let visited = out.unwrap();
    assert_eq!(
        visited.regions,
        [1, 2, 4, 3],
        "each key range absorbed exactly once"
    );
    let sent: Vec<(u64, u64, Vec<Key>)> = routes(&resp::sent(&h.effects));
    assert_eq!(
        sent.iter()
            .map(|(_, r, k)| (*r, k.clone()))
            .collect::<Vec<_>>(),
        [
            (1, keys(&["b", "c"])),
            (2, keys(&["c", "f"])),
            (2, keys(&["c", "d"])),
            (4, keys(&["d", "f"])),
            (3, keys(&["f", "g"])),
        ]
    );
}

#[test]
fn range_walk_reverse_region_not_found_asks_pd_for_the_region_below_the_cursor() {
    let mut h = Harness::new(1).with_stores(3);
    for r in three_regions() {
        h.cache(r);
    }
    let mut pd = three_regions();
    pd[1] = at_version(region(2, "c", "f", &[3]), 2);
    let mut asked = Vec::new();
    let out = h.run(
        walk(KeyRange::new("b", "g"), true, usize::MAX),
        |e| match e {
            Effect::Rpc { store_id: 2, .. } => {
                resp::raw_scan().region_error(resp::region_not_found(2))
            }
            Effect::Rpc { .. } => resp::raw_scan().ok(),
            Effect::Locate { query, .. } => {
                asked.push(query.clone());
                resp::locate(&pd, query)
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    // "f" starts its region, so the keys below it are in the previous one.
    assert_eq!(
        asked,
        [
            LocateQuery::Key("f".into()),
            LocateQuery::Before("f".into())
        ]
    );
    assert_eq!(out.unwrap().regions, [3, 2, 1]);
    assert_eq!(
        resp::kinds(&h.effects),
        [
            "RawScan", "RawScan", "Sleep", "Locate", "Locate", "RawScan", "RawScan"
        ]
    );
    let s = &resp::sent(&h.effects)[2];
    assert_eq!(
        (s.store, s.region, s.version),
        (3, 2, 2),
        "resent where PD says region 2 is now"
    );
}

#[test]
fn range_walk_fails_when_a_region_fails() {
    let mut h = Harness::new(1).with_stores(3);
    for r in three_regions() {
        h.cache(r);
    }
    let out = h.run(
        walk(KeyRange::new("a", "z"), false, usize::MAX),
        |e| match e {
            Effect::Rpc { store_id: 2, .. } => {
                resp::raw_scan().region_error(resp::raft_entry_too_large())
            }
            _ => resp::raw_scan().ok(),
        },
    );
    assert!(
        matches!(out, Err(Error::Region { ref region, .. }) if region.id == 2),
        "{out:?}"
    );
    assert_eq!(
        resp::kinds(&h.effects),
        ["RawScan", "RawScan"],
        "region 3 is never asked"
    );
}
