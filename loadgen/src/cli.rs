//! The command line: `callosum-loadgen [churn|hold] [options]`, and its translation into a
//! [`Config`] plus the output files to write.
//!
//! With no subcommand the tool runs the default job (embedded server unless `--target` is
//! given: a 3 s churn at 64 in flight, then a hold of 4,000 connections), so
//! `cargo run --release -p callosum-loadgen` prints a real result in seconds.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, EmbeddedConfig, Pacing, Phase, PhaseKind, default_workers};
use crate::report::Report;

/// Benchmarks Callosum servers: handshake latency histograms, slot distribution, errors.
#[derive(Debug, Parser)]
#[command(name = "callosum-loadgen", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// The scenario; none runs the default job (a short churn, then a hold).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the default job (each scenario takes its own after its name).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect, read the slot, close; `--concurrency` in flight (or `--rate` per second) for
    /// `--duration` or `--count`.
    Churn(ChurnArgs),
    /// Open `--connections` and keep them all open; report the slot distribution per target
    /// and memory per held connection.
    Hold(HoldArgs),
    /// Deterministic discrete-event simulation of the self-balancing protocol: servers,
    /// roving clients with pools, and the routing policies compared on one workload (no
    /// sockets; see docs/balance.md).
    Simulate(Box<crate::simulate::SimulateArgs>),
    /// The simulator's scenarios live: embedded servers and roving clients on loopback, every
    /// policy in turn, the same metrics from the servers' counters, side by side with the
    /// simulator on the same configuration (see docs/balance.md, "Live").
    Balance(Box<crate::balance::BalanceArgs>),
}

/// Options shared by the load scenarios (the default job, `churn`, `hold`).
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Server to drive, `host:port` (repeat for several; connections go round-robin). None:
    /// start an embedded callosum-server on a free loopback port.
    #[arg(long = "target", value_parser = parse_target)]
    pub targets: Vec<SocketAddr>,
    /// Embedded server: shards (threads). Default: the number of cores.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Embedded server: most slots handed out.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_slots: u32,
    /// Worker threads of the load generator. Default: the number of cores.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Bind outgoing connections to 127.0.0.1 ..= 127.0.0.N (loopback targets), to use more
    /// than one address pair's ephemeral ports. Default: enough for the run's connects
    /// (loopback targets), else 1.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub src_ips: Option<u8>,
    /// Handshake timeout (connect plus slot line), seconds.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Report the CPU time and RSS of this server process (Linux /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the results as JSON (schema callosum-loadgen/v1, see the README) to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the handshake latency as HdrHistogram percentile-distribution text (ms) to PATH;
    /// with several phases, PATH gets the phase name before its extension.
    #[arg(long, value_name = "PATH")]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG) to PATH.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
    /// No progress bar (it is shown only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Share of connections (0.0 to 1.0) closed with an RST instead of a FIN, each at a random
    /// point: right after connect, right after the slot line, or after a short hold. Counted
    /// apart from errors.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_fraction,
          allow_negative_numbers = true)]
    pub reset_fraction: f64,
}

/// Pacing options of a scenario.
#[derive(Debug, Args)]
pub struct PacingArgs {
    /// Handshakes in flight at once (closed loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop: this many new connections per second on a fixed schedule, latency measured
    /// from each intended start (coordinated omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: most handshakes in flight; beyond it starts wait (and count as late).
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Seconds at the start whose handshakes are not recorded.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
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
    /// Targets, outputs and limits.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds to run (warmup included). Default 10 when no --count is given.
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Handshakes to start (warmup included).
    #[arg(long)]
    pub count: Option<u64>,
    /// Pacing.
    #[command(flatten)]
    pub pacing: PacingArgs,
}

/// `hold` options.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Targets, outputs and limits.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open and keep open.
    #[arg(long, default_value_t = 4_000)]
    pub connections: u64,
    /// Seconds to keep them all open once the last one is open.
    #[arg(long, default_value = "0", value_parser = parse_secs)]
    pub hold_for: Duration,
    /// Pacing.
    #[command(flatten)]
    pub pacing: PacingArgs,
}

/// Files to write once the run is done.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `--json`.
    pub json: Option<PathBuf>,
    /// `--hgrm`.
    pub hgrm: Option<PathBuf>,
    /// `--svg`.
    pub svg: Option<PathBuf>,
}

impl Cli {
    /// The run configuration and the output files. `None` for a subcommand that is not a load
    /// run.
    pub fn config(&self) -> Option<(Config, Outputs)> {
        let defaults = Config::default();
        let (c, phases) = match &self.command {
            None => (&self.common, defaults.phases.clone()),
            Some(Command::Simulate(_) | Command::Balance(_)) => return None,
            Some(Command::Churn(a)) => (
                &a.common,
                vec![Phase {
                    kind: PhaseKind::Churn {
                        duration: a
                            .duration
                            .or(a.count.is_none().then(|| Duration::from_secs(10))),
                        count: a.count,
                    },
                    pacing: a.pacing.pacing(),
                    warmup: a.pacing.warmup,
                }],
            ),
            Some(Command::Hold(a)) => (
                &a.common,
                vec![Phase {
                    kind: PhaseKind::Hold {
                        connections: a.connections,
                        hold_for: a.hold_for,
                    },
                    pacing: a.pacing.pacing(),
                    warmup: a.pacing.warmup,
                }],
            ),
        };
        let mut config = Config {
            targets: c.targets.clone(),
            embedded: EmbeddedConfig {
                shards: c.shards.unwrap_or_else(default_workers),
                max_slots: c.max_slots,
            },
            phases,
            workers: c.workers.unwrap_or_else(default_workers),
            src_ips: c.src_ips,
            timeout: c.timeout,
            server_pid: c.server_pid,
            progress: !c.no_progress,
            reset_fraction: c.reset_fraction,
        };
        if self.command.is_none() {
            // The default job must run anywhere: shrink its hold to what the descriptor limit
            // allows (an embedded hold needs two descriptors per connection).
            let fit = crate::limits::max_hold(&config);
            for phase in &mut config.phases {
                if let (PhaseKind::Hold { connections, .. }, Some(fit)) = (&mut phase.kind, fit) {
                    *connections = (*connections).min(fit);
                }
            }
        }
        let outputs = Outputs {
            json: c.json.clone(),
            hgrm: c.hgrm.clone(),
            svg: c.svg.clone(),
        };
        Some((config, outputs))
    }
}

impl Outputs {
    /// Writes the requested files.
    pub fn write(&self, report: &Report) -> std::io::Result<()> {
        if let Some(path) = &self.json {
            let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
            report.write_json(&mut file)?;
            std::io::Write::flush(&mut file)?;
        }
        if let Some(path) = &self.hgrm {
            for run in &report.runs {
                let path = if report.runs.len() == 1 {
                    path.clone()
                } else {
                    with_phase(path, run.scenario)
                };
                let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
                crate::hgrm::write(&run.handshake_histogram, &mut file)?;
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
            crate::svg::write(path, &series).map_err(std::io::Error::other)?;
        }
        Ok(())
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

fn parse_target(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{s} is not within 0.0..=1.0"))
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (Config, Outputs) {
        Cli::try_parse_from(std::iter::once("callosum-loadgen").chain(args.iter().copied()))
            .unwrap()
            .config()
            .expect("a load scenario")
    }

    #[test]
    fn no_arguments_is_the_embedded_default_job() {
        let (config, _) = parse(&[]);
        assert!(config.is_embedded());
        assert_eq!(config.phases.len(), 2);
        assert_eq!(config.phases[0].kind.name(), "churn");
        assert_eq!(config.phases[1].kind.name(), "hold");
    }

    #[test]
    fn churn_with_rate_is_open_loop() {
        let (config, out) = parse(&[
            "churn",
            "--target",
            "127.0.0.1:9000",
            "--rate",
            "1000",
            "--count",
            "50",
            "--warmup",
            "0.5",
            "--json",
            "x.json",
            "--src-ips",
            "16",
        ]);
        assert_eq!(config.targets, vec!["127.0.0.1:9000".parse().unwrap()]);
        assert!(matches!(config.phases[0].pacing, Pacing::Open { rate, .. } if rate == 1000.0));
        assert!(matches!(
            config.phases[0].kind,
            PhaseKind::Churn {
                duration: None,
                count: Some(50)
            }
        ));
        assert_eq!(config.phases[0].warmup, Duration::from_millis(500));
        assert_eq!(config.src_ips, Some(16));
        assert_eq!(out.json, Some(PathBuf::from("x.json")));
    }

    #[test]
    fn hold_takes_connections_and_a_churn_defaults_to_ten_seconds() {
        let (config, _) = parse(&["hold", "--connections", "19000", "--concurrency", "128"]);
        assert!(matches!(
            config.phases[0].kind,
            PhaseKind::Hold {
                connections: 19_000,
                ..
            }
        ));
        assert_eq!(config.phases[0].pacing, Pacing::Closed { concurrency: 128 });
        let (config, _) = parse(&["churn"]);
        assert!(matches!(
            config.phases[0].kind,
            PhaseKind::Churn { duration: Some(d), count: None } if d == Duration::from_secs(10)
        ));
    }

    #[test]
    fn phase_names_go_before_the_extension() {
        assert_eq!(
            with_phase(std::path::Path::new("/tmp/out.hgrm"), "hold"),
            PathBuf::from("/tmp/out.hold.hgrm")
        );
        assert_eq!(
            with_phase(std::path::Path::new("out"), "churn"),
            PathBuf::from("out.churn")
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("callosum-loadgen").chain(args.iter().copied()))
                .is_err()
        };
        assert!(bad(&["--src-ips", "0"]));
        assert!(bad(&["--timeout", "-1"]));
        assert!(bad(&["churn", "--duration", "abc"]));
        assert!(bad(&["--target", "nohost"]));
        assert!(bad(&["churn", "--reset-fraction", "1.5"]));
        assert!(bad(&["churn", "--reset-fraction", "-0.1"]));
        assert!(bad(&["churn", "--reset-fraction", "NaN"]));
    }

    #[test]
    fn reset_fraction_reaches_the_config_and_defaults_to_none() {
        let (config, _) = parse(&["churn", "--count", "10", "--reset-fraction", "0.3"]);
        assert_eq!(config.reset_fraction, 0.3);
        let (config, _) = parse(&["hold"]);
        assert_eq!(config.reset_fraction, 0.0);
    }
}
