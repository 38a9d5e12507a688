//! What to do about a region error: one decision per `errorpb::Error` kind.
//!
//! [`on_region_error`] applies the cache updates a region error implies (new leader, replaced
//! regions, invalidated region or store) and says how the request proceeds. The table follows
//! client-go's `onRegionError` together with `MayBackoffForRegionError`, for leader requests
//! (replica and stale reads add their own cases later):
//!
//! | error | cache | then |
//! |---|---|---|
//! | `undetermined_result` | — | result undetermined |
//! | `not_leader` naming a peer of the cached region | leader switched | retry now |
//! | `not_leader` naming a stranger | region dropped | back off `regionMiss`, relocate |
//! | `not_leader` naming nobody | next voter presumed leader | back off `regionScheduling`, retry |
//! | `disk_full` | — | back off `tikvDiskFull`, retry |
//! | `recovery_in_progress` / `is_witness` | region dropped | back off its kind, relocate |
//! | `flashback_in_progress` / `flashback_not_prepared` | — | fail |
//! | `region_not_found` / `key_not_in_region` / `mismatch_peer_id` | region dropped | back off `regionMiss`, relocate |
//! | `epoch_not_match` without regions | region dropped | back off `regionMiss`, relocate |
//! | `epoch_not_match` with older regions than ours | — | back off `regionMiss`, retry |
//! | `epoch_not_match` with current regions | regions replaced (leader: the replying store) | relocate now |
//! | `bucket_version_not_match` | — | relocate now |
//! | `server_is_busy` | — | back off `tikvServerBusy`, retry |
//! | `stale_command` | — | back off `staleCommand`, retry |
//! | `store_not_match` | region and store dropped | back off `regionMiss`, relocate |
//! | `raft_entry_too_large`, "invalid max_ts update" | — | fail |
//! | `max_timestamp_not_synced` | — | back off `maxTsNotSynced`, retry |
//! | `region_not_initialized` | — | back off `regionNotInitialized`, retry |
//! | `read_index_not_ready` / `proposal_in_merging_mode` | — | back off `regionScheduling`, retry |
//! | `data_is_not_ready` | — | retry now (as a leader read) |
//! | anything else | region dropped | back off `regionMiss`, relocate |

use tikv_proto::errorpb;

use crate::backoff::BackoffKind;
use crate::codec::RegionKeys;
use crate::region::{Region, RegionVerId, StoreId};
use crate::region_cache::{LeaderUpdate, RegionCache};
use crate::rng::Rng;
use crate::store_cache::StoreCache;
use crate::time::Instant;

/// How a `FlashbackNotPrepared` region error is worded in the message of
/// [`Error::Region`](crate::Error::Region) (a flashback's second phase takes it to mean the
/// region had nothing to flash back).
pub const FLASHBACK_NOT_PREPARED: &str = "is not prepared for the flashback";

/// Where the failed request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentTo {
    /// The region and epoch the request named.
    pub region: RegionVerId,
    /// The store it was sent to.
    pub store_id: StoreId,
}

/// How a request proceeds after a region error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionErrorAction {
    /// Resend at once to the region's (updated) leader.
    RetryNow,
    /// Sleep this kind, then resend to the region's cached leader.
    Backoff(BackoffKind),
    /// The region the request named is gone or changed: (sleep this kind, then) locate the
    /// request's keys again and re-split it by the regions now cached.
    Relocate(Option<BackoffKind>),
    /// The request may or may not have been applied.
    Undetermined,
    /// Give up: the error goes to the caller with this description.
    Fail(String),
}

/// The caches a region error may update, and what the update may draw on.
pub struct RoutingState<'a> {
    /// The region cache.
    pub regions: &'a RegionCache,
    /// The store cache.
    pub stores: &'a StoreCache,
    /// Now.
    pub now: Instant,
    /// Randomness (cache TTL jitter).
    pub rng: &'a mut Rng,
    /// How region boundaries in `EpochNotMatch` are written.
    pub region_keys: RegionKeys,
}

/// Applies region error `err`, which `sent` came back with, to the caches, and decides how the
/// request continues.
pub fn on_region_error(
    err: &errorpb::Error,
    sent: SentTo,
    st: &mut RoutingState<'_>,
) -> RegionErrorAction {
    use BackoffKind as B;
    use RegionErrorAction as A;

    if err.undetermined_result.is_some() {
        return A::Undetermined;
    }
    if let Some(nl) = &err.not_leader {
        return match &nl.leader {
            Some(leader) if leader.store_id != 0 => {
                match st.regions.update_leader(sent.region, leader.store_id) {
                    LeaderUpdate::Switched => A::RetryNow,
                    // A newer entry replaced what we sent with, or nothing is cached: route afresh.
                    LeaderUpdate::NotCached => A::Relocate(None),
                    LeaderUpdate::Invalidated => A::Relocate(Some(B::RegionMiss)),
                }
            }
            _ => {
                st.regions.rotate_leader(sent.region, sent.store_id);
                A::Backoff(B::RegionScheduling)
            }
        };
    }
    if err.disk_full.is_some() {
        return A::Backoff(B::DiskFull);
    }
    if err.recovery_in_progress.is_some() {
        st.regions.invalidate(sent.region);
        return A::Relocate(Some(B::RegionRecoveryInProgress));
    }
    if err.is_witness.is_some() {
        st.regions.invalidate(sent.region);
        return A::Relocate(Some(B::IsWitness));
    }
    if let Some(f) = &err.flashback_in_progress {
        return A::Fail(format!(
            "region {} is in flashback progress, flashback start ts {}",
            sent.region.id, f.flashback_start_ts
        ));
    }
    if err.flashback_not_prepared.is_some() {
        return A::Fail(format!(
            "region {} {FLASHBACK_NOT_PREPARED}",
            sent.region.id
        ));
    }
    if err.region_not_found.is_some() || err.key_not_in_region.is_some() {
        st.regions.invalidate(sent.region);
        return A::Relocate(Some(B::RegionMiss));
    }
    if let Some(e) = &err.epoch_not_match {
        return on_epoch_not_match(&e.current_regions, sent, st);
    }
    if err.bucket_version_not_match.is_some() {
        return A::Relocate(None);
    }
    if err.server_is_busy.is_some() {
        return A::Backoff(B::ServerBusy);
    }
    if err.stale_command.is_some() {
        return A::Backoff(B::StaleCmd);
    }
    if err.store_not_match.is_some() {
        st.stores.invalidate(sent.store_id);
        st.regions.invalidate(sent.region);
        return A::Relocate(Some(B::RegionMiss));
    }
    if err.raft_entry_too_large.is_some() {
        return A::Fail(format!("raft entry too large: {}", err.message));
    }
    if err.max_timestamp_not_synced.is_some() {
        return A::Backoff(B::MaxTsNotSynced);
    }
    if err.region_not_initialized.is_some() {
        return A::Backoff(B::RegionNotInitialized);
    }
    if err.read_index_not_ready.is_some() || err.proposal_in_merging_mode.is_some() {
        return A::Backoff(B::RegionScheduling);
    }
    if err.data_is_not_ready.is_some() {
        return A::RetryNow;
    }
    if err.mismatch_peer_id.is_some() {
        st.regions.invalidate(sent.region);
        return A::Relocate(Some(B::RegionMiss));
    }
    if err.message.contains("invalid max_ts update") {
        return A::Fail(err.message.clone());
    }
    // Unknown to us (a newer server's error, or an empty one): do not trust the cached region.
    st.regions.invalidate(sent.region);
    A::Relocate(Some(B::RegionMiss))
}

fn on_epoch_not_match(
    current: &[tikv_proto::metapb::Region],
    sent: SentTo,
    st: &mut RoutingState<'_>,
) -> RegionErrorAction {
    if current.is_empty() {
        st.regions.invalidate(sent.region);
        return RegionErrorAction::Relocate(Some(BackoffKind::RegionMiss));
    }
    // TiKV behind our cache (it has not applied what PD told us yet): wait for it.
    let behind = current.iter().any(|m| {
        m.id == sent.region.id
            && m.region_epoch.as_ref().is_some_and(|e| {
                e.conf_ver < sent.region.conf_ver || e.version < sent.region.version
            })
    });
    if behind {
        return RegionErrorAction::Backoff(BackoffKind::RegionMiss);
    }
    let mut same_version = false;
    let mut fresh = Vec::with_capacity(current.len());
    for meta in current {
        let mut meta = meta.clone();
        if st.region_keys.decode_region(&mut meta).is_err() {
            // A boundary we cannot read: drop our view and ask PD instead.
            st.regions.invalidate(sent.region);
            return RegionErrorAction::Relocate(Some(BackoffKind::RegionMiss));
        }
        let mut region = Region::from_meta(&meta, None);
        // The store that answered holds these regions; treat its peer as the leader until told
        // otherwise.
        region.switch_leader_to_store(sent.store_id);
        same_version |= region.ver_id() == sent.region;
        fresh.push(region);
    }
    if !same_version {
        st.regions.invalidate(sent.region);
    }
    for region in fresh {
        st.regions.insert(region, st.now, st.rng);
    }
    RegionErrorAction::Relocate(None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::key::{Key, KeyRange};
    use crate::region::{Peer, PeerRole, RegionEpoch, Store, StoreState};
    use crate::store_cache::StoreLookup;

    /// Response builders for region errors.
    mod err {
        use tikv_proto::{errorpb, metapb};

        pub(super) fn with(f: impl FnOnce(&mut errorpb::Error)) -> errorpb::Error {
            let mut e = errorpb::Error {
                message: "test".into(),
                ..Default::default()
            };
            f(&mut e);
            e
        }
        pub(super) fn not_leader(leader_store: Option<u64>) -> errorpb::Error {
            with(|e| {
                e.not_leader = Some(errorpb::NotLeader {
                    region_id: 1,
                    leader: leader_store.map(|s| metapb::Peer {
                        id: 10 + s,
                        store_id: s,
                        ..Default::default()
                    }),
                })
            })
        }
        pub(super) fn epoch_not_match(regions: Vec<metapb::Region>) -> errorpb::Error {
            with(|e| {
                e.epoch_not_match = Some(errorpb::EpochNotMatch {
                    current_regions: regions,
                })
            })
        }
    }

    fn region(id: u64, start: &str, end: &str, version: u64) -> Region {
        Region {
            id,
            range: KeyRange::new(start, end),
            epoch: RegionEpoch {
                conf_ver: 1,
                version,
            },
            peers: (1..=3)
                .map(|s| Peer {
                    id: 10 + s,
                    store_id: s,
                    role: PeerRole::Voter,
                })
                .collect(),
            leader: Some(Peer {
                id: 11,
                store_id: 1,
                role: PeerRole::Voter,
            }),
        }
    }

    struct Fixture {
        regions: RegionCache,
        stores: StoreCache,
        rng: Rng,
    }

    impl Fixture {
        fn new() -> (Self, SentTo) {
            let mut f = Fixture {
                regions: RegionCache::new(Duration::from_secs(600), Duration::from_secs(60)),
                stores: StoreCache::new(),
                rng: Rng::seeded(1),
            };
            let r = region(1, "a", "z", 5);
            let sent = SentTo {
                region: r.ver_id(),
                store_id: 1,
            };
            f.regions.insert(r, Instant::ZERO, &mut f.rng);
            f.stores.insert(Store {
                id: 1,
                address: "s1".into(),
                labels: vec![],
                state: StoreState::Up,
            });
            (f, sent)
        }

        fn apply(&mut self, e: &errorpb::Error, sent: SentTo) -> RegionErrorAction {
            let mut st = RoutingState {
                regions: &self.regions,
                stores: &self.stores,
                now: Instant::ZERO,
                rng: &mut self.rng,
                region_keys: RegionKeys::Raw,
            };
            on_region_error(e, sent, &mut st)
        }

        fn cached(&self) -> Option<std::sync::Arc<Region>> {
            self.regions.peek_by_id(1)
        }
    }

    use RegionErrorAction as A;

    #[test]
    fn not_leader_with_member_hint_switches_leader() {
        let (mut f, sent) = Fixture::new();
        assert_eq!(f.apply(&err::not_leader(Some(2)), sent), A::RetryNow);
        assert_eq!(f.cached().unwrap().leader.unwrap().store_id, 2);
    }

    #[test]
    fn not_leader_with_stranger_drops_region() {
        let (mut f, sent) = Fixture::new();
        assert_eq!(
            f.apply(&err::not_leader(Some(9)), sent),
            A::Relocate(Some(BackoffKind::RegionMiss))
        );
        assert!(f.cached().is_none());
    }

    #[test]
    fn not_leader_without_hint_tries_another_replica() {
        let (mut f, sent) = Fixture::new();
        assert_eq!(
            f.apply(&err::not_leader(None), sent),
            A::Backoff(BackoffKind::RegionScheduling)
        );
        assert_eq!(f.cached().unwrap().leader.unwrap().store_id, 2);
    }

    #[test]
    fn epoch_not_match_replaces_regions_with_leader_on_replying_store() {
        let (mut f, sent) = Fixture::new();
        let left = region(1, "a", "m", 6).to_meta();
        let right = region(7, "m", "z", 6).to_meta();
        assert_eq!(
            f.apply(&err::epoch_not_match(vec![left, right]), sent),
            A::Relocate(None)
        );
        let r = f
            .regions
            .locate_key(&Key::from("n"), Instant::ZERO)
            .unwrap();
        assert_eq!((r.id, r.leader.unwrap().store_id), (7, 1));
        assert_eq!(f.cached().unwrap().range, KeyRange::new("a", "m"));
    }

    #[test]
    fn epoch_not_match_edge_cases() {
        let (mut f, sent) = Fixture::new();
        // TiKV is behind the epoch we sent: wait, keep the cache.
        let behind = region(1, "a", "z", 4).to_meta();
        assert_eq!(
            f.apply(&err::epoch_not_match(vec![behind]), sent),
            A::Backoff(BackoffKind::RegionMiss)
        );
        assert!(f.cached().is_some());
        // No regions: drop ours and relocate after a region-miss backoff.
        assert_eq!(
            f.apply(&err::epoch_not_match(vec![]), sent),
            A::Relocate(Some(BackoffKind::RegionMiss))
        );
        assert!(f.cached().is_none());
    }

    #[test]
    fn store_not_match_drops_region_and_store() {
        let (mut f, sent) = Fixture::new();
        let e = err::with(|e| e.store_not_match = Some(Default::default()));
        assert_eq!(
            f.apply(&e, sent),
            A::Relocate(Some(BackoffKind::RegionMiss))
        );
        assert!(f.cached().is_none());
        assert_eq!(f.stores.lookup(1), StoreLookup::Unknown);
    }

    /// Every errorpb variant, with its expected action and whether the region stays cached.
    #[test]
    fn table_of_every_variant() {
        type Case = (
            &'static str,
            fn(&mut errorpb::Error),
            RegionErrorAction,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "undetermined",
                |e| e.undetermined_result = Some(Default::default()),
                A::Undetermined,
                true,
            ),
            (
                "disk_full",
                |e| e.disk_full = Some(Default::default()),
                A::Backoff(BackoffKind::DiskFull),
                true,
            ),
            (
                "recovery",
                |e| e.recovery_in_progress = Some(Default::default()),
                A::Relocate(Some(BackoffKind::RegionRecoveryInProgress)),
                false,
            ),
            (
                "witness",
                |e| e.is_witness = Some(Default::default()),
                A::Relocate(Some(BackoffKind::IsWitness)),
                false,
            ),
            (
                "region_not_found",
                |e| e.region_not_found = Some(Default::default()),
                A::Relocate(Some(BackoffKind::RegionMiss)),
                false,
            ),
            (
                "key_not_in_region",
                |e| e.key_not_in_region = Some(Default::default()),
                A::Relocate(Some(BackoffKind::RegionMiss)),
                false,
            ),
            (
                "bucket_version",
                |e| e.bucket_version_not_match = Some(Default::default()),
                A::Relocate(None),
                true,
            ),
            (
                "busy",
                |e| e.server_is_busy = Some(Default::default()),
                A::Backoff(BackoffKind::ServerBusy),
                true,
            ),
            (
                "stale_command",
                |e| e.stale_command = Some(Default::default()),
                A::Backoff(BackoffKind::StaleCmd),
                true,
            ),
            (
                "max_ts",
                |e| e.max_timestamp_not_synced = Some(Default::default()),
                A::Backoff(BackoffKind::MaxTsNotSynced),
                true,
            ),
            (
                "not_initialized",
                |e| e.region_not_initialized = Some(Default::default()),
                A::Backoff(BackoffKind::RegionNotInitialized),
                true,
            ),
            (
                "read_index",
                |e| e.read_index_not_ready = Some(Default::default()),
                A::Backoff(BackoffKind::RegionScheduling),
                true,
            ),
            (
                "merging",
                |e| e.proposal_in_merging_mode = Some(Default::default()),
                A::Backoff(BackoffKind::RegionScheduling),
                true,
            ),
            (
                "data_not_ready",
                |e| e.data_is_not_ready = Some(Default::default()),
                A::RetryNow,
                true,
            ),
            (
                "mismatch_peer",
                |e| e.mismatch_peer_id = Some(Default::default()),
                A::Relocate(Some(BackoffKind::RegionMiss)),
                false,
            ),
            (
                "unknown",
                |_| {},
                A::Relocate(Some(BackoffKind::RegionMiss)),
                false,
            ),
        ];
        for (name, build, expected, stays) in cases {
            let (mut f, sent) = Fixture::new();
            assert_eq!(f.apply(&err::with(build), sent), expected, "{name}");
            assert_eq!(f.cached().is_some(), stays, "{name}: cache");
        }
        let failing: Vec<fn(&mut errorpb::Error)> = vec![
            |e| e.flashback_in_progress = Some(Default::default()),
            |e| e.flashback_not_prepared = Some(Default::default()),
            |e| e.raft_entry_too_large = Some(Default::default()),
            |e| e.message = "invalid max_ts update".into(),
        ];
        for build in failing {
            let (mut f, sent) = Fixture::new();
            assert!(matches!(f.apply(&err::with(build), sent), A::Fail(_)));
        }
    }
}
