//! A small HTTP/1.1 server for PD's HTTP API on PD's port: request heads parsed by hand,
//! bodies read and ignored, answers from [`Cluster::handle_pd_http`](crate::Cluster::handle_pd_http).
//!
//! Connections are kept alive (HTTP/1.1's default) and pipelined requests are answered in
//! order. Whatever a client sends, the answer is a status code, never a panic: a malformed
//! request gets 400 and the connection is closed, since after a bad head the stream cannot be
//! trusted to be at a request boundary.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::SharedCluster;
use crate::HttpReply;

/// Largest request head (request line and headers) accepted; Go's default is 1 MiB, but PD's
/// API needs nothing near it.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body read (and discarded); the served endpoints take no body.
const MAX_BODY: usize = 1024 * 1024;

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
    content_length: usize,
    keep_alive: bool,
}

/// Serves requests on `io` until the client closes, asks to close, or sends something that is
/// not HTTP/1.x. `buf` holds the bytes already read from it.
pub(super) async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    mut buf: Vec<u8>,
    cluster: SharedCluster,
) {
    loop {
        let head_len = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                let _ = respond(&mut io, &error(431), false).await;
                return;
            }
            if !read_more(&mut io, &mut buf).await {
                return;
            }
        };
        let head = match parse_head(&buf[..head_len]) {
            Ok(head) => head,
            Err(status) => {
                let _ = respond(&mut io, &error(status), false).await;
                return;
            }
        };
        if head.content_length > MAX_BODY {
            let _ = respond(&mut io, &error(413), false).await;
            return;
        }
        let end = head_len + head.content_length;
        while buf.len() < end {
            if !read_more(&mut io, &mut buf).await {
                return;
            }
        }
        buf.drain(..end);
        let reply = cluster.lock().handle_pd_http(&head.method, &head.target);
        if respond(&mut io, &reply, head.keep_alive).await.is_err() || !head.keep_alive {
            return;
        }
    }
}

/// Appends what the peer sent next; false at end of stream or on an error.
async fn read_more<T: AsyncRead + Unpin>(io: &mut T, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match io.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a request head ending with the empty line; `Err` carries the status to answer.
fn parse_head(raw: &[u8]) -> Result<Head, u16> {
    let text = std::str::from_utf8(raw).map_err(|_| 400u16)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => return Err(505),
        _ => return Err(400),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(400);
    }
    let target = origin_form(target).ok_or(400u16)?;
    let mut content_length: Option<usize> = None;
    let mut keep_alive = !http10;
    for line in lines.filter(|l| !l.is_empty()) {
        // Obsolete line folding (a line starting with whitespace) is rejected, as RFC 9112
        // allows and Go does.
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        if name.is_empty() || name.starts_with([' ', '\t']) || name.ends_with([' ', '\t']) {
            return Err(400);
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| 400u16)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(400);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // No endpoint takes a body; chunked uploads are not worth decoding here.
            return Err(501);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    Ok(Head {
        method: method.to_string(),
        target,
        content_length: content_length.unwrap_or(0),
        keep_alive,
    })
}

/// The path-and-query of a request target: origin form as is, absolute form
/// (`http://host/path`) reduced to its path, `*` and authority forms refused.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_string());
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".to_string(),
    })
}

/// A plain-text error answer.
fn error(status: u16) -> HttpReply {
    HttpReply {
        status,
        content_type: "text/plain; charset=utf-8",
        allow: None,
        body: format!("{status} {}\n", reason(status)),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes one response (head and body) and flushes it.
async fn respond<T: AsyncWrite + Unpin>(
    io: &mut T,
    reply: &HttpReply,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    if let Some(allow) = reply.allow {
        out.push_str("Allow: ");
        out.push_str(allow);
        out.push_str("\r\n");
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    io.write_all(out.as_bytes()).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_or_get_a_status() {
        let head = parse_head(
            b"GET /pd/api/v1/stores?state=0 HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            head,
            Head {
                method: "GET".into(),
                target: "/pd/api/v1/stores?state=0".into(),
                content_length: 3,
                keep_alive: true,
            }
        );
        let old = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!old.keep_alive);
        let closing = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!closing.keep_alive);
        let absolute = parse_head(b"GET http://pd:2379/pd/api/v1/health HTTP/1.1\r\n\r\n");
        assert_eq!(absolute.unwrap().target, "/pd/api/v1/health");
        for (raw, status) in [
            (&b"GET /\r\n\r\n"[..], 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (b"G\xffT / HTTP/1.1\r\n\r\n", 400),
        ] {
            assert_eq!(
                parse_head(raw),
                Err(status),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
