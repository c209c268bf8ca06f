//! The original `callosum-client-tcp` test suite (new, getConnection, newConnection,
//! returnConnection), ported case by case, plus a model check of the whole pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use super::*;

/// A stand-in connection: an id, a liveness flag the test flips (the original's `end`,
/// `error` and `close` events) and a flag set when the pool closes (drops) it.
#[derive(Debug)]
struct Fake {
    id: u32,
    alive: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Fake {
    fn new(id: u32) -> Self {
        Self {
            id,
            alive: Arc::new(AtomicBool::new(true)),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Handles to kill it and to see whether it was closed.
    fn probes(&self) -> (Arc<AtomicBool>, Arc<AtomicBool>) {
        (self.alive.clone(), self.closed.clone())
    }
}

impl Liveness for Fake {
    fn is_alive(&self) -> bool {
        // Relaxed: single-threaded tests, the flag carries no other data.
        self.alive.load(Ordering::Relaxed)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // Relaxed: single-threaded tests, the flag carries no other data.
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// A pool of at most `max_slots` under the original rules, which this suite ports.
fn original<C: Liveness>(max_slots: usize) -> Result<Pool<C>, PoolError> {
    Pool::with_policy(PoolPolicy::original().max_slots(max_slots))
}

fn keep(pool: &Pool<Fake>, slot: u32, conn: Fake) {
    assert!(matches!(pool.offer(slot, conn), Offer::Kept));
}

// --- new ---

#[test]
fn new_configures_max_slots() {
    assert_eq!(Pool::<Fake>::new(5000).expect("valid").max_slots(), 5000);
    let default = Pool::<Fake>::with_policy(PoolPolicy::default()).expect("valid");
    assert_eq!(default.max_slots(), 100);
    // The improved policy by default; the cases below port the original's suite.
    assert_eq!(default.policy(), &PoolPolicy::improved());
    assert_eq!(
        Pool::<Fake>::new(8).expect("valid").policy(),
        &PoolPolicy::improved().max_slots(8)
    );
    assert_eq!(Pool::<Fake>::new(0).err(), Some(PoolError::ZeroMaxSlots));
}

// --- getConnection ---

#[test]
fn get_returns_none_if_no_connections_available() {
    let pool = original::<Fake>(100).expect("valid");
    assert!(pool.get().is_none());
}

#[test]
fn get_returns_the_unclaimed_connection_with_the_lowest_slot() {
    let pool = original(100).expect("valid");
    keep(&pool, 1, Fake::new(1));
    keep(&pool, 2, Fake::new(2));
    assert_eq!(pool.get().expect("idle").id, 1);
}

// --- newConnection ---

#[test]
fn offer_keeps_the_connection_if_max_slots_not_yet_reached() {
    let pool = original(100).expect("valid");
    keep(&pool, 0, Fake::new(7));
    assert_eq!(pool.get().expect("idle").id, 7);
}

#[test]
fn offer_replaces_the_highest_slot_when_max_slots_is_reached() {
    let pool = original(2).expect("valid");
    keep(&pool, 1, Fake::new(1));
    let three = Fake::new(3);
    let (_, three_closed) = three.probes();
    keep(&pool, 3, three);
    match pool.offer(2, Fake::new(2)) {
        Offer::Replaced {
            evicted_slot: 3,
            evicted: Some(conn),
        } => assert_eq!(conn.id, 3),
        other => panic!("expected slot 3 evicted, got {other:?}"),
    }
    assert!(
        three_closed.load(Ordering::Relaxed),
        "evicted idle closed now"
    );
    let first = pool.get().expect("idle");
    let second = pool.get().expect("idle");
    assert_eq!((first.id, second.id), (1, 2));
    assert!(pool.get().is_none());
}

#[test]
fn offer_rejects_a_slot_not_lower_than_the_highest_at_max_slots() {
    let pool = original(2).expect("valid");
    keep(&pool, 1, Fake::new(1));
    keep(&pool, 3, Fake::new(3));
    for slot in [3, 4] {
        match pool.offer(slot, Fake::new(slot)) {
            Offer::Rejected(conn) => assert_eq!(conn.id, slot),
            other => panic!("expected rejection, got {other:?}"),
        }
    }
    assert_eq!(pool.held_slots(), vec![1, 3]);
}

// --- returnConnection ---

#[test]
fn returning_puts_the_connection_back() {
    let pool = original(100).expect("valid");
    keep(&pool, 1, Fake::new(1));
    let lease = pool.get().expect("idle");
    assert_eq!((lease.id, lease.slot()), (1, 1));
    assert!(pool.get().is_none());
    drop(lease);
    assert_eq!(pool.get().expect("returned").id, 1);
    let again = pool.get().expect("returned");
    assert!(pool.get().is_none(), "one connection, leased");
    drop(again);
}

#[test]
fn returning_a_replaced_leased_connection_closes_it() {
    let pool = original(1).expect("valid");
    let three = Fake::new(3);
    let (_, three_closed) = three.probes();
    keep(&pool, 3, three);
    let lease3 = pool.get().expect("idle");
    assert_eq!(lease3.id, 3);
    // Slot 3 is leased: offering slot 1 evicts it (the original's deadpool).
    assert!(matches!(
        pool.offer(1, Fake::new(1)),
        Offer::Replaced {
            evicted_slot: 3,
            evicted: None
        }
    ));
    let lease1 = pool.get().expect("idle");
    assert_eq!(lease1.id, 1);
    assert!(pool.get().is_none());
    assert!(!three_closed.load(Ordering::Relaxed), "still in use");
    drop(lease3);
    assert!(three_closed.load(Ordering::Relaxed), "closed on return");
    assert!(pool.get().is_none(), "returning it changes nothing");
    drop(lease1);
    assert_eq!(pool.get().expect("returned").id, 1);
    assert_eq!(pool.len(), 1);
}

/// The original's `end`, `error` and `close` cases: all mean "no longer alive" here.
#[test]
fn a_connection_that_ended_while_leased_is_not_restored_and_stops_counting() {
    let pool = original(1).expect("valid");
    let conn = Fake::new(1);
    let (alive, closed) = conn.probes();
    keep(&pool, 1, conn);
    let lease = pool.get().expect("idle");
    alive.store(false, Ordering::Relaxed);
    drop(lease);
    assert!(closed.load(Ordering::Relaxed));
    assert!(pool.get().is_none());
    assert_eq!(pool.len(), 0);
    keep(&pool, 9, Fake::new(9)); // the slot is free again, even for a worse slot
}

#[test]
fn a_connection_that_ended_while_idle_is_never_handed_out() {
    let pool = original(2).expect("valid");
    let one = Fake::new(1);
    let (alive, closed) = one.probes();
    keep(&pool, 1, one);
    keep(&pool, 2, Fake::new(2));
    alive.store(false, Ordering::Relaxed);
    assert_eq!(pool.get().expect("the live one").id, 2);
    assert!(closed.load(Ordering::Relaxed));
    assert_eq!(pool.len(), 1);
    keep(&pool, 5, Fake::new(5));
}

#[test]
fn prune_drops_dead_idle_connections() {
    let pool = original(3).expect("valid");
    let one = Fake::new(1);
    let (alive, _) = one.probes();
    keep(&pool, 1, one);
    keep(&pool, 2, Fake::new(2));
    alive.store(false, Ordering::Relaxed);
    assert_eq!(pool.prune(), 1);
    assert_eq!(pool.held_slots(), vec![2]);
}

#[test]
fn discarding_a_lease_closes_it_and_frees_its_place() {
    let pool = original(1).expect("valid");
    let conn = Fake::new(4);
    let (_, closed) = conn.probes();
    keep(&pool, 4, conn);
    pool.get().expect("idle").discard();
    assert!(closed.load(Ordering::Relaxed));
    assert_eq!(pool.len(), 0);
    let detached = {
        keep(&pool, 6, Fake::new(6));
        pool.get().expect("idle").detach()
    };
    assert_eq!((detached.id, pool.len()), (6, 0));
}

// --- policy ---

#[test]
fn equal_slots_go_by_arrival_under_the_original_rules_and_at_random_on_request() {
    let first_leased = |random: bool| {
        let pool =
            Pool::with_policy(PoolPolicy::original().random_tie_break(random)).expect("valid");
        keep(&pool, 5, Fake::new(1));
        keep(&pool, 5, Fake::new(2));
        pool.get().expect("idle").id
    };
    assert!((0..50).all(|_| first_leased(false) == 1));
    let picks: Vec<u32> = (0..200).map(|_| first_leased(true)).collect();
    // 2^-199 chance of a false failure.
    assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
}

#[test]
fn pools_with_the_same_seed_break_ties_alike() {
    let leases = |seed: u64| {
        let policy = PoolPolicy::original()
            .random_tie_break(true)
            .seed(Some(seed));
        let pool = Pool::with_policy(policy).expect("valid");
        for id in 1..=8 {
            keep(&pool, 5, Fake::new(id));
        }
        (0..40)
            .map(|_| pool.get().expect("idle").id)
            .collect::<Vec<u32>>()
    };
    assert_eq!(leases(7), leases(7));
    // 8^-40 chance of a false failure.
    assert_ne!(leases(7), leases(8));
}

// --- the improved policy, rule by rule ---

fn keep_from(pool: &Pool<Fake>, server: u64, slot: u32, conn: Fake) {
    assert!(matches!(
        pool.offer_from(ServerKey(server), slot, conn),
        Offer::Kept
    ));
}

#[test]
fn accept_equal_replaces_an_equal_worst_slot_the_original_does_not() {
    for accept in [false, true] {
        let pool = Pool::with_policy(PoolPolicy::original().max_slots(2).accept_equal(accept))
            .expect("valid");
        keep(&pool, 1, Fake::new(1));
        keep(&pool, 3, Fake::new(3));
        match pool.offer(3, Fake::new(4)) {
            Offer::Replaced {
                evicted_slot: 3,
                evicted: Some(conn),
            } => assert!(accept && conn.id == 3),
            Offer::Rejected(conn) => assert!(!accept && conn.id == 4),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(pool.offer(4, Fake::new(5)), Offer::Rejected(_)));
        assert_eq!(pool.held_slots(), vec![1, 3]);
    }
}

#[test]
fn random_ties_spread_leases_and_replacements_among_equal_slots() {
    let pool = Pool::with_policy(PoolPolicy::original().random_tie_break(true).max_slots(3))
        .expect("valid");
    for id in 1..=3 {
        keep(&pool, 5, Fake::new(id));
    }
    let mut leased = [0u32; 4];
    for _ in 0..300 {
        leased[pool.get().expect("idle").id as usize] += 1;
    }
    // Each of three equal slots leased at least 50 times in 300: a false failure is
    // astronomically unlikely (binomial(300, 1/3) < 50 has probability < 1e-10).
    assert!(leased[1..].iter().all(|&n| n >= 50), "{leased:?}");
    // Replacing among the three equal worst slots (accept equal): each one goes some time.
    let pool = Pool::with_policy(
        PoolPolicy::original()
            .random_tie_break(true)
            .accept_equal(true)
            .max_slots(3),
    )
    .expect("valid");
    let mut evicted = std::collections::HashSet::new();
    for id in 1..=3 {
        keep(&pool, 5, Fake::new(id));
    }
    for id in 4..200 {
        if let Offer::Replaced {
            evicted: Some(conn),
            ..
        } = pool.offer(5, Fake::new(id))
        {
            evicted.insert(conn.id);
        }
    }
    assert!((1..=3).all(|id| evicted.contains(&id)), "{evicted:?}");
}

#[test]
fn least_outstanding_prefers_the_server_with_fewer_leases() {
    let policy = PoolPolicy::original().least_outstanding(true);
    let pool = Pool::with_policy(policy).expect("valid");
    // Server 0 holds slots 0 and 1, server 1 slot 2.
    keep_from(&pool, 0, 0, Fake::new(1));
    keep_from(&pool, 0, 1, Fake::new(2));
    keep_from(&pool, 1, 2, Fake::new(3));
    let first = pool.get().expect("idle");
    assert_eq!(first.id, 1, "all free: the lowest slot");
    let second = pool.get().expect("idle");
    assert_eq!(
        second.id, 3,
        "server 0 has a lease: server 1, despite its higher slot"
    );
    assert_eq!(pool.shared.lock().leases_at(ServerKey(0)), 1);
    drop(first);
    drop(second);
    assert_eq!(pool.shared.lock().leases_at(ServerKey(0)), 0);
    // The original rules stack both on server 0.
    let original = original(3).expect("valid");
    keep_from(&original, 0, 0, Fake::new(1));
    keep_from(&original, 0, 1, Fake::new(2));
    keep_from(&original, 1, 2, Fake::new(3));
    let leases = (original.get().expect("idle"), original.get().expect("idle"));
    assert_eq!((leases.0.id, leases.1.id), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_slow_connection_counts_as_one_more_lease() {
    let policy = PoolPolicy::original().slow_penalty(Some(SlowPenalty::default()));
    let pool = Pool::with_policy(policy).expect("valid");
    for (server, slot) in [(0, 0), (1, 1), (2, 2)] {
        keep_from(&pool, server, slot, Fake::new(slot));
    }
    // Slot 0 answers in 9 ms, slots 1 and 2 in 1 ms: pool mean 3.67 ms, 1.5 × = 5.5 ms.
    let (a, b, c) = (
        pool.get().expect("idle"),
        pool.get().expect("idle"),
        pool.get().expect("idle"),
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    drop((b, c));
    tokio::time::advance(Duration::from_millis(8)).await;
    drop(a);
    let ewmas = pool.shared.lock().ewmas();
    assert_eq!(ewmas.len(), 3);
    assert!((ewmas[0].1 - 0.009).abs() < 1e-6, "{ewmas:?}");
    let order: Vec<u32> = {
        let leases: Vec<_> = (0..3).map(|_| pool.get().expect("idle")).collect();
        leases.iter().map(|l| l.slot()).collect()
    };
    assert_eq!(
        order,
        vec![1, 2, 0],
        "the slow slot 0 goes after the fast ones"
    );
    // Those leases ended at once (a ~0 ms sample): each average moved 0.2 of the way.
    let ewmas = pool.shared.lock().ewmas();
    assert!((ewmas[0].1 - 0.0072).abs() < 1e-6, "{ewmas:?}");
    assert!((ewmas[1].1 - 0.0008).abs() < 1e-6, "{ewmas:?}");
}

#[tokio::test(start_paused = true)]
async fn an_expired_connection_stays_until_a_newcomer_replaces_it() {
    let age = Duration::from_secs(10);
    let policy = PoolPolicy::original().max_slots(2).max_age(Some(age));
    let pool = Pool::with_policy(policy).expect("valid");
    let (idle, leased) = (Fake::new(1), Fake::new(2));
    let ((_, idle_closed), (_, leased_closed)) = (idle.probes(), leased.probes());
    keep(&pool, 1, leased);
    keep(&pool, 2, idle);
    let lease = pool.get().expect("idle");
    assert_eq!(lease.id, 2);
    // Lifetimes are in [5 s, 15 s): by 15 s both expired, yet both stay in the pool.
    tokio::time::advance(age / 2 * 3).await;
    assert_eq!(
        (pool.len(), pool.idle_len(), pool.take_retired()),
        (2, 1, 0)
    );
    assert!(
        !idle_closed.load(Ordering::Relaxed),
        "expired, still pooled"
    );
    // Each newcomer replaces one expired connection. A pool this small keeps slots: a
    // newcomer must be no worse than the expired one (slot 1 is; slot 9 is refused).
    assert!(matches!(pool.offer(9, Fake::new(9)), Offer::Rejected(..)));
    for _ in 0..2 {
        assert!(matches!(
            pool.offer(1, Fake::new(9)),
            Offer::Replaced { .. }
        ));
    }
    assert_eq!((pool.len(), pool.take_retired()), (2, 2));
    assert!(
        idle_closed.load(Ordering::Relaxed),
        "idle: closed when replaced"
    );
    assert!(
        !leased_closed.load(Ordering::Relaxed),
        "leased: still in use"
    );
    drop(lease);
    assert!(leased_closed.load(Ordering::Relaxed), "closed on return");
    assert_eq!(
        (pool.len(), pool.idle_len()),
        (2, 2),
        "never back in the pool"
    );
    // The newcomers have not expired: slots decide again.
    assert!(matches!(pool.offer(9, Fake::new(10)), Offer::Rejected(_)));
    // Without a maximum age nothing ever expires.
    let forever = original(1).expect("valid");
    keep(&forever, 1, Fake::new(1));
    tokio::time::advance(Duration::from_secs(1 << 40)).await;
    assert!(matches!(forever.offer(9, Fake::new(2)), Offer::Rejected(_)));
    assert_eq!(forever.take_retired(), 0);
}

#[test]
fn improved_policy_builds_and_leases() {
    let pool = Pool::with_policy(PoolPolicy::improved().max_slots(2)).expect("valid");
    keep_from(&pool, 0, 0, Fake::new(1));
    keep_from(&pool, 1, 0, Fake::new(2));
    assert!(matches!(
        pool.offer_from(ServerKey(2), 0, Fake::new(3)),
        Offer::Replaced {
            evicted_slot: 0,
            ..
        }
    ));
    assert_eq!(pool.get().expect("idle").slot(), 0);
    assert_eq!(
        Pool::<Fake>::with_policy(PoolPolicy::improved().max_slots(0)).err(),
        Some(PoolError::ZeroMaxSlots)
    );
}

// --- a server leaving ---

#[test]
fn evicting_a_server_closes_its_idle_connections_now_and_its_leased_ones_on_return() {
    let pool = original(4).expect("valid");
    let (gone, stays) = (ServerKey(1), ServerKey(2));
    let idle = Fake::new(1);
    let (_, idle_closed) = idle.probes();
    assert!(matches!(pool.offer_from(gone, 0, idle), Offer::Kept));
    let leased = Fake::new(2);
    let (_, leased_closed) = leased.probes();
    assert!(matches!(pool.offer_from(gone, 5, leased), Offer::Kept));
    assert!(matches!(
        pool.offer_from(stays, 1, Fake::new(3)),
        Offer::Kept
    ));
    let mut leases: Vec<Lease<Fake>> = std::iter::from_fn(|| pool.get()).collect();
    let ids: Vec<u32> = leases.iter().map(|l| l.id).collect();
    assert_eq!(ids, [1, 3, 2], "lowest slot first");
    let lease = leases.pop().expect("slot 5");
    drop(leases);
    assert_eq!(pool.held_per_server().get(&gone), Some(&2));

    assert_eq!(pool.evict_server(gone), 2);
    assert!(idle_closed.load(Ordering::Relaxed), "idle: closed at once");
    assert!(
        !leased_closed.load(Ordering::Relaxed),
        "leased: still in use"
    );
    assert_eq!(pool.held_slots(), vec![1]);
    assert_eq!(pool.held_per_server().get(&gone), None);
    drop(lease);
    assert!(leased_closed.load(Ordering::Relaxed), "closed on return");
    assert_eq!(pool.held_slots(), vec![1]);
    assert_eq!(pool.get().map(|l| l.id), Some(3));
}

// --- acquire ---

#[tokio::test(start_paused = true)]
async fn acquire_waits_for_an_offer_or_a_return_then_times_out() {
    let pool = original(4).expect("valid");
    let timeout = Duration::from_secs(1);
    assert!(matches!(
        pool.acquire(timeout).await.err(),
        Some(AcquireError::Timeout { timeout: t }) if t == timeout
    ));
    let offering = pool.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        keep(&offering, 2, Fake::new(2));
    });
    let lease = pool
        .acquire(timeout)
        .await
        .expect("offered within the timeout");
    let returning = pool.clone();
    let waiter = tokio::spawn(async move { returning.acquire(timeout).await.map(|l| l.id) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(lease);
    assert_eq!(waiter.await.expect("task").ok(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn acquire_with_a_timeout_of_max_waits_as_long_as_it_takes() {
    let pool = original(4).expect("valid");
    let offering = pool.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        keep(&offering, 5, Fake::new(5));
    });
    let lease = pool
        .acquire(Duration::MAX)
        .await
        .expect("offered after an hour");
    assert_eq!(lease.id, 5);
}

// --- model check ---

#[derive(Debug, Clone)]
enum Op {
    Offer(u32),
    Get,
    Return(usize),
    Discard(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..20).prop_map(Op::Offer),
        2 => Just(Op::Get),
        2 => (0usize..8).prop_map(Op::Return),
        1 => (0usize..8).prop_map(Op::Discard),
    ]
}

/// The obvious model: a list of `(slot, arrival, leased)` for held connections.
#[derive(Default)]
struct Model {
    held: Vec<(u32, u32, bool)>,
    arrivals: u32,
}

proptest! {
    #[test]
    fn behaves_like_the_obvious_model(max in 1usize..6, ops in prop::collection::vec(op(), 0..150)) {
        let pool = original(max).expect("valid");
        let mut model = Model::default();
        // Leases held by the test, with their model arrival (None: evicted in the model).
        let mut leases: Vec<(Lease<Fake>, u32)> = Vec::new();
        for op in ops {
            match op {
                Op::Offer(slot) => {
                    let arrival = model.arrivals + 1;
                    let outcome = pool.offer(slot, Fake::new(arrival));
                    if model.held.len() < max {
                        prop_assert!(matches!(outcome, Offer::Kept));
                        model.arrivals = arrival;
                        model.held.push((slot, arrival, false));
                    } else {
                        let worst = model.held.iter().copied().enumerate()
                            .max_by_key(|&(_, (s, a, _))| (s, a));
                        match (worst, outcome) {
                            (Some((i, (wslot, _, leased))), Offer::Replaced { evicted_slot, evicted }) => {
                                prop_assert!(slot < wslot);
                                prop_assert_eq!(evicted_slot, wslot);
                                prop_assert_eq!(evicted.is_none(), leased);
                                model.held.remove(i);
                                model.arrivals = arrival;
                                model.held.push((slot, arrival, false));
                            }
                            (Some((_, (wslot, _, _))), Offer::Rejected(_)) => prop_assert!(slot >= wslot),
                            (_, other) => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                }
                Op::Get => {
                    let lowest = model.held.iter_mut().filter(|e| !e.2).min_by_key(|e| (e.0, e.1));
                    match (lowest, pool.get()) {
                        (Some(e), Some(lease)) => {
                            prop_assert_eq!((lease.slot(), lease.id), (e.0, e.1));
                            e.2 = true;
                            leases.push((lease, e.1));
                        }
                        (None, None) => {}
                        (m, p) => prop_assert!(false, "model {:?} pool {:?}", m, p.map(|l| l.slot())),
                    }
                }
                Op::Return(i) | Op::Discard(i) if i < leases.len() => {
                    let (lease, arrival) = leases.swap_remove(i);
                    let at = model.held.iter().position(|e| e.1 == arrival);
                    if matches!(op, Op::Discard(_)) {
                        lease.discard();
                        if let Some(at) = at { model.held.remove(at); }
                    } else {
                        drop(lease);
                        if let Some(at) = at { model.held[at].2 = false; }
                    }
                }
                Op::Return(_) | Op::Discard(_) => {}
            }
            prop_assert_eq!(pool.len(), model.held.len());
            prop_assert_eq!(pool.idle_len(), model.held.iter().filter(|e| !e.2).count());
        }
    }
}

#[derive(Debug, Clone)]
enum ImprovedOp {
    Offer(u64, u32),
    Get,
    Return(usize),
    Discard(usize),
    /// Read the count of expired connections replaced (none: nothing expires in the test).
    Retire,
}

fn improved_op() -> impl Strategy<Value = ImprovedOp> {
    prop_oneof![
        3 => (0u64..3, 0u32..6).prop_map(|(server, slot)| ImprovedOp::Offer(server, slot)),
        3 => Just(ImprovedOp::Get),
        2 => (0usize..8).prop_map(ImprovedOp::Return),
        1 => (0usize..8).prop_map(ImprovedOp::Discard),
        1 => Just(ImprovedOp::Retire),
    ]
}

proptest! {
    /// Under the improved policy: never more than `max_slots` held, the per-server lease
    /// counts match the leased held entries, and every connection out of the pool
    /// (replaced, retired, discarded) is closed once its lease ends: it never re-enters.
    #[test]
    fn improved_pool_keeps_its_invariants(
        max in 1usize..6,
        ops in prop::collection::vec(improved_op(), 0..150),
    ) {
        let age = Duration::from_secs(3600);
        let pool = Pool::with_policy(PoolPolicy::improved().max_slots(max).max_age(Some(age)))
            .expect("valid");
        let mut leases: Vec<Lease<Fake>> = Vec::new();
        let mut closed_flags = Vec::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                ImprovedOp::Offer(server, slot) => {
                    next += 1;
                    let conn = Fake::new(next);
                    closed_flags.push(conn.probes().1);
                    let full = pool.len() == max;
                    // Slots held on a server the pool holds more than once, before the offer.
                    let held = pool.shared.lock().held_entries();
                    let shared_slots: Vec<u32> = held
                        .iter()
                        .filter(|(s, _)| s.is_some() && held.iter().filter(|(o, _)| o == s).count() > 1)
                        .map(|&(_, slot)| slot)
                        .collect();
                    let small = max <= crate::pool::decide::SLOT_KEEPING_MAX_SLOTS;
                    match pool.offer_from(ServerKey(server), slot, conn) {
                        Offer::Kept => prop_assert!(!full),
                        // Never a higher slot, except that a small pool lets a new server
                        // replace a second connection to a shared server (its servers kept
                        // distinct).
                        Offer::Replaced { evicted_slot, .. } => prop_assert!(
                            full && (slot <= evicted_slot || (small && shared_slots.contains(&evicted_slot)))
                        ),
                        Offer::Rejected(_) => prop_assert!(full),
                    }
                }
                ImprovedOp::Get => leases.extend(pool.get()),
                ImprovedOp::Return(i) if i < leases.len() => drop(leases.swap_remove(i)),
                ImprovedOp::Discard(i) if i < leases.len() => leases.swap_remove(i).discard(),
                ImprovedOp::Return(_) | ImprovedOp::Discard(_) => {}
                ImprovedOp::Retire => {
                    // Nothing expires within the test (lifetimes of 30 minutes or more).
                    prop_assert_eq!(pool.take_retired(), 0);
                }
            }
            let (len, idle) = (pool.len(), pool.idle_len());
            prop_assert!(idle <= len && len <= max);
            let counted: u32 = (0..3).map(|s| pool.shared.lock().leases_at(ServerKey(s))).sum();
            prop_assert_eq!(counted as usize, len - idle);
            prop_assert!(pool.shared.lock().mean_drift() < 1e-12);
            let open = closed_flags.iter().filter(|c| !c.load(Ordering::Relaxed)).count();
            prop_assert!(len <= open && open <= len + leases.len());
        }
        leases.clear();
        let open = closed_flags.iter().filter(|c| !c.load(Ordering::Relaxed)).count();
        prop_assert_eq!((pool.len(), pool.idle_len()), (open, open));
    }
}

proptest! {
    /// Under least outstanding (no slow penalty), every lease goes to an idle connection
    /// whose server has the fewest of the pool's leases, the lowest slot among those.
    #[test]
    fn least_outstanding_leases_from_a_least_leased_server(
        ops in prop::collection::vec(improved_op(), 0..150),
        random in any::<bool>(),
    ) {
        let policy = PoolPolicy::original().max_slots(5).least_outstanding(true).random_tie_break(random);
        let pool = Pool::with_policy(policy).expect("valid");
        let mut leases: Vec<Lease<Fake>> = Vec::new();
        let mut server_of = std::collections::HashMap::new();
        let mut next = 0u32;
        for op in ops {
            match op {
                ImprovedOp::Offer(server, slot) => {
                    next += 1;
                    server_of.insert(next, server);
                    drop(pool.offer_from(ServerKey(server), slot, Fake::new(next)));
                }
                ImprovedOp::Get => {
                    let (best, counts) = {
                        let inner = pool.shared.lock();
                        let cost = |server: Option<ServerKey>| server.map_or(0, |s| inner.leases_at(s));
                        let best = inner.idle_entries().into_iter().map(|(s, slot)| (cost(s), slot)).min();
                        (best, (0..3).map(|s| inner.leases_at(ServerKey(s))).collect::<Vec<_>>())
                    };
                    let lease = pool.get();
                    prop_assert_eq!(lease.is_some(), best.is_some());
                    if let Some(lease) = lease {
                        let server = server_of[&lease.id] as usize;
                        prop_assert_eq!(Some((counts[server], lease.slot())), best);
                        leases.push(lease);
                    }
                }
                ImprovedOp::Return(i) if i < leases.len() => drop(leases.swap_remove(i)),
                ImprovedOp::Discard(i) if i < leases.len() => leases.swap_remove(i).discard(),
                ImprovedOp::Return(_) | ImprovedOp::Discard(_) | ImprovedOp::Retire => {}
            }
        }
    }
}

#[test]
fn a_small_improved_pool_spreads_its_leases_over_every_slot() {
    // Three places on three servers, slots 0, 4 and 9: one lease at a time, 3,000 times.
    // The lowest slot would take all; spread, each takes ~1,000 (±6 σ = ±155). No slow
    // penalty: response times of a test's immediate returns are noise.
    let policy = PoolPolicy::improved()
        .max_slots(3)
        .slow_penalty(None)
        .seed(Some(5));
    let pool = Pool::with_policy(policy).expect("valid");
    for (server, slot) in [(0, 0), (1, 4), (2, 9)] {
        drop(pool.offer_from(ServerKey(server), slot, Fake::new(slot)));
    }
    let mut by_slot = std::collections::HashMap::new();
    for _ in 0..3000 {
        let lease = pool.get().expect("an idle connection");
        *by_slot.entry(lease.slot()).or_insert(0u32) += 1;
    }
    for slot in [0, 4, 9] {
        let n = by_slot.get(&slot).copied().unwrap_or(0);
        assert!(
            (845..=1155).contains(&n),
            "slot {slot}: {n} of 3000 ({by_slot:?})"
        );
    }
}

// --- sharing ---

#[test]
fn pool_and_lease_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool<Fake>>();
    send_sync::<Lease<Fake>>();
}

/// Threads offering, leasing, returning and discarding (and retiring, under a maximum
/// age) at once, under the original and the improved rules: no panic, never more than
/// `max_slots` held, and no lease left outstanding.
#[test]
fn concurrent_use_keeps_the_invariants() {
    let improved = PoolPolicy::improved().max_age(Some(Duration::from_micros(50)));
    for policy in [PoolPolicy::original(), improved] {
        concurrent_use(Pool::with_policy(policy.max_slots(8)).expect("valid"));
    }
}

fn concurrent_use(pool: Pool<Fake>) {
    let made = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4u32)
            .map(|t| {
                let pool = pool.clone();
                scope.spawn(move || {
                    let mut made = 0;
                    for i in 0..2_000u32 {
                        match (i + t) % 4 {
                            0 | 1 => {
                                made += 1;
                                let server = ServerKey(u64::from(i % 3));
                                drop(pool.offer_from(server, (i * 7 + t) % 32, Fake::new(i)));
                            }
                            2 if i % 8 == 2 => {
                                pool.take_retired();
                            }
                            2 => drop(pool.get()),
                            _ => {
                                if let Some(lease) = pool.get() {
                                    lease.discard();
                                }
                            }
                        }
                        assert!(pool.len() <= 8);
                    }
                    made
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .sum::<u32>()
    });
    assert!(made > 0 && pool.len() <= 8);
    assert_eq!(pool.len(), pool.idle_len(), "no lease outstanding");
}
