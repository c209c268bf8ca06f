//! The results of a run: one [`RunReport`] per phase, as plain data. This module is the
//! schema: the JSON document (schema [`SCHEMA`], described field by field in docs/loadgen.md
//! and pinned by a test) is these types serialised. `build` makes them from what the engine
//! measured; [`print`](mod@print) writes the table a reader sees.
//!
//! Latencies are microseconds. "Per handshake" CPU figures divide the CPU time of the whole
//! phase (warmup included) by every handshake attempted in it; handshakes per second count the
//! recorded (post-warmup) successes over the recorded window.

mod build;
pub mod print;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::instrument::embedded::ServerStats;
use crate::instrument::handshake::ErrorKind;
use crate::instrument::stats::LatencySummary;

pub use print::group;

/// The JSON document's `schema` value; changes when a field changes meaning or goes away.
pub const SCHEMA: &str = "callosum-loadgen/v2";

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// One entry per phase, in the order they ran.
    pub runs: Vec<RunReport>,
    /// The embedded server's counters after it stopped (null for external targets).
    pub embedded_final_stats: Option<ServerStats>,
    /// Whether the run was stopped by the user (Ctrl-C) before it ended.
    pub interrupted: bool,
}

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `churn` or `hold`.
    pub scenario: &'static str,
    /// The targets, as `ip:port`.
    pub targets: Vec<String>,
    /// Whether the target was the embedded server.
    pub embedded: bool,
    /// How connections were paced.
    pub pacing: PacingReport,
    /// Worker threads.
    pub workers: usize,
    /// Source addresses used (127.0.0.1 ..= 127.0.0.N); 1 means not bound.
    pub src_ips: u8,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// The duration asked for, seconds (a churn bounded by time); null otherwise.
    pub requested_duration_s: Option<f64>,
    /// Phase duration, seconds (for a hold: until every connection was open or failed).
    pub elapsed_s: f64,
    /// Why the phase stopped before its end on its own (every attempt of the first second
    /// failed the same way); null when it did not.
    pub stopped_early: Option<String>,
    /// Recorded window: from the end of warmup to the last recorded success, seconds.
    pub window_s: f64,
    /// Handshakes attempted (successes plus errors plus connections reset on purpose before
    /// their slot line, warmup included).
    pub attempted: u64,
    /// Successful handshakes, warmup included.
    pub succeeded: u64,
    /// Successful handshakes recorded in the histograms (after warmup).
    pub recorded: u64,
    /// `recorded / window_s`.
    pub handshakes_per_s: f64,
    /// Connect start to slot line CRLF read, µs.
    pub handshake_us: LatencySummary,
    /// Connect start to connection established, µs.
    pub connect_us: LatencySummary,
    /// Errors by kind.
    pub errors: ErrorsReport,
    /// Connections reset on purpose (`--reset-fraction`); null when none were asked for.
    pub resets: Option<ResetsReport>,
    /// Open loop only: the target rate and what was achieved.
    pub rate: Option<RateReport>,
    /// The slot-uniqueness invariant.
    pub invariant: InvariantReport,
    /// CPU time of the load generator and of the server.
    pub cpu: CpuReport,
    /// Hold only: what was held.
    pub hold: Option<HoldReport>,
    /// The embedded server's counters (for a hold: at full hold).
    pub server_stats: Option<ServerStats>,
    /// The handshake latency histogram (µs) as HdrHistogram's compressed V2 encoding in
    /// base64 (the payload of an interval log line), so results of several machines merge
    /// exactly (`callosum-loadgen merge`).
    #[serde(serialize_with = "crate::instrument::hlog::serialize_histogram")]
    pub handshake_histogram: Histogram<u64>,
    /// The recorded handshake latencies by 1 s interval of the phase (`--hlog`); not
    /// serialised.
    #[serde(skip)]
    pub intervals: crate::instrument::hlog::Intervals,
    /// The wall clock when the phase started; not serialised.
    #[serde(skip)]
    pub started_at: std::time::SystemTime,
    /// The connect latency histogram (µs); not serialised.
    #[serde(skip)]
    pub connect_histogram: Histogram<u64>,
}

/// How connections were paced.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PacingReport {
    /// `concurrency` handshakes in flight.
    Closed {
        /// Handshakes in flight.
        concurrency: usize,
    },
    /// `rate` per second on a fixed schedule.
    Open {
        /// Target new connections per second.
        rate: f64,
        /// Most handshakes in flight.
        max_in_flight: usize,
    },
}

/// Errors by kind (see [`ErrorKind`]).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorsReport {
    /// Connection refused.
    pub refused: u64,
    /// Connect or slot line timed out.
    pub timeout: u64,
    /// Connection reset.
    pub reset: u64,
    /// Malformed or truncated slot line.
    pub protocol: u64,
    /// Closed without any byte.
    pub no_slot: u64,
    /// Anything else (for example ephemeral ports exhausted).
    pub other: u64,
    /// Sum of the above.
    pub total: u64,
    /// Up to three distinct messages per kind, each with how many errors carried it.
    pub samples: Vec<ErrorSampleReport>,
}

/// One distinct error message.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSampleReport {
    /// Its kind (as in [`ErrorsReport`]'s fields).
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// How many errors carried it.
    pub count: u64,
}

/// Connections the tool reset on purpose (not errors), by point (see [`crate::instrument::reset`]).
#[derive(Debug, Clone, Serialize)]
pub struct ResetsReport {
    /// The share of connections asked to be reset.
    pub fraction: f64,
    /// Reset as soon as connected, before the slot line was read.
    pub after_connect: u64,
    /// Reset right after the slot line (counted as successes too).
    pub after_line: u64,
    /// Reset after a short hold behind the slot line (counted as successes too).
    pub after_hold: u64,
    /// Sum of the above.
    pub total: u64,
}

/// The target rate of an open-loop run and what was achieved.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// New connections per second asked for.
    pub target_per_s: f64,
    /// Handshakes started per second of the phase.
    pub started_per_s: f64,
    /// Recorded successes per second (`handshakes_per_s`).
    pub achieved_per_s: f64,
    /// Starts more than 10 ms behind their schedule.
    pub late_starts: u64,
    /// Whether at least 95 % of the target rate was achieved.
    pub achieved: bool,
}

/// The slot-uniqueness invariant.
#[derive(Debug, Clone, Serialize)]
pub struct InvariantReport {
    /// Times a slot was seen held by two open connections to one target at once (must be 0).
    pub violations: u64,
    /// Some of the slots involved.
    pub examples: Vec<u32>,
}

/// CPU time.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// CPU time of the load generator's worker threads, seconds.
    pub loadgen_s: f64,
    /// `loadgen_s` per attempted handshake, µs.
    pub loadgen_us_per_handshake: f64,
    /// `loadgen_s / elapsed_s`: cores kept busy by the load generator.
    pub loadgen_cores: f64,
    /// Cores on the machine.
    pub cores: usize,
    /// CPU time of the whole process (embedded server included), seconds.
    pub process_s: f64,
    /// Server CPU time, seconds: the embedded server's (process minus workers) or the
    /// `--server-pid` process's utime+stime; null when unknown.
    pub server_s: Option<f64>,
    /// `server_s` per handshake attempted at that server (with several targets, those it
    /// listens on), µs.
    pub server_us_per_handshake: Option<f64>,
}

/// What a hold held.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    /// Connections asked for.
    pub requested: u64,
    /// Connections open at the end of the hold.
    pub held: u64,
    /// Connections the server closed during the hold.
    pub closed_by_server: u64,
    /// Handshake latency (µs) as the held count grew: four summaries, for the connections
    /// opened while 0–25 %, 25–50 %, 50–75 % and 75–100 % of `requested` were already held.
    pub latency_by_held_quarter: Vec<LatencySummary>,
    /// The slot distribution per target.
    pub per_target: Vec<TargetSlots>,
    /// (RSS at full hold − RSS before) / held, bytes: of this process for the embedded server
    /// (both ends of every connection), of `--server-pid` otherwise (divided by the
    /// connections to the targets that process listens on); null when unknown.
    pub rss_per_held_connection_bytes: Option<f64>,
    /// The kernel's memory per held connection (host-wide growth over the hold; on one host,
    /// both ends of every connection); null when unreadable.
    pub kernel_per_held_connection: Option<crate::instrument::sysinfo::KernelShare>,
}

/// The slots held on one target at the end of a hold.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSlots {
    /// `ip:port`.
    pub target: String,
    /// Connections held.
    pub held: u64,
    /// Lowest slot held.
    pub lowest: Option<u32>,
    /// Highest slot held.
    pub highest: Option<u32>,
    /// Slots between `lowest` and `highest` not held (0 for a dense distribution).
    pub gaps: u64,
    /// Slots held by more than one connection (must be 0).
    pub duplicates: u64,
    /// The slots held, as inclusive `[first, last]` ranges.
    pub slot_ranges: Vec<[u32; 2]>,
    /// Every slot held, sorted; not serialised (see `slot_ranges`).
    #[serde(skip)]
    pub slots: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn slot_distributions_are_ranges_with_gaps_and_duplicates() {
        let t = TargetSlots::new("x".into(), vec![0, 1, 2, 2, 5, 6, 9]);
        assert_eq!(t.slot_ranges, vec![[0, 2], [5, 6], [9, 9]]);
        assert_eq!((t.held, t.duplicates, t.gaps), (7, 1, 4));
        assert_eq!((t.lowest, t.highest), (Some(0), Some(9)));
        let dense = TargetSlots::new("x".into(), (0..2000).collect());
        assert_eq!(dense.slot_ranges, vec![[0, 1999]]);
        assert_eq!((dense.gaps, dense.duplicates), (0, 0));
        let empty = TargetSlots::new("x".into(), vec![]);
        assert_eq!((empty.held, empty.gaps, empty.lowest), (0, 0, None));
    }
}
