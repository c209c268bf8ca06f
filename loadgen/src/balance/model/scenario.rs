//! The scenario both the simulator and the live harness run: the cluster (servers, clients,
//! pools, workers, service time, load), its events (a slow server, a join, a leave), how long
//! it runs, and the one plain description of a run, [`SimConfig`], that both build from their
//! options, so "the same configuration" is the same value.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::balance::model::{Policy, PoolRules};
use crate::cli::values::{at_least_one, duration, non_negative, positive, positive_duration};

/// Why a simulation could not run or its results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The options describe a simulation that cannot run.
    #[error("invalid simulation: {0}")]
    Invalid(&'static str),
    /// The options describe a simulation too large for one machine: `what` would come to
    /// about `asked`, and the simulator takes at most `limit`.
    #[error(
        "invalid simulation: {what} would come to about {asked:.3e}, at most {limit:.0e}; {hint}"
    )]
    TooLarge {
        /// What is counted.
        what: &'static str,
        /// How much the options ask for.
        asked: f64,
        /// The most the simulator takes.
        limit: f64,
        /// Which options shrink it.
        hint: &'static str,
    },
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

/// Largest pool the simulator runs (`--pool-size`, the sweep's `--pool-sizes`): ten times the
/// client's default of 100 places. Memory grows with clients × pool size (a run of
/// 1,000 clients of 100 peaked at 48 MB on two workers).
pub const MAX_POOL_SIZE: u64 = 1024;

/// Longest simulated time any option may name, s (about three years; the simulator's clock
/// counts nanoseconds in a `u64`, which lasts 584 years).
pub const MAX_SIM_SECONDS: f64 = 1e8;

/// Most events one simulation may process (about nine hours at the simulator's 3 M events/s):
/// beyond it a mistyped option (a service time in ns, a load of 1,000) would run for days.
pub const MAX_EVENTS: f64 = 1e11;

/// Most pooled connections (clients × pool size) one simulation holds: about 2 GB at the
/// measured ~480 B each.
pub const MAX_CONNECTIONS: f64 = 4e6;

/// Most servers one simulation runs.
pub const MAX_SERVERS: usize = 1_000_000;

/// Most per-server window records (windows × servers) one simulation keeps, about 1 GB.
pub const MAX_WINDOW_RECORDS: f64 = 2e8;

/// Most requests an overloaded simulation may leave waiting (arrivals beyond the servers'
/// capacity over the whole run), each of which the simulator holds in memory.
pub const MAX_BACKLOG: f64 = 5e7;

/// The options `simulate` and `balance` share, with the same meaning and defaults: the
/// cluster, its workload, the events (a slow server, a join, a leave) and the outputs.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Servers (S).
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub servers: usize,
    /// Clients (C), each with a rover and a pool (or a baseline router).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub clients: usize,
    /// Connections in each client's pool (P, the pool's max_slots), at most 1,024.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=MAX_POOL_SIZE))]
    pub pool_size: u64,
    /// Workers per server (k); requests beyond k queue FIFO.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub server_workers: u32,
    /// Mean service time (exponential).
    #[arg(long, default_value = "10ms", value_parser = positive_duration)]
    pub service_time: Duration,
    /// Offered load as a share of the capacity of the servers present at the start
    /// (Σ workers / (service time × slowdown)).
    #[arg(long, default_value_t = 0.8, value_parser = non_negative)]
    pub load: f64,
    /// Interval between samples of instantaneous load.
    #[arg(long, default_value = "10ms", value_parser = positive_duration)]
    pub sample_interval: Duration,
    /// Window of the per-window request counts and plots.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub window: Duration,
    /// Seed of every random stream (arrivals, service times, routing).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Make this server (id) slower.
    #[arg(long, value_name = "ID")]
    pub slow_server: Option<usize>,
    /// Service-time multiplier of the slow server.
    #[arg(long, default_value_t = 3.0, value_parser = positive)]
    pub slow_factor: f64,
    /// The last server joins this long into the measured window (absent before).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub join_at: Option<Duration>,
    /// Windows averaged when judging whether the joined server is within 10 % of fair.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub join_smooth_windows: usize,
    /// A server leaves this long into the measured window.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub leave_at: Option<Duration>,
    /// The server (id) that leaves.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub leave_server: usize,
    /// Write the results as JSON (deterministic for a seed) to PATH; - for stdout.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of per-server load over time to PATH.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
}

impl ClusterArgs {
    /// Whether the table is written: always, unless the JSON goes to stdout.
    pub fn table_wanted(&self) -> bool {
        !self.json.as_deref().is_some_and(crate::cli::is_stdout)
    }
}

/// The distribution of service demands; every one has the mean `--service-time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceDist {
    /// Exponential (coefficient of variation 1).
    Exp,
    /// Lognormal with shape σ (`--service-sigma`): heavier tail as σ grows.
    Lognormal,
    /// Pareto with tail index α > 1 (`--service-alpha`): infinite variance for α ≤ 2.
    Pareto,
}

/// The richer model's settings, the simulator's alone (the live harness on loopback cannot
/// add a network delay or make a server fail on purpose). Their defaults are the plain model:
/// no network delay, free connects, exponential service, no failing server.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelOptions {
    /// Network round trip added to every request (the whole of it on the way back: a server
    /// sees the request at once and its response reaches the client this much later) and
    /// to every connect (the connection joins the pool this much after the rover dials), ms.
    pub rtt_ms: f64,
    /// Server work per new connection, ms: the accept and handshake occupy one of the
    /// server's workers (queued FIFO with the requests) for this long, and the connection
    /// reaches the client only once it is done (plus the round trip).
    pub connect_cost_ms: f64,
    /// The distribution of service demands.
    pub service_dist: ServiceDist,
    /// Its shape: σ for lognormal, α for Pareto (unused for exponential).
    pub service_shape: f64,
    /// The server (id) that answers some of its requests at once with an error.
    pub fail_fast_server: Option<usize>,
    /// The share of that server's requests that fail.
    pub fail_fast_share: f64,
    /// How long a failing request takes at that server (no worker held), ms.
    pub fail_fast_ms: f64,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            rtt_ms: 0.0,
            connect_cost_ms: 0.0,
            service_dist: ServiceDist::Exp,
            service_shape: 1.0,
            fail_fast_server: None,
            fail_fast_share: 1.0,
            fail_fast_ms: 0.1,
        }
    }
}

/// How long a scenario runs: each command has its own defaults (a simulation measures
/// minutes of simulated time, a live run seconds).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Roving interval.
    pub roving_interval: Duration,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
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
    /// The richer model (network delay, connect cost, service distribution, a fail-fast
    /// server); the plain model unless `simulate` is told otherwise.
    #[serde(flatten)]
    pub model: ModelOptions,
}

impl SimConfig {
    /// The run of `policy` on `cluster` with `timing`; `rules` are the improved policy's
    /// (the original always follows [`PoolRules::ORIGINAL`]).
    pub fn new(
        cluster: &ClusterArgs,
        timing: Timing,
        policy: Policy,
        rules: PoolRules,
        no_queue: bool,
        crash: bool,
    ) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        SimConfig {
            policy,
            servers: cluster.servers,
            clients: cluster.clients,
            max_slots: cluster.pool_size as usize,
            workers: cluster.server_workers,
            no_queue,
            service_ms: ms(cluster.service_time),
            load: cluster.load,
            roving_interval_ms: ms(timing.roving_interval),
            warmup_s: timing.warmup.as_secs_f64(),
            duration_s: timing.duration.as_secs_f64(),
            sample_ms: ms(cluster.sample_interval),
            window_s: cluster.window.as_secs_f64(),
            seed: cluster.seed,
            slow_server: cluster.slow_server,
            slow_factor: cluster.slow_factor,
            join_at_s: cluster.join_at.map(|d| d.as_secs_f64()),
            join_smooth_windows: cluster.join_smooth_windows,
            leave_at_s: cluster.leave_at.map(|d| d.as_secs_f64()),
            leave_server: cluster.leave_server,
            crash,
            rules,
            model: ModelOptions::default(),
        }
    }

    /// Checks what the simulator cannot run.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.servers == 0 || self.clients == 0 || self.max_slots == 0 || self.workers == 0 {
            return Err(SimError::Invalid(
                "servers, clients, pool-size and server-workers must be at least 1",
            ));
        }
        if self.max_slots > MAX_POOL_SIZE as usize {
            return Err(SimError::Invalid("pool-size must be at most 1024"));
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
                "service-time, roving-interval, sample-interval and window must be positive",
            ));
        }
        if !(self.load >= 0.0 && self.load.is_finite()) || self.slow_factor <= 0.0 {
            return Err(SimError::Invalid(
                "load must be non-negative and slow-factor positive",
            ));
        }
        let m = &self.model;
        let non_negative = [m.rtt_ms, m.connect_cost_ms, m.fail_fast_ms];
        if non_negative.iter().any(|v| !(*v >= 0.0 && v.is_finite())) {
            return Err(SimError::Invalid(
                "rtt, connect-cost and fail-fast-time must be non-negative",
            ));
        }
        if !(0.0..=1.0).contains(&m.fail_fast_share) {
            return Err(SimError::Invalid("fail-fast-share must be in [0, 1]"));
        }
        match m.service_dist {
            ServiceDist::Lognormal if !(m.service_shape > 0.0 && m.service_shape < 10.0) => {
                return Err(SimError::Invalid("service-sigma must be in (0, 10)"));
            }
            ServiceDist::Pareto if !(m.service_shape > 1.0 && m.service_shape.is_finite()) => {
                return Err(SimError::Invalid(
                    "service-alpha must be above 1 (a finite mean)",
                ));
            }
            _ => {}
        }
        if self.warmup_s < 0.0 || self.duration_s <= 0.0 {
            return Err(SimError::Invalid(
                "warmup must be non-negative and duration positive",
            ));
        }
        if !self.times_within(MAX_SIM_SECONDS) {
            return Err(SimError::Invalid(
                "every time (and warmup + duration) must be finite and at most 1e8 s",
            ));
        }
        if self.join_at_s.is_some_and(|t| t >= self.duration_s)
            || self.leave_at_s.is_some_and(|t| t >= self.duration_s)
        {
            return Err(SimError::Invalid(
                "join-at and leave-at must fall inside the measured window (below --duration)",
            ));
        }
        if self.join_at_s.is_some() && self.leave_at_s.is_some() {
            return Err(SimError::Invalid(
                "a run either joins or leaves a server, not both",
            ));
        }
        if self.leave_at_s.is_some() && self.servers < 2 {
            return Err(SimError::Invalid("a leave needs at least 2 servers"));
        }
        let ids = [
            self.slow_server,
            self.leave_at_s.map(|_| self.leave_server),
            self.model.fail_fast_server,
        ];
        if ids.iter().flatten().any(|&id| id >= self.servers) {
            return Err(SimError::Invalid(
                "slow-server, leave-server and fail-fast-server must be server ids below --servers",
            ));
        }
        self.check_size()
    }

    /// Whether every time the options give (and warm-up plus window) is finite,
    /// non-negative and at most `limit` seconds.
    pub fn times_within(&self, limit: f64) -> bool {
        let times = [
            Some(self.warmup_s),
            Some(self.duration_s),
            Some(self.warmup_s + self.duration_s),
            Some(self.service_ms / 1e3 * self.slow_factor),
            Some(self.roving_interval_ms / 1e3),
            Some(self.sample_ms / 1e3),
            Some(self.window_s),
            self.join_at_s,
            self.leave_at_s,
        ];
        times
            .iter()
            .flatten()
            .all(|t| t.is_finite() && (0.0..=limit).contains(t))
    }

    /// Checks that the run fits one machine's memory and a working day: the bounds above.
    fn check_size(&self) -> Result<(), SimError> {
        let too_large = |what, asked: f64, limit: f64, hint| {
            if asked > limit {
                Err(SimError::TooLarge {
                    what,
                    asked,
                    limit,
                    hint,
                })
            } else {
                Ok(())
            }
        };
        if self.servers > MAX_SERVERS {
            return Err(SimError::Invalid("servers must be at most 1,000,000"));
        }
        too_large(
            "clients × pool-size",
            self.clients as f64 * self.max_slots as f64,
            MAX_CONNECTIONS,
            "lower --clients or --pool-size",
        )?;
        let servers = self.servers as f64;
        too_large(
            "load samples × servers",
            self.duration_s * 1e3 / self.sample_ms * servers,
            MAX_EVENTS,
            "raise --sample-interval or lower --duration",
        )?;
        too_large(
            "windows × servers",
            self.duration_s / self.window_s * servers,
            MAX_WINDOW_RECORDS,
            "raise --window or lower --duration",
        )?;
        too_large(
            "events",
            self.estimated_events(),
            MAX_EVENTS,
            "lower --load, --servers, --warmup or --duration, or raise --service-time or \
             --roving-interval",
        )?;
        // A join or a leave leaves one server fewer for part of the run: count it out.
        let serving = if self.join_at_s.is_some() || self.leave_at_s.is_some() {
            servers - 1.0
        } else {
            servers
        };
        let capacity = serving * self.workers as f64 / (self.service_ms / 1e3);
        let arrivals = self.nominal_rate();
        too_large(
            "requests waiting beyond capacity",
            (arrivals - capacity).max(0.0) * (self.warmup_s + self.duration_s),
            MAX_BACKLOG,
            "lower --load (above 1 the queues grow for the whole run)",
        )
    }

    /// Requests offered per second, nominally: the load times every server's capacity at the
    /// mean service time (the engines refine it for a slow or a joining server).
    pub fn nominal_rate(&self) -> f64 {
        self.load * self.servers as f64 * self.workers as f64 / (self.service_ms / 1e3)
    }

    /// Roughly how many events a simulation of this configuration processes: arrivals and
    /// completions over warm-up and window, rover ticks, load samples.
    pub fn estimated_events(&self) -> f64 {
        let total_s = self.warmup_s + self.duration_s;
        let rate = self.nominal_rate();
        let rovers = self.clients as f64 / (self.roving_interval_ms / 1e3);
        total_s * (2.0 * rate + rovers) + self.duration_s * 1e3 / self.sample_ms
    }
}

/// Writes `doc` as pretty JSON to `path` (`-`: stdout), if a path is given.
pub fn write_json(path: Option<&std::path::Path>, doc: &impl Serialize) -> Result<(), SimError> {
    let Some(path) = path else {
        return Ok(());
    };
    crate::cli::write_to(path, |out| {
        serde_json::to_writer_pretty(&mut *out, doc)?;
        writeln!(out)
    })?;
    Ok(())
}
