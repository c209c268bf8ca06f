//! The `--svg` plot: per-server load over time, one panel per policy.
//!
//! Why this shape: the simulator keeps, per window, the mean instantaneous load of each server
//! (at most 16 servers) or the min/mean/max across servers (more); one line per value makes
//! both the imbalance and a joining server's ramp visible at a glance. plotters' SVG backend
//! needs no system font.

use std::path::Path;

use plotters::prelude::*;

use super::SimError;
use super::report::SimReport;

/// Draws `reports`' series into an SVG file at `path`; `window_s` is the window length,
/// `per_server` whether series are one value per server (else min/mean/max).
pub fn plot(
    path: &Path,
    reports: &[SimReport],
    window_s: f64,
    per_server: bool,
) -> Result<(), SimError> {
    let panels = reports.len().max(1);
    let root = SVGBackend::new(path, (1000, 260 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| plot_error(path, "filling the plot background", e))?;
    let areas = root.split_evenly((panels, 1));
    for (area, report) in areas.iter().zip(reports) {
        let points = report.series.len();
        let x_max = (points as f64 * window_s).max(window_s);
        let y_max = report
            .series
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}: load per server (queued + in service)", report.policy),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| plot_error(path, "building the chart", e))?;
        chart
            .configure_mesh()
            .x_desc("seconds into the measured window")
            .y_desc("requests")
            .draw()
            .map_err(|e| plot_error(path, "drawing the axes", e))?;
        let lines = report.series.first().map_or(0, Vec::len);
        for line in 0..lines {
            let name = if per_server {
                format!("server {line}")
            } else {
                ["min", "mean", "max"]
                    .get(line)
                    .copied()
                    .unwrap_or("?")
                    .to_string()
            };
            let color = Palette99::pick(line).to_rgba();
            let data = report.series.iter().enumerate().map(|(i, v)| {
                (
                    (i + 1) as f64 * window_s,
                    v.get(line).copied().unwrap_or(0.0),
                )
            });
            chart
                .draw_series(LineSeries::new(data, color))
                .map_err(|e| plot_error(path, "drawing a series", e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, "drawing the legend", e))?;
    }
    root.present().map_err(|e| plot_error(path, "writing", e))?;
    Ok(())
}

fn plot_error(path: &Path, what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Plot {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}
