//! The results of a run: one [`RunReport`] per phase, printed as a table for a reader and
//! serialised as one documented JSON document (schema [`SCHEMA`], described field by field in
//! the README's "JSON output" section and pinned by a test).
//!
//! Latencies are microseconds. "Per handshake" CPU figures divide the CPU time of the whole
//! phase (warmup included) by every handshake attempted in it; handshakes per second count the
//! recorded (post-warmup) successes over the recorded window.

use std::fmt::Write as _;
use std::net::SocketAddr;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{Config, Pacing, Phase, PhaseKind};
use crate::embedded::ServerStats;
use crate::handshake::ErrorKind;
use crate::stats::LatencySummary;
use crate::stats::PhaseResult;

/// The JSON document's `schema` value; changes when a field changes meaning or goes away.
pub const SCHEMA: &str = "callosum-loadgen/v1";

/// An open-loop run counts as having achieved its rate when it completed at least this share
/// of the target rate.
const RATE_ACHIEVED_SHARE: f64 = 0.95;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// One entry per phase, in the order they ran.
    pub runs: Vec<RunReport>,
    /// The embedded server's counters after it stopped (null for external targets).
    pub embedded_final_stats: Option<ServerStats>,
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
    /// Phase duration, seconds (for a hold: until every connection was open or failed).
    pub elapsed_s: f64,
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
    /// The handshake latency histogram (µs); not serialised.
    #[serde(skip)]
    pub handshake_histogram: Histogram<u64>,
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
    /// A few messages, as `kind: message`.
    pub samples: Vec<String>,
}

/// Connections the tool reset on purpose (not errors), by point (see [`crate::reset`]).
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
    /// `server_s` per attempted handshake, µs.
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
    /// (both ends of every connection), of `--server-pid` otherwise; null when unknown.
    pub rss_per_held_connection_bytes: Option<f64>,
    /// The kernel's memory per held connection (host-wide growth over the hold; on one host,
    /// both ends of every connection); null when unreadable.
    pub kernel_per_held_connection: Option<crate::sysinfo::KernelShare>,
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

impl TargetSlots {
    /// The distribution of a sorted list of slots.
    pub fn new(target: String, slots: Vec<u32>) -> Self {
        let mut ranges: Vec<[u32; 2]> = Vec::new();
        let mut duplicates = 0;
        for (i, &s) in slots.iter().enumerate() {
            if i > 0 && slots[i - 1] == s {
                duplicates += 1;
                continue;
            }
            match ranges.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(s) => r[1] = s,
                _ => ranges.push([s, s]),
            }
        }
        let distinct: u64 = ranges.iter().map(|r| u64::from(r[1] - r[0]) + 1).sum();
        let (lowest, highest) = (slots.first().copied(), slots.last().copied());
        let span = lowest.zip(highest).map_or(0, |(l, h)| u64::from(h - l) + 1);
        Self {
            target,
            held: slots.len() as u64,
            lowest,
            highest,
            gaps: span - distinct,
            duplicates,
            slot_ranges: ranges,
            slots,
        }
    }
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

fn per_handshake_us(cpu_s: f64, attempted: u64) -> f64 {
    if attempted == 0 {
        0.0
    } else {
        cpu_s * 1e6 / attempted as f64
    }
}

impl RunReport {
    pub(crate) fn new(
        config: &Config,
        phase: &Phase,
        targets: &[SocketAddr],
        embedded: bool,
        r: PhaseResult,
    ) -> Self {
        let rec = &r.rec;
        let attempted = rec.ok_total + rec.errors.total() + rec.resets.after_connect;
        let recorded = rec.handshake.len();
        let window_s = secs(r.window);
        let handshakes_per_s = if window_s > 0.0 {
            recorded as f64 / window_s
        } else {
            0.0
        };
        let elapsed_s = secs(r.elapsed);
        let loadgen_s = secs(r.loadgen_cpu);
        let server_s = r.server_cpu.map(secs);
        let errors = &rec.errors;
        let rate = match phase.pacing {
            Pacing::Open { rate, .. } => Some(RateReport {
                target_per_s: rate,
                started_per_s: if elapsed_s > 0.0 {
                    rec.started as f64 / elapsed_s
                } else {
                    0.0
                },
                achieved_per_s: handshakes_per_s,
                late_starts: rec.late_starts,
                achieved: handshakes_per_s >= RATE_ACHIEVED_SHARE * rate,
            }),
            Pacing::Closed { .. } => None,
        };
        let hold = match phase.kind {
            PhaseKind::Hold { connections, .. } => {
                let per_target: Vec<TargetSlots> = targets
                    .iter()
                    .zip(r.held_slots)
                    .map(|(t, slots)| TargetSlots::new(t.to_string(), slots))
                    .collect();
                Some(HoldReport {
                    requested: connections,
                    held: per_target.iter().map(|t| t.held).sum(),
                    closed_by_server: r.closed_by_server,
                    latency_by_held_quarter: rec
                        .by_held_quarter
                        .iter()
                        .map(LatencySummary::of)
                        .collect(),
                    per_target,
                    rss_per_held_connection_bytes: r.rss_per_held,
                    kernel_per_held_connection: r.kernel_per_held,
                })
            }
            PhaseKind::Churn { .. } => None,
        };
        let mut examples: Vec<u32> = r.violations.iter().flat_map(|(_, e)| e.clone()).collect();
        examples.truncate(16);
        Self {
            scenario: phase.kind.name(),
            targets: targets.iter().map(ToString::to_string).collect(),
            embedded,
            pacing: match phase.pacing {
                Pacing::Closed { concurrency } => PacingReport::Closed { concurrency },
                Pacing::Open {
                    rate,
                    max_in_flight,
                } => PacingReport::Open {
                    rate,
                    max_in_flight,
                },
            },
            workers: config.workers,
            src_ips: config.src_ips.unwrap_or(1),
            warmup_s: secs(phase.warmup),
            elapsed_s,
            window_s,
            attempted,
            succeeded: rec.ok_total,
            recorded,
            handshakes_per_s,
            handshake_us: LatencySummary::of(&rec.handshake),
            connect_us: LatencySummary::of(&rec.connect),
            errors: ErrorsReport {
                refused: errors.get(ErrorKind::Refused),
                timeout: errors.get(ErrorKind::Timeout),
                reset: errors.get(ErrorKind::Reset),
                protocol: errors.get(ErrorKind::Protocol),
                no_slot: errors.get(ErrorKind::NoSlot),
                other: errors.get(ErrorKind::Other),
                total: errors.total(),
                samples: errors
                    .samples
                    .iter()
                    .map(|(k, m)| format!("{}: {m}", k.name()))
                    .collect(),
            },
            resets: (config.reset_fraction > 0.0).then(|| ResetsReport {
                fraction: config.reset_fraction,
                after_connect: rec.resets.after_connect,
                after_line: rec.resets.after_line,
                after_hold: rec.resets.after_hold,
                total: rec.resets.total(),
            }),
            rate,
            invariant: InvariantReport {
                violations: r.violations.iter().map(|(n, _)| n).sum(),
                examples,
            },
            cpu: CpuReport {
                loadgen_s,
                loadgen_us_per_handshake: per_handshake_us(loadgen_s, attempted),
                loadgen_cores: if elapsed_s > 0.0 {
                    loadgen_s / elapsed_s
                } else {
                    0.0
                },
                cores: crate::config::default_workers(),
                process_s: secs(r.process_cpu),
                server_s,
                server_us_per_handshake: server_s.map(|s| per_handshake_us(s, attempted)),
            },
            hold,
            server_stats: r.server_stats,
            handshake_histogram: r.rec.handshake,
            connect_histogram: r.rec.connect,
        }
    }

    /// The readable table for this phase.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let target = if self.embedded {
            format!("{} (embedded callosum-server)", self.targets.join(", "))
        } else {
            self.targets.join(", ")
        };
        let pacing = match self.pacing {
            PacingReport::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            PacingReport::Open {
                rate,
                max_in_flight,
            } => format!(
                "open loop, {} /s (at most {max_in_flight} in flight)",
                group(rate as u64)
            ),
        };
        let _ = writeln!(
            t,
            "== {} against {target}\n   {pacing}, {} workers, {} source address(es), warmup {:.1} s",
            self.scenario, self.workers, self.src_ips, self.warmup_s
        );
        let _ = writeln!(
            t,
            "handshakes  {} recorded in {:.2} s = {} /s  ({} ok in all, {} errors, phase {:.2} s)",
            group(self.recorded),
            self.window_s,
            group(self.handshakes_per_s.round() as u64),
            group(self.succeeded),
            group(self.errors.total),
            self.elapsed_s
        );
        let _ = writeln!(
            t,
            "latency µs  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, s) in [
            ("handshake", &self.handshake_us),
            ("connect", &self.connect_us),
        ] {
            let _ = writeln!(
                t,
                "  {name:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                group(s.p50),
                group(s.p90),
                group(s.p99),
                group(s.p999),
                group(s.p9999),
                group(s.max)
            );
        }
        let e = &self.errors;
        let _ = writeln!(
            t,
            "errors      refused {} · timeout {} · reset {} · protocol {} · no slot {} · other {}",
            e.refused, e.timeout, e.reset, e.protocol, e.no_slot, e.other
        );
        for s in &e.samples {
            let _ = writeln!(t, "              e.g. {s}");
        }
        if let Some(r) = &self.resets {
            let _ = writeln!(
                t,
                "resets      {} on purpose ({:.0} % asked, not errors): {} after connect · {} after the line · {} after a short hold",
                group(r.total),
                r.fraction * 100.0,
                group(r.after_connect),
                group(r.after_line),
                group(r.after_hold)
            );
        }
        if let Some(rate) = &self.rate {
            let verdict = if rate.achieved {
                "achieved"
            } else {
                "NOT ACHIEVED"
            };
            let _ = writeln!(
                t,
                "rate        target {} /s: {verdict} ({} /s completed, {} /s started, {} late starts)",
                group(rate.target_per_s as u64),
                group(rate.achieved_per_s as u64),
                group(rate.started_per_s as u64),
                group(rate.late_starts)
            );
        }
        let c = &self.cpu;
        let mut cpu = format!(
            "cpu         loadgen {:.2} s = {:.1} µs/handshake ({:.2} of {} cores busy)",
            c.loadgen_s, c.loadgen_us_per_handshake, c.loadgen_cores, c.cores
        );
        if let (Some(s), Some(per)) = (c.server_s, c.server_us_per_handshake) {
            let _ = write!(cpu, " · server {s:.2} s = {per:.1} µs/handshake");
        }
        let _ = writeln!(t, "{cpu}");
        if self.invariant.violations == 0 {
            let _ = writeln!(
                t,
                "slots       invariant held: no slot was held twice at once"
            );
        } else {
            let _ = writeln!(
                t,
                "slots       !!! INVARIANT VIOLATED: {} time(s) two open connections held one slot (e.g. {:?}) !!!",
                self.invariant.violations, self.invariant.examples
            );
        }
        if let Some(h) = &self.hold {
            let _ = writeln!(
                t,
                "hold        {} of {} held, {} closed by the server",
                group(h.held),
                group(h.requested),
                group(h.closed_by_server)
            );
            let q = &h.latency_by_held_quarter;
            if q.len() == 4 {
                let _ = writeln!(
                    t,
                    "  handshake p99 µs as the held count grew: 0-25% {} · 25-50% {} · 50-75% {} · 75-100% {}",
                    group(q[0].p99),
                    group(q[1].p99),
                    group(q[2].p99),
                    group(q[3].p99)
                );
            }
            for ts in &h.per_target {
                let range = match (ts.lowest, ts.highest) {
                    (Some(l), Some(h)) => format!("slots {l}..={h}"),
                    _ => "no slot".to_owned(),
                };
                let _ = writeln!(
                    t,
                    "  {}: {} held, {range}, {} gaps, {} duplicates",
                    ts.target,
                    group(ts.held),
                    ts.gaps,
                    ts.duplicates
                );
            }
            if let Some(rss) = h.rss_per_held_connection_bytes {
                let whose = if self.embedded {
                    "this process: embedded server and load generator ends"
                } else {
                    "the --server-pid process"
                };
                let _ = writeln!(
                    t,
                    "memory      {rss:.0} B RSS per held connection ({whose})"
                );
            }
            if let Some(k) = &h.kernel_per_held_connection {
                let bytes = |b: Option<f64>| b.map_or("?".to_owned(), |b| format!("{b:.0} B"));
                let _ = writeln!(
                    t,
                    "kernel      {} objects + {} socket buffers per held connection (host-wide, \
                     both ends on one host)",
                    bytes(k.slab_bytes),
                    bytes(k.socket_buffer_bytes),
                );
            }
        }
        t
    }
}

impl Report {
    /// The readable tables of every phase.
    pub fn table(&self) -> String {
        self.runs
            .iter()
            .map(RunReport::table)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes the readable tables of every phase to `out`.
    pub fn write_table(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self.table().as_bytes())
    }

    /// Writes the JSON document (and a newline) to `out`.
    pub fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        writeln!(out, "{}", self.to_json())
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        // Plain data with string keys and finite numbers serialises without error; fall back
        // to an explicit error document rather than panicking.
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"schema\":\"{SCHEMA}\",\"error\":\"{e}\"}}"))
    }
}

/// `1234567` as `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
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
