//! The Callosum client, on ordinary tokio: the handshake reader, the rover that samples
//! servers' slots, the dual-heap pool that keeps the lowest ones, and the roving client that
//! wires them together.
//!
//! # Layout
//! - [`handshake`]: the slot line grammar and its reader.
#![deny(missing_docs)]

pub mod handshake;
