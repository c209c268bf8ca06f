//! The Callosum load generator: opens thousands of connections against Callosum servers and
//! measures what a client sees of the handshake (connect start to slot line read) in
//! HdrHistograms, the slot distribution, the errors by kind, and its own CPU use so a reader can
//! tell it was not the bottleneck.
//!
//! The engine is one current-thread tokio runtime per worker thread, each with its own
//! histograms (merged at the end): no cross-thread traffic on the hot path but two relaxed
//! counters and the slot-uniqueness bitmap. With no target, an embedded `callosum-server` is
//! started in the same process on a free loopback port.
//!
//! ```no_run
//! use callosum_loadgen::{Config, Phase, Shutdown};
//! let config = Config::default(); // embedded server, a short churn then a hold
//! let report = callosum_loadgen::run(&config, &Shutdown::new())?;
//! print!("{}", report.table());
//! # Ok::<(), callosum_loadgen::LoadgenError>(())
//! ```
//!
//! # Layout
//! - [`config`]: what to run: targets, phases (churn, hold), pacing, limits.
//! - [`cli`]: the command line (clap) and its translation into a [`Config`].
//! - [`limits`]: raising `RLIMIT_NOFILE` and refusing, before starting, runs that cannot fit.
//! - [`handshake`]: one connection: connect (optionally from a chosen source address), read and
//!   parse the slot line, classify failures by kind.
//! - [`registry`]: the slot-uniqueness invariant (two open connections never share a slot).
//! - [`reset`]: resets on purpose (`--reset-fraction`): which connections, at which point,
//!   counted apart from errors.
//! - [`stats`]: histograms and error counters per worker, merged into a summary.
//! - [`engine`]: the worker threads, closed-loop and open-loop (rate) pacing, the phases.
//! - [`sysinfo`]: CPU time (getrusage, `/proc/PID/stat`) and RSS readings.
//! - [`embedded`]: the in-process `callosum-server` used when no target is given.
//! - [`report`]: the results: the stdout table and the JSON document.
//! - [`hgrm`]: HdrHistogram percentile-distribution text output.
//! - [`hlog`]: HdrHistogram interval logs (one histogram per second, as the Java tools write
//!   them) and the histogram encoding embedded in the JSON result.
//! - [`merge`]: several load generators' results (interval logs, JSON) merged into one report.
//! - [`svg`]: the latency-by-percentile plot.
//! - [`progress`]: the live progress bar on a terminal.
//! - [`simulate`]: the deterministic discrete-event simulator of the self-balancing policies.
//! - [`balance`]: the same scenarios live: embedded servers and roving clients on loopback,
//!   compared with the simulator.
#![deny(missing_docs)]

pub mod balance;
pub mod cli;
pub mod config;
pub mod embedded;
pub mod engine;
pub mod handshake;
pub mod hgrm;
pub mod hlog;
pub mod limits;
pub mod merge;
pub mod progress;
pub mod registry;
pub mod report;
pub mod reset;
pub mod simulate;
pub mod stats;
pub mod svg;
pub mod sysinfo;

pub use config::{Config, Pacing, Phase, PhaseKind};
pub use engine::{LoadgenError, Shutdown, run};
pub use report::{Report, RunReport};
