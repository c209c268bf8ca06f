//! The baseline routers: how a client that ignores slots picks the server for a request
//! (uniformly at random, round-robin, or the power of two choices), written once for the
//! simulator's clients and the live run's (`balance`).
//!
//! Why here: the simulator and the live harness must compare the same baselines, so the pick
//! is one function of the current members, the client's round-robin cursor, its random
//! source and its own outstanding requests, free of what each side keeps those in. The
//! global join-shortest-queue oracle is not here: it needs every server's queue, which only
//! the simulator knows.

use rand::Rng;

use super::policy::Policy;

/// The member (an index below `n`) a client routing by `policy` sends its next request to,
/// or `None` when there is no member:
/// - round-robin: the member after the last one picked, starting at a random one; `cursor`
///   is the client's own (1-based position of the next pick, 0 before the first);
/// - P2C: two distinct members at random, the one with fewer of this client's requests
///   outstanding (`outstanding(member)`), equal counts at random;
/// - any other policy: a member uniformly at random.
pub fn pick<R: Rng + ?Sized>(
    policy: Policy,
    n: usize,
    cursor: &mut u32,
    rng: &mut R,
    outstanding: impl Fn(usize) -> u32,
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
        Policy::P2c => {
            let a = rng.random_range(0..n);
            if n == 1 {
                return Some(a);
            }
            let mut b = rng.random_range(0..n - 1);
            if b == a {
                b = n - 1;
            }
            let (oa, ob) = (outstanding(a), outstanding(b));
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
            .filter_map(|_| pick(Policy::RoundRobin, 4, &mut cursor, &mut rng, |_| 0))
            .collect();
        assert!(
            picks.windows(2).all(|w| w[1] == (w[0] + 1) % 4),
            "{picks:?}"
        );
        let next = pick(Policy::RoundRobin, 2, &mut cursor, &mut rng, |_| 0);
        assert!(next.is_some_and(|i| i < 2));
        assert_eq!(pick(Policy::Random, 0, &mut cursor, &mut rng, |_| 0), None);
    }

    #[test]
    fn p2c_never_picks_the_busier_of_its_two() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut cursor = 0;
        // Member 0 has 9 outstanding, the others none: 0 is picked only if both draws were
        // 0, which P2C's distinct draws rule out.
        for _ in 0..1000 {
            let i = pick(Policy::P2c, 3, &mut cursor, &mut rng, |i| {
                if i == 0 { 9 } else { 0 }
            });
            assert!(i.is_some_and(|i| i != 0));
        }
        assert_eq!(pick(Policy::P2c, 1, &mut cursor, &mut rng, |_| 0), Some(0));
    }
}
