//! Turning command-line text into bytes and bytes into text: hex and escaped output, JSON
//! strings, durations and endpoints, and a stdout writer that reports a closed pipe instead
//! of panicking the way `println!` does.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use crate::error::CliError;

/// Parses a key or value argument: the string's bytes, or with `hex` its hex digits (an
/// optional `0x` prefix is allowed). `what` names the argument in the error.
pub(crate) fn parse_bytes(text: &str, hex: bool, what: &str) -> Result<Vec<u8>, CliError> {
    if !hex {
        return Ok(text.as_bytes().to_vec());
    }
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.len() % 2 != 0 {
        return Err(CliError::msg(format!(
            "{what} '{text}' is not valid hex: odd number of digits"
        )));
    }
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = hex_digit(pair[0]);
            let lo = hex_digit(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
                _ => Err(CliError::msg(format!(
                    "{what} '{text}' is not valid hex: unexpected '{}'",
                    String::from_utf8_lossy(pair)
                ))),
            }
        })
        .collect()
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `bytes` as readable text on one line: printable UTF-8 as is, a backslash as `\\`, every
/// other byte (control characters, invalid UTF-8) as `\xNN`. Unambiguous, so it can be told
/// apart from a key that literally contains `\x00`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `bytes` for display: hex when the user works in hex, escaped text otherwise.
pub(crate) fn show(bytes: &[u8], hex_mode: bool) -> String {
    if hex_mode { hex(bytes) } else { escape(bytes) }
}

/// `text` as a quoted JSON string.
pub(crate) fn json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Bytes as a JSON string, in the same form as [`show`].
pub(crate) fn json_bytes(bytes: &[u8], hex_mode: bool) -> String {
    json_str(&show(bytes, hex_mode))
}

/// Parses `500ms`, `5s`, `2m` or a bare number of seconds (clap value parser).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 500ms, 5s or 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}' (use ms, s or m)"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!(
            "duration '{text}' must be above 0 and at most a day"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Checks a `host:port` endpoint (clap value parser): PD addresses are easy to mistype, and a
/// clear error here beats a connection failure later.
pub(crate) fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let bare = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text);
    match bare.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(bare.to_string())
        }
        _ => Err(format!("'{text}' is not host:port")),
    }
}

/// Human-friendly elapsed time: `850 µs`, `12.3 ms`, `1.20 s`.
pub(crate) fn elapsed(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1000 {
        format!("{micros} µs")
    } else if micros < 1_000_000 {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Standard output, line by line, with write errors as values (a closed pipe becomes
/// [`CliError::BrokenPipe`] rather than `println!`'s panic).
pub(crate) struct Out {
    stdout: io::Stdout,
}

impl Out {
    /// The process's standard output.
    pub(crate) fn new() -> Self {
        Out {
            stdout: io::stdout(),
        }
    }

    /// Writes one line.
    pub(crate) fn line(&self, text: impl AsRef<str>) -> Result<(), CliError> {
        let mut lock = self.stdout.lock();
        lock.write_all(text.as_ref().as_bytes())?;
        lock.write_all(b"\n")?;
        // Line by line even when stdout is a pipe: the test harness and scripts read the mock's
        // addresses while it keeps running.
        lock.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(parse_bytes("0x00ff10", true, "key").unwrap(), [0, 255, 16]);
        assert_eq!(parse_bytes("AbCd", true, "key").unwrap(), [0xab, 0xcd]);
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert!(parse_bytes("abc", true, "key").is_err());
        let e = parse_bytes("zz", true, "key").unwrap_err().to_string();
        assert!(e.contains("not valid hex"), "{e}");
        assert_eq!(parse_bytes("zz", false, "key").unwrap(), b"zz");
    }

    #[test]
    fn escaping_is_readable_and_unambiguous() {
        assert_eq!(escape(b"plain key-1"), "plain key-1");
        assert_eq!(escape(b"a\x00b\tc"), "a\\x00b\\x09c");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape(&[0xff, b'a']), "\\xffa");
        assert_eq!(escape("héllo".as_bytes()), "héllo");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(json_bytes(b"\x00", false), r#""\\x00""#);
        assert_eq!(json_bytes(b"\x00", true), r#""00""#);
    }

    #[test]
    fn durations_and_endpoints_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_endpoint("127.0.0.1:2379").unwrap(), "127.0.0.1:2379");
        assert_eq!(parse_endpoint("http://pd:2379").unwrap(), "pd:2379");
        assert!(parse_endpoint("pd").is_err());
        assert!(parse_endpoint("pd:http").is_err());
    }
}
