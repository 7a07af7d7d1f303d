//! `sim.compare`: simulation runs at one law and scale laid out as anchors × procedures, to
//! settle the S20-vs-S21 question from the data. The originals found "direct sampling works,
//! Monument Valley fails", but S20 drew around the centred centroid (norm 0.166, N = 2,100) and
//! S21 around the raw one (norm 0.371, M = 2,221). Run each procedure with each anchor, connect
//! the four summaries, and this stage reports the procedure effect within each anchor and the
//! anchor effect within each procedure, as differences in standard errors (√(s₁²/n₁ + s₂²/n₂),
//! population std per run) of the mean black-hole count and of the largest black hole's share of
//! the N rows (a share, because the originals' N differ), and a verdict computed from them.
//! The black-hole count grows with N, so between runs of different N only the share counts
//! towards the verdict; run the procedures at one N to compare their counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use azimuth_stage_api::specs::sim::COMPARE as SPEC;
use serde::Serialize;

use super::trials::{read_summary, RunSummary};
use crate::params::Params;
use crate::{StageContext, StageError};

/// A procedure's name in tables.
fn procedure(s: &RunSummary) -> String {
    match s.mode.as_str() {
        "direct" => "direct sampling".into(),
        mode => format!("Monument Valley ({mode})"),
    }
}

#[derive(Serialize)]
struct Cell {
    anchor: String,
    anchor_norm: f64,
    procedure: String,
    tokens: usize,
    trials: usize,
    black_holes_mean: f64,
    black_holes_std: f64,
    largest_mean: f64,
    largest_std: f64,
    unique_mean: f64,
}

/// One measure's difference between two runs, in standard errors.
#[derive(Serialize)]
struct Difference {
    /// `to` minus `from`.
    difference: f64,
    /// The difference in standard errors; null when both runs have no spread and agree.
    z: Option<f64>,
}

impl Difference {
    /// `b − a` for means with population stds over `na` and `nb` trials.
    fn of(a: (f64, f64, usize), b: (f64, f64, usize)) -> Difference {
        let difference = b.0 - a.0;
        let se = (a.1.powi(2) / a.2 as f64 + b.1.powi(2) / b.2 as f64).sqrt();
        let z = if se > 0.0 {
            Some(difference / se)
        } else if difference == 0.0 {
            None
        } else {
            Some(f64::MAX.copysign(difference))
        };
        Difference { difference, z }
    }

    fn significant(&self, threshold: f64) -> bool {
        self.z.is_some_and(|z| z.abs() >= threshold)
    }
}

#[derive(Serialize)]
struct Effect {
    /// What is held fixed (an anchor or a procedure).
    within: String,
    from: String,
    to: String,
    /// Mean black holes per trial.
    black_holes: Difference,
    /// Mean share of the rows in the largest black hole (largest / N, so runs with different N
    /// compare).
    largest_share: Difference,
    /// The two runs count different numbers of rows N. The black-hole count grows with N, so
    /// then only the largest share decides significance.
    tokens_differ: bool,
    /// A difference that decides reaches the threshold.
    significant: bool,
}

fn effect(
    within: String,
    from: String,
    to: String,
    a: &RunSummary,
    b: &RunSummary,
    threshold: f64,
) -> Effect {
    let share = |s: &RunSummary| {
        let n = s.tokens.max(1) as f64;
        (s.largest.mean / n, s.largest.std / n, s.trials)
    };
    let black_holes = Difference::of(
        (a.black_holes.mean, a.black_holes.std, a.trials),
        (b.black_holes.mean, b.black_holes.std, b.trials),
    );
    let largest_share = Difference::of(share(a), share(b));
    let tokens_differ = a.tokens != b.tokens;
    let significant = (!tokens_differ && black_holes.significant(threshold))
        || largest_share.significant(threshold);
    Effect {
        within,
        from,
        to,
        black_holes,
        largest_share,
        tokens_differ,
        significant,
    }
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    law: String,
    scale: f64,
    z_threshold: f64,
    cells: Vec<Cell>,
    procedure_effects: Vec<Effect>,
    anchor_effects: Vec<Effect>,
    verdict: String,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let threshold = p.float("z")?;
    let mut runs: Vec<RunSummary> = Vec::new();
    for path in p.inputs("runs")? {
        runs.push(read_summary(&p, path)?);
    }
    let (law, scale) = (runs[0].law.clone(), runs[0].scale);
    if let Some(other) = runs.iter().find(|s| s.law != law || s.scale != scale) {
        return Err(p.error(format!(
            "the runs mix law/scale {law} {scale} and {} {}; `sim.compare` compares procedures \
             and anchors at one law and scale (connect runs of one sweep point)",
            other.law, other.scale
        )));
    }
    // Cells keyed by (anchor, procedure), sorted.
    let mut grid: BTreeMap<(String, String), RunSummary> = BTreeMap::new();
    for s in runs {
        let key = (s.anchor.label.clone(), procedure(&s));
        if grid.contains_key(&key) {
            return Err(p.error(format!(
                "two runs are both {} with anchor `{}`; connect one run per anchor and procedure",
                key.1, key.0
            )));
        }
        grid.insert(key, s);
    }
    let anchors: Vec<String> = dedup(grid.keys().map(|k| k.0.clone()));
    let procedures: Vec<String> = dedup(grid.keys().map(|k| k.1.clone()));

    let mut procedure_effects = Vec::new();
    for a in &anchors {
        let cells: Vec<&RunSummary> = procedures
            .iter()
            .filter_map(|q| grid.get(&(a.clone(), q.clone())))
            .collect();
        for (i, x) in cells.iter().enumerate() {
            for y in &cells[i + 1..] {
                procedure_effects.push(effect(
                    format!("anchor {a}"),
                    procedure(x),
                    procedure(y),
                    x,
                    y,
                    threshold,
                ));
            }
        }
    }
    let mut anchor_effects = Vec::new();
    for q in &procedures {
        let cells: Vec<&RunSummary> = anchors
            .iter()
            .filter_map(|a| grid.get(&(a.clone(), q.clone())))
            .collect();
        for (i, x) in cells.iter().enumerate() {
            for y in &cells[i + 1..] {
                anchor_effects.push(effect(
                    format!("procedure {q}"),
                    x.anchor.label.clone(),
                    y.anchor.label.clone(),
                    x,
                    y,
                    threshold,
                ));
            }
        }
    }
    let any = |e: &[Effect]| e.iter().any(|e| e.significant);
    let verdict = match (
        procedure_effects.is_empty() || anchor_effects.is_empty(),
        any(&procedure_effects),
        any(&anchor_effects),
    ) {
        (true, _, _) => "incomplete: connect every procedure with at least two anchors (and \
                         every anchor with at least two procedures) to separate the effects"
            .to_string(),
        (false, false, true) => format!(
            "the anchor decides: with the same anchor the procedures agree within {threshold} \
             standard errors, while changing the anchor moves the black-hole count or the \
             largest black hole's share"
        ),
        (false, true, false) => format!(
            "the procedure decides: with the same anchor the procedures differ by at least \
             {threshold} standard errors, while the anchors agree"
        ),
        (false, true, true) => "both the anchor and the procedure move the counts".to_string(),
        (false, false, false) => format!(
            "neither moves the black-hole count or the largest share by {threshold} standard \
             errors at this scale"
        ),
    };

    let cells: Vec<Cell> = grid
        .iter()
        .map(|((a, q), s)| Cell {
            anchor: a.clone(),
            anchor_norm: s.anchor.norm,
            procedure: q.clone(),
            tokens: s.tokens,
            trials: s.trials,
            black_holes_mean: s.black_holes.mean,
            black_holes_std: s.black_holes.std,
            largest_mean: s.largest.mean,
            largest_std: s.largest.std,
            unique_mean: s.unique.mean,
        })
        .collect();

    let mut csv = String::from(
        "anchor,anchor_norm,procedure,tokens,trials,black_holes_mean,black_holes_std,\
         largest_mean,largest_std,unique_mean\n",
    );
    for c in &cells {
        let _ = writeln!(
            csv,
            "\"{}\",{},{},{},{},{},{},{},{},{}",
            c.anchor.replace('"', "'"),
            c.anchor_norm,
            c.procedure,
            c.tokens,
            c.trials,
            c.black_holes_mean,
            c.black_holes_std,
            c.largest_mean,
            c.largest_std,
            c.unique_mean
        );
    }

    let mut md = format!(
        "# Procedures × anchors ({law}, scale {scale:e})\n\nBlack holes per trial and the \
         largest black hole, mean ± std over the trials (N rows counted per trial).\n\n| anchor \
         (norm) |"
    );
    for q in &procedures {
        let _ = write!(md, " {q} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(procedures.len()));
    md.push('\n');
    for a in &anchors {
        let norm = grid
            .iter()
            .find(|(k, _)| &k.0 == a)
            .map(|(_, s)| s.anchor.norm)
            .unwrap_or(0.0);
        let _ = write!(md, "| {a} ({norm:.6}) |");
        for q in &procedures {
            match grid.get(&(a.clone(), q.clone())) {
                Some(s) => {
                    let _ = write!(
                        md,
                        " {:.1} ± {:.1} BHs, largest {:.0} ± {:.0} (N {}, {} trials) |",
                        s.black_holes.mean,
                        s.black_holes.std,
                        s.largest.mean,
                        s.largest.std,
                        s.tokens,
                        s.trials
                    );
                }
                None => md.push_str(" — |"),
            }
        }
        md.push('\n');
    }
    let describe = |e: &Effect| {
        let z = |d: &Difference| {
            d.z.map(|z| format!("z = {z:.1}"))
                .unwrap_or_else(|| "no spread".into())
        };
        format!(
            "- {}: {} → {}: black holes {:+.2} ({}{}), largest share {:+.4} ({}){}\n",
            e.within,
            e.from,
            e.to,
            e.black_holes.difference,
            z(&e.black_holes),
            if e.tokens_differ {
                "; N differs, not counted"
            } else {
                ""
            },
            e.largest_share.difference,
            z(&e.largest_share),
            if e.significant {
                " **significant**"
            } else {
                ""
            }
        )
    };
    md.push_str("\n## Procedure effects (same anchor)\n\n");
    procedure_effects
        .iter()
        .for_each(|e| md.push_str(&describe(e)));
    md.push_str("\n## Anchor effects (same procedure)\n\n");
    anchor_effects
        .iter()
        .for_each(|e| md.push_str(&describe(e)));
    let _ = write!(md, "\n**Verdict:** {verdict}.\n");

    let summary = Summary {
        format: 1,
        law,
        scale,
        z_threshold: threshold,
        cells,
        procedure_effects,
        anchor_effects,
        verdict,
    };
    p.write_output(p.output("table")?, csv.as_bytes())?;
    p.write_output(p.output("report")?, md.as_bytes())?;
    p.write_json(p.output("summary")?, &summary)
}

/// The distinct values of a sorted iterator, in order.
fn dedup(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = values.collect();
    v.sort();
    v.dedup();
    v
}
