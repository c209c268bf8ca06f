//! The dual-heap pool (the original `callosum-client-tcp`'s design): keeps at most
//! `max_slots` connections, leases a low-slot idle one, and lets a lower-slot newcomer
//! replace the highest-slot one. By default ([`PoolPolicy::improved`]) it follows the
//! improved Callosum policy (`docs/balance.md`): connections expire by age (an expired one stays
//! until the next newcomer replaces it, whatever the slots), a newcomer with an equal slot also replaces the worst, and a lease goes to the idle connection whose
//! server has the fewest of this pool's leases (a slow connection counting as more), then
//! the lowest slot, equal slots at random. Under [`PoolPolicy::original`] it is the original
//! exactly: lease the lowest slot, replace only with a strictly lower one.
//!
//! One `Mutex` guards the state: the [`decide::Book`], which makes every decision (a slab
//! of entries and indexed heaps: idle by lowest slot to lease, held by highest slot to find
//! the worst, and under a maximum age by expiry to replace), and the idle connections by the
//! book's entry ids. Under the original rules offer, lease and return are O(log n); the
//! improved rules rank idle connections by a cost that changes with every lease, so they
//! lease by a scan of the idle entries: O(P), see `decide` for why that is the right trade
//! at pool sizes. A leased connection lives in its [`Lease`], not under the lock, so using
//! it takes no lock, and the liveness check (a syscall for sockets) runs outside the lock.
//! An evicted leased connection is flagged in its entry and closed when the lease ends (the
//! original's "deadpool"); so is an expired one a newcomer replaced while it was leased.
//!
//! The pool learns each connection's server from [`Pool::offer_from`] as a [`ServerKey`]
//! (an opaque number: the roving client numbers its servers), which is all "leases at the
//! same server" needs; plain [`Pool::offer`] leaves the server unknown. When a server leaves,
//! [`Pool::evict_server`] takes all its connections out at once (the leased ones close on
//! return, as evicted ones do).
//!
//! - [`policy`]: the options (`max_slots`, the improved rules), default = the improved policy.
//! - [`decide`]: every decision (lease, offer, lifetime, slow penalty, retirement), free of
//!   I/O; the simulator's clients call it too, so the published figures measure these rules.
//! - [`liveness`]: the "still open?" check of idle connections.
//! - `state`: the book and the connections, under the lock.
//! - `heap`: the indexed 4-ary heap.

pub mod age;
pub mod decide;
mod heap;
pub mod liveness;
pub mod policy;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use liveness::Liveness;
pub use policy::{DEFAULT_MAX_SLOTS, PoolPolicy, SlowPenalty};
use state::Inner;

use crate::failure::Failure;

/// Why a pool could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// `max_slots` is 0: the pool could hold nothing.
    #[error("max_slots must be at least 1")]
    ZeroMaxSlots,
    /// `max_slots` does not fit the pool's 32-bit entry ids.
    #[error("max_slots {max_slots} is too large (at most 4294967294)")]
    TooManySlots {
        /// The value asked for.
        max_slots: usize,
    },
    /// The slow penalty's weight is not in (0, 1] or its threshold is not finite and
    /// positive.
    #[error("slow penalty needs 0 < alpha <= 1 and a finite threshold > 0")]
    InvalidSlowPenalty,
}

/// The server a connection goes to, as far as the pool is concerned: an opaque number,
/// equal for connections to the same server (the roving client numbers its servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey(pub u64);

impl From<u64> for ServerKey {
    fn from(key: u64) -> Self {
        Self(key)
    }
}

/// Why an acquire returned without a connection. Comparable: the failure it carries
/// compares as [`Failure`] does (I/O errors by kind).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// No connection became idle within the timeout ([`Pool::acquire`], which knows nothing
    /// of servers).
    #[error("no idle connection within {timeout:?}")]
    Timeout {
        /// The timeout that expired.
        timeout: Duration,
    },
    /// No connection became idle within the timeout, with what the roving client knew of
    /// its servers then ([`RovingClient::acquire`](crate::RovingClient::acquire)): e.g.
    /// "no idle connection within 2s; 1 of 1 servers backing off; last error: connect
    /// 127.0.0.1:9: Connection refused (os error 111)".
    #[error(
        "no idle connection within {timeout:?}; {backing_off} of {servers} servers backing off; {}",
        last_error.as_ref().map_or_else(
            || "no connect error since the last connection".to_owned(),
            |e| format!("last error: {e}"),
        )
    )]
    Unavailable {
        /// The timeout that expired.
        timeout: Duration,
        /// Servers in the set then.
        servers: usize,
        /// Of them, those backing off after failed connects.
        backing_off: usize,
        /// The last failure to reach a server since the last successful connect, if any.
        last_error: Option<Failure>,
    },
}

/// What the pool did with an offered connection.
#[derive(Debug)]
#[must_use = "a rejected or evicted connection is handed back; dropping it closes it"]
pub enum Offer<C> {
    /// Kept: the pool was under `max_slots`.
    Kept,
    /// Kept in place of a held connection, which left the pool: the highest-slot one (an
    /// equal one under [`PoolPolicy::accept_equal`]), or under the improved policy's rules
    /// an expired one ([`PoolPolicy::max_age`]) or, in a small pool, its server's own
    /// connection or a second connection to a shared server
    /// ([`PoolPolicy::spread_small_pools`]).
    Replaced {
        /// The evicted connection's slot.
        evicted_slot: u32,
        /// The evicted connection if it was idle (drop it to close it now); `None` if it
        /// is leased: it is closed when its lease ends and never re-enters the pool.
        evicted: Option<C>,
    },
    /// Refused: the pool is full and the slot is not lower than the highest held one (not
    /// lower or equal under [`PoolPolicy::accept_equal`]), or, in a small pool under
    /// [`PoolPolicy::spread_small_pools`], than its own server's connection.
    /// The connection is handed back; dropping it closes it.
    Rejected(C),
}

/// A connection pool keeping the lowest-slot connections; cheap to clone (shared state).
pub struct Pool<C: Liveness> {
    shared: Arc<Shared<C>>,
}

impl<C: Liveness> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<C> {
    inner: Mutex<Inner<C>>,
    /// Woken when a connection becomes idle, for [`Pool::acquire`].
    available: Notify,
    /// Tasks inside `acquire`: offers and returns skip the notification when there are
    /// none, which keeps an atomic read-modify-write off the lease/return path.
    waiters: AtomicUsize,
    policy: PoolPolicy,
}

impl<C: Liveness> Pool<C> {
    /// A pool holding at most `max_slots` connections, with the default policy (the improved
    /// one, [`PoolPolicy::improved`]) otherwise.
    pub fn new(max_slots: usize) -> Result<Self, PoolError> {
        Self::with_policy(PoolPolicy::default().max_slots(max_slots))
    }

    /// A pool with the given policy.
    pub fn with_policy(policy: PoolPolicy) -> Result<Self, PoolError> {
        policy.validate()?;
        let inner = Inner::new(&policy);
        Ok(Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                available: Notify::new(),
                waiters: AtomicUsize::new(0),
                policy,
            }),
        })
    }

    /// The policy the pool was built with.
    pub fn policy(&self) -> &PoolPolicy {
        &self.shared.policy
    }

    /// Most connections held at once.
    pub fn max_slots(&self) -> usize {
        self.shared.policy.max_slots
    }

    /// Connections held and counting toward `max_slots` (idle and leased).
    pub fn len(&self) -> usize {
        self.shared.lock().book.len()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Idle connections (ready to lease).
    pub fn idle_len(&self) -> usize {
        self.shared.lock().book.idle_len()
    }

    /// The slots of the held connections, lowest first.
    pub fn held_slots(&self) -> Vec<u32> {
        self.shared.lock().held_slots()
    }

    /// Offers a new connection with its slot (the original `newConnection`): kept while
    /// under `max_slots`; at `max_slots`, kept in place of the highest-slot connection if
    /// its slot is lower (or equal, under [`PoolPolicy::accept_equal`]), else handed back in
    /// [`Offer::Rejected`]. The connection's server is unknown to the pool: see
    /// [`offer_from`](Self::offer_from).
    pub fn offer(&self, slot: u32, conn: C) -> Offer<C> {
        self.offer_inner(None, slot, conn)
    }

    /// Like [`offer`](Self::offer), for a connection to `server`: under
    /// [`PoolPolicy::least_outstanding`], leases prefer servers with fewer of this pool's
    /// leases, under [`PoolPolicy::spread_small_pools`] a small pool keeps its
    /// connections on distinct servers, and under [`PoolPolicy::slot_weighted_leases`] a
    /// pool holding at least two connections per server leases by slot weight.
    pub fn offer_from(&self, server: ServerKey, slot: u32, conn: C) -> Offer<C> {
        self.offer_inner(Some(server), slot, conn)
    }

    fn offer_inner(&self, server: Option<ServerKey>, slot: u32, conn: C) -> Offer<C> {
        let outcome = self.shared.lock().offer(server, slot, conn);
        if !matches!(outcome, Offer::Rejected(_)) {
            self.shared.wake_one();
        }
        outcome
    }

    /// Leases the best idle connection (the original `getConnection`), or `None` when
    /// nothing is idle: under the improved rules (the default) the lowest cost, then the
    /// lowest slot, then at random (see [`PoolPolicy`]); under the original rules the lowest
    /// slot. Idle connections found closed or broken on the way are
    /// dropped and stop counting toward `max_slots`. The lease gives the connection back on
    /// drop.
    pub fn get(&self) -> Option<Lease<C>> {
        loop {
            let (id, slot, conn) = self.shared.lock().take_best()?;
            if conn.is_alive() {
                // The clock is read only when the policy keeps response-time averages.
                let leased_at = self.shared.policy.slow_penalty.map(|_| Instant::now());
                return Some(Lease {
                    shared: self.shared.clone(),
                    entry: id,
                    slot,
                    leased_at,
                    conn: Some(conn),
                });
            }
            self.shared.lock().release(id);
            drop(conn);
        }
    }

    /// Like [`get`](Self::get), waiting up to `timeout` for a connection to become idle.
    pub async fn acquire(&self, timeout: Duration) -> Result<Lease<C>, AcquireError> {
        let deadline = crate::deadline::after(Instant::now(), timeout);
        let _waiting = Waiting::register(&self.shared.waiters);
        loop {
            let notified = self.shared.available.notified();
            if let Some(lease) = self.get() {
                return Ok(lease);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(AcquireError::Timeout { timeout });
            }
        }
    }

    /// Checks every idle connection and drops the closed or broken ones, so they stop
    /// counting toward `max_slots`; returns how many were dropped. O(n) liveness checks, in
    /// chunks of [`PRUNE_CHUNK`] under the lock so `get` and `offer` are never held up for
    /// long. The roving client calls it before offering to a full pool.
    pub fn prune(&self) -> usize {
        let mut dropped = 0;
        let mut cursor = 0;
        loop {
            let (dead, done) = {
                let mut inner = self.shared.lock();
                let end = (cursor + PRUNE_CHUNK).min(inner.book.capacity());
                let mut dead = Vec::new();
                for id in cursor as u32..end as u32 {
                    if inner.idle_conn(id).is_some_and(|c| !c.is_alive()) {
                        dead.extend(inner.evict(id));
                    }
                }
                cursor = end;
                (dead, end >= inner.book.capacity())
            };
            dropped += dead.len();
            drop(dead); // closed outside the lock
            if done {
                return dropped;
            }
        }
    }
}

impl<C: Liveness> Pool<C> {
    /// Takes every connection to `server` out of the pool (its server left): idle ones are
    /// closed at once, leased ones close when their lease ends and never come back. Returns
    /// how many left the pool. O(n).
    pub fn evict_server(&self, server: ServerKey) -> usize {
        let mut closing = Vec::new();
        let evicted = self.shared.lock().evict_server(server, &mut closing);
        drop(closing); // closed outside the lock
        evicted
    }

    /// How many connections the pool holds per server (offered with
    /// [`offer_from`](Self::offer_from); servers with none are absent). O(n).
    pub fn held_per_server(&self) -> HashMap<ServerKey, usize> {
        self.shared.lock().held_per_server()
    }

    /// How many connections past their lifetime (under [`PoolPolicy::max_age`]) newcomers
    /// replaced since the last call. Soft expiry: an expired connection stays in the pool,
    /// idle or leased, until the next offer takes its place whatever the two slots; it
    /// leaves then like any replaced connection ([`Offer::Replaced`]). So the pool never
    /// shrinks by age. The roving client reads it at each rover tick for its counters.
    pub fn take_retired(&self) -> usize {
        self.shared.lock().retired()
    }
}

/// Counts a task in `acquire` for as long as it waits (cancellation included).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn register(waiters: &'a AtomicUsize) -> Self {
        // Relaxed: ordered before the waiter's `get()` by the pool mutex (see `wake_one`).
        waiters.fetch_add(1, Ordering::Relaxed);
        Self(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Relaxed: a late decrement only costs a spurious notification.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Idle connections [`Pool::prune`] checks per lock acquisition.
pub const PRUNE_CHUNK: usize = 64;

impl<C: Liveness> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("Pool")
            .field("max_slots", &self.shared.policy.max_slots)
            .field("held", &inner.book.len())
            .field("idle", &inner.book.idle_len())
            .finish()
    }
}

impl<C> Shared<C> {
    /// Wakes one task in `acquire`, if any, after a connection became idle (called with the
    /// lock released).
    fn wake_one(&self) {
        // Relaxed: a waiter's increment is sequenced before its `get()` takes the lock; if
        // that `get()` missed the connection made idle here, it took the lock before us, so
        // the increment happens-before this load (through the mutex) and is seen.
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.available.notify_one();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<C>> {
        // No code path panics while holding the lock, and the state stays consistent at
        // every unlock, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A leased connection: derefs to it, and gives it back to the pool on drop (the original
/// `returnConnection`) unless it was evicted meanwhile (then it is closed) or found closed.
pub struct Lease<C: Liveness> {
    shared: Arc<Shared<C>>,
    entry: u32,
    slot: u32,
    /// When it was leased, when the policy keeps response-time averages.
    leased_at: Option<Instant>,
    /// `Some` until the lease ends; `None` only inside `detach`/`drop`.
    conn: Option<C>,
}

impl<C: Liveness> Lease<C> {
    /// The slot the server assigned to this connection.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Takes the connection out of the pool for good: it stops counting toward
    /// `max_slots`.
    pub fn detach(mut self) -> C {
        let conn = self.conn.take();
        // `conn` is `Some` for the whole life of the lease; drop sees `None` and releases.
        match conn {
            Some(conn) => conn,
            None => unreachable!("a lease holds its connection until it ends"),
        }
    }

    /// Drops a connection that broke during use: closed now, never back in the pool, stops
    /// counting toward `max_slots`.
    pub fn discard(self) {
        drop(self.detach());
    }
}

impl<C: Liveness> Deref for Lease<C> {
    type Target = C;

    fn deref(&self) -> &C {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("a lease holds its connection until it ends"),
        }
    }
}

impl<C: Liveness> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("a lease holds its connection until it ends"),
        }
    }
}

impl<C: Liveness> Drop for Lease<C> {
    fn drop(&mut self) {
        match self.conn.take() {
            Some(conn) if conn.is_alive() => {
                let held_for = self.leased_at.map(|at| at.elapsed());
                let restored = self.shared.lock().restore(self.entry, conn, held_for);
                match restored {
                    Ok(()) => self.shared.wake_one(),
                    Err(evicted) => drop(evicted),
                }
            }
            closed => {
                self.shared.lock().release(self.entry);
                drop(closed);
            }
        }
    }
}

impl<C: Liveness + fmt::Debug> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("slot", &self.slot)
            .field("conn", &self.conn)
            .finish()
    }
}

#[cfg(test)]
mod tests;
