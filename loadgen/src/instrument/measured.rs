//! What one phase measured, as the engine hands it to the report: the merged worker records
//! and the readings taken around the phase. A module of its own so that the engine, which
//! fills it, and the report, which reads it, depend on it and not on each other.

use std::time::{Duration, SystemTime};

use crate::instrument::embedded::ServerStats;
use crate::instrument::hlog::Intervals;
use crate::instrument::stats::Recorder;
use crate::instrument::sysinfo::KernelShare;

/// Everything a phase measured, before it is turned into a report
/// ([`RunReport`](crate::instrument::report::RunReport)): the engine produces it, the report reads it.
pub(crate) struct PhaseResult {
    pub(crate) rec: Recorder,
    pub(crate) loadgen_cpu: Duration,
    pub(crate) process_cpu: Duration,
    pub(crate) server_cpu: Option<Duration>,
    /// The share of the handshakes that went to the server whose CPU `server_cpu` is.
    pub(crate) server_share: f64,
    pub(crate) elapsed: Duration,
    pub(crate) window: Duration,
    /// The phase's time limit, if it had one.
    pub(crate) requested: Option<Duration>,
    /// Why the phase stopped before its end, when it did on its own.
    pub(crate) stopped_early: Option<String>,
    /// The wall clock when the phase started.
    pub(crate) started_at: SystemTime,
    /// The recorded handshake latencies by interval of the phase.
    pub(crate) intervals: Intervals,
    pub(crate) held_slots: Vec<Vec<u32>>,
    pub(crate) closed_by_server: u64,
    pub(crate) rss_per_held: Option<f64>,
    pub(crate) kernel_per_held: Option<KernelShare>,
    pub(crate) server_stats: Option<ServerStats>,
    pub(crate) violations: Vec<(u64, Vec<u32>)>,
}
