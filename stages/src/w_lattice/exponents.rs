//! `w.exponents` (science spec S08): the exponent structure of the black holes against the rest of
//! W. Exponents are the raw 8-bit stored exponent fields E of each component (BF16 and F32 share
//! them, bias 127; a zero has E = 0; the sign is ignored), via [`crate::lattice::Format`].
//!
//! - Black-hole vectors (the rows of black holes 1…K from `w.black_holes`' `members`): for every
//!   pair the number of dimensions whose exponents agree (S08: all 78 pairs agree in all 2,560),
//!   the exponent values they use and their counts over the K×D values.
//! - One streaming pass over W (rayon over fixed blocks of rows, partial results merged in block
//!   order, so the thread count cannot change a bit): the exponent histogram of black-hole tokens
//!   and of live tokens (every token outside a black hole), and |W| mean, std, max for both.
//!   Sums of |x| and x² are accumulated in f64 over the exact values; std is the population std
//!   (ddof 0; at 10⁸ values ddof 1 differs in the 9th digit). Non-finite values are counted and
//!   left out of the |W| statistics (they keep their E = 255 in the histograms).
//! - The anchor, black hole 1 (S08's "John", the 814-token vector): min, max, mean, median
//!   (mean of the middle two for even D) and population std of its exponents, and the min, max,
//!   max/min ratio, mean and median of its per-component ULPs ([`crate::lattice::Format::ulp`];
//!   E = 0 counts as E = 1, S02).
//!
//! Outputs: `histogram` (CSV `exponent,bh_vectors,bh_tokens,live`, one line per exponent value
//! with a non-zero count, ascending) and `summary` (JSON, [`Summary`]).

use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;

use azimuth_stage_api::specs::w_lattice::EXPONENTS as SPEC;

use crate::lattice::Format;
use crate::params::Params;
use crate::w_analysis::{load_black_holes, load_w, with_threads, Matrix, LATTICE_DTYPES};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Rows per block of the streaming pass (the merge order, hence the result, is fixed by it).
const BLOCK_ROWS: usize = 512;

/// The pairwise agreements listed in the summary (all pairs of up to 64 black holes); beyond
/// that only the counts are reported.
const MAX_LISTED_PAIRS: usize = 64 * 63 / 2;

/// Running |x| statistics of a set of components.
#[derive(Debug, Clone, Copy, Default)]
struct AbsStats {
    values: u64,
    non_finite: u64,
    sum: f64,
    sum_sq: f64,
    max: f64,
}

impl AbsStats {
    fn add(&mut self, x: f64) {
        if x.is_finite() {
            let a = x.abs();
            self.values += 1;
            self.sum += a;
            self.sum_sq += a * a;
            if a > self.max {
                self.max = a;
            }
        } else {
            self.non_finite += 1;
        }
    }
    fn merge(&mut self, o: &AbsStats) {
        self.values += o.values;
        self.non_finite += o.non_finite;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.max = self.max.max(o.max);
    }
    fn summary(&self) -> AbsSummary {
        let n = self.values as f64;
        let mean = (self.values > 0).then(|| self.sum / n);
        AbsSummary {
            values: self.values,
            non_finite: self.non_finite,
            mean,
            std: mean.map(|m| (self.sum_sq / n - m * m).max(0.0).sqrt()),
            max: mean.map(|_| self.max),
        }
    }
}

/// Partial results of one block of rows.
struct Block {
    live: [u64; 256],
    bh_tokens: [u64; 256],
    live_abs: AbsStats,
    bh_abs: AbsStats,
}

fn scan_block(f: Format, rows: &[u8], first_row: usize, row_bytes: usize, id: &[u32]) -> Block {
    let mut b = Block {
        live: [0; 256],
        bh_tokens: [0; 256],
        live_abs: AbsStats::default(),
        bh_abs: AbsStats::default(),
    };
    let cols = row_bytes / f.bytes();
    for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
        let in_bh = id[first_row + r] != 0;
        let (hist, stats) = if in_bh {
            (&mut b.bh_tokens, &mut b.bh_abs)
        } else {
            (&mut b.live, &mut b.live_abs)
        };
        for j in 0..cols {
            let p = f.pattern(row, j);
            hist[f.exponent(p) as usize] += 1;
            stats.add(f.to_f64(p));
        }
    }
    b
}

#[derive(Debug, Serialize)]
struct AbsSummary {
    values: u64,
    non_finite: u64,
    mean: Option<f64>,
    std: Option<f64>,
    max: Option<f64>,
}

#[derive(Debug, Serialize)]
struct PairAgreement {
    a: u32,
    b: u32,
    /// Dimensions whose exponent fields are equal.
    agree: usize,
}

#[derive(Debug, Serialize)]
struct Agreement {
    /// Every pair of black-hole vectors agrees in every dimension (null with fewer than 2).
    all_share_every_exponent: Option<bool>,
    pairs: usize,
    pairs_agreeing_everywhere: usize,
    min_agree: Option<usize>,
    /// Per pair, in (a, b) order; only listed for up to 64 black holes.
    listed: Vec<PairAgreement>,
    listed_all: bool,
}

#[derive(Debug, Serialize)]
struct ExponentCount {
    exponent: u8,
    count: u64,
}

#[derive(Debug, Serialize)]
struct BlackHoleExponents {
    /// Exponent values used by the K black-hole vectors, ascending.
    values: Vec<u8>,
    /// Values between the smallest and largest non-zero exponent used that no black-hole vector
    /// uses (E = 0, zeros and subnormals, is left out so one zero does not open a wide range).
    gaps: Vec<u8>,
    /// Counts over the K×D components.
    counts: Vec<ExponentCount>,
}

#[derive(Debug, Serialize)]
struct Distribution {
    values: u64,
    distinct: usize,
    min: Option<u8>,
    max: Option<u8>,
    mode: Option<u8>,
    mode_fraction: Option<f64>,
}

fn distribution(hist: &[u64; 256]) -> Distribution {
    let values: u64 = hist.iter().sum();
    let used: Vec<u8> = (0..=255u8).filter(|&e| hist[e as usize] > 0).collect();
    // mode: the most frequent value, the smallest on ties
    let mode = used
        .iter()
        .copied()
        .max_by(|&a, &b| hist[a as usize].cmp(&hist[b as usize]).then(b.cmp(&a)));
    Distribution {
        values,
        distinct: used.len(),
        min: used.first().copied(),
        max: used.last().copied(),
        mode,
        mode_fraction: mode.map(|e| hist[e as usize] as f64 / values as f64),
    }
}

#[derive(Debug, Serialize)]
struct Stats {
    min: f64,
    max: f64,
    mean: f64,
    median: f64,
    std: f64,
}

/// min, max, mean, median (mean of the middle two for an even count), population std.
fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Stats {
        min: v[0],
        max: v[v.len() - 1],
        mean,
        median,
        std: var.sqrt(),
    }
}

#[derive(Debug, Serialize)]
struct UlpStats {
    min: f64,
    max: f64,
    /// max / min.
    ratio: f64,
    mean: f64,
    median: f64,
}

#[derive(Debug, Serialize)]
struct Anchor {
    black_hole: u32,
    representative: u32,
    population: usize,
    exponent: Stats,
    /// null if the anchor has a non-finite component.
    ulp: Option<UlpStats>,
}

/// The `summary` output.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    format: u32,
    tensor: String,
    dtype: String,
    rows: usize,
    cols: usize,
    black_holes: usize,
    black_hole_tokens: usize,
    live_tokens: usize,
    agreement: Agreement,
    black_hole_exponents: BlackHoleExponents,
    /// Exponents over all components of black-hole tokens / of live tokens.
    bh_token_exponents: Distribution,
    live_exponents: Distribution,
    abs_bh_tokens: AbsSummary,
    abs_live: AbsSummary,
    anchor: Option<Anchor>,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let (hist_out, summary_out) = (p.output("histogram")?, p.output("summary")?);
    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "exponent fields are read from the bit patterns of a float lattice",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let bh = load_black_holes(&p, "black_holes", m.rows)?;
    check_black_holes(&p, &m, &bh.members)?;
    let k = bh.members.len();
    let d = m.cols;
    let reps: Vec<u32> = bh.members.iter().map(|g| g[0]).collect();
    let exps: Vec<Vec<u8>> = reps
        .iter()
        .map(|&t| {
            let row = m.row(t as usize);
            (0..d).map(|j| f.exponent(f.pattern(row, j))).collect()
        })
        .collect();

    let row_bytes = m.row_bytes();
    let (blocks, pairs) = with_threads(&p, ctx.threads, || {
        let blocks: Vec<Block> = m
            .data
            .par_chunks(BLOCK_ROWS * row_bytes)
            .enumerate()
            .map(|(b, rows)| scan_block(f, rows, b * BLOCK_ROWS, row_bytes, &bh.id))
            .collect();
        let pairs: Vec<PairAgreement> = (0..k)
            .into_par_iter()
            .flat_map_iter(|a| {
                let exps = &exps;
                (a + 1..k).map(move |b| PairAgreement {
                    a: a as u32 + 1,
                    b: b as u32 + 1,
                    agree: exps[a].iter().zip(&exps[b]).filter(|(x, y)| x == y).count(),
                })
            })
            .collect();
        (blocks, pairs)
    })?;
    let mut live = [0u64; 256];
    let mut bh_tokens = [0u64; 256];
    let (mut live_abs, mut bh_abs) = (AbsStats::default(), AbsStats::default());
    for b in &blocks {
        for e in 0..256 {
            live[e] += b.live[e];
            bh_tokens[e] += b.bh_tokens[e];
        }
        live_abs.merge(&b.live_abs);
        bh_abs.merge(&b.bh_abs);
    }
    let mut bh_vectors = [0u64; 256];
    for e in exps.iter().flatten() {
        bh_vectors[*e as usize] += 1;
    }

    let mut csv = String::from("exponent,bh_vectors,bh_tokens,live\n");
    for e in 0..256 {
        if bh_vectors[e] + bh_tokens[e] + live[e] > 0 {
            let _ = writeln!(csv, "{e},{},{},{}", bh_vectors[e], bh_tokens[e], live[e]);
        }
    }
    p.write_output(hist_out, csv.as_bytes())?;

    let everywhere = pairs.iter().filter(|q| q.agree == d).count();
    let min_agree = pairs.iter().map(|q| q.agree).min();
    let used: Vec<u8> = (0..=255u8)
        .filter(|&e| bh_vectors[e as usize] > 0)
        .collect();
    let normal: Vec<u8> = used.iter().copied().filter(|&e| e >= 1).collect();
    let gaps = match (normal.first(), normal.last()) {
        (Some(&lo), Some(&hi)) => (lo..=hi).filter(|e| !normal.contains(e)).collect(),
        _ => Vec::new(),
    };
    let anchor = reps.first().map(|&t| {
        let row = m.row(t as usize);
        let pats = f.patterns(row);
        let ulps: Option<Vec<f64>> = pats.iter().map(|&b| f.ulp(b)).collect();
        Anchor {
            black_hole: 1,
            representative: t,
            population: bh.members[0].len(),
            exponent: stats(exps[0].iter().map(|&e| e as f64).collect()),
            ulp: ulps.map(|u| {
                let s = stats(u);
                UlpStats {
                    min: s.min,
                    max: s.max,
                    ratio: s.max / s.min,
                    mean: s.mean,
                    median: s.median,
                }
            }),
        }
    });
    let listed_all = pairs.len() <= MAX_LISTED_PAIRS;
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        dtype: m.dtype.to_string(),
        rows: m.rows,
        cols: d,
        black_holes: k,
        black_hole_tokens: bh.tokens(),
        live_tokens: m.rows - bh.tokens(),
        agreement: Agreement {
            all_share_every_exponent: (k >= 2).then_some(everywhere == pairs.len()),
            pairs: pairs.len(),
            pairs_agreeing_everywhere: everywhere,
            min_agree,
            listed: if listed_all { pairs } else { Vec::new() },
            listed_all,
        },
        black_hole_exponents: BlackHoleExponents {
            counts: used
                .iter()
                .map(|&e| ExponentCount {
                    exponent: e,
                    count: bh_vectors[e as usize],
                })
                .collect(),
            values: used,
            gaps,
        },
        bh_token_exponents: distribution(&bh_tokens),
        live_exponents: distribution(&live),
        abs_bh_tokens: bh_abs.summary(),
        abs_live: live_abs.summary(),
        anchor,
    };
    p.write_json(summary_out, &summary)
}

/// Every member of a black hole must have its representative's row (else the members file was
/// computed from another W).
fn check_black_holes(
    p: &Params<'_>,
    m: &Matrix<'_>,
    members: &[Vec<u32>],
) -> Result<(), StageError> {
    for (k, g) in members.iter().enumerate() {
        let rep = m.row(g[0] as usize);
        if let Some(&t) = g.iter().find(|&&t| m.row(t as usize) != rep) {
            return Err(p.error(format!(
                "input `black_holes` disagrees with W: tokens {} and {t} are both in black hole {} \
                 but their rows differ; recompute `w.black_holes` from this W",
                g[0],
                k + 1
            )));
        }
    }
    Ok(())
}
