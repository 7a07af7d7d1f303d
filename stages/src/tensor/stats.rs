//! The arithmetic of `tensor.summary`: statistics of one tensor computed from its raw
//! little-endian bytes, in f64, single-threaded and in a fixed order (so the same bytes always
//! give the same numbers, bit for bit).
//!
//! Supported element types: F32, F16, BF16 (decoded with `half`) and F64. Definitions:
//! - `mean`, `std` (population, i.e. divided by n, two-pass), `min`, `max` are over the *finite*
//!   values; NaNs and infinities are counted in `nan`/`inf` instead. All four are `null` when no
//!   value is finite.
//! - The tensor is viewed as 2-D: `rows` = the first dimension (1 for a scalar), each row the
//!   product of the remaining dimensions. `row_norm` is the mean/min/max of the rows' L2 norms,
//!   over rows whose norm is finite (`null` when there is none).
//! - `distinct_rows` counts distinct rows by their raw bytes (a hash map of byte slices; the largest
//!   count is `largest_identical_group`), never
//!   by float comparison: `0.0` and `-0.0` differ, identical NaN payloads are equal.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

/// Statistics of one tensor, in the order they appear in the JSON output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TensorStats {
    pub(crate) name: String,
    pub(crate) dtype: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) elements: u64,
    pub(crate) mean: Option<f64>,
    pub(crate) std: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) nan: u64,
    pub(crate) inf: u64,
    pub(crate) rows: u64,
    pub(crate) row_length: u64,
    pub(crate) row_norm: NormStats,
    pub(crate) distinct_rows: u64,
    /// Rows in the most populated group of bit-identical rows (the largest "black hole").
    pub(crate) largest_identical_group: u64,
}

/// Mean, min and max of the per-row L2 norms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NormStats {
    pub(crate) mean: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

/// How to turn `width` little-endian bytes into an f64.
#[derive(Clone, Copy)]
enum Decode {
    F64,
    F32,
    F16,
    BF16,
}

impl Decode {
    fn of(dtype: Dtype) -> Option<Decode> {
        match dtype {
            Dtype::F64 => Some(Decode::F64),
            Dtype::F32 => Some(Decode::F32),
            Dtype::F16 => Some(Decode::F16),
            Dtype::BF16 => Some(Decode::BF16),
            _ => None,
        }
    }

    fn width(self) -> usize {
        match self {
            Decode::F64 => 8,
            Decode::F32 => 4,
            Decode::F16 | Decode::BF16 => 2,
        }
    }

    /// Calls `f` with every value of `bytes`, in order.
    fn for_each(self, bytes: &[u8], mut f: impl FnMut(f64)) {
        match self {
            Decode::F64 => bytes
                .chunks_exact(8)
                .for_each(|c| f(f64::from_le_bytes(c.try_into().expect("8 bytes")))),
            Decode::F32 => bytes
                .chunks_exact(4)
                .for_each(|c| f(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)),
            Decode::F16 => bytes
                .chunks_exact(2)
                .for_each(|c| f(half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())),
            Decode::BF16 => bytes
                .chunks_exact(2)
                .for_each(|c| f(half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())),
        }
    }
}

/// The element types [`tensor_stats`] accepts, for error messages.
pub(crate) const SUPPORTED: &str = "F32, F16, BF16, F64";

/// Statistics of `view`, or an error naming the unsupported dtype.
pub(crate) fn tensor_stats(name: &str, view: &TensorView<'_>) -> Result<TensorStats, String> {
    let decode = Decode::of(view.dtype()).ok_or_else(|| {
        format!(
            "dtype {} is not supported (supported: {SUPPORTED})",
            view.dtype()
        )
    })?;
    Ok(stats_of(
        name,
        view.dtype(),
        view.shape(),
        view.data(),
        decode,
    ))
}

fn stats_of(name: &str, dtype: Dtype, shape: &[usize], data: &[u8], decode: Decode) -> TensorStats {
    let width = decode.width();
    let elements = data.len() / width;
    debug_assert_eq!(elements, shape.iter().product::<usize>());

    // Pass 1: counts, sum, min, max of finite values.
    let (mut finite, mut nan, mut inf) = (0u64, 0u64, 0u64);
    let mut sum = 0.0f64;
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    decode.for_each(data, |x| {
        if x.is_finite() {
            finite += 1;
            sum += x;
            min = min.min(x);
            max = max.max(x);
        } else if x.is_nan() {
            nan += 1;
        } else {
            inf += 1;
        }
    });
    let mean = (finite > 0).then(|| sum / finite as f64);

    // Pass 2: population variance around the mean (two-pass: no cancellation).
    let std = mean.map(|m| {
        let mut ss = 0.0f64;
        decode.for_each(data, |x| {
            if x.is_finite() {
                ss += (x - m) * (x - m);
            }
        });
        (ss / finite as f64).sqrt()
    });

    // Rows: first dimension x product of the rest.
    let rows = shape.first().copied().unwrap_or(1);
    let row_length = elements.checked_div(rows).unwrap_or(0);
    let row_bytes = row_length * width;
    let (mut norm_n, mut norm_sum) = (0u64, 0.0f64);
    let (mut norm_min, mut norm_max) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut distinct: HashMap<&[u8], u64> = HashMap::new();
    for r in 0..rows {
        let row = &data[r * row_bytes..(r + 1) * row_bytes];
        *distinct.entry(row).or_insert(0) += 1;
        let mut sq = 0.0f64;
        decode.for_each(row, |x| sq += x * x);
        let norm = sq.sqrt();
        if norm.is_finite() {
            norm_n += 1;
            norm_sum += norm;
            norm_min = norm_min.min(norm);
            norm_max = norm_max.max(norm);
        }
    }

    TensorStats {
        name: name.to_string(),
        dtype: dtype.to_string(),
        shape: shape.to_vec(),
        elements: elements as u64,
        mean,
        std,
        min: (finite > 0).then_some(min),
        max: (finite > 0).then_some(max),
        nan,
        inf,
        rows: rows as u64,
        row_length: row_length as u64,
        row_norm: NormStats {
            mean: (norm_n > 0).then(|| norm_sum / norm_n as f64),
            min: (norm_n > 0).then_some(norm_min),
            max: (norm_n > 0).then_some(norm_max),
        },
        distinct_rows: distinct.len() as u64,
        largest_identical_group: distinct.values().copied().max().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn stats(shape: &[usize], v: &[f32]) -> TensorStats {
        let b = f32_bytes(v);
        let view = TensorView::new(Dtype::F32, shape.to_vec(), &b).unwrap();
        tensor_stats("t", &view).unwrap()
    }

    #[test]
    fn basic_moments_and_row_norms() {
        let s = stats(&[2, 2], &[3.0, 4.0, 0.0, -1.0]);
        assert_eq!(s.elements, 4);
        assert_eq!(s.mean, Some(1.5));
        // population variance: (2.25 + 6.25 + 2.25 + 6.25) / 4 = 4.25
        assert_eq!(s.std, Some(4.25f64.sqrt()));
        assert_eq!((s.min, s.max), (Some(-1.0), Some(4.0)));
        assert_eq!((s.rows, s.row_length), (2, 2));
        assert_eq!(
            s.row_norm,
            NormStats {
                mean: Some(3.0),
                min: Some(1.0),
                max: Some(5.0)
            }
        );
        assert_eq!(s.distinct_rows, 2);
    }

    #[test]
    fn distinct_rows_compare_bytes_not_floats() {
        // rows 0 and 2 are byte-identical; row 1 equals row 0 as floats (-0.0 == 0.0) but not
        // as bytes; row 3 holds a NaN and appears twice (rows 3 and 4).
        let nan = f32::from_bits(0x7fc0_0001);
        let s = stats(
            &[5, 2],
            &[0.0, 1.0, -0.0, 1.0, 0.0, 1.0, nan, 2.0, nan, 2.0],
        );
        assert_eq!(s.distinct_rows, 3);
        assert_eq!(s.largest_identical_group, 2);
        assert_eq!((s.nan, s.inf), (2, 0));
        assert_eq!((s.min, s.max), (Some(0.0), Some(2.0)));
        // the NaN rows have a NaN norm and are left out of the norm statistics
        assert_eq!(s.row_norm.max, Some(1.0));
    }

    #[test]
    fn higher_rank_tensors_are_rows_times_the_rest() {
        let v: Vec<f32> = (0..24).map(|i| (i % 6) as f32).collect();
        let s = stats(&[4, 2, 3], &v);
        assert_eq!((s.rows, s.row_length), (4, 6));
        assert_eq!(s.distinct_rows, 1);
        let scalar = stats(&[], &[7.0]);
        assert_eq!(
            (scalar.rows, scalar.row_length, scalar.distinct_rows),
            (1, 1, 1)
        );
        assert_eq!(scalar.std, Some(0.0));
        let empty = stats(&[0, 3], &[]);
        assert_eq!(
            (empty.rows, empty.distinct_rows, empty.mean, empty.min),
            (0, 0, None, None)
        );
        let no_cols = stats(&[3, 0], &[]);
        assert_eq!(
            (no_cols.rows, no_cols.row_length, no_cols.distinct_rows),
            (3, 0, 1)
        );
    }

    #[test]
    fn infinities_are_counted_not_averaged() {
        let s = stats(&[1, 3], &[f32::INFINITY, 1.0, f32::NEG_INFINITY]);
        assert_eq!(
            (s.inf, s.nan, s.mean, s.min, s.max),
            (2, 0, Some(1.0), Some(1.0), Some(1.0))
        );
        assert_eq!(s.row_norm.mean, None);
    }

    #[test]
    fn half_types_decode_exactly() {
        let vals = [1.5f32, -2.0, 0.099_609_375, 65504.0];
        let bf: Vec<u8> = vals
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::BF16, vec![4], &bf).unwrap();
        let s = tensor_stats("b", &view).unwrap();
        assert_eq!(s.dtype, "BF16");
        assert_eq!(s.min, Some(-2.0));
        assert_eq!(s.max, Some(half::bf16::from_f32(65504.0).to_f64()));
        let h: Vec<u8> = vals
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F16, vec![2, 2], &h).unwrap();
        let s = tensor_stats("h", &view).unwrap();
        assert_eq!((s.min, s.max), (Some(-2.0), Some(65504.0)));
        let d: Vec<u8> = [0.1f64, 0.2].iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F64, vec![2], &d).unwrap();
        assert_eq!(tensor_stats("d", &view).unwrap().max, Some(0.2));
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        let b = [0u8; 8];
        let view = TensorView::new(Dtype::I32, vec![2], &b).unwrap();
        let e = tensor_stats("i", &view).unwrap_err();
        assert!(e.contains("I32") && e.contains("BF16"), "{e}");
    }
}
