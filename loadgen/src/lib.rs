//! The Callosum load generator: opens thousands of connections against Callosum servers and
//! measures handshake latency (hdrhistogram), slot distribution and errors. Built out in the
//! load generator issue.
//!
//! # Layout
//! - [`simulate`]: deterministic discrete-event simulator of the self-balancing policies.
#![deny(missing_docs)]

pub mod simulate;
