//! Server counters: one cache-padded block per shard, written only by its shard, summed when
//! someone asks. A shard never does a contended read-modify-write to count.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// A snapshot of the server's counters, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted that got a slot.
    pub accepted: u64,
    /// Connections closed without a slot line because no slot was free, or the server's
    /// descriptor budget was spent (or, out of descriptors anyway, shed from the backlog).
    pub refused: u64,
    /// Connections open now (accepted, not yet closed). A connection leaves this count as its
    /// socket is shut down, a moment before its slot is freed: to know that a slot is free
    /// again, ask the slot source (`Slots::in_use`), not this count.
    pub active: u64,
    /// One past the highest slot handed out: the most connections held at once.
    pub high_water: u32,
    /// Accept calls that failed (`EMFILE`, `ENFILE`, `ENOBUFS`, aborted handshakes, …).
    pub accept_errors: u64,
    /// Accepted connections whose slot line could not be sent (peer already gone).
    pub handshake_errors: u64,
    /// Handler tasks that panicked (their connection was closed and its slot freed).
    pub handler_panics: u64,
}

/// One shard's counters. Only the owning shard writes them.
#[derive(Debug, Default)]
pub(crate) struct ShardCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) handshake_errors: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
}

impl ShardCounters {
    /// Adds one. Relaxed load + store, not `fetch_add`: the shard is the only writer, so no
    /// update can be lost, and readers only need each value to be eventually visible.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Every shard's counters plus the server-wide high-water mark.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) shards: Box<[CachePadded<ShardCounters>]>,
    high_water: CachePadded<AtomicU64>,
}

impl Counters {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| CachePadded::default()).collect(),
            high_water: CachePadded::default(),
        }
    }

    /// Records that `slot` was handed out.
    #[inline]
    pub(crate) fn note_slot(&self, slot: u32) {
        let mark = u64::from(slot) + 1;
        // Relaxed: a statistic; the plain load keeps the common case (no new peak) write-free.
        if mark > self.high_water.load(Ordering::Relaxed) {
            self.high_water.fetch_max(mark, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut stats = Stats::default();
        let mut closed = 0;
        for shard in self.shards.iter() {
            // Relaxed: statistics; a snapshot across shards is not atomic anyway.
            stats.accepted += shard.accepted.load(Ordering::Relaxed);
            stats.refused += shard.refused.load(Ordering::Relaxed);
            stats.accept_errors += shard.accept_errors.load(Ordering::Relaxed);
            stats.handshake_errors += shard.handshake_errors.load(Ordering::Relaxed);
            stats.handler_panics += shard.handler_panics.load(Ordering::Relaxed);
            closed += shard.closed.load(Ordering::Relaxed);
        }
        stats.active = stats.accepted.saturating_sub(closed);
        stats.high_water = self.high_water.load(Ordering::Relaxed) as u32;
        stats
    }
}
