//! The Callosum load generator and balance simulator, three programs sharing one command line:
//!
//! - [`instrument`]: the load instrument. Opens thousands of connections against Callosum
//!   servers (or an embedded one) and measures handshake latency histograms, the slot
//!   distribution, errors by kind and its own CPU use.
//! - [`balance`]: the balance study: the deterministic discrete-event simulator of the
//!   self-balancing policies (`simulate`, and `sweep` over a grid of its parameters), and
//!   the same scenarios live on loopback (`balance`), sharing the scenario, the metrics and
//!   the report.
//! - [`cli`]: the command line of all three, with one vocabulary of options.
//! - `chart`: what the SVG figures of all three share (fonts, palette, legends beside the plot).
//!
//! ```no_run
//! use callosum_loadgen::{Plan, Shutdown};
//! let plan = Plan::default(); // embedded server, a short churn then a hold
//! let report = callosum_loadgen::run(&plan, &Shutdown::new(), std::io::stdout())?;
//! assert!(report.verdict(&plan.criteria).is_pass());
//! # Ok::<(), callosum_loadgen::LoadgenError>(())
//! ```
#![deny(missing_docs)]

pub mod balance;
mod chart;
pub mod cli;
pub mod instrument;

pub use instrument::{
    LoadgenError, Pacing, Phase, PhaseKind, Plan, Report, RunReport, Shutdown, Verdict, run,
};
