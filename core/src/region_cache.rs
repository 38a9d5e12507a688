//! The region cache: which region holds a key, at which epoch, led by which peer.
//!
//! Shared by every operation of a client, so built for concurrent reads: a lookup takes a
//! read lock for the lookup alone and hands back an [`Arc`] of the region, and marks the
//! entry used with an atomic store, so cache hits from many tasks never wait for each other
//! and never hold the lock while the caller builds its request. Region errors and PD replies
//! update it under the write lock, briefly.
//!
//! Entries expire after an idle TTL with jitter (an access extends it, as client-go does), so
//! regions nobody uses are reloaded from PD rather than trusted forever, and entries never
//! expire all at once. Each entry draws its jitter once, when cached, so a hit needs no
//! random draw (and no `&mut`).
//!
//! Misses are not resolved here: a lookup that misses tells the caller which key to locate,
//! and the caller asks PD (a `Locate` effect) and [`insert`](RegionCache::insert)s the answer.
//! The cache is deterministic: under one task (tests, simulation), the same calls give the
//! same results.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crate::id_map::IdMap;
use crate::key::{Key, KeyRange};
use crate::region::{Region, RegionId, RegionVerId, StoreId};
use crate::rng::Rng;
use crate::time::Instant;

#[derive(Debug)]
struct Entry {
    region: Arc<Region>,
    /// How long the entry lives after its last use: the TTL plus this entry's jitter.
    lifetime_ns: u64,
    /// When it was last used, in nanoseconds on the client's clock. Lookups move it forward
    /// under the read lock, hence atomic.
    last_used_ns: AtomicU64,
}

fn nanos(at: Instant) -> u64 {
    u64::try_from(at.since_origin().as_nanos()).unwrap_or(u64::MAX)
}

impl Entry {
    /// The region if the entry is alive at `now`, marking it used.
    fn touch(&self, now: Instant) -> Option<&Arc<Region>> {
        let now = nanos(now);
        let last = self.last_used_ns.load(Ordering::Relaxed);
        if now >= last.saturating_add(self.lifetime_ns) {
            return None;
        }
        // `fetch_max`: a lookup that read the clock earlier must not move the mark back.
        self.last_used_ns.fetch_max(now, Ordering::Relaxed);
        Some(&self.region)
    }
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

/// Items grouped by region ([`RegionCache::group_by_region`]).
#[derive(Debug)]
pub struct Grouped<T> {
    /// Each cached region with the items it holds, by region start.
    pub groups: Vec<(Arc<Region>, Vec<T>)>,
    /// The items whose region is not cached (or expired), in their order.
    pub missing: Vec<T>,
}

/// The two indexes, kept in step under one lock.
#[derive(Debug, Default)]
struct Index {
    by_start: BTreeMap<Key, Entry>,
    by_id: IdMap<Key>,
}

/// Cached regions, indexed by start key and by id; safe to share between threads.
#[derive(Debug)]
pub struct RegionCache {
    index: RwLock<Index>,
    ttl: Duration,
    jitter: Duration,
}

impl RegionCache {
    /// An empty cache whose entries live `ttl` plus up to `jitter` after their last use.
    pub fn new(ttl: Duration, jitter: Duration) -> Self {
        RegionCache {
            index: RwLock::new(Index::default()),
            ttl,
            jitter,
        }
    }

    // Every update keeps both indexes consistent before it returns and none panics midway, so
    // a lock poisoned by a panic elsewhere still guards a valid cache.
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of cached regions (expired ones included until replaced or invalidated).
    pub fn len(&self) -> usize {
        self.read().by_start.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.read().by_start.is_empty()
    }

    /// The cached region holding `key`, if cached and not expired.
    pub fn locate_key(&self, key: &Key, now: Instant) -> Option<Arc<Region>> {
        self.read().locate_key(key, now).cloned()
    }

    /// The cached region holding the keys just below `end_key` (where a reverse scan ending
    /// at `end_key` starts); an empty `end_key` means the last region.
    pub fn locate_end_key(&self, end_key: &Key, now: Instant) -> Option<Arc<Region>> {
        let index = self.read();
        let entry = if end_key.is_empty() {
            let (_, entry) = index.by_start.iter().next_back()?;
            entry.region.range.is_unbounded().then_some(entry)?
        } else {
            let (_, entry) = index
                .by_start
                .range::<Key, _>((Bound::Unbounded, Bound::Excluded(end_key)))
                .next_back()?;
            entry.region.contains_end_key(end_key).then_some(entry)?
        };
        entry.touch(now).cloned()
    }

    /// The cached region with this id, if cached and not expired.
    pub fn get_by_id(&self, id: RegionId, now: Instant) -> Option<Arc<Region>> {
        let index = self.read();
        index.entry_by_id(id)?.touch(now).cloned()
    }

    /// The cached region with this id, expired or not, without touching it.
    pub fn peek_by_id(&self, id: RegionId) -> Option<Arc<Region>> {
        let index = self.read();
        index.entry_by_id(id).map(|e| e.region.clone())
    }

    /// Caches `region`, dropping every cached region it overlaps — unless one of those is
    /// newer (a higher epoch version), in which case `region` is stale news and is ignored.
    /// Returns whether it was inserted. `rng` draws the entry's TTL jitter.
    pub fn insert(&self, region: impl Into<Arc<Region>>, now: Instant, rng: &mut Rng) -> bool {
        let region = region.into();
        // A region without keys (start ≥ end) is malformed news from a server; caching it
        // could only shadow real regions.
        if region.range.is_empty() {
            return false;
        }
        let jitter = rng.below(u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX));
        let lifetime_ns = u64::try_from(self.ttl.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(jitter);
        let mut index = self.write();
        let overlapping = index.overlapping(&region.range);
        for start in &overlapping {
            let cached = &index.by_start[start].region;
            let newer_range = cached.epoch.version > region.epoch.version;
            let newer_membership =
                cached.id == region.id && cached.epoch.conf_ver > region.epoch.conf_ver;
            if newer_range || newer_membership {
                return false;
            }
        }
        for start in overlapping {
            index.remove_start(&start);
        }
        // A region id can move its start key (a merge extends it leftwards): drop the old entry.
        if let Some(old_start) = index.by_id.get(&region.id).cloned() {
            index.remove_start(&old_start);
        }
        let start = region.range.start().clone();
        index.by_id.insert(region.id, start.clone());
        index.by_start.insert(
            start,
            Entry {
                region,
                lifetime_ns,
                last_used_ns: AtomicU64::new(nanos(now)),
            },
        );
        true
    }

    /// Drops the cached region `ver` (only if the cache still holds that epoch or an older
    /// one: a newer entry already replaced what the caller saw).
    pub fn invalidate(&self, ver: RegionVerId) -> bool {
        let mut index = self.write();
        let Some(start) = index.by_id.get(&ver.id).cloned() else {
            return false;
        };
        let cached = index.by_start[&start].region.ver_id();
        if cached.version > ver.version || cached.conf_ver > ver.conf_ver {
            return false;
        }
        index.remove_start(&start).is_some()
    }

    /// Records that the leader of region `ver` is now its peer on `store_id`.
    pub fn update_leader(&self, ver: RegionVerId, store_id: StoreId) -> LeaderUpdate {
        let mut index = self.write();
        let Some(start) = index.by_id.get(&ver.id).cloned() else {
            return LeaderUpdate::NotCached;
        };
        let Some(entry) = index.by_start.get_mut(&start) else {
            return LeaderUpdate::NotCached;
        };
        if entry.region.ver_id() != ver {
            return LeaderUpdate::NotCached;
        }
        // Copy on write: operations holding the old `Arc` keep what they routed with.
        if Arc::make_mut(&mut entry.region).switch_leader_to_store(store_id) {
            LeaderUpdate::Switched
        } else {
            index.remove_start(&start);
            LeaderUpdate::Invalidated
        }
    }

    /// After a leader said "not leader" without naming a new one: if region `ver` is cached
    /// with its leader on `store_id`, makes the next voter (in peer order) the presumed
    /// leader, so that the retry asks another replica (which will name the real leader).
    /// Returns whether the cached leader moved.
    pub fn rotate_leader(&self, ver: RegionVerId, store_id: StoreId) -> bool {
        let mut index = self.write();
        let Some(start) = index.by_id.get(&ver.id).cloned() else {
            return false;
        };
        let Some(entry) = index.by_start.get_mut(&start) else {
            return false;
        };
        let region = &entry.region;
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
                Arc::make_mut(&mut entry.region).leader = Some(p);
                true
            }
            None => false,
        }
    }

    /// Drops every region with a peer on `store_id` (e.g. the store was removed).
    pub fn invalidate_store(&self, store_id: StoreId) {
        let mut index = self.write();
        let gone: Vec<Key> = index
            .by_start
            .iter()
            .filter(|(_, e)| e.region.peer_on_store(store_id).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for start in gone {
            index.remove_start(&start);
        }
    }

    /// Checks the cache's structural invariants: entries do not overlap, each is indexed by
    /// its start key and its id, and the id index points only at cached entries. Used by
    /// tests and fuzzing; `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let index = self.read();
        let mut previous: Option<&Region> = None;
        for (start, entry) in &index.by_start {
            let r = &entry.region;
            if r.range.start() != start {
                return Err(format!(
                    "region {} indexed under {start} but starts at {}",
                    r.id,
                    r.range.start()
                ));
            }
            if index.by_id.get(&r.id) != Some(start) {
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
        if index.by_id.len() != index.by_start.len() {
            return Err(format!(
                "{} ids for {} regions",
                index.by_id.len(),
                index.by_start.len()
            ));
        }
        Ok(())
    }

    /// Splits `range` into the cached regions covering it, in key order, each with the part
    /// of the range it holds. On the first gap or expired entry returns `Err(key)`: locate
    /// `key` and try again.
    pub fn split_range(
        &self,
        range: &KeyRange,
        now: Instant,
    ) -> Result<Vec<(Arc<Region>, KeyRange)>, Key> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.read();
        let mut out = Vec::new();
        let mut cursor = range.start().clone();
        loop {
            let Some(region) = index.locate_key(&cursor, now) else {
                return Err(cursor);
            };
            // The region holds the cursor, and the cursor is inside `range`, so they overlap;
            // should that ever not hold, the cursor is reported as a miss to locate afresh.
            let Some(part) = region.range.intersect(range) else {
                return Err(cursor);
            };
            let next = region.range.end().clone();
            out.push((region.clone(), part));
            if next.is_empty() || (!range.is_unbounded() && next >= *range.end()) {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Groups `items` by the cached region holding each one's key (`key_of`), keeping their
    /// order within a group and ordering groups by region start, under one read lock. Items
    /// whose key has no live entry come back apart, in their order, to be located.
    pub fn group_by_region<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key_of: impl Fn(&T) -> &Key,
        now: Instant,
    ) -> Grouped<T> {
        let index = self.read();
        let mut groups: BTreeMap<Key, (Arc<Region>, Vec<T>)> = BTreeMap::new();
        let mut missing = Vec::new();
        for item in items {
            let Some(region) = index.locate_key(key_of(&item), now) else {
                missing.push(item);
                continue;
            };
            match groups.get_mut(region.range.start()) {
                Some((_, group)) => group.push(item),
                None => {
                    let start = region.range.start().clone();
                    groups.insert(start, (region.clone(), vec![item]));
                }
            }
        }
        Grouped {
            groups: groups.into_values().collect(),
            missing,
        }
    }
}

impl Index {
    fn locate_key(&self, key: &Key, now: Instant) -> Option<&Arc<Region>> {
        let (_, entry) = self
            .by_start
            .range::<Key, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        if !entry.region.contains(key) {
            return None;
        }
        entry.touch(now)
    }

    fn entry_by_id(&self, id: RegionId) -> Option<&Entry> {
        self.by_id.get(&id).and_then(|s| self.by_start.get(s))
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

    fn remove_start(&mut self, start: &Key) -> Option<Arc<Region>> {
        let entry = self.by_start.remove(start)?;
        if self.by_id.get(&entry.region.id) == Some(start) {
            self.by_id.remove(&entry.region.id);
        }
        Some(entry.region)
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
        let (c, mut rng) = cache();
        for r in [
            region(1, "", "b", 1),
            region(2, "b", "d", 1),
            region(3, "d", "", 1),
        ] {
            assert!(c.insert(r, at(0), &mut rng));
        }
        let id = |r: Option<Arc<Region>>| r.map(|r| r.id);
        assert_eq!(id(c.locate_key(&Key::EMPTY, at(0))), Some(1));
        assert_eq!(id(c.locate_key(&"b".into(), at(0))), Some(2));
        assert_eq!(id(c.locate_key(&"zzz".into(), at(0))), Some(3));
        assert_eq!(id(c.locate_end_key(&"b".into(), at(0))), Some(1));
        assert_eq!(id(c.locate_end_key(&"c".into(), at(0))), Some(2));
        assert_eq!(id(c.locate_end_key(&Key::EMPTY, at(0))), Some(3));
        assert_eq!(id(c.get_by_id(2, at(0))), Some(2));
    }

    #[test]
    fn gaps_are_misses() {
        let (c, mut rng) = cache();
        c.insert(region(2, "b", "d", 1), at(0), &mut rng);
        assert!(c.locate_key(&"a".into(), at(0)).is_none());
        assert!(c.locate_key(&"d".into(), at(0)).is_none());
        assert!(c.locate_end_key(&"b".into(), at(0)).is_none());
    }

    #[test]
    fn entries_expire_when_idle_and_access_extends_them() {
        let (c, mut rng) = cache();
        c.insert(region(1, "", "", 1), at(0), &mut rng);
        assert!(c.locate_key(&"k".into(), at(500)).is_some());
        // Used at 500 s: alive until at least 1100 s.
        assert!(c.locate_key(&"k".into(), at(1099)).is_some());
        // Idle for TTL + max jitter: gone.
        assert!(c.locate_key(&"k".into(), at(1099 + 661)).is_none());
    }

    #[test]
    fn split_replaces_parent_and_stale_news_is_ignored() {
        let (c, mut rng) = cache();
        c.insert(region(1, "a", "z", 1), at(0), &mut rng);
        // After a split, PD reports the two halves with a higher version.
        assert!(c.insert(region(1, "a", "m", 2), at(0), &mut rng));
        assert!(c.insert(region(5, "m", "z", 2), at(0), &mut rng));
        assert_eq!(c.len(), 2);
        // A late reply describing the pre-split region must not undo the split.
        assert!(!c.insert(region(1, "a", "z", 1), at(0), &mut rng));
        assert_eq!(c.locate_key(&"n".into(), at(0)).map(|r| r.id), Some(5));
    }

    /// Regression (found by the region_cache fuzz target): an empty region from a server
    /// panicked inside BTreeMap::range.
    #[test]
    fn empty_regions_are_refused() {
        let (c, mut rng) = cache();
        assert!(!c.insert(region(1, "b", "b", 1), at(0), &mut rng));
        assert!(!c.insert(region(2, "c", "a", 1), at(0), &mut rng));
        assert!(c.is_empty());
        c.check_invariants().unwrap();
        // Regression (same fuzz target): splitting an empty range hit an expect.
        c.insert(region(3, "", "", 1), at(0), &mut rng);
        assert_eq!(
            c.split_range(&KeyRange::new("k", "k"), at(0)).unwrap(),
            vec![]
        );
    }

    #[test]
    fn merge_moves_start_key() {
        let (c, mut rng) = cache();
        c.insert(region(1, "a", "m", 2), at(0), &mut rng);
        c.insert(region(5, "m", "z", 2), at(0), &mut rng);
        // Region 5 absorbs region 1.
        assert!(c.insert(region(5, "a", "z", 3), at(0), &mut rng));
        assert_eq!(c.len(), 1);
        assert_eq!(c.peek_by_id(1), None);
        assert_eq!(c.locate_key(&"b".into(), at(0)).map(|r| r.id), Some(5));
    }

    #[test]
    fn invalidate_respects_newer_entries() {
        let (c, mut rng) = cache();
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
        let (c, mut rng) = cache();
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
        let (c, mut rng) = cache();
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
    fn split_range_and_group_by_region() {
        let (c, mut rng) = cache();
        for r in [
            region(1, "", "b", 1),
            region(2, "b", "d", 1),
            region(3, "d", "", 1),
        ] {
            c.insert(r, at(0), &mut rng);
        }
        let parts = c.split_range(&KeyRange::new("a", "c"), at(0)).unwrap();
        let got: Vec<_> = parts.iter().map(|(r, k)| (r.id, k.clone())).collect();
        assert_eq!(
            got,
            vec![(1, KeyRange::new("a", "b")), (2, KeyRange::new("b", "c"))]
        );
        let all = c.split_range(&KeyRange::all(), at(0)).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[2].1.is_unbounded());

        let keys = ["e", "a", "c", "b"].map(Key::from);
        let Grouped { groups, missing } = c.group_by_region(keys, |k| k, at(0));
        let got: Vec<_> = groups.iter().map(|(r, ks)| (r.id, ks.clone())).collect();
        let k = |s: &str| Key::from(s);
        assert_eq!(
            got,
            vec![
                (1, vec![k("a")]),
                (2, vec![k("c"), k("b")]),
                (3, vec![k("e")])
            ]
        );
        assert!(missing.is_empty());

        c.invalidate(region(2, "b", "d", 1).ver_id());
        let Grouped { groups, missing } =
            c.group_by_region(["a", "c", "d", "bb"].map(Key::from), |k| k, at(0));
        assert_eq!(groups.len(), 2);
        assert_eq!(missing, vec![k("c"), k("bb")], "misses come back in order");
        assert_eq!(
            c.split_range(&KeyRange::all(), at(0)).unwrap_err(),
            Key::from("b")
        );
    }

    /// Lookups from many threads while another thread splits and merges regions: every hit
    /// holds its key, and the indexes stay consistent.
    #[test]
    fn concurrent_lookups_and_updates() {
        let c = RegionCache::new(TTL, Duration::from_secs(60));
        let mut rng = Rng::seeded(3);
        c.insert(region(1, "", "", 1), at(0), &mut rng);
        std::thread::scope(|scope| {
            for t in 0..3 {
                let c = &c;
                scope.spawn(move || {
                    for i in 0..2000u32 {
                        let key = Key::from(format!("k{}", (i * 7 + t) % 100));
                        if let Some(r) = c.locate_key(&key, at(1)) {
                            assert!(r.contains(&key), "region {} does not hold {key}", r.id);
                        }
                    }
                });
            }
            let c = &c;
            scope.spawn(move || {
                let mut rng = Rng::seeded(4);
                for v in 2..400u64 {
                    let split = format!("k{}", v % 90 + 5);
                    c.insert(region(1, "", &split, v), at(1), &mut rng);
                    c.insert(region(2, &split, "", v), at(1), &mut rng);
                }
            });
        });
        c.check_invariants().unwrap();
        assert_eq!(c.len(), 2);
    }
}
