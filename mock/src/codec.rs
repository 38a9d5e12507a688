//! Byte-level encodings shared by TiKV and PD that the mock must reproduce exactly.
//!
//! - Memcomparable bytes (TiKV's `Key::from_raw`, Go's `codec.EncodeBytes`): how API V2 keys
//!   and transactional keys appear in region boundaries.
//! - CRC-64/XZ (the `crc64fast` digest TiKV uses for `RawChecksum`).
//! - Upper-case hex, the way TiKV's log wrappers print keys in error messages.

use std::fmt::Write as _;

const ENC_GROUP_SIZE: usize = 8;
const ENC_MARKER: u8 = 0xFF;

/// Encodes `key` in the memcomparable format: groups of 8 bytes, each padded with zeros and
/// followed by `0xFF - padding`. The encoding preserves byte order, so region boundaries in
/// encoded form sort like the keys they encode.
pub fn encode_memcomparable(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / ENC_GROUP_SIZE + 1) * (ENC_GROUP_SIZE + 1));
    let mut chunks = key.chunks_exact(ENC_GROUP_SIZE);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(ENC_MARKER);
    }
    let rest = chunks.remainder();
    let pad = ENC_GROUP_SIZE - rest.len();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(0u8, pad));
    // `pad` is at most 8, so the cast cannot truncate.
    out.push(ENC_MARKER - pad as u8);
    out
}

/// Decodes a memcomparable key; `None` if `encoded` is not a complete, valid encoding.
pub fn decode_memcomparable(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    loop {
        if rest.len() < ENC_GROUP_SIZE + 1 {
            return None;
        }
        let (group, tail) = rest.split_at(ENC_GROUP_SIZE + 1);
        let marker = group[ENC_GROUP_SIZE];
        let pad = usize::from(ENC_MARKER - marker);
        if pad > ENC_GROUP_SIZE {
            return None;
        }
        let real = ENC_GROUP_SIZE - pad;
        if group[real..ENC_GROUP_SIZE].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&group[..real]);
        if pad != 0 {
            return if tail.is_empty() { Some(out) } else { None };
        }
        rest = tail;
    }
}

/// Upper-case hex without separators (TiKV's `log_wrappers::Value::key` with redaction off).
pub fn hex_upper(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// The reflected ECMA-182 polynomial used by CRC-64/XZ.
const CRC64_POLY: u64 = 0xC96C_5795_D787_0F42;

const fn crc64_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CRC64_POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC64_TABLE: [u64; 256] = crc64_table();

/// An incremental CRC-64/XZ digest, equal to `crc64fast::Digest`.
#[derive(Clone, Copy, Debug)]
pub struct Crc64 {
    state: u64,
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

impl Crc64 {
    /// A fresh digest.
    pub const fn new() -> Self {
        Crc64 { state: !0 }
    }

    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut crc = self.state;
        for &b in bytes {
            crc = CRC64_TABLE[((crc ^ u64::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
        self.state = crc;
    }

    /// The checksum of everything written so far.
    pub const fn sum64(&self) -> u64 {
        !self.state
    }
}

/// TiKV's per-pair contribution to a `Crc64Xor` checksum: CRC-64 of `key ‖ value`, XORed into
/// the running value, so the result does not depend on iteration order.
pub fn checksum_crc64_xor(checksum: u64, key: &[u8], value: &[u8]) -> u64 {
    let mut digest = Crc64::new();
    digest.write(key);
    digest.write(value);
    checksum ^ digest.sum64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcomparable_matches_reference_vectors() {
        assert_eq!(
            encode_memcomparable(b""),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0xF7]
        );
        assert_eq!(
            encode_memcomparable(b"\x01\x02\x03"),
            vec![1, 2, 3, 0, 0, 0, 0, 0, 0xFA]
        );
        assert_eq!(
            encode_memcomparable(b"12345678"),
            b"12345678\xFF\0\0\0\0\0\0\0\0\xF7".to_vec()
        );
    }

    #[test]
    fn memcomparable_round_trips_and_preserves_order() {
        let keys: [&[u8]; 6] = [b"", b"\0", b"a", b"a\0", b"abcdefgh", b"abcdefgh\0"];
        for w in keys.windows(2) {
            assert!(encode_memcomparable(w[0]) < encode_memcomparable(w[1]));
        }
        for k in keys {
            assert_eq!(decode_memcomparable(&encode_memcomparable(k)).unwrap(), k);
        }
        assert_eq!(decode_memcomparable(b"abc"), None);
    }

    #[test]
    fn crc64_matches_xz_check_value() {
        let mut d = Crc64::new();
        d.write(b"123456789");
        assert_eq!(d.sum64(), 0x995D_C9BB_DF19_39FA);
    }

    #[test]
    fn checksum_is_crc_of_key_then_value_xored() {
        let mut d = Crc64::new();
        d.write(b"123456789");
        assert_eq!(checksum_crc64_xor(0, b"1234", b"56789"), d.sum64());
        let twice = checksum_crc64_xor(checksum_crc64_xor(0, b"k", b"v"), b"k", b"v");
        assert_eq!(twice, 0);
    }

    #[test]
    fn hex_is_upper_case() {
        assert_eq!(hex_upper(b"k\x01\xab"), "6B01AB");
    }
}
