//! The latency-by-percentile plot (plotters, SVG): one line per phase, handshake latency in
//! milliseconds against the percentile on the usual HdrHistogram axis, `log10(1/(1-p))`, so
//! 90 %, 99 %, 99.9 % … are evenly spaced and the tail is visible.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Why the plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the SVG plot: {0}")]
pub struct SvgError(String);

/// Points `(log10(1/(1-p)), ms)` of a µs histogram, up to (not including) 100 %.
pub fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            (
                (1.0 / (1.0 - v.quantile_iterated_to())).log10(),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .collect()
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if *x < 0.5 {
        "0%".into()
    } else {
        format!("{}%", (p * 1e4).round() / 1e4)
    }
}

/// Writes the plot of each `(name, µs histogram)` to `path`.
pub fn write(path: &Path, series: &[(String, &Histogram<u64>)]) -> Result<(), SvgError> {
    let err = |e: &dyn std::fmt::Display| SvgError(e.to_string());
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, h)| (name.clone(), points(h)))
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(2.0_f64, f64::max)
        .ceil();
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.1_f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Callosum handshake latency by percentile",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&percentile_label)
        .x_desc("percentile")
        .y_desc("handshake latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::stats::new_histogram;

    #[test]
    fn labels_read_as_percentiles() {
        assert_eq!(percentile_label(&0.0), "0%");
        assert_eq!(percentile_label(&1.0), "90%");
        assert_eq!(percentile_label(&2.0), "99%");
        assert_eq!(percentile_label(&3.0), "99.9%");
    }

    #[test]
    fn writes_an_svg_with_one_line_per_series() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let dir = std::env::temp_dir().join(format!("loadgen-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plot.svg");
        write(&path, &[("churn".into(), &h), ("hold".into(), &h)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("churn") && text.contains("hold"));
        assert!(text.matches("<polyline").count() >= 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
