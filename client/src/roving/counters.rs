//! The roving client's event counts: plain atomics behind [`Counters`] snapshots, each
//! event also sent to the `metrics` facade (see [`observe`](crate::observe)) so the two
//! never disagree: one call records both.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::observe;

/// Event counts since the client started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Leases handed out (`acquire` and `try_acquire`).
    pub leases: u64,
    /// Connections the pool kept (replacements included).
    pub kept: u64,
    /// Connections the pool refused (slot not better than its worst).
    pub rejected: u64,
    /// Connections evicted: by a lower-slot newcomer, or because their server left the set.
    pub evicted: u64,
    /// Connections retired past their maximum age (improved policy).
    pub retired: u64,
    /// Failed connects.
    pub unreachable: u64,
    /// Handshake violations (malformed line, early close, handshake timeout).
    pub protocol_errors: u64,
}

/// What happened, for [`AtomicCounters::add`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    Leased,
    Kept,
    Rejected,
    Evicted,
    Retired,
    Unreachable,
    ProtocolError,
}

#[derive(Debug, Default)]
pub(super) struct AtomicCounters {
    leases: AtomicU64,
    kept: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    retired: AtomicU64,
    unreachable: AtomicU64,
    protocol_errors: AtomicU64,
}

impl AtomicCounters {
    /// Counts `n` events (none is a no-op).
    pub(super) fn add(&self, event: Event, n: u64) {
        if n == 0 {
            return;
        }
        let (counter, name) = match event {
            Event::Leased => (&self.leases, observe::LEASES),
            Event::Kept => (&self.kept, observe::KEPT),
            Event::Rejected => (&self.rejected, observe::REJECTED),
            Event::Evicted => (&self.evicted, observe::EVICTED),
            Event::Retired => (&self.retired, observe::RETIRED),
            Event::Unreachable => (&self.unreachable, observe::UNREACHABLE),
            Event::ProtocolError => (&self.protocol_errors, observe::PROTOCOL_ERRORS),
        };
        // Relaxed: independent statistics; no other memory is published through them.
        counter.fetch_add(n, Ordering::Relaxed);
        observe::count(name, n);
    }

    pub(super) fn snapshot(&self) -> Counters {
        // Relaxed: a statistics snapshot, each value read on its own.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            leases: get(&self.leases),
            kept: get(&self.kept),
            rejected: get(&self.rejected),
            evicted: get(&self.evicted),
            retired: get(&self.retired),
            unreachable: get(&self.unreachable),
            protocol_errors: get(&self.protocol_errors),
        }
    }
}
