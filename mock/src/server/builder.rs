//! [`MockServerBuilder`]: a mock cluster configured and started in one line.

use std::io;

use bytes::Bytes;
use tikv_driver::runtime::Runtime;

use super::MockServer;
use crate::codec::encode_memcomparable;
use crate::{ApiMode, Cluster, ClusterConfig, FaultAction, FaultFilter};

/// Configures and starts a [`MockServer`]:
///
/// ```no_run
/// # async fn demo<R: tikv_driver::runtime::Runtime>(runtime: R) -> std::io::Result<()> {
/// use tikv_mock::ApiMode;
/// use tikv_mock::server::MockServer;
///
/// let mock = MockServer::builder()
///     .stores(3)
///     .regions(16)
///     .api(ApiMode::V2)
///     .seed(7)
///     .start(runtime)
///     .await?;
/// println!("PD at {}", mock.pd_address());
/// # Ok(()) }
/// ```
///
/// Unset options keep [`ClusterConfig::default`]'s values: one store, one region, API V1 and
/// V2 both accepted, loopback with ports picked by the OS.
#[derive(Clone, Debug)]
pub struct MockServerBuilder {
    config: ClusterConfig,
    regions: usize,
    encoding: SplitEncoding,
    splits: Vec<Vec<u8>>,
    spread_leaders: bool,
    faults: Vec<(FaultFilter, FaultAction, u64)>,
    host: String,
    pd_address: Option<String>,
}

impl Default for MockServerBuilder {
    fn default() -> Self {
        MockServerBuilder {
            config: ClusterConfig::default(),
            regions: 1,
            encoding: SplitEncoding::MemComparable,
            splits: Vec::new(),
            spread_leaders: false,
            faults: Vec::new(),
            host: "127.0.0.1".to_string(),
            pd_address: None,
        }
    }
}

impl MockServerBuilder {
    /// Replaces the whole cluster configuration (the other setters change single fields of
    /// it; call this one first).
    pub fn config(mut self, config: ClusterConfig) -> Self {
        self.config = config;
        self
    }

    /// Number of TiKV stores (at least 1).
    pub fn stores(mut self, stores: usize) -> Self {
        self.config.stores = stores.max(1);
        self
    }

    /// Replicas per region (capped by the number of stores; 3 by default).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.config.replicas = replicas.max(1);
        self
    }

    /// Splits the key space into this many even regions (see [`even_split_keys`]).
    pub fn regions(mut self, regions: usize) -> Self {
        self.regions = regions.max(1);
        self
    }

    /// How the even split keys of [`regions`](Self::regions) are written under API V1 (and
    /// V1 and V2): memcomparable-encoded, as TiKV writes transactional region boundaries
    /// (the default; RawKV clients route on them as well), or as raw bytes, which only
    /// RawKV V1 clients can use.
    pub fn split_encoding(mut self, encoding: SplitEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Also splits at these keys (region key space: raw keys for API V1 RawKV, memcomparable
    /// encoded keys for API V2 and transactional data).
    pub fn split_at<K: Into<Vec<u8>>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.splits.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Moves region leaders round-robin over the stores (by default every leader is on the
    /// first store), so that work over many regions reaches every store.
    pub fn spread_leaders(mut self, spread: bool) -> Self {
        self.spread_leaders = spread;
        self
    }

    /// Which API versions the stores accept.
    pub fn api(mut self, api: ApiMode) -> Self {
        self.config.api = api;
        self
    }

    /// Seed of the cluster's random generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Number of PD members (at least 1; member 0 leads).
    pub fn pd_members(mut self, members: usize) -> Self {
        self.config.pd_members = members.max(1);
        self
    }

    /// Installs a fault before the first request (see [`Cluster::inject_fault`]).
    pub fn fault(mut self, filter: FaultFilter, action: FaultAction, times: u64) -> Self {
        self.faults.push((filter, action, times));
        self
    }

    /// The host every listener binds (`127.0.0.1` by default), with ports picked by the OS.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// The address (`host:port`) PD (member 0) listens on, instead of an OS-picked port.
    pub fn pd_address(mut self, address: impl Into<String>) -> Self {
        self.pd_address = Some(address.into());
        self
    }

    /// Builds the cluster (splits, leaders, faults) and serves it on `runtime`.
    pub async fn start<R: Runtime>(self, runtime: R) -> io::Result<MockServer> {
        let cluster = self.build()?;
        MockServer::serve(runtime, cluster, &self.host, self.pd_address.as_deref()).await
    }

    /// The cluster as configured, before it is served.
    fn build(&self) -> io::Result<Cluster> {
        let mut cluster = Cluster::new(self.config.clone());
        if matches!(self.config.api, ApiMode::V2 | ApiMode::V1AndV2) {
            // PD splits at the DEFAULT keyspace's boundaries when it bootstraps it.
            cluster.split_keyspace(0);
        }
        let evenly = even_split_keys(self.regions, self.config.api, self.encoding);
        for key in evenly
            .iter()
            .map(|k| &k[..])
            .chain(self.splits.iter().map(|k| &k[..]))
        {
            cluster.split_at(key).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot split at {}: {e}", crate::codec::hex_upper(key)),
                )
            })?;
        }
        if self.spread_leaders {
            let stores: Vec<u64> = cluster.topology().stores().map(|s| s.meta.id).collect();
            let regions: Vec<u64> = cluster.topology().regions().map(|r| r.id()).collect();
            for (i, region) in regions.into_iter().enumerate() {
                // Stores without a peer of the region (more stores than replicas) are skipped.
                for offset in 0..stores.len() {
                    let store = stores[(i + offset) % stores.len()];
                    if cluster.transfer_leader(region, store).is_ok() {
                        break;
                    }
                }
            }
        }
        for (filter, action, times) in &self.faults {
            cluster.inject_fault(filter.clone(), action.clone(), *times);
        }
        Ok(cluster)
    }
}

/// How region split keys are written (see [`MockServerBuilder::split_encoding`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitEncoding {
    /// Memcomparable-encoded, as TiKV writes transactional (and every API V2) region
    /// boundary: what transactional clients decode.
    #[default]
    MemComparable,
    /// Raw bytes, as RawKV API V1 boundaries are; transactional clients cannot decode them.
    Raw,
}

/// The split keys (region key space) that cut the key space into `regions` even ranges by
/// the leading bytes of the user key.
///
/// Under API V1 (and the V1-and-V2 mode) the whole key space is cut: boundary `i` is the
/// 4-byte big-endian value `i * 2^32 / regions` with trailing zero bytes dropped (so 2
/// regions split at `[0x80]`), memcomparable-encoded unless `encoding` is
/// [`SplitEncoding::Raw`]: `regions - 1` keys. Under API V2 the same boundaries are placed
/// inside both of the `DEFAULT` keyspace's ranges, raw (`r\0\0\0` + boundary) and
/// transactional (`x\0\0\0` + boundary), always encoded: `2 × (regions - 1)` keys, so
/// that V2 RawKV and transactional clients each see `regions` regions of their keyspace.
pub fn even_split_keys(regions: usize, api: ApiMode, encoding: SplitEncoding) -> Vec<Bytes> {
    let regions = regions.max(1) as u128;
    let boundaries: Vec<Vec<u8>> = (1..regions)
        .map(|i| {
            // i < regions, so the quotient is below 2^32 and fits in 4 bytes.
            let at = ((i << 32) / regions) as u32;
            let mut key = at.to_be_bytes().to_vec();
            while key.last() == Some(&0) {
                key.pop();
            }
            key
        })
        .collect();
    match (api, encoding) {
        (ApiMode::V2, _) => [b"r\0\0\0", b"x\0\0\0"]
            .iter()
            .flat_map(|prefix| {
                boundaries.iter().map(move |b| {
                    let mut v2 = prefix.to_vec();
                    v2.extend_from_slice(b);
                    Bytes::from(encode_memcomparable(&v2))
                })
            })
            .collect(),
        (_, SplitEncoding::MemComparable) => boundaries
            .iter()
            .map(|b| Bytes::from(encode_memcomparable(b)))
            .collect(),
        (_, SplitEncoding::Raw) => boundaries.into_iter().map(Bytes::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_keys_are_sorted_distinct_and_even() {
        let raw = SplitEncoding::Raw;
        assert!(even_split_keys(1, ApiMode::V1, raw).is_empty());
        assert_eq!(
            even_split_keys(2, ApiMode::V1, raw),
            vec![Bytes::from_static(&[0x80])]
        );
        assert_eq!(
            even_split_keys(4, ApiMode::V1AndV2, raw),
            vec![
                Bytes::from_static(&[0x40]),
                Bytes::from_static(&[0x80]),
                Bytes::from_static(&[0xc0])
            ]
        );
        let many = even_split_keys(1000, ApiMode::V1, raw);
        assert_eq!(many.len(), 999);
        assert!(many.windows(2).all(|w| w[0] < w[1]));
        // Encoded by default, in every mode.
        let encoded = even_split_keys(2, ApiMode::V1, SplitEncoding::MemComparable);
        assert_eq!(encoded, vec![Bytes::from(encode_memcomparable(&[0x80]))]);
        let v2 = even_split_keys(2, ApiMode::V2, raw);
        assert_eq!(
            v2,
            vec![
                Bytes::from(encode_memcomparable(b"r\0\0\0\x80")),
                Bytes::from(encode_memcomparable(b"x\0\0\0\x80"))
            ]
        );
    }

    #[test]
    fn api_v2_regions_are_split_at_the_default_keyspaces_boundaries() {
        let cluster = MockServerBuilder::default()
            .api(ApiMode::V2)
            .regions(2)
            .build()
            .unwrap();
        let starts: Vec<Bytes> = cluster
            .topology()
            .regions()
            .map(|r| r.meta.start_key.clone())
            .collect();
        for boundary in [&b"r\0\0\0"[..], b"r\0\0\x01", b"x\0\0\0", b"x\0\0\x01"] {
            let encoded = Bytes::from(encode_memcomparable(boundary));
            assert!(starts.contains(&encoded), "{boundary:?} in {starts:?}");
        }
        // 4 keyspace boundaries and one even split in each of the raw and txn ranges.
        assert_eq!(starts.len(), 7);
    }

    #[test]
    fn build_splits_spreads_and_installs_faults() {
        let cluster = MockServerBuilder::default()
            .stores(3)
            .api(ApiMode::V1)
            .regions(16)
            .split_at([b"zz".to_vec()])
            .spread_leaders(true)
            .fault(FaultFilter::any(), FaultAction::Unreachable, 1)
            .build()
            .unwrap();
        assert_eq!(cluster.topology().regions().count(), 17);
        let leaders: std::collections::BTreeSet<u64> = cluster
            .topology()
            .regions()
            .filter_map(|r| r.leader().map(|p| p.store_id))
            .collect();
        assert_eq!(leaders.len(), 3);
        assert_eq!(cluster.faults.len(), 1);
    }
}
