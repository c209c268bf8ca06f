//! Connection pool: lease + return, and offer with replacement at `max_slots`.
//!
//! `cargo bench -p callosum-benches --bench pool`
//!
//! The connections are stand-ins (a `u64` whose liveness check is a constant), so the
//! figures are the pool's own cost: the lock, the two indexed heaps and the lease.
//!
//! - `get+return/<held>`: lease the lowest idle connection and drop the lease, with `held`
//!   idle connections in the pool. `improved` is the same under `PoolPolicy::improved()`
//!   (connections spread over 10 servers): the lease scans the idle connections, so it
//!   grows with `held`. `improved-preferred` holds each connection on its own server and
//!   was offered busy servers' slots first, so the pool sees many clients per server and
//!   draws a preferred connection every other lease (a scan of the held connections).
//! - `offer-replace/<held>`: offer a connection to a full pool (`max_slots = held`) with a
//!   slot lower than every held one, so each offer evicts the highest (idle) connection
//!   and keeps the new one: the worst case for the min-heap (the newcomer sifts to the top).
//! - `get+return-tcp/100`: the same lease and return with real loopback `TcpStream`s, whose
//!   liveness check is a `recv(MSG_PEEK | MSG_DONTWAIT)` at lease and at return.
//!
//! Each `pool` figure has a `mutex-btreeset` one beside it: the naive design, a mutex around
//! an ordered set of idle `(slot, id)` and one of held `(slot, id)`.

use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callosum_client::pool::{Liveness, Offer, Pool, PoolPolicy, ServerKey};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const HELD: [usize; 2] = [100, 10_000];

/// A stand-in connection.
struct Stub(#[allow(dead_code)] u64);

impl Liveness for Stub {
    fn is_alive(&self) -> bool {
        true
    }
}

/// A pool of `held` idle stubs with distinct slots starting at `first_slot`, full.
fn full_pool(held: usize, first_slot: u32) -> Pool<Stub> {
    full_pool_with(PoolPolicy::original(), held, first_slot)
}

/// The same under `policy`, the stubs spread over 10 servers.
fn full_pool_with(policy: PoolPolicy, held: usize, first_slot: u32) -> Pool<Stub> {
    let pool = Pool::with_policy(policy.max_slots(held)).expect("held > 0");
    for i in 0..held as u32 {
        let slot = first_slot + i;
        let server = ServerKey(u64::from(i % 10));
        assert!(matches!(
            pool.offer_from(server, slot, Stub(u64::from(slot))),
            Offer::Kept
        ));
    }
    pool
}

/// A full pool under the improved policy, one server per connection, whose offered slots
/// average far above 4 per place: it draws a preferred connection.
fn preferred_pool(held: usize) -> Pool<Stub> {
    let pool = Pool::with_policy(PoolPolicy::improved().max_slots(held)).expect("held > 0");
    let busy = 8 * held as u32;
    for i in 0..held as u32 {
        assert!(matches!(
            pool.offer_from(ServerKey(u64::from(i)), busy + i, Stub(u64::from(i))),
            Offer::Kept
        ));
    }
    pool
}

/// The naive pool: ordered sets of idle and held `(slot, id)`, connections by id.
#[derive(Default)]
struct NaivePool {
    inner: Mutex<NaiveInner>,
    max_slots: usize,
}

#[derive(Default)]
struct NaiveInner {
    idle: BTreeSet<(u32, u64)>,
    held: BTreeSet<(u32, u64)>,
    conns: HashMap<u64, Stub>,
    next_id: u64,
}

impl NaivePool {
    fn full(held: usize, first_slot: u32) -> Self {
        let pool = Self {
            max_slots: held,
            ..Self::default()
        };
        for i in 0..held as u32 {
            assert!(pool.offer(first_slot + i, Stub(0)).is_none());
        }
        pool
    }

    /// Keeps `conn` or hands back what to close.
    fn offer(&self, slot: u32, conn: Stub) -> Option<Stub> {
        let mut inner = self.inner.lock().expect("bench lock");
        let mut evicted = None;
        if inner.held.len() >= self.max_slots {
            match inner.held.last().copied() {
                Some(worst) if slot < worst.0 => {
                    inner.held.remove(&worst);
                    inner.idle.remove(&worst);
                    evicted = inner.conns.remove(&worst.1);
                }
                _ => return Some(conn),
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.idle.insert((slot, id));
        inner.held.insert((slot, id));
        inner.conns.insert(id, conn);
        evicted
    }

    fn get(&self) -> Option<(u32, u64, Stub)> {
        let mut inner = self.inner.lock().expect("bench lock");
        let (slot, id) = inner.idle.pop_first()?;
        let conn = inner.conns.remove(&id)?;
        Some((slot, id, conn))
    }

    fn give_back(&self, (slot, id, conn): (u32, u64, Stub)) {
        let mut inner = self.inner.lock().expect("bench lock");
        if inner.held.contains(&(slot, id)) {
            inner.idle.insert((slot, id));
            inner.conns.insert(id, conn);
        }
    }
}

fn get_return(c: &mut Criterion) {
    let mut group = c.benchmark_group("get+return");
    for held in HELD {
        let pool = full_pool(held, 0);
        group.bench_with_input(BenchmarkId::new("pool", held), &pool, |b, pool| {
            b.iter(|| drop(black_box(pool.get().expect("an idle stub"))))
        });
        let improved = full_pool_with(PoolPolicy::improved(), held, 0);
        group.bench_with_input(BenchmarkId::new("improved", held), &improved, |b, pool| {
            b.iter(|| drop(black_box(pool.get().expect("an idle stub"))))
        });
        let preferred = preferred_pool(held);
        group.bench_with_input(
            BenchmarkId::new("improved-preferred", held),
            &preferred,
            |b, pool| b.iter(|| drop(black_box(pool.get().expect("an idle stub")))),
        );
        let naive = NaivePool::full(held, 0);
        group.bench_with_input(
            BenchmarkId::new("mutex-btreeset", held),
            &naive,
            |b, pool| b.iter(|| pool.give_back(black_box(pool.get().expect("an idle stub")))),
        );
    }
    group.finish();
}

/// Lease and return over 100 real loopback connections.
fn get_return_tcp(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let held = 100;
    let (pool, _peers) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let pool = Pool::with_policy(PoolPolicy::original().max_slots(held)).expect("held > 0");
        let mut peers = Vec::new();
        for slot in 0..held as u32 {
            let (client, accepted) =
                tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
            peers.push(accepted.expect("accept").0);
            assert!(matches!(
                pool.offer(slot, client.expect("connect")),
                Offer::Kept
            ));
        }
        (pool, peers)
    });
    c.bench_function("get+return-tcp/100", |b| {
        b.iter(|| drop(black_box(pool.get().expect("an idle socket"))))
    });
}

fn offer_replace(c: &mut Criterion) {
    let mut group = c.benchmark_group("offer-replace");
    for held in HELD {
        group.bench_function(BenchmarkId::new("pool", held), |b| {
            b.iter_custom(|iters| {
                // Held slots sit above every slot offered; each offer is lower than the
                // last, so every offer replaces the highest held connection.
                let top = u32::MAX - held as u32;
                let pool = full_pool(held, top);
                let mut slot = top;
                let start = Instant::now();
                for _ in 0..iters {
                    slot = slot.wrapping_sub(1);
                    let outcome = pool.offer(black_box(slot), Stub(u64::from(slot)));
                    debug_assert!(matches!(outcome, Offer::Replaced { .. }));
                    drop(black_box(outcome));
                }
                let elapsed = start.elapsed();
                drop(pool);
                elapsed
            })
        });
        group.bench_function(BenchmarkId::new("mutex-btreeset", held), |b| {
            b.iter_custom(|iters| {
                let top = u32::MAX - held as u32;
                let pool = NaivePool::full(held, top);
                let mut slot = top;
                let start = Instant::now();
                for _ in 0..iters {
                    slot = slot.wrapping_sub(1);
                    black_box(pool.offer(black_box(slot), Stub(0)));
                }
                let elapsed = start.elapsed();
                drop(pool);
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = get_return, offer_replace, get_return_tcp
}
criterion_main!(benches);
