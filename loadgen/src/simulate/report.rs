//! The result of a simulation ([`SimReport`], serialisable) and its text table.
//!
//! Why this shape: the report holds only what the run computed from its seed, never wall
//! time, so the JSON of two runs with the same configuration is byte-identical (the test of
//! determinism compares it). Wall time and events/s are measured by the caller and printed
//! apart.

use std::fmt::Write as _;

use serde::Serialize;

use super::policy::PoolRules;

/// Request latency percentiles, milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

/// Open connections per server in the cluster at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct ConnSpread {
    /// Fewest.
    pub min: f64,
    /// Most.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The slow server's share of requests.
#[derive(Clone, Debug, Serialize)]
pub struct SlowReport {
    /// Its id.
    pub server: usize,
    /// Its service-time multiplier.
    pub factor: f64,
    /// Its share of all requests in the measured window.
    pub share: f64,
    /// A fair share, 1/servers.
    pub fair: f64,
}

/// How the server that joined mid-run took load.
#[derive(Clone, Debug, Serialize)]
pub struct JoinReport {
    /// Its id (the last server).
    pub server: usize,
    /// When it joined, seconds into the measured window.
    pub at_s: f64,
    /// Its requests relative to a fair share (1 = fair), trailing average, 10 s after joining.
    pub share_after_10s: Option<f64>,
    /// The same, 30 s after joining.
    pub share_after_30s: Option<f64>,
    /// Its requests relative to fair over the last 60 s of the run.
    pub share_last_60s: f64,
    /// Seconds after joining from which the trailing average stays within 10 % of fair to
    /// the end of the run; `None` if it never does.
    pub settled_after_s: Option<f64>,
    /// Per window after joining, its requests relative to fair.
    pub per_window: Vec<f64>,
}

/// What happened when a server left or crashed.
#[derive(Clone, Debug, Serialize)]
pub struct LeaveReport {
    /// Its id.
    pub server: usize,
    /// When it left, seconds into the measured window.
    pub at_s: f64,
    /// Whether it crashed (requests at it failed) rather than drained.
    pub crash: bool,
    /// Seconds from leaving until no request was waiting at it any more.
    pub drained_after_s: Option<f64>,
    /// Requests that failed.
    pub failed: u64,
}

/// Everything one simulation measured (definitions in [`super::metrics`]).
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// The policy's name.
    pub policy: &'static str,
    /// The pool rules, for the Callosum policies.
    pub rules: Option<PoolRules>,
    /// Requests that arrived in the measured window and completed.
    pub requests: u64,
    /// Requests that failed (a crash, or no server).
    pub failed: u64,
    /// Mean instantaneous load (queued + in service) per server.
    pub mean_load_per_server: f64,
    /// Mean over samples of max/mean instantaneous load.
    pub inflight_max_over_mean: f64,
    /// Mean over samples of the coefficient of variation of instantaneous load.
    pub inflight_cv: f64,
    /// Mean over samples of the floor ⌈N/S⌉/(N/S) no policy can beat.
    pub inflight_floor: f64,
    /// Requests per server over the measured window, max/mean.
    pub rate_max_over_mean: f64,
    /// Requests per server over the measured window, min/mean.
    pub rate_min_over_mean: f64,
    /// Requests per server per window, max/mean, averaged over windows.
    pub window_max_over_mean: f64,
    /// Request latency, arrival at the client to end of service.
    pub latency_ms: Latency,
    /// Connections per server at the end.
    pub conns_per_server: ConnSpread,
    /// When a rover connection last replaced a pool entry (seconds from start).
    pub last_swap_s: Option<f64>,
    /// Replacements in the measured window.
    pub swaps_in_window: u64,
    /// With a slow server: its share.
    pub slow: Option<SlowReport>,
    /// With a server joining mid-run: its share over time.
    pub join: Option<JoinReport>,
    /// With a server leaving mid-run: how long it took to drain.
    pub leave: Option<LeaveReport>,
    /// Events processed (for events/s).
    pub events: u64,
    /// Per window, mean instantaneous load of each server (≤ 16 servers) or min/mean/max.
    #[serde(skip)]
    pub series: Vec<Vec<f64>>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// A text table of reports, one row per policy.
pub fn table(reports: &[SimReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>7} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "policy",
        "requests",
        "inf.m/m",
        "inf.cv",
        "floor",
        "rate.mm",
        "win.mm",
        "p50ms",
        "p99ms",
        "p999ms",
        "conns",
        "lastswap",
        "slow.sh",
        "join30s"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<12} {:>9} {:>7.3} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>8} {:>8} {:>8}",
            r.policy,
            r.requests,
            r.inflight_max_over_mean,
            r.inflight_cv,
            r.inflight_floor,
            r.rate_max_over_mean,
            r.window_max_over_mean,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.p999,
            format!(
                "{:.0}-{:.0}",
                r.conns_per_server.min, r.conns_per_server.max
            ),
            opt(r.last_swap_s, 1),
            opt(r.slow.as_ref().map(|s| s.share), 3),
            opt(r.join.as_ref().and_then(|j| j.share_after_30s), 2),
        );
        if let Some(j) = &r.join {
            let _ = writeln!(
                out,
                "{:<12} join: after 10 s {} of fair, after 30 s {}, last 60 s {:.2}, settled within 10 % after {} s",
                "",
                opt(j.share_after_10s, 2),
                opt(j.share_after_30s, 2),
                j.share_last_60s,
                opt(j.settled_after_s, 0)
            );
        }
        if let Some(l) = &r.leave {
            let _ = writeln!(
                out,
                "{:<12} leave: server {} {} at {:.0} s, no request waiting for it after {} s, {} failed",
                "",
                l.server,
                if l.crash { "crashed" } else { "drained" },
                l.at_s,
                opt(l.drained_after_s, 3),
                l.failed
            );
        }
    }
    out
}
