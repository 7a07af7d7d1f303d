//! `w.centroid_angle` (science spec S11): the angle between the dead and live centroids of W.
//! Dead = the black-hole tokens (every member of every black hole of the `black_holes` input), live
//! = all other rows. Centroids are means accumulated in f64 over the exact element values
//! ([`super::mean_of`], thread-count independent); the cosine is reported unclamped (f64, so a
//! value above 1 would be rounding, V2.28) and the angle in degrees is arccos of the cosine clamped
//! to [−1, 1]. Also: each black-hole vector's cosine and angle to the live centroid, the cosine
//! between the population-weighted dead centroid and the unweighted mean of the K black-hole
//! vectors, μ = mean of all rows with ‖μ‖ and ‖dead centroid − μ‖.
//!
//! Without black holes there is no dead set: the stage still writes its summary, with
//! `dead_tokens: 0`, every dead-side quantity null and a `note` saying so, so a pipeline over a
//! matrix without duplicate rows keeps running. Likewise the live side is null if every row is in
//! a black hole.

use serde::Serialize;

use azimuth_stage_api::specs::w_dead::CENTROID_ANGLE as SPEC;

use super::{mean_of, norm};
use crate::params::Params;
use crate::w_analysis::{load_black_holes, load_w, with_threads, LATTICE_DTYPES};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize)]
struct HoleAngle {
    black_hole: usize,
    representative: u32,
    population: usize,
    norm: f64,
    cosine_to_live: Option<f64>,
    angle_to_live_degrees: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Summary {
    format: u32,
    tensor: String,
    rows: usize,
    cols: usize,
    black_holes: usize,
    dead_tokens: usize,
    live_tokens: usize,
    note: Option<String>,
    dead_centroid_norm: Option<f64>,
    live_centroid_norm: Option<f64>,
    /// cos(dead centroid, live centroid), unclamped.
    cosine: Option<f64>,
    /// arccos(clamp(cosine, −1, 1)) in degrees.
    angle_degrees: Option<f64>,
    per_black_hole: Vec<HoleAngle>,
    /// Smallest and largest angle of a black-hole vector to the live centroid.
    black_hole_angle_min_degrees: Option<f64>,
    black_hole_angle_max_degrees: Option<f64>,
    /// ‖unweighted mean of the K black-hole vectors‖.
    black_hole_mean_norm: Option<f64>,
    /// cos(weighted dead centroid, unweighted mean of the K vectors), unclamped.
    cosine_weighted_vs_unweighted: Option<f64>,
    mean_norm: f64,
    /// ‖dead centroid − μ‖, μ = mean of all rows.
    dead_minus_mean_norm: Option<f64>,
    live_minus_mean_norm: Option<f64>,
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (norm(a) * norm(b))
}

fn degrees(cos: f64) -> f64 {
    cos.clamp(-1.0, 1.0).acos().to_degrees()
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let summary_out = p.output("summary")?;
    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "rows are read as exact float values",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let rows = m.rows;
    let bh = load_black_holes(&p, "black_holes", rows)?;

    let dead: Vec<u32> = (0..rows as u32)
        .filter(|&t| bh.id[t as usize] != 0)
        .collect();
    let live: Vec<u32> = (0..rows as u32)
        .filter(|&t| bh.id[t as usize] == 0)
        .collect();
    let all: Vec<u32> = (0..rows as u32).collect();
    let reps: Vec<u32> = bh.members.iter().map(|g| g[0]).collect();
    let (dead_c, live_c, mu, hole_mean) = with_threads(&p, ctx.threads, || {
        (
            (!dead.is_empty()).then(|| mean_of(&m, f, &dead)),
            (!live.is_empty()).then(|| mean_of(&m, f, &live)),
            mean_of(&m, f, &all),
            (!reps.is_empty()).then(|| mean_of(&m, f, &reps)),
        )
    })?;

    let cos = dead_c
        .as_ref()
        .zip(live_c.as_ref())
        .map(|(d, l)| cosine(d, l));
    let per_black_hole: Vec<HoleAngle> = bh
        .members
        .iter()
        .enumerate()
        .map(|(k, g)| {
            let v = super::row_f64(f, m.row(g[0] as usize));
            let c = live_c.as_ref().map(|l| cosine(&v, l));
            HoleAngle {
                black_hole: k + 1,
                representative: g[0],
                population: g.len(),
                norm: norm(&v),
                cosine_to_live: c,
                angle_to_live_degrees: c.map(degrees),
            }
        })
        .collect();
    let angles: Vec<f64> = per_black_hole
        .iter()
        .filter_map(|h| h.angle_to_live_degrees)
        .collect();
    let note = if dead.is_empty() {
        Some(
            "the black_holes input holds no black hole: there is no dead set, so the dead \
             centroid and every angle are undefined (null)"
                .to_string(),
        )
    } else if live.is_empty() {
        Some("every row is in a black hole: there is no live set (live quantities are null)".into())
    } else {
        None
    };
    let minus_mu = |c: &Vec<f64>| -> f64 { super::l2(c, &mu) };
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        rows,
        cols: m.cols,
        black_holes: bh.members.len(),
        dead_tokens: dead.len(),
        live_tokens: live.len(),
        note,
        dead_centroid_norm: dead_c.as_deref().map(norm),
        live_centroid_norm: live_c.as_deref().map(norm),
        cosine: cos,
        angle_degrees: cos.map(degrees),
        black_hole_angle_min_degrees: angles.iter().copied().reduce(f64::min),
        black_hole_angle_max_degrees: angles.iter().copied().reduce(f64::max),
        per_black_hole,
        black_hole_mean_norm: hole_mean.as_deref().map(norm),
        cosine_weighted_vs_unweighted: dead_c
            .as_ref()
            .zip(hole_mean.as_ref())
            .map(|(d, h)| cosine(d, h)),
        mean_norm: norm(&mu),
        dead_minus_mean_norm: dead_c.as_ref().map(minus_mu),
        live_minus_mean_norm: live_c.as_ref().map(minus_mu),
    };
    p.write_json(summary_out, &summary)
}
