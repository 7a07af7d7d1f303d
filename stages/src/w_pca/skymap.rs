//! `w.skymap` (science spec S10 "Maps"): pictures of the token sky from `w.pca`'s `projections`.
//!
//! - `sky`: a "naked-eye" Mollweide map (width × width/2, black). The graticule (parallels every
//!   30°, meridians every 30° including the ±180° outline) is drawn first in dim grey; then every
//!   token with a finite (lat, lon) adds one unit of exposure to its pixel, and a pixel with n
//!   units shows the grey plus pale blue-white × (1 − exp(−n/2)), so lone tokens are faint and
//!   crowded regions saturate and glow. Longitude grows to the right (0° in the centre), north is
//!   up. Highlighted tokens are then painted on top as opaque 3 × 3 orange squares.
//! - `density`: the one-degree histogram (360 longitude × 180 latitude bins over [−180°, 180°] ×
//!   [−90°, 90°]; a value on the upper edge goes to the last bin) smoothed by a Gaussian of σ = 1
//!   bin (SciPy's `gaussian_filter` defaults, see [`raster`](super::raster)), shown as an
//!   equirectangular image (width × width/2, each pixel takes the bin under its top-left corner)
//!   in `colormap`, linearly from 0 to the grid's maximum.
//! - `equatorial`: a polar plot, width/2 square: angle = longitude (0° to the right,
//!   counter-clockwise), radius = r / max r; rings at ¼, ½, ¾ and 1 of max r and spokes every 30°
//!   in dim grey; points and highlights as in `sky`.
//! - `heatmap` (CSV `lon_bin,lat_bin,count,smoothed`): every cell whose raw count or smoothed value
//!   is non-zero, longitude bin outer, latitude bin inner.
//! - `summary` (JSON): token counts, heatmap max/mean (smoothed and raw), image sizes.
//!
//! `flatten` = true plots `lat_flat` instead of `lat`. Everything is single-threaded f32/f64
//! arithmetic in a fixed order, so the bytes depend only on the inputs and params.

use std::fmt::Write as _;

use safetensors::tensor::Dtype;
use serde::Serialize;

use azimuth_stage_api::specs::w_pca::SKYMAP as SPEC;

use super::raster::{self, Canvas, Colormap, Rgb};
use crate::params::Params;
use crate::w_analysis::load_mask;
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

const GRID_GREY: Rgb = [0.22, 0.22, 0.22];
const STAR: Rgb = [0.85, 0.92, 1.0];
/// The highlight colour (orange).
pub(crate) const HIGHLIGHT: Rgb = [1.0, 0.45, 0.1];
/// Exposure per token: brightness = 1 − exp(−EXPOSURE · n).
const EXPOSURE: f32 = 0.5;
const LON_BINS: usize = 360;
const LAT_BINS: usize = 180;

#[derive(Debug, Serialize)]
struct Heatmap {
    max: f64,
    mean: f64,
    raw_max: u64,
    raw_mean: f64,
    nonzero_cells: usize,
    /// Bin of the smoothed maximum (first in CSV order on ties).
    max_lon_bin: usize,
    max_lat_bin: usize,
}

#[derive(Debug, Serialize)]
struct Summary {
    format: u32,
    tokens: usize,
    plotted: usize,
    skipped_nonfinite: usize,
    highlighted: usize,
    flatten: bool,
    colormap: String,
    sky_size: [usize; 2],
    density_size: [usize; 2],
    equatorial_size: usize,
    r_max: f64,
    heatmap: Heatmap,
}

/// Reads F32 [V] tensor `name` of the projections file.
fn read_f32(
    p: &Params<'_>,
    st: &safetensors::SafeTensors<'_>,
    path: &std::path::Path,
    name: &str,
) -> Result<Vec<f32>, StageError> {
    let t = st.tensor(name).map_err(|_| {
        p.error(format!(
            "`{}` (input `projections`) has no tensor `{name}`; connect the `projections` output \
             of a `w.pca` stage",
            path.display()
        ))
    })?;
    if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
        return Err(p.error(format!(
            "`{}` (input `projections`): `{name}` is {} {:?}; expected F32 [V]",
            path.display(),
            t.dtype(),
            t.shape()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// One-degree bins of (lon, lat); values outside the ranges are clamped into the edge bins.
fn bin_of(lon: f64, lat: f64) -> (usize, usize) {
    let i = ((lon + 180.0).floor().max(0.0) as usize).min(LON_BINS - 1);
    let j = ((lat + 90.0).floor().max(0.0) as usize).min(LAT_BINS - 1);
    (i, j)
}

/// Pixel of (lon, lat) on a Mollweide canvas of `width` × `height`.
pub(crate) fn sky_pixel(width: usize, height: usize, lon: f64, lat: f64) -> (i64, i64) {
    let (x, y) = raster::mollweide(lon, lat);
    let s = sky_scale(width, height);
    (
        (width as f64 / 2.0 + s * x).floor() as i64,
        (height as f64 / 2.0 - s * y).floor() as i64,
    )
}

/// Pixels per Mollweide unit: the ellipse (4√2 × 2√2 units) fills 98% of the canvas.
fn sky_scale(width: usize, height: usize) -> f64 {
    let sq2 = std::f64::consts::SQRT_2;
    0.98 * (width as f64 / (4.0 * sq2)).min(height as f64 / (2.0 * sq2))
}

/// Pixel of (lon, r) on the equatorial plot of side `size` with radius r_max.
pub(crate) fn polar_pixel(size: usize, r_max: f64, lon: f64, r: f64) -> (i64, i64) {
    let (c, radius) = polar_frame(size);
    let rho = if r_max > 0.0 { radius * r / r_max } else { 0.0 };
    let a = lon.to_radians();
    (
        (c + rho * a.cos()).floor() as i64,
        (c - rho * a.sin()).floor() as i64,
    )
}

fn polar_frame(size: usize) -> (f64, f64) {
    (size as f64 / 2.0, 0.47 * size as f64)
}

/// Adds one unit of exposure per point, then composes grey + star · (1 − exp(−EXPOSURE · n)).
fn expose(canvas: &mut Canvas, points: impl Iterator<Item = (i64, i64)>) {
    let (w, h) = (canvas.width, canvas.height);
    let mut counts = vec![0u32; w * h];
    for (x, y) in points {
        if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
            counts[y as usize * w + x as usize] += 1;
        }
    }
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 {
            let b = 1.0 - (-EXPOSURE * n as f32).exp();
            let (x, y) = ((i % w) as i64, (i / w) as i64);
            canvas.add(x, y, [STAR[0] * b, STAR[1] * b, STAR[2] * b]);
        }
    }
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let width = p.int("width")? as usize;
    let flatten = p.boolean("flatten")?;
    let cmap_name = p.string("colormap")?;
    let mask_name = p.string("highlight_mask")?;
    let cmap: &Colormap = match cmap_name.as_str() {
        "viridis" => &raster::VIRIDIS,
        "gray" => &raster::GRAY,
        _ => &raster::INFERNO,
    };
    let outs = [
        p.output("sky")?,
        p.output("density")?,
        p.output("equatorial")?,
        p.output("heatmap")?,
        p.output("summary")?,
    ];

    let (path, mapped) = crate::w_analysis::open_single(&p, "projections")?;
    let path = &path;
    let st = mapped.parse(path).map_err(|e| p.error(e))?;
    let lat = read_f32(&p, &st, path, if flatten { "lat_flat" } else { "lat" })?;
    let lon = read_f32(&p, &st, path, "lon")?;
    let r = read_f32(&p, &st, path, "r")?;
    let v = lat.len();
    if lon.len() != v || r.len() != v {
        return Err(p.error(format!(
            "`{}`: `lat`, `lon` and `r` have different lengths ({v}, {}, {}); is it a `w.pca` \
             projections file?",
            path.display(),
            lon.len(),
            r.len()
        )));
    }
    let highlight = if p.optional_inputs("highlight").is_empty() {
        vec![false; v]
    } else {
        load_mask(&p, "highlight", &mask_name, v)?
    };

    let finite: Vec<usize> = (0..v)
        .filter(|&t| lat[t].is_finite() && lon[t].is_finite())
        .collect();
    let lonlat = |t: usize| (lon[t] as f64, lat[t] as f64);

    // sky
    let (sw, sh) = (width, width / 2);
    let mut sky = Canvas::new(sw, sh);
    for g in (-180..=180).step_by(30) {
        let pts: Vec<(f64, f64)> = (-900..=900)
            .map(|i| sky_point(sw, sh, g as f64, i as f64 / 10.0))
            .collect();
        sky.polyline(&pts, GRID_GREY);
    }
    for g in (-60..=60).step_by(30) {
        let pts: Vec<(f64, f64)> = (-1800..=1800)
            .map(|i| sky_point(sw, sh, i as f64 / 10.0, g as f64))
            .collect();
        sky.polyline(&pts, GRID_GREY);
    }
    expose(
        &mut sky,
        finite.iter().map(|&t| {
            let (lo, la) = lonlat(t);
            sky_pixel(sw, sh, lo, la)
        }),
    );
    let dot = (width / 1000).max(1) as i64;
    for &t in finite.iter().filter(|&&t| highlight[t]) {
        let (lo, la) = lonlat(t);
        let (x, y) = sky_pixel(sw, sh, lo, la);
        sky.dot(x, y, dot, HIGHLIGHT);
    }
    let png = raster::encode_png(sw, sh, &sky.rgb8()).map_err(|e| p.error(e))?;
    p.write_output(outs[0], &png)?;
    drop(sky);

    // density
    let mut counts = vec![0f64; LON_BINS * LAT_BINS];
    for &t in &finite {
        let (lo, la) = lonlat(t);
        let (i, j) = bin_of(lo, la);
        counts[j * LON_BINS + i] += 1.0;
    }
    let smooth = raster::gaussian_filter(&counts, LON_BINS, LAT_BINS, 1.0);
    let max = smooth.iter().copied().fold(0f64, f64::max);
    let (dw, dh) = (width, width / 2);
    let mut density = Vec::with_capacity(dw * dh * 3);
    for py in 0..dh {
        let j = LAT_BINS - 1 - (py * LAT_BINS / dh);
        for px in 0..dw {
            let i = px * LON_BINS / dw;
            let value = smooth[j * LON_BINS + i];
            density.extend(cmap.at(if max > 0.0 { value / max } else { 0.0 }));
        }
    }
    let png = raster::encode_png(dw, dh, &density).map_err(|e| p.error(e))?;
    p.write_output(outs[1], &png)?;

    // equatorial
    let size = width / 2;
    let r_max = finite
        .iter()
        .map(|&t| r[t] as f64)
        .filter(|x| x.is_finite())
        .fold(0f64, f64::max);
    let mut eq = Canvas::new(size, size);
    let (c, radius) = polar_frame(size);
    for q in 1..=4 {
        let rho = radius * q as f64 / 4.0;
        let pts: Vec<(f64, f64)> = (0..=720)
            .map(|i| {
                let a = (i as f64 / 2.0).to_radians();
                (c + rho * a.cos(), c - rho * a.sin())
            })
            .collect();
        eq.polyline(&pts, GRID_GREY);
    }
    for s in (0..360).step_by(30) {
        let a = (s as f64).to_radians();
        eq.polyline(
            &[(c, c), (c + radius * a.cos(), c - radius * a.sin())],
            GRID_GREY,
        );
    }
    let on_plot = |t: usize| r[t].is_finite();
    expose(
        &mut eq,
        finite
            .iter()
            .filter(|&&t| on_plot(t))
            .map(|&t| polar_pixel(size, r_max, lon[t] as f64, r[t] as f64)),
    );
    for &t in finite.iter().filter(|&&t| highlight[t] && on_plot(t)) {
        let (x, y) = polar_pixel(size, r_max, lon[t] as f64, r[t] as f64);
        eq.dot(x, y, dot, HIGHLIGHT);
    }
    let png = raster::encode_png(size, size, &eq.rgb8()).map_err(|e| p.error(e))?;
    p.write_output(outs[2], &png)?;

    // heatmap CSV and summary
    let mut csv = String::from("lon_bin,lat_bin,count,smoothed\n");
    let mut nonzero = 0usize;
    let (mut best, mut best_at) = (f64::NEG_INFINITY, (0usize, 0usize));
    for i in 0..LON_BINS {
        for j in 0..LAT_BINS {
            let (n, s) = (counts[j * LON_BINS + i], smooth[j * LON_BINS + i]);
            if s > best {
                best = s;
                best_at = (i, j);
            }
            if n > 0.0 || s != 0.0 {
                nonzero += 1;
                let _ = writeln!(csv, "{i},{j},{n},{s}");
            }
        }
    }
    p.write_output(outs[3], csv.as_bytes())?;
    let cells = (LON_BINS * LAT_BINS) as f64;
    let summary = Summary {
        format: FORMAT,
        tokens: v,
        plotted: finite.len(),
        skipped_nonfinite: v - finite.len(),
        highlighted: highlight.iter().filter(|&&h| h).count(),
        flatten,
        colormap: cmap_name,
        sky_size: [sw, sh],
        density_size: [dw, dh],
        equatorial_size: size,
        r_max,
        heatmap: Heatmap {
            max,
            mean: smooth.iter().sum::<f64>() / cells,
            raw_max: counts.iter().copied().fold(0f64, f64::max) as u64,
            raw_mean: counts.iter().sum::<f64>() / cells,
            nonzero_cells: nonzero,
            max_lon_bin: best_at.0,
            max_lat_bin: best_at.1,
        },
    };
    p.write_json(outs[4], &summary)
}

/// Sub-pixel Mollweide position (for lines).
fn sky_point(width: usize, height: usize, lon: f64, lat: f64) -> (f64, f64) {
    let (x, y) = raster::mollweide(lon, lat);
    let s = sky_scale(width, height);
    (width as f64 / 2.0 + s * x, height as f64 / 2.0 - s * y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_sphere_with_closed_upper_edges() {
        assert_eq!(bin_of(-180.0, -90.0), (0, 0));
        assert_eq!(bin_of(180.0, 90.0), (359, 179));
        assert_eq!(bin_of(0.0, 0.0), (180, 90));
        assert_eq!(bin_of(-0.5, -0.5), (179, 89));
    }

    #[test]
    fn sky_pixel_puts_the_origin_in_the_centre() {
        assert_eq!(sky_pixel(2000, 1000, 0.0, 0.0), (1000, 500));
        let (x, _) = sky_pixel(2000, 1000, 90.0, 0.0);
        assert!(x > 1000);
        let (_, y) = sky_pixel(2000, 1000, 0.0, 45.0);
        assert!(y < 500);
    }
}
