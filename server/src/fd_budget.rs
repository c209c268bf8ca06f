//! The server's descriptor budget: how many connections its descriptor limit can hold, and
//! how many it holds now.
//!
//! Running out of descriptors must never be the normal way a busy server says no. When
//! `accept` fails with `EMFILE`, the client stays in the backlog: it gets neither a slot
//! line nor a close, and a spare descriptor freed to shed it races with every other thread
//! of the process (the other shards' ring accepts, the metrics endpoint) for the number it
//! frees. So the server computes at start-up how many connections fit:
//! `RLIMIT_NOFILE` minus a reserve for its own descriptors (those open at start-up, each
//! shard's listener, ring, runtime and spare, the accepts each shard keeps in flight, the
//! metrics endpoint and some slack), and treats a connection beyond that like a connection
//! beyond `max_slots`: accepted, and closed at once without a slot line, while a descriptor
//! is still free to accept it with. `EMFILE` is then left to descriptors the server does not
//! count (a handler's own), which `crate::accept` sheds with the server's spares.
//!
//! The count is one atomic for the whole server, taken when a connection is accepted and
//! given back when its socket closes: a shard-local share would refuse on one shard while
//! another still had room.
//!
//! The spares are descriptors held in reserve, one per shard, in one pool: out of
//! descriptors, a shard frees one, accepts and closes the clients waiting in its backlog,
//! and takes the spare again. Another thread may take the freed number first (a pending
//! accept of any shard, which the kernel runs as a system call returns), and the spare
//! cannot come back; the pool then counts it missing, and the next connection any shard
//! accepts while no descriptor is free holds one a spare lacks: it is closed at once and
//! the spare taken again ([`FdBudget::restore_spare`]). The shedding is tried on every `EMFILE`, spare or not.
//! What no spare can do is shed with no descriptor free at all (every spare lost, every
//! other descriptor held by handlers): shedding resumes once one frees. (Accepting into an
//! io_uring direct descriptor, outside the descriptor table, would close that gap.)

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;


/// Descriptors each shard uses besides its connections: its listener and the duplicate
/// that stopping shuts down, its ring, its tokio runtime's epoll instance and waker, and its
/// spare, with room for one or two more.
const PER_SHARD: u64 = 8;
/// The metrics endpoint's listener and its few concurrent connections.
const METRICS: u64 = 8;
/// Whatever else the process opens while serving (a log file, a `/proc` read, a library).
const SLACK: u64 = 16;

/// The descriptors a server keeps for itself: `open` already open at start-up, plus what
/// `shards` shards and the metrics endpoint use, plus the `accepts_per_shard` accepts in flight
/// (each may hold a descriptor beyond the budget before its shard sees it).
pub(crate) fn reserve(open: u64, shards: usize, accepts_per_shard: usize) -> u64 {
    open + shards as u64 * (PER_SHARD + accepts_per_shard as u64) + METRICS + SLACK
}

/// How many connections the server may hold at once, how many it holds, and its spares.
#[derive(Debug)]
pub(crate) struct FdBudget {
    capacity: u64,
    open: CachePadded<AtomicU64>,
    spares: Mutex<Vec<OwnedFd>>,
    /// Spares freed to shed that could not be taken again.
    missing: AtomicUsize,
}

impl FdBudget {
    /// A budget of `capacity` connections, with `spares` spare descriptors.
    pub(crate) fn new(capacity: u64, spares: usize) -> Self {
        Self {
            capacity,
            open: CachePadded::new(AtomicU64::new(0)),
            spares: Mutex::new((0..spares).filter_map(|_| open_spare()).collect()),
            missing: AtomicUsize::new(0),
        }
    }

    /// The number of connections that fit.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Counts a freshly accepted connection; `false` (and nothing counted) when the budget
    /// is spent and the connection must be closed at once.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        // Relaxed: the count bounds a resource and publishes no other memory; the RMW alone
        // makes concurrent takes see each other.
        if self.open.fetch_add(1, Ordering::Relaxed) < self.capacity {
            return true;
        }
        self.give_back();
        false
    }

    /// Gives back what [`try_take`](Self::try_take) counted, when the connection's socket
    /// closes.
    #[inline]
    pub(crate) fn give_back(&self) {
        // Relaxed: as in `try_take`.
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FdBudget {
    /// Out of descriptors: frees a spare (if the pool has one), runs `shed` (which accepts
    /// and closes waiting clients), then takes the spare again, or counts it missing.
    /// Shards shed one at a time, so they do not take each other's freed spares.
    pub(crate) fn shed_with_spare(&self, shed: impl FnOnce()) {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        let freed = spares.pop().is_some();
        shed();
        if freed {
            match open_spare() {
                Some(spare) => spares.push(spare),
                // Relaxed: a hint read by `spare_missing`; the pool itself is under the lock.
                None => _ = self.missing.fetch_add(1, Ordering::Relaxed),
            }
        }
    }

    /// Whether a spare is missing: the caller then calls
    /// [`restore_spare`](Self::restore_spare), and if no descriptor was free, closes the
    /// connection it just accepted and calls it again. One read of a line that is written
    /// only when out of descriptors.
    #[inline]
    pub(crate) fn spare_missing(&self) -> bool {
        // Relaxed: a hint; `restore_spare` rechecks under the lock.
        self.missing.load(Ordering::Relaxed) > 0
    }

    /// Takes a missing spare again (after the caller closed a descriptor for it, or first
    /// in case one is free anyway); returns whether one was missing and is still.
    pub(crate) fn restore_spare(&self) -> bool {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: changed only under the lock.
        if self.missing.load(Ordering::Relaxed) == 0 {
            return false; // another shard restored it
        }
        let Some(spare) = open_spare() else {
            return true;
        };
        spares.push(spare);
        self.missing.fetch_sub(1, Ordering::Relaxed);
        false
    }
}

/// A spare: an eventfd, a descriptor that needs no file system (a container may lack
/// /dev/null).
fn open_spare() -> Option<OwnedFd> {
    // SAFETY: eventfd takes plain integers and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    // SAFETY: a descriptor eventfd just returned is ours alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_capacity_then_refuses_until_one_is_given_back() {
        let budget = FdBudget::new(2, 0);
        assert!(budget.try_take());
        assert!(budget.try_take());
        assert!(!budget.try_take());
        assert!(!budget.try_take());
        budget.give_back();
        assert!(budget.try_take());
        assert!(!budget.try_take());
    }
}
