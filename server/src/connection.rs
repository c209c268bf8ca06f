//! One accepted connection with its slot, and the shard-local state its life is tied to.
//!
//! The invariant this module keeps: **a slot is freed only after its connection is shut
//! down**. In tokio-uring, dropping a future does not cancel its in-flight operation, and the
//! operation keeps its own handle on the socket until the kernel completes it; so a handler
//! that is aborted or panics mid-read can leave its socket open after the handler is gone.
//! `Connection`'s `Drop` therefore first calls `shutdown(SHUT_RDWR)` (the peer sees the close
//! at once and any pending operation completes), then the socket handle drops (closing the
//! descriptor unless an operation still holds it), and only then does the slot guard, the
//! last field, release the slot. Every exit path (return, panic, abort, shard shutdown) goes
//! through this one `Drop`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use tokio_uring::net::TcpStream;

use crate::shared::Shared;
use crate::slots::{SlotError, SlotGuard, SlotSource};
use crate::stats::ShardCounters;

/// A connection handed to a [`Handler`](crate::Handler): its socket, its slot, its peer.
pub struct Connection {
    // Field order is drop order: the socket closes before the slot guard releases. Shared so
    // that an operation the server submits itself can keep the descriptor open until the
    // kernel is done with it, as tokio-uring's own operations do.
    stream: Rc<TcpStream>,
    peer: SocketAddr,
    slot: SlotGuard<Rc<ShardCtx>>,
    /// Set only by the server's own handlers, at a point where they know no operation on the
    /// socket is in flight: then closing the descriptor closes the socket, and the shutdown
    /// system call can be skipped.
    io_settled: bool,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, slot: SlotGuard<Rc<ShardCtx>>) -> Self {
        slot.source().open(stream.as_raw_fd());
        Self {
            stream: Rc::new(stream),
            peer,
            slot,
            io_settled: false,
        }
    }

    /// Records that every operation on the socket has completed (the caller awaited each one
    /// to the end), so dropping the stream closes the socket at once.
    pub(crate) fn settle_io(&mut self) {
        self.io_settled = true;
    }

    /// The socket (tokio-uring: reads and writes take owned buffers).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket, shared with the operations the server submits on it.
    pub(crate) fn shared_stream(&self) -> &Rc<TcpStream> {
        &self.stream
    }

    /// The slot the connection was given (and sent as its slot line).
    pub fn slot(&self) -> u32 {
        self.slot.slot()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The index of the shard (thread) serving the connection.
    pub fn shard(&self) -> usize {
        self.slot.source().index
    }

    pub(crate) fn shard_ctx(&self) -> &ShardCtx {
        self.slot.source()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let fd = self.stream.as_raw_fd();
        if !self.io_settled {
            // SAFETY: `fd` is the open socket owned by `self.stream`, which is still alive. An
            // error (the peer reset it already, ENOTCONN) leaves nothing to shut down.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        self.slot.source().close(fd);
        // Then `stream` drops (closing the descriptor) and `slot` releases the slot.
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("slot", &self.slot())
            .field("peer", &self.peer)
            .field("fd", &self.stream.as_raw_fd())
            .finish()
    }
}

/// A shard's own state: its counters, the set of its open connections (to shut them down
/// when a drain times out) and its view of the shared slot source.
pub(crate) struct ShardCtx {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    open: RefCell<FdSet>,
}

impl ShardCtx {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> Self {
        Self {
            index,
            shared,
            open: RefCell::default(),
        }
    }

    pub(crate) fn counters(&self) -> &ShardCounters {
        &self.shared.counters.shards[self.index]
    }

    pub(crate) fn open(&self, fd: RawFd) {
        self.open.borrow_mut().insert(fd);
    }

    /// The connection on `fd` is closing (its descriptor closes right after this call, or
    /// once the kernel completes an operation still holding it, which the budget's slack
    /// covers): it leaves the open set and gives its descriptor back to the budget.
    pub(crate) fn close(&self, fd: RawFd) {
        self.open.borrow_mut().remove(fd);
        ShardCounters::bump(&self.counters().closed);
        self.shared.descriptors.give_back();
    }

    /// Shuts down every open connection of this shard: their handlers see EOF or an error and
    /// end, and their slots are freed as they do.
    pub(crate) fn shut_down_all(&self) {
        for fd in self.open.borrow().iter() {
            // SAFETY: a descriptor in the set belongs to a live `Connection`, which removes it
            // before its socket closes, so `fd` is an open socket of ours.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

impl SlotSource for ShardCtx {
    fn acquire(&self) -> Option<u32> {
        let slot = self.shared.slots.acquire()?;
        self.shared.counters.note_slot(slot);
        Some(slot)
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        self.shared.slots.release(slot)
    }
}

/// A set of descriptor numbers as a bitmap: descriptors are small dense integers, so this is
/// a few KiB for tens of thousands of connections and O(1) to update.
#[derive(Default)]
struct FdSet {
    words: Vec<u64>,
}

impl FdSet {
    fn insert(&mut self, fd: RawFd) {
        let (word, bit) = (fd as usize / 64, fd as usize % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    fn remove(&mut self, fd: RawFd) {
        if let Some(w) = self.words.get_mut(fd as usize / 64) {
            *w &= !(1 << (fd as usize % 64));
        }
    }

    fn iter(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| (i * 64 + b) as RawFd)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FdSet;

    #[test]
    fn fd_set_tracks_members() {
        let mut set = FdSet::default();
        for fd in [3, 64, 65, 1000] {
            set.insert(fd);
        }
        set.remove(64);
        set.remove(5000);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![3, 65, 1000]);
    }
}
