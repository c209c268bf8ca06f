//! The baseline routers: how a client that ignores slots picks the server for a request
//! (uniformly at random, round-robin, the power of two choices over outstanding requests or
//! over a peak-sensitive latency average, or the least outstanding requests), written once
//! for the simulator's clients and the live run's (`balance`).
//!
//! Why here: the simulator and the live harness must compare the same baselines, so the pick
//! is one function of the current members, the client's round-robin cursor, its random
//! source and its own outstanding requests, free of what each side keeps those in. The
//! global join-shortest-queue oracle is not here: it needs every server's queue, which only
//! the simulator knows.

use rand::Rng;

use super::policy::Policy;

/// Finagle's default decay time of the peak EWMA (`decayTime`): 10 s.
pub const PEAK_EWMA_DECAY_NS: f64 = 10e9;

/// The cost Finagle gives a server with requests outstanding but no latency seen yet
/// (`Long.MaxValue >> 16`), plus its outstanding count: it is tried once, then avoided until
/// it answers.
const PEAK_EWMA_PENALTY: f64 = (i64::MAX >> 16) as f64;

/// One client's peak-sensitive moving average of one server's response time, as Finagle's
/// `PeakEwma` balancer node keeps it: the average decays towards each new sample with weight
/// `1 - e^(-Δt/τ)` (Δt since the previous sample, τ = [`PEAK_EWMA_DECAY_NS`]), jumps at once
/// to a sample above it, and decays towards zero while nothing is observed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PeakEwma {
    /// The average, ns, as of `stamp`.
    cost: f64,
    /// When it was last updated, ns.
    stamp: u64,
}

impl PeakEwma {
    /// The average decayed to `now` (ns).
    fn decayed(&self, now: u64) -> f64 {
        let dt = now.saturating_sub(self.stamp) as f64;
        self.cost * (-dt / PEAK_EWMA_DECAY_NS).exp()
    }

    /// Learns a response time of `rtt_ns` observed at `now` (ns).
    pub fn observe(&mut self, now: u64, rtt_ns: f64) {
        let dt = now.saturating_sub(self.stamp) as f64;
        let w = (-dt / PEAK_EWMA_DECAY_NS).exp();
        self.cost = if rtt_ns > self.cost {
            rtt_ns
        } else {
            self.cost * w + rtt_ns * (1.0 - w)
        };
        self.stamp = self.stamp.max(now);
    }

    /// Finagle's load of the server at `now` with `pending` of this client's requests at
    /// it: average × (pending + 1); a server never heard from costs nothing while idle (so
    /// it is tried) and the penalty while a request is at it.
    pub fn load(&self, now: u64, pending: u32) -> f64 {
        let cost = self.decayed(now);
        if cost == 0.0 && pending != 0 {
            PEAK_EWMA_PENALTY + f64::from(pending)
        } else {
            cost * f64::from(pending + 1)
        }
    }
}

/// What a baseline router compares servers by, for a client with `pending` requests at the
/// server and the latency average `ewma` of it, at `now` (ns): the peak-EWMA load under
/// `p2c-peak-ewma`, the outstanding count otherwise.
pub fn load(policy: Policy, pending: u32, ewma: &PeakEwma, now: u64) -> f64 {
    match policy {
        Policy::P2cPeakEwma => ewma.load(now, pending),
        _ => f64::from(pending),
    }
}

/// The member (an index below `n`) a client routing by `policy` sends its next request to,
/// or `None` when there is no member:
/// - round-robin: the member after the last one picked, starting at a random one; `cursor`
///   is the client's own (1-based position of the next pick, 0 before the first);
/// - P2C and P2C-peak-EWMA: two distinct members at random, the one with the lower
///   `load(member)` (see [`load`]), equal loads at random;
/// - least-request: the member with the lowest `load(member)` of all, ties at random;
/// - any other policy: a member uniformly at random.
pub fn pick<R: Rng + ?Sized>(
    policy: Policy,
    n: usize,
    cursor: &mut u32,
    rng: &mut R,
    load: impl Fn(usize) -> f64,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    Some(match policy {
        Policy::RoundRobin => {
            if *cursor == 0 {
                *cursor = rng.random_range(0..n) as u32 + 1;
            }
            let pos = (*cursor as usize - 1) % n;
            *cursor = (pos + 1) as u32 % n as u32 + 1;
            pos
        }
        Policy::LeastRequest => {
            // One pass; the k-th of k equal minima replaces the pick with probability 1/k.
            let (mut best, mut best_load, mut ties) = (0, load(0), 1u32);
            for i in 1..n {
                let l = load(i);
                if l < best_load {
                    (best, best_load, ties) = (i, l, 1);
                } else if l == best_load {
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = i;
                    }
                }
            }
            best
        }
        Policy::P2c | Policy::P2cPeakEwma => {
            let a = rng.random_range(0..n);
            if n == 1 {
                return Some(a);
            }
            let mut b = rng.random_range(0..n - 1);
            if b == a {
                b = n - 1;
            }
            let (oa, ob) = (load(a), load(b));
            if oa < ob || (oa == ob && rng.random_bool(0.5)) {
                a
            } else {
                b
            }
        }
        _ => rng.random_range(0..n),
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn round_robin_cycles_from_a_random_start_and_follows_a_shrinking_set() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut cursor = 0;
        let picks: Vec<usize> = (0..8)
            .filter_map(|_| pick(Policy::RoundRobin, 4, &mut cursor, &mut rng, |_| 0.0))
            .collect();
        assert!(
            picks.windows(2).all(|w| w[1] == (w[0] + 1) % 4),
            "{picks:?}"
        );
        let next = pick(Policy::RoundRobin, 2, &mut cursor, &mut rng, |_| 0.0);
        assert!(next.is_some_and(|i| i < 2));
        assert_eq!(
            pick(Policy::Random, 0, &mut cursor, &mut rng, |_| 0.0),
            None
        );
    }

    #[test]
    fn p2c_never_picks_the_busier_of_its_two() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut cursor = 0;
        // Member 0 has 9 outstanding, the others none: 0 is picked only if both draws were
        // 0, which P2C's distinct draws rule out.
        for _ in 0..1000 {
            let i = pick(Policy::P2c, 3, &mut cursor, &mut rng, |i| {
                if i == 0 { 9.0 } else { 0.0 }
            });
            assert!(i.is_some_and(|i| i != 0));
        }
        assert_eq!(
            pick(Policy::P2c, 1, &mut cursor, &mut rng, |_| 0.0),
            Some(0)
        );
    }

    #[test]
    fn least_request_picks_the_minimum_and_spreads_ties() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut cursor = 0;
        let loads = [3.0, 1.0, 2.0, 1.0];
        let mut seen = [0u32; 4];
        for _ in 0..1000 {
            let i = pick(Policy::LeastRequest, 4, &mut cursor, &mut rng, |i| loads[i]);
            seen[i.unwrap_or(0)] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0, "{seen:?}");
        assert!(seen[1] > 400 && seen[3] > 400, "{seen:?}");
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_decays_slowly_and_penalises_the_unknown() {
        let mut e = PeakEwma::default();
        assert_eq!(e.load(0, 0), 0.0);
        assert!(e.load(0, 1) > 1e12);
        e.observe(1_000_000_000, 5e6);
        assert_eq!(e.load(1_000_000_000, 0), 5e6);
        // A peak is taken at once.
        e.observe(1_000_000_000, 50e6);
        assert_eq!(e.load(1_000_000_000, 1), 100e6);
        // A low sample 1 s later moves it by 1 - e^(-0.1) only.
        e.observe(2_000_000_000, 5e6);
        let w = (-0.1f64).exp();
        let want = 50e6 * w + 5e6 * (1.0 - w);
        assert!((e.load(2_000_000_000, 0) - want).abs() < 1.0);
        // Unobserved, it decays towards zero over τ.
        assert!(e.load(12_000_000_000, 0) < want * 0.37);
    }
}
