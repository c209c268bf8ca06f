//! What the SVG figures share (plotters, SVG backend): font sizes in the image's own pixels, a
//! palette that reads on white, tick labels without needless decimals, a y-axis top on a round
//! number, a figure title, and the legend.
//!
//! Why a legend of our own: plotters draws its series legend inside the plotting area, over the
//! lines, and sizes the box from a rough text estimate, so long names overflow it. Here a
//! figure first reserves the room its legend needs (from a generous width per character),
//! beside or below the plot, and the plot gets the rest: the legend never covers data and
//! every label stays inside the image.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// plotters' SVG backend writes a font size of `size / 1.24`; [`font`] takes the pixels the
/// reader sees and undoes that.
const SVG_FONT_SCALE: f64 = 1.24;

/// Figure title, in px.
pub const TITLE_PX: f64 = 19.0;
/// Panel caption, in px.
pub const CAPTION_PX: f64 = 17.0;
/// Axis descriptions, in px.
pub const DESC_PX: f64 = 15.0;
/// Tick labels and legend entries, in px.
pub const LABEL_PX: f64 = 14.0;

/// Room left of a plotting area for the y tick labels and the rotated y description, in px.
pub const Y_LABEL_AREA: u32 = 76;
/// Room below a plotting area for the x tick labels and the x description, in px.
pub const X_LABEL_AREA: u32 = 50;
/// Room right of a plotting area, so the last x tick label (centred on the axis end) fits.
pub const RIGHT_MARGIN: u32 = 44;

/// Colours a reader tells apart on white: matplotlib's "tab10", then six dark ones, so the
/// sixteen servers a figure draws one line each get sixteen; past that, plotters' palette.
const PALETTE: [RGBColor; 16] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x00, 0x00, 0x75),
    RGBColor(0x80, 0x00, 0x00),
    RGBColor(0x46, 0x99, 0x90),
    RGBColor(0x80, 0x80, 0x00),
    RGBColor(0xf0, 0x32, 0xe6),
    RGBColor(0x00, 0x00, 0x00),
];

/// Legend geometry, in px: the line sample, the gap before the name, a row, the padding
/// around the legend and between its columns.
const SAMPLE: i32 = 28;
const SAMPLE_GAP: i32 = 8;
const ROW: i32 = 21;
const PAD: i32 = 12;
const COLUMN_GAP: i32 = 16;

/// A black text style of `px` pixels as rendered.
pub fn font(px: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", px * SVG_FONT_SCALE).into_font()).color(&BLACK)
}

/// The colour of the `i`th line of a figure.
pub fn color(i: usize) -> RGBColor {
    PALETTE.get(i).copied().unwrap_or_else(|| {
        let c = Palette99::pick(i).to_rgba();
        RGBColor(c.0, c.1, c.2)
    })
}

/// Width of `text` at `px`, on the generous side: sans-serif digits and capitals are about
/// 0.6 em wide, so room for 0.62 em a character keeps every label inside what is reserved.
pub fn text_width(text: &str, px: f64) -> i32 {
    (0.62 * px * text.chars().count() as f64).ceil() as i32
}

/// A tick label: the value with at most six decimals and none that are zero (`2`, `0.5`).
pub fn number(v: &f64) -> String {
    // + 0.0: no "-0".
    let v = (v * 1e6).round() / 1e6 + 0.0;
    format!("{v}")
}

/// The top of a y-axis showing values up to `v`: `v` plus 5 % headroom, rounded up to a
/// multiple of 1, 2 or 5 × 10ⁿ that leaves about eight steps, so the top tick is a round number.
pub fn axis_top(v: f64) -> f64 {
    let v = v * 1.05;
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let rough = v / 8.0;
    let exponent = rough.log10().floor() as i32;
    let magnitude = 10f64.powi(exponent);
    let multiple = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|&m| m * magnitude >= rough)
        .unwrap_or(10.0);
    // Counted in whole magnitudes and scaled once, so 0.6 is 6 / 10, not 3 × 0.2000…01.
    let units = (v / (multiple * magnitude)).ceil() * multiple;
    if exponent >= 0 {
        units * magnitude
    } else {
        units / 10f64.powi(-exponent)
    }
}

/// Draws `text` as the title at the top of `area` and returns the area below it.
pub fn titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let height = (TITLE_PX * 2.4).round() as u32;
    let (top, rest) = area.split_vertically(height);
    let (w, h) = top.dim_in_pixel();
    top.draw_text(
        text,
        &font(TITLE_PX).pos(Pos::new(HPos::Center, VPos::Center)),
        (w as i32 / 2, h as i32 / 2),
    )?;
    Ok(rest)
}

/// A legend: one line sample and name per series, drawn in an area of its own.
pub struct Legend {
    entries: Vec<(String, RGBColor)>,
    stroke: u32,
}

impl Legend {
    /// A legend of `(name, colour)` entries whose samples are `stroke` px wide, as the lines.
    pub fn new(entries: Vec<(String, RGBColor)>, stroke: u32) -> Self {
        Legend { entries, stroke }
    }

    /// Entries a column holds in `height` px (at least one).
    fn rows(&self, height: u32) -> usize {
        ((height as i32 - 2 * PAD) / ROW).max(1) as usize
    }

    fn column_width(&self) -> i32 {
        let name = self
            .entries
            .iter()
            .map(|(name, _)| text_width(name, LABEL_PX))
            .max()
            .unwrap_or(0);
        SAMPLE + SAMPLE_GAP + name
    }

    /// Width the legend needs in a column `height` px tall beside a plot: as many columns as
    /// its entries take at that height.
    pub fn width_beside(&self, height: u32) -> u32 {
        let columns = self.entries.len().div_ceil(self.rows(height)).max(1) as i32;
        (2 * PAD + columns * self.column_width() + (columns - 1) * COLUMN_GAP) as u32
    }

    /// Height the legend needs below a plot, one entry a row.
    pub fn height_below(&self) -> u32 {
        (2 * PAD + self.entries.len() as i32 * ROW) as u32
    }

    /// Draws the entries into `area`, top to bottom then column by column; a name wider than
    /// the room left in the area is cut with "…".
    pub fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let (width, height) = area.dim_in_pixel();
        let rows = self.rows(height);
        let style = font(LABEL_PX).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, (name, color)) in self.entries.iter().enumerate() {
            let x = PAD + (i / rows) as i32 * (self.column_width() + COLUMN_GAP);
            let y = PAD + (i % rows) as i32 * ROW + ROW / 2;
            area.draw(&PathElement::new(
                vec![(x, y), (x + SAMPLE, y)],
                color.stroke_width(self.stroke.max(2)),
            ))?;
            let room = width as i32 - PAD - (x + SAMPLE + SAMPLE_GAP);
            area.draw_text(
                &fit(name, room, LABEL_PX),
                &style,
                (x + SAMPLE + SAMPLE_GAP, y),
            )?;
        }
        Ok(())
    }
}

/// `text`, cut with "…" if it is wider than `room` px at `px`.
fn fit(text: &str, room: i32, px: f64) -> String {
    if text_width(text, px) <= room {
        return text.to_string();
    }
    let mut cut: String = text.chars().collect();
    while !cut.is_empty() && text_width(&cut, px) + text_width("…", px) > room {
        cut.pop();
    }
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every `<text>` of an SVG written by plotters: its anchor point, anchor, font size,
    /// rotation and content.
    pub(crate) struct SvgText {
        pub x: f64,
        pub y: f64,
        pub anchor: String,
        pub dy: String,
        pub px: f64,
        pub rotated: bool,
        pub text: String,
    }

    fn attr(tag: &str, name: &str) -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].to_string())
    }

    pub(crate) fn texts(svg: &str) -> Vec<SvgText> {
        svg.split("<text")
            .skip(1)
            .map(|rest| {
                let tag_end = rest.find('>').expect("a text tag closes");
                let tag = &rest[..tag_end];
                let body_end = rest.find("</text>").expect("a text element closes");
                let num = |name| {
                    attr(tag, name)
                        .and_then(|v| v.parse::<f64>().ok())
                        .expect("a numeric attribute")
                };
                SvgText {
                    x: num("x"),
                    y: num("y"),
                    anchor: attr(tag, "text-anchor").unwrap_or_else(|| "start".into()),
                    dy: attr(tag, "dy").unwrap_or_default(),
                    px: num("font-size"),
                    rotated: attr(tag, "transform").is_some(),
                    text: rest[tag_end + 1..body_end].trim().to_string(),
                }
            })
            .collect()
    }

    /// The image's width and height.
    pub(crate) fn size(svg: &str) -> (f64, f64) {
        let tag = &svg[..svg.find('>').expect("an svg tag")];
        let num = |name| {
            attr(tag, name)
                .and_then(|v| v.parse().ok())
                .expect("a size")
        };
        (num("width"), num("height"))
    }

    /// Asserts that every text of `svg` lies inside the image and is at least 13 px.
    pub(crate) fn assert_text_inside(svg: &str) {
        let (w, h) = size(svg);
        for t in texts(svg) {
            assert!(t.px >= 13.0, "{:?} is {} px", t.text, t.px);
            let width = text_width(&t.text, t.px) as f64;
            // A rotated text (a y description) runs up along y, centred on its anchor.
            let (along, across, extent) = if t.rotated {
                (t.y, t.x, h)
            } else {
                (t.x, t.y, w)
            };
            let (start, end) = match (t.rotated, t.anchor.as_str()) {
                (false, "start") => (along, along + width),
                (false, "end") => (along - width, along),
                _ => (along - width / 2.0, along + width / 2.0),
            };
            assert!(
                start >= 0.0 && end <= extent,
                "{:?} spans {start:.0}..{end:.0} of 0..{extent}",
                t.text
            );
            // dy sets where the glyphs sit across the anchor: below it (0.76em), centred on it
            // (0.5ex) or above it (-0.5ex); a rotated text's "below" is +x.
            let (low, high) = match t.dy.as_str() {
                "0.76em" => (across, across + t.px),
                "-0.5ex" => (across - t.px, across),
                _ => (across - t.px / 2.0, across + t.px / 2.0),
            };
            let other = if t.rotated { w } else { h };
            assert!(
                low >= 0.0 && high <= other,
                "{:?} spans {low:.0}..{high:.0} across, of 0..{other}",
                t.text
            );
        }
    }

    #[test]
    fn tick_labels_drop_needless_decimals() {
        assert_eq!(number(&2.0), "2");
        assert_eq!(number(&0.30000000000000004), "0.3");
        assert_eq!(number(&-0.0), "0");
        assert_eq!(number(&300.0), "300");
    }

    #[test]
    fn the_axis_top_is_a_round_number_above_every_value() {
        assert_eq!(axis_top(10.0), 12.0);
        assert_eq!(axis_top(6.5), 7.0);
        assert_eq!(axis_top(0.55), 0.6);
        assert_eq!(axis_top(0.0), 1.0);
        assert_eq!(axis_top(f64::NAN), 1.0);
        for v in [0.013, 1.0, 3.7, 48.0, 999.0] {
            assert!(axis_top(v) >= v * 1.05, "{v}");
        }
    }

    #[test]
    fn a_legend_beside_a_short_plot_takes_more_columns() {
        let entries = (0..16)
            .map(|i| (format!("server {i}"), color(i)))
            .collect::<Vec<_>>();
        let legend = Legend::new(entries, 1);
        let tall = legend.width_beside(2 * PAD as u32 + 16 * ROW as u32);
        let short = legend.width_beside(2 * PAD as u32 + 8 * ROW as u32);
        assert_eq!(
            short - tall,
            (legend.column_width() + COLUMN_GAP) as u32,
            "16 entries in 8 rows take a second column"
        );
    }

    #[test]
    fn a_name_too_wide_for_its_room_is_cut() {
        assert_eq!(fit("hold", 100, LABEL_PX), "hold");
        let cut = fit("churn (10.0.0.1:4040, 10.0.0.2:4040)", 120, LABEL_PX);
        assert!(
            cut.ends_with('…') && text_width(&cut, LABEL_PX) <= 120,
            "{cut}"
        );
    }
}
