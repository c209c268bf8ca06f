//! Slot numbers: the one global, lowest-first allocator every shard takes slots from, the
//! [`SlotSource`] trait that lets a user plug in another policy, and the [`SlotGuard`] that
//! gives a slot back exactly once.
//!
//! A slot number is Callosum's load signal: the server hands each new connection the lowest
//! free slot, so a client that reads slot 0 knows the server is idle and slot 90 that 90
//! other connections are open on it. The allocator therefore must be exact (lowest first,
//! never one slot to two holders) and cheap on every accept and close of every shard, which
//! is why its hot path is lock-free: see [`Slots`] for the design and its guarantees.

mod bitmap;
mod guard;
mod sync;

pub use bitmap::Slots;
pub use guard::SlotGuard;

/// Why a slot could not be released.
///
/// The original library's "Invalid slot" error: releasing a slot that is not allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// The slot is within capacity but is not held: never handed out, or already released.
    #[error("invalid slot {slot}: it is not allocated")]
    NotAllocated {
        /// The slot that was released.
        slot: u32,
    },
    /// The slot is at or past the source's capacity, so it can never have been handed out.
    #[error("invalid slot {slot}: the capacity is {capacity}")]
    OutOfRange {
        /// The slot that was released.
        slot: u32,
        /// The number of slots the source manages (`0..capacity`).
        capacity: u32,
    },
}

/// Where a server gets its slot numbers from.
///
/// The server is generic over this trait so a user can plug in a custom policy, as the
/// original JavaScript server let its users answer its `slot request` and `slot free`
/// events. [`Slots`] is the default: the lowest free slot, lock-free.
///
/// A source given to the server is shared by every shard (every core), so the server's
/// builder asks for `SlotSource + Send + Sync`; both methods take `&self` and must be cheap.
/// The trait itself does not demand `Sync`, so a shard-local view (an `Rc`) can be a source.
pub trait SlotSource {
    /// Takes a free slot for a new connection, or `None` when none is free; the server then
    /// closes the connection without a slot line.
    fn acquire(&self) -> Option<u32>;

    /// Gives back a slot that `acquire` handed out. The server calls it exactly once per
    /// acquired slot, after the connection's socket is shut down (its descriptor may close a
    /// little later, when an operation still in flight on it completes).
    fn release(&self, slot: u32) -> Result<(), SlotError>;
}

impl<S: SlotSource + ?Sized> SlotSource for std::sync::Arc<S> {
    fn acquire(&self) -> Option<u32> {
        (**self).acquire()
    }

    fn release(&self, slot: u32) -> Result<(), SlotError> {
        (**self).release(slot)
    }
}
