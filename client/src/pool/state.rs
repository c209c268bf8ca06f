//! The pool's state under its lock: a slab of entries and the heaps of entry ids, with the
//! few transitions the pool makes (insert, pick the worst, evict, lease, restore, release,
//! retire).
//!
//! Kept apart from the public surface in `mod.rs` (bb8's split) so the invariants live in
//! one place: an entry is in `held` while it counts toward `max_slots`, in `idle` exactly
//! when its connection is in the slab (not leased), and in `expiring` while held with a
//! lifetime; an evicted (replaced or retired) leased entry is in none of them and is released
//! when its lease ends. An entry is `counted` in `leased_at` exactly while it is leased and
//! held, has a known server, and the policy ranks by outstanding leases.
//!
//! Cost: under the original rules every transition is O(log n) (heap operations). The rules
//! that rank by more than (slot, arrival) — least outstanding, the slow penalty, uniformly
//! random ties — make leasing a scan of the idle entries, and picking the worst a scan of
//! the held ones under random ties: O(P). A cost that changes with every lease and return
//! cannot sit in a heap key, and P is small (the improved policy wants P × roving interval
//! well below the maximum age; typically P ≤ 100), so a scan of contiguous heap items is
//! cheaper and far simpler than keeping an index per server (a lease and return at P = 100
//! measured 0.8–1.4 µs in `benches/benches/pool.rs` on a loaded 2-core machine, against a
//! network round trip of tens of µs). What the scan needs per entry is O(1): the per-server lease counts are kept in a
//! map, the mean of the averages as a running sum. Retirement is O(log n) per retired entry
//! (its own heap, by expiry).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::ServerKey;
use super::heap::{IndexedHeap, Order};
use super::policy::PoolPolicy;

/// Everything the pool lock guards.
pub(super) struct Inner<C> {
    pub(super) entries: Vec<Entry<C>>,
    /// Ids of unused entries.
    free: Vec<u32>,
    /// Idle connections, lowest key on top.
    pub(super) idle: IndexedHeap,
    /// Held connections (idle and leased, evicted ones excluded), highest key on top.
    pub(super) held: IndexedHeap,
    /// Held connections with a lifetime, soonest expiry on top; keys are nanoseconds since
    /// `epoch`.
    expiring: IndexedHeap,
    epoch: Instant,
    /// This pool's leases per server (held entries only), when the policy ranks by them.
    leased_at: HashMap<ServerKey, u32, BuildHasherDefault<KeyHasher>>,
    /// Arrival counter: the deterministic tie-break. It wraps after 2^32 offers, which can
    /// only swap the order of two connections with the same slot once.
    arrivals: u32,
    /// Sum and count of the held entries' non-zero response-time averages (the slow
    /// penalty's mean, kept as entries change rather than summed at every lease).
    ewma_sum: f64,
    ewma_n: u32,
    /// Random tie-breaks and lifetimes.
    rng: SmallRng,
    policy: PoolPolicy,
    /// The policy's maximum age for a pool on its own (settled by the roving client).
    max_age: Option<Duration>,
}

/// One held connection (or an unused slab place).
pub(super) struct Entry<C> {
    slot: u32,
    key: u64,
    /// The server, when offered with one.
    server: Option<ServerKey>,
    /// Moving average of the lease durations in seconds; 0 until the first sample.
    ewma: f32,
    /// Counted in `leased_at`.
    counted: bool,
    /// The connection while idle; `None` while leased or unused.
    pub(super) conn: Option<C>,
    /// Replaced or retired while leased: close it when the lease ends.
    evicted: bool,
}

/// A multiplicative hash of a [`ServerKey`]: a lease looks one up per idle entry, and
/// SipHash (the default, built against adversarial keys) would be most of a lease's cost.
/// Keys come from the application (the roving client numbers its servers), not from
/// peers, so there is nobody to collide them on purpose.
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

/// The slot in a heap key's high half.
#[inline]
pub(super) fn slot_of(key: u64) -> u32 {
    (key >> 32) as u32
}

/// The id with the lowest `(cost, key)` among `candidates` of `(cost, key, id)`. With
/// `random`, candidates of equal cost and equal slot (the key's high half) are picked
/// uniformly at random (reservoir sampling: the k-th equal one replaces the pick with
/// probability 1/k) instead of by the key's low half.
fn lowest(
    candidates: impl Iterator<Item = (u32, u64, u32)>,
    random: bool,
    rng: &mut SmallRng,
) -> Option<u32> {
    let mut best: Option<(u32, u64, u32)> = None;
    let mut ties = 1u32;
    for candidate in candidates {
        let (cost, key, _) = candidate;
        let better = match best {
            None => true,
            Some((best_cost, best_key, _)) => {
                match cost
                    .cmp(&best_cost)
                    .then(slot_of(key).cmp(&slot_of(best_key)))
                {
                    Ordering::Less => {
                        ties = 1;
                        true
                    }
                    Ordering::Greater => false,
                    Ordering::Equal if random => {
                        ties = ties.saturating_add(1);
                        rng.random_range(0..ties) == 0
                    }
                    Ordering::Equal => key < best_key,
                }
            }
        };
        if better {
            best = Some(candidate);
        }
    }
    best.map(|(_, _, id)| id)
}

impl<C> Inner<C> {
    pub(super) fn new(policy: &PoolPolicy) -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            idle: IndexedHeap::new(Order::Min),
            held: IndexedHeap::new(Order::Max),
            expiring: IndexedHeap::new(Order::Min),
            epoch: Instant::now(),
            leased_at: HashMap::default(),
            ewma_sum: 0.0,
            ewma_n: 0,
            arrivals: 0,
            rng: SmallRng::from_os_rng(),
            policy: policy.clone(),
            max_age: policy.get_max_age(),
        }
    }

    fn key(&mut self, slot: u32) -> u64 {
        self.arrivals = self.arrivals.wrapping_add(1);
        (u64::from(slot) << 32) | u64::from(self.arrivals)
    }

    /// Nanoseconds from the pool's epoch to `at` (0 before it, saturating far after).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn insert(&mut self, server: Option<ServerKey>, slot: u32, conn: C) {
        let key = self.key(slot);
        let entry = Entry {
            slot,
            key,
            server,
            ewma: 0.0,
            counted: false,
            conn: Some(conn),
            evicted: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                // `validate` bounds max_slots below u32::MAX and entries never exceed
                // max_slots plus the evicted leases, so ids fit.
                let id = self.entries.len() as u32;
                self.entries.push(entry);
                id
            }
        };
        self.idle.push(key, id);
        self.held.push(key, id);
        if let Some(age) = self.max_age {
            // Lifetime uniform in [A/2, 3A/2); `as` saturates, so a huge age never expires.
            let factor: f64 = self.rng.random_range(0.5..1.5);
            let life = (age.as_nanos() as f64 * factor) as u64;
            let expires = self.nanos(Instant::now()).saturating_add(life);
            self.expiring.push(expires, id);
        }
    }

    /// The held connection a newcomer would replace, as `(slot, id)`: the highest slot;
    /// equal slots the latest arrival, or uniformly at random under random ties.
    pub(super) fn worst(&mut self) -> Option<(u32, u32)> {
        if !self.policy.random_tie_break {
            return self.held.peek().map(|(key, id)| (slot_of(key), id));
        }
        // Inverted keys: the highest slot becomes the lowest.
        let candidates = self.held.keys().map(|(key, id)| (0, !key, id));
        let id = lowest(candidates, true, &mut self.rng)?;
        Some((self.entries[id as usize].slot, id))
    }

    /// Whether a newcomer with `slot` replaces the worst held connection with `worst`.
    pub(super) fn beats(&self, slot: u32, worst: u32) -> bool {
        slot < worst || (self.policy.accept_equal && slot == worst)
    }

    /// Takes the held connection `id` out of the pool (replaced or retired): its connection
    /// if idle, or `None` if leased (flagged to close on return).
    pub(super) fn evict(&mut self, id: u32) -> Option<C> {
        self.unhold(id);
        if self.idle.remove(id) {
            let conn = self.entries[id as usize].conn.take();
            self.free.push(id);
            conn
        } else {
            self.entries[id as usize].evicted = true;
            None
        }
    }

    /// Takes the best idle connection (see the module doc), leaving its entry held but
    /// empty; returns `(id, slot, connection)`.
    pub(super) fn take_best(&mut self) -> Option<(u32, u32, C)> {
        let id = if self.policy.scans_on_lease() {
            let id = self.pick_idle()?;
            self.idle.remove(id);
            id
        } else {
            self.idle.pop()?.1
        };
        let entry = &mut self.entries[id as usize];
        let conn = entry.conn.take()?;
        let slot = entry.slot;
        self.count(id);
        Some((id, slot, conn))
    }

    /// The idle entry with the lowest cost (this pool's leases at its server plus its slow
    /// penalty), then the lowest slot, then arrival order or at random.
    fn pick_idle(&mut self) -> Option<u32> {
        let Self {
            entries,
            idle,
            leased_at,
            rng,
            policy,
            ewma_sum,
            ewma_n,
            ..
        } = self;
        // A connection whose average reaches `threshold` × the mean of the pool's non-zero
        // averages counts as one more lease (two at twice that, ...); none while no
        // connection has a sample.
        let slow_over = match (policy.slow_penalty, *ewma_n) {
            (Some(penalty), n) if n > 0 => {
                (f64::from(penalty.get_threshold()) * *ewma_sum / f64::from(n)) as f32
            }
            _ => f32::INFINITY,
        };
        let candidates = idle.keys().map(|(key, id)| {
            let entry = &entries[id as usize];
            let busy = match (policy.least_outstanding, entry.server) {
                (true, Some(server)) => leased_at.get(&server).copied().unwrap_or(0),
                _ => 0,
            };
            // `as` saturates; 0 / inf is 0.
            let slow = (entry.ewma / slow_over) as u32;
            (busy.saturating_add(slow), key, id)
        });
        lowest(candidates, policy.random_tie_break, rng)
    }

    /// Takes entry `id` out of what the pool counts: held, expiring, its server's leases,
    /// the mean of the averages. Idempotent (an evicted entry is released later).
    fn unhold(&mut self, id: u32) {
        if self.held.remove(id) {
            let ewma = self.entries[id as usize].ewma;
            self.fold_mean(ewma, 0.0);
        }
        self.expiring.remove(id);
        self.uncount(id);
    }

    /// Replaces `old` by `new` among the non-zero averages of the mean (0: none).
    fn fold_mean(&mut self, old: f32, new: f32) {
        if old > 0.0 {
            self.ewma_sum -= f64::from(old);
            self.ewma_n -= 1;
        }
        if new > 0.0 {
            self.ewma_sum += f64::from(new);
            self.ewma_n += 1;
        }
        if self.ewma_n == 0 {
            // No rounding residue survives an empty mean.
            self.ewma_sum = 0.0;
        }
    }

    /// Counts a newly leased entry toward its server's leases.
    fn count(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        if let (true, Some(server)) = (self.policy.least_outstanding, entry.server) {
            entry.counted = true;
            *self.leased_at.entry(server).or_insert(0) += 1;
        }
    }

    /// Stops counting entry `id` toward its server's leases (returned or out of the pool).
    fn uncount(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        if !std::mem::take(&mut entry.counted) {
            return;
        }
        if let Some(server) = entry.server {
            if let Some(n) = self.leased_at.get_mut(&server) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.leased_at.remove(&server);
                }
            }
        }
    }

    /// Forgets entry `id` (its connection is gone): it stops counting and is reused.
    pub(super) fn release(&mut self, id: u32) {
        self.unhold(id);
        let entry = &mut self.entries[id as usize];
        entry.conn = None;
        entry.evicted = false;
        self.free.push(id);
    }

    /// Takes back a leased connection, folding the lease's duration into its average when
    /// the policy keeps one. Hands it back to the caller (to close outside the lock) when
    /// it was evicted meanwhile.
    pub(super) fn restore(
        &mut self,
        id: u32,
        conn: C,
        held_for: Option<Duration>,
    ) -> Result<(), C> {
        if self.entries[id as usize].evicted {
            self.release(id);
            return Err(conn);
        }
        self.uncount(id);
        let alpha = self.policy.slow_penalty.map(|p| p.get_alpha());
        if let (Some(alpha), Some(held_for)) = (alpha, held_for) {
            let old = self.entries[id as usize].ewma;
            // At least 1 ns, so a sampled entry never reads as "no sample" (0).
            let sample = held_for.as_secs_f32().max(1e-9);
            let new = if old == 0.0 {
                sample
            } else {
                old + alpha * (sample - old)
            };
            self.entries[id as usize].ewma = new;
            self.fold_mean(old, new);
        }
        let entry = &mut self.entries[id as usize];
        entry.conn = Some(conn);
        let key = entry.key;
        self.idle.push(key, id);
        Ok(())
    }

    /// Takes every held connection to `server` out of the pool, as [`evict`](Self::evict)
    /// does: idle ones are handed back (to close outside the lock), leased ones close when
    /// their lease ends. Returns how many left the pool.
    pub(super) fn evict_server(&mut self, server: ServerKey, closing: &mut Vec<C>) -> usize {
        let ids: Vec<u32> = self
            .held
            .keys()
            .map(|(_, id)| id)
            .filter(|&id| self.entries[id as usize].server == Some(server))
            .collect();
        for &id in &ids {
            closing.extend(self.evict(id));
        }
        ids.len()
    }

    /// The held connections per known server.
    pub(super) fn held_per_server(&self) -> HashMap<ServerKey, usize> {
        let mut counts = HashMap::new();
        for (_, id) in self.held.keys() {
            if let Some(server) = self.entries[id as usize].server {
                *counts.entry(server).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Takes every connection expired at `now` out of the pool: idle ones are handed back
    /// (to close outside the lock), leased ones close when their lease ends. Returns how
    /// many left the pool.
    pub(super) fn retire(&mut self, now: Instant, closing: &mut Vec<C>) -> usize {
        let now = self.nanos(now);
        let mut retired = 0;
        while let Some((expires, id)) = self.expiring.peek() {
            if expires > now {
                break;
            }
            closing.extend(self.evict(id));
            retired += 1;
        }
        retired
    }

    /// The response-time average of the held connection with `slot` (tests).
    #[cfg(test)]
    pub(super) fn ewmas(&self) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = self
            .held
            .keys()
            .map(|(_, id)| {
                (
                    self.entries[id as usize].slot,
                    self.entries[id as usize].ewma,
                )
            })
            .collect();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
        all
    }

    /// The kept mean of the averages against one summed now (tests).
    #[cfg(test)]
    pub(super) fn mean_drift(&self) -> f64 {
        let all: Vec<f64> = self
            .held
            .keys()
            .map(|(_, id)| f64::from(self.entries[id as usize].ewma))
            .filter(|&ewma| ewma > 0.0)
            .collect();
        let kept = if self.ewma_n == 0 {
            0.0
        } else {
            self.ewma_sum / f64::from(self.ewma_n)
        };
        let now = if all.is_empty() {
            0.0
        } else {
            all.iter().sum::<f64>() / all.len() as f64
        };
        assert_eq!(self.ewma_n as usize, all.len());
        (kept - now).abs()
    }

    /// The idle entries as `(server, slot)` (tests).
    #[cfg(test)]
    pub(super) fn idle_entries(&self) -> Vec<(Option<ServerKey>, u32)> {
        self.idle
            .keys()
            .map(|(_, id)| {
                (
                    self.entries[id as usize].server,
                    self.entries[id as usize].slot,
                )
            })
            .collect()
    }

    /// This pool's leases per server (tests).
    #[cfg(test)]
    pub(super) fn leases_at(&self, server: ServerKey) -> u32 {
        self.leased_at.get(&server).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The pick has the lowest (cost, slot); without random ties, the lowest key too.
        #[test]
        fn lowest_picks_a_minimum(
            candidates in prop::collection::vec((0u32..3, 0u32..4, 0u32..100), 0..20),
            random in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let items: Vec<(u32, u64, u32)> = candidates
                .iter()
                .enumerate()
                .map(|(id, &(cost, slot, tie))| (cost, u64::from(slot) << 32 | u64::from(tie), id as u32))
                .collect();
            let mut rng = SmallRng::seed_from_u64(seed);
            let picked = lowest(items.iter().copied(), random, &mut rng);
            let min = items.iter().map(|&(c, k, _)| (c, slot_of(k))).min();
            prop_assert_eq!(picked.is_some(), min.is_some());
            if let Some(id) = picked {
                let (cost, key, _) = items[id as usize];
                prop_assert_eq!(Some((cost, slot_of(key))), min);
                if !random {
                    let lowest_key = items.iter().map(|&(c, k, _)| (c, slot_of(k), k)).min();
                    prop_assert_eq!(Some((cost, slot_of(key), key)), lowest_key);
                }
            }
        }
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
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 5];
        for _ in 0..4000 {
            if let Some(id) = lowest(items.iter().copied(), true, &mut rng) {
                counts[id as usize] += 1;
            }
        }
        assert_eq!(counts[0], 0);
        assert!(
            counts[1..].iter().all(|&n| (836..=1164).contains(&n)),
            "{counts:?}"
        );
    }
}
