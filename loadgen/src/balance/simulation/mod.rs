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
//! is idle; under the baselines the client picks a server per request. By default there is
//! no network delay, connects are free and service is exponential; the richer model
//! ([`ModelOptions`]: `--rtt`, `--connect-cost`, `--service-dist`, `--fail-fast-server`)
//! adds a round trip to every request and connect, server work per connect, heavier-tailed
//! service, and a server that answers errors at once.
//! Everything is driven by seeded generators: the same configuration gives byte-identical
//! JSON. Metric definitions are in [`metrics`](crate::balance::metrics) and `docs/balance.md`.
//!
//! Why this shape: [`SimConfig`] is the plain description of one run and [`simulate`] the
//! library entry the tests call; [`SimulateArgs`] and [`run`] are the command-line face, which
//! runs several policies on the same configuration, over one seed or several ([`jobs`]: a
//! work queue over (policy, seed) on `--workers` threads), and prints a table, JSON, a
//! Markdown table (the shape of docs/balance.md's) or an SVG plot; over several seeds, each
//! figure's mean, 95 % interval and range ([`summary`]),
//! the per-seed reports kept in the JSON.

pub mod client;
pub mod engine;
pub mod event;
pub mod jobs;
pub mod server;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use callosum_client::{PoolPolicy, SlowPenalty};
use serde::Serialize;

pub use engine::simulate;

use crate::balance::model::{
    ClusterArgs, ModelOptions, Policy, PoolRules, ServiceDist, SimConfig, SimError, Timing,
    write_json,
};
use crate::balance::report::summary::{self, PolicySummary};
use crate::balance::report::{self, SimReport, plot};
use crate::cli::values::{at_least_one, count, duration, positive_duration};

/// Options of `callosum-loadgen simulate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// The cluster, the workload, the events and the outputs (shared with `balance`).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Servers never queue: every request is served at once (a pure delay);
    /// --server-workers then only sets the capacity the load is relative to.
    #[arg(long)]
    pub no_queue: bool,
    /// Roving interval: each client's rover probes one random server this often.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub roving_interval: Duration,
    /// Warm-up, simulated time before measuring.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub warmup: Duration,
    /// Measured window, simulated time.
    #[arg(short = 'z', long, default_value = "300s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Policies to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Policy::ALL.to_vec())]
    pub policy: Vec<Policy>,
    /// The leaving server crashes (requests at it fail) instead of draining.
    #[arg(long)]
    pub crash: bool,
    /// Improved policy: maximum connection age (each connection's limit drawn in
    /// [age/2, 3·age/2)); 0 disables [default: the client's rule for the roving interval
    /// and pool size].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_age: Option<Duration>,
    /// Improved policy: a rover connection with a slot equal to the pool's worst replaces it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub accept_equal: bool,
    /// Improved policy: break ties between equal slots at random.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub random_ties: bool,
    /// Improved policy: lease the idle connection whose server has the fewest of this
    /// client's requests in flight, lowest slot among those.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub least_outstanding: bool,
    /// Improved policy: weight of a new response time in each connection's moving average;
    /// 0 disables the slow-connection penalty.
    #[arg(long, default_value_t = 0.2)]
    pub latency_alpha: f32,
    /// Improved policy: a connection whose average response time is this many times the
    /// pool's mean counts as one more request in flight.
    #[arg(long, default_value_t = 1.5)]
    pub slow_threshold: f32,
    /// Improved policy: pools of at most 4 places lease any idle connection of the lowest
    /// cost at random, whatever its slot, and once full keep their connections on distinct
    /// servers.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub spread_small_pools: bool,
    /// Improved policy: a pool that holds at least two connections per server leases among
    /// the idle connections of the lowest cost at random, each with weight 1 / (slot + 1),
    /// instead of the lowest slot.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub slot_weighted_leases: bool,
    /// Improved policy: under slot weights, each connection's weight is multiplied by
    /// min(1, pool median / its response-time average)^8 (needs --latency-alpha > 0).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub latency_damped_weights: bool,
    /// Improved policy: a connection's response-time average above the mean of its
    /// server's other connections in the pool decays toward that mean while it goes
    /// unused, with a half-life of 16 leases per pool place (needs --latency-alpha > 0).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub outlier_decay: bool,
    /// Improved policy: a full pool that leases the lowest slot, offered slots averaging
    /// at least 4 per place, draws a preferred connection among its 8 lowest slots by
    /// weight 1 / √(slot + 1), damped against the slow penalty's threshold, keeps it for 2
    /// leases and leases it when it is idle and no other request of the pool is at its
    /// server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub preferred_connection: bool,
    /// Improved policy: where the floor of one roving interval per place raised the maximum
    /// age (more than 10 places at the default age), a full pool with more than half of its
    /// places on distinct servers replaces its lowest-slot expired connection first, and
    /// its newcomers live the maximum age without that floor.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub rotate_spread_pools: bool,
    /// Network round trip added to every request (all of it on the response) and to every
    /// connect.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub rtt: Duration,
    /// Server work per new connection: occupies one of the server's workers (queued with
    /// the requests); the connection reaches the pool once it is done.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub connect_cost: Duration,
    /// Distribution of service demands, all with the mean --service-time.
    #[arg(long, value_enum, default_value_t = ServiceDist::Exp)]
    pub service_dist: ServiceDist,
    /// Shape σ of the lognormal service distribution.
    #[arg(long, default_value_t = 1.0)]
    pub service_sigma: f64,
    /// Tail index α (> 1) of the Pareto service distribution.
    #[arg(long, default_value_t = 2.5)]
    pub service_alpha: f64,
    /// This server (id) answers --fail-fast-share of its requests at once with an error.
    #[arg(long, value_name = "ID")]
    pub fail_fast_server: Option<usize>,
    /// Share of the fail-fast server's requests that fail.
    #[arg(long, default_value_t = 1.0)]
    pub fail_fast_share: f64,
    /// How long a failing request takes (it holds no worker).
    #[arg(long, default_value = "0.1ms", value_parser = duration)]
    pub fail_fast_time: Duration,
    /// Seeds to run for every policy (--seed, --seed + 1, ...); with more than one, the
    /// table and the JSON give each figure's mean, 95 % interval and range over them.
    #[arg(long, default_value_t = 1, value_parser = count)]
    pub seeds: u64,
    /// Simulations run at once (this tool's threads).
    #[arg(short, long, default_value_t = 2, value_parser = at_least_one)]
    pub workers: usize,
    /// Also write a Markdown table to PATH (- for stdout): one row per policy, each cell the
    /// figure's mean ± the half-width of its 95 % interval over the seeds.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

impl SimulateArgs {
    /// The scenario's timing.
    pub fn timing(&self) -> Timing {
        Timing {
            roving_interval: self.roving_interval,
            warmup: self.warmup,
            duration: self.duration,
        }
    }

    /// The improved policy's rules these options describe: the client's improved policy
    /// with each rule as asked, its maximum age settled for the roving interval as the
    /// roving client settles it.
    pub fn rules(&self) -> PoolRules {
        let mut improved = PoolPolicy::improved()
            .max_slots(self.cluster.pool_size as usize)
            .accept_equal(self.accept_equal)
            .random_tie_break(self.random_ties)
            .least_outstanding(self.least_outstanding)
            .spread_small_pools(self.spread_small_pools)
            .slot_weighted_leases(self.slot_weighted_leases)
            .latency_damped_weights(self.latency_damped_weights)
            .outlier_decay(self.outlier_decay)
            .preferred_connection(self.preferred_connection)
            .slow_penalty((self.latency_alpha > 0.0).then(|| {
                SlowPenalty::default()
                    .alpha(self.latency_alpha)
                    .threshold(self.slow_threshold)
            }));
        if let Some(age) = self.max_age {
            improved = improved.max_age((!age.is_zero()).then_some(age));
        }
        if !self.rotate_spread_pools {
            improved = improved.rotate_spread_pools(None);
        }
        PoolRules::of_policy(&improved, self.roving_interval)
    }

    /// The richer model these options describe.
    pub fn model(&self) -> ModelOptions {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        ModelOptions {
            rtt_ms: ms(self.rtt),
            connect_cost_ms: ms(self.connect_cost),
            service_dist: self.service_dist,
            service_shape: match self.service_dist {
                ServiceDist::Exp => 1.0,
                ServiceDist::Lognormal => self.service_sigma,
                ServiceDist::Pareto => self.service_alpha,
            },
            fail_fast_server: self.fail_fast_server,
            fail_fast_share: self.fail_fast_share,
            fail_fast_ms: ms(self.fail_fast_time),
        }
    }

    /// The run of `policy` these options describe.
    pub fn config(&self, policy: Policy) -> SimConfig {
        SimConfig {
            model: self.model(),
            ..SimConfig::new(
                &self.cluster,
                self.timing(),
                policy,
                self.rules(),
                self.no_queue,
                self.crash,
            )
        }
    }
}

/// What `--json` prints for one seed: the shared configuration and one report per policy.
#[derive(Serialize)]
struct Output<'a> {
    config: &'a SimConfig,
    runs: &'a [SimReport],
}

/// The reports of one seed, one per policy.
#[derive(Serialize)]
struct SeedRuns<'a> {
    seed: u64,
    runs: &'a [SimReport],
}

/// What `--json` prints for several seeds: the shared configuration (its seed the first),
/// every seed's reports, and each policy's figures over the seeds.
#[derive(Serialize)]
struct SeedsOutput<'a> {
    config: &'a SimConfig,
    seeds: &'a [u64],
    per_seed: Vec<SeedRuns<'a>>,
    summary: &'a [PolicySummary],
}

/// Runs every requested policy on the configuration `args` describe, once per seed, and
/// writes the table to `out` (the JSON to `--json`'s path, `-` for stdout, instead of the
/// table), each policy's time and events/s and the run's wall time to stderr, and the plot (of
/// the first seed) if asked.
pub fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<(), SimError> {
    let configs: Vec<SimConfig> = args.policy.iter().map(|&p| args.config(p)).collect();
    for c in &configs {
        c.validate()?;
    }
    let base = configs.first().ok_or(SimError::NoPolicy)?;
    let seeds: Vec<u64> = (0..args.seeds.max(1))
        .map(|i| args.cluster.seed.wrapping_add(i))
        .collect();
    // Seed-major: the reports of one seed are contiguous, one per policy.
    let jobs: Vec<SimConfig> = seeds
        .iter()
        .flat_map(|&seed| configs.iter().map(move |c| SimConfig { seed, ..c.clone() }))
        .collect();
    let started = Instant::now();
    let results = jobs::run_all(
        &jobs,
        args.workers,
        |cfg| {
            let t0 = Instant::now();
            let report = simulate(cfg);
            (report, t0.elapsed().as_secs_f64())
        },
        |_, _, _| {},
    );
    for (i, cfg) in configs.iter().enumerate() {
        let mine = results.iter().skip(i).step_by(configs.len());
        // Each simulation's own time, summed: with several workers, more than the wall time.
        let (events, busy) = mine.fold((0u64, 0.0f64), |(e, w), (r, t)| (e + r.events, w + t));
        eprintln!(
            "simulate: {:<13} {:>12} events in {:>7.2} s of simulation = {:>6.2} M events/s{}",
            cfg.policy.name(),
            events,
            busy,
            events as f64 / busy.max(1e-9) / 1e6,
            if seeds.len() > 1 {
                format!(" ({} seeds)", seeds.len())
            } else {
                String::new()
            }
        );
    }
    eprintln!(
        "simulate: {} simulation(s) in {:.2} s wall on {} worker(s)",
        jobs.len(),
        started.elapsed().as_secs_f64(),
        jobs::threads(args.workers, jobs.len())
    );
    // The text table goes to `out` unless the JSON or the Markdown does.
    let table_wanted =
        args.cluster.table_wanted() && !args.markdown.as_deref().is_some_and(crate::cli::is_stdout);
    let reports: Vec<SimReport> = results.into_iter().map(|(r, _)| r).collect();
    let first = &reports[..configs.len().min(reports.len())];
    let summaries: Vec<PolicySummary> = configs
        .iter()
        .enumerate()
        .map(|(i, cfg)| {
            let mine: Vec<&SimReport> = reports.iter().skip(i).step_by(configs.len()).collect();
            PolicySummary::of(cfg.policy.name(), seeds.clone(), &mine)
        })
        .collect();
    if let Some(path) = &args.markdown {
        crate::cli::write_to(path, |out| write!(out, "{}", summary::markdown(&summaries)))?;
    }
    if seeds.len() == 1 {
        write_json(
            args.cluster.json.as_deref(),
            &Output {
                config: base,
                runs: first,
            },
        )?;
        if table_wanted {
            write!(out, "{}", report::table(first))?;
            writeln!(
                out,
                "(inf.m/m, inf.cv: instantaneous load max/mean and CV; floor: ⌈N/S⌉/(N/S), the \
                 best any policy can do; rate.mm: long-run rate max/mean; win.mm: per-{} s \
                 window max/mean)",
                args.cluster.window.as_secs_f64()
            )?;
        }
    } else {
        write_json(
            args.cluster.json.as_deref(),
            &SeedsOutput {
                config: base,
                seeds: &seeds,
                per_seed: seeds
                    .iter()
                    .zip(reports.chunks(configs.len()))
                    .map(|(&seed, runs)| SeedRuns { seed, runs })
                    .collect(),
                summary: &summaries,
            },
        )?;
        if table_wanted {
            write!(out, "{}", summary::table(&summaries))?;
        }
    }
    if let Some(path) = &args.cluster.svg {
        plot::plot(
            path,
            first,
            args.cluster.window.as_secs_f64(),
            args.cluster.servers <= engine::PLOT_EACH_MAX,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `simulate` parsed from `argv`.
    fn parse(argv: &[&str]) -> SimulateArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        <Cli as clap::Parser>::try_parse_from(argv)
            .expect("valid test flags")
            .args
    }

    #[test]
    fn markdown_over_two_seeds_has_a_row_per_policy_with_an_interval_in_each_cell() {
        let dir = std::env::temp_dir().join(format!("callosum-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("table.md");
        let path_arg = path.to_str().expect("utf-8 temp path");
        let args = parse(&[
            "simulate",
            "--seeds",
            "2",
            "--warmup",
            "2s",
            "--duration",
            "10s",
            "--join-at",
            "2s",
            "--workers",
            "1",
            "--markdown",
            path_arg,
        ]);
        run(&args, &mut std::io::sink()).expect("simulate");
        let text = std::fs::read_to_string(&path).expect("markdown written");
        let _ = std::fs::remove_dir_all(&dir);
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .is_some_and(|l| l.starts_with("2 seeds (1 to 2)")),
            "{text}"
        );
        let rows: Vec<&str> = lines
            .filter(|l| l.starts_with("| ") && !l.starts_with("| policy"))
            .collect();
        assert_eq!(rows.len(), Policy::ALL.len(), "{text}");
        for (row, policy) in rows.iter().zip(Policy::ALL) {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells[0], policy.name(), "{row}");
            // Every figure but the settling time (some seeds never settle) has its interval.
            for cell in &cells[1..cells.len() - 1] {
                assert!(cell.contains('±') || *cell == "–", "{row}");
            }
            assert!(cells[1..9].iter().all(|c| c.contains('±')), "{row}");
        }
    }
}
