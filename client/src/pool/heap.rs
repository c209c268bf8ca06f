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

    /// The top `(key, id)`, without removing it.
    pub(crate) fn peek(&self) -> Option<(u64, u32)> {
        self.items.first().copied()
    }

    /// Whether `id` is in the heap.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.pos.get(id as usize).is_some_and(|&p| p != ABSENT)
    }

    /// Iterates over the keys in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.items.iter().copied()
    }

    /// Adds `id` with `key`. The caller guarantees `id` is not already in the heap.
    pub(crate) fn push(&mut self, key: u64, id: u32) {
        debug_assert!(!self.contains(id), "id {id} pushed twice");
        let idx = id as usize;
        if self.pos.len() <= idx {
            self.pos.resize(idx + 1, ABSENT);
        }
        let at = self.items.len();
        self.items.push((key, id));
        self.pos[idx] = at as u32;
        self.sift_up(at);
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

    /// `a` belongs above `b`.
    #[inline]
    fn above(&self, a: u64, b: u64) -> bool {
        match self.order {
            Order::Min => a < b,
            Order::Max => a > b,
        }
    }

    fn remove_at(&mut self, at: usize) {
        let last = self.items.len() - 1;
        self.items.swap(at, last);
        if let Some((_, gone)) = self.items.pop() {
            self.pos[gone as usize] = ABSENT;
        }
        if at < last {
            let id = self.items[at].1;
            self.pos[id as usize] = at as u32;
            // The moved item may belong above or below its new place.
            let at = self.sift_up(at);
            self.sift_down(at);
        }
    }

    /// Moves the item at `at` up to its place; returns where it ended.
    fn sift_up(&mut self, mut at: usize) -> usize {
        let item = self.items[at];
        while at > 0 {
            let parent = (at - 1) / ARITY;
            let above = self.items[parent];
            if !self.above(item.0, above.0) {
                break;
            }
            self.items[at] = above;
            self.pos[above.1 as usize] = at as u32;
            at = parent;
        }
        self.items[at] = item;
        self.pos[item.1 as usize] = at as u32;
        at
    }

    /// Moves the item at `at` down to its place.
    fn sift_down(&mut self, mut at: usize) {
        let len = self.items.len();
        let item = self.items[at];
        loop {
            let first = ARITY * at + 1;
            if first >= len {
                break;
            }
            // The child that belongs highest.
            let mut child = first;
            for c in first + 1..(first + ARITY).min(len) {
                if self.above(self.items[c].0, self.items[child].0) {
                    child = c;
                }
            }
            let below = self.items[child];
            if !self.above(below.0, item.0) {
                break;
            }
            self.items[at] = below;
            self.pos[below.1 as usize] = at as u32;
            at = child;
        }
        self.items[at] = item;
        self.pos[item.1 as usize] = at as u32;
    }
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
