//! `sim.pachinko` (science spec S25, V3.1 #22, V2 #29): translate-and-cull. V points with
//! coordinates N(0, σ²) (f32 draws rounded to bf16) are translated `steps` times along one random
//! unit vector u, re-rounded to bf16 after every step, and `cull` uniformly random survivors are
//! removed after every step. In `pachinko` mode the step shrinks (step_t = step0·decay^t, 0.003 and
//! 0.99 by default) until it falls below half an ULP of the coordinates and the walk stalls on the
//! bf16 grid; in `drift` mode it is fixed. The question of S25 is whether points that start
//! distinct on the fine grid near 0 coalesce (become bit-identical "black holes") on the coarser
//! grid further out.
//!
//! **What "r" is.** The notebooks print a radius r per step; we read it as the L2 norm of the
//! survivors' centroid, ‖mean_i x_i‖ (it starts at the first step length, 0.0030, and approaches
//! the cumulative translation, as the printouts do). The table also has the centroid's component
//! along u, the RMS point norm sqrt(mean_i ‖x_i‖²) (the mean of ‖x_i‖ itself does not split by
//! coordinate, so it is not computed), how many coordinate values moved in the step and in how
//! many coordinates, and the mean number of distinct values per coordinate (the grid coarsening).
//! Distinct rows and black holes (bit identity, S04) are counted on census steps.
//!
//! Numbering: table line `step` t = 0..steps−1 is the state after step t's translation and cull
//! (so step 0's r is ≈ step0), with V − (t + 1)·cull survivors; the initial state is in the
//! summary. `moved_fraction` is the share of the values translated in the step (V − t·cull points
//! × D) that changed. The walk has *stalled* from step t on when `moved_fraction` <
//! `stall_fraction` in step t and every later step, and *frozen* when no value moves at all any
//! more. At the full pachinko size the two differ: r is flat (0.2484) from step ≈ 180, but the
//! coordinates with tiny |u_k| keep some values near 0, where the grid is fine, moving to the end.
//!
//! Two engines ([`fast`], default, and [`naive`]) simulate the same seeded model ([`model`]) and
//! produce the same bytes; all draws are counter-based, so nothing depends on `ctx.threads`.
//!
//! At the defaults (seed 42) r is 0.0030, 0.1203, 0.1901, 0.2411 at steps 0, 50, 100, 150 and
//! 0.2484 at step 299 (the notebook printed 0.0030, 0.1203, 0.1902, 0.2415, flat 0.2484), with all
//! 2,236 survivors distinct. Drift (step0 0.0037, decay 1, 100 steps, cull 1519) ends at r 0.3699
//! for σ = 1e-6 (printed 0.3700) and 0.3818 for σ = 0.02 (printed 0.3833; this one depends on the
//! draws through the 36 survivors' scatter), 36 distinct survivors in both.

mod fast;
mod model;
mod naive;

use std::fmt::Write as _;

use azimuth_stage_api::specs::sim::PACHINKO as SPEC;
use serde::Serialize;

use crate::bf16;
use crate::movie::plot::{line_chart, BLUE, ORANGE};
use crate::params::Params;
use crate::w_analysis::with_threads;
use crate::{StageContext, StageError};

use model::{Census, Config, Records, Setup};

/// Cap on dim × steps: the engines keep 24 bytes of records per coordinate and step.
const MAX_RECORDS: usize = 50_000_000;
/// Cap on points × dim: the draws (time) and the naive engine's matrix / the survivors' rows
/// (2 bytes each).
const MAX_CELLS: usize = 2_000_000_000;

const R_DEFINITION: &str = "r = L2 norm of the centroid (mean row) of the surviving points";

/// A census as the summary reports it.
#[derive(Serialize)]
struct CensusOut {
    rows: usize,
    distinct_rows: usize,
    black_holes: usize,
    /// Points inside black holes (Σ populations).
    black_hole_population: usize,
    /// Population of the largest black hole (0 when there is none).
    largest_black_hole: usize,
    /// Black-hole populations, descending.
    populations: Vec<usize>,
}

impl CensusOut {
    fn new(c: &Census) -> CensusOut {
        CensusOut {
            rows: c.rows,
            distinct_rows: c.distinct,
            black_holes: c.populations.len(),
            black_hole_population: c.populations.iter().sum(),
            largest_black_hole: c.populations.first().copied().unwrap_or(0),
            populations: c.populations.clone(),
        }
    }
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    mode: String,
    engine: String,
    points: usize,
    dim: usize,
    steps: usize,
    step0: f64,
    decay: f64,
    cull: usize,
    sigma: f64,
    seed: u64,
    census_every: usize,
    stall_fraction: f64,
    r_definition: &'static str,
    /// Before the first step.
    initial: CensusOut,
    initial_r: f64,
    /// Census of the survivors after the last step (by `identical_rows`).
    #[serde(rename = "final")]
    final_: CensusOut,
    /// r after step 0 and after the last step; the largest r and its step.
    r_first: f64,
    r_last: f64,
    r_max: f64,
    r_max_step: usize,
    /// Σ step_t: the distance every point would have travelled without rounding.
    translation_total: f64,
    /// The survivors' centroid along u after the last step, and its ratio to translation_total
    /// (null without translation).
    along_u_last: f64,
    along_u_over_translation: Option<f64>,
    rms_norm_last: f64,
    /// Whether fewer than `stall_fraction` of the values moved in the last step, and since which
    /// step that holds.
    stalled: bool,
    stalled_at_step: Option<usize>,
    /// Whether no value moved in the last step, and since which step none did.
    frozen: bool,
    frozen_at_step: Option<usize>,
}

/// The per-step quantities of the table, from the records of time τ.
struct StepRow {
    r: f64,
    along_u: f64,
    rms_norm: f64,
    moved_values: u64,
    moved_fraction: f64,
    moving_coordinates: usize,
    mean_distinct_values: f64,
}

fn step_row(setup: &Setup, records: &Records, tau: usize) -> StepRow {
    let n = setup.alive(tau) as f64;
    let (mut r2, mut along_u, mut sum_sq) = (0.0, 0.0, 0.0);
    let (mut moved_values, mut moving_coordinates, mut distinct) = (0u64, 0, 0u64);
    for k in 0..setup.cfg.dim {
        let i = k * records.times + tau;
        let c = records.sum[i] / n;
        r2 += c * c;
        along_u += setup.direction[k] * c;
        sum_sq += records.sum_sq[i];
        moved_values += records.moved[i] as u64;
        moving_coordinates += (records.moved[i] > 0) as usize;
        distinct += records.distinct[i] as u64;
    }
    // The values translated in step τ − 1: the points alive before its cull, in every coordinate.
    let translated = (setup.alive(tau.saturating_sub(1)) * setup.cfg.dim) as f64;
    StepRow {
        r: r2.sqrt(),
        along_u,
        rms_norm: (sum_sq / n).sqrt(),
        moved_values,
        moved_fraction: moved_values as f64 / translated,
        moving_coordinates,
        mean_distinct_values: distinct as f64 / setup.cfg.dim as f64,
    }
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let mode = p.string("mode")?;
    let engine = p.string("engine")?;
    let cfg = Config {
        points: p.int("points")? as usize,
        dim: p.int("dim")? as usize,
        steps: p.int("steps")? as usize,
        step0: p.float("step0")?,
        decay: p.float("decay")?,
        cull: p.int("cull")? as usize,
        sigma: p.float("sigma")?,
        seed: p.int("seed")? as u64,
        census_every: p.int("census_every")? as usize,
    };
    let stall_fraction = p.float("stall_fraction")?;
    let (table_path, summary_path, plot_path) =
        (p.output("table")?, p.output("summary")?, p.output("plot")?);
    check(&p, &mode, &cfg)?;

    let setup = Setup::new(cfg);
    let outcome = with_threads(&p, ctx.threads, || match engine.as_str() {
        "naive" => naive::run(&setup),
        _ => fast::run(&setup),
    })?;
    let cfg = &setup.cfg;

    // The final census once more, by the shared bit-identity census.
    let bytes: Vec<u8> = outcome
        .survivors
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    let census = with_threads(&p, ctx.threads, || {
        bf16::identical_rows(&bytes, 2 * cfg.dim)
    })?;
    let final_census = Census {
        tau: cfg.steps,
        rows: census.rows,
        distinct: census.distinct,
        populations: census.groups.iter().map(Vec::len).collect(),
    };
    if outcome.censuses.last() != Some(&final_census) {
        return Err(p.error(format!(
            "internal error: the {engine} engine's last census {:?} differs from identical_rows' \
             {final_census:?}; please report this with the params",
            outcome.censuses.last()
        )));
    }

    let mut csv = String::from(
        "step,step_length,translation,alive,r,along_u,rms_norm,moved_values,moved_fraction,\
         moving_coordinates,mean_distinct_values,distinct_rows,black_holes,largest_black_hole\n",
    );
    let mut censuses = outcome.censuses.iter().peekable();
    let initial = CensusOut::new(censuses.next().expect("the initial census"));
    let (mut rs, mut translations, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut translation = 0.0;
    for t in 0..cfg.steps {
        let tau = t + 1;
        let step = setup.step_length(t);
        translation += step;
        let row = step_row(&setup, &outcome.records, tau);
        let _ = write!(
            csv,
            "{t},{step},{translation},{},{},{},{},{},{},{},{},",
            setup.alive(tau),
            row.r,
            row.along_u,
            row.rms_norm,
            row.moved_values,
            row.moved_fraction,
            row.moving_coordinates,
            row.mean_distinct_values
        );
        match censuses.next_if(|c| c.tau == tau) {
            Some(c) => {
                let c = CensusOut::new(c);
                let _ = writeln!(
                    csv,
                    "{},{},{}",
                    c.distinct_rows, c.black_holes, c.largest_black_hole
                );
            }
            None => csv.push_str(",,\n"),
        }
        rs.push(row.r);
        translations.push(translation);
        rows.push(row);
    }

    let last = rows.last().expect("steps ≥ 1");
    // The first step of the final run of steps that satisfy `still` (None if the last does not).
    let since = |still: &dyn Fn(&StepRow) -> bool| {
        still(last).then(|| rows.iter().rposition(|r| !still(r)).map_or(0, |t| t + 1))
    };
    let stalled_at_step = since(&|r| r.moved_fraction < stall_fraction || r.moved_values == 0);
    let frozen_at_step = since(&|r| r.moved_values == 0);
    let (r_max_step, r_max) =
        rs.iter()
            .copied()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (t, r)| {
                if r > best.1 {
                    (t, r)
                } else {
                    best
                }
            });
    let summary = Summary {
        format: 1,
        mode: mode.clone(),
        engine,
        points: cfg.points,
        dim: cfg.dim,
        steps: cfg.steps,
        step0: cfg.step0,
        decay: cfg.decay,
        cull: cfg.cull,
        sigma: cfg.sigma,
        seed: cfg.seed,
        census_every: cfg.census_every,
        stall_fraction,
        r_definition: R_DEFINITION,
        initial,
        initial_r: step_row(&setup, &outcome.records, 0).r,
        final_: CensusOut::new(&final_census),
        r_first: rs[0],
        r_last: last.r,
        r_max,
        r_max_step,
        translation_total: translation,
        along_u_last: last.along_u,
        along_u_over_translation: (translation != 0.0).then(|| last.along_u / translation),
        rms_norm_last: last.rms_norm,
        stalled: stalled_at_step.is_some(),
        stalled_at_step,
        frozen: frozen_at_step.is_some(),
        frozen_at_step,
    };

    let xs: Vec<f64> = (0..cfg.steps).map(|t| t as f64).collect();
    let png = line_chart(
        &format!("{mode}: centroid norm r of the survivors"),
        "step",
        "r",
        &xs,
        &[
            ("r (bf16, culled)", BLUE, &rs),
            ("translation without rounding", ORANGE, &translations),
        ],
    )
    .map_err(|e| p.error(e))?;
    p.write_output(table_path, csv.as_bytes())?;
    p.write_json(summary_path, &summary)?;
    p.write_output(plot_path, &png)
}

/// Rejects parameter combinations the model cannot run, saying what to change.
fn check(p: &Params<'_>, mode: &str, cfg: &Config) -> Result<(), StageError> {
    if cfg.steps.saturating_mul(cfg.cull) >= cfg.points {
        return Err(p.error(format!(
            "`cull` × `steps` = {} × {} = {} leaves no survivor of `points` = {}; lower `cull` to \
             at most {} or `steps`",
            cfg.cull,
            cfg.steps,
            cfg.cull * cfg.steps,
            cfg.points,
            (cfg.points - 1) / cfg.steps
        )));
    }
    if mode == "drift" && cfg.decay != 1.0 {
        return Err(p.error(format!(
            "mode `drift` moves by a fixed step, but `decay` is {}; set `decay` to 1 (or use mode \
             `pachinko` for a decaying step)",
            cfg.decay
        )));
    }
    if cfg.dim * cfg.steps > MAX_RECORDS {
        return Err(p.error(format!(
            "`dim` × `steps` = {} is above {MAX_RECORDS} (24 bytes of records each); lower `dim` \
             or `steps`",
            cfg.dim * cfg.steps
        )));
    }
    if cfg.points * cfg.dim > MAX_CELLS {
        return Err(p.error(format!(
            "`points` × `dim` = {} is above {MAX_CELLS} coordinates; lower `points` or `dim`",
            cfg.points * cfg.dim
        )));
    }
    Ok(())
}
