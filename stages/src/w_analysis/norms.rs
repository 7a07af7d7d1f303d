//! `w.norms` (science spec S03): the L2 norm of every row of W, histograms, summary statistics and
//! "the spike".
//!
//! Each row's norm is the square root of the sum of squares of its exact f64 up-cast (BF16, F16 or
//! F32 input), summed in f64 in eight interleaved partial sums (column j goes to sum j mod 8;
//! the eight are added pairwise at the end: a fixed order that lets the loop pipeline), then
//! rounded to f32; rows run in parallel but each row is summed by one thread, so the bytes never
//! depend on the thread count. Everything after
//! that (statistics, histograms, the spike) is computed from the stored f32 norms, as f64.
//! Non-finite norms (rows with inf/NaN) are counted in `nonfinite` and left out of the rest.
//!
//! Outputs:
//! - `norms` (safetensors): `norms` (F32) [V].
//! - `histogram` (CSV `histogram,bin,lower,upper,count`): `full` = `bins` equal bins over
//!   [min, max] of the norms (numpy's rule: the last bin includes its upper edge; when all norms are
//!   equal the range is [min − 0.5, max + 0.5]), then `zoom` = `zoom_bins` bins over
//!   [`zoom_min`, `zoom_max`] (S03: 100 bins, then 1,000 on [0.36, 0.38]); norms outside a range are
//!   not counted in it. Edges are lo + (hi − lo)·i/bins in f64.
//! - `summary` (JSON, see [`Summary`]): count, mean, population std, min, max, median (mean of the
//!   two middle values for an even count), and the spike. S03 describes the spike only in words
//!   (a narrow overdensity on the low edge at ≈0.371, made by the black-hole rows); this stage
//!   makes it concrete as (a) `spike.value`: the norm shared bit-for-bit by the most rows (ties:
//!   the smaller value), with `spike.rows` and `spike.percentile` = 100 · (rows with a smaller
//!   norm) / count (S03 prints "1.0th"), and (b) `zoom_peak`: the fullest zoom bin (ties: the
//!   lower bin).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;

use azimuth_stage_api::specs::w_analysis::NORMS as SPEC;

use crate::io::{write_safetensors, TensorOut};
use crate::params::Params;
use crate::w_analysis::{load_w, with_threads};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize)]
struct Summary {
    format: u32,
    tensor: String,
    dtype: String,
    rows: usize,
    cols: usize,
    /// Rows with a finite norm (the population of every statistic below).
    count: usize,
    nonfinite: usize,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    median: Option<f64>,
    spike: Option<Spike>,
    zoom_peak: Option<Bin>,
}

#[derive(Debug, Serialize)]
struct Spike {
    value: f64,
    rows: usize,
    percentile: f64,
}

#[derive(Debug, Serialize, Clone, Copy)]
struct Bin {
    lower: f64,
    upper: f64,
    count: u64,
}

/// L2 norm of each row of `data` (row-major, `cols` elements of `dtype` per row), see module doc.
pub(crate) fn row_norms(data: &[u8], dtype: Dtype, cols: usize) -> Vec<f32> {
    let width = dtype.bitsize() / 8;
    let rows = data.par_chunks_exact(cols * width).with_min_len(64);
    match dtype {
        Dtype::BF16 => rows
            .map(|r| {
                norm_of(
                    r,
                    |c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64,
                    2,
                )
            })
            .collect(),
        Dtype::F16 => rows
            .map(|r| {
                norm_of(
                    r,
                    |c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64(),
                    2,
                )
            })
            .collect(),
        Dtype::F32 => rows
            .map(|r| {
                norm_of(
                    r,
                    |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
                    4,
                )
            })
            .collect(),
        _ => unreachable!("checked by the caller"),
    }
}

/// √(Σ x²) of one row as f32, with the eight-way interleaved f64 sum of the module doc.
#[inline(always)]
fn norm_of(row: &[u8], decode: impl Fn(&[u8]) -> f64, width: usize) -> f32 {
    let mut acc = [0.0f64; 8];
    let block = 8 * width;
    let mut blocks = row.chunks_exact(block);
    for b in &mut blocks {
        for (k, a) in acc.iter_mut().enumerate() {
            let x = decode(&b[k * width..(k + 1) * width]);
            *a += x * x;
        }
    }
    for (k, c) in blocks.remainder().chunks_exact(width).enumerate() {
        let x = decode(c);
        acc[k] += x * x;
    }
    let s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    s.sqrt() as f32
}

fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<Bin> {
    let mut counts = vec![0u64; bins];
    let width = hi - lo;
    for &x in values {
        if x < lo || x > hi {
            continue;
        }
        let i = (((x - lo) / width) * bins as f64).floor() as usize;
        counts[i.min(bins - 1)] += 1;
    }
    let edge = |i: usize| lo + width * i as f64 / bins as f64;
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| Bin {
            lower: edge(i),
            upper: if i + 1 == bins { hi } else { edge(i + 1) },
            count,
        })
        .collect()
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let bins = p.int("bins")? as usize;
    let zoom_bins = p.int("zoom_bins")? as usize;
    let (zoom_min, zoom_max) = (p.float("zoom_min")?, p.float("zoom_max")?);
    if zoom_max <= zoom_min {
        return Err(p.error(format!(
            "param `zoom_max` ({zoom_max}) must be greater than `zoom_min` ({zoom_min})"
        )));
    }
    let (norms_out, hist_out, summary_out) = (
        p.output("norms")?,
        p.output("histogram")?,
        p.output("summary")?,
    );

    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        &[Dtype::BF16, Dtype::F16, Dtype::F32],
        "norms are computed from floats",
    )?;
    let norms = with_threads(&p, ctx.threads, || row_norms(m.data, m.dtype, m.cols))?;

    let bytes: Vec<u8> = norms.iter().flat_map(|x| x.to_le_bytes()).collect();
    let meta: BTreeMap<String, String> = [("tensor".to_string(), name.clone())].into();
    write_safetensors(
        norms_out,
        &[TensorOut {
            name: "norms",
            dtype: Dtype::F32,
            shape: vec![m.rows],
            data: &bytes,
        }],
        &meta,
    )
    .map_err(|e| p.error(e))?;

    let mut finite: Vec<f64> = norms
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| x as f64)
        .collect();
    let count = finite.len();
    finite.sort_by(f64::total_cmp);
    let (mut csv, mut summary) = (
        String::from("histogram,bin,lower,upper,count\n"),
        Summary {
            format: FORMAT,
            tensor: name,
            dtype: m.dtype.to_string(),
            rows: m.rows,
            cols: m.cols,
            count,
            nonfinite: m.rows - count,
            mean: None,
            std: None,
            min: None,
            max: None,
            median: None,
            spike: None,
            zoom_peak: None,
        },
    );
    if count > 0 {
        let mean = finite.iter().sum::<f64>() / count as f64;
        let var = finite.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / count as f64;
        let (min, max) = (finite[0], finite[count - 1]);
        let median = if count % 2 == 1 {
            finite[count / 2]
        } else {
            (finite[count / 2 - 1] + finite[count / 2]) / 2.0
        };
        // the spike: most repeated exact norm value (ties: smaller value)
        let mut reps: HashMap<u64, usize> = HashMap::new();
        for x in &finite {
            *reps.entry(x.to_bits()).or_insert(0) += 1;
        }
        let (value, rows) = reps
            .iter()
            .map(|(&b, &n)| (f64::from_bits(b), n))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.total_cmp(&a.0)))
            .expect("count > 0");
        let below = finite.partition_point(|&x| x < value);
        summary.mean = Some(mean);
        summary.std = Some(var.sqrt());
        summary.min = Some(min);
        summary.max = Some(max);
        summary.median = Some(median);
        summary.spike = Some(Spike {
            value,
            rows,
            percentile: 100.0 * below as f64 / count as f64,
        });

        let (lo, hi) = if min == max {
            (min - 0.5, max + 0.5)
        } else {
            (min, max)
        };
        for (i, b) in histogram(&finite, lo, hi, bins).iter().enumerate() {
            let _ = writeln!(csv, "full,{i},{},{},{}", b.lower, b.upper, b.count);
        }
        let zoom = histogram(&finite, zoom_min, zoom_max, zoom_bins);
        for (i, b) in zoom.iter().enumerate() {
            let _ = writeln!(csv, "zoom,{i},{},{},{}", b.lower, b.upper, b.count);
        }
        summary.zoom_peak = zoom
            .iter()
            .copied()
            .filter(|b| b.count > 0)
            .reduce(|best, b| if b.count > best.count { b } else { best });
    }
    p.write_output(hist_out, csv.as_bytes())?;
    p.write_json(summary_out, &summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_follows_numpy_edges() {
        let h = histogram(&[0.0, 0.5, 1.0, 1.0, 2.0], 0.0, 1.0, 2);
        assert_eq!(h.iter().map(|b| b.count).collect::<Vec<_>>(), [1, 3]);
        assert_eq!((h[0].lower, h[0].upper, h[1].upper), (0.0, 0.5, 1.0));
    }

    #[test]
    fn norms_are_exact_for_small_integers_in_all_dtypes() {
        let v = [3.0f32, 4.0, 0.0, 12.0];
        let bf: Vec<u8> = v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let f16: Vec<u8> = v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let f32b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        for (d, b) in [(Dtype::BF16, &bf), (Dtype::F16, &f16), (Dtype::F32, &f32b)] {
            assert_eq!(row_norms(b, d, 2), vec![5.0, 12.0]);
        }
    }
}
