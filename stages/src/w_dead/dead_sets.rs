//! `w.dead_sets` (science spec S05, rules A, B and D; rule C, the sky-box cluster, is not here):
//! which tokens of W are dead, by three membership rules, and how the rules disagree.
//!
//! - **Rule A**, exponent neighbourhood: the anchor is the representative row of black hole 1
//!   (the largest). d_exp(w) = max_i |E(w_i) − E(a_i)| over the raw exponent fields
//!   ([`lattice::exponent_distance`]); the set is d_exp ≤ `tolerance`. The sweep t = 0…`sweep_max`
//!   reports tokens, tokens added against t − 1 and distinct vectors; the summary also names the
//!   first t whose increment is a local minimum (the source's choice rule, V2.25), for information
//!   only: the mask always uses `tolerance`. Without black holes there is no anchor and rule A is
//!   empty (no anchor is invented).
//! - **Rule B**, L2 void: c = mean of all black-hole member rows (population-weighted centroid),
//!   d_i = ‖w_i − c‖₂ for every row. The `window` smallest distances are found by partial
//!   selection (`select_nth_unstable`, ties broken by token id), sorted, and the largest
//!   consecutive gap (absolute difference, first on ties) is located: inner rank and radius, outer
//!   radius, gap, ratio outer/inner, threshold = midpoint. The void is clean when the ratio is at
//!   least `min_gap_ratio`; when the inner radius is 0 the ratio is infinite (printed as null with
//!   `ratio_infinite: true`) and the void counts as clean because the largest gap is then positive.
//!   Otherwise (`void_found: false`) the gap numbers are still reported but the mask stays empty:
//!   no cluster is invented.
//! - **Rule D**, flood fill ("spongecrystal"): nodes are the distinct rows of W, seeds the black
//!   hole rows; each iteration adds every node at bit-space L∞ distance exactly 1 (sign-aware
//!   ordinal, S02/V4.3; equal to lattice-coordinate L∞ in [0.5, 1.5]) from a vector added in the
//!   previous iteration, until an iteration adds nothing (that empty iteration is recorded too, as
//!   in the source's +19, +4, +0). Rows differing only by the sign of a zero are at distance 0 and
//!   are therefore not joined. The scan is parallel over nodes and leaves each comparison at the
//!   first column whose ordinal difference exceeds 1.
//!
//! Distances accumulate in f64 over the exact element values (the centroid too) and are reported
//! rounded to f32; the rule-B threshold comparison is done in f64. Identity (distinct vectors,
//! black holes) is decided on raw bytes. Outputs are described in the stage spec
//! (`azimuth-stage-api`, `specs/w_dead.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;

use azimuth_stage_api::specs::w_dead::DEAD_SETS as SPEC;

use super::{distinct_classes, l2_to, mean_of, norm};
use crate::io::{write_safetensors, TensorOut};
use crate::lattice::{self, Format};
use crate::params::Params;
use crate::w_analysis::{
    load_black_holes, load_w, with_threads, BlackHoles, Matrix, LATTICE_DTYPES,
};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Size of one rule's set.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub(crate) struct RuleStats {
    tokens: usize,
    /// Distinct rows among the tokens.
    vectors: usize,
    /// Black holes with at least one member in the set.
    black_holes: usize,
    /// Vectors of the set that no other row of W shares.
    singletons: usize,
    /// tokens / vectors (null for an empty set).
    compression: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RuleA {
    /// Whether rule A could run (it needs black hole 1 as anchor).
    ran: bool,
    tolerance: u32,
    /// Black hole 1's representative (smallest member) token, the anchor row.
    anchor_token: Option<u32>,
    /// Range of d_exp over all rows.
    exponent_distance_min: Option<u32>,
    exponent_distance_max: Option<u32>,
    /// First t of the sweep whose increment is below the previous one and not above the next one.
    increment_local_minimum: Option<u32>,
    set: RuleStats,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
struct Gap {
    /// 1-based rank of the last distance below the gap.
    inner_rank: usize,
    inner_token: u32,
    inner_radius: f32,
    outer_token: u32,
    outer_radius: f32,
    gap: f32,
    /// outer / inner; null when the inner radius is 0.
    ratio: Option<f64>,
    ratio_infinite: bool,
    /// Midpoint of the gap (f64; the mask is d < threshold).
    threshold: f64,
}

#[derive(Debug, Serialize)]
struct RuleB {
    ran: bool,
    window: usize,
    min_gap_ratio: f64,
    /// ‖c‖₂ of the population-weighted black-hole centroid.
    centroid_norm: Option<f32>,
    /// Largest of the `window` smallest distances (the source's "net radius").
    window_radius: Option<f32>,
    void_found: bool,
    /// The largest gap of the window (reported even when it is no clean void).
    largest_gap: Option<Gap>,
    set: RuleStats,
}

#[derive(Debug, Serialize)]
struct RuleD {
    ran: bool,
    /// Distinct rows that seed the fill (the black-hole rows).
    seeds: usize,
    /// Vectors added per iteration, ending with the empty iteration.
    additions: Vec<usize>,
    iterations: usize,
    set: RuleStats,
}

#[derive(Debug, Serialize)]
struct Differences {
    a_minus_b: Vec<u32>,
    b_minus_a: Vec<u32>,
    a_minus_d: Vec<u32>,
    d_minus_a: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct Summary {
    format: u32,
    tensor: String,
    dtype: String,
    rows: usize,
    cols: usize,
    distinct_rows: usize,
    black_holes: usize,
    black_hole_tokens: usize,
    /// Why rules could not run (empty when all ran).
    notes: Vec<String>,
    rule_a: RuleA,
    rule_b: RuleB,
    rule_d: RuleD,
    differences: Differences,
}

/// One line of the tolerance sweep.
struct SweepRow {
    t: u32,
    count: usize,
    added: usize,
    vectors: usize,
}

struct Identity {
    /// Smallest identical row of each row.
    class: Vec<u32>,
    /// Rows sharing each class (indexed by the class's row; 0 for non-class rows).
    population: Vec<u32>,
}

impl Identity {
    fn of(m: &Matrix<'_>) -> Identity {
        let class = distinct_classes(m.data, m.row_bytes());
        let mut population = vec![0u32; class.len()];
        for &c in &class {
            population[c as usize] += 1;
        }
        Identity { class, population }
    }

    fn is_class(&self, t: usize) -> bool {
        self.class[t] as usize == t
    }

    fn stats(&self, bh: &BlackHoles, mask: &[bool]) -> RuleStats {
        let mut seen = vec![false; mask.len()];
        let mut holes = vec![false; bh.members.len() + 1];
        let (mut tokens, mut vectors, mut singletons) = (0, 0, 0);
        for (t, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            tokens += 1;
            let c = self.class[t] as usize;
            if !seen[c] {
                seen[c] = true;
                vectors += 1;
                if self.population[c] == 1 {
                    singletons += 1;
                }
            }
            holes[bh.id[t] as usize] = true;
        }
        RuleStats {
            tokens,
            vectors,
            black_holes: holes[1..].iter().filter(|&&h| h).count(),
            singletons,
            compression: (vectors > 0).then(|| tokens as f64 / vectors as f64),
        }
    }
}

/// Everything the stage computes, before formatting.
struct Computed {
    d_exp: Option<Vec<u32>>,
    sweep: Vec<SweepRow>,
    rule_a: Vec<bool>,
    centroid: Option<Vec<f64>>,
    distance: Option<Vec<f64>>,
    window_radius: Option<f64>,
    gap: Option<Gap>,
    void_found: bool,
    rule_b: Vec<bool>,
    seeds: usize,
    additions: Vec<usize>,
    rule_d: Vec<bool>,
    identity: Identity,
}

struct Config {
    tolerance: u32,
    sweep_max: u32,
    window: usize,
    min_gap_ratio: f64,
    rule_d: bool,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let cfg = Config {
        tolerance: p.int("tolerance")? as u32,
        sweep_max: p.int("sweep_max")? as u32,
        window: p.int("window")? as usize,
        min_gap_ratio: p.float("min_gap_ratio")?,
        rule_d: p.boolean("rule_d")?,
    };
    let (masks_out, sweep_out, summary_out, members_out) = (
        p.output("masks")?,
        p.output("sweep")?,
        p.output("summary")?,
        p.output("members")?,
    );
    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "the dead-set rules read exponent fields and bit-space distances of a float lattice",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let rows = m.rows;
    let bh = load_black_holes(&p, "black_holes", rows)?;
    check_black_holes(&p, &m, &bh)?;
    let r = with_threads(&p, ctx.threads, || compute(&m, f, &bh, &cfg))?;

    // notes
    let mut notes = Vec::new();
    if bh.members.is_empty() {
        notes.push(
            "the black_holes input holds no black hole: rule A has no anchor, rule B no centroid \
             and rule D no seeds, so all three sets are empty"
                .to_string(),
        );
    } else if !r.void_found {
        if let Some(g) = &r.gap {
            notes.push(format!(
                "rule B: the largest gap of the window (after rank {}, ratio {}) is below \
                 min_gap_ratio {}: no clean void, the rule-B set is left empty",
                g.inner_rank,
                g.ratio.map_or("inf".into(), |x| x.to_string()),
                cfg.min_gap_ratio
            ));
        } else {
            notes.push("rule B: the window has no positive gap: no void".to_string());
        }
    }
    if !cfg.rule_d {
        notes.push("rule D was switched off (param rule_d): its mask is all false".to_string());
    }

    // masks
    let bh_mask: Vec<u8> = bh.id.iter().map(|&i| u8::from(i != 0)).collect();
    let as_u8 = |v: &[bool]| -> Vec<u8> { v.iter().map(|&b| u8::from(b)).collect() };
    let d_exp_u8: Vec<u8> = match &r.d_exp {
        Some(d) => d.iter().map(|&x| x.min(255) as u8).collect(),
        None => vec![255; rows],
    };
    let dist_bytes: Vec<u8> = match &r.distance {
        Some(d) => d.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        None => (0..rows).flat_map(|_| f32::NAN.to_le_bytes()).collect(),
    };
    let threshold = r.gap.as_ref().filter(|_| r.void_found).map(|g| g.threshold);
    let meta: BTreeMap<String, String> = [
        ("tolerance".to_string(), cfg.tolerance.to_string()),
        (
            "threshold".to_string(),
            threshold.map_or("none".into(), |t| t.to_string()),
        ),
        ("void_found".to_string(), r.void_found.to_string()),
        ("rule_d".to_string(), cfg.rule_d.to_string()),
    ]
    .into();
    let (ma, mb, md) = (as_u8(&r.rule_a), as_u8(&r.rule_b), as_u8(&r.rule_d));
    let bool_tensor = |name, data| TensorOut {
        name,
        dtype: Dtype::BOOL,
        shape: vec![rows],
        data,
    };
    write_safetensors(
        masks_out,
        &[
            bool_tensor("rule_a", &ma),
            bool_tensor("rule_b", &mb),
            bool_tensor("rule_d", &md),
            bool_tensor("black_hole_mask", &bh_mask),
            TensorOut {
                name: "exponent_distance",
                dtype: Dtype::U8,
                shape: vec![rows],
                data: &d_exp_u8,
            },
            TensorOut {
                name: "distance_to_centroid",
                dtype: Dtype::F32,
                shape: vec![rows],
                data: &dist_bytes,
            },
        ],
        &meta,
    )
    .map_err(|e| p.error(e))?;

    // sweep
    let mut sweep = String::from("t,count,added,vectors\n");
    for s in &r.sweep {
        let _ = writeln!(sweep, "{},{},{},{}", s.t, s.count, s.added, s.vectors);
    }
    p.write_output(sweep_out, sweep.as_bytes())?;

    // members
    let anchor = bh
        .members
        .first()
        .map(|g| super::row_f64(f, m.row(g[0] as usize)));
    let mut members =
        String::from("id,in_a,in_b,in_d,bh_id,d_exp,distance_to_centroid,distance_to_anchor\n");
    for t in 0..rows {
        let (a, b, d) = (r.rule_a[t], r.rule_b[t], r.rule_d[t]);
        if !(a || b || d) {
            continue;
        }
        let opt = |x: Option<f64>| x.map_or(String::new(), |x| (x as f32).to_string());
        let _ = writeln!(
            members,
            "{t},{a},{b},{d},{},{},{},{}",
            bh.id[t],
            r.d_exp.as_ref().map_or(String::new(), |e| e[t].to_string()),
            opt(r.distance.as_ref().map(|e| e[t])),
            opt(anchor.as_ref().map(|c| l2_to(f, m.row(t), c))),
        );
    }
    p.write_output(members_out, members.as_bytes())?;

    // summary
    let minus = |x: &[bool], y: &[bool]| -> Vec<u32> {
        (0..rows)
            .filter(|&t| x[t] && !y[t])
            .map(|t| t as u32)
            .collect()
    };
    let id = &r.identity;
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        dtype: m.dtype.to_string(),
        rows,
        cols: m.cols,
        distinct_rows: (0..rows).filter(|&t| id.is_class(t)).count(),
        black_holes: bh.members.len(),
        black_hole_tokens: bh.tokens(),
        notes,
        rule_a: RuleA {
            ran: r.d_exp.is_some(),
            tolerance: cfg.tolerance,
            anchor_token: bh.members.first().map(|g| g[0]),
            exponent_distance_min: r.d_exp.as_ref().and_then(|d| d.iter().copied().min()),
            exponent_distance_max: r.d_exp.as_ref().and_then(|d| d.iter().copied().max()),
            increment_local_minimum: increment_local_minimum(&r.sweep),
            set: id.stats(&bh, &r.rule_a),
        },
        rule_b: RuleB {
            ran: r.centroid.is_some(),
            window: cfg.window.min(rows),
            min_gap_ratio: cfg.min_gap_ratio,
            centroid_norm: r.centroid.as_ref().map(|c| norm(c) as f32),
            window_radius: r.window_radius.map(|x| x as f32),
            void_found: r.void_found,
            largest_gap: r.gap.clone(),
            set: id.stats(&bh, &r.rule_b),
        },
        rule_d: RuleD {
            ran: cfg.rule_d && !bh.members.is_empty(),
            seeds: r.seeds,
            iterations: r.additions.len(),
            additions: r.additions.clone(),
            set: id.stats(&bh, &r.rule_d),
        },
        differences: Differences {
            a_minus_b: minus(&r.rule_a, &r.rule_b),
            b_minus_a: minus(&r.rule_b, &r.rule_a),
            a_minus_d: minus(&r.rule_a, &r.rule_d),
            d_minus_a: minus(&r.rule_d, &r.rule_a),
        },
    };
    p.write_json(summary_out, &summary)
}

/// Every black hole's members must be byte-identical rows of this W (catches a members file made
/// from another matrix of the same height).
fn check_black_holes(p: &Params<'_>, m: &Matrix<'_>, bh: &BlackHoles) -> Result<(), StageError> {
    for (k, g) in bh.members.iter().enumerate() {
        let rep = m.row(g[0] as usize);
        if let Some(&t) = g.iter().find(|&&t| m.row(t as usize) != rep) {
            return Err(p.error(format!(
                "input `black_holes`: black hole {} lists tokens {} and {t}, whose rows of W differ; \
                 the black holes were computed from another matrix (rerun `w.black_holes` on this W)",
                k + 1,
                g[0]
            )));
        }
    }
    Ok(())
}

fn compute(m: &Matrix<'_>, f: Format, bh: &BlackHoles, cfg: &Config) -> Computed {
    let rows = m.rows;
    let identity = Identity::of(m);
    let anchor = bh.members.first().map(|g| g[0] as usize);

    // Rule A.
    let d_exp: Option<Vec<u32>> = anchor.map(|a| {
        let ar = m.row(a);
        (0..rows)
            .into_par_iter()
            .with_min_len(256)
            .map(|t| lattice::exponent_distance(f, m.row(t), ar))
            .collect()
    });
    let mut sweep = Vec::new();
    let mut rule_a = vec![false; rows];
    if let Some(d) = &d_exp {
        let top = cfg.sweep_max as usize;
        let (mut tokens_at, mut vectors_at) = (vec![0usize; top + 1], vec![0usize; top + 1]);
        for (t, &x) in d.iter().enumerate() {
            if (x as usize) <= top {
                tokens_at[x as usize] += 1;
                if identity.is_class(t) {
                    vectors_at[x as usize] += 1;
                }
            }
        }
        let (mut count, mut vectors) = (0, 0);
        for t in 0..=top {
            count += tokens_at[t];
            vectors += vectors_at[t];
            sweep.push(SweepRow {
                t: t as u32,
                count,
                added: tokens_at[t],
                vectors,
            });
        }
        for (a, &x) in rule_a.iter_mut().zip(d) {
            *a = x <= cfg.tolerance;
        }
    }

    // Rule B.
    let bh_tokens: Vec<u32> = (0..rows as u32)
        .filter(|&t| bh.id[t as usize] != 0)
        .collect();
    let centroid = (!bh_tokens.is_empty()).then(|| mean_of(m, f, &bh_tokens));
    let distance: Option<Vec<f64>> = centroid.as_ref().map(|c| {
        (0..rows)
            .into_par_iter()
            .with_min_len(256)
            .map(|t| l2_to(f, m.row(t), c))
            .collect()
    });
    let (mut window_radius, mut gap, mut void_found) = (None, None, false);
    let mut rule_b = vec![false; rows];
    if let Some(d) = &distance {
        let window = cfg.window.min(rows);
        let by_distance =
            |a: &u32, b: &u32| d[*a as usize].total_cmp(&d[*b as usize]).then(a.cmp(b));
        let mut order: Vec<u32> = (0..rows as u32).collect();
        if window < rows {
            order.select_nth_unstable_by(window - 1, by_distance);
            order.truncate(window);
        }
        order.sort_unstable_by(by_distance);
        window_radius = order.last().map(|&t| d[t as usize]);
        let mut best: Option<(usize, f64)> = None;
        for j in 0..order.len().saturating_sub(1) {
            let g = d[order[j + 1] as usize] - d[order[j] as usize];
            if g > 0.0 && best.is_none_or(|(_, b)| g > b) {
                best = Some((j, g));
            }
        }
        if let Some((j, g)) = best {
            let (inner, outer) = (d[order[j] as usize], d[order[j + 1] as usize]);
            let ratio = (inner > 0.0).then(|| outer / inner);
            let threshold = (inner + outer) / 2.0;
            void_found = ratio.is_none_or(|r| r >= cfg.min_gap_ratio);
            gap = Some(Gap {
                inner_rank: j + 1,
                inner_token: order[j],
                inner_radius: inner as f32,
                outer_token: order[j + 1],
                outer_radius: outer as f32,
                gap: g as f32,
                ratio,
                ratio_infinite: ratio.is_none(),
                threshold,
            });
            if void_found {
                for (b, &x) in rule_b.iter_mut().zip(d) {
                    *b = x < threshold;
                }
            }
        }
    }

    // Rule D.
    let mut rule_d = vec![false; rows];
    let mut additions = Vec::new();
    let mut seeds = 0;
    if cfg.rule_d && !bh.members.is_empty() {
        let mut inside = vec![false; rows];
        let mut frontier: Vec<u32> = Vec::new();
        for g in &bh.members {
            let c = identity.class[g[0] as usize];
            if !inside[c as usize] {
                inside[c as usize] = true;
                frontier.push(c);
            }
        }
        frontier.sort_unstable();
        seeds = frontier.len();
        let nodes: Vec<u32> = (0..rows as u32)
            .filter(|&t| identity.is_class(t as usize))
            .collect();
        loop {
            let ordinals: Vec<Vec<i64>> = frontier
                .iter()
                .map(|&t| {
                    f.patterns(m.row(t as usize))
                        .into_iter()
                        .map(|b| f.ordinal(b))
                        .collect()
                })
                .collect();
            let added: Vec<u32> = nodes
                .par_iter()
                .with_min_len(256)
                .filter(|&&t| !inside[t as usize])
                .filter(|&&t| {
                    let r = m.row(t as usize);
                    ordinals.iter().any(|o| linf_is_one(f, r, o))
                })
                .copied()
                .collect();
            additions.push(added.len());
            if added.is_empty() {
                break;
            }
            for &t in &added {
                inside[t as usize] = true;
            }
            frontier = added;
        }
        for (t, d) in rule_d.iter_mut().enumerate() {
            *d = inside[identity.class[t] as usize];
        }
    }

    Computed {
        d_exp,
        sweep,
        rule_a,
        centroid,
        distance,
        window_radius,
        gap,
        void_found,
        rule_b,
        seeds,
        additions,
        rule_d,
        identity,
    }
}

/// Whether the bit-space L∞ distance between `row` and the vector with ordinals `o` is exactly 1;
/// stops at the first column that differs by more than 1.
fn linf_is_one(f: Format, row: &[u8], o: &[i64]) -> bool {
    let mut max = 0;
    for (j, &oj) in o.iter().enumerate() {
        let d = f.ordinal(f.pattern(row, j)).abs_diff(oj);
        if d > 1 {
            return false;
        }
        max = max.max(d);
    }
    max == 1
}

/// The first t ≥ 1 (before the sweep's end) whose increment is below the previous one and not
/// above the next one: the source's rule for choosing the tolerance (S05, V2.25).
fn increment_local_minimum(sweep: &[SweepRow]) -> Option<u32> {
    (1..sweep.len().saturating_sub(1))
        .find(|&t| sweep[t].added < sweep[t - 1].added && sweep[t].added <= sweep[t + 1].added)
        .map(|t| sweep[t].t)
}
