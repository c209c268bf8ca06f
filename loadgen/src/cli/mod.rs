//! The command line of `callosum-loadgen`: the load instrument (`churn`, `hold`, and the
//! default job when no command is named), `merge`, and the balance programs (`simulate`,
//! `balance`, `sweep`), with one vocabulary: an option's name means the same thing in every
//! command.
//!
//! - `--workers` is always this tool's threads; `--shards` and `--max-slots` always the
//!   embedded server's, as for `callosum-server`; a simulated server's workers are
//!   `--server-workers` and a client's pool `--pool-size`.
//! - `--json PATH`, `--svg PATH` everywhere: `-` writes the JSON to stdout (the table then
//!   goes to stderr).
//! - Every duration takes units (`500ms`, `10s`, `2m`; a bare number is seconds).
//! - Short options as oha has them: `-c` concurrency, `-z` duration, `-n` count, `-q` rate.
//!
//! Values out of range are refused while parsing ([`values`]), in one line (exit status 2).
//! Options may also come before the command's name ([`argv`]).

pub mod argv;
pub mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::instrument::hlog::LogWriter;
use crate::instrument::plan::{
    Criteria, EmbeddedConfig, Pacing, Phase, PhaseKind, Plan, default_workers,
};
use crate::instrument::report::Report;

/// Benchmarks Callosum servers (handshake latency, slot distribution, errors) and simulates
/// how well their clients balance.
#[derive(Debug, Parser)]
#[command(name = "callosum-loadgen", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run; none runs the default job (a short churn, then a hold).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default job.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect, read the slot, close, again and again: -c in flight (or -q per second) for
    /// -z or -n handshakes.
    Churn(ChurnArgs),
    /// Open -n connections and keep them all open; report the slot distribution per target
    /// and the memory per held connection.
    Hold(HoldArgs),
    /// Deterministic discrete-event simulation of the self-balancing policies: servers,
    /// roving clients with pools, every policy on one workload (no sockets; see
    /// docs/balance.md).
    Simulate(Box<crate::balance::SimulateArgs>),
    /// Merge the results of several load generators (their --hlog interval logs or --json
    /// results) into one report: percentiles of all their handshakes, rates summed.
    Merge(MergeArgs),
    /// The simulator's scenarios live on loopback: embedded servers and roving clients,
    /// every policy in turn, beside the simulator on the same configuration.
    Balance(Box<crate::balance::BalanceArgs>),
    /// The original and the improved policy simulated over a grid (pool sizes, roving
    /// intervals, loads, cluster sizes), several seeds per cell: p99 ratio, long-run rates
    /// and pool fill per cell.
    Sweep(Box<crate::balance::SweepArgs>),
}

/// Options of the load instrument (the default job, `churn`, `hold`).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server to drive, host:port; repeat for several (connections go round-robin). None:
    /// an embedded callosum-server on a free loopback port.
    #[arg(long = "target", value_name = "HOST:PORT", value_parser = values::target)]
    pub targets: Vec<SocketAddr>,
    /// Embedded server's shards (threads) [default: the number of cores].
    #[arg(long, value_parser = values::at_least_one, conflicts_with = "targets")]
    pub shards: Option<usize>,
    /// Embedded server's most slots handed out.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..),
          conflicts_with = "targets")]
    pub max_slots: u32,
    /// This tool's worker threads [default: the number of cores].
    #[arg(short, long, value_parser = values::at_least_one)]
    pub workers: Option<usize>,
    /// Bind connections to 127.0.0.1 ..= 127.0.0.N (loopback targets) for more ephemeral
    /// ports [default: enough for the run's connects with loopback targets, else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub src_ips: Option<u8>,
    /// Handshake timeout (connect plus slot line).
    #[arg(long, default_value = "5s", value_parser = values::positive_duration)]
    pub timeout: Duration,
    /// Report the CPU time and RSS of this server process (Linux /proc); with several
    /// targets, per connection to the targets it listens on.
    #[arg(long, value_name = "PID", value_parser = values::pid)]
    pub server_pid: Option<u32>,
    /// Fail (exit status 3) when more than this share of handshakes fail.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = values::fraction)]
    pub max_error_rate: f64,
    /// Share of connections (0.0 to 1.0) closed with an RST instead of a FIN, at a random
    /// point (after connect, after the slot line, after a short hold); not errors.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = values::fraction,
          allow_negative_numbers = true)]
    pub reset_fraction: f64,
    /// Write the results as JSON (schema callosum-loadgen/v2) to PATH; - for stdout.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the handshake latency as HdrHistogram percentile-distribution text (ms) to
    /// PATH; with several phases, PATH gets the phase's name before its extension.
    #[arg(long, value_name = "PATH")]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG) to PATH.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// Write the handshake latency as an HdrHistogram interval log (1 s intervals, tagged by
    /// phase; values in µs) to PATH, for `merge` and HdrHistogram's log processors.
    #[arg(long, value_name = "PATH")]
    pub hlog: Option<PathBuf>,
    /// No progress bar (there is one only when stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// How new connections are started.
#[derive(Debug, Args)]
pub struct PacingArgs {
    /// Handshakes in flight at once (closed loop).
    #[arg(short, long, default_value_t = 64, value_parser = values::at_least_one,
          conflicts_with = "rate")]
    pub concurrency: usize,
    /// Open loop: new connections per second on a fixed schedule, latency measured from each
    /// intended start (coordinated omission corrected).
    #[arg(short = 'q', long, value_name = "PER_S", value_parser = values::rate)]
    pub rate: Option<f64>,
    /// Open loop: most handshakes in flight; beyond it starts wait (and count as late).
    #[arg(long, default_value_t = 4096, value_parser = values::at_least_one, requires = "rate")]
    pub max_in_flight: usize,
    /// Handshakes started during this first stretch are not recorded.
    #[arg(long, default_value = "0s", value_parser = values::duration)]
    pub warmup: Duration,
}

impl PacingArgs {
    fn pacing(&self) -> Pacing {
        match self.rate {
            Some(rate) => Pacing::Open {
                rate,
                max_in_flight: self.max_in_flight,
            },
            None => Pacing::Closed {
                concurrency: self.concurrency,
            },
        }
    }
}

/// `churn` options.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// How long to run, warmup included [default: 10s when no -n is given].
    #[arg(short = 'z', long, value_parser = values::positive_duration)]
    pub duration: Option<Duration>,
    /// Handshakes to start, warmup included.
    #[arg(short = 'n', long, value_parser = values::count)]
    pub count: Option<u64>,
    /// Pacing.
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// Targets, outputs and limits.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `hold` options.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Connections to open and keep open.
    #[arg(short = 'n', long, default_value_t = 4_000, value_parser = values::count)]
    pub connections: u64,
    /// How long to keep them all open once the last one is open.
    #[arg(long, default_value = "0s", value_parser = values::duration)]
    pub hold_for: Duration,
    /// Pacing.
    #[command(flatten)]
    pub pacing: PacingArgs,
    /// Targets, outputs and limits.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `merge` options.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Interval logs (--hlog) or JSON results (--json) of several load generators.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Write the merged report as JSON to PATH; - for stdout.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the merged interval log (intervals of the same second summed) to PATH.
    #[arg(long, value_name = "PATH")]
    pub hlog: Option<PathBuf>,
}

/// Files to write once the run is done.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `--json` (`-`: stdout).
    pub json: Option<PathBuf>,
    /// `--hgrm`.
    pub hgrm: Option<PathBuf>,
    /// `--svg`.
    pub svg: Option<PathBuf>,
    /// `--hlog`.
    pub hlog: Option<PathBuf>,
}

/// `-` as a path: stdout.
pub fn is_stdout(path: &std::path::Path) -> bool {
    path.as_os_str() == "-"
}

impl Cli {
    /// Parses the process's arguments, options before the command's name included.
    pub fn try_parse_args() -> Result<Self, clap::Error> {
        Self::try_parse_from_args(std::env::args_os().collect())
    }

    /// Parses `args` (program name first), options before the command's name included.
    pub fn try_parse_from_args(args: Vec<std::ffi::OsString>) -> Result<Self, clap::Error> {
        use clap::CommandFactory;
        Self::try_parse_from(argv::command_first(&Self::command(), args))
    }
}

/// A load instrument run: the plan and the files to write.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// What to run.
    pub plan: Plan,
    /// What to write once it is done.
    pub outputs: Outputs,
}

impl LoadArgs {
    /// The plan of `phases` with these options.
    fn run(&self, phases: Vec<Phase>) -> LoadRun {
        LoadRun {
            plan: Plan {
                targets: self.targets.clone(),
                embedded: EmbeddedConfig {
                    shards: self.shards.unwrap_or_else(default_workers),
                    max_slots: self.max_slots,
                },
                phases,
                workers: self.workers.unwrap_or_else(default_workers),
                src_ips: self.src_ips,
                timeout: self.timeout,
                server_pid: self.server_pid,
                progress: !self.no_progress,
                reset_fraction: self.reset_fraction,
                criteria: Criteria {
                    max_error_rate: self.max_error_rate,
                },
            },
            outputs: Outputs {
                json: self.json.clone(),
                hgrm: self.hgrm.clone(),
                svg: self.svg.clone(),
                hlog: self.hlog.clone(),
            },
        }
    }

    /// The default job: a short churn, then a hold shrunk to what the descriptor limit
    /// allows, so it runs anywhere (an embedded hold needs two descriptors per connection).
    pub fn default_job(&self) -> LoadRun {
        let mut run = self.run(Plan::default().phases);
        let fit = crate::instrument::limits::max_hold(&run.plan);
        for phase in &mut run.plan.phases {
            if let (PhaseKind::Hold { connections, .. }, Some(fit)) = (&mut phase.kind, fit) {
                *connections = (*connections).min(fit).max(1);
            }
        }
        run
    }
}

impl ChurnArgs {
    /// The churn's plan.
    pub fn run(&self) -> LoadRun {
        let duration = self
            .duration
            .or(self.count.is_none().then(|| Duration::from_secs(10)));
        self.load.run(vec![Phase {
            kind: PhaseKind::Churn {
                duration,
                count: self.count,
            },
            pacing: self.pacing.pacing(),
            warmup: self.pacing.warmup,
        }])
    }
}

impl HoldArgs {
    /// The hold's plan.
    pub fn run(&self) -> LoadRun {
        self.load.run(vec![Phase {
            kind: PhaseKind::Hold {
                connections: self.connections,
                hold_for: self.hold_for,
            },
            pacing: self.pacing.pacing(),
            warmup: self.pacing.warmup,
        }])
    }
}

impl Outputs {
    /// Writes the requested files (the JSON to stdout for `-`).
    pub fn write(&self, report: &Report) -> std::io::Result<()> {
        if let Some(path) = &self.json {
            write_to(path, |mut out| report.write_json(&mut out))?;
        }
        if let (Some(path), Some(first)) = (&self.hlog, report.runs.first()) {
            let file = std::io::BufWriter::new(std::fs::File::create(path)?);
            let mut log = LogWriter::new(file, first.started_at).map_err(std::io::Error::other)?;
            for run in &report.runs {
                let offset = run
                    .started_at
                    .duration_since(first.started_at)
                    .unwrap_or_default();
                log.write_intervals(&run.intervals, offset, Some(run.scenario))
                    .map_err(std::io::Error::other)?;
            }
            log.finish().map_err(std::io::Error::other)?;
        }
        if let Some(path) = &self.hgrm {
            for run in &report.runs {
                let path = if report.runs.len() == 1 {
                    path.clone()
                } else {
                    with_phase(path, run.scenario)
                };
                let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
                crate::instrument::hgrm::write(&run.handshake_histogram, &mut file)?;
                std::io::Write::flush(&mut file)?;
            }
        }
        if let Some(path) = &self.svg {
            let series: Vec<(String, _)> = report
                .runs
                .iter()
                .map(|r| {
                    (
                        format!("{} ({})", r.scenario, r.targets.join(", ")),
                        &r.handshake_histogram,
                    )
                })
                .collect();
            crate::instrument::svg::write(path, &series).map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Whether the JSON goes to stdout (and the table must not).
    pub fn json_to_stdout(&self) -> bool {
        self.json.as_deref().is_some_and(is_stdout)
    }
}

/// Writes through `write` to the file at `path`, or to stdout for `-`.
pub fn write_to(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if is_stdout(path) {
        let mut out = std::io::stdout().lock();
        write(&mut out)?;
        std::io::Write::flush(&mut out)
    } else {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        write(&mut file)?;
        std::io::Write::flush(&mut file)
    }
}

/// Checks, before a run, that every file it will write can be written, so that minutes of
/// work are not lost to a mistyped directory. `streamable` are outputs for which `-` means
/// stdout (at most one may say so); `files` are outputs always written to the path given.
/// A path that exists (a file, or a symbolic link) is opened for appending, which changes
/// nothing; one that does not is created and removed again. No two outputs, nor an output and
/// an input, may name the same file, however spelled. The error names the file once.
pub fn check_outputs(
    streamable: &[Option<&std::path::Path>],
    files: &[Option<&std::path::Path>],
    inputs: &[PathBuf],
) -> Result<(), String> {
    if streamable.iter().flatten().filter(|p| is_stdout(p)).count() > 1 {
        return Err("only one output can go to stdout (-)".into());
    }
    let paths: Vec<&std::path::Path> = streamable
        .iter()
        .flatten()
        .filter(|p| !is_stdout(p))
        .chain(files.iter().flatten())
        .copied()
        .collect();
    let resolved: Vec<PathBuf> = paths.iter().map(|p| resolve(p)).collect();
    let inputs: Vec<PathBuf> = inputs.iter().map(|p| resolve(p)).collect();
    for (i, path) in paths.iter().enumerate() {
        if resolved[..i].contains(&resolved[i]) {
            return Err(format!("{} is named for two outputs", path.display()));
        }
        if inputs.contains(&resolved[i]) {
            return Err(format!(
                "{} is an input; it would be overwritten",
                path.display()
            ));
        }
        check_writable(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Opens `path` as its run will, without changing what is there.
fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.append(true);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() && !path.exists() => {
            // A link to a file not there yet: its directory must be.
            let target = std::fs::read_link(path)?;
            let target = path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(target);
            match target.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                    Err(std::io::Error::from(std::io::ErrorKind::NotFound))
                }
                _ => Ok(()),
            }
        }
        Ok(_) => open.open(path).map(drop),
        Err(_) => {
            open.create(true).open(path)?;
            std::fs::remove_file(path)
        }
    }
}

/// `path` as one spelling: resolved when it exists, else its directory resolved and its name
/// kept.
pub fn resolve(path: &std::path::Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

/// `out.hgrm` → `out.churn.hgrm`.
fn with_phase(path: &std::path::Path, phase: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(Default::default, |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{phase}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{phase}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests;
