//! Baseline slot allocators for the benchmarks, behind the same [`SlotSource`] trait as ours.
//!
//! `HeapSlots` is the design of the original JavaScript and Java libraries (and of the tokio
//! reference server): a mutex around a min-heap of freed slots plus a next-slot counter.
//! `BTreeSlots` is a mutex around the ordered set of free slots below a next counter.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Mutex;

use callosum_server::{SlotError, SlotSource};

/// `Mutex<BinaryHeap<Reverse<u32>>>` of freed slots plus a next-slot counter.
#[derive(Debug, Default)]
pub struct HeapSlots {
    inner: Mutex<HeapInner>,
}

#[derive(Debug, Default)]
struct HeapInner {
    free: BinaryHeap<Reverse<u32>>,
    next: u32,
}

impl SlotSource for HeapSlots {
    fn acquire(&self) -> Option<u32> {
        let mut inner = self.inner.lock().expect("baseline lock poisoned");
        if let Some(Reverse(slot)) = inner.free.pop() {
            return Some(slot);
        }
        let slot = inner.next;
        inner.next = inner.next.checked_add(1)?;
        Some(slot)
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        // Like the original, it does not check for double release: that is its design.
        self.inner
            .lock()
            .expect("baseline lock poisoned")
            .free
            .push(Reverse(slot));
        Ok(())
    }
}

/// `Mutex<BTreeSet<u32>>` of freed slots below a next-slot counter.
#[derive(Debug, Default)]
pub struct BTreeSlots {
    inner: Mutex<BTreeInner>,
}

#[derive(Debug, Default)]
struct BTreeInner {
    free: BTreeSet<u32>,
    next: u32,
}

impl SlotSource for BTreeSlots {
    fn acquire(&self) -> Option<u32> {
        let mut inner = self.inner.lock().expect("baseline lock poisoned");
        if let Some(slot) = inner.free.pop_first() {
            return Some(slot);
        }
        let slot = inner.next;
        inner.next = inner.next.checked_add(1)?;
        Some(slot)
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        let mut inner = self.inner.lock().expect("baseline lock poisoned");
        if slot >= inner.next || !inner.free.insert(slot) {
            return Err(SlotError::NotAllocated { slot });
        }
        Ok(())
    }
}
