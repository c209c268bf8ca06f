//! The simulated clients: each holds a pool of at most `max_slots` connections, a FIFO of
//! requests waiting for an idle connection, and the per-client state the baselines need (a
//! round-robin cursor, outstanding requests per server for P2C).
//!
//! Why this shape: every pool decision (which idle connection to lease, whether a rover
//! connection replaces the worst, each connection's lifetime, the slow penalty, retirement)
//! is `callosum_client::pool::decide::Book`, the same code the real client's `Pool` calls, so
//! the figures measure the rules users get. This module only keeps, per client, which
//! simulated connection each of the book's entries is, and the waiting requests.
//! Connections live in a slab with a free list, so opening and closing one allocates nothing
//! once warm. A connection replaced or retired while leased leaves the pool but stays open
//! (its slot held) until its request completes, as in the real pool.

use std::collections::VecDeque;

use callosum_client::PoolPolicy;
use callosum_client::pool::decide::{Admission, Book, Left};
use rand::Rng;

/// Sentinel for "no connection".
pub const NO_CONN: u32 = u32::MAX;

/// One open connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conn {
    /// Server the connection is open to.
    pub server: u32,
    /// Slot the server assigned it.
    pub slot: u32,
}

/// Every open connection, indexed by connection id (a slab with a free list), with the
/// entry each has in its client's book.
#[derive(Debug, Default)]
pub struct Conns {
    /// The connections.
    pub slab: Vec<Conn>,
    /// Per connection, its entry id in its client's [`Book`].
    entry: Vec<u32>,
    free: Vec<u32>,
}

impl Conns {
    /// Records a new open connection, entry `entry` of its client's book, and returns its id.
    fn open(&mut self, server: u32, slot: u32, entry: u32) -> u32 {
        let conn = Conn { server, slot };
        if let Some(id) = self.free.pop() {
            self.slab[id as usize] = conn;
            self.entry[id as usize] = entry;
            id
        } else {
            self.slab.push(conn);
            self.entry.push(entry);
            self.slab.len() as u32 - 1
        }
    }

    /// Forgets a closed connection (its slot must already be released).
    pub fn close(&mut self, id: u32) {
        self.free.push(id);
    }
}

/// What a client did with a rover's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Kept as connection `conn` in a free place of the pool.
    Kept {
        /// The new connection.
        conn: u32,
    },
    /// Kept as connection `conn` in place of connection `evicted`, which left the pool:
    /// the caller closes it now if it was idle; a leased one closes when given back.
    Replaced {
        /// The new connection.
        conn: u32,
        /// The connection it replaced.
        evicted: u32,
        /// Whether the replaced connection was idle.
        evicted_idle: bool,
    },
    /// Refused: the caller releases the slot.
    Refused,
}

/// Every client's pool, waiting requests and baseline state, indexed by client id.
#[derive(Debug)]
pub struct Clients {
    /// Per client, its pool's decisions.
    books: Vec<Book>,
    /// Per client, the connection of each book entry.
    conn_of: Vec<Vec<u32>>,
    /// Per client, requests waiting for an idle connection (request ids).
    waiting: Vec<VecDeque<u32>>,
    /// Round-robin position per client (see [`super::router`]).
    pub cursor: Vec<u32>,
    /// Outstanding requests per (client, server), for P2C; empty for other policies.
    pub outstanding: Vec<u16>,
}

impl Clients {
    /// `n` clients with pools deciding by `policy`; `p2c_servers` > 0 allocates P2C's
    /// counters.
    pub fn new(n: usize, policy: &PoolPolicy, p2c_servers: usize) -> Self {
        Self {
            books: (0..n).map(|_| Book::new(policy)).collect(),
            conn_of: vec![Vec::new(); n],
            waiting: vec![VecDeque::new(); n],
            cursor: vec![0; n],
            outstanding: vec![0; n * p2c_servers],
        }
    }

    /// Connections in client `c`'s pool (leased ones included, departed ones not).
    pub fn pool_len(&self, c: usize) -> usize {
        self.books[c].len()
    }

    /// Idle connections in client `c`'s pool.
    pub fn idle_len(&self, c: usize) -> usize {
        self.books[c].idle_len()
    }

    /// Whether requests are waiting at client `c`.
    pub fn has_waiting(&self, c: usize) -> bool {
        !self.waiting[c].is_empty()
    }

    /// Queues request `r` at client `c`.
    pub fn push_waiting(&mut self, c: usize, r: u32) {
        self.waiting[c].push_back(r);
    }

    /// The oldest request waiting at client `c`.
    pub fn pop_waiting(&mut self, c: usize) -> Option<u32> {
        self.waiting[c].pop_front()
    }

    /// Offers client `c` a rover connection to `server` with `slot` at `now` (ns); `rng`
    /// breaks ties and draws the lifetime. A kept connection is opened in `conns`.
    pub fn offer<R: Rng + ?Sized>(
        &mut self,
        c: usize,
        server: u32,
        slot: u32,
        now: u64,
        conns: &mut Conns,
        rng: &mut R,
    ) -> Offered {
        match self.books[c].offer(Some(u64::from(server)), slot, now, rng) {
            Admission::Kept { id } => Offered::Kept {
                conn: self.bind(c, id, server, slot, conns),
            },
            Admission::Replaced { id, evicted } => {
                // Before the newcomer: it may take the evicted idle entry's id.
                let old = self.conn_of[c][evicted.id as usize];
                Offered::Replaced {
                    conn: self.bind(c, id, server, slot, conns),
                    evicted: old,
                    evicted_idle: evicted.was_idle,
                }
            }
            Admission::Refused => Offered::Refused,
        }
    }

    /// Opens the connection of client `c`'s new entry `id`.
    fn bind(&mut self, c: usize, id: u32, server: u32, slot: u32, conns: &mut Conns) -> u32 {
        let conn = conns.open(server, slot, id);
        let of = &mut self.conn_of[c];
        if of.len() <= id as usize {
            of.resize(id as usize + 1, NO_CONN);
        }
        of[id as usize] = conn;
        conn
    }

    /// Leases client `c`'s best idle connection (`rng` breaks ties), or `None` if every one
    /// is leased. Returns `(connection, server)`.
    pub fn lease<R: Rng + ?Sized>(
        &mut self,
        c: usize,
        conns: &Conns,
        rng: &mut R,
    ) -> Option<(u32, u32)> {
        let id = self.books[c].lease(rng)?;
        let conn = self.conn_of[c][id as usize];
        Some((conn, conns.slab[conn as usize].server))
    }

    /// Gives connection `conn` back to client `c` after a response of `response_ns`
    /// (`None`: the request failed, nothing to learn). Returns `false` when it left the pool
    /// while leased: the caller closes it.
    pub fn give_back(
        &mut self,
        c: usize,
        conn: u32,
        response_ns: Option<u64>,
        conns: &Conns,
    ) -> bool {
        self.books[c].give_back(conns.entry[conn as usize], response_ns)
    }

    /// Retires client `c`'s connections expired at `now`; the idle ones, to close now, are
    /// pushed on `closing`. Returns how many left the pool.
    pub fn retire_expired(&mut self, c: usize, now: u64, closing: &mut Vec<u32>) -> usize {
        let (book, of) = (&mut self.books[c], &self.conn_of[c]);
        book.retire(now, |left| idle_to_close(left, of, closing))
    }

    /// Takes client `c`'s connections to `server` out of its pool; the idle ones, to close
    /// now, are pushed on `closing`. Returns how many left the pool.
    pub fn evict_server(&mut self, c: usize, server: u32, closing: &mut Vec<u32>) -> usize {
        let (book, of) = (&mut self.books[c], &self.conn_of[c]);
        book.evict_server(u64::from(server), |left| {
            idle_to_close(left, of, closing);
        })
    }
}

/// Pushes the connection that left, if it was idle, on `closing`.
fn idle_to_close(left: Left, conn_of: &[u32], closing: &mut Vec<u32>) {
    if left.was_idle {
        closing.push(conn_of[left.id as usize]);
    }
}

#[cfg(test)]
mod tests {
    use callosum_client::SlowPenalty;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn kept(offered: Offered) -> u32 {
        match offered {
            Offered::Kept { conn } => conn,
            other => panic!("expected kept, got {other:?}"),
        }
    }

    #[test]
    fn leases_lowest_idle_and_replaces_the_worst_equal_slots_by_arrival() {
        let mut conns = Conns::default();
        let mut clients = Clients::new(1, &PoolPolicy::original().max_slots(4), 0);
        let mut rng = SmallRng::seed_from_u64(1);
        let ids: Vec<u32> = [(2, 5), (1, 3), (0, 3), (3, 9)]
            .into_iter()
            .map(|(server, slot)| kept(clients.offer(0, server, slot, 0, &mut conns, &mut rng)))
            .collect();
        let lease = |clients: &mut Clients, conns: &Conns, rng: &mut SmallRng| {
            clients.lease(0, conns, rng).map(|(id, _)| id)
        };
        // Slot 3 twice: the earlier arrival (server 1) first.
        let first = lease(&mut clients, &conns, &mut rng);
        assert_eq!(first, Some(ids[1]));
        assert_eq!(lease(&mut clients, &conns, &mut rng), Some(ids[2]));
        // Slot 9 is the worst; an equal slot is refused, a lower one replaces it.
        assert_eq!(
            clients.offer(0, 4, 9, 0, &mut conns, &mut rng),
            Offered::Refused
        );
        match clients.offer(0, 4, 4, 0, &mut conns, &mut rng) {
            Offered::Replaced {
                evicted,
                evicted_idle,
                ..
            } => assert_eq!((evicted, evicted_idle), (ids[3], true)),
            other => panic!("{other:?}"),
        }
        assert_eq!(clients.pool_len(0), 4);
        // Returning the first makes it leasable again.
        assert!(clients.give_back(0, ids[1], Some(1_000_000), &conns));
        assert_eq!(lease(&mut clients, &conns, &mut rng), Some(ids[1]));
    }

    #[test]
    fn improved_lease_avoids_own_requests_and_slow_connections() {
        let mut conns = Conns::default();
        let policy = PoolPolicy::improved()
            .max_slots(4)
            .max_age(None)
            .slow_penalty(Some(SlowPenalty::default()));
        let mut clients = Clients::new(1, &policy, 0);
        let mut rng = SmallRng::seed_from_u64(1);
        // Two connections to server 0 (slots 0, 1), one to server 1 (slot 2), one to 2 (slot 3).
        for (server, slot) in [(0, 0), (0, 1), (1, 2), (2, 3)] {
            kept(clients.offer(0, server, slot, 0, &mut conns, &mut rng));
        }
        let mut lease = |clients: &mut Clients| {
            let (id, _) = clients.lease(0, &conns, &mut rng).unwrap_or((NO_CONN, 0));
            let conn = conns.slab[id as usize];
            (id, conn.server, conn.slot)
        };
        // Never used: all cost 0, the lowest slot wins.
        let (a, server, _) = lease(&mut clients);
        assert_eq!(server, 0);
        // Server 0 has one of our requests: its other connection now costs more.
        let (b, server, _) = lease(&mut clients);
        assert_eq!(server, 1);
        // Fast responses on server 0 (1 ms), slow on server 1 (9 ms).
        assert!(clients.give_back(0, a, Some(1_000_000), &conns));
        assert!(clients.give_back(0, b, Some(9_000_000), &conns));
        // Server 0 is free of our requests again; the slow connection (9 ms against a pool
        // mean of 5 ms, over 1.5 ×) counts as one request more, so after the lowest slot the
        // never-used connection to server 2 goes first despite its higher slot.
        let order: Vec<(u32, u32)> = (0..4)
            .map(|_| {
                let (_, server, slot) = lease(&mut clients);
                (server, slot)
            })
            .collect();
        // Server 0's other connection (one request there) ties with the slow one: lower slot.
        assert_eq!(order, vec![(0, 0), (2, 3), (0, 1), (1, 2)]);
    }
}
