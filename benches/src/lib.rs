//! Shared pieces of the Callosum benchmarks: the naive baselines every figure is a ratio to.
//!
//! # Layout
//! - [`baseline`]: the allocators a user would otherwise write (the original libraries'
//!   `Mutex<BinaryHeap>` of freed slots plus a next counter, and a `Mutex<BTreeSet>`).
#![deny(missing_docs)]

pub mod baseline;
