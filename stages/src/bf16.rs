//! Shared bf16 primitives (science spec S02): bit fields of a 16-bit bf16 pattern, value <-> bits,
//! the ULP (grid spacing) at a value, the lattice coordinate, the sign-aware ordinal ("bit-space")
//! key and distances built on it, and [`identical_rows`], the census of bit-identical rows that
//! black holes (S04) and every later census (S44) rest on.
//!
//! Conventions (S02, V4.3–V4.5): sign s = b>>15, stored exponent E = (b>>7)&0xFF, mantissa
//! M = b&0x7F. ULP = 2^(E−134) for E ≥ 1 and 2^(−133) for E = 0 (the originals treat E = 0 as
//! E = 1); it depends only on |x|. The ordinal key maps a non-negative pattern b to b and a negative
//! one to −(b & 0x7FFF), so +0 and −0 share key 0 (they are the same value) and any two adjacent
//! representable finite values differ by exactly 1, across exponent boundaries and across zero.
//! Infinities sit one step beyond the largest finite value; NaN patterns get keys beyond the
//! infinities and carry no order meaning (callers that may see NaN must check [`is_nan`]).
//! Identity questions are decided on raw patterns/bytes, never on floats.

use rayon::prelude::*;

/// Sign bit (0 or 1) of a bf16 pattern.
pub fn sign(b: u16) -> u16 {
    b >> 15
}

/// Stored (biased) 8-bit exponent field E of a bf16 pattern.
pub fn exponent(b: u16) -> u8 {
    ((b >> 7) & 0xFF) as u8
}

/// 7-bit mantissa field M of a bf16 pattern.
pub fn mantissa(b: u16) -> u8 {
    (b & 0x7F) as u8
}

/// The exact f32 value of a bf16 pattern (the up-cast is exact).
pub fn to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The exact f64 value of a bf16 pattern.
pub fn to_f64(b: u16) -> f64 {
    to_f32(b) as f64
}

/// The bf16 pattern nearest to `x` (round to nearest, ties to even; NaN stays NaN).
pub fn from_f32(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// Whether the pattern is NaN (E = 255, M ≠ 0).
pub fn is_nan(b: u16) -> bool {
    exponent(b) == 0xFF && mantissa(b) != 0
}

/// Whether the pattern is a finite value (E < 255).
pub fn is_finite(b: u16) -> bool {
    exponent(b) != 0xFF
}

/// 2^k as f64 for the exponent range used here (−140 ≤ k ≤ 130), exact.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// ULP (spacing of the bf16 grid) at the value with pattern `b`: 2^(max(E,1)−134). `None` for
/// infinities and NaN.
pub fn ulp(b: u16) -> Option<f64> {
    let e = exponent(b) as i32;
    (e != 0xFF).then(|| pow2(e.max(1) - 134))
}

/// Lattice coordinate x / ULP(x): ±(128 + M) for normal values, ±M for subnormals. A local
/// coordinate, only comparable between values that share sign and exponent (S02). `None` for
/// infinities and NaN.
pub fn lattice_coordinate(b: u16) -> Option<f64> {
    ulp(b).map(|u| to_f64(b) / u)
}

/// Sign-aware ordinal (bit-space) key: b for non-negative patterns, −(b & 0x7FFF) for negative
/// ones. Monotone in the value over all non-NaN patterns; ±0 both map to 0.
pub fn ordinal(b: u16) -> i32 {
    if b & 0x8000 != 0 {
        -((b & 0x7FFF) as i32)
    } else {
        b as i32
    }
}

/// The pattern with ordinal key `k` (−0x7FFF ≤ k ≤ 0x7FFF); key 0 gives +0. Panics outside that
/// range.
pub fn from_ordinal(k: i32) -> u16 {
    assert!((-0x7FFF..=0x7FFF).contains(&k), "ordinal {k} out of range");
    if k < 0 {
        0x8000 | (-k) as u16
    } else {
        k as u16
    }
}

/// Number of representable steps between two values: |ordinal(a) − ordinal(b)|.
pub fn ordinal_distance(a: u16, b: u16) -> u32 {
    ordinal(a).abs_diff(ordinal(b))
}

/// The next representable value above `b` (towards +∞); `None` at +∞ or for NaN.
pub fn next_up(b: u16) -> Option<u16> {
    if is_nan(b) || b == 0x7F80 {
        return None;
    }
    Some(from_ordinal(ordinal(b) + 1))
}

/// The next representable value below `b` (towards −∞); `None` at −∞ or for NaN.
pub fn next_down(b: u16) -> Option<u16> {
    if is_nan(b) || b == 0xFF80 {
        return None;
    }
    Some(from_ordinal(ordinal(b) - 1))
}

/// L∞ distance of two rows in ULPs, measured in bit space: max over positions of
/// [`ordinal_distance`]. Panics if the lengths differ.
pub fn linf_ulps(a: &[u16], b: &[u16]) -> u32 {
    assert_eq!(a.len(), b.len(), "rows of different lengths");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ordinal_distance(x, y))
        .max()
        .unwrap_or(0)
}

/// [`linf_ulps`] on rows given as little-endian bf16 bytes. Panics if the lengths differ or are odd.
pub fn linf_ulps_bytes(a: &[u8], b: &[u8]) -> u32 {
    assert!(
        a.len() == b.len() && a.len() % 2 == 0,
        "rows of different or odd byte lengths"
    );
    a.chunks_exact(2)
        .zip(b.chunks_exact(2))
        .map(|(x, y)| {
            ordinal_distance(
                u16::from_le_bytes([x[0], x[1]]),
                u16::from_le_bytes([y[0], y[1]]),
            )
        })
        .max()
        .unwrap_or(0)
}

/// Exponent-space distance of two rows (S02): max over positions of |E(a_i) − E(b_i)|.
pub fn exponent_distance(a: &[u16], b: &[u16]) -> u32 {
    assert_eq!(a.len(), b.len(), "rows of different lengths");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (exponent(x) as i32).abs_diff(exponent(y) as i32))
        .max()
        .unwrap_or(0)
}

/// Decodes little-endian bf16 bytes into patterns.
pub fn patterns(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The census of bit-identical rows of a row-major matrix: see [`identical_rows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowCensus {
    /// Number of rows.
    pub rows: usize,
    /// Number of distinct rows (by bytes).
    pub distinct: usize,
    /// Every group of ≥ 2 bit-identical rows, members ascending, groups ordered by (population
    /// descending, smallest member ascending): the canonical numbering of V4.2.
    pub groups: Vec<Vec<u32>>,
}

/// A fast 64-bit hash of a byte string (wyhash-style folded multiplies over 16-byte blocks, two
/// independent chains); only used to bucket rows, whose equality is then confirmed bytewise, so
/// collisions cost time, never correctness.
pub fn row_hash(bytes: &[u8]) -> u64 {
    row_hash_with(
        bytes,
        [
            0xa076_1d64_78bd_642f,
            0xe703_7ed1_a0b4_28db,
            0x8ebc_6af0_9c88_c6e3,
            0x5899_65cc_7537_4cc3,
        ],
    )
}

/// A 128-bit fingerprint of a byte string: [`row_hash`] and an independent second hash of the
/// same construction with other constants. For counting distinct rows where keeping every row to
/// compare bytes would cost too much memory (two different rows of a million share a
/// fingerprint with probability ≈ 10⁻²⁷).
pub fn row_fingerprint(bytes: &[u8]) -> u128 {
    let second = row_hash_with(
        bytes,
        [
            0x1d8e_4e27_c47d_124f,
            0x9c2f_a6e5_b4f3_3a17,
            0xd6e8_feb8_6659_fd93,
            0x3c6e_f372_fe94_f82b,
        ],
    );
    ((row_hash(bytes) as u128) << 64) | second as u128
}

fn row_hash_with(bytes: &[u8], seeds: [u64; 4]) -> u64 {
    let [s0, s1, s2, s3] = seeds;
    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let p = (a as u128) * (b as u128);
        (p as u64) ^ ((p >> 64) as u64)
    }
    #[inline(always)]
    fn word(c: &[u8]) -> u64 {
        u64::from_le_bytes(c.try_into().expect("8 bytes"))
    }
    let mut h0 = s0 ^ bytes.len() as u64;
    let mut h1 = s1;
    let mut blocks = bytes.chunks_exact(32);
    for c in &mut blocks {
        h0 = fold(word(&c[0..8]) ^ s1 ^ h0, word(&c[8..16]) ^ s2);
        h1 = fold(word(&c[16..24]) ^ s3 ^ h1, word(&c[24..32]) ^ s0);
    }
    let mut tail = [0u8; 32];
    let rest = blocks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    h0 = fold(word(&tail[0..8]) ^ s1 ^ h0, word(&tail[8..16]) ^ s2);
    h1 = fold(word(&tail[16..24]) ^ s3 ^ h1, word(&tail[24..32]) ^ s0);
    fold(h0 ^ s2, h1 ^ s3 ^ rest.len() as u64)
}

/// Groups the rows of `data` (row-major, `row_bytes` bytes per row) by their raw bytes.
///
/// Hashes every row in parallel (rayon, on the current pool), sorts the (hash, row) pairs, and
/// within each run of equal hashes splits the rows into byte-identical classes by comparing bytes
/// with the class's smallest row. Never compares floats: `+0.0` and `−0.0` rows differ, identical
/// NaN payloads are equal. Cost ≈ one read of `data` plus a sort of 16-byte pairs.
///
/// Panics if `row_bytes` is 0 or does not divide `data.len()`, or there are more than u32::MAX rows.
pub fn identical_rows(data: &[u8], row_bytes: usize) -> RowCensus {
    assert!(
        row_bytes > 0 && data.len() % row_bytes == 0,
        "data is not whole rows"
    );
    let rows = data.len() / row_bytes;
    assert!(rows <= u32::MAX as usize, "too many rows");
    let keyed: Vec<(u64, u32)> = data
        .par_chunks_exact(row_bytes)
        .with_min_len(256)
        .enumerate()
        .map(|(i, r)| (row_hash(r), i as u32))
        .collect();
    census_of_keyed(data, row_bytes, keyed)
}

/// The second half of [`identical_rows`]: sorts (hash, row) pairs and splits every run of equal
/// hashes into byte-identical classes. Correct for any keys (the hash is only a hint), which the
/// tests use to force collisions.
fn census_of_keyed(data: &[u8], row_bytes: usize, mut keyed: Vec<(u64, u32)>) -> RowCensus {
    let rows = keyed.len();
    keyed.par_sort_unstable();
    let row = |i: u32| &data[i as usize * row_bytes..(i as usize + 1) * row_bytes];
    let mut distinct = 0usize;
    let mut groups: Vec<Vec<u32>> = Vec::new();
    let mut start = 0;
    while start < keyed.len() {
        let hash = keyed[start].0;
        let mut end = start + 1;
        while end < keyed.len() && keyed[end].0 == hash {
            end += 1;
        }
        if end - start == 1 {
            distinct += 1;
        } else {
            // Members are ascending (the sort key ends with the row index); split into classes.
            let mut pending: Vec<u32> = keyed[start..end].iter().map(|&(_, i)| i).collect();
            while let Some(&first) = pending.first() {
                let rep = row(first);
                let (same, other): (Vec<u32>, Vec<u32>) = pending
                    .iter()
                    .copied()
                    .partition(|&i| i == first || row(i) == rep);
                distinct += 1;
                if same.len() > 1 {
                    groups.push(same);
                }
                pending = other;
            }
        }
        start = end;
    }
    groups.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    RowCensus {
        rows,
        distinct,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_finite() -> impl Iterator<Item = u16> {
        (0..=u16::MAX).filter(|&b| is_finite(b))
    }

    #[test]
    fn fields_and_values_match_the_spec_formula_for_all_patterns() {
        for b in all_finite() {
            let (s, e, m) = (sign(b) as i32, exponent(b) as i32, mantissa(b) as f64);
            let mag = if e == 0 {
                pow2(-126) * (m / 128.0)
            } else {
                pow2(e - 127) * (1.0 + m / 128.0)
            };
            let v = if s == 1 { -mag } else { mag };
            assert_eq!(to_f64(b), v, "pattern {b:#06x}");
            assert_eq!(to_f64(b).to_bits(), v.to_bits(), "sign of zero, {b:#06x}");
            assert_eq!(from_f32(to_f32(b)), b, "round trip {b:#06x}");
        }
        assert!(is_nan(0x7FC0) && !is_finite(0x7F80) && !is_nan(0x7F80));
        assert_eq!(
            (sign(0xBF80), exponent(0xBF80), mantissa(0xBF80)),
            (1, 127, 0)
        );
    }

    #[test]
    fn ulp_examples_from_the_spec() {
        let u = |x: f32| ulp(from_f32(x)).unwrap();
        assert_eq!(u(1.0), 7.8125e-3);
        assert!((u(0.1) - 4.8828e-4).abs() < 1e-8);
        assert!((u(0.01) - 6.1035e-5).abs() < 1e-9);
        assert!((u(0.001) - 7.6294e-6).abs() < 1e-10);
        assert_eq!(ulp(0x0000), Some(pow2(-133)));
        assert_eq!(ulp(0x8001), Some(pow2(-133)));
        assert_eq!(ulp(0x7F80), None);
        assert_eq!(lattice_coordinate(from_f32(1.0)), Some(128.0));
        assert_eq!(lattice_coordinate(from_f32(-1.9921875)), Some(-255.0));
    }

    #[test]
    fn ordinal_is_strictly_monotone_over_all_finite_values_exhaustively() {
        let mut finite: Vec<u16> = all_finite().filter(|&b| b != 0x8000).collect();
        finite.sort_by(|&a, &b| to_f32(a).partial_cmp(&to_f32(b)).unwrap());
        for w in finite.windows(2) {
            assert_eq!(
                ordinal(w[1]) - ordinal(w[0]),
                1,
                "{:#06x} -> {:#06x}",
                w[0],
                w[1]
            );
            assert_eq!(next_up(w[0]), Some(w[1]));
            assert_eq!(next_down(w[1]), Some(w[0]));
        }
        assert_eq!(ordinal(0x8000), ordinal(0x0000));
        assert_eq!(ordinal_distance(0x8001, 0x0001), 2);
        assert_eq!(next_up(0x7F7F), Some(0x7F80));
        assert_eq!(next_up(0x7F80), None);
        assert_eq!(next_down(0xFF80), None);
    }

    #[test]
    fn ordinal_round_trips_except_negative_zero() {
        for b in 0..=u16::MAX {
            if b == 0x8000 {
                assert_eq!(from_ordinal(ordinal(b)), 0x0000);
            } else {
                assert_eq!(from_ordinal(ordinal(b)), b);
            }
        }
    }

    #[test]
    fn ulp_is_the_step_to_the_next_magnitude_for_every_finite_pattern() {
        for b in all_finite() {
            let mag = b & 0x7FFF;
            if mag == 0x7F7F {
                continue; // the next magnitude is infinity
            }
            let up = next_up(mag).unwrap();
            assert_eq!(to_f64(up) - to_f64(mag), ulp(b).unwrap(), "{b:#06x}");
        }
    }

    proptest! {
        #[test]
        fn ordinal_order_matches_float_order(a in any::<u16>(), b in any::<u16>()) {
            prop_assume!(!is_nan(a) && !is_nan(b));
            let (x, y) = (to_f32(a), to_f32(b));
            prop_assert_eq!(x.partial_cmp(&y).unwrap(), ordinal(a).cmp(&ordinal(b)));
        }

        #[test]
        fn neighbour_is_at_ordinal_distance_one(b in any::<u16>()) {
            prop_assume!(is_finite(b) && b != 0x7F7F);
            let up = next_up(b).unwrap();
            prop_assert_eq!(ordinal_distance(b, up), 1);
            prop_assert!(to_f32(up) > to_f32(b));
        }

        #[test]
        fn f32_round_trip_rounds_to_nearest(x in -1.0e6f32..1.0e6f32) {
            let b = from_f32(x);
            let v = to_f32(b);
            prop_assert!((v as f64 - x as f64).abs() <= ulp(b).unwrap() / 2.0 * 1.0000001 + 1e-45);
            prop_assert_eq!(from_f32(v), b);
        }

        #[test]
        fn linf_is_max_of_ordinal_distances(a in proptest::collection::vec(any::<u16>(), 1..40),
                                             shift in 0u16..5) {
            let a: Vec<u16> = a.into_iter().map(|x| x & 0x3FFF).collect();
            let b: Vec<u16> = a.iter().map(|&x| x + shift).collect();
            prop_assert_eq!(linf_ulps(&a, &b), shift as u32);
            let ab: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
            let bb: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
            prop_assert_eq!(linf_ulps_bytes(&ab, &bb), shift as u32);
        }
    }

    #[test]
    fn identical_rows_groups_by_bytes() {
        // rows: 0=A 1=B 2=A 3=C 4=B 5=A, 6 = -0 variant of C (distinct), 7 = D
        let r = |v: &[f32]| {
            v.iter()
                .flat_map(|&x| from_f32(x).to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let (a, b, c) = (
            r(&[1.0, 2.0, 3.0]),
            r(&[1.0, 2.0, 3.5]),
            r(&[0.0, 1.0, 1.0]),
        );
        let c_neg = r(&[-0.0, 1.0, 1.0]);
        let d = r(&[9.0, 9.0, 9.0]);
        let data: Vec<u8> = [&a[..], &b, &a, &c, &b, &a, &c_neg, &d].concat();
        let census = identical_rows(&data, 6);
        assert_eq!(census.rows, 8);
        assert_eq!(census.distinct, 5);
        assert_eq!(census.groups, vec![vec![0, 2, 5], vec![1, 4]]);
        // forced hash collisions (every row in one bucket; or two buckets by one hash bit) must
        // give the same census: equality is confirmed on bytes
        let all_one: Vec<(u64, u32)> = (0..8u32).map(|i| (0, i)).collect();
        assert_eq!(census_of_keyed(&data, 6, all_one), census);
        let one_bit: Vec<(u64, u32)> = data
            .chunks_exact(6)
            .enumerate()
            .map(|(i, r)| (row_hash(r) & 1, i as u32))
            .collect();
        assert_eq!(census_of_keyed(&data, 6, one_bit), census);
        assert_eq!(exponent_distance(&patterns(&a), &patterns(&d)), 3);
    }

    #[test]
    fn row_hash_collisions_do_not_merge_rows() {
        // A row length that is not a multiple of 32 exercises the tail; equal hashes are only a
        // hint, so a census of many distinct rows must count them all.
        let data: Vec<u8> = (0..1000u32)
            .flat_map(|i| [i.to_le_bytes(), [7; 4], [1; 4]].concat())
            .collect();
        let census = identical_rows(&data, 12);
        assert_eq!((census.distinct, census.groups.len()), (1000, 0));
        assert_ne!(row_hash(&[1, 2]), row_hash(&[2, 1]));
        assert_ne!(row_hash(&[0]), row_hash(&[0, 0]));
    }
}
