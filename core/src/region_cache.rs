//! The region cache: which region holds a key, at which epoch, led by which peer.
//!
//! A plain data structure with pure methods; the machines that route requests read it, and
//! region errors and PD replies update it. Entries expire after an idle TTL with jitter (an
//! access extends it, as client-go does), so regions nobody uses are reloaded from PD rather
//! than trusted forever, and entries never expire all at once.
//!
//! Misses are not resolved here: a lookup that misses tells the caller which key to locate,
//! and the caller asks PD (a `Locate` effect) and [`insert`](RegionCache::insert)s the answer.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use crate::key::{Key, KeyRange};
use crate::region::{Region, RegionId, RegionVerId, StoreId};
use crate::rng::Rng;
use crate::time::Instant;

#[derive(Clone, Debug)]
struct Entry {
    region: Region,
    expires_at: Instant,
}

/// What became of a leader update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderUpdate {
    /// The cached region now names the new leader.
    Switched,
    /// The new leader's store holds no peer of the cached region: the cached region is stale
    /// and was dropped.
    Invalidated,
    /// The region (at that epoch) is not cached; nothing changed.
    NotCached,
}

/// Cached regions, indexed by start key and by id.
#[derive(Clone, Debug)]
pub struct RegionCache {
    by_start: BTreeMap<Key, Entry>,
    by_id: BTreeMap<RegionId, Key>,
    ttl: Duration,
    jitter: Duration,
}

impl RegionCache {
    /// An empty cache whose entries live `ttl` plus up to `jitter` after their last use.
    pub fn new(ttl: Duration, jitter: Duration) -> Self {
        RegionCache {
            by_start: BTreeMap::new(),
            by_id: BTreeMap::new(),
            ttl,
            jitter,
        }
    }

    /// Number of cached regions (expired ones included until replaced or invalidated).
    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    fn deadline(&self, now: Instant, rng: &mut Rng) -> Instant {
        let jitter_ns = rng.below(self.jitter.as_nanos().min(u128::from(u64::MAX)) as u64);
        now + self.ttl + Duration::from_nanos(jitter_ns)
    }

    /// Marks an entry used: alive entries get a fresh deadline, expired ones are misses.
    fn touch(&mut self, start: &Key, now: Instant, rng: &mut Rng) -> Option<&Region> {
        let deadline = self.deadline(now, rng);
        let entry = self.by_start.get_mut(start)?;
        if entry.expires_at <= now {
            return None;
        }
        entry.expires_at = deadline;
        Some(&entry.region)
    }

    /// The cached region holding `key`, if cached and not expired.
    pub fn locate_key(&mut self, key: &Key, now: Instant, rng: &mut Rng) -> Option<&Region> {
        let start = self.start_of_key(key)?;
        self.touch(&start, now, rng)
    }

    fn start_of_key(&self, key: &Key) -> Option<Key> {
        let (start, entry) = self
            .by_start
            .range::<Key, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        entry.region.contains(key).then(|| start.clone())
    }

    /// The cached region holding the keys just below `end_key` (where a reverse scan ending
    /// at `end_key` starts); an empty `end_key` means the last region.
    pub fn locate_end_key(
        &mut self,
        end_key: &Key,
        now: Instant,
        rng: &mut Rng,
    ) -> Option<&Region> {
        let start = if end_key.is_empty() {
            let (start, entry) = self.by_start.iter().next_back()?;
            entry.region.range.is_unbounded().then(|| start.clone())?
        } else {
            let (start, entry) = self
                .by_start
                .range::<Key, _>((Bound::Unbounded, Bound::Excluded(end_key)))
                .next_back()?;
            entry
                .region
                .contains_end_key(end_key)
                .then(|| start.clone())?
        };
        self.touch(&start, now, rng)
    }

    /// The cached region with this id, if cached and not expired.
    pub fn get_by_id(&mut self, id: RegionId, now: Instant, rng: &mut Rng) -> Option<&Region> {
        let start = self.by_id.get(&id)?.clone();
        self.touch(&start, now, rng)
    }

    /// The cached region with this id, expired or not, without touching it.
    pub fn peek_by_id(&self, id: RegionId) -> Option<&Region> {
        self.by_id
            .get(&id)
            .and_then(|s| self.by_start.get(s))
            .map(|e| &e.region)
    }

    /// Caches `region`, dropping every cached region it overlaps — unless one of those is
    /// newer (a higher epoch version), in which case `region` is stale news and is ignored.
    /// Returns whether it was inserted.
    pub fn insert(&mut self, region: Region, now: Instant, rng: &mut Rng) -> bool {
        // A region without keys (start ≥ end) is malformed news from a server; caching it
        // could only shadow real regions.
        if region.range.is_empty() {
            return false;
        }
        let overlapping = self.overlapping(&region.range);
        for start in &overlapping {
            let cached = &self.by_start[start].region;
            let newer_range = cached.epoch.version > region.epoch.version;
            let newer_membership =
                cached.id == region.id && cached.epoch.conf_ver > region.epoch.conf_ver;
            if newer_range || newer_membership {
                return false;
            }
        }
        for start in overlapping {
            self.remove_start(&start);
        }
        // A region id can move its start key (a merge extends it leftwards): drop the old entry.
        if let Some(old_start) = self.by_id.get(&region.id).cloned() {
            self.remove_start(&old_start);
        }
        let expires_at = self.deadline(now, rng);
        self.by_id.insert(region.id, region.range.start().clone());
        self.by_start
            .insert(region.range.start().clone(), Entry { region, expires_at });
        true
    }

    /// Start keys of cached regions that overlap `range`.
    fn overlapping(&self, range: &KeyRange) -> Vec<Key> {
        let mut out = Vec::new();
        // The region starting at or before range.start may reach into the range.
        if let Some((start, e)) = self
            .by_start
            .range::<Key, _>((Bound::Unbounded, Bound::Included(range.start())))
            .next_back()
        {
            if e.region.range.intersect(range).is_some() {
                out.push(start.clone());
            }
        }
        let upper = if range.is_unbounded() {
            Bound::Unbounded
        } else {
            Bound::Excluded(range.end())
        };
        for (start, _) in self
            .by_start
            .range::<Key, _>((Bound::Excluded(range.start()), upper))
        {
            out.push(start.clone());
        }
        out
    }

    fn remove_start(&mut self, start: &Key) -> Option<Region> {
        let entry = self.by_start.remove(start)?;
        if self.by_id.get(&entry.region.id) == Some(start) {
            self.by_id.remove(&entry.region.id);
        }
        Some(entry.region)
    }

    /// Drops the cached region `ver` (only if the cache still holds that epoch or an older
    /// one: a newer entry already replaced what the caller saw).
    pub fn invalidate(&mut self, ver: RegionVerId) -> bool {
        let Some(start) = self.by_id.get(&ver.id).cloned() else {
            return false;
        };
        let cached = self.by_start[&start].region.ver_id();
        if cached.version > ver.version || cached.conf_ver > ver.conf_ver {
            return false;
        }
        self.remove_start(&start).is_some()
    }

    /// Records that the leader of region `ver` is now its peer on `store_id`.
    pub fn update_leader(&mut self, ver: RegionVerId, store_id: StoreId) -> LeaderUpdate {
        let Some(start) = self.by_id.get(&ver.id).cloned() else {
            return LeaderUpdate::NotCached;
        };
        // by_id and by_start are updated together, so an indexed start key is always cached.
        let entry = self
            .by_start
            .get_mut(&start)
            .expect("by_id points at a cached start key");
        if entry.region.ver_id() != ver {
            return LeaderUpdate::NotCached;
        }
        if entry.region.switch_leader_to_store(store_id) {
            LeaderUpdate::Switched
        } else {
            self.remove_start(&start);
            LeaderUpdate::Invalidated
        }
    }

    /// After a leader said "not leader" without naming a new one: if region `ver` is cached
    /// with its leader on `store_id`, makes the next voter (in peer order) the presumed
    /// leader, so that the retry asks another replica (which will name the real leader).
    /// Returns whether the cached leader moved.
    pub fn rotate_leader(&mut self, ver: RegionVerId, store_id: StoreId) -> bool {
        let Some(start) = self.by_id.get(&ver.id) else {
            return false;
        };
        let Some(entry) = self.by_start.get_mut(start) else {
            return false;
        };
        let region = &mut entry.region;
        if region.ver_id() != ver || region.peers.is_empty() {
            return false;
        }
        let current = region
            .peers
            .iter()
            .position(|p| p.store_id == store_id)
            .unwrap_or(region.peers.len() - 1);
        let n = region.peers.len();
        let next = (1..=n)
            .map(|i| region.peers[(current + i) % n])
            .find(|p| p.store_id != store_id && p.role != crate::region::PeerRole::Learner);
        match next {
            Some(p) => {
                region.leader = Some(p);
                true
            }
            None => false,
        }
    }

    /// Drops every region with a peer on `store_id` (e.g. the store was removed).
    pub fn invalidate_store(&mut self, store_id: StoreId) {
        let gone: Vec<Key> = self
            .by_start
            .iter()
            .filter(|(_, e)| e.region.peer_on_store(store_id).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for start in gone {
            self.remove_start(&start);
        }
    }

    /// Checks the cache's structural invariants: entries do not overlap, each is indexed by
    /// its start key and its id, and the id index points only at cached entries. Used by
    /// tests and fuzzing; `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut previous: Option<&Region> = None;
        for (start, entry) in &self.by_start {
            let r = &entry.region;
            if r.range.start() != start {
                return Err(format!(
                    "region {} indexed under {start} but starts at {}",
                    r.id,
                    r.range.start()
                ));
            }
            if self.by_id.get(&r.id) != Some(start) {
                return Err(format!("region {} missing from the id index", r.id));
            }
            if let Some(p) = previous {
                if p.range.is_unbounded() || p.range.end() > r.range.start() {
                    return Err(format!(
                        "regions {} {} and {} {} overlap",
                        p.id, p.range, r.id, r.range
                    ));
                }
            }
            previous = Some(r);
        }
        if self.by_id.len() != self.by_start.len() {
            return Err(format!(
                "{} ids for {} regions",
                self.by_id.len(),
                self.by_start.len()
            ));
        }
        Ok(())
    }

    /// Splits `range` into the cached regions covering it, in key order, each with the part
    /// of the range it holds. On the first gap or expired entry returns `Err(key)`: locate
    /// `key` and try again.
    pub fn split_range(
        &mut self,
        range: &KeyRange,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<Vec<(Region, KeyRange)>, Key> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut cursor = range.start().clone();
        loop {
            let Some(region) = self.locate_key(&cursor, now, rng) else {
                return Err(cursor);
            };
            // The region holds the cursor, and the cursor is inside `range`, so they overlap.
            let part = region
                .range
                .intersect(range)
                .expect("the region holds the cursor, which is in range");
            let region = region.clone();
            let next = region.range.end().clone();
            out.push((region, part));
            if next.is_empty() || (!range.is_unbounded() && next >= *range.end()) {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Groups `keys` by the cached region holding each, keeping the keys' order within a group
    /// and ordering groups by region start. On the first key with no live entry returns
    /// `Err(key)`: locate `key` and try again.
    pub fn group_keys<I>(
        &mut self,
        keys: I,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<Vec<(Region, Vec<Key>)>, Key>
    where
        I: IntoIterator<Item = Key>,
    {
        let mut groups: BTreeMap<Key, (Region, Vec<Key>)> = BTreeMap::new();
        for key in keys {
            let Some(region) = self.locate_key(&key, now, rng) else {
                return Err(key);
            };
            let start = region.range.start().clone();
            match groups.get_mut(&start) {
                Some((_, ks)) => ks.push(key),
                None => {
                    let region = region.clone();
                    groups.insert(start, (region, vec![key]));
                }
            }
        }
        Ok(groups.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Peer, PeerRole, RegionEpoch};

    fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
        Region {
            id,
            range: KeyRange::new(start, end),
            epoch: RegionEpoch {
                conf_ver: 1,
                version,
            },
            peers: vec![
                Peer {
                    id: id * 10 + 1,
                    store_id: 1,
                    role: PeerRole::Voter,
                },
                Peer {
                    id: id * 10 + 2,
                    store_id: 2,
                    role: PeerRole::Voter,
                },
            ],
            leader: None,
        }
    }

    const TTL: Duration = Duration::from_secs(600);

    fn cache() -> (RegionCache, Rng) {
        (
            RegionCache::new(TTL, Duration::from_secs(60)),
            Rng::seeded(1),
        )
    }

    fn at(secs: u64) -> Instant {
        Instant::from_origin(Duration::from_secs(secs))
    }

    #[test]
    fn locate_by_key_end_key_and_id() {
        let (mut c, mut rng) = cache();
        for r in [
            region(1, "", "b", 1),
            region(2, "b", "d", 1),
            region(3, "d", "", 1),
        ] {
            assert!(c.insert(r, at(0), &mut rng));
        }
        let id = |r: Option<&Region>| r.map(|r| r.id);
        assert_eq!(id(c.locate_key(&Key::EMPTY, at(0), &mut rng)), Some(1));
        assert_eq!(id(c.locate_key(&"b".into(), at(0), &mut rng)), Some(2));
        assert_eq!(id(c.locate_key(&"zzz".into(), at(0), &mut rng)), Some(3));
        assert_eq!(id(c.locate_end_key(&"b".into(), at(0), &mut rng)), Some(1));
        assert_eq!(id(c.locate_end_key(&"c".into(), at(0), &mut rng)), Some(2));
        assert_eq!(id(c.locate_end_key(&Key::EMPTY, at(0), &mut rng)), Some(3));
        assert_eq!(id(c.get_by_id(2, at(0), &mut rng)), Some(2));
    }

    #[test]
    fn gaps_are_misses() {
        let (mut c, mut rng) = cache();
        c.insert(region(2, "b", "d", 1), at(0), &mut rng);
        assert!(c.locate_key(&"a".into(), at(0), &mut rng).is_none());
        assert!(c.locate_key(&"d".into(), at(0), &mut rng).is_none());
        assert!(c.locate_end_key(&"b".into(), at(0), &mut rng).is_none());
    }

    #[test]
    fn entries_expire_when_idle_and_access_extends_them() {
        let (mut c, mut rng) = cache();
        c.insert(region(1, "", "", 1), at(0), &mut rng);
        assert!(c.locate_key(&"k".into(), at(500), &mut rng).is_some());
        // Used at 500 s: alive until at least 1100 s.
        assert!(c.locate_key(&"k".into(), at(1099), &mut rng).is_some());
        // Idle for TTL + max jitter: gone.
        assert!(
            c.locate_key(&"k".into(), at(1099 + 661), &mut rng)
                .is_none()
        );
    }

    #[test]
    fn split_replaces_parent_and_stale_news_is_ignored() {
        let (mut c, mut rng) = cache();
        c.insert(region(1, "a", "z", 1), at(0), &mut rng);
        // After a split, PD reports the two halves with a higher version.
        assert!(c.insert(region(1, "a", "m", 2), at(0), &mut rng));
        assert!(c.insert(region(5, "m", "z", 2), at(0), &mut rng));
        assert_eq!(c.len(), 2);
        // A late reply describing the pre-split region must not undo the split.
        assert!(!c.insert(region(1, "a", "z", 1), at(0), &mut rng));
        assert_eq!(
            c.locate_key(&"n".into(), at(0), &mut rng).map(|r| r.id),
            Some(5)
        );
    }

    /// Regression (found by the region_cache fuzz target): an empty region from a server
    /// panicked inside BTreeMap::range.
    #[test]
    fn empty_regions_are_refused() {
        let (mut c, mut rng) = cache();
        assert!(!c.insert(region(1, "b", "b", 1), at(0), &mut rng));
        assert!(!c.insert(region(2, "c", "a", 1), at(0), &mut rng));
        assert!(c.is_empty());
        c.check_invariants().unwrap();
        // Regression (same fuzz target): splitting an empty range hit an expect.
        c.insert(region(3, "", "", 1), at(0), &mut rng);
        assert_eq!(
            c.split_range(&KeyRange::new("k", "k"), at(0), &mut rng)
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn merge_moves_start_key() {
        let (mut c, mut rng) = cache();
        c.insert(region(1, "a", "m", 2), at(0), &mut rng);
        c.insert(region(5, "m", "z", 2), at(0), &mut rng);
        // Region 5 absorbs region 1.
        assert!(c.insert(region(5, "a", "z", 3), at(0), &mut rng));
        assert_eq!(c.len(), 1);
        assert_eq!(c.peek_by_id(1), None);
        assert_eq!(
            c.locate_key(&"b".into(), at(0), &mut rng).map(|r| r.id),
            Some(5)
        );
    }

    #[test]
    fn invalidate_respects_newer_entries() {
        let (mut c, mut rng) = cache();
        c.insert(region(1, "a", "z", 3), at(0), &mut rng);
        let old = RegionVerId {
            id: 1,
            conf_ver: 1,
            version: 2,
        };
        assert!(
            !c.invalidate(old),
            "a request at an older epoch must not evict newer info"
        );
        assert!(c.invalidate(region(1, "a", "z", 3).ver_id()));
        assert!(c.is_empty());
    }

    #[test]
    fn leader_updates() {
        let (mut c, mut rng) = cache();
        let r = region(1, "a", "z", 1);
        c.insert(r.clone(), at(0), &mut rng);
        assert_eq!(c.update_leader(r.ver_id(), 2), LeaderUpdate::Switched);
        assert_eq!(c.peek_by_id(1).unwrap().leader.unwrap().store_id, 2);
        assert_eq!(
            c.update_leader(
                RegionVerId {
                    version: 9,
                    ..r.ver_id()
                },
                1
            ),
            LeaderUpdate::NotCached
        );
        assert_eq!(c.update_leader(r.ver_id(), 7), LeaderUpdate::Invalidated);
        assert!(c.is_empty());
    }

    #[test]
    fn rotate_leader_moves_to_another_voter() {
        let (mut c, mut rng) = cache();
        let mut r = region(1, "a", "z", 1);
        r.peers.push(Peer {
            id: 13,
            store_id: 3,
            role: PeerRole::Learner,
        });
        r.leader = Some(r.peers[1]);
        c.insert(r.clone(), at(0), &mut rng);
        assert!(c.rotate_leader(r.ver_id(), 2));
        assert_eq!(
            c.peek_by_id(1).unwrap().leader.unwrap().store_id,
            1,
            "skips the learner, wraps around"
        );
        assert!(!c.rotate_leader(
            RegionVerId {
                version: 5,
                ..r.ver_id()
            },
            1
        ));
    }

    #[test]
    fn split_range_and_group_keys() {
        let (mut c, mut rng) = cache();
        for r in [
            region(1, "", "b", 1),
            region(2, "b", "d", 1),
            region(3, "d", "", 1),
        ] {
            c.insert(r, at(0), &mut rng);
        }
        let parts = c
            .split_range(&KeyRange::new("a", "c"), at(0), &mut rng)
            .unwrap();
        let got: Vec<_> = parts.iter().map(|(r, k)| (r.id, k.clone())).collect();
        assert_eq!(
            got,
            vec![(1, KeyRange::new("a", "b")), (2, KeyRange::new("b", "c"))]
        );
        let all = c.split_range(&KeyRange::all(), at(0), &mut rng).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[2].1.is_unbounded());

        let keys = ["e", "a", "c", "b"].map(Key::from);
        let groups = c.group_keys(keys, at(0), &mut rng).unwrap();
        let got: Vec<_> = groups.iter().map(|(r, ks)| (r.id, ks.len())).collect();
        assert_eq!(got, vec![(1, 1), (2, 2), (3, 1)]);

        c.invalidate(region(2, "b", "d", 1).ver_id());
        assert_eq!(
            c.group_keys(["a", "c"].map(Key::from), at(0), &mut rng)
                .unwrap_err(),
            Key::from("c")
        );
        assert_eq!(
            c.split_range(&KeyRange::all(), at(0), &mut rng)
                .unwrap_err(),
            Key::from("b")
        );
    }
}
