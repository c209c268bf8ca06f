//! A pooled connection: the server it goes to, its slot, and the stream the connector
//! opened (positioned after the slot line). Generic over the stream so a custom
//! [`Connector`](crate::rover::Connector) (socket options, Unix sockets, proxies) pools its
//! own kind of stream; TCP is the default.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::handshake::Prefixed;
use crate::pool::Liveness;
use crate::rover::ServerId;

/// A pooled connection: the server it goes to, its slot, and the stream (positioned after
/// the slot line). Reads and writes go to the stream.
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    pub(super) server: ServerId,
    pub(super) slot: u32,
    pub(super) stream: Prefixed<S>,
}

impl<S> Connection<S> {
    /// The server's id (its address, under the default discovery).
    pub fn server(&self) -> &ServerId {
        &self.server
    }

    /// The slot the server assigned.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The stream.
    pub fn stream(&mut self) -> &mut Prefixed<S> {
        &mut self.stream
    }
}

impl<S: Liveness> Liveness for Connection<S> {
    fn is_alive(&self) -> bool {
        self.stream.is_alive()
    }

    fn has_unread(&self) -> bool {
        self.stream.has_unread()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
