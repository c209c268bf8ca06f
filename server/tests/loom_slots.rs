//! loom model tests of the slot allocator's races. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p callosum-server --test loom_slots --release`.
//!
//! Each model pre-fills word 0 to one short of full on the main thread, so the threads race
//! exactly where the set-then-recheck protocol of the summaries matters.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use callosum_server::slots::Slots;
use loom::sync::Arc;
use loom::thread;

/// Capacity 128: two leaf words under one summary word.
fn nearly_full_word() -> Slots {
    let slots = Slots::new(128);
    for expected in 0..63 {
        assert_eq!(slots.acquire(), Some(expected));
    }
    slots
}

/// After the threads are done: exactly lowest-first again, nothing hidden by a summary bit.
fn assert_settled(slots: &Slots, held: &[u32]) {
    let mut held = held.to_vec();
    held.sort_unstable();
    assert_eq!(slots.in_use() as usize, held.len());
    let expected = (0..128).find(|s| held.binary_search(s).is_err());
    assert_eq!(slots.acquire(), expected);
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
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let slots = slots.clone();
                thread::spawn(move || slots.acquire().unwrap())
            })
            .collect();
        let got: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
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
