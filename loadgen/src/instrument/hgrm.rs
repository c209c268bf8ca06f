//! HdrHistogram percentile-distribution text (`.hgrm`), as `HistogramLogProcessor`, wrk2 and
//! the other HdrHistogram tools write it, so existing plotters and comparers read our output.
//!
//! Format: a `Value Percentile TotalCount 1/(1-Percentile)` header, one line per step of the
//! percentile iteration (5 ticks per half distance), the 100 % line without the last column,
//! then the `#[Mean ...]`, `#[Max ...]` and `#[Buckets ...]` footer. Values are written in
//! milliseconds (the histograms hold microseconds), with three decimals.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Percentile iteration steps per half distance to 100 %, as the HdrHistogram tools use.
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Histogram values (µs) per written unit (ms).
const SCALE: f64 = 1000.0;

/// Writes `h` (µs) as percentile-distribution text in milliseconds.
pub fn write(h: &Histogram<u64>, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    )
}

/// Sub-buckets per bucket for `sigfig` significant figures: the smallest power of two that
/// holds `2 × 10^sigfig` values, as HdrHistogram computes it.
fn sub_buckets(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::stats::new_histogram;

    fn render(h: &Histogram<u64>) -> String {
        let mut out = Vec::new();
        write(h, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Checks the structure every `.hgrm` reader relies on and returns the data rows.
    fn check_well_formed(text: &str) -> Vec<(f64, f64, u64)> {
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines[1], "");
        let footer = &lines[lines.len() - 3..];
        assert!(footer[0].starts_with("#[Mean    = ") && footer[0].contains(", StdDeviation   = "));
        assert!(footer[1].starts_with("#[Max     = ") && footer[1].contains(", Total count    = "));
        assert!(footer[2].starts_with("#[Buckets = ") && footer[2].contains(", SubBuckets     = "));
        let mut rows = Vec::new();
        for line in &lines[2..lines.len() - 3] {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert!(cols.len() == 4 || cols.len() == 3, "{line:?}");
            let row = (
                cols[0].parse::<f64>().unwrap(),
                cols[1].parse::<f64>().unwrap(),
                cols[2].parse::<u64>().unwrap(),
            );
            if cols.len() == 4 {
                let inv: f64 = cols[3].parse().unwrap();
                assert!(
                    (inv - 1.0 / (1.0 - row.1)).abs() <= 0.01 * inv.max(1.0),
                    "{line:?}"
                );
            }
            if let Some(&(v, q, n)) = rows.last() {
                assert!(
                    row.0 >= v && row.1 >= q && row.2 >= n,
                    "not monotone at {line:?}"
                );
            }
            rows.push(row);
        }
        rows
    }

    #[test]
    fn output_is_well_formed_and_ends_at_the_total() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let text = render(&h);
        let rows = check_well_formed(&text);
        let last = rows.last().unwrap();
        assert_eq!(last.1, 1.0);
        assert_eq!(last.2, 10_000);
        assert!((last.0 - 100.0).abs() < 0.1, "max is 100 ms: {last:?}");
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
        // The median line: 50 ms, half the count.
        assert!(rows.iter().any(|r| r.1 == 0.5 && (r.0 - 50.0).abs() < 0.1));
    }

    #[test]
    fn an_empty_histogram_has_header_and_footer_only() {
        let text = render(&new_histogram());
        assert!(check_well_formed(&text).is_empty());
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn sub_buckets_match_hdrhistogram() {
        assert_eq!(sub_buckets(3), 2048);
        assert_eq!(sub_buckets(2), 256);
        assert_eq!(sub_buckets(1), 32);
    }
}
