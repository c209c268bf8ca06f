//! What each worker records (histograms, counts, errors by kind) and how the workers' records
//! merge into one.
//!
//! Each worker owns its [`Recorder`] (no sharing, no atomics on the hot path); the engine
//! merges them when the workers are done. Latencies are microseconds in HdrHistograms with 3
//! significant figures, from 1 µs to one hour (longer values are clamped to the top).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::instrument::handshake::{ErrorKind, HandshakeError};
use crate::instrument::reset::ResetCounts;

/// Highest latency recorded, in microseconds (one hour); longer ones are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant figures kept by the histograms.
pub const SIGFIG: u8 = 3;
/// Error messages kept per kind, as examples for the report.
const SAMPLES_PER_KIND: usize = 3;

/// A new, empty latency histogram (µs, 3 significant figures).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants within hdrhistogram's accepted ranges.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG).expect("valid histogram bounds")
}

/// Errors counted by kind, with a few distinct example messages and how often each occurred.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts {
    /// Count per kind, indexed by [`ErrorKind::index`].
    pub counts: [u64; ErrorKind::ALL.len()],
    /// Up to `SAMPLES_PER_KIND` distinct messages per kind, each with its count.
    pub samples: Vec<ErrorSample>,
}

/// One distinct error message and how many errors carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorSample {
    /// The error's kind.
    pub kind: ErrorKind,
    /// Its message.
    pub message: String,
    /// How many errors had this message.
    pub count: u64,
}

impl ErrorCounts {
    /// Counts one error.
    pub fn add(&mut self, err: &HandshakeError) {
        let kind = err.kind();
        self.counts[kind.index()] += 1;
        self.note(kind, err.to_string(), 1);
    }

    /// Adds `count` errors with `message` to the samples (a new sample while there is room).
    fn note(&mut self, kind: ErrorKind, message: String, count: u64) {
        if let Some(s) = self
            .samples
            .iter_mut()
            .find(|s| s.kind == kind && s.message == message)
        {
            s.count += count;
        } else if self.samples_of(kind) < SAMPLES_PER_KIND {
            self.samples.push(ErrorSample {
                kind,
                message,
                count,
            });
        }
    }

    fn samples_of(&self, kind: ErrorKind) -> usize {
        self.samples.iter().filter(|s| s.kind == kind).count()
    }

    /// Errors of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.counts[kind.index()]
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another worker's errors.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for s in &other.samples {
            self.note(s.kind, s.message.clone(), s.count);
        }
    }
}

/// One worker's (or, merged, the whole phase's) record.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Handshake latency (start to CRLF read), µs, recorded handshakes only.
    pub handshake: Histogram<u64>,
    /// Connect latency (start to connection established), µs, recorded handshakes only.
    pub connect: Histogram<u64>,
    /// Successful handshakes, warmup included.
    pub ok_total: u64,
    /// Errors by kind, warmup included.
    pub errors: ErrorCounts,
    /// Connections reset on purpose (`--reset-fraction`), by point, warmup included.
    pub resets: ResetCounts,
    /// Completion time of the last successful recorded handshake.
    pub last_completion: Option<Instant>,
    /// Open loop: starts that happened more than [`LATE_START`] after their intended time.
    pub late_starts: u64,
    /// Open loop: handshakes started.
    pub started: u64,
    /// Hold: handshake latency (µs) by the quarter of the hold the connection was opened in
    /// (first quarter: 0 to 25 % of the connections already held, …).
    pub by_held_quarter: [Histogram<u64>; 4],
}

/// An open-loop start this much behind schedule counts as late.
pub const LATE_START: Duration = Duration::from_millis(10);

impl Default for Recorder {
    fn default() -> Self {
        Self {
            handshake: new_histogram(),
            connect: new_histogram(),
            ok_total: 0,
            errors: ErrorCounts::default(),
            resets: ResetCounts::default(),
            last_completion: None,
            late_starts: 0,
            started: 0,
            by_held_quarter: std::array::from_fn(|_| new_histogram()),
        }
    }
}

impl Recorder {
    /// Records a success; latencies go to the histograms only when `recorded` (after warmup).
    pub fn success(&mut self, connect: Duration, handshake: Duration, recorded: bool) {
        self.ok_total += 1;
        if recorded {
            self.handshake.saturating_record(micros(handshake));
            self.connect.saturating_record(micros(connect));
            self.last_completion = Some(Instant::now());
        }
    }

    /// Adds another worker's record.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds and precision on both sides: adding cannot fail.
        let _ = self.handshake.add(&other.handshake);
        let _ = self.connect.add(&other.connect);
        self.ok_total += other.ok_total;
        self.errors.merge(&other.errors);
        self.resets.merge(&other.resets);
        self.last_completion = self.last_completion.max(other.last_completion);
        self.late_starts += other.late_starts;
        for (a, b) in self.by_held_quarter.iter_mut().zip(&other.by_held_quarter) {
            let _ = a.add(b);
        }
        self.started += other.started;
    }
}

/// A duration in whole microseconds, at least 1 (the histograms' lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The percentiles the report prints, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
}

impl LatencySummary {
    /// The summary of a histogram (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |q| h.value_at_quantile(q);
        Self {
            count: h.len(),
            min: h.min(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max(),
            mean: h.mean(),
            stdev: h.stdev(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_histograms() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.success(Duration::from_micros(10), Duration::from_micros(20), true);
        b.success(Duration::from_micros(30), Duration::from_micros(40), true);
        b.success(Duration::from_micros(30), Duration::from_micros(40), false);
        b.errors.add(&HandshakeError::NoSlot);
        a.merge(&b);
        assert_eq!(a.ok_total, 3);
        assert_eq!(a.handshake.len(), 2);
        assert_eq!(a.errors.get(ErrorKind::NoSlot), 1);
        assert_eq!(a.errors.total(), 1);
        let s = LatencySummary::of(&a.handshake);
        assert_eq!((s.min, s.max, s.count), (20, 40, 2));
    }

    #[test]
    fn error_samples_are_distinct_messages_with_counts() {
        let mut e = ErrorCounts::default();
        for _ in 0..10 {
            e.add(&HandshakeError::NoSlot);
        }
        for n in 1..=5 {
            e.add(&HandshakeError::Truncated(n));
            e.add(&HandshakeError::Truncated(n));
        }
        assert_eq!(e.get(ErrorKind::NoSlot), 10);
        assert_eq!(e.get(ErrorKind::Protocol), 10);
        let no_slot: Vec<_> = e
            .samples
            .iter()
            .filter(|s| s.kind == ErrorKind::NoSlot)
            .collect();
        assert_eq!(no_slot.len(), 1);
        assert_eq!(no_slot[0].count, 10);
        let protocol: Vec<_> = e
            .samples
            .iter()
            .filter(|s| s.kind == ErrorKind::Protocol)
            .map(|s| s.count)
            .collect();
        assert_eq!(protocol, vec![2; SAMPLES_PER_KIND]);
        let mut merged = e.clone();
        merged.merge(&e);
        assert_eq!(merged.samples.len(), e.samples.len());
        assert!(
            merged
                .samples
                .iter()
                .zip(&e.samples)
                .all(|(m, s)| m.count == 2 * s.count)
        );
    }

    #[test]
    fn an_empty_histogram_summarises_to_zero() {
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
        assert_eq!(micros(Duration::ZERO), 1);
    }
}
