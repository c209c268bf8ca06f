//! Tests of the bitmap allocator: the original library's cases, a proptest against a
//! `BTreeSet` model, and a bounded multi-threaded stress test of exclusive ownership.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::slots::SlotGuard;

// --- The original library's cases -------------------------------------------------------

#[test]
fn first_acquire_is_zero() {
    assert_eq!(Slots::new(1 << 20).acquire(), Some(0));
}

#[test]
fn ten_thousand_acquires_return_zero_to_9999_in_order() {
    let slots = Slots::new(1 << 20);
    for expected in 0..10_000 {
        assert_eq!(slots.acquire(), Some(expected));
    }
    assert_eq!(slots.in_use(), 10_000);
    assert_eq!(slots.high_water(), 10_000);
}

#[test]
fn released_evens_come_back_lowest_first() {
    let slots = Slots::new(1 << 20);
    for _ in 0..10_000 {
        slots.acquire().unwrap();
    }
    for even in (0..10_000).step_by(2).rev() {
        slots.release(even).unwrap();
    }
    for even in (0..10_000).step_by(2) {
        assert_eq!(slots.acquire(), Some(even));
    }
    assert_eq!(slots.acquire(), Some(10_000));
}

#[test]
fn releasing_a_slot_never_given_is_an_error() {
    let slots = Slots::new(100);
    assert_eq!(slots.release(7), Err(SlotError::NotAllocated { slot: 7 }));
    assert_eq!(
        slots.release(100),
        Err(SlotError::OutOfRange {
            slot: 100,
            capacity: 100
        })
    );
    assert_eq!(
        slots.acquire(),
        Some(0),
        "a refused release changes nothing"
    );
}

#[test]
fn releasing_twice_is_an_error_and_changes_nothing() {
    let slots = Slots::new(100);
    let (a, b) = (slots.acquire().unwrap(), slots.acquire().unwrap());
    slots.release(a).unwrap();
    assert_eq!(slots.release(a), Err(SlotError::NotAllocated { slot: a }));
    assert_eq!(slots.in_use(), 1);
    assert_eq!(slots.acquire(), Some(a));
    assert_eq!(slots.acquire(), Some(b + 1));
}

// --- Capacity edges -----------------------------------------------------------------------

#[test]
fn exhaustion_returns_none_at_every_shape() {
    // One word, a partial word, exactly two levels, a partial third level.
    for capacity in [0u32, 1, 63, 64, 65, 4096, 4097, 64 * 64 * 3 + 5] {
        let slots = Slots::new(capacity);
        for expected in 0..capacity {
            assert_eq!(slots.acquire(), Some(expected), "capacity {capacity}");
        }
        assert_eq!(slots.acquire(), None, "capacity {capacity}");
        assert_eq!(slots.in_use(), capacity);
        if capacity > 0 {
            let mid = capacity / 2;
            slots.release(mid).unwrap();
            assert_eq!(slots.acquire(), Some(mid), "capacity {capacity}");
            assert_eq!(slots.acquire(), None, "capacity {capacity}");
        }
    }
}

#[test]
fn capacity_of_2_pow_24_works_at_both_ends() {
    let slots = Slots::new(1 << 24);
    assert_eq!(slots.acquire(), Some(0));
    assert_eq!(
        slots.release((1 << 24) - 1),
        Err(SlotError::NotAllocated {
            slot: (1 << 24) - 1
        })
    );
    slots.release(0).unwrap();
    assert_eq!(slots.in_use(), 0);
}

#[test]
fn freeing_a_full_subtree_is_seen_through_three_levels() {
    let capacity = 64 * 64 * 2;
    let slots = Slots::new(capacity);
    for _ in 0..capacity {
        slots.acquire().unwrap();
    }
    assert_eq!(slots.acquire(), None);
    slots.release(4095).unwrap();
    slots.release(7000).unwrap();
    assert_eq!(slots.acquire(), Some(4095));
    assert_eq!(slots.acquire(), Some(7000));
    assert_eq!(slots.acquire(), None);
}

#[test]
fn guard_releases_exactly_once_on_drop() {
    let slots = Arc::new(Slots::new(10));
    let guard = SlotGuard::acquire(slots.clone()).unwrap();
    assert_eq!(guard.slot(), 0);
    assert_eq!(SlotGuard::acquire(&*slots).map(|g| g.slot()), Some(1));
    assert_eq!(slots.in_use(), 1, "the borrowed guard released slot 1");
    drop(guard);
    assert_eq!(slots.in_use(), 0);
    assert_eq!(slots.release(0), Err(SlotError::NotAllocated { slot: 0 }));
}

// --- Against a model ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Release the held slot at this index (mod the number held), or a slot never given.
    Release(usize),
    ReleaseUnheld(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Acquire),
        4 => any::<usize>().prop_map(Op::Release),
        1 => any::<u32>().prop_map(Op::ReleaseUnheld),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_a_btreeset_model(capacity in 0u32..10_000, ops in prop::collection::vec(op(), 0..600)) {
        let slots = Slots::new(capacity);
        let mut held = BTreeSet::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let expected = (0..capacity).find(|s| !held.contains(s));
                    prop_assert_eq!(slots.acquire(), expected);
                    if let Some(s) = expected {
                        held.insert(s);
                    }
                }
                Op::Release(i) if !held.is_empty() => {
                    let s = *held.iter().nth(i % held.len()).unwrap();
                    held.remove(&s);
                    prop_assert_eq!(slots.release(s), Ok(()));
                }
                Op::Release(_) => {}
                Op::ReleaseUnheld(s) => {
                    if !held.contains(&s) {
                        prop_assert!(slots.release(s).is_err());
                    }
                }
            }
            prop_assert_eq!(slots.in_use() as usize, held.len());
        }
    }
}

// --- Threads ------------------------------------------------------------------------------

#[test]
fn concurrent_holders_never_share_a_slot() {
    const THREADS: usize = 4;
    const CAPACITY: u32 = 200; // small, so words fill and empty and summaries churn
    let slots = Arc::new(Slots::new(CAPACITY));
    let owner: Arc<Vec<AtomicBool>> =
        Arc::new((0..CAPACITY).map(|_| AtomicBool::new(false)).collect());
    let violations = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(2);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (slots, owner, violations) = (slots.clone(), owner.clone(), violations.clone());
            std::thread::spawn(move || {
                let mut rng = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut mine = Vec::new();
                let mut ops = 0u64;
                while ops < 2_000_000 && (ops % 1024 != 0 || Instant::now() < deadline) {
                    ops += 1;
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if mine.len() < 60 && (rng % 3 != 0 || mine.is_empty()) {
                        if let Some(s) = slots.acquire() {
                            if owner[s as usize].swap(true, Ordering::AcqRel) {
                                violations.fetch_add(1, Ordering::Relaxed);
                            }
                            mine.push(s);
                        }
                    } else {
                        let s = mine.swap_remove(rng as usize % mine.len());
                        owner[s as usize].store(false, Ordering::Release);
                        slots.release(s).unwrap();
                    }
                }
                for s in mine {
                    owner[s as usize].store(false, Ordering::Release);
                    slots.release(s).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "a slot had two holders"
    );
    assert_eq!(slots.in_use(), 0);
    // Quiescent again: the summaries hide nothing, so allocation is exactly lowest-first.
    for expected in 0..CAPACITY {
        assert_eq!(slots.acquire(), Some(expected));
    }
    assert_eq!(slots.acquire(), None);
}
