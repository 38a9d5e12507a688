//! The store cache: store id → address, labels and state, as PD last reported them.
//!
//! Pure data like the region cache. A miss (or an entry dropped because the store's address may
//! have changed) tells the caller to ask PD (`GetStore`) and [`insert`](StoreCache::insert) the
//! answer. Tombstone stores are remembered as such, so that regions listing them are not routed
//! there.

use std::collections::BTreeMap;

use crate::region::{Store, StoreId, StoreState};

/// What the cache knows about a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreLookup<'a> {
    /// Cached and serving: send to this address.
    Ready(&'a Store),
    /// PD says the store is gone; do not send there.
    Tombstone,
    /// Not cached: resolve it through PD.
    Unknown,
}

/// Cached stores, by id.
#[derive(Clone, Debug, Default)]
pub struct StoreCache {
    stores: BTreeMap<StoreId, Store>,
}

impl StoreCache {
    /// An empty cache.
    pub fn new() -> Self {
        StoreCache::default()
    }

    /// What is known about store `id`.
    pub fn lookup(&self, id: StoreId) -> StoreLookup<'_> {
        match self.stores.get(&id) {
            None => StoreLookup::Unknown,
            Some(s) if s.state == StoreState::Tombstone || s.address.is_empty() => {
                StoreLookup::Tombstone
            }
            Some(s) => StoreLookup::Ready(s),
        }
    }

    /// Records PD's answer for a store (a tombstone or removed store included).
    pub fn insert(&mut self, store: Store) {
        self.stores.insert(store.id, store);
    }

    /// Forgets store `id`, so the next use resolves it through PD again (its address or
    /// identity may have changed, e.g. after `StoreNotMatch`).
    pub fn invalidate(&mut self, id: StoreId) {
        self.stores.remove(&id);
    }

    /// Every cached store, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Store> {
        self.stores.values()
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
        let mut c = StoreCache::new();
        assert_eq!(c.lookup(1), StoreLookup::Unknown);
        c.insert(store(1, "a:1", StoreState::Up));
        c.insert(store(2, "b:1", StoreState::Tombstone));
        c.insert(store(3, "", StoreState::Up));
        assert!(matches!(c.lookup(1), StoreLookup::Ready(s) if s.address == "a:1"));
        assert_eq!(c.lookup(2), StoreLookup::Tombstone);
        assert_eq!(c.lookup(3), StoreLookup::Tombstone, "no address: unusable");
        c.invalidate(1);
        assert_eq!(c.lookup(1), StoreLookup::Unknown);
        assert_eq!(c.iter().count(), 2);
    }
}
