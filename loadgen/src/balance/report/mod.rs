//! The result of a simulation ([`SimReport`], serialisable), how it is built from the
//! run's [`Metrics`] ([`SimReport::build`]), and its text table.
//!
//! Why this shape: the report holds only what the run computed from its seed, never wall
//! time, so the JSON of two runs with the same configuration is byte-identical (the test of
//! determinism compares it). Wall time and events/s are measured by the caller and printed
//! apart. The build step is shared with the live run (`balance`), which fills the same
//! [`Metrics`] from real servers' counters: one definition of every figure for both.

pub mod plot;
pub mod summary;

use std::fmt::Write as _;

use serde::Serialize;

use crate::balance::metrics::{Metrics, spread};
use crate::balance::model::PoolRules;
use crate::balance::model::SimConfig;

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

/// Connections opened per second per server over the measured window (servers in the
/// cluster at the end).
#[derive(Clone, Debug, Serialize)]
pub struct ConnectRate {
    /// Mean over servers.
    pub mean: f64,
    /// The busiest server's.
    pub max: f64,
}

/// The fail-fast server's share of requests (`--fail-fast-server`).
#[derive(Clone, Debug, Serialize)]
pub struct FailFastReport {
    /// Its id.
    pub server: usize,
    /// Its share of all requests sent in the measured window.
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

/// Everything one simulation measured (definitions in [`crate::balance::metrics`]).
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// The policy's name.
    pub policy: &'static str,
    /// The pool rules, for the Callosum policies.
    pub rules: Option<PoolRules>,
    /// Requests that arrived in the measured window and completed (errors not included).
    pub requests: u64,
    /// Requests that arrived in the measured window and were answered with an error (the
    /// fail-fast server's).
    pub errors: u64,
    /// errors / (requests + errors).
    pub error_share: f64,
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
    /// How long a server's share stays off the mean, seconds: the integrated autocorrelation
    /// time of the per-window shares (see `metrics`); `None` with too few windows or even
    /// rates.
    pub rate_memory_s: Option<f64>,
    /// Request latency, arrival at the client to its response there (successes only).
    pub latency_ms: Latency,
    /// Connections per server at the end.
    pub conns_per_server: ConnSpread,
    /// Connections opened per second per server (rover connections; the baselines keep
    /// theirs open and open none after warm-up).
    pub connects_per_s: ConnectRate,
    /// When a rover connection last replaced a pool entry (seconds from start).
    pub last_swap_s: Option<f64>,
    /// Replacements in the measured window.
    pub swaps_in_window: u64,
    /// With a slow server: its share.
    pub slow: Option<SlowReport>,
    /// With a fail-fast server: its share of requests.
    pub fail_fast: Option<FailFastReport>,
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

/// A server that left the cluster during the measured window.
#[derive(Clone, Copy, Debug)]
pub struct LeftServer {
    /// Its id.
    pub server: usize,
    /// When it left, seconds into the measured window.
    pub at_s: f64,
    /// Seconds from leaving until no request was waiting at it any more.
    pub drained_after_s: Option<f64>,
}

/// What a run knows at its end besides its [`Metrics`].
#[derive(Clone, Debug)]
pub struct RunEnd {
    /// The pool rules, for the Callosum policies.
    pub rules: Option<PoolRules>,
    /// Servers in the cluster for the whole measured window (long-run rates are over them).
    pub whole: Vec<u32>,
    /// Open connections of each server in the cluster at the end.
    pub conns: Vec<f64>,
    /// The first whole window the joining server was in, if one joined.
    pub joined_window: Option<usize>,
    /// The server that left, if one did.
    pub left: Option<LeftServer>,
    /// Requests that failed.
    pub failed: u64,
    /// When a rover connection last replaced a pool entry (seconds from start), if known.
    pub last_swap_s: Option<f64>,
    /// Replacements in the measured window.
    pub swaps_in_window: u64,
    /// Events processed (0 for a live run).
    pub events: u64,
    /// Requests answered with an error (arrived in the measured window).
    pub errors: u64,
    /// Connections opened per second in the measured window, per server in the cluster.
    pub connects_per_s: Vec<f64>,
}

impl SimReport {
    /// The report of a run of `cfg` that measured `m` and ended as `end` says.
    pub fn build(cfg: &SimConfig, m: Metrics, end: RunEnd) -> SimReport {
        let h = &m.latency;
        let ms = |ns: u64| ns as f64 / 1e6;
        let (inflight_max_over_mean, inflight_cv, inflight_floor, mean_load) = m.inflight();
        let (rate_max_over_mean, rate_min_over_mean) =
            spread(end.whole.iter().map(|&s| m.per_server[s as usize] as f64));
        let conns = &end.conns;
        let total: u64 = m.per_server.iter().sum();
        let slow = cfg
            .slow_server
            .filter(|&s| s < cfg.servers)
            .map(|s| SlowReport {
                server: s,
                factor: cfg.slow_factor,
                share: m.per_server[s] as f64 / total.max(1) as f64,
                fair: 1.0 / conns.len().max(1) as f64,
            });
        let fail_fast = cfg
            .model
            .fail_fast_server
            .filter(|&s| s < cfg.servers)
            .map(|s| FailFastReport {
                server: s,
                share: m.per_server[s] as f64 / total.max(1) as f64,
                fair: 1.0 / conns.len().max(1) as f64,
            });
        let cps = &end.connects_per_s;
        let join = cfg
            .join_at_s
            .map(|at| join_report(at, &m.watched, end.joined_window, cfg));
        let leave = end.left.map(|l| LeaveReport {
            server: l.server,
            at_s: l.at_s,
            crash: cfg.crash,
            drained_after_s: l.drained_after_s,
            failed: end.failed,
        });
        SimReport {
            policy: cfg.policy.name(),
            rules: end.rules,
            requests: h.len(),
            errors: end.errors,
            error_share: end.errors as f64 / (h.len() + end.errors).max(1) as f64,
            failed: end.failed,
            mean_load_per_server: mean_load,
            inflight_max_over_mean,
            inflight_cv,
            inflight_floor,
            rate_max_over_mean,
            rate_min_over_mean,
            window_max_over_mean: m.window_max_over_mean(),
            rate_memory_s: m.rate_memory_windows().map(|w| w * cfg.window_s),
            latency_ms: Latency {
                mean: h.mean() / 1e6,
                p50: ms(h.value_at_quantile(0.5)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            },
            conns_per_server: ConnSpread {
                min: if conns.is_empty() {
                    0.0
                } else {
                    conns.iter().copied().fold(f64::INFINITY, f64::min)
                },
                max: conns.iter().copied().fold(0.0, f64::max),
                mean: conns.iter().sum::<f64>() / conns.len().max(1) as f64,
            },
            connects_per_s: ConnectRate {
                mean: cps.iter().sum::<f64>() / cps.len().max(1) as f64,
                max: cps.iter().copied().fold(0.0, f64::max),
            },
            last_swap_s: end.last_swap_s,
            swaps_in_window: end.swaps_in_window,
            slow,
            fail_fast,
            join,
            leave,
            events: end.events,
            series: m.series,
        }
    }
}

/// The joining server's share of requests relative to fair, per window after it joined.
fn join_report(
    at: f64,
    watched: &[(u32, u64, u32)],
    first: Option<usize>,
    cfg: &SimConfig,
) -> JoinReport {
    let start = first.unwrap_or(watched.len()).min(watched.len());
    let after = &watched[start..];
    let ratio = |w: &[(u32, u64, u32)]| {
        let got: f64 = w.iter().map(|x| x.0 as f64).sum();
        let fair: f64 = w.iter().map(|x| x.1 as f64 / x.2.max(1) as f64).sum();
        if fair > 0.0 { got / fair } else { 0.0 }
    };
    let per_window: Vec<f64> = after
        .iter()
        .map(|w| ratio(std::slice::from_ref(w)))
        .collect();
    // Trailing average over `smooth` windows, and the first window after which it stays
    // within 10 % of fair for the rest of the run.
    let smooth = cfg.join_smooth_windows.max(1);
    let trailing: Vec<f64> = (0..after.len())
        .map(|i| ratio(&after[(i + 1).saturating_sub(smooth)..=i]))
        .collect();
    let settled = trailing
        .iter()
        .rposition(|r| !(0.9..=1.1).contains(r))
        .map_or(Some(0), |last_bad| {
            (last_bad + 1 < trailing.len()).then_some(last_bad + 1)
        });
    let at_window = |secs: f64| {
        let i = (secs / cfg.window_s).round() as usize;
        trailing.get(i.saturating_sub(1)).copied()
    };
    let tail = after.len().saturating_sub((60.0 / cfg.window_s) as usize);
    JoinReport {
        server: cfg.servers - 1,
        at_s: at,
        share_after_10s: at_window(10.0),
        share_after_30s: at_window(30.0),
        share_last_60s: ratio(&after[tail..]),
        settled_after_s: settled.map(|w| (w + 1) as f64 * cfg.window_s),
        per_window,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// A text table of reports, one row per policy.
pub fn table(reports: &[SimReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>9} {:>7} {:>6} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>11}",
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
        "join30s",
        "err%",
        "conn/s"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<13} {:>9} {:>7.3} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>8} {:>8} {:>8} {:>6.2} {:>11}",
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
            r.error_share * 100.0,
            // `+ 0.0` turns a negative zero (a mean of no connects) into 0.0 for printing.
            format!(
                "{:.1}/{:.1}",
                r.connects_per_s.mean + 0.0,
                r.connects_per_s.max + 0.0
            ),
        );
        if let Some(f) = &r.fail_fast {
            let _ = writeln!(
                out,
                "{:<13} fail-fast: server {} got {:.3} of requests (fair {:.3}), {} errors",
                "", f.server, f.share, f.fair, r.errors
            );
        }
        if let Some(j) = &r.join {
            let _ = writeln!(
                out,
                "{:<13} join: after 10 s {} of fair, after 30 s {}, last 60 s {:.2}, settled within 10 % after {} s",
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
                "{:<13} leave: server {} {} at {:.0} s, no request waiting for it after {} s, {} failed",
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
