//! The simulated clients: each holds a pool of at most `max_slots` connections, a FIFO of
//! requests waiting for an idle connection, and the per-client state the baselines need (a
//! round-robin cursor, outstanding requests per server for the routers that compare loads).
//!
//! Why this shape: every pool decision (which idle connection to lease, whether a rover
//! connection replaces the worst, each connection's lifetime, the slow penalty, expiry)
//! is `callosum_client::pool::decide::Book`, the same code the real client's `Pool` calls, so
//! the figures measure the rules users get. A simulated connection has nothing but its server
//! and slot, which the book keeps, so a connection is its entry in its client's book: a
//! request carries the entry id, and nothing else is looked up on the hot path. A connection
//! replaced while leased (for a lower slot or because it expired) leaves the pool but stays open (its slot held) until its
//! request completes, as in the real pool.

use std::collections::VecDeque;

use callosum_client::PoolPolicy;
use callosum_client::pool::decide::{Admission, Book, Left};
use rand::Rng;

/// Sentinel for "no connection".
pub const NO_CONN: u32 = u32::MAX;

/// Every client's pool, waiting requests and baseline state, indexed by client id.
#[derive(Debug)]
pub struct Clients {
    /// Per client, its pool's decisions and connections (entry id = connection).
    books: Vec<Book>,
    /// Per client, requests waiting for an idle connection (request ids).
    waiting: Vec<VecDeque<u32>>,
    /// Round-robin position per client (see [`crate::balance::model::router`]).
    pub cursor: Vec<u32>,
    /// Outstanding requests per (client, server), for the routers that compare loads (P2C,
    /// P2C-peak-EWMA, least-request); empty for other policies.
    pub outstanding: Vec<u16>,
}

impl Clients {
    /// `n` clients with pools deciding by `policy`; `p2c_servers` > 0 allocates P2C's
    /// counters.
    pub fn new(n: usize, policy: &PoolPolicy, p2c_servers: usize) -> Self {
        Self {
            books: (0..n).map(|_| Book::new(policy)).collect(),
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

    /// The `(server, slot)` of client `c`'s connection `conn` (held, or leased after it
    /// left the pool).
    pub fn conn(&self, c: usize, conn: u32) -> (u32, u32) {
        let book = &self.books[c];
        (server_id(book.server(conn)), book.slot(conn))
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
    /// breaks ties and draws the lifetime. The caller releases a refused slot and closes a
    /// replaced connection that was idle ([`close_now`]).
    pub fn offer<R: Rng + ?Sized>(
        &mut self,
        c: usize,
        server: u32,
        slot: u32,
        now: u64,
        rng: &mut R,
    ) -> Admission {
        self.books[c].offer(Some(u64::from(server)), slot, now, rng)
    }

    /// Leases client `c`'s best idle connection (`rng` breaks ties), or `None` if every one
    /// is leased. Returns `(connection, server)`.
    pub fn lease<R: Rng + ?Sized>(&mut self, c: usize, rng: &mut R) -> Option<(u32, u32)> {
        let book = &mut self.books[c];
        let conn = book.lease(rng)?;
        Some((conn, server_id(book.server(conn))))
    }

    /// Gives connection `conn` back to client `c` after a response of `response_ns`
    /// (`None`: the request failed, nothing to learn). Returns `false` when it left the pool
    /// while leased: the caller closes it (read its [`conn`](Self::conn) first).
    pub fn give_back(&mut self, c: usize, conn: u32, response_ns: Option<u64>) -> bool {
        self.books[c].give_back(conn, response_ns)
    }

    /// How many of client `c`'s expired connections newcomers replaced since the last
    /// call (soft expiry: an expired connection leaves only when an offer replaces it).
    pub fn take_retired(&mut self, c: usize) -> usize {
        self.books[c].retired()
    }

    /// Takes client `c`'s connections to `server` out of its pool, pushing each on `left`
    /// (the caller closes the idle ones now, see [`close_now`]). Returns how many left.
    pub fn evict_server(&mut self, c: usize, server: u32, left: &mut Vec<Left>) -> usize {
        self.books[c].evict_server(u64::from(server), |l| left.push(l))
    }
}

/// The `(server, slot)` to close now of a connection that left a pool: `None` when it is
/// leased (it closes when given back).
pub fn close_now(left: Left) -> Option<(u32, u32)> {
    left.was_idle.then(|| (server_id(left.server), left.slot))
}

/// A simulated connection's server: every one is offered with its server.
fn server_id(server: Option<u64>) -> u32 {
    server.map_or(NO_CONN, |s| s as u32)
}

#[cfg(test)]
mod tests {
    use callosum_client::SlowPenalty;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    fn kept(admission: Admission) -> u32 {
        match admission {
            Admission::Kept { id } => id,
            other => panic!("expected kept, got {other:?}"),
        }
    }

    #[test]
    fn leases_lowest_idle_and_replaces_the_worst_equal_slots_by_arrival() {
        let mut clients = Clients::new(1, &PoolPolicy::original().max_slots(4), 0);
        let mut rng = SmallRng::seed_from_u64(1);
        let ids: Vec<u32> = [(2, 5), (1, 3), (0, 3), (3, 9)]
            .into_iter()
            .map(|(server, slot)| kept(clients.offer(0, server, slot, 0, &mut rng)))
            .collect();
        // Slot 3 twice: the earlier arrival (server 1) first.
        assert_eq!(clients.lease(0, &mut rng), Some((ids[1], 1)));
        assert_eq!(clients.lease(0, &mut rng), Some((ids[2], 0)));
        // Slot 9 is the worst; an equal slot is refused, a lower one replaces it.
        assert_eq!(clients.offer(0, 4, 9, 0, &mut rng), Admission::Refused);
        match clients.offer(0, 4, 4, 0, &mut rng) {
            Admission::Replaced { evicted, .. } => {
                assert_eq!(close_now(evicted), Some((3, 9)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(clients.pool_len(0), 4);
        // Returning the first makes it leasable again.
        assert!(clients.give_back(0, ids[1], Some(1_000_000)));
        assert_eq!(clients.lease(0, &mut rng), Some((ids[1], 1)));
    }

    #[test]
    fn improved_lease_avoids_own_requests_and_slow_connections() {
        // Four places would spread their leases at random: off, to see the costs' order
        // (and slot weights off, though three servers for four places do not call them).
        let policy = PoolPolicy::improved()
            .max_slots(4)
            .max_age(None)
            .slow_penalty(Some(SlowPenalty::default()))
            .spread_small_pools(false)
            .slot_weighted_leases(false);
        let mut clients = Clients::new(1, &policy, 0);
        let mut rng = SmallRng::seed_from_u64(1);
        // Two connections to server 0 (slots 0, 1), one to server 1 (slot 2), one to 2 (slot 3).
        for (server, slot) in [(0, 0), (0, 1), (1, 2), (2, 3)] {
            kept(clients.offer(0, server, slot, 0, &mut rng));
        }
        let mut lease = |clients: &mut Clients| {
            let (conn, _) = clients.lease(0, &mut rng).unwrap_or((NO_CONN, 0));
            let (server, slot) = clients.conn(0, conn);
            (conn, server, slot)
        };
        // Never used: all cost 0, the lowest slot wins.
        let (a, server, _) = lease(&mut clients);
        assert_eq!(server, 0);
        // Server 0 has one of our requests: its other connection now costs more.
        let (b, server, _) = lease(&mut clients);
        assert_eq!(server, 1);
        // Fast responses on server 0 (1 ms), slow on server 1 (9 ms).
        assert!(clients.give_back(0, a, Some(1_000_000)));
        assert!(clients.give_back(0, b, Some(9_000_000)));
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
