//! The Callosum client, on ordinary tokio: the handshake reader, the rover that samples
//! servers' slots, the dual-heap pool that keeps the lowest ones, and the roving client that
//! wires them together with discovery, so that servers behind one name are each a server.
//!
//! # Layout
//! - [`handshake`]: the slot line grammar, its reader, and the stream handed back.
//! - [`pool`]: the dual-heap pool of connections keyed by slot, with leases; its decisions,
//!   free of I/O, are [`pool::decide`], which the load generator's simulator calls too.
//! - [`rover`]: connects to a random server every roving interval and reports the slot;
//!   the [`Connector`] trait and [`TcpConnector`].
//! - [`discovery`]: which servers there are: one per address of each name by default.
//! - [`roving`]: the rover feeding the pool, with discovery: the everyday entry point.
//! - [`failure`]: the last failure to reach a server, carried by `acquire`'s timeout.
//! - [`observe`]: the metric names (feature `metrics`) and the tracing spans.
//! - `service` (feature `tower`): `LeaseService`, a `tower::Service` on leases.
//!
//! # Servers behind one name
//! A deployment puts its servers behind a name that resolves to many addresses (a
//! Kubernetes headless Service, Consul DNS, round-robin DNS). The default [`DnsDiscovery`]
//! resolves each configured name into one server per address (A records by default, AAAA
//! too with `.ip_family(IpFamily::Any)`), looks again every
//! 30 s and soon after connect failures, and adds and drops servers as the records change
//! (a dropped server's idle connections close at once, its leased ones on return). For
//! Kubernetes, give the client a headless Service's name (`clusterIP: None`, so the name
//! lists the ready pods rather than one virtual IP):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use callosum_client::RovingClient;
//!
//! let client = RovingClient::builder()
//!     .server("callosum.shop.svc.cluster.local:7000")
//!     .discovery_interval(Duration::from_secs(30))
//!     .build()?;
//! let lease = client.acquire().await?;
//! println!("slot {} on {}", lease.slot(), lease.server()); // a pod's address
//! # Ok(())
//! # }
//! ```
//!
//! Addresses need no lookup (`10.0.0.1:7000`): a static list works as before. Another
//! source of servers implements [`Discovery`]; [`StaticDiscovery`] takes each id as one
//! server. `docs/client.md` has the whole deployment story.
//!
//! # Transports, services, observability
//! `.connector(…)` takes any [`Connector`] (socket options, a source address, Unix
//! sockets, proxies). With the `tower` feature, `LeaseService` leases a connection per
//! call and frames with a `tokio_util` codec. With the `metrics` feature the client
//! reports counters, acquire latency and held connections per server through the
//! `metrics` facade; `connect` and `acquire` spans go to `tracing`. A timed-out `acquire`
//! says why: [`AcquireError::Unavailable`] carries the servers backing off and the last
//! [`Failure`].
//!
//! Examples (`client/examples/`): `roving_client` (against local servers),
//! `custom_connector` (socket options and a source address), `lease_service` (feature
//! `tower`, line requests against the server's `Echo`).
//!
//! # Pool policy
//! The default is the improved Callosum policy ([`PoolPolicy::improved`]), measured in
//! `docs/balance.md`: connections are replaced after a random lifetime around a maximum age
//! (10 roving intervals, at least one per pool place; an expired connection serves until
//! the next rover connection takes its place), a newcomer with an equal slot also replaces
//! the worst, and a lease goes to the idle connection whose server has the fewest of this
//! client's leases (a connection answering ≥ 1.5 × slower than the pool's mean counting as
//! one more), then the lowest slot, equal slots at random. Long-run request rates even out
//! across servers, a joining server gets its share within seconds, and a slow server is
//! avoided. [`PoolPolicy::original`] is the original `callosum-client-tcp` rules: lease the
//! lowest slot, replace the highest slot only with a strictly lower one, keep connections
//! until replaced; every pool operation O(log n), where the improved lease scans the idle
//! connections (about 1 µs at 100). One line switches:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use callosum_client::{PoolPolicy, RovingClient};
//!
//! let client = RovingClient::builder()
//!     .servers(["10.0.0.1:7000", "10.0.0.2:7000"])
//!     .pool_policy(PoolPolicy::original().max_slots(8))
//!     .build()?;
//! let lease = client.acquire().await?;
//! # drop(lease);
//! # Ok(())
//! # }
//! ```
//!
//! Each rule is also a toggle on [`PoolPolicy`] (`max_age`, `accept_equal`,
//! `random_tie_break`, `least_outstanding`, `slow_penalty`, `spread_small_pools`,
//! `slot_weighted_leases`, `latency_damped_weights`, `outlier_decay`,
//! `preferred_connection`), to switch one off.
#![deny(missing_docs)]

mod deadline;
pub mod discovery;
pub mod failure;
pub mod handshake;
pub mod observe;
pub mod pool;
pub mod rover;
pub mod roving;
#[cfg(feature = "tower")]
pub mod service;

pub use discovery::{Discovery, DiscoveryError, DnsDiscovery, IpFamily, StaticDiscovery};
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
