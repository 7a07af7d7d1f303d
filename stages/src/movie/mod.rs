//! The `movie.*` stages (specs in `azimuth_stage_api::specs::movie`) and the movie file format
//! they read ([`format`]: "azimuth-movie" v1, HDF5), which the `train.gpt` trainer writes.
//!
//! - [`kinematics`] (`movie.kinematics`, S40): centroid trajectory, cloud radius, bulk and
//!   thermal motion.
//! - [`lifecycle`] (`movie.lifecycle`, S41–S43): last-exit phases, freeze times, fimbulwinter and
//!   stillness runs from the every-step `/dead_motion` norms.
//! - [`census`] (`movie.census` and `movie.census_compare`, S44): black holes per snapshot, and
//!   the two-group control of distinct dead rows.
//! - [`curves`] (`movie.curves`): loss, learning rate and gradient norm.
//! - [`hidden_state`] (`movie.hidden_state`, S45): h_mean's persistence and the dead swarm's
//!   alignment with it.
//!
//! Shared here: opening the `movie` input and choosing rows (param `rows`: `dead`, `live` or
//! `all`, always among the *recorded* rows). Arithmetic is f64 on the exact f32 up-cast of the
//! stored values (S40 says "up-cast to float32"; f64 sums keep the order-independent results
//! the tests pin exactly); identity questions (census) use raw bits. The stages read one snapshot
//! at a time and are single-threaded (reading dominates), so their outputs cannot depend on
//! `ctx.threads`. Plots come from [`plot`].

use std::fmt::Write as _;

use crate::params::Params;
use crate::{StageContext, StageError};

pub(crate) mod census;
pub(crate) mod curves;
pub mod format;
pub(crate) mod hidden_state;
pub(crate) mod kinematics;
pub(crate) mod lifecycle;
pub(crate) mod plot;

pub use format::{
    lattice_motion_bf16, lattice_motion_f32, AttrValue, Movie, MovieDtype, MovieHeader, MovieWriter,
};

/// The family's part of `impls::dispatch`: `None` if `name` is not a `movie.*` stage.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "movie.kinematics" => kinematics::run(ctx),
        "movie.lifecycle" => lifecycle::run(ctx),
        "movie.census" => census::run(ctx),
        "movie.census_compare" => census::run_compare(ctx),
        "movie.curves" => curves::run(ctx),
        "movie.hidden_state" => hidden_state::run(ctx),
        _ => return None,
    })
}

/// Opens the single movie connected to input `port`.
pub(crate) fn open_single(p: &Params<'_>, port: &str) -> Result<Movie, StageError> {
    let paths = p.inputs(port)?;
    if paths.len() != 1 {
        return Err(p.error(format!(
            "input `{port}` takes one movie, got {}; connect exactly one",
            paths.len()
        )));
    }
    Movie::open(&paths[0]).map_err(|e| p.error(format!("input `{port}`: {e}")))
}

/// Indices (into the movie's recorded rows) of the rows param `rows` asks for, with an error
/// when the movie recorded none of them.
pub(crate) fn select_rows(
    p: &Params<'_>,
    movie: &Movie,
    which: &str,
) -> Result<Vec<usize>, StageError> {
    let mask = movie.dead_mask();
    let picked: Vec<usize> = movie
        .rows()
        .iter()
        .enumerate()
        .filter(|(_, &id)| match which {
            "dead" => mask[id as usize] == 1,
            "live" => mask[id as usize] == 0,
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if picked.is_empty() {
        return Err(p.error(format!(
            "param `rows` = `{which}`, but movie `{}` recorded no {which} rows ({} recorded rows, \
             {} dead ids); record them in the trainer or choose another `rows`",
            movie.path().display(),
            movie.rows().len(),
            movie.dead_ids().len()
        )));
    }
    Ok(picked)
}

/// Snapshot `s` restricted to the recorded-row indices `picked`, as f64 (exact up-cast).
pub(crate) fn snapshot_rows_f64(
    p: &Params<'_>,
    movie: &Movie,
    s: usize,
    picked: &[usize],
) -> Result<Vec<f64>, StageError> {
    let d = movie.header().dim;
    let all = movie.snapshot_f32(s).map_err(|e| p.error(e))?;
    let mut out = Vec::with_capacity(picked.len() * d);
    for &i in picked {
        out.extend(all[i * d..(i + 1) * d].iter().map(|&x| x as f64));
    }
    Ok(out)
}

/// One CSV line from already formatted fields.
pub(crate) fn csv_line(out: &mut String, fields: &[String]) {
    let _ = writeln!(out, "{}", fields.join(","));
}

/// `Some(x)` for finite x, else `None` (JSON null).
pub(crate) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Mean and population standard deviation (0, 0 for no values).
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Median (mean of the two middle values for an even count); `None` when empty.
pub(crate) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}
