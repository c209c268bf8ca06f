//! The `--svg` plot: per-server load over time, one panel per policy.
//!
//! Why this shape: the simulator keeps, per window, the mean instantaneous load of each server
//! (at most 16 servers) or the min/mean/max across servers (more); one line per value makes
//! both the imbalance and a joining server's ramp visible at a glance. Every panel has the same
//! y-scale, so the policies compare by eye, and its legend to the right of its plotting area
//! (the rules every figure follows are in `chart`). plotters' SVG backend needs no
//! system font.

use std::path::Path;

use plotters::prelude::*;

use crate::balance::model::SimError;
use crate::balance::report::SimReport;
use crate::chart::{self, Legend};

/// Width of the figure, in px.
const WIDTH: u32 = 1100;
/// Height of one panel (caption, plot and x labels), in px.
const PANEL_HEIGHT: u32 = 330;
/// Room between the panel's top and its caption, and between panels, in px.
const MARGIN: u32 = 10;

/// Draws `reports`' series into an SVG file at `path`; `window_s` is the window length,
/// `per_server` whether series are one value per server (else min/mean/max).
pub fn plot(
    path: &Path,
    reports: &[SimReport],
    window_s: f64,
    per_server: bool,
) -> Result<(), SimError> {
    let panels: Vec<(&str, &[Vec<f64>])> = reports
        .iter()
        .map(|r| (r.policy, r.series.as_slice()))
        .collect();
    draw(path, &panels, window_s, per_server)
}

/// [`plot`] of `(policy, series)` panels.
fn draw(
    path: &Path,
    panels: &[(&str, &[Vec<f64>])],
    window_s: f64,
    per_server: bool,
) -> Result<(), SimError> {
    let err = |what: &'static str| move |e| plot_error(path, what, e);
    let lines = panels
        .iter()
        .flat_map(|(_, series)| series.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    let points = panels.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    // Thin lines where hundreds of windows sit side by side, so neighbours stay apart.
    let stroke = if points > 100 { 1 } else { 2 };
    let names: Vec<String> = (0..lines)
        .map(|line| {
            if per_server {
                format!("server {line}")
            } else {
                ["min", "mean", "max"]
                    .get(line)
                    .copied()
                    .unwrap_or("?")
                    .to_string()
            }
        })
        .collect();
    let legend = Legend::new(
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| (name, chart::color(i)))
            .collect(),
        stroke,
    );
    // One scale for every panel: the largest value of any.
    let y_top = chart::axis_top(
        panels
            .iter()
            .flat_map(|(_, s)| s.iter().flatten())
            .copied()
            .fold(0.0, f64::max),
    );
    let x_max = (points as f64 * window_s).max(window_s);
    let title = if per_server {
        format!(
            "Load per server (requests queued + in service), mean over each {window_s} s window"
        )
    } else {
        format!(
            "Mean load over each {window_s} s window (queued + in service): min, mean, max across servers"
        )
    };
    let y_desc = if per_server {
        "load per server (requests)"
    } else {
        "load (requests)"
    };

    let count = panels.len().max(1) as u32;
    let title_height = (chart::TITLE_PX * 2.4).round() as u32;
    let root =
        SVGBackend::new(path, (WIDTH, title_height + count * PANEL_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(err("filling the plot background"))?;
    let body = chart::titled(&root, &title).map_err(err("drawing the title"))?;
    // The legend's column is as tall as a plot at least: caption and x labels off a panel.
    let plot_height =
        PANEL_HEIGHT - 3 * MARGIN - (chart::CAPTION_PX * 2.0) as u32 - chart::X_LABEL_AREA;
    let legend_width = legend.width_beside(plot_height);
    for (area, (policy, series)) in body.split_evenly((count as usize, 1)).iter().zip(panels) {
        let (width, _) = area.dim_in_pixel();
        let (left, right) = area.split_horizontally(width - legend_width);
        let mut chart = ChartBuilder::on(&left)
            .caption(*policy, chart::font(chart::CAPTION_PX))
            .margin_top(MARGIN)
            .margin_bottom(2 * MARGIN)
            .margin_left(MARGIN)
            .margin_right(chart::RIGHT_MARGIN)
            .x_label_area_size(chart::X_LABEL_AREA)
            .y_label_area_size(chart::Y_LABEL_AREA)
            .build_cartesian_2d(0.0..x_max, 0.0..y_top)
            .map_err(err("building the chart"))?;
        chart
            .configure_mesh()
            .label_style(chart::font(chart::LABEL_PX))
            .axis_desc_style(chart::font(chart::DESC_PX))
            .x_label_formatter(&chart::number)
            .y_label_formatter(&chart::number)
            .bold_line_style(BLACK.mix(0.12))
            .max_light_lines(0)
            .x_desc("time into the measured window (s)")
            .y_desc(y_desc)
            .draw()
            .map_err(err("drawing the axes"))?;
        for line in 0..lines {
            let color = chart::color(line);
            let data = series.iter().enumerate().map(|(i, v)| {
                (
                    (i + 1) as f64 * window_s,
                    v.get(line).copied().unwrap_or(0.0),
                )
            });
            chart
                .draw_series(LineSeries::new(data, color.stroke_width(stroke)))
                .map_err(err("drawing a series"))?;
        }
        // The legend starts level with the top of the plotting area, in its own column.
        let (_, plot_y) = chart.plotting_area().get_pixel_range();
        let (_, right_y) = right.get_pixel_range();
        let legend_area = right.margin(plot_y.start - right_y.start, 0, 0, 0);
        legend
            .draw(&legend_area)
            .map_err(err("drawing the legend"))?;
    }
    root.present().map_err(err("writing"))?;
    Ok(())
}

fn plot_error(path: &Path, what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Plot {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::tests::assert_text_inside;

    /// The SVG of `panels`, drawn in a folder of the test's own (`test`).
    fn drawn(test: &str, per_server: bool, panels: &[(&str, &[Vec<f64>])]) -> String {
        let dir = std::env::temp_dir().join(format!("loadgen-plot-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plot.svg");
        draw(&path, panels, 1.0, per_server).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        text
    }

    #[test]
    fn panels_share_one_y_scale_and_every_label_fits_in_the_image() {
        let low: Vec<Vec<f64>> = (0..300).map(|i| vec![1.0, 2.0 + (i % 3) as f64]).collect();
        let high: Vec<Vec<f64>> = (0..300).map(|_| vec![9.5, 1.0]).collect();
        let svg = drawn("shared", true, &[("original", &low), ("improved", &high)]);
        assert_text_inside(&svg);
        // A data line has a point per window; axes, grid and legend samples have two.
        let data_lines = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| p[..p.find("/>").unwrap()].matches(',').count() == 300)
            .count();
        assert_eq!(data_lines, 4, "two lines a panel");
        // Both panels' y-axes end at the top of the larger one (9.5 → 10).
        let tops = crate::chart::tests::texts(&svg)
            .into_iter()
            .filter(|t| t.text == "10")
            .count();
        assert_eq!(tops, 2, "each panel labels the shared top, 10");
        for text in [
            "original",
            "improved",
            "server 0",
            "server 1",
            "load per server (requests)",
        ] {
            assert!(svg.contains(text), "{text}");
        }
    }

    #[test]
    fn sixteen_servers_fit_their_legend_beside_the_plot() {
        let series: Vec<Vec<f64>> = (0..20).map(|i| vec![i as f64; 16]).collect();
        let svg = drawn("sixteen", true, &[("p2c", &series)]);
        assert_text_inside(&svg);
        assert!(svg.contains("server 15"));
    }

    #[test]
    fn min_mean_max_lines_are_named() {
        let series: Vec<Vec<f64>> = (0..20).map(|_| vec![1.0, 2.0, 3.0]).collect();
        let svg = drawn("min-mean-max", false, &[("random", &series)]);
        assert_text_inside(&svg);
        let texts: Vec<String> = crate::chart::tests::texts(&svg)
            .into_iter()
            .map(|t| t.text)
            .collect();
        for name in ["min", "mean", "max", "load (requests)"] {
            assert!(texts.iter().any(|t| t == name), "{name} in {texts:?}");
        }
    }
}
