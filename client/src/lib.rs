//! The Callosum client, on ordinary tokio: the handshake reader, the rover that samples
//! servers' slots, the dual-heap pool that keeps the lowest ones, and the roving client that
//! wires them together.
//!
//! # Layout
//! - [`handshake`]: the slot line grammar, its reader, and the stream handed back.
//! - [`pool`]: the dual-heap pool of connections keyed by slot, with leases.
//! - [`rover`]: connects to a random server every roving interval and reports the slot.
//! - [`roving`]: the rover feeding the pool: the everyday entry point.
#![deny(missing_docs)]

pub mod handshake;
pub mod pool;
pub mod rover;
pub mod roving;

pub use handshake::{Handshake, HandshakeError, Prefixed, read_handshake};
pub use pool::{
    AcquireError, Lease, Liveness, Offer, Pool, PoolError, PoolPolicy, ServerKey, SlowPenalty,
};
pub use rover::{Rover, RoverError, RoverEvent, RoverOptions, ServerId};
pub use roving::{Connection, Counters, RovingClient, RovingClientBuilder};
