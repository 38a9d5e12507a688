//! PD members and leadership: several PD members, one leader, and what a non-leader answers.
//!
//! A real PD cluster has several members; any of them answers `GetMembers` (that is how a
//! client finds the leader), but only the leader serves the rest. What a follower answers
//! depends on the method, following tikv/pd `server/grpc_service.go`:
//!
//! - most calls fail in the gRPC middleware before the cluster-id check, with gRPC
//!   `Unavailable` "not leader" (`pkg/errs/errno.go` `ErrNotLeader`);
//! - region queries (`GetRegion`, `GetPrevRegion`, `GetRegionByID`, `ScanRegions`,
//!   `BatchScanRegions`) may be served by followers, but only when the client opts in with
//!   gRPC metadata; the mock has no metadata, so they fail with `Unavailable` "not leader and
//!   follower handling not allowed" (`ErrFollowerHandlingNotAllowed`);
//! - `Tso` checks the cluster id first, then the allocator refuses with gRPC `Unknown`
//!   "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, requested pd is not leader of
//!   cluster" (`pkg/tso/allocator.go`);
//! - `SplitRegions`, `ScatterRegion` and `GetOperator` look up the raft cluster before the
//!   leader check; a follower has none running, so they answer OK with a `NOT_BOOTSTRAPPED`
//!   header "cluster is not bootstrapped".
//!
//! Timestamps stay strictly increasing across a leader change, as PD persists a TSO window
//! before handing timestamps out; the mock simply shares one oracle between members.

use tikv_proto::pdpb;

use crate::cluster::Cluster;
use crate::error::{Code, MockError};

/// The member id of PD member 0; member `i` reports this plus `i`.
const PD_MEMBER_ID_BASE: u64 = 0x5044_0001;

/// How a PD method behaves when it reaches a member that is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeaderRule {
    /// Served by every member (`GetMembers`, `GetClusterInfo`).
    AnyMember,
    /// gRPC `Unavailable` "not leader", before the cluster-id check.
    Leader,
    /// Followers serve it only when the client asks for follower handling (never, here).
    FollowerHandle,
    /// The TSO stream: cluster-id check, then gRPC `Unknown` from the allocator.
    Tso,
    /// Needs the running raft cluster: a `NOT_BOOTSTRAPPED` header on followers.
    RaftCluster,
}

/// The PD members and which one leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PdMembers {
    client_urls: Vec<Vec<String>>,
    leader: usize,
}

/// A PD member index that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("PD member {0} does not exist")]
pub struct UnknownPdMember(pub usize);

impl PdMembers {
    /// `count` members (at least one), member 0 leading, with placeholder URLs until a front
    /// sets the addresses it listens on.
    pub(crate) fn new(count: usize) -> Self {
        let client_urls = (0..count.max(1))
            .map(|i| vec![format!("http://127.0.0.1:{}", 2379 + 10 * i)])
            .collect();
        PdMembers {
            client_urls,
            leader: 0,
        }
    }

    fn member(&self, index: usize) -> pdpb::Member {
        let urls = self.client_urls.get(index).cloned().unwrap_or_default();
        pdpb::Member {
            name: format!("pd-{index}"),
            member_id: PD_MEMBER_ID_BASE + index as u64,
            peer_urls: urls.clone(),
            client_urls: urls,
            ..Default::default()
        }
    }
}

impl Cluster {
    /// Number of PD members.
    pub fn pd_member_count(&self) -> usize {
        self.pd_members.client_urls.len()
    }

    /// The index of the PD member that currently leads.
    pub fn pd_leader(&self) -> usize {
        self.pd_members.leader
    }

    /// Makes `member` the PD leader: from now on the others answer as followers.
    pub fn transfer_pd_leader(&mut self, member: usize) -> Result<(), UnknownPdMember> {
        if member >= self.pd_member_count() {
            return Err(UnknownPdMember(member));
        }
        self.pd_members.leader = member;
        Ok(())
    }

    /// Sets the client URLs `GetMembers` reports for one member (a front sets the address
    /// it listens on).
    pub fn set_pd_member_client_urls(
        &mut self,
        member: usize,
        urls: Vec<String>,
    ) -> Result<(), UnknownPdMember> {
        let slot = self
            .pd_members
            .client_urls
            .get_mut(member)
            .ok_or(UnknownPdMember(member))?;
        *slot = urls;
        Ok(())
    }

    /// The client URLs of every member, by index.
    pub fn pd_member_client_urls(&self) -> &[Vec<String>] {
        &self.pd_members.client_urls
    }

    /// Every member, and the leader, as `GetMembers` reports them.
    pub(crate) fn pd_member_list(&self) -> (Vec<pdpb::Member>, pdpb::Member) {
        let members = (0..self.pd_member_count())
            .map(|i| self.pd_members.member(i))
            .collect();
        (members, self.pd_members.member(self.pd_members.leader))
    }

    /// What a call governed by `rule` gets on `member` before its cluster-id check:
    /// `Ok(true)` to serve it, `Ok(false)` when the caller must answer the
    /// `NOT_BOOTSTRAPPED` header, `Err` for a gRPC failure.
    pub(crate) fn admit_pd_member(
        &self,
        member: usize,
        rule: LeaderRule,
    ) -> Result<bool, MockError> {
        if member >= self.pd_member_count() {
            // There is no such server: the connection cannot be made.
            return Err(MockError::unreachable(format!(
                "PD member {member} does not exist"
            )));
        }
        if member == self.pd_members.leader {
            return Ok(true);
        }
        match rule {
            LeaderRule::AnyMember | LeaderRule::Tso => Ok(true),
            LeaderRule::Leader => Err(MockError::status(Code::Unavailable, "not leader")),
            LeaderRule::FollowerHandle => Err(MockError::status(
                Code::Unavailable,
                "not leader and follower handling not allowed",
            )),
            LeaderRule::RaftCluster => Ok(false),
        }
    }

    /// The allocator's refusal on a follower, after the stream's cluster-id check.
    pub(crate) fn tso_on_follower(&self, member: usize) -> Result<(), MockError> {
        if member == self.pd_members.leader {
            return Ok(());
        }
        Err(MockError::status(
            Code::Unknown,
            "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, requested pd is not leader of cluster",
        ))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;
    use tikv_proto::method::Method;
    use tikv_proto::pdpb::{self, pd_service as p};

    use crate::error::{Code, FailureKind};
    use crate::{Cluster, ClusterConfig};

    const NOW: u64 = 1_700_000_000_000;

    fn cluster(members: usize) -> Cluster {
        Cluster::new(ClusterConfig {
            stores: 3,
            pd_members: members,
            ..Default::default()
        })
    }

    fn header(c: &Cluster) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: c.cluster_id(),
            ..Default::default()
        })
    }

    #[test]
    fn get_members_lists_every_member_and_the_leader_on_any_member() {
        let mut c = cluster(3);
        c.set_pd_member_client_urls(2, vec!["http://10.0.0.3:2379".into()])
            .unwrap();
        for member in 0..3 {
            let r = c
                .pd_on::<p::GetMembers>(member, Default::default(), NOW)
                .unwrap();
            assert_eq!(r.members.len(), 3);
            assert_eq!(r.leader.as_ref().unwrap().name, "pd-0");
            assert_eq!(r.etcd_leader, r.leader);
            assert_eq!(r.members[2].client_urls, vec!["http://10.0.0.3:2379"]);
        }
        c.transfer_pd_leader(2).unwrap();
        let r = c.pd::<p::GetMembers>(Default::default(), NOW).unwrap();
        assert_eq!(r.leader.unwrap().client_urls, vec!["http://10.0.0.3:2379"]);
        assert_eq!(c.transfer_pd_leader(3).unwrap_err().0, 3);
    }

    #[test]
    fn followers_answer_not_leader_before_the_cluster_id_check() {
        let mut c = cluster(2);
        let req = pdpb::GetStoreRequest {
            header: None,
            store_id: 1,
        };
        let e = c.pd_on::<p::GetStore>(1, req.clone(), NOW).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (Code::Unavailable, "not leader")
        );
        assert_eq!(e.kind, FailureKind::Status);
        // The leader checks the cluster id.
        let e = c.pd_on::<p::GetStore>(0, req, NOW).unwrap_err();
        assert_eq!(e.code, Code::FailedPrecondition);
        let e = c
            .pd_on::<p::GetRegion>(1, Default::default(), NOW)
            .unwrap_err();
        assert_eq!(e.message, "not leader and follower handling not allowed");
    }

    #[test]
    fn leader_change_moves_service_and_tso_keeps_increasing() {
        let mut c = cluster(3);
        let tso = |c: &mut Cluster, member: usize| {
            let req = pdpb::TsoRequest {
                header: header(c),
                count: 1,
                ..Default::default()
            };
            c.pd_on::<p::Tso>(member, req, NOW).map(|r| {
                let ts = r.timestamp.unwrap();
                crate::tso::compose(ts.physical, ts.logical)
            })
        };
        let first = tso(&mut c, 0).unwrap();
        let e = tso(&mut c, 1).unwrap_err();
        assert_eq!(e.code, Code::Unknown);
        assert!(e.message.ends_with("requested pd is not leader of cluster"));
        c.transfer_pd_leader(1).unwrap();
        assert_eq!(c.pd_leader(), 1);
        let second = tso(&mut c, 1).unwrap();
        assert!(second > first);
        let e = tso(&mut c, 0).unwrap_err();
        assert_eq!(e.code, Code::Unknown);
        // The follower still checks the cluster id first.
        let e = c
            .pd_on::<p::Tso>(0, pdpb::TsoRequest::default(), NOW)
            .unwrap_err();
        assert_eq!(e.code, Code::FailedPrecondition);
    }

    #[test]
    fn scheduling_calls_on_a_follower_get_not_bootstrapped() {
        let mut c = cluster(2);
        let req = pdpb::GetOperatorRequest {
            header: header(&c),
            region_id: 1,
        };
        let r = c.pd_on::<p::GetOperator>(1, req, NOW).unwrap();
        let err = r.header.unwrap().error.unwrap();
        assert_eq!(err.r#type, pdpb::ErrorType::NotBootstrapped as i32);
        assert_eq!(err.message, "cluster is not bootstrapped");
    }

    #[test]
    fn bytes_entry_point_routes_by_member_and_unknown_members_are_unreachable() {
        let mut c = cluster(2);
        let body = Bytes::from(pdpb::GetMinTsRequest { header: header(&c) }.encode_to_vec());
        let e = c
            .handle_pd_on(1, p::GetMinTs::PATH, body.clone(), NOW)
            .unwrap_err();
        assert_eq!(e.message, "not leader");
        assert!(c.handle_pd(p::GetMinTs::PATH, body.clone(), NOW).is_ok());
        let e = c.handle_pd_on(5, p::GetMinTs::PATH, body, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::Unreachable);
    }

    #[test]
    #[cfg(feature = "sim")]
    fn simulated_network_gives_each_member_an_address() {
        use std::sync::Arc;
        use std::time::Duration;

        use tikv_core::GrpcCode;
        use tikv_driver::transport::Transport;

        use crate::server::SharedCluster;
        use crate::sim::{Faults, PD_ADDRESS, SimNetwork, SimRuntime, pd_member_address};

        let runtime = SimRuntime::new();
        let shared = SharedCluster::new(cluster(3));
        let network = Arc::new(SimNetwork::new(
            runtime.clone(),
            shared.clone(),
            Faults::none(),
            1,
        ));
        assert_eq!(pd_member_address(0), PD_ADDRESS);
        assert_eq!(
            shared.lock().pd_member_client_urls()[2],
            vec!["http://pd2.sim:2379".to_owned()]
        );
        let cluster_id = shared.lock().cluster_id();
        let store = Bytes::from(
            pdpb::GetStoreRequest {
                header: Some(pdpb::RequestHeader {
                    cluster_id,
                    ..Default::default()
                }),
                store_id: 1,
            }
            .encode_to_vec(),
        );
        let load = Bytes::from(
            tikv_proto::keyspacepb::LoadKeyspaceRequest {
                name: "DEFAULT".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let keyspace_path =
            <tikv_proto::keyspacepb::keyspace_service::LoadKeyspace as Method>::PATH;
        let net = network.clone();
        let steer = shared.clone();
        let out = runtime
            .block_on(
                async move {
                    let t = Duration::from_secs(1);
                    let mut codes = Vec::new();
                    for (address, path, body) in [
                        (pd_member_address(1), p::GetStore::PATH, store.clone()),
                        (pd_member_address(1), keyspace_path, load.clone()),
                        (pd_member_address(0), p::GetStore::PATH, store.clone()),
                    ] {
                        let r = net.unary(&address, path, body, t).await;
                        codes.push(r.err().map(|e| (e.status.code, e.status.message)));
                    }
                    steer.lock().transfer_pd_leader(1).unwrap();
                    for address in [pd_member_address(1), pd_member_address(0)] {
                        let r = net
                            .unary(&address, p::GetStore::PATH, store.clone(), t)
                            .await;
                        codes.push(r.err().map(|e| (e.status.code, e.status.message)));
                    }
                    let r = net.unary("pd7.sim:2379", keyspace_path, load, t).await;
                    codes.push(r.err().map(|e| (e.status.code, e.status.message)));
                    codes
                },
                Duration::from_secs(60),
            )
            .unwrap();
        let not_leader = Some((GrpcCode::Unavailable, "not leader".to_owned()));
        assert_eq!(out[0], not_leader);
        assert_eq!(out[1], not_leader);
        assert_eq!(out[2], None);
        assert_eq!(out[3], None);
        assert_eq!(out[4], not_leader);
        assert_eq!(out[5].as_ref().map(|e| e.0), Some(GrpcCode::Unavailable));
    }
}
