//! The real pool (`callosum_client::Pool`, on in-memory connections) and the simulator's
//! client (`simulate::client::Clients`) driven through the same random operations, with the
//! same policy, seed and clock, take the same decisions: the same connection kept, refused,
//! replaced, leased, closed on return and retired. Both call `pool::decide`; this pins down
//! that neither wraps it differently (ids, clocks, units, eviction of leased connections).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callosum_client::pool::decide::Admission;
use callosum_client::{Liveness, Offer, Pool, PoolPolicy, ServerKey, SlowPenalty};
use callosum_loadgen::balance::simulation::client::Clients;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// An in-memory connection: its number in the test, and a flag set when it is closed.
#[derive(Debug)]
struct Fake {
    id: usize,
    closed: Arc<AtomicBool>,
}

impl Liveness for Fake {
    fn is_alive(&self) -> bool {
        true
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // Relaxed: single-threaded test, the flag carries no other data.
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A rover connection from `server` with `slot`.
    Offer(u32, u32),
    Lease,
    /// Give back the i-th outstanding lease (modulo their number).
    Return(usize),
    /// Milliseconds pass.
    Advance(u64),
    /// Count the expired connections replaced so far.
    Retire,
    /// The server leaves.
    EvictServer(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..4, 0u32..6).prop_map(|(server, slot)| Op::Offer(server, slot)),
        // Busy servers' slots: they raise the mean offered slot past the preferred
        // connection's threshold in the smaller pools, so the rule acts in some runs.
        2 => (0u32..4, 20u32..60).prop_map(|(server, slot)| Op::Offer(server, slot)),
        4 => Just(Op::Lease),
        3 => any::<usize>().prop_map(Op::Return),
        3 => (0u64..4_000).prop_map(Op::Advance),
        2 => Just(Op::Retire),
        1 => (0u32..4).prop_map(Op::EvictServer),
    ]
}

/// A policy with each rule on or off, a maximum age or none, and an age for pools spread
/// over many servers or none.
fn policy() -> impl Strategy<Value = PoolPolicy> {
    (
        1usize..7,
        any::<[bool; 9]>(),
        prop::option::of(1u64..20),
        prop::option::of(1u64..20),
    )
        .prop_map(
            |(
                max_slots,
                [
                    random,
                    equal,
                    least,
                    slow,
                    spread,
                    weighted,
                    damped,
                    decay,
                    preferred,
                ],
                age_s,
                rotate_s,
            )| {
                PoolPolicy::original()
                    .max_slots(max_slots)
                    .random_tie_break(random)
                    .accept_equal(equal)
                    .least_outstanding(least)
                    .slow_penalty(slow.then(SlowPenalty::default))
                    .spread_small_pools(spread)
                    .slot_weighted_leases(weighted)
                    .latency_damped_weights(damped)
                    .outlier_decay(decay)
                    .preferred_connection(preferred)
                    .max_age(age_s.map(Duration::from_secs))
                    .rotate_spread_pools(rotate_s.map(Duration::from_secs))
            },
        )
}

/// Records that the simulator's connection `sim` is connection number `k`.
fn bind(number_of: &mut Vec<usize>, sim: u32, k: usize) {
    let i = sim as usize;
    if number_of.len() <= i {
        number_of.resize(i + 1, usize::MAX);
    }
    number_of[i] = k;
}

/// A lease held by the test on both sides.
struct Held {
    lease: callosum_client::Lease<Fake>,
    /// The simulator's connection (its client's entry id).
    sim: u32,
    /// When it was leased, ns.
    at: u64,
}

async fn run(policy: PoolPolicy, seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let pool = Pool::with_policy(policy.clone().seed(Some(seed)))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut clients = Clients::new(1, &policy, 0);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut now = 0u64;
    // Per connection number: its closed flag; per simulator connection (entry id, reused
    // once closed): its number.
    let mut closed: Vec<Arc<AtomicBool>> = Vec::new();
    let mut number_of: Vec<usize> = Vec::new();
    let mut server_of: Vec<u32> = Vec::new();
    let mut held: Vec<Held> = Vec::new();
    let mut closing = Vec::new();
    let open_set = |closed: &[Arc<AtomicBool>]| -> Vec<usize> {
        (0..closed.len())
            .filter(|&k| !closed[k].load(Ordering::Relaxed))
            .collect()
    };
    for op in ops {
        match op {
            Op::Offer(server, slot) => {
                let k = closed.len();
                let flag = Arc::new(AtomicBool::new(false));
                closed.push(flag.clone());
                server_of.push(server);
                let conn = Fake {
                    id: k,
                    closed: flag,
                };
                let real = pool.offer_from(ServerKey(u64::from(server)), slot, conn);
                let sim = clients.offer(0, server, slot, now, &mut rng);
                match (real, sim) {
                    (Offer::Kept, Admission::Kept { id }) => bind(&mut number_of, id, k),
                    (Offer::Rejected(c), Admission::Refused) => prop_assert_eq!(c.id, k),
                    (
                        Offer::Replaced {
                            evicted_slot,
                            evicted,
                        },
                        Admission::Replaced { id, evicted: gone },
                    ) => {
                        prop_assert_eq!(evicted_slot, gone.slot);
                        prop_assert_eq!(
                            gone.server,
                            Some(u64::from(server_of[number_of[gone.id as usize]]))
                        );
                        prop_assert_eq!(evicted.is_some(), gone.was_idle);
                        if let Some(c) = evicted {
                            prop_assert_eq!(c.id, number_of[gone.id as usize]);
                        }
                        bind(&mut number_of, id, k);
                    }
                    (real, sim) => {
                        return Err(TestCaseError::fail(format!(
                            "offer of slot {slot}: pool {real:?}, simulator {sim:?}"
                        )));
                    }
                }
            }
            Op::Lease => {
                let real = pool.get();
                let sim = clients.lease(0, &mut rng);
                prop_assert_eq!(
                    real.as_ref().map(|l| l.id),
                    sim.map(|(c, _)| number_of[c as usize])
                );
                if let (Some(lease), Some((sim, _))) = (real, sim) {
                    held.push(Held {
                        lease,
                        sim,
                        at: now,
                    });
                }
            }
            Op::Return(i) if !held.is_empty() => {
                let Held { lease, sim, at } = held.swap_remove(i % held.len());
                let k = lease.id;
                drop(lease);
                let back = clients.give_back(0, sim, Some(now - at));
                prop_assert_eq!(closed[k].load(Ordering::Relaxed), !back, "closed on return");
            }
            Op::Return(_) => {}
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                now += ms * 1_000_000;
            }
            Op::Retire | Op::EvictServer(_) => {
                let before = open_set(&closed);
                let (real, sim) = match op {
                    Op::Retire => (pool.take_retired(), clients.take_retired(0)),
                    Op::EvictServer(s) => (
                        pool.evict_server(ServerKey(u64::from(s))),
                        clients.evict_server(0, s, &mut closing),
                    ),
                    _ => unreachable!("matched above"),
                };
                prop_assert_eq!(real, sim);
                let after = open_set(&closed);
                let closed_now: Vec<usize> =
                    before.into_iter().filter(|k| !after.contains(k)).collect();
                let mut sim_closed: Vec<usize> = closing
                    .drain(..)
                    .filter(|left| left.was_idle)
                    .map(|left| number_of[left.id as usize])
                    .collect();
                sim_closed.sort_unstable();
                prop_assert_eq!(closed_now, sim_closed, "idle connections closed now");
            }
        }
        prop_assert_eq!(pool.len(), clients.pool_len(0));
        prop_assert_eq!(pool.idle_len(), clients.idle_len(0));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Same operations, same policy, same seed, same clock: same decisions.
    #[test]
    fn the_pool_and_the_simulated_client_decide_alike(
        policy in policy(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        // A paused clock: time moves only by the operations' `advance`.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(run(policy, seed, ops))?;
    }
}
