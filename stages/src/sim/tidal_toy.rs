//! `sim.tidal_toy` (science spec S26, V3.1 ★3): `points` points drawn N(0, σ²) in 2-D, then
//! `steps` updates w ← w + lr·r̂ − wd·w. Across r̂ the only force is the decay, so every
//! perpendicular coordinate, and with it the perpendicular spread, shrinks by exactly (1 − wd)
//! per step: the ratio after 500 steps of wd = 0.01 is 0.99^500 = 0.00657, whatever the draws.
//! Along r̂ the points relax to the fixed point lr/wd.
//!
//! The update is computed as w·(1 − wd) + lr·r̂ in the chosen precision: f64, f32, or f32
//! rounded to bf16 after every step (round-to-nearest-even, like a bf16 parameter), where the
//! spread stops shrinking once wd·|w| falls below half an ULP. Spreads are population standard
//! deviations of the coordinates across and along r̂, accumulated in f64.

use azimuth_stage_api::specs::sim::TIDAL_TOY as SPEC;
use serde::Serialize;

use super::Normals;
use crate::movie::plot::{line_chart, BLUE, ORANGE};
use crate::params::Params;
use crate::{StageContext, StageError};

#[derive(Serialize)]
struct Summary {
    format: u32,
    points: usize,
    steps: usize,
    precision: String,
    perpendicular_spread_first: f64,
    perpendicular_spread_last: f64,
    ratio: f64,
    /// (1 − wd)^steps, the exact ratio without rounding.
    expected_ratio: f64,
    parallel_spread_first: f64,
    parallel_spread_last: f64,
    /// lr/wd·r̂ (null without decay).
    fixed_point: Option<[f64; 2]>,
    centroid_last: [f64; 2],
}

/// Rounds to the precision's grid.
fn round(x: f64, precision: &str) -> f64 {
    match precision {
        "f32" => x as f32 as f64,
        "bf16" => half::bf16::from_f32(x as f32).to_f64(),
        _ => x,
    }
}

/// Population standard deviation of `v`.
fn spread(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = v.clone().count() as f64;
    let mean = v.clone().sum::<f64>() / n;
    (v.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let n = p.int("points")? as usize;
    let sigma = p.float("sigma")?;
    let steps = p.int("steps")? as usize;
    let lr = p.float("lr")?;
    let wd = p.float("weight_decay")?;
    let angle = p.float("angle_deg")?.to_radians();
    let precision = p.string("precision")?;
    let seed = p.int("seed")? as u64;
    let (table_path, summary_path, plot_path) =
        (p.output("table")?, p.output("summary")?, p.output("plot")?);

    let r = [angle.cos(), angle.sin()];
    let perp = [-r[1], r[0]];
    let mut rng = Normals::new(seed);
    let mut w: Vec<[f64; 2]> = (0..n)
        .map(|_| {
            let x = round(sigma * rng.normal(), &precision);
            let y = round(sigma * rng.normal(), &precision);
            [x, y]
        })
        .collect();
    let keep = round(1.0 - wd, &precision);
    let pull = [round(lr * r[0], &precision), round(lr * r[1], &precision)];

    let mut csv = String::from("step,centroid_x,centroid_y,perpendicular_spread,parallel_spread\n");
    let (mut perp_spreads, mut par_spreads) = (Vec::with_capacity(steps + 1), Vec::new());
    let mut centroid = [0.0; 2];
    for t in 0..=steps {
        if t > 0 {
            for q in &mut w {
                for k in 0..2 {
                    // One rounding per operation, as the chosen dtype computes it.
                    q[k] = round(round(q[k] * keep, &precision) + pull[k], &precision);
                }
            }
        }
        let along = |q: &[f64; 2], d: [f64; 2]| q[0] * d[0] + q[1] * d[1];
        let sp = spread(w.iter().map(|q| along(q, perp)));
        let sl = spread(w.iter().map(|q| along(q, r)));
        centroid = [
            w.iter().map(|q| q[0]).sum::<f64>() / n as f64,
            w.iter().map(|q| q[1]).sum::<f64>() / n as f64,
        ];
        csv.push_str(&format!("{t},{},{},{sp},{sl}\n", centroid[0], centroid[1]));
        perp_spreads.push(sp);
        par_spreads.push(sl);
    }
    let first = perp_spreads[0];
    let last = perp_spreads[steps];
    let summary = Summary {
        format: 1,
        points: n,
        steps,
        precision: precision.clone(),
        perpendicular_spread_first: first,
        perpendicular_spread_last: last,
        ratio: last / first,
        expected_ratio: (1.0 - wd).powi(steps as i32),
        parallel_spread_first: par_spreads[0],
        parallel_spread_last: par_spreads[steps],
        fixed_point: (wd > 0.0).then(|| [lr / wd * r[0], lr / wd * r[1]]),
        centroid_last: centroid,
    };
    let xs: Vec<f64> = (0..=steps).map(|t| t as f64).collect();
    let exact: Vec<f64> = (0..=steps)
        .map(|t| first * (1.0 - wd).powi(t as i32))
        .collect();
    let png = line_chart(
        "tidal toy: spread across the pull",
        "step",
        "spread",
        &xs,
        &[
            ("simulated", BLUE, &perp_spreads),
            ("(1 - wd)^t", ORANGE, &exact),
        ],
    )
    .map_err(|e| p.error(e))?;
    p.write_output(table_path, csv.as_bytes())?;
    p.write_json(summary_path, &summary)?;
    p.write_output(plot_path, &png)
}
