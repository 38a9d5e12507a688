//! Regions, peers and stores: the routing facts the client learns from PD and TiKV.
//!
//! These are the client's own value types, converted from `metapb` at the edge, so that the
//! routing code works on checked data (a region always has an id and an epoch; a key range is
//! a [`KeyRange`]).

use std::fmt;

use tikv_proto::{kvrpcpb, metapb};

use crate::key::{Key, KeyRange};

/// A region's id.
pub type RegionId = u64;
/// A store's id.
pub type StoreId = u64;

/// A region's epoch: `conf_ver` grows with membership changes, `version` with splits and
/// merges. A request carrying a stale epoch is rejected with `EpochNotMatch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionEpoch {
    /// Configuration (membership) version.
    pub conf_ver: u64,
    /// Range version: bumped by splits and merges.
    pub version: u64,
}

impl RegionEpoch {
    /// Whether `self` is strictly older than `other` in either component and newer in none —
    /// the test for "this cached region is stale compared with that one".
    pub fn is_older_than(&self, other: &RegionEpoch) -> bool {
        (self.version < other.version && self.conf_ver <= other.conf_ver)
            || (self.conf_ver < other.conf_ver && self.version <= other.version)
    }
}

impl From<&metapb::RegionEpoch> for RegionEpoch {
    fn from(e: &metapb::RegionEpoch) -> Self {
        RegionEpoch {
            conf_ver: e.conf_ver,
            version: e.version,
        }
    }
}

impl From<RegionEpoch> for metapb::RegionEpoch {
    fn from(e: RegionEpoch) -> Self {
        metapb::RegionEpoch {
            conf_ver: e.conf_ver,
            version: e.version,
        }
    }
}

/// A region at one epoch: what a request must name to be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionVerId {
    /// The region's id.
    pub id: RegionId,
    /// Its `conf_ver`.
    pub conf_ver: u64,
    /// Its `version`.
    pub version: u64,
}

impl fmt::Display for RegionVerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "region {} (conf_ver {}, version {})",
            self.id, self.conf_ver, self.version
        )
    }
}

/// A peer's role in its region's Raft group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// A full voting member.
    #[default]
    Voter,
    /// A non-voting learner (e.g. TiFlash replicas).
    Learner,
    /// Joint consensus: voter being added.
    IncomingVoter,
    /// Joint consensus: voter being removed.
    DemotingVoter,
}

impl From<i32> for PeerRole {
    fn from(v: i32) -> Self {
        match metapb::PeerRole::try_from(v) {
            Ok(metapb::PeerRole::Learner) => PeerRole::Learner,
            Ok(metapb::PeerRole::IncomingVoter) => PeerRole::IncomingVoter,
            Ok(metapb::PeerRole::DemotingVoter) => PeerRole::DemotingVoter,
            // Unknown roles from a newer server are treated as voters: the conservative
            // choice for routing (a voter can serve leader-only requests if it is leader).
            _ => PeerRole::Voter,
        }
    }
}

impl From<PeerRole> for i32 {
    fn from(r: PeerRole) -> Self {
        match r {
            PeerRole::Voter => metapb::PeerRole::Voter as i32,
            PeerRole::Learner => metapb::PeerRole::Learner as i32,
            PeerRole::IncomingVoter => metapb::PeerRole::IncomingVoter as i32,
            PeerRole::DemotingVoter => metapb::PeerRole::DemotingVoter as i32,
        }
    }
}

/// One replica of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer's id (unique in the cluster).
    pub id: u64,
    /// The store holding it.
    pub store_id: StoreId,
    /// Its Raft role.
    pub role: PeerRole,
}

impl From<&metapb::Peer> for Peer {
    fn from(p: &metapb::Peer) -> Self {
        Peer {
            id: p.id,
            store_id: p.store_id,
            role: PeerRole::from(p.role),
        }
    }
}

impl From<Peer> for metapb::Peer {
    fn from(p: Peer) -> Self {
        metapb::Peer {
            id: p.id,
            store_id: p.store_id,
            role: p.role.into(),
            is_witness: false,
        }
    }
}

/// A region: its key range, epoch, peers and (if known) leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// The region's id.
    pub id: RegionId,
    /// The keys it holds, `[start, end)`; an empty end is unbounded.
    pub range: KeyRange,
    /// Its epoch.
    pub epoch: RegionEpoch,
    /// Its replicas.
    pub peers: Vec<Peer>,
    /// The leader, when known; always one of `peers`.
    pub leader: Option<Peer>,
}

impl Region {
    /// Converts PD's or TiKV's description of a region; `leader` is used only if it is one of
    /// the region's peers (anything else is stale information and is dropped).
    pub fn from_meta(meta: &metapb::Region, leader: Option<&metapb::Peer>) -> Self {
        let peers: Vec<Peer> = meta.peers.iter().map(Peer::from).collect();
        let leader = leader.and_then(|l| {
            peers
                .iter()
                .copied()
                .find(|p| p.id == l.id && p.store_id == l.store_id)
        });
        Region {
            id: meta.id,
            range: KeyRange::new(
                Key::from(meta.start_key.clone()),
                Key::from(meta.end_key.clone()),
            ),
            epoch: meta
                .region_epoch
                .as_ref()
                .map(RegionEpoch::from)
                .unwrap_or_default(),
            peers,
            leader,
        }
    }

    /// The region at its current epoch.
    pub fn ver_id(&self) -> RegionVerId {
        RegionVerId {
            id: self.id,
            conf_ver: self.epoch.conf_ver,
            version: self.epoch.version,
        }
    }

    /// Whether `key` belongs to this region.
    pub fn contains(&self, key: &Key) -> bool {
        self.range.contains(key)
    }

    /// Whether this region holds keys just below `end_key` (the region a reverse scan ending
    /// at `end_key` starts in): `start < end_key <= end`. An empty `end_key` means +inf and
    /// matches the last region.
    pub fn contains_end_key(&self, end_key: &Key) -> bool {
        if end_key.is_empty() {
            return self.range.is_unbounded();
        }
        self.range.start() < end_key && (self.range.is_unbounded() || end_key <= self.range.end())
    }

    /// The peer on `store_id`, if the region has one there.
    pub fn peer_on_store(&self, store_id: StoreId) -> Option<Peer> {
        self.peers.iter().copied().find(|p| p.store_id == store_id)
    }

    /// Switches the leader to the region's peer on `store_id`; `false` (and no change) when the
    /// region has no peer there, meaning this region information is stale.
    pub fn switch_leader_to_store(&mut self, store_id: StoreId) -> bool {
        match self.peer_on_store(store_id) {
            Some(p) => {
                self.leader = Some(p);
                true
            }
            None => false,
        }
    }

    /// The request context addressing `peer` of this region at its current epoch.
    pub fn context_for(&self, peer: Peer) -> kvrpcpb::Context {
        kvrpcpb::Context {
            region_id: self.id,
            region_epoch: Some(self.epoch.into()),
            peer: Some(peer.into()),
            ..Default::default()
        }
    }

    /// The region as `metapb` (e.g. for a mock's replies or for PD requests).
    pub fn to_meta(&self) -> metapb::Region {
        metapb::Region {
            id: self.id,
            start_key: self.range.start().to_bytes(),
            end_key: self.range.end().to_bytes(),
            region_epoch: Some(self.epoch.into()),
            peers: self.peers.iter().map(|p| (*p).into()).collect(),
            ..Default::default()
        }
    }
}

/// A store's state as PD reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StoreState {
    /// Serving.
    #[default]
    Up,
    /// Being decommissioned; still serves its regions.
    Offline,
    /// Removed from the cluster; must not be contacted.
    Tombstone,
}

/// A TiKV store: where to reach it and how it is labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    /// The store's id.
    pub id: StoreId,
    /// Its gRPC address, `host:port`.
    pub address: String,
    /// Its labels (zone, host, engine, ...), for replica selection.
    pub labels: Vec<(String, String)>,
    /// Its state.
    pub state: StoreState,
}

impl From<&metapb::Store> for Store {
    fn from(s: &metapb::Store) -> Self {
        let state = match metapb::StoreState::try_from(s.state) {
            Ok(metapb::StoreState::Offline) => StoreState::Offline,
            Ok(metapb::StoreState::Tombstone) => StoreState::Tombstone,
            _ => StoreState::Up,
        };
        // PD's node_state supersedes the legacy state: a removed node is gone.
        let state = if s.node_state == metapb::NodeState::Removed as i32 {
            StoreState::Tombstone
        } else {
            state
        };
        Store {
            id: s.id,
            address: s.address.clone(),
            labels: s
                .labels
                .iter()
                .map(|l| (l.key.clone(), l.value.clone()))
                .collect(),
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, start: &str, end: &str) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.as_bytes().to_vec().into(),
            end_key: end.as_bytes().to_vec().into(),
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 2,
            }),
            peers: vec![
                metapb::Peer {
                    id: 10,
                    store_id: 1,
                    ..Default::default()
                },
                metapb::Peer {
                    id: 11,
                    store_id: 2,
                    role: metapb::PeerRole::Learner as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn from_meta_keeps_only_a_member_leader() {
        let m = meta(3, "a", "c");
        let r = Region::from_meta(&m, Some(&m.peers[0]));
        assert_eq!(r.leader.map(|p| p.store_id), Some(1));
        assert_eq!(r.peers[1].role, PeerRole::Learner);
        let stranger = metapb::Peer {
            id: 99,
            store_id: 9,
            ..Default::default()
        };
        assert_eq!(Region::from_meta(&m, Some(&stranger)).leader, None);
        assert_eq!(Region::from_meta(&m, None).to_meta().peers.len(), 2);
    }

    #[test]
    fn end_key_containment_for_reverse_scans() {
        let r = Region::from_meta(&meta(3, "b", "d"), None);
        assert!(
            r.contains_end_key(&"d".into()),
            "keys just below d live here"
        );
        assert!(
            !r.contains_end_key(&"b".into()),
            "keys just below b live in the previous region"
        );
        assert!(!r.contains_end_key(&Key::EMPTY));
        let last = Region::from_meta(&meta(4, "d", ""), None);
        assert!(last.contains_end_key(&Key::EMPTY) && last.contains_end_key(&"z".into()));
    }

    #[test]
    fn epoch_ordering() {
        let e = |c, v| RegionEpoch {
            conf_ver: c,
            version: v,
        };
        assert!(e(1, 1).is_older_than(&e(1, 2)));
        assert!(e(1, 1).is_older_than(&e(2, 1)));
        assert!(
            !e(1, 2).is_older_than(&e(2, 1)),
            "incomparable epochs are not older"
        );
        assert!(!e(1, 1).is_older_than(&e(1, 1)));
    }

    #[test]
    fn switch_leader_requires_membership() {
        let mut r = Region::from_meta(&meta(3, "a", "c"), None);
        assert!(r.switch_leader_to_store(2));
        assert_eq!(r.leader.unwrap().id, 11);
        assert!(!r.switch_leader_to_store(7));
        assert_eq!(r.leader.unwrap().id, 11);
    }
}
