//! The Callosum client, on ordinary tokio: the handshake reader, the rover that samples
//! servers' slots, the dual-heap pool that keeps the lowest ones, and the roving client that
//! wires them together.
//!
//! # Layout
//! - [`handshake`]: the slot line grammar, its reader, and the stream handed back.
//! - [`pool`]: the dual-heap pool of connections keyed by slot, with leases.
//! - [`rover`]: connects to a random server every roving interval and reports the slot.
//! - [`roving`]: the rover feeding the pool: the everyday entry point.
//!
//! # Pool policy
//! The default is the original `callosum-client-tcp` rules ([`PoolPolicy::original`]), for
//! compatibility: lease the lowest slot, replace the highest slot only with a strictly
//! lower one, keep connections until replaced. [`PoolPolicy::improved`] is the improved
//! Callosum policy measured in `docs/balance.md`: connections retire after a random
//! lifetime around a maximum age (10 roving intervals), a newcomer with an equal slot also
//! replaces the worst, and a lease goes to the idle connection whose server has the fewest
//! of this client's leases (a connection answering ≥ 1.5 × slower than the pool's mean
//! counting as one more), then the lowest slot, equal slots at random. Long-run request
//! rates even out across servers, a joining server gets its share within seconds, and a
//! slow server is avoided. One line turns it on:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use callosum_client::{PoolPolicy, RovingClient};
//!
//! let client = RovingClient::builder()
//!     .servers(["10.0.0.1:7000", "10.0.0.2:7000"])
//!     .pool_policy(PoolPolicy::improved().max_slots(8))
//!     .build()?;
//! let lease = client.acquire().await?;
//! # drop(lease);
//! # Ok(())
//! # }
//! ```
//!
//! Each rule is also a toggle on [`PoolPolicy`] (`max_age`, `accept_equal`,
//! `random_tie_break`, `least_outstanding`, `slow_penalty`), to switch one off.
#![deny(missing_docs)]

pub mod discovery;
pub mod failure;
pub mod handshake;
pub mod observe;
pub mod pool;
pub mod rover;
pub mod roving;
#[cfg(feature = "tower")]
pub mod service;

pub use discovery::{Discovery, DiscoveryError, DnsDiscovery, StaticDiscovery};
pub use failure::Failure;
pub use handshake::{Handshake, HandshakeError, Prefixed, read_handshake};
pub use pool::{
    AcquireError, Lease, Liveness, Offer, Pool, PoolError, PoolPolicy, ServerKey, SlowPenalty,
};
pub use rover::{
    ConnectError, Connected, Connector, Rover, RoverError, RoverEvent, RoverOptions, ServerId,
    TcpConnector,
};
pub use roving::{BuildError, Connection, Counters, RovingClient, RovingClientBuilder};
#[cfg(feature = "tower")]
pub use service::{LeaseService, ServiceError};
