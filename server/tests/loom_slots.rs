//! loom model tests of the slot allocator's races. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p callosum-server --test loom_slots --release`.
//!
//! Each model pre-fills word 0 to one (or two) short of full on the main thread, so the threads
//! race exactly where the set-then-recheck protocol of the summaries matters: one acquire fills
//! word 0 and marks it full in the summary while another thread frees a slot in it or descends
//! past it into word 1. With CI's bound of three
//! preemptions (`LOOM_MAX_PREEMPTIONS=3`) the whole file takes about a minute in release. Only
//! the allocator's public API is used, so the models hold whatever its internals become.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use callosum_server::slots::Slots;
use loom::sync::Arc;
use loom::thread;

/// Capacity 128: two leaf words under one summary word.
fn nearly_full_word() -> Slots {
    nearly_full(128, 1)
}

/// Slots `0..64 - free` taken, so word 0 has `free` slots left and word 1 is empty.
fn nearly_full(capacity: u32, free: u32) -> Slots {
    let slots = Slots::new(capacity);
    for expected in 0..64 - free {
        assert_eq!(slots.acquire(), Some(expected));
    }
    slots
}

/// After the threads are done: exactly lowest-first again, nothing hidden by a summary bit.
fn assert_settled(slots: &Slots, held: &[u32]) {
    let mut held = held.to_vec();
    held.sort_unstable();
    assert_eq!(slots.in_use() as usize, held.len());
    let expected = (0..slots.capacity()).find(|s| held.binary_search(s).is_err());
    assert_eq!(slots.acquire(), expected);
}

/// `n` threads, each acquiring one slot.
fn acquirers(slots: &Arc<Slots>, n: usize) -> Vec<thread::JoinHandle<u32>> {
    (0..n)
        .map(|_| {
            let slots = slots.clone();
            thread::spawn(move || slots.acquire().unwrap())
        })
        .collect()
}

/// The slots the threads got.
fn joined(threads: Vec<thread::JoinHandle<u32>>) -> Vec<u32> {
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn filling_a_word_races_with_freeing_in_it() {
    loom::model(|| {
        let slots = Arc::new(nearly_full_word());
        let filler = {
            let slots = slots.clone();
            thread::spawn(move || slots.acquire())
        };
        let freer = {
            let slots = slots.clone();
            thread::spawn(move || slots.release(10).unwrap())
        };
        let got = filler.join().unwrap().unwrap();
        freer.join().unwrap();
        assert!(got == 63 || got == 10, "got {got}");
        let mut held: Vec<u32> = (0..63).filter(|&s| s != 10).collect();
        held.push(got);
        assert_settled(&slots, &held);
    });
}

#[test]
fn two_acquirers_never_share_a_slot() {
    loom::model(|| {
        let slots = Arc::new(nearly_full_word());
        let got = joined(acquirers(&slots, 2));
        assert_ne!(got[0], got[1]);
        let mut both = got.clone();
        both.sort_unstable();
        assert_eq!(both, vec![63, 64], "the lowest two free slots");
        let held: Vec<u32> = (0..63).chain(got).collect();
        assert_settled(&slots, &held);
    });
}

#[test]
fn acquire_after_a_returned_release_sees_the_slot() {
    loom::model(|| {
        let slots = Arc::new(nearly_full_word());
        // Fill word 0 entirely so the release must un-mark the summary.
        assert_eq!(slots.acquire(), Some(63));
        let freer = {
            let slots = slots.clone();
            thread::spawn(move || slots.release(5).unwrap())
        };
        let other = {
            let slots = slots.clone();
            thread::spawn(move || {
                let s = slots.acquire().unwrap();
                slots.release(s).unwrap();
            })
        };
        freer.join().unwrap();
        other.join().unwrap();
        // Both returned: slot 5 is free and the lowest.
        assert_eq!(slots.acquire(), Some(5));
    });
}

#[test]
fn release_acquire_release_from_three_threads_stays_consistent() {
    loom::model(|| {
        let slots = Arc::new(nearly_full_word());
        let results = StdArc::new(std::sync::Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (slots, results) = (slots.clone(), results.clone());
                thread::spawn(move || match i {
                    0 => slots.release(0).unwrap(),
                    1 => results.lock().unwrap().push(slots.acquire().unwrap()),
                    _ => slots.release(62).unwrap(),
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let got = results.lock().unwrap()[0];
        assert!([0, 62, 63].contains(&got), "got {got}");
        let held: Vec<u32> = (1..62).chain(std::iter::once(got)).collect();
        assert_settled(&slots, &held);
    });
}

#[test]
fn two_acquirers_and_a_releaser_across_the_word_boundary_never_share_a_slot() {
    loom::model(|| {
        // Capacity 100: word 1 is partly padding, so its "full" is not all real slots.
        let slots = Arc::new(nearly_full(100, 1));
        let acquirers = acquirers(&slots, 2);
        let freer = {
            let slots = slots.clone();
            thread::spawn(move || slots.release(10).unwrap())
        };
        let got = joined(acquirers);
        freer.join().unwrap();
        assert_ne!(got[0], got[1], "one slot handed out twice");
        for &g in &got {
            assert!([10, 63, 64, 65].contains(&g), "got {got:?}");
        }
        let held: Vec<u32> = (0..63).filter(|&s| s != 10).chain(got).collect();
        assert_settled(&slots, &held);
    });
}

#[test]
fn three_acquirers_take_the_three_lowest_free_slots_across_the_word_boundary() {
    loom::model(|| {
        let slots = Arc::new(nearly_full(128, 2));
        let mut got = joined(acquirers(&slots, 3));
        got.sort_unstable();
        assert_eq!(got, vec![62, 63, 64], "distinct, and the lowest three free");
        let held: Vec<u32> = (0..62).chain(got.iter().copied()).collect();
        assert_settled(&slots, &held);
        // Lowest-first again once they are given back: word 0's summary bit was cleared.
        slots.release(65).unwrap();
        for s in got {
            slots.release(s).unwrap();
        }
        assert_eq!(slots.acquire(), Some(62));
    });
}
