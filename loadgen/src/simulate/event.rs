//! The event queue of the simulator: a binary min-heap of small `Copy` events ordered by
//! simulated time with a sequence-number tiebreak.
//!
//! Why this shape: the simulator processes hundreds of millions of events per run, so an event
//! is 24 bytes with no pointer and no allocation, and the heap's backing vector is reused for the
//! whole run. Time is integer nanoseconds (no float comparison in the ordering), and every push
//! takes the next sequence number, so two events at the same instant pop in the order they were
//! scheduled: the run is deterministic for a fixed seed whatever the heap's internal layout.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What an event does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A request finishes service: `a` is the server, `b` the request.
    Complete,
    /// A client's rover probes a server: `a` is the client.
    Rove,
    /// A server joins the cluster: `a` is the server.
    Join,
    /// A server leaves (drains) or crashes: `a` is the server.
    Leave,
}

/// One scheduled event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    /// When it fires, in simulated nanoseconds.
    pub time: u64,
    /// Scheduling order, unique: the tiebreak that makes equal times deterministic.
    pub seq: u64,
    /// What it does.
    pub kind: Kind,
    /// First operand (see [`Kind`]).
    pub a: u32,
    /// Second operand (see [`Kind`]).
    pub b: u32,
}

/// A min-heap of events by `(time, seq)`.
#[derive(Debug, Default)]
pub struct EventQueue {
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
}

impl EventQueue {
    /// An empty queue with room for `capacity` events before it reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity),
            seq: 0,
        }
    }

    /// Schedules `kind(a, b)` at `time` nanoseconds.
    pub fn push(&mut self, time: u64, kind: Kind, a: u32, b: u32) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            time,
            seq: self.seq,
            kind,
            a,
            b,
        }));
    }

    /// The time of the earliest event, `u64::MAX` if none.
    pub fn next_time(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |e| e.0.time)
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<Event> {
        self.heap.pop().map(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_scheduling_order() {
        let mut q = EventQueue::with_capacity(4);
        q.push(20, Kind::Rove, 1, 0);
        q.push(10, Kind::Rove, 2, 0);
        q.push(10, Kind::Complete, 3, 0);
        assert_eq!(q.next_time(), 10);
        let order: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|e| e.a).collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert_eq!(q.next_time(), u64::MAX);
    }
}
