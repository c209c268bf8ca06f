//! The balance study: how well clients balance load over servers by themselves, under each
//! policy, simulated and live.
//!
//! - [`model`]: the scenario (cluster, workload, events, timing) and the policies (the pool
//!   rules, written once in `callosum_client::pool::decide`, and the baseline routers).
//! - [`simulation`]: `simulate`, the deterministic discrete-event simulator (no sockets).
//! - [`live`]: `balance`, the same scenarios on loopback with real servers and clients.
//! - [`metrics`]: the figures both compute, by one definition.
//! - [`report`]: the report both produce, its table and its plot, and its summary over
//!   seeds.
//! - [`sweep`]: `sweep`, the original and the improved policy simulated over a grid of pool
//!   sizes, roving intervals, loads and cluster sizes, several seeds per cell.
//!
//! Why this shape: the simulator and the live harness are two ways to run one scenario and
//! measure it the same way; they share everything but the running, and nothing with the load
//! instrument ([`crate::instrument`]).

pub mod live;
pub mod metrics;
pub mod model;
pub mod report;
pub mod simulation;
pub mod sweep;

pub use live::{BalanceArgs, BalanceError};
pub use model::{ClusterArgs, Policy, PoolRules, SimConfig, SimError, Timing};
pub use report::SimReport;
pub use simulation::{SimulateArgs, simulate};
pub use sweep::{SweepArgs, SweepError};
