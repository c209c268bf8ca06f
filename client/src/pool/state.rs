//! The pool's state under its lock: a slab of entries and the two heaps of entry ids, with
//! the few transitions the pool makes (insert, evict, take the lowest, restore, release).
//!
//! Kept apart from the public surface in `mod.rs` (bb8's split) so the invariants live in
//! one place: an entry is in `held` while it counts toward `max_slots`, and in `idle` exactly
//! when its connection is in the slab (not leased); an evicted leased entry is in neither and
//! is released when its lease ends.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::heap::{IndexedHeap, Order};

/// Everything the pool lock guards.
pub(super) struct Inner<C> {
    pub(super) entries: Vec<Entry<C>>,
    /// Ids of unused entries.
    free: Vec<u32>,
    /// Idle connections, lowest key on top.
    pub(super) idle: IndexedHeap,
    /// Held connections (idle and leased, evicted ones excluded), highest key on top.
    pub(super) held: IndexedHeap,
    /// Arrival counter: the deterministic tie-break. It wraps after 2^32 offers, which can
    /// only swap the order of two connections with the same slot once.
    arrivals: u32,
    /// Present when the policy asks for random tie-breaks.
    rng: Option<SmallRng>,
}

/// One held connection (or an unused slab place).
pub(super) struct Entry<C> {
    slot: u32,
    key: u64,
    /// The connection while idle; `None` while leased or unused.
    pub(super) conn: Option<C>,
    /// Replaced while leased: close it when the lease ends.
    evicted: bool,
}

/// The slot in a heap key's high half.
#[inline]
pub(super) fn slot_of(key: u64) -> u32 {
    (key >> 32) as u32
}

impl<C> Inner<C> {
    pub(super) fn new(random_tie_break: bool) -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            idle: IndexedHeap::new(Order::Min),
            held: IndexedHeap::new(Order::Max),
            arrivals: 0,
            rng: random_tie_break.then(SmallRng::from_os_rng),
        }
    }

    fn key(&mut self, slot: u32) -> u64 {
        let tie = match self.rng.as_mut() {
            Some(rng) => rng.next_u32(),
            None => {
                self.arrivals = self.arrivals.wrapping_add(1);
                self.arrivals
            }
        };
        (u64::from(slot) << 32) | u64::from(tie)
    }

    pub(super) fn insert(&mut self, slot: u32, conn: C) {
        let key = self.key(slot);
        let entry = Entry {
            slot,
            key,
            conn: Some(conn),
            evicted: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                // `validate` bounds max_slots below u32::MAX and entries never exceed
                // max_slots plus the evicted leases, so ids fit.
                let id = self.entries.len() as u32;
                self.entries.push(entry);
                id
            }
        };
        self.idle.push(key, id);
        self.held.push(key, id);
    }

    /// Takes the held connection `id` out of the pool for a newcomer: its connection if
    /// idle, or `None` if leased (flagged to close on return).
    pub(super) fn evict(&mut self, id: u32) -> Option<C> {
        self.held.remove(id);
        if self.idle.remove(id) {
            let conn = self.entries[id as usize].conn.take();
            self.free.push(id);
            conn
        } else {
            self.entries[id as usize].evicted = true;
            None
        }
    }

    /// Pops the lowest idle connection, leaving its entry held but empty.
    pub(super) fn take_lowest(&mut self) -> Option<(u32, u32, C)> {
        let (_, id) = self.idle.pop()?;
        let entry = &mut self.entries[id as usize];
        let conn = entry.conn.take()?;
        Some((id, entry.slot, conn))
    }

    /// Forgets entry `id` (its connection is gone): it stops counting and is reused.
    pub(super) fn release(&mut self, id: u32) {
        self.held.remove(id);
        let entry = &mut self.entries[id as usize];
        entry.conn = None;
        entry.evicted = false;
        self.free.push(id);
    }

    /// Takes back a leased connection. Hands it back to the caller (to close outside the
    /// lock) when it was evicted meanwhile.
    pub(super) fn restore(&mut self, id: u32, conn: C) -> Result<(), C> {
        let entry = &mut self.entries[id as usize];
        if entry.evicted {
            self.release(id);
            return Err(conn);
        }
        entry.conn = Some(conn);
        let key = entry.key;
        self.idle.push(key, id);
        Ok(())
    }
}
