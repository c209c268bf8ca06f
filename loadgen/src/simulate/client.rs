//! The simulated clients: each holds a pool of at most `max_slots` connections ranked by slot,
//! a FIFO of requests waiting for an idle connection, and the per-client state the baselines
//! need (a round-robin cursor, outstanding requests per server for P2C).
//!
//! Why this shape: a pool holds at most a handful of connections, so "lowest-slot idle" and
//! "highest slot" are a linear scan of a fixed-size slice, which is what the real client's two
//! heaps compute, and faster than heaps at this size. Connections live in a slab with a free
//! list (struct-of-arrays), so opening and closing one allocates nothing once warm. A
//! connection replaced while leased leaves the pool but stays open (its slot held) until its
//! request completes, as in the real pool.

use std::collections::VecDeque;

use rand::Rng;
use rand::rngs::SmallRng;

use super::policy::PoolRules;

/// Sentinel for "no connection".
pub const NO_CONN: u32 = u32::MAX;

/// Every open connection, indexed by connection id.
#[derive(Debug, Default)]
pub struct Conns {
    /// Server the connection is open to.
    pub server: Vec<u32>,
    /// Slot the server assigned it.
    pub slot: Vec<u32>,
    /// Whether a request is using it.
    pub leased: Vec<bool>,
    /// Whether it is still in its client's pool (false: replaced or retired while leased,
    /// closes when returned).
    pub in_pool: Vec<bool>,
    /// When it retires, in simulated nanoseconds (`u64::MAX`: never).
    pub expires: Vec<u64>,
    free: Vec<u32>,
}

impl Conns {
    /// Records a new open connection and returns its id.
    pub fn open(&mut self, server: u32, slot: u32, expires: u64) -> u32 {
        if let Some(id) = self.free.pop() {
            let i = id as usize;
            self.server[i] = server;
            self.slot[i] = slot;
            self.leased[i] = false;
            self.in_pool[i] = true;
            self.expires[i] = expires;
            id
        } else {
            self.server.push(server);
            self.slot.push(slot);
            self.leased.push(false);
            self.in_pool.push(true);
            self.expires.push(expires);
            self.server.len() as u32 - 1
        }
    }

    /// Forgets a closed connection (its slot must already be released).
    pub fn close(&mut self, id: u32) {
        self.free.push(id);
    }
}

/// Every client's pool, waiting requests and baseline state, indexed by client id.
#[derive(Debug)]
pub struct Clients {
    /// Pool capacity (`max_slots`).
    pub max_slots: usize,
    /// Pool entries: client `c` owns `entries[c*max_slots ..][.. len[c]]` (connection ids).
    entries: Vec<u32>,
    len: Vec<u8>,
    /// Requests waiting for an idle connection, per client (request ids).
    pub waiting: Vec<VecDeque<u32>>,
    /// Round-robin position per client (an index into the active server list).
    pub cursor: Vec<u32>,
    /// Outstanding requests per (client, server), for P2C; empty for other policies.
    pub outstanding: Vec<u16>,
}

impl Clients {
    /// `n` clients with pools of `max_slots`; `p2c_servers` > 0 allocates P2C's counters.
    pub fn new(n: usize, max_slots: usize, p2c_servers: usize) -> Self {
        Self {
            max_slots,
            entries: vec![NO_CONN; n * max_slots],
            len: vec![0; n],
            waiting: (0..n).map(|_| VecDeque::new()).collect(),
            cursor: vec![0; n],
            outstanding: vec![0; n * p2c_servers],
        }
    }

    /// The connections in client `c`'s pool.
    pub fn pool(&self, c: usize) -> &[u32] {
        let base = c * self.max_slots;
        &self.entries[base..base + self.len[c] as usize]
    }

    /// Whether client `c`'s pool is full.
    pub fn is_full(&self, c: usize) -> bool {
        self.len[c] as usize >= self.max_slots
    }

    /// Adds connection `id` to client `c`'s pool (which must not be full).
    pub fn add(&mut self, c: usize, id: u32) {
        let l = self.len[c] as usize;
        debug_assert!(l < self.max_slots);
        self.entries[c * self.max_slots + l] = id;
        self.len[c] += 1;
    }

    /// Removes the entry at `index` of client `c`'s pool (order is not preserved).
    pub fn remove_at(&mut self, c: usize, index: usize) {
        let base = c * self.max_slots;
        let last = self.len[c] as usize - 1;
        self.entries[base + index] = self.entries[base + last];
        self.entries[base + last] = NO_CONN;
        self.len[c] -= 1;
    }

    /// The lowest-slot idle connection of client `c`'s pool, or `None` if every one is leased.
    /// Equal slots: lower server id first (original), or uniformly at random.
    pub fn lowest_idle(
        &self,
        c: usize,
        conns: &Conns,
        rules: &PoolRules,
        rng: &mut SmallRng,
    ) -> Option<u32> {
        let mut best = NO_CONN;
        let mut best_key = (u32::MAX, u32::MAX);
        let mut ties = 0u32;
        for &id in self.pool(c) {
            let i = id as usize;
            if conns.leased[i] {
                continue;
            }
            let key = (conns.slot[i], conns.server[i]);
            if rules.random_ties {
                if best == NO_CONN || key.0 < best_key.0 {
                    best = id;
                    best_key = key;
                    ties = 1;
                } else if key.0 == best_key.0 {
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = id;
                    }
                }
            } else if best == NO_CONN || key < best_key {
                best = id;
                best_key = key;
            }
        }
        (best != NO_CONN).then_some(best)
    }

    /// The highest-slot entry of client `c`'s (non-empty) pool as `(index, connection)`.
    /// Equal slots: higher server id first (original), or uniformly at random.
    pub fn worst(
        &self,
        c: usize,
        conns: &Conns,
        rules: &PoolRules,
        rng: &mut SmallRng,
    ) -> (usize, u32) {
        let pool = self.pool(c);
        let mut best = 0usize;
        let mut ties = 1u32;
        for (k, &id) in pool.iter().enumerate().skip(1) {
            let i = id as usize;
            let b = pool[best] as usize;
            if rules.random_ties {
                if conns.slot[i] > conns.slot[b] {
                    best = k;
                    ties = 1;
                } else if conns.slot[i] == conns.slot[b] {
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = k;
                    }
                }
            } else if (conns.slot[i], conns.server[i]) > (conns.slot[b], conns.server[b]) {
                best = k;
            }
        }
        (best, pool[best])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn leases_lowest_idle_and_finds_worst_with_server_id_ties() {
        let mut conns = Conns::default();
        let mut clients = Clients::new(1, 4, 0);
        let mut rng = SmallRng::seed_from_u64(1);
        let rules = PoolRules::ORIGINAL;
        for (server, slot) in [(2, 5), (1, 3), (0, 3), (3, 9)] {
            let id = conns.open(server, slot, u64::MAX);
            clients.add(0, id);
        }
        assert!(clients.is_full(0));
        let first = clients.lowest_idle(0, &conns, &rules, &mut rng);
        assert_eq!(first.map(|id| conns.server[id as usize]), Some(0));
        conns.leased[first.unwrap_or(0) as usize] = true;
        let second = clients.lowest_idle(0, &conns, &rules, &mut rng);
        assert_eq!(second.map(|id| conns.server[id as usize]), Some(1));
        let (index, id) = clients.worst(0, &conns, &rules, &mut rng);
        assert_eq!((conns.server[id as usize], conns.slot[id as usize]), (3, 9));
        clients.remove_at(0, index);
        assert_eq!(clients.pool(0).len(), 3);
        assert!(
            clients
                .pool(0)
                .iter()
                .all(|&i| conns.server[i as usize] != 3)
        );
    }
}
