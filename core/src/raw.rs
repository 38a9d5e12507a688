//! RawKV operations as machines: what each RawClient call sends, and how the replies become
//! results.
//!
//! Every function returns a machine; the driver runs it. Single-key operations use
//! [`SingleKey`], batches [`MultiKey`] (grouped by region, split by client-go's limits, sent
//! concurrently), and range operations [`RangeWalk`] (region by region, each request clipped
//! to its region). Reply errors (`error` strings, not-found flags) are interpreted here.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::backoff::{Backoffer, budget};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::key::{Key, KeyRange};
use crate::keyspace::KeyspaceCodec;
use crate::machine::{Budgeted, Machine, Map};
use crate::plan::{
    BatchLimits, BatchPlan, KeyBatchPlan, MultiKey, RangePlan, RangeWalk, SingleKey,
};
use crate::region::Region;
use crate::request::RpcOptions;
use crate::rpc::{TikvRequest, TikvResponse};

/// A key and its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvPair {
    /// The key.
    pub key: Key,
    /// The value (empty for key-only scans).
    pub value: Bytes,
}

/// The result of a raw checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// XOR of the per-pair CRC64 digests.
    pub crc64_xor: u64,
    /// Number of pairs.
    pub total_kvs: u64,
    /// Total key and value bytes.
    pub total_bytes: u64,
}

fn backoff(config: &Config) -> Backoffer {
    Backoffer::new("rawkv", config.budget(budget::RAWKV))
}

fn write_options(config: &Config) -> RpcOptions {
    RpcOptions {
        idempotent: true,
        max_execution: Some(config.max_write_execution),
        timeout: None,
    }
}

/// A reply of the wrong kind for a request about `key`. The router already fails those
/// naming the store ([`RegionRpc`](crate::request::RegionRpc) checks every reply against its
/// request), so this only keeps the plans total.
fn unexpected(key: &Key, response: &TikvResponse, wanted: &str) -> Error {
    Error::KeyError {
        key: key.clone(),
        message: format!(
            "expected a {wanted} response, got {}",
            response.method_name()
        ),
    }
}

/// Wraps a plan so that the keys its errors name are the caller's (see [`KeyspaceCodec`]).
fn user_errors<M, T>(
    codec: KeyspaceCodec,
    machine: M,
) -> Map<M, impl FnOnce(Result<T>) -> Result<T> + Send>
where
    M: Machine<Output = Result<T>>,
{
    Map::new(machine, move |r: Result<T>| codec.decode_result(r))
}

fn key_error(key: &Key, message: &str) -> Result<()> {
    if message.is_empty() {
        Ok(())
    } else {
        Err(Error::KeyError {
            key: key.clone(),
            message: message.to_string(),
        })
    }
}

fn single(
    config: &Config,
    key: Key,
    request: TikvRequest,
    options: RpcOptions,
) -> Budgeted<SingleKey> {
    Budgeted::new(backoff(config), SingleKey::new(key, request, options))
}

/// `RawGet`: the value of `key`, `None` if absent.
pub fn get(
    config: &Config,
    key: Key,
    cf: &str,
) -> impl Machine<Output = Result<Option<Bytes>>> + Send {
    let codec = config.keyspace_codec();
    let key = codec.encode(key);
    let request = TikvRequest::RawGet(kvrpcpb::RawGetRequest {
        key: key.to_bytes(),
        cf: cf.into(),
        ..Default::default()
    });
    user_errors(
        codec,
        Map::new(
            single(config, key.clone(), request, RpcOptions::READ),
            move |r: Result<TikvResponse>| match r? {
                TikvResponse::RawGet(resp) => {
                    key_error(&key, &resp.error)?;
                    Ok((!resp.not_found).then_some(resp.value))
                }
                other => Err(unexpected(&key, &other, "RawGet")),
            },
        ),
    )
}

/// `RawPut`: sets `key` to `value`, with a TTL in seconds (0 = none).
pub fn put(
    config: &Config,
    key: Key,
    value: Bytes,
    ttl: u64,
    cf: &str,
    for_cas: bool,
) -> impl Machine<Output = Result<()>> + Send {
    let codec = config.keyspace_codec();
    let key = codec.encode(key);
    let request = TikvRequest::RawPut(kvrpcpb::RawPutRequest {
        key: key.to_bytes(),
        value,
        cf: cf.into(),
        ttl,
        for_cas,
        ..Default::default()
    });
    user_errors(
        codec,
        Map::new(
            single(config, key.clone(), request, write_options(config)),
            move |r: Result<TikvResponse>| match r? {
                TikvResponse::RawPut(resp) => key_error(&key, &resp.error),
                other => Err(unexpected(&key, &other, "RawPut")),
            },
        ),
    )
}

/// `RawDelete`.
pub fn delete(
    config: &Config,
    key: Key,
    cf: &str,
    for_cas: bool,
) -> impl Machine<Output = Result<()>> + Send {
    let codec = config.keyspace_codec();
    let key = codec.encode(key);
    let request = TikvRequest::RawDelete(kvrpcpb::RawDeleteRequest {
        key: key.to_bytes(),
        cf: cf.into(),
        for_cas,
        ..Default::default()
    });
    user_errors(
        codec,
        Map::new(
            single(config, key.clone(), request, write_options(config)),
            move |r: Result<TikvResponse>| match r? {
                TikvResponse::RawDelete(resp) => key_error(&key, &resp.error),
                other => Err(unexpected(&key, &other, "RawDelete")),
            },
        ),
    )
}

/// `RawGetKeyTTL`: the remaining TTL of `key` in seconds (`Some(0)`: no TTL), `None` if absent.
pub fn get_key_ttl(
    config: &Config,
    key: Key,
    cf: &str,
) -> impl Machine<Output = Result<Option<u64>>> + Send {
    let codec = config.keyspace_codec();
    let key = codec.encode(key);
    let request = TikvRequest::RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest {
        key: key.to_bytes(),
        cf: cf.into(),
        ..Default::default()
    });
    user_errors(
        codec,
        Map::new(
            single(config, key.clone(), request, RpcOptions::READ),
            move |r: Result<TikvResponse>| match r? {
                TikvResponse::RawGetKeyTtl(resp) => {
                    key_error(&key, &resp.error)?;
                    Ok((!resp.not_found).then_some(resp.ttl))
                }
                other => Err(unexpected(&key, &other, "RawGetKeyTTL")),
            },
        ),
    )
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasResult {
    /// Whether the new value was written.
    pub swapped: bool,
    /// The value before the operation (`None`: the key did not exist).
    pub previous: Option<Bytes>,
}

/// `RawCompareAndSwap`: sets `key` to `new` if its current value is `expected` (`None`: the key
/// must not exist). Not idempotent: a reply lost in transit is [`Error::Undetermined`].
pub fn compare_and_swap(
    config: &Config,
    key: Key,
    expected: Option<Bytes>,
    new: Bytes,
    cf: &str,
) -> impl Machine<Output = Result<CasResult>> + Send {
    let codec = config.keyspace_codec();
    let key = codec.encode(key);
    let request = TikvRequest::RawCompareAndSwap(kvrpcpb::RawCasRequest {
        key: key.to_bytes(),
        value: new,
        previous_not_exist: expected.is_none(),
        previous_value: expected.unwrap_or_default(),
        cf: cf.into(),
        ..Default::default()
    });
    let options = RpcOptions {
        idempotent: false,
        max_execution: Some(config.max_write_execution),
        timeout: None,
    };
    user_errors(
        codec,
        Map::new(
            single(config, key.clone(), request, options),
            move |r: Result<TikvResponse>| match r? {
                TikvResponse::RawCompareAndSwap(resp) => {
                    key_error(&key, &resp.error)?;
                    Ok(CasResult {
                        swapped: resp.succeed,
                        previous: (!resp.previous_not_exist).then_some(resp.previous_value),
                    })
                }
                other => Err(unexpected(&key, &other, "RawCompareAndSwap")),
            },
        ),
    )
}

/// Batch plan: `RawBatchGet`.
#[derive(Debug)]
pub struct BatchGetPlan {
    cf: String,
}

impl KeyBatchPlan for BatchGetPlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::RawBatchGet(kvrpcpb::RawBatchGetRequest {
            keys: items.iter().map(Key::to_bytes).collect(),
            cf: self.cf.clone(),
            ..Default::default()
        })
    }
}

fn key_limits(config: &Config) -> BatchLimits {
    BatchLimits {
        max_items: config.raw_batch_pair_count,
        max_bytes: usize::MAX,
    }
}

/// `RawBatchGet`: the pairs that exist among `keys` (in key order).
pub fn batch_get(
    config: &Config,
    keys: Vec<Key>,
    cf: &str,
) -> impl Machine<Output = Result<Vec<KvPair>>> + Send {
    let codec = config.keyspace_codec();
    let plan = BatchGetPlan { cf: cf.into() };
    let keys = dedup(codec.encode_all(keys));
    let machine = Budgeted::new(
        backoff(config),
        MultiKey::new(plan, keys, key_limits(config), RpcOptions::READ),
    );
    Map::new(machine, move |r: Result<Vec<(Vec<Key>, TikvResponse)>>| {
        codec
            .decode_result(batch_get_pairs(r))
            .and_then(|p| codec.decode_pairs(p))
    })
}

/// The pairs of `RawBatchGet` replies, in key order.
fn batch_get_pairs(r: Result<Vec<(Vec<Key>, TikvResponse)>>) -> Result<Vec<KvPair>> {
    let mut pairs = Vec::new();
    for (keys, response) in r? {
        let TikvResponse::RawBatchGet(resp) = response else {
            let first = keys.first().cloned().unwrap_or_default();
            return Err(unexpected(&first, &response, "RawBatchGet"));
        };
        for p in resp.pairs {
            if let Some(e) = p.error {
                return Err(Error::KeyError {
                    key: Key::from(p.key),
                    message: format!("{e:?}"),
                });
            }
            pairs.push(KvPair {
                key: Key::from(p.key),
                value: p.value,
            });
        }
    }
    pairs.sort();
    Ok(pairs)
}

fn dedup(mut keys: Vec<Key>) -> Vec<Key> {
    keys.sort();
    keys.dedup();
    keys
}

/// A pair to write, with its TTL in seconds (0 = none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutItem {
    /// The key.
    pub key: Key,
    /// The value.
    pub value: Bytes,
    /// TTL in seconds, 0 for none.
    pub ttl: u64,
}

/// Batch plan: `RawBatchPut`.
#[derive(Debug)]
pub struct BatchPutPlan {
    cf: String,
    for_cas: bool,
}

impl BatchPlan for BatchPutPlan {
    type Item = PutItem;
    fn key(item: &PutItem) -> &Key {
        &item.key
    }
    fn size(item: &PutItem) -> usize {
        item.key.len() + item.value.len()
    }
    fn build(&self, items: &[PutItem]) -> TikvRequest {
        let ttls: Vec<u64> = items.iter().map(|i| i.ttl).collect();
        TikvRequest::RawBatchPut(kvrpcpb::RawBatchPutRequest {
            pairs: items
                .iter()
                .map(|i| kvrpcpb::KvPair {
                    key: i.key.to_bytes(),
                    value: i.value.clone(),
                    ..Default::default()
                })
                .collect(),
            cf: self.cf.clone(),
            ttl: ttls.first().copied().unwrap_or(0),
            ttls,
            for_cas: self.for_cas,
            ..Default::default()
        })
    }
}

/// `RawBatchPut`. A key given twice keeps its last value.
pub fn batch_put(
    config: &Config,
    items: Vec<PutItem>,
    cf: &str,
    for_cas: bool,
) -> impl Machine<Output = Result<()>> + Send {
    let codec = config.keyspace_codec();
    // Last write wins for duplicate keys, as in client-go; one request must not carry a key
    // twice.
    let mut by_key = std::collections::BTreeMap::new();
    for mut item in items {
        item.key = codec.encode(item.key);
        by_key.insert(item.key.clone(), item);
    }
    let limits = BatchLimits {
        max_items: usize::MAX,
        max_bytes: config.raw_batch_put_size,
    };
    let machine = Budgeted::new(
        backoff(config),
        MultiKey::new(
            BatchPutPlan {
                cf: cf.into(),
                for_cas,
            },
            by_key.into_values().collect(),
            limits,
            write_options(config),
        ),
    );
    let check = |r: Result<Vec<(Vec<PutItem>, TikvResponse)>>| {
        for (items, response) in r? {
            match response {
                TikvResponse::RawBatchPut(resp) => key_error(&items[0].key, &resp.error)?,
                other => return Err(unexpected(&items[0].key, &other, "RawBatchPut")),
            }
        }
        Ok(())
    };
    user_errors(codec, Map::new(machine, check))
}

/// Batch plan: `RawBatchDelete`.
#[derive(Debug)]
pub struct BatchDeletePlan {
    cf: String,
    for_cas: bool,
}

impl KeyBatchPlan for BatchDeletePlan {
    fn build_keys(&self, items: &[Key]) -> TikvRequest {
        TikvRequest::RawBatchDelete(kvrpcpb::RawBatchDeleteRequest {
            keys: items.iter().map(Key::to_bytes).collect(),
            cf: self.cf.clone(),
            for_cas: self.for_cas,
            ..Default::default()
        })
    }
}

/// `RawBatchDelete`.
pub fn batch_delete(
    config: &Config,
    keys: Vec<Key>,
    cf: &str,
    for_cas: bool,
) -> impl Machine<Output = Result<()>> + Send {
    let codec = config.keyspace_codec();
    let machine = Budgeted::new(
        backoff(config),
        MultiKey::new(
            BatchDeletePlan {
                cf: cf.into(),
                for_cas,
            },
            dedup(codec.encode_all(keys)),
            key_limits(config),
            write_options(config),
        ),
    );
    let check = |r: Result<Vec<(Vec<Key>, TikvResponse)>>| {
        for (keys, response) in r? {
            match response {
                TikvResponse::RawBatchDelete(resp) => key_error(&keys[0], &resp.error)?,
                other => return Err(unexpected(&keys[0], &other, "RawBatchDelete")),
            }
        }
        Ok(())
    };
    user_errors(codec, Map::new(machine, check))
}

/// A key greater than every key TiKV can store: TiKV rejects keys longer than its
/// `max-key-size` (8 KiB by default), and `0xff` repeated one byte longer than that is above
/// all of them (a shorter key is a prefix of it or has a smaller byte somewhere).
pub const ABOVE_ALL_KEYS: &[u8] = &[0xff; 8 * 1024 + 1];

/// Range plan: `RawScan`, forward or reverse, until `limit` pairs.
#[derive(Debug)]
pub struct ScanPlan {
    cf: String,
    limit: u32,
    key_only: bool,
    reverse: bool,
    pairs: Vec<KvPair>,
}

impl RangePlan for ScanPlan {
    type Output = Vec<KvPair>;

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        let remaining = self.limit - self.pairs.len() as u32;
        // A reverse scan names the exclusive upper bound as `start_key` and the inclusive
        // lower bound as `end_key`. TiKV seeks backwards from `start_key` and rejects an empty
        // one outside the first region, so "+inf" is spelled as a key above every storable key.
        let (start_key, end_key) = if self.reverse {
            let upper = if part.end().is_empty() {
                Bytes::from_static(ABOVE_ALL_KEYS)
            } else {
                part.end().to_bytes()
            };
            (upper, part.start().to_bytes())
        } else {
            (part.start().to_bytes(), part.end().to_bytes())
        };
        TikvRequest::RawScan(kvrpcpb::RawScanRequest {
            start_key,
            end_key,
            limit: remaining,
            key_only: self.key_only,
            cf: self.cf.clone(),
            reverse: self.reverse,
            ..Default::default()
        })
    }

    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool> {
        let TikvResponse::RawScan(resp) = response else {
            return Err(unexpected(region.range.start(), &response, "RawScan"));
        };
        for p in resp.kvs {
            if let Some(e) = p.error {
                return Err(Error::KeyError {
                    key: Key::from(p.key),
                    message: format!("{e:?}"),
                });
            }
            if self.pairs.len() as u32 >= self.limit {
                break;
            }
            self.pairs.push(KvPair {
                key: Key::from(p.key),
                value: if self.key_only { Bytes::new() } else { p.value },
            });
        }
        Ok((self.pairs.len() as u32) < self.limit)
    }

    fn finish(self) -> Vec<KvPair> {
        self.pairs
    }
}

/// `RawScan` over `range`: up to `limit` pairs, ascending (or descending when `reverse`).
pub fn scan(
    config: &Config,
    range: KeyRange,
    limit: u32,
    key_only: bool,
    reverse: bool,
    cf: &str,
) -> Result<impl Machine<Output = Result<Vec<KvPair>>> + Send> {
    if limit > config.raw_scan_limit_max {
        return Err(Error::InvalidArgument(format!(
            "scan limit {limit} exceeds the maximum of {}",
            config.raw_scan_limit_max
        )));
    }
    if range.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "empty or inverted scan range {range}"
        )));
    }
    let plan = ScanPlan {
        cf: cf.into(),
        limit,
        key_only,
        reverse,
        pairs: Vec::new(),
    };
    let codec = config.keyspace_codec();
    let walk = Budgeted::new(
        backoff(config),
        RangeWalk::new(plan, codec.encode_range(range), reverse, RpcOptions::READ),
    );
    Ok(Map::new(walk, move |r: Result<Vec<KvPair>>| {
        codec.decode_result(r).and_then(|p| codec.decode_pairs(p))
    }))
}

/// Range plan: `RawDeleteRange`, region by region.
#[derive(Debug)]
pub struct DeleteRangePlan {
    cf: String,
}

impl RangePlan for DeleteRangePlan {
    type Output = ();

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        TikvRequest::RawDeleteRange(kvrpcpb::RawDeleteRangeRequest {
            start_key: part.start().to_bytes(),
            end_key: part.end().to_bytes(),
            cf: self.cf.clone(),
            ..Default::default()
        })
    }

    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool> {
        let TikvResponse::RawDeleteRange(resp) = response else {
            return Err(unexpected(
                region.range.start(),
                &response,
                "RawDeleteRange",
            ));
        };
        key_error(region.range.start(), &resp.error)?;
        Ok(true)
    }

    fn finish(self) {}
}

/// `RawDeleteRange` over `range` (regions one after another; not atomic across regions).
pub fn delete_range(
    config: &Config,
    range: KeyRange,
    cf: &str,
) -> Result<impl Machine<Output = Result<()>> + Send> {
    if range.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "empty or inverted range {range}"
        )));
    }
    let options = write_options(config);
    let codec = config.keyspace_codec();
    let plan = DeleteRangePlan { cf: cf.into() };
    Ok(user_errors(
        codec,
        Budgeted::new(
            backoff(config),
            RangeWalk::new(plan, codec.encode_range(range), false, options),
        ),
    ))
}

/// Range plan: `RawChecksum`, combined over regions.
#[derive(Debug, Default)]
pub struct ChecksumPlan {
    sum: Checksum,
}

impl RangePlan for ChecksumPlan {
    type Output = Checksum;

    fn build(&mut self, _region: &Region, part: &KeyRange) -> TikvRequest {
        TikvRequest::RawChecksum(kvrpcpb::RawChecksumRequest {
            algorithm: kvrpcpb::ChecksumAlgorithm::Crc64Xor as i32,
            ranges: vec![kvrpcpb::KeyRange {
                start_key: part.start().to_bytes(),
                end_key: part.end().to_bytes(),
            }],
            ..Default::default()
        })
    }

    fn absorb(&mut self, region: &Region, response: TikvResponse) -> Result<bool> {
        let TikvResponse::RawChecksum(resp) = response else {
            return Err(unexpected(region.range.start(), &response, "RawChecksum"));
        };
        key_error(region.range.start(), &resp.error)?;
        self.sum.crc64_xor ^= resp.checksum;
        self.sum.total_kvs += resp.total_kvs;
        self.sum.total_bytes += resp.total_bytes;
        Ok(true)
    }

    fn finish(self) -> Checksum {
        self.sum
    }
}

/// `RawChecksum` over `range`.
pub fn checksum(
    config: &Config,
    range: KeyRange,
) -> Result<impl Machine<Output = Result<Checksum>> + Send> {
    if range.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "empty or inverted range {range}"
        )));
    }
    let codec = config.keyspace_codec();
    let range = codec.encode_range(range);
    Ok(user_errors(
        codec,
        Budgeted::new(
            backoff(config),
            RangeWalk::new(ChecksumPlan::default(), range, false, RpcOptions::READ),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tikv_proto::errorpb;

    use super::*;
    use crate::machine::{Effect, Outcome};
    use crate::testing::{Harness, region};

    /// A tiny scripted TiKV: one keyspace, the given regions, region checks by epoch.
    struct FakeKv {
        data: BTreeMap<Key, Bytes>,
        regions: Vec<Region>,
        requests: Vec<(u64, &'static str)>,
    }

    impl FakeKv {
        fn new(regions: Vec<Region>, keys: &[&str]) -> Self {
            let data = keys
                .iter()
                .map(|k| (Key::from(*k), Bytes::from(format!("v-{k}"))))
                .collect();
            FakeKv {
                data,
                regions,
                requests: Vec::new(),
            }
        }

        fn answer(&mut self, effect: &Effect) -> Outcome {
            match effect {
                Effect::Locate { query, .. } => {
                    let found = self.regions.iter().find(|r| query.matches(r));
                    Outcome::Located(Ok(found.cloned()))
                }
                Effect::Rpc { request, .. } => {
                    let mut request = (**request).clone();
                    let ctx = request.context_mut().unwrap().clone();
                    self.requests.push((ctx.region_id, request.method_name()));
                    let Some(region) = self.regions.iter().find(|r| r.id == ctx.region_id) else {
                        return Outcome::Response(Box::new(self.region_error(
                            &request,
                            errorpb::Error {
                                region_not_found: Some(Default::default()),
                                ..Default::default()
                            },
                        )));
                    };
                    if ctx.region_epoch.unwrap().version != region.epoch.version {
                        let current = self.regions.iter().map(Region::to_meta).collect();
                        return Outcome::Response(Box::new(self.region_error(
                            &request,
                            errorpb::Error {
                                epoch_not_match: Some(errorpb::EpochNotMatch {
                                    current_regions: current,
                                }),
                                ..Default::default()
                            },
                        )));
                    }
                    let range = region.range.clone();
                    Outcome::Response(Box::new(self.serve(&range, request)))
                }
                other => panic!("unexpected effect {other:?}"),
            }
        }

        fn region_error(&self, request: &TikvRequest, e: errorpb::Error) -> TikvResponse {
            match request {
                TikvRequest::RawBatchGet(_) => {
                    TikvResponse::RawBatchGet(kvrpcpb::RawBatchGetResponse {
                        region_error: Some(Box::new(e)),
                        ..Default::default()
                    })
                }
                TikvRequest::RawScan(_) => TikvResponse::RawScan(kvrpcpb::RawScanResponse {
                    region_error: Some(Box::new(e)),
                    ..Default::default()
                }),
                other => panic!("no region error builder for {other:?}"),
            }
        }

        fn serve(&self, range: &KeyRange, request: TikvRequest) -> TikvResponse {
            match request {
                TikvRequest::RawBatchGet(r) => {
                    let pairs = r
                        .keys
                        .iter()
                        .map(|k| Key::from(k.clone()))
                        .inspect(|k| assert!(range.contains(k), "key {k} sent to region {range}"))
                        .filter_map(|k| {
                            self.data.get(&k).map(|v| kvrpcpb::KvPair {
                                key: k.to_bytes(),
                                value: v.clone(),
                                ..Default::default()
                            })
                        })
                        .collect();
                    TikvResponse::RawBatchGet(kvrpcpb::RawBatchGetResponse {
                        pairs,
                        ..Default::default()
                    })
                }
                TikvRequest::RawScan(r) => {
                    let (lo, hi) = if r.reverse {
                        (r.end_key, r.start_key)
                    } else {
                        (r.start_key, r.end_key)
                    };
                    let want = KeyRange::new(Key::from(lo), Key::from(hi));
                    assert!(
                        range.intersect(&want) == Some(want.clone()),
                        "scan {want} outside region {range}"
                    );
                    let mut kvs: Vec<_> = self
                        .data
                        .iter()
                        .filter(|(k, _)| want.contains(k))
                        .map(|(k, v)| kvrpcpb::KvPair {
                            key: k.to_bytes(),
                            value: v.clone(),
                            ..Default::default()
                        })
                        .collect();
                    if r.reverse {
                        kvs.reverse();
                    }
                    kvs.truncate(r.limit as usize);
                    TikvResponse::RawScan(kvrpcpb::RawScanResponse {
                        kvs,
                        ..Default::default()
                    })
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
    }

    fn three_regions() -> Vec<Region> {
        vec![
            region(1, "", "d", &[1]),
            region(2, "d", "m", &[1]),
            region(3, "m", "", &[1]),
        ]
    }

    fn keys(ks: &[&str]) -> Vec<Key> {
        ks.iter().map(|k| Key::from(*k)).collect()
    }

    fn run<M: Machine>(h: &mut Harness, kv: &mut FakeKv, m: M) -> M::Output {
        h.run(m, |e| kv.answer(e))
    }

    #[test]
    fn batch_get_spans_regions_and_drops_missing_keys() {
        let mut h = Harness::new(1).with_stores(1);
        let mut kv = FakeKv::new(three_regions(), &["a", "e", "n", "z"]);
        let cfg = h.config.clone();
        let got = run(
            &mut h,
            &mut kv,
            batch_get(&cfg, keys(&["z", "a", "e", "x", "a"]), ""),
        )
        .unwrap();
        assert_eq!(
            got.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            keys(&["a", "e", "z"])
        );
        assert_eq!(got[0].value, "v-a");
        assert_eq!(kv.requests.len(), 3, "one request per region");
    }

    #[test]
    fn batch_get_reroutes_only_the_batch_that_hit_a_split() {
        let mut h = Harness::new(1).with_stores(1);
        // The client caches region 2 before it split into [d, h) and [h, m).
        let mut old = three_regions();
        for r in &old {
            h.cache(r.clone());
        }
        let mut left = region(2, "d", "h", &[1]);
        left.epoch.version = 2;
        let mut right = region(4, "h", "m", &[1]);
        right.epoch.version = 2;
        old.splice(1..2, [left, right]);
        let mut kv = FakeKv::new(old, &["a", "e", "i", "n"]);
        let cfg = h.config.clone();
        let got = run(
            &mut h,
            &mut kv,
            batch_get(&cfg, keys(&["a", "e", "i", "n"]), ""),
        )
        .unwrap();
        assert_eq!(got.len(), 4);
        let to_region = |id| kv.requests.iter().filter(|(r, _)| *r == id).count();
        assert_eq!(
            (to_region(1), to_region(3)),
            (1, 1),
            "healthy batches are sent once"
        );
        assert_eq!(
            (to_region(2), to_region(4)),
            (2, 1),
            "the stale batch is re-split"
        );
    }

    #[test]
    fn batches_respect_the_pair_limit() {
        let mut h = Harness::new(1).with_stores(1);
        h.config.raw_batch_pair_count = 2;
        let mut kv = FakeKv::new(vec![region(1, "", "", &[1])], &[]);
        let cfg = h.config.clone();
        run(
            &mut h,
            &mut kv,
            batch_get(&cfg, keys(&["a", "b", "c", "d", "e"]), ""),
        )
        .unwrap();
        assert_eq!(kv.requests.len(), 3);
    }

    #[test]
    fn scan_crosses_regions_both_ways_and_honours_limit() {
        let data = ["a", "b", "d", "e", "l", "m", "n", "z"];
        let mut h = Harness::new(1).with_stores(1);
        let mut kv = FakeKv::new(three_regions(), &data);
        let cfg = h.config.clone();
        let all = run(
            &mut h,
            &mut kv,
            scan(&cfg, KeyRange::all(), 100, false, false, "").unwrap(),
        )
        .unwrap();
        assert_eq!(
            all.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            keys(&data)
        );

        let some = run(
            &mut h,
            &mut kv,
            scan(&cfg, KeyRange::from("b".."n"), 4, true, false, "").unwrap(),
        )
        .unwrap();
        assert_eq!(
            some.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            keys(&["b", "d", "e", "l"])
        );
        assert!(some.iter().all(|p| p.value.is_empty()), "key-only");

        let rev = run(
            &mut h,
            &mut kv,
            scan(&cfg, KeyRange::from("b".."n"), 10, false, true, "").unwrap(),
        )
        .unwrap();
        assert_eq!(
            rev.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            keys(&["m", "l", "e", "d", "b"])
        );

        let rev_all = run(
            &mut h,
            &mut kv,
            scan(&cfg, KeyRange::all(), 3, false, true, "").unwrap(),
        )
        .unwrap();
        assert_eq!(
            rev_all.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            keys(&["z", "n", "m"])
        );
    }

    #[test]
    fn scan_arguments_are_checked() {
        let cfg = Config::default();
        assert!(matches!(
            scan(&cfg, KeyRange::from("b".."a"), 1, false, false, ""),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            scan(&cfg, KeyRange::all(), 10241, false, false, ""),
            Err(Error::InvalidArgument(_))
        ));
    }
}
