//! Byte-level encodings shared by TiKV and PD that the mock must reproduce exactly.
//!
//! - Memcomparable bytes (TiKV's `Key::from_raw`, Go's `codec.EncodeBytes`): how API V2 keys
//!   and transactional keys appear in region boundaries.
//! - CRC-64/XZ (the `crc64fast` digest TiKV uses for `RawChecksum`).
//! - Upper-case hex, the way TiKV's log wrappers print keys in error messages.
//! - FarmHash's 64-bit fingerprint (`farmhash::fingerprint64`), TiKV's `Key::gen_hash`: the
//!   key hashes of deadlock errors, which clients compare with their own keys' fingerprints.

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

/// FarmHash's `Fingerprint64` (its "na" 64-bit hash with seed 81), as TiKV's `Key::gen_hash`
/// computes it over a raw key: stable across platforms and versions, which is what lets a
/// client match a deadlock's `deadlock_key_hash` against its own keys.
pub fn fingerprint64(s: &[u8]) -> u64 {
    let len = s.len();
    if len <= 16 {
        return farm::len_0_to_16(s);
    }
    if len <= 32 {
        return farm::len_17_to_32(s);
    }
    if len <= 64 {
        return farm::len_33_to_64(s);
    }
    farm::long(s)
}

/// The pieces of FarmHash's "na" hash.
mod farm {
    const K0: u64 = 0xc3a5_c85c_97cb_3127;
    const K1: u64 = 0xb492_b66f_be98_f273;
    const K2: u64 = 0x9ae1_6a3b_2f90_404f;

    fn u64_at(s: &[u8], i: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(b)
    }

    fn u32_at(s: &[u8], i: usize) -> u64 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&s[i..i + 4]);
        u64::from(u32::from_le_bytes(b))
    }

    fn shift_mix(v: u64) -> u64 {
        v ^ (v >> 47)
    }

    /// Mixes two words into one with multiplier `mul`.
    fn mix(u: u64, v: u64, mul: u64) -> u64 {
        let a = shift_mix((u ^ v).wrapping_mul(mul));
        let b = shift_mix((v ^ a).wrapping_mul(mul));
        b.wrapping_mul(mul)
    }

    fn mul_for(len: usize) -> u64 {
        K2.wrapping_add((len as u64).wrapping_mul(2))
    }

    pub(super) fn len_0_to_16(s: &[u8]) -> u64 {
        let len = s.len();
        if len >= 8 {
            let mul = mul_for(len);
            let a = u64_at(s, 0).wrapping_add(K2);
            let b = u64_at(s, len - 8);
            let c = b.rotate_right(37).wrapping_mul(mul).wrapping_add(a);
            let d = a.rotate_right(25).wrapping_add(b).wrapping_mul(mul);
            return mix(c, d, mul);
        }
        if len >= 4 {
            let mul = mul_for(len);
            let a = u32_at(s, 0);
            return mix((len as u64).wrapping_add(a << 3), u32_at(s, len - 4), mul);
        }
        if len > 0 {
            let (a, b, c) = (s[0], s[len >> 1], s[len - 1]);
            let y = u32::from(a).wrapping_add(u32::from(b) << 8);
            let z = (len as u32).wrapping_add(u32::from(c) << 2);
            return shift_mix(u64::from(y).wrapping_mul(K2) ^ u64::from(z).wrapping_mul(K0))
                .wrapping_mul(K2);
        }
        K2
    }

    pub(super) fn len_17_to_32(s: &[u8]) -> u64 {
        let len = s.len();
        let mul = mul_for(len);
        let a = u64_at(s, 0).wrapping_mul(K1);
        let b = u64_at(s, 8);
        let c = u64_at(s, len - 8).wrapping_mul(mul);
        let d = u64_at(s, len - 16).wrapping_mul(K2);
        mix(
            a.wrapping_add(b)
                .rotate_right(43)
                .wrapping_add(c.rotate_right(30))
                .wrapping_add(d),
            a.wrapping_add(b.wrapping_add(K2).rotate_right(18))
                .wrapping_add(c),
            mul,
        )
    }

    pub(super) fn len_33_to_64(s: &[u8]) -> u64 {
        let len = s.len();
        let mul = mul_for(len);
        let a = u64_at(s, 0).wrapping_mul(K2);
        let b = u64_at(s, 8);
        let c = u64_at(s, len - 8).wrapping_mul(mul);
        let d = u64_at(s, len - 16).wrapping_mul(K2);
        let y = a
            .wrapping_add(b)
            .rotate_right(43)
            .wrapping_add(c.rotate_right(30))
            .wrapping_add(d);
        let z = mix(
            y,
            a.wrapping_add(b.wrapping_add(K2).rotate_right(18))
                .wrapping_add(c),
            mul,
        );
        let e = u64_at(s, 16).wrapping_mul(mul);
        let f = u64_at(s, 24);
        let g = y.wrapping_add(u64_at(s, len - 32)).wrapping_mul(mul);
        let h = z.wrapping_add(u64_at(s, len - 24)).wrapping_mul(mul);
        mix(
            e.wrapping_add(f)
                .rotate_right(43)
                .wrapping_add(g.rotate_right(30))
                .wrapping_add(h),
            e.wrapping_add(f.wrapping_add(a).rotate_right(18))
                .wrapping_add(g),
            mul,
        )
    }

    /// Two words from 32 bytes at `i` and two seeds.
    fn weak_32(s: &[u8], i: usize, a: u64, b: u64) -> (u64, u64) {
        let (w, x, y, z) = (
            u64_at(s, i),
            u64_at(s, i + 8),
            u64_at(s, i + 16),
            u64_at(s, i + 24),
        );
        let mut a = a.wrapping_add(w);
        let mut b = b.wrapping_add(a).wrapping_add(z).rotate_right(21);
        let c = a;
        a = a.wrapping_add(x).wrapping_add(y);
        b = b.wrapping_add(a.rotate_right(44));
        (a.wrapping_add(z), b.wrapping_add(c))
    }

    /// More than 64 bytes: 64-byte rounds, then the last 64 bytes.
    pub(super) fn long(s: &[u8]) -> u64 {
        let len = s.len();
        const SEED: u64 = 81;
        let mut x = SEED;
        let mut y = SEED.wrapping_mul(K1).wrapping_add(113);
        let mut z = shift_mix(y.wrapping_mul(K2).wrapping_add(113)).wrapping_mul(K2);
        let mut v = (0u64, 0u64);
        let mut w = (0u64, 0u64);
        x = x.wrapping_mul(K2).wrapping_add(u64_at(s, 0));
        let end = ((len - 1) / 64) * 64;
        let last64 = end + ((len - 1) & 63) - 63;
        let mut i = 0;
        loop {
            x = x
                .wrapping_add(y)
                .wrapping_add(v.0)
                .wrapping_add(u64_at(s, i + 8))
                .rotate_right(37)
                .wrapping_mul(K1);
            y = y
                .wrapping_add(v.1)
                .wrapping_add(u64_at(s, i + 48))
                .rotate_right(42)
                .wrapping_mul(K1);
            x ^= w.1;
            y = y.wrapping_add(v.0).wrapping_add(u64_at(s, i + 40));
            z = z.wrapping_add(w.0).rotate_right(33).wrapping_mul(K1);
            v = weak_32(s, i, v.1.wrapping_mul(K1), x.wrapping_add(w.0));
            w = weak_32(
                s,
                i + 32,
                z.wrapping_add(w.1),
                y.wrapping_add(u64_at(s, i + 16)),
            );
            std::mem::swap(&mut z, &mut x);
            i += 64;
            if i == end {
                break;
            }
        }
        let mul = K1.wrapping_add((z & 0xff) << 1);
        let i = last64;
        w.0 = w.0.wrapping_add(((len - 1) & 63) as u64);
        v.0 = v.0.wrapping_add(w.0);
        w.0 = w.0.wrapping_add(v.0);
        x = x
            .wrapping_add(y)
            .wrapping_add(v.0)
            .wrapping_add(u64_at(s, i + 8))
            .rotate_right(37)
            .wrapping_mul(mul);
        y = y
            .wrapping_add(v.1)
            .wrapping_add(u64_at(s, i + 48))
            .rotate_right(42)
            .wrapping_mul(mul);
        x ^= w.1.wrapping_mul(9);
        y = y
            .wrapping_add(v.0.wrapping_mul(9))
            .wrapping_add(u64_at(s, i + 40));
        z = z.wrapping_add(w.0).rotate_right(33).wrapping_mul(mul);
        v = weak_32(s, i, v.1.wrapping_mul(mul), x.wrapping_add(w.0));
        w = weak_32(
            s,
            i + 32,
            z.wrapping_add(w.1),
            y.wrapping_add(u64_at(s, i + 16)),
        );
        std::mem::swap(&mut z, &mut x);
        mix(
            mix(v.0, w.0, mul)
                .wrapping_add(shift_mix(y).wrapping_mul(K0))
                .wrapping_add(z),
            mix(v.1, w.1, mul).wrapping_add(x),
            mul,
        )
    }
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
    #[test]
    fn fingerprint64_matches_farmhash() {
        // FarmHash's published "na" Hash64 values (what `Fingerprint64` returns), covering
        // every length class: empty, <= 16, <= 32, <= 64, and longer.
        let cases: [(&str, u64); 9] = [
            ("", 0x9ae1_6a3b_2f90_404f),
            ("a", 0xb345_4265_b6df_75e3),
            ("abcd", 0x1a55_02de_4a1f_8101),
            ("abcdefghi", 0x332c_8ed4_dae5_ba42),
            ("0123456789=012345", 0x46a7_416e_d486_1e3b),
            ("C is as portable as Stonehedge!!", 0xb944_f8a1_6261_e414),
            (
                "Discard medicine more than two years old.",
                0xe8f8_9ab6_df9b_dd25,
            ),
            (
                "For every action there is an equal and opposite government program.",
                0x5518_2f88_59ec_a4ce,
            ),
            (
                "The fugacity of a constituent in a mixture of gases at a given temperature is \
                 proportional to its mole fraction.  Lewis-Randall Rule",
                0x098e_ff69_58c5_e91a,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(fingerprint64(input.as_bytes()), want, "{input:?}");
        }
    }
}
