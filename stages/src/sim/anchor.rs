//! `sim.anchor`: the vector the quantize-and-count simulations draw around.
//!
//! From a W (BF16 or F32): the mean of all black-hole rows (S21's raw centroid; every member
//! counts, so it is population-weighted), that mean minus the mean row μ (S20's centred
//! centroid), the row of black hole 1 (S24's "John"), or the mean of a dead-set mask. Or a
//! synthetic stand-in (V3.2's note): N(0, 1) draws scaled to a given norm, optionally rounded to
//! bf16. Means are accumulated in f64 in row order and rounded once to f32, so the anchor does
//! not depend on the thread count.
//!
//! The summary reports the grid around the anchor: the range of bf16 and f32 ULPs of its
//! components, which is what a tiny σ has to cross before two draws land in different cells.

use std::collections::BTreeMap;

use azimuth_stage_api::specs::sim::ANCHOR as SPEC;
use safetensors::tensor::Dtype;
use serde::Serialize;

use super::Normals;
use crate::io::{write_safetensors, TensorOut};
use crate::lattice::Format;
use crate::params::Params;
use crate::w_analysis::{load_black_holes, load_mask, load_w, LATTICE_DTYPES};
use crate::{StageContext, StageError};

#[derive(Serialize)]
struct Summary {
    format: u32,
    label: String,
    source: String,
    dim: usize,
    norm: f64,
    component_mean: f64,
    component_std: f64,
    component_min: f64,
    component_max: f64,
    /// Rows averaged (1 for a single row, 0 for a synthetic anchor).
    rows: usize,
    /// Smallest and largest bf16 ULP of the (bf16-rounded) components, zeros excluded.
    bf16_ulp_min: Option<f64>,
    bf16_ulp_max: Option<f64>,
    /// Smallest and largest f32 ULP of the components, zeros excluded.
    f32_ulp_min: Option<f64>,
    f32_ulp_max: Option<f64>,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let source = p.string("source")?;
    let round = p.boolean("bf16")?;
    let (values, rows) = if source == "synthetic" {
        for port in ["w", "black_holes", "dead"] {
            if !p.optional_inputs(port).is_empty() {
                return Err(p.error(format!(
                    "input `{port}` is connected, but `source: synthetic` reads no W; pick a \
                     source that uses it or remove the input"
                )));
            }
        }
        let dim = p.int("dim")? as usize;
        let norm = p.float("norm")?;
        let mut rng = Normals::new(p.int("seed")? as u64);
        let raw: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        let length = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
        (
            raw.iter()
                .map(|v| (v / length * norm) as f32)
                .collect::<Vec<f32>>(),
            0,
        )
    } else {
        from_w(&p, &source)?
    };
    let values: Vec<f32> = if round {
        values
            .iter()
            .map(|&v| crate::bf16::to_f32(crate::bf16::from_f32(v)))
            .collect()
    } else {
        values
    };

    let dim = values.len();
    let v64: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    let norm = v64.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mean = v64.iter().sum::<f64>() / dim as f64;
    let std = (v64.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / dim as f64).sqrt();
    let label = match p.string("label")? {
        l if l.is_empty() => format!("{source} (norm {norm:.6})"),
        l => l,
    };
    let ulps = |f: Format, bits: &dyn Fn(f32) -> u32| {
        let u: Vec<f64> = values
            .iter()
            .filter(|&&v| v != 0.0)
            .filter_map(|&v| f.ulp(bits(v)))
            .collect();
        (
            u.iter().copied().reduce(f64::min),
            u.iter().copied().reduce(f64::max),
        )
    };
    let (bf16_ulp_min, bf16_ulp_max) = ulps(Format::Bf16, &|v| crate::bf16::from_f32(v) as u32);
    let (f32_ulp_min, f32_ulp_max) = ulps(Format::F32, &|v| v.to_bits());
    let summary = Summary {
        format: 1,
        label: label.clone(),
        source: source.clone(),
        dim,
        norm,
        component_mean: mean,
        component_std: std,
        component_min: v64.iter().copied().fold(f64::INFINITY, f64::min),
        component_max: v64.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        rows,
        bf16_ulp_min,
        bf16_ulp_max,
        f32_ulp_min,
        f32_ulp_max,
    };
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let metadata = BTreeMap::from([("label".to_string(), label), ("source".to_string(), source)]);
    write_safetensors(
        p.output("anchor")?,
        &[TensorOut {
            name: "anchor",
            dtype: Dtype::F32,
            shape: vec![dim],
            data: &bytes,
        }],
        &metadata,
    )
    .map_err(|e| p.error(e))?;
    p.write_json(p.output("summary")?, &summary)
}

/// The anchor taken from input `w`, and how many rows it averages.
fn from_w(p: &Params<'_>, source: &str) -> Result<(Vec<f32>, usize), StageError> {
    if p.optional_inputs("w").is_empty() {
        return Err(p.error(format!(
            "`source: {source}` reads a W: connect input `w` (and `black_holes` or `dead`)"
        )));
    }
    let name = p.string("tensor")?;
    let w = load_w(p)?;
    let m = w.matrix(p, &name, LATTICE_DTYPES, "anchors are read from float rows")?;
    let f = m.format().expect("lattice dtypes");
    let mut row = Vec::new();
    let mean_of = |rows: &mut dyn Iterator<Item = usize>, row: &mut Vec<f32>| {
        let mut sum = vec![0f64; m.cols];
        let mut n = 0usize;
        for i in rows {
            crate::lattice::row_f32(f, m.row(i), row);
            for (s, &v) in sum.iter_mut().zip(row.iter()) {
                *s += v as f64;
            }
            n += 1;
        }
        (
            sum.iter()
                .map(|s| s / n.max(1) as f64)
                .collect::<Vec<f64>>(),
            n,
        )
    };
    let need_black_holes = || -> Result<_, StageError> {
        if p.optional_inputs("black_holes").is_empty() {
            return Err(p.error(format!(
                "`source: {source}` needs input `black_holes` (the `members` output of \
                 `w.black_holes` on the same W)"
            )));
        }
        let bh = load_black_holes(p, "black_holes", m.rows)?;
        if bh.members.is_empty() {
            return Err(p.error(format!(
                "input `black_holes` lists no black holes, so there is no `{source}`; pick \
                 `source: mask_centroid` or `synthetic`"
            )));
        }
        Ok(bh)
    };
    let (mean, rows) = match source {
        "black_hole_centroid" | "black_hole_centroid_centred" => {
            let bh = need_black_holes()?;
            let mut members = bh
                .id
                .iter()
                .enumerate()
                .filter(|(_, &b)| b != 0)
                .map(|(i, _)| i);
            let (c, n) = mean_of(&mut members, &mut row);
            if source == "black_hole_centroid" {
                (c, n)
            } else {
                let (mu, _) = mean_of(&mut (0..m.rows), &mut row);
                (c.iter().zip(&mu).map(|(a, b)| a - b).collect(), n)
            }
        }
        "largest_black_hole" => {
            let bh = need_black_holes()?;
            mean_of(&mut std::iter::once(bh.members[0][0] as usize), &mut row)
        }
        "mask_centroid" => {
            if p.optional_inputs("dead").is_empty() {
                return Err(p.error(
                    "`source: mask_centroid` needs input `dead` (the `masks` output of \
                     `w.dead_sets`) and param `mask`",
                ));
            }
            let mask_name = p.string("mask")?;
            let mask = load_mask(p, "dead", &mask_name, m.rows)?;
            let mut members = mask.iter().enumerate().filter(|(_, &d)| d).map(|(i, _)| i);
            let (c, n) = mean_of(&mut members, &mut row);
            if n == 0 {
                return Err(p.error(format!(
                    "mask `{mask_name}` of input `dead` selects no tokens; there is no centroid"
                )));
            }
            (c, n)
        }
        other => unreachable!("undeclared source {other}"),
    };
    Ok((mean.iter().map(|&v| v as f32).collect(), rows))
}
