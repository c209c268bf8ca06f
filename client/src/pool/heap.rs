//! A 4-ary heap of entry ids that also knows where each id sits, so any id can be removed
//! in O(log n), not just the top.
//!
//! The pool needs two views of the same connections: the idle ones by lowest slot (to
//! lease) and all held ones by highest slot (to evict). With plain `BinaryHeap`s, removing
//! an evicted connection from the other heap means lazy deletion, and stale entries of
//! evicted high slots pile up at the bottom of the min-heap. Tracking positions keeps both
//! heaps exact and bounded by what is held. The same heap orders the connections by expiry
//! time under a maximum age. Keys are `u64`s (slot in the high half, a
//! tie-break in the low half) so comparisons are single integer compares.

use smallvec::SmallVec;

/// Places kept inline.
pub(crate) const INLINE: usize = 8;

/// Children per node: a 4-ary heap is half as tall as a binary one, and its four children
/// share a cache line, so sifting touches fewer lines.
const ARITY: usize = 4;

/// Marks an id absent from the heap in the position table.
const ABSENT: u32 = u32::MAX;

/// Heap order: which key comes out on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Smallest key on top.
    Min,
    /// Largest key on top.
    Max,
}

/// A 4-ary heap of `(key, id)` with a position table indexed by id.
#[derive(Debug)]
pub(crate) struct IndexedHeap {
    order: Order,
    items: SmallVec<[(u64, u32); INLINE]>,
    /// `pos[id]`: index of `id` in `items`, or `ABSENT`.
    pos: SmallVec<[u32; INLINE]>,
}

impl IndexedHeap {
    pub(crate) fn new(order: Order) -> Self {
        Self {
            order,
            items: SmallVec::new(),
            pos: SmallVec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The stored form of `key` (its own form read back): kept as is in a min-heap,
    /// inverted in a max-heap, so that both sift as min-heaps, with one comparison and no
    /// branch on the order.
    #[inline]
    fn stored(&self, key: u64) -> u64 {
        match self.order {
            Order::Min => key,
            Order::Max => !key,
        }
    }

    /// The top `(key, id)`, without removing it.
    pub(crate) fn peek(&self) -> Option<(u64, u32)> {
        self.items.first().map(|&(key, id)| (self.stored(key), id))
    }

    /// Whether `id` is in the heap.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.pos.get(id as usize).is_some_and(|&p| p != ABSENT)
    }

    /// Iterates over the keys in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.items.iter().map(|&(key, id)| (self.stored(key), id))
    }

    /// Adds `id` with `key`. The caller guarantees `id` is not already in the heap.
    pub(crate) fn push(&mut self, key: u64, id: u32) {
        debug_assert!(!self.contains(id), "id {id} pushed twice");
        let idx = id as usize;
        if self.pos.len() <= idx {
            self.pos.resize(idx + 1, ABSENT);
        }
        let at = self.items.len();
        self.items.push((self.stored(key), id));
        sift_up(&mut self.items, &mut self.pos, at);
    }

    /// Removes and returns the top `(key, id)`.
    pub(crate) fn pop(&mut self) -> Option<(u64, u32)> {
        let top = self.peek()?;
        self.remove_at(0);
        Some(top)
    }

    /// Removes `id` if present; returns whether it was.
    pub(crate) fn remove(&mut self, id: u32) -> bool {
        match self.pos.get(id as usize) {
            Some(&p) if p != ABSENT => {
                self.remove_at(p as usize);
                true
            }
            _ => false,
        }
    }

    fn remove_at(&mut self, at: usize) {
        let last = self.items.len() - 1;
        self.items.swap(at, last);
        if let Some((_, gone)) = self.items.pop() {
            self.pos[gone as usize] = ABSENT;
        }
        if at < last {
            // The moved item may belong above or below its new place.
            let (items, pos) = (self.items.as_mut_slice(), self.pos.as_mut_slice());
            let at = sift_up(items, pos, at);
            sift_down(items, pos, at);
        }
    }
}

// The sifts work on plain slices: indexing a `SmallVec` checks whether it spilled on every
// access, and these loops are the pool's hot path.

/// Moves the item at `at` up to its place (smallest stored key on top), keeping `pos` in
/// step; returns where it ended.
fn sift_up(items: &mut [(u64, u32)], pos: &mut [u32], mut at: usize) -> usize {
    let item = items[at];
    while at > 0 {
        let parent = (at - 1) / ARITY;
        let above = items[parent];
        if item.0 >= above.0 {
            break;
        }
        place(items, pos, at, above);
        at = parent;
    }
    place(items, pos, at, item);
    at
}

/// Moves the item at `at` down to its place, keeping `pos` in step.
fn sift_down(items: &mut [(u64, u32)], pos: &mut [u32], mut at: usize) {
    let len = items.len();
    let item = items[at];
    loop {
        let first = ARITY * at + 1;
        if first >= len {
            break;
        }
        // The child that belongs highest (the first of equal ones).
        let mut child = first;
        for c in first + 1..(first + ARITY).min(len) {
            if items[c].0 < items[child].0 {
                child = c;
            }
        }
        let below = items[child];
        if below.0 >= item.0 {
            break;
        }
        place(items, pos, at, below);
        at = child;
    }
    place(items, pos, at, item);
}

/// Puts `item` at index `at` and records where its id now sits.
#[inline]
fn place(items: &mut [(u64, u32)], pos: &mut [u32], at: usize, item: (u64, u32)) {
    items[at] = item;
    pos[item.1 as usize] = at as u32;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        Pop,
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..50).prop_map(Op::Push),
            Just(Op::Pop),
            (0u32..40).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Against the simple model (an ordered set of `(key, id)`), for both orders.
        #[test]
        fn matches_an_ordered_set(ops in prop::collection::vec(op(), 0..200), max in any::<bool>()) {
            let order = if max { Order::Max } else { Order::Min };
            let mut heap = IndexedHeap::new(order);
            let mut model = BTreeSet::new();
            let mut next_id = 0u32;
            for op in ops {
                match op {
                    Op::Push(key) => {
                        heap.push(key, next_id);
                        model.insert((key, next_id));
                        next_id += 1;
                    }
                    Op::Pop => {
                        let got = heap.pop();
                        let top = if max { model.last().copied() } else { model.first().copied() };
                        // Equal keys may come out in any id order: compare keys, then drop
                        // the id the heap chose from the model.
                        prop_assert_eq!(got.map(|g| g.0), top.map(|t| t.0));
                        if let Some(g) = got {
                            prop_assert!(model.remove(&g));
                        }
                    }
                    Op::Remove(id) => {
                        let in_model = model.iter().find(|e| e.1 == id).copied();
                        prop_assert_eq!(heap.remove(id), in_model.is_some());
                        if let Some(e) = in_model {
                            model.remove(&e);
                        }
                    }
                }
                prop_assert_eq!(heap.len(), model.len());
                for &(_, id) in &model {
                    prop_assert!(heap.contains(id));
                }
            }
        }
    }
}
