//! The embedded server: with no `--target`, the load generator starts a `callosum-server` in
//! its own process on a free loopback port, so one command gives a real result on a fresh
//! machine.
//!
//! It shares the process's file descriptors (two per connection: both ends live here), which
//! [`crate::limits`] accounts for; its CPU time is the process's minus the workers'.

use std::net::SocketAddr;

use crate::config::EmbeddedConfig;

/// Why the embedded server did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The server library is not available in this build.
    #[error("the embedded server is not available in this build: pass --target HOST:PORT")]
    Unavailable,
}

/// Counters of the embedded server, as the server reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (no free slot).
    pub refused: u64,
    /// Connections open now.
    pub active: u64,
    /// Most slots held at once.
    pub high_water: u32,
    /// Failed accepts.
    pub accept_errors: u64,
}

/// A running embedded server.
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
}

impl EmbeddedServer {
    /// Starts the server on 127.0.0.1 with a free port.
    pub fn start(config: &EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let _ = config;
        Err(EmbeddedError::Unavailable)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters now.
    pub fn stats(&self) -> Option<ServerStats> {
        None
    }

    /// Stops it (waiting up to a second for connections to drain) and returns its last counters.
    pub fn shutdown(self) -> Result<Option<ServerStats>, EmbeddedError> {
        Ok(None)
    }
}
