//! The limits a run must fit in, checked before anything starts: file descriptors
//! (`RLIMIT_NOFILE`, raised to its hard limit first, with the descriptor table grown to it once)
//! and ephemeral ports per address pair.
//!
//! A run that would die half-way with `EMFILE` or `EADDRNOTAVAIL` wastes the reader's time and
//! produces misleading numbers, so the tool refuses it up front and says what to change.
//!
//! A churn that merely comes close to the port range is worse: nothing fails, but every closed
//! connection's port sits in TIME_WAIT for 60 s, and each `connect` searches the range for a
//! free port, longer the fuller it is. The run then measures the kernel's port allocator, not
//! the server (from one source address, a 3 s loopback churn ran at half the rate and ten
//! times the p99 latency of the same churn spread over 16). So [`port_plan`] estimates the
//! connects per (source address, target) pair within the TIME_WAIT period and, for loopback
//! targets, spreads them over enough 127.0.0.x source addresses to keep each pair within a
//! quarter of the range; for other targets it warns with the figures and the remedies.

use std::time::Duration;

use crate::instrument::plan::{Pacing, PhaseKind, Plan};

/// Descriptors kept free for everything that is not a measured connection: listeners, epoll
/// and io_uring instances, eventfds, files, plus this many per thread.
const RESERVE_FDS: u64 = 128;
const RESERVE_FDS_PER_THREAD: u64 = 8;
/// Descriptors [`max_hold`] keeps free beyond the reserve.
const ESTIMATE_MARGIN: u64 = 32;

/// How long a closed connection's port stays in TIME_WAIT on Linux (`TCP_TIMEWAIT_LEN`, fixed).
const TIME_WAIT: Duration = Duration::from_secs(60);
/// The connect rate a closed-loop churn bounded by time alone is assumed to reach, per target
/// (loopback on a small host serves about 60,000 handshakes/s; the estimate errs high, as
/// spreading over more addresses costs nothing).
const ASSUMED_PEAK_RATE: f64 = 100_000.0;
/// The share of the ephemeral port range one address pair may use within the TIME_WAIT period
/// before `connect`'s search for a free port starts to show in the latencies.
const PORT_BUDGET: f64 = 0.25;
/// The most source addresses an automatic spread uses (127.0.0.1 ..= 127.0.0.254).
const MAX_SRC_IPS: u8 = 254;

/// Why a run was refused before it started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The descriptor limit could not be read or raised.
    #[error("RLIMIT_NOFILE: {0}")]
    Rlimit(#[source] std::io::Error),
    /// More descriptors would be open at once than the process may have.
    #[error(
        "phase {phase} needs about {needed} file descriptors at once but only {available} are \
         available (RLIMIT_NOFILE {limit}, {open} already open){hint}"
    )]
    TooManyFds {
        /// The phase that does not fit (its name).
        phase: &'static str,
        /// Descriptors the phase needs at its peak.
        needed: u64,
        /// Descriptors still free.
        available: u64,
        /// The soft limit after raising it to the hard limit.
        limit: u64,
        /// Descriptors open before the run.
        open: u64,
        /// What to change.
        hint: &'static str,
    },
    /// More connections to one target from one source address than there are ephemeral ports.
    #[error(
        "phase {phase} holds {per_pair} connections per (source address, target) pair but the \
         ephemeral port range has {ports} ports; use --src-ips N (loopback targets) to spread them"
    )]
    Ports {
        /// The phase that does not fit.
        phase: &'static str,
        /// Connections per address pair.
        per_pair: u64,
        /// Ports in `net.ipv4.ip_local_port_range`.
        ports: u64,
    },
}

/// Descriptors this process has open now (0 if `/proc/self/fd` cannot be read).
pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// The number of ports in `net.ipv4.ip_local_port_range`, if it can be read.
pub fn ephemeral_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (hi >= lo).then(|| hi - lo + 1)
}

/// Descriptors a phase needs at its peak: its connections, doubled when the server is in this
/// process, plus a reserve.
pub fn fds_needed(plan: &Plan, kind: &PhaseKind, in_flight: usize) -> u64 {
    let conns = match *kind {
        PhaseKind::Hold { connections, .. } => connections.max(in_flight as u64),
        PhaseKind::Churn { .. } => in_flight as u64,
    };
    let sides = if plan.is_embedded() { 2 } else { 1 };
    let threads = plan.workers as u64
        + if plan.is_embedded() {
            plan.embedded.shards as u64
        } else {
            0
        };
    conns * sides + RESERVE_FDS + RESERVE_FDS_PER_THREAD * threads
}

/// The most connections a hold can keep under `plan` (its targets, workers and embedded
/// server) within the descriptor limit, after raising it; `None` if the limit cannot be read.
pub fn max_hold(plan: &Plan) -> Option<u64> {
    let limit = callosum_server::raise_nofile_limit().ok()?;
    let available = limit.saturating_sub(open_fds());
    let probe = PhaseKind::Hold {
        connections: 0,
        hold_for: std::time::Duration::ZERO,
    };
    let reserve = fds_needed(plan, &probe, 0);
    let sides = if plan.is_embedded() { 2 } else { 1 };
    // Leave room for what opens between this estimate and the run (the signal thread's
    // runtime, log files).
    Some(available.saturating_sub(reserve + ESTIMATE_MARGIN) / sides)
}

/// How a run's connects fall on the ephemeral ports of each (source address, target) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PortPlan {
    /// Source addresses to spread over (127.0.0.1 ..= 127.0.0.N; 1: no bind).
    pub src_ips: u8,
    /// Estimated connects per target within one TIME_WAIT period (held connections included).
    pub connects_per_target: u64,
    /// Ports in `net.ipv4.ip_local_port_range` (`None`: unreadable, nothing checked).
    pub ports: Option<u64>,
    /// Whether every target is an IPv4 loopback address (the embedded server is), so that
    /// source addresses can be spread over 127.0.0.x.
    pub loopback: bool,
}

impl PortPlan {
    /// Estimated connects per (source address, target) pair within one TIME_WAIT period.
    pub fn per_pair(&self) -> u64 {
        self.connects_per_target
            .div_ceil(u64::from(self.src_ips.max(1)))
    }

    /// Whether each pair stays within its budget of the port range.
    pub fn fits(&self) -> bool {
        self.ports
            .is_none_or(|ports| self.per_pair() as f64 <= ports as f64 * PORT_BUDGET)
    }

    /// What to tell the user when the plan does not fit: the figures and the remedies.
    pub fn warning(&self) -> Option<String> {
        if self.fits() {
            return None;
        }
        let ports = self.ports?;
        let remedy = if self.loopback {
            "raise --src-ips (up to 254)"
        } else {
            "run several load generators from other addresses and merge their results, widen \
             net.ipv4.ip_local_port_range, or set net.ipv4.tcp_tw_reuse=1 on this client"
        };
        Some(format!(
            "about {} connects per (source address, target) pair within the {} s TIME_WAIT \
             period against {ports} ephemeral ports: connect will search for free ports and \
             the run will measure that, not the server; {remedy}",
            self.per_pair(),
            TIME_WAIT.as_secs(),
        ))
    }
}

/// Estimates the connects per target within one TIME_WAIT period and picks the source
/// addresses: `plan.src_ips` when given; otherwise, for loopback targets, the fewest that
/// keep each pair within `PORT_BUDGET` of the range, and 1 for other targets (which the
/// caller warns about when it does not fit: see [`PortPlan::warning`]).
pub fn port_plan(plan: &Plan) -> PortPlan {
    plan_for_range(plan, ephemeral_ports())
}

fn plan_for_range(plan: &Plan, ports: Option<u64>) -> PortPlan {
    let connects_per_target = connects_within_time_wait(plan) / plan.targets.len().max(1) as u64;
    let loopback = plan
        .targets
        .iter()
        .all(|t| t.is_ipv4() && t.ip().is_loopback());
    let src_ips = match (plan.src_ips, ports) {
        (Some(n), _) => n.max(1),
        (None, Some(ports)) if loopback => {
            let budget = (ports as f64 * PORT_BUDGET).max(1.0);
            let needed = (connects_per_target as f64 / budget).ceil();
            needed.clamp(1.0, f64::from(MAX_SRC_IPS)) as u8
        }
        (None, _) => 1,
    };
    PortPlan {
        src_ips,
        connects_per_target,
        ports,
        loopback,
    }
}

/// The connects of every phase that fall within one TIME_WAIT period of each other, over all
/// targets: a churn's count, or its rate (the open-loop rate, else [`ASSUMED_PEAK_RATE`] per
/// target) over its warmup and duration capped at the period; a hold's connections.
fn connects_within_time_wait(plan: &Plan) -> u64 {
    let targets = plan.targets.len().max(1) as f64;
    let total: f64 = plan
        .phases
        .iter()
        .map(|phase| match phase.kind {
            PhaseKind::Hold { connections, .. } => connections as f64,
            PhaseKind::Churn { duration, count } => {
                let rate = match phase.pacing {
                    Pacing::Open { rate, .. } => rate,
                    Pacing::Closed { .. } => ASSUMED_PEAK_RATE * targets,
                };
                let by_time =
                    duration.map(|d| rate * (d + phase.warmup).min(TIME_WAIT).as_secs_f64());
                match (count, by_time) {
                    (Some(count), Some(by_time)) => (count as f64).min(by_time),
                    (Some(count), None) => count as f64,
                    (None, by_time) => by_time.unwrap_or(0.0),
                }
            }
        })
        .sum();
    total as u64
}

/// Raises `RLIMIT_NOFILE` and checks every phase of `plan` against the limits, before
/// anything starts. `plan.src_ips` must be resolved ([`port_plan`]).
pub fn check(plan: &Plan) -> Result<(), LimitError> {
    let limit = callosum_server::raise_nofile_limit().map_err(LimitError::Rlimit)?;
    // Grow the descriptor table once, now: growing it while connections pile up stalls every
    // thread of the process for an RCU grace period, which would show up as client latency.
    if let Err(e) = callosum_server::grow_fd_table(limit) {
        tracing::warn!(error = %e, "could not grow the descriptor table up front");
    }
    let open = open_fds();
    let available = limit.saturating_sub(open);
    let ports = ephemeral_ports();
    let pairs = (plan.targets.len().max(1) * usize::from(plan.src_ips.unwrap_or(1))) as u64;
    for phase in &plan.phases {
        let needed = fds_needed(plan, &phase.kind, phase.pacing.in_flight());
        if needed > available {
            return Err(LimitError::TooManyFds {
                phase: phase.kind.name(),
                needed,
                available,
                limit,
                open,
                hint: if plan.is_embedded() {
                    "; the embedded server shares this process's descriptors (two per \
                     connection): run callosum-server as its own process and pass --target"
                } else {
                    "; lower --connections or --concurrency, or raise the hard limit"
                },
            });
        }
        if let (PhaseKind::Hold { connections, .. }, Some(ports)) = (&phase.kind, ports) {
            let per_pair = connections.div_ceil(pairs);
            if per_pair > ports {
                return Err(LimitError::Ports {
                    phase: phase.kind.name(),
                    per_pair,
                    ports,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::plan::{Pacing, Phase};

    fn hold(connections: u64) -> Plan {
        Plan {
            phases: vec![Phase {
                kind: PhaseKind::Hold {
                    connections,
                    hold_for: std::time::Duration::ZERO,
                },
                pacing: Pacing::Closed { concurrency: 64 },
                warmup: std::time::Duration::ZERO,
            }],
            workers: 2,
            ..Plan::default()
        }
    }

    #[test]
    fn embedded_needs_two_descriptors_per_connection() {
        let mut plan = hold(1_000);
        plan.embedded.shards = 2;
        let embedded = fds_needed(&plan, &plan.phases[0].kind, 64);
        plan.targets = vec!["127.0.0.1:1".parse().unwrap()];
        let external = fds_needed(&plan, &plan.phases[0].kind, 64);
        assert_eq!(embedded - external, 1_000 + 2 * RESERVE_FDS_PER_THREAD);
    }

    #[test]
    fn an_embedded_hold_beyond_the_limit_is_refused_with_a_hint() {
        let plan = hold(10_000_000);
        let err = check(&plan).unwrap_err();
        assert!(matches!(err, LimitError::TooManyFds { .. }), "{err}");
        assert!(err.to_string().contains("--target"), "{err}");
    }

    #[test]
    fn the_largest_hold_that_fits_passes_the_check_and_more_does_not() {
        let mut plan = hold(0);
        // Tests run in parallel and open files: stay clear of the exact edge.
        let max = max_hold(&plan).unwrap();
        plan.phases[0].kind = PhaseKind::Hold {
            connections: max,
            hold_for: std::time::Duration::ZERO,
        };
        check(&plan).unwrap();
        plan.phases[0].kind = PhaseKind::Hold {
            connections: max + 1_000,
            hold_for: std::time::Duration::ZERO,
        };
        assert!(matches!(check(&plan), Err(LimitError::TooManyFds { .. })));
    }

    /// The range of a default Linux host (32768-60999).
    const PORTS: Option<u64> = Some(28_232);

    #[test]
    fn the_default_run_spreads_its_loopback_churn_over_enough_source_addresses() {
        let plan = plan_for_range(&Plan::default(), PORTS);
        // 3.5 s at the assumed 100,000/s plus a hold of 4,000, at most 7,058 per pair.
        assert_eq!(plan.connects_per_target, 354_000);
        assert_eq!(plan.src_ips, 51);
        assert!(plan.fits() && plan.warning().is_none(), "{plan:?}");
    }

    #[test]
    fn a_given_src_ips_is_kept_and_warned_about_when_too_few() {
        let plan = Plan {
            src_ips: Some(2),
            ..Plan::default()
        };
        let plan = plan_for_range(&plan, PORTS);
        assert_eq!(plan.src_ips, 2);
        let warning = plan.warning().expect("177,000 per pair cannot fit");
        assert!(warning.contains("177000 connects per (source address, target) pair"));
        assert!(warning.contains("--src-ips"), "{warning}");
    }

    #[test]
    fn a_counted_or_paced_churn_is_estimated_from_its_count_or_rate() {
        let mut plan = hold(0);
        plan.phases[0].kind = PhaseKind::Churn {
            duration: None,
            count: Some(5_000),
        };
        assert_eq!(plan_for_range(&plan, PORTS).src_ips, 1);
        plan.phases[0].kind = PhaseKind::Churn {
            duration: Some(Duration::from_secs(600)),
            count: None,
        };
        plan.phases[0].pacing = Pacing::Open {
            rate: 1_000.0,
            max_in_flight: 64,
        };
        // The TIME_WAIT period caps the window: 60 s at 1,000/s.
        let plan = plan_for_range(&plan, PORTS);
        assert_eq!((plan.connects_per_target, plan.src_ips), (60_000, 9));
    }

    #[test]
    fn a_remote_target_is_not_spread_but_warned_about_with_the_remedies() {
        let plan = Plan {
            targets: vec!["192.0.2.1:4040".parse().unwrap()],
            ..Plan::default()
        };
        let plan = plan_for_range(&plan, PORTS);
        assert_eq!(plan.src_ips, 1);
        let warning = plan
            .warning()
            .expect("354,000 connects cannot fit one pair");
        assert!(warning.contains("28232 ephemeral ports"), "{warning}");
        assert!(warning.contains("tcp_tw_reuse"), "{warning}");
        assert!(warning.contains("merge"), "{warning}");
    }

    #[test]
    fn an_unreadable_port_range_spreads_nothing_and_warns_about_nothing() {
        let plan = plan_for_range(&Plan::default(), None);
        assert_eq!(plan.src_ips, 1);
        assert!(plan.warning().is_none());
    }
}
