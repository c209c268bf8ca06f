//! `sweep`: the original and the improved policy over a grid of pool sizes, roving intervals,
//! loads and cluster sizes, several seeds per cell, judged against the improved policy's
//! targets: p99 no worse than the original's (improved / original ≤ 1.02) and long-run rates
//! even (max/mean ≤ 1.05 on every seed).
//!
//! Every cell is `simulate` with `--servers S --clients C --pool-size P --roving-interval R
//! --load L --warmup W --duration D --seed s` and every other option at its default, so any
//! cell can be rerun alone. The warm-up defaults to 2·P·R + 30 s: a pool fills in about P·R
//! (one rover connection per interval), and the improved policy's first connections reach
//! their maximum age (at least 2·P·R) by then, so the measured window sees pools in their
//! steady state. Per cell, the p99 ratio is taken seed by seed (the same seed gives both
//! policies the same arrivals and service times) and summarised over seeds
//! ([`summary`](crate::balance::report::summary)); the pools' fill is the connections held at
//! the end of the run over C·P.
//!
//! Why this shape: the grid is a flat list of (cell, policy, seed) jobs on one work queue
//! ([`jobs`]), longest first so the threads finish
//! together; what a cell reports is computed once ([`CellReport`]) and printed as a text
//! table, JSON or Markdown. The number of simulations and an estimate of their cost are
//! printed before anything runs, so a grid too large for the machine is seen at once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::balance::model::{MAX_POOL_SIZE, Policy, SimConfig, SimError, write_json};
use crate::balance::report::SimReport;
use crate::balance::report::summary::Summary;
use crate::balance::simulation::{SimulateArgs, jobs, simulate};
use crate::cli::values::{at_least_one, count, duration, non_negative, positive_duration};

/// The p99 target: improved / original at most this.
pub const P99_RATIO_TARGET: f64 = 1.02;

/// The long-run rate target: the improved policy's max/mean at most this on every seed.
pub const RATE_TARGET: f64 = 1.05;

/// Warm-up added to 2·P·R by default.
const WARMUP_MARGIN: Duration = Duration::from_secs(30);

/// Events per second one worker thread simulates, for the estimate printed before a sweep
/// (measured on a loaded 2-core machine; a rough figure).
const EVENTS_PER_SECOND: f64 = 3.0e6;

/// Why a sweep could not run or its results could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A cell the simulator refuses.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The simulator's defaults could not be read.
    #[error("the simulator's defaults: {0}")]
    Defaults(#[from] clap::Error),
    /// An axis has no value.
    #[error("the grid is empty: every axis needs at least one value")]
    Empty,
    /// Writing the table or the Markdown failed.
    #[error("writing the results: {0}")]
    Io(#[from] std::io::Error),
}

/// Options of `callosum-loadgen sweep`.
#[derive(Clone, Debug, clap::Args)]
pub struct SweepArgs {
    /// Pool sizes (P), comma-separated, each at most 1,024.
    #[arg(long, value_delimiter = ',', default_values_t = [2u64, 3, 4, 8, 16, 32, 64],
          value_parser = clap::value_parser!(u64).range(1..=MAX_POOL_SIZE))]
    pub pool_sizes: Vec<u64>,
    /// Roving intervals (R), comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["100ms", "1s", "10s"],
          value_parser = positive_duration)]
    pub roving_intervals: Vec<Duration>,
    /// Offered loads, shares of the servers' capacity, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.8, 0.95],
          value_parser = non_negative)]
    pub loads: Vec<f64>,
    /// Cluster sizes (S servers), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [4usize, 100],
          value_parser = at_least_one)]
    pub servers: Vec<usize>,
    /// Clients per server (C = this × S).
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub clients_per_server: usize,
    /// Seeds per cell (--seed, --seed + 1, ...).
    #[arg(long, default_value_t = 10, value_parser = count)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Warm-up of every cell, simulated time [default: 2·P·R + 30 s, the cell's own].
    #[arg(long, value_parser = duration)]
    pub warmup: Option<Duration>,
    /// Measured window of every cell, simulated time.
    #[arg(short = 'z', long, default_value = "60s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Write every cell (and its per-seed figures) as JSON to PATH; - for stdout.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the table as Markdown to PATH (for the docs); - for stdout.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
    /// Simulations run at once (this tool's threads).
    #[arg(short, long, default_value_t = 2, value_parser = at_least_one)]
    pub workers: usize,
}

/// One point of the grid.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Cell {
    /// Servers (S).
    pub servers: usize,
    /// Clients (C).
    pub clients: usize,
    /// Pool size (P).
    pub pool_size: u64,
    /// Roving interval (R), s.
    pub roving_interval_s: f64,
    /// Offered load.
    pub load: f64,
    /// Warm-up, s.
    pub warmup_s: f64,
    /// Measured window, s.
    pub duration_s: f64,
}

/// What one simulation of a cell contributes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RunFigures {
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// Long-run requests per server, max/mean.
    pub rate_max_over_mean: f64,
    /// How long a server's share stays off the mean, s (`None`: not estimated).
    pub rate_memory_s: Option<f64>,
    /// Connections held at the end over C·P.
    pub fill: f64,
}

impl RunFigures {
    /// The figures of `report`, a run of `cfg`.
    fn of(cfg: &SimConfig, report: &SimReport) -> Self {
        let slots = (cfg.clients * cfg.max_slots).max(1) as f64;
        RunFigures {
            p99_ms: report.latency_ms.p99,
            rate_max_over_mean: report.rate_max_over_mean,
            rate_memory_s: report.rate_memory_s,
            fill: report.conns_per_server.mean * cfg.servers as f64 / slots,
        }
    }
}

/// Both policies' figures for one seed.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeedFigures {
    /// The seed.
    pub seed: u64,
    /// The original policy.
    pub original: RunFigures,
    /// The improved policy.
    pub improved: RunFigures,
}

/// What a cell reports over its seeds.
#[derive(Clone, Debug, Serialize)]
pub struct CellReport {
    /// The cell.
    #[serde(flatten)]
    pub cell: Cell,
    /// Improved p99 / original p99, seed by seed.
    pub p99_ratio: Summary,
    /// Whether the mean ratio is at most [`P99_RATIO_TARGET`].
    pub p99_ok: bool,
    /// The original policy's p99, ms.
    pub original_p99_ms: Summary,
    /// The improved policy's p99, ms.
    pub improved_p99_ms: Summary,
    /// The improved policy's long-run rate max/mean.
    pub improved_rate_max_over_mean: Summary,
    /// Whether it is at most [`RATE_TARGET`] on every seed.
    pub rate_ok: bool,
    /// The improved policy's rate memory, s, over the seeds that estimate it.
    pub improved_rate_memory_s: Option<Summary>,
    /// The original policy's long-run rate max/mean.
    pub original_rate_max_over_mean: Summary,
    /// The original policy's pools: connections held over C·P.
    pub original_fill: Summary,
    /// The improved policy's pools: connections held over C·P.
    pub improved_fill: Summary,
    /// Every seed's figures.
    pub per_seed: Vec<SeedFigures>,
}

impl CellReport {
    /// The report of `cell` from its seeds' figures (at least one).
    fn of(cell: Cell, per_seed: Vec<SeedFigures>) -> Option<Self> {
        let over =
            |f: fn(&SeedFigures) -> f64| Summary::of(&per_seed.iter().map(f).collect::<Vec<_>>());
        let p99_ratio = over(|s| s.improved.p99_ms / s.original.p99_ms.max(1e-9))?;
        let improved_rate_max_over_mean = over(|s| s.improved.rate_max_over_mean)?;
        Some(CellReport {
            cell,
            p99_ok: p99_ratio.mean <= P99_RATIO_TARGET,
            p99_ratio,
            original_p99_ms: over(|s| s.original.p99_ms)?,
            improved_p99_ms: over(|s| s.improved.p99_ms)?,
            rate_ok: improved_rate_max_over_mean.max <= RATE_TARGET,
            improved_rate_max_over_mean,
            improved_rate_memory_s: Summary::of(
                &per_seed
                    .iter()
                    .filter_map(|s| s.improved.rate_memory_s)
                    .collect::<Vec<_>>(),
            ),
            original_rate_max_over_mean: over(|s| s.original.rate_max_over_mean)?,
            original_fill: over(|s| s.original.fill)?,
            improved_fill: over(|s| s.improved.fill)?,
            per_seed,
        })
    }
}

/// What `--json` prints.
#[derive(Serialize)]
struct Output<'a> {
    seeds: &'a [u64],
    p99_ratio_target: f64,
    rate_target: f64,
    cells: &'a [CellReport],
}

/// The simulator's configuration of `cell` under `policy` with `seed`: `simulate`'s defaults
/// with the cell's values.
fn config(base: &SimulateArgs, cell: &Cell, policy: Policy, seed: u64) -> SimConfig {
    let mut args = base.clone();
    args.cluster.servers = cell.servers;
    args.cluster.clients = cell.clients;
    args.cluster.pool_size = cell.pool_size;
    args.cluster.load = cell.load;
    args.cluster.seed = seed;
    args.roving_interval = Duration::from_secs_f64(cell.roving_interval_s);
    args.warmup = Duration::from_secs_f64(cell.warmup_s);
    args.duration = Duration::from_secs_f64(cell.duration_s);
    args.config(policy)
}

/// `simulate`'s options at their defaults.
fn simulate_defaults() -> Result<SimulateArgs, clap::Error> {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        args: SimulateArgs,
    }
    <Defaults as clap::Parser>::try_parse_from(["simulate"]).map(|d| d.args)
}

impl SweepArgs {
    /// The grid's cells: servers, then pool size, roving interval and load.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &servers in &self.servers {
            for &pool_size in &self.pool_sizes {
                for &r in &self.roving_intervals {
                    for &load in &self.loads {
                        let warmup = self
                            .warmup
                            .unwrap_or_else(|| r * 2 * pool_size as u32 + WARMUP_MARGIN);
                        cells.push(Cell {
                            servers,
                            clients: servers * self.clients_per_server,
                            pool_size,
                            roving_interval_s: r.as_secs_f64(),
                            load,
                            warmup_s: warmup.as_secs_f64(),
                            duration_s: self.duration.as_secs_f64(),
                        });
                    }
                }
            }
        }
        cells
    }

    /// The seeds of every cell.
    pub fn seed_list(&self) -> Vec<u64> {
        (0..self.seeds.max(1))
            .map(|i| self.seed.wrapping_add(i))
            .collect()
    }
}

/// Runs the sweep `args` describe: the count and estimate first, progress to stderr, then the
/// table to `out` (unless the JSON goes to stdout) and the files asked for.
pub fn run(args: &SweepArgs, out: &mut dyn Write) -> Result<Vec<CellReport>, SweepError> {
    let base = simulate_defaults()?;
    let cells = args.cells();
    let seeds = args.seed_list();
    if cells.is_empty() {
        return Err(SweepError::Empty);
    }
    let policies = [Policy::Original, Policy::Improved];
    let mut jobs: Vec<(usize, usize, SimConfig)> = Vec::new();
    for (c, cell) in cells.iter().enumerate() {
        for (s, &seed) in seeds.iter().enumerate() {
            for policy in policies {
                let cfg = config(&base, cell, policy, seed);
                cfg.validate()?;
                jobs.push((c, s, cfg));
            }
        }
    }
    // Longest first: the threads then finish close together.
    jobs.sort_by(|a, b| b.2.estimated_events().total_cmp(&a.2.estimated_events()));
    let total_events: f64 = jobs.iter().map(|j| j.2.estimated_events()).sum();
    let threads = jobs::threads(args.workers, jobs.len());
    eprintln!(
        "sweep: {} cells × 2 policies × {} seeds = {} simulations, about {:.0} M events: \
         about {:.0} s on {threads} worker(s) at {:.0} M events/s each",
        cells.len(),
        seeds.len(),
        jobs.len(),
        total_events / 1e6,
        total_events / EVENTS_PER_SECOND / threads as f64,
        EVENTS_PER_SECOND / 1e6
    );
    let t0 = Instant::now();
    let progress = Mutex::new((Instant::now(), 0.0f64));
    let results = jobs::run_all(
        &jobs,
        args.workers,
        |(_, _, cfg)| (RunFigures::of(cfg, &simulate(cfg)), cfg.estimated_events()),
        |done, total, (_, events)| {
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            p.1 += events;
            if done == total || p.0.elapsed() >= Duration::from_secs(5) {
                p.0 = Instant::now();
                let elapsed = t0.elapsed().as_secs_f64();
                let left = elapsed * (total_events - p.1).max(0.0) / p.1.max(1.0);
                eprintln!(
                    "sweep: {done}/{total} simulations, {elapsed:.0} s elapsed, about {left:.0} s left"
                );
            }
        },
    );
    let mut figures: Vec<Vec<[Option<RunFigures>; 2]>> =
        vec![vec![[None; 2]; seeds.len()]; cells.len()];
    for ((c, s, cfg), (f, _)) in jobs.iter().zip(results) {
        let p = usize::from(cfg.policy == Policy::Improved);
        figures[*c][*s][p] = Some(f);
    }
    let reports: Vec<CellReport> = cells
        .iter()
        .zip(figures)
        .filter_map(|(&cell, per_seed)| {
            let per_seed = seeds
                .iter()
                .zip(per_seed)
                .filter_map(|(&seed, [o, i])| {
                    Some(SeedFigures {
                        seed,
                        original: o?,
                        improved: i?,
                    })
                })
                .collect();
            CellReport::of(cell, per_seed)
        })
        .collect();
    write_json(
        args.json.as_deref(),
        &Output {
            seeds: &seeds,
            p99_ratio_target: P99_RATIO_TARGET,
            rate_target: RATE_TARGET,
            cells: &reports,
        },
    )?;
    if let Some(path) = &args.markdown {
        crate::cli::write_to(path, |w| markdown(&reports, w))?;
    }
    if !args.json.as_deref().is_some_and(crate::cli::is_stdout) {
        table(&reports, out)?;
    }
    Ok(reports)
}

/// The roving interval as written on the command line (`100ms`, `1s`).
fn interval(cell: &Cell) -> String {
    humantime::format_duration(Duration::from_secs_f64(cell.roving_interval_s)).to_string()
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// The columns of the table: name, width in the text table.
const COLUMNS: [(&str, usize); 14] = [
    ("S", 4),
    ("C", 5),
    ("P", 3),
    ("R", 6),
    ("load", 5),
    ("p99 orig", 8),
    ("p99 impr", 8),
    ("impr/orig p99", 15),
    ("≤1.02", 5),
    ("rate.mm", 7),
    ("≤1.05", 5),
    ("memory", 6),
    ("fill.o", 6),
    ("fill.i", 6),
];

/// A cell's values, in the order of [`COLUMNS`].
fn values(r: &CellReport) -> [String; 14] {
    let c = &r.cell;
    [
        c.servers.to_string(),
        c.clients.to_string(),
        c.pool_size.to_string(),
        interval(c),
        format!("{:.2}", c.load),
        format!("{:.2}", r.original_p99_ms.mean),
        format!("{:.2}", r.improved_p99_ms.mean),
        r.p99_ratio.mean_ci(3),
        yes_no(r.p99_ok).to_owned(),
        format!("{:.3}", r.improved_rate_max_over_mean.max),
        yes_no(r.rate_ok).to_owned(),
        r.improved_rate_memory_s
            .as_ref()
            .map_or_else(|| "-".to_owned(), |m| format!("{:.1}", m.mean)),
        format!("{:.2}", r.original_fill.mean),
        format!("{:.2}", r.improved_fill.mean),
    ]
}

/// The text table: one row per cell.
pub fn table(reports: &[CellReport], out: &mut dyn Write) -> std::io::Result<()> {
    let line = |cells: &mut dyn Iterator<Item = (String, usize)>| {
        cells
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let header = line(&mut COLUMNS.iter().map(|&(n, w)| (n.to_owned(), w)));
    writeln!(out, "{header}")?;
    for r in reports {
        let row = line(&mut values(r).into_iter().zip(COLUMNS.map(|c| c.1)));
        writeln!(out, "{row}")?;
    }
    let seeds = reports.first().map_or(0, |r| r.per_seed.len());
    writeln!(
        out,
        "(p99 in ms, mean over {seeds} seeds; impr/orig p99: mean ± 95 % interval of the per-seed \
         ratio; rate.mm: the improved policy's long-run rate max/mean, highest seed; memory: \
         its rate memory in s, mean; fill: connections held at the end over C·P, mean)"
    )
}

/// The Markdown table: one row per cell, the text table's columns (a failed target in bold).
pub fn markdown(reports: &[CellReport], out: &mut dyn Write) -> std::io::Result<()> {
    let names = COLUMNS.map(|c| c.0);
    writeln!(out, "| {} |", names.join(" | "))?;
    writeln!(out, "|{}", " --- |".repeat(COLUMNS.len()))?;
    for r in reports {
        let cells = values(r).map(|v| if v == "NO" { "**no**".to_owned() } else { v });
        writeln!(out, "| {} |", cells.join(" | "))?;
    }
    Ok(())
}
