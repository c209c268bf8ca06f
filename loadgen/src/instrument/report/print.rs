//! The table a reader sees: each phase in a few lines of at most 80 columns, latencies in
//! milliseconds with microsecond decimals, numbers grouped by thousands, written to any
//! `Write`.

use std::io::{self, Write};

use super::{PacingReport, Report, RunReport};
use crate::instrument::stats::LatencySummary;

impl Report {
    /// Writes the table of every phase, a blank line between phases.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        for (i, run) in self.runs.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            run.write_table(out)?;
        }
        Ok(())
    }

    /// The tables of every phase, as a string.
    pub fn table(&self) -> String {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_table(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        // Plain data with string keys and finite numbers serialises without error into a Vec.
        let _ = self.write_json(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Writes the JSON document (and a newline) to `out`.
    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }
}

/// `µs` as milliseconds with three decimals.
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}

/// The percentiles every latency table shows, in its order.
pub const PERCENTILES: [&str; 6] = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];

/// [`PERCENTILES`] of `s`, in milliseconds with three decimals.
pub fn percentiles_ms(s: &LatencySummary) -> [String; 6] {
    [s.p50, s.p90, s.p99, s.p999, s.p9999, s.max].map(ms)
}

fn latency_row(out: &mut impl Write, name: &str, s: &LatencySummary) -> io::Result<()> {
    write!(out, "  {name:<9}")?;
    for v in percentiles_ms(s) {
        write!(out, " {v:>9}")?;
    }
    writeln!(out)
}

impl RunReport {
    /// Writes this phase's table.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let target = if self.embedded {
            format!("{} (embedded callosum-server)", self.targets.join(", "))
        } else {
            self.targets.join(", ")
        };
        writeln!(out, "== {} against {target}", self.scenario)?;
        let pacing = match self.pacing {
            PacingReport::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
            PacingReport::Open {
                rate,
                max_in_flight,
            } => format!(
                "open loop, {}/s, at most {max_in_flight} in flight",
                group(rate as u64)
            ),
        };
        writeln!(
            out,
            "   {pacing} · {} workers · {} source addr. · warmup {:.1} s",
            self.workers, self.src_ips, self.warmup_s
        )?;
        writeln!(
            out,
            "handshakes  {}/s: {} recorded in {:.2} s",
            group(self.handshakes_per_s.round() as u64),
            group(self.recorded),
            self.window_s,
        )?;
        writeln!(
            out,
            "            {} ok, {} errors in all, phase {:.2} s",
            group(self.succeeded),
            group(self.errors.total),
            self.elapsed_s
        )?;
        write!(out, "latency ms ")?;
        for p in PERCENTILES {
            write!(out, " {p:>9}")?;
        }
        writeln!(out)?;
        latency_row(out, "handshake", &self.handshake_us)?;
        latency_row(out, "connect", &self.connect_us)?;
        self.write_errors(out)?;
        self.write_resets_rate_cpu(out)?;
        self.write_invariant(out)?;
        self.write_hold(out)?;
        if let Some(reason) = &self.stopped_early {
            wrapped(out, "STOPPED     ", reason)?;
        }
        Ok(())
    }

    fn write_resets_rate_cpu(&self, out: &mut impl Write) -> io::Result<()> {
        if let Some(r) = &self.resets {
            writeln!(
                out,
                "resets      {} on purpose ({:.0} % asked, not errors)",
                group(r.total),
                r.fraction * 100.0,
            )?;
            writeln!(
                out,
                "            {} after connect · {} after the line · {} after a hold",
                group(r.after_connect),
                group(r.after_line),
                group(r.after_hold)
            )?;
        }
        if let Some(rate) = &self.rate {
            let verdict = if rate.achieved {
                "achieved"
            } else {
                "NOT ACHIEVED"
            };
            writeln!(
                out,
                "rate        {}/s asked: {verdict}, {}/s done, {}/s started",
                group(rate.target_per_s as u64),
                group(rate.achieved_per_s as u64),
                group(rate.started_per_s as u64),
            )?;
            if rate.late_starts > 0 {
                writeln!(
                    out,
                    "            {} starts more than 10 ms late",
                    group(rate.late_starts)
                )?;
            }
        }
        let c = &self.cpu;
        writeln!(
            out,
            "cpu         loadgen {:.2} s, {:.1} µs/handshake, {:.2} of {} cores busy",
            c.loadgen_s, c.loadgen_us_per_handshake, c.loadgen_cores, c.cores
        )?;
        if let (Some(s), Some(per)) = (c.server_s, c.server_us_per_handshake) {
            writeln!(out, "            server {s:.2} s, {per:.1} µs/handshake")?;
        }
        Ok(())
    }

    fn write_invariant(&self, out: &mut impl Write) -> io::Result<()> {
        if self.invariant.violations == 0 {
            writeln!(
                out,
                "slots       invariant held: no slot held twice at once"
            )?;
        } else {
            writeln!(
                out,
                "slots       !!! INVARIANT VIOLATED {} time(s): one slot held twice at once",
                self.invariant.violations,
            )?;
            writeln!(out, "            e.g. slots {:?}", self.invariant.examples)?;
        }
        Ok(())
    }

    fn write_errors(&self, out: &mut impl Write) -> io::Result<()> {
        let e = &self.errors;
        if e.total == 0 {
            return writeln!(out, "errors      none");
        }
        writeln!(
            out,
            "errors      refused {} · timeout {} · reset {} · protocol {}",
            group(e.refused),
            group(e.timeout),
            group(e.reset),
            group(e.protocol),
        )?;
        writeln!(
            out,
            "            no slot {} · other {}",
            group(e.no_slot),
            group(e.other)
        )?;
        for s in &e.samples {
            let sample = format!("{}× {}: {}", group(s.count), s.kind.name(), s.message);
            wrapped(out, "            ", &sample)?;
        }
        Ok(())
    }

    fn write_hold(&self, out: &mut impl Write) -> io::Result<()> {
        let Some(h) = &self.hold else {
            return Ok(());
        };
        writeln!(
            out,
            "hold        {} of {} held, {} closed by the server",
            group(h.held),
            group(h.requested),
            group(h.closed_by_server)
        )?;
        if let [a, b, c, d] = h.latency_by_held_quarter.as_slice() {
            writeln!(
                out,
                "  p99 ms as the hold grew: {} · {} · {} · {} (by quarter)",
                ms(a.p99),
                ms(b.p99),
                ms(c.p99),
                ms(d.p99)
            )?;
        }
        for ts in &h.per_target {
            let range = match (ts.lowest, ts.highest) {
                (Some(l), Some(h)) => format!("slots {l}..={h}"),
                _ => "no slot".to_owned(),
            };
            writeln!(
                out,
                "  {}: {} held, {range}, {} gaps, {} duplicates",
                ts.target,
                group(ts.held),
                ts.gaps,
                ts.duplicates
            )?;
        }
        if let Some(rss) = h.rss_per_held_connection_bytes {
            let whose = if self.embedded {
                "this process, both ends"
            } else {
                "the --server-pid process"
            };
            writeln!(
                out,
                "memory      {rss:.0} B RSS per held connection ({whose})"
            )?;
        }
        if let Some(k) = &h.kernel_per_held_connection {
            // Host-wide growth: other sockets freeing memory meanwhile can make it negative,
            // which says "nothing measurable" (the JSON keeps the raw figure).
            let bytes = |b: Option<f64>| match b {
                None => "?".to_owned(),
                Some(b) if b < 0.5 => "~0 B".to_owned(),
                Some(b) => format!("{b:.0} B"),
            };
            writeln!(
                out,
                "kernel      {} objects + {} buffers per held connection",
                bytes(k.slab_bytes),
                bytes(k.socket_buffer_bytes),
            )?;
            writeln!(out, "            (host-wide; both ends when on one host)")?;
        }
        Ok(())
    }
}

/// The table's width.
const COLUMNS: usize = 80;

/// Writes `text` after `first` (the label column), wrapped at word boundaries to
/// [`COLUMNS`], continuation lines indented as far as `first`.
fn wrapped(out: &mut impl Write, first: &str, text: &str) -> io::Result<()> {
    let indent = first.chars().count();
    let mut line = first.to_owned();
    let mut width = indent;
    for word in text.split(' ') {
        let len = word.chars().count();
        if width > indent && width + 1 + len > COLUMNS {
            writeln!(out, "{line}")?;
            line = " ".repeat(indent);
            width = indent;
        }
        if width > indent {
            line.push(' ');
            width += 1;
        }
        line.push_str(word);
        width += len;
    }
    writeln!(out, "{line}")
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
    fn long_text_wraps_within_the_table_width_under_its_label() {
        let mut out = Vec::new();
        let text = "every attempt of the first second failed the same way (30,725 attempts; \
                    refused: read: Connection refused (os error 111))";
        wrapped(&mut out, "STOPPED     ", text).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.lines().count() > 1, "{out}");
        assert!(out.lines().all(|l| l.chars().count() <= COLUMNS), "{out}");
        assert!(out.lines().skip(1).all(|l| l.starts_with("            ")));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>().join(" "),
            format!("STOPPED {text}")
        );
    }
}
