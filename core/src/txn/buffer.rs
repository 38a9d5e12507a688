//! The transaction's write buffer: the latest intended change per key, in key order, with
//! nested stages that are kept or undone as one.

use std::collections::BTreeMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::error::Error;
use crate::key::{Key, KeyRange};
use crate::raw::KvPair;

/// One intended change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Set the value.
    Put(Bytes),
    /// Remove the key.
    Delete,
    /// Set the value, failing the commit if the key exists (`KeyExists`).
    Insert(Bytes),
    /// Leave the value alone: a key a pessimistic transaction locked without writing it,
    /// prewritten so that its lock is released at commit. Only the committer adds these; a
    /// buffer never holds one.
    Lock,
    /// Like [`Lock`](Mutation::Lock), for a key the transaction holds in shared mode
    /// (`Op::SharedLock`). Only the committer adds these.
    SharedLock,
}

impl Mutation {
    /// The value this mutation leaves, as the transaction itself reads it back.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Mutation::Put(v) | Mutation::Insert(v) => Some(v),
            Mutation::Delete | Mutation::Lock | Mutation::SharedLock => None,
        }
    }

    /// The wire form.
    pub fn to_proto(&self, key: &Key) -> kvrpcpb::Mutation {
        let (op, value) = match self {
            Mutation::Put(v) => (kvrpcpb::Op::Put, v.clone()),
            Mutation::Delete => (kvrpcpb::Op::Del, Bytes::new()),
            Mutation::Insert(v) => (kvrpcpb::Op::Insert, v.clone()),
            Mutation::Lock => (kvrpcpb::Op::Lock, Bytes::new()),
            Mutation::SharedLock => (kvrpcpb::Op::SharedLock, Bytes::new()),
        };
        kvrpcpb::Mutation {
            op: op as i32,
            key: key.to_bytes(),
            value,
            assertion: 0,
        }
    }
}

/// The buffered writes of a transaction, with nested staging (client-go's mem-buffer
/// `Staging` / `Release` / `Cleanup`, which TiDB wraps around each statement): writes made
/// after [`staging`](WriteBuffer::staging) can be kept ([`release`](WriteBuffer::release))
/// or undone ([`cleanup`](WriteBuffer::cleanup)) as one.
#[derive(Clone, Debug, Default)]
pub struct WriteBuffer {
    mutations: BTreeMap<Key, Mutation>,
    size: usize,
    /// Open stages, innermost last.
    stages: Vec<Stage>,
}

/// One open stage: what each key it changed held before (`None`: absent), and the size.
#[derive(Clone, Debug, Default)]
struct Stage {
    undo: BTreeMap<Key, Option<Mutation>>,
    size_before: usize,
}

/// An open stage of a [`WriteBuffer`] (its depth, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a stage is ended by release or cleanup"]
pub struct StagingHandle(usize);

impl WriteBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        WriteBuffer::default()
    }

    /// Records `mutation` for `key`, replacing an earlier one (an insert followed by a delete
    /// of the same key becomes a delete, as the transaction sees it).
    pub fn set(&mut self, key: Key, mutation: Mutation) {
        let add = key.len() + mutation.value().map_or(0, Bytes::len);
        let old = self.mutations.insert(key.clone(), mutation);
        if let Some(old) = &old {
            self.size -= key.len() + old.value().map_or(0, Bytes::len);
        }
        self.size += add;
        if let Some(stage) = self.stages.last_mut() {
            // Only the first change of a key in the stage says what to restore.
            stage.undo.entry(key).or_insert(old);
        }
    }

    /// Opens a stage (nested in any open one): later writes can be undone together.
    pub fn staging(&mut self) -> StagingHandle {
        self.stages.push(Stage {
            undo: BTreeMap::new(),
            size_before: self.size,
        });
        StagingHandle(self.stages.len())
    }

    /// Closes the innermost stage `handle`, keeping its writes (they now belong to the
    /// enclosing stage, if any).
    pub fn release(&mut self, handle: StagingHandle) -> Result<(), Error> {
        let stage = self.pop_stage(handle, "release")?;
        if let Some(parent) = self.stages.last_mut() {
            for (key, old) in stage.undo {
                parent.undo.entry(key).or_insert(old);
            }
        }
        Ok(())
    }

    /// Closes the innermost stage `handle`, undoing every write made since it opened.
    pub fn cleanup(&mut self, handle: StagingHandle) -> Result<(), Error> {
        let stage = self.pop_stage(handle, "cleanup")?;
        for (key, old) in stage.undo {
            match old {
                Some(m) => self.mutations.insert(key, m),
                None => self.mutations.remove(&key),
            };
        }
        self.size = stage.size_before;
        Ok(())
    }

    /// How many stages are open.
    pub fn stages(&self) -> usize {
        self.stages.len()
    }

    fn pop_stage(&mut self, handle: StagingHandle, what: &str) -> Result<Stage, Error> {
        if handle.0 != self.stages.len() || handle.0 == 0 {
            return Err(Error::InvalidArgument(format!(
                "{what} of stage {} while the innermost open stage is {}: stages end \
                 innermost first",
                handle.0,
                self.stages.len()
            )));
        }
        // Non-empty: checked just above.
        Ok(self.stages.pop().unwrap_or_default())
    }

    /// The buffer's size once `key` is set to `mutation` (the size is key + value bytes of
    /// every buffered write).
    pub fn size_after(&self, key: &Key, mutation: &Mutation) -> usize {
        let entry = |m: &Mutation| key.len() + m.value().map_or(0, Bytes::len);
        let old = self.mutations.get(key).map_or(0, entry);
        self.size - old + entry(mutation)
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

    /// Buffered mutations in `range`, in key order — or reversed with `.rev()` (none for an
    /// empty or inverted range).
    pub fn range(&self, range: &KeyRange) -> impl DoubleEndedIterator<Item = (&Key, &Mutation)> {
        use std::ops::Bound;
        let end = if range.is_unbounded() {
            Bound::Unbounded
        } else {
            Bound::Excluded(range.end().clone())
        };
        // `BTreeMap::range` panics on an inverted range, which a caller can pass.
        let valid = !range.is_empty();
        valid
            .then(|| {
                self.mutations
                    .range((Bound::Included(range.start().clone()), end))
            })
            .into_iter()
            .flatten()
    }

    /// Splits the keys of a batch read into what the buffer answers itself (its values;
    /// a key it deletes is answered as absent, so it is in neither list) and the keys left
    /// to read from the snapshot.
    pub fn partition_reads(&self, keys: impl IntoIterator<Item = Key>) -> (Vec<KvPair>, Vec<Key>) {
        let mut own = Vec::new();
        let mut snapshot = Vec::new();
        for key in keys {
            match self.get(&key) {
                Some(Some(value)) => own.push(KvPair {
                    value: value.clone(),
                    key,
                }),
                Some(None) => {}
                None => snapshot.push(key),
            }
        }
        (own, snapshot)
    }

    /// A batch read's answer: the snapshot's pairs and the buffer's own (from
    /// [`partition_reads`](Self::partition_reads)), in key order, each key once.
    pub fn merge_reads(own: Vec<KvPair>, mut snapshot: Vec<KvPair>) -> Vec<KvPair> {
        snapshot.extend(own);
        snapshot.sort();
        snapshot.dedup_by(|a, b| a.key == b.key);
        snapshot
    }

    /// How many pairs a snapshot scan of `range` must return so that `limit` survive the
    /// buffer: each buffered delete can hide one snapshot pair, so read that many more (and
    /// nothing between the survivors is skipped).
    pub fn scan_limit(&self, range: &KeyRange, limit: u32) -> u32 {
        let deletes = self
            .range(range)
            .filter(|(_, m)| m.value().is_none())
            .count();
        limit.saturating_add(u32::try_from(deletes).unwrap_or(u32::MAX))
    }

    /// The transaction's view of `range`: `snapshot` (a scan of `range` for
    /// [`scan_limit`](Self::scan_limit) pairs, in either order) overlaid with the buffered
    /// writes, up to `limit` pairs, ascending or (when `reverse`) descending.
    ///
    /// Buffered writes beyond the last snapshot pair are safe to include: when the snapshot
    /// was cut short, at least `limit` of its pairs survive and come before them.
    pub fn overlay_scan(
        &self,
        range: &KeyRange,
        snapshot: Vec<KvPair>,
        limit: u32,
        reverse: bool,
    ) -> Vec<KvPair> {
        let mut merged: BTreeMap<Key, Option<Bytes>> = snapshot
            .into_iter()
            .map(|p| (p.key, Some(p.value)))
            .collect();
        merged.extend(
            self.range(range)
                .map(|(k, m)| (k.clone(), m.value().cloned())),
        );
        let pairs = merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| KvPair { key, value }));
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if reverse {
            pairs.rev().take(limit).collect()
        } else {
            pairs.take(limit).collect()
        }
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
    fn size_after_counts_the_new_entry_in_place_of_the_old() {
        let mut b = WriteBuffer::new();
        b.set("k".into(), Mutation::Put("abc".into()));
        assert_eq!(b.size(), 4);
        assert_eq!(b.size_after(&"k".into(), &Mutation::Put("a".into())), 2);
        assert_eq!(b.size_after(&"k".into(), &Mutation::Delete), 1);
        assert_eq!(b.size_after(&"x".into(), &Mutation::Put("yz".into())), 7);
    }

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
        assert_eq!(b.range(&KeyRange::from("b"..)).count(), 1);
        let inverted = KeyRange::new("z", "a");
        assert_eq!(
            b.range(&inverted).count(),
            0,
            "no panic on an inverted range"
        );
        assert_eq!(b.scan_limit(&inverted, 5), 5);
    }

    fn pair(k: &str, v: &str) -> KvPair {
        KvPair {
            key: k.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    #[test]
    fn batch_reads_take_own_writes_first() {
        let mut b = WriteBuffer::new();
        b.set("a".into(), Mutation::Put("mine".into()));
        b.set("d".into(), Mutation::Delete);
        let (own, snapshot) = b.partition_reads(["a", "b", "d"].map(Key::from));
        assert_eq!(own, [pair("a", "mine")]);
        assert_eq!(snapshot, [Key::from("b")], "a deleted key is not read");
        let merged = WriteBuffer::merge_reads(own, vec![pair("b", "2")]);
        assert_eq!(merged, [pair("a", "mine"), pair("b", "2")]);
    }

    #[test]
    fn scans_overlay_own_writes_and_read_past_own_deletes() {
        let mut b = WriteBuffer::new();
        b.set("b".into(), Mutation::Delete);
        b.set("c".into(), Mutation::Put("mine".into()));
        b.set("zz".into(), Mutation::Put("far".into()));
        let range = KeyRange::all();
        // One delete in range: a scan for 2 reads 3 from the snapshot.
        assert_eq!(b.scan_limit(&range, 2), 3);
        assert_eq!(b.scan_limit(&KeyRange::from("c"..), 2), 2);
        let snapshot = vec![pair("a", "1"), pair("b", "2"), pair("d", "4")];
        assert_eq!(
            b.overlay_scan(&range, snapshot.clone(), 2, false),
            [pair("a", "1"), pair("c", "mine")]
        );
        // Everything fits: the own write past the snapshot's end shows too.
        assert_eq!(
            b.overlay_scan(&range, snapshot, 10, false),
            [
                pair("a", "1"),
                pair("c", "mine"),
                pair("d", "4"),
                pair("zz", "far")
            ]
        );
        // Reverse: the snapshot scanned down from the end.
        let snapshot = vec![pair("d", "4"), pair("b", "2"), pair("a", "1")];
        assert_eq!(
            b.overlay_scan(&range, snapshot, 2, true),
            [pair("zz", "far"), pair("d", "4")]
        );
    }
    #[test]
    fn nested_stages_are_kept_or_undone_as_one() {
        let mut b = WriteBuffer::new();
        b.set("a".into(), Mutation::Put("1".into()));
        let outer = b.staging();
        b.set("a".into(), Mutation::Put("22".into()));
        b.set("b".into(), Mutation::Put("x".into()));
        let inner = b.staging();
        b.set("a".into(), Mutation::Delete);
        b.set("c".into(), Mutation::Put("y".into()));
        assert_eq!(b.stages(), 2);
        // Stages end innermost first.
        assert!(matches!(b.release(outer), Err(Error::InvalidArgument(_))));
        b.cleanup(inner).unwrap();
        assert_eq!(b.get(&"a".into()), Some(Some(&Bytes::from("22"))));
        assert_eq!(b.get(&"c".into()), None);
        assert_eq!(b.size(), 3 + 2);
        let inner = b.staging();
        b.set("d".into(), Mutation::Put("z".into()));
        b.release(inner).unwrap();
        // Released into the outer stage: undone with it.
        b.cleanup(outer).unwrap();
        assert_eq!(b.get(&"a".into()), Some(Some(&Bytes::from("1"))));
        assert_eq!((b.get(&"b".into()), b.get(&"d".into())), (None, None));
        assert_eq!((b.len(), b.size(), b.stages()), (1, 2, 0));
        assert!(matches!(b.cleanup(outer), Err(Error::InvalidArgument(_))));
        // A released outermost stage keeps its writes for good.
        let s = b.staging();
        b.set("e".into(), Mutation::Delete);
        b.release(s).unwrap();
        assert_eq!(b.get(&"e".into()), Some(None));
        let rev: Vec<Key> = b
            .range(&KeyRange::all())
            .rev()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(rev, [Key::from("e"), Key::from("a")]);
    }
}
