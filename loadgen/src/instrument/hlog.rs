//! HdrHistogram interval logs (`.hlog`): the handshake latency of every interval of a run, in
//! the format that Java's `HistogramLogWriter` writes and `HistogramLogProcessor` reads, so the
//! HdrHistogram tools plot and slice our runs, and several load generators' runs merge exactly.
//!
//! A log is a header (format version, `StartTime`, `BaseTime`, the legend line) and one line per
//! interval: `[Tag=NAME,]start,length,max,histogram`, where `start` is seconds since `BaseTime`,
//! `length` seconds, and the histogram is base64 of the V2 deflate encoding. **The logged values
//! are microseconds**, as the loadgen records them: nothing is scaled in the histograms, as
//! `HistogramLogProcessor` expects (pass it `-outputValueUnitRatio 1000` for milliseconds). Only
//! the human-facing `Interval_Max` column is divided, by 1000, so it reads in milliseconds like
//! the Java tools' own logs (which divide nanoseconds by 10^6).
//!
//! Each worker thread owns an [`IntervalRecorder`]: it fills the histogram of the current
//! interval and, when a value lands in a later interval, encodes the finished one and resets the
//! histogram for reuse, so a run of any length holds one live histogram per worker plus a few
//! hundred bytes per finished interval. The workers' [`Intervals`] merge by interval index.
//!
//! [`encode_histogram`] and [`decode_histogram`] are the same encoding as a string, for embedding a
//! whole histogram in the JSON result so results from several machines merge exactly.
//! Decoding checks the declared lengths before the HdrHistogram decoder allocates, so a damaged
//! or hostile file is a typed error, never an abort.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::instrument::stats::new_histogram;

/// Default interval length: 1 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The log format version written, that of the Java `HistogramLogWriter`.
pub const FORMAT_VERSION: &str = "1.3";
/// The legend line, as `HistogramLogWriter::outputLegend` writes it.
pub const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";
/// Logged values (µs) per unit of the `Interval_Max` column (ms).
pub const MAX_VALUE_DIVISOR: f64 = 1000.0;

/// Cookie of the uncompressed V2 encoding (with the 8-byte word size flag).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
/// Cookie of the V2 deflate encoding.
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;
/// Bytes of a V2 header: cookie, payload length, normalizing offset, digits, low, high, ratio.
const V2_HEADER_LEN: usize = 40;
/// Largest inflated histogram accepted (a 5-digit histogram up to `u64::MAX` needs ~50 MiB).
const MAX_INFLATED: u64 = 64 << 20;
/// Seconds in a year, the margin of the Java reader's "StartTime or absolute" heuristic.
const YEAR_SECS: u64 = 365 * 24 * 3600;

/// Why a histogram string could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not base64.
    #[error("not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Fewer bytes than the encoding declares.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// Neither a V2 nor a V2 deflate histogram.
    #[error("unknown histogram encoding (cookie {0:#010x})")]
    Cookie(u32),
    /// Inflates past the size any histogram needs.
    #[error("inflates past {MAX_INFLATED} bytes")]
    TooLarge,
    /// The deflate stream is damaged.
    #[error("deflate stream: {0}")]
    Inflate(io::Error),
    /// The HdrHistogram decoder refused the bytes.
    #[error("{0}")]
    Histogram(#[from] hdrhistogram::serialization::DeserializeError),
}

/// Errors of reading, writing or combining interval logs.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// The log could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A line is not a header, comment, legend or interval line.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An interval's histogram does not decode.
    #[error("{path}:{line}: histogram: {source}")]
    Histogram {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: DecodeError,
    },
    /// Writing the log failed.
    #[error("writing the interval log: {0}")]
    Write(#[from] io::Error),
    /// A tag holds a character the format cannot carry (`,`, space, CR, LF).
    #[error("tag {0:?} contains ',', a space or a line break")]
    BadTag(String),
    /// Interval lists of different interval lengths cannot be merged.
    #[error("cannot merge intervals of {ours:?} with intervals of {theirs:?}")]
    LengthMismatch {
        /// This list's interval length.
        ours: Duration,
        /// The other list's.
        theirs: Duration,
    },
    /// Adding histograms failed (a value out of the accumulator's range).
    #[error("adding histograms: {0}")]
    Add(#[from] hdrhistogram::AdditionError),
    /// One of our own histograms did not encode or decode.
    #[error("histogram encoding: {0}")]
    Encoding(String),
}

/// One finished interval, encoded (V2 deflate).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedInterval {
    /// Interval number: 0 is the one starting at the phase start (or, merged across machines,
    /// the absolute second since the epoch).
    pub index: u64,
    /// Largest value in it, µs.
    pub max_us: u64,
    /// The V2 deflate bytes.
    pub bytes: Vec<u8>,
}

impl EncodedInterval {
    fn encode(index: u64, h: &Histogram<u64>) -> Result<Self, HlogError> {
        Ok(Self {
            index,
            max_us: h.max(),
            bytes: encode_bytes(h)?,
        })
    }

    /// The interval's histogram.
    pub fn histogram(&self) -> Result<Histogram<u64>, DecodeError> {
        decode_bytes(&self.bytes)
    }
}

/// Finished intervals of equal length, sorted by index, at most one per index.
#[derive(Debug, Clone, PartialEq)]
pub struct Intervals {
    length: Duration,
    entries: Vec<EncodedInterval>,
}

impl Intervals {
    /// No intervals yet, each `length` long.
    pub fn new(length: Duration) -> Self {
        Self {
            length,
            entries: Vec::new(),
        }
    }

    /// Length of each interval.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The intervals, by index.
    pub fn entries(&self) -> &[EncodedInterval] {
        &self.entries
    }

    /// Adds `h` to the interval `index` (created if absent).
    pub fn add(&mut self, index: u64, h: &Histogram<u64>) -> Result<(), HlogError> {
        match self.entries.binary_search_by_key(&index, |e| e.index) {
            Ok(i) => {
                let entry = &mut self.entries[i];
                let mut sum = accumulator();
                sum.add(entry.histogram().map_err(encoding)?)?;
                sum.add(h)?;
                *entry = EncodedInterval::encode(index, &sum)?;
            }
            Err(i) => self.entries.insert(i, EncodedInterval::encode(index, h)?),
        }
        Ok(())
    }

    /// Adds another list's intervals (another worker's, or another machine's aligned ones):
    /// histograms of the same index are summed.
    pub fn merge(&mut self, other: Intervals) -> Result<(), HlogError> {
        if other.length != self.length {
            return Err(HlogError::LengthMismatch {
                ours: self.length,
                theirs: other.length,
            });
        }
        for entry in other.entries {
            match self.entries.binary_search_by_key(&entry.index, |e| e.index) {
                Ok(_) => self.add(entry.index, &entry.histogram().map_err(encoding)?)?,
                Err(i) => self.entries.insert(i, entry),
            }
        }
        Ok(())
    }

    /// The same intervals numbered from `first` (interval `first` becomes 0; earlier ones are
    /// dropped).
    pub fn renumbered(&self, first: u64) -> Intervals {
        let entries = (self.entries.iter())
            .filter(|e| e.index >= first)
            .map(|e| EncodedInterval {
                index: e.index - first,
                ..e.clone()
            })
            .collect();
        Intervals {
            length: self.length,
            entries,
        }
    }

    /// Each interval's index and decoded histogram, by index (for per-interval percentiles).
    pub fn histograms(&self) -> impl Iterator<Item = Result<(u64, Histogram<u64>), DecodeError>> {
        (self.entries.iter()).map(|e| Ok((e.index, e.histogram()?)))
    }

    /// All intervals summed into one histogram.
    pub fn total(&self) -> Result<Histogram<u64>, HlogError> {
        let mut sum = accumulator();
        for entry in self.histograms() {
            sum.add(entry.map_err(encoding)?.1)?;
        }
        Ok(sum)
    }
}

/// Records one worker's values by interval, holding one live histogram.
pub struct IntervalRecorder {
    phase_start: Instant,
    length: Duration,
    current: u64,
    histogram: Histogram<u64>,
    done: Intervals,
}

impl IntervalRecorder {
    /// A recorder whose interval 0 starts at `phase_start`, each `length` long (default
    /// [`DEFAULT_INTERVAL`], 1 s; a zero length is taken as 1 µs).
    pub fn new(phase_start: Instant, length: Duration) -> Self {
        let length = length.max(Duration::from_micros(1));
        Self {
            phase_start,
            length,
            current: 0,
            histogram: new_histogram(),
            done: Intervals::new(length),
        }
    }

    /// Records `value_us` in the interval containing `at`. A value for an interval already
    /// finished (an `at` earlier than a previous one) is counted in the current interval, so
    /// finished intervals are never reopened. Values past one hour are clamped to one hour.
    pub fn record(&mut self, at: Instant, value_us: u64) -> Result<(), HlogError> {
        let since = at.saturating_duration_since(self.phase_start);
        let index = u64::try_from(since.as_nanos() / self.length.as_nanos()).unwrap_or(u64::MAX);
        if index > self.current {
            self.roll()?;
            self.current = index;
        }
        self.histogram.saturating_record(value_us);
        Ok(())
    }

    /// Encodes the current interval (if it has values) and resets its histogram for reuse.
    fn roll(&mut self) -> Result<(), HlogError> {
        if !self.histogram.is_empty() {
            let entry = EncodedInterval::encode(self.current, &self.histogram)?;
            self.done.entries.push(entry);
            self.histogram.reset();
        }
        Ok(())
    }

    /// Finished intervals so far (the current one excluded).
    pub fn finished(&self) -> &Intervals {
        &self.done
    }

    /// Ends recording: every interval that received a value.
    pub fn finish(mut self) -> Result<Intervals, HlogError> {
        self.roll()?;
        Ok(self.done)
    }
}

/// One interval read from a log.
#[derive(Debug, Clone)]
pub struct LoggedInterval {
    /// The tag, if the line has one.
    pub tag: Option<String>,
    /// Start, since the Unix epoch: the line's timestamp plus `BaseTime` (or `StartTime`, with
    /// the Java reader's heuristic, when only that is present).
    pub start: Duration,
    /// Length.
    pub length: Duration,
    /// The values (µs in our logs; whatever unit the writer used in others).
    pub histogram: Histogram<u64>,
}

/// Writes an interval log: the header on creation, then intervals.
pub struct LogWriter<W: Write> {
    out: W,
}

impl<W: Write> LogWriter<W> {
    /// Writes the header, as `HistogramLogWriter` does: a comment naming the unit, the format
    /// version, `StartTime` and `BaseTime` (both `start`), and the legend.
    pub fn new(mut out: W, start: SystemTime) -> Result<Self, HlogError> {
        let since = start.duration_since(UNIX_EPOCH).unwrap_or_default();
        writeln!(
            out,
            "#[Callosum handshake latency: values in microseconds, Interval_Max in milliseconds]"
        )?;
        writeln!(out, "#[Histogram log format version {FORMAT_VERSION}]")?;
        writeln!(
            out,
            "#[StartTime: {} (seconds since epoch), {}]",
            seconds(since),
            java_date(since.as_secs())
        )?;
        writeln!(out, "#[BaseTime: {} (seconds since epoch)]", seconds(since))?;
        writeln!(out, "{LEGEND}")?;
        Ok(Self { out })
    }

    /// Writes `intervals`, interval `i` starting `offset + i × length` after the log's start.
    pub fn write_intervals(
        &mut self,
        intervals: &Intervals,
        offset: Duration,
        tag: Option<&str>,
    ) -> Result<(), HlogError> {
        for e in &intervals.entries {
            let start = offset + mul(intervals.length, e.index);
            self.write_line(tag, start, intervals.length, e.max_us, &e.bytes)?;
        }
        Ok(())
    }

    /// Writes one interval of `length` starting `start` after the log's start.
    pub fn write_histogram(
        &mut self,
        h: &Histogram<u64>,
        start: Duration,
        length: Duration,
        tag: Option<&str>,
    ) -> Result<(), HlogError> {
        self.write_line(tag, start, length, h.max(), &encode_bytes(h)?)
    }

    fn write_line(
        &mut self,
        tag: Option<&str>,
        start: Duration,
        length: Duration,
        max_us: u64,
        bytes: &[u8],
    ) -> Result<(), HlogError> {
        let mut line = String::new();
        if let Some(tag) = tag {
            if tag.contains([',', ' ', '\r', '\n']) {
                return Err(HlogError::BadTag(tag.to_owned()));
            }
            let _ = write!(line, "Tag={tag},");
        }
        let max = max_us as f64 / MAX_VALUE_DIVISOR;
        let _ = write!(line, "{},{},{max:.3},", seconds(start), seconds(length));
        BASE64.encode_string(bytes, &mut line);
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Flushes and gives the output back.
    pub fn finish(mut self) -> Result<W, HlogError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes a whole log of one list of intervals: header, then the intervals, interval 0 at
/// `start`, each line tagged with `tag` (e.g. the phase name) when given.
pub fn write_log(
    out: impl Write,
    start: SystemTime,
    intervals: &Intervals,
    tag: Option<&str>,
) -> Result<(), HlogError> {
    let mut w = LogWriter::new(out, start)?;
    w.write_intervals(intervals, Duration::ZERO, tag)?;
    w.finish()?;
    Ok(())
}

/// Reads every interval of the log at `path`, in file order.
pub fn read_log(path: &Path) -> Result<Vec<LoggedInterval>, HlogError> {
    let bytes = std::fs::read(path).map_err(|source| HlogError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_log(&bytes, path)
}

/// Parses a log's bytes; `path` names it in errors.
pub fn parse_log(bytes: &[u8], path: &Path) -> Result<Vec<LoggedInterval>, HlogError> {
    let malformed = |line: usize, reason: String| HlogError::Malformed {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut start_time = None;
    let mut base_time = None;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // The crate's parser, one line at a time, so errors carry their line number.
        buf.clear();
        buf.extend_from_slice(raw);
        buf.push(b'\n');
        let entry = match IntervalLogIterator::new(&buf).next() {
            None => continue, // a comment or the legend
            Some(Ok(entry)) => entry,
            Some(Err(_)) => {
                let text = String::from_utf8_lossy(raw);
                let shown: String = text.chars().take(60).collect();
                return Err(malformed(
                    line,
                    format!("not an interval, header, comment or legend line: {shown:?}"),
                ));
            }
        };
        match entry {
            LogEntry::StartTime(t) => start_time = Some(t),
            LogEntry::BaseTime(t) => base_time = Some(t),
            LogEntry::Interval(ilh) => {
                let offset = ilh.start_timestamp();
                let base = match (base_time, start_time) {
                    (Some(b), _) => b,
                    // HistogramLogReader: timestamps far below StartTime are relative to it.
                    (None, Some(s)) if offset.as_secs().saturating_add(YEAR_SECS) < s.as_secs() => {
                        s
                    }
                    _ => Duration::ZERO,
                };
                let histogram = decode_histogram(ilh.encoded_histogram()).map_err(|source| {
                    HlogError::Histogram {
                        path: path.to_owned(),
                        line,
                        source,
                    }
                })?;
                out.push(LoggedInterval {
                    tag: ilh.tag().map(|t| t.as_str().to_owned()),
                    start: base + offset,
                    length: ilh.duration(),
                    histogram,
                });
            }
        }
    }
    Ok(out)
}

/// `h` as base64 of its V2 deflate encoding, as in an interval log line.
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, HlogError> {
    Ok(BASE64.encode(encode_bytes(h)?))
}

/// The histogram of an [`encode_histogram`] string or an interval log's histogram column (V2 or
/// V2 deflate).
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, DecodeError> {
    decode_bytes(&BASE64.decode(text.trim())?)
}

/// An empty histogram for sums: the loadgen's bounds, growing for larger values of other logs.
pub(crate) fn accumulator() -> Histogram<u64> {
    let mut h = new_histogram();
    h.auto(true);
    h
}

fn encode_bytes(h: &Histogram<u64>) -> Result<Vec<u8>, HlogError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| HlogError::Encoding(format!("{e:?}")))?;
    Ok(bytes)
}

fn decode_bytes(bytes: &[u8]) -> Result<Histogram<u64>, DecodeError> {
    let (cookie, len) = header(bytes)?;
    let v2 = match cookie {
        V2_COOKIE => bytes,
        V2_DEFLATE_COOKIE => {
            let deflated = bytes
                .get(8..8 + len)
                .ok_or(DecodeError::Truncated("deflate payload"))?;
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(deflated)
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut inflated)
                .map_err(DecodeError::Inflate)?;
            if inflated.len() as u64 > MAX_INFLATED {
                return Err(DecodeError::TooLarge);
            }
            return check_v2(&inflated);
        }
        other => return Err(DecodeError::Cookie(other)),
    };
    check_v2(v2)
}

/// Serialises a histogram as [`encode_histogram`]'s text (for serde's `serialize_with`).
pub fn serialize_histogram<S: serde::Serializer>(
    h: &Histogram<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let text = encode_histogram(h).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

/// Decodes V2 bytes after checking the payload length against what is there, so the decoder
/// never allocates for a length the bytes do not hold.
fn check_v2(bytes: &[u8]) -> Result<Histogram<u64>, DecodeError> {
    let (cookie, len) = header(bytes)?;
    if cookie != V2_COOKIE {
        return Err(DecodeError::Cookie(cookie));
    }
    if bytes.len() < V2_HEADER_LEN || bytes.len() - V2_HEADER_LEN < len {
        return Err(DecodeError::Truncated("histogram payload"));
    }
    Ok(Deserializer::new().deserialize(&mut &bytes[..])?)
}

/// The cookie and declared length that open every encoding.
fn header(bytes: &[u8]) -> Result<(u32, usize), DecodeError> {
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(DecodeError::Truncated("header"))
    };
    Ok((word(0)?, word(4)? as usize))
}

fn encoding(e: DecodeError) -> HlogError {
    HlogError::Encoding(e.to_string())
}

fn mul(d: Duration, n: u64) -> Duration {
    Duration::from_nanos(u64::try_from(d.as_nanos().saturating_mul(n.into())).unwrap_or(u64::MAX))
}

/// Seconds with 3 decimals, as the Java writer's `%.3f` prints them.
fn seconds(d: Duration) -> String {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 >= 500_000);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `java.util.Date::toString` of a Unix time, in UTC: `Wed Dec 02 08:26:52 UTC 2026`.
fn java_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{} {} {day:02} {:02}:{:02}:{:02} UTC {year}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
