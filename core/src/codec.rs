//! Key codecs: how user keys become the keys TiKV stores and PD's region boundaries.
//!
//! - **Memcomparable bytes** (TiKV's `Key::from_raw`, Go's `codec.EncodeBytes`): groups of 8
//!   bytes, each followed by a marker `0xff - padding`. Region boundaries are in this form for
//!   API V2 (and for transactional data), so lookups encode keys and region ranges are decoded
//!   before they enter the region cache.
//! - **API V2 keyspaces**: a raw key lives under `'r'` + 3-byte big-endian keyspace id (`'x'`
//!   for transactional keys); an unbounded end becomes the start of the next keyspace.

use bytes::{BufMut, Bytes, BytesMut};

use crate::key::{Key, KeyRange};

const GROUP: usize = 8;
const MARKER: u8 = 0xff;

/// Encodes `key` as memcomparable bytes (order-preserving).
pub fn encode_memcomparable(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut groups = key.chunks_exact(GROUP);
    for group in &mut groups {
        out.extend_from_slice(group);
        out.push(MARKER);
    }
    let rest = groups.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.resize(out.len() + pad, 0);
    // pad ≤ 8, so it fits a byte.
    out.push(MARKER - pad as u8);
    out
}

/// Decodes memcomparable bytes; `None` unless `encoded` is exactly one valid encoding.
pub fn decode_memcomparable(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    loop {
        if rest.len() < GROUP + 1 {
            return None;
        }
        let (group, tail) = rest.split_at(GROUP + 1);
        let pad = usize::from(MARKER - group[GROUP]);
        if pad > GROUP {
            return None;
        }
        let real = GROUP - pad;
        if group[real..GROUP].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&group[..real]);
        if pad != 0 {
            return tail.is_empty().then_some(out);
        }
        rest = tail;
    }
}

/// How region boundaries are written in PD and in region errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegionKeys {
    /// As the stored keys themselves (API V1 RawKV).
    #[default]
    Raw,
    /// Memcomparable-encoded (API V2; transactional data).
    MemComparable,
}

impl RegionKeys {
    /// The key to ask PD about, for a stored key.
    pub fn encode(self, key: &[u8]) -> Vec<u8> {
        match self {
            RegionKeys::Raw => key.to_vec(),
            // The empty key stays empty: it means "the start" (or, as an end, "unbounded").
            RegionKeys::MemComparable if key.is_empty() => Vec::new(),
            RegionKeys::MemComparable => encode_memcomparable(key),
        }
    }

    /// The stored key a region boundary stands for; the boundary itself if it does not
    /// decode (the caller knows who sent it and reports it).
    pub fn decode(self, boundary: &[u8]) -> Result<Bytes, InvalidBoundary> {
        match self {
            RegionKeys::Raw => Ok(Bytes::copy_from_slice(boundary)),
            RegionKeys::MemComparable if boundary.is_empty() => Ok(Bytes::new()),
            RegionKeys::MemComparable => decode_memcomparable(boundary)
                .map(Bytes::from)
                .ok_or_else(|| InvalidBoundary(Key::from(boundary))),
        }
    }

    /// Decodes the boundaries of a region description in place.
    pub fn decode_region(
        self,
        region: &mut tikv_proto::metapb::Region,
    ) -> Result<(), InvalidBoundary> {
        if self == RegionKeys::Raw {
            return Ok(());
        }
        region.start_key = self.decode(&region.start_key)?;
        region.end_key = self.decode(&region.end_key)?;
        Ok(())
    }
}

/// A region boundary that is not in the form the cluster's key mode writes (not
/// memcomparable where it must be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidBoundary(pub Key);

impl std::fmt::Display for InvalidBoundary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "region boundary {} is not memcomparable", self.0)
    }
}

/// The key prefix of an API V2 keyspace for one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyspacePrefix([u8; 4]);

impl KeyspacePrefix {
    /// The raw-mode prefix of keyspace `id` (only the low 24 bits count).
    pub fn raw(id: u32) -> Self {
        let [_, a, b, c] = id.to_be_bytes();
        KeyspacePrefix([b'r', a, b, c])
    }

    /// The transactional-mode prefix of keyspace `id`.
    pub fn txn(id: u32) -> Self {
        let [_, a, b, c] = id.to_be_bytes();
        KeyspacePrefix([b'x', a, b, c])
    }

    /// The prefix bytes.
    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    /// The stored form of a user key.
    pub fn encode(&self, key: &Key) -> Key {
        let mut b = BytesMut::with_capacity(4 + key.len());
        b.put_slice(&self.0);
        b.put_slice(key.as_bytes());
        Key::from(b.freeze())
    }

    /// The stored form of a user range: an unbounded end becomes the end of the keyspace.
    pub fn encode_range(&self, range: &KeyRange) -> KeyRange {
        let start = self.encode(range.start());
        let end = if range.is_unbounded() {
            Key::from(&self.0[..]).prefix_end()
        } else {
            self.encode(range.end())
        };
        KeyRange::new(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcomparable_round_trips_and_keeps_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"abcdefgh",
            b"abcdefghi",
            b"\x00",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for k in &keys {
            let e = encode_memcomparable(k);
            assert_eq!(e.len() % 9, 0);
            assert_eq!(decode_memcomparable(&e).as_deref(), Some(*k));
        }
        let mut sorted = keys.clone();
        sorted.sort();
        let mut by_encoding = keys.clone();
        by_encoding.sort_by_key(|k| encode_memcomparable(k));
        assert_eq!(sorted, by_encoding);
        assert_eq!(encode_memcomparable(b"a"), b"a\0\0\0\0\0\0\0\xf8");
        assert_eq!(
            decode_memcomparable(b"a\0\0\0\0\0\0\0\xf8x"),
            None,
            "trailing bytes"
        );
        assert_eq!(
            decode_memcomparable(b"a\0\0\0\0\0\0\x01\xf8"),
            None,
            "non-zero padding"
        );
        assert_eq!(decode_memcomparable(b"short"), None);
    }

    #[test]
    fn keyspace_prefixes() {
        let p = KeyspacePrefix::raw(0x0001_0203);
        assert_eq!(p.as_bytes(), b"r\x01\x02\x03");
        let k = p.encode(&Key::from("k"));
        assert_eq!(k.as_bytes(), b"r\x01\x02\x03k");
        let all = p.encode_range(&KeyRange::all());
        assert_eq!(
            (all.start().as_bytes(), all.end().as_bytes()),
            (&b"r\x01\x02\x03"[..], &b"r\x01\x02\x04"[..])
        );
        assert_eq!(KeyspacePrefix::txn(1).as_bytes(), b"x\0\0\x01");
    }

    #[test]
    fn region_keys_encode_and_decode() {
        let mc = RegionKeys::MemComparable;
        assert!(mc.encode(b"").is_empty());
        assert_eq!(
            mc.decode(&mc.encode(b"r\0\0\x01abc")).unwrap(),
            &b"r\0\0\x01abc"[..]
        );
        assert!(mc.decode(b"garbage").is_err());
        assert_eq!(RegionKeys::Raw.encode(b"k"), b"k");
    }
}
