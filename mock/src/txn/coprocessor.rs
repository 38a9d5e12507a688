//! `Coprocessor` with the one payload that needs no SQL engine: the checksum (`tp` 105, what
//! backup and import tools send). Other payloads (DAG, analyze) are TiDB's executors, which
//! the mock does not have: they get TiKV's answer to an unknown type.
//!
//! Semantics follow tikv/tikv `src/coprocessor/endpoint.rs` and `checksum.rs`:
//!
//! - The region checks of a read at the request's `start_ts` (the checksum's
//!   `start_ts_fallback` when that is 0), which pushes `max_ts` unless it is a stale read.
//! - `tp` other than 105: `other_error` "unsupported tp {tp}". An algorithm other than
//!   CRC64-XOR: "unknown checksum algorithm".
//! - A range reaching outside the region: `other_error` "Request range exceeds bound, ..."
//!   (clients drop the region and retry). An empty end is an empty range, not "to the end".
//! - A snapshot-isolation scan of the ranges in order: a lock that blocks it is `locked`;
//!   each visible pair adds CRC-64/XZ(key ‖ value) by XOR, with the raw (user) key — through
//!   the rewrite rule when one is given (the key must start with its new prefix, which is
//!   replaced by the old one); `total_kvs` counts the pairs, `total_bytes` their key and
//!   value lengths (rule-adjusted).
//! - Success: `data` is the encoded checksum response; errors leave `data` empty.

use bytes::Bytes;
use prost::Message;
use tikv_proto::coprocessor as copr;
use tikv_proto::tipb;

use super::error::TxnError;
use super::handlers::{Fail, clamp, raw_bounds, read_opts};
use super::reader;
use crate::cluster::{Cluster, HasContext, RegionErrorResponse};
use crate::codec::{Crc64, encode_memcomparable, hex_upper};

/// TiKV's `REQ_TYPE_CHECKSUM`.
const REQ_TYPE_CHECKSUM: i64 = 105;

fn other(message: String) -> copr::Response {
    copr::Response {
        other_error: message,
        ..Default::default()
    }
}

impl Cluster {
    pub(crate) fn coprocessor(
        &mut self,
        store_id: u64,
        req: copr::Request,
        _now_ms: u64,
    ) -> copr::Response {
        let ctx = req.context.clone().unwrap_or_default();
        if req.tp != REQ_TYPE_CHECKSUM {
            return other(format!("unsupported tp {}", req.tp));
        }
        let checksum = match tipb::ChecksumRequest::decode(req.data.clone()) {
            Ok(c) => c,
            Err(e) => return other(format!("cannot parse the checksum request: {e}")),
        };
        let start_ts = if req.start_ts != 0 {
            req.start_ts
        } else {
            checksum.start_ts_fallback.unwrap_or(0)
        };
        if !ctx.stale_read {
            self.txn.cm.update_max_ts(start_ts);
        }
        let region = match self.txn_read_region(store_id, &ctx, start_ts) {
            Ok(r) => r,
            Err(Fail::Region(e)) => return copr::Response::from_region_error(*e),
            Err(Fail::Key(e)) => return other(e.debug_text()),
        };
        if checksum.algorithm.unwrap_or(0) != tipb::ChecksumAlgorithm::Crc64Xor as i32 {
            return other(format!(
                "unknown checksum algorithm {:?}",
                checksum.algorithm
            ));
        }
        let (old_prefix, new_prefix) = match &checksum.rule {
            Some(rule) => (
                rule.old_prefix.clone().unwrap_or_default(),
                rule.new_prefix.clone().unwrap_or_default(),
            ),
            None => (Bytes::new(), Bytes::new()),
        };
        let bounds = raw_bounds(&region);
        let opts = read_opts(&ctx, start_ts, false, false);
        let (mut sum, mut kvs, mut total) = (0u64, 0u64, 0u64);
        for range in &req.ranges {
            if range.end.is_empty() || range.start >= range.end {
                continue;
            }
            let (lo, hi) = (
                encode_memcomparable(&range.start),
                encode_memcomparable(&range.end),
            );
            let inside = lo[..] >= region.start_key[..]
                && (region.end_key.is_empty() || hi[..] <= region.end_key[..]);
            if !inside {
                return other(format!(
                    "Request range exceeds bound, request range:[{}, {}), physical bound:[{}, {})",
                    hex_upper(&lo),
                    hex_upper(&hi),
                    hex_upper(&region.start_key),
                    hex_upper(&region.end_key)
                ));
            }
            let scope = clamp(Some(&range.start[..]), Some(&range.end[..]), &bounds);
            let items = match reader::scan(&self.txn.store, scope, false, usize::MAX, 0, &opts) {
                Ok(items) => items,
                Err(e) => return other(e.debug_text()),
            };
            for item in items {
                let (key, value) = match item {
                    Ok(pair) => pair,
                    Err(TxnError::KeyIsLocked(info)) => {
                        return copr::Response {
                            locked: Some(*info),
                            ..Default::default()
                        };
                    }
                    Err(e) => return other(e.debug_text()),
                };
                let Some(rest) = key.strip_prefix(&new_prefix[..]) else {
                    return other(format!("Wrong prefix expect: {new_prefix:?}"));
                };
                let mut digest = Crc64::new();
                digest.write(&old_prefix);
                digest.write(rest);
                digest.write(&value);
                sum ^= digest.sum64();
                kvs += 1;
                total += (old_prefix.len() + rest.len() + value.len()) as u64;
            }
        }
        let answer = tipb::ChecksumResponse {
            checksum: Some(sum),
            total_kvs: Some(kvs),
            total_bytes: Some(total),
        };
        copr::Response {
            data: answer.encode_to_vec().into(),
            ..Default::default()
        }
    }
}

impl HasContext for copr::Request {
    fn context(&self) -> Option<&tikv_proto::kvrpcpb::Context> {
        self.context.as_ref()
    }
}

impl RegionErrorResponse for copr::Response {
    fn from_region_error(err: tikv_proto::errorpb::Error) -> Self {
        copr::Response {
            region_error: Some(Box::new(err)),
            ..Default::default()
        }
    }
}
