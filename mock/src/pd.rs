//! The PD service: members, TSO, region and store queries, id allocation.
//!
//! Semantics follow tikv/pd `server/grpc_service.go` and `pkg/utils/grpcutil/cluster.go`:
//! - `GetMembers` and `GetClusterInfo` skip the cluster-id check (clients learn the id from
//!   `GetMembers`); every other call with a different `header.cluster_id` fails with gRPC
//!   `FailedPrecondition` ("mismatch cluster id, need X but got Y"), not with a header error;
//! - a region lookup that finds nothing returns an OK header and no region (the leader does
//!   not report `REGION_NOT_FOUND`; only followers do);
//! - `GetStore` of an unknown id is an `UNKNOWN` header error; tombstones are still returned;
//! - `Tso` answers `count = N` with the largest timestamp of the block (see [`crate::tso`]).
//!
//! Which member a call reaches matters: see [`crate::pd_members`] for what followers answer.
//! The GC-state API lives in [`crate::gc`], split/scatter/operators in
//! [`crate::scheduling`].

use tikv_proto::{metapb, pdpb};

use crate::cluster::Cluster;
use crate::error::{Code, MockError};
use crate::fault::{FaultAction, failure_of};
use crate::pd_members::LeaderRule;
use crate::topology::{Liveness, RegionInfo};

pub(crate) fn ok_header(cluster_id: u64) -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader {
        cluster_id,
        error: None,
    })
}

pub(crate) fn error_header(
    cluster_id: u64,
    kind: pdpb::ErrorType,
    message: &str,
) -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader {
        cluster_id,
        error: Some(pdpb::Error {
            r#type: kind as i32,
            message: message.to_owned(),
        }),
    })
}

/// A PD response message: every one carries a header.
pub(crate) trait PdResponse: Default {
    /// The response's header slot.
    fn header_mut(&mut self) -> &mut Option<pdpb::ResponseHeader>;
}

macro_rules! pd_responses {
    ($($resp:ident),* $(,)?) => {
        $(
            impl PdResponse for pdpb::$resp {
                fn header_mut(&mut self) -> &mut Option<pdpb::ResponseHeader> {
                    &mut self.header
                }
            }
        )*
    };
}

pd_responses!(
    GetMembersResponse,
    GetClusterInfoResponse,
    TsoResponse,
    GetRegionResponse,
    ScanRegionsResponse,
    BatchScanRegionsResponse,
    GetStoreResponse,
    GetAllStoresResponse,
    AllocIdResponse,
    GetMinTsResponse,
    SetExternalTimestampResponse,
    GetExternalTimestampResponse,
    SplitRegionsResponse,
    SplitAndScatterRegionsResponse,
    ScatterRegionResponse,
    GetOperatorResponse,
    GetGcStateResponse,
    GetAllKeyspacesGcStatesResponse,
    AdvanceTxnSafePointResponse,
    AdvanceGcSafePointResponse,
    SetGcBarrierResponse,
    DeleteGcBarrierResponse,
    SetGlobalGcBarrierResponse,
    DeleteGlobalGcBarrierResponse,
    UpdateGcSafePointResponse,
    UpdateServiceGcSafePointResponse,
    GetGcSafePointResponse,
);

/// How one PD method is admitted: which member it reached, what a follower answers, and
/// whether (and from where) its cluster id is checked.
pub(crate) struct PdAdmission<Req> {
    pub(crate) member: usize,
    pub(crate) rule: LeaderRule,
    pub(crate) check_cluster_id: bool,
    pub(crate) header: fn(&Req) -> Option<&pdpb::RequestHeader>,
}

impl Cluster {
    /// Admission for PD calls: counters and injected faults, then the member's role (see
    /// [`crate::pd_members`]), then the cluster-id check (skipped for the discovery calls),
    /// then the handler.
    pub(crate) fn serve_pd<Req, Resp: PdResponse>(
        &mut self,
        method: &str,
        req: Req,
        now_ms: u64,
        admission: PdAdmission<Req>,
        handler: fn(&mut Cluster, Req, u64) -> Result<Resp, MockError>,
    ) -> Result<Resp, MockError> {
        self.counters.rpc(method);
        let fault = self.faults.take(None, method, None);
        let lost = match fault {
            None => false,
            Some(FaultAction::ReplyLost) => true,
            Some(FaultAction::RegionError(_)) => {
                return Err(MockError::unreachable("injected: PD unavailable"));
            }
            Some(other) => {
                return Err(
                    failure_of(&other).unwrap_or_else(|| MockError::unreachable("injected fault"))
                );
            }
        };
        if !self.admit_pd_member(admission.member, admission.rule)? {
            let mut resp = Resp::default();
            *resp.header_mut() = error_header(
                self.config.cluster_id,
                pdpb::ErrorType::NotBootstrapped,
                "cluster is not bootstrapped",
            );
            return if lost {
                Err(MockError::reply_lost())
            } else {
                Ok(resp)
            };
        }
        if admission.check_cluster_id {
            let got = (admission.header)(&req).map_or(0, |h| h.cluster_id);
            if got != self.config.cluster_id {
                return Err(MockError::status(
                    Code::FailedPrecondition,
                    format!(
                        "mismatch cluster id, need {} but got {got}",
                        self.config.cluster_id
                    ),
                ));
            }
        }
        if admission.rule == LeaderRule::Tso {
            self.tso_on_follower(admission.member)?;
        }
        let resp = handler(self, req, now_ms)?;
        if lost {
            return Err(MockError::reply_lost());
        }
        Ok(resp)
    }

    pub(crate) fn pd_get_members(
        &mut self,
        _req: pdpb::GetMembersRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetMembersResponse, MockError> {
        let (members, leader) = self.pd_member_list();
        Ok(pdpb::GetMembersResponse {
            header: ok_header(self.config.cluster_id),
            members,
            leader: Some(leader.clone()),
            etcd_leader: Some(leader),
            ..Default::default()
        })
    }

    pub(crate) fn pd_get_cluster_info(
        &mut self,
        _req: pdpb::GetClusterInfoRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetClusterInfoResponse, MockError> {
        Ok(pdpb::GetClusterInfoResponse {
            header: ok_header(self.config.cluster_id),
            service_modes: vec![pdpb::ServiceMode::PdSvcMode as i32],
            tso_urls: Vec::new(),
        })
    }

    pub(crate) fn pd_tso(
        &mut self,
        req: pdpb::TsoRequest,
        now_ms: u64,
    ) -> Result<pdpb::TsoResponse, MockError> {
        let (physical, logical) = self
            .tso
            .allocate(now_ms, req.count)
            .map_err(|e| MockError::status(Code::Unknown, e.to_string()))?;
        self.counters.tso_requests += 1;
        self.counters.tso_timestamps += u64::from(req.count);
        Ok(pdpb::TsoResponse {
            header: ok_header(self.config.cluster_id),
            count: req.count,
            timestamp: Some(pdpb::Timestamp {
                physical,
                logical,
                suffix_bits: 0,
            }),
        })
    }

    /// Peers on stores that are down, as PD would list them once heartbeats stop.
    fn down_peers(&self, r: &RegionInfo) -> Vec<pdpb::PeerStats> {
        r.meta
            .peers
            .iter()
            .filter(|p| {
                self.topology
                    .store(p.store_id)
                    .is_none_or(|s| s.liveness == Liveness::Down)
            })
            .map(|p| pdpb::PeerStats {
                peer: Some(*p),
                down_seconds: 60,
            })
            .collect()
    }

    fn region_response(&self, r: Option<&RegionInfo>) -> pdpb::GetRegionResponse {
        let header = ok_header(self.config.cluster_id);
        match r {
            None => pdpb::GetRegionResponse {
                header,
                ..Default::default()
            },
            Some(r) => pdpb::GetRegionResponse {
                header,
                region: Some(r.meta.clone()),
                leader: r.leader().copied(),
                down_peers: self.down_peers(r),
                ..Default::default()
            },
        }
    }

    fn pd_region(&self, r: &RegionInfo) -> pdpb::Region {
        pdpb::Region {
            region: Some(r.meta.clone()),
            leader: Some(r.leader().copied().unwrap_or_default()),
            down_peers: self.down_peers(r),
            ..Default::default()
        }
    }

    pub(crate) fn pd_get_region(
        &mut self,
        req: pdpb::GetRegionRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetRegionResponse, MockError> {
        Ok(self.region_response(self.topology.region_by_key(&req.region_key)))
    }

    pub(crate) fn pd_get_prev_region(
        &mut self,
        req: pdpb::GetRegionRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetRegionResponse, MockError> {
        let prev = self
            .topology
            .region_by_key(&req.region_key)
            .and_then(|r| self.topology.prev_region(r.id()));
        Ok(self.region_response(prev))
    }

    pub(crate) fn pd_get_region_by_id(
        &mut self,
        req: pdpb::GetRegionByIdRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetRegionResponse, MockError> {
        Ok(self.region_response(self.topology.region(req.region_id)))
    }

    /// Regions overlapping `[start, end)` from the one containing `start`, at most `limit`
    /// (`limit <= 0`: all).
    fn scan_region_infos(&self, start: &[u8], end: &[u8], limit: i32) -> Vec<&RegionInfo> {
        let limit = usize::try_from(limit)
            .ok()
            .filter(|&l| l > 0)
            .unwrap_or(usize::MAX);
        self.topology
            .regions_from(start)
            .take_while(|r| end.is_empty() || r.meta.start_key[..] < *end)
            .take(limit)
            .collect()
    }

    pub(crate) fn pd_scan_regions(
        &mut self,
        req: pdpb::ScanRegionsRequest,
        _now_ms: u64,
    ) -> Result<pdpb::ScanRegionsResponse, MockError> {
        let infos = self.scan_region_infos(&req.start_key, &req.end_key, req.limit);
        let regions: Vec<pdpb::Region> = infos.iter().map(|r| self.pd_region(r)).collect();
        Ok(pdpb::ScanRegionsResponse {
            header: ok_header(self.config.cluster_id),
            region_metas: regions.iter().filter_map(|r| r.region.clone()).collect(),
            leaders: regions
                .iter()
                .map(|r| r.leader.unwrap_or_default())
                .collect(),
            regions,
        })
    }

    pub(crate) fn pd_batch_scan_regions(
        &mut self,
        req: pdpb::BatchScanRegionsRequest,
        _now_ms: u64,
    ) -> Result<pdpb::BatchScanRegionsResponse, MockError> {
        let cid = self.config.cluster_id;
        for (i, r) in req.ranges.iter().enumerate() {
            if i > 0 && r.start_key < req.ranges[i - 1].end_key {
                return Ok(pdpb::BatchScanRegionsResponse {
                    header: error_header(
                        cid,
                        pdpb::ErrorType::Unknown,
                        "invalid key range, ranges overlapped",
                    ),
                    regions: Vec::new(),
                });
            }
            if !r.end_key.is_empty() && r.start_key > r.end_key {
                return Ok(pdpb::BatchScanRegionsResponse {
                    header: error_header(
                        cid,
                        pdpb::ErrorType::Unknown,
                        "invalid key range, start key > end key",
                    ),
                    regions: Vec::new(),
                });
            }
        }
        // PD first merges ranges that touch, then scans each.
        let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for r in &req.ranges {
            match merged.last_mut() {
                Some(last) if last.1 == r.start_key[..] => last.1 = r.end_key.to_vec(),
                _ => merged.push((r.start_key.to_vec(), r.end_key.to_vec())),
            }
        }
        let limit = usize::try_from(req.limit)
            .ok()
            .filter(|&l| l > 0)
            .unwrap_or(usize::MAX);
        let mut out: Vec<&RegionInfo> = Vec::new();
        for (start, end) in &merged {
            let mut found = self.scan_region_infos(start, end, req.limit);
            if let (Some(last), Some(first)) = (out.last(), found.first()) {
                if last.id() == first.id() {
                    found.remove(0);
                }
            }
            out.extend(found);
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        let regions = out.iter().map(|r| self.pd_region(r)).collect();
        Ok(pdpb::BatchScanRegionsResponse {
            header: ok_header(cid),
            regions,
        })
    }

    pub(crate) fn pd_get_store(
        &mut self,
        req: pdpb::GetStoreRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetStoreResponse, MockError> {
        let cid = self.config.cluster_id;
        Ok(match self.topology.store(req.store_id) {
            Some(s) => pdpb::GetStoreResponse {
                header: ok_header(cid),
                store: Some(s.meta.clone()),
                stats: Some(pdpb::StoreStats {
                    store_id: req.store_id,
                    ..Default::default()
                }),
            },
            None => pdpb::GetStoreResponse {
                header: error_header(
                    cid,
                    pdpb::ErrorType::Unknown,
                    &format!("invalid store ID {}, not found", req.store_id),
                ),
                ..Default::default()
            },
        })
    }

    pub(crate) fn pd_get_all_stores(
        &mut self,
        req: pdpb::GetAllStoresRequest,
        _now_ms: u64,
    ) -> Result<pdpb::GetAllStoresResponse, MockError> {
        let stores = self
            .topology
            .stores()
            .filter(|s| {
                !req.exclude_tombstone_stores
                    || s.meta.node_state != metapb::NodeState::Removed as i32
            })
            .map(|s| s.meta.clone())
            .collect();
        Ok(pdpb::GetAllStoresResponse {
            header: ok_header(self.config.cluster_id),
            stores,
        })
    }

    pub(crate) fn pd_alloc_id(
        &mut self,
        req: pdpb::AllocIdRequest,
        _now_ms: u64,
    ) -> Result<pdpb::AllocIdResponse, MockError> {
        let count = req.count.max(1);
        let last = self.topology.alloc_ids(count);
        // PD returns the end of the allocated block and echoes a count only for batches.
        Ok(pdpb::AllocIdResponse {
            header: ok_header(self.config.cluster_id),
            id: last,
            count: if count > 1 { count } else { 0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tikv_proto::pdpb::{self, pd_service as p};

    use crate::error::Code;
    use crate::test_util::{Harness, NOW, b};
    use crate::tso::compose;

    fn header(h: &Harness) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: h.c.cluster_id(),
            ..Default::default()
        })
    }

    fn get_region(h: &mut Harness, key: &str) -> pdpb::GetRegionResponse {
        let req = pdpb::GetRegionRequest {
            header: header(h),
            region_key: b(key),
            ..Default::default()
        };
        h.c.pd::<p::GetRegion>(req, NOW).unwrap()
    }

    #[test]
    fn get_members_works_without_header_and_reports_cluster_id_and_leader() {
        let mut h = Harness::v1();
        h.c.set_pd_client_urls(vec!["http://127.0.0.1:4000".into()]);
        let r =
            h.c.pd::<p::GetMembers>(pdpb::GetMembersRequest::default(), NOW)
                .unwrap();
        assert_eq!(r.header.unwrap().cluster_id, h.c.cluster_id());
        let leader = r.leader.unwrap();
        assert_eq!(leader.client_urls, vec!["http://127.0.0.1:4000".to_owned()]);
        assert_eq!(r.members, vec![leader]);
    }

    #[test]
    fn get_cluster_info_reports_pd_mode() {
        let mut h = Harness::v1();
        let r =
            h.c.pd::<p::GetClusterInfo>(pdpb::GetClusterInfoRequest::default(), NOW)
                .unwrap();
        assert_eq!(r.service_modes, vec![pdpb::ServiceMode::PdSvcMode as i32]);
    }

    #[test]
    fn wrong_cluster_id_fails_with_failed_precondition() {
        let mut h = Harness::v1();
        let req = pdpb::GetRegionRequest {
            header: Some(pdpb::RequestHeader {
                cluster_id: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = h.c.pd::<p::GetRegion>(req, NOW).unwrap_err();
        assert_eq!(e.code, Code::FailedPrecondition);
        assert_eq!(
            e.message,
            format!("mismatch cluster id, need {} but got 1", h.c.cluster_id())
        );
        let e =
            h.c.pd::<p::Tso>(
                pdpb::TsoRequest {
                    count: 1,
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.code, Code::FailedPrecondition);
    }

    #[test]
    fn tso_returns_largest_of_block_and_increases() {
        let mut h = Harness::v1();
        let mut last = 0;
        for count in [1u32, 10, 3] {
            let r =
                h.c.pd::<p::Tso>(
                    pdpb::TsoRequest {
                        header: header(&h),
                        count,
                        ..Default::default()
                    },
                    NOW,
                )
                .unwrap();
            assert_eq!(r.count, count);
            let ts = r.timestamp.unwrap();
            let max = compose(ts.physical, ts.logical);
            assert!(max - u64::from(count) + 1 > last);
            last = max;
        }
        let ts = h.c.tso.last_ts();
        assert_eq!(ts, compose(NOW as i64, 14));
        assert_eq!(h.c.counters().tso_timestamps, 14);
        let e =
            h.c.pd::<p::Tso>(
                pdpb::TsoRequest {
                    header: header(&h),
                    count: 0,
                    ..Default::default()
                },
                NOW,
            )
            .unwrap_err();
        assert_eq!(e.code, Code::Unknown);
    }

    #[test]
    fn get_region_prev_region_and_by_id_follow_splits() {
        let mut h = Harness::v1();
        let right = h.split("m");
        let r = get_region(&mut h, "n");
        assert_eq!(r.region.as_ref().unwrap().id, right);
        assert_eq!(r.leader.unwrap().store_id, 1);
        let left = get_region(&mut h, "a").region.unwrap();
        let prev =
            h.c.pd::<p::GetPrevRegion>(
                pdpb::GetRegionRequest {
                    header: header(&h),
                    region_key: b("n"),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        assert_eq!(prev.region.unwrap().id, left.id);
        let none =
            h.c.pd::<p::GetPrevRegion>(
                pdpb::GetRegionRequest {
                    header: header(&h),
                    region_key: b("a"),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        assert!(none.region.is_none() && none.header.unwrap().error.is_none());
        let by_id =
            h.c.pd::<p::GetRegionById>(
                pdpb::GetRegionByIdRequest {
                    header: header(&h),
                    region_id: left.id,
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        assert_eq!(by_id.region.unwrap(), left);
        let missing =
            h.c.pd::<p::GetRegionById>(
                pdpb::GetRegionByIdRequest {
                    header: header(&h),
                    region_id: 12345,
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
        assert!(missing.region.is_none() && missing.header.unwrap().error.is_none());
    }

    #[test]
    fn down_store_peers_are_reported_as_down_peers() {
        let mut h = Harness::v1();
        h.c.store_down(2).unwrap();
        let r = get_region(&mut h, "a");
        let down: Vec<u64> = r
            .down_peers
            .iter()
            .map(|p| p.peer.unwrap().store_id)
            .collect();
        assert_eq!(down, vec![2]);
    }

    #[test]
    fn scan_regions_respects_range_and_limit() {
        let mut h = Harness::v1();
        h.split("c");
        h.split("f");
        h.split("k");
        let scan = |h: &mut Harness, start: &str, end: &str, limit: i32| {
            let req = pdpb::ScanRegionsRequest {
                header: header(h),
                start_key: b(start),
                end_key: b(end),
                limit,
            };
            let r = h.c.pd::<p::ScanRegions>(req, NOW).unwrap();
            assert_eq!(r.regions.len(), r.region_metas.len());
            assert_eq!(r.regions.len(), r.leaders.len());
            r.region_metas
                .into_iter()
                .map(|m| String::from_utf8(m.start_key.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(scan(&mut h, "d", "", 0), vec!["c", "f", "k"]);
        assert_eq!(scan(&mut h, "d", "k", 0), vec!["c", "f"]);
        assert_eq!(scan(&mut h, "", "", 2), vec!["", "c"]);
    }

    #[test]
    fn batch_scan_regions_merges_ranges_dedups_and_validates() {
        let mut h = Harness::v1();
        h.split("c");
        h.split("f");
        let range = |s: &str, e: &str| pdpb::KeyRange {
            start_key: b(s),
            end_key: b(e),
        };
        let req = pdpb::BatchScanRegionsRequest {
            header: header(&h),
            ranges: vec![range("a", "b"), range("b", "d"), range("d", "e")],
            ..Default::default()
        };
        let r = h.c.pd::<p::BatchScanRegions>(req, NOW).unwrap();
        let starts: Vec<Bytes> = r
            .regions
            .iter()
            .map(|r| r.region.as_ref().unwrap().start_key.clone())
            .collect();
        assert_eq!(starts, vec![b(""), b("c")]);
        let req = pdpb::BatchScanRegionsRequest {
            header: header(&h),
            ranges: vec![range("d", "e"), range("a", "b")],
            ..Default::default()
        };
        let r = h.c.pd::<p::BatchScanRegions>(req, NOW).unwrap();
        let err = r.header.unwrap().error.unwrap();
        assert_eq!(err.message, "invalid key range, ranges overlapped");
    }

    #[test]
    fn stores_are_listed_and_tombstones_can_be_excluded() {
        let mut h = Harness::v1();
        let id = h.c.add_store(vec![("zone".into(), "z1".into())]);
        h.c.remove_store(id).unwrap();
        let all =
            h.c.pd::<p::GetAllStores>(
                pdpb::GetAllStoresRequest {
                    header: header(&h),
                    exclude_tombstone_stores: false,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(all.stores.len(), 4);
        let live =
            h.c.pd::<p::GetAllStores>(
                pdpb::GetAllStoresRequest {
                    header: header(&h),
                    exclude_tombstone_stores: true,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(live.stores.len(), 3);
        let one =
            h.c.pd::<p::GetStore>(
                pdpb::GetStoreRequest {
                    header: header(&h),
                    store_id: id,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(one.store.unwrap().labels[0].value, "z1");
        let missing =
            h.c.pd::<p::GetStore>(
                pdpb::GetStoreRequest {
                    header: header(&h),
                    store_id: 999,
                },
                NOW,
            )
            .unwrap();
        let err = missing.header.unwrap().error.unwrap();
        assert_eq!(err.r#type, pdpb::ErrorType::Unknown as i32);
        assert_eq!(err.message, "invalid store ID 999, not found");
    }

    #[test]
    fn alloc_id_returns_end_of_block_and_never_repeats() {
        let mut h = Harness::v1();
        let one =
            h.c.pd::<p::AllocId>(
                pdpb::AllocIdRequest {
                    header: header(&h),
                    count: 0,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(one.count, 0);
        let batch =
            h.c.pd::<p::AllocId>(
                pdpb::AllocIdRequest {
                    header: header(&h),
                    count: 5,
                },
                NOW,
            )
            .unwrap();
        assert_eq!((batch.id, batch.count), (one.id + 5, 5));
    }
}
