//! The pool's decisions, free of I/O: which idle connection to lease, whether a newcomer
//! fills a free place, replaces the worst or is refused, how long each connection lives,
//! the slow-connection penalty, and which connections retire. [`Book`] keeps what those
//! decisions need about one pool's connections (slot, server, arrival, response-time
//! average, lifetime, leased or not) and nothing else: no connection, no clock, no random
//! source of its own.
//!
//! Why apart from the pool: the rules are the product, and the product is also measured by
//! the simulator (`callosum-loadgen simulate`), which runs millions of events with no
//! sockets. Both call this module, so the figures measure the rules users get; a copy of the
//! rules in the simulator would prove the copy. The caller owns the connections, indexed by
//! the small entry ids the book hands out, and passes in the time (nanoseconds on its own
//! clock) and the random source (any [`rand::Rng`]), so the pool uses the wall clock and the
//! simulator its simulated one with its seeded generators.
//!
//! The rules, by policy ([`PoolPolicy`]):
//! - lease: the idle entry with the lowest cost, then the lowest slot; cost is 0 under the
//!   original rules, else this pool's leases at the entry's server (least outstanding) plus
//!   ⌊average / (threshold × the pool's mean average)⌋ (slow penalty). Equal slots go by
//!   arrival (earliest first), or uniformly at random under random ties.
//! - spread: a small pool (at most [`SLOT_KEEPING_MAX_SLOTS`] places) under
//!   `spread_small_pools` leases any idle entry of the lowest cost uniformly at random,
//!   whatever its slot, and once full keeps its places on distinct servers: a newcomer from
//!   a server the pool holds may only replace that server's place (if its slot is lower, or
//!   equal under accept-equal), and one from a server the pool does not hold first replaces
//!   a second place on a shared server (the highest such slot, whatever the newcomer's),
//!   then follows the rules below. Under `max_slots` any newcomer fills a place, so a pool
//!   fills with fewer servers than places. A small pool keeps its slots (below), so its
//!   lowest slot would stay on one server for good and carry most of the client's
//!   requests: over 4 servers with 2 to 4 places, the long-run rate max/mean was 1.10-1.27
//!   on the worst seed at 50-80 % load. Spread, each place carries an equal share; on
//!   distinct servers the least-outstanding cost cannot skew that share (two places on one
//!   server would send a client's second concurrent request to its other server), so a
//!   server's rate follows the connections it holds, which the slots keep even: the worst
//!   seed is 1.004-1.058, and no request waits behind another of its own client at one
//!   server, so the p99 is 1-14 % below the original's at 80-95 % load. Larger pools keep
//!   the lowest slot: spreading there raised the p99 at 100 servers and 80 % load from 52.5
//!   to 59.1 ms, since the maximum age already rotates their lowest slots, and preferring
//!   the lowest slot keeps each server's load steadier than picking at random
//!   (`docs/balance.md`, "Small pools spread").
//! - weighted: under `slot_weighted_leases`, a pool that does not spread and holds at
//!   least two entries per server on average leases among the idle entries of the lowest
//!   cost at random, each with weight 1 / (slot + 1), instead of the lowest slot. Two
//!   entries per server means few servers for the pool's places; there each client's
//!   lowest slot carries a large share of one server's requests, and every rotation of the
//!   lowest slots (the maximum age, below) moves that share at once: over 4 servers with
//!   8 places a joining server's per-second share had a standard deviation of 0.130 of
//!   fair, against random routing's 0.056. Weighted, the lowest slot still carries the
//!   most, and the deviation falls to about 0.09. Pools spread over more servers keep the
//!   lowest slot: weighting every pool raised the p99 at 100 servers and 80 % load from
//!   52.5 to 56.2 ms, and weighting every pool that holds some server twice raised it by
//!   16 % at 100 servers with 64 places, since there the lowest slot is what makes every
//!   server some client's first choice (`docs/balance.md`, "Slot-weighted leases").
//! - preferred: under `preferred_connection`, a full pool that neither spreads nor weights
//!   (one that would lease the lowest slot) and whose offered slots average at least
//!   [`PREFERRED_MIN_OFFERED_PER_PLACE`] (4) per place draws a preferred connection among
//!   its [`PREFERRED_AMONG`] (8) lowest slots by weight 1 / √(slot + 1), damped as under
//!   `latency_damped_weights` but against the average from which the slow penalty counts,
//!   and keeps it for the pool's next [`PREFERRED_LEASES`] (2) leases; a lease takes it
//!   when it is idle and no other lease of the pool is outstanding at its server, and
//!   otherwise goes by the lowest cost, then the lowest slot. Leasing the lowest slot sends
//!   nearly all of a lightly loaded client's requests over one connection, so a server's
//!   rate follows how many clients hold their lowest slot there, which only the maximum
//!   age changes: over 100 servers and 1,000 clients at 50 % load the busiest server took
//!   1.087 × the mean rate over two minutes (up to 1.099 on a seed), and 1.034 (up to
//!   1.044 over seeds 1–30) with a preferred connection. A busy client's preferred is more
//!   often out, so more of its leases fall back to the lowest slot, which is what holds
//!   the tail: the p99 stays within 2 % of the original rules' where drawing among the
//!   whole of a pool of 64 (4.4 % above) or afresh for every lease (5.5 %) did not. Full
//!   pools only: while a pool fills, every newcomer is kept whatever its slot, so its
//!   lowest slots say little yet. And only with many clients per server:
//!   a server offers its lowest free slot, so the mean offered slot over `max_slots` grows
//!   with the pools each server serves; with 400 clients over 100 servers (about 2.5 per
//!   place) the draws cost tail and evened less (`docs/balance.md`, "A preferred
//!   connection").
//! - offer: under `max_slots` the newcomer fills a free place; at `max_slots` it replaces
//!   the held connection whose lifetime ended longest ago (in a pool that rotates, below,
//!   the lowest expired slot), whatever the two slots (soft expiry, below); failing one,
//!   the highest slot (equal ones: the latest arrival, or at random) if its slot is
//!   lower, or equal under accept-equal; else it is refused.
//! - lifetime: under a maximum age A, drawn uniformly in [A/2, 3A/2) at arrival so
//!   retirements do not synchronise; [`default_max_age`] and [`max_age_floor`] settle A
//!   from the roving interval and `max_slots`: 10 intervals, at least one per pool place
//!   (a pool that rotates, below, takes in newcomers at 10 intervals, without the floor).
//! - soft expiry: a connection past its lifetime stays in the pool, idle or leased, and is
//!   only marked replaceable (it sits at the top of the expiry heap); the next newcomer
//!   replaces it. Closing an expired connection at once (the rule before) emptied its
//!   place until the rover found another: at `max_slots` 2 half the pool, at a long roving
//!   interval or a large pool most of it (pools held far fewer than `max_slots`), and
//!   the p99 paid. With soft expiry the pool never shrinks by age, and the rotation is
//!   the same: one expired connection out per newcomer. The replacement ignores slots on
//!   purpose: requiring the newcomer's slot to be no higher than the expired one's (or
//!   than the pool's worst) helped the p99 at `max_slots` 2 but undid the rotation, and
//!   the long-run rate max/mean at 100 servers rose from 1.05 to 1.2-1.3
//!   (`docs/balance.md`).
//! - small pools keep slots: at `max_slots` ≤ [`SLOT_KEEPING_MAX_SLOTS`] (4) an expired
//!   connection is replaced only by a newcomer whose slot is no higher than its own; a
//!   higher newcomer goes on to the usual rule (replace the worst if it beats it), and the
//!   expired one waits for a better newcomer. With two to four places each one carries a
//!   quarter to a half of the client's leases, so swapping a low slot for a high one (a
//!   busier server) shows in the tail: over 4 servers at 80-95 % load the improved p99 was
//!   up to 1.8 × the original's at `max_slots` 2 and 1.15 × at 3, and with slot keeping
//!   it is within 1.00 ± 0.03 wherever the servers are not overloaded. From 8 places
//!   (the default pools of the 100-server study) the rotation is what evens the rates and
//!   the p99 is already below the original's, so larger pools keep replacing whatever the
//!   slots (`docs/balance.md`, "Small pools").
//! - rotate: under `rotate_spread_pools`, where its age is below the maximum age (the floor
//!   raised the maximum age: pools of more than 10 places at the default age), a full pool
//!   with more than half its held entries on distinct servers
//!   ([`spreads_over_many_servers`]) replaces the expired entry with the lowest slot (then
//!   the earliest arrival) instead of the one expired longest ago, and draws its newcomers'
//!   lifetimes under the age without the floor ([`unfloored_max_age`], 10 intervals). The
//!   lowest slots carry most of a pool's requests, so a server's share is remembered until
//!   they move; renewing the longest-expired place first, at an age of one interval per
//!   place, a pool of 64 over 100 servers renewed its lowest slots about once a minute at a
//!   1 s interval, and its rates remembered 15 s against 5 s for a pool of 8. Rotating,
//!   large pools remember about as briefly as pools of 8. Either change alone did little, and
//!   where no floor binds (a pool of 8) the order alone moved the mean rate max/mean by at
//!   most 0.004 either way, for no clear gain. Only pools spread over many servers:
//!   over 4 servers, where a pool of 8 or more holds each server twice or more, it re-drew
//!   at every interval which server carries a client's most-used connections, and 6 of 36
//!   cells there lost the evenness they had (`docs/balance.md`, "Large pools rotate their
//!   lowest slots first").
//! - the slow penalty's average: the first response time sets it, each later one moves it
//!   by the weight `alpha` ([`fold_ewma`]).
//! - outlier decay: under `outlier_decay`, an average above the mean of its server's other
//!   averages in the pool decays toward that mean with a half-life of
//!   [`OUTLIER_HALF_LIFE_PER_PLACE`] leases per place, counted in the pool's leases since
//!   its last sample; the lease reads the decayed value and the next response folds into
//!   it. A penalised connection is leased no more, so without decay one that drew slow
//!   responses by chance kept its average, and its penalty, for the rest of its life: at a
//!   10 s roving interval that is minutes, and which servers such connections sat on
//!   unevened the long-run rates (up to 1.09 × the mean on the worst seed over 4 servers at
//!   50 % load, 1.046 with decay). Against the server's other connections only: a slow
//!   server is slow on all of them, and decaying toward the pool's mean re-tried it until
//!   the p99 rose (`docs/balance.md`, "Outlier decay").
//! - a replaced or retired entry leaves the pool at once; if it is leased it is closed when
//!   given back, never re-entering.
//!
//! Cost: a slab of entries and three indexed heaps (idle by lowest key, held by highest key,
//! expiring by soonest), so under the original rules every decision is O(log n). A cost that
//! changes with every lease cannot sit in a heap key: the improved rules scan the idle
//! entries per lease, and random ties scan the held ones per replacement, O(P) over a
//! contiguous array, cheaper than an index per server at pool sizes (P ≤ 100). The per-server
//! lease and held counts sit in a slab each held entry points into (a map from server to
//! slab place is consulted only when an entry arrives or leaves), and the mean of the
//! averages is a running sum, so the scan does O(1) per entry with no hashing. A pool of up
//! to 8 places keeps its entries, heaps and counts inline in the book, the fields a lease
//! reads first: the simulator touches 10,000 pools at random, and there a request's cost is
//! the cache lines its pool takes to read (`docs/balance.md`, "The simulator's speed").
//! Nothing allocates once the slab and heaps have grown to the pool's size.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rand::Rng;

pub use super::age::{
    MAX_AGE_FLOOR_INTERVALS_PER_SLOT, SLOT_KEEPING_MAX_SLOTS, default_max_age,
    keeps_slots_on_expiry, max_age_floor, spreads_over_many_servers, unfloored_max_age,
};
use smallvec::SmallVec;

use super::heap::{INLINE, IndexedHeap, Order};
use super::policy::PoolPolicy;

/// `age` in nanoseconds, saturating.
fn nanos(age: std::time::Duration) -> u64 {
    u64::try_from(age.as_nanos()).unwrap_or(u64::MAX)
}

/// A connection's lifetime under maximum age `age_ns`: uniform in [age/2, 3·age/2)
/// nanoseconds (saturating; 0 for an age of 0).
pub fn lifetime<R: Rng + ?Sized>(age_ns: u64, rng: &mut R) -> u64 {
    (age_ns / 2).saturating_add(rng.random_range(0..age_ns.max(1)))
}

/// The response-time average after a response of `sample_ns`: the first sample (`old` 0)
/// sets it, each later one moves it by `alpha`. At least 1 ns, so a sampled entry never
/// reads as "no sample".
pub fn fold_ewma(old: f32, sample_ns: u64, alpha: f32) -> f32 {
    let sample = (sample_ns as f32).max(1.0);
    if old == 0.0 {
        sample
    } else {
        old + alpha * (sample - old)
    }
}

/// Whether a newcomer with `slot` replaces the worst held connection, with `worst`, in a
/// full pool: strictly lower, or equal too under accept-equal.
pub fn replaces(slot: u32, worst: u32, accept_equal: bool) -> bool {
    slot < worst || (accept_equal && slot == worst)
}

/// A connection that left the pool (replaced, or its server gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// Its entry id.
    pub id: u32,
    /// Its slot.
    pub slot: u32,
    /// Its server, when it was offered with one.
    pub server: Option<u64>,
    /// It was idle: its entry is free again and the caller closes it now. Otherwise it is
    /// leased: [`Book::give_back`] will say to close it.
    pub was_idle: bool,
}

/// What an offer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The newcomer is held in entry `id`: the pool was under `max_slots`.
    Kept {
        /// The newcomer's entry.
        id: u32,
    },
    /// The newcomer is held in entry `id`, in place of the worst held connection, which
    /// left the pool. (An idle one's entry is freed first, so `id` may be its id: the
    /// caller takes the evicted connection out before storing the newcomer.)
    Replaced {
        /// The newcomer's entry.
        id: u32,
        /// The connection it replaced.
        evicted: Left,
    },
    /// Refused: the pool is full and the slot does not beat the worst.
    Refused,
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Unused place in the slab.
    Free,
    /// Held and idle.
    Idle,
    /// Held and leased.
    Leased,
    /// Leased, and out of the pool (replaced or retired): closed when given back.
    Evicted,
}

/// One entry of the book: 32 bytes, so a lease's scan of eight reads four cache lines
/// (the slot is the key's high half, the server's presence a flag beside the state, the
/// lease count of the last sample in what was padding).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Heap key: slot in the high half, arrival in the low half.
    key: u64,
    /// The server's key, when `has_server`.
    server_key: u64,
    has_server: bool,
    /// Moving average of the response time in nanoseconds; 0 until the first sample.
    ewma: f32,
    state: State,
    /// Counted in its server's leases.
    counted: bool,
    /// Index of its server's counts in `servers` while held, when the book
    /// [`tracks_servers`](Book::tracks_servers) and the entry has a server; else
    /// [`NO_SERVER`].
    at: u32,
    /// The book's lease count at the entry's last response-time sample (or its arrival):
    /// outlier decay's clock.
    sampled: u32,
}

// Checked here, since the layout is the point (see the struct's doc).
const _: () = assert!(std::mem::size_of::<Entry>() == 32);

/// [`Entry::at`] of an entry whose server is not counted.
const NO_SERVER: u32 = u32::MAX;

/// One server's counts, while the book holds entries of it.
#[derive(Debug, Clone, Copy, Default)]
struct ServerCounts {
    /// Held entries of this server.
    held: u32,
    /// Leased held entries of this server, under least outstanding.
    leased: u32,
    /// Sum and count of its held entries' non-zero averages, under outlier decay.
    ewma_sum: f64,
    ewma_n: u32,
}

impl ServerCounts {
    /// Replaces `old` by `new` among the server's non-zero averages (0: none).
    fn fold(&mut self, old: f32, new: f32) {
        fold_sum(&mut self.ewma_sum, &mut self.ewma_n, old, new);
    }
}

/// Replaces `old` by `new` in a running sum and count of non-zero averages (0: none); an
/// emptied sum restarts at 0, so no rounding residue survives it.
fn fold_sum(sum: &mut f64, n: &mut u32, old: f32, new: f32) {
    if old > 0.0 {
        *sum -= f64::from(old);
        *n -= 1;
    }
    if new > 0.0 {
        *sum += f64::from(new);
        *n += 1;
    }
    if *n == 0 {
        *sum = 0.0;
    }
}

impl Entry {
    fn slot(&self) -> u32 {
        slot_of(self.key)
    }

    fn server(&self) -> Option<u64> {
        self.has_server.then_some(self.server_key)
    }
}

const FREE: Entry = Entry {
    key: 0,
    server_key: 0,
    has_server: false,
    ewma: 0.0,
    state: State::Free,
    counted: false,
    at: NO_SERVER,
    sampled: 0,
};

/// One pool's connections as its decisions see them, by entry id (small integers the book
/// hands out and reuses). Invariants: an entry is in `held` while it counts toward
/// `max_slots`, in `idle` exactly while held and not leased, in `expiring` while held under
/// a maximum age; an evicted leased entry is in none of them until it is given back or
/// released. When the book `tracks_servers`, a held entry with a server points (`at`) at
/// its server's counts, which live exactly while the server has a held entry; an entry is
/// `counted` in its server's leases exactly while leased and held, with a server, under
/// least outstanding.
#[derive(Debug)]
// Fields in the order a lease touches them (the policy, the idle heap, the entries, their
// servers' counts, the mean average), so a lease reads a few adjacent cache lines of one
// pool; the rest is read only by offers and departures.
#[repr(C)]
pub struct Book {
    policy: PoolPolicy,
    /// Sum and count of the held entries' non-zero averages (the slow penalty's mean).
    ewma_sum: f64,
    ewma_n: u32,
    /// Held entries whose server holds an earlier one too (the sum over servers of their
    /// count less one), when [`tracks_servers`](Self::tracks_servers).
    repeats: u32,
    idle: IndexedHeap,
    entries: SmallVec<[Entry; INLINE]>,
    /// Per-server counts (a slab indexed by [`Entry::at`]), when
    /// [`tracks_servers`](Self::tracks_servers): the lease path reads and bumps them by
    /// index, with no hashing.
    servers: SmallVec<[ServerCounts; INLINE]>,
    held: IndexedHeap,
    /// Keys: expiry times, the caller's nanoseconds.
    expiring: IndexedHeap,
    /// The policy's maximum age, nanoseconds.
    max_age_ns: Option<u64>,
    /// The age of a full pool spread over many servers, which then rotates its lowest
    /// slots first, nanoseconds; `None`: the rule is off.
    rotate_age_ns: Option<u64>,
    /// Ids of free entries.
    free: SmallVec<[u32; INLINE]>,
    /// Unused places in `servers`.
    servers_free: SmallVec<[u32; INLINE]>,
    /// Where each server with held entries has its counts in `servers`; looked up only when
    /// an entry arrives or leaves.
    server_index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    /// Arrival counter: the deterministic tie-break. It wraps after 2^32 offers, which can
    /// only swap the order of two connections with the same slot once.
    arrivals: u32,
    /// Expired entries replaced by newcomers since [`retired`](Self::retired) last read it.
    expired_replaced: usize,
    /// Scratch space for [`median_average`](Self::median_average), kept so that a lease
    /// allocates nothing once it has grown to the pool's size.
    averages: SmallVec<[f32; 2 * INLINE]>,
    /// Leases made (wrapping): outlier decay's clock.
    leases: u32,
    /// The preferred connection's entry ([`NO_ENTRY`]: none drawn), under
    /// `preferred_connection`.
    preferred: u32,
    /// Leases the preferred connection is kept for yet.
    preferred_left: u32,
    /// Running mean of the slots offered (kept or not): a server offers its lowest free
    /// slot, so this follows how many connections each server holds.
    offered_mean: f64,
    /// Offers counted in `offered_mean`, up to [`OFFERED_WINDOW`].
    offered_n: u32,
}

/// The offers `offered_mean` averages exactly before it turns into an exponential average
/// of weight 1 / 16: long enough to smooth one server's count, short enough to follow a
/// fleet that grows or shrinks within a few minutes of roving.
const OFFERED_WINDOW: u32 = 16;

/// [`Book::preferred`] when no preferred connection is drawn.
const NO_ENTRY: u32 = u32::MAX;

/// Leases a preferred connection is kept for
/// ([`PoolPolicy::preferred_connection`]). Measured over 100 servers and 1,000 clients with
/// pools of 8, drawn among the whole pool (`docs/balance.md`, "A preferred connection"):
/// redrawn for every lease the p99 at 80 % load was 57.9 ms against 55.4 ms kept for 2
/// (each client's consecutive requests scatter over more servers); kept for 5 or 10 leases
/// the long-run rates at 50 % evened less (worst seed 1.054 and 1.062 against 1.033).
pub const PREFERRED_LEASES: u32 = 2;

/// The lowest slots a preferred connection is drawn among: the whole of a pool of 8.
/// Measured over 100 servers and 1,000 clients with pools of 8, the lease kept for 2
/// (`docs/balance.md`, "A preferred connection"): among 8 the busiest server's long-run
/// rate at 50 % load was 1.034 × the mean on average over seeds 1–30, up to 1.044; among
/// the 5 lowest (damped against the pool's mean) 1.040, with 2 of the 30 seeds above 1.05,
/// for a p99 at 80 % load of 0.99 × the original rules' against 1.007 among 8. Drawing
/// among the whole of a pool of 64 raised that p99 to 1.044 × the original's: the higher
/// slots are busy servers'.
pub const PREFERRED_AMONG: usize = 8;

/// The exponent of a preferred draw's weights, 1 / (slot + 1)^0.5: a gentle lean to the
/// lowest slot among the candidates (slot 0 is drawn twice as often as slot 3).
const PREFERRED_EXPONENT: f64 = 0.5;

/// The mean offered slot per pool place ([`Book::offered_per_place`]) from which a
/// preferred connection is drawn. A server offers its lowest free slot, so the mean offered
/// slot tracks how many connections each server holds, and over `max_slots`, how many
/// pools like this one it serves: over 100 servers with pools of 8 it is about 2.5 with
/// 400 clients and about 6 with 1,000. With few pools per server each client is a large
/// part of a server's share wherever its preferred connections go, so the draw costs more
/// tail than the rates it evens: with 400 clients it raised the p99 at 95 % load to 1.026 ×
/// the original rules' and left 26 of the sweep's 63 cells above 1.05 (28 without it),
/// while with 1,000 it kept within 1.02 × of theirs and evened the rates
/// (`docs/balance.md`, "A preferred connection").
pub const PREFERRED_MIN_OFFERED_PER_PLACE: f64 = 4.0;

/// A multiplicative hash of a server key: every offer and departure looks one up, and
/// SipHash (the default, built against adversarial keys) would be most of their cost. Keys come
/// from the application (the roving client numbers its servers), not from peers, so there
/// is nobody to collide them on purpose.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the odd constant closest to 2^64 / φ spreads consecutive keys.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The slot in a key's high half.
#[inline]
fn slot_of(key: u64) -> u32 {
    (key >> 32) as u32
}

/// How [`lowest`] ranks candidates of equal cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ties {
    /// By slot, then by the key's low half (arrival): the original's order.
    Arrival,
    /// By slot, equal slots uniformly at random.
    Random,
    /// Uniformly at random whatever the slots (a small pool's spread leases).
    Spread,
    /// At random whatever the slots, each with weight 1 / (slot + 1) (slot-weighted
    /// leases).
    Weighted,
}

/// Exponent of [`latency_damped_weights`](PoolPolicy::latency_damped_weights): a weight is
/// multiplied by (pool median / average)^8 when the average is above the median. Measured
/// over 4 servers with one 3 × slow (`docs/balance.md`, "Latency-damped weights"): 4
/// damped too little (p99 71 ms against P2C over peak EWMA's 69); 12 and 16 lowered the
/// p99 by at most 0.3 ms more while a joining server's share wandered more (per-second
/// s.d. 0.095 and 0.106 of fair against 0.093), since a steeper curve moves leases on the
/// averages' noise.
const LATENCY_DAMPING: i32 = 8;

/// Half-life of [`outlier_decay`](PoolPolicy::outlier_decay), in the pool's leases per
/// place: an unused connection's excess over its server's other averages halves every
/// 16 × `max_slots` leases (128 at 8 places, a few seconds at 50 requests a second).
/// Measured over 4 servers (`docs/balance.md`, "Outlier decay"): 4 evened the rates at a
/// 10 s roving interval less (1.034 on average over seeds at 8 places, against 1.027),
/// 64 less again; 16 also leaves a 3 × slow server's p99 where it was.
pub const OUTLIER_HALF_LIFE_PER_PLACE: f32 = 16.0;

/// A candidate's weight under [`Ties::Weighted`]: 1 / (slot + 1), times its damping.
fn slot_weight(key: u64, damping: f32) -> f64 {
    f64::from(damping) / (f64::from(slot_of(key)) + 1.0)
}

/// How much latency damping leaves of the weight of an entry with response-time average
/// `ewma` against `reference` (the pool's median average for slot-weighted leases, the slow
/// penalty's threshold for a preferred draw): (reference / ewma)^8 above it, else (and
/// with no sample, or no reference) 1.
fn damping(ewma: f32, reference: f32) -> f32 {
    if reference > 0.0 && ewma > reference {
        (reference / ewma).powi(LATENCY_DAMPING)
    } else {
        1.0
    }
}

/// The id with the lowest cost among `candidates` of `(cost, key, id, damping)`, equal
/// costs ranked by `ties`. Random picks are uniform over the equal candidates (reservoir
/// sampling: the k-th equal one replaces the pick with probability 1/k), or weighted (the
/// k-th replaces it with probability its weight over the sum of the weights so far; the
/// damping multiplies the weight and counts under weighted ties only).
fn lowest<R: Rng + ?Sized>(
    candidates: impl Iterator<Item = (u32, u64, u32, f32)>,
    ties: Ties,
    rng: &mut R,
) -> Option<u32> {
    let mut best: Option<(u32, u64, u32, f32)> = None;
    let mut equal = 1u32;
    // Sum of the weights of the equal candidates so far (used by weighted ties).
    let mut weights = 0.0f64;
    for candidate in candidates {
        let (cost, key, _, damp) = candidate;
        let better = match best {
            None => {
                weights = slot_weight(key, damp);
                true
            }
            Some((best_cost, best_key, _, _)) => {
                let by_slot = match ties {
                    Ties::Spread | Ties::Weighted => Ordering::Equal,
                    Ties::Arrival | Ties::Random => slot_of(key).cmp(&slot_of(best_key)),
                };
                match cost.cmp(&best_cost).then(by_slot) {
                    Ordering::Less => {
                        equal = 1;
                        weights = slot_weight(key, damp);
                        true
                    }
                    Ordering::Greater => false,
                    Ordering::Equal if ties == Ties::Arrival => key < best_key,
                    Ordering::Equal if ties == Ties::Weighted => {
                        let weight = slot_weight(key, damp);
                        weights += weight;
                        rng.random::<f64>() * weights < weight
                    }
                    Ordering::Equal => {
                        equal = equal.saturating_add(1);
                        rng.random_range(0..equal) == 0
                    }
                }
            }
        };
        if better {
            best = Some(candidate);
        }
    }
    best.map(|(_, _, id, _)| id)
}

impl Book {
    /// An empty book deciding by `policy`, with the maximum age it reports
    /// ([`PoolPolicy::get_max_age`]; settle it first for a roving interval). The policy is
    /// taken as given: [`Pool::with_policy`](super::Pool::with_policy) is what refuses an
    /// invalid one.
    pub fn new(policy: &PoolPolicy) -> Self {
        let max_age_ns = policy.get_max_age().map(nanos);
        // Rotation lifts the floor: where its age is not below the maximum age there is no
        // floor to lift, and the order alone changed nothing measured, so it is off there.
        let rotate_age_ns = policy
            .get_rotate_spread_pools()
            .map(nanos)
            .filter(|&rotate| max_age_ns.is_some_and(|age| rotate < age));
        Self {
            policy: policy.clone(),
            max_age_ns,
            rotate_age_ns,
            entries: SmallVec::new(),
            free: SmallVec::new(),
            idle: IndexedHeap::new(Order::Min),
            held: IndexedHeap::new(Order::Max),
            expiring: IndexedHeap::new(Order::Min),
            servers: SmallVec::new(),
            servers_free: SmallVec::new(),
            server_index: HashMap::default(),
            repeats: 0,
            arrivals: 0,
            ewma_sum: 0.0,
            ewma_n: 0,
            expired_replaced: 0,
            averages: SmallVec::new(),
            leases: 0,
            preferred: NO_ENTRY,
            preferred_left: 0,
            offered_mean: 0.0,
            offered_n: 0,
        }
    }

    /// Entries held (idle and leased), counting toward `max_slots`.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.len() == 0
    }

    /// Idle entries.
    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// One past the highest entry id ever handed out (ids are below it).
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Whether entry `id` is held and idle.
    pub fn is_idle(&self, id: u32) -> bool {
        self.idle.contains(id)
    }

    /// Whether entry `id` is held (idle or leased).
    pub fn is_held(&self, id: u32) -> bool {
        self.held.contains(id)
    }

    /// The slot of entry `id`.
    pub fn slot(&self, id: u32) -> u32 {
        self.entries[id as usize].slot()
    }

    /// The server of entry `id`, when it was offered with one.
    pub fn server(&self, id: u32) -> Option<u64> {
        self.entries[id as usize].server()
    }

    /// The held entries' ids, in no particular order.
    pub fn held(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().map(|(_, id)| id)
    }

    /// Decides on a newcomer with `slot` from `server` offered at `now` (nanoseconds on the
    /// caller's clock): see the module doc. `rng` breaks ties and draws the lifetime.
    pub fn offer<R: Rng + ?Sized>(
        &mut self,
        server: Option<u64>,
        slot: u32,
        now: u64,
        rng: &mut R,
    ) -> Admission {
        self.offered_n = (self.offered_n + 1).min(OFFERED_WINDOW);
        self.offered_mean += (f64::from(slot) - self.offered_mean) / f64::from(self.offered_n);
        if self.held.len() < self.policy.max_slots {
            return Admission::Kept {
                id: self.insert(server, slot, now, self.max_age_ns, rng),
            };
        }
        if let (true, Some(server)) = (self.policy.spreads(), server) {
            if let Some(admission) = self.offer_distinct(server, slot, now, rng) {
                return admission;
            }
        }
        let keeps_slots = keeps_slots_on_expiry(self.policy.max_slots);
        // A pool spread over many servers rotates its lowest slots first, at its own age.
        let (expired, age) = match self.rotate_age_ns {
            Some(age) if self.spreads_over_many_servers() => (self.lowest_expired(now), Some(age)),
            _ => (self.expired(now), self.max_age_ns),
        };
        if let Some(expired) =
            expired.filter(|&id| !keeps_slots || slot <= self.entries[id as usize].slot())
        {
            // Soft expiry: the expired connection leaves now that one arrives to take its
            // place (the module doc says why whatever the slots, and why not in small
            // pools).
            let evicted = self.evict(expired);
            self.expired_replaced = self.expired_replaced.saturating_add(1);
            return Admission::Replaced {
                id: self.insert(server, slot, now, age, rng),
                evicted,
            };
        }
        let Some(worst) = self.worst(rng) else {
            return Admission::Refused;
        };
        let worst_slot = self.entries[worst as usize].slot();
        if !replaces(slot, worst_slot, self.policy.accept_equal) {
            return Admission::Refused;
        }
        let evicted = self.evict(worst);
        Admission::Replaced {
            id: self.insert(server, slot, now, age, rng),
            evicted,
        }
    }

    /// A full small pool that spreads keeps its places on distinct servers (see the module
    /// doc): a newcomer from a server the pool holds may only take that server's place, one
    /// from a server it does not hold takes a second place on a shared server first.
    /// `None` when neither applies: the usual rules decide.
    fn offer_distinct<R: Rng + ?Sized>(
        &mut self,
        server: u64,
        slot: u32,
        now: u64,
        rng: &mut R,
    ) -> Option<Admission> {
        let victim = {
            let server_of = |id: u32| self.entries[id as usize].server();
            let slot_of_entry = |id: u32| self.entries[id as usize].slot();
            match self
                .held()
                .filter(|&id| server_of(id) == Some(server))
                .max_by_key(|&id| slot_of_entry(id))
            {
                Some(own) if replaces(slot, slot_of_entry(own), self.policy.accept_equal) => own,
                Some(_) => return Some(Admission::Refused),
                None => self
                    .held()
                    .filter(|&id| self.held_with(id) > 1)
                    .max_by_key(|&id| slot_of_entry(id))?,
            }
        };
        let expired = self
            .expiring
            .keys()
            .any(|(expires, id)| id == victim && expires <= now);
        if expired {
            self.expired_replaced = self.expired_replaced.saturating_add(1);
        }
        let evicted = self.evict(victim);
        Some(Admission::Replaced {
            id: self.insert(Some(server), slot, now, self.max_age_ns, rng),
            evicted,
        })
    }

    /// The held entry whose lifetime ended longest ago by `now`, if any.
    fn expired(&self, now: u64) -> Option<u32> {
        self.expiring
            .peek()
            .and_then(|(expires, id)| (expires <= now).then_some(id))
    }

    /// The held entry with the lowest slot (then the earliest arrival) among those whose
    /// lifetime has ended by `now`, if any. O(P): a scan of the expiry heap.
    fn lowest_expired(&self, now: u64) -> Option<u32> {
        self.expiring
            .keys()
            .filter(|&(expires, _)| expires <= now)
            .min_by_key(|&(_, id)| self.entries[id as usize].key)
            .map(|(_, id)| id)
    }

    /// Whether this full pool is spread over many servers
    /// ([`spreads_over_many_servers`]): the servers it holds, counted when the book
    /// [`tracks_servers`](Self::tracks_servers).
    fn spreads_over_many_servers(&self) -> bool {
        spreads_over_many_servers(
            self.policy.max_slots,
            self.held.len(),
            self.server_index.len(),
        )
    }

    /// The held entry a newcomer would replace: the highest slot; equal slots the latest
    /// arrival, or uniformly at random under random ties.
    fn worst<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<u32> {
        if !self.policy.random_tie_break {
            return self.held.peek().map(|(_, id)| id);
        }
        // Inverted keys: the highest slot becomes the lowest.
        let candidates = self.held.keys().map(|(key, id)| (0, !key, id, 1.0));
        lowest(candidates, Ties::Random, rng)
    }

    /// Holds a newcomer, idle, with a lifetime drawn under `age_ns` (`None`: for good).
    fn insert<R: Rng + ?Sized>(
        &mut self,
        server: Option<u64>,
        slot: u32,
        now: u64,
        age_ns: Option<u64>,
        rng: &mut R,
    ) -> u32 {
        self.arrivals = self.arrivals.wrapping_add(1);
        let key = (u64::from(slot) << 32) | u64::from(self.arrivals);
        let entry = Entry {
            key,
            server_key: server.unwrap_or(0),
            has_server: server.is_some(),
            ewma: 0.0,
            state: State::Idle,
            counted: false,
            at: NO_SERVER,
            sampled: self.leases,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                // Ids stay below max_slots plus the evicted leases, which the pool bounds
                // below u32::MAX (`PoolPolicy` refuses larger pools).
                let id = self.entries.len() as u32;
                self.entries.push(entry);
                id
            }
        };
        self.idle.push(key, id);
        self.held.push(key, id);
        if let (true, Some(server)) = (self.tracks_servers(), server) {
            self.hold_at(id, server);
        }
        if let Some(age) = age_ns {
            self.expiring
                .push(now.saturating_add(lifetime(age, rng)), id);
        }
        id
    }

    /// Takes held entry `id` out of the pool (replaced, pruned or its server gone): an idle one is freed, a leased one is closed when given back.
    pub fn evict(&mut self, id: u32) -> Left {
        self.unhold(id);
        let was_idle = self.idle.remove(id);
        let entry = &mut self.entries[id as usize];
        if was_idle {
            entry.state = State::Free;
            self.free.push(id);
        } else {
            entry.state = State::Evicted;
        }
        Left {
            id,
            slot: entry.slot(),
            server: entry.server(),
            was_idle,
        }
    }

    /// Leases the best idle entry (see the module doc), or `None` when nothing is idle.
    /// `rng` breaks ties under random ties.
    pub fn lease<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Option<u32> {
        let id = if let Some(id) = self.lease_preferred(rng) {
            self.idle.remove(id);
            id
        } else if self.policy.scans_on_lease() {
            let ties = self.lease_ties();
            // Latency damping's reference, the median average (0: no damping).
            let damp_median = match (ties, self.policy.latency_damped_weights, self.ewma_n) {
                (Ties::Weighted, true, n) if n > 0 => self.median_average(),
                _ => 0.0,
            };
            let id = self.pick_idle(ties, damp_median, rng)?;
            self.idle.remove(id);
            id
        } else {
            self.idle.pop()?.1
        };
        self.leases = self.leases.wrapping_add(1);
        let entry = &mut self.entries[id as usize];
        entry.state = State::Leased;
        if self.policy.least_outstanding && entry.at != NO_SERVER {
            entry.counted = true;
            self.servers[entry.at as usize].leased += 1;
        }
        Some(id)
    }

    /// How a lease ranks idle entries of equal cost: at random in a small pool that spreads
    /// its leases; by slot weight under slot-weighted leases while the pool holds few
    /// servers for its places; else by slot, then at random or by arrival.
    fn lease_ties(&self) -> Ties {
        if self.policy.spreads() {
            Ties::Spread
        } else if self.policy.slot_weighted_leases && self.few_servers() {
            Ties::Weighted
        } else if self.policy.random_tie_break {
            Ties::Random
        } else {
            Ties::Arrival
        }
    }

    /// Under `preferred_connection`, in a full pool that leases the lowest slot: counts one
    /// of the preferred connection's leases (drawing a new one when it has served its
    /// leases or left the pool) and returns it when it is idle and no other lease of the
    /// pool is outstanding at its server; `None` when the rule does not apply, nothing is
    /// idle, or the preferred is out or its server busy (the lease then goes by the
    /// policy's other rules).
    fn lease_preferred<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Option<u32> {
        if !self.policy.preferred_connection
            || self.idle.len() == 0
            || self.held.len() < self.policy.max_slots
            // `offered_per_place() < PREFERRED_MIN_OFFERED_PER_PLACE`, without a division
            // on the lease path.
            || self.offered_mean < PREFERRED_MIN_OFFERED_PER_PLACE * self.policy.max_slots as f64
            || !matches!(self.lease_ties(), Ties::Random | Ties::Arrival)
        {
            return None;
        }
        if self.preferred_left == 0 || self.preferred == NO_ENTRY {
            self.preferred = self.draw_preferred(rng);
            self.preferred_left = PREFERRED_LEASES;
        }
        self.preferred_left -= 1;
        let id = self.preferred;
        if id == NO_ENTRY || !self.idle.contains(id) {
            return None;
        }
        // The slow penalty was weighed when it was drawn: the lease looks at the pool's
        // own outstanding requests only.
        let entry = &self.entries[id as usize];
        (self.cost(entry, 0.0, f32::INFINITY) == 0).then_some(id)
    }

    /// The mean offered slot (recent offers weigh most) over `max_slots`: grows with how
    /// many pools of this one's size each server serves.
    pub fn offered_per_place(&self) -> f64 {
        self.offered_mean / self.policy.max_slots.max(1) as f64
    }

    /// A held entry drawn among the [`PREFERRED_AMONG`] lowest keys by weight
    /// 1 / (slot + 1)^[`PREFERRED_EXPONENT`], times its [`damping`] against the average
    /// from which the slow penalty counts: above it, (that average / its own)^8. A
    /// connection marked by chance is still drawn now and then, so its average catches up,
    /// where leaving it out kept it marked for the rest of its life. [`NO_ENTRY`] when the
    /// pool holds nothing.
    fn draw_preferred<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        // Infinite with no penalty or no sample yet: `damping` then leaves every weight.
        let slow_over = self.slow_over();
        // The lowest keys, kept sorted by insertion: a handful, in a pool of at most a few
        // hundred.
        let mut low: SmallVec<[(u64, u32); PREFERRED_AMONG]> = SmallVec::new();
        for (key, id) in self.held.keys() {
            let at = low.partition_point(|&(k, _)| k < key);
            if at < PREFERRED_AMONG {
                if low.len() == PREFERRED_AMONG {
                    low.pop();
                }
                low.insert(at, (key, id));
            }
        }
        let mut total = 0.0f64;
        let mut pick = NO_ENTRY;
        for (key, id) in low {
            let average = self.decayed_average(&self.entries[id as usize]);
            let weight = (f64::from(slot_of(key)) + 1.0).powf(-PREFERRED_EXPONENT)
                * f64::from(damping(average, slow_over));
            total += weight;
            // Weighted reservoir sampling, as in `lowest`.
            if rng.random::<f64>() * total < weight {
                pick = id;
            }
        }
        pick
    }

    /// The response-time average from which the slow penalty counts one more lease:
    /// `threshold` × the mean of the pool's non-zero averages (two leases at twice that,
    /// ...); infinite while no entry has a sample or with no penalty.
    fn slow_over(&self) -> f32 {
        match (self.policy.slow_penalty, self.ewma_n) {
            (Some(penalty), n) if n > 0 => {
                (f64::from(penalty.get_threshold()) * self.ewma_sum / f64::from(n)) as f32
            }
            _ => f32::INFINITY,
        }
    }

    /// A lease's cost of `entry`, whose average reads `ewma`: the pool's leases at its
    /// server under least outstanding, plus its slow penalty against `slow_over`
    /// ([`slow_over`](Self::slow_over)).
    fn cost(&self, entry: &Entry, ewma: f32, slow_over: f32) -> u32 {
        let busy = match (self.policy.least_outstanding, entry.at) {
            (true, at) if at != NO_SERVER => self.servers[at as usize].leased,
            _ => 0,
        };
        // `as` saturates; 0 / inf is 0.
        let slow = (ewma / slow_over) as u32;
        busy.saturating_add(slow)
    }

    /// The idle entry with the lowest cost, equal costs ranked by `ties`, weights damped
    /// against `damp_median` (0: undamped).
    fn pick_idle<R: Rng + ?Sized>(&self, ties: Ties, damp_median: f32, rng: &mut R) -> Option<u32> {
        let slow_over = self.slow_over();
        let candidates = self.idle.keys().map(|(key, id)| {
            let entry = &self.entries[id as usize];
            let ewma = self.decayed_average(entry);
            (
                self.cost(entry, ewma, slow_over),
                key,
                id,
                damping(ewma, damp_median),
            )
        });
        lowest(candidates, ties, rng)
    }

    /// The average leases and folds read for `entry`: its own, or under outlier decay, if
    /// it stands above the mean of its server's other non-zero averages in the pool, that
    /// mean plus the excess halved every [`OUTLIER_HALF_LIFE_PER_PLACE`] × `max_slots` of
    /// the pool's leases since its last sample.
    fn decayed_average(&self, entry: &Entry) -> f32 {
        if !self.policy.outlier_decay || entry.ewma == 0.0 || entry.at == NO_SERVER {
            return entry.ewma;
        }
        let counts = &self.servers[entry.at as usize];
        // The entry's own non-zero average is in its server's sum.
        let others = counts.ewma_n.saturating_sub(1);
        if others == 0 {
            return entry.ewma;
        }
        let reference = ((counts.ewma_sum - f64::from(entry.ewma)) / f64::from(others)) as f32;
        if entry.ewma <= reference {
            return entry.ewma;
        }
        let since = self.leases.wrapping_sub(entry.sampled) as f32;
        let half_life = OUTLIER_HALF_LIFE_PER_PLACE * self.policy.max_slots as f32;
        reference + (entry.ewma - reference) * (-since / half_life).exp2()
    }

    /// The median of the held entries' non-zero response-time averages (the upper one of an
    /// even count), or 0 when none has a sample. The median, not the mean: a fail-fast
    /// server's near-zero averages drag a mean down until every healthy connection looks
    /// slow and is damped. Over 4 servers, one failing fast, that server drew 57 % of the
    /// requests when damping against the mean (exponent 12), 50 % against the median, 48 %
    /// undamped. O(held) with a selection, in the book's scratch space.
    fn median_average(&mut self) -> f32 {
        let mut averages = std::mem::take(&mut self.averages);
        averages.clear();
        averages.extend(
            self.held
                .keys()
                .map(|(_, id)| self.entries[id as usize].ewma)
                .filter(|&ewma| ewma > 0.0),
        );
        let median = if averages.is_empty() {
            0.0
        } else {
            let middle = averages.len() / 2;
            *averages
                .select_nth_unstable_by(middle, |a, b| a.total_cmp(b))
                .1
        };
        self.averages = averages;
        median
    }

    /// Takes back leased entry `id` after a response of `response_ns` (`None`: no sample),
    /// folding it into the entry's average under the slow penalty. Returns `true` when it
    /// is idle again, `false` when it had left the pool meanwhile: its entry is freed and
    /// the caller closes it.
    pub fn give_back(&mut self, id: u32, response_ns: Option<u64>) -> bool {
        if self.entries[id as usize].state == State::Evicted {
            self.release(id);
            return false;
        }
        self.uncount(id);
        if let (Some(penalty), Some(sample)) = (self.policy.slow_penalty, response_ns) {
            let entry = &self.entries[id as usize];
            let (old, at) = (entry.ewma, entry.at);
            let new = fold_ewma(self.decayed_average(entry), sample, penalty.get_alpha());
            let entry = &mut self.entries[id as usize];
            entry.ewma = new;
            entry.sampled = self.leases;
            self.fold_mean(old, new);
            if at != NO_SERVER {
                self.servers[at as usize].fold(old, new);
            }
        }
        let entry = &mut self.entries[id as usize];
        entry.state = State::Idle;
        self.idle.push(entry.key, id);
        true
    }

    /// Forgets entry `id`, idle, leased or evicted: its connection is gone (closed, broken,
    /// detached). The entry is freed.
    pub fn release(&mut self, id: u32) {
        self.unhold(id);
        self.idle.remove(id);
        self.entries[id as usize] = FREE;
        self.free.push(id);
    }

    /// How many expired entries newcomers replaced since the last call (soft expiry: an
    /// entry past its lifetime leaves only when a newcomer takes its place, in
    /// [`offer`](Self::offer), which hands it back as any replaced one). Nothing leaves
    /// here, so the pool never shrinks by age.
    pub fn retired(&mut self) -> usize {
        std::mem::take(&mut self.expired_replaced)
    }

    /// Takes every held entry of `server` out of the pool, calling `left` for each.
    /// Returns how many left. O(capacity).
    pub fn evict_server(&mut self, server: u64, mut left: impl FnMut(Left)) -> usize {
        let mut evicted = 0;
        for id in 0..self.entries.len() as u32 {
            if self.held.contains(id) && self.entries[id as usize].server() == Some(server) {
                left(self.evict(id));
                evicted += 1;
            }
        }
        evicted
    }

    /// Takes entry `id` out of what the book counts: held, expiring, its server's leases,
    /// the mean of the averages. Idempotent.
    fn unhold(&mut self, id: u32) {
        if self.preferred == id {
            // Its id may come back with a newcomer, which was not drawn.
            self.preferred = NO_ENTRY;
        }
        // Leases first: a server's counts go when its last held entry does.
        self.uncount(id);
        if self.held.remove(id) {
            let ewma = self.entries[id as usize].ewma;
            self.fold_mean(ewma, 0.0);
            self.unhold_at(id);
        }
        self.expiring.remove(id);
    }

    /// Whether the book keeps counts per server: a rule prices leases by the server's
    /// leases (least outstanding) or looks at servers held twice (slot-weighted leases, a
    /// small pool keeping its servers distinct, or a pool that rotates its lowest slots
    /// while spread over many servers). The original rules keep none.
    fn tracks_servers(&self) -> bool {
        self.policy.least_outstanding
            || self.policy.slot_weighted_leases
            || self.policy.spreads()
            || self.policy.outlier_decay
            || self.rotate_age_ns.is_some()
    }

    /// Counts newly held entry `id` at `server`, finding or making the server's counts.
    fn hold_at(&mut self, id: u32, server: u64) {
        let at = match self.server_index.get(&server) {
            Some(&at) => at,
            None => {
                let at = self.servers_free.pop().unwrap_or_else(|| {
                    // At most one place per held entry: below u32::MAX, as entry ids are.
                    self.servers.push(ServerCounts::default());
                    self.servers.len() as u32 - 1
                });
                self.server_index.insert(server, at);
                at
            }
        };
        let counts = &mut self.servers[at as usize];
        counts.held += 1;
        if counts.held > 1 {
            self.repeats += 1;
        }
        self.entries[id as usize].at = at;
    }

    /// How many held entries share held entry `id`'s server (0: its server is not counted).
    fn held_with(&self, id: u32) -> u32 {
        match self.entries[id as usize].at {
            NO_SERVER => 0,
            at => self.servers[at as usize].held,
        }
    }

    /// Whether the pool holds at least two entries per server on average (as many entries
    /// beyond each server's first as servers), counting the entries offered with a server:
    /// few servers for its places, where slot-weighted leases apply. O(1).
    fn few_servers(&self) -> bool {
        self.repeats > 0 && self.repeats as usize >= self.server_index.len()
    }

    /// Counts entry `id`, leaving the held ones, out of its server's counts (if counted
    /// there), dropping them with the server's last held entry.
    fn unhold_at(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        let at = std::mem::replace(&mut entry.at, NO_SERVER);
        if at == NO_SERVER {
            return;
        }
        let counts = &mut self.servers[at as usize];
        counts.held -= 1;
        counts.fold(entry.ewma, 0.0);
        if counts.held > 0 {
            self.repeats -= 1;
        } else if let Some(server) = entry.server() {
            self.server_index.remove(&server);
            self.servers_free.push(at);
        }
    }

    /// Replaces `old` by `new` among the non-zero averages of the mean (0: none).
    fn fold_mean(&mut self, old: f32, new: f32) {
        fold_sum(&mut self.ewma_sum, &mut self.ewma_n, old, new);
    }

    /// Stops counting entry `id` toward its server's leases.
    fn uncount(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        if std::mem::take(&mut entry.counted) {
            // Counted entries are held with a server (the struct's invariant).
            self.servers[entry.at as usize].leased -= 1;
        }
    }

    /// The response-time average of entry `id`, nanoseconds (0: no sample yet).
    pub fn ewma(&self, id: u32) -> f32 {
        self.entries[id as usize].ewma
    }

    /// This pool's leases counted at `server` (under least outstanding).
    pub fn leases_at(&self, server: u64) -> u32 {
        self.server_index
            .get(&server)
            .map_or(0, |&at| self.servers[at as usize].leased)
    }

    /// Held entries counted at `server` (tests).
    #[cfg(test)]
    pub(super) fn held_of(&self, server: u64) -> u32 {
        self.server_index
            .get(&server)
            .map_or(0, |&at| self.servers[at as usize].held)
    }

    /// The kept means of the averages, the pool's and each counted server's, against the
    /// same means summed now: the largest difference (tests).
    #[cfg(test)]
    pub(super) fn mean_drift(&self) -> f64 {
        fn drift(kept_sum: f64, kept_n: u32, all: &[f64]) -> f64 {
            assert_eq!(kept_n as usize, all.len());
            let kept = if kept_n == 0 {
                0.0
            } else {
                kept_sum / f64::from(kept_n)
            };
            let now = if all.is_empty() {
                0.0
            } else {
                all.iter().sum::<f64>() / all.len() as f64
            };
            (kept - now).abs()
        }
        let averages = |at: Option<u32>| -> Vec<f64> {
            self.held()
                .map(|id| &self.entries[id as usize])
                .filter(|entry| at.is_none_or(|at| entry.at == at))
                .map(|entry| f64::from(entry.ewma))
                .filter(|&ewma| ewma > 0.0)
                .collect()
        };
        let pool = drift(self.ewma_sum, self.ewma_n, &averages(None));
        self.server_index
            .values()
            .map(|&at| {
                let counts = &self.servers[at as usize];
                drift(counts.ewma_sum, counts.ewma_n, &averages(Some(at)))
            })
            .fold(pool, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use std::time::Duration;

    proptest! {
        /// The pick has the lowest (cost, slot); without random ties, the lowest key too.
        #[test]
        fn lowest_picks_a_minimum(
            candidates in prop::collection::vec((0u32..3, 0u32..4, 0u32..100), 0..20),
            ties in prop_oneof![
                Just(Ties::Arrival),
                Just(Ties::Random),
                Just(Ties::Spread),
                Just(Ties::Weighted),
            ],
            seed in any::<u64>(),
        ) {
            let items: Vec<(u32, u64, u32, f32)> = candidates
                .iter()
                .enumerate()
                .map(|(id, &(cost, slot, tie))| (cost, u64::from(slot) << 32 | u64::from(tie), id as u32, 1.0))
                .collect();
            let mut rng = SmallRng::seed_from_u64(seed);
            let picked = lowest(items.iter().copied(), ties, &mut rng);
            // Spread and weighted rank by cost alone: every slot counts as 0.
            let by_cost = matches!(ties, Ties::Spread | Ties::Weighted);
            let slot = |k: u64| if by_cost { 0 } else { slot_of(k) };
            let min = items.iter().map(|&(c, k, _, _)| (c, slot(k))).min();
            prop_assert_eq!(picked.is_some(), min.is_some());
            if let Some(id) = picked {
                let (cost, key, _, _) = items[id as usize];
                prop_assert_eq!(Some((cost, slot(key))), min);
                if ties == Ties::Arrival {
                    let lowest_key = items.iter().map(|&(c, k, _, _)| (c, slot_of(k), k)).min();
                    prop_assert_eq!(Some((cost, slot_of(key), key)), lowest_key);
                }
            }
        }

        /// Lifetimes stay in [age/2, 3·age/2).
        #[test]
        fn lifetimes_are_within_half_and_three_halves_of_the_age(
            age in 1u64..u64::MAX / 2,
            seed in any::<u64>(),
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let life = lifetime(age, &mut rng);
            prop_assert!(life >= age / 2 && life < age / 2 + age);
        }
    }

    /// How often each of `items` (ids 0, 1, …) is picked in `n` picks by `ties`, undamped.
    fn picks(items: &[(u32, u64, u32)], ties: Ties, n: u32, seed: u64) -> Vec<u32> {
        let items: Vec<_> = items.iter().map(|&(c, k, id)| (c, k, id, 1.0)).collect();
        damped_picks(&items, ties, n, seed)
    }

    /// How often each of `items` (ids 0, 1, …) is picked in `n` picks by `ties`.
    fn damped_picks(items: &[(u32, u64, u32, f32)], ties: Ties, n: u32, seed: u64) -> Vec<u32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u32; items.len()];
        for _ in 0..n {
            if let Some(id) = lowest(items.iter().copied(), ties, &mut rng) {
                counts[id as usize] += 1;
            }
        }
        counts
    }

    #[test]
    fn damping_keeps_weights_up_to_the_median_and_cuts_them_by_the_eighth_power_above() {
        assert_eq!(damping(0.0, 10.0), 1.0);
        assert_eq!(damping(8.0, 10.0), 1.0);
        assert_eq!(damping(10.0, 10.0), 1.0);
        assert_eq!(damping(20.0, 10.0), 1.0 / 256.0);
        assert!((damping(11.0, 10.0) - (10.0f32 / 11.0).powi(8)).abs() < 1e-6);
        // No mean (no sample in the pool, or the rule off): no damping.
        assert_eq!(damping(20.0, 0.0), 1.0);
    }

    #[test]
    fn damped_weights_multiply_the_slot_weights_and_random_ties_ignore_them() {
        // Slots 0 and 1 (weights 1 and 1/2); slot 0 damped to 1/4: shares 1/3 and 2/3 of
        // 3,000 picks (±6 σ = ±155); under random ties slot 0 always.
        let items = [(0, 0, 0, 0.25), (0, 1 << 32, 1, 1.0)];
        let counts = damped_picks(&items, Ties::Weighted, 3000, 19);
        assert!(
            counts[0].abs_diff(1000) <= 155 && counts[1].abs_diff(2000) <= 155,
            "{counts:?}"
        );
        assert_eq!(damped_picks(&items, Ties::Random, 100, 19), [100, 0]);
    }

    #[test]
    fn random_ties_pick_each_equal_candidate_about_as_often() {
        // Four equal candidates, one worse: 4,000 picks, each ~1,000 (±6 σ = ±164).
        let items = [
            (1, 7 << 32, 0),
            (0, 5 << 32 | 9, 1),
            (0, 5 << 32 | 1, 2),
            (0, 5 << 32, 3),
            (0, 5 << 32 | 3, 4),
        ];
        let counts = picks(&items, Ties::Random, 4000, 7);
        assert_eq!(counts[0], 0);
        assert!(
            counts[1..].iter().all(|&n| (836..=1164).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn spread_picks_each_candidate_of_the_lowest_cost_about_as_often_whatever_its_slot() {
        // Three of cost 0 with slots 0, 5 and 9; one of cost 1 and slot 0: 3,000 picks,
        // each of cost 0 ~1,000 (±6 σ = ±155).
        let items = [(0, 0, 0), (0, 5 << 32, 1), (0, 9 << 32 | 4, 2), (1, 0, 3)];
        let counts = picks(&items, Ties::Spread, 3000, 11);
        assert_eq!(counts[3], 0);
        assert!(
            counts[..3].iter().all(|&n| (845..=1155).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn weighted_picks_each_candidate_of_the_lowest_cost_by_one_over_slot_plus_one() {
        // Cost 0 with slots 0, 1 and 3 (weights 1, 1/2, 1/4: shares 4/7, 2/7, 1/7); one of
        // cost 1 and slot 0. 7,000 picks: ~4,000, 2,000 and 1,000 (±6 σ: ±249, ±226, ±176).
        let items = [(0, 1 << 32 | 2, 0), (1, 0, 1), (0, 3 << 32, 2), (0, 5, 3)];
        let counts = picks(&items, Ties::Weighted, 7000, 13);
        assert_eq!(counts[1], 0);
        let within = |n: u32, mean: u32, band: u32| n.abs_diff(mean) <= band;
        assert!(
            within(counts[3], 4000, 249)
                && within(counts[0], 2000, 226)
                && within(counts[2], 1000, 176),
            "{counts:?}"
        );
    }

    /// Leases every idle entry, then gives each back after a response of `ms(book, id)`
    /// milliseconds.
    fn answer_each_once(book: &mut Book, rng: &mut SmallRng, ms: impl Fn(&Book, u32) -> u64) {
        let all: Vec<u32> = std::iter::from_fn(|| book.lease(rng)).collect();
        for id in all {
            let ms = ms(book, id);
            assert!(book.give_back(id, Some(ms * 1_000_000)));
        }
    }

    /// How many of `n` leases, each given straight back, go to each slot below `N`.
    fn leases_by_slot<const N: usize>(book: &mut Book, rng: &mut SmallRng, n: u32) -> [u32; N] {
        let mut by_slot = [0u32; N];
        for _ in 0..n {
            let id = book.lease(rng).expect("an idle entry");
            by_slot[book.slot(id) as usize] += 1;
            assert!(book.give_back(id, None));
        }
        by_slot
    }

    /// A pool of 10 with the improved policy holding slots 0 to 9, each on its own server,
    /// that has also been offered (and refused) `busy` connections of slot 120, as from
    /// busy servers.
    fn ten_on_distinct_servers_offered(busy: u32) -> (Book, SmallRng) {
        let mut book = Book::new(&PoolPolicy::improved().max_slots(10).max_age(None));
        let mut rng = SmallRng::seed_from_u64(23);
        for slot in 0..10 {
            book.offer(Some(u64::from(slot)), slot, 0, &mut rng);
        }
        for server in 0..busy {
            let admission = book.offer(Some(u64::from(100 + server)), 120, 0, &mut rng);
            assert!(matches!(admission, Admission::Refused));
        }
        (book, rng)
    }

    /// [`ten_on_distinct_servers_offered`] with enough refused offers that the mean
    /// offered slot per place passes [`PREFERRED_MIN_OFFERED_PER_PLACE`].
    fn ten_on_distinct_servers() -> (Book, SmallRng) {
        let (book, rng) = ten_on_distinct_servers_offered(24);
        assert!(book.offered_per_place() >= PREFERRED_MIN_OFFERED_PER_PLACE);
        (book, rng)
    }

    #[test]
    fn a_pool_offered_low_slots_leases_the_lowest_slot() {
        // Offered only its own slots 0 to 9, then one of 120: a mean offered slot of 15, or
        // 1.5 per place, under the 4 from which a preferred connection is drawn.
        for busy in [0, 1] {
            let (mut book, mut rng) = ten_on_distinct_servers_offered(busy);
            assert!(book.offered_per_place() < PREFERRED_MIN_OFFERED_PER_PLACE);
            let counts = leases_by_slot::<10>(&mut book, &mut rng, 500);
            assert_eq!(
                counts,
                [500, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "{busy} busy offers"
            );
        }
    }

    #[test]
    fn the_mean_offered_slot_per_place_follows_the_offers() {
        let mut book = Book::new(&PoolPolicy::improved().max_slots(4).max_age(None));
        let mut rng = SmallRng::seed_from_u64(5);
        assert_eq!(book.offered_per_place(), 0.0);
        for (n, slot) in [10, 30].into_iter().enumerate() {
            book.offer(Some(n as u64), slot, 0, &mut rng);
        }
        // The exact mean of the first offers: (10 + 30) / 2 over 4 places.
        assert!((book.offered_per_place() - 5.0).abs() < 1e-9);
        // Then an exponential average that moves to a new level within a few windows.
        for n in 0..20 * OFFERED_WINDOW {
            book.offer(Some(u64::from(n) + 10), 400, 0, &mut rng);
        }
        assert!((book.offered_per_place() - 100.0).abs() < 0.1);
    }

    #[test]
    fn a_preferred_connection_is_drawn_among_the_lowest_slots_by_weight_and_kept_for_two_leases() {
        let (mut book, mut rng) = ten_on_distinct_servers();
        let draws = 3000u32;
        let mut leased = Vec::new();
        for _ in 0..draws * PREFERRED_LEASES {
            let id = book.lease(&mut rng).expect("an idle entry");
            leased.push(book.slot(id));
            assert!(book.give_back(id, None));
        }
        // Kept for two leases: every pair of leases is one draw.
        assert!(
            leased.chunks(2).all(|pair| pair[0] == pair[1]),
            "{leased:?}"
        );
        let mut counts = [0u32; 10];
        for pair in leased.chunks(2) {
            counts[pair[0] as usize] += 1;
        }
        // Never beyond the 8 lowest slots; among them by 1 / √(slot + 1), ±6 σ.
        assert_eq!(counts[PREFERRED_AMONG..], [0, 0]);
        let weights: Vec<f64> = (0..PREFERRED_AMONG)
            .map(|slot| 1.0 / (slot as f64 + 1.0).sqrt())
            .collect();
        let total: f64 = weights.iter().sum();
        for (slot, weight) in weights.iter().enumerate() {
            let p = weight / total;
            let mean = p * f64::from(draws);
            let band = 6.0 * (mean * (1.0 - p)).sqrt();
            assert!(
                (f64::from(counts[slot]) - mean).abs() <= band,
                "slot {slot}: {counts:?}"
            );
        }
    }

    /// How many of `draws` preferred draws (each kept for its two leases, given straight
    /// back) go to each slot of a pool holding slots 0 to 9.
    fn draws_by_slot(book: &mut Book, rng: &mut SmallRng, draws: u32) -> [u32; 10] {
        let mut counts = [0u32; 10];
        for _ in 0..draws {
            let first = book.lease(rng).expect("an idle entry");
            assert!(book.give_back(first, None));
            let second = book.lease(rng).expect("an idle entry");
            assert_eq!(book.slot(first), book.slot(second));
            assert!(book.give_back(second, None));
            counts[book.slot(first) as usize] += 1;
        }
        counts
    }

    #[test]
    fn a_connection_far_slower_than_the_pool_is_not_drawn() {
        let (mut book, mut rng) = ten_on_distinct_servers();
        // Every connection answers once: slot 0 in 100 ms, the others in 1 ms. The slow
        // penalty counts from 1.5 × the pool's mean average, 16.4 ms, and slot 0's weight
        // is damped by (16.4 / 100)^8, 5e-7; alone on its server, its average does not
        // decay.
        answer_each_once(&mut book, &mut rng, |book, id| {
            if book.slot(id) == 0 { 100 } else { 1 }
        });
        let counts = draws_by_slot(&mut book, &mut rng, 2000);
        assert_eq!([counts[0], counts[8], counts[9]], [0, 0, 0], "{counts:?}");
        assert!(counts[1..8].iter().all(|&n| n > 0), "{counts:?}");
    }

    #[test]
    fn a_connection_a_little_slow_is_drawn_by_a_damped_weight() {
        let (mut book, mut rng) = ten_on_distinct_servers();
        // Slot 0 answers in 2 ms, the others in 1 ms: the penalty counts from 1.5 × 1.1 ms,
        // so slot 0's weight is (1.65 / 2)^8 = 0.215 of its 1; the others keep
        // 1 / √(slot + 1).
        answer_each_once(
            &mut book,
            &mut rng,
            |book, id| {
                if book.slot(id) == 0 { 2 } else { 1 }
            },
        );
        let draws = 4000u32;
        let counts = draws_by_slot(&mut book, &mut rng, draws);
        let damped = (1.65f64 / 2.0).powi(LATENCY_DAMPING);
        let others: f64 = (1..PREFERRED_AMONG)
            .map(|slot| 1.0 / (slot as f64 + 1.0).sqrt())
            .sum();
        let p = damped / (damped + others);
        let mean = p * f64::from(draws);
        let band = 6.0 * (mean * (1.0 - p)).sqrt();
        assert!(
            (f64::from(counts[0]) - mean).abs() <= band,
            "slot 0 drawn {} times, expected {mean:.0} ± {band:.0}",
            counts[0]
        );
    }

    #[test]
    fn while_the_preferred_is_out_a_lease_takes_the_lowest_slot_of_the_lowest_cost() {
        let (mut book, mut rng) = ten_on_distinct_servers();
        for _ in 0..200 {
            let preferred = book.lease(&mut rng).expect("an idle entry");
            // Its second lease: it is out, so the lowest idle slot on another server.
            let other = book.lease(&mut rng).expect("an idle entry");
            let expected = if book.slot(preferred) == 0 { 1 } else { 0 };
            assert_eq!(book.slot(other), expected);
            assert!(book.give_back(other, None) && book.give_back(preferred, None));
        }
    }

    #[test]
    fn a_preferred_connection_that_leaves_is_drawn_again_among_those_held() {
        for seed in 0..50 {
            let (mut book, _) = ten_on_distinct_servers();
            let mut rng = SmallRng::seed_from_u64(seed);
            // Drawn, with one lease left.
            let preferred = book.lease(&mut rng).expect("an idle entry");
            let server = book.server(preferred).expect("a server");
            assert!(book.give_back(preferred, None));
            // Its server goes, and a newcomer of slot 12 takes its entry id: it was not
            // drawn, and is not among the 8 lowest slots.
            assert_eq!(book.evict_server(server, |_| {}), 1);
            let Admission::Kept { id } = book.offer(Some(99), 12, 0, &mut rng) else {
                panic!("a free place");
            };
            assert_eq!(id, preferred);
            let next = book.lease(&mut rng).expect("an idle entry");
            assert_ne!(book.slot(next), 12, "seed {seed}");
        }
    }

    /// How often a pool of `max_slots` holding `(server, slot)` (no maximum age) leases
    /// each slot, in `n` leases each given straight back.
    fn lease_counts(policy: &PoolPolicy, held: &[(u64, u32)], n: u32) -> Vec<(u32, u32)> {
        let mut book = Book::new(&policy.clone().max_age(None));
        let mut rng = SmallRng::seed_from_u64(17);
        for &(server, slot) in held {
            book.offer(Some(server), slot, 0, &mut rng);
        }
        let mut counts: Vec<(u32, u32)> = held.iter().map(|&(_, slot)| (slot, 0)).collect();
        for _ in 0..n {
            let id = book.lease(&mut rng).expect("an idle entry");
            let slot = book.slot(id);
            if let Some(count) = counts.iter_mut().find(|(s, _)| *s == slot) {
                count.1 += 1;
            }
            assert!(book.give_back(id, None));
        }
        counts
    }

    #[test]
    fn a_pool_with_two_places_per_server_leases_by_slot_weight_and_others_the_lowest() {
        let weighted = PoolPolicy::improved()
            .max_slots(8)
            .preferred_connection(false);
        // Distinct servers, or one server twice among three: always the lowest slot.
        for held in [
            &[(0, 4), (1, 0), (2, 9)][..],
            &[(0, 4), (1, 0), (2, 9), (0, 1)],
        ] {
            let counts = lease_counts(&weighted, held, 500);
            assert!(
                counts
                    .iter()
                    .all(|&(slot, n)| n == if slot == 0 { 500 } else { 0 })
            );
        }
        // Two servers, two places each: slots 0, 1, 3, 4 by weights 1, 1/2, 1/4, 1/5 (shares
        // 20/39, 10/39, 5/39, 4/39 of 3,900 leases: 2,000, 1,000, 500, 400; ±6 σ).
        let twice = [(0, 4), (1, 0), (1, 3), (0, 1)];
        let counts = lease_counts(&weighted, &twice, 3900);
        let expected = [(4, 400, 111), (0, 2000, 188), (3, 500, 122), (1, 1000, 159)];
        for (&(slot, n), (want_slot, mean, band)) in counts.iter().zip(expected) {
            assert_eq!(slot, want_slot);
            assert!(n.abs_diff(mean) <= band, "{counts:?}");
        }
        // The rule off: the lowest slot again.
        let off = weighted.slot_weighted_leases(false);
        assert_eq!(
            lease_counts(&off, &twice, 500),
            [(4, 0), (0, 500), (3, 0), (1, 0)]
        );
    }

    #[test]
    fn latency_damping_moves_weighted_leases_off_a_slower_server() {
        // Server 0 answers in 20 ms, server 1 in 10 ms. The mean average stays below the
        // slow penalty's 1.5 ×, so only damping acts, against the median average.
        let shares = |policy: &PoolPolicy, held: &[(u64, u32)]| {
            let mut book = Book::new(&policy.clone().max_age(None));
            let mut rng = SmallRng::seed_from_u64(23);
            for &(server, slot) in held {
                book.offer(Some(server), slot, 0, &mut rng);
            }
            answer_each_once(&mut book, &mut rng, |book, id| {
                if book.server(id) == Some(0) { 20 } else { 10 }
            });
            leases_by_slot::<5>(&mut book, &mut rng, 10_000)
        };
        let damped = PoolPolicy::improved().max_slots(8);
        let plain = damped.clone().latency_damped_weights(false);
        // Three places on server 1, two on server 0: the median is 10 ms, server 0's
        // weights × (10/20)^8 = 1/256. Weights 1 (slot 0), 1/3 (slot 2), 1/4 (slot 3), and
        // 1/512 and 1/1280 for slots 1 and 4: of 10,000 leases 6,305, 2,102, 1,576 and 17
        // together (±6 σ).
        let five = [(0, 4), (1, 0), (1, 3), (0, 1), (1, 2)];
        let by_slot = shares(&damped, &five);
        assert!(by_slot[1] + by_slot[4] <= 42, "{by_slot:?}");
        for (slot, mean, band) in [(0, 6305, 290), (2, 2102, 245), (3, 1576, 219)] {
            assert!(by_slot_within(by_slot[slot], mean, band), "{by_slot:?}");
        }
        // Undamped: weights 1, 1/2, 1/3, 1/4, 1/5 by slot.
        let by_slot = shares(&plain, &five);
        let expected = [
            (0, 4380, 298),
            (1, 2190, 248),
            (2, 1460, 212),
            (3, 1095, 187),
            (4, 876, 170),
        ];
        for (slot, mean, band) in expected {
            assert!(by_slot_within(by_slot[slot], mean, band), "{by_slot:?}");
        }
        // Two places each: the median is the upper of 10, 10, 20, 20, so nothing is damped
        // (half the pool is not slow): the same leases as undamped.
        let four = &five[..4];
        assert_eq!(shares(&damped, four), shares(&plain, four));
    }

    fn by_slot_within(n: u32, mean: u32, band: u32) -> bool {
        n.abs_diff(mean) <= band
    }

    #[test]
    fn a_departed_servers_counts_are_reused_fresh_by_the_next_server() {
        let policy = PoolPolicy::improved().max_slots(8).max_age(None);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(5);
        let Admission::Kept { id: first } = book.offer(Some(10), 4, 0, &mut rng) else {
            panic!("kept");
        };
        assert_eq!(book.lease(&mut rng), Some(first));
        assert_eq!((book.leases_at(10), book.held_of(10)), (1, 1));
        // Leased and evicted: server 10 holds nothing, its counts' place is free.
        book.evict(first);
        assert_eq!((book.leases_at(10), book.held_of(10)), (0, 0));
        assert!(book.server_index.is_empty());
        // Server 11 takes the freed place, starting from zero.
        let Admission::Kept { id: second } = book.offer(Some(11), 2, 0, &mut rng) else {
            panic!("kept");
        };
        assert_eq!(book.servers.len(), 1);
        assert_eq!((book.leases_at(11), book.held_of(11)), (0, 1));
        // The evicted lease's return counts nothing anywhere.
        assert!(!book.give_back(first, None));
        assert_eq!((book.leases_at(11), book.held_of(11)), (0, 1));
        assert_eq!(book.lease(&mut rng), Some(second));
        assert_eq!(book.leases_at(11), 1);
        assert!(book.give_back(second, None));
        assert_eq!(book.leases_at(11), 0);
    }

    #[test]
    fn the_repeat_count_follows_servers_held_twice_and_tells_few_servers() {
        let policy = PoolPolicy::improved().max_slots(5).max_age(None);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(3);
        for (server, slot) in [(0, 6), (1, 2), (0, 5), (0, 7), (2, 1)] {
            book.offer(Some(server), slot, 0, &mut rng);
        }
        assert_eq!(book.repeats, 2);
        // Full: server 3's slot 0 replaces the worst, server 0's slot 7.
        assert!(matches!(
            book.offer(Some(3), 0, 0, &mut rng),
            Admission::Replaced {
                evicted: Left { slot: 7, .. },
                ..
            }
        ));
        assert_eq!(book.repeats, 1);
        let gone = book.evict_server(0, |_| {});
        assert_eq!((gone, book.repeats, book.server_index.len()), (2, 0, 3));
        // Leased and evicted: counted out at eviction, not again at the return.
        book.offer(Some(1), 3, 0, &mut rng);
        assert_eq!(book.repeats, 1);
        let leased: Vec<u32> = std::iter::from_fn(|| book.lease(&mut rng)).collect();
        let second_on_1 = leased
            .into_iter()
            .find(|&id| book.server(id) == Some(1) && book.slot(id) == 3)
            .expect("leased");
        book.evict(second_on_1);
        assert_eq!((book.repeats, book.held_of(1)), (0, 1));
        assert!(!book.give_back(second_on_1, None));
        assert_eq!((book.repeats, book.held_of(1)), (0, 1));
        // Few servers: at least two entries per server held, on average.
        let mut book = Book::new(&policy);
        for (server, slot, few) in [(0, 1, false), (0, 2, true), (1, 3, false), (1, 4, true)] {
            book.offer(Some(server), slot, 0, &mut rng);
            assert_eq!(book.few_servers(), few, "after ({server}, {slot})");
        }
        // Entries offered without a server count for nothing.
        let mut book = Book::new(&policy);
        book.offer(None, 1, 0, &mut rng);
        book.offer(None, 2, 0, &mut rng);
        assert!(!book.few_servers());
    }

    /// Offers `(server, slot)` in turn to a small improved pool of `max_slots` (no maximum
    /// age) and returns the book with what the last offer decided.
    fn offers(max_slots: usize, offers: &[(u64, u32)]) -> (Book, Admission) {
        let policy = PoolPolicy::improved().max_slots(max_slots).max_age(None);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(9);
        let mut last = Admission::Refused;
        for &(server, slot) in offers {
            last = book.offer(Some(server), slot, 0, &mut rng);
        }
        (book, last)
    }

    fn servers_held(book: &Book) -> Vec<(u64, u32)> {
        let mut held: Vec<(u64, u32)> = book
            .held()
            .map(|id| {
                let entry = &book.entries[id as usize];
                (entry.server().unwrap_or(u64::MAX), entry.slot())
            })
            .collect();
        held.sort_unstable();
        held
    }

    #[test]
    fn a_full_small_pool_takes_a_held_server_only_in_its_own_place() {
        // Servers 0 and 1 held with slots 5 and 1. Server 1 again with slot 3 beats the worst
        // (5) but may only take server 1's place, which has a better slot: refused. With
        // slot 0 it replaces server 1's place.
        let (book, last) = offers(2, &[(0, 5), (1, 1), (1, 3)]);
        assert_eq!(last, Admission::Refused);
        assert_eq!(servers_held(&book), vec![(0, 5), (1, 1)]);
        let (book, last) = offers(2, &[(0, 5), (1, 1), (1, 0)]);
        assert!(matches!(last, Admission::Replaced { evicted, .. } if evicted.slot == 1));
        assert_eq!(servers_held(&book), vec![(0, 5), (1, 0)]);
    }

    #[test]
    fn a_server_new_to_a_full_small_pool_replaces_a_second_place_on_a_shared_server() {
        // Under max_slots the pool fills whatever the servers: two places on server 0. A
        // newcomer from server 2 takes the higher of them even with a higher slot, and the
        // pool ends on three distinct servers.
        let (book, last) = offers(3, &[(0, 1), (0, 2), (1, 0), (2, 7)]);
        assert!(matches!(last, Admission::Replaced { evicted, .. } if evicted.slot == 2));
        assert_eq!(servers_held(&book), vec![(0, 1), (1, 0), (2, 7)]);
        // On distinct servers, a new server goes by the usual rules: it must beat the worst.
        let (_, last) = offers(3, &[(0, 1), (1, 0), (2, 7), (3, 8)]);
        assert_eq!(last, Admission::Refused);
        let (book, _) = offers(3, &[(0, 1), (1, 0), (2, 7), (3, 6)]);
        assert_eq!(servers_held(&book), vec![(0, 1), (1, 0), (3, 6)]);
    }

    #[test]
    fn larger_pools_and_the_original_hold_a_server_more_than_once() {
        let policy = PoolPolicy::improved()
            .max_slots(SLOT_KEEPING_MAX_SLOTS + 1)
            .max_age(None);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(9);
        for slot in 0..=SLOT_KEEPING_MAX_SLOTS as u32 {
            book.offer(Some(0), slot + 1, 0, &mut rng);
        }
        // Full with five places on server 0: slot 0 from server 0 replaces the worst.
        assert!(matches!(
            book.offer(Some(0), 0, 0, &mut rng),
            Admission::Replaced { evicted, .. } if evicted.slot == 5
        ));
        let mut original = Book::new(&PoolPolicy::original().max_slots(2));
        original.offer(Some(0), 5, 0, &mut rng);
        original.offer(Some(1), 1, 0, &mut rng);
        assert!(matches!(
            original.offer(Some(1), 3, 0, &mut rng),
            Admission::Replaced { evicted, .. } if evicted.slot == 5
        ));
    }

    #[test]
    fn only_small_pools_of_a_spreading_policy_spread() {
        let improved = PoolPolicy::improved();
        assert!(improved.clone().max_slots(SLOT_KEEPING_MAX_SLOTS).spreads());
        assert!(
            !improved
                .clone()
                .max_slots(SLOT_KEEPING_MAX_SLOTS + 1)
                .spreads()
        );
        assert!(!improved.max_slots(2).spread_small_pools(false).spreads());
        assert!(!PoolPolicy::original().max_slots(2).spreads());
    }

    #[test]
    fn the_default_age_is_ten_intervals_never_below_one_per_slot() {
        let ms = Duration::from_millis;
        assert_eq!(default_max_age(ms(100), 4), ms(1000));
        assert_eq!(default_max_age(ms(100), 8), ms(1000));
        assert_eq!(default_max_age(ms(100), 16), ms(1600));
        assert_eq!(max_age_floor(ms(100), 8), ms(800));
        assert_eq!(default_max_age(Duration::MAX, usize::MAX), Duration::MAX);
        assert_eq!(lifetime(0, &mut SmallRng::seed_from_u64(1)), 0);
    }

    /// A book under the slow penalty (with or without outlier decay), holding `(server,
    /// slot, response ms)` in that arrival order, each leased once and given back with its
    /// response time. Returns the book and the entries' ids.
    fn sampled_book(decay: bool, held: &[(u64, u32, u64)]) -> (Book, Vec<u32>, SmallRng) {
        let policy = PoolPolicy::original()
            .max_slots(8)
            .slow_penalty(Some(crate::SlowPenalty::default()))
            .outlier_decay(decay);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(3);
        let ids: Vec<u32> = held
            .iter()
            .map(
                |&(server, slot, _)| match book.offer(Some(server), slot, 0, &mut rng) {
                    Admission::Kept { id } => id,
                    other => panic!("not kept: {other:?}"),
                },
            )
            .collect();
        let leased: Vec<u32> = std::iter::from_fn(|| book.lease(&mut rng)).collect();
        assert_eq!(leased.len(), ids.len());
        for (&id, &(_, _, ms)) in ids.iter().zip(held) {
            assert!(book.give_back(id, Some(ms * 1_000_000)));
        }
        (book, ids, rng)
    }

    /// Leases and gives back (no sample) until entry `id` is leased; how many leases that
    /// took, if within `limit`.
    fn leases_until(book: &mut Book, id: u32, limit: u32, rng: &mut SmallRng) -> Option<u32> {
        (1..=limit).find(|_| {
            let got = book.lease(rng).expect("an idle entry");
            assert!(book.give_back(got, None));
            got == id
        })
    }

    #[test]
    fn outlier_decay_forgets_a_chance_slow_average_and_folds_the_next_response_into_it() {
        // Server 1 answered once in 30 ms on its slot-0 connection and in 10 ms on the
        // other; the 30 ms average is 1.8 × the pool's mean (50 / 3), over the penalty's
        // 1.5, so slot 0 of server 2 takes every lease.
        let held = [(1, 0, 30), (1, 1, 10), (2, 0, 10)];
        let (mut book, ids, mut rng) = sampled_book(false, &held);
        assert_eq!(leases_until(&mut book, ids[0], 1_000, &mut rng), None);
        let (mut book, ids, mut rng) = sampled_book(true, &held);
        // Decayed toward its sibling's 10 ms, it falls under the 25 ms threshold once its
        // 20 ms excess is under 15: log2(4 / 3) half-lives of 128 leases after its sample
        // (53.1 leases), so the 55th lease from here takes it.
        assert_eq!(leases_until(&mut book, ids[0], 1_000, &mut rng), Some(55));
        // The next response (10 ms) folds into the decayed 24.85 ms (55 leases on), not
        // the 30 it had: 21.9 ms, where 30 would give 26.
        assert_eq!(book.lease(&mut rng), Some(ids[0]));
        assert!(book.give_back(ids[0], Some(10_000_000)));
        assert!(book.ewma(ids[0]) > 21e6 && book.ewma(ids[0]) < 22e6);
        assert!(book.mean_drift() < 1e-6);
    }

    #[test]
    fn outlier_decay_keeps_a_server_slow_on_every_connection_and_a_lone_connection() {
        // Server 1 is slow on both its connections (40 ms against a mean of 25): neither
        // is an outlier of its server, so both stay penalised.
        let held = [(1, 0, 40), (1, 1, 40), (2, 0, 10), (2, 1, 10)];
        let (mut book, ids, mut rng) = sampled_book(true, &held);
        assert_eq!(leases_until(&mut book, ids[0], 2_000, &mut rng), None);
        assert_eq!(leases_until(&mut book, ids[1], 2_000, &mut rng), None);
        // A connection alone on its server has nothing to be an outlier against.
        let held = [(1, 0, 40), (2, 0, 10), (2, 1, 10)];
        let (mut book, ids, mut rng) = sampled_book(true, &held);
        assert_eq!(leases_until(&mut book, ids[0], 2_000, &mut rng), None);
    }

    #[test]
    fn the_first_response_sets_the_average_and_later_ones_move_it_by_alpha() {
        assert_eq!(fold_ewma(0.0, 9_000_000, 0.2), 9e6);
        assert_eq!(fold_ewma(9e6, 0, 0.2), 9e6 + 0.2 * (1.0 - 9e6));
        assert_eq!(fold_ewma(0.0, 0, 0.2), 1.0);
    }

    #[test]
    fn equal_slots_lease_by_arrival_and_the_latest_arrival_is_replaced_first() {
        let policy = PoolPolicy::original().max_slots(3);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(1);
        let ids: Vec<u32> = [(9, 5), (4, 5), (7, 5)]
            .into_iter()
            .map(
                |(server, slot)| match book.offer(Some(server), slot, 0, &mut rng) {
                    Admission::Kept { id } => id,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(book.offer(Some(1), 5, 0, &mut rng), Admission::Refused);
        assert_eq!(book.lease(&mut rng), Some(ids[0]));
        match book.offer(Some(1), 4, 0, &mut rng) {
            Admission::Replaced { evicted, .. } => assert_eq!(
                evicted,
                Left {
                    id: ids[2],
                    slot: 5,
                    server: Some(7),
                    was_idle: true
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    /// Fills an improved pool of `max_slots` with slots 0, 1, … at time 0 under a 1 s
    /// maximum age and offers slot `slot` at 10 s, when every connection has expired.
    fn offer_after_expiry(max_slots: usize, slot: u32) -> Admission {
        let policy = PoolPolicy::improved()
            .max_slots(max_slots)
            .max_age(Some(Duration::from_secs(1)));
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(3);
        for s in 0..max_slots as u32 {
            book.offer(Some(u64::from(s)), s, 0, &mut rng);
        }
        book.offer(Some(99), slot, 10_000_000_000, &mut rng)
    }

    #[test]
    fn small_pools_replace_an_expired_connection_only_with_a_slot_no_higher() {
        assert!(keeps_slots_on_expiry(SLOT_KEEPING_MAX_SLOTS));
        assert!(!keeps_slots_on_expiry(SLOT_KEEPING_MAX_SLOTS + 1));
        // Two places, slots 0 and 1, both expired: slot 1 replaces only the expired slot
        // 1 (equal), never the slot 0; slot 2 beats neither and is refused.
        for _ in 0..20 {
            match offer_after_expiry(2, 1) {
                Admission::Replaced { evicted, .. } => assert_eq!(evicted.slot, 1),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(offer_after_expiry(2, 2), Admission::Refused);
        // Eight places: soft expiry replaces whatever the slots, a slot 9 included.
        assert!(matches!(
            offer_after_expiry(8, 9),
            Admission::Replaced { .. }
        ));
    }

    const SECOND: u64 = 1_000_000_000;

    /// Fills an improved pool of 8 places (2 s maximum age; spread pools `rotate`) with
    /// slots 7, 6, …, 0 offered one every 3 s from time 0, slot `7 - i` from server
    /// `i % servers`, so lifetimes end in that order, and offers slot 5 from a new server at
    /// 100 s, when all have ended. The evicted slot and how long the newcomer lives.
    fn rotation(servers: u64, rotate: Option<Duration>) -> (u32, u64) {
        let policy = PoolPolicy::improved()
            .max_slots(8)
            .max_age(Some(Duration::from_secs(2)))
            .rotate_spread_pools(rotate);
        let mut book = Book::new(&policy);
        let mut rng = SmallRng::seed_from_u64(5);
        for i in 0..8u32 {
            let at = u64::from(i) * 3 * SECOND;
            let admission = book.offer(Some(u64::from(i) % servers), 7 - i, at, &mut rng);
            assert!(matches!(admission, Admission::Kept { .. }), "{admission:?}");
        }
        match book.offer(Some(99), 5, 100 * SECOND, &mut rng) {
            Admission::Replaced { id, evicted } => {
                let expires = book.expiring.keys().find(|&(_, held)| held == id);
                let (expires, _) = expires.expect("the newcomer has a lifetime");
                (evicted.slot, expires - 100 * SECOND)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pool_spread_over_many_servers_rotates_its_lowest_slot_first_at_its_own_age() {
        let rotate = Some(Duration::from_millis(100));
        // Eight distinct servers: the lowest expired slot goes, not the longest expired,
        // and the newcomer lives the spread pools' age, in [50 ms, 150 ms).
        let (evicted, lives) = rotation(8, rotate);
        assert_eq!(evicted, 0);
        assert!((SECOND / 20..3 * SECOND / 20).contains(&lives), "{lives}");
        // Five of eight on distinct servers is more than half: spread.
        assert_eq!(rotation(5, rotate).0, 0);
        // Four servers, each twice: the longest expired goes, and the newcomer lives the
        // maximum age, in [1 s, 3 s).
        let (evicted, lives) = rotation(4, rotate);
        assert_eq!(evicted, 7);
        assert!((SECOND..3 * SECOND).contains(&lives), "{lives}");
        // The rule off, or an age not below the maximum age (no floor to lift): as over
        // few servers.
        assert_eq!(rotation(8, None).0, 7);
        assert_eq!(rotation(8, Some(Duration::from_secs(2))).0, 7);
        assert!(spreads_over_many_servers(8, 8, 5));
        assert!(!spreads_over_many_servers(8, 8, 4));
        assert!(
            !spreads_over_many_servers(4, 4, 4),
            "small pools keep slots instead"
        );
    }
}
