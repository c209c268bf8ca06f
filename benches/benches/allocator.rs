//! Slot allocator: our lock-free bitmap against the naive designs, in the same run.
//!
//! `cargo bench -p callosum-benches --bench allocator`
//!
//! - `pair/<fill>`: one uncontended acquire + release with `fill` slots already held, so
//!   the lowest free slot is at the end of the held range.
//! - `contended/2-threads`: two threads hammering acquire + release; reported as time per
//!   pair per thread (throughput = 2 / time).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use callosum_benches::baseline::{BTreeSlots, HeapSlots};
use callosum_server::{SlotSource, Slots};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const FILLS: [u32; 4] = [0, 1_000, 65_536, 1_000_000];

fn filled<S: SlotSource>(source: S, fill: u32) -> S {
    for _ in 0..fill {
        source.acquire().expect("capacity covers the fill");
    }
    source
}

fn pair<S: SlotSource>(source: &S) {
    let slot = source.acquire().expect("a free slot");
    source.release(black_box(slot)).expect("held");
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair");
    for fill in FILLS {
        let ours = filled(Slots::new(1 << 24), fill);
        group.bench_with_input(BenchmarkId::new("bitmap", fill), &ours, |b, s| {
            b.iter(|| pair(s))
        });
        let heap = filled(HeapSlots::default(), fill);
        group.bench_with_input(BenchmarkId::new("mutex-binaryheap", fill), &heap, |b, s| {
            b.iter(|| pair(s))
        });
        let btree = filled(BTreeSlots::default(), fill);
        group.bench_with_input(BenchmarkId::new("mutex-btreeset", fill), &btree, |b, s| {
            b.iter(|| pair(s))
        });
    }
    group.finish();
}

/// Runs `iters` pairs on each of two threads at once; returns the wall time.
fn two_threads<S: SlotSource + Send + Sync + 'static>(source: &Arc<S>, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (source, barrier) = (source.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    pair(&*source);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for w in workers {
        w.join().expect("bench thread");
    }
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended");
    let ours = Arc::new(Slots::new(1 << 24));
    group.bench_function("bitmap/2-threads", |b| {
        b.iter_custom(|iters| two_threads(&ours, iters))
    });
    let heap = Arc::new(HeapSlots::default());
    group.bench_function("mutex-binaryheap/2-threads", |b| {
        b.iter_custom(|iters| two_threads(&heap, iters))
    });
    let btree = Arc::new(BTreeSlots::default());
    group.bench_function("mutex-btreeset/2-threads", |b| {
        b.iter_custom(|iters| two_threads(&btree, iters))
    });
    group.finish();
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
