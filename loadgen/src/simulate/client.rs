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

/// `Conns::pos` of a connection that is not in its client's pool (replaced or retired while
/// leased: it closes when its response arrives).
pub const NOT_IN_POOL: u8 = u8::MAX;

/// One open connection. Whether it is leased is its pool entry's idle bit (a connection out
/// of the pool is leased until its response arrives).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conn {
    /// When it retires, in simulated nanoseconds (`u64::MAX`: never).
    pub expires: u64,
    /// Server the connection is open to.
    pub server: u32,
    /// Slot the server assigned it.
    pub slot: u32,
}

/// Every open connection, indexed by connection id (a slab with a free list). The pool
/// position, which every response reads, is a separate byte array: it stays in cache where
/// the 16-byte connections would not.
#[derive(Debug, Default)]
pub struct Conns {
    /// The connections.
    pub slab: Vec<Conn>,
    /// Per connection, its index in its client's pool, or [`NOT_IN_POOL`].
    pub pos: Vec<u8>,
    free: Vec<u32>,
}

impl Conns {
    /// Records a new open connection and returns its id.
    pub fn open(&mut self, server: u32, slot: u32, expires: u64) -> u32 {
        let conn = Conn {
            expires,
            server,
            slot,
        };
        if let Some(id) = self.free.pop() {
            self.slab[id as usize] = conn;
            self.pos[id as usize] = NOT_IN_POOL;
            id
        } else {
            self.slab.push(conn);
            self.pos.push(NOT_IN_POOL);
            self.slab.len() as u32 - 1
        }
    }

    /// Whether connection `id` is in its client's pool.
    pub fn in_pool(&self, id: u32) -> bool {
        self.pos[id as usize] != NOT_IN_POOL
    }

    /// Forgets a closed connection (its slot must already be released).
    pub fn close(&mut self, id: u32) {
        self.free.push(id);
    }
}

/// The sort key of a pool entry: slot, then server id (the original's tiebreak).
#[inline]
pub fn key(slot: u32, server: u32) -> u64 {
    (slot as u64) << 32 | server as u64
}

/// Whether the entry with key `candidate` beats the current pick `current` (lower wins).
/// Original rules: the whole key, so equal slots go to the lower server id. Random ties: the
/// slot only, and the `ties`-th equal candidate wins with probability 1/`ties` (reservoir
/// sampling: each of the equal entries is picked with the same probability).
#[inline]
fn prefer(
    candidate: u64,
    current: u64,
    rules: &PoolRules,
    ties: &mut u32,
    rng: &mut SmallRng,
) -> bool {
    if !rules.random_ties {
        return candidate < current;
    }
    match (candidate >> 32).cmp(&(current >> 32)) {
        std::cmp::Ordering::Less => {
            *ties = 1;
            true
        }
        std::cmp::Ordering::Equal => {
            *ties += 1;
            rng.random_range(0..*ties) == 0
        }
        std::cmp::Ordering::Greater => false,
    }
}

/// One pool entry: its connection with the connection's sort key and response-time average
/// inline, so leasing reads the client's entries and nothing else.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// [`key`] of the connection.
    key: u64,
    /// Moving average of the connection's response time (ns; 0 until the first response).
    latency: f32,
    /// The connection id.
    conn: u32,
}

const EMPTY: Entry = Entry {
    key: 0,
    latency: 0.0,
    conn: NO_CONN,
};

/// What every request touches of its client, in one cache line.
#[derive(Clone, Debug, Default)]
#[repr(align(64))]
struct Head {
    /// Bit `k` set: pool entry `k` is idle.
    idle: u64,
    /// Requests waiting for an idle connection (request ids).
    waiting: VecDeque<u32>,
    /// Pool entries in use.
    len: u8,
}

/// Every client's pool, waiting requests and baseline state, indexed by client id.
///
/// A pool entry keeps its connection's sort key inline and the pool keeps a bitmask of its
/// idle entries, so leasing reads one contiguous run of entries and never the connection slab.
#[derive(Debug)]
pub struct Clients {
    /// Pool capacity (`max_slots`, at most 64).
    pub max_slots: usize,
    /// Pool entries: client `c` owns `entries[c*max_slots ..][.. len[c]]`.
    entries: Vec<Entry>,
    /// Per client: idle mask, pool length and waiting requests, one cache line each.
    heads: Vec<Head>,
    /// Round-robin position per client (an index into the active server list).
    pub cursor: Vec<u32>,
    /// Outstanding requests per (client, server), for P2C; empty for other policies.
    pub outstanding: Vec<u16>,
}

impl Clients {
    /// `n` clients with pools of `max_slots` (1..=64); `p2c_servers` > 0 allocates P2C's
    /// counters.
    pub fn new(n: usize, max_slots: usize, p2c_servers: usize) -> Self {
        let max_slots = max_slots.clamp(1, 64);
        Self {
            max_slots,
            entries: vec![EMPTY; n * max_slots],
            heads: vec![Head::default(); n],
            cursor: vec![0; n],
            outstanding: vec![0; n * p2c_servers],
        }
    }

    fn entries(&self, c: usize) -> &[Entry] {
        let base = c * self.max_slots;
        &self.entries[base..base + self.heads[c].len as usize]
    }

    /// Connections in client `c`'s pool.
    pub fn pool_len(&self, c: usize) -> usize {
        self.heads[c].len as usize
    }

    /// The connection at `index` of client `c`'s pool.
    pub fn conn_at(&self, c: usize, index: usize) -> u32 {
        self.entries(c)[index].conn
    }

    /// Whether the entry at `index` of client `c`'s pool is idle (not leased).
    pub fn is_idle(&self, c: usize, index: usize) -> bool {
        self.heads[c].idle >> index & 1 == 1
    }

    /// Whether requests are waiting at client `c`.
    pub fn has_waiting(&self, c: usize) -> bool {
        !self.heads[c].waiting.is_empty()
    }

    /// Queues request `r` at client `c`.
    pub fn push_waiting(&mut self, c: usize, r: u32) {
        self.heads[c].waiting.push_back(r);
    }

    /// The oldest request waiting at client `c`.
    pub fn pop_waiting(&mut self, c: usize) -> Option<u32> {
        self.heads[c].waiting.pop_front()
    }

    /// Whether client `c`'s pool is full.
    pub fn is_full(&self, c: usize) -> bool {
        self.heads[c].len as usize >= self.max_slots
    }

    /// Adds the idle connection `id` to client `c`'s pool (which must not be full).
    pub fn add(&mut self, c: usize, id: u32, conns: &mut Conns) {
        let l = self.heads[c].len as usize;
        debug_assert!(l < self.max_slots);
        let conn = &conns.slab[id as usize];
        self.entries[c * self.max_slots + l] = Entry {
            key: key(conn.slot, conn.server),
            latency: 0.0,
            conn: id,
        };
        self.heads[c].idle |= 1 << l;
        conns.pos[id as usize] = l as u8;
        self.heads[c].len += 1;
    }

    /// Removes the entry at `index` of client `c`'s pool (order is not preserved).
    pub fn remove_at(&mut self, c: usize, index: usize, conns: &mut Conns) {
        let base = c * self.max_slots;
        let last = self.heads[c].len as usize - 1;
        let moved = self.entries[base + last];
        self.entries[base + index] = moved;
        let last_idle = self.heads[c].idle >> last & 1;
        self.heads[c].idle &= !(1 << index) & !(1 << last);
        if index != last {
            self.heads[c].idle |= last_idle << index;
            conns.pos[moved.conn as usize] = index as u8;
        }
        self.entries[base + last] = EMPTY;
        self.heads[c].len -= 1;
    }

    /// Marks the pool entry of connection `id` (in client `c`'s pool) idle again, folding
    /// the response time `sample` (ns) into its moving average with weight `alpha` (0: the
    /// average is not kept).
    pub fn set_idle(&mut self, c: usize, id: u32, conns: &Conns, sample: f64, alpha: f32) {
        let k = conns.pos[id as usize] as usize;
        self.heads[c].idle |= 1 << k;
        if alpha > 0.0 {
            let avg = &mut self.entries[c * self.max_slots + k].latency;
            *avg = if *avg == 0.0 {
                sample as f32
            } else {
                *avg + alpha * (sample as f32 - *avg)
            };
        }
    }

    /// Leases the best idle connection of client `c`'s pool, or `None` if every one is
    /// leased. Original rules: the lowest slot, equal slots to the lower server id. Improved
    /// rules: the lowest cost (see [`PoolRules`]), then the lowest slot, equal slots at random.
    /// Returns `(connection, server)`.
    pub fn lease(&mut self, c: usize, rules: &PoolRules, rng: &mut SmallRng) -> Option<(u32, u32)> {
        let mut mask = self.heads[c].idle;
        if mask == 0 {
            return None;
        }
        let entries = self.entries(c);
        let len = entries.len();
        let all = if len == 64 {
            u64::MAX
        } else {
            (1u64 << len) - 1
        };
        let leased = !mask & all;
        // This client's requests in flight at the server of entry `k` (its leased entries
        // there), when the rules rank by it; 0 otherwise.
        let busy_at = |k: usize| -> u32 {
            if !rules.least_outstanding {
                return 0;
            }
            let server = entries[k].key as u32;
            let mut m = leased;
            let mut n = 0;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                n += (entries[j].key as u32 == server) as u32;
            }
            n
        };
        // A connection whose response-time average is `threshold` × the pool's mean or more
        // counts as one more request in flight (two at twice that, ...); never-used ones
        // (average 0) count nothing, so they are tried.
        let slow_over = rules.latency_alpha.map_or(f32::INFINITY, |_| {
            let (sum, n) = entries
                .iter()
                .filter(|e| e.latency > 0.0)
                .fold((0.0f32, 0u32), |(s, n), e| (s + e.latency, n + 1));
            if n == 0 {
                f32::INFINITY
            } else {
                rules.slow_threshold * sum / n as f32
            }
        });
        let cost = |k: usize| -> u32 { busy_at(k) + (entries[k].latency / slow_over) as u32 };
        let mut best = mask.trailing_zeros() as usize;
        let mut best_cost = cost(best);
        mask &= mask - 1;
        let mut ties = 1u32;
        while mask != 0 {
            let k = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let cost = cost(k);
            if cost != best_cost {
                if cost < best_cost {
                    best = k;
                    best_cost = cost;
                    ties = 1;
                }
                continue;
            }
            if prefer(entries[k].key, entries[best].key, rules, &mut ties, rng) {
                best = k;
            }
        }
        let (id, server) = (entries[best].conn, entries[best].key as u32);
        self.heads[c].idle &= !(1 << best);
        Some((id, server))
    }

    /// The highest-slot entry of client `c`'s (non-empty) pool as `(index, connection)`.
    /// Equal slots: higher server id first (original), or uniformly at random.
    pub fn worst(&self, c: usize, rules: &PoolRules, rng: &mut SmallRng) -> (usize, u32) {
        let entries = self.entries(c);
        let mut best = 0usize;
        let mut ties = 1u32;
        for (k, e) in entries.iter().enumerate().skip(1) {
            // Inverted keys: the highest becomes the lowest.
            if prefer(!e.key, !entries[best].key, rules, &mut ties, rng) {
                best = k;
            }
        }
        (best, entries[best].conn)
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
            clients.add(0, id, &mut conns);
        }
        assert!(clients.is_full(0));
        let first = clients.lease(0, &rules, &mut rng).map(|(id, _)| id);
        assert_eq!(first.map(|id| conns.slab[id as usize].server), Some(0));
        let second = clients.lease(0, &rules, &mut rng).map(|(id, _)| id);
        assert_eq!(second.map(|id| conns.slab[id as usize].server), Some(1));
        let (index, id) = clients.worst(0, &rules, &mut rng);
        assert_eq!(
            (conns.slab[id as usize].server, conns.slab[id as usize].slot),
            (3, 9)
        );
        clients.remove_at(0, index, &mut conns);
        assert_eq!(clients.pool_len(0), 3);
        assert!((0..3).all(|k| conns.slab[clients.conn_at(0, k) as usize].server != 3));
        // The remaining idle entry (server 2) is the only one to lease; then none.
        let third = clients.lease(0, &rules, &mut rng).map(|(id, _)| id);
        assert_eq!(third.map(|id| conns.slab[id as usize].server), Some(2));
        assert_eq!(clients.lease(0, &rules, &mut rng).map(|(id, _)| id), None);
        // Returning the first makes it leasable again, wherever the removal moved it.
        let first = first.unwrap_or(NO_CONN);
        clients.set_idle(0, first, &conns, 1e6, 0.1);
        assert_eq!(
            clients.lease(0, &rules, &mut rng).map(|(id, _)| id),
            Some(first)
        );
    }

    #[test]
    fn improved_lease_avoids_own_requests_and_slow_connections() {
        let mut conns = Conns::default();
        let mut clients = Clients::new(1, 4, 0);
        let mut rng = SmallRng::seed_from_u64(1);
        let rules = PoolRules::improved(None, true, true, true, Some(0.2), 1.5);
        // Two connections to server 0 (slots 0, 1), one to server 1 (slot 2), one to 2 (slot 3).
        for (server, slot) in [(0, 0), (0, 1), (1, 2), (2, 3)] {
            let id = conns.open(server, slot, u64::MAX);
            clients.add(0, id, &mut conns);
        }
        // Never used: all cost 0, the lowest slot wins.
        let a = clients
            .lease(0, &rules, &mut rng)
            .map_or(NO_CONN, |(id, _)| id);
        assert_eq!(conns.slab[a as usize].server, 0);
        // Server 0 has one of our requests: its other connection now costs more.
        let b = clients
            .lease(0, &rules, &mut rng)
            .map_or(NO_CONN, |(id, _)| id);
        assert_eq!(conns.slab[b as usize].server, 1);
        // Fast responses on server 0 (1 ms), slow on server 1 (9 ms).
        for (id, response) in [(a, 1e6), (b, 9e6)] {
            clients.set_idle(0, id, &conns, response, 0.2);
        }
        let lease = |clients: &mut Clients, conns: &mut Conns, rng: &mut SmallRng| {
            let id = clients
                .lease(0, &rules, rng)
                .map(|(id, _)| id)
                .unwrap_or(NO_CONN);
            (conns.slab[id as usize].server, conns.slab[id as usize].slot)
        };
        // Server 0 is free of our requests again; the slow connection (9 ms against a pool
        // mean of 5 ms, over 1.5 ×) counts as one request more, so after the lowest slot the
        // never-used connection to server 2 goes first despite its higher slot.
        assert_eq!(lease(&mut clients, &mut conns, &mut rng), (0, 0));
        assert_eq!(lease(&mut clients, &mut conns, &mut rng), (2, 3));
        // Server 0's other connection (one request there) ties with the slow one: lower slot.
        assert_eq!(lease(&mut clients, &mut conns, &mut rng), (0, 1));
        assert_eq!(lease(&mut clients, &mut conns, &mut rng), (1, 2));
    }
}
