//! The simulator's schedules: a monotone radix heap of request completions, the rovers'
//! periodic schedule, and the few control events (a server joins or leaves).
//!
//! Why this shape: the simulator processes hundreds of millions of events per run and the
//! priority queue was its hot spot, so:
//! - completions go into a radix heap keyed by integer nanoseconds: a discrete-event
//!   simulation never schedules before the current time, which is exactly the radix heap's
//!   precondition, and push and pop then cost O(1) amortised instead of O(log n) (an entry is
//!   12 bytes, no pointer, and the bucket vectors are reused for the whole run);
//! - rovers all fire with one period at fixed phases, so a [`Periodic`] schedule walks them
//!   in phase order with no heap at all;
//! - joins and leaves are a handful of events, a sorted list ([`Controls`]).
//!
//! Determinism: every structure here is a deterministic function of the sequence of calls,
//! so the run is deterministic for a fixed seed; equal times pop in a fixed (if arbitrary)
//! order.

/// A min-priority queue of `(time, id)` for keys that never go below the last popped key.
#[derive(Debug)]
pub struct EventQueue {
    buckets: Vec<Vec<(u64, u32)>>,
    last: u64,
    len: usize,
    peeked: Option<u64>,
}

impl Default for EventQueue {
    fn default() -> Self {
        Self {
            buckets: (0..65).map(|_| Vec::new()).collect(),
            last: 0,
            len: 0,
            peeked: None,
        }
    }
}

impl EventQueue {
    #[inline]
    fn bucket(&self, key: u64) -> usize {
        (64 - (key ^ self.last).leading_zeros()) as usize
    }

    /// Number of events queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `id` at `time` nanoseconds; `time` must not be before the last popped time
    /// (it is clamped to it).
    #[inline]
    pub fn push(&mut self, time: u64, id: u32) {
        debug_assert!(time >= self.last, "scheduled in the past");
        let time = time.max(self.last);
        let b = self.bucket(time);
        self.buckets[b].push((time, id));
        self.len += 1;
        if let Some(p) = self.peeked {
            self.peeked = Some(p.min(time));
        }
    }

    /// The time of the earliest event, `u64::MAX` if none.
    #[inline]
    pub fn next_time(&mut self) -> u64 {
        if !self.buckets[0].is_empty() {
            return self.last;
        }
        if let Some(p) = self.peeked {
            return p;
        }
        let t = self
            .buckets
            .iter()
            .find(|b| !b.is_empty())
            .and_then(|b| b.iter().map(|e| e.0).min())
            .unwrap_or(u64::MAX);
        self.peeked = Some(t);
        t
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<(u64, u32)> {
        if self.buckets[0].is_empty() {
            let i = self.buckets.iter().position(|b| !b.is_empty())?;
            let moving = std::mem::take(&mut self.buckets[i]);
            self.last = moving.iter().map(|e| e.0).min().unwrap_or(self.last);
            for &(t, id) in &moving {
                let b = self.bucket(t);
                self.buckets[b].push((t, id));
            }
            // Give the (now empty) vector back, keeping its capacity.
            let mut moving = moving;
            moving.clear();
            self.buckets[i] = moving;
        }
        self.peeked = None;
        self.len -= 1;
        self.buckets[0].pop()
    }
}

/// What a control event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The server joins the cluster.
    Join,
    /// The server leaves (drains) or crashes.
    Leave,
}

/// The rare control events, in time order.
#[derive(Debug, Default)]
pub struct Controls {
    events: Vec<(u64, Kind, u32)>,
    next: usize,
}

impl Controls {
    /// The schedule of `(time, kind, server)` events.
    pub fn new(mut events: Vec<(u64, Kind, u32)>) -> Self {
        events.sort_unstable();
        Self { events, next: 0 }
    }

    /// When the next one fires, `u64::MAX` if none.
    pub fn next_time(&self) -> u64 {
        self.events.get(self.next).map_or(u64::MAX, |e| e.0)
    }

    /// The event firing now; moves on.
    pub fn pop(&mut self) -> Option<(Kind, u32)> {
        let &(_, kind, server) = self.events.get(self.next)?;
        self.next += 1;
        Some((kind, server))
    }
}

/// Members (ids) that each fire once per `period`, at a fixed phase within it, in time
/// order: the rovers' schedule. Equal phases fire in id order.
#[derive(Debug)]
pub struct Periodic {
    order: Vec<(u64, u32)>,
    next: usize,
    base: u64,
    period: u64,
}

impl Periodic {
    /// A schedule of `(phase, id)` pairs (phases below `period`, nanoseconds).
    pub fn new(mut order: Vec<(u64, u32)>, period: u64) -> Self {
        order.sort_unstable();
        Self {
            order,
            next: 0,
            base: 0,
            period: period.max(1),
        }
    }

    /// When the next member fires, `u64::MAX` if there is none.
    pub fn next_time(&self) -> u64 {
        self.order
            .get(self.next)
            .map_or(u64::MAX, |&(phase, _)| self.base + phase)
    }

    /// The member firing now; moves on to the next one.
    pub fn pop(&mut self) -> Option<u32> {
        let &(_, id) = self.order.get(self.next)?;
        self.next += 1;
        if self.next == self.order.len() {
            self.next = 0;
            self.base += self.period;
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn radix_heap_pops_in_time_order() {
        let mut q = EventQueue::default();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut now = 0u64;
        let mut popped = Vec::new();
        for i in 0..10_000u32 {
            q.push(now + rng.random_range(0..1_000_000), i);
            if i % 3 == 0 {
                let t = q.next_time();
                let (pt, _) = q.pop().unwrap_or((u64::MAX, 0));
                assert_eq!(t, pt);
                assert!(pt >= now);
                now = pt;
                popped.push(pt);
            }
        }
        while let Some((t, _)) = q.pop() {
            popped.push(t);
        }
        assert_eq!(popped.len(), 10_000);
        assert!(popped.windows(2).all(|w| w[0] <= w[1]));
        assert!(q.is_empty());
        assert_eq!(q.next_time(), u64::MAX);
    }

    #[test]
    fn periodic_fires_in_phase_order_every_period() {
        let mut p = Periodic::new(vec![(30, 0), (10, 1), (10, 2)], 100);
        let mut fired = Vec::new();
        for _ in 0..4 {
            let t = p.next_time();
            fired.push((t, p.pop().unwrap_or(u32::MAX)));
        }
        assert_eq!(fired, vec![(10, 1), (10, 2), (30, 0), (110, 1)]);
        assert_eq!(Periodic::new(Vec::new(), 5).next_time(), u64::MAX);
    }

    #[test]
    fn controls_in_time_order() {
        let mut c = Controls::new(vec![(5, Kind::Leave, 1), (2, Kind::Join, 3)]);
        assert_eq!(c.next_time(), 2);
        assert_eq!(c.pop(), Some((Kind::Join, 3)));
        assert_eq!(c.pop(), Some((Kind::Leave, 1)));
        assert_eq!(c.next_time(), u64::MAX);
    }
}
