//! The slot-uniqueness invariant, checked live: two connections open at the same time on the
//! same target must never hold the same slot.
//!
//! One registry per target, shared by every worker (a per-worker set could not see a duplicate
//! across workers). Slots below [`TRACKED_SLOTS`] live in a bitmap of `AtomicU64` (128 KiB): one
//! `fetch_or` when a slot line is read, one `fetch_and` just before the connection is closed, so
//! the check costs two uncontended-in-the-common-case atomics per handshake. Higher slots, rare
//! in practice, go to a mutex-protected set. A slot is marked from the moment its line is read
//! until just before its socket closes: while marked, the server cannot have freed it, so a
//! second holder is a real violation (the check can miss one in the instant between unmark and
//! close, but never reports a false one). In a hold every slot stays marked until the end, so
//! every duplicate among held connections is seen; in a churn a slot is marked only from its
//! line being read to its close, a short window, so the check there catches only overlaps that
//! happen to fall in it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots tracked in the bitmap; higher ones go to the overflow set.
pub const TRACKED_SLOTS: u32 = 1 << 20;

/// Violations kept as examples for the report.
const MAX_EXAMPLES: usize = 16;

/// The slots currently held on one target.
#[derive(Debug)]
pub struct SlotRegistry {
    words: Box<[AtomicU64]>,
    overflow: Mutex<HashSet<u32, ahash::RandomState>>,
    violations: AtomicU64,
    examples: Mutex<Vec<u32>>,
}

impl Default for SlotRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            words: (0..TRACKED_SLOTS / 64).map(|_| AtomicU64::new(0)).collect(),
            overflow: Mutex::new(HashSet::default()),
            violations: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
        }
    }

    /// Marks `slot` as held. Returns false, and counts a violation, if it already was: then
    /// the caller must not [`release`](Self::release) it (the first holder will).
    pub fn acquire(&self, slot: u32) -> bool {
        let fresh = if slot < TRACKED_SLOTS {
            let bit = 1u64 << (slot % 64);
            // Relaxed: the bit is the whole state; no other memory is published through it.
            self.words[(slot / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
        } else {
            self.overflow
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(slot)
        };
        if !fresh {
            // Relaxed: a statistic, read after the workers have been joined.
            self.violations.fetch_add(1, Ordering::Relaxed);
            let mut ex = self.examples.lock().unwrap_or_else(|p| p.into_inner());
            if ex.len() < MAX_EXAMPLES {
                ex.push(slot);
            }
            tracing::error!(
                slot,
                "slot invariant violated: two open connections hold slot {slot}"
            );
        }
        fresh
    }

    /// Unmarks `slot`; call just before closing the connection that held it.
    pub fn release(&self, slot: u32) {
        if slot < TRACKED_SLOTS {
            // Relaxed: as in `acquire`, the bit carries no other data.
            self.words[(slot / 64) as usize].fetch_and(!(1u64 << (slot % 64)), Ordering::Relaxed);
        } else {
            self.overflow
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&slot);
        }
    }

    /// Violations seen so far.
    pub fn violations(&self) -> u64 {
        // Relaxed: a statistic.
        self.violations.load(Ordering::Relaxed)
    }

    /// Up to 16 slots that were seen held twice.
    pub fn examples(&self) -> Vec<u32> {
        self.examples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_held_twice_is_a_violation_and_release_frees_it() {
        let r = SlotRegistry::new();
        assert!(r.acquire(3));
        assert!(r.acquire(64));
        assert!(!r.acquire(3));
        assert_eq!(r.violations(), 1);
        assert_eq!(r.examples(), vec![3]);
        r.release(3);
        assert!(r.acquire(3));
        assert_eq!(r.violations(), 1);
    }

    #[test]
    fn high_slots_use_the_overflow_set() {
        let r = SlotRegistry::new();
        assert!(r.acquire(u32::MAX));
        assert!(!r.acquire(u32::MAX));
        r.release(u32::MAX);
        assert!(r.acquire(u32::MAX));
        assert_eq!(r.violations(), 1);
    }
}
