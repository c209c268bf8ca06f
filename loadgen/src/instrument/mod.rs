//! The load instrument: opens connections against Callosum servers, phase after phase, and
//! measures what a client sees of the handshake (connect start to slot line read) in
//! HdrHistograms, the slot distribution, the errors by kind, and its own CPU use so a reader
//! can tell it was not the bottleneck.
//!
//! Why this shape: a [`Plan`] says what to run and is validated in one place
//! ([`Plan::validate`]) before anything starts; [`run`] executes it and writes each phase's
//! table to a writer as the phase ends, so the library, the binary and the tests drive the same
//! path. The engine is one current-thread tokio runtime per worker thread, each with its own
//! histograms (merged at the end): no cross-thread traffic on the hot path but a few relaxed
//! counters and the slot-uniqueness bitmap. The phase kinds (churn, hold) differ only in what
//! they do with an open connection and how long they keep it, behind one small trait
//! ([`kind`]). The report is plain data ([`report`]), built from what the engine measured and
//! printed separately.
//!
//! - [`plan`]: what to run: targets, phases (churn, hold), pacing, limits, pass criteria.
//! - [`limits`]: raising `RLIMIT_NOFILE` and refusing, before starting, runs that cannot fit.
//! - [`handshake`]: one connection: connect (optionally from a chosen source address), read and
//!   parse the slot line, classify failures by kind.
//! - [`registry`]: the slot-uniqueness invariant (two open connections never share a slot).
//! - [`reset`]: resets on purpose (`--reset-fraction`).
//! - [`stats`]: histograms and error counters per worker, merged into a summary.
//! - [`kind`]: churn and hold, the phase kinds.
//! - [`engine`]: the worker threads, closed-loop and open-loop pacing, one phase; it stops
//!   early on a [`Shutdown`].
//! - [`measured`]: what a phase measured, as the engine hands it to the report.
//! - [`sysinfo`]: CPU time (getrusage, `/proc/PID/stat`), RSS and kernel memory readings.
//! - [`embedded`]: the in-process `callosum-server` used when no target is given.
//! - [`report`]: the results: schema, construction, the table and the JSON document.
//! - [`verdict`]: whether the run did what was asked, as an exit status.
//! - [`hgrm`], [`svg`]: percentile-distribution text and the latency plot.
//! - [`hlog`]: HdrHistogram interval logs (`--hlog`), the standard format of HdrHistogram's
//!   log writers and processors.
//! - [`merge`]: the results of several load generators (interval logs, JSON) as one report.
//! - [`progress`]: the live progress bar on a terminal.

pub mod embedded;
pub mod engine;
pub mod handshake;
pub mod hgrm;
pub mod hlog;
pub mod kind;
pub mod limits;
pub mod measured;
pub mod merge;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod report;
pub mod reset;
pub mod shutdown;
pub mod stats;
pub mod svg;
pub mod sysinfo;
pub mod verdict;

pub use engine::LoadgenError;
pub use plan::{Criteria, EmbeddedConfig, Pacing, Phase, PhaseKind, Plan, PlanError};
pub use report::{Report, RunReport};
pub use shutdown::Shutdown;
pub use verdict::Verdict;

use std::io::Write;

/// Runs every phase of `plan` in order and returns the report, writing each phase's table to
/// `out` as soon as the phase ends. The plan is validated and checked against the limits
/// first; a run that cannot fit them is refused before anything starts.
pub fn run(plan: &Plan, shutdown: &Shutdown, out: impl Write) -> Result<Report, LoadgenError> {
    engine::run(plan, shutdown, out)
}
