//! The shard's table of held connections: connections served by [`Hold`](crate::Hold), the
//! plain Callosum server's handler, which only wait for their peer to close.
//!
//! Such a connection needs nothing but its descriptor, its slot and one pending receive; as a
//! future in the shard's `FuturesUnordered` it cost about 485 B of RSS (the task cell around
//! the future, the future itself, tokio-uring's shared descriptor). Here it is one slab entry
//! (the receive's handle, which owns the descriptor, and the slot guard) plus tokio-uring's
//! record of the operation: under a hundred bytes, so a host can hold millions.
//!
//! A completed receive must reach its entry without polling every held connection, so each
//! receive is polled with a waker of its own that carries nothing but the entry's index: waking
//! it pushes the index onto this thread's ready list and wakes the shard's loop, which then
//! polls exactly those entries. Such a waker allocates nothing and counts nothing. It is only
//! ever woken by tokio-uring's driver, on the shard's own thread, where the list is; woken on
//! another thread it would push onto that thread's list instead, which is memory-safe but
//! would lose the wake-up.
//!
//! An entry ends as a [`Connection`](crate::Connection) does, in the same order: the
//! receive has completed (so no operation is left on the socket), the descriptor leaves the
//! shard's open set and closes, and only then does the slot guard, dropped last, free the slot.
//! A drain that times out shuts the held sockets down (`ShardCtx::shut_down_all`), which
//! completes their receives.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use slab::Slab;
use tokio_uring::InFlightOneshot;

use crate::connection::ShardCtx;
use crate::discard::{self, DiscardBuf, Receive, Received, RecvTarget};
use crate::slots::SlotGuard;

/// A receive in flight on a held connection; it owns the descriptor, so the socket stays open
/// while the kernel may still write into the discard area for it.
type HeldRecv = InFlightOneshot<HeldSocket, Receive<HeldSocket>>;

/// What a held connection's receive keeps while in flight: the socket and the discard area.
struct HeldSocket {
    fd: OwnedFd,
    _area: DiscardBuf,
}

impl RecvTarget for HeldSocket {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

struct Entry {
    // Field order is drop order: the receive (and with it the socket) goes before the slot.
    recv: Option<HeldRecv>,
    /// The socket's descriptor number, owned by the receive's data.
    fd: RawFd,
    /// Frees the slot when the entry drops, last.
    _slot: SlotGuard<Rc<ShardCtx>>,
}

/// The held connections of one shard.
pub(crate) struct Held {
    ctx: Rc<ShardCtx>,
    entries: Slab<Entry>,
}

/// This thread's ready list: indices of held connections whose receive completed, and the
/// shard loop's waker to call when one is added.
#[derive(Default)]
struct Ready {
    indices: Vec<usize>,
    loop_waker: Option<Waker>,
}

thread_local! {
    static READY: RefCell<Ready> = RefCell::default();
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_entry, wake_entry, wake_entry, noop);

fn entry_waker(index: usize) -> Waker {
    // SAFETY: the vtable's functions uphold `RawWaker`'s contract: the data is a plain integer
    // (no resource to clone or free), and waking only touches the calling thread's list.
    unsafe { Waker::from_raw(RawWaker::new(index as *const (), &VTABLE)) }
}

fn clone_entry(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake_entry(data: *const ()) {
    let loop_waker = READY.with_borrow_mut(|ready| {
        ready.indices.push(data as usize);
        ready.loop_waker.take()
    });
    if let Some(waker) = loop_waker {
        waker.wake();
    }
}

fn noop(_: *const ()) {}

/// How a held connection's end was noted.
pub(crate) enum Ended {
    Closed,
    /// Freeing its slot panicked (a custom slot source): the connection is closed all the same.
    Panicked(String),
}

impl Held {
    pub(crate) fn new(ctx: Rc<ShardCtx>) -> Self {
        READY.with_borrow_mut(|ready| ready.indices.clear());
        Self {
            ctx,
            entries: Slab::new(),
        }
    }

    /// Held connections open now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes a connection whose slot line has been sent: from now on only its peer's close
    /// (or the drain's shutdown) ends it. Returns how it ended if its first receive already
    /// saw the end.
    pub(crate) fn hold(&mut self, fd: OwnedFd, slot: SlotGuard<Rc<ShardCtx>>) -> Option<Ended> {
        let raw = fd.as_raw_fd();
        self.ctx.open(raw);
        let index = self.entries.insert(Entry {
            recv: None,
            fd: raw,
            _slot: slot,
        });
        let socket = HeldSocket {
            fd,
            _area: DiscardBuf::new(),
        };
        self.receive(index, socket)
    }

    /// Submits the next receive of entry `index` and polls it once, which registers its waker
    /// (tokio-uring wakes only an operation that was polled). The poll is `Pending` in
    /// practice (tokio-uring hands completions over in its own task, not during a submit or a
    /// poll); should it be ready, the result is handled here all the same, never dropped.
    fn receive(&mut self, index: usize, mut socket: HeldSocket) -> Option<Ended> {
        let waker = entry_waker(index);
        loop {
            let mut recv = discard::submit_recv(socket);
            match Pin::new(&mut recv).poll(&mut Context::from_waker(&waker)) {
                Poll::Pending => {
                    self.entries[index].recv = Some(recv);
                    return None;
                }
                Poll::Ready((Received::Bytes(_) | Received::PollFirstRefused, again)) => {
                    socket = again;
                }
                // The receive has completed: nothing is in flight on the socket.
                Poll::Ready((Received::Eof | Received::Failed(_), last)) => {
                    return Some(self.close(index, last));
                }
            }
        }
    }

    /// Polls the held connections whose receives completed (and registers the loop's waker
    /// for the next ones); calls `ended` for each that closed.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, mut ended: impl FnMut(Ended)) {
        let ready = READY.with_borrow_mut(|ready| {
            if !ready
                .loop_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                ready.loop_waker = Some(cx.waker().clone());
            }
            std::mem::take(&mut ready.indices)
        });
        for index in ready.iter().copied() {
            let Some(entry) = self.entries.get_mut(index) else {
                continue; // a stale wake-up of an entry that ended since
            };
            let Some(recv) = entry.recv.as_mut() else {
                continue;
            };
            let waker = entry_waker(index);
            let polled = Pin::new(recv).poll(&mut Context::from_waker(&waker));
            let Poll::Ready((received, socket)) = polled else {
                continue; // woken for a completion that is not there yet, or spuriously
            };
            entry.recv = None;
            let end = match received {
                Received::Bytes(_) | Received::PollFirstRefused => self.receive(index, socket),
                // The receive has completed: nothing is in flight on the socket.
                Received::Eof | Received::Failed(_) => Some(self.close(index, socket)),
            };
            if let Some(end) = end {
                ended(end);
            }
        }
        // Give the list's capacity back, so that the next wake-up does not allocate.
        READY.with_borrow_mut(|r| {
            if r.indices.is_empty() {
                let mut ready = ready;
                ready.clear();
                r.indices = ready;
            }
        });
    }

    /// Ends entry `index`, whose receive has completed: the descriptor leaves the open set and
    /// closes, then the slot is freed.
    fn close(&mut self, index: usize, socket: HeldSocket) -> Ended {
        self.ctx.close(socket.fd.as_raw_fd());
        drop(socket);
        let entry = self.entries.remove(index);
        // The slot source is the user's code: a panic in its release closes nothing more (the
        // socket is closed already) and must not take the shard down.
        match std::panic::catch_unwind(AssertUnwindSafe(|| drop(entry))) {
            Ok(()) => Ended::Closed,
            Err(panic) => Ended::Panicked(crate::panics::panic_message(&*panic)),
        }
    }
}

impl Drop for Held {
    /// Whatever is still held when the shard ends (after the drain and its grace): shut down,
    /// so the peer sees the close at once, then dropped; the receive keeps the descriptor
    /// until the kernel completes it.
    fn drop(&mut self) {
        for (_, entry) in &self.entries {
            // SAFETY: `entry.fd` is the open socket owned by the pending receive's data (an
            // entry with no receive pending does not outlive `poll`).
            unsafe { libc::shutdown(entry.fd, libc::SHUT_RDWR) };
            self.ctx.close(entry.fd);
        }
        // Each entry's slot goes back to the user's slot source, whose panic in release must
        // neither stop the others' release nor take the shard down as it ends.
        for entry in self.entries.drain() {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(entry))) {
                let message = crate::panics::panic_message(&*panic);
                tracing::error!(%message, "slot source panicked releasing a held connection");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_entry_is_small() {
        // What each held connection costs the process, besides tokio-uring's record of its
        // receive (a slab entry of about 32 B) and the slabs' spare capacity: the receive's
        // handle with its data (40 B), the descriptor number and the slot guard.
        let size = std::mem::size_of::<Entry>();
        assert!(size <= 64, "a held entry grew to {size} B");
    }

    #[test]
    fn an_entry_waker_pushes_its_index_and_wakes_the_loop_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        READY.with_borrow_mut(|r| {
            r.indices.clear();
            r.loop_waker = Some(Waker::from(count.clone()));
        });
        let waker = entry_waker(7);
        waker.wake_by_ref();
        let clone = waker.clone();
        drop(waker);
        clone.wake();
        assert_eq!(READY.with_borrow(|r| r.indices.clone()), vec![7, 7]);
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "the loop waker is taken once");
    }
}
