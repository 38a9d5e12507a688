//! The store cache: store id → address, labels and state, as PD last reported them.
//!
//! Shared by every operation of a client like the region cache: lookups take a read lock for
//! the lookup alone and hand back an [`Arc`] of the store. A miss (or an entry dropped because
//! the store's address may have changed) tells the caller to ask PD (`GetStore`) and
//! [`insert`](StoreCache::insert) the answer. Tombstone stores are remembered as such, so that
//! regions listing them are not routed there.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::region::{Store, StoreId, StoreState};

/// What the cache knows about a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLookup {
    /// Cached and serving: send to this address.
    Ready(Arc<Store>),
    /// PD says the store is gone; do not send there.
    Tombstone,
    /// Not cached: resolve it through PD.
    Unknown,
}

/// Cached stores, by id; safe to share between threads.
#[derive(Debug, Default)]
pub struct StoreCache {
    stores: RwLock<BTreeMap<StoreId, Arc<Store>>>,
}

impl StoreCache {
    /// An empty cache.
    pub fn new() -> Self {
        StoreCache::default()
    }

    // Updates are single map operations: a lock poisoned elsewhere still guards a valid map.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<StoreId, Arc<Store>>> {
        self.stores.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<StoreId, Arc<Store>>> {
        self.stores.write().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known about store `id`.
    pub fn lookup(&self, id: StoreId) -> StoreLookup {
        match self.read().get(&id) {
            None => StoreLookup::Unknown,
            Some(s) if s.state == StoreState::Tombstone || s.address.is_empty() => {
                StoreLookup::Tombstone
            }
            Some(s) => StoreLookup::Ready(s.clone()),
        }
    }

    /// Records PD's answer for a store (a tombstone or removed store included).
    pub fn insert(&self, store: Store) {
        self.write().insert(store.id, Arc::new(store));
    }

    /// Forgets store `id`, so the next use resolves it through PD again (its address or
    /// identity may have changed, e.g. after `StoreNotMatch`).
    pub fn invalidate(&self, id: StoreId) {
        self.write().remove(&id);
    }

    /// Every cached store, by id.
    pub fn all(&self) -> Vec<Arc<Store>> {
        self.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64, address: &str, state: StoreState) -> Store {
        Store {
            id,
            address: address.into(),
            labels: vec![],
            state,
        }
    }

    #[test]
    fn lookup_states() {
        let c = StoreCache::new();
        assert_eq!(c.lookup(1), StoreLookup::Unknown);
        c.insert(store(1, "a:1", StoreState::Up));
        c.insert(store(2, "b:1", StoreState::Tombstone));
        c.insert(store(3, "", StoreState::Up));
        assert!(matches!(c.lookup(1), StoreLookup::Ready(s) if s.address == "a:1"));
        assert_eq!(c.lookup(2), StoreLookup::Tombstone);
        assert_eq!(c.lookup(3), StoreLookup::Tombstone, "no address: unusable");
        c.invalidate(1);
        assert_eq!(c.lookup(1), StoreLookup::Unknown);
        assert_eq!(c.all().len(), 2);
    }
}
