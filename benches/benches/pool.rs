//! Connection pool: lease + return, and offer with replacement at `max_slots`.
//!
//! `cargo bench -p callosum-benches --bench pool`
//!
//! The connections are stand-ins (a `u64` whose liveness check is a constant), so the
//! figures are the pool's own cost: the lock, the two indexed heaps and the lease.
//!
//! - `get+return/<held>`: lease the lowest idle connection and drop the lease, with `held`
//!   idle connections in the pool.
//! - `offer-replace/<held>`: offer a connection to a full pool (`max_slots = held`) with a
//!   slot lower than every held one, so each offer evicts the highest (idle) connection
//!   and keeps the new one: the worst case for the min-heap (the newcomer sifts to the top).

use std::hint::black_box;
use std::time::{Duration, Instant};

use callosum_client::pool::{Liveness, Offer, Pool};
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
    let pool = Pool::new(held).expect("held > 0");
    for i in 0..held as u32 {
        let slot = first_slot + i;
        assert!(matches!(
            pool.offer(slot, Stub(u64::from(slot))),
            Offer::Kept
        ));
    }
    pool
}

fn get_return(c: &mut Criterion) {
    let mut group = c.benchmark_group("get+return");
    for held in HELD {
        let pool = full_pool(held, 0);
        group.bench_with_input(BenchmarkId::from_parameter(held), &pool, |b, pool| {
            b.iter(|| drop(black_box(pool.get().expect("an idle stub"))))
        });
    }
    group.finish();
}

fn offer_replace(c: &mut Criterion) {
    let mut group = c.benchmark_group("offer-replace");
    for held in HELD {
        group.bench_function(BenchmarkId::from_parameter(held), |b| {
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
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = get_return, offer_replace
}
criterion_main!(benches);
