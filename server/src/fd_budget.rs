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
//! count (a handler's own), which `crate::accept` sheds with a spare per shard.
//!
//! The count is one atomic for the whole server, taken when a connection is accepted and
//! given back when its socket closes: a shard-local share would refuse on one shard while
//! another still had room.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::accept::IN_FLIGHT;

/// Descriptors each shard uses besides its connections: its listener and the duplicate
/// that stopping shuts down, its ring, its tokio runtime's epoll instance and waker, and its
/// spare, with room for one or two more.
const PER_SHARD: u64 = 8;
/// The metrics endpoint's listener and its few concurrent connections.
const METRICS: u64 = 8;
/// Whatever else the process opens while serving (a log file, a `/proc` read, a library).
const SLACK: u64 = 16;

/// The descriptors a server keeps for itself: `open` already open at start-up, plus what
/// `shards` shards and the metrics endpoint use, plus the accepts in flight (each may hold a
/// descriptor beyond the budget before its shard sees it).
pub(crate) fn reserve(open: u64, shards: usize) -> u64 {
    open + shards as u64 * (PER_SHARD + IN_FLIGHT as u64) + METRICS + SLACK
}

/// How many connections the server may hold at once, and how many it holds.
#[derive(Debug)]
pub(crate) struct FdBudget {
    capacity: u64,
    open: CachePadded<AtomicU64>,
}

impl FdBudget {
    /// A budget of `capacity` connections.
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            capacity,
            open: CachePadded::new(AtomicU64::new(0)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_capacity_then_refuses_until_one_is_given_back() {
        let budget = FdBudget::new(2);
        assert!(budget.try_take());
        assert!(budget.try_take());
        assert!(!budget.try_take());
        assert!(!budget.try_take());
        budget.give_back();
        assert!(budget.try_take());
        assert!(!budget.try_take());
    }
}
