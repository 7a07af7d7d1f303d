//! The float lattice of a matrix's element type, for BF16 and F32 alike: one [`Format`] value
//! answers "what is the exponent field / sign-aware ordinal key / ULP / exact value of this bit
//! pattern", so the lattice analyses (dead sets, topology, exponents, quantization: S05–S09) run on
//! bf16 W (Qwen) and on f32 W (MiniLM, dequantized GGUF) with one code path.
//!
//! Patterns are carried as `u32` (a bf16 pattern in the low 16 bits). Conventions are those of
//! [`crate::bf16`] (S02, V4.3–V4.5), generalised: E is the stored 8-bit exponent (both formats
//! share it, bias 127), ULP = 2^(max(E,1) − 127 − mantissa_bits), the ordinal key is b for
//! non-negative patterns and −(b with the sign cleared) for negative ones, so ±0 share key 0 and
//! adjacent finite values differ by exactly 1. For BF16 every function agrees with `bf16::*`
//! (a test checks it on all 65,536 patterns).

use safetensors::tensor::Dtype;

/// A float element format whose lattice the analyses understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// bfloat16: 1 sign, 8 exponent, 7 mantissa bits.
    Bf16,
    /// IEEE binary32: 1 sign, 8 exponent, 23 mantissa bits.
    F32,
}

impl Format {
    /// The format of a safetensors dtype, if it is one of ours.
    pub fn of(dtype: Dtype) -> Option<Format> {
        match dtype {
            Dtype::BF16 => Some(Format::Bf16),
            Dtype::F32 => Some(Format::F32),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Format::Bf16 => 2,
            Format::F32 => 4,
        }
    }

    /// Explicit mantissa bits.
    pub fn mantissa_bits(self) -> u32 {
        match self {
            Format::Bf16 => 7,
            Format::F32 => 23,
        }
    }

    fn sign_bit(self) -> u32 {
        match self {
            Format::Bf16 => 0x8000,
            Format::F32 => 0x8000_0000,
        }
    }

    /// Reads element `j` of little-endian `bytes` as a bit pattern.
    #[inline(always)]
    pub fn pattern(self, bytes: &[u8], j: usize) -> u32 {
        match self {
            Format::Bf16 => u16::from_le_bytes([bytes[2 * j], bytes[2 * j + 1]]) as u32,
            Format::F32 => u32::from_le_bytes([
                bytes[4 * j],
                bytes[4 * j + 1],
                bytes[4 * j + 2],
                bytes[4 * j + 3],
            ]),
        }
    }

    /// All patterns of a little-endian row.
    pub fn patterns(self, bytes: &[u8]) -> Vec<u32> {
        (0..bytes.len() / self.bytes())
            .map(|j| self.pattern(bytes, j))
            .collect()
    }

    /// The exact f32 value (the bf16 up-cast is exact).
    #[inline(always)]
    pub fn to_f32(self, b: u32) -> f32 {
        match self {
            Format::Bf16 => f32::from_bits(b << 16),
            Format::F32 => f32::from_bits(b),
        }
    }

    /// The exact value as f64.
    #[inline(always)]
    pub fn to_f64(self, b: u32) -> f64 {
        self.to_f32(b) as f64
    }

    /// Stored (biased) 8-bit exponent field.
    #[inline(always)]
    pub fn exponent(self, b: u32) -> u8 {
        ((b >> self.mantissa_bits()) & 0xFF) as u8
    }

    /// Whether the pattern is NaN.
    pub fn is_nan(self, b: u32) -> bool {
        self.to_f32(b).is_nan()
    }

    /// ULP (grid spacing) at the value: 2^(max(E,1) − 127 − mantissa_bits). `None` for ±∞/NaN.
    pub fn ulp(self, b: u32) -> Option<f64> {
        let e = self.exponent(b) as i32;
        (e != 0xFF).then(|| pow2(e.max(1) - 127 - self.mantissa_bits() as i32))
    }

    /// Lattice coordinate x / ULP(x) (S02; local, only comparable within one sign and exponent).
    pub fn lattice_coordinate(self, b: u32) -> Option<f64> {
        self.ulp(b).map(|u| self.to_f64(b) / u)
    }

    /// Sign-aware ordinal (bit-space) key, monotone in the value over non-NaN patterns.
    #[inline(always)]
    pub fn ordinal(self, b: u32) -> i64 {
        let s = self.sign_bit();
        if b & s != 0 {
            -((b & !s) as i64)
        } else {
            b as i64
        }
    }

    /// Representable steps between two values: |ordinal(a) − ordinal(b)|.
    #[inline(always)]
    pub fn ordinal_distance(self, a: u32, b: u32) -> u64 {
        self.ordinal(a).abs_diff(self.ordinal(b))
    }
}

/// 2^k as f64, exact for −1022 ≤ k ≤ 1023.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Folds `op` over the element patterns of two little-endian rows, with the format dispatched
/// once outside the loop (so the loop is tight enough for the compiler to vectorise).
#[inline(always)]
pub fn fold_pairs<A>(f: Format, a: &[u8], b: &[u8], init: A, op: impl Fn(A, u32, u32) -> A) -> A {
    assert_eq!(a.len(), b.len(), "rows of different lengths");
    match f {
        Format::Bf16 => a
            .chunks_exact(2)
            .zip(b.chunks_exact(2))
            .fold(init, |acc, (x, y)| {
                op(
                    acc,
                    u16::from_le_bytes([x[0], x[1]]) as u32,
                    u16::from_le_bytes([y[0], y[1]]) as u32,
                )
            }),
        Format::F32 => a
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .fold(init, |acc, (x, y)| {
                op(
                    acc,
                    u32::from_le_bytes([x[0], x[1], x[2], x[3]]),
                    u32::from_le_bytes([y[0], y[1], y[2], y[3]]),
                )
            }),
    }
}

/// L∞ of two little-endian rows in bit space (max ordinal distance over positions).
pub fn linf_ordinal(f: Format, a: &[u8], b: &[u8]) -> u64 {
    fold_pairs(f, a, b, 0u64, |m, x, y| m.max(f.ordinal_distance(x, y)))
}

/// L1 of two little-endian rows in bit space (sum of ordinal distances).
pub fn l1_ordinal(f: Format, a: &[u8], b: &[u8]) -> u64 {
    fold_pairs(f, a, b, 0u64, |s, x, y| s + f.ordinal_distance(x, y))
}

/// Exponent-space distance of two rows (S02): max |E(a_i) − E(b_i)|.
pub fn exponent_distance(f: Format, a: &[u8], b: &[u8]) -> u32 {
    let shift = f.mantissa_bits();
    fold_pairs(f, a, b, 0u32, |m, x, y| {
        m.max(((x >> shift) & 0xFF).abs_diff((y >> shift) & 0xFF))
    })
}

/// Σ (value_i − c_i)² of a little-endian row against `c`, in f64 (exact products of the exact
/// element values, summed in index order).
pub fn squared_distance_f64(f: Format, row: &[u8], c: &[f64]) -> f64 {
    match f {
        Format::Bf16 => row.chunks_exact(2).zip(c).fold(0.0, |s, (x, &cj)| {
            let d = f32::from_bits((u16::from_le_bytes([x[0], x[1]]) as u32) << 16) as f64 - cj;
            s + d * d
        }),
        Format::F32 => row.chunks_exact(4).zip(c).fold(0.0, |s, (x, &cj)| {
            let d = f32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64 - cj;
            s + d * d
        }),
    }
}

/// Appends the exact f32 values of a little-endian row to `out` (cleared first).
pub fn row_f32(f: Format, row: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend((0..row.len() / f.bytes()).map(|j| f.to_f32(f.pattern(row, j))));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16;
    use proptest::prelude::*;

    #[test]
    fn bf16_format_agrees_with_the_bf16_module_on_every_pattern() {
        let f = Format::Bf16;
        for b in 0..=u16::MAX {
            let w = b as u32;
            assert_eq!(f.exponent(w), bf16::exponent(b), "{b:#06x}");
            assert_eq!(f.ordinal(w), bf16::ordinal(b) as i64, "{b:#06x}");
            assert_eq!(f.ulp(w), bf16::ulp(b), "{b:#06x}");
            assert_eq!(f.to_f32(w).to_bits(), bf16::to_f32(b).to_bits(), "{b:#06x}");
        }
    }

    #[test]
    fn f32_ulp_and_fields_match_ieee() {
        let f = Format::F32;
        for x in [1.0f32, 0.1, 0.01, 3.5, -2.0, 1e-30] {
            let b = x.to_bits();
            let next = f32::from_bits(x.abs().to_bits() + 1);
            assert_eq!(f.ulp(b).unwrap(), (next - x.abs()) as f64, "{x}");
            assert_eq!(f.exponent(b) as u32, (x.to_bits() >> 23) & 0xFF, "{x}");
        }
        assert_eq!(f.ulp(0), Some(pow2(-149)));
        assert_eq!(f.ulp(f32::INFINITY.to_bits()), None);
    }

    proptest! {
        #[test]
        fn f32_ordinal_is_monotone_and_counts_steps(a in any::<f32>(), b in any::<f32>()) {
            prop_assume!(a.is_finite() && b.is_finite());
            let f = Format::F32;
            let (oa, ob) = (f.ordinal(a.to_bits()), f.ordinal(b.to_bits()));
            if a < b {
                prop_assert!(oa < ob);
            } else if a == b {
                prop_assert_eq!(oa, ob);
            } else {
                prop_assert!(oa > ob);
            }
            // the next value up from a is exactly one ordinal step away
            let up = if a.to_bits() == 0x8000_0000 {
                f32::from_bits(1)
            } else if a >= 0.0 {
                f32::from_bits(a.to_bits() + 1)
            } else {
                f32::from_bits(a.to_bits() - 1)
            };
            if up.is_finite() {
                prop_assert_eq!(f.ordinal(up.to_bits()), oa + 1);
            }
        }

        #[test]
        fn row_distances_are_symmetric_and_zero_on_self(v in proptest::collection::vec(any::<u16>(), 1..16)) {
            let a: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let mut w = v.clone();
            w.reverse();
            let b: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
            let f = Format::Bf16;
            prop_assert_eq!(linf_ordinal(f, &a, &a), 0);
            prop_assert_eq!(l1_ordinal(f, &a, &b), l1_ordinal(f, &b, &a));
            prop_assert_eq!(exponent_distance(f, &a, &b), exponent_distance(f, &b, &a));
            prop_assert!(linf_ordinal(f, &a, &b) <= l1_ordinal(f, &a, &b));
        }
    }
}
