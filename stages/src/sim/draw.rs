//! Counter-keyed random streams and a fast f32 normal sampler for the quantize-and-count
//! simulations (S20–S24).
//!
//! Every row of every trial gets its own [`Stream`], keyed by (seed, trial, purpose, row) through
//! SplitMix64 finalisers, so a trial's draws do not depend on how rows are spread over threads,
//! on the thread count, or on which other rows are drawn at all. The stream itself is wyrand (one
//! 64-bit add and one 128-bit multiply per draw). Normals come from a 128-layer ziggurat
//! (Marsaglia & Tsang's construction): each 32-bit half of a draw is one candidate, its low 7
//! bits the layer and its high 25 bits a signed value (24 bits of magnitude, an f32's precision),
//! so layer and value are independent bits; about 99% of samples cost half a draw, one table
//! lookup, one compare and one multiply. The tail beyond r = 3.4426 uses Marsaglia's exponential
//! rejection.

use std::sync::OnceLock;

/// Purposes of streams: the same (seed, trial, row) gives unrelated streams for each.
pub(crate) const ROWS: u64 = 1;
pub(crate) const SURVIVAL: u64 = 2;

/// One SplitMix64 finaliser step: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A wyrand stream keyed by four numbers.
pub(crate) struct Stream {
    state: u64,
}

impl Stream {
    /// The stream of (`seed`, `trial`, `purpose`, `row`).
    pub fn new(seed: u64, trial: u64, purpose: u64, row: u64) -> Self {
        const G: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut k = mix(seed ^ G);
        k = mix(k ^ trial.wrapping_mul(G).wrapping_add(1));
        k = mix(k ^ purpose.wrapping_mul(G).wrapping_add(2));
        k = mix(k ^ row.wrapping_mul(G).wrapping_add(3));
        Stream { state: k }
    }

    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.state as u128) * ((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        (t as u64) ^ ((t >> 64) as u64)
    }

    /// Uniform in (0, 1]: 53 random bits, never 0.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in 0..n (n ≥ 1), unbiased (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Fills `out` with N(0, 1) draws (ziggurat): each 64-bit draw gives two candidates, one per
    /// 32-bit half (7 bits of layer, 25 bits of signed value).
    pub fn normals(&mut self, out: &mut [f32]) {
        let t = tables();
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = self.next_u64();
            pair[0] = self.candidate(t, bits as u32);
            pair[1] = self.candidate(t, (bits >> 32) as u32);
        }
        if let [last] = pairs.into_remainder() {
            let bits = self.next_u64();
            *last = self.candidate(t, bits as u32);
        }
    }

    /// The sample of one 32-bit candidate: accepted inside its layer's rectangle (about 99% of
    /// the time), else the wedge or tail test with fresh draws.
    #[inline(always)]
    fn candidate(&mut self, t: &Tables, half: u32) -> f32 {
        let layer = (half & 127) as usize;
        let value = (half as i32) >> 7;
        if value.unsigned_abs() < t.k[layer] {
            return value as f32 * t.w[layer];
        }
        self.normal_slow(t, layer, value)
    }

    /// The ziggurat's rare path: the wedge of a layer, or the tail of layer 0.
    #[cold]
    fn normal_slow(&mut self, t: &Tables, mut layer: usize, mut value: i32) -> f32 {
        loop {
            if layer == 0 {
                loop {
                    let x = -self.uniform().ln() / R;
                    let y = -self.uniform().ln();
                    if y + y >= x * x {
                        let v = R + x;
                        return if value > 0 { v as f32 } else { -v as f32 };
                    }
                }
            }
            let x = value as f64 * t.w64[layer];
            let f0 = t.f[layer];
            let f1 = t.f[layer - 1];
            if f0 + self.uniform() * (f1 - f0) < (-0.5 * x * x).exp() {
                return x as f32;
            }
            let half = self.next_u64() as u32;
            layer = (half & 127) as usize;
            value = (half as i32) >> 7;
            if value.unsigned_abs() < t.k[layer] {
                return value as f32 * t.w[layer];
            }
        }
    }
}

/// Start of the tail: the rightmost layer edge of the 128-layer ziggurat.
const R: f64 = 3.442_619_855_899;
/// Area of each layer (and of the base layer with its tail).
const AREA: f64 = 9.912_563_035_262_17e-3;

/// Ziggurat tables: `k[i]` accept bound of |value| in layer i, `w[i]` value-to-x scale,
/// `f[i]` density at the layer's edge.
struct Tables {
    k: [u32; 128],
    w: [f32; 128],
    w64: [f64; 128],
    f: [f64; 128],
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        // Values are 25-bit signed integers: |value| < 2^24.
        let m = 2f64.powi(24);
        let mut t = Tables {
            k: [0; 128],
            w: [0.0; 128],
            w64: [0.0; 128],
            f: [0.0; 128],
        };
        let mut d = R;
        let mut prev = R;
        let q = AREA / (-0.5 * d * d).exp();
        t.k[0] = ((d / q) * m) as u32;
        t.k[1] = 0;
        t.w64[0] = q / m;
        t.w64[127] = d / m;
        t.f[0] = 1.0;
        t.f[127] = (-0.5 * d * d).exp();
        for i in (1..=126).rev() {
            d = (-2.0 * (AREA / d + (-0.5 * d * d).exp()).ln()).sqrt();
            t.k[i + 1] = ((d / prev) * m) as u32;
            prev = d;
            t.f[i] = (-0.5 * d * d).exp();
            t.w64[i] = d / m;
        }
        for i in 0..128 {
            t.w[i] = t.w64[i] as f32;
        }
        t
    })
}

/// Rounds an f32 to bf16 bits, round-to-nearest-even (torch's `.to(bfloat16)` for finite
/// values; NaN stays NaN).
#[inline(always)]
pub(crate) fn bf16_rne(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    // A select, not a branch, so loops over this vectorise.
    let quiet_nan = (b >> 16) | 0x40;
    (if x.is_nan() { quiet_nan } else { rounded }) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Φ(x) by Simpson integration of the density from −9: exact enough for a KS test.
    fn phi(x: f64) -> f64 {
        let n = 4000;
        let (a, b) = (-9.0f64, x);
        if b <= a {
            return 0.0;
        }
        let h = (b - a) / n as f64;
        let pdf = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = pdf(a) + pdf(b);
        for i in 1..n {
            s += pdf(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    }

    #[test]
    fn normals_have_the_normal_distribution() {
        let mut s = Stream::new(7, 0, ROWS, 0);
        let n = 400_000;
        let mut z = vec![0f32; n];
        // An odd length takes the last candidate from a fresh draw.
        s.normals(&mut z[..n - 1]);
        s.normals(&mut z[n - 1..]);
        let mut v: Vec<f64> = z.iter().map(|&x| x as f64).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let kurt = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
        // The tail beyond the ziggurat's base layer: P(|z| > r) = 5.7e-4 (≈ 229 of 400,000).
        let tail = v.iter().filter(|x| x.abs() > R).count();
        assert!((150..320).contains(&tail), "tail count {tail}");
        // Kolmogorov–Smirnov against Φ on a grid of quantiles.
        v.sort_by(|a, b| a.total_cmp(b));
        let mut d: f64 = 0.0;
        for i in (0..n).step_by(997) {
            let f = phi(v[i]);
            d = d.max((f - i as f64 / n as f64).abs());
            d = d.max((f - (i + 1) as f64 / n as f64).abs());
        }
        assert!(d < 1.63 / (n as f64).sqrt() * 1.5, "KS distance {d}");
    }

    #[test]
    fn streams_depend_on_every_key() {
        let first = |a, b, c, d| Stream::new(a, b, c, d).next_u64();
        let base = first(1, 2, 3, 4);
        assert_ne!(base, first(2, 2, 3, 4));
        assert_ne!(base, first(1, 3, 3, 4));
        assert_ne!(base, first(1, 2, 4, 4));
        assert_ne!(base, first(1, 2, 3, 5));
        assert_eq!(base, first(1, 2, 3, 4));
    }

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut s = Stream::new(3, 0, SURVIVAL, 0);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[s.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn bf16_rounding_matches_the_reference_conversion() {
        let mut s = Stream::new(5, 0, ROWS, 0);
        for _ in 0..200_000 {
            let x = f32::from_bits(s.next_u64() as u32);
            if x.is_nan() {
                continue;
            }
            assert_eq!(bf16_rne(x), crate::bf16::from_f32(x), "{x:e}");
        }
        // Ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
        assert_eq!(bf16_rne(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(bf16_rne(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
    }
}
