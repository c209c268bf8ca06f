//! The latency-by-percentile plot (plotters, SVG): one line per phase, handshake latency in
//! milliseconds against the percentile on the usual HdrHistogram axis, `log10(1/(1-p))`, so
//! 90 %, 99 %, 99.9 % … are evenly spaced and the tail is visible. The legend sits below the
//! plot, one row a phase, so it never covers the tail (the rules every figure follows are in
//! `chart`).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::chart::{self, Legend};

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

/// Width of the figure, in px.
const WIDTH: u32 = 1000;
/// Height of the title, plot and x labels (the legend below adds its own), in px.
const PLOT_HEIGHT: u32 = 560;

/// Writes the plot of each `(name, µs histogram)` to `path`: the legend below the plot, one
/// line a series.
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
    let y_top = chart::axis_top(
        lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.1))
            .fold(0.1_f64, f64::max),
    );
    let legend = Legend::new(
        lines
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), chart::color(i)))
            .collect(),
        2,
    );
    let root =
        SVGBackend::new(path, (WIDTH, PLOT_HEIGHT + legend.height_below())).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let body =
        chart::titled(&root, "Callosum handshake latency by percentile").map_err(|e| err(&e))?;
    let (_, height) = body.dim_in_pixel();
    let (plot_area, legend_area) = body.split_vertically(height - legend.height_below());
    let mut chart = ChartBuilder::on(&plot_area)
        .margin_top(10)
        .margin_bottom(10)
        .margin_left(10)
        .margin_right(chart::RIGHT_MARGIN)
        .x_label_area_size(chart::X_LABEL_AREA)
        .y_label_area_size(chart::Y_LABEL_AREA)
        .build_cartesian_2d(0f64..x_max, 0f64..y_top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .label_style(chart::font(chart::LABEL_PX))
        .axis_desc_style(chart::font(chart::DESC_PX))
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&chart::number)
        .bold_line_style(BLACK.mix(0.12))
        .max_light_lines(0)
        .x_desc("percentile")
        .y_desc("handshake latency (ms)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (_, pts)) in lines.into_iter().enumerate() {
        chart
            .draw_series(LineSeries::new(pts, chart::color(i).stroke_width(2)))
            .map_err(|e| err(&e))?;
    }
    // Indented to the plotting area's left edge, under the x labels.
    let (plot_x, _) = chart.plotting_area().get_pixel_range();
    let legend_area = legend_area.margin(0, 0, plot_x.start, 0);
    legend.draw(&legend_area).map_err(|e| err(&e))?;
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
        crate::chart::tests::assert_text_inside(&text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_phase_named_after_many_targets_is_cut_to_fit_the_image() {
        let mut h = new_histogram();
        h.record(1500).unwrap();
        let targets: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}:4040")).collect();
        let name = format!("churn ({})", targets.join(", "));
        let dir = std::env::temp_dir().join(format!("loadgen-svg-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plot.svg");
        write(&path, &[(name, &h)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        crate::chart::tests::assert_text_inside(&text);
        assert!(text.contains("churn (10.0.0.1:4040") && text.contains('…'));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
