//! The Callosum server: a thread-per-core io_uring server of the Callosum (Boxcar) protocol.
//!
//! On connect, the server hands the connection the lowest free slot number and writes it as
//! `"<slot>\r\n"`; the connection then belongs to the application's [`Handler`], and its slot
//! is freed exactly once, after the connection is shut down.
//!
//! ```no_run
//! use std::time::Duration;
//! use callosum_server::{Connection, Server, handler_fn};
//!
//! # fn main() -> Result<(), callosum_server::ServerError> {
//! let server = Server::builder()
//!     .port(4040)
//!     .start_with(handler_fn(async |conn: &mut Connection| {
//!         tracing::info!(slot = conn.slot(), peer = %conn.peer_addr(), "connected");
//!         let _ = callosum_server::discard_until_closed(conn).await;
//!     }))?;
//! let stats = server.shutdown(Duration::from_secs(5))?;
//! println!("accepted {}", stats.accepted);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`slots`]: the global, lock-free, lowest-first slot allocator, the [`SlotSource`] trait
//!   for custom policies, and the [`SlotGuard`] that releases a slot once.
//! - `server`: [`Server`] builder, [`RunningServer`], [`ServerHandle`].
//! - `config`: [`ServerConfig`] and [`Keepalive`], the settings as plain data.
//! - `shared`: what every shard shares: settings, slot source, counters, the stop flag.
//! - `shard`: one thread with its own io_uring and `SO_REUSEPORT` listener: the shard's loop.
//! - `accept`: the shard's pending io_uring accepts, with retry, backoff and shedding.
//! - `fd_budget`: how many connections the descriptor limit holds; beyond it, refused.
//! - `listener`: binding the shards' listeners (and refusing a port in use).
//! - `connection`: [`Connection`], which shuts its socket down before freeing its slot.
//! - `handler`: the [`Handler`] trait, [`Hold`] and [`Echo`].
//! - `held`: the shard's compact table of connections that are only held open ([`Hold`]).
//! - `discard`: the shard-wide buffer idle connections read into.
//! - `slot_line`: formatting and sending the slot line without allocating.
//! - `limits`: raising `RLIMIT_NOFILE` and growing the descriptor table up front.
//! - `stats`: per-shard counters and the [`Stats`] snapshot.
//! - `log_limit`: rate-limited logging for floods of errors.
//! - `panics`: the message of a caught panic, for the log line it goes into.
//! - `prometheus` (feature `metrics`): the Prometheus endpoint, on threads of its own, capped
//!   and timed out so that it can never take resources from the slot port.
//!
//! # Features
//! - `cli` (default): the `callosum-server` binary's option parser and logging subscriber;
//!   turns on `metrics`. A library user turns the defaults off (`default-features = false`)
//!   and gets a server without them.
//! - `metrics`: the `prometheus` module, with the `metrics` registry and its exporter.
//! - `serde`: `Serialize` on [`Stats`].
#![deny(missing_docs)]

pub mod slots;

pub use slots::{SlotError, SlotGuard, SlotSource, Slots};

/// Everything but the allocator is left out of loom builds (`--cfg loom`), which model-check
/// the allocator alone.
macro_rules! not_loom {
    ($($item:item)*) => { $(#[cfg(not(loom))] $item)* };
}

not_loom! {
    mod accept;
    mod config;
    mod connection;
    mod discard;
    mod error;
    mod fd_budget;
    mod handler;
    mod held;
    mod limits;
    mod panics;
    mod listener;
    mod log_limit;
    #[cfg(feature = "metrics")]
    pub mod prometheus;
    mod server;
    mod shared;
    mod shard;
    mod slot_line;
    mod stats;
    pub use config::{Keepalive, ServerConfig};
    pub use connection::Connection;
    pub use discard::DiscardBuf;
    pub use error::ServerError;
    pub use discard::discard_until_closed;
    pub use handler::{Echo, FnHandler, Handler, Hold, handler_fn};
    pub use limits::{grow_fd_table, raise_nofile_limit};
    pub use server::{RunningServer, Server, ServerBuilder, ServerHandle};
    pub use slot_line::{MAX_SLOT_LINE, SlotLine};
    pub use stats::Stats;
}
