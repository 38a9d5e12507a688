//! BatchCommands stream state: request ids, which stream generation wrote each request, and
//! the batching policy — everything about a BatchCommands stream except moving its bytes.
//!
//! One [`StreamState`] belongs to one stream *slot* of a store (client-go keeps four per
//! store). The slot is served by a succession of gRPC streams, its *generations*: when one
//! breaks, the next request opens a new one. Every request records the generation it was
//! written on, so that when a stream ends only the requests written on *that* stream fail
//! (as maybe-delivered), and only the end of the *current* stream makes the slot open a new
//! one. Without generations, a receiver of an old stream that ends late fails requests
//! written on the new, healthy stream (which the server answers) and tears that stream down.
//!
//! `T` is whatever the driver uses to answer a caller (a oneshot sender); the state only keeps
//! it until the request is answered, abandoned or failed.

use std::time::Duration;

use crate::error::Delivery;
use crate::id_map::IdMap;

/// A stream generation: 1 for the slot's first stream, then counting up. 0 is never used.
pub type Generation = u64;

/// Batching settings of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most requests per message (client-go: `MaxBatchSize`, 128).
    pub max_batch: usize,
    /// When other requests of the stream still await answers (the store is busy), let other
    /// tasks run once before sending, so the requests they are about to queue share the
    /// message (client-go's "standard" policy waits ~100 µs; a yield costs far less).
    pub coalesce_when_busy: bool,
    /// Ask an idle store for health feedback this often (zero: never).
    pub health_feedback_interval: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_batch: 128,
            coalesce_when_busy: true,
            health_feedback_interval: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Entry<T> {
    reply: T,
    /// The generation that wrote the request; `None` while it waits to be written.
    written: Option<Generation>,
}

/// The state of one BatchCommands stream slot.
#[derive(Debug)]
pub struct StreamState<T> {
    policy: BatchPolicy,
    /// The latest generation opened (0: none yet).
    generation: Generation,
    /// Whether that generation is usable (open and not failed).
    healthy: bool,
    next_id: u64,
    inflight: IdMap<Entry<T>>,
}

impl<T> StreamState<T> {
    /// A slot with no stream yet.
    pub fn new(policy: BatchPolicy) -> Self {
        StreamState {
            policy,
            generation: 0,
            healthy: false,
            next_id: 0,
            inflight: IdMap::default(),
        }
    }

    /// The batching settings.
    pub fn policy(&self) -> &BatchPolicy {
        &self.policy
    }

    /// A caller's request: its id, with `reply` kept until it is answered.
    pub fn register(&mut self, reply: T) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.inflight.insert(
            id,
            Entry {
                reply,
                written: None,
            },
        );
        id
    }

    /// The caller of `id` stopped waiting: whether its request may have been applied (`None`
    /// when it was already answered or failed). A late answer to it is dropped.
    pub fn abandon(&mut self, id: u64) -> Option<Delivery> {
        self.inflight.remove(&id).map(|e| match e.written {
            Some(_) => Delivery::MaybeDelivered,
            None => Delivery::NotSent,
        })
    }

    /// Requests registered and not yet answered, abandoned or failed.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The generation to write on, if one is open and healthy; otherwise the driver opens a
    /// stream and reports it with [`opened`](Self::opened).
    pub fn current(&self) -> Option<Generation> {
        self.healthy.then_some(self.generation)
    }

    /// A new stream was opened for the slot: its generation.
    pub fn opened(&mut self) -> Generation {
        self.generation += 1;
        self.healthy = true;
        self.generation
    }

    /// Whether to give other callers a moment to queue before sending a message of
    /// `batch_len` requests: other requests of this slot still await answers, so more are
    /// likely on their way.
    pub fn should_coalesce(&self, batch_len: usize) -> bool {
        self.policy.coalesce_when_busy
            && batch_len < self.policy.max_batch
            && self.inflight.len() > batch_len
    }

    /// About to write `ids` on `generation`: drops the ids whose callers gave up (from `ids`
    /// too) and records the others as written there.
    pub fn writing(&mut self, generation: Generation, ids: &mut Vec<u64>) {
        ids.retain(|id| match self.inflight.get_mut(id) {
            Some(entry) => {
                entry.written = Some(generation);
                true
            }
            None => false,
        });
    }

    /// Writing `ids` on `generation` failed: nothing of them reached the store. The
    /// generation is done for; their replies are returned to fail as not sent.
    pub fn write_failed(&mut self, generation: Generation, ids: &[u64]) -> Vec<T> {
        self.retire(generation);
        ids.iter()
            .filter_map(|id| self.inflight.remove(id))
            .map(|e| e.reply)
            .collect()
    }

    /// Opening a stream failed: the ids meant for it were never written.
    pub fn open_failed(&mut self, ids: &[u64]) -> Vec<T> {
        ids.iter()
            .filter_map(|id| self.inflight.remove(id))
            .map(|e| e.reply)
            .collect()
    }

    /// The answer to `id` arrived on `generation`: the reply to send it to, unless its caller
    /// gave up or the id was not written on that stream.
    pub fn answered(&mut self, generation: Generation, id: u64) -> Option<T> {
        match self.inflight.get(&id) {
            Some(entry) if entry.written == Some(generation) => {
                self.inflight.remove(&id).map(|e| e.reply)
            }
            _ => None,
        }
    }

    /// Stream `generation` ended (its receiver saw the end or an error): the requests written
    /// on it, in id order, to fail as maybe delivered. Requests written on a newer stream, or
    /// not written yet, are untouched; the slot opens a new stream only if `generation` is
    /// the current one.
    pub fn ended(&mut self, generation: Generation) -> Vec<T> {
        self.retire(generation);
        let mut ids: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, e)| e.written == Some(generation))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.iter()
            .filter_map(|id| self.inflight.remove(id))
            .map(|e| e.reply)
            .collect()
    }

    fn retire(&mut self, generation: Generation) {
        if generation == self.generation {
            self.healthy = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> StreamState<&'static str> {
        StreamState::new(BatchPolicy::default())
    }

    #[test]
    fn answers_are_routed_by_id_to_the_stream_that_wrote_them() {
        let mut s = state();
        let a = s.register("a");
        let b = s.register("b");
        assert_eq!(s.current(), None, "no stream yet");
        let g = s.opened();
        let mut ids = vec![a, b];
        s.writing(g, &mut ids);
        assert_eq!(s.answered(g, b), Some("b"));
        assert_eq!(s.answered(g, b), None, "a duplicate answer is dropped");
        assert_eq!(
            s.answered(g + 1, a),
            None,
            "another stream cannot answer it"
        );
        assert_eq!(s.answered(g, a), Some("a"));
        assert_eq!(s.in_flight(), 0);
    }

    /// The hazard generations fix: stream 1's write fails but its receiver stays open; the
    /// next request opens stream 2 and is written there; then stream 1's receiver ends. Only
    /// requests written on stream 1 may fail, and stream 2 must stay in use.
    #[test]
    fn a_late_end_of_an_old_stream_spares_the_new_one() {
        let mut s = state();
        let first = s.register("first");
        let old = s.opened();
        let mut ids = vec![first];
        s.writing(old, &mut ids);
        assert_eq!(s.write_failed(old, &ids), vec!["first"]);
        assert_eq!(s.current(), None, "a failed write retires the stream");

        let second = s.register("second");
        let new = s.opened();
        let mut ids = vec![second];
        s.writing(new, &mut ids);
        assert_eq!(
            s.ended(old),
            Vec::<&str>::new(),
            "nothing of the new stream fails"
        );
        assert_eq!(s.current(), Some(new), "the new stream stays in use");
        assert_eq!(s.answered(new, second), Some("second"));
    }

    #[test]
    fn the_end_of_the_current_stream_fails_only_what_it_wrote() {
        let mut s = state();
        let g = s.opened();
        let written = s.register("written");
        let queued = s.register("queued");
        let mut ids = vec![written];
        s.writing(g, &mut ids);
        assert_eq!(s.ended(g), vec!["written"]);
        assert_eq!(s.current(), None, "the next request opens a new stream");
        let g2 = s.opened();
        let mut ids = vec![queued];
        s.writing(g2, &mut ids);
        assert_eq!(
            ids,
            [queued],
            "the queued request goes out on the new stream"
        );
        assert_eq!(s.answered(g2, queued), Some("queued"));
    }

    #[test]
    fn abandoned_requests_report_whether_they_were_written_and_are_not_sent() {
        let mut s = state();
        let g = s.opened();
        let sent = s.register("sent");
        let waiting = s.register("waiting");
        let mut ids = vec![sent];
        s.writing(g, &mut ids);
        assert_eq!(s.abandon(sent), Some(Delivery::MaybeDelivered));
        assert_eq!(s.abandon(waiting), Some(Delivery::NotSent));
        assert_eq!(s.abandon(waiting), None);
        let mut ids = vec![waiting];
        s.writing(g, &mut ids);
        assert!(ids.is_empty(), "an abandoned request is not written");
        assert_eq!(s.answered(g, sent), None, "a late answer is dropped");
    }

    #[test]
    fn ended_streams_fail_their_requests_in_id_order() {
        let mut s = state();
        let g = s.opened();
        let mut ids: Vec<u64> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|r| s.register(r))
            .collect();
        s.writing(g, &mut ids);
        assert_eq!(s.ended(g), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn coalescing_waits_only_while_others_await_answers() {
        let mut s = state();
        let g = s.opened();
        let first = s.register("first");
        assert!(!s.should_coalesce(1), "idle: send at once");
        let mut ids = vec![first];
        s.writing(g, &mut ids);
        s.register("second");
        assert!(s.should_coalesce(1), "busy: give others a moment");
        let mut s = StreamState::new(BatchPolicy {
            coalesce_when_busy: false,
            ..BatchPolicy::default()
        });
        s.register(1);
        s.register(2);
        assert!(!s.should_coalesce(1));
    }

    #[test]
    fn open_failure_fails_the_batch_as_not_sent_and_keeps_no_stream() {
        let mut s = state();
        let a = s.register("a");
        assert_eq!(s.open_failed(&[a]), vec!["a"]);
        assert_eq!((s.current(), s.in_flight()), (None, 0));
    }
}
