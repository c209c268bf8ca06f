//! The errors a server can report: all at start-up, each saying what to do about it. Once
//! running, a server never fails as a whole; per-connection trouble is counted and logged.
//!
//! One convention for every variant: the OS error is the variant's `source`, and never part
//! of its message, so a report that walks the chain (anyhow's `{:#}`) prints it once.

use std::io;
use std::net::SocketAddr;

/// Why a server could not start (or a shard could not run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A builder setting is out of range.
    #[error("invalid server configuration: {0}")]
    Config(&'static str),
    /// A keepalive setting is outside the range the kernel takes.
    #[error("invalid keepalive {field}: {value} (the kernel takes {allowed})")]
    Keepalive {
        /// The [`Keepalive`](crate::Keepalive) field: `idle`, `interval` or `retries`.
        field: &'static str,
        /// The value given.
        value: String,
        /// The range allowed.
        allowed: &'static str,
    },
    /// Something else listens on the address already.
    #[error("address {addr} is already in use (is another server running on that port?)")]
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The process may not bind the address.
    #[error(
        "permission denied binding {addr} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    )]
    PermissionDenied {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating, configuring, binding or listening on a socket failed otherwise.
    #[error("setting up the listener on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to set up io_uring, or to run its operations.
    #[error(
        "io_uring is unavailable. The server needs Linux 5.11 or later with io_uring \
         enabled: check `sysctl kernel.io_uring_disabled` (must be 0, or 1 with the process in \
         the io_uring group), and that no seccomp profile blocks io_uring_setup or \
         io_uring_enter (Docker's default does: run with --security-opt seccomp=unconfined or \
         a profile allowing them)"
    )]
    IoUringUnavailable {
        /// The OS error from `io_uring_setup` or `io_uring_enter`, or the start-up no-op's
        /// timeout.
        #[source]
        source: io::Error,
    },
    /// A shard thread could not be started.
    #[error("starting shard thread {shard}")]
    Spawn {
        /// The shard's index.
        shard: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A shard thread panicked (a bug: connection handlers' panics are caught per task).
    #[error("shard {shard} panicked")]
    ShardPanicked {
        /// The shard's index.
        shard: usize,
    },
}
