//! Building the report from what the engine measured: every derived figure (rates, CPU per
//! handshake, the verdict on an open-loop rate, the slot distribution) is computed here, once.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    CpuReport, ErrorSampleReport, ErrorsReport, HoldReport, InvariantReport, PacingReport,
    RateReport, Report, ResetsReport, RunReport, SCHEMA, TargetSlots,
};
use crate::instrument::embedded::ServerStats;
use crate::instrument::handshake::ErrorKind;
use crate::instrument::measured::PhaseResult;
use crate::instrument::plan::{Pacing, Phase, PhaseKind, Plan};
use crate::instrument::stats::{ErrorCounts, LatencySummary};

/// An open-loop run counts as having achieved its rate when it completed at least this share
/// of the target rate.
const RATE_ACHIEVED_SHARE: f64 = 0.95;

impl Report {
    /// The report of a run's phases.
    pub(crate) fn new(
        runs: Vec<RunReport>,
        embedded_final_stats: Option<ServerStats>,
        interrupted: bool,
    ) -> Self {
        Report {
            schema: SCHEMA,
            runs,
            embedded_final_stats,
            interrupted,
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn per_handshake_us(cpu_s: f64, attempted: u64) -> f64 {
    per(cpu_s * 1e6, attempted as f64)
}

/// `n / d`, or 0 when `d` is not positive.
fn per(n: f64, d: f64) -> f64 {
    if d > 0.0 { n / d } else { 0.0 }
}

impl RunReport {
    /// The report of `phase` of `plan` against `targets`, from what the engine measured.
    pub(crate) fn new(
        plan: &Plan,
        phase: &Phase,
        targets: &[SocketAddr],
        embedded: bool,
        r: PhaseResult,
    ) -> Self {
        let rec = &r.rec;
        let attempted = rec.ok_total + rec.errors.total() + rec.resets.after_connect;
        let recorded = rec.handshake.len();
        let window_s = secs(r.window);
        let handshakes_per_s = per(recorded as f64, window_s);
        let elapsed_s = secs(r.elapsed);
        let rate = match phase.pacing {
            Pacing::Open { rate, .. } => Some(RateReport {
                target_per_s: rate,
                started_per_s: per(rec.started as f64, elapsed_s),
                achieved_per_s: handshakes_per_s,
                late_starts: rec.late_starts,
                achieved: handshakes_per_s >= RATE_ACHIEVED_SHARE * rate,
            }),
            Pacing::Closed { .. } => None,
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
            workers: plan.workers,
            src_ips: plan.src_ips.unwrap_or(1),
            warmup_s: secs(phase.warmup),
            requested_duration_s: r.requested.map(secs),
            elapsed_s,
            stopped_early: r.stopped_early.clone(),
            window_s,
            attempted,
            succeeded: rec.ok_total,
            recorded,
            handshakes_per_s,
            handshake_us: LatencySummary::of(&rec.handshake),
            connect_us: LatencySummary::of(&rec.connect),
            errors: ErrorsReport::of(&rec.errors),
            resets: (plan.reset_fraction > 0.0).then(|| ResetsReport {
                fraction: plan.reset_fraction,
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
            cpu: CpuReport::of(&r, attempted, elapsed_s),
            hold: HoldReport::of(phase, targets, &r),
            server_stats: r.server_stats,
            handshake_histogram: r.rec.handshake,
            connect_histogram: r.rec.connect,
            intervals: r.intervals,
            started_at: r.started_at,
        }
    }
}

impl ErrorsReport {
    fn of(errors: &ErrorCounts) -> Self {
        ErrorsReport {
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
                .map(|s| ErrorSampleReport {
                    kind: s.kind,
                    message: s.message.clone(),
                    count: s.count,
                })
                .collect(),
        }
    }
}

impl CpuReport {
    /// CPU per handshake divides by every handshake attempted; the server's, by those
    /// attempted at the targets it serves (`server_share` of them).
    fn of(r: &PhaseResult, attempted: u64, elapsed_s: f64) -> Self {
        let loadgen_s = secs(r.loadgen_cpu);
        let server_s = r.server_cpu.map(secs);
        let at_server = (attempted as f64 * r.server_share).round() as u64;
        CpuReport {
            loadgen_s,
            loadgen_us_per_handshake: per_handshake_us(loadgen_s, attempted),
            loadgen_cores: per(loadgen_s, elapsed_s),
            cores: crate::instrument::plan::default_workers(),
            process_s: secs(r.process_cpu),
            server_s,
            server_us_per_handshake: server_s.map(|s| per_handshake_us(s, at_server)),
        }
    }
}

impl HoldReport {
    /// A hold's report (`None` for any other kind).
    fn of(phase: &Phase, targets: &[SocketAddr], r: &PhaseResult) -> Option<Self> {
        let PhaseKind::Hold { connections, .. } = phase.kind else {
            return None;
        };
        let per_target: Vec<TargetSlots> = targets
            .iter()
            .zip(&r.held_slots)
            .map(|(t, slots)| TargetSlots::new(t.to_string(), slots.clone()))
            .collect();
        Some(HoldReport {
            requested: connections,
            held: per_target.iter().map(|t| t.held).sum(),
            closed_by_server: r.closed_by_server,
            latency_by_held_quarter: r
                .rec
                .by_held_quarter
                .iter()
                .map(LatencySummary::of)
                .collect(),
            per_target,
            rss_per_held_connection_bytes: r.rss_per_held,
            kernel_per_held_connection: r.kernel_per_held,
        })
    }
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
