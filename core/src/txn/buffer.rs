//! The transaction's write buffer: the latest intended change per key, in key order.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::key::Key;

/// One intended change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Set the value.
    Put(Bytes),
    /// Remove the key.
    Delete,
    /// Set the value, failing the commit if the key exists (`KeyExists`).
    Insert(Bytes),
}

impl Mutation {
    /// The value this mutation leaves, as the transaction itself reads it back.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Mutation::Put(v) | Mutation::Insert(v) => Some(v),
            Mutation::Delete => None,
        }
    }

    /// The wire form.
    pub fn to_proto(&self, key: &Key) -> kvrpcpb::Mutation {
        let (op, value) = match self {
            Mutation::Put(v) => (kvrpcpb::Op::Put, v.clone()),
            Mutation::Delete => (kvrpcpb::Op::Del, Bytes::new()),
            Mutation::Insert(v) => (kvrpcpb::Op::Insert, v.clone()),
        };
        kvrpcpb::Mutation {
            op: op as i32,
            key: key.to_bytes(),
            value,
            assertion: 0,
        }
    }
}

/// The buffered writes of a transaction.
#[derive(Clone, Debug, Default)]
pub struct WriteBuffer {
    mutations: BTreeMap<Key, Mutation>,
    size: usize,
}

impl WriteBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        WriteBuffer::default()
    }

    /// Records `mutation` for `key`, replacing an earlier one (an insert followed by a delete
    /// of the same key becomes a delete, as the transaction sees it).
    pub fn set(&mut self, key: Key, mutation: Mutation) {
        let add = key.len() + mutation.value().map_or(0, Bytes::len);
        if let Some(old) = self.mutations.insert(key.clone(), mutation) {
            self.size -= key.len() + old.value().map_or(0, Bytes::len);
        }
        self.size += add;
    }

    /// What the transaction wrote for `key`: `Some(Some(v))` a value, `Some(None)` a delete,
    /// `None` nothing (read the snapshot).
    pub fn get(&self, key: &Key) -> Option<Option<&Bytes>> {
        self.mutations.get(key).map(Mutation::value)
    }

    /// The buffered mutations in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Mutation)> {
        self.mutations.iter()
    }

    /// Buffered mutations in `range`, in key order.
    pub fn range(&self, range: &crate::key::KeyRange) -> impl Iterator<Item = (&Key, &Mutation)> {
        use std::ops::Bound;
        let end = if range.is_unbounded() {
            Bound::Unbounded
        } else {
            Bound::Excluded(range.end().clone())
        };
        self.mutations
            .range((Bound::Included(range.start().clone()), end))
    }

    /// Number of keys written.
    pub fn len(&self) -> usize {
        self.mutations.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    /// Bytes of keys and values buffered.
    pub fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_and_size_tracks() {
        let mut b = WriteBuffer::new();
        b.set("k".into(), Mutation::Put("abc".into()));
        b.set("k".into(), Mutation::Delete);
        b.set("a".into(), Mutation::Insert("x".into()));
        assert_eq!(b.get(&"k".into()), Some(None));
        assert_eq!(b.get(&"a".into()), Some(Some(&Bytes::from("x"))));
        assert_eq!(b.get(&"z".into()), None);
        assert_eq!(b.size(), 1 + 1 + 1);
        assert_eq!(
            b.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![Key::from("a"), Key::from("k")]
        );
        assert_eq!(b.range(&crate::key::KeyRange::from("b"..)).count(), 1);
    }
}
