//! Helpers shared by the crate's tests: a cluster plus request builders.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{ApiVersion, Context};

use crate::codec::encode_memcomparable;
use crate::{ApiMode, Cluster, ClusterConfig};

pub(crate) const NOW: u64 = 1_700_000_000_000;

pub(crate) struct Harness {
    pub(crate) c: Cluster,
    pub(crate) api: ApiVersion,
}

impl Harness {
    pub(crate) fn new(stores: usize, api: ApiMode) -> Self {
        let c = Cluster::new(ClusterConfig {
            stores,
            api,
            ..Default::default()
        });
        let api = match api {
            ApiMode::V2 => ApiVersion::V2,
            _ => ApiVersion::V1,
        };
        Harness { c, api }
    }

    pub(crate) fn v1() -> Self {
        Harness::new(3, ApiMode::V1Ttl)
    }

    /// The region key of a request key under this harness's API version.
    pub(crate) fn region_key(&self, key: &[u8]) -> Vec<u8> {
        match self.api {
            ApiVersion::V2 => encode_memcomparable(key),
            _ => key.to_vec(),
        }
    }

    /// The leader's store and a correct context for the region holding `key`.
    pub(crate) fn ctx(&self, key: &[u8]) -> (u64, Context) {
        let r = self
            .c
            .topology()
            .region_by_key(&self.region_key(key))
            .unwrap();
        let leader = *r.leader().unwrap();
        let ctx = Context {
            region_id: r.id(),
            region_epoch: r.meta.region_epoch,
            peer: Some(leader),
            api_version: self.api as i32,
            ..Default::default()
        };
        (leader.store_id, ctx)
    }

    pub(crate) fn split(&mut self, key: &str) -> u64 {
        let k = self.region_key(key.as_bytes());
        self.c.split_at(&k).unwrap()
    }
}

pub(crate) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}
