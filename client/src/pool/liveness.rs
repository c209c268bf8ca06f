//! "Is this connection still open?", asked of an idle connection before the pool hands it
//! out or takes it back.
//!
//! A server may close a pooled connection at any time (restart, idle timeout); handing it
//! out would give the user a dead socket. For a TCP socket the check is a non-blocking
//! `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte on the file descriptor: `0` means the peer
//! closed, an error other than "would block" means the socket is broken, and pending data
//! or "would block" mean it is open. It consumes nothing and needs no `&mut`, so it works on
//! a tokio `TcpStream` shared by the pool without touching tokio's readiness state.
//! The same holds for Unix stream sockets. Limitation: a peer that sent data and then
//! closed still reads as alive until the data is consumed; the user sees the end of stream
//! on use and discards the lease.
//!
//! The same peek also tells whether bytes arrived that nobody read
//! ([`Liveness::has_unread`]): a request–response user asks it after reading a whole
//! response, since bytes past the response mean the connection is out of step.

use std::mem::MaybeUninit;

use tokio::net::{TcpStream, UnixStream};

use crate::handshake::Prefixed;

/// A connection the pool can check for liveness without consuming any byte.
pub trait Liveness {
    /// `false` when the peer closed the connection or it is broken. Must be cheap and must
    /// not block; called with no pool lock held.
    fn is_alive(&self) -> bool;

    /// `true` when bytes have arrived that no read has returned yet (looked at, not
    /// consumed). Same constraints as [`is_alive`](Self::is_alive). Default: `false`, for a
    /// stream that cannot tell.
    fn has_unread(&self) -> bool {
        false
    }
}

impl Liveness for TcpStream {
    fn is_alive(&self) -> bool {
        peek(socket2::SockRef::from(self)) != Peeked::Closed
    }

    fn has_unread(&self) -> bool {
        peek(socket2::SockRef::from(self)) == Peeked::Unread
    }
}

/// The same check on a Unix stream socket, for connectors that reach servers over one.
impl Liveness for UnixStream {
    fn is_alive(&self) -> bool {
        peek(socket2::SockRef::from(self)) != Peeked::Closed
    }

    fn has_unread(&self) -> bool {
        peek(socket2::SockRef::from(self)) == Peeked::Unread
    }
}

/// What a peek found.
#[derive(Debug, PartialEq, Eq)]
enum Peeked {
    /// Open, nothing to read.
    Open,
    /// Open, bytes waiting.
    Unread,
    /// The peer closed, or the socket is broken.
    Closed,
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte: see the module doc.
fn peek(socket: socket2::SockRef<'_>) -> Peeked {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    match socket.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(0) => Peeked::Closed,
        Ok(_) => Peeked::Unread,
        Err(e) => match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Peeked::Open,
            _ => Peeked::Closed,
        },
    }
}

impl<S: Liveness> Liveness for Prefixed<S> {
    fn is_alive(&self) -> bool {
        self.get_ref().is_alive()
    }

    fn has_unread(&self) -> bool {
        !self.leftover().is_empty() || self.get_ref().has_unread()
    }
}

impl<T: Liveness + ?Sized> Liveness for Box<T> {
    fn is_alive(&self) -> bool {
        (**self).is_alive()
    }

    fn has_unread(&self) -> bool {
        (**self).has_unread()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// Waits (bounded) for the check to turn false: the FIN takes a moment to arrive.
    async fn becomes_dead(stream: &TcpStream) -> bool {
        for _ in 0..200 {
            if !stream.is_alive() {
                return true;
            }
            stream.readable().await.expect("readable");
        }
        false
    }

    #[tokio::test]
    async fn open_idle_and_pending_data_are_alive_closed_is_not() {
        let (client, mut server) = pair().await;
        assert!(client.is_alive(), "open and idle");
        assert!(!client.has_unread(), "nothing arrived");
        server.write_all(b"x").await.expect("write");
        client.readable().await.expect("readable");
        assert!(client.is_alive(), "data pending");
        assert!(client.has_unread(), "and seen as unread");
        let (client2, server2) = pair().await;
        drop(server2);
        assert!(becomes_dead(&client2).await, "peer closed");
        drop(server);
        drop(client);
    }

    #[tokio::test]
    async fn a_unix_stream_is_alive_until_its_peer_closes() {
        let (client, server) = UnixStream::pair().expect("socketpair");
        assert!(client.is_alive());
        drop(server);
        assert!(!client.is_alive(), "a socketpair's close is seen at once");
    }
}
