//! Local latches (client-go's `internal/latch`, off by default): optimistic transactions of
//! one process that write the same keys commit one after another instead of racing to
//! prewrite and failing each other with write conflicts in TiKV.
//!
//! Each key maps to a slot (a power-of-two table, keys hashed into it); a committing
//! transaction takes its keys' latches in key order, waiting behind the holder of each. A
//! key remembers the newest commit made under its latch: a transaction that started before
//! it would meet a write conflict in TiKV anyway, so it is told at once (*stale*) and never
//! sends a prewrite. The table is pure bookkeeping; the driver parks waiters and wakes those
//! [`Latches::release`] names.

use std::collections::{BTreeMap, VecDeque};

use crate::key::Key;
use crate::timestamp::Timestamp;

/// A key's memory of commits is dropped once it is this old relative to a new transaction's
/// start (client-go's `expireDuration`, two minutes) and nobody holds its latch.
const EXPIRE_MS: u64 = 2 * 60 * 1000;
/// Slots with more remembered keys than this drop the expired ones first (client-go's
/// `latchListCount`).
const SLOT_KEYS_BEFORE_RECYCLE: usize = 5;

/// One transaction's request for latches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LatchId(u64);

/// Where a latch request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatchState {
    /// Every latch is held: commit, then [`Latches::release`].
    Acquired,
    /// Behind another transaction: wait until [`Latches::release`] names this request.
    Waiting,
    /// `key` was committed at `commit_ts`, after this transaction started: its commit would
    /// fail with a write conflict, so it should not try (release, and report the conflict).
    Stale {
        /// The key.
        key: Key,
        /// The newer commit.
        commit_ts: Timestamp,
    },
}

#[derive(Debug)]
struct KeyLatch {
    key: Key,
    /// Newest commit made under this latch.
    max_commit_ts: Timestamp,
    holder: Option<LatchId>,
}

#[derive(Debug, Default)]
struct Slot {
    keys: Vec<KeyLatch>,
    /// Requests waiting in this slot, oldest first.
    waiting: VecDeque<LatchId>,
}

#[derive(Debug)]
struct Request {
    start_ts: Timestamp,
    /// Sorted, without duplicates, with their slots.
    keys: Vec<(Key, usize)>,
    /// How many of `keys` are held.
    acquired: usize,
    state: LatchState,
}

/// The latch table of one client.
#[derive(Debug)]
pub struct Latches {
    slots: Vec<Slot>,
    requests: BTreeMap<LatchId, Request>,
    next_id: u64,
}

impl Latches {
    /// A table of at least `capacity` slots (rounded up to a power of two; client-go's
    /// default capacity is 2 048 000).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(1).next_power_of_two();
        Latches {
            slots: (0..n).map(|_| Slot::default()).collect(),
            requests: BTreeMap::new(),
            next_id: 0,
        }
    }

    fn slot_of(&self, key: &Key) -> usize {
        // FNV-1a: the slot only spreads keys; any stable hash does (client-go uses murmur3).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // The table size is a power of two, so the mask picks a valid slot.
        (h as usize) & (self.slots.len() - 1)
    }

    /// Asks for the latches of `keys` for the transaction started at `start_ts`, taking as
    /// many as it can now.
    pub fn lock(
        &mut self,
        start_ts: Timestamp,
        keys: impl IntoIterator<Item = Key>,
    ) -> (LatchId, LatchState) {
        let mut keys: Vec<Key> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        let keys = keys
            .into_iter()
            .map(|k| {
                let slot = self.slot_of(&k);
                (k, slot)
            })
            .collect();
        self.next_id += 1;
        let id = LatchId(self.next_id);
        self.requests.insert(
            id,
            Request {
                start_ts,
                keys,
                acquired: 0,
                state: LatchState::Waiting,
            },
        );
        self.acquire(id);
        let state = self.state(id).unwrap_or(LatchState::Acquired); // inserted just above
        (id, state)
    }

    /// Where request `id` stands; `None` once it is released.
    pub fn state(&self, id: LatchId) -> Option<LatchState> {
        self.requests.get(&id).map(|r| r.state.clone())
    }

    /// Takes the latches of `id` from where it stopped, until one is held by another
    /// request (it then waits in that slot) or one remembers a newer commit (stale).
    fn acquire(&mut self, id: LatchId) {
        loop {
            let Some(r) = self.requests.get(&id) else {
                return;
            };
            let Some((key, slot_id)) = r.keys.get(r.acquired).cloned() else {
                if let Some(r) = self.requests.get_mut(&id) {
                    r.state = LatchState::Acquired;
                }
                return;
            };
            let start_ts = r.start_ts;
            let slot = &mut self.slots[slot_id];
            if slot.keys.len() >= SLOT_KEYS_BEFORE_RECYCLE {
                slot.keys.retain(|k| {
                    k.holder.is_some()
                        || start_ts
                            .physical_ms()
                            .saturating_sub(k.max_commit_ts.physical_ms())
                            < EXPIRE_MS
                });
            }
            let outcome = match slot.keys.iter_mut().find(|k| k.key == key) {
                None => {
                    slot.keys.push(KeyLatch {
                        key: key.clone(),
                        max_commit_ts: Timestamp::ZERO,
                        holder: Some(id),
                    });
                    None
                }
                Some(k) if k.max_commit_ts > start_ts => Some(LatchState::Stale {
                    key: key.clone(),
                    commit_ts: k.max_commit_ts,
                }),
                Some(k) if k.holder.is_none() => {
                    k.holder = Some(id);
                    None
                }
                Some(_) => {
                    slot.waiting.push_back(id);
                    Some(LatchState::Waiting)
                }
            };
            let Some(r) = self.requests.get_mut(&id) else {
                return;
            };
            match outcome {
                None => r.acquired += 1,
                Some(state) => {
                    r.state = state;
                    return;
                }
            }
        }
    }

    /// Ends request `id` (whatever its state: acquired, waiting or stale), recording
    /// `commit_ts` on its keys if it committed; returns the requests whose state changed
    /// (now [`Acquired`](LatchState::Acquired) or [`Stale`](LatchState::Stale)): wake them.
    pub fn release(&mut self, id: LatchId, commit_ts: Option<Timestamp>) -> Vec<LatchId> {
        let Some(r) = self.requests.remove(&id) else {
            return Vec::new();
        };
        let commit_ts = commit_ts.unwrap_or(Timestamp::ZERO);
        // Leave any queue it waits in.
        if r.state == LatchState::Waiting {
            if let Some((_, slot)) = r.keys.get(r.acquired) {
                self.slots[*slot].waiting.retain(|w| *w != id);
            }
        }
        let mut woken = Vec::new();
        for (key, slot_id) in r.keys[..r.acquired].iter().rev() {
            let slot = &mut self.slots[*slot_id];
            let Some(k) = slot.keys.iter_mut().find(|k| k.key == *key) else {
                continue;
            };
            k.max_commit_ts = k.max_commit_ts.max(commit_ts);
            k.holder = None;
            // The oldest waiter for this very key (others in the slot wait for other keys).
            let next = slot.waiting.iter().position(|w| {
                self.requests
                    .get(w)
                    .and_then(|n| n.keys.get(n.acquired))
                    .is_some_and(|(nk, _)| nk == key)
            });
            if let Some(i) = next {
                if let Some(w) = slot.waiting.remove(i) {
                    woken.push(w);
                }
            }
        }
        let mut changed = Vec::new();
        for w in woken {
            self.acquire(w);
            if self.state(w) != Some(LatchState::Waiting) {
                changed.push(w);
            }
        }
        changed
    }

    /// Requests in progress (acquired, waiting or stale, not yet released).
    pub fn pending(&self) -> usize {
        self.requests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: u64) -> Timestamp {
        Timestamp::compose(ms, 0)
    }

    fn keys(list: &[&str]) -> Vec<Key> {
        list.iter().map(|k| Key::from(*k)).collect()
    }

    #[test]
    fn writers_of_a_key_take_turns_and_a_later_start_is_not_stale() {
        let mut l = Latches::new(16);
        let (a, sa) = l.lock(ts(10), keys(&["k", "x"]));
        assert_eq!(sa, LatchState::Acquired);
        let (b, sb) = l.lock(ts(20), keys(&["k"]));
        assert_eq!(sb, LatchState::Waiting);
        let (c, sc) = l.lock(ts(30), keys(&["y"]));
        assert_eq!(sc, LatchState::Acquired, "other keys are not held up");
        // a commits at 15, before b started: b goes ahead.
        assert_eq!(l.release(a, Some(ts(15))), [b]);
        assert_eq!(l.state(b), Some(LatchState::Acquired));
        l.release(b, Some(ts(25)));
        l.release(c, None);
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn a_transaction_older_than_a_commit_under_its_latch_is_stale() {
        let mut l = Latches::new(16);
        let (a, _) = l.lock(ts(10), keys(&["k"]));
        let (b, sb) = l.lock(ts(12), keys(&["k"]));
        assert_eq!(sb, LatchState::Waiting);
        // a commits at 15, after b started: b would conflict in TiKV.
        assert_eq!(l.release(a, Some(ts(15))), [b]);
        assert_eq!(
            l.state(b),
            Some(LatchState::Stale {
                key: "k".into(),
                commit_ts: ts(15)
            })
        );
        l.release(b, None);
        // Asking afresh with an old start is stale at once; a newer one goes ahead.
        let (c, sc) = l.lock(ts(14), keys(&["k"]));
        assert!(matches!(sc, LatchState::Stale { .. }));
        l.release(c, None);
        let (d, sd) = l.lock(ts(16), keys(&["k"]));
        assert_eq!(sd, LatchState::Acquired);
        l.release(d, None);
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_queue_and_keys_in_one_slot_do_not_block_each_other() {
        // One slot for every key: only the same key waits.
        let mut l = Latches::new(1);
        let (a, _) = l.lock(ts(10), keys(&["k"]));
        let (b, sb) = l.lock(ts(20), keys(&["j"]));
        assert_eq!(sb, LatchState::Acquired);
        let (c, sc) = l.lock(ts(30), keys(&["k"]));
        assert_eq!(sc, LatchState::Waiting);
        // c is cancelled: a's release wakes nobody.
        assert!(l.release(c, None).is_empty());
        assert!(l.release(a, None).is_empty());
        l.release(b, None);
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn keys_are_latched_in_order_so_two_writers_cannot_deadlock() {
        let mut l = Latches::new(64);
        let (a, _) = l.lock(ts(10), keys(&["b", "a"]));
        let (b, sb) = l.lock(ts(20), keys(&["a", "b"]));
        assert_eq!(sb, LatchState::Waiting, "waits at a, holding nothing");
        assert_eq!(l.release(a, None), [b]);
        assert_eq!(l.state(b), Some(LatchState::Acquired));
        l.release(b, None);
    }
}
