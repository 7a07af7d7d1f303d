//! `movie.hidden_state` (science spec S45): h_mean[t], the mean final hidden state of step t's
//! batch that `train.gpt` records, and what it does to the dead rows.
//! - `h_mean_norm` ‖h_mean[t]‖ and `cos_prev` = cos(h_mean[t], h_mean[t−1]) (persistence; the
//!   Crucible-3 reference is a mean of 0.997557, median 0.998699);
//! - `dead_step_cos` = cos(c[t] − c[t−1], h_mean[t]) with c the dead rows' centroid, for every
//!   step t whose snapshots t−1 and t were both recorded and whose centroid moved. S30.3: a dead
//!   row's gradient is (1/BT)·Σ p_dead·h, parallel to h_mean, so the swarm moves against it
//!   (≈ −1). Empty when not measurable (no such pair of snapshots, or no motion).
//!
//! Arithmetic in f64 on the recorded f32 values; single-threaded, so the outputs never depend on
//! the threads granted. Optimizer state (Adam's m and v) is not recorded by `train.gpt`, so the
//! other S45 bookkeeping has nothing to read.

use azimuth_stage_api::specs::movie::HIDDEN_STATE as SPEC;
use serde::Serialize;

use super::plot::{line_chart, BLUE, RED};
use super::{csv_line, finite, open_single, select_rows, snapshot_rows_f64};
use crate::params::Params;
use crate::{StageContext, StageError};

#[derive(Serialize)]
struct Summary {
    format: u32,
    train_steps: usize,
    dim: usize,
    h_mean_norm_first: Option<f64>,
    h_mean_norm_last: Option<f64>,
    cos_prev_mean: Option<f64>,
    cos_prev_median: Option<f64>,
    cos_prev_min: Option<f64>,
    dead_steps_measured: usize,
    dead_step_cos_mean: Option<f64>,
    dead_step_cos_median: Option<f64>,
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        f64::NAN
    } else {
        (dot / (na * nb)).clamp(-1.0, 1.0)
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The centroid of `rows` (flat, `d` wide).
fn centroid(rows: &[f64], d: usize) -> Vec<f64> {
    let n = (rows.len() / d).max(1) as f64;
    let mut c = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        c.iter_mut().zip(r).for_each(|(a, x)| *a += x);
    }
    c.iter_mut().for_each(|a| *a /= n);
    c
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let outs = [p.output("table")?, p.output("summary")?, p.output("plot")?];
    let movie = open_single(&p, "movie")?;
    let d = movie.header().dim;
    let t_max = movie.header().train_steps;
    let h = movie.h_mean().map_err(|e| p.error(e))?.ok_or_else(|| {
        p.error(format!(
            "movie `{}` has no /h_mean; train with `h_mean: true` (train.gpt's default)",
            movie.path().display()
        ))
    })?;
    let row = |t: usize| -> Vec<f64> { h[(t - 1) * d..t * d].iter().map(|&x| x as f64).collect() };

    // The dead centroid at every recorded snapshot, by training step.
    let mut dead_step_cos = vec![f64::NAN; t_max + 1];
    if !movie.dead_ids().is_empty() {
        if let Ok(picked) = select_rows(&p, &movie, "dead") {
            let steps = movie.steps().to_vec();
            let mut prev: Option<(i64, Vec<f64>)> = None;
            for (s, &step) in steps.iter().enumerate() {
                let c = centroid(&snapshot_rows_f64(&p, &movie, s, &picked)?, d);
                if let Some((ps, pc)) = &prev {
                    if step == ps + 1 && step >= 1 {
                        let delta: Vec<f64> = c.iter().zip(pc).map(|(a, b)| a - b).collect();
                        if delta.iter().any(|&x| x != 0.0) {
                            dead_step_cos[step as usize] = cosine(&delta, &row(step as usize));
                        }
                    }
                }
                prev = Some((step, c));
            }
        }
    }

    let mut csv = String::from("step,h_mean_norm,cos_prev,dead_step_cos\n");
    let (mut norms, mut cos_prev) = (Vec::new(), Vec::new());
    let text = |x: f64| {
        if x.is_finite() {
            x.to_string()
        } else {
            String::new()
        }
    };
    for (t, &dead_cos) in dead_step_cos.iter().enumerate().skip(1) {
        let ht = row(t);
        let norm = ht.iter().map(|x| x * x).sum::<f64>().sqrt();
        let c = if t >= 2 {
            cosine(&ht, &row(t - 1))
        } else {
            f64::NAN
        };
        norms.push(norm);
        cos_prev.push(c);
        csv_line(
            &mut csv,
            &[t.to_string(), text(norm), text(c), text(dead_cos)],
        );
    }
    let finite_cos: Vec<f64> = cos_prev.iter().copied().filter(|x| x.is_finite()).collect();
    let dead: Vec<f64> = dead_step_cos
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    let summary = Summary {
        format: 1,
        train_steps: t_max,
        dim: d,
        h_mean_norm_first: norms.first().copied().and_then(finite),
        h_mean_norm_last: norms.last().copied().and_then(finite),
        cos_prev_mean: mean(&finite_cos),
        cos_prev_median: median(finite_cos.clone()),
        cos_prev_min: finite_cos.iter().copied().reduce(f64::min),
        dead_steps_measured: dead.len(),
        dead_step_cos_mean: mean(&dead),
        dead_step_cos_median: median(dead),
    };
    let xs: Vec<f64> = (1..=t_max).map(|t| t as f64).collect();
    let png = line_chart(
        "h_mean persistence and the dead swarm",
        "step",
        "cosine",
        &xs,
        &[
            ("cos(h_mean at t, at t-1)", BLUE, &cos_prev),
            ("cos(dead centroid step, h_mean)", RED, &dead_step_cos[1..]),
        ],
    )
    .map_err(|e| p.error(e))?;
    p.write_output(outs[0], csv.as_bytes())?;
    p.write_json(outs[1], &summary)?;
    p.write_output(outs[2], &png)
}
