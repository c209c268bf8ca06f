//! Merging the results of several load generators run against one deployment
//! (`callosum-loadgen merge FILE…`): one report whose percentiles are those of the union of all
//! handshakes, and whose rates are summed across machines.
//!
//! Percentiles cannot be averaged, so the merge works on whole histograms only: an interval log
//! (`--hlog`) carries one per interval, a JSON result (`--json`) one per run in its
//! `handshake_histogram` field (see [`crate::instrument::hlog::encode_histogram`]). Summing them is exact.
//! Results are grouped by scenario: a JSON run's `scenario` (the n-th run of the same scenario in
//! one file is `scenario#n`), an interval log line's tag (`untagged` without one).
//!
//! A JSON result brings its counts (attempted, succeeded, errors by kind) and its rate; the
//! merged rate is the sum of the machines' rates. An interval log brings latencies only: its
//! rate is the count of all logs' handshakes over the union of their time spans, and their
//! intervals are aligned on the absolute second they start in (`BaseTime` plus the offset), so
//! that [`Merged::write_hlog`] writes one interval log of the whole deployment. Give each
//! machine once, as its `.hlog` or its `.json`: the same handshakes given twice count twice.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::instrument::handshake::ErrorKind;
use crate::instrument::hlog::{self, DecodeError, HlogError, Intervals, LogWriter};
use crate::instrument::report::group;
use crate::instrument::report::print::{PERCENTILES, percentiles_ms};
use crate::instrument::stats::LatencySummary;

/// Schema of the merged JSON document.
pub const SCHEMA: &str = "callosum-loadgen-merge/v1";
/// Schema of the load generator's JSON results that merge.
pub const RESULT_SCHEMA: &str = crate::instrument::report::SCHEMA;
/// Group name of interval log lines without a tag.
pub const UNTAGGED: &str = "untagged";
/// Length of the merged intervals: the absolute seconds they are aligned on.
const SECOND: Duration = Duration::from_secs(1);

/// Why files could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No file was given.
    #[error("no file to merge")]
    NoInputs,
    /// A file was given twice: its handshakes would count twice.
    #[error("{path} is given twice")]
    Duplicate {
        /// The file.
        path: PathBuf,
    },
    /// A file is empty.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// No file holds a run or an interval.
    #[error("no run or interval in any file: nothing to merge")]
    NothingToMerge,
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A JSON file does not parse as a load generator result.
    #[error("{path}:{line}:{column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A JSON file of another schema.
    #[error("{path}: not a load generator result (schema {found:?}, expected {RESULT_SCHEMA:?})")]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        found: String,
    },
    /// A JSON run without the histogram that makes it mergeable.
    #[error(
        "{path}: run {run} ({scenario}) has no handshake_histogram (written by an older loadgen?)"
    )]
    MissingHistogram {
        /// The file.
        path: PathBuf,
        /// 1-based index in `runs`.
        run: usize,
        /// Its scenario.
        scenario: String,
    },
    /// A JSON run's histogram does not decode.
    #[error("{path}: run {run}: handshake_histogram: {source}")]
    Histogram {
        /// The file.
        path: PathBuf,
        /// 1-based index in `runs`.
        run: usize,
        /// The cause.
        source: DecodeError,
    },
    /// A histogram could not be added to the sum (values beyond any histogram's range).
    #[error("{path}: adding its histograms: {source}")]
    Add {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: HlogError,
    },
    /// An interval log could not be read.
    #[error(transparent)]
    Hlog(#[from] HlogError),
    /// Writing the merged output failed.
    #[error("writing the merged result: {0}")]
    Write(#[from] io::Error),
}

/// Errors by kind and their total, as in the JSON result (kinds named by [`ErrorKind::name`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorTotals {
    /// Count per kind, indexed by [`ErrorKind::index`].
    pub by_kind: [u64; ErrorKind::ALL.len()],
    /// All errors.
    pub total: u64,
}

impl ErrorTotals {
    /// Errors of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.by_kind[kind.index()]
    }

    /// The counts of a JSON result's `errors` object (absent kinds count 0).
    fn from_json(errors: &serde_json::Map<String, serde_json::Value>) -> Self {
        let count = |name: &str| errors.get(name).and_then(serde_json::Value::as_u64);
        let mut t = ErrorTotals::default();
        for kind in ErrorKind::ALL {
            t.by_kind[kind.index()] = count(kind.name()).unwrap_or(0);
        }
        t.total = count("total").unwrap_or_else(|| t.by_kind.iter().sum());
        t
    }

    fn add(&mut self, o: &ErrorTotals) {
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind) {
            *a += b;
        }
        self.total += o.total;
    }
}

impl Serialize for ErrorTotals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(ErrorKind::ALL.len() + 1))?;
        for kind in ErrorKind::ALL {
            m.serialize_entry(kind.name(), &self.get(kind))?;
        }
        m.serialize_entry("total", &self.total)?;
        m.end()
    }
}

/// The counts the JSON results bring (interval logs carry latencies only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Handshakes attempted.
    pub attempted: u64,
    /// Handshakes that succeeded.
    pub succeeded: u64,
    /// Errors by kind.
    pub errors: ErrorTotals,
}

/// One scenario (or tag) merged across files.
#[derive(Debug, Clone)]
pub struct Group {
    /// Scenario or tag.
    pub name: String,
    /// Handshake latency of every merged handshake, µs.
    pub histogram: Histogram<u64>,
    /// Files that had this scenario.
    pub files: usize,
    /// JSON runs merged.
    pub json_runs: usize,
    /// Interval logs merged.
    pub hlog_files: usize,
    /// Summed counts of the JSON runs; `None` when only interval logs had this scenario.
    pub counts: Option<Counts>,
    /// Handshakes per second of the whole deployment: the JSON runs' rates summed, plus the
    /// interval logs' handshakes over the union of their time spans.
    pub handshakes_per_s: f64,
    json_rate: f64,
    hlog_count: u64,
    /// Earliest start and latest end of the interval logs' intervals, since the epoch.
    hlog_span: Option<(Duration, Duration)>,
    last_file: Option<usize>,
}

impl Group {
    fn new(name: String) -> Self {
        Self {
            name,
            histogram: hlog::accumulator(),
            files: 0,
            json_runs: 0,
            hlog_files: 0,
            counts: None,
            handshakes_per_s: 0.0,
            json_rate: 0.0,
            hlog_count: 0,
            hlog_span: None,
            last_file: None,
        }
    }

    fn seen_in(&mut self, file: usize) {
        if self.last_file != Some(file) {
            self.last_file = Some(file);
            self.files += 1;
        }
    }

    fn rate(&self) -> f64 {
        let hlog = match self.hlog_span {
            Some((start, end)) if end > start => {
                self.hlog_count as f64 / (end - start).as_secs_f64()
            }
            _ => 0.0,
        };
        self.json_rate + hlog
    }
}

/// The merged result of several files.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The files merged, in the order given.
    pub files: Vec<PathBuf>,
    /// JSON results among them.
    pub json_files: usize,
    /// Interval logs among them.
    pub hlog_files: usize,
    /// One per scenario, in order of first appearance.
    pub groups: Vec<Group>,
    /// The interval logs' intervals by tag, indexed by absolute second since the epoch.
    timeline: BTreeMap<Option<String>, Intervals>,
}

/// Merges load generator results: interval logs and JSON results (told apart by content: a JSON
/// document starts with `{`).
pub fn merge(paths: &[PathBuf]) -> Result<Merged, MergeError> {
    if paths.is_empty() {
        return Err(MergeError::NoInputs);
    }
    let mut merged = Merged {
        files: paths.to_vec(),
        json_files: 0,
        hlog_files: 0,
        groups: Vec::new(),
        timeline: BTreeMap::new(),
    };
    for (file, path) in paths.iter().enumerate() {
        let resolved = crate::cli::resolve(path);
        if paths[..file]
            .iter()
            .any(|p| crate::cli::resolve(p) == resolved)
        {
            return Err(MergeError::Duplicate { path: path.clone() });
        }
        let bytes = std::fs::read(path).map_err(|source| MergeError::Read {
            path: path.clone(),
            source,
        })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_none() {
            return Err(MergeError::Empty { path: path.clone() });
        }
        if first == Some(&b'{') {
            merged.json_files += 1;
            merged.add_json(file, path, &bytes)?;
        } else {
            merged.hlog_files += 1;
            merged.add_hlog(file, path, &bytes)?;
        }
    }
    // A log of a run with no successful handshake has only its header, and merges as such;
    // files that hold nothing at all between them are no merge.
    if merged.groups.is_empty() {
        return Err(MergeError::NothingToMerge);
    }
    for g in &mut merged.groups {
        g.handshakes_per_s = g.rate();
    }
    Ok(merged)
}

/// The fields of a JSON result the merge reads.
#[derive(Deserialize)]
struct ResultDoc {
    #[serde(default)]
    runs: Vec<RunDoc>,
}

#[derive(Deserialize)]
struct RunDoc {
    scenario: String,
    #[serde(default)]
    attempted: u64,
    #[serde(default)]
    succeeded: u64,
    #[serde(default)]
    handshakes_per_s: Option<f64>,
    #[serde(default)]
    errors: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    handshake_histogram: Option<String>,
}

impl Merged {
    fn group(&mut self, name: &str) -> &mut Group {
        let i = match self.groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.groups.push(Group::new(name.to_owned()));
                self.groups.len() - 1
            }
        };
        &mut self.groups[i]
    }

    fn add_json(&mut self, file: usize, path: &Path, bytes: &[u8]) -> Result<(), MergeError> {
        let json_error = |e: serde_json::Error| MergeError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        // The schema first, so another tool's JSON (a simulation's, say) is named as such
        // rather than failing on whichever field differs first.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_error)?;
        let schema = value
            .get("schema")
            .and_then(|s| s.as_str())
            .unwrap_or("(none)");
        if schema != RESULT_SCHEMA {
            return Err(MergeError::Schema {
                path: path.to_owned(),
                found: schema.to_owned(),
            });
        }
        let doc: ResultDoc = serde_json::from_slice(bytes).map_err(json_error)?;
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, run) in doc.runs.iter().enumerate() {
            let text =
                run.handshake_histogram
                    .as_deref()
                    .ok_or_else(|| MergeError::MissingHistogram {
                        path: path.to_owned(),
                        run: i + 1,
                        scenario: run.scenario.clone(),
                    })?;
            let h = hlog::decode_histogram(text).map_err(|source| MergeError::Histogram {
                path: path.to_owned(),
                run: i + 1,
                source,
            })?;
            let n = seen.entry(&run.scenario).or_default();
            *n += 1;
            let name = match *n {
                1 => run.scenario.clone(),
                n => format!("{}#{n}", run.scenario),
            };
            let g = self.group(&name);
            g.seen_in(file);
            add(&mut g.histogram, &h, path)?;
            g.json_runs += 1;
            g.json_rate += run.handshakes_per_s.unwrap_or(0.0);
            let c = g.counts.get_or_insert_with(Counts::default);
            c.attempted += run.attempted;
            c.succeeded += run.succeeded;
            c.errors.add(&ErrorTotals::from_json(&run.errors));
        }
        Ok(())
    }

    fn add_hlog(&mut self, file: usize, path: &Path, bytes: &[u8]) -> Result<(), MergeError> {
        let mut tags_seen: Vec<Option<String>> = Vec::new();
        for interval in hlog::parse_log(bytes, path)? {
            let name = interval.tag.as_deref().unwrap_or(UNTAGGED).to_owned();
            let g = self.group(&name);
            g.seen_in(file);
            add(&mut g.histogram, &interval.histogram, path)?;
            g.hlog_count += interval.histogram.len();
            let end = interval.start + interval.length;
            g.hlog_span = Some(match g.hlog_span {
                Some((s, e)) => (s.min(interval.start), e.max(end)),
                None => (interval.start, end),
            });
            if !tags_seen.contains(&interval.tag) {
                tags_seen.push(interval.tag.clone());
                g.hlog_files += 1;
            }
            self.timeline
                .entry(interval.tag)
                .or_insert_with(|| Intervals::new(SECOND))
                .add(interval.start.as_secs(), &interval.histogram)
                .map_err(|source| MergeError::Add {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The merged intervals of one tag (`None`: untagged lines), by absolute second.
    pub fn timeline(&self, tag: Option<&str>) -> Option<&Intervals> {
        self.timeline.get(&tag.map(str::to_owned))
    }

    /// Prints the merged report: counts and rates, then the latency percentiles in ms; at most
    /// 80 columns.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "merged {} files (JSON results: {}, interval logs: {})",
            self.files.len(),
            self.json_files,
            self.hlog_files
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<14} {:>5} {:>13} {:>13} {:>10} {:>14}",
            "scenario", "files", "attempted", "succeeded", "errors", "handshakes/s"
        )?;
        let dash = || "-".to_owned();
        for g in &self.groups {
            let (attempted, succeeded, errors) = match &g.counts {
                Some(c) => (
                    group(c.attempted),
                    group(c.succeeded),
                    group(c.errors.total),
                ),
                None => (dash(), dash(), dash()),
            };
            writeln!(
                out,
                "{:<14} {:>5} {attempted:>13} {succeeded:>13} {errors:>10} {:>14.1}",
                g.name, g.files, g.handshakes_per_s
            )?;
        }
        for g in &self.groups {
            let Some(c) = g.counts.filter(|c| c.errors.total > 0) else {
                continue;
            };
            let kinds: Vec<String> = (ErrorKind::ALL.into_iter())
                .filter(|&k| c.errors.get(k) > 0)
                .map(|k| format!("{} {}", k.name(), group(c.errors.get(k))))
                .collect();
            writeln!(out, "  {} errors: {}", g.name, kinds.join(", "))?;
        }
        if self.hlog_files > 0 {
            writeln!(
                out,
                "  (interval logs carry latencies only: their handshakes are not in the counts)"
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "handshake latency (ms), all machines' handshakes together"
        )?;
        write!(out, "{:<14} {:>10}", "scenario", "count")?;
        for p in PERCENTILES {
            write!(out, " {p:>8}")?;
        }
        writeln!(out)?;
        for g in &self.groups {
            let s = LatencySummary::of(&g.histogram);
            write!(out, "{:<14} {:>10}", g.name, group(s.count))?;
            for v in percentiles_ms(&s) {
                write!(out, " {v:>8}")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }

    /// Writes the merged report as JSON, schema [`SCHEMA`].
    pub fn write_json(&self, out: &mut impl Write) -> Result<(), MergeError> {
        #[derive(Serialize)]
        struct Doc<'a> {
            schema: &'static str,
            files: Vec<String>,
            json_files: usize,
            hlog_files: usize,
            groups: Vec<GroupDoc<'a>>,
        }
        #[derive(Serialize)]
        struct GroupDoc<'a> {
            name: &'a str,
            files: usize,
            json_runs: usize,
            hlog_files: usize,
            attempted: Option<u64>,
            succeeded: Option<u64>,
            errors: Option<ErrorTotals>,
            handshakes_per_s: f64,
            handshake_us: LatencySummary,
            handshake_histogram: String,
        }
        let mut groups = Vec::new();
        for g in &self.groups {
            groups.push(GroupDoc {
                name: &g.name,
                files: g.files,
                json_runs: g.json_runs,
                hlog_files: g.hlog_files,
                attempted: g.counts.map(|c| c.attempted),
                succeeded: g.counts.map(|c| c.succeeded),
                errors: g.counts.map(|c| c.errors),
                handshakes_per_s: g.handshakes_per_s,
                handshake_us: LatencySummary::of(&g.histogram),
                handshake_histogram: hlog::encode_histogram(&g.histogram)?,
            });
        }
        let doc = Doc {
            schema: SCHEMA,
            files: self.files.iter().map(|p| p.display().to_string()).collect(),
            json_files: self.json_files,
            hlog_files: self.hlog_files,
            groups,
        };
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
        writeln!(out)?;
        Ok(())
    }

    /// Writes the interval logs' intervals merged by absolute second as one interval log
    /// (`StartTime` at the earliest second, the tags kept). JSON results have no intervals: with
    /// none of the inputs an interval log, the log has its header only.
    pub fn write_hlog(&self, out: impl Write) -> Result<(), MergeError> {
        let first = (self.timeline.values())
            .filter_map(|i| i.entries().first().map(|e| e.index))
            .min()
            .unwrap_or(0);
        let mut w = LogWriter::new(out, UNIX_EPOCH + Duration::from_secs(first))?;
        for (tag, intervals) in &self.timeline {
            // Interval i is the absolute second i: renumbered from the log's start.
            w.write_intervals(&intervals.renumbered(first), Duration::ZERO, tag.as_deref())?;
        }
        w.finish()?;
        Ok(())
    }
}

fn add(sum: &mut Histogram<u64>, h: &Histogram<u64>, path: &Path) -> Result<(), MergeError> {
    sum.add(h).map_err(|e| MergeError::Add {
        path: path.to_owned(),
        source: HlogError::Add(e),
    })
}

#[cfg(test)]
mod tests;
