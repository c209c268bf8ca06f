//! Many simulations on a few threads: a work queue over independent jobs (a policy and a
//! seed, a sweep's cell and seed), results in the jobs' order.
//!
//! Why this shape: a simulation is single-threaded and its jobs take unequal times (a long
//! warm-up at a long roving interval, a heavy load), so each of `workers` threads takes the
//! next job as it finishes one rather than a fixed share; the results land in their job's
//! place, so what is reported does not depend on which thread ran what.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The threads [`run_all`] starts for `workers` and `jobs`: at least one, at most one per job.
pub fn threads(workers: usize, jobs: usize) -> usize {
    workers.clamp(1, jobs.max(1))
}

/// Runs `run` on every job on `workers` threads (at least one, at most one per job) and
/// returns the results in the jobs' order; `done(finished, total, result)` is called as each
/// finishes (from the thread that ran it).
pub fn run_all<J: Sync, R: Send>(
    jobs: &[J],
    workers: usize,
    run: impl Fn(&J) -> R + Sync,
    done: impl Fn(usize, usize, &R) + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads(workers, jobs.len()) {
            scope.spawn(|| {
                // Relaxed: the counters only hand out indices and count; the results are
                // published through the mutex and read after the scope joins the threads.
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(index) else { break };
                    let result = run(job);
                    let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                    done(n, jobs.len(), &result);
                    results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_jobs_order_whatever_thread_ran_them() {
        let jobs: Vec<u64> = (0..50).collect();
        let calls = AtomicUsize::new(0);
        let out = run_all(
            &jobs,
            3,
            |&j| j * 2,
            |_, total, _| {
                assert_eq!(total, 50);
                calls.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(out, jobs.iter().map(|j| j * 2).collect::<Vec<_>>());
        assert_eq!(calls.load(Ordering::Relaxed), 50);
        assert!(run_all(&[] as &[u64], 2, |&j| j, |_, _, _| {}).is_empty());
    }

    #[test]
    fn threads_are_at_least_one_and_at_most_one_per_job() {
        assert_eq!(threads(2, 10), 2);
        assert_eq!(threads(8, 3), 3);
        assert_eq!(threads(0, 3), 1);
        assert_eq!(threads(4, 0), 1);
    }
}
