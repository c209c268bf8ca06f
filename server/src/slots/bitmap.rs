//! The lock-free, lowest-first slot allocator: a hierarchical bitmap of `AtomicU64` words.
//!
//! # Layout
//! Level 0 holds one bit per slot (set = taken). Every level above summarises the one below
//! with one bit per word (set = that word is full), up to a single top word, so `acquire`
//! walks from the top to the lowest non-full leaf word in `levels` loads (4 for 2^24 slots)
//! and claims its lowest clear bit with one `fetch_or`: the cost does not grow with the number of
//! slots held. Bits that stand for nothing (past `capacity`) are set from the start; every
//! other word starts zeroed, from a zeroed allocation the OS commits only as pages are first
//! written, so memory grows with the high-water mark, not the capacity ([`Slots::new`]).
//!
//! # Invariant
//! Summary bits are hints kept by a set-then-recheck protocol:
//! - whoever sees a word become full (its own CAS filled it, or a descent found it full) sets
//!   the word's bit in its parent, then re-reads the word and clears the bit again if the
//!   word is no longer full;
//! - whoever takes a word out of full (a release whose `fetch_and` saw it full) clears the
//!   word's bit in its parent, and so on upwards while a parent stops being full.
//!
//! All summary updates are `AcqRel` read-modify-writes, so of a concurrent "set + recheck"
//! and "un-fill + clear" on the same word, either the recheck sees the un-fill or the clear
//! comes after the set: once operations have returned, a full bit never hides a free slot.
//! A stale *clear* bit (a word filled after its bit was cleared) is harmless: a descent that
//! reaches a full word repairs its parent bit and starts again.
//!
//! # Guarantees
//! - An `acquire` that overlaps no other operation returns exactly the lowest free slot.
//! - Concurrent calls never hand one slot to two holders: a slot is taken by the one
//!   `fetch_or` that set its bit, and given back by the one `fetch_and` that cleared it.
//! - A slot whose `release` returned before an `acquire` started is visible to that
//!   `acquire`: it may return it, or a lower free slot, or a slot freed concurrently.
//! - `None` means every leaf word was full when the allocator read it (a final scan of the
//!   leaves confirms what the summaries say before giving up).
//!
//! Linearization points: the leaf `fetch_or` that set the bit (`acquire`), the leaf `fetch_and`
//! (`release`), and the last leaf read of the confirming scan (`acquire` returning `None`).

use crossbeam_utils::{Backoff, CachePadded};

use super::sync::{AtomicU64, Ordering, spin};
use super::{SlotError, SlotSource};

const WORD_BITS: usize = 64;
const FULL: u64 = u64::MAX;

/// The default [`SlotSource`]: the lowest free slot in `0..capacity`, lock-free.
///
/// The design and the exact concurrency guarantee are in the documentation of its source,
/// `server/src/slots/bitmap.rs`.
pub struct Slots {
    /// `levels[0]` is one bit per slot; `levels[k]` has one bit per word of `levels[k - 1]`;
    /// the last level is a single word.
    levels: Box<[Box<[AtomicU64]>]>,
    capacity: u32,
    /// One past the highest slot ever handed out: with lowest-first allocation, the peak
    /// number of slots held at once.
    high_water: CachePadded<AtomicU64>,
}

impl Slots {
    /// An allocator of the slots `0..capacity`, all free; any `u32` capacity is accepted.
    ///
    /// Memory grows with use: the words are allocated zeroed (all free), which the operating
    /// system hands out as untouched pages and commits only when a page is first written,
    /// and only the last word of each level (the bits that stand for no slot) is written
    /// here. Lowest-first allocation touches the leaves in order, so a server commits one
    /// 4 KiB page of leaves per 32,768 slots of its high-water mark (plus one page of the
    /// level above per 2^21 slots); `capacity / 8` bytes of address space are reserved
    /// (512 MiB for `u32::MAX`), which needs the kernel to allow overcommitting that much.
    pub fn new(capacity: u32) -> Self {
        let slots = capacity as usize;
        let mut levels = Vec::new();
        // Level 0: only the last leaf word can have bits past `capacity` (all of it when the
        // capacity is 0), and they are set so they are never handed out.
        let mut words = slots.div_ceil(WORD_BITS).max(1);
        let mut last = padding_bits(slots, (words - 1) * WORD_BITS);
        loop {
            levels.push(zeroed_but_last(words, last));
            if words == 1 {
                break;
            }
            // The level above: a bit per word below, set when that word is full or does not
            // exist. Only the last word below can be full, so again only the last word above
            // can have bits set.
            let below = words;
            words = below.div_ceil(WORD_BITS);
            let first = (words - 1) * WORD_BITS;
            last = (0..WORD_BITS).fold(0u64, |acc, b| {
                let child = first + b;
                let full = child >= below || (child == below - 1 && last == FULL);
                acc | (u64::from(full) << b)
            });
        }
        Self {
            levels: levels.into_boxed_slice(),
            capacity,
            high_water: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The number of slots managed: slots are `0..capacity`.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes the lowest free slot, or `None` when all `capacity` slots are held.
    pub fn acquire(&self) -> Option<u32> {
        let top = self.levels.len() - 1;
        let backoff = Backoff::new();
        'descend: loop {
            // Walk the summaries down to the lowest leaf word that is not marked full.
            let mut idx = 0;
            for level in (1..=top).rev() {
                // Acquire: pairs with the AcqRel summary updates, so the word read below is at
                // least as new as the summary that led here.
                let word = self.levels[level][idx].load(Ordering::Acquire);
                if word == FULL {
                    if level == top {
                        if self.confirm_exhausted() {
                            return None;
                        }
                    } else {
                        // Our parent's bit said "not full" but the word is: repair and retry.
                        self.mark_full(level, idx);
                    }
                    spin(&backoff);
                    continue 'descend;
                }
                idx = idx * WORD_BITS + (!word).trailing_zeros() as usize;
            }

            let leaf = &self.levels[0][idx];
            // Relaxed: only a guess for the fetch_or below, which validates it.
            let mut word = leaf.load(Ordering::Relaxed);
            loop {
                if word == FULL {
                    if top == 0 {
                        return None; // a single leaf word: no summary to repair or scan
                    }
                    self.mark_full(0, idx);
                    spin(&backoff);
                    continue 'descend;
                }
                let bit = !word & word.wrapping_add(1); // lowest clear bit
                // fetch_or, not CAS: a change to *other* bits of the word (a concurrent
                // release) does not make the claim fail; only losing this very bit does.
                // Acquire: pairs with the Release of the `release` that freed this slot, so
                // its previous holder's work (shutting the socket down) happens-before ours;
                // Release: orders this claim before our summary update in `mark_full`.
                let prev = leaf.fetch_or(bit, Ordering::AcqRel);
                if prev & bit != 0 {
                    word = prev; // lost the race for this bit: retry on the fresh value
                    spin(&backoff);
                    continue;
                }
                if prev | bit == FULL && top > 0 {
                    self.mark_full(0, idx);
                }
                let slot = (idx * WORD_BITS) as u32 + bit.trailing_zeros();
                self.note_high_water(slot);
                return Some(slot);
            }
        }
    }

    /// Frees `slot`. Releasing a slot that is not held is an error and changes nothing.
    pub fn release(&self, slot: u32) -> Result<(), SlotError> {
        if slot >= self.capacity {
            return Err(SlotError::OutOfRange {
                slot,
                capacity: self.capacity,
            });
        }
        let idx = slot as usize / WORD_BITS;
        let bit = 1u64 << (slot as usize % WORD_BITS);
        // Release: publishes the holder's work to the next `acquire` of this slot (see above);
        // Acquire: the summary clear below must not be reordered before this un-fill.
        let prev = self.levels[0][idx].fetch_and(!bit, Ordering::AcqRel);
        if prev & bit == 0 {
            return Err(SlotError::NotAllocated { slot });
        }
        if prev == FULL && self.levels.len() > 1 {
            self.clear_full(0, idx);
        }
        Ok(())
    }

    /// The number of slots held now (a snapshot: exact when no call is in flight). Costs one
    /// pass over the leaf words below the high-water mark.
    pub fn in_use(&self) -> u32 {
        let words = (self.high_water() as usize).div_ceil(WORD_BITS);
        let held: u32 = self.levels[0][..words]
            .iter()
            // Relaxed: a statistic; no other memory is read on the strength of it.
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum();
        let padding = if words == self.levels[0].len() {
            padding_bits(self.capacity as usize, (words - 1) * WORD_BITS).count_ones()
        } else {
            0
        };
        held - padding
    }

    /// The most slots ever held at once: one past the highest slot ever handed out.
    pub fn high_water(&self) -> u32 {
        // Relaxed: a statistic, monotonic on its own.
        self.high_water.load(Ordering::Relaxed) as u32
    }

    fn note_high_water(&self, slot: u32) {
        let mark = u64::from(slot) + 1;
        // Relaxed: a statistic; the load keeps the common case (not a new peak) write-free.
        if mark > self.high_water.load(Ordering::Relaxed) {
            self.high_water.fetch_max(mark, Ordering::Relaxed);
        }
    }

    /// Word `idx` of `level` was seen full: set its bit in the parent (and upwards while
    /// parents fill), then recheck the word and undo if it stopped being full meanwhile.
    fn mark_full(&self, level: usize, idx: usize) {
        let parent = &self.levels[level + 1][idx / WORD_BITS];
        let bit = 1u64 << (idx % WORD_BITS);
        // AcqRel: a summary RMW; see the module doc for the set-then-recheck argument.
        let prev = parent.fetch_or(bit, Ordering::AcqRel);
        if prev != FULL && prev | bit == FULL && level + 2 < self.levels.len() {
            self.mark_full(level + 1, idx / WORD_BITS);
        }
        // Acquire: must read the word after the set above (sees any un-fill ordered before it).
        if self.levels[level][idx].load(Ordering::Acquire) != FULL {
            self.clear_full(level, idx);
        }
    }

    /// Word `idx` of `level` stopped being full: clear its bit in the parent, and upwards while
    /// a parent stops being full.
    fn clear_full(&self, level: usize, idx: usize) {
        let parent = &self.levels[level + 1][idx / WORD_BITS];
        let bit = 1u64 << (idx % WORD_BITS);
        // AcqRel: a summary RMW; see the module doc for the set-then-recheck argument.
        let prev = parent.fetch_and(!bit, Ordering::AcqRel);
        if prev == FULL && level + 2 < self.levels.len() {
            self.clear_full(level + 1, idx / WORD_BITS);
        }
    }

    /// The summaries say every slot is taken: confirm it against the leaves, repairing the
    /// summary of any leaf word found not full (a concurrent mark that has not rechecked yet).
    fn confirm_exhausted(&self) -> bool {
        let mut exhausted = true;
        for (idx, leaf) in self.levels[0].iter().enumerate() {
            // Acquire: pairs with the Release of a concurrent `release`.
            if leaf.load(Ordering::Acquire) != FULL {
                self.clear_full(0, idx);
                exhausted = false;
            }
        }
        exhausted
    }
}

impl SlotSource for Slots {
    fn acquire(&self) -> Option<u32> {
        Slots::acquire(self)
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        Slots::release(self, slot)
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("capacity", &self.capacity)
            .field("high_water", &self.high_water())
            .finish_non_exhaustive()
    }
}

/// The bits of the leaf word starting at slot `first` that stand for no slot (`>= slots`).
fn padding_bits(slots: usize, first: usize) -> u64 {
    match slots.saturating_sub(first) {
        0 => FULL,
        n if n >= WORD_BITS => 0,
        n => FULL << n,
    }
}

/// `words` atomics, all zero but the last, which is `last`.
fn zeroed_but_last(words: usize, last: u64) -> Box<[AtomicU64]> {
    let level = zeroed(words);
    // Relaxed: nothing else can see the allocator while it is built.
    level[words - 1].store(last, Ordering::Relaxed);
    level
}

/// `len` (at least 1) zeroed atomics from the allocator's zeroed allocation, which leaves a
/// large block's pages untouched (the kernel maps them zeroed on first use) instead of
/// writing every word.
#[cfg(not(loom))]
fn zeroed(len: usize) -> Box<[AtomicU64]> {
    use std::alloc::{Layout, alloc_zeroed, handle_alloc_error};
    let layout = Layout::array::<AtomicU64>(len).expect("at most 2^26 words");
    // SAFETY: `layout` has a non-zero size (`len` >= 1).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<AtomicU64>();
    if ptr.is_null() {
        handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is a fresh allocation of `len` `AtomicU64`s with the global allocator's
    // layout for them, which `Box` frees with the same layout; all-zero bytes are a valid
    // `AtomicU64` (it has the in-memory representation of a `u64`).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

/// Loom's atomics are not plain memory: built one by one (loom models are small).
#[cfg(loom)]
fn zeroed(len: usize) -> Box<[AtomicU64]> {
    (0..len).map(|_| AtomicU64::new(0)).collect()
}

#[cfg(all(test, not(loom)))]
mod tests;
