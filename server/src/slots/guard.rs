//! The RAII guard that holds one slot and gives it back exactly once, on drop.
//!
//! The guard is generic over how it reaches its source (`&Slots`, `Arc<Slots>`, a shard's
//! `Rc<..>`), so a shard can hold one per connection without touching a shared reference
//! count on every accept.

use std::fmt;
use std::ops::Deref;

use super::SlotSource;

/// One held slot; dropping the guard releases it to the source it came from.
pub struct SlotGuard<H>
where
    H: Deref,
    H::Target: SlotSource,
{
    source: H,
    slot: u32,
}

impl<H> SlotGuard<H>
where
    H: Deref,
    H::Target: SlotSource,
{
    /// Acquires a slot from `source` and guards it; `None` when no slot is free.
    pub fn acquire(source: H) -> Option<Self> {
        let slot = source.acquire()?;
        Some(Self { source, slot })
    }

    /// The slot number held.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The source the slot will be released to.
    pub fn source(&self) -> &H::Target {
        &self.source
    }
}

impl<H> Drop for SlotGuard<H>
where
    H: Deref,
    H::Target: SlotSource,
{
    fn drop(&mut self) {
        // The slot came from this very source and the guard is its only holder, so the release
        // can only fail if a custom source breaks its own contract. A drop cannot return the
        // error, and must not panic (it runs while connections close): it is logged.
        if let Err(error) = self.source.release(self.slot) {
            // (The loom build of the allocator has no logging.)
            #[cfg(not(loom))]
            tracing::error!(slot = self.slot, %error, "slot source refused to release a slot it handed out");
            #[cfg(loom)]
            let _ = error;
        }
    }
}

impl<H> fmt::Debug for SlotGuard<H>
where
    H: Deref,
    H::Target: SlotSource,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard")
            .field("slot", &self.slot)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::slots::SlotError;

    /// Hands out slot 7 and refuses every release, counting them.
    #[derive(Default)]
    struct RefusesRelease {
        releases: Cell<u32>,
    }

    impl SlotSource for RefusesRelease {
        fn acquire(&self) -> Option<u32> {
            Some(7)
        }

        fn release(&self, slot: u32) -> Result<(), SlotError> {
            self.releases.set(self.releases.get() + 1);
            Err(SlotError::NotAllocated { slot })
        }
    }

    #[test]
    fn a_refused_release_is_logged_not_panicked_and_tried_once() {
        let source = RefusesRelease::default();
        let guard = SlotGuard::acquire(&source).expect("a slot");
        assert_eq!(guard.slot(), 7);
        drop(guard); // in a debug build this used to be a failed debug_assert!
        assert_eq!(source.releases.get(), 1);
    }
}
