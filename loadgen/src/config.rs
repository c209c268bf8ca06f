//! What a load generator run does: the targets (or an embedded server), the phases to run in
//! order against them, how new connections are paced, and the per-connection limits.
//!
//! Plain data with documented defaults, so the library can be driven without the command line
//! (the tests do) and the CLI stays a thin translation ([`crate::cli`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A whole run: every phase runs in order against the same targets (one embedded server, if
/// any, serves them all).
#[derive(Debug, Clone)]
pub struct Config {
    /// Servers to drive; connections go to them round-robin. Empty (the default): start an
    /// embedded `callosum-server` on a free loopback port.
    pub targets: Vec<SocketAddr>,
    /// The embedded server's settings (used only when `targets` is empty).
    pub embedded: EmbeddedConfig,
    /// The phases, run in order. Default: a 3 s churn at 64 in flight (0.5 s warmup), then a
    /// hold of 4,000 connections.
    pub phases: Vec<Phase>,
    /// Worker threads, each with its own current-thread runtime. Default: the number of cores.
    pub workers: usize,
    /// Bind outgoing connections to 127.0.0.1 ..= 127.0.0.N, round-robin (loopback targets
    /// only), to get more than one address pair's ephemeral ports. Default `None`: for
    /// loopback targets, as many as keep each pair's connects within the TIME_WAIT period
    /// well inside the ephemeral port range ([`crate::limits::port_plan`]); otherwise 1 (no
    /// bind).
    pub src_ips: Option<u8>,
    /// Give up on one handshake (connect plus slot line) after this long; counted as a
    /// timeout. Default 5 s.
    pub timeout: Duration,
    /// Process id of an external server whose CPU time and RSS to report (Linux `/proc`).
    /// Default: none.
    pub server_pid: Option<u32>,
    /// Show a live progress bar on stderr when it is a terminal. Default true.
    pub progress: bool,
    /// Share of connections, in `0.0..=1.0`, that the tool closes with an RST (`SO_LINGER 0`)
    /// at a random point: right after connect, right after the slot line, or after a short
    /// hold (see [`crate::reset`]). Counted apart from errors. Default 0 (every close a FIN).
    pub reset_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            embedded: EmbeddedConfig::default(),
            phases: vec![
                Phase {
                    kind: PhaseKind::Churn {
                        duration: Some(Duration::from_secs(3)),
                        count: None,
                    },
                    pacing: Pacing::Closed { concurrency: 64 },
                    warmup: Duration::from_millis(500),
                },
                Phase {
                    kind: PhaseKind::Hold {
                        connections: 4_000,
                        hold_for: Duration::ZERO,
                    },
                    pacing: Pacing::Closed { concurrency: 64 },
                    warmup: Duration::ZERO,
                },
            ],
            workers: default_workers(),
            src_ips: None,
            timeout: Duration::from_secs(5),
            server_pid: None,
            progress: true,
            reset_fraction: 0.0,
        }
    }
}

impl Config {
    /// The source addresses to bind, in round-robin order; empty means "let the kernel pick"
    /// (one address, or `src_ips` not resolved yet).
    pub fn source_addrs(&self) -> Vec<Ipv4Addr> {
        let n = self.src_ips.unwrap_or(1);
        if n <= 1 {
            return Vec::new();
        }
        (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
    }

    /// True when the run starts its own server.
    pub fn is_embedded(&self) -> bool {
        self.targets.is_empty()
    }
}

/// The number of cores this process may run on (at least 1).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Settings of the embedded `callosum-server`.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Shards (threads). Default: the number of cores.
    pub shards: usize,
    /// Most slots the server hands out. Default 1,000,000.
    pub max_slots: u32,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            shards: default_workers(),
            max_slots: 1_000_000,
        }
    }
}

/// One phase of a run.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What the phase does with each connection.
    pub kind: PhaseKind,
    /// How new connections are started.
    pub pacing: Pacing,
    /// Handshakes started during this first stretch are not recorded in the histograms.
    pub warmup: Duration,
}

/// What a phase does with each connection.
#[derive(Debug, Clone)]
pub enum PhaseKind {
    /// Connect, read the slot, close; repeat until `duration` has passed or `count` handshakes
    /// were started, whichever comes first (at least one must be set).
    Churn {
        /// Stop starting handshakes after this long (warmup included).
        duration: Option<Duration>,
        /// Stop after this many handshakes started (warmup included).
        count: Option<u64>,
    },
    /// Open `connections` and keep every one open until all are open (or failed), then keep
    /// them `hold_for` longer, report the slot distribution, and close them all.
    Hold {
        /// Connections to open and keep.
        connections: u64,
        /// Extra time to keep them all open once the last one is open.
        hold_for: Duration,
    },
}

impl PhaseKind {
    /// The phase's name in reports: `churn` or `hold`.
    pub fn name(&self) -> &'static str {
        match self {
            PhaseKind::Churn { .. } => "churn",
            PhaseKind::Hold { .. } => "hold",
        }
    }
}

/// How new connections are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Closed loop: `concurrency` handshakes in flight; each starts when one finishes.
    Closed {
        /// Handshakes in flight at once (split over the workers).
        concurrency: usize,
    },
    /// Open loop: `rate` new connections per second on a fixed schedule, each latency measured
    /// from its intended start (coordinated omission corrected, as wrk2 does). When
    /// `max_in_flight` handshakes are pending, starts wait (and their latency grows).
    Open {
        /// New connections per second, over all workers.
        rate: f64,
        /// Most handshakes in flight at once (bounds file descriptors).
        max_in_flight: usize,
    },
}

impl Pacing {
    /// Handshakes that can be in flight at once.
    pub fn in_flight(&self) -> usize {
        match *self {
            Pacing::Closed { concurrency } => concurrency,
            Pacing::Open { max_in_flight, .. } => max_in_flight,
        }
    }
}
