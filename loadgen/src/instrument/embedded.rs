//! The embedded server: with no `--target`, the load generator starts a `callosum-server` in
//! its own process on a free loopback port, so one command gives a real result on a fresh
//! machine.
//!
//! It shares the process's file descriptors (two per connection: both ends live here), which
//! [`crate::instrument::limits`] accounts for; its CPU time is the process's minus the workers'. Its shards
//! are not pinned: the load generator's workers run on the same cores, and pinned shards would
//! fight them for a fixed core instead of letting the scheduler balance.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callosum_server::{RunningServer, Server, ServerError, Slots, Stats};

use crate::instrument::plan::EmbeddedConfig;

/// How long the embedded server may take to drain when it stops.
const DRAIN: Duration = Duration::from_secs(1);

/// Why the embedded server did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The server could not start (or a shard failed when it stopped).
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Counters of the embedded server, as the server reports them.
pub type ServerStats = Stats;

/// A running embedded server.
#[derive(Debug)]
pub struct EmbeddedServer {
    server: RunningServer,
    /// Its allocator (the server's default, held here too), to tell when every slot is free.
    slots: Arc<Slots>,
}

impl EmbeddedServer {
    /// Starts the server (hold mode) on 127.0.0.1 with a free port.
    pub fn start(plan: &EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let slots = Arc::new(Slots::new(plan.max_slots));
        let server = Server::builder()
            .host(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(0)
            .shards(plan.shards)
            .max_slots(plan.max_slots)
            .pin(false)
            .slot_source(slots.clone())
            .start()?;
        Ok(Self { server, slots })
    }

    /// Waits, for at most `bound`, until it holds no slot: the connections of a phase that
    /// ended are closed by the clients at once, but the server frees each slot only once it
    /// has seen the close, so the next phase would otherwise find some slots still taken.
    /// Whether it got there.
    pub fn wait_idle(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while self.slots.in_use() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Its counters now.
    pub fn stats(&self) -> Option<ServerStats> {
        Some(self.server.stats())
    }

    /// Stops it (draining for up to a second) and returns its last counters.
    pub fn shutdown(self) -> Result<Option<ServerStats>, EmbeddedError> {
        Ok(Some(self.server.shutdown(DRAIN)?))
    }
}
