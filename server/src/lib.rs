//! The Callosum server: a thread-per-core io_uring server of the Callosum (Boxcar) protocol.
//!
//! On connect, the server hands the connection the lowest free slot number and writes it as
//! `"<slot>\r\n"`; the connection then belongs to the application, and its slot is freed
//! exactly once when it closes.
//!
//! # Layout
//! - [`slots`]: the global, lock-free, lowest-first slot allocator, the [`SlotSource`] trait
//!   for custom policies, and the [`SlotGuard`] that releases a slot once.
#![deny(missing_docs)]

pub mod slots;

pub use slots::{SlotError, SlotGuard, SlotSource, Slots};
