//! The RawKV request handlers.
//!
//! Each handler follows TiKV's order of checks for its command (read in TiKV's
//! `src/storage/mod.rs` and `src/server/service/kv.rs`):
//! - reads check the API version, then take a region snapshot (region checks), then check
//!   the column family;
//! - writes check the API version, key size, TTL support and column family first, then the
//!   region (at propose), the entry size, and finally the keys against the region (at apply).
//!
//! Region failures go into `region_error`; storage failures into `error`, or for pair-list
//! responses into one `KvPair` whose `error.abort` holds the failure.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, KeyError, KvPair};
use tikv_proto::metapb;

use super::api::{Cf, Cmd, KeyCodec, RequestApi, StorageError, check_key_size};
use super::store::{RegionBounds, ScanSpec, ttl_to_expire_ts};
use crate::check::{
    Access, RegionErr, delete_range_in_region, point_read_in_region, seek_in_region,
    write_in_region,
};
use crate::cluster::{Cluster, RegionErrorResponse};
use crate::codec::checksum_crc64_xor;
use crate::region_error;

/// A failed request: either a region error or a storage error.
enum Fail {
    Region(RegionErr),
    Storage(StorageError),
}

impl From<RegionErr> for Fail {
    fn from(e: RegionErr) -> Self {
        Fail::Region(e)
    }
}

impl From<StorageError> for Fail {
    fn from(e: StorageError) -> Self {
        Fail::Storage(e)
    }
}

/// Responses that report storage failures in an `error` string.
trait ErrorString: RegionErrorResponse {
    fn with_error(msg: String) -> Self;
}

/// Responses that report storage failures as a single pair with `KeyError.abort`.
trait PairList: RegionErrorResponse {
    fn with_pairs(pairs: Vec<KvPair>) -> Self;
}

macro_rules! error_string {
    ($($resp:ident),*) => {$(
        impl ErrorString for kvrpcpb::$resp {
            fn with_error(error: String) -> Self {
                kvrpcpb::$resp { error, ..Default::default() }
            }
        }
    )*};
}

error_string!(
    RawGetResponse,
    RawPutResponse,
    RawBatchPutResponse,
    RawDeleteResponse,
    RawBatchDeleteResponse,
    RawDeleteRangeResponse,
    RawCasResponse,
    RawGetKeyTtlResponse,
    RawChecksumResponse
);

impl PairList for kvrpcpb::RawBatchGetResponse {
    fn with_pairs(pairs: Vec<KvPair>) -> Self {
        kvrpcpb::RawBatchGetResponse {
            pairs,
            ..Default::default()
        }
    }
}

impl PairList for kvrpcpb::RawScanResponse {
    fn with_pairs(kvs: Vec<KvPair>) -> Self {
        kvrpcpb::RawScanResponse {
            kvs,
            ..Default::default()
        }
    }
}

impl PairList for kvrpcpb::RawBatchScanResponse {
    fn with_pairs(kvs: Vec<KvPair>) -> Self {
        kvrpcpb::RawBatchScanResponse {
            kvs,
            ..Default::default()
        }
    }
}

fn finish<R: ErrorString>(r: Result<R, Fail>) -> R {
    match r {
        Ok(resp) => resp,
        Err(Fail::Region(e)) => R::from_region_error(*e),
        Err(Fail::Storage(e)) => R::with_error(e.to_string()),
    }
}

fn finish_pairs<R: PairList>(r: Result<R, Fail>) -> R {
    match r {
        Ok(resp) => resp,
        Err(Fail::Region(e)) => R::from_region_error(*e),
        Err(Fail::Storage(e)) => R::with_pairs(vec![error_pair(&e)]),
    }
}

fn error_pair(e: &StorageError) -> KvPair {
    KvPair {
        error: Some(Box::new(KeyError {
            abort: e.abort_text(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn bounds(region: &metapb::Region, codec: KeyCodec) -> RegionBounds<'_> {
    RegionBounds {
        start: &region.start_key,
        end: &region.end_key,
        codec,
    }
}

/// One write of a batch: a key and `Some((value, expire_ts))` to put or `None` to delete.
type RawWrite = (Bytes, Option<(Bytes, Option<u64>)>);

/// A scan as the client asked for it (before normalising to bounds).
#[derive(Clone, Copy)]
struct ScanArgs<'a> {
    start_key: &'a [u8],
    end_key: Option<&'a [u8]>,
    limit: usize,
    key_only: bool,
    reverse: bool,
}

fn now_secs(now_ms: u64) -> u64 {
    now_ms / 1000
}

/// TiKV normalises `RawBatchPut.ttls`: none → all zero, one → applied to every pair.
fn normalise_ttls(ttls: Vec<u64>, pairs: usize) -> Vec<u64> {
    match ttls.len() {
        0 => vec![0; pairs],
        1 => vec![ttls[0]; pairs],
        _ => ttls,
    }
}

/// TiKV's `check_ttl_valid` for batch writes.
fn check_ttls(api: &RequestApi, pairs: usize, ttls: &[u64]) -> Result<(), StorageError> {
    if !api.ttl_enabled() {
        if ttls.iter().any(|&t| t != 0) {
            return Err(StorageError::TtlNotEnabled);
        }
    } else if ttls.len() != pairs {
        return Err(StorageError::TtlLenNotEqualsToPairs);
    }
    Ok(())
}

impl Cluster {
    fn check_entry_size(&self, region_id: u64, size: usize) -> Result<(), Fail> {
        let size = size as u64;
        if size > self.config.raft_entry_max_size {
            return Err(Fail::Region(Box::new(region_error::raft_entry_too_large(
                region_id, size,
            ))));
        }
        Ok(())
    }

    /// Like TiKV's split checker: split a region that holds too many keys at its middle key.
    fn maybe_auto_split(&mut self, region: &metapb::Region, codec: KeyCodec, now_s: u64) {
        let Some(limit) = self.config.auto_split_keys else {
            return;
        };
        let keys = self.raw.keys_in_region(bounds(region, codec), now_s);
        if keys.len() <= limit.max(1) {
            return;
        }
        let split = codec.encode(&keys[keys.len() / 2]).into_owned();
        // A split key equal to the region start is refused; nothing to do then.
        let _ = self.topology.split(region.id, &[Bytes::from(split)]);
    }

    pub(crate) fn raw_get(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawGetRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawGetResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            api.check_keys(Cmd::raw_get, [&req.key[..]])?;
            let region = self.topology.check_request(store_id, &ctx, Access::Read)?;
            let cf = api.cf(&req.cf)?;
            point_read_in_region(&api.codec().encode(&req.key), &region)
                .map_err(StorageError::KeyOutOfRegion)?;
            Ok(match self.raw.get(cf, &req.key, now_secs(now_ms)) {
                Some(value) => kvrpcpb::RawGetResponse {
                    value,
                    ..Default::default()
                },
                None => kvrpcpb::RawGetResponse {
                    not_found: true,
                    ..Default::default()
                },
            })
        })())
    }

    pub(crate) fn raw_batch_get(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawBatchGetRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawBatchGetResponse {
        finish_pairs((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            api.check_keys(Cmd::raw_batch_get, req.keys.iter().map(|k| &k[..]))?;
            let region = self.topology.check_request(store_id, &ctx, Access::Read)?;
            let cf = api.cf(&req.cf)?;
            let now_s = now_secs(now_ms);
            let mut pairs = Vec::new();
            for key in req.keys {
                if let Err(msg) = point_read_in_region(&api.codec().encode(&key), &region) {
                    pairs.push(error_pair(&StorageError::KeyOutOfRegion(msg)));
                    continue;
                }
                // Missing keys are left out of the response.
                if let Some(value) = self.raw.get(cf, &key, now_s) {
                    pairs.push(KvPair {
                        key,
                        value,
                        ..Default::default()
                    });
                }
            }
            Ok(kvrpcpb::RawBatchGetResponse {
                pairs,
                ..Default::default()
            })
        })())
    }

    /// Region check, entry size and key placement for a batch of puts and deletes, then
    /// applies them all (a raft command applies entirely or not at all).
    fn apply_raw_writes(
        &mut self,
        store_id: u64,
        ctx: &kvrpcpb::Context,
        api: &RequestApi,
        cf: Cf,
        writes: Vec<RawWrite>,
        now_s: u64,
    ) -> Result<(), Fail> {
        let region = self.topology.check_request(store_id, ctx, Access::Write)?;
        let size: usize = writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |(v, _)| v.len()))
            .sum();
        self.check_entry_size(region.id, size)?;
        for (k, _) in &writes {
            write_in_region(&api.codec().encode(k), &region)?;
        }
        for (k, v) in writes {
            match v {
                Some((value, expire)) => self.raw.put(cf, k, value, expire),
                None => self.raw.delete(cf, &k),
            }
        }
        self.maybe_auto_split(&region, api.codec(), now_s);
        Ok(())
    }

    pub(crate) fn raw_put(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawPutRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawPutResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            let cmd = if req.for_cas {
                Cmd::raw_atomic_store
            } else {
                Cmd::raw_put
            };
            api.check_keys(cmd, [&req.key[..]])?;
            let cf = if req.for_cas {
                let cf = api.cf(&req.cf)?;
                check_ttls(&api, 1, &[req.ttl])?;
                cf
            } else {
                check_key_size([&req.key[..]], self.config.max_key_size)?;
                if !api.ttl_enabled() && req.ttl != 0 {
                    return Err(StorageError::TtlNotEnabled.into());
                }
                api.cf(&req.cf)?
            };
            let now_s = now_secs(now_ms);
            let expire = ttl_to_expire_ts(req.ttl, now_s);
            self.apply_raw_writes(
                store_id,
                &ctx,
                &api,
                cf,
                vec![(req.key, Some((req.value, expire)))],
                now_s,
            )?;
            Ok(kvrpcpb::RawPutResponse::default())
        })())
    }

    pub(crate) fn raw_batch_put(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawBatchPutRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawBatchPutResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            let ttls = normalise_ttls(req.ttls, req.pairs.len());
            let cmd = if req.for_cas {
                Cmd::raw_atomic_store
            } else {
                Cmd::raw_batch_put
            };
            api.check_keys(cmd, req.pairs.iter().map(|p| &p.key[..]))?;
            let cf = api.cf(&req.cf)?;
            if !req.for_cas {
                check_key_size(
                    req.pairs.iter().map(|p| &p.key[..]),
                    self.config.max_key_size,
                )?;
            }
            check_ttls(&api, req.pairs.len(), &ttls)?;
            let now_s = now_secs(now_ms);
            // Pairs without a TTL entry are dropped, as TiKV zips pairs with ttls.
            let writes = req
                .pairs
                .into_iter()
                .zip(ttls)
                .map(|(p, ttl)| (p.key, Some((p.value, ttl_to_expire_ts(ttl, now_s)))))
                .collect();
            self.apply_raw_writes(store_id, &ctx, &api, cf, writes, now_s)?;
            Ok(kvrpcpb::RawBatchPutResponse::default())
        })())
    }

    pub(crate) fn raw_delete(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawDeleteRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawDeleteResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            let cmd = if req.for_cas {
                Cmd::raw_atomic_store
            } else {
                Cmd::raw_delete
            };
            api.check_keys(cmd, [&req.key[..]])?;
            if !req.for_cas {
                check_key_size([&req.key[..]], self.config.max_key_size)?;
            }
            let cf = api.cf(&req.cf)?;
            self.apply_raw_writes(
                store_id,
                &ctx,
                &api,
                cf,
                vec![(req.key, None)],
                now_secs(now_ms),
            )?;
            Ok(kvrpcpb::RawDeleteResponse::default())
        })())
    }

    pub(crate) fn raw_batch_delete(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawBatchDeleteRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawBatchDeleteResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            let cmd = if req.for_cas {
                Cmd::raw_atomic_store
            } else {
                Cmd::raw_batch_delete
            };
            api.check_keys(cmd, req.keys.iter().map(|k| &k[..]))?;
            let cf = api.cf(&req.cf)?;
            if !req.for_cas {
                check_key_size(req.keys.iter().map(|k| &k[..]), self.config.max_key_size)?;
            }
            let writes = req.keys.into_iter().map(|k| (k, None)).collect();
            self.apply_raw_writes(store_id, &ctx, &api, cf, writes, now_secs(now_ms))?;
            Ok(kvrpcpb::RawBatchDeleteResponse::default())
        })())
    }

    pub(crate) fn raw_delete_range(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawDeleteRangeRequest,
        _now_ms: u64,
    ) -> kvrpcpb::RawDeleteRangeResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            check_key_size(
                [&req.start_key[..], &req.end_key[..]],
                self.config.max_key_size,
            )?;
            api.check_ranges(
                Cmd::raw_delete_range,
                [(Some(&req.start_key[..]), Some(&req.end_key[..]))],
            )?;
            let cf = api.cf(&req.cf)?;
            let region = self.topology.check_request(store_id, &ctx, Access::Write)?;
            let codec = api.codec();
            // An empty end means "unbounded" in V1; V2 never gets here with one.
            let enc_end = if req.end_key.is_empty() {
                Vec::new()
            } else {
                codec.encode(&req.end_key).into_owned()
            };
            delete_range_in_region(&codec.encode(&req.start_key), &enc_end, &region)?;
            self.raw
                .delete_range(cf, &req.start_key, &req.end_key, bounds(&region, codec));
            Ok(kvrpcpb::RawDeleteRangeResponse::default())
        })())
    }

    /// One forward or reverse scan within the region, with TiKV's seek check.
    fn scan_in_region(
        &self,
        cf: Cf,
        codec: KeyCodec,
        region: &metapb::Region,
        scan: ScanArgs<'_>,
        now_s: u64,
    ) -> Result<Vec<KvPair>, Fail> {
        let ScanArgs {
            start_key,
            end_key,
            limit,
            key_only,
            reverse,
        } = scan;
        seek_in_region(&codec.encode(start_key), region)?;
        let spec = if reverse {
            ScanSpec {
                lower: end_key,
                upper: Some(start_key),
                reverse,
                limit,
                key_only,
            }
        } else {
            ScanSpec {
                lower: Some(start_key),
                upper: end_key,
                reverse,
                limit,
                key_only,
            }
        };
        Ok(self
            .raw
            .scan(cf, spec, bounds(region, codec), now_s)
            .into_iter()
            .map(|(key, value)| KvPair {
                key,
                value,
                ..Default::default()
            })
            .collect())
    }

    pub(crate) fn raw_scan(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawScanRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawScanResponse {
        finish_pairs((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            let end = (!req.end_key.is_empty()).then_some(&req.end_key[..]);
            api.check_ranges(Cmd::raw_scan, [(Some(&req.start_key[..]), end)])?;
            let region = self.topology.check_request(store_id, &ctx, Access::Read)?;
            let cf = api.cf(&req.cf)?;
            let scan = ScanArgs {
                start_key: &req.start_key,
                end_key: end,
                limit: req.limit as usize,
                key_only: req.key_only,
                reverse: req.reverse,
            };
            let kvs = self.scan_in_region(cf, api.codec(), &region, scan, now_secs(now_ms))?;
            Ok(kvrpcpb::RawScanResponse {
                kvs,
                ..Default::default()
            })
        })())
    }

    pub(crate) fn raw_batch_scan(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawBatchScanRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawBatchScanResponse {
        finish_pairs((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            api.check_ranges(
                Cmd::raw_batch_scan,
                req.ranges
                    .iter()
                    .map(|r| (Some(&r.start_key[..]), Some(&r.end_key[..]))),
            )?;
            let region = self.topology.check_request(store_id, &ctx, Access::Read)?;
            let cf = api.cf(&req.cf)?;
            let ranges = &req.ranges;
            // An empty end key means "up to the next range's start", or unbounded for the last.
            let end_of = |i: usize| -> Option<&[u8]> {
                if !ranges[i].end_key.is_empty() {
                    Some(&ranges[i].end_key[..])
                } else {
                    ranges.get(i + 1).map(|r| &r.start_key[..])
                }
            };
            for (i, range) in ranges.iter().enumerate() {
                let start = &range.start_key[..];
                if let Some(end) = end_of(i) {
                    let bad = if req.reverse {
                        start <= end
                    } else {
                        start >= end
                    };
                    if bad {
                        return Err(StorageError::Other("Invalid KeyRanges".to_owned()).into());
                    }
                }
            }
            let mut kvs = Vec::new();
            for (i, range) in ranges.iter().enumerate() {
                let scan = ScanArgs {
                    start_key: &range.start_key,
                    end_key: end_of(i),
                    limit: req.each_limit as usize,
                    key_only: req.key_only,
                    reverse: req.reverse,
                };
                kvs.extend(self.scan_in_region(
                    cf,
                    api.codec(),
                    &region,
                    scan,
                    now_secs(now_ms),
                )?);
            }
            Ok(kvrpcpb::RawBatchScanResponse {
                kvs,
                ..Default::default()
            })
        })())
    }

    pub(crate) fn raw_get_key_ttl(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawGetKeyTtlRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawGetKeyTtlResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            api.check_keys(Cmd::raw_get_key_ttl, [&req.key[..]])?;
            let region = self.topology.check_request(store_id, &ctx, Access::Read)?;
            let cf = api.cf(&req.cf)?;
            if !api.ttl_enabled() {
                // Real TiKV panics here ("get ttl on non-ttl store"); the mock reports it.
                return Err(StorageError::Other("get ttl on non-ttl store".to_owned()).into());
            }
            point_read_in_region(&api.codec().encode(&req.key), &region)
                .map_err(StorageError::KeyOutOfRegion)?;
            Ok(match self.raw.ttl(cf, &req.key, now_secs(now_ms)) {
                Some(ttl) => kvrpcpb::RawGetKeyTtlResponse {
                    ttl,
                    ..Default::default()
                },
                None => kvrpcpb::RawGetKeyTtlResponse {
                    not_found: true,
                    ..Default::default()
                },
            })
        })())
    }

    pub(crate) fn raw_compare_and_swap(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawCasRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawCasResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            let api = RequestApi::new(self.config.api, &ctx);
            api.check_keys(Cmd::raw_compare_and_swap, [&req.key[..]])?;
            let cf = api.cf(&req.cf)?;
            if !api.ttl_enabled() && req.ttl != 0 {
                return Err(StorageError::TtlNotEnabled.into());
            }
            let region = self.topology.check_request(store_id, &ctx, Access::Write)?;
            let codec = api.codec();
            point_read_in_region(&codec.encode(&req.key), &region)
                .map_err(StorageError::KeyOutOfRegion)?;
            let now_s = now_secs(now_ms);
            let old = self.raw.get(cf, &req.key, now_s);
            let expected = (!req.previous_not_exist).then_some(&req.previous_value);
            let succeed = old.as_ref() == expected;
            if succeed {
                let size = req.key.len() + if req.delete { 0 } else { req.value.len() };
                self.check_entry_size(region.id, size)?;
                if req.delete {
                    if expected.is_some() {
                        self.raw.delete(cf, &req.key);
                    }
                } else {
                    let expire = ttl_to_expire_ts(req.ttl, now_s);
                    self.raw.put(cf, req.key.clone(), req.value.clone(), expire);
                    self.maybe_auto_split(&region, codec, now_s);
                }
            }
            Ok(match old {
                Some(previous_value) => kvrpcpb::RawCasResponse {
                    previous_value,
                    succeed,
                    ..Default::default()
                },
                None => kvrpcpb::RawCasResponse {
                    previous_not_exist: true,
                    succeed,
                    ..Default::default()
                },
            })
        })())
    }

    pub(crate) fn raw_checksum(
        &mut self,
        store_id: u64,
        req: kvrpcpb::RawChecksumRequest,
        now_ms: u64,
    ) -> kvrpcpb::RawChecksumResponse {
        finish((|| {
            let ctx = req.context.unwrap_or_default();
            if req.algorithm != kvrpcpb::ChecksumAlgorithm::Crc64Xor as i32 {
                return Err(StorageError::Other(format!(
                    "unknown checksum algorithm {}",
                    req.algorithm
                ))
                .into());
            }
            let api = RequestApi::new(self.config.api, &ctx);
            api.check_ranges(
                Cmd::raw_checksum,
                req.ranges
                    .iter()
                    .map(|r| (Some(&r.start_key[..]), Some(&r.end_key[..]))),
            )?;
            let region = self.topology.check_request(store_id, &ctx, Access::Read)?;
            // Checksum always reads the default CF, whatever the client wanted.
            let cf = api.cf("")?;
            let (mut checksum, mut total_kvs, mut total_bytes) = (0u64, 0u64, 0u64);
            for r in &req.ranges {
                let end = (!r.end_key.is_empty()).then_some(&r.end_key[..]);
                let scan = ScanArgs {
                    start_key: &r.start_key,
                    end_key: end,
                    limit: usize::MAX,
                    key_only: false,
                    reverse: false,
                };
                let pairs =
                    self.scan_in_region(cf, api.codec(), &region, scan, now_secs(now_ms))?;
                for p in pairs {
                    checksum = checksum_crc64_xor(checksum, &p.key, &p.value);
                    total_kvs += 1;
                    total_bytes += (p.key.len() + p.value.len()) as u64;
                }
            }
            Ok(kvrpcpb::RawChecksumResponse {
                checksum,
                total_kvs,
                total_bytes,
                ..Default::default()
            })
        })())
    }
}
