//! The limits a run must fit in, checked before anything starts: file descriptors
//! (`RLIMIT_NOFILE`, raised to its hard limit first, with the descriptor table grown to it once)
//! and ephemeral ports per address pair.
//!
//! A run that would die half-way with `EMFILE` or `EADDRNOTAVAIL` wastes the reader's time and
//! produces misleading numbers, so the tool refuses it up front and says what to change.

use std::net::SocketAddr;

use crate::config::{Config, PhaseKind};

/// Descriptors kept free for everything that is not a measured connection: listeners, epoll
/// and io_uring instances, eventfds, files, plus this many per thread.
const RESERVE_FDS: u64 = 128;
const RESERVE_FDS_PER_THREAD: u64 = 8;
/// Descriptors [`max_hold`] keeps free beyond the reserve.
const ESTIMATE_MARGIN: u64 = 32;

/// Why a run was refused before it started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `--src-ips` binds to 127.0.0.x, which can only reach IPv4 loopback targets.
    #[error("--src-ips binds to 127.0.0.x and needs IPv4 loopback targets; {0} is not one")]
    SrcIpsNeedLoopback(SocketAddr),
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
pub fn fds_needed(config: &Config, kind: &PhaseKind, in_flight: usize) -> u64 {
    let conns = match *kind {
        PhaseKind::Hold { connections, .. } => connections.max(in_flight as u64),
        PhaseKind::Churn { .. } => in_flight as u64,
    };
    let sides = if config.is_embedded() { 2 } else { 1 };
    let threads = config.workers as u64
        + if config.is_embedded() {
            config.embedded.shards as u64
        } else {
            0
        };
    conns * sides + RESERVE_FDS + RESERVE_FDS_PER_THREAD * threads
}

/// The most connections a hold can keep under `config` (its targets, workers and embedded
/// server) within the descriptor limit, after raising it; `None` if the limit cannot be read.
pub fn max_hold(config: &Config) -> Option<u64> {
    let limit = callosum_server::raise_nofile_limit().ok()?;
    let available = limit.saturating_sub(open_fds());
    let probe = PhaseKind::Hold {
        connections: 0,
        hold_for: std::time::Duration::ZERO,
    };
    let reserve = fds_needed(config, &probe, 0);
    let sides = if config.is_embedded() { 2 } else { 1 };
    // Leave room for what opens between this estimate and the run (the signal thread's
    // runtime, log files).
    Some(available.saturating_sub(reserve + ESTIMATE_MARGIN) / sides)
}

/// Raises `RLIMIT_NOFILE` and checks every phase of `config` against the limits, before
/// anything starts.
pub fn check(config: &Config) -> Result<(), LimitError> {
    validate(config)?;
    let limit = callosum_server::raise_nofile_limit()
        .map_err(|e| LimitError::Invalid(format!("getrlimit: {e}")))?;
    // Grow the descriptor table once, now: growing it while connections pile up stalls every
    // thread of the process for an RCU grace period, which would show up as client latency.
    if let Err(e) = callosum_server::grow_fd_table(limit) {
        tracing::warn!(error = %e, "could not grow the descriptor table up front");
    }
    let open = open_fds();
    let available = limit.saturating_sub(open);
    let ports = ephemeral_ports();
    let pairs = (config.targets.len().max(1) * usize::from(config.src_ips.max(1))) as u64;
    for phase in &config.phases {
        let needed = fds_needed(config, &phase.kind, phase.pacing.in_flight());
        if needed > available {
            return Err(LimitError::TooManyFds {
                phase: phase.kind.name(),
                needed,
                available,
                limit,
                open,
                hint: if config.is_embedded() {
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

fn validate(config: &Config) -> Result<(), LimitError> {
    let bad = |s: &str| Err(LimitError::Invalid(s.to_owned()));
    if config.workers == 0 {
        return bad("workers must be at least 1");
    }
    if config.phases.is_empty() {
        return bad("no phase to run");
    }
    if config.src_ips > 1 {
        if let Some(t) = config
            .targets
            .iter()
            .find(|t| !(t.is_ipv4() && t.ip().is_loopback()))
        {
            return Err(LimitError::SrcIpsNeedLoopback(*t));
        }
    }
    if config.timeout.is_zero() {
        return bad("the handshake timeout must be positive");
    }
    if !(0.0..=1.0).contains(&config.reset_fraction) {
        return bad("the reset fraction must be within 0.0..=1.0");
    }
    for phase in &config.phases {
        match phase.pacing {
            crate::Pacing::Closed { concurrency: 0 } => {
                return bad("concurrency must be at least 1");
            }
            crate::Pacing::Open {
                rate,
                max_in_flight,
            } if !(rate.is_finite() && rate > 0.0) || max_in_flight == 0 => {
                return bad("rate must be positive and max in flight at least 1");
            }
            _ => {}
        }
        if let PhaseKind::Churn {
            duration: None,
            count: None,
        } = phase.kind
        {
            return bad("a churn needs a duration or a count");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Pacing, Phase};

    fn hold(connections: u64) -> Config {
        Config {
            phases: vec![Phase {
                kind: PhaseKind::Hold {
                    connections,
                    hold_for: std::time::Duration::ZERO,
                },
                pacing: Pacing::Closed { concurrency: 64 },
                warmup: std::time::Duration::ZERO,
            }],
            workers: 2,
            ..Config::default()
        }
    }

    #[test]
    fn embedded_needs_two_descriptors_per_connection() {
        let mut config = hold(1_000);
        config.embedded.shards = 2;
        let embedded = fds_needed(&config, &config.phases[0].kind, 64);
        config.targets = vec!["127.0.0.1:1".parse().unwrap()];
        let external = fds_needed(&config, &config.phases[0].kind, 64);
        assert_eq!(embedded - external, 1_000 + 2 * RESERVE_FDS_PER_THREAD);
    }

    #[test]
    fn an_embedded_hold_beyond_the_limit_is_refused_with_a_hint() {
        let config = hold(10_000_000);
        let err = check(&config).unwrap_err();
        assert!(matches!(err, LimitError::TooManyFds { .. }), "{err}");
        assert!(err.to_string().contains("--target"), "{err}");
    }

    #[test]
    fn the_largest_hold_that_fits_passes_the_check_and_more_does_not() {
        let mut config = hold(0);
        // Tests run in parallel and open files: stay clear of the exact edge.
        let max = max_hold(&config).unwrap();
        config.phases[0].kind = PhaseKind::Hold {
            connections: max,
            hold_for: std::time::Duration::ZERO,
        };
        check(&config).unwrap();
        config.phases[0].kind = PhaseKind::Hold {
            connections: max + 1_000,
            hold_for: std::time::Duration::ZERO,
        };
        assert!(matches!(check(&config), Err(LimitError::TooManyFds { .. })));
    }

    #[test]
    fn src_ips_need_loopback_targets() {
        let mut config = hold(10);
        config.targets = vec!["10.0.0.1:80".parse().unwrap()];
        config.src_ips = 4;
        assert!(matches!(
            check(&config),
            Err(LimitError::SrcIpsNeedLoopback(_))
        ));
    }

    #[test]
    fn a_churn_without_bound_is_invalid() {
        let mut config = hold(10);
        config.phases[0].kind = PhaseKind::Churn {
            duration: None,
            count: None,
        };
        assert!(matches!(check(&config), Err(LimitError::Invalid(_))));
    }
}
