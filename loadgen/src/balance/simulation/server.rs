//! The simulated servers: lowest-first slots, `k` workers with a FIFO queue, and the
//! shortest-queue index the global oracle routes by.
//!
//! Why this shape: struct-of-arrays indexed by server id, so the hot path (a request arrives,
//! a request completes) touches a few integers and never allocates once the queues have grown
//! to their working size. Slots are a per-server bitmap: the lowest free slot is the first
//! clear bit, as the real allocator in `server/src/slots/` gives with no concurrent call.

use std::collections::VecDeque;

/// Every server of the cluster, indexed by server id.
#[derive(Debug)]
pub struct Servers {
    /// Slot bitmap per server: bit `i` set means slot `i` is held by an open connection.
    slots: Vec<Vec<u64>>,
    /// Open connections per server (= slots held).
    pub conns: Vec<u32>,
    /// Requests in service per server.
    pub busy: Vec<u32>,
    /// Requests waiting for a worker, FIFO, per server (request ids).
    pub queue: Vec<VecDeque<u32>>,
    /// Service-time multiplier per server (1.0 normal, 3.0 three times slower).
    pub slowdown: Vec<f64>,
    /// Whether the server is in the cluster (reachable by rovers and routers).
    pub active: Vec<bool>,
    /// Ids of the active servers, the set rovers and baselines pick from.
    pub members: Vec<u32>,
    /// Workers per server; `u32::MAX` is unbounded (a pure delay, nothing queues).
    pub workers: u32,
    /// Shortest-queue index, maintained only for the oracle.
    pub jsq: Option<LoadIndex>,
}

impl Servers {
    /// `n` servers with `workers` workers each; `jsq` maintains the oracle's index.
    pub fn new(n: usize, workers: u32, jsq: bool) -> Self {
        Self {
            slots: vec![Vec::new(); n],
            conns: vec![0; n],
            busy: vec![0; n],
            queue: (0..n).map(|_| VecDeque::new()).collect(),
            slowdown: vec![1.0; n],
            active: vec![false; n],
            members: Vec::with_capacity(n),
            workers,
            jsq: jsq.then(|| LoadIndex::new(n)),
        }
    }

    /// Number of servers, active or not.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there is no server at all.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Requests at server `s`: queued plus in service.
    pub fn load(&self, s: usize) -> u32 {
        self.busy[s] + self.queue[s].len() as u32
    }

    /// Adds server `s` to the cluster.
    pub fn activate(&mut self, s: u32) {
        if !self.active[s as usize] {
            self.active[s as usize] = true;
            self.members.push(s);
            let load = self.load(s as usize);
            if let Some(j) = &mut self.jsq {
                j.insert(s, load);
            }
        }
    }

    /// Removes server `s` from the cluster (rovers and routers stop picking it).
    pub fn deactivate(&mut self, s: u32) {
        if self.active[s as usize] {
            self.active[s as usize] = false;
            self.members.retain(|&m| m != s);
            if let Some(j) = &mut self.jsq {
                j.remove(s);
            }
        }
    }

    /// Opens a connection on `s`: takes and returns its lowest free slot.
    pub fn acquire_slot(&mut self, s: usize) -> u32 {
        self.conns[s] += 1;
        let words = &mut self.slots[s];
        for (i, w) in words.iter_mut().enumerate() {
            if *w != u64::MAX {
                let bit = (!*w).trailing_zeros();
                *w |= 1 << bit;
                return i as u32 * 64 + bit;
            }
        }
        words.push(1);
        (words.len() as u32 - 1) * 64
    }

    /// Closes a connection on `s`: frees its slot, exactly once.
    pub fn release_slot(&mut self, s: usize, slot: u32) {
        let w = &mut self.slots[s][(slot / 64) as usize];
        let bit = 1u64 << (slot % 64);
        debug_assert!(*w & bit != 0, "slot {slot} of server {s} freed twice");
        *w &= !bit;
        self.conns[s] -= 1;
    }

    /// Counts one more request at `s` in the oracle's index.
    pub fn load_up(&mut self, s: u32) {
        if !self.active[s as usize] {
            return;
        }
        if let Some(j) = &mut self.jsq {
            j.up(s);
        }
    }

    /// Counts one request fewer at `s` in the oracle's index.
    pub fn load_down(&mut self, s: u32) {
        if !self.active[s as usize] {
            return;
        }
        if let Some(j) = &mut self.jsq {
            j.down(s);
        }
    }
}

/// Servers bucketed by load (queued + in service), so the least-loaded one is found in O(1):
/// load changes by one at a time, so the minimum moves by at most one per change.
#[derive(Debug)]
pub struct LoadIndex {
    buckets: Vec<Vec<u32>>,
    level: Vec<u32>,
    pos: Vec<u32>,
    min: usize,
    len: usize,
}

impl LoadIndex {
    fn new(n: usize) -> Self {
        Self {
            buckets: vec![Vec::new()],
            level: vec![0; n],
            pos: vec![0; n],
            min: 0,
            len: 0,
        }
    }

    fn put(&mut self, s: u32, level: u32) {
        let l = level as usize;
        if self.buckets.len() <= l {
            self.buckets.resize_with(l + 1, Vec::new);
        }
        self.level[s as usize] = level;
        self.pos[s as usize] = self.buckets[l].len() as u32;
        self.buckets[l].push(s);
        self.min = self.min.min(l);
    }

    fn take(&mut self, s: u32) -> u32 {
        let l = self.level[s as usize];
        let bucket = &mut self.buckets[l as usize];
        let p = self.pos[s as usize] as usize;
        bucket.swap_remove(p);
        if let Some(&moved) = bucket.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        l
    }

    fn insert(&mut self, s: u32, load: u32) {
        self.len += 1;
        self.put(s, load);
    }

    fn remove(&mut self, s: u32) {
        self.len -= 1;
        self.take(s);
    }

    fn up(&mut self, s: u32) {
        let l = self.take(s);
        self.put(s, l + 1);
    }

    fn down(&mut self, s: u32) {
        let l = self.take(s);
        self.put(s, l.saturating_sub(1));
    }

    /// The least-loaded servers (ties), or `None` if the index is empty.
    pub fn least_loaded(&mut self) -> Option<&[u32]> {
        if self.len == 0 {
            return None;
        }
        while self.buckets[self.min].is_empty() {
            self.min += 1;
        }
        Some(&self.buckets[self.min])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_lowest_free_first() {
        let mut s = Servers::new(1, 4, false);
        let got: Vec<u32> = (0..70).map(|_| s.acquire_slot(0)).collect();
        assert_eq!(got, (0..70).collect::<Vec<_>>());
        s.release_slot(0, 3);
        s.release_slot(0, 65);
        assert_eq!(s.acquire_slot(0), 3);
        assert_eq!(s.acquire_slot(0), 65);
        assert_eq!(s.acquire_slot(0), 70);
        assert_eq!(s.conns[0], 71);
    }

    #[test]
    fn load_index_tracks_the_minimum() {
        let mut s = Servers::new(3, 1, true);
        for i in 0..3 {
            s.activate(i);
        }
        s.load_up(0);
        s.load_up(1);
        assert_eq!(
            s.jsq.as_mut().and_then(|j| j.least_loaded()),
            Some(&[2][..])
        );
        s.load_up(2);
        s.load_up(2);
        s.load_down(0);
        assert_eq!(
            s.jsq.as_mut().and_then(|j| j.least_loaded()),
            Some(&[0][..])
        );
        s.deactivate(0);
        assert_eq!(
            s.jsq.as_mut().and_then(|j| j.least_loaded()),
            Some(&[1][..])
        );
    }
}
