//! gRPC's wire details that need no I/O: message framing, status, and the headers we build
//! and parse. Everything here is pure and unit-tested on bytes.
//!
//! A gRPC message on an HTTP/2 stream is a 5-byte prefix (1 byte "compressed" flag, 4 bytes
//! big-endian length) followed by the protobuf bytes; messages may be split across DATA frames
//! and several may share one frame, so [`Decoder`] reassembles them. The call's status comes
//! in trailers (`grpc-status`, percent-encoded `grpc-message`), or in the response headers
//! alone for a "Trailers-Only" response.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use tikv_core::GrpcCode;

/// Length of the message prefix.
pub const PREFIX_LEN: usize = 5;

/// A gRPC status: a code and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: GrpcCode,
    /// The (decoded) message.
    pub message: String,
}

impl Status {
    /// A status with this code and message.
    pub fn new(code: GrpcCode, message: impl Into<String>) -> Self {
        Status {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// Frames one encoded message: prefix plus body.
pub fn frame(message: &[u8]) -> Result<Bytes, Status> {
    let len = u32::try_from(message.len()).map_err(|_| {
        Status::new(
            GrpcCode::ResourceExhausted,
            format!("message of {} bytes is too large", message.len()),
        )
    })?;
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + message.len());
    buf.put_u8(0);
    buf.put_u32(len);
    buf.put_slice(message);
    Ok(buf.freeze())
}

/// Encodes a protobuf message straight into a framed buffer (one allocation, no copy).
pub fn encode<M: prost::Message>(message: &M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let prefix_len = u32::try_from(len).map_err(|_| {
        Status::new(
            GrpcCode::ResourceExhausted,
            format!("message of {len} bytes is too large"),
        )
    })?;
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(prefix_len);
    // Encoding into a buffer with enough capacity cannot fail.
    message
        .encode(&mut buf)
        .map_err(|e| Status::new(GrpcCode::Internal, format!("encode: {e}")))?;
    Ok(buf.freeze())
}

/// Reassembles messages from DATA chunks.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_message_size: usize,
}

impl Decoder {
    /// A decoder that rejects messages longer than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            max_message_size,
        }
    }

    /// Appends a received chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let flag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        match flag {
            0 => {}
            1 => {
                return Err(Status::new(
                    GrpcCode::Internal,
                    "received a compressed message, but no compression was negotiated",
                ));
            }
            other => {
                return Err(Status::new(
                    GrpcCode::Internal,
                    format!("invalid message flag {other:#04x}"),
                ));
            }
        }
        if len > self.max_message_size {
            return Err(Status::new(
                GrpcCode::ResourceExhausted,
                format!(
                    "message of {len} bytes exceeds the limit of {} bytes",
                    self.max_message_size
                ),
            ));
        }
        if self.buf.len() < PREFIX_LEN + len {
            self.buf.reserve(PREFIX_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Checks that the stream did not end in the middle of a message.
    pub fn finish(&self) -> Result<(), Status> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Status::new(
                GrpcCode::Internal,
                format!(
                    "stream ended inside a message ({} bytes left over)",
                    self.buf.len()
                ),
            ))
        }
    }
}

/// Formats a `grpc-timeout` header value: at most 8 digits and a unit.
pub fn format_timeout(timeout: Duration) -> String {
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = timeout.as_nanos();
    for (per, unit) in units {
        // Round up so that the server never sees a shorter deadline than ours.
        let value = nanos.div_ceil(per);
        if value < 100_000_000 {
            return format!("{value}{unit}");
        }
    }
    "99999999H".to_string()
}

/// Parses a `grpc-timeout` header value.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "n" => Duration::from_nanos(n),
        "u" => Duration::from_micros(n),
        "m" => Duration::from_millis(n),
        "S" => Duration::from_secs(n),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// Percent-encodes a status message for `grpc-message` (the gRPC spec's rule: bytes outside
/// printable ASCII, and `%` itself, are encoded).
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a `grpc-message` value; malformed escapes are kept as they are (the spec says to
/// be lenient here), and invalid UTF-8 is replaced.
pub fn percent_decode(value: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(h), Some(l)) = (hex(value[i + 1]), hex(value[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status carried by `headers` (trailers, or the headers of a Trailers-Only response), if
/// they carry one.
pub fn status_from_headers(headers: &HeaderMap) -> Option<Status> {
    let code = headers.get("grpc-status")?;
    let code = code
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(GrpcCode::Unknown, GrpcCode::from_u32);
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(Status { code, message })
}

/// The gRPC code for an HTTP response that carries no gRPC status (a proxy or a non-gRPC
/// server answered), as gRPC's HTTP-to-gRPC status mapping specifies.
pub fn code_for_http_status(status: http::StatusCode) -> GrpcCode {
    match status.as_u16() {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        429 | 502 | 503 | 504 => GrpcCode::Unavailable,
        _ => GrpcCode::Unknown,
    }
}

/// The gRPC code for a stream reset with `reason`.
pub fn code_for_reset(reason: h2::Reason) -> GrpcCode {
    match reason {
        h2::Reason::REFUSED_STREAM => GrpcCode::Unavailable,
        h2::Reason::CANCEL => GrpcCode::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => GrpcCode::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => GrpcCode::PermissionDenied,
        _ => GrpcCode::Internal,
    }
}

/// Fuzzing entry point: feeds `data` to a decoder in chunks whose sizes come from the data
/// itself, decoding until an error or the end. Must never panic.
pub fn fuzz_decode(data: &[u8]) {
    let mut decoder = Decoder::new(1 << 16);
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let take = usize::from(n).min(tail.len());
        let (chunk, after) = tail.split_at(take);
        decoder.push(chunk);
        rest = after;
        loop {
            match decoder.next_message() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_reassembles_across_chunks() {
        let a = frame(b"hello").unwrap();
        let b = frame(b"").unwrap();
        let c = frame(&[7u8; 300]).unwrap();
        let mut all = Vec::new();
        all.extend_from_slice(&a);
        all.extend_from_slice(&b);
        all.extend_from_slice(&c);
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        // One byte at a time: every split point is exercised.
        for byte in &all {
            d.push(std::slice::from_ref(byte));
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"hello"),
                Bytes::new(),
                Bytes::from(vec![7u8; 300])
            ]
        );
        d.finish().unwrap();
    }

    #[test]
    fn many_messages_in_one_chunk() {
        let mut d = Decoder::new(1024);
        let mut chunk = Vec::new();
        for i in 0..10u8 {
            chunk.extend_from_slice(&frame(&[i; 3]).unwrap());
        }
        d.push(&chunk);
        let mut n = 0;
        while let Some(m) = d.next_message().unwrap() {
            assert_eq!(&m[..], &[n; 3]);
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn rejects_bad_frames_without_panicking() {
        let mut d = Decoder::new(16);
        d.push(&[0, 0, 0, 1, 0]);
        let e = d.next_message().unwrap_err();
        assert_eq!(e.code, GrpcCode::ResourceExhausted, "{e}");

        let mut d = Decoder::new(16);
        d.push(&[1, 0, 0, 0, 1, 9]);
        assert!(d.next_message().unwrap_err().message.contains("compressed"));

        let mut d = Decoder::new(16);
        d.push(&[5, 0, 0, 0, 0]);
        assert!(d.next_message().unwrap_err().message.contains("flag"));

        let mut d = Decoder::new(16);
        d.push(&[0, 0, 0]);
        assert_eq!(d.next_message().unwrap(), None);
        assert!(d.finish().is_err(), "truncated prefix at end of stream");
    }

    #[test]
    fn timeouts_round_trip_and_never_shrink() {
        for d in [
            Duration::from_nanos(1),
            Duration::from_millis(1500),
            Duration::from_secs(20),
            Duration::from_secs(3 * 3600),
            Duration::from_nanos(123_456_789_123),
        ] {
            let text = format_timeout(d);
            assert!(text.len() <= 9, "{text}");
            let back = parse_timeout(&text).unwrap();
            assert!(back >= d, "{d:?} became {text} = {back:?}");
        }
        assert_eq!(format_timeout(Duration::from_millis(20)), "20000000n");
        assert_eq!(parse_timeout("5m"), Some(Duration::from_millis(5)));
        assert_eq!(parse_timeout("x"), None);
        assert_eq!(parse_timeout("12X"), None);
        assert_eq!(parse_timeout("123456789S"), None, "more than 8 digits");
    }

    #[test]
    fn status_messages_are_percent_coded() {
        let msg = "region 5: 100% busy\n→ retry";
        let enc = percent_encode(msg);
        assert!(enc.is_ascii() && !enc.contains('\n'), "{enc}");
        assert_eq!(percent_decode(enc.as_bytes()), msg);
        assert_eq!(percent_decode(b"bad %zz and %4"), "bad %zz and %4");

        let mut h = HeaderMap::new();
        assert_eq!(status_from_headers(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        h.insert("grpc-message", "store%20down".parse().unwrap());
        assert_eq!(
            status_from_headers(&h),
            Some(Status::new(GrpcCode::Unavailable, "store down"))
        );
        h.insert("grpc-status", "banana".parse().unwrap());
        assert_eq!(status_from_headers(&h).unwrap().code, GrpcCode::Unknown);
    }

    /// Replays the checked-in fuzz corpus through the decoder harness.
    #[test]
    fn fuzz_corpus_replays() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/grpc_decoder");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            fuzz_decode(&std::fs::read(entry.path()).unwrap());
            n += 1;
        }
        for data in [&[][..], &[0xff; 40][..], &[5, 0, 0, 0, 0, 1][..]] {
            fuzz_decode(data);
        }
        assert!(n > 0, "corpus present");
    }

    #[test]
    fn http_and_reset_codes() {
        assert_eq!(
            code_for_http_status(http::StatusCode::NOT_FOUND),
            GrpcCode::Unimplemented
        );
        assert_eq!(
            code_for_http_status(http::StatusCode::BAD_GATEWAY),
            GrpcCode::Unavailable
        );
        assert_eq!(
            code_for_reset(h2::Reason::REFUSED_STREAM),
            GrpcCode::Unavailable
        );
        assert_eq!(
            code_for_reset(h2::Reason::PROTOCOL_ERROR),
            GrpcCode::Internal
        );
    }
}
