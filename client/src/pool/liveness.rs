//! "Is this connection still open?", asked of an idle connection before the pool hands it
//! out or takes it back.
//!
//! A server may close a pooled connection at any time (restart, idle timeout, crash); handing
//! it out would give the user a dead socket. For a TCP socket the check is two non-blocking
//! system calls on the file descriptor, neither consuming a byte nor needing `&mut`, so it
//! works on a tokio `TcpStream` shared by the pool without touching tokio's readiness state:
//!
//! 1. `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte: `0` means the peer closed and nothing is
//!    left to read, an error other than "would block" means the socket is broken.
//! 2. Otherwise (nothing pending, or bytes pending) the kernel's TCP state from `TCP_INFO`:
//!    only `ESTABLISHED` is alive. The peek alone cannot see a close behind pending bytes:
//!    the kernel returns the bytes first and the end of stream or the reset only once they
//!    are read, so a peer that sent something and then reset (`CLOSE`) or closed (`CLOSE_WAIT`)
//!    would pass the peek. Where `TCP_INFO` cannot be read, the socket's pending error
//!    (`SO_ERROR`) decides instead; reading it clears it, which is harmless here because a
//!    connection with an error is dropped.
//!
//! What it cannot see: a peer that vanished without a FIN or RST (host down, cable cut, a
//! middlebox that dropped the flow) still reads as `ESTABLISHED` until TCP itself gives up
//! (keepalive or a retransmission timeout); and a close in flight (a FIN or RST sent but not
//! yet arrived) is seen only once it arrives. A peer that half-closed (FIN, `CLOSE_WAIT`) with
//! bytes still unread is reported dead: it will send nothing more, so a request on it can get
//! no answer, even though the pending bytes could still be read.
//!
//! Unix stream sockets get the peek alone: a socket pair has no TCP state, and its close is
//! seen by the peek at once.
//!
//! The same peek also tells whether bytes arrived that nobody read
//! ([`Liveness::has_unread`]): a request–response user asks it after reading a whole
//! response, since bytes past the response mean the connection is out of step.

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;

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

/// `TCP_ESTABLISHED` in the kernel's `enum tcp_state` (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;

impl Liveness for TcpStream {
    fn is_alive(&self) -> bool {
        // The peek cannot see a reset or a FIN behind pending bytes: ask the TCP state.
        peek(socket2::SockRef::from(self)) != Peeked::Closed
            && match tcp_state(self) {
                Ok(state) => state == TCP_ESTABLISHED,
                Err(_) => matches!(socket2::SockRef::from(self).take_error(), Ok(None)),
            }
    }

    fn has_unread(&self) -> bool {
        peek(socket2::SockRef::from(self)) == Peeked::Unread
    }
}

/// The peek alone on a Unix stream socket, for connectors that reach servers over one.
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

/// The kernel's TCP state of the socket (`tcpi_state` of `TCP_INFO`).
fn tcp_state(stream: &TcpStream) -> std::io::Result<u8> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is open for the duration of the borrow of `stream`; `info` is a
    // writable buffer of `len` bytes, and the kernel writes at most `len` bytes and updates
    // `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if (len as usize) < 1 {
        return Err(std::io::Error::other("TCP_INFO returned no state"));
    }
    // SAFETY: zero-initialised, and the kernel filled at least the first byte (the state);
    // every bit pattern is a valid `tcp_info` (plain integers).
    Ok(unsafe { info.assume_init() }.tcpi_state)
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
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// `TCP_CLOSE` and `TCP_CLOSE_WAIT` in the kernel's `enum tcp_state`.
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;

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

    /// Waits until the kernel has put `stream` in TCP state `want` (the peer's FIN or RST has
    /// arrived); fails the test after 5 s.
    async fn reaches_state(stream: &TcpStream, want: u8) {
        let arrived = async {
            while tcp_state(stream).expect("TCP_INFO") != want {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), arrived)
            .await
            .unwrap_or_else(|_| panic!("TCP state {want} not reached within 5 s"));
    }

    /// A pair whose server side has written `bytes`, which the client has received.
    async fn pair_with_pending(bytes: &[u8]) -> (TcpStream, TcpStream) {
        let (client, mut server) = pair().await;
        server.write_all(bytes).await.expect("write");
        client.readable().await.expect("readable");
        (client, server)
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

    #[tokio::test]
    async fn a_peer_that_sent_bytes_and_stays_is_alive() {
        let (client, server) = pair_with_pending(b"17\r\n").await;
        assert_eq!(tcp_state(&client).expect("TCP_INFO"), TCP_ESTABLISHED);
        assert!(client.is_alive());
        drop(server);
    }

    #[tokio::test]
    async fn a_peer_that_sent_bytes_then_reset_is_dead_although_the_bytes_are_unread() {
        let (client, server) = pair_with_pending(b"17\r\n").await;
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(server); // the close sends RST
        reaches_state(&client, TCP_CLOSE).await;
        // The bytes are still queued (a peek returns them), yet the connection is gone.
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        let peeked = socket2::SockRef::from(&client)
            .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
        assert!(matches!(peeked, Ok(1)), "{peeked:?}");
        assert!(!client.is_alive());
    }

    #[tokio::test]
    async fn a_peer_that_sent_bytes_then_closed_is_dead_and_its_bytes_stay_readable() {
        let (mut client, server) = pair_with_pending(b"17\r\n").await;
        drop(server); // FIN
        reaches_state(&client, TCP_CLOSE_WAIT).await;
        assert!(
            !client.is_alive(),
            "half-closed by the peer: it sends nothing more"
        );
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"17\r\n", "the pending bytes are not lost");
    }
}
