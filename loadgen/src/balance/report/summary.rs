//! A figure over several seeds: its mean, the 95 % confidence interval of the mean (Student
//! t), and its range, and the same for every figure of a policy's reports.
//!
//! Why this shape: one seed is one draw of which server holds each client's lowest slot, so a
//! single run can differ from the next by more than two policies differ from each other.
//! Every command that runs several seeds (`simulate --seeds`, `sweep`, `balance`'s comparison
//! with the simulator) aggregates them here, by one definition. The t quantile is a table for
//! small samples and the Cornish-Fisher expansion beyond it (within 1e-4 of the exact value),
//! so no statistics crate is needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::balance::report::SimReport;

/// Mean, 95 % interval and range of a list of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Half-width of the 95 % confidence interval of the mean (Student t with n − 1 degrees
    /// of freedom); `None` for a single sample.
    pub ci95: Option<f64>,
    /// Lowest.
    pub min: f64,
    /// Highest.
    pub max: f64,
}

impl Summary {
    /// The summary of `samples`; `None` if there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let n = samples.len();
        if n == 0 {
            return None;
        }
        let mean = samples.iter().sum::<f64>() / n as f64;
        let ci95 = (n >= 2).then(|| {
            let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t_975(n - 1) * (var / n as f64).sqrt()
        });
        Some(Summary {
            n,
            mean,
            ci95,
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max: samples.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// The interval's ends, `(mean − half-width, mean + half-width)` (the mean twice for one
    /// sample).
    pub fn interval(&self) -> (f64, f64) {
        let h = self.ci95.unwrap_or(0.0);
        (self.mean - h, self.mean + h)
    }

    /// `mean ± half-width` with `digits` decimals (just the mean for one sample).
    pub fn mean_ci(&self, digits: usize) -> String {
        match self.ci95 {
            Some(h) => format!("{:.digits$} ± {h:.digits$}", self.mean),
            None => format!("{:.digits$}", self.mean),
        }
    }

    /// `min–max` with `digits` decimals.
    pub fn range(&self, digits: usize) -> String {
        format!("{:.digits$}–{:.digits$}", self.min, self.max)
    }
}

/// Two-sided 95 % quantile of Student's t with 1 to 30 degrees of freedom.
const T_975: [f64; 30] = [
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
    2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687,
    2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
];

/// The 97.5th percentile of Student's t with `df` degrees of freedom (`df` ≥ 1).
pub fn t_975(df: usize) -> f64 {
    if let Some(&t) = T_975.get(df.max(1) - 1) {
        return t;
    }
    // Cornish-Fisher expansion around the normal quantile.
    let z: f64 = 1.959_963_985;
    let v = df as f64;
    z + (z.powi(3) + z) / (4.0 * v)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
}

/// The difference of two policies' means on one figure (`b − a`), with the 95 % interval of
/// the difference (Welch: unequal variances, Welch–Satterthwaite degrees of freedom).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// `mean(b) − mean(a)`.
    pub diff: f64,
    /// Half-width of its 95 % interval; `None` when either side has fewer than 2 samples.
    pub ci95: Option<f64>,
    /// Whether the interval excludes 0: the runs tell the two apart on this figure.
    pub decided: bool,
}

impl Difference {
    /// `b − a` over the samples of each; `None` if either is empty.
    pub fn of(a: &[f64], b: &[f64]) -> Option<Difference> {
        let (sa, sb) = (Summary::of(a)?, Summary::of(b)?);
        let var = |s: &[f64], m: f64| {
            s.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (s.len() - 1) as f64
        };
        let ci95 = (sa.n >= 2 && sb.n >= 2).then(|| {
            let (qa, qb) = (var(a, sa.mean) / sa.n as f64, var(b, sb.mean) / sb.n as f64);
            let se2 = qa + qb;
            if se2 == 0.0 {
                return 0.0;
            }
            let df = se2 * se2 / (qa * qa / (sa.n - 1) as f64 + qb * qb / (sb.n - 1) as f64);
            t_975(df.floor().max(1.0) as usize) * se2.sqrt()
        });
        let diff = sb.mean - sa.mean;
        Some(Difference {
            diff,
            ci95,
            decided: ci95.is_some_and(|h| diff.abs() > h),
        })
    }
}

/// A figure of a [`SimReport`]: its key in the JSON, its label in tables, its decimals and
/// how to read it (`None` when the run has no such figure, e.g. no slow server).
pub struct Figure {
    /// Key in the JSON (the report's field path).
    pub key: &'static str,
    /// Label in tables.
    pub label: &'static str,
    /// Decimals shown in tables.
    pub digits: usize,
    /// How to read it from a report.
    pub get: fn(&SimReport) -> Option<f64>,
}

/// A figure, in one line of [`FIGURES`].
const fn figure(
    key: &'static str,
    label: &'static str,
    digits: usize,
    get: fn(&SimReport) -> Option<f64>,
) -> Figure {
    Figure {
        key,
        label,
        digits,
        get,
    }
}

/// The figures summarised over seeds, in table order.
#[rustfmt::skip]
pub const FIGURES: [Figure; 20] = [
    figure("requests", "requests", 0, |r| Some(r.requests as f64)),
    figure("inflight_max_over_mean", "in-flight max/mean", 3, |r| Some(r.inflight_max_over_mean)),
    figure("inflight_cv", "in-flight CV", 3, |r| Some(r.inflight_cv)),
    figure("inflight_floor", "floor", 3, |r| Some(r.inflight_floor)),
    figure("rate_max_over_mean", "rate max/mean", 3, |r| Some(r.rate_max_over_mean)),
    figure("window_max_over_mean", "window max/mean", 3, |r| Some(r.window_max_over_mean)),
    figure("rate_memory_s", "rate memory s", 1, |r| r.rate_memory_s),
    figure("latency_ms.p50", "p50 ms", 2, |r| Some(r.latency_ms.p50)),
    figure("latency_ms.p99", "p99 ms", 2, |r| Some(r.latency_ms.p99)),
    figure("latency_ms.p999", "p99.9 ms", 2, |r| Some(r.latency_ms.p999)),
    figure("conns_per_server.min", "conns/server min", 1, |r| Some(r.conns_per_server.min)),
    figure("conns_per_server.max", "conns/server max", 1, |r| Some(r.conns_per_server.max)),
    figure("swaps_in_window", "swaps", 0, |r| Some(r.swaps_in_window as f64)),
    figure("failed", "failed", 0, |r| Some(r.failed as f64)),
    figure("slow.share", "slow share", 3, |r| r.slow.as_ref().map(|s| s.share)),
    figure("join.share_after_30s", "join share @30 s", 2,
           |r| r.join.as_ref().and_then(|j| j.share_after_30s)),
    figure("join.share_last_60s", "join share last 60 s", 2,
           |r| r.join.as_ref().map(|j| j.share_last_60s)),
    figure("join.settled_after_s", "join settled s", 0,
           |r| r.join.as_ref().and_then(|j| j.settled_after_s)),
    figure("leave.failed", "leave failed", 0, |r| r.leave.as_ref().map(|l| l.failed as f64)),
    figure("leave.drained_after_s", "leave drained s", 3,
           |r| r.leave.as_ref().and_then(|l| l.drained_after_s)),
];

/// One policy's figures over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// The policy.
    pub policy: &'static str,
    /// The seeds summarised.
    pub seeds: Vec<u64>,
    /// Each figure the runs have, by its key.
    pub figures: BTreeMap<&'static str, Summary>,
}

impl PolicySummary {
    /// The summary of `reports`, one run of `policy` per seed in `seeds`.
    pub fn of(policy: &'static str, seeds: Vec<u64>, reports: &[&SimReport]) -> Self {
        let figures = FIGURES
            .iter()
            .filter_map(|f| {
                let samples: Vec<f64> = reports.iter().filter_map(|r| (f.get)(r)).collect();
                Summary::of(&samples).map(|s| (f.key, s))
            })
            .collect();
        PolicySummary {
            policy,
            seeds,
            figures,
        }
    }
}

/// A text table of policy summaries: one row per policy and figure, `mean ± 95 %` and range.
pub fn table(summaries: &[PolicySummary]) -> String {
    let mut out = String::new();
    if let Some(first) = summaries.first() {
        let (lo, hi) = (
            first.seeds.iter().min().copied().unwrap_or(0),
            first.seeds.iter().max().copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "over {} seeds ({lo}..={hi}): mean ± half-width of the 95 % interval (Student t), min–max",
            first.seeds.len()
        );
    }
    let _ = writeln!(
        out,
        "{:<12} {:<21} {:>24} {:>25}",
        "policy", "metric", "mean ± 95 %", "min–max"
    );
    for s in summaries {
        for f in &FIGURES {
            let Some(sum) = s.figures.get(f.key) else {
                continue;
            };
            let _ = writeln!(
                out,
                "{:<12} {:<21} {:>24} {:>25}",
                s.policy,
                f.label,
                sum.mean_ci(f.digits),
                sum.range(f.digits)
            );
        }
    }
    out
}

/// A column of [`markdown`]: its header, the figure it shows, the factor from the figure's
/// unit to the column's, and its decimals (those of the documented tables).
struct Column {
    header: &'static str,
    key: &'static str,
    scale: f64,
    digits: usize,
}

/// A column of [`MARKDOWN_COLUMNS`], in one line.
const fn column(header: &'static str, key: &'static str, scale: f64, digits: usize) -> Column {
    Column {
        header,
        key,
        scale,
        digits,
    }
}

/// The columns of [`markdown`], in order. The figures only some runs have (a slow server, a
/// join, a leave) come last and appear only when a policy has them; `conns/server` is built
/// apart from its two figures.
#[rustfmt::skip]
const MARKDOWN_COLUMNS: [Column; 14] = [
    column("in-flight max/mean", "inflight_max_over_mean", 1.0, 2),
    column("in-flight CV", "inflight_cv", 1.0, 3),
    column("floor", "inflight_floor", 1.0, 2),
    column("rate max/mean", "rate_max_over_mean", 1.0, 3),
    column("1 s max/mean", "window_max_over_mean", 1.0, 2),
    column("p50 ms", "latency_ms.p50", 1.0, 1),
    column("p99 ms", "latency_ms.p99", 1.0, 1),
    column("p99.9 ms", "latency_ms.p999", 1.0, 1),
    column("slow share", "slow.share", 1.0, 3),
    column("join share @30 s", "join.share_after_30s", 1.0, 2),
    column("join share last 60 s", "join.share_last_60s", 1.0, 2),
    column("settled (s)", "join.settled_after_s", 1.0, 0),
    column("drained after (ms)", "leave.drained_after_s", 1e3, 1),
    column("failed", "leave.failed", 1.0, 1),
];

/// The first of [`MARKDOWN_COLUMNS`] that only some runs have.
const MARKDOWN_OPTIONAL: usize = 8;

/// A Markdown table of policy summaries, the shape of docs/balance.md's results tables: a
/// line saying the seeds, then one row per policy, each cell `mean ± half-width` of the
/// 95 % interval. `conns/server` is the mean fewest and most connections a server holds
/// (`–` for the routers, which hold none); `settled (s)` is over the seeds that settled,
/// with how many did when not all, and `never` when none did.
pub fn markdown(summaries: &[PolicySummary]) -> String {
    let mut out = String::new();
    let Some(first) = summaries.first() else {
        return out;
    };
    let seeds = first.seeds.len();
    let (lo, hi) = (
        first.seeds.iter().min().copied().unwrap_or(0),
        first.seeds.iter().max().copied().unwrap_or(0),
    );
    let _ = writeln!(
        out,
        "{seeds} seeds ({lo} to {hi}); each cell mean ± half-width of the 95 % interval (Student t)"
    );
    let _ = writeln!(out);
    let columns: Vec<&Column> = MARKDOWN_COLUMNS
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            *i < MARKDOWN_OPTIONAL || summaries.iter().any(|s| s.figures.contains_key(c.key))
        })
        .map(|(_, c)| c)
        .collect();
    let (common, optional) = columns.split_at(MARKDOWN_OPTIONAL);
    let headers: Vec<&str> = common
        .iter()
        .map(|c| c.header)
        .chain(["conns/server"])
        .chain(optional.iter().map(|c| c.header))
        .collect();
    let _ = writeln!(out, "| policy | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---{}|", "|---".repeat(headers.len()));
    for s in summaries {
        let cell = |c: &Column| match s.figures.get(c.key) {
            Some(sum) => {
                let scaled = Summary {
                    mean: sum.mean * c.scale,
                    ci95: sum.ci95.map(|h| h * c.scale),
                    min: sum.min * c.scale,
                    max: sum.max * c.scale,
                    ..*sum
                };
                let text = scaled.mean_ci(c.digits);
                if sum.n < seeds {
                    format!("{text} ({}/{seeds})", sum.n)
                } else {
                    text
                }
            }
            None if c.key == "join.settled_after_s"
                && s.figures.contains_key("join.share_last_60s") =>
            {
                "never".to_string()
            }
            None => "–".to_string(),
        };
        let conns = match (
            s.figures.get("conns_per_server.min"),
            s.figures.get("conns_per_server.max"),
        ) {
            (Some(min), Some(max)) if max.mean > 0.0 => {
                format!("{} – {}", min.mean_ci(0), max.mean_ci(0))
            }
            _ => "–".to_string(),
        };
        let cells: Vec<String> = common
            .iter()
            .map(|c| cell(c))
            .chain([conns])
            .chain(optional.iter().map(|c| cell(c)))
            .collect();
        let _ = writeln!(out, "| {} | {} |", s.policy, cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_is_decided_only_when_its_interval_excludes_zero() {
        let a = [1.00, 1.02, 0.98, 1.01, 0.99];
        let far = [1.20, 1.22, 1.18, 1.21, 1.19];
        let d = Difference::of(&a, &far).unwrap();
        assert!((d.diff - 0.2).abs() < 1e-9);
        assert!(d.decided);
        // Equal variances and sizes: the Welch interval is the pooled one, t(8) = 2.306.
        let se = (2.0 * 0.000_25 / 5.0_f64).sqrt();
        assert!((d.ci95.unwrap() - 2.306 * se).abs() < 1e-3, "{d:?}");
        let near = [1.01, 0.99, 1.03, 0.97, 1.00];
        assert!(!Difference::of(&a, &near).unwrap().decided);
        assert!(
            !Difference::of(&[1.0], &[2.0]).unwrap().decided,
            "one run each decides nothing"
        );
        assert!(Difference::of(&[], &[1.0]).is_none());
    }

    #[test]
    fn the_t_interval_of_known_samples() {
        // Mean 5, sample standard deviation 2.138..., n = 8: half-width t(7) · s / √8.
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("samples");
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        let sd = (32.0f64 / 7.0).sqrt();
        let h = s.ci95.expect("two samples or more");
        assert!((h - 2.3646 * sd / 8f64.sqrt()).abs() < 1e-12, "{h}");
        assert!((h - 1.7875).abs() < 1e-3, "{h}");
        let (lo, hi) = s.interval();
        assert!((lo - (5.0 - h)).abs() < 1e-12 && (hi - (5.0 + h)).abs() < 1e-12);
        // Two samples: t(1) = 12.706.
        let two = Summary::of(&[1.0, 3.0]).expect("samples");
        assert!((two.ci95.expect("interval") - 12.7062).abs() < 1e-9);
        assert_eq!(two.mean_ci(1), "2.0 ± 12.7");
        assert_eq!(two.range(1), "1.0–3.0");
    }

    #[test]
    fn one_sample_has_no_interval_and_none_has_no_summary() {
        let one = Summary::of(&[4.0]).expect("a sample");
        assert_eq!(one.ci95, None);
        assert_eq!(one.interval(), (4.0, 4.0));
        assert_eq!(one.mean_ci(2), "4.00");
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn the_t_quantile_beyond_the_table_approaches_the_normal() {
        assert_eq!(t_975(1), 12.7062);
        assert_eq!(t_975(30), 2.0423);
        // Exact values: t(40) = 2.0211, t(60) = 2.0003, t(120) = 1.9799.
        assert!((t_975(40) - 2.0211).abs() < 2e-4, "{}", t_975(40));
        assert!((t_975(60) - 2.0003).abs() < 2e-4, "{}", t_975(60));
        assert!((t_975(120) - 1.9799).abs() < 2e-4, "{}", t_975(120));
        assert!(t_975(31) < t_975(30));
    }
}
