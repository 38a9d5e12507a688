//! Keys and key ranges as TiKV sees them.
//!
//! A [`Key`] is an arbitrary byte string ordered bytewise. A [`KeyRange`] is `[start, end)` where
//! an empty `end` means "to the end of the key space", which is how TiKV and PD encode unbounded
//! region and scan ends on the wire. Rust range syntax converts into it:
//!
//! ```
//! use tikv_core::{Key, KeyRange};
//!
//! let r = KeyRange::from("a".."c");
//! assert!(r.contains(&Key::from("b")) && !r.contains(&Key::from("c")));
//! // An inclusive end becomes the exclusive end `end + \0`, the next key in byte order.
//! assert_eq!(KeyRange::from("a"..="c").end(), &Key::from(&b"c\0"[..]));
//! assert!(KeyRange::from("a"..).end().is_empty()); // unbounded
//! ```

use std::fmt;
use std::ops::{Bound, RangeBounds};

use bytes::{BufMut, Bytes, BytesMut};

/// A TiKV key: bytes compared lexicographically. Cheap to clone (reference-counted).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Bytes);

impl Key {
    /// The empty key: the smallest key, and the "unbounded" marker in range ends.
    pub const EMPTY: Key = Key(Bytes::new());

    /// Wraps bytes as a key without copying.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Key(bytes.into())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's bytes as a shared buffer, e.g. to put in a request.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// Consumes the key into its shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Whether this is the empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The smallest key greater than `self`: `self` followed by a zero byte.
    pub fn next_key(&self) -> Key {
        let mut buf = BytesMut::with_capacity(self.0.len() + 1);
        buf.put_slice(&self.0);
        buf.put_u8(0);
        Key(buf.freeze())
    }

    /// The smallest key greater than every key that starts with `self` (the end of the prefix
    /// range), or the empty key (unbounded) when no such key exists (`self` is all `0xff`).
    pub fn prefix_end(&self) -> Key {
        let mut bytes = self.0.to_vec();
        while let Some(last) = bytes.pop() {
            if last < 0xff {
                bytes.push(last + 1);
                return Key::from(bytes);
            }
        }
        Key::EMPTY
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Printable ASCII as is, other bytes as `\xNN`, so keys read well in errors and logs.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0.iter() {
            match b {
                b'"' | b'\\' => write!(f, "\\{}", b as char)?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        f.write_str("\"")
    }
}

impl From<Bytes> for Key {
    fn from(b: Bytes) -> Self {
        Key(b)
    }
}

impl From<Vec<u8>> for Key {
    fn from(v: Vec<u8>) -> Self {
        Key(Bytes::from(v))
    }
}

impl From<&[u8]> for Key {
    fn from(v: &[u8]) -> Self {
        Key(Bytes::copy_from_slice(v))
    }
}

impl<const N: usize> From<&[u8; N]> for Key {
    fn from(v: &[u8; N]) -> Self {
        Key(Bytes::copy_from_slice(v))
    }
}

impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Key(Bytes::copy_from_slice(v.as_bytes()))
    }
}

impl From<String> for Key {
    fn from(v: String) -> Self {
        Key(Bytes::from(v))
    }
}

impl From<Key> for Bytes {
    fn from(k: Key) -> Self {
        k.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A half-open key range `[start, end)`; an empty `end` means unbounded.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    start: Key,
    end: Key,
}

impl KeyRange {
    /// The range `[start, end)`; pass [`Key::EMPTY`] as `end` for "to the end".
    pub fn new(start: impl Into<Key>, end: impl Into<Key>) -> Self {
        KeyRange {
            start: start.into(),
            end: end.into(),
        }
    }

    /// The whole key space.
    pub fn all() -> Self {
        KeyRange::default()
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Key>) -> Self {
        let start = prefix.into();
        let end = start.prefix_end();
        KeyRange { start, end }
    }

    /// The inclusive start.
    pub fn start(&self) -> &Key {
        &self.start
    }

    /// The exclusive end; empty when unbounded.
    pub fn end(&self) -> &Key {
        &self.end
    }

    /// Whether the end is unbounded.
    pub fn is_unbounded(&self) -> bool {
        self.end.is_empty()
    }

    /// What is left of the range after a scan in key order (descending when `reverse`)
    /// that stopped at `last`: the keys after it, or (reverse) before it.
    ///
    /// ```
    /// use tikv_core::{Key, KeyRange};
    ///
    /// let range = KeyRange::new("a", "z");
    /// assert_eq!(range.after(&Key::from("m"), false), KeyRange::new("m\0", "z"));
    /// assert_eq!(range.after(&Key::from("m"), true), KeyRange::new("a", "m"));
    /// ```
    pub fn after(&self, last: &Key, reverse: bool) -> KeyRange {
        if reverse {
            KeyRange::new(self.start.clone(), last.clone())
        } else {
            KeyRange {
                start: last.next_key(),
                end: self.end.clone(),
            }
        }
    }

    /// Whether the range holds no key at all (`start >= end` with a bounded end).
    pub fn is_empty(&self) -> bool {
        !self.end.is_empty() && self.start >= self.end
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &Key) -> bool {
        *key >= self.start && (self.end.is_empty() || *key < self.end)
    }

    /// The part of `self` that also lies in `other`, or `None` when they do not overlap.
    pub fn intersect(&self, other: &KeyRange) -> Option<KeyRange> {
        let start = std::cmp::max(&self.start, &other.start).clone();
        let end = match (self.end.is_empty(), other.end.is_empty()) {
            (true, _) => other.end.clone(),
            (_, true) => self.end.clone(),
            _ => std::cmp::min(&self.end, &other.end).clone(),
        };
        let r = KeyRange { start, end };
        (!r.is_empty()).then_some(r)
    }

    /// Splits into `(start, end)`.
    pub fn into_keys(self) -> (Key, Key) {
        (self.start, self.end)
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.end.is_empty() {
            write!(f, "[{}, +inf)", self.start)
        } else {
            write!(f, "[{}, {})", self.start, self.end)
        }
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl KeyRange {
    /// The range between two bounds: an excluded start becomes `start + \0`, an included end
    /// becomes the exclusive end `end + \0`.
    pub fn from_bounds(start: Bound<Key>, end: Bound<Key>) -> Self {
        let start = match start {
            Bound::Included(k) => k,
            Bound::Excluded(k) => k.next_key(),
            Bound::Unbounded => Key::EMPTY,
        };
        let end = match end {
            Bound::Included(k) => k.next_key(),
            Bound::Excluded(k) => k,
            Bound::Unbounded => Key::EMPTY,
        };
        KeyRange { start, end }
    }
}

fn owned<K: Into<Key> + Clone>(b: Bound<&K>) -> Bound<Key> {
    match b {
        Bound::Included(k) => Bound::Included(k.clone().into()),
        Bound::Excluded(k) => Bound::Excluded(k.clone().into()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

macro_rules! range_conversions {
    ($($range:ty),*) => {$(
        impl<K: Into<Key> + Clone> From<$range> for KeyRange {
            fn from(r: $range) -> Self {
                KeyRange::from_bounds(owned(r.start_bound()), owned(r.end_bound()))
            }
        }
    )*};
}

range_conversions!(
    std::ops::Range<K>,
    std::ops::RangeFrom<K>,
    std::ops::RangeTo<K>,
    std::ops::RangeInclusive<K>,
    std::ops::RangeToInclusive<K>,
    (Bound<K>, Bound<K>)
);

impl From<std::ops::RangeFull> for KeyRange {
    fn from(_: std::ops::RangeFull) -> Self {
        KeyRange::all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_bounds_convert() {
        assert_eq!(KeyRange::from("a".."b"), KeyRange::new("a", "b"));
        assert_eq!(KeyRange::from("a"..), KeyRange::new("a", Key::EMPTY));
        assert_eq!(KeyRange::from(.."b"), KeyRange::new(Key::EMPTY, "b"));
        assert_eq!(KeyRange::from("a"..="b"), KeyRange::new("a", &b"b\0"[..]));
        let excluded = (Bound::Excluded("a"), Bound::<&str>::Unbounded);
        assert_eq!(
            KeyRange::from(excluded),
            KeyRange::new(&b"a\0"[..], Key::EMPTY)
        );
    }

    #[test]
    fn contains_and_empty() {
        let r = KeyRange::new("b", "d");
        assert!(!r.contains(&"a".into()) && r.contains(&"b".into()) && !r.contains(&"d".into()));
        assert!(KeyRange::new("b", "b").is_empty());
        assert!(!KeyRange::all().is_empty());
        assert!(KeyRange::all().contains(&Key::from(&[0xff; 8])));
    }

    #[test]
    fn intersect_handles_unbounded_ends() {
        let a = KeyRange::new("b", Key::EMPTY);
        let b = KeyRange::new("a", "c");
        assert_eq!(a.intersect(&b), Some(KeyRange::new("b", "c")));
        assert_eq!(a.intersect(&KeyRange::all()), Some(a.clone()));
        assert_eq!(
            KeyRange::new("a", "b").intersect(&KeyRange::new("b", "c")),
            None
        );
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(Key::from("ab").prefix_end(), Key::from("ac"));
        assert_eq!(Key::from(&[b'a', 0xff]).prefix_end(), Key::from("b"));
        assert_eq!(Key::from(&[0xff, 0xff]).prefix_end(), Key::EMPTY);
        assert_eq!(KeyRange::prefix("x").end(), &Key::from("y"));
    }

    #[test]
    fn display_escapes() {
        assert_eq!(Key::from(&[b'a', 0, b'"']).to_string(), r#""a\x00\"""#);
    }
}
