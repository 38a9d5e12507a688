//! The RawKV data: one ordered map per column family, values with an optional expiry.
//!
//! All replicas of the mock are always in sync, so there is one copy of the data for the
//! whole cluster (as in client-go's mocktikv); regions only decide which requests may touch
//! which keys. Expiry is judged against the injected clock, in whole seconds as TiKV does.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use super::api::{Cf, KeyCodec};

/// A stored value and the Unix second at which it expires (TiKV's `expire_ts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawValue {
    pub(crate) value: Bytes,
    pub(crate) expire_ts: Option<u64>,
}

impl RawValue {
    fn is_valid(&self, now_s: u64) -> bool {
        self.expire_ts.is_none_or(|e| e > now_s)
    }
}

/// TiKV's `ttl_to_expire_ts`: 0 means "never expires".
pub(crate) fn ttl_to_expire_ts(ttl: u64, now_s: u64) -> Option<u64> {
    (ttl != 0).then(|| ttl.saturating_add(now_s))
}

/// A region's key range in region key space, and the codec that maps user keys into it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RegionBounds<'a> {
    pub(crate) start: &'a [u8],
    pub(crate) end: &'a [u8],
    pub(crate) codec: KeyCodec,
}

impl RegionBounds<'_> {
    fn below_start(&self, user_key: &[u8]) -> bool {
        *self.codec.encode(user_key) < *self.start
    }

    fn at_or_after_end(&self, user_key: &[u8]) -> bool {
        !self.end.is_empty() && *self.codec.encode(user_key) >= *self.end
    }
}

/// A scan request after TiKV has normalised it: user-space bounds and direction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanSpec<'a> {
    /// Inclusive lower bound (forward: the start key; reverse: the end key).
    pub(crate) lower: Option<&'a [u8]>,
    /// Exclusive upper bound (forward: the end key; reverse: the start key).
    pub(crate) upper: Option<&'a [u8]>,
    pub(crate) reverse: bool,
    pub(crate) limit: usize,
    pub(crate) key_only: bool,
}

/// The raw key spaces.
#[derive(Clone, Debug, Default)]
pub(crate) struct RawStore {
    cfs: [BTreeMap<Bytes, RawValue>; 3],
}

impl RawStore {
    pub(crate) fn get(&self, cf: Cf, key: &[u8], now_s: u64) -> Option<Bytes> {
        self.cfs[cf as usize]
            .get(key)
            .filter(|v| v.is_valid(now_s))
            .map(|v| v.value.clone())
    }

    /// TiKV's `get_key_ttl_cf`: `None` if absent or expired, `Some(0)` if it never expires,
    /// otherwise the seconds left.
    pub(crate) fn ttl(&self, cf: Cf, key: &[u8], now_s: u64) -> Option<u64> {
        let v = self.cfs[cf as usize].get(key)?;
        match v.expire_ts {
            Some(e) if e <= now_s => None,
            Some(e) => Some(e - now_s),
            None => Some(0),
        }
    }

    pub(crate) fn put(&mut self, cf: Cf, key: Bytes, value: Bytes, expire_ts: Option<u64>) {
        self.cfs[cf as usize].insert(key, RawValue { value, expire_ts });
    }

    pub(crate) fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.cfs[cf as usize].remove(key);
    }

    /// Deletes user keys in `[start, end)` (`end` empty: unbounded) that lie in the region.
    pub(crate) fn delete_range(
        &mut self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        region: RegionBounds<'_>,
    ) {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let doomed: Vec<Bytes> = self.cfs[cf as usize]
            .range::<[u8], _>((Bound::Included(start), upper))
            .map(|(k, _)| k)
            .skip_while(|k| region.below_start(k))
            .take_while(|k| !region.at_or_after_end(k))
            .cloned()
            .collect();
        for k in doomed {
            self.cfs[cf as usize].remove(&k);
        }
    }

    /// Live pairs within the spec's bounds and the region, in scan order, at most `limit`.
    pub(crate) fn scan(
        &self,
        cf: Cf,
        spec: ScanSpec<'_>,
        region: RegionBounds<'_>,
        now_s: u64,
    ) -> Vec<(Bytes, Bytes)> {
        if spec.limit == 0 {
            return Vec::new();
        }
        let lower = spec.lower.map_or(Bound::Unbounded, Bound::Included);
        let upper = spec.upper.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Some(l), Some(u)) = (spec.lower, spec.upper) {
            if l >= u {
                return Vec::new();
            }
        }
        let range = self.cfs[cf as usize].range::<[u8], _>((lower, upper));
        let pick = |(k, v): (&Bytes, &RawValue)| {
            v.is_valid(now_s).then(|| {
                let value = if spec.key_only {
                    Bytes::new()
                } else {
                    v.value.clone()
                };
                (k.clone(), value)
            })
        };
        if spec.reverse {
            range
                .rev()
                .skip_while(|(k, _)| region.at_or_after_end(k))
                .take_while(|(k, _)| !region.below_start(k))
                .filter_map(pick)
                .take(spec.limit)
                .collect()
        } else {
            range
                .skip_while(|(k, _)| region.below_start(k))
                .take_while(|(k, _)| !region.at_or_after_end(k))
                .filter_map(pick)
                .take(spec.limit)
                .collect()
        }
    }

    /// Live keys of the default CF inside the region, in order (for the split checker).
    pub(crate) fn keys_in_region(&self, region: RegionBounds<'_>, now_s: u64) -> Vec<Bytes> {
        self.cfs[Cf::Default as usize]
            .iter()
            .skip_while(|(k, _)| region.below_start(k))
            .take_while(|(k, _)| !region.at_or_after_end(k))
            .filter(|(_, v)| v.is_valid(now_s))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: RegionBounds<'static> = RegionBounds {
        start: b"",
        end: b"",
        codec: KeyCodec::Identity,
    };

    fn store_with(keys: &[&str]) -> RawStore {
        let mut s = RawStore::default();
        for k in keys {
            s.put(
                Cf::Default,
                Bytes::copy_from_slice(k.as_bytes()),
                Bytes::from(format!("v{k}")),
                None,
            );
        }
        s
    }

    fn keys(pairs: &[(Bytes, Bytes)]) -> Vec<&[u8]> {
        pairs.iter().map(|(k, _)| &k[..]).collect()
    }

    #[test]
    fn expired_values_are_invisible() {
        let mut s = RawStore::default();
        s.put(
            Cf::Default,
            "k".into(),
            "v".into(),
            ttl_to_expire_ts(10, 100),
        );
        assert_eq!(s.get(Cf::Default, b"k", 109), Some(Bytes::from("v")));
        assert_eq!(s.ttl(Cf::Default, b"k", 104), Some(6));
        assert_eq!(s.get(Cf::Default, b"k", 110), None);
        assert_eq!(s.ttl(Cf::Default, b"k", 110), None);
    }

    #[test]
    fn reverse_scan_excludes_upper_and_includes_lower() {
        let s = store_with(&["a", "b", "c", "d"]);
        let spec = ScanSpec {
            lower: Some(b"b"),
            upper: Some(b"d"),
            reverse: true,
            limit: 10,
            key_only: false,
        };
        assert_eq!(
            keys(&s.scan(Cf::Default, spec, ALL, 0)),
            vec![&b"c"[..], b"b"]
        );
    }

    #[test]
    fn scan_is_clamped_to_region() {
        let s = store_with(&["a", "b", "c", "d"]);
        let region = RegionBounds {
            start: b"b",
            end: b"d",
            codec: KeyCodec::Identity,
        };
        let fwd = ScanSpec {
            lower: Some(b""),
            upper: None,
            reverse: false,
            limit: 10,
            key_only: true,
        };
        let got = s.scan(Cf::Default, fwd, region, 0);
        assert_eq!(keys(&got), vec![&b"b"[..], b"c"]);
        assert!(got.iter().all(|(_, v)| v.is_empty()));
        let rev = ScanSpec {
            lower: None,
            upper: Some(b"z"),
            reverse: true,
            ..fwd
        };
        assert_eq!(
            keys(&s.scan(Cf::Default, rev, region, 0)),
            vec![&b"c"[..], b"b"]
        );
    }

    #[test]
    fn delete_range_stays_inside_region() {
        let mut s = store_with(&["a", "b", "c", "d"]);
        let region = RegionBounds {
            start: b"b",
            end: b"d",
            codec: KeyCodec::Identity,
        };
        s.delete_range(Cf::Default, b"a", b"", region);
        let all = ScanSpec {
            lower: None,
            upper: None,
            reverse: false,
            limit: 10,
            key_only: true,
        };
        assert_eq!(
            keys(&s.scan(Cf::Default, all, ALL, 0)),
            vec![&b"a"[..], b"d"]
        );
    }
}
