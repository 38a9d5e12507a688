//! PD's scheduling calls: `SplitRegions`, `SplitAndScatterRegions`, `ScatterRegion` and
//! `GetOperator`, with the operators they leave behind.
//!
//! Semantics follow tikv/pd `server/grpc_service.go`, `pkg/schedule/splitter` and
//! `pkg/schedule/scatter`:
//!
//! - `SplitRegions` groups the keys by region, skips keys that already start a region (they
//!   count as *unprocessed*, so the percentage drops below 100), splits each group, and
//!   returns the ids of the regions that now start at a requested key together with
//!   `100 - unprocessed * 100 / keys` (0 and no ids for an empty request). The mock's split
//!   completes at once; PD's waits for TiKV to report it.
//! - `ScatterRegion` moves a region's peers and leader to stores chosen at random (here from
//!   the cluster's seeded generator, over the serving stores, so runs replay) and queues an
//!   operator. A region already placed as chosen gets no operator. With `regions_id`, missing
//!   regions are listed as failed and the percentage is `100 - 100 * failed / total`; a
//!   single missing region, or an empty list (`SplitAndScatterRegions` whose splits all
//!   failed), is a gRPC error instead. The deprecated `region_id` form answers a missing
//!   region with a `REGION_NOT_FOUND` header whose text PD never formats
//!   ("region %d not found").
//! - `GetOperator` reports the region's last operator: `RUNNING` while it runs, then its end
//!   status (`SUCCESS`, or `CANCEL` when the region changed under it), kept for ten minutes
//!   after it ends; no operator is a `REGION_NOT_FOUND` header "Not Found".
//!
//! Operators complete deterministically: an operator is applied to the topology once
//! `GetOperator` has reported it `RUNNING` `ClusterConfig::operator_running_polls` times
//! (0: at creation), or when [`Cluster::finish_operators`] is called.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tikv_proto::{metapb, pdpb};

use crate::cluster::Cluster;
use crate::error::{Code, MockError};
use crate::pd::{error_header, ok_header};

/// How long PD keeps an ended operator's status (`operatorStatusRemainTime`).
const STATUS_REMAIN_MS: u64 = 10 * 60 * 1000;
/// The description PD gives operators of `ScatterRegion` (client-go waits on it).
const SCATTER_DESC: &str = "scatter-region";
/// The description PD gives operators of `SplitRegions`.
const SPLIT_DESC: &str = "region-splitter";

/// Where a scatter moves a region.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    stores: BTreeSet<u64>,
    leader_store: u64,
}

/// One operator and its progress.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Operator {
    desc: &'static str,
    kind: String,
    group: String,
    /// The region's epoch when the operator was created: a different one at completion
    /// means someone else changed the region, and the operator is canceled.
    epoch: Option<metapb::RegionEpoch>,
    /// `None` for operators that already ran (splits).
    placement: Option<Placement>,
    status: pdpb::OperatorStatus,
    /// `GetOperator` calls that will still see it running.
    polls_left: u32,
    /// When it ended (ms since the epoch), for expiring its record.
    ended_ms: Option<u64>,
}

/// The last operator of each region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Operators {
    by_region: BTreeMap<u64, Operator>,
}

/// PD's failure texts for a whole scatter request (returned as gRPC `Unknown`).
const EMPTY_REGION: &str = "[PD:scatter:ErrEmptyRegion]empty region";
/// Returned unformatted by PD, `%v` included.
const REGION_NOT_FOUND: &str = "[PD:region:ErrRegionNotFound]region %v not found";

impl Cluster {
    /// Applies every running operator now, as if PD had finished them.
    pub fn finish_operators(&mut self, now_ms: u64) {
        let running: Vec<u64> = self
            .operators
            .by_region
            .iter()
            .filter(|(_, op)| op.status == pdpb::OperatorStatus::Running)
            .map(|(&id, _)| id)
            .collect();
        for id in running {
            self.complete_operator(id, now_ms);
        }
    }

    /// Runs a scatter operator's steps: add the new peers, move the leader, drop the old
    /// peers. Any step failing, or the region having changed since, cancels it.
    fn complete_operator(&mut self, region_id: u64, now_ms: u64) {
        let Some(op) = self.operators.by_region.get(&region_id).cloned() else {
            return;
        };
        let status = match self.topology.region(region_id) {
            Some(r) if r.meta.region_epoch == op.epoch => match &op.placement {
                Some(p) => self.apply_placement(region_id, p),
                None => pdpb::OperatorStatus::Success,
            },
            _ => pdpb::OperatorStatus::Cancel,
        };
        if let Some(op) = self.operators.by_region.get_mut(&region_id) {
            op.status = status;
            op.ended_ms = Some(now_ms);
        }
    }

    fn apply_placement(&mut self, region_id: u64, p: &Placement) -> pdpb::OperatorStatus {
        let current: Vec<u64> = match self.topology.region(region_id) {
            Some(r) => r.meta.peers.iter().map(|peer| peer.store_id).collect(),
            None => return pdpb::OperatorStatus::Cancel,
        };
        for &store in p.stores.iter().filter(|s| !current.contains(s)) {
            if self.topology.add_peer(region_id, store).is_err() {
                return pdpb::OperatorStatus::Cancel;
            }
        }
        if self
            .topology
            .transfer_leader(region_id, p.leader_store)
            .is_err()
        {
            return pdpb::OperatorStatus::Cancel;
        }
        for store in current.into_iter().filter(|s| !p.stores.contains(s)) {
            if self.topology.remove_peer(region_id, store).is_err() {
                return pdpb::OperatorStatus::Cancel;
            }
        }
        pdpb::OperatorStatus::Success
    }

    /// Splits at `keys` as PD's region splitter does; returns (finished percentage, ids of
    /// the regions now starting at a requested key, in key order).
    fn split_by_keys(&mut self, keys: &[Bytes], now_ms: u64) -> (u64, Vec<u64>) {
        if keys.is_empty() {
            return (0, Vec::new());
        }
        let mut groups: BTreeMap<u64, BTreeSet<Bytes>> = BTreeMap::new();
        for key in keys {
            let Some(r) = self.topology.region_by_key(key) else {
                continue;
            };
            // PD skips regions without a leader, and keys already at a region's start.
            if r.leader().is_none() || r.meta.start_key == *key {
                continue;
            }
            groups.entry(r.id()).or_default().insert(key.clone());
        }
        let mut split_keys: BTreeSet<Bytes> = BTreeSet::new();
        for (region_id, group) in groups {
            let epoch = self
                .topology
                .region(region_id)
                .and_then(|r| r.meta.region_epoch);
            let group: Vec<Bytes> = group.into_iter().collect();
            if self.topology.split(region_id, &group).is_err() {
                continue;
            }
            self.operators.by_region.insert(
                region_id,
                Operator {
                    desc: SPLIT_DESC,
                    kind: "split".to_owned(),
                    group: String::new(),
                    epoch,
                    placement: None,
                    status: pdpb::OperatorStatus::Success,
                    polls_left: 0,
                    ended_ms: Some(now_ms),
                },
            );
            split_keys.extend(group);
        }
        let mut ids = Vec::new();
        for key in &split_keys {
            if let Some(r) = self.topology.region_by_key(key) {
                if r.meta.start_key == *key && !ids.contains(&r.id()) {
                    ids.push(r.id());
                }
            }
        }
        let unprocessed = keys.iter().filter(|k| !split_keys.contains(*k)).count();
        let percentage = 100 - (unprocessed * 100 / keys.len()) as u64;
        (percentage, ids)
    }

    /// Plans and queues a scatter of one region; `Ok(false)` when no operator was needed.
    fn scatter_one(&mut self, region_id: u64, group: &str, now_ms: u64) -> Result<bool, String> {
        let region = self
            .topology
            .region(region_id)
            .ok_or_else(|| format!("failed to find region {region_id}"))?;
        let epoch = region.meta.region_epoch;
        let current: BTreeSet<u64> = region.meta.peers.iter().map(|p| p.store_id).collect();
        let current_leader = region.leader().map(|p| p.store_id);
        if let Some(op) = self.operators.by_region.get(&region_id) {
            // The same group's scatter is already under way: nothing new to do.
            if op.status == pdpb::OperatorStatus::Running
                && op.desc == SCATTER_DESC
                && op.group == group
            {
                if op.epoch != epoch {
                    return Err(format!(
                        "the operator of region {region_id} already exist with different epoch"
                    ));
                }
                return Ok(false);
            }
        }
        let mut candidates: Vec<u64> = self
            .topology
            .stores()
            .filter(|s| s.is_serving())
            .map(|s| s.meta.id)
            .collect();
        let wanted = current.len();
        if candidates.len() < wanted || wanted == 0 {
            // Not enough live stores to hold every replica: leave the region where it is.
            return Ok(false);
        }
        // A partial Fisher-Yates shuffle over the seeded generator picks the stores.
        for i in 0..wanted {
            let j = i + self.rng.below((candidates.len() - i) as u64) as usize;
            candidates.swap(i, j);
        }
        let chosen: Vec<u64> = candidates[..wanted].to_vec();
        let leader_store = chosen[self.rng.below(wanted as u64) as usize];
        let stores: BTreeSet<u64> = chosen.into_iter().collect();
        let peers_move = stores != current;
        let leader_moves = Some(leader_store) != current_leader;
        if !peers_move && !leader_moves {
            return Ok(false);
        }
        // PD's operator builder names the step kinds it used, low flag bits first.
        let kind = match (peers_move, leader_moves) {
            (true, true) => "admin,region,leader",
            (true, false) => "admin,region",
            _ => "admin,leader",
        };
        // A newer operator replaces whatever ran before on the region.
        self.operators.by_region.insert(
            region_id,
            Operator {
                desc: SCATTER_DESC,
                kind: kind.to_owned(),
                group: group.to_owned(),
                epoch,
                placement: Some(Placement {
                    stores,
                    leader_store,
                }),
                status: pdpb::OperatorStatus::Running,
                polls_left: self.config.operator_running_polls,
                ended_ms: None,
            },
        );
        if self.config.operator_running_polls == 0 {
            self.complete_operator(region_id, now_ms);
        }
        Ok(true)
    }

    /// PD's `scatterRegions`: (percentage, failed region ids) or a whole-request failure.
    fn scatter_many(
        &mut self,
        ids: &[u64],
        group: &str,
        now_ms: u64,
    ) -> Result<(u64, Vec<u64>), MockError> {
        if ids.is_empty() {
            return Err(MockError::status(Code::Unknown, EMPTY_REGION));
        }
        if ids.len() == 1 && self.topology.region(ids[0]).is_none() {
            return Err(MockError::status(Code::Unknown, REGION_NOT_FOUND));
        }
        // PD handles each region once, however often it is listed.
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        let mut failed = Vec::new();
        let mut done = 0usize;
        for id in unique {
            match self.scatter_one(id, group, now_ms) {
                Ok(_) => done += 1,
                Err(_) => failed.push(id),
            }
        }
        let percentage = if failed.is_empty() {
            100
        } else {
            100 - (100 * failed.len() / (done + failed.len())) as u64
        };
        Ok((percentage, failed))
    }

    pub(crate) fn pd_split_regions(
        &mut self,
        req: pdpb::SplitRegionsRequest,
        now_ms: u64,
    ) -> Result<pdpb::SplitRegionsResponse, MockError> {
        let (finished_percentage, regions_id) = self.split_by_keys(&req.split_keys, now_ms);
        Ok(pdpb::SplitRegionsResponse {
            header: ok_header(self.config.cluster_id),
            finished_percentage,
            regions_id,
        })
    }

    pub(crate) fn pd_split_and_scatter_regions(
        &mut self,
        req: pdpb::SplitAndScatterRegionsRequest,
        now_ms: u64,
    ) -> Result<pdpb::SplitAndScatterRegionsResponse, MockError> {
        let (split_finished_percentage, regions_id) = self.split_by_keys(&req.split_keys, now_ms);
        let (scatter_finished_percentage, _) =
            self.scatter_many(&regions_id, &req.group, now_ms)?;
        Ok(pdpb::SplitAndScatterRegionsResponse {
            header: ok_header(self.config.cluster_id),
            split_finished_percentage,
            scatter_finished_percentage,
            regions_id,
        })
    }

    pub(crate) fn pd_scatter_region(
        &mut self,
        req: pdpb::ScatterRegionRequest,
        now_ms: u64,
    ) -> Result<pdpb::ScatterRegionResponse, MockError> {
        let cid = self.config.cluster_id;
        if !req.regions_id.is_empty() {
            let (finished_percentage, failed_regions_id) =
                self.scatter_many(&req.regions_id, &req.group, now_ms)?;
            return Ok(pdpb::ScatterRegionResponse {
                header: ok_header(cid),
                finished_percentage,
                failed_regions_id,
            });
        }
        if self.topology.region(req.region_id).is_none() {
            if req.region.is_none() {
                return Ok(pdpb::ScatterRegionResponse {
                    header: error_header(
                        cid,
                        pdpb::ErrorType::RegionNotFound,
                        "region %d not found",
                    ),
                    ..Default::default()
                });
            }
            // PD would scatter the region described in the request; the mock only moves
            // regions it knows, so there is nothing to do.
            return Ok(pdpb::ScatterRegionResponse {
                header: ok_header(cid),
                finished_percentage: 100,
                failed_regions_id: Vec::new(),
            });
        }
        self.scatter_one(req.region_id, &req.group, now_ms)
            .map_err(|m| MockError::status(Code::Unknown, m))?;
        Ok(pdpb::ScatterRegionResponse {
            header: ok_header(cid),
            finished_percentage: 100,
            failed_regions_id: Vec::new(),
        })
    }

    pub(crate) fn pd_get_operator(
        &mut self,
        req: pdpb::GetOperatorRequest,
        now_ms: u64,
    ) -> Result<pdpb::GetOperatorResponse, MockError> {
        let cid = self.config.cluster_id;
        let id = req.region_id;
        let expired = self
            .operators
            .by_region
            .get(&id)
            .and_then(|op| op.ended_ms)
            .is_some_and(|ended| now_ms > ended.saturating_add(STATUS_REMAIN_MS));
        if expired {
            self.operators.by_region.remove(&id);
        }
        let Some(op) = self.operators.by_region.get_mut(&id) else {
            return Ok(pdpb::GetOperatorResponse {
                header: error_header(cid, pdpb::ErrorType::RegionNotFound, "Not Found"),
                ..Default::default()
            });
        };
        if op.status == pdpb::OperatorStatus::Running {
            if op.polls_left > 0 {
                op.polls_left -= 1;
            } else {
                self.complete_operator(id, now_ms);
            }
        }
        let Some(op) = self.operators.by_region.get(&id) else {
            return Err(MockError::status(Code::Unknown, "operator vanished"));
        };
        Ok(pdpb::GetOperatorResponse {
            header: ok_header(cid),
            region_id: id,
            desc: Bytes::from_static(op.desc.as_bytes()),
            status: op.status as i32,
            kind: Bytes::from(op.kind.clone().into_bytes()),
        })
    }
}

#[cfg(test)]
mod tests;
