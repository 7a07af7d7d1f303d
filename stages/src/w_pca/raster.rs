//! A tiny deterministic rasteriser for the sky maps of `w.skymap`: an RGB canvas of f32 channels
//! (additive exposure, max-blended lines, opaque dots), the Mollweide projection, a separable
//! Gaussian filter, three colour tables and a PNG encoder with fixed settings.
//!
//! - **Mollweide** (equal-area): the auxiliary angle θ solves 2θ + sin 2θ = π sin φ by Newton's
//!   method from θ = φ (at most 60 steps, stop below 1e-12 rad; θ = ±π/2 at the poles); then
//!   x = (2√2/π)·λ·cos θ, y = √2·sin θ, so the whole sky fills the ellipse |x| ≤ 2√2, |y| ≤ √2.
//! - **Gaussian filter**: weights exp(−i²/2σ²) for |i| ≤ ⌊4σ + 0.5⌋, normalised to sum 1, applied
//!   along each axis with mirror ("reflect": … b a | a b …) boundaries, in f64 — the defaults of
//!   SciPy's `gaussian_filter`, which the original heatmaps used.
//! - **Colour tables** are piecewise-linear interpolations between a handful of control points
//!   chosen here by eye to resemble the well-known perceptual maps (`inferno`: black → purple →
//!   red → orange → pale yellow; `viridis`: purple → blue → teal → green → yellow) and a plain grey
//!   ramp; they are approximations, not the original tables.
//! - **PNG**: 8-bit RGB, `png` crate, `Compression::Balanced` with the adaptive filter, one
//!   ancillary chunk, `pHYs` = 200 DPI (7,874 px/m; so a 2000-pixel sky map prints 10 in wide),
//!   and no time or gamma, so the same pixels always give the same bytes.

/// A linear RGB colour, each channel in [0, 1].
pub(crate) type Rgb = [f32; 3];

/// An RGB image with f32 channels, row 0 at the top.
pub(crate) struct Canvas {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pixels: Vec<f32>,
}

impl Canvas {
    /// A black canvas.
    pub(crate) fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            height,
            pixels: vec![0.0; width * height * 3],
        }
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        (x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height)
            .then(|| (y as usize * self.width + x as usize) * 3)
    }

    /// Raises each channel of pixel (x, y) to at least `c` (off-canvas pixels are ignored).
    pub(crate) fn max(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            for (px, ck) in self.pixels[i..i + 3].iter_mut().zip(c) {
                *px = px.max(ck);
            }
        }
    }

    /// Adds `c` to pixel (x, y).
    pub(crate) fn add(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            for (px, ck) in self.pixels[i..i + 3].iter_mut().zip(c) {
                *px += ck;
            }
        }
    }

    /// Sets pixel (x, y) to `c`.
    pub(crate) fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A filled square of side 2·radius + 1 centred on (x, y), colour `c`.
    pub(crate) fn dot(&mut self, x: i64, y: i64, radius: i64, c: Rgb) {
        for dy in -radius..=radius {
            for dx in -radius..=radius {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// A one-pixel line from (x0, y0) to (x1, y1) (Bresenham), max-blended with `c`.
    pub(crate) fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.max(x, y, c);
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

    /// A polyline through `points` (pixel coordinates, rounded).
    pub(crate) fn polyline(&mut self, points: &[(f64, f64)], c: Rgb) {
        let px = |(x, y): (f64, f64)| (x.round() as i64, y.round() as i64);
        for pair in points.windows(2) {
            self.line(px(pair[0]), px(pair[1]), c);
        }
    }

    /// 8-bit RGB bytes, channels clamped to [0, 1] and rounded.
    pub(crate) fn rgb8(&self) -> Vec<u8> {
        self.pixels.iter().map(|&v| to_u8(v)).collect()
    }
}

/// A channel in [0, 1] as a byte (rounded, clamped).
pub(crate) fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Mollweide coordinates of (longitude, latitude) in degrees: x ∈ [−2√2, 2√2], y ∈ [−√2, √2].
pub(crate) fn mollweide(lon_deg: f64, lat_deg: f64) -> (f64, f64) {
    use std::f64::consts::{FRAC_PI_2, PI, SQRT_2};
    let (lambda, phi) = (lon_deg.to_radians(), lat_deg.to_radians());
    let theta = if phi.abs() >= FRAC_PI_2 - 1e-12 {
        FRAC_PI_2.copysign(phi)
    } else {
        let target = PI * phi.sin();
        let mut t = phi;
        for _ in 0..60 {
            let f = 2.0 * t + (2.0 * t).sin() - target;
            let df = 2.0 + 2.0 * (2.0 * t).cos();
            if df.abs() < 1e-300 {
                break;
            }
            let step = f / df;
            t = (t - step).clamp(-FRAC_PI_2, FRAC_PI_2);
            if step.abs() < 1e-12 {
                break;
            }
        }
        t
    };
    (
        2.0 * SQRT_2 / PI * lambda * theta.cos(),
        SQRT_2 * theta.sin(),
    )
}

/// `grid` (row-major, `nx` columns × `ny` rows) filtered by a Gaussian of `sigma` cells along
/// both axes (see the module doc).
pub(crate) fn gaussian_filter(grid: &[f64], nx: usize, ny: usize, sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5).floor() as i64;
    let mut kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|w| *w /= total);
    let mirror = |i: i64, n: usize| -> usize {
        let n = n as i64;
        let period = 2 * n;
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - 1 - j;
        }
        j as usize
    };
    let mut rows_done = vec![0f64; nx * ny];
    for y in 0..ny {
        for x in 0..nx {
            rows_done[y * nx + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * grid[y * nx + mirror(x as i64 + k as i64 - radius, nx)])
                .sum();
        }
    }
    let mut out = vec![0f64; nx * ny];
    for y in 0..ny {
        for x in 0..nx {
            out[y * nx + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * rows_done[mirror(y as i64 + k as i64 - radius, ny) * nx + x])
                .sum();
        }
    }
    out
}

/// A colour table: control points (position in [0, 1], RGB bytes), ascending positions.
pub(crate) struct Colormap(&'static [(f32, [u8; 3])]);

pub(crate) const INFERNO: Colormap = Colormap(&[
    (0.0, [0, 0, 4]),
    (0.13, [31, 12, 72]),
    (0.25, [85, 15, 109]),
    (0.38, [136, 34, 106]),
    (0.5, [186, 54, 85]),
    (0.63, [227, 89, 51]),
    (0.75, [249, 140, 10]),
    (0.88, [249, 201, 50]),
    (1.0, [252, 255, 164]),
]);

pub(crate) const VIRIDIS: Colormap = Colormap(&[
    (0.0, [68, 1, 84]),
    (0.25, [59, 82, 139]),
    (0.5, [33, 145, 140]),
    (0.75, [94, 201, 98]),
    (1.0, [253, 231, 37]),
]);

pub(crate) const GRAY: Colormap = Colormap(&[(0.0, [0, 0, 0]), (1.0, [255, 255, 255])]);

impl Colormap {
    /// The colour at `t` (clamped to [0, 1]; NaN counts as 0).
    pub(crate) fn at(&self, t: f64) -> [u8; 3] {
        let t = if t.is_nan() {
            0.0
        } else {
            t.clamp(0.0, 1.0) as f32
        };
        let pts = self.0;
        let i = pts.partition_point(|p| p.0 <= t).clamp(1, pts.len() - 1);
        let ((t0, c0), (t1, c1)) = (pts[i - 1], pts[i]);
        let f = if t1 > t0 {
            ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut out = [0u8; 3];
        for k in 0..3 {
            out[k] = (c0[k] as f32 + f * (c1[k] as f32 - c0[k] as f32)).round() as u8;
        }
        out
    }
}

/// PNG bytes of an 8-bit RGB image (fixed encoder settings, see the module doc).
pub(crate) fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>, String> {
    assert_eq!(rgb.len(), width * height * 3);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Balanced);
        enc.set_filter(png::Filter::Adaptive);
        // 200 DPI (science spec §0): pixels per metre, rounded as PNG stores it.
        let ppm = (crate::movie::plot::DPI as f64 / 0.0254).round() as u32;
        enc.set_pixel_dims(Some(png::PixelDimensions {
            xppu: ppm,
            yppu: ppm,
            unit: png::Unit::Meter,
        }));
        let mut writer = enc
            .write_header()
            .map_err(|e| format!("cannot encode PNG header: {e}"))?;
        writer
            .write_image_data(rgb)
            .map_err(|e| format!("cannot encode PNG data: {e}"))?;
        writer
            .finish()
            .map_err(|e| format!("cannot finish PNG: {e}"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::SQRT_2;

    #[test]
    fn mollweide_maps_landmarks_and_solves_its_equation() {
        assert_eq!(mollweide(0.0, 0.0), (0.0, 0.0));
        let (x, y) = mollweide(180.0, 0.0);
        assert!((x - 2.0 * SQRT_2).abs() < 1e-12 && y == 0.0);
        let (x, y) = mollweide(-180.0, 0.0);
        assert!((x + 2.0 * SQRT_2).abs() < 1e-12 && y == 0.0);
        let (x, y) = mollweide(45.0, 90.0);
        assert!(x.abs() < 1e-12 && (y - SQRT_2).abs() < 1e-12);
        for lat in [-89.9f64, -60.0, -10.0, 5.0, 30.0, 75.0, 89.99] {
            let (_, y) = mollweide(0.0, lat);
            let theta = (y / SQRT_2).asin();
            let residual =
                2.0 * theta + (2.0 * theta).sin() - std::f64::consts::PI * lat.to_radians().sin();
            assert!(residual.abs() < 1e-9, "lat {lat}: {residual}");
        }
    }

    #[test]
    fn gaussian_filter_keeps_mass_and_is_symmetric() {
        let (nx, ny) = (20, 11);
        let mut g = vec![0f64; nx * ny];
        g[5 * nx + 10] = 100.0;
        let s = gaussian_filter(&g, nx, ny, 1.0);
        assert!((s.iter().sum::<f64>() - 100.0).abs() < 1e-9);
        assert!((s[5 * nx + 9] - s[5 * nx + 11]).abs() < 1e-12);
        assert!((s[4 * nx + 10] - s[5 * nx + 9]).abs() < 1e-12);
        let centre = 100.0 / (2.0 * std::f64::consts::PI); // ≈ peak of a 2-D unit Gaussian
        assert!((s[5 * nx + 10] - centre).abs() < 0.1, "{}", s[5 * nx + 10]);
        // at the edge the mirror keeps mass inside
        let mut e = vec![0f64; nx * ny];
        e[0] = 1.0;
        let se = gaussian_filter(&e, nx, ny, 1.0);
        assert!((se.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn colormaps_hit_their_control_points() {
        assert_eq!(INFERNO.at(0.0), [0, 0, 4]);
        assert_eq!(INFERNO.at(1.0), [252, 255, 164]);
        assert_eq!(INFERNO.at(0.5), [186, 54, 85]);
        assert_eq!(VIRIDIS.at(2.0), [253, 231, 37]);
        assert_eq!(GRAY.at(0.5), [128, 128, 128]);
        assert_eq!(GRAY.at(f64::NAN), [0, 0, 0]);
    }

    #[test]
    fn lines_reach_both_ends() {
        let mut c = Canvas::new(10, 5);
        c.line((0, 0), (9, 4), [1.0, 0.5, 0.0]);
        let px = c.rgb8();
        assert_eq!(&px[0..3], &[255, 128, 0]);
        let last = (4 * 10 + 9) * 3;
        assert_eq!(&px[last..last + 3], &[255, 128, 0]);
        assert_eq!(px.chunks(3).filter(|p| p[0] == 255).count(), 10);
    }
}
