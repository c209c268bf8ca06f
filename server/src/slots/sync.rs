//! Atomics shim: `loom`'s model-checked atomics under `--cfg loom`, `std`'s otherwise, so the
//! allocator that ships is the allocator that loom checks.

use crossbeam_utils::Backoff;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// Backs off after a lost race. Under loom a retry loop must yield so the model checker can
/// schedule the thread that won.
#[inline]
pub(crate) fn spin(backoff: &Backoff) {
    #[cfg(loom)]
    loom::thread::yield_now();
    backoff.spin();
}
