//! `w.quantization` (science spec S09): the grid the values of a dead set sit on.
//!
//! Over every component of the rows selected by mask `mask` of the `dead` file (tokens × D values,
//! S09: 2,221 × 2,560 = 5,685,760):
//! - distinct **bit patterns** with their counts (the `values` CSV), and distinct **values**
//!   (patterns compared as numbers: `+0` and `−0` are two patterns but one value, as
//!   `torch.unique` on floats counts them; NaN patterns are counted apart and left out);
//! - the range and the gaps between consecutive distinct values, each computed as an f64
//!   difference of the two exact values (correctly rounded, and exact whenever the two lie within
//!   2^29 of each other in magnitude, which covers every gap between neighbouring values of one
//!   W): min, median (mean of the middle two for an even count), mean, and the 4 most common gaps
//!   (ties: smaller gap first);
//! - over the unique vectors (rows by raw bytes): the dimensions in which all vectors share one
//!   pattern, and for dimension 0 the most common pattern (smallest pattern on ties), how many
//!   vectors hold it and how many distinct patterns the dimension has;
//! - the f32→bf16→f32 round trip of every distinct value (round to nearest even). For BF16 W it
//!   holds by construction (the f32 value is an exact up-cast); the stage asserts it and records
//!   `roundtrip_exact: true` with a note that this is tautological (S09, V2.27), not evidence. For
//!   F32 W it counts the distinct values and components that bf16 cannot represent exactly.
//!
//! Counting runs in parallel over blocks of tokens (rayon) and merges integer counts into ordered
//! maps, so outputs do not depend on the thread count.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;

use azimuth_stage_api::specs::w_lattice::QUANTIZATION as SPEC;

use crate::lattice::Format;
use crate::params::Params;
use crate::w_analysis::{load_mask, load_w, with_threads, LATTICE_DTYPES};
use crate::{bf16, StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Tokens per block of the counting pass.
const BLOCK_TOKENS: usize = 256;

/// How many of the most common gaps the summary lists (S09: 4).
const COMMON_GAPS: usize = 4;

#[derive(Debug, Serialize)]
struct GapCount {
    gap: f64,
    count: usize,
}

#[derive(Debug, Serialize)]
struct Gaps {
    count: usize,
    min: f64,
    median: f64,
    mean: f64,
    most_common: Vec<GapCount>,
}

#[derive(Debug, Serialize)]
struct DimensionZero {
    /// The most common pattern among the unique vectors (hex) and its value.
    pattern: String,
    value: f64,
    vectors: usize,
    distinct_patterns: usize,
}

#[derive(Debug, Serialize)]
struct RoundTrip {
    roundtrip_exact: bool,
    /// Distinct values / components that f32→bf16→f32 changes (always 0 for BF16 W).
    inexact_values: usize,
    inexact_components: u64,
    note: &'static str,
}

/// The `summary` output.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    format: u32,
    tensor: String,
    dtype: String,
    mask: String,
    rows: usize,
    cols: usize,
    tokens: usize,
    components: u64,
    nan_components: u64,
    distinct_patterns: usize,
    distinct_values: usize,
    /// Both +0 and −0 occur (two patterns, one value).
    signed_zeros: bool,
    min: Option<f64>,
    max: Option<f64>,
    /// Null with fewer than two distinct values.
    gaps: Option<Gaps>,
    unique_vectors: usize,
    constant_dimensions: usize,
    dimension_0: DimensionZero,
    round_trip: RoundTrip,
}

fn hex(f: Format, b: u32) -> String {
    match f {
        Format::Bf16 => format!("0x{b:04x}"),
        Format::F32 => format!("0x{b:08x}"),
    }
}

/// The median of sorted values (mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let mask_name = p.string("mask")?;
    let (values_out, summary_out) = (p.output("values")?, p.output("summary")?);
    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "values are counted by bit pattern on a float lattice",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let dead = load_mask(&p, "dead", &mask_name, m.rows)?;
    let tokens: Vec<usize> = (0..m.rows).filter(|&t| dead[t]).collect();
    if tokens.is_empty() {
        return Err(p.error(format!(
            "mask `{mask_name}` of input `dead` selects no tokens; there are no values to count \
             (check the mask or pick another with param `mask`)"
        )));
    }
    let d = m.cols;

    // Pattern counts over all components of the selected rows.
    let counts: BTreeMap<u32, u64> = with_threads(&p, ctx.threads, || {
        tokens
            .par_chunks(BLOCK_TOKENS)
            .map(|block| {
                let mut c: HashMap<u32, u64> = HashMap::new();
                for &t in block {
                    let row = m.row(t);
                    for j in 0..d {
                        *c.entry(f.pattern(row, j)).or_default() += 1;
                    }
                }
                c
            })
            .reduce(HashMap::new, |mut a, b| {
                for (k, v) in b {
                    *a.entry(k).or_default() += v;
                }
                a
            })
            .into_iter()
            .collect()
    })?;

    // Patterns in ascending value order (−0 before +0), NaNs apart.
    let mut patterns: Vec<(u32, u64)> = counts.into_iter().collect();
    let nan_components: u64 = patterns
        .iter()
        .filter(|(b, _)| f.is_nan(*b))
        .map(|(_, c)| c)
        .sum();
    patterns.retain(|(b, _)| !f.is_nan(*b));
    patterns.sort_by(|a, b| f.to_f32(a.0).total_cmp(&f.to_f32(b.0)));
    let mut csv = String::from("value,pattern,count\n");
    for &(b, c) in &patterns {
        let _ = writeln!(csv, "{},{},{c}", f.to_f32(b), hex(f, b));
    }
    let mut values: Vec<f64> = patterns.iter().map(|&(b, _)| f.to_f64(b)).collect();
    values.dedup(); // −0 == +0
    let signed_zeros = patterns.iter().filter(|(b, _)| f.to_f32(*b) == 0.0).count() == 2;

    let gaps = (values.len() >= 2).then(|| {
        let gaps: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let mut freq: BTreeMap<u64, usize> = BTreeMap::new();
        for g in &gaps {
            *freq.entry(g.to_bits()).or_default() += 1;
        }
        let mut common: Vec<(f64, usize)> = freq
            .into_iter()
            .map(|(g, c)| (f64::from_bits(g), c))
            .collect();
        common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.total_cmp(&b.0)));
        Gaps {
            count: gaps.len(),
            min: sorted[0],
            median: median(&sorted),
            mean: gaps.iter().sum::<f64>() / gaps.len() as f64,
            most_common: common
                .into_iter()
                .take(COMMON_GAPS)
                .map(|(gap, count)| GapCount { gap, count })
                .collect(),
        }
    });

    // Unique vectors: constant dimensions and dimension 0.
    let vectors = super::unique_vectors(&m, &dead);
    let reps: Vec<&[u8]> = vectors.iter().map(|g| m.row(g[0] as usize)).collect();
    let constant_dimensions = (0..d)
        .filter(|&j| {
            let first = f.pattern(reps[0], j);
            reps.iter().all(|r| f.pattern(r, j) == first)
        })
        .count();
    let mut dim0: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &reps {
        *dim0.entry(f.pattern(r, 0)).or_default() += 1;
    }
    let (&mode0, &mode0_count) = dim0
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .expect("at least one vector");

    // f32 → bf16 → f32.
    let inexact: Vec<&(u32, u64)> = patterns
        .iter()
        .filter(|&&(b, _)| {
            let x = f.to_f32(b);
            bf16::to_f32(bf16::from_f32(x)).to_bits() != x.to_bits()
        })
        .collect();
    let (inexact_values, inexact_components) =
        (inexact.len(), inexact.iter().map(|(_, c)| c).sum::<u64>());
    let note = match f {
        Format::Bf16 => {
            if inexact_values != 0 {
                return Err(p.error(format!(
                    "internal error: {inexact_values} bf16 values of W changed in an f32→bf16→f32 \
                     round trip, which is impossible for exact up-casts; please report it"
                )));
            }
            "tautological for BF16 W: every value is an exact bf16 up-cast, so the round trip \
             cannot change it (S09, V2.27); recorded as an assertion, not as evidence"
        }
        Format::F32 => {
            "F32 W: counts the distinct values and components that are not exactly \
             representable in bf16 (informative: 0 means the set lies on the bf16 grid)"
        }
    };

    p.write_output(values_out, csv.as_bytes())?;
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        dtype: m.dtype.to_string(),
        mask: mask_name,
        rows: m.rows,
        cols: d,
        tokens: tokens.len(),
        components: (tokens.len() * d) as u64,
        nan_components,
        distinct_patterns: patterns.len(),
        distinct_values: values.len(),
        signed_zeros,
        min: values.first().copied(),
        max: values.last().copied(),
        gaps,
        unique_vectors: vectors.len(),
        constant_dimensions,
        dimension_0: DimensionZero {
            pattern: hex(f, mode0),
            value: f.to_f64(mode0),
            vectors: mode0_count,
            distinct_patterns: dim0.len(),
        },
        round_trip: RoundTrip {
            roundtrip_exact: inexact_values == 0,
            inexact_values,
            inexact_components,
            note,
        },
    };
    p.write_json(summary_out, &summary)
}
