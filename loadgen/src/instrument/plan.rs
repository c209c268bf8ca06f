//! What a load generator run does: the targets (or an embedded server), the phases to run in
//! order against them, how new connections are paced, the per-connection limits, and what
//! counts as a pass.
//!
//! Plain data with documented defaults, so the library can be driven without the command line
//! (the tests do) and the CLI stays a thin translation ([`crate::cli`]). Every rule about what
//! a plan may say lives in [`Plan::validate`], which [`crate::run`] calls before anything
//! starts; the command line refuses the same values while parsing, for a one-line message.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A whole run: every phase runs in order against the same targets (one embedded server, if
/// any, serves them all).
#[derive(Debug, Clone)]
pub struct Plan {
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
    /// well inside the ephemeral port range ([`crate::instrument::limits::port_plan`]); otherwise 1 (no
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
    /// hold (see [`crate::instrument::reset`]). Counted apart from errors. Default 0 (every close a FIN).
    pub reset_fraction: f64,
    /// What the run must achieve to pass ([`crate::Verdict`]).
    pub criteria: Criteria,
}

/// What a run must achieve to pass: the exit status of the binary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Most failed handshakes, as a share of those attempted, in `0.0..=1.0`. Default 0: any
    /// error fails the run (a benchmark with errors measures something else than asked).
    pub max_error_rate: f64,
}

impl Default for Criteria {
    fn default() -> Self {
        Self {
            max_error_rate: 0.0,
        }
    }
}

/// Why a plan cannot run; nothing was started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A value is out of its range.
    #[error("{0}")]
    Invalid(&'static str),
    /// Source addresses 127.0.0.x can only reach IPv4 loopback targets.
    #[error("--src-ips binds to 127.0.0.x and needs IPv4 loopback targets; {0} is not one")]
    SrcIpsNeedLoopback(SocketAddr),
}

impl Default for Plan {
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
            criteria: Criteria::default(),
        }
    }
}

impl Plan {
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

    /// Checks everything a plan may say, in one place: called by [`crate::run`] before
    /// anything starts (the command line refuses the same values while parsing).
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |s| Err(PlanError::Invalid(s));
        if self.workers == 0 {
            return bad("workers must be at least 1");
        }
        if self.is_embedded() && (self.embedded.shards == 0 || self.embedded.max_slots == 0) {
            return bad("the embedded server needs at least 1 shard and 1 slot");
        }
        if self.phases.is_empty() {
            return bad("no phase to run");
        }
        if self.src_ips == Some(0) {
            return bad("src-ips must be at least 1");
        }
        if self.src_ips.is_some_and(|n| n > 1) {
            if let Some(t) = self
                .targets
                .iter()
                .find(|t| !(t.is_ipv4() && t.ip().is_loopback()))
            {
                return Err(PlanError::SrcIpsNeedLoopback(*t));
            }
        }
        if self.timeout.is_zero() {
            return bad("the handshake timeout must be positive");
        }
        if !(0.0..=1.0).contains(&self.reset_fraction) {
            return bad("the reset fraction must be within 0.0..=1.0");
        }
        if !(0.0..=1.0).contains(&self.criteria.max_error_rate) {
            return bad("the maximum error rate must be within 0.0..=1.0");
        }
        self.phases.iter().try_for_each(Phase::validate)
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

impl Phase {
    /// Checks one phase (see [`Plan::validate`]).
    fn validate(&self) -> Result<(), PlanError> {
        let bad = |s| Err(PlanError::Invalid(s));
        match self.pacing {
            Pacing::Closed { concurrency: 0 } => return bad("concurrency must be at least 1"),
            Pacing::Open {
                rate,
                max_in_flight,
            } if !(rate.is_finite() && rate > 0.0) || max_in_flight == 0 => {
                return bad("the rate must be positive and max-in-flight at least 1");
            }
            _ => {}
        }
        match self.kind {
            PhaseKind::Churn {
                duration: None,
                count: None,
            } => bad("a churn needs a duration or a count"),
            PhaseKind::Churn {
                duration: Some(d), ..
            } if d.is_zero() => bad("a churn's duration must be positive"),
            PhaseKind::Churn {
                duration: Some(d), ..
            } if d <= self.warmup => bad("the warmup must be shorter than the duration"),
            PhaseKind::Churn { count: Some(0), .. } => bad("a churn's count must be at least 1"),
            PhaseKind::Hold { connections: 0, .. } => bad("a hold needs at least 1 connection"),
            _ => Ok(()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn churn(duration: Option<u64>, count: Option<u64>) -> Plan {
        Plan {
            phases: vec![Phase {
                kind: PhaseKind::Churn {
                    duration: duration.map(Duration::from_secs),
                    count,
                },
                pacing: Pacing::Closed { concurrency: 8 },
                warmup: Duration::ZERO,
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn the_default_plan_is_valid() {
        assert_eq!(Plan::default().validate(), Ok(()));
    }

    #[test]
    fn src_ips_need_loopback_targets() {
        let mut plan = churn(Some(1), None);
        plan.targets = vec!["10.0.0.1:80".parse().unwrap()];
        plan.src_ips = Some(4);
        assert!(matches!(
            plan.validate(),
            Err(PlanError::SrcIpsNeedLoopback(_))
        ));
    }

    #[test]
    fn zeros_and_unbounded_phases_are_refused() {
        assert!(churn(None, None).validate().is_err());
        assert!(churn(Some(0), None).validate().is_err());
        assert!(churn(None, Some(0)).validate().is_err());
        let mut plan = churn(Some(1), None);
        plan.phases[0].warmup = Duration::from_secs(1);
        assert!(plan.validate().is_err(), "warmup as long as the run");
        let mut plan = churn(Some(1), None);
        plan.phases[0].pacing = Pacing::Closed { concurrency: 0 };
        assert!(plan.validate().is_err());
        plan.phases[0].pacing = Pacing::Open {
            rate: 0.0,
            max_in_flight: 1,
        };
        assert!(plan.validate().is_err());
        let mut plan = churn(Some(1), None);
        plan.phases[0].kind = PhaseKind::Hold {
            connections: 0,
            hold_for: Duration::ZERO,
        };
        assert!(plan.validate().is_err());
        for mutate in [
            |p: &mut Plan| p.workers = 0,
            |p: &mut Plan| p.timeout = Duration::ZERO,
            |p: &mut Plan| p.reset_fraction = 1.5,
            |p: &mut Plan| p.criteria.max_error_rate = -0.1,
            |p: &mut Plan| p.embedded.shards = 0,
        ] {
            let mut plan = churn(Some(1), None);
            mutate(&mut plan);
            assert!(plan.validate().is_err(), "{plan:?}");
        }
    }
}
