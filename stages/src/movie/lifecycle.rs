//! `movie.lifecycle` (science spec S41 + S42 + S43): the life of each dead token, from the
//! every-step lattice-displacement norms `/dead_motion` (L1, L2, L∞ of ΔW′, S41) of a movie.
//!
//! **Phases (S42, last-exit rule).** Instantaneous class at step t: Frozen if L1 = 0, else Late
//! if L∞ ≤ 1, else Midlife if L2 ≤ √D, else Early. last_early / last_midlife / last_late = the
//! last step of each class (−1 if none); the committed phase of step s is Early if s ≤
//! last_early, else Midlife if s ≤ last_midlife, else Late if s ≤ last_late, else Frozen. The
//! last-exit freeze step is the first committed-Frozen step, T if the token never freezes.
//!
//! **Freeze detection (S43)**, param `freeze`: what counts as "moved" at step t — `f2` L1 > 0
//! (canonical), `f1` L2 ≥ `f1_threshold` (Crucible 1's tracker), `f3` weight-space ‖W[t] −
//! W[t−1]‖₂ ≥ `f3_threshold` (needs a snapshot at every step 0..T with every dead row recorded;
//! an error otherwise). Per token: `last_motion` (−1 if never), `freeze_step` = last motion + 1
//! (1 if never moved, T if it moved at the last step, as "T if never"), `frozen_at_end`
//! (no motion at step T). Globally: last motion (max over tokens), fimbulwinter duration T − global last
//! motion (T if nothing moved), and the stillness runs — maximal runs of consecutive steps in which
//! no dead token moved: count, longest, second longest, their ratio, mean, median.
//!
//! Outputs: per-token CSV, per-step CSV (committed populations, tokens moved, frozen
//! fraction = committed-Frozen share), JSON summary, a stacked population plot, a frozen-fraction
//! plot and the "stratigraphy" image (tokens sorted by last-exit freeze step, then id; steps
//! across; four phase colours). Plots sample at most 1,000 steps and 400 tokens evenly.

use serde::Serialize;

use azimuth_stage_api::specs::movie::LIFECYCLE as SPEC;

use super::plot::{Chart, BLUE, PHASE_COLORS};
use super::{csv_line, median, open_single};
use crate::params::Params;
use crate::{StageContext, StageError};

const PHASES: [&str; 4] = ["early", "midlife", "late", "frozen"];
/// Most steps (columns) and tokens (rows) the plots show.
const PLOT_STEPS: usize = 1000;
const PLOT_TOKENS: usize = 400;

/// One dead token's history.
struct Token {
    id: i64,
    last: [usize; 3],   // last early / midlife / late step, 0 = none
    last_motion: usize, // criterion, 0 = never
    moved_steps: usize,
}

impl Token {
    fn exit(&self) -> usize {
        self.last.iter().copied().max().unwrap_or(0)
    }

    /// Committed phase (0..4) at step s ≥ 1.
    fn phase(&self, s: usize) -> usize {
        if s <= self.last[0] {
            0
        } else if s <= self.last[1] {
            1
        } else if s <= self.last[2] {
            2
        } else {
            3
        }
    }

    /// Steps spent in each committed phase over 1..=t.
    fn durations(&self, t: usize) -> [usize; 4] {
        let e = self.last[0];
        let m = self.last[1].max(e);
        let l = self.last[2].max(m);
        [e, m - e, l - m, t - l]
    }
}

#[derive(Serialize)]
struct Runs {
    count: usize,
    longest: usize,
    second_longest: usize,
    ratio: Option<f64>,
    mean: Option<f64>,
    median: Option<f64>,
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    freeze: String,
    threshold: Option<f64>,
    dead_tokens: usize,
    train_steps: usize,
    dim: usize,
    sqrt_dim: f64,
    global_last_motion: Option<usize>,
    fimbulwinter_duration: usize,
    fimbulwinter_fraction: f64,
    moved_at_least_once: usize,
    frozen_at_end: usize,
    frozen_at_end_fraction: f64,
    last_motion_earliest: Option<usize>,
    last_motion_median: Option<f64>,
    last_motion_latest: Option<usize>,
    freeze_step_median: Option<f64>,
    last_exit_freeze_median: Option<f64>,
    final_populations: [usize; 4],
    phase_shares: [f64; 4],
    stillness_runs: Runs,
}

fn stillness_runs(moved: &[usize]) -> Runs {
    let mut runs = Vec::new();
    let mut cur = 0usize;
    for &m in moved {
        if m == 0 {
            cur += 1;
        } else if cur > 0 {
            runs.push(cur);
            cur = 0;
        }
    }
    if cur > 0 {
        runs.push(cur);
    }
    let mut sorted = runs.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let longest = sorted.first().copied().unwrap_or(0);
    let second = sorted.get(1).copied().unwrap_or(0);
    let as_f: Vec<f64> = runs.iter().map(|&r| r as f64).collect();
    Runs {
        count: runs.len(),
        longest,
        second_longest: second,
        ratio: (second > 0).then(|| longest as f64 / second as f64),
        mean: (!runs.is_empty()).then(|| as_f.iter().sum::<f64>() / as_f.len() as f64),
        median: median(&as_f),
    }
}

/// Weight-space ‖W[t] − W[t−1]‖₂ ≥ threshold for every dead token and step (F3), T × n_dead.
fn f3_moved(p: &Params<'_>, movie: &super::Movie, threshold: f64) -> Result<Vec<bool>, StageError> {
    let t = movie.header().train_steps;
    let every_step = movie.steps().iter().copied().eq(0..=t as i64);
    if !every_step {
        return Err(p.error(format!(
            "param `freeze` = `f3` needs a snapshot at every step 0..={t}, but movie `{}` has {} \
             snapshots (steps {:?}…); use `f2` or `f1`, which read the every-step /dead_motion",
            movie.path().display(),
            movie.snapshot_count(),
            &movie.steps()[..movie.snapshot_count().min(4)]
        )));
    }
    let mut idx = Vec::with_capacity(movie.dead_ids().len());
    for &id in movie.dead_ids() {
        match movie.rows().binary_search(&id) {
            Ok(i) => idx.push(i),
            Err(_) => {
                return Err(p.error(format!(
                    "param `freeze` = `f3` needs every dead row recorded, but movie `{}` lacks \
                     dead token {id}; use `f2` or `f1`",
                    movie.path().display()
                )))
            }
        }
    }
    let d = movie.header().dim;
    let mut moved = Vec::with_capacity(t * idx.len());
    let mut prev = movie.snapshot_f32(0).map_err(|e| p.error(e))?;
    for s in 1..=t {
        let cur = movie.snapshot_f32(s).map_err(|e| p.error(e))?;
        for &i in &idx {
            let sq: f64 = (0..d)
                .map(|j| (cur[i * d + j] as f64 - prev[i * d + j] as f64).powi(2))
                .sum();
            moved.push(sq.sqrt() >= threshold);
        }
        prev = cur;
    }
    Ok(moved)
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let freeze = p.string("freeze")?;
    let f1 = p.float("f1_threshold")?;
    let f3 = p.float("f3_threshold")?;
    let outs = [
        p.output("tokens")?,
        p.output("populations")?,
        p.output("summary")?,
        p.output("phases_plot")?,
        p.output("frozen_plot")?,
        p.output("stratigraphy")?,
    ];
    let movie = open_single(&p, "movie")?;
    let h = movie.header();
    let (t, d, nd) = (h.train_steps, h.dim, h.dead_ids.len());
    if t == 0 {
        return Err(p.error(format!(
            "movie `{}` has no training steps (T = 0); a lifecycle needs at least one",
            movie.path().display()
        )));
    }
    if nd == 0 {
        return Err(p.error(format!(
            "movie `{}` has no dead tokens, so it has no /dead_motion to analyse",
            movie.path().display()
        )));
    }
    let (l1, l2, linf) = movie.dead_motion().map_err(|e| p.error(e))?;
    let sqrt_d = (d as f64).sqrt();
    let f3_flags = if freeze == "f3" {
        Some(f3_moved(&p, &movie, f3)?)
    } else {
        None
    };

    let mut tokens: Vec<Token> = h
        .dead_ids
        .iter()
        .map(|&id| Token {
            id,
            last: [0; 3],
            last_motion: 0,
            moved_steps: 0,
        })
        .collect();
    let mut moved_per_step = vec![0usize; t + 1];
    for (step, moved_count) in moved_per_step.iter_mut().enumerate().skip(1) {
        let row = (step - 1) * nd;
        for (i, tok) in tokens.iter_mut().enumerate() {
            let (a, b, c) = (l1[row + i] as f64, l2[row + i] as f64, linf[row + i] as f64);
            if a > 0.0 {
                let class = if c <= 1.0 {
                    2
                } else if b <= sqrt_d {
                    1
                } else {
                    0
                };
                tok.last[class] = step;
            }
            let moved = match freeze.as_str() {
                "f1" => b >= f1,
                "f3" => f3_flags.as_ref().expect("computed for f3")[row + i],
                _ => a > 0.0,
            };
            if moved {
                tok.last_motion = step;
                tok.moved_steps += 1;
                *moved_count += 1;
            }
        }
    }

    // Committed populations per step, by difference arrays.
    let mut diff = vec![[0i64; 4]; t + 2];
    for tok in &tokens {
        let e = tok.last[0];
        let m = tok.last[1].max(e);
        let l = tok.last[2].max(m);
        for (phase, (from, to)) in [(1, e), (e + 1, m), (m + 1, l), (l + 1, t)]
            .into_iter()
            .enumerate()
        {
            if from <= to {
                diff[from][phase] += 1;
                diff[to + 1][phase] -= 1;
            }
        }
    }
    let mut pops = vec![[0usize; 4]; t + 1];
    let mut run = [0i64; 4];
    for s in 1..=t {
        for k in 0..4 {
            run[k] += diff[s][k];
            pops[s][k] = run[k] as usize;
        }
    }

    // Per-token table.
    let never = |s: usize| {
        if s == 0 {
            "-1".to_string()
        } else {
            s.to_string()
        }
    };
    let mut tok_csv = String::from(
        "token,last_early,last_midlife,last_late,last_exit_freeze_step,last_motion,freeze_step,\
         frozen_at_end,moved_steps,early_steps,midlife_steps,late_steps,frozen_steps\n",
    );
    for tok in &tokens {
        let dur = tok.durations(t);
        csv_line(
            &mut tok_csv,
            &[
                tok.id.to_string(),
                never(tok.last[0]),
                never(tok.last[1]),
                never(tok.last[2]),
                (tok.exit() + 1).min(t).to_string(),
                never(tok.last_motion),
                (tok.last_motion + 1).min(t).to_string(),
                (tok.last_motion < t).to_string(),
                tok.moved_steps.to_string(),
                dur[0].to_string(),
                dur[1].to_string(),
                dur[2].to_string(),
                dur[3].to_string(),
            ],
        );
    }
    let mut pop_csv = String::from("step,early,midlife,late,frozen,moved,frozen_fraction\n");
    for s in 1..=t {
        let pp = pops[s];
        csv_line(
            &mut pop_csv,
            &[
                s.to_string(),
                pp[0].to_string(),
                pp[1].to_string(),
                pp[2].to_string(),
                pp[3].to_string(),
                moved_per_step[s].to_string(),
                (pp[3] as f64 / nd as f64).to_string(),
            ],
        );
    }

    // Summary.
    let global = tokens
        .iter()
        .map(|k| k.last_motion)
        .max()
        .filter(|&g| g > 0);
    let duration = t - global.unwrap_or(0);
    let moved: Vec<f64> = tokens
        .iter()
        .filter(|k| k.last_motion > 0)
        .map(|k| k.last_motion as f64)
        .collect();
    let frozen_end = tokens.iter().filter(|k| k.last_motion < t).count();
    let mut shares = [0usize; 4];
    for tok in &tokens {
        for (s, x) in shares.iter_mut().zip(tok.durations(t)) {
            *s += x;
        }
    }
    let total = (nd * t) as f64;
    let freeze_steps: Vec<f64> = tokens
        .iter()
        .map(|k| ((k.last_motion + 1).min(t)) as f64)
        .collect();
    let exit_steps: Vec<f64> = tokens
        .iter()
        .map(|k| ((k.exit() + 1).min(t)) as f64)
        .collect();
    let summary = Summary {
        format: 1,
        freeze: freeze.clone(),
        threshold: match freeze.as_str() {
            "f1" => Some(f1),
            "f3" => Some(f3),
            _ => None,
        },
        dead_tokens: nd,
        train_steps: t,
        dim: d,
        sqrt_dim: sqrt_d,
        global_last_motion: global,
        fimbulwinter_duration: duration,
        fimbulwinter_fraction: duration as f64 / t as f64,
        moved_at_least_once: moved.len(),
        frozen_at_end: frozen_end,
        frozen_at_end_fraction: frozen_end as f64 / nd as f64,
        last_motion_earliest: tokens
            .iter()
            .map(|k| k.last_motion)
            .filter(|&m| m > 0)
            .min(),
        last_motion_median: median(&moved),
        last_motion_latest: global,
        freeze_step_median: median(&freeze_steps),
        last_exit_freeze_median: median(&exit_steps),
        final_populations: pops[t],
        phase_shares: shares.map(|s| s as f64 / total),
        stillness_runs: stillness_runs(&moved_per_step[1..]),
    };

    // Plots, sampled.
    let sample: Vec<usize> = if t <= PLOT_STEPS {
        (1..=t).collect()
    } else {
        (0..PLOT_STEPS)
            .map(|k| 1 + k * (t - 1) / (PLOT_STEPS - 1))
            .collect()
    };
    let xs: Vec<f64> = sample.iter().map(|&s| s as f64).collect();
    let mut stacked = Chart::new(
        "committed phases (last exit)",
        "step",
        "tokens",
        (1.0, t as f64),
        (0.0, nd as f64),
    );
    let mut lower = vec![0.0; sample.len()];
    for k in 0..4 {
        let upper: Vec<f64> = sample
            .iter()
            .zip(&lower)
            .map(|(&s, lo)| lo + pops[s][k] as f64)
            .collect();
        stacked.band(&xs, &lower, &upper, PHASE_COLORS[k], PHASES[k]);
        lower = upper;
    }
    let phases_png = stacked.png().map_err(|e| p.error(e))?;
    let mut frozen = Chart::new(
        "frozen fraction",
        "step",
        "fraction",
        (1.0, t as f64),
        (0.0, 1.0),
    );
    let pts: Vec<(f64, f64)> = sample
        .iter()
        .map(|&s| (s as f64, pops[s][3] as f64 / nd as f64))
        .collect();
    frozen.line(&pts, BLUE, "committed frozen");
    let frozen_png = frozen.png().map_err(|e| p.error(e))?;

    let mut order: Vec<&Token> = tokens.iter().collect();
    order.sort_by_key(|k| (k.exit(), k.id));
    let shown = nd.min(PLOT_TOKENS);
    let bins = t.min(PLOT_STEPS);
    let mut strat = Chart::new(
        "stratigraphy: tokens by freeze step",
        "step",
        "token rank",
        (0.0, t as f64),
        (0.0, nd as f64),
    );
    for r in 0..shown {
        let tok = order[r * nd / shown];
        let (y0, y1) = ((r * nd / shown) as f64, ((r + 1) * nd / shown) as f64);
        for b in 0..bins {
            let (x0, x1) = ((b * t / bins) as f64, ((b + 1) * t / bins) as f64);
            let s = ((2 * b + 1) * t / (2 * bins) + 1).min(t);
            strat.cell(x0, x1, y0, y1, PHASE_COLORS[tok.phase(s)]);
        }
    }
    for k in 0..4 {
        strat.key(PHASES[k], PHASE_COLORS[k]);
    }
    let strat_png = strat.png().map_err(|e| p.error(e))?;

    p.write_output(outs[0], tok_csv.as_bytes())?;
    p.write_output(outs[1], pop_csv.as_bytes())?;
    p.write_json(outs[2], &summary)?;
    p.write_output(outs[3], &phases_png)?;
    p.write_output(outs[4], &frozen_png)?;
    p.write_output(outs[5], &strat_png)
}
