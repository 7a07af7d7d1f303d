//! Deterministic PNG charts for the `movie.*` stages: line plots, stacked areas and discrete
//! images over a step axis, with axes, "nice" ticks (1, 2, 5 × 10^k), tick labels, a title and a
//! legend, drawn in a built-in 5 × 7 bitmap font (digits, upper-case letters and a few signs
//! and Greek letters; lower-case text is drawn in capitals), so charts need no font installed and
//! look the same on every machine. Charts are laid out in points and drawn at 200 DPI (the
//! research's convention): 1600 × 960 pixels, every data point on its own pixel column where
//! the data allow. Everything is integer pixel work on an 8-bit RGB buffer, encoded by
//! [`crate::w_pca::raster::encode_png`] (fixed settings, `pHYs` = 200 DPI, no time chunk), so
//! the same data always give the same bytes. Non-finite y values are skipped (lines break
//! there); a flat or empty range is widened so the axes stay valid. Linear axes only.

use crate::w_pca::raster::encode_png;

/// An 8-bit RGB colour.
pub(crate) type Color = [u8; 3];

pub(crate) const BLUE: Color = [31, 119, 180];
pub(crate) const ORANGE: Color = [255, 127, 14];
pub(crate) const GREEN: Color = [44, 160, 44];
pub(crate) const RED: Color = [214, 39, 40];
/// Four discrete plasma-like colours for the phases Early, Midlife, Late, Frozen (S42).
pub(crate) const PHASE_COLORS: [Color; 4] =
    [[13, 8, 135], [156, 23, 158], [237, 121, 83], [240, 249, 33]];

/// Pixels per point: charts are laid out in points (1/100 in) and drawn at 200 DPI, the
/// research's convention (science spec §0), so an 8 × 4.8 in chart is 1600 × 960 pixels, data
/// lines are positioned to the pixel, and text and frames scale with S.
const S: i64 = 2;
/// The resolution written into every PNG's `pHYs` chunk (`raster::encode_png`).
pub(crate) const DPI: u32 = 200;
const WIDTH: usize = 800 * S as usize;
const HEIGHT: usize = 480 * S as usize;
const LEFT: usize = 90 * S as usize;
const RIGHT: usize = 20 * S as usize;
const TOP: usize = 36 * S as usize;
const BOTTOM: usize = 56 * S as usize;
const WHITE: Color = [255, 255, 255];
const BLACK: Color = [0, 0, 0];
const GRID: Color = [225, 225, 225];

/// Glyphs of the 5 × 7 font: each row's 5 bits, most significant (bit 4) leftmost.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '^' => [0x04, 0x0A, 0x11, 0, 0, 0, 0],
        '*' => [0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '|' => [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        '\'' => [0x04, 0x04, 0x08, 0, 0, 0, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '!' => [0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04],
        '\u{2212}' => [0, 0, 0, 0x1F, 0, 0, 0], // minus sign
        '\u{00B1}' => [0x04, 0x04, 0x1F, 0x04, 0x04, 0, 0x1F], // plus-minus
        '\u{00D7}' => [0, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0], // times
        '\u{03C3}' => [0, 0, 0x0F, 0x12, 0x12, 0x12, 0x0C], // sigma
        '\u{221A}' => [0x07, 0x04, 0x04, 0x04, 0x14, 0x0C, 0x04], // square root
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04], // '?'
    }
}

/// An 8-bit RGB image, row 0 at the top.
struct Image {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Image {
    fn new(w: usize, h: usize) -> Image {
        Image {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: Color) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Color) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.set(x, y, c);
            }
        }
    }

    /// A line (Bresenham) one pixel wide, or with `thick` an S × S pen (S pixels = one point).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Color, thick: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let pen = if thick { S } else { 1 };
        loop {
            for oy in 0..pen {
                for ox in 0..pen {
                    self.set(x + ox, y + oy, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at (x, y); each glyph is 6 points wide (5 + 1 space), each
    /// font dot an S × S block.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Color) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (x + S * (6 * k as i64 + col), y + S * row as i64);
                        self.rect(px, py, px + S - 1, py + S - 1, c);
                    }
                }
            }
        }
    }

    /// Text rotated a quarter turn counter-clockwise (reads bottom to top), its glyphs'
    /// top edge at column x and the string ending at row y.
    fn text_up(&mut self, x: i64, y: i64, s: &str, c: Color) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (x + S * row as i64, y - S * (6 * k as i64 + col));
                        self.rect(px, py - S + 1, px + S - 1, py, c);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `s` drawn by [`Image::text`].
fn text_width(s: &str) -> i64 {
    S * (6 * s.chars().count() as i64 - 1)
}

/// Ticks at multiples of a 1-2-5 step covering [lo, hi], about `target` of them.
fn ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// A tick label: fixed decimals matching the step, or `1.5E-4` style for very large/small.
fn tick_label(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) || step < 1e-4 {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        let digits = ((step / 10f64.powi(e)).log10().floor() as i32)
            .min(0)
            .unsigned_abs() as usize;
        return format!("{m:.digits$}E{e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Range of the finite values, widened when flat or empty.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 1e-300 || hi - lo <= lo.abs() * 1e-12 {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// A chart being drawn: data-to-pixel mapping of the plot area plus the image.
pub(crate) struct Chart {
    img: Image,
    x: (f64, f64),
    y: (f64, f64),
    legend: Vec<(String, Color)>,
}

impl Chart {
    /// A chart with axes over x ∈ `x_range`, y ∈ `y_range` (both widened if flat), a title and
    /// axis labels.
    pub(crate) fn new(
        title: &str,
        x_label: &str,
        y_label: &str,
        x_range: (f64, f64),
        y_range: (f64, f64),
    ) -> Chart {
        let x = range([x_range.0, x_range.1].into_iter());
        let y = range([y_range.0, y_range.1].into_iter());
        let mut img = Image::new(WIDTH, HEIGHT);
        let (px0, px1) = (LEFT as i64, (WIDTH - RIGHT) as i64);
        let (py0, py1) = (TOP as i64, (HEIGHT - BOTTOM) as i64);
        let mut chart = Chart {
            img: Image::new(1, 1),
            x,
            y,
            legend: Vec::new(),
        };
        let (xt, xs) = ticks(x.0, x.1, 8);
        for v in &xt {
            let px = chart.px(*v).round() as i64;
            img.line((px, py0), (px, py1), GRID, false);
            img.line((px, py1), (px, py1 + 4 * S), BLACK, true);
            let label = tick_label(*v, xs);
            img.text(px - text_width(&label) / 2, py1 + 8 * S, &label, BLACK);
        }
        let (yt, ys) = ticks(y.0, y.1, 6);
        for v in &yt {
            let py = chart.py(*v).round() as i64;
            img.line((px0, py), (px1, py), GRID, false);
            img.line((px0 - 4 * S, py), (px0, py), BLACK, true);
            let label = tick_label(*v, ys);
            img.text(px0 - 7 * S - text_width(&label), py - 3 * S, &label, BLACK);
        }
        img.line((px0, py0), (px0, py1), BLACK, true);
        img.line((px0, py1), (px1, py1), BLACK, true);
        img.line((px1, py0), (px1, py1), BLACK, true);
        img.line((px0, py0), (px1, py0), BLACK, true);
        img.text((WIDTH as i64 - text_width(title)) / 2, 12 * S, title, BLACK);
        img.text(
            (px0 + px1 - text_width(x_label)) / 2,
            HEIGHT as i64 - 20 * S,
            x_label,
            BLACK,
        );
        img.text_up(8 * S, (py0 + py1 + text_width(y_label)) / 2, y_label, BLACK);
        chart.img = img;
        chart
    }

    /// Pixel column of data x.
    fn px(&self, x: f64) -> f64 {
        let (a, b) = (LEFT as f64, (WIDTH - RIGHT) as f64);
        a + (x - self.x.0) / (self.x.1 - self.x.0) * (b - a)
    }

    /// Pixel row of data y.
    fn py(&self, y: f64) -> f64 {
        let (a, b) = ((HEIGHT - BOTTOM) as f64, TOP as f64);
        a + (y - self.y.0) / (self.y.1 - self.y.0) * (b - a)
    }

    fn clamp_px(&self, x: f64, y: f64) -> (i64, i64) {
        (
            x.clamp(LEFT as f64, (WIDTH - RIGHT) as f64).round() as i64,
            y.clamp(TOP as f64, (HEIGHT - BOTTOM) as f64).round() as i64,
        )
    }

    /// A line through (x, y) points; non-finite points break it.
    pub(crate) fn line(&mut self, points: &[(f64, f64)], color: Color, name: &str) {
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in points {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = self.clamp_px(self.px(x), self.py(y));
            match prev {
                Some(q) => self.img.line(q, p, color, true),
                None => self.img.set(p.0, p.1, color),
            }
            prev = Some(p);
        }
        if !name.is_empty() {
            self.legend.push((name.to_string(), color));
        }
    }

    /// Fills, for each x between consecutive points, the band between `lower` and `upper`
    /// (step-wise: the value of a point holds until the next point).
    pub(crate) fn band(
        &mut self,
        xs: &[f64],
        lower: &[f64],
        upper: &[f64],
        color: Color,
        name: &str,
    ) {
        for i in 0..xs.len() {
            let x0 = self.px(xs[i]);
            let x1 = if i + 1 < xs.len() {
                self.px(xs[i + 1])
            } else {
                x0 + 1.0
            };
            let (a, b) = (self.py(lower[i]), self.py(upper[i]));
            let (p0, q0) = self.clamp_px(x0, a);
            let (p1, q1) = self.clamp_px(x1, b);
            if q0 == q1 {
                continue;
            }
            self.img.rect(p0, q0, (p1 - 1).max(p0), q1, color);
        }
        if !name.is_empty() {
            self.legend.push((name.to_string(), color));
        }
    }

    /// Colours the plot-area rectangle of data x ∈ [x0, x1), y ∈ [y0, y1).
    pub(crate) fn cell(&mut self, x0: f64, x1: f64, y0: f64, y1: f64, color: Color) {
        let (a, b) = self.clamp_px(self.px(x0), self.py(y0));
        let (c, d) = self.clamp_px(self.px(x1), self.py(y1));
        self.img.rect(
            a,
            b.min(d),
            (c - 1).max(a),
            (b.max(d) - 1).max(b.min(d)),
            color,
        );
    }

    /// Adds a legend entry without drawing anything (for images).
    pub(crate) fn key(&mut self, name: &str, color: Color) {
        self.legend.push((name.to_string(), color));
    }

    /// Draws the legend (top right of the plot area) and encodes the PNG.
    pub(crate) fn png(mut self) -> Result<Vec<u8>, String> {
        let legend = std::mem::take(&mut self.legend);
        let widest = legend.iter().map(|(n, _)| text_width(n)).max().unwrap_or(0);
        let x = (WIDTH - RIGHT) as i64 - widest - 30 * S;
        for (k, (name, color)) in legend.iter().enumerate() {
            let y = TOP as i64 + 8 * S + 14 * S * k as i64;
            self.img
                .rect(x - 3 * S, y - 3 * S, x + widest + 24 * S, y + 10 * S, WHITE);
            self.img.rect(x, y, x + 12 * S, y + 7 * S, *color);
            self.img.text(x + 18 * S, y, name, BLACK);
        }
        encode_png(self.img.w, self.img.h, &self.img.px)
    }
}

/// A line chart of several named series over a shared x axis (NaNs break lines).
pub(crate) fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    xs: &[f64],
    series: &[(&str, Color, &[f64])],
) -> Result<Vec<u8>, String> {
    let x = range(xs.iter().copied());
    let y = range(series.iter().flat_map(|s| s.2.iter().copied()));
    let mut chart = Chart::new(title, x_label, y_label, x, y);
    for (name, color, ys) in series {
        let pts: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
        chart.line(&pts, *color, name);
    }
    chart.png()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_range() {
        let (t, s) = ticks(0.0, 1000.0, 8);
        assert_eq!(s, 200.0);
        assert_eq!(t, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        let (t, s) = ticks(0.13, 0.57, 6);
        assert_eq!(s, 0.1);
        assert_eq!(t.len(), 4);
        assert_eq!(tick_label(0.2, 0.1), "0.2");
        assert_eq!(tick_label(2000.0, 500.0), "2000");
        assert_eq!(tick_label(2e-5, 1e-5), "2E-5");
        assert_eq!(tick_label(1.5e-5, 5e-6), "1.5E-5");
    }

    #[test]
    fn charts_are_deterministic_and_draw_their_lines() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        let ys = [1.0, f64::NAN, 3.0, 2.0];
        let a = line_chart("T", "STEP", "Y", &xs, &[("a", RED, &ys)]).unwrap();
        let b = line_chart("T", "STEP", "Y", &xs, &[("a", RED, &ys)]).unwrap();
        assert_eq!(a, b);
        let c = line_chart("T", "STEP", "Y", &xs, &[("a", BLUE, &ys)]).unwrap();
        assert_ne!(a, c);
        // Flat and empty data still give a valid chart.
        line_chart("T", "X", "Y", &[], &[]).unwrap();
        line_chart("T", "X", "Y", &[5.0], &[("one", RED, &[2.0])]).unwrap();
    }

    #[test]
    fn the_font_has_every_glyph_the_labels_use() {
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ .,-+=/():_%^*<>[]|'#!\u{2212}±×σ√".chars() {
            if c != ' ' {
                assert_ne!(glyph(c), glyph('?'), "{c}");
            }
        }
    }
}
