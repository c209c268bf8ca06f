//! The pool's state under its lock: the [`Book`] that makes every decision, the connections
//! by the book's entry ids, the pool's clock origin and its random source.
//!
//! Kept apart from the public surface in `mod.rs` (bb8's split), and the decisions apart
//! from the connections (`decide`, shared with the simulator), so this file only moves
//! connections in and out as the book decides: an entry's connection is here exactly while
//! the book holds it idle; a leased one lives in its `Lease`; an evicted one is handed back
//! to be closed outside the lock.

use std::collections::HashMap;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::decide::{Admission, Book, Left};
use super::policy::PoolPolicy;
use super::{Offer, ServerKey};

/// Everything the pool lock guards.
pub(super) struct Inner<C> {
    pub(super) book: Book,
    /// By entry id: the connection while idle; `None` while leased or unused.
    conns: Vec<Option<C>>,
    /// The book's time origin: its nanoseconds count from here.
    epoch: Instant,
    /// Random tie-breaks and lifetimes.
    rng: SmallRng,
}

impl<C> Inner<C> {
    pub(super) fn new(policy: &PoolPolicy) -> Self {
        Self {
            book: Book::new(policy),
            conns: Vec::new(),
            epoch: Instant::now(),
            rng: policy
                .seed
                .map_or_else(SmallRng::from_os_rng, SmallRng::seed_from_u64),
        }
    }

    /// Nanoseconds from the pool's epoch to `at` (0 before it, saturating far after).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The connection of entry `id`, taken out (`None` if it has none).
    fn take(&mut self, id: u32) -> Option<C> {
        self.conns.get_mut(id as usize).and_then(Option::take)
    }

    fn put(&mut self, id: u32, conn: C) {
        let i = id as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.conns[i] = Some(conn);
    }

    /// The connection of a connection that left the pool, if it was idle (to close now).
    fn left(&mut self, left: Left) -> Option<C> {
        if left.was_idle {
            self.take(left.id)
        } else {
            None
        }
    }

    /// Offers `conn` with `slot` from `server`, as the book decides.
    pub(super) fn offer(&mut self, server: Option<ServerKey>, slot: u32, conn: C) -> Offer<C> {
        let now = self.nanos(Instant::now());
        let server = server.map(|s| s.0);
        match self.book.offer(server, slot, now, &mut self.rng) {
            Admission::Kept { id } => {
                self.put(id, conn);
                Offer::Kept
            }
            Admission::Replaced { id, evicted } => {
                // Before the newcomer: it may take the evicted idle entry's id.
                let gone = self.left(evicted);
                self.put(id, conn);
                Offer::Replaced {
                    evicted_slot: evicted.slot,
                    evicted: gone,
                }
            }
            Admission::Refused => Offer::Rejected(conn),
        }
    }

    /// Takes held entry `id` out of the pool: its connection if idle, or `None` if leased
    /// (closed when its lease ends).
    pub(super) fn evict(&mut self, id: u32) -> Option<C> {
        let left = self.book.evict(id);
        self.left(left)
    }

    /// Leases the best idle connection, as the book decides; returns `(id, slot,
    /// connection)`.
    pub(super) fn take_best(&mut self) -> Option<(u32, u32, C)> {
        let id = self.book.lease(&mut self.rng)?;
        let conn = self.take(id)?;
        Some((id, self.book.slot(id), conn))
    }

    /// The idle connection of entry `id`, if any (for liveness checks).
    pub(super) fn idle_conn(&self, id: u32) -> Option<&C> {
        self.conns.get(id as usize).and_then(Option::as_ref)
    }

    /// Forgets entry `id` (its connection is gone).
    pub(super) fn release(&mut self, id: u32) {
        self.book.release(id);
        drop(self.take(id));
    }

    /// Takes back a leased connection after `held_for`, when the policy keeps response-time
    /// averages. Hands it back to the caller (to close outside the lock) when it was evicted
    /// meanwhile.
    pub(super) fn restore(
        &mut self,
        id: u32,
        conn: C,
        held_for: Option<Duration>,
    ) -> Result<(), C> {
        let sample = held_for.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        if self.book.give_back(id, sample) {
            self.put(id, conn);
            Ok(())
        } else {
            Err(conn)
        }
    }

    /// Takes every held connection to `server` out of the pool: idle ones are handed back
    /// (to close outside the lock), leased ones close when their lease ends. Returns how
    /// many left the pool.
    pub(super) fn evict_server(&mut self, server: ServerKey, closing: &mut Vec<C>) -> usize {
        let Self { book, conns, .. } = self;
        book.evict_server(server.0, |left| {
            if left.was_idle {
                closing.extend(conns.get_mut(left.id as usize).and_then(Option::take));
            }
        })
    }

    /// How many expired connections newcomers replaced since the last call.
    pub(super) fn retired(&mut self) -> usize {
        self.book.retired()
    }

    /// The slots of the held connections, lowest first.
    pub(super) fn held_slots(&self) -> Vec<u32> {
        let mut slots: Vec<u32> = self.book.held().map(|id| self.book.slot(id)).collect();
        slots.sort_unstable();
        slots
    }

    /// The held connections per known server.
    pub(super) fn held_per_server(&self) -> HashMap<ServerKey, usize> {
        let mut counts = HashMap::new();
        for id in self.book.held() {
            if let Some(server) = self.book.server(id) {
                *counts.entry(ServerKey(server)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The response-time averages of the held connections in seconds, as `(slot, average)`
    /// sorted (tests).
    #[cfg(test)]
    pub(super) fn ewmas(&self) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = self
            .book
            .held()
            .map(|id| (self.book.slot(id), self.book.ewma(id) / 1e9))
            .collect();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        all
    }

    /// The kept mean of the averages against one summed now (tests).
    #[cfg(test)]
    pub(super) fn mean_drift(&self) -> f64 {
        self.book.mean_drift()
    }

    /// The idle entries as `(server, slot)` (tests).
    #[cfg(test)]
    pub(super) fn idle_entries(&self) -> Vec<(Option<ServerKey>, u32)> {
        (0..self.book.capacity() as u32)
            .filter(|&id| self.book.is_idle(id))
            .map(|id| (self.book.server(id).map(ServerKey), self.book.slot(id)))
            .collect()
    }

    /// The held entries (idle and leased) as `(server, slot)` (tests).
    #[cfg(test)]
    pub(super) fn held_entries(&self) -> Vec<(Option<ServerKey>, u32)> {
        self.book
            .held()
            .map(|id| (self.book.server(id).map(ServerKey), self.book.slot(id)))
            .collect()
    }

    /// This pool's leases per server (tests).
    #[cfg(test)]
    pub(super) fn leases_at(&self, server: ServerKey) -> u32 {
        self.book.leases_at(server.0)
    }
}
