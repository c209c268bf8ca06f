//! A shard's accept operations: several io_uring accepts in flight on its listener at once.
//!
//! With one accept in flight a shard takes at most one connection per trip through its event
//! loop (the next accept is only submitted when the loop parks), so a burst waiting in the
//! backlog costs one loop iteration (an `epoll_wait` and an `io_uring_enter`) per
//! connection. With [`IN_FLIGHT`] accepts pending, one submission takes up to that many
//! connections; when the backlog is empty each pending accept waits in the kernel, woken one
//! per new connection (accepts wait exclusively).
//!
//! The operation is tokio-uring's accept rebuilt on its public `UnsubmittedOneshot`, for two
//! reasons: its address buffer is handed back with the result and reused by the next accept
//! (tokio-uring allocates one per accept), and the operation holds an `Rc` of the listener, so
//! the listening descriptor stays open for as long as the kernel may still use it, even if
//! the operation is dropped before it was submitted.
//!
//! An accept is never dropped while pending (its accepted descriptor would leak in the ring):
//! the shard stops accepting by shutting the listener down (`SHUT_RD`), which completes them.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

use io_uring::{cqueue, opcode, types};
use socket2::{SockAddr, SockAddrStorage};
use tokio_uring::net::{TcpListener, TcpStream};
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

/// Accepts a shard keeps pending at once.
pub(crate) const IN_FLIGHT: usize = 4;

/// Where the kernel writes an accepted connection's peer address.
pub(crate) struct PeerBuf {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl PeerBuf {
    pub(crate) fn new() -> Box<Self> {
        Box::new(Self {
            // SAFETY: all zeroes is a valid `sockaddr_storage` (a plain C struct).
            storage: unsafe { mem::zeroed() },
            len: 0,
        })
    }

    fn peer(&self) -> Option<SocketAddr> {
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: `SockAddrStorage` is a transparent wrapper of `sockaddr_storage`; the copy
        // is the address the kernel wrote, `len` bytes of which are meaningful.
        let addr = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.storage;
            SockAddr::new(storage, self.len)
        };
        addr.as_socket()
    }
}

/// The data an accept holds while in flight: the listener (kept open) and the address buffer
/// (at a stable heap address the kernel writes to).
pub(crate) struct AcceptData {
    _listener: Rc<TcpListener>,
    peer: Box<PeerBuf>,
}

/// Turns an accept's completion into the connection, handing the address buffer back.
pub(crate) struct Accepted;

/// A pending accept; resolves to the connection (or the error) and the buffer to reuse.
pub(crate) type AcceptOp = InFlightOneshot<AcceptData, Accepted>;

/// What an accept yields: the connection or the error, and its address buffer.
pub(crate) type AcceptOutput = (io::Result<(TcpStream, SocketAddr)>, Box<PeerBuf>);

impl OneshotOutputTransform for Accepted {
    type Output = AcceptOutput;
    type StoredData = AcceptData;

    fn transform_oneshot_output(self, data: AcceptData, cqe: cqueue::Entry) -> AcceptOutput {
        let fd = cqe.result();
        if fd < 0 {
            return (Err(io::Error::from_raw_os_error(-fd)), data.peer);
        }
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let stream = TcpStream::from_std(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        // An accepted TCP socket always has an IPv4 or IPv6 peer; the fallback is unreachable
        // in practice and only keeps this total.
        let peer = data
            .peer
            .peer()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        (Ok((stream, peer)), data.peer)
    }
}

/// Submits an accept on `listener`, writing the peer's address into `peer`. Must be called on
/// a tokio-uring runtime's thread.
pub(crate) fn submit(listener: &Rc<TcpListener>, mut peer: Box<PeerBuf>) -> AcceptOp {
    peer.len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // The pointers below stay valid while the box moves into the operation's data: a `Box`
    // owns a heap allocation that moving the `Box` does not move, and tokio-uring keeps the
    // data alive until the kernel's completion, even if the `AcceptOp` is dropped first.
    let sqe = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        (&raw mut peer.storage).cast(),
        &raw mut peer.len,
    )
    .flags(libc::SOCK_CLOEXEC)
    .build();
    let data = AcceptData {
        _listener: Rc::clone(listener),
        peer,
    };
    UnsubmittedOneshot::new(data, Accepted, sqe).submit()
}
