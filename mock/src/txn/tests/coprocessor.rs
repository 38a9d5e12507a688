//! The coprocessor checksum: the digest, locks, ranges outside the region, other payloads.

use prost::Message;
use tikv_proto::coprocessor as copr;
use tikv_proto::tipb;

use super::*;
use crate::codec::checksum_crc64_xor;

impl T {
    fn checksum(&mut self, ranges: &[(&str, &str)], start_ts: u64, tp: i64) -> copr::Response {
        let (s, ctx) = self.ctx(ranges.first().map_or("a", |r| r.0));
        let data = tipb::ChecksumRequest {
            algorithm: Some(tipb::ChecksumAlgorithm::Crc64Xor as i32),
            ..Default::default()
        }
        .encode_to_vec();
        let req = copr::Request {
            context: Some(ctx),
            tp,
            data: data.into(),
            start_ts,
            ranges: ranges
                .iter()
                .map(|(a, z)| copr::KeyRange {
                    start: b(a),
                    end: b(z),
                })
                .collect(),
            ..Default::default()
        };
        self.c.tikv::<t::Coprocessor>(s, req, NOW).unwrap()
    }
}

#[test]
fn the_checksum_xors_the_visible_pairs_and_reports_locks() {
    let mut x = T::new();
    x.write("a", "1", ts(10, 0), ts(11, 0));
    x.write("b", "2", ts(12, 0), ts(13, 0));
    x.write("a", "3", ts(14, 0), ts(15, 0));
    let r = x.checksum(&[("a", "z")], ts(13, 5), 105);
    let sum = tipb::ChecksumResponse::decode(r.data).unwrap();
    let expect = checksum_crc64_xor(checksum_crc64_xor(0, b"a", b"1"), b"b", b"2");
    assert_eq!(
        (sum.checksum, sum.total_kvs, sum.total_bytes),
        (Some(expect), Some(2), Some(4))
    );
    let r = x.prewrite(pw(vec![put("b", "x")], "b", ts(20, 0)));
    assert!(r.errors.is_empty());
    let r = x.checksum(&[("a", "z")], ts(30, 0), 105);
    assert_eq!(r.locked.map(|l| l.lock_version), Some(ts(20, 0)));
    assert!(r.data.is_empty());
}

#[test]
fn unknown_payloads_and_ranges_beyond_the_region_are_other_errors() {
    let mut x = T::new();
    assert_eq!(
        x.checksum(&[("a", "b")], ts(1, 0), 103).other_error,
        "unsupported tp 103"
    );
    x.c.split_at(&encode_memcomparable(b"m")).unwrap();
    let r = x.checksum(&[("a", "z")], ts(1, 0), 105);
    assert!(
        r.other_error.starts_with("Request range exceeds bound"),
        "{r:?}"
    );
}
