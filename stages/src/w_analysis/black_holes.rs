//! `w.black_holes` (science spec S04): the black holes of W, i.e. groups of at least
//! `min_population` tokens whose rows are bit-for-bit identical. W is BF16 (Qwen) or F32 (MiniLM,
//! dequantized GGUF); the lattice columns use that format's fields ([`crate::lattice`]).
//!
//! Identity is decided on raw bytes by [`crate::bf16::identical_rows`] (parallel row hashing,
//! bucketing, bytewise confirmation), never on floats: `+0.0` and `−0.0` rows are different rows.
//! Black holes are numbered 1…K by (population descending, smallest member id ascending), the
//! canonical rule of V4.2 (the WS artifact's numbering); the representative of a black hole is its
//! smallest member id. Outputs, all deterministic bytes:
//! - `table` (CSV, header line then one line per black hole): `id, population, representative,
//!   members` (the first `preview` member ids, ascending, `;`-separated, `;...` appended when cut),
//!   `l2_norm` (f64 sum of squares of the exact f32 up-cast, rounded to f32 and printed shortest),
//!   the exponent profile of the row (`exponent_min`, `exponent_max`, `exponent_mean`,
//!   `exponent_median` of the raw 8-bit exponent fields, S08; `zero_components`),
//!   `same_exponents_as_1` (every dimension has the exponent of black hole 1, S08's claim) and
//!   `linf_ulps_to_1` (bit-space L∞ distance to black hole 1, S02).
//! - `summary` (JSON): see [`Summary`]; it reports both "tokens inside black holes" and "redundant
//!   rows" (V2.3).
//! - `members` (safetensors): `black_hole_id` [V] (U8 when K ≤ 255, U16 when K ≤ 65,535, else U32;
//!   0 = none, 1 = largest), `black_hole_mask` (BOOL) [V], `centroids` (W's dtype) [K, D], the
//!   representative rows in id order; metadata `black_holes` = K and `min_population`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use safetensors::tensor::Dtype;
use serde::Serialize;

use azimuth_stage_api::specs::w_analysis::BLACK_HOLES as SPEC;

use crate::io::{write_safetensors, TensorOut};
use crate::params::Params;
use crate::w_analysis::{load_w, with_threads};
use crate::{bf16, lattice};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// The `summary` output.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    format: u32,
    tensor: String,
    rows: usize,
    cols: usize,
    min_population: usize,
    distinct_rows: usize,
    /// rows − distinct rows (every copy beyond the first of a repeated row).
    redundant_rows: usize,
    /// Rows shared by no other row.
    singletons: usize,
    /// Number of black holes K.
    black_holes: usize,
    /// Tokens inside black holes (Σ populations).
    black_hole_tokens: usize,
    /// Population of black hole 1 (0 when there is none).
    largest: usize,
    /// Populations of black holes 1…K.
    populations: Vec<usize>,
    /// Smallest member id of black holes 1…K.
    representatives: Vec<u32>,
    /// Groups of identical rows smaller than `min_population` (not black holes), and their tokens.
    small_groups: usize,
    small_group_tokens: usize,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let min_population = p.int("min_population")? as usize;
    let preview = p.int("preview")? as usize;
    let (table_out, summary_out, members_out) = (
        p.output("table")?,
        p.output("summary")?,
        p.output("members")?,
    );

    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        super::LATTICE_DTYPES,
        "black holes are decided on raw bit patterns of a float lattice",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let (rows, cols) = (m.rows, m.cols);
    let row_bytes = cols * f.bytes();
    let census = with_threads(&p, ctx.threads, || bf16::identical_rows(m.data, row_bytes))?;
    let k = census
        .groups
        .iter()
        .take_while(|g| g.len() >= min_population)
        .count();
    let holes = &census.groups[..k];
    let row = |i: u32| &m.data[i as usize * row_bytes..(i as usize + 1) * row_bytes];

    // members
    let mut ids = vec![0u32; rows];
    for (n, g) in holes.iter().enumerate() {
        for &t in g {
            ids[t as usize] = n as u32 + 1;
        }
    }
    let (id_dtype, id_bytes): (Dtype, Vec<u8>) = if k <= u8::MAX as usize {
        (Dtype::U8, ids.iter().map(|&i| i as u8).collect())
    } else if k <= u16::MAX as usize {
        (
            Dtype::U16,
            ids.iter().flat_map(|&i| (i as u16).to_le_bytes()).collect(),
        )
    } else {
        (
            Dtype::U32,
            ids.iter().flat_map(|&i| i.to_le_bytes()).collect(),
        )
    };
    let mask: Vec<u8> = ids.iter().map(|&i| u8::from(i != 0)).collect();
    let mut centroids = Vec::with_capacity(k * row_bytes);
    for g in holes {
        centroids.extend_from_slice(row(g[0]));
    }
    let meta: BTreeMap<String, String> = [
        ("black_holes".to_string(), k.to_string()),
        ("min_population".to_string(), min_population.to_string()),
    ]
    .into();
    write_safetensors(
        members_out,
        &[
            TensorOut {
                name: "black_hole_id",
                dtype: id_dtype,
                shape: vec![rows],
                data: &id_bytes,
            },
            TensorOut {
                name: "black_hole_mask",
                dtype: Dtype::BOOL,
                shape: vec![rows],
                data: &mask,
            },
            TensorOut {
                name: "centroids",
                dtype: m.dtype,
                shape: vec![k, cols],
                data: &centroids,
            },
        ],
        &meta,
    )
    .map_err(|e| p.error(e))?;

    // table
    let first = holes.first().map(|g| row(g[0]));
    let mut table = String::from(
        "id,population,representative,members,l2_norm,exponent_min,exponent_max,exponent_mean,\
         exponent_median,zero_components,same_exponents_as_1,linf_ulps_to_1\n",
    );
    for (n, g) in holes.iter().enumerate() {
        let r = row(g[0]);
        let pats = f.patterns(r);
        let mut members: Vec<String> = g.iter().take(preview).map(u32::to_string).collect();
        if g.len() > preview {
            members.push("...".into());
        }
        let sq: f64 = pats.iter().map(|&b| f.to_f64(b) * f.to_f64(b)).sum();
        let mut exps: Vec<u8> = pats.iter().map(|&b| f.exponent(b)).collect();
        exps.sort_unstable();
        let mean = exps.iter().map(|&e| e as f64).sum::<f64>() / exps.len() as f64;
        let median = if exps.len() % 2 == 1 {
            exps[exps.len() / 2] as f64
        } else {
            (exps[exps.len() / 2 - 1] as f64 + exps[exps.len() / 2] as f64) / 2.0
        };
        let zeros = pats.iter().filter(|&&b| f.to_f32(b) == 0.0).count();
        let first = first.expect("k ≥ 1 here");
        let _ = writeln!(
            table,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            n + 1,
            g.len(),
            g[0],
            members.join(";"),
            sq.sqrt() as f32,
            exps[0],
            exps[exps.len() - 1],
            mean,
            median,
            zeros,
            lattice::exponent_distance(f, r, first) == 0,
            lattice::linf_ordinal(f, r, first),
        );
    }
    p.write_output(table_out, table.as_bytes())?;

    // summary
    let in_groups: usize = census.groups.iter().map(Vec::len).sum();
    let small = &census.groups[k..];
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        rows,
        cols,
        min_population,
        distinct_rows: census.distinct,
        redundant_rows: rows - census.distinct,
        singletons: rows - in_groups,
        black_holes: k,
        black_hole_tokens: holes.iter().map(Vec::len).sum(),
        largest: holes.first().map_or(0, Vec::len),
        populations: holes.iter().map(Vec::len).collect(),
        representatives: holes.iter().map(|g| g[0]).collect(),
        small_groups: small.len(),
        small_group_tokens: small.iter().map(Vec::len).sum(),
    };
    p.write_json(summary_out, &summary)
}
