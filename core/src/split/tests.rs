//! `SplitRegions` and the scatter-progress rule.

use tikv_proto::{kvrpcpb, metapb, pdpb};

use super::*;
use crate::machine::{Effect, Outcome};
use crate::testing::resp::{self, Sent};
use crate::testing::{Harness, region};

/// Two cached regions split at "m": `[, m)` on store 1, `[m, )` on store 2.
fn harness() -> Harness {
    let mut h = Harness::new(1).with_stores(2);
    h.cache(region(1, "", "m", &[1]));
    h.cache(region(2, "m", "", &[2]));
    h
}

/// TiKV's answer to a split of `sent`: one new region per key (ids from `next_id`), then the
/// original.
fn split_reply(sent: &Sent, next_id: &mut u64) -> Outcome {
    let r = match &sent.request {
        TikvRequest::SplitRegion(r) => r.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let mut regions: Vec<metapb::Region> = r
        .split_keys
        .iter()
        .map(|_| {
            *next_id += 1;
            metapb::Region {
                id: *next_id,
                ..Default::default()
            }
        })
        .collect();
    regions.push(metapb::Region {
        id: sent.region,
        ..Default::default()
    });
    resp::Resp(kvrpcpb::SplitRegionResponse {
        regions,
        ..Default::default()
    })
    .ok()
}

fn keys(ks: &[&str]) -> Vec<Key> {
    ks.iter().map(|k| Key::from(k.to_string())).collect()
}

#[test]
fn keys_are_split_where_they_route_and_region_starts_are_skipped() {
    let mut h = harness();
    let mut next_id = 100;
    let out = h.run(
        SplitRegions::new(keys(&["x", "c", "m", "a", "c"]), false),
        |e| match e {
            Effect::Rpc { .. } => split_reply(&Sent::of(e).expect("an RPC"), &mut next_id),
            other => panic!("unexpected {other:?}"),
        },
    );
    let mut ids = out.unwrap();
    ids.sort();
    assert_eq!(
        ids,
        [101, 102, 103],
        "one new region per key that needed a split"
    );
    let mut sent: Vec<(u64, Vec<Key>)> = resp::sent(&h.effects)
        .into_iter()
        .map(|s| (s.region, s.keys))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [(1, keys(&["a", "c"])), (2, keys(&["x"]))],
        "'m' starts region 2; 'c' is asked once"
    );
}

#[test]
fn a_stale_region_regroups_its_keys() {
    let mut h = harness();
    let mut next_id = 100;
    let mut first = true;
    let out = h.run(SplitRegions::new(keys(&["c", "g"]), false), |e| match e {
        Effect::Rpc { .. } => {
            let sent = Sent::of(e).expect("an RPC");
            if first {
                first = false;
                // Region 1 was split at "e" meanwhile.
                let mut left = region(1, "", "e", &[1]);
                let mut right = region(3, "e", "m", &[1]);
                left.epoch.version += 1;
                right.epoch.version += 1;
                return resp::Resp(kvrpcpb::SplitRegionResponse::default())
                    .region_error(resp::epoch_not_match(&[left, right]));
            }
            split_reply(&sent, &mut next_id)
        }
        Effect::Sleep { .. } => Outcome::Slept,
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(out.unwrap().len(), 2);
    let regions: Vec<u64> = resp::sent(&h.effects)
        .iter()
        .skip(1)
        .map(|s| s.region)
        .collect();
    let mut regions = regions;
    regions.sort();
    assert_eq!(
        regions,
        [1, 3],
        "the keys went to the regions now holding them"
    );
}

#[test]
fn only_a_running_scatter_operator_is_running() {
    let op = |desc: &str, status: pdpb::OperatorStatus| pdpb::GetOperatorResponse {
        desc: desc.as_bytes().to_vec().into(),
        status: status as i32,
        ..Default::default()
    };
    use pdpb::OperatorStatus as S;
    assert_eq!(
        scatter_progress(&op("scatter-region", S::Running)),
        ScatterProgress::Running
    );
    for status in [S::Success, S::Timeout, S::Cancel, S::Replace] {
        assert_eq!(
            scatter_progress(&op("scatter-region", status)),
            ScatterProgress::Finished
        );
    }
    assert_eq!(
        scatter_progress(&op("balance-leader", S::Running)),
        ScatterProgress::Finished
    );
}
