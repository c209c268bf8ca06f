//! `balance`: the live counterpart of [`simulate`](crate::balance::simulation). K real
//! `callosum-server` instances on loopback and C clients built from `callosum-client` run the
//! same workload as the simulator (Poisson requests at a fraction of the servers' capacity,
//! exponential service at k workers per server, one server optionally slower, one joining or
//! leaving mid-run), every policy one after the other on fresh servers, and the same metrics
//! are computed from the servers' real counters; then the simulator runs the same
//! configuration and the two are put side by side.
//!
//! - [`server`]: the servers' request handler (k workers, FIFO queue, counters).
//! - [`client`]: roving clients for `original`/`improved`, routers for the baselines.
//! - [`engine`]: one live run: arrivals, sampler, join/leave, report.
//! - [`compare`]: the live-versus-simulated table and its tolerance.
//!
//! Why this shape: the live run fills the simulator's own [`Metrics`](crate::balance::metrics)
//! and builds the simulator's [`SimReport`], so both report the
//! same figures by one definition, and tables, JSON and the SVG plot reuse the same code.
//! [`BalanceArgs`] shares [`ClusterArgs`] with `simulate`; its own flags have defaults scaled
//! so a run converges in seconds (100 ms roving interval, 5 s warm-up, 20 s measured). Both
//! build one [`SimConfig`] through [`SimConfig::new`]. The improved policy is
//! `callosum_client::PoolPolicy::improved()`, its maximum age settled for the roving interval
//! as the roving client settles it. `jsq-oracle` and `--crash` have no live counterpart (no
//! client knows every queue; a leaving server drains).

pub mod client;
pub mod compare;
pub mod engine;
pub mod server;

use std::io::Write;
use std::time::Duration;

use callosum_client::PoolPolicy;
use serde::Serialize;

use crate::balance::report::summary::{self, Difference, FIGURES, PolicySummary, Summary};

use crate::balance::{ClusterArgs, Policy, PoolRules, SimConfig, SimError, SimReport, Timing};
use crate::cli::values::{at_least_one, duration, positive_duration};
pub use engine::{LiveError, LiveReport, run_live};

/// The longest time any option may give, seconds (a day).
const MAX_SECONDS: f64 = 86_400.0;

/// The shortest mean service time a live server can keep: it serves by sleeping on tokio's
/// timer, which ticks every millisecond, so shorter means are never delivered.
const MIN_SERVICE_MS: f64 = 1.0;

/// The highest offered load a live run takes: above 1 the queues grow for the whole run, and
/// far above it the arrivals outrun what one machine can spawn.
const MAX_LOAD: f64 = 2.0;

/// The most requests per second a live run offers (load × servers × workers / service
/// time): one process spawns a task per request and answers it over loopback.
const MAX_RATE: f64 = 50_000.0;

/// The most live servers: each is a thread with its own io_uring on this machine.
const MAX_SERVERS: usize = 256;

/// Descriptors a live server uses beside its connections (listener, io_uring, eventfds).
const FDS_PER_SERVER: u64 = 8;

/// Descriptors kept free for everything else (the client runtime, files, stdio).
const RESERVE_FDS: u64 = 256;

/// Why a live balance run could not run or its results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// The options describe a run that cannot happen live.
    #[error("invalid balance run: {0}")]
    Invalid(String),
    /// The configuration the simulator would refuse, or the plot failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// A policy's live run failed.
    #[error("live run of {policy}: {source}")]
    Live {
        /// The policy.
        policy: &'static str,
        /// What failed.
        source: LiveError,
    },
    /// No policy was asked for.
    #[error("no policy to run")]
    NoPolicy,
    /// Writing the tables failed.
    #[error("writing the results: {0}")]
    Io(#[from] std::io::Error),
    /// Serialising the JSON failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Options of `callosum-loadgen balance`.
#[derive(Clone, Debug, clap::Args)]
pub struct BalanceArgs {
    /// The cluster, the workload, the events and the outputs (as `simulate` takes them).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Roving interval (short, so a run converges in seconds).
    #[arg(long, default_value = "100ms", value_parser = positive_duration)]
    pub roving_interval: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub warmup: Duration,
    /// Measured window.
    #[arg(short = 'z', long, default_value = "20s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Policies to run, comma-separated (those with a live counterpart).
    #[arg(long, value_delimiter = ',', value_parser = live_policy,
          default_value = "original,improved,random,round-robin,p2c,p2c-peak-ewma,least-request")]
    pub policy: Vec<Policy>,
    /// Worker threads of the clients' tokio runtime (this tool's threads).
    #[arg(short, long, default_value_t = 2, value_parser = at_least_one)]
    pub workers: usize,
    /// Seeds the simulator runs for the comparison (seed, seed+1, ...); 0 skips it.
    #[arg(long, default_value_t = 5)]
    pub sim_seeds: u64,
    /// Live runs of each policy, with seeds seed, seed+1, …, the policies interleaved run by
    /// run so a drifting machine weighs on all alike; with more than 1, each figure's mean
    /// and 95 % interval over the runs, and improved against original with the 95 % interval
    /// of each difference.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub repeat: usize,
}

/// A policy with a live counterpart, by name.
fn live_policy(s: &str) -> Result<Policy, String> {
    let policy = <Policy as clap::ValueEnum>::from_str(s, false)?;
    if policy.runs_live() {
        Ok(policy)
    } else {
        Err(format!(
            "{s} has no live counterpart (no client knows every queue); live policies: {}",
            Policy::ALL
                .iter()
                .filter(|p| p.runs_live())
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

impl BalanceArgs {
    /// The scenario's timing.
    pub fn timing(&self) -> Timing {
        Timing {
            roving_interval: self.roving_interval,
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    /// The run of `policy` as a [`SimConfig`], checked for what the live run cannot do: the
    /// improved rules at the client's defaults, with the maximum age the client's improved
    /// policy uses at this roving interval and pool size.
    pub fn config(&self, policy: Policy) -> Result<SimConfig, BalanceError> {
        let improved = PoolPolicy::improved().max_slots(self.cluster.pool_size as usize);
        let rules = PoolRules::of_policy(&improved, self.roving_interval);
        let cfg = SimConfig::new(&self.cluster, self.timing(), policy, rules, false, false);
        cfg.validate()?;
        if !policy.runs_live() {
            return Err(BalanceError::Invalid(format!(
                "{} has no live counterpart (no client knows every queue)",
                policy.name()
            )));
        }
        if cfg.servers > MAX_SERVERS {
            return Err(BalanceError::Invalid(format!(
                "at most {MAX_SERVERS} live servers (each is a thread with its own io_uring)"
            )));
        }
        if cfg.service_ms < MIN_SERVICE_MS {
            return Err(BalanceError::Invalid(format!(
                "service-time must be at least {MIN_SERVICE_MS} ms live (servers sleep on a 1 ms timer)"
            )));
        }
        if cfg.load > MAX_LOAD {
            return Err(BalanceError::Invalid(format!(
                "load must be at most {MAX_LOAD} live"
            )));
        }
        let rate = cfg.nominal_rate();
        if rate > MAX_RATE {
            return Err(BalanceError::Invalid(format!(
                "the options offer {rate:.0} requests/s, at most {MAX_RATE:.0} live: lower --load, \
                 --servers or --server-workers, or raise --service-time"
            )));
        }
        // Both ends of every pooled connection live in this process.
        let needed = 2 * cfg.clients as u64 * cfg.max_slots as u64
            + FDS_PER_SERVER * cfg.servers as u64
            + RESERVE_FDS;
        let limit = callosum_server::raise_nofile_limit()
            .map_err(|e| BalanceError::Invalid(format!("RLIMIT_NOFILE: {e}")))?;
        if needed > limit {
            return Err(BalanceError::Invalid(format!(
                "{} clients × {} pool places need about {needed} file descriptors in this \
                 process (both ends of each connection), above its limit of {limit}: lower \
                 --clients or --pool-size",
                cfg.clients, cfg.max_slots
            )));
        }
        // Every time becomes a `Duration`: finite, and at most a day.
        if !cfg.times_within(MAX_SECONDS) {
            return Err(BalanceError::Invalid(format!(
                "every time must be finite, non-negative and at most {MAX_SECONDS} s"
            )));
        }
        Ok(cfg)
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Output<'a> {
    config: &'a SimConfig,
    /// The first live run of each policy.
    live: &'a [LiveReport],
    simulated: &'a [SimReport],
    comparison: &'a [compare::Row],
    /// `--repeat` above 1: every live run of each policy, their summary, and improved
    /// against original.
    #[serde(skip_serializing_if = "Option::is_none")]
    repeated: Option<&'a Repeated<'a>>,
}

/// The live runs of `--repeat`, summarised.
#[derive(Serialize)]
struct Repeated<'a> {
    runs: &'a [Vec<LiveReport>],
    summary: Vec<PolicySummary>,
    improved_vs_original: Vec<FigureDifference>,
}

/// Improved against original on one figure, over the repeated live runs.
#[derive(Serialize)]
pub struct FigureDifference {
    /// The figure's key (as in the JSON reports).
    pub figure: &'static str,
    /// Its label in tables.
    pub label: &'static str,
    /// Original's mean over the runs.
    pub original: f64,
    /// Improved's mean over the runs.
    pub improved: f64,
    /// Improved − original, with its 95 % interval.
    pub difference: Difference,
}

/// Improved against original on every figure both have, over repeated runs.
pub fn improved_vs_original(
    original: &[&SimReport],
    improved: &[&SimReport],
) -> Vec<FigureDifference> {
    FIGURES
        .iter()
        .filter_map(|f| {
            let a: Vec<f64> = original.iter().filter_map(|r| (f.get)(r)).collect();
            let b: Vec<f64> = improved.iter().filter_map(|r| (f.get)(r)).collect();
            let difference = Difference::of(&a, &b)?;
            Some(FigureDifference {
                figure: f.key,
                label: f.label,
                original: Summary::of(&a)?.mean,
                improved: Summary::of(&b)?.mean,
                difference,
            })
        })
        .collect()
}

/// The table of [`improved_vs_original`].
pub fn differences_table(rows: &[FigureDifference], runs: usize) -> String {
    let mut out = format!(
        "improved − original over {runs} live runs each (95 % interval of the difference, Welch):\n\
         {:<22} {:>10} {:>10} {:>22}  decided\n",
        "figure", "original", "improved", "difference ± 95 %"
    );
    for r in rows {
        let half = r
            .difference
            .ci95
            .map_or("-".to_owned(), |h| format!("{h:.4}"));
        out.push_str(&format!(
            "{:<22} {:>10.4} {:>10.4} {:>13.4} ± {:>6}  {}\n",
            r.label,
            r.original,
            r.improved,
            r.difference.diff,
            half,
            if r.difference.decided { "yes" } else { "no" }
        ));
    }
    out
}

/// Runs every requested policy live, then the simulator on the same configuration, and writes
/// the tables (or JSON) to `out` and the plot if asked.
pub fn run(args: &BalanceArgs, out: &mut dyn Write) -> Result<(), BalanceError> {
    let configs = args
        .policy
        .iter()
        .map(|&p| args.config(p))
        .collect::<Result<Vec<_>, _>>()?;
    // runs[p][k]: policy p's run k, the policies interleaved run by run.
    let mut runs: Vec<Vec<LiveReport>> = configs.iter().map(|_| Vec::new()).collect();
    for k in 0..args.repeat {
        for (cfg, mine) in configs.iter().zip(&mut runs) {
            let cfg = SimConfig {
                seed: cfg.seed.wrapping_add(k as u64),
                ..cfg.clone()
            };
            let t0 = std::time::Instant::now();
            let report = run_live(&cfg, args.workers).map_err(|source| BalanceError::Live {
                policy: cfg.policy.name(),
                source,
            })?;
            eprintln!(
                "balance: {:<12} run {}/{} (seed {}): {:>8} requests live in {:>6.1} s wall",
                report.report.policy,
                k + 1,
                args.repeat,
                cfg.seed,
                report.report.requests,
                t0.elapsed().as_secs_f64()
            );
            mine.push(report);
        }
    }
    let live: Vec<LiveReport> = runs.iter().filter_map(|r| r.first().cloned()).collect();
    let repeated = (args.repeat > 1).then(|| {
        let reports = |p: usize| runs[p].iter().map(|l| &l.report).collect::<Vec<_>>();
        let seeds: Vec<u64> = (0..args.repeat as u64)
            .map(|k| args.cluster.seed.wrapping_add(k))
            .collect();
        let position = |policy| configs.iter().position(|c| c.policy == policy);
        Repeated {
            runs: &runs,
            summary: (0..configs.len())
                .map(|p| PolicySummary::of(configs[p].policy.name(), seeds.clone(), &reports(p)))
                .collect(),
            improved_vs_original: match (position(Policy::Original), position(Policy::Improved)) {
                (Some(o), Some(i)) => improved_vs_original(&reports(o), &reports(i)),
                _ => Vec::new(),
            },
        }
    });
    let sims = compare::simulate_seeds(&configs, args.sim_seeds, args.workers);
    let rows = compare::rows(&live, &sims);
    let first: Vec<SimReport> = sims.iter().filter_map(|s| s.first().cloned()).collect();
    let base = configs.first().ok_or(BalanceError::NoPolicy)?;
    crate::balance::model::write_json(
        args.cluster.json.as_deref(),
        &Output {
            config: base,
            live: &live,
            simulated: &first,
            comparison: &rows,
            repeated: repeated.as_ref(),
        },
    )?;
    if let (true, Some(r)) = (args.cluster.table_wanted(), &repeated) {
        writeln!(out, "live, {} runs of each policy:", args.repeat)?;
        write!(out, "{}", summary::table(&r.summary))?;
        if !r.improved_vs_original.is_empty() {
            writeln!(out)?;
            write!(
                out,
                "{}",
                differences_table(&r.improved_vs_original, args.repeat)
            )?;
        }
        writeln!(out, "\nthe first run of each policy:")?;
    }
    if args.cluster.table_wanted() {
        let reports: Vec<SimReport> = live.iter().map(|l| l.report.clone()).collect();
        writeln!(out, "live:")?;
        write!(out, "{}", crate::balance::report::table(&reports))?;
        for l in &live {
            writeln!(
                out,
                "{:<12} live: service {:.2} ms measured (asked {:.2}), {} late samples, {} connections left open after close",
                l.report.policy,
                l.service_ms_measured,
                args.cluster.service_time.as_secs_f64() * 1e3,
                l.late_samples,
                l.conns_open_after_close
            )?;
        }
        if !first.is_empty() {
            writeln!(
                out,
                "\nsimulated (same configuration, seed {}):",
                args.cluster.seed
            )?;
            write!(out, "{}", crate::balance::report::table(&first))?;
            writeln!(out, "\n{}", compare::table(&rows, args.sim_seeds))?;
        }
    }
    if let Some(path) = &args.cluster.svg {
        let reports: Vec<SimReport> = live.iter().map(|l| l.report.clone()).collect();
        crate::balance::report::plot::plot(
            path,
            &reports,
            args.cluster.window.as_secs_f64(),
            args.cluster.servers <= crate::balance::simulation::engine::PLOT_EACH_MAX,
        )?;
    }
    Ok(())
}
