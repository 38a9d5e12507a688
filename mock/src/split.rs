//! TiKV's `SplitRegion` (what client-go's `SplitRegions` sends, region by region).
//!
//! Semantics follow tikv/tikv `src/server/service/kv.rs` (`split_region`) and raftstore's
//! `on_prepare_split_region` / `validate_split_region` / apply-time `validate_batch_split`:
//!
//! - The keys are the deprecated single `split_key` when it is set, else `split_keys`; each is
//!   turned into region key space (memcomparable, except raw keys under API V1 with
//!   `is_raw_kv`), then sorted.
//! - Checks, in order: the store has a peer of the region (`RegionNotFound`), that peer leads
//!   (`NotLeader`), some key is given, the epoch's **version** matches (`EpochNotMatch`), no
//!   key is empty, every key is inside the region (`KeyNotInRegion`); at apply, the keys must
//!   be distinct and above the region's start ("invalid split request"). No check of the
//!   request's store or peer id: the split goes to the region's raft peer directly.
//! - Every failure is a region error (TiKV wraps what it cannot extract as an untyped one).
//! - The reply lists the resulting regions in key order; the original region, which keeps
//!   the right-most part (`right_derive_when_split`), comes last. `left`/`right` are set
//!   only when there are exactly two.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, ApiVersion};

use crate::cluster::{Cluster, HasContext, RegionErrorResponse};
use crate::codec::encode_memcomparable;
use crate::region_error;

fn failed(e: tikv_proto::errorpb::Error) -> kvrpcpb::SplitRegionResponse {
    kvrpcpb::SplitRegionResponse::from_region_error(e)
}

impl Cluster {
    pub(crate) fn split_region_rpc(
        &mut self,
        store_id: u64,
        req: kvrpcpb::SplitRegionRequest,
        _now_ms: u64,
    ) -> kvrpcpb::SplitRegionResponse {
        let ctx = req.context.clone().unwrap_or_default();
        let raw_v1 = req.is_raw_kv
            && self
                .config
                .api
                .storage_for(ApiVersion::try_from(ctx.api_version).unwrap_or(ApiVersion::V1))
                != ApiVersion::V2;
        let to_region_key = |k: &Bytes| -> Bytes {
            if raw_v1 {
                k.clone()
            } else {
                Bytes::from(encode_memcomparable(k))
            }
        };
        let mut keys: Vec<Bytes> = if req.split_key.is_empty() {
            req.split_keys.iter().map(to_region_key).collect()
        } else {
            vec![to_region_key(&req.split_key)]
        };
        keys.sort();

        let topology = self.topology();
        let Some(region) = topology
            .region(ctx.region_id)
            .filter(|r| r.peer_on(store_id).is_some())
        else {
            return failed(region_error::region_not_found(ctx.region_id));
        };
        let local = region.peer_on(store_id).map_or(0, |p| p.id);
        if region.leader_peer_id != local {
            return failed(region_error::not_leader(
                region.id(),
                region.leader().copied(),
            ));
        }
        let id = region.id();
        if let Some(start_ts) = region.flashback_start_ts {
            return failed(region_error::flashback_in_progress(id, start_ts));
        }
        if keys.is_empty() {
            return failed(region_error::other(format!(
                "[region {id}] {local} no split key is specified."
            )));
        }
        let sent = ctx.region_epoch.unwrap_or_default();
        if sent.version != region.epoch().version {
            return failed(region_error::epoch_not_match(
                &region.meta,
                &sent,
                vec![region.meta.clone()],
            ));
        }
        // Raw V1 keys may be empty as sent; an encoded empty key is not, so check the sent
        // ones (TiKV checks the encoded ones, which are empty exactly when these are, for
        // raw V1, and never otherwise).
        let sent_empty = if req.split_key.is_empty() {
            req.split_keys.iter().any(|k| k.is_empty())
        } else {
            false
        };
        if raw_v1 && sent_empty {
            return failed(region_error::other(format!(
                "[region {id}] {local} split key should not be empty"
            )));
        }
        for key in &keys {
            let inside = key[..] >= region.meta.start_key[..]
                && (region.meta.end_key.is_empty() || key[..] < region.meta.end_key[..]);
            if !inside {
                return failed(region_error::key_not_in_region(key, &region.meta));
            }
        }
        let new_ids = match self.split_region(id, &keys) {
            Ok(ids) => ids,
            Err(e) => {
                return failed(region_error::other(format!(
                    "failed to split: invalid split request: {e}"
                )));
            }
        };
        let topology = self.topology();
        let regions: Vec<_> = new_ids
            .iter()
            .chain(std::iter::once(&id))
            .filter_map(|r| topology.region(*r))
            .map(|r| r.meta.clone())
            .collect();
        let (left, right) = match regions.as_slice() {
            [l, r] => (Some(l.clone()), Some(r.clone())),
            _ => (None, None),
        };
        kvrpcpb::SplitRegionResponse {
            left,
            right,
            regions,
            ..Default::default()
        }
    }
}

impl HasContext for kvrpcpb::SplitRegionRequest {
    fn context(&self) -> Option<&kvrpcpb::Context> {
        self.context.as_ref()
    }
}

impl RegionErrorResponse for kvrpcpb::SplitRegionResponse {
    fn from_region_error(err: tikv_proto::errorpb::Error) -> Self {
        kvrpcpb::SplitRegionResponse {
            region_error: Some(Box::new(err)),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use tikv_proto::kvrpcpb;
    use tikv_proto::tikvpb::tikv_service;

    use crate::test_util::b;

    fn cluster() -> crate::Cluster {
        crate::Cluster::new(crate::ClusterConfig::default())
    }

    fn request(
        c: &crate::Cluster,
        key: &[u8],
        keys: &[&str],
    ) -> (u64, kvrpcpb::SplitRegionRequest) {
        let encoded = crate::codec::encode_memcomparable(key);
        let region = c
            .topology()
            .regions()
            .find(|r| r.contains(&encoded))
            .expect("a region holds every key");
        let leader = *region.leader().expect("a leader");
        let ctx = kvrpcpb::Context {
            region_id: region.id(),
            region_epoch: region.meta.region_epoch,
            peer: Some(leader),
            ..Default::default()
        };
        (
            leader.store_id,
            kvrpcpb::SplitRegionRequest {
                context: Some(ctx),
                split_keys: keys.iter().map(|k| b(k)).collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn keys_are_sorted_and_the_original_region_comes_last() {
        let mut c = cluster();
        let (store, req) = request(&c, b"a", &["q", "g"]);
        let original = req.context.as_ref().map_or(0, |c| c.region_id);
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        assert!(r.region_error.is_none(), "{:?}", r.region_error);
        assert_eq!(r.regions.len(), 3);
        assert_eq!(r.regions[2].id, original, "right-derived");
        let g = crate::codec::encode_memcomparable(b"g");
        let q = crate::codec::encode_memcomparable(b"q");
        assert_eq!(r.regions[0].end_key, g);
        assert_eq!(r.regions[1].start_key, g);
        assert_eq!(r.regions[2].start_key, q);
        assert!(
            r.left.is_none() && r.right.is_none(),
            "only for exactly two"
        );
    }

    #[test]
    fn stale_epochs_duplicates_and_the_region_start_are_region_errors() {
        let mut c = cluster();
        let (store, req) = request(&c, b"a", &["m"]);
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req.clone(), 0)
            .expect("served");
        assert!(r.left.is_some() && r.right.is_some());
        // The same request again: its epoch is stale now.
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        assert!(r.region_error.is_some_and(|e| e.epoch_not_match.is_some()));
        let (store, req) = request(&c, b"x", &["x", "x"]);
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        assert!(
            r.region_error
                .is_some_and(|e| e.message.contains("invalid split request"))
        );
        let (store, req) = request(&c, b"x", &["m"]);
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        assert!(
            r.region_error
                .is_some_and(|e| e.message.contains("invalid split request")),
            "a key that starts the region"
        );
        let (store, req) = request(&c, b"x", &[]);
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        assert!(
            r.region_error
                .is_some_and(|e| e.message.contains("no split key"))
        );
    }

    #[test]
    fn a_key_outside_the_region_is_key_not_in_region() {
        let mut c = cluster();
        let (store, req) = request(&c, b"a", &["m"]);
        c.tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        let (store, req) = request(&c, b"a", &["z"]);
        let r = c
            .tikv::<tikv_service::SplitRegion>(store, req, 0)
            .expect("served");
        assert!(
            r.region_error
                .is_some_and(|e| e.key_not_in_region.is_some())
        );
    }
}
