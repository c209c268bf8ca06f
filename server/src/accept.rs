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
//!
//! [`Accepts`] is the shard's set of them, with what a failed accept needs: an error of one
//! waiting connection (ECONNABORTED and the like) is retried at once; anything else, resource
//! exhaustion above all, parks the accept for a backoff (after refusing the waiting clients
//! promptly with a spare descriptor when out of descriptors), so that errors never make the
//! shard spin and never stop it. Connections themselves do not run the process out of
//! descriptors (the budget of `crate::fd_budget` refuses them first); the spare is the
//! fallback for descriptors the server does not count, such as a handler's own.

use std::future::Future;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{cqueue, opcode, types};
use socket2::{SockAddr, SockAddrStorage};
use tokio_uring::net::TcpListener;
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

use crate::connection::ShardCtx;
use crate::log_limit::LogLimit;
use crate::stats::ShardCounters;

/// Accepts a shard keeps pending at once.
pub(crate) const IN_FLIGHT: usize = 4;

/// Backoff after an accept error that is not one connection's (resource exhaustion above
/// all), doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Where the kernel writes an accepted connection's peer address.
pub(crate) struct PeerBuf {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl PeerBuf {
    fn new() -> Box<Self> {
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
struct AcceptData {
    _listener: Rc<TcpListener>,
    peer: Box<PeerBuf>,
}

/// Turns an accept's completion into the connection, handing the address buffer back.
struct Accepted;

/// A pending accept; resolves to the connection (or the error) and the buffer to reuse.
type AcceptOp = InFlightOneshot<AcceptData, Accepted>;

/// What an accept yields: the connection or the error, and its address buffer.
type AcceptOutput = (io::Result<(OwnedFd, SocketAddr)>, Box<PeerBuf>);

impl OneshotOutputTransform for Accepted {
    type Output = AcceptOutput;
    type StoredData = AcceptData;

    fn transform_oneshot_output(self, data: AcceptData, cqe: cqueue::Entry) -> AcceptOutput {
        let fd = cqe.result();
        if fd < 0 {
            return (Err(io::Error::from_raw_os_error(-fd)), data.peer);
        }
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let stream = unsafe { OwnedFd::from_raw_fd(fd) };
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
fn submit(listener: &Rc<TcpListener>, mut peer: Box<PeerBuf>) -> AcceptOp {
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

/// A completed accept, with the buffer its address was written into: hand the buffer back to
/// [`Accepts::succeeded`] or [`Accepts::failed`].
pub(crate) struct Completed {
    /// The accepted socket and its peer, or why the accept failed.
    pub(crate) result: io::Result<(OwnedFd, SocketAddr)>,
    /// The address buffer, for the next accept.
    pub(crate) buf: Box<PeerBuf>,
}

/// The shard's accepts: [`IN_FLIGHT`] operations polled by the shard's loop itself (they are
/// few, and this spares each accept a task of its own: an allocation, a push and a wake
/// through a queue), the address buffers of those waiting out a backoff, and the backoff.
pub(crate) struct Accepts {
    ctx: Rc<ShardCtx>,
    listener: Rc<TcpListener>,
    ops: [Option<AcceptOp>; IN_FLIGHT],
    // Boxed on purpose: each buffer goes back into an accept, which needs it at a stable
    // heap address.
    #[allow(clippy::vec_box)]
    parked: Vec<Box<PeerBuf>>,
    /// When the parked accepts resume; boxed, as it is rare.
    resume: Option<Pin<Box<tokio::time::Sleep>>>,
    backoff: Duration,
    error_log: LogLimit,
}

impl Accepts {
    /// Submits [`IN_FLIGHT`] accepts on `listener`.
    pub(crate) fn start(ctx: Rc<ShardCtx>, listener: TcpListener) -> Self {
        let mut accepts = Self {
            ctx,
            listener: Rc::new(listener),
            ops: Default::default(),
            parked: Vec::new(),
            resume: None,
            backoff: BACKOFF_MIN,
            error_log: LogLimit::new(Duration::from_secs(1)),
        };
        for _ in 0..IN_FLIGHT {
            accepts.submit(PeerBuf::new());
        }
        accepts
    }

    /// Submits an accept into a free place (there is one: each accept that ends frees its
    /// place before its buffer comes back).
    fn submit(&mut self, peer: Box<PeerBuf>) {
        let free = self.ops.iter_mut().find(|op| op.is_none());
        debug_assert!(free.is_some(), "more accepts than places");
        if let Some(free) = free {
            *free = Some(submit(&self.listener, peer));
        }
    }

    /// The first accept that has completed, if any, or `None` once no accept is left (the
    /// server stopped and every accept has ended). Resumes the parked accepts first once
    /// their backoff is over, so that a steady stream of completions cannot keep them
    /// waiting beyond it (or, when the server is stopping, lets them go).
    pub(crate) fn poll_accepted(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completed>> {
        if let Some(resume) = &mut self.resume
            && resume.as_mut().poll(cx).is_ready()
        {
            self.resume = None;
            let stopping = self.ctx.shared.is_stopping();
            while let Some(peer) = self.parked.pop() {
                if !stopping {
                    self.submit(peer);
                }
            }
        }
        for place in &mut self.ops {
            if let Some(op) = place
                && let Poll::Ready((result, buf)) = Pin::new(op).poll(cx)
            {
                *place = None;
                return Poll::Ready(Some(Completed { result, buf }));
            }
        }
        if self.ops.iter().all(Option::is_none) && self.parked.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// After an accept gave a connection: the next accept goes in at once (unless the server
    /// is stopping), and the backoff starts over.
    pub(crate) fn succeeded(&mut self, buf: Box<PeerBuf>, stopping: bool) {
        if !stopping {
            self.submit(buf);
        }
        self.backoff = BACKOFF_MIN;
    }

    /// A connection just accepted, unless a spare of the server was lost while out of
    /// descriptors (see [`FdBudget::shed_with_spare`](crate::fd_budget::FdBudget)) and no
    /// descriptor is free to take it again: then the connection holds the descriptor the
    /// spare is missing, so it is closed at once (refused) and the spare taken in its place.
    /// Whichever accept of whichever shard took the freed number, its client is answered
    /// promptly, and the server gets its spare back instead of being left with none.
    pub(crate) fn reclaim_spare(&mut self, socket: OwnedFd) -> Option<OwnedFd> {
        let descriptors = &self.ctx.shared.descriptors;
        if !descriptors.spare_missing() || !descriptors.restore_spare() {
            return Some(socket);
        }
        drop(socket); // closes the descriptor at once
        ShardCounters::bump(&self.ctx.counters().refused);
        descriptors.restore_spare();
        None
    }

    /// After an accept failed while the server was running: retries at once when the error
    /// was one waiting connection's; otherwise parks the accept until a backoff is over
    /// (retrying at once would spin), shedding the waiting clients first when the process
    /// is out of descriptors.
    pub(crate) fn failed(&mut self, err: &io::Error, buf: Box<PeerBuf>) {
        let ctx = &self.ctx;
        ShardCounters::bump(&ctx.counters().accept_errors);
        if is_client_side(err) {
            // The client's connection failed before it was accepted: the next one waiting
            // is unaffected.
            tracing::debug!(shard = ctx.index, error = %err, "accept: connection lost");
            self.submit(buf);
            return;
        }
        if let Some(suppressed) = self.error_log.allow() {
            tracing::warn!(shard = ctx.index, error = %err, suppressed, "accept failed");
        }
        if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            ctx.shared.descriptors.shed_with_spare(|| shed(ctx, &self.listener));
        }
        self.parked.push(buf);
        if self.resume.is_none() {
            self.resume = Some(Box::pin(tokio::time::sleep(self.backoff)));
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Errors of one waiting connection rather than of the listener (accept(2): "already-pending
/// network errors", a connection aborted or refused by a firewall rule, an interrupted call):
/// the next accept may succeed at once.
pub(crate) fn is_client_side(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EAGAIN
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// Out of descriptors, with a spare just freed: accepts and closes what waits in the
/// backlog (at most 64), so those clients see a prompt close instead of hanging until their
/// connect times out.
fn shed(ctx: &ShardCtx, listener: &TcpListener) {
    let mut shed = 0u32;
    while shed < 64 {
        // SAFETY: a non-blocking accept on our own listening socket; the peer address is not
        // asked for (null pointers are allowed).
        let conn = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if conn < 0 {
            break;
        }
        // SAFETY: `conn` was just returned by accept4 and is ours alone.
        unsafe { libc::close(conn) };
        ShardCounters::bump(&ctx.counters().refused);
        shed += 1;
    }
    if shed > 0 {
        tracing::debug!(
            shard = ctx.index,
            shed,
            "out of descriptors: closed waiting clients"
        );
    }
}
