//! Tests of split, scatter and operator status.

use std::collections::BTreeSet;

use bytes::Bytes;
use tikv_proto::pdpb::{self, pd_service as p};

use crate::error::Code;
use crate::test_util::{Harness, NOW, b};
use crate::{ApiMode, Cluster, ClusterConfig};

fn header(c: &Cluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: c.cluster_id(),
        ..Default::default()
    })
}

fn split(c: &mut Cluster, keys: &[&str]) -> pdpb::SplitRegionsResponse {
    let req = pdpb::SplitRegionsRequest {
        header: header(c),
        split_keys: keys.iter().map(|k| b(k)).collect(),
        retry_limit: 0,
    };
    c.pd::<p::SplitRegions>(req, NOW).unwrap()
}

fn scatter(
    c: &mut Cluster,
    ids: Vec<u64>,
    group: &str,
) -> Result<pdpb::ScatterRegionResponse, crate::MockError> {
    let req = pdpb::ScatterRegionRequest {
        header: header(c),
        regions_id: ids,
        group: group.into(),
        ..Default::default()
    };
    c.pd::<p::ScatterRegion>(req, NOW)
}

fn operator(c: &mut Cluster, region_id: u64, now: u64) -> pdpb::GetOperatorResponse {
    let req = pdpb::GetOperatorRequest {
        header: header(c),
        region_id,
    };
    c.pd::<p::GetOperator>(req, now).unwrap()
}

/// Six stores, three replicas: room for a scatter to move peers.
fn wide(seed: u64) -> Cluster {
    Cluster::new(ClusterConfig {
        stores: 6,
        api: ApiMode::V1Ttl,
        seed,
        ..Default::default()
    })
}

fn placement(c: &Cluster, region_id: u64) -> (BTreeSet<u64>, u64) {
    let r = c.topology().region(region_id).unwrap();
    (
        r.meta.peers.iter().map(|p| p.store_id).collect(),
        r.leader().unwrap().store_id,
    )
}

#[test]
fn split_regions_returns_regions_starting_at_the_keys() {
    let mut h = Harness::v1();
    let r = split(&mut h.c, &["m", "c", "m"]);
    assert_eq!(r.finished_percentage, 100);
    let starts: Vec<Bytes> = r
        .regions_id
        .iter()
        .map(|id| h.c.topology().region(*id).unwrap().meta.start_key.clone())
        .collect();
    assert_eq!(starts, vec![b("c"), b("m")]);
    assert_eq!(h.c.topology().regions().count(), 3);
    // The split region's operator is recorded as done.
    let op = operator(&mut h.c, r.regions_id[1], NOW);
    assert_eq!(op.desc, b("region-splitter"));
    assert_eq!(op.status, pdpb::OperatorStatus::Success as i32);
}

#[test]
fn keys_at_existing_boundaries_count_as_unprocessed() {
    let mut h = Harness::v1();
    h.split("m");
    let r = split(&mut h.c, &["m", "x", "", "q"]);
    // "m" and "" already start regions: 2 of 4 keys unprocessed.
    assert_eq!(r.finished_percentage, 50);
    assert_eq!(r.regions_id.len(), 2);
    let r = split(&mut h.c, &[]);
    assert_eq!((r.finished_percentage, r.regions_id), (0, Vec::new()));
}

#[test]
fn scatter_runs_then_succeeds_and_moves_the_region() {
    let mut c = wide(7);
    let region = c.topology().regions().next().unwrap().id();
    let before = placement(&c, region);
    let r = scatter(&mut c, vec![region], "g").unwrap();
    assert_eq!(r.finished_percentage, 100);
    assert!(r.failed_regions_id.is_empty());
    // Nothing moves until the operator completes.
    assert_eq!(placement(&c, region), before);
    let op = operator(&mut c, region, NOW);
    assert_eq!(op.status, pdpb::OperatorStatus::Running as i32);
    assert_eq!(op.desc, b("scatter-region"));
    assert_eq!(op.region_id, region);
    let op = operator(&mut c, region, NOW + 1);
    assert_eq!(op.status, pdpb::OperatorStatus::Success as i32);
    let after = placement(&c, region);
    assert_ne!(after, before);
    assert_eq!(after.0.len(), 3);
    assert!(after.0.contains(&after.1));
    // The record stays ten minutes, then is gone.
    let op = operator(&mut c, region, NOW + 1 + 600_000);
    assert_eq!(op.status, pdpb::OperatorStatus::Success as i32);
    let op = operator(&mut c, region, NOW + 2 + 600_000);
    let err = op.header.unwrap().error.unwrap();
    assert_eq!(
        (err.r#type, err.message.as_str()),
        (pdpb::ErrorType::RegionNotFound as i32, "Not Found")
    );
}

#[test]
fn scatter_is_reproducible_from_the_seed() {
    let run = |seed: u64| {
        let mut c = wide(seed);
        split(&mut c, &["b", "d", "f", "h"]);
        let ids: Vec<u64> = c.topology().regions().map(|r| r.id()).collect();
        scatter(&mut c, ids.clone(), "").unwrap();
        c.finish_operators(NOW);
        ids.iter().map(|&id| placement(&c, id)).collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn a_region_changed_under_a_running_scatter_cancels_it() {
    let mut c = wide(3);
    let region = c.topology().regions().next().unwrap().id();
    scatter(&mut c, vec![region], "").unwrap();
    c.split_at(b"k").unwrap();
    c.finish_operators(NOW);
    let op = operator(&mut c, region, NOW);
    assert_eq!(op.status, pdpb::OperatorStatus::Cancel as i32);
}

#[test]
fn missing_regions_fail_scatter_as_pd_reports_them() {
    let mut c = wide(3);
    let region = c.topology().regions().next().unwrap().id();
    let r = scatter(&mut c, vec![region, 999], "").unwrap();
    assert_eq!(
        (r.finished_percentage, r.failed_regions_id),
        (50, vec![999])
    );
    let e = scatter(&mut c, vec![999], "").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            Code::Unknown,
            "[PD:region:ErrRegionNotFound]region %v not found"
        )
    );
    // The deprecated single-region form answers with a header.
    let req = pdpb::ScatterRegionRequest {
        header: header(&c),
        region_id: 999,
        ..Default::default()
    };
    let r = c.pd::<p::ScatterRegion>(req, NOW).unwrap();
    let err = r.header.unwrap().error.unwrap();
    assert_eq!(err.r#type, pdpb::ErrorType::RegionNotFound as i32);
    assert_eq!(err.message, "region %d not found");
    let op = operator(&mut c, 999, NOW);
    assert!(op.header.unwrap().error.is_some());
}

#[test]
fn operators_can_apply_at_creation() {
    let mut c = Cluster::new(ClusterConfig {
        stores: 6,
        operator_running_polls: 0,
        ..Default::default()
    });
    let region = c.topology().regions().next().unwrap().id();
    let req = pdpb::ScatterRegionRequest {
        header: header(&c),
        region_id: region,
        ..Default::default()
    };
    let before = placement(&c, region);
    assert_eq!(
        c.pd::<p::ScatterRegion>(req, NOW)
            .unwrap()
            .finished_percentage,
        100
    );
    assert_ne!(placement(&c, region), before);
    let op = operator(&mut c, region, NOW);
    assert_eq!(op.status, pdpb::OperatorStatus::Success as i32);
}

#[test]
fn split_and_scatter_scatters_the_new_regions() {
    let mut c = wide(11);
    let req = pdpb::SplitAndScatterRegionsRequest {
        header: header(&c),
        split_keys: vec![b("g"), b("p")],
        group: "grp".into(),
        retry_limit: 0,
    };
    let r = c.pd::<p::SplitAndScatterRegions>(req.clone(), NOW).unwrap();
    assert_eq!(r.split_finished_percentage, 100);
    assert_eq!(r.scatter_finished_percentage, 100);
    assert_eq!(r.regions_id.len(), 2);
    // Splitting at the same keys again splits nothing, and scattering nothing is an error.
    let e = c.pd::<p::SplitAndScatterRegions>(req, NOW).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::Unknown, "[PD:scatter:ErrEmptyRegion]empty region")
    );
}

#[test]
fn a_single_store_has_nowhere_to_scatter_to() {
    let mut c = Cluster::new(ClusterConfig::default());
    let region = c.topology().regions().next().unwrap().id();
    let r = scatter(&mut c, vec![region], "").unwrap();
    assert_eq!(r.finished_percentage, 100);
    let op = operator(&mut c, region, NOW);
    assert!(op.header.unwrap().error.is_some());
}
