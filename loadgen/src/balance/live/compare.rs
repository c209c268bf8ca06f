//! The validation of the live run against the simulator: the same configuration simulated
//! over several seeds, and per policy and metric the live value beside the simulated mean,
//! range and tolerance band.
//!
//! The tolerance: a live value agrees when it lies in the simulated range over
//! `--sim-seeds` seeds (the simulator's own seed-to-seed spread: a 20 s window is short, and
//! which server holds a client's lowest slot is itself random, so even two simulations of the
//! same configuration differ by this much) widened by [`REL_TOL`] of the simulated mean for the
//! load-shape figures, and by [`REL_TOL_LATENCY`] plus [`ABS_TOL_LATENCY_MS`] for latency.
//! Why these widths: the live run is the model plus what the model leaves out, each a few
//! percent: loopback round trips and task wake-ups (tens of µs to ~1 ms on a busy 2-core
//! machine, added to every latency and to each connection's hold time), the timer's 1 ms
//! tick (service times are rounded to it; the mean is compensated, the spread is not),
//! sampling on a thread that is sometimes late, and rovers that start together rather than
//! at random phases. Latency absorbs all of these directly, so its band is wider and has an
//! absolute part. See `docs/balance.md`, section "Live".

use std::fmt::Write as _;

use serde::Serialize;

use super::LiveReport;
use crate::balance::report::summary::Summary;
use crate::balance::simulation::jobs::run_all;
use crate::balance::{SimConfig, SimReport, simulate};

/// Relative widening of the simulated range for load-shape figures (in-flight max/mean and
/// CV, rate and window max/mean, slow and join shares).
pub const REL_TOL: f64 = 0.10;

/// Relative widening of the simulated range for latency percentiles.
pub const REL_TOL_LATENCY: f64 = 0.15;

/// Absolute widening of the simulated range for latency percentiles, milliseconds.
pub const ABS_TOL_LATENCY_MS: f64 = 1.0;

/// One figure of one policy, live against simulated.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The policy.
    pub policy: &'static str,
    /// The figure.
    pub metric: &'static str,
    /// Measured live.
    pub live: f64,
    /// Simulated, mean over seeds.
    pub sim_mean: f64,
    /// Simulated, lowest over seeds.
    pub sim_min: f64,
    /// Simulated, highest over seeds.
    pub sim_max: f64,
    /// Lower end of the tolerance band.
    pub low: f64,
    /// Upper end of the tolerance band.
    pub high: f64,
    /// Whether the live value is in the band.
    pub agrees: bool,
}

/// Simulates every configuration with `seeds` consecutive seeds from its own, on `workers`
/// threads: per configuration, one report per seed.
pub fn simulate_seeds(configs: &[SimConfig], seeds: u64, workers: usize) -> Vec<Vec<SimReport>> {
    let jobs: Vec<SimConfig> = configs
        .iter()
        .flat_map(|cfg| {
            (0..seeds).map(|i| SimConfig {
                seed: cfg.seed.wrapping_add(i),
                ..cfg.clone()
            })
        })
        .collect();
    let mut reports = run_all(&jobs, workers, simulate, |_, _, _| {}).into_iter();
    configs
        .iter()
        .map(|_| reports.by_ref().take(seeds as usize).collect())
        .collect()
}

type Figure = (&'static str, fn(&SimReport) -> Option<f64>, bool);

/// The compared figures: name, how to read it, whether it is a latency.
const FIGURES: [Figure; 8] = [
    (
        "inflight max/mean",
        |r| Some(r.inflight_max_over_mean),
        false,
    ),
    ("inflight cv", |r| Some(r.inflight_cv), false),
    ("rate max/mean", |r| Some(r.rate_max_over_mean), false),
    ("window max/mean", |r| Some(r.window_max_over_mean), false),
    ("p50 ms", |r| Some(r.latency_ms.p50), true),
    ("p99 ms", |r| Some(r.latency_ms.p99), true),
    ("slow share", |r| r.slow.as_ref().map(|s| s.share), false),
    (
        "join share (after joining)",
        |r| r.join.as_ref().map(|j| j.share_last_60s),
        false,
    ),
];

/// The comparison rows: `live[i]` against `sims[i]` (one report per seed).
pub fn rows(live: &[LiveReport], sims: &[Vec<SimReport>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (l, sims) in live.iter().zip(sims) {
        for (metric, get, latency) in FIGURES {
            let Some(value) = get(&l.report) else {
                continue;
            };
            let sim: Vec<f64> = sims.iter().filter_map(get).collect();
            let Some(Summary { mean, min, max, .. }) = Summary::of(&sim) else {
                continue;
            };
            let widen = if latency {
                mean * REL_TOL_LATENCY + ABS_TOL_LATENCY_MS
            } else {
                mean * REL_TOL
            };
            let (low, high) = (min - widen, max + widen);
            rows.push(Row {
                policy: l.report.policy,
                metric,
                live: value,
                sim_mean: mean,
                sim_min: min,
                sim_max: max,
                low,
                high,
                agrees: (low..=high).contains(&value),
            });
        }
    }
    rows
}

/// The rows as a text table.
pub fn table(rows: &[Row], seeds: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "live vs simulated ({seeds} seeds; band = simulated range ± {:.0} % of its mean, latency ± {:.0} % + {} ms):",
        REL_TOL * 100.0,
        REL_TOL_LATENCY * 100.0,
        ABS_TOL_LATENCY_MS
    );
    let _ = writeln!(
        out,
        "{:<12} {:<27} {:>9} {:>9} {:>19} {:>19} {:>6}",
        "policy", "metric", "live", "sim mean", "sim range", "band", "agrees"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<12} {:<27} {:>9.3} {:>9.3} {:>19} {:>19} {:>6}",
            r.policy,
            r.metric,
            r.live,
            r.sim_mean,
            format!("{:.3}–{:.3}", r.sim_min, r.sim_max),
            format!("{:.3}–{:.3}", r.low, r.high),
            if r.agrees { "yes" } else { "NO" }
        );
    }
    let agree = rows.iter().filter(|r| r.agrees).count();
    let _ = writeln!(out, "{agree} of {} figures agree", rows.len());
    out
}
