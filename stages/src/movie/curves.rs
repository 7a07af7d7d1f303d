//! `movie.curves`: the training curves a movie records — loss, learning rate and gradient norm
//! for every training step t = 1..T (`/loss`, `/lr`, `/grad_norm`; their index 0 is NaN and left
//! out) — as one CSV and three PNG line plots (at most 2,000 evenly spaced steps plotted; the CSV
//! has every step).

use azimuth_stage_api::specs::movie::CURVES as SPEC;

use super::plot::{line_chart, BLUE, GREEN, RED};
use super::{csv_line, open_single};
use crate::params::Params;
use crate::{StageContext, StageError};

const PLOT_STEPS: usize = 2000;

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let outs = [
        p.output("table")?,
        p.output("loss_plot")?,
        p.output("lr_plot")?,
        p.output("grad_norm_plot")?,
    ];
    let movie = open_single(&p, "movie")?;
    let t = movie.header().train_steps;
    if t == 0 {
        return Err(p.error(format!(
            "movie `{}` has no training steps (T = 0), so it has no curves",
            movie.path().display()
        )));
    }
    let mut series = Vec::new();
    for name in ["loss", "lr", "grad_norm"] {
        let v = movie
            .series(name)
            .map_err(|e| p.error(e))?
            .ok_or_else(|| p.error(format!("movie `{}` lacks /{name}", movie.path().display())))?;
        series.push(v);
    }
    let mut csv = String::from("step,loss,lr,grad_norm\n");
    let rows = series[0].iter().zip(&series[1]).zip(&series[2]);
    for (s, ((loss, lr), grad_norm)) in rows.enumerate().skip(1) {
        csv_line(
            &mut csv,
            &[
                s.to_string(),
                loss.to_string(),
                lr.to_string(),
                grad_norm.to_string(),
            ],
        );
    }
    let sample: Vec<usize> = if t <= PLOT_STEPS {
        (1..=t).collect()
    } else {
        (0..PLOT_STEPS)
            .map(|k| 1 + k * (t - 1) / (PLOT_STEPS - 1))
            .collect()
    };
    let xs: Vec<f64> = sample.iter().map(|&s| s as f64).collect();
    let plots = [
        ("loss", "loss", BLUE),
        ("learning rate", "lr", GREEN),
        ("gradient norm", "norm", RED),
    ];
    p.write_output(outs[0], csv.as_bytes())?;
    for (k, (title, y, color)) in plots.into_iter().enumerate() {
        let ys: Vec<f64> = sample.iter().map(|&s| series[k][s] as f64).collect();
        let png =
            line_chart(title, "step", y, &xs, &[(title, color, &ys)]).map_err(|e| p.error(e))?;
        p.write_output(outs[k + 1], &png)?;
    }
    Ok(())
}
