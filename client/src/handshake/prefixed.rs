//! A stream that first yields the bytes the handshake reader read past the slot line, then
//! the socket's own bytes.
//!
//! The reader reads in chunks (a server may send application bytes in the same segment as
//! the slot line), so whatever followed the CRLF is already out of the socket; this wrapper
//! hands those bytes back first so no application byte is lost. The leftover lives in a
//! small inline buffer (no allocation per connection); writes go straight to the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the handshake read buffer, and so the most leftover bytes a [`Prefixed`] holds.
pub const READ_BUFFER_LEN: usize = 64;

/// A stream whose reads return `prefix` first, then the inner stream's bytes.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: [u8; READ_BUFFER_LEN],
    start: usize,
    end: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner` so reads first return `prefix[start..end]`. Out-of-range bounds are
    /// clamped, so the constructor never panics.
    pub(crate) fn new(inner: S, prefix: [u8; READ_BUFFER_LEN], start: usize, end: usize) -> Self {
        let end = end.min(READ_BUFFER_LEN);
        Self {
            prefix,
            start: start.min(end),
            end,
            inner,
        }
    }

    /// Wraps `inner` with no leftover bytes.
    pub fn plain(inner: S) -> Self {
        Self::new(inner, [0; READ_BUFFER_LEN], 0, 0)
    }

    /// The bytes received after the slot line that no read has returned yet.
    pub fn leftover(&self) -> &[u8] {
        &self.prefix[self.start..self.end]
    }

    /// The underlying stream (reading from it directly skips the leftover bytes).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The underlying stream, mutably (reading from it directly skips the leftover bytes).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The leftover bytes and the underlying stream.
    pub fn into_parts(self) -> (Vec<u8>, S) {
        (self.leftover().to_vec(), self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            let n = buf.remaining().min(this.end - this.start);
            buf.put_slice(&this.prefix[this.start..this.start + n]);
            this.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_the_prefix_then_the_inner_stream() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut prefix = [0; READ_BUFFER_LEN];
        prefix[..8].copy_from_slice(b"7\r\nHELLO");
        let mut stream = Prefixed::new(client, prefix, 3, 8);
        assert_eq!(stream.leftover(), b"HELLO");
        server.write_all(b" WORLD").await.expect("duplex write");
        drop(server);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"HELLO WORLD");
    }

    #[tokio::test]
    async fn small_reads_drain_the_prefix_in_pieces() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let mut prefix = [0; READ_BUFFER_LEN];
        prefix[..3].copy_from_slice(b"abc");
        let mut stream = Prefixed::new(client, prefix, 0, 3);
        let mut one = [0u8; 1];
        for expected in b"abc" {
            assert_eq!(stream.read(&mut one).await.expect("read"), 1);
            assert_eq!(one[0], *expected);
        }
        assert_eq!(stream.read(&mut one).await.expect("read"), 0);
    }

    #[test]
    fn out_of_range_bounds_are_clamped() {
        let stream = Prefixed::new((), [0; READ_BUFFER_LEN], 100, 200);
        assert!(stream.leftover().is_empty());
    }
}
