//! `movie.kinematics` (science spec S40): how the cloud of chosen rows (dead by default) moves
//! over the snapshots of a movie. For snapshot s at training step t_s, over the N chosen rows wᵢ:
//! - centroid c = mean row; `centroid_norm` ‖c‖; `displacement` ‖c − c(first)‖;
//!   `step_length` ‖c − c(previous snapshot)‖;
//! - radii ‖wᵢ − c‖: `mean_radius`, `max_radius` (bounding sphere), `std_radius` (population);
//! - centre-of-mass frame (box_1 14.3a), per training step between snapshots (Δt = t_s − t_{s−1}):
//!   `bulk_speed` = ‖Δc‖ / Δt; thermal velocity of row i = ((wᵢ − wᵢ(prev)) − Δc) / Δt;
//!   `temperature` = mean over rows of its squared norm; `mean_token_speed` = mean ‖wᵢ −
//!   wᵢ(prev)‖ / Δt (the per-token displacement of Goldilocks-05, per step);
//!   these four are NaN on the first snapshot;
//! - `live_dead_angle_deg`: angle between the dead and live centroids (cosine clamped to
//!   [−1, 1], V2.28), a column only when the movie recorded both dead and live rows.
//!
//! Summary: `path_length` Σ step lengths; `path_efficiency` = final displacement / path length;
//! `direction_concentration` = ‖Δc‖₂ / ‖Δc‖₁ of the total displacement with its isotropic
//! reference 1/√D; `lift_off_step` = first step with ‖c‖ > max radius (the origin leaves the
//! bounding sphere; null if never); `slowdown` = mean token speed over the snapshot intervals
//! ending within `slowdown_window` steps of the first snapshot ÷ that over the intervals
//! starting within `slowdown_window` steps of the last (the first / last interval when none
//! does); first and last values. Needs at least two snapshots.

use serde::Serialize;

use azimuth_stage_api::specs::movie::KINEMATICS as SPEC;

use super::plot::{line_chart, BLUE, GREEN, ORANGE};
use super::{csv_line, finite, open_single, select_rows, snapshot_rows_f64};
use crate::params::Params;
use crate::{StageContext, StageError};

/// One snapshot's numbers.
#[derive(Debug, Clone, Serialize)]
struct Frame {
    step: i64,
    centroid_norm: f64,
    displacement: f64,
    step_length: f64,
    mean_radius: f64,
    max_radius: f64,
    std_radius: f64,
    bulk_speed: f64,
    temperature: f64,
    mean_token_speed: f64,
    live_dead_angle_deg: f64,
}

#[derive(Serialize)]
struct Values {
    step: i64,
    centroid_norm: f64,
    displacement: f64,
    mean_radius: f64,
    max_radius: f64,
    std_radius: f64,
    live_dead_angle_deg: Option<f64>,
}

impl Values {
    fn of(f: &Frame) -> Values {
        Values {
            step: f.step,
            centroid_norm: f.centroid_norm,
            displacement: f.displacement,
            mean_radius: f.mean_radius,
            max_radius: f.max_radius,
            std_radius: f.std_radius,
            live_dead_angle_deg: finite(f.live_dead_angle_deg),
        }
    }
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    rows: String,
    n_rows: usize,
    dim: usize,
    snapshots: usize,
    path_length: f64,
    path_efficiency: Option<f64>,
    direction_concentration: Option<f64>,
    isotropic_concentration: f64,
    lift_off_step: Option<i64>,
    slowdown_window: i64,
    slowdown: Option<f64>,
    first: Values,
    last: Values,
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn centroid(rows: &[f64], d: usize) -> Vec<f64> {
    let n = rows.len() / d;
    let mut c = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        for (a, b) in c.iter_mut().zip(r) {
            *a += b;
        }
    }
    c.iter_mut().for_each(|x| *x /= n as f64);
    c
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let which = p.string("rows")?;
    let window = p.int("slowdown_window")?;
    let outs = (
        p.output("table")?,
        p.output("summary")?,
        p.output("centroid_plot")?,
        p.output("radius_plot")?,
    );
    let movie = open_single(&p, "movie")?;
    let picked = select_rows(&p, &movie, &which)?;
    let s_count = movie.snapshot_count();
    if s_count < 2 {
        return Err(p.error(format!(
            "movie `{}` has {s_count} snapshot; kinematics needs at least 2",
            movie.path().display()
        )));
    }
    let d = movie.header().dim;
    let n = picked.len();
    let mask = movie.dead_mask();
    let dead_idx: Vec<usize> = (0..movie.rows().len())
        .filter(|&i| mask[movie.rows()[i] as usize] == 1)
        .collect();
    let live_idx: Vec<usize> = (0..movie.rows().len())
        .filter(|&i| mask[movie.rows()[i] as usize] == 0)
        .collect();
    let with_angle = !dead_idx.is_empty() && !live_idx.is_empty();

    let mut frames: Vec<Frame> = Vec::with_capacity(s_count);
    let (mut c0, mut prev_c, mut prev_rows) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..s_count {
        let rows = snapshot_rows_f64(&p, &movie, s, &picked)?;
        let c = centroid(&rows, d);
        let radii: Vec<f64> = rows
            .chunks_exact(d)
            .map(|r| {
                r.iter()
                    .zip(&c)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mean_radius = radii.iter().sum::<f64>() / n as f64;
        let var = radii.iter().map(|r| (r - mean_radius).powi(2)).sum::<f64>() / n as f64;
        let max_radius = radii.iter().copied().fold(0.0, f64::max);
        if s == 0 {
            c0 = c.clone();
        }
        let diff =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
        let (mut step_length, mut bulk, mut temp, mut speed) = (0.0, f64::NAN, f64::NAN, f64::NAN);
        if s > 0 {
            let dt = (movie.steps()[s] - movie.steps()[s - 1]) as f64;
            let dc = diff(&c, &prev_c);
            step_length = norm(&dc);
            bulk = step_length / dt;
            let (mut t_sum, mut v_sum) = (0.0, 0.0);
            for (r, q) in rows.chunks_exact(d).zip(prev_rows.chunks_exact(d)) {
                let dv = diff(r, q);
                v_sum += norm(&dv);
                t_sum += dv
                    .iter()
                    .zip(&dc)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>();
            }
            temp = t_sum / n as f64 / (dt * dt);
            speed = v_sum / n as f64 / dt;
        }
        let angle = if with_angle {
            let cd = centroid(&snapshot_rows_f64(&p, &movie, s, &dead_idx)?, d);
            let cl = centroid(&snapshot_rows_f64(&p, &movie, s, &live_idx)?, d);
            let dot: f64 = cd.iter().zip(&cl).map(|(a, b)| a * b).sum();
            let den = norm(&cd) * norm(&cl);
            if den > 0.0 {
                (dot / den).clamp(-1.0, 1.0).acos().to_degrees()
            } else {
                f64::NAN
            }
        } else {
            f64::NAN
        };
        frames.push(Frame {
            step: movie.steps()[s],
            centroid_norm: norm(&c),
            displacement: norm(&diff(&c, &c0)),
            step_length,
            mean_radius,
            max_radius,
            std_radius: var.sqrt(),
            bulk_speed: bulk,
            temperature: temp,
            mean_token_speed: speed,
            live_dead_angle_deg: angle,
        });
        prev_c = c;
        prev_rows = rows;
    }

    // Table.
    let mut csv = String::from(
        "step,centroid_norm,displacement,step_length,mean_radius,max_radius,std_radius,\
         bulk_speed,temperature,mean_token_speed",
    );
    csv.push_str(if with_angle {
        ",live_dead_angle_deg\n"
    } else {
        "\n"
    });
    for f in &frames {
        let mut fields = vec![
            f.step.to_string(),
            f.centroid_norm.to_string(),
            f.displacement.to_string(),
            f.step_length.to_string(),
            f.mean_radius.to_string(),
            f.max_radius.to_string(),
            f.std_radius.to_string(),
            f.bulk_speed.to_string(),
            f.temperature.to_string(),
            f.mean_token_speed.to_string(),
        ];
        if with_angle {
            fields.push(f.live_dead_angle_deg.to_string());
        }
        csv_line(&mut csv, &fields);
    }

    // Summary.
    let first = &frames[0];
    let last = &frames[s_count - 1];
    let path_length: f64 = frames.iter().map(|f| f.step_length).sum();
    // After the loop `prev_c` is the last snapshot's centroid.
    let total: Vec<f64> = prev_c.iter().zip(&c0).map(|(a, b)| a - b).collect();
    let l1: f64 = total.iter().map(|x| x.abs()).sum();
    let steps = movie.steps();
    let (t_first, t_last) = (steps[0], steps[s_count - 1]);
    let early: Vec<f64> = (1..s_count)
        .filter(|&s| steps[s] <= t_first + window)
        .map(|s| frames[s].mean_token_speed)
        .collect();
    let late: Vec<f64> = (1..s_count)
        .filter(|&s| steps[s - 1] >= t_last - window)
        .map(|s| frames[s].mean_token_speed)
        .collect();
    let mean_or = |v: Vec<f64>, fallback: f64| {
        if v.is_empty() {
            fallback
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let early = mean_or(early, frames[1].mean_token_speed);
    let late = mean_or(late, last.mean_token_speed);
    let summary = Summary {
        format: 1,
        rows: which.clone(),
        n_rows: n,
        dim: d,
        snapshots: s_count,
        path_length,
        path_efficiency: (path_length > 0.0).then(|| last.displacement / path_length),
        direction_concentration: (l1 > 0.0).then(|| norm(&total) / l1),
        isotropic_concentration: 1.0 / (d as f64).sqrt(),
        lift_off_step: frames
            .iter()
            .find(|f| f.centroid_norm > f.max_radius)
            .map(|f| f.step),
        slowdown_window: window,
        slowdown: (late > 0.0).then(|| early / late),
        first: Values::of(first),
        last: Values::of(last),
    };

    // Plots.
    let xs: Vec<f64> = frames.iter().map(|f| f.step as f64).collect();
    let col = |g: fn(&Frame) -> f64| -> Vec<f64> { frames.iter().map(g).collect() };
    let title = format!("{which} rows: centroid");
    let centroid_png = line_chart(
        &title,
        "step",
        "distance",
        &xs,
        &[
            ("centroid norm", BLUE, &col(|f| f.centroid_norm)),
            ("displacement", ORANGE, &col(|f| f.displacement)),
        ],
    )
    .map_err(|e| p.error(e))?;
    let title = format!("{which} rows: cloud radius");
    let radius_png = line_chart(
        &title,
        "step",
        "radius",
        &xs,
        &[
            ("mean", BLUE, &col(|f| f.mean_radius)),
            ("max", ORANGE, &col(|f| f.max_radius)),
            ("std", GREEN, &col(|f| f.std_radius)),
        ],
    )
    .map_err(|e| p.error(e))?;

    p.write_output(outs.0, csv.as_bytes())?;
    p.write_json(outs.1, &summary)?;
    p.write_output(outs.2, &centroid_png)?;
    p.write_output(outs.3, &radius_png)
}
