//! Region errors (`errorpb::Error`) built the way TiKV builds them, including the `message`
//! text (TiKV formats the raftstore error with `Display` into `message` and sets exactly one
//! typed field).
//!
//! TiKV prints protobuf messages in the text format of rust-protobuf (`id: 3 store_id: 2`) and
//! keys as upper-case hex; the helpers here reproduce both.

use bytes::Bytes;
use tikv_proto::{errorpb, metapb};

use crate::codec::hex_upper;

fn peer_text(p: &metapb::Peer) -> String {
    let mut parts = Vec::new();
    if p.id != 0 {
        parts.push(format!("id: {}", p.id));
    }
    if p.store_id != 0 {
        parts.push(format!("store_id: {}", p.store_id));
    }
    if p.role != 0 {
        let role = metapb::PeerRole::try_from(p.role)
            .map(|r| r.as_str_name().to_owned())
            .unwrap_or_else(|_| p.role.to_string());
        parts.push(format!("role: {role}"));
    }
    if p.is_witness {
        parts.push("is_witness: true".to_owned());
    }
    parts.join(" ")
}

fn epoch_text(e: &metapb::RegionEpoch) -> String {
    let mut parts = Vec::new();
    if e.conf_ver != 0 {
        parts.push(format!("conf_ver: {}", e.conf_ver));
    }
    if e.version != 0 {
        parts.push(format!("version: {}", e.version));
    }
    parts.join(" ")
}

/// `NotLeader`: this peer is not the leader; `leader` is the hint TiKV has (if any).
pub fn not_leader(region_id: u64, leader: Option<metapb::Peer>) -> errorpb::Error {
    let hint = match &leader {
        Some(p) => format!("Some({})", peer_text(p)),
        None => "None".to_owned(),
    };
    errorpb::Error {
        message: format!("peer is not leader for region {region_id}, leader may {hint}"),
        not_leader: Some(errorpb::NotLeader { region_id, leader }),
        ..Default::default()
    }
}

/// `RegionNotFound`: the store has no peer of the region.
pub fn region_not_found(region_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("region {region_id} not found"),
        region_not_found: Some(errorpb::RegionNotFound { region_id }),
        ..Default::default()
    }
}

/// `StoreNotMatch`: the request was meant for `request_store_id`.
pub fn store_not_match(request_store_id: u64, actual_store_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("to store id {request_store_id}, mine {actual_store_id}"),
        store_not_match: Some(errorpb::StoreNotMatch {
            request_store_id,
            actual_store_id,
        }),
        ..Default::default()
    }
}

/// `MismatchPeerId`: the request names another peer of the region than the one on this store.
pub fn mismatch_peer_id(request_peer_id: u64, store_peer_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("mismatch peer id {request_peer_id} != {store_peer_id}"),
        mismatch_peer_id: Some(errorpb::MismatchPeerId {
            request_peer_id,
            store_peer_id,
        }),
        ..Default::default()
    }
}

/// `EpochNotMatch` with the regions TiKV attaches.
pub fn epoch_not_match(
    region: &metapb::Region,
    sent: &metapb::RegionEpoch,
    current_regions: Vec<metapb::Region>,
) -> errorpb::Error {
    let current = region.region_epoch.unwrap_or_default();
    errorpb::Error {
        message: format!(
            "EpochNotMatch current epoch of region {} is {}, but you sent {}",
            region.id,
            epoch_text(&current),
            epoch_text(sent)
        ),
        epoch_not_match: Some(errorpb::EpochNotMatch { current_regions }),
        ..Default::default()
    }
}

/// `FlashbackInProgress`: the region is in the flashback state and refuses the request.
pub fn flashback_in_progress(region_id: u64, flashback_start_ts: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!(
            "region {region_id} is in flashback progress, flashback start ts {flashback_start_ts}"
        ),
        flashback_in_progress: Some(errorpb::FlashbackInProgress {
            region_id,
            flashback_start_ts,
        }),
        ..Default::default()
    }
}

/// `FlashbackNotPrepared`: a flashback's second phase met a region it did not prepare.
pub fn flashback_not_prepared(region_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("region {region_id} is not prepared for the flashback"),
        flashback_not_prepared: Some(errorpb::FlashbackNotPrepared { region_id }),
        ..Default::default()
    }
}

/// The error TiKV gives a request without `region_epoch` (an untyped region error).
pub fn missing_epoch() -> errorpb::Error {
    errorpb::Error {
        message: "\"missing epoch!\"".to_owned(),
        ..Default::default()
    }
}

/// `KeyNotInRegion` for `key` (region key space) outside `region`.
pub fn key_not_in_region(key: &[u8], region: &metapb::Region) -> errorpb::Error {
    errorpb::Error {
        message: format!(
            "key {} is not in region key range [{}, {}) for region {}",
            hex_upper(key),
            hex_upper(&region.start_key),
            hex_upper(&region.end_key),
            region.id
        ),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: Bytes::copy_from_slice(key),
            region_id: region.id,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
        }),
        ..Default::default()
    }
}

/// `RaftEntryTooLarge` for a write bigger than `raft-entry-max-size`.
pub fn raft_entry_too_large(region_id: u64, entry_size: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("raft entry is too large, region {region_id}, entry size {entry_size}"),
        raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
            region_id,
            entry_size,
        }),
        ..Default::default()
    }
}

/// `ServerIsBusy` with a reason and an optional backoff hint.
pub fn server_is_busy(reason: &str, backoff_ms: u64) -> errorpb::Error {
    errorpb::Error {
        message: reason.to_owned(),
        server_is_busy: Some(errorpb::ServerIsBusy {
            reason: reason.to_owned(),
            backoff_ms,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `StaleCommand`.
pub fn stale_command() -> errorpb::Error {
    errorpb::Error {
        message: "stale command".to_owned(),
        stale_command: Some(errorpb::StaleCommand {}),
        ..Default::default()
    }
}

/// `MaxTimestampNotSynced` (raw writes in API V2 right after a leader change).
pub fn max_timestamp_not_synced(region_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!(
            "RawKV write fails due to potentially stale max timestamp, region_id: {region_id}"
        ),
        max_timestamp_not_synced: Some(errorpb::MaxTimestampNotSynced {}),
        ..Default::default()
    }
}

/// `DataIsNotReady`: a stale read above the peer's safe ts.
pub fn data_is_not_ready(region_id: u64, peer_id: u64, safe_ts: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("peer {peer_id} is not ready, safe_ts {safe_ts}, region {region_id}"),
        data_is_not_ready: Some(errorpb::DataIsNotReady {
            region_id,
            peer_id,
            safe_ts,
        }),
        ..Default::default()
    }
}

/// An untyped region error with only a message (raftstore's `Error::Other`).
pub fn other(message: impl Into<String>) -> errorpb::Error {
    errorpb::Error {
        message: message.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_message_prints_the_hint_like_tikv() {
        let e = not_leader(
            2,
            Some(metapb::Peer {
                id: 5,
                store_id: 3,
                ..Default::default()
            }),
        );
        assert_eq!(
            e.message,
            "peer is not leader for region 2, leader may Some(id: 5 store_id: 3)"
        );
        assert_eq!(
            not_leader(2, None).message,
            "peer is not leader for region 2, leader may None"
        );
    }

    #[test]
    fn epoch_not_match_message_names_both_epochs() {
        let r = metapb::Region {
            id: 4,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 3,
            }),
            ..Default::default()
        };
        let e = epoch_not_match(
            &r,
            &metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            },
            vec![r.clone()],
        );
        assert_eq!(
            e.message,
            "EpochNotMatch current epoch of region 4 is conf_ver: 1 version: 3, but you sent conf_ver: 1 version: 1"
        );
        assert_eq!(e.epoch_not_match.unwrap().current_regions, vec![r]);
    }

    #[test]
    fn key_not_in_region_uses_hex_keys() {
        let r = metapb::Region {
            id: 9,
            start_key: "a".into(),
            end_key: "b".into(),
            ..Default::default()
        };
        let e = key_not_in_region(b"c", &r);
        assert_eq!(
            e.message,
            "key 63 is not in region key range [61, 62) for region 9"
        );
        let k = e.key_not_in_region.unwrap();
        assert_eq!((k.region_id, &k.key[..]), (9, &b"c"[..]));
    }
}
