//! What a server is asked to be: the settings a builder collects before anything is bound.
//!
//! Kept as plain data, apart from the builder that fills it, so the binary's options, tests
//! and the load generator's embedded server all describe a server the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::error::ServerError;

/// TCP keepalive for accepted connections, so a peer that vanished without a FIN (cable
/// pulled, host crashed) is found dead by the kernel and its slot freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe. Default: 120 s.
    pub idle: Duration,
    /// Time between probes. Default: 30 s.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped. Default: 4.
    pub retries: u32,
}

impl Keepalive {
    /// The least `idle` and `interval` the kernel takes (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`), in
    /// whole seconds.
    pub const MIN_SECS: u64 = 1;
    /// The most `idle` and `interval` the kernel takes, in whole seconds.
    pub const MAX_SECS: u64 = 32_767;
    /// The fewest `retries` the kernel takes (`TCP_KEEPCNT`).
    pub const MIN_RETRIES: u32 = 1;
    /// The most `retries` the kernel takes.
    pub const MAX_RETRIES: u32 = 127;

    /// Checks each field against the kernel's range, naming the first one outside it.
    pub fn validate(&self) -> Result<(), ServerError> {
        let secs = Self::MIN_SECS..=Self::MAX_SECS;
        for (field, value) in [("idle", self.idle), ("interval", self.interval)] {
            if !secs.contains(&value.as_secs()) {
                return Err(ServerError::Keepalive {
                    field,
                    value: format!("{value:?}"),
                    allowed: "1 s to 32767 s",
                });
            }
        }
        if !(Self::MIN_RETRIES..=Self::MAX_RETRIES).contains(&self.retries) {
            return Err(ServerError::Keepalive {
                field: "retries",
                value: self.retries.to_string(),
                allowed: "1 to 127",
            });
        }
        Ok(())
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(120),
            interval: Duration::from_secs(30),
            retries: 4,
        }
    }
}

/// A server's settings. Build one with [`crate::Server::builder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on. Default: `0.0.0.0` (any IPv4 address), as the original.
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one. Default: 4040, as the original.
    pub port: u16,
    /// Number of shards (threads, one io_uring each). Default: the available cores.
    pub shards: usize,
    /// Slots of the default allocator: connections beyond this many are refused; at least 1.
    /// Ignored when a custom slot source is set. Default: 1,000,000.
    pub max_slots: u32,
    /// Listen backlog of each shard's listener. Default: 4096.
    pub backlog: u32,
    /// Pin each shard to a core of its own. Default: off. Each shard gets a fixed share of
    /// the new connections (`SO_REUSEPORT` hashes them), so a pinned shard whose core also
    /// runs other work (a sidecar, the application, a load client) becomes the bottleneck:
    /// side by side with the C reference server, pinned shards ran at 0.60-0.71x its
    /// handshake rate where unpinned ones ran at 0.98-1.20x. Pin only where the shards'
    /// cores are reserved for the server (`isolcpus`, a cpuset).
    pub pin: bool,
    /// TCP keepalive of accepted connections; `None` turns it off. Default: on, see
    /// [`Keepalive`] (and its ranges, which the kernel imposes).
    pub keepalive: Option<Keepalive>,
    /// Submission queue entries of each shard's ring. Default: 2048.
    pub ring_entries: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 4040,
            shards: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            max_slots: 1_000_000,
            backlog: 4096,
            pin: false,
            keepalive: Some(Keepalive::default()),
            ring_entries: 2048,
        }
    }
}

impl ServerConfig {
    /// The address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub(crate) fn validate(&self) -> Result<(), ServerError> {
        if self.shards == 0 {
            return Err(ServerError::Config("shards must be at least 1"));
        }
        if self.shards > 1024 {
            return Err(ServerError::Config("shards must be at most 1024"));
        }
        if self.backlog == 0 || self.backlog > i32::MAX as u32 {
            return Err(ServerError::Config("backlog must be between 1 and 2^31-1"));
        }
        if self.ring_entries == 0 || !self.ring_entries.is_power_of_two() {
            return Err(ServerError::Config("ring_entries must be a power of two"));
        }
        if self.max_slots == 0 {
            return Err(ServerError::Config(
                "max_slots must be at least 1 (0 would refuse every connection)",
            ));
        }
        if self.pin {
            // An empty list (cores not listable) pins nothing, with a warning per shard.
            let cores = core_affinity::get_core_ids().map_or(0, |c| c.len());
            if cores > 0 && self.shards > cores {
                return Err(ServerError::Config(
                    "pin gives each shard a core of its own: at most one shard per available core",
                ));
            }
        }
        if let Some(keepalive) = self.keepalive {
            keepalive.validate()?;
        }
        Ok(())
    }
}
