//! `simulate`: a deterministic discrete-event simulator of Callosum's self-balancing, no
//! sockets, that compares the original Boxcar rules, the improved Callosum policy and the
//! classic baselines on the same workload.
//!
//! The model: S servers hand out lowest-first slots and serve requests with k workers each
//! (FIFO queue, exponential service time; one server can be made slower; `--no-queue` makes
//! every server a pure delay); C clients each run a rover (a random server every roving
//! interval, random phase) and a pool of at most `max_slots` connections; requests arrive as
//! one Poisson stream spread uniformly over clients. Under the Callosum policies a request
//! leases the lowest-slot idle connection of its client's pool and waits at the client if none
//! is idle; under the baselines the client picks a server per request. Zero network delay.
//! Everything is driven by seeded generators: the same configuration gives byte-identical
//! JSON. Metric definitions are in [`metrics`] and `docs/balance.md`.
//!
//! Why this shape: [`SimConfig`] is the plain description of one run and [`simulate`] the
//! library entry the tests call; [`SimulateArgs`] and [`run`] are the command-line face, which
//! runs several policies on the same configuration (in parallel threads) and prints a table,
//! JSON or an SVG plot.

pub mod client;
pub mod engine;
pub mod event;
pub mod metrics;
pub mod plot;
pub mod policy;
pub mod report;
pub mod router;
pub mod server;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use callosum_client::{PoolPolicy, SlowPenalty};
use serde::Serialize;

pub use engine::simulate;
pub use policy::{Policy, PoolRules};
pub use report::SimReport;

/// Why a simulation could not run or its results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The options describe a simulation that cannot run.
    #[error("invalid simulation: {0}")]
    Invalid(&'static str),
    /// No policy was asked for.
    #[error("no policy to simulate")]
    NoPolicy,
    /// Writing the table or the JSON failed.
    #[error("writing the results: {0}")]
    Io(#[from] std::io::Error),
    /// Serialising the JSON failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Drawing or writing the SVG plot failed.
    #[error("plotting to {path}: {message}")]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What plotters said.
        message: String,
    },
}

/// The options `simulate` and `balance` share, with the same meaning and defaults: the
/// cluster, its workload, and the events (a slow server, a join, a leave).
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Servers (S; K in `balance`). Default 4.
    #[arg(long, default_value_t = 4)]
    pub servers: usize,
    /// Clients (C), each with a rover and a pool (or a baseline router). Default 16.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Pool size per client (max_slots, P), connections, at most 64. Default 8.
    #[arg(long, default_value_t = 8)]
    pub max_slots: usize,
    /// Workers per server (k); requests beyond k queue FIFO. Default 4.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Mean service time, milliseconds (exponential). Default 10.
    #[arg(long, default_value_t = 10.0)]
    pub service_ms: f64,
    /// Offered load as a fraction of the capacity of the servers present at the start
    /// (Σ workers / (service time × slowdown)). Default 0.8.
    #[arg(long, default_value_t = 0.8)]
    pub load: f64,
    /// Interval between samples of instantaneous load, milliseconds. Default 10.
    #[arg(long, default_value_t = 10.0)]
    pub sample_ms: f64,
    /// Window for per-window request counts and plots, seconds. Default 1.
    #[arg(long, default_value_t = 1.0)]
    pub window_s: f64,
    /// Seed of every random stream (arrivals, service times, routing). Default 1.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Make this server (id) slower. Default none.
    #[arg(long)]
    pub slow_server: Option<usize>,
    /// Service-time multiplier of the slow server. Default 3.
    #[arg(long, default_value_t = 3.0)]
    pub slow_factor: f64,
    /// The last server joins this many seconds into the measured window (absent before).
    /// Default none.
    #[arg(long)]
    pub join_at_s: Option<f64>,
    /// Windows averaged when judging whether the joined server is within 10 % of fair.
    /// Default 5.
    #[arg(long, default_value_t = 5)]
    pub join_smooth_windows: usize,
    /// A server leaves this many seconds into the measured window. Default none.
    #[arg(long)]
    pub leave_at_s: Option<f64>,
    /// The server (id) that leaves. Default 0.
    #[arg(long, default_value_t = 0)]
    pub leave_server: usize,
}

/// Options of `callosum-loadgen simulate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// The cluster, the workload and the events (shared with `balance`).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Servers never queue: every request is served at once (a pure delay); `--workers`
    /// then only sets the capacity the load is relative to. Default off.
    #[arg(long)]
    pub no_queue: bool,
    /// Roving interval, milliseconds: each client's rover probes one random server this
    /// often. Default 1000.
    #[arg(long, default_value_t = 1000.0)]
    pub roving_interval_ms: f64,
    /// Warm-up, seconds of simulated time before measuring. Default 60.
    #[arg(long, default_value_t = 60.0)]
    pub warmup_s: f64,
    /// Measured window, seconds of simulated time. Default 300.
    #[arg(long, default_value_t = 300.0)]
    pub duration_s: f64,
    /// Policies to run, comma-separated. Default all.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Policy::ALL.to_vec())]
    pub policy: Vec<Policy>,
    /// The leaving server crashes (requests at it fail) instead of draining. Default off.
    #[arg(long)]
    pub crash: bool,
    /// Improved policy: maximum connection age, seconds (each connection's limit drawn in
    /// [age/2, 3·age/2)); 0 disables. Default 10.
    #[arg(long, default_value_t = 10.0)]
    pub max_age_s: f64,
    /// Improved policy: a rover connection with a slot equal to the pool's worst replaces it.
    /// Default true.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub accept_equal: bool,
    /// Improved policy: break ties between equal slots at random. Default true.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub random_ties: bool,
    /// Improved policy: lease the idle connection whose server has the fewest of this
    /// client's requests in flight, lowest slot among those. Default true.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub least_outstanding: bool,
    /// Improved policy: weight of a new response time in each connection's moving average;
    /// 0 disables the slow-connection penalty. Default 0.2.
    #[arg(long, default_value_t = 0.2)]
    pub latency_alpha: f32,
    /// Improved policy: a connection whose average response time is this many times the
    /// pool's mean counts as one more request in flight (ratio). Default 1.5.
    #[arg(long, default_value_t = 1.5)]
    pub slow_threshold: f32,
    /// Print JSON (deterministic for a seed) instead of a table. Default off.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of per-server load over time to this path. Default none.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Policies simulated at once (threads). Default 2.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// One simulation run, fully described (the same configuration gives the same report).
#[derive(Clone, Debug, Serialize)]
pub struct SimConfig {
    /// The routing policy.
    pub policy: Policy,
    /// Servers.
    pub servers: usize,
    /// Clients.
    pub clients: usize,
    /// Pool size per client.
    pub max_slots: usize,
    /// Workers per server.
    pub workers: u32,
    /// Servers never queue.
    pub no_queue: bool,
    /// Mean service time, ms.
    pub service_ms: f64,
    /// Offered load, fraction of the starting servers' capacity.
    pub load: f64,
    /// Roving interval, ms.
    pub roving_interval_ms: f64,
    /// Warm-up, s.
    pub warmup_s: f64,
    /// Measured window, s.
    pub duration_s: f64,
    /// Sample interval, ms.
    pub sample_ms: f64,
    /// Window, s.
    pub window_s: f64,
    /// Seed.
    pub seed: u64,
    /// The slow server, if any.
    pub slow_server: Option<usize>,
    /// Its service-time multiplier.
    pub slow_factor: f64,
    /// When the last server joins, s into the measured window.
    pub join_at_s: Option<f64>,
    /// Windows averaged when judging the joined server's share.
    pub join_smooth_windows: usize,
    /// When a server leaves, s into the measured window.
    pub leave_at_s: Option<f64>,
    /// Which server leaves.
    pub leave_server: usize,
    /// Whether it crashes rather than drains.
    pub crash: bool,
    /// Pool rules of the improved policy (the original always uses [`PoolRules::ORIGINAL`]).
    pub rules: PoolRules,
}

impl SimConfig {
    /// The configuration `args` describe, for `policy`.
    pub fn from_args(args: &SimulateArgs, policy: Policy) -> Self {
        // The improved rules as the client's policy, the maximum age settled for the roving
        // interval as the roving client settles it (at least 2 × max-slots intervals).
        let seconds = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX);
        let max_age = (args.max_age_s > 0.0).then(|| seconds(args.max_age_s));
        let roving = seconds(args.roving_interval_ms.max(0.0) / 1e3);
        let improved = PoolPolicy::original()
            .max_slots(args.cluster.max_slots)
            .max_age(max_age)
            .accept_equal(args.accept_equal)
            .random_tie_break(args.random_ties)
            .least_outstanding(args.least_outstanding)
            .slow_penalty((args.latency_alpha > 0.0).then(|| {
                SlowPenalty::default()
                    .alpha(args.latency_alpha)
                    .threshold(args.slow_threshold)
            }));
        SimConfig {
            policy,
            servers: args.cluster.servers,
            clients: args.cluster.clients,
            max_slots: args.cluster.max_slots,
            workers: args.cluster.workers,
            no_queue: args.no_queue,
            service_ms: args.cluster.service_ms,
            load: args.cluster.load,
            roving_interval_ms: args.roving_interval_ms,
            warmup_s: args.warmup_s,
            duration_s: args.duration_s,
            sample_ms: args.cluster.sample_ms,
            window_s: args.cluster.window_s,
            seed: args.cluster.seed,
            slow_server: args.cluster.slow_server,
            slow_factor: args.cluster.slow_factor,
            join_at_s: args.cluster.join_at_s,
            join_smooth_windows: args.cluster.join_smooth_windows,
            leave_at_s: args.cluster.leave_at_s,
            leave_server: args.cluster.leave_server,
            crash: args.crash,
            rules: PoolRules::of_policy(&improved, roving),
        }
    }

    /// Checks what the simulator cannot run.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.servers == 0 || self.clients == 0 || self.max_slots == 0 || self.workers == 0 {
            return Err(SimError::Invalid(
                "servers, clients, max-slots and workers must be at least 1",
            ));
        }
        if self.max_slots > 64 {
            return Err(SimError::Invalid("max-slots must be at most 64"));
        }
        if self.join_at_s.is_some() && self.servers < 2 {
            return Err(SimError::Invalid("a join needs at least 2 servers"));
        }
        let positive = [
            self.service_ms,
            self.roving_interval_ms,
            self.sample_ms,
            self.window_s,
        ];
        if positive.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
            return Err(SimError::Invalid(
                "service-ms, roving-interval-ms, sample-ms and window-s must be positive",
            ));
        }
        if !(self.load >= 0.0 && self.load.is_finite()) || self.slow_factor <= 0.0 {
            return Err(SimError::Invalid(
                "load must be non-negative and slow-factor positive",
            ));
        }
        if self.warmup_s < 0.0 || self.duration_s <= 0.0 {
            return Err(SimError::Invalid(
                "warmup-s must be non-negative and duration-s positive",
            ));
        }
        Ok(())
    }
}

/// What `--json` prints: the shared configuration and one report per policy.
#[derive(Serialize)]
struct Output<'a> {
    config: &'a SimConfig,
    runs: &'a [SimReport],
}

/// Runs every requested policy on the configuration `args` describe and writes a table (or
/// JSON) to `out`, wall time and events/s to stderr, and the plot if asked.
pub fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<(), SimError> {
    let configs: Vec<SimConfig> = args
        .policy
        .iter()
        .map(|&p| SimConfig::from_args(args, p))
        .collect();
    for c in &configs {
        c.validate()?;
    }
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<(SimReport, f64)>>> = Mutex::new(vec![None; configs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..args.threads.clamp(1, configs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(cfg) = configs.get(i) else { break };
                    let t0 = Instant::now();
                    let report = simulate(cfg);
                    let wall = t0.elapsed().as_secs_f64();
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some((report, wall));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut reports = Vec::with_capacity(results.len());
    for (report, wall) in results.into_iter().flatten() {
        eprintln!(
            "simulate: {:<12} {:>12} events in {:>7.2} s wall = {:>6.2} M events/s",
            report.policy,
            report.events,
            wall,
            report.events as f64 / wall.max(1e-9) / 1e6
        );
        reports.push(report);
    }
    if args.json {
        let base = configs.first().ok_or(SimError::NoPolicy)?;
        serde_json::to_writer_pretty(
            &mut *out,
            &Output {
                config: base,
                runs: &reports,
            },
        )?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::table(&reports))?;
        writeln!(
            out,
            "(inf.m/m, inf.cv: instantaneous load max/mean and CV; floor: ⌈N/S⌉/(N/S), the best \
             any policy can do; rate.mm: long-run rate max/mean; win.mm: per-{} s window max/mean)",
            args.cluster.window_s
        )?;
    }
    if let Some(path) = &args.svg {
        plot::plot(
            path,
            &reports,
            args.cluster.window_s,
            args.cluster.servers <= engine::PLOT_EACH_MAX,
        )?;
    }
    Ok(())
}
