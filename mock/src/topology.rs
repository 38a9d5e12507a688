//! Cluster topology: stores, regions, peers, leaders and the id allocator, with the epoch
//! arithmetic TiKV applies on every change.
//!
//! Region boundaries are kept exactly as TiKV and PD store them ("region key space"): raw
//! user keys for API V1 RawKV, memcomparable-encoded keys for API V2 and for transactional
//! data. Regions always tile the whole key space without holes, as in a healthy cluster.
//!
//! Epoch rules (from TiKV's apply of admin commands, `right-derive-when-split = true`):
//! - a batch split into `n + 1` regions adds `n` to the version of every resulting region;
//!   the original region keeps the right-most range and the new regions take the left;
//! - a merge bumps the source's version and conf_ver (prepare), then the target's version
//!   becomes `max(source, target) + 1` and it absorbs the source's range;
//! - adding or removing a peer adds 1 to conf_ver; transferring the leader changes no epoch.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::metapb;

/// Whether a store's process is reachable (independent of its PD-visible state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Serving requests.
    Up,
    /// Unreachable: every request to it fails at the transport.
    Down,
}

/// A store as PD and the mock see it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreInfo {
    /// The metadata PD reports (address, labels, state, node state).
    pub meta: metapb::Store,
    /// Whether the process answers.
    pub liveness: Liveness,
}

impl StoreInfo {
    /// True when the store has been removed (tombstone).
    pub fn is_tombstone(&self) -> bool {
        self.meta.state == metapb::StoreState::Tombstone as i32
    }

    /// True when requests to the store can be served.
    pub fn is_serving(&self) -> bool {
        self.liveness == Liveness::Up && !self.is_tombstone()
    }
}

/// A region with its leader.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionInfo {
    /// The region metadata (range, epoch, peers) exactly as TiKV and PD report it.
    pub meta: metapb::Region,
    /// The id of the leader peer (always one of `meta.peers`).
    pub leader_peer_id: u64,
    /// The flashback's start ts while the region is in the flashback state (raftstore's
    /// `is_in_flashback` / `flashback_start_ts`): it then refuses other requests, splits,
    /// merges and leader moves.
    pub flashback_start_ts: Option<u64>,
}

impl RegionInfo {
    /// The region id.
    pub fn id(&self) -> u64 {
        self.meta.id
    }

    /// The current epoch (never absent in the mock).
    pub fn epoch(&self) -> metapb::RegionEpoch {
        self.meta.region_epoch.unwrap_or_default()
    }

    /// The leader peer.
    pub fn leader(&self) -> Option<&metapb::Peer> {
        self.meta.peers.iter().find(|p| p.id == self.leader_peer_id)
    }

    /// This region's peer on `store_id`, if it has one.
    pub fn peer_on(&self, store_id: u64) -> Option<&metapb::Peer> {
        self.meta.peers.iter().find(|p| p.store_id == store_id)
    }

    /// True if `key` (region key space) is in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.meta.start_key[..]
            && (self.meta.end_key.is_empty() || key < &self.meta.end_key[..])
    }

    fn epoch_mut(&mut self) -> &mut metapb::RegionEpoch {
        self.meta.region_epoch.get_or_insert_with(Default::default)
    }
}

/// Why a topology change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// No region with this id.
    #[error("region {0} not found")]
    RegionNotFound(u64),
    /// No store with this id.
    #[error("store {0} not found")]
    StoreNotFound(u64),
    /// The region is in the flashback state: no split, merge or leader move.
    #[error("region {region_id} is in flashback progress (start ts {start_ts})")]
    InFlashback {
        /// The region.
        region_id: u64,
        /// The flashback's start ts.
        start_ts: u64,
    },
    /// A split key is outside the region, equal to a boundary, or the keys are not distinct.
    #[error("invalid split key {key:?} for region {region_id}")]
    InvalidSplitKey {
        /// The region.
        region_id: u64,
        /// The offending key.
        key: Bytes,
    },
    /// Two regions to merge are not neighbours.
    #[error("regions {0} and {1} are not adjacent")]
    NotAdjacent(u64, u64),
    /// The store already has a peer of the region.
    #[error("region {region_id} already has a peer on store {store_id}")]
    PeerExists {
        /// The region.
        region_id: u64,
        /// The store.
        store_id: u64,
    },
    /// The region has no peer on this store.
    #[error("region {region_id} has no peer on store {store_id}")]
    NoPeer {
        /// The region.
        region_id: u64,
        /// The store.
        store_id: u64,
    },
    /// Removing the leader or the last peer is not allowed; transfer the leader first.
    #[error("cannot remove the leader peer of region {0}")]
    RemoveLeader(u64),
    /// A store that still holds peers cannot be removed.
    #[error("store {0} still has peers")]
    StoreHasPeers(u64),
    /// The store is a tombstone and cannot take peers or change state.
    #[error("store {0} is a tombstone")]
    StoreTombstone(u64),
}

/// Stores, regions and the id allocator.
#[derive(Clone, Debug)]
pub struct Topology {
    next_id: u64,
    stores: BTreeMap<u64, StoreInfo>,
    regions: BTreeMap<u64, RegionInfo>,
    /// Region start key → region id; regions tile the key space so this finds any key.
    by_start: BTreeMap<Bytes, u64>,
}

impl Topology {
    /// A cluster of `stores` stores and one region covering all keys, with a peer on each of
    /// the first `replicas` stores and the leader on the first.
    pub fn bootstrap(stores: usize, replicas: usize, store_version: &str) -> Self {
        let mut t = Topology {
            next_id: 1,
            stores: BTreeMap::new(),
            regions: BTreeMap::new(),
            by_start: BTreeMap::new(),
        };
        let mut store_ids = Vec::new();
        for _ in 0..stores.max(1) {
            store_ids.push(t.add_store(Vec::new(), store_version));
        }
        let region_id = t.alloc_id();
        let peers: Vec<metapb::Peer> = store_ids
            .iter()
            .take(replicas.clamp(1, store_ids.len()))
            .map(|&store_id| metapb::Peer {
                id: t.alloc_id(),
                store_id,
                ..Default::default()
            })
            .collect();
        // `replicas` is clamped to at least 1 and there is at least one store.
        let leader_peer_id = peers[0].id;
        let meta = metapb::Region {
            id: region_id,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers,
            ..Default::default()
        };
        t.by_start.insert(Bytes::new(), region_id);
        t.regions.insert(
            region_id,
            RegionInfo {
                meta,
                leader_peer_id,
                flashback_start_ts: None,
            },
        );
        t
    }

    /// Allocates a cluster-unique id (stores, regions and peers share the sequence, as in PD).
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Allocates `count` consecutive ids and returns the last one (PD's `AllocID` batch form).
    pub fn alloc_ids(&mut self, count: u32) -> u64 {
        let count = u64::from(count.max(1));
        self.next_id += count;
        self.next_id - 1
    }

    /// All stores, by id.
    pub fn stores(&self) -> impl Iterator<Item = &StoreInfo> {
        self.stores.values()
    }

    /// One store.
    pub fn store(&self, id: u64) -> Option<&StoreInfo> {
        self.stores.get(&id)
    }

    /// All regions in key order.
    pub fn regions(&self) -> impl DoubleEndedIterator<Item = &RegionInfo> {
        self.by_start.values().filter_map(|id| self.regions.get(id))
    }

    /// One region by id.
    pub fn region(&self, id: u64) -> Option<&RegionInfo> {
        self.regions.get(&id)
    }

    /// The region containing `key` (region key space).
    pub fn region_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        self.regions.get(id).filter(|r| r.contains(key))
    }

    /// The region immediately left of `region_id`.
    pub fn prev_region(&self, region_id: u64) -> Option<&RegionInfo> {
        let r = self.regions.get(&region_id)?;
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(&r.meta.start_key[..])))
            .next_back()?;
        self.regions.get(id)
    }

    /// Regions in key order starting with the one containing `key`.
    pub fn regions_from(&self, key: &[u8]) -> impl Iterator<Item = &RegionInfo> {
        let start = self
            .region_by_key(key)
            .map(|r| r.meta.start_key.clone())
            .unwrap_or_default();
        self.by_start
            .range(start..)
            .filter_map(|(_, id)| self.regions.get(id))
    }

    /// Adds an `Up` store with a placeholder address `store<id>` (a front sets the real one).
    pub fn add_store(&mut self, labels: Vec<(String, String)>, version: &str) -> u64 {
        let id = self.alloc_id();
        let meta = metapb::Store {
            id,
            address: format!("store{id}"),
            state: metapb::StoreState::Up as i32,
            node_state: metapb::NodeState::Serving as i32,
            labels: labels
                .into_iter()
                .map(|(key, value)| metapb::StoreLabel { key, value })
                .collect(),
            version: version.to_owned(),
            ..Default::default()
        };
        self.stores.insert(
            id,
            StoreInfo {
                meta,
                liveness: Liveness::Up,
            },
        );
        id
    }

    /// Replaces a store's labels (PD's `POST /pd/api/v1/store/{id}/label`).
    pub fn set_store_labels(
        &mut self,
        id: u64,
        labels: Vec<(String, String)>,
    ) -> Result<(), TopologyError> {
        let s = self
            .stores
            .get_mut(&id)
            .ok_or(TopologyError::StoreNotFound(id))?;
        s.meta.labels = labels
            .into_iter()
            .map(|(key, value)| metapb::StoreLabel { key, value })
            .collect();
        Ok(())
    }

    /// Sets the address clients dial for a store.
    pub fn set_store_address(&mut self, id: u64, address: String) -> Result<(), TopologyError> {
        let s = self
            .stores
            .get_mut(&id)
            .ok_or(TopologyError::StoreNotFound(id))?;
        s.meta.address = address;
        Ok(())
    }

    /// Makes a store unreachable or reachable again. PD keeps reporting it as `Up`, as real
    /// PD does until it notices missing heartbeats.
    pub fn set_liveness(&mut self, id: u64, liveness: Liveness) -> Result<(), TopologyError> {
        let s = self
            .stores
            .get_mut(&id)
            .ok_or(TopologyError::StoreNotFound(id))?;
        if s.is_tombstone() {
            return Err(TopologyError::StoreTombstone(id));
        }
        s.liveness = liveness;
        Ok(())
    }

    /// Removes a store that holds no peers: it becomes a tombstone (`NodeState::Removed`).
    pub fn remove_store(&mut self, id: u64) -> Result<(), TopologyError> {
        if !self.stores.contains_key(&id) {
            return Err(TopologyError::StoreNotFound(id));
        }
        if self.regions.values().any(|r| r.peer_on(id).is_some()) {
            return Err(TopologyError::StoreHasPeers(id));
        }
        let s = self
            .stores
            .get_mut(&id)
            .ok_or(TopologyError::StoreNotFound(id))?;
        s.meta.state = metapb::StoreState::Tombstone as i32;
        s.meta.node_state = metapb::NodeState::Removed as i32;
        s.liveness = Liveness::Down;
        Ok(())
    }

    /// Splits a region at `keys` (region key space). Returns the ids of the new regions in
    /// key order; the original region keeps the right-most part.
    pub fn split(&mut self, region_id: u64, keys: &[Bytes]) -> Result<Vec<u64>, TopologyError> {
        self.not_in_flashback(region_id)?;
        let region = self
            .regions
            .get(&region_id)
            .ok_or(TopologyError::RegionNotFound(region_id))?
            .clone();
        let mut keys: Vec<Bytes> = keys.to_vec();
        keys.sort();
        for (i, k) in keys.iter().enumerate() {
            let inside = k[..] > region.meta.start_key[..] && region.contains(k);
            if !inside || (i > 0 && keys[i - 1] == *k) {
                return Err(TopologyError::InvalidSplitKey {
                    region_id,
                    key: k.clone(),
                });
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let new_version = region.epoch().version + keys.len() as u64;
        let leader_store = region.leader().map(|p| p.store_id);
        let mut starts = vec![region.meta.start_key.clone()];
        starts.extend(keys.iter().cloned());
        let mut new_ids = Vec::with_capacity(keys.len());
        for w in starts.windows(2) {
            let id = self.alloc_id();
            let peers: Vec<metapb::Peer> = region
                .meta
                .peers
                .iter()
                .map(|p| metapb::Peer {
                    id: self.alloc_id(),
                    ..*p
                })
                .collect();
            let leader_peer_id = peers
                .iter()
                .find(|p| Some(p.store_id) == leader_store)
                // Regions never lose their last peer (the leader cannot be removed).
                .unwrap_or(&peers[0])
                .id;
            let meta = metapb::Region {
                id,
                start_key: w[0].clone(),
                end_key: w[1].clone(),
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: region.epoch().conf_ver,
                    version: new_version,
                }),
                peers,
                ..Default::default()
            };
            self.by_start.insert(w[0].clone(), id);
            self.regions.insert(
                id,
                RegionInfo {
                    meta,
                    leader_peer_id,
                    flashback_start_ts: None,
                },
            );
            new_ids.push(id);
        }
        // The derived (original) region keeps the last range; `keys` is non-empty here.
        let last = keys[keys.len() - 1].clone();
        let derived = self
            .regions
            .get_mut(&region_id)
            .ok_or(TopologyError::RegionNotFound(region_id))?;
        derived.meta.start_key = last.clone();
        derived.epoch_mut().version = new_version;
        self.by_start.insert(last, region_id);
        Ok(new_ids)
    }

    /// Splits whichever region contains `key` so that a region starts at `key`. Returns the
    /// id of the region that now starts at `key` (unchanged if one already did).
    pub fn split_at(&mut self, key: &[u8]) -> Result<u64, TopologyError> {
        let region = self
            .region_by_key(key)
            .ok_or(TopologyError::RegionNotFound(0))?;
        if region.meta.start_key[..] == *key {
            return Ok(region.id());
        }
        let id = region.id();
        self.split(id, &[Bytes::copy_from_slice(key)])?;
        // With right-derive the original region now starts at `key`.
        Ok(id)
    }

    /// Merges `source` into its neighbour `target`; the source disappears.
    pub fn merge(&mut self, source: u64, target: u64) -> Result<(), TopologyError> {
        self.not_in_flashback(source)?;
        self.not_in_flashback(target)?;
        let src = self
            .regions
            .get(&source)
            .ok_or(TopologyError::RegionNotFound(source))?
            .clone();
        let tgt = self
            .regions
            .get(&target)
            .ok_or(TopologyError::RegionNotFound(target))?
            .clone();
        let src_left_of_tgt =
            src.meta.end_key == tgt.meta.start_key && !src.meta.end_key.is_empty();
        let src_right_of_tgt =
            tgt.meta.end_key == src.meta.start_key && !tgt.meta.end_key.is_empty();
        if !src_left_of_tgt && !src_right_of_tgt {
            return Err(TopologyError::NotAdjacent(source, target));
        }
        // PrepareMerge bumps the source's version (and conf_ver) before CommitMerge reads it.
        let src_version = src.epoch().version + 1;
        let version = src_version.max(tgt.epoch().version) + 1;
        self.regions.remove(&source);
        self.by_start.remove(&src.meta.start_key);
        let t = self
            .regions
            .get_mut(&target)
            .ok_or(TopologyError::RegionNotFound(target))?;
        if src_left_of_tgt {
            self.by_start.remove(&t.meta.start_key);
            t.meta.start_key = src.meta.start_key.clone();
            self.by_start.insert(src.meta.start_key, target);
        } else {
            t.meta.end_key = src.meta.end_key;
        }
        t.epoch_mut().version = version;
        Ok(())
    }

    /// Puts a region in the flashback state (`Some(start_ts)`) or takes it out (`None`);
    /// like raftstore's admin commands, unconditional and epoch-neutral.
    pub fn set_flashback(
        &mut self,
        region_id: u64,
        start_ts: Option<u64>,
    ) -> Result<(), TopologyError> {
        let r = self
            .regions
            .get_mut(&region_id)
            .ok_or(TopologyError::RegionNotFound(region_id))?;
        r.flashback_start_ts = start_ts;
        Ok(())
    }

    /// Refuses an admin change of a region in the flashback state.
    fn not_in_flashback(&self, region_id: u64) -> Result<(), TopologyError> {
        match self
            .regions
            .get(&region_id)
            .and_then(|r| r.flashback_start_ts)
        {
            Some(start_ts) => Err(TopologyError::InFlashback {
                region_id,
                start_ts,
            }),
            None => Ok(()),
        }
    }

    /// Moves the leader of a region to its peer on `store_id`.
    pub fn transfer_leader(&mut self, region_id: u64, store_id: u64) -> Result<(), TopologyError> {
        self.not_in_flashback(region_id)?;
        let r = self
            .regions
            .get_mut(&region_id)
            .ok_or(TopologyError::RegionNotFound(region_id))?;
        let peer_id = r
            .peer_on(store_id)
            .ok_or(TopologyError::NoPeer {
                region_id,
                store_id,
            })?
            .id;
        r.leader_peer_id = peer_id;
        Ok(())
    }

    /// Adds a voter on `store_id`; returns the new peer id.
    pub fn add_peer(&mut self, region_id: u64, store_id: u64) -> Result<u64, TopologyError> {
        match self.stores.get(&store_id) {
            None => return Err(TopologyError::StoreNotFound(store_id)),
            Some(s) if s.is_tombstone() => return Err(TopologyError::StoreTombstone(store_id)),
            Some(_) => {}
        }
        let peer_id = self.alloc_id();
        let r = self
            .regions
            .get_mut(&region_id)
            .ok_or(TopologyError::RegionNotFound(region_id))?;
        if r.peer_on(store_id).is_some() {
            return Err(TopologyError::PeerExists {
                region_id,
                store_id,
            });
        }
        r.meta.peers.push(metapb::Peer {
            id: peer_id,
            store_id,
            ..Default::default()
        });
        r.epoch_mut().conf_ver += 1;
        Ok(peer_id)
    }

    /// Removes the region's peer on `store_id` (not the leader).
    pub fn remove_peer(&mut self, region_id: u64, store_id: u64) -> Result<(), TopologyError> {
        let r = self
            .regions
            .get_mut(&region_id)
            .ok_or(TopologyError::RegionNotFound(region_id))?;
        let peer_id = r
            .peer_on(store_id)
            .ok_or(TopologyError::NoPeer {
                region_id,
                store_id,
            })?
            .id;
        if peer_id == r.leader_peer_id {
            return Err(TopologyError::RemoveLeader(region_id));
        }
        r.meta.peers.retain(|p| p.id != peer_id);
        r.epoch_mut().conf_ver += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::bootstrap(3, 3, "8.5.0")
    }

    fn first_region(t: &Topology) -> u64 {
        t.regions().next().unwrap().id()
    }

    #[test]
    fn bootstrap_has_one_region_over_all_keys_with_leader_on_first_store() {
        let t = topo();
        assert_eq!(t.stores().count(), 3);
        let r = t.region_by_key(b"anything").unwrap();
        assert!(r.meta.start_key.is_empty() && r.meta.end_key.is_empty());
        assert_eq!(r.meta.peers.len(), 3);
        assert_eq!(r.leader().unwrap().store_id, 1);
        assert_eq!(
            r.epoch(),
            metapb::RegionEpoch {
                conf_ver: 1,
                version: 1
            }
        );
    }

    #[test]
    fn split_bumps_version_by_number_of_keys_and_original_keeps_right_part() {
        let mut t = topo();
        let id = first_region(&t);
        let new = t.split(id, &["b".into(), "d".into()]).unwrap();
        assert_eq!(new.len(), 2);
        let ranges: Vec<_> = t
            .regions()
            .map(|r| {
                (
                    r.meta.start_key.clone(),
                    r.meta.end_key.clone(),
                    r.id(),
                    r.epoch().version,
                )
            })
            .collect();
        assert_eq!(
            ranges,
            vec![
                (Bytes::new(), Bytes::from("b"), new[0], 3),
                (Bytes::from("b"), Bytes::from("d"), new[1], 3),
                (Bytes::from("d"), Bytes::new(), id, 3),
            ]
        );
        // New regions get fresh peer ids on the same stores, leader on the same store.
        let n = t.region(new[0]).unwrap();
        let o = t.region(id).unwrap();
        assert!(
            n.meta
                .peers
                .iter()
                .all(|p| o.meta.peers.iter().all(|q| q.id != p.id))
        );
        assert_eq!(n.leader().unwrap().store_id, o.leader().unwrap().store_id);
        assert_eq!(n.epoch().conf_ver, o.epoch().conf_ver);
    }

    #[test]
    fn split_rejects_keys_on_or_outside_boundaries() {
        let mut t = topo();
        let id = first_region(&t);
        t.split(id, &["m".into()]).unwrap();
        assert!(matches!(
            t.split(id, &["m".into()]),
            Err(TopologyError::InvalidSplitKey { .. })
        ));
        assert!(matches!(
            t.split(id, &["a".into()]),
            Err(TopologyError::InvalidSplitKey { .. })
        ));
        assert!(matches!(
            t.split(id, &["x".into(), "x".into()]),
            Err(TopologyError::InvalidSplitKey { .. })
        ));
    }

    #[test]
    fn split_at_returns_region_starting_at_key() {
        let mut t = topo();
        let id = t.split_at(b"k").unwrap();
        assert_eq!(t.region(id).unwrap().meta.start_key, Bytes::from("k"));
        assert_eq!(t.split_at(b"k").unwrap(), id);
    }

    #[test]
    fn merge_sets_survivor_version_above_both_and_removes_source() {
        let mut t = topo();
        let right = first_region(&t);
        let left = t.split(right, &["m".into()]).unwrap()[0];
        // left: v2, right: v2. Split right again so versions differ.
        t.split(right, &["t".into()]).unwrap(); // right: v3
        let left_v = t.region(left).unwrap().epoch().version;
        let right_v = t.region(right).unwrap().epoch().version;
        assert_eq!((left_v, right_v), (2, 3));
        let mid = t.region_by_key(b"n").unwrap().id();
        t.merge(left, mid).unwrap();
        assert!(t.region(left).is_none());
        let m = t.region(mid).unwrap();
        assert!(m.meta.start_key.is_empty());
        assert_eq!(m.meta.end_key, Bytes::from("t"));
        // source 2 → 3 at prepare; max(3, 3) + 1.
        assert_eq!(m.epoch().version, 4);
        assert_eq!(t.region_by_key(b"a").unwrap().id(), mid);
    }

    #[test]
    fn merge_of_non_neighbours_is_refused() {
        let mut t = topo();
        let id = first_region(&t);
        let new = t.split(id, &["b".into(), "d".into()]).unwrap();
        assert_eq!(
            t.merge(new[0], id),
            Err(TopologyError::NotAdjacent(new[0], id))
        );
    }

    #[test]
    fn merge_into_left_neighbour_extends_its_end() {
        let mut t = topo();
        let right = first_region(&t);
        let left = t.split(right, &["m".into()]).unwrap()[0];
        t.merge(right, left).unwrap();
        let l = t.region(left).unwrap();
        assert!(l.meta.start_key.is_empty() && l.meta.end_key.is_empty());
        assert_eq!(t.regions().count(), 1);
    }

    #[test]
    fn peer_changes_bump_conf_ver_and_leader_transfer_bumps_nothing() {
        let mut t = Topology::bootstrap(4, 3, "v");
        let id = first_region(&t);
        t.add_peer(id, 4).unwrap();
        assert_eq!(t.region(id).unwrap().epoch().conf_ver, 2);
        t.remove_peer(id, 2).unwrap();
        assert_eq!(t.region(id).unwrap().epoch().conf_ver, 3);
        assert_eq!(t.remove_peer(id, 1), Err(TopologyError::RemoveLeader(id)));
        let before = t.region(id).unwrap().epoch();
        t.transfer_leader(id, 4).unwrap();
        assert_eq!(t.region(id).unwrap().leader().unwrap().store_id, 4);
        assert_eq!(t.region(id).unwrap().epoch(), before);
        assert!(matches!(
            t.add_peer(id, 4),
            Err(TopologyError::PeerExists { .. })
        ));
    }

    #[test]
    fn store_with_peers_cannot_be_removed_until_empty() {
        let mut t = Topology::bootstrap(2, 2, "v");
        let id = first_region(&t);
        assert_eq!(t.remove_store(2), Err(TopologyError::StoreHasPeers(2)));
        t.remove_peer(id, 2).unwrap();
        t.remove_store(2).unwrap();
        assert!(t.store(2).unwrap().is_tombstone());
        assert!(!t.store(2).unwrap().is_serving());
    }

    #[test]
    fn alloc_ids_returns_last_of_block() {
        let mut t = topo();
        let a = t.alloc_id();
        let b = t.alloc_ids(5);
        assert_eq!(b, a + 5);
        assert_eq!(t.alloc_id(), b + 1);
    }

    #[test]
    fn prev_region_and_regions_from() {
        let mut t = topo();
        let id = first_region(&t);
        let new = t.split(id, &["b".into(), "d".into()]).unwrap();
        assert_eq!(t.prev_region(id).unwrap().id(), new[1]);
        assert!(t.prev_region(new[0]).is_none());
        let ids: Vec<_> = t.regions_from(b"c").map(|r| r.id()).collect();
        assert_eq!(ids, vec![new[1], id]);
    }
}
