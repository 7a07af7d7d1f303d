//! The `w_dead` family of built-in stages (metadata in `azimuth-stage-api`, `specs/w_dead.rs`):
//! which tokens of W are dead and how that set is laid out.
//!
//! - [`dead_sets`] (`w.dead_sets`, S05 rules A, B, D): exponent neighbourhood of black hole 1,
//!   L2 void around the black-hole centroid, bit-space flood fill; masks and set differences.
//! - [`centroid_angle`] (`w.centroid_angle`, S11): dead vs live centroid.
//! - [`geography`] (`w.geography`, S06): core, Oort cloud, Outlier of one dead set.
//!
//! Shared here: the distinct-row classes of W (identity on raw bytes via
//! [`crate::bf16::identical_rows`]) and exact f64 views of rows. Every float reduction of this
//! family (centroids, distances, norms) accumulates in f64 over the exact f32 up-cast of the
//! elements, sequentially within a row or set in token-id order, so results do not depend on the
//! thread count; values are printed rounded to f32 where the science spec prints f32 numbers.

pub(crate) mod centroid_angle;
pub(crate) mod dead_sets;
pub(crate) mod geography;

use rayon::prelude::*;

use crate::lattice::Format;
use crate::w_analysis::Matrix;
use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.dead_sets" => dead_sets::run(ctx),
        "w.centroid_angle" => centroid_angle::run(ctx),
        "w.geography" => geography::run(ctx),
        _ => return None,
    })
}

/// For every row, the smallest row index with identical bytes (itself for a row shared by no
/// other). Runs [`crate::bf16::identical_rows`] on the current rayon pool.
pub(crate) fn distinct_classes(data: &[u8], row_bytes: usize) -> Vec<u32> {
    let rows = data.len() / row_bytes;
    let census = crate::bf16::identical_rows(data, row_bytes);
    let mut class: Vec<u32> = (0..rows as u32).collect();
    for g in &census.groups {
        for &t in g {
            class[t as usize] = g[0];
        }
    }
    class
}

/// The exact values of a little-endian row as f64.
pub(crate) fn row_f64(f: Format, row: &[u8]) -> Vec<f64> {
    (0..row.len() / f.bytes())
        .map(|j| f.to_f64(f.pattern(row, j)))
        .collect()
}

/// ‖row − c‖₂, accumulated in f64 in column order.
pub(crate) fn l2_to(f: Format, row: &[u8], c: &[f64]) -> f64 {
    crate::lattice::squared_distance_f64(f, row, c).sqrt()
}

/// ‖a − b‖₂ of two f64 vectors.
pub(crate) fn l2(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// The mean of the rows `ids`, accumulated in f64: partial sums over fixed blocks of 1,024 ids
/// (in parallel on the current pool), added in block order, so the result does not depend on the
/// thread count.
pub(crate) fn mean_of(m: &Matrix<'_>, f: Format, ids: &[u32]) -> Vec<f64> {
    let cols = m.cols;
    let partial: Vec<Vec<f64>> = ids
        .par_chunks(1024)
        .map(|block| {
            let mut sum = vec![0.0f64; cols];
            for &t in block {
                let r = m.row(t as usize);
                for (j, s) in sum.iter_mut().enumerate() {
                    *s += f.to_f64(f.pattern(r, j));
                }
            }
            sum
        })
        .collect();
    let mut sum = vec![0.0f64; cols];
    for p in &partial {
        for (s, x) in sum.iter_mut().zip(p) {
            *s += x;
        }
    }
    let n = ids.len().max(1) as f64;
    sum.iter().map(|s| s / n).collect()
}

/// ‖v‖₂ of an f64 vector.
pub(crate) fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}
