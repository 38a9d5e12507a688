//! Telling gRPC from HTTP/1.1 on PD's port, as a real PD does (it serves both on one
//! listener): an HTTP/2 client opens with the fixed connection preface `PRI * HTTP/2.0...`,
//! which no HTTP/1.x request line can start with.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a new connection turned out to be.
pub(super) enum Sniffed<T> {
    /// An HTTP/2 (gRPC) client; the bytes read so far are replayed to the h2 server.
    Grpc(Rewind<T>),
    /// Anything else, served as HTTP/1.1, with the bytes read so far.
    Http1(T, Vec<u8>),
    /// The peer closed before sending anything decisive.
    Closed,
}

/// Reads just enough of the connection to classify it: until the bytes stop matching the
/// preface (HTTP/1.1) or the whole preface has arrived (gRPC).
pub(super) async fn sniff<T: AsyncRead + Unpin>(mut io: T) -> io::Result<Sniffed<T>> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Sniffed::Closed);
        }
        seen.extend_from_slice(&chunk[..n]);
        let k = seen.len().min(PREFACE.len());
        if seen[..k] != PREFACE[..k] {
            return Ok(Sniffed::Http1(io, seen));
        }
        if seen.len() >= PREFACE.len() {
            return Ok(Sniffed::Grpc(Rewind {
                prefix: seen,
                pos: 0,
                inner: io,
            }));
        }
    }
}

/// A stream that first yields bytes already read from it, then reads on.
pub(super) struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.prefix[this.pos..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        if this.pos == this.prefix.len() {
            // The replayed bytes are never needed again.
            this.prefix = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn preface_in_pieces_is_grpc_and_is_replayed() {
        block_on(async {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(&PREFACE[..3]).await.unwrap();
            let sniffing = tokio::spawn(sniff(server));
            tokio::task::yield_now().await;
            client.write_all(&PREFACE[3..]).await.unwrap();
            client.write_all(b"rest").await.unwrap();
            drop(client);
            let Ok(Ok(Sniffed::Grpc(mut io))) = sniffing.await else {
                panic!("not gRPC");
            };
            let mut all = Vec::new();
            io.read_to_end(&mut all).await.unwrap();
            assert!(all.starts_with(PREFACE) && all.ends_with(b"rest"));
        });
    }

    #[test]
    fn anything_else_is_http1_and_silence_is_closed() {
        block_on(async {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            let Ok(Sniffed::Http1(_, seen)) = sniff(server).await else {
                panic!("not HTTP/1.1");
            };
            assert_eq!(seen, b"GET / HTTP/1.1\r\n");
            // "PRIX" diverges from the preface at its fourth byte.
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(b"PRIX").await.unwrap();
            assert!(matches!(sniff(server).await, Ok(Sniffed::Http1(..))));
            let (client, server) = tokio::io::duplex(64);
            drop(client);
            assert!(matches!(sniff(server).await, Ok(Sniffed::Closed)));
        });
    }
}
