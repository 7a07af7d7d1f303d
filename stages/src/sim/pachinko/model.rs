//! The model both engines of `sim.pachinko` simulate, and the records they hand back.
//!
//! [`Setup`] fixes everything random up front, from the seed alone:
//! - the starting coordinates: point `id`, coordinate `k` is the f32 value σ·z rounded to bf16
//!   (round to nearest even), where z is N(0, 1) by the ziggurat method from a SplitMix64 stream
//!   that starts at a hash of (seed, id, k / 2) (coordinates 2j and 2j + 1 are its first two
//!   normals). Counter-based, so any engine can draw any point's coordinate in any order and get
//!   the same bits;
//! - the direction u: D draws of [`super::super::Normals`], normalised in f64;
//! - the cull: a seeded Fisher–Yates shuffle gives every point its death position. Culling
//!   `cull` uniformly random survivors per step is the same as drawing a uniformly random order
//!   up front (the cull never looks at positions), so the points at positions
//!   [t·cull, (t+1)·cull) die at step t and those from steps·cull on survive. Engines store points
//!   by death position.
//!
//! Step t translates every surviving point by step_t·u with step_t = step0·decay^t (f64); each
//! coordinate moves by the f32 value (step_t·u_k) and is re-rounded to bf16: the new pattern is
//! bf16(f32(x) + s), the one function [`moved`] both engines call.
//!
//! [`Records`] are what an engine measures, per coordinate k and time τ (τ = 0 the initial state,
//! τ = t + 1 after step t's translation and cull). Sums over the points alive at τ run over the
//! coordinate's distinct values in ascending order (ties ±0 by pattern), each value times its
//! count, in f64: both engines produce them in that order, so they agree bit for bit.

use crate::bf16;

/// SplitMix64's output function: a bijection of u64 with good avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// Stream tags, so the draws, the direction and the cull use unrelated keys of the one seed.
const STREAM_DRAWS: u64 = 1;
const STREAM_DIRECTION: u64 = 2;
const STREAM_CULL: u64 = 3;

fn stream_key(seed: u64, stream: u64) -> u64 {
    mix64(mix64(seed.wrapping_add(GOLDEN)) ^ stream.wrapping_mul(GOLDEN))
}

/// The validated parameters of one run.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub points: usize,
    pub dim: usize,
    pub steps: usize,
    pub step0: f64,
    pub decay: f64,
    pub cull: usize,
    pub sigma: f64,
    pub seed: u64,
    /// 0: census only at the start and after the last step.
    pub census_every: usize,
}

/// Everything random, drawn once from the seed; see the module doc.
pub(crate) struct Setup {
    pub cfg: Config,
    /// Unit vector u (f64).
    pub direction: Vec<f64>,
    /// Point id at each death position.
    pub id_at: Vec<u32>,
    draws_key: u64,
    sigma32: f32,
    ziggurat: Ziggurat,
}

impl Setup {
    pub fn new(cfg: Config) -> Setup {
        let mut normals = super::super::Normals::new(stream_key(cfg.seed, STREAM_DIRECTION));
        let mut direction: Vec<f64> = (0..cfg.dim).map(|_| normals.normal()).collect();
        let norm = direction.iter().map(|x| x * x).sum::<f64>().sqrt();
        // Box–Muller normals are never all zero (r > 0, and cos and sin are not both 0).
        direction.iter_mut().for_each(|x| *x /= norm);

        let mut state = stream_key(cfg.seed, STREAM_CULL);
        let mut next = || {
            state = state.wrapping_add(GOLDEN);
            mix64(state)
        };
        let mut id_at: Vec<u32> = (0..cfg.points as u32).collect();
        for i in (1..id_at.len()).rev() {
            let j = bounded(&mut next, i as u64 + 1) as usize;
            id_at.swap(i, j);
        }
        Setup {
            direction,
            id_at,
            draws_key: stream_key(cfg.seed, STREAM_DRAWS),
            sigma32: cfg.sigma as f32,
            ziggurat: Ziggurat::new(),
            cfg,
        }
    }

    /// Time points τ = 0..=steps.
    pub fn times(&self) -> usize {
        self.cfg.steps + 1
    }

    /// Points alive at τ (after step τ − 1's cull).
    pub fn alive(&self, tau: usize) -> usize {
        self.cfg.points - tau * self.cfg.cull
    }

    /// First death position still alive at τ.
    pub fn first_alive(&self, tau: usize) -> usize {
        tau * self.cfg.cull
    }

    /// Length of step t: step0·decay^t.
    pub fn step_length(&self, t: usize) -> f64 {
        self.cfg.step0 * self.cfg.decay.powi(t as i32)
    }

    /// The f32 move of coordinate k at step t.
    pub fn step_component(&self, t: usize, k: usize) -> f32 {
        (self.step_length(t) * self.direction[k]) as f32
    }

    /// Starting bf16 patterns of coordinates 2·pair and 2·pair + 1 of point `id`: two normals
    /// from the SplitMix64 stream that starts at the hash of (seed, id, pair).
    pub fn start_pair(&self, id: u32, pair: usize) -> (u16, u16) {
        let mut state =
            mix64(self.draws_key ^ ((id as u64) << 32 | pair as u64).wrapping_mul(GOLDEN));
        let mut next = || {
            state = state.wrapping_add(GOLDEN);
            mix64(state)
        };
        let draw = |z: f64| bf16::from_f32(z as f32 * self.sigma32);
        let a = draw(self.ziggurat.normal(&mut next));
        let b = draw(self.ziggurat.normal(&mut next));
        (a, b)
    }

    /// Starting bf16 pattern of coordinate k of point `id`.
    pub fn start(&self, id: u32, k: usize) -> u16 {
        let (a, b) = self.start_pair(id, k / 2);
        if k % 2 == 0 {
            a
        } else {
            b
        }
    }

    /// Whether the state at τ gets a census (distinct rows, black holes).
    pub fn is_census(&self, tau: usize) -> bool {
        let steps = self.cfg.steps;
        tau == 0
            || tau == steps
            || (self.cfg.census_every > 0 && (tau - 1) % self.cfg.census_every == 0)
    }
}

/// Layers of the ziggurat, its base-layer edge R and the area V of every layer (Marsaglia and
/// Tsang's constants for 256 layers).
const ZIGGURAT_LAYERS: usize = 256;
const ZIGGURAT_R: f64 = 3.654_152_885_361_009;
const ZIGGURAT_AREA: f64 = 4.928_673_233_99e-3;

/// N(0, 1) by the ziggurat method (Marsaglia and Tsang, 2000, in Doornik's form): exact in
/// distribution, about one 64-bit draw per normal (the rectangle test passes ≈ 99% of the time),
/// no trigonometry.
struct Ziggurat {
    /// Right edges of the layers: edge[0] = V/f(R) (the base layer's width if its tail were a
    /// rectangle), edge[1] = R, …, edge[256] = 0, with f(x) = exp(−x²/2).
    edge: [f64; ZIGGURAT_LAYERS + 1],
    /// edge[i + 1] / edge[i]: below it, a point of layer i is inside the curve for sure.
    inner: [f64; ZIGGURAT_LAYERS],
}

impl Ziggurat {
    fn new() -> Ziggurat {
        let f = |x: f64| (-0.5 * x * x).exp();
        let mut edge = [0.0; ZIGGURAT_LAYERS + 1];
        edge[0] = ZIGGURAT_AREA / f(ZIGGURAT_R);
        edge[1] = ZIGGURAT_R;
        for i in 2..ZIGGURAT_LAYERS {
            // Layer i − 1 spans f(edge[i − 1])…f(edge[i]) with width edge[i − 1] and area V.
            edge[i] = (-2.0 * (ZIGGURAT_AREA / edge[i - 1] + f(edge[i - 1])).ln()).sqrt();
        }
        let mut inner = [0.0; ZIGGURAT_LAYERS];
        for i in 0..ZIGGURAT_LAYERS {
            inner[i] = edge[i + 1] / edge[i];
        }
        Ziggurat { edge, inner }
    }

    fn normal(&self, next: &mut impl FnMut() -> u64) -> f64 {
        loop {
            let bits = next();
            let i = (bits & 0xFF) as usize;
            // Uniform in [−1, 1) from the top 53 bits (disjoint from the layer's 8).
            let u = (bits >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
            if u.abs() < self.inner[i] {
                return u * self.edge[i];
            }
            if i == 0 {
                // The tail beyond R (Marsaglia's exponential rejection).
                loop {
                    let x = open_unit(next()).ln() / ZIGGURAT_R;
                    let y = open_unit(next()).ln();
                    if -2.0 * y >= x * x {
                        return if u < 0.0 {
                            x - ZIGGURAT_R
                        } else {
                            ZIGGURAT_R - x
                        };
                    }
                }
            }
            // The wedge between the rectangle and the curve.
            let x = u * self.edge[i];
            let outer = (-0.5 * (self.edge[i] * self.edge[i] - x * x)).exp();
            let inside = (-0.5 * (self.edge[i + 1] * self.edge[i + 1] - x * x)).exp();
            if inside + open_unit(next()) * (outer - inside) < 1.0 {
                return x;
            }
        }
    }
}

/// Uniform in (0, 1] from 53 random bits (never 0, so its logarithm is finite).
fn open_unit(bits: u64) -> f64 {
    ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// Uniform integer in [0, n) from a u64 stream (Lemire's multiply-shift with rejection: exact).
fn bounded(next: &mut impl FnMut() -> u64, n: u64) -> u64 {
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = next() as u128 * n as u128;
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// A bf16 pattern translated by `s` and re-rounded: bf16(f32(x) + s).
#[inline]
pub(crate) fn moved(pattern: u16, s: f32) -> u16 {
    bf16::from_f32(bf16::to_f32(pattern) + s)
}

/// Sort key of patterns by value (ties between +0 and −0 broken by pattern).
#[inline]
pub(crate) fn value_order(pattern: u16) -> (i32, u16) {
    (bf16::ordinal(pattern), pattern)
}

/// Adds `count` points at `pattern` to a coordinate's running sums.
#[inline]
pub(crate) fn accumulate(sums: &mut (f64, f64), pattern: u16, count: u32) {
    let v = bf16::to_f64(pattern);
    let c = count as f64;
    sums.0 += v * c;
    sums.1 += v * v * c;
}

/// What an engine measured, per coordinate k and time τ (index k·times + τ).
pub(crate) struct Records {
    pub times: usize,
    /// Σ over alive points of x_k.
    pub sum: Vec<f64>,
    /// Σ over alive points of x_k².
    pub sum_sq: Vec<f64>,
    /// Distinct values of coordinate k among the alive points.
    pub distinct: Vec<u32>,
    /// Points alive at the start of step τ − 1 whose coordinate k changed in it (0 at τ = 0).
    pub moved: Vec<u32>,
}

impl Records {
    pub fn new(dim: usize, times: usize) -> Records {
        Records {
            times,
            sum: vec![0.0; dim * times],
            sum_sq: vec![0.0; dim * times],
            distinct: vec![0; dim * times],
            moved: vec![0; dim * times],
        }
    }
}

/// Distinct rows and black holes among the points alive at τ (identity by bits).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Census {
    pub tau: usize,
    pub rows: usize,
    pub distinct: usize,
    /// Populations of the groups of ≥ 2 identical rows, descending.
    pub populations: Vec<usize>,
}

/// What an engine hands back.
pub(crate) struct Outcome {
    pub records: Records,
    /// One per census time, τ ascending.
    pub censuses: Vec<Census>,
    /// Final rows of the survivors, death position order, row-major patterns.
    pub survivors: Vec<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ziggurat's layers close at the top (edge[255] is the last positive edge and its layer
    /// reaches f = 1), and its draws have the moments and tails of N(0, 1).
    #[test]
    fn ziggurat_draws_are_standard_normal() {
        let z = Ziggurat::new();
        let f = |x: f64| (-0.5 * x * x).exp();
        let top = ZIGGURAT_AREA / z.edge[255] + f(z.edge[255]);
        assert!((top - 1.0).abs() < 1e-9, "{top}");
        assert!(z.edge[..256].windows(2).all(|w| w[0] > w[1] && w[1] > 0.0));

        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_add(GOLDEN);
            mix64(state)
        };
        let n = 2_000_000;
        let (mut sum, mut sum_sq, mut sum_4, mut beyond_2, mut beyond_r) = (0.0, 0.0, 0.0, 0, 0);
        for _ in 0..n {
            let x = z.normal(&mut next);
            sum += x;
            sum_sq += x * x;
            sum_4 += x * x * x * x;
            beyond_2 += (x.abs() > 2.0) as usize;
            beyond_r += (x.abs() > ZIGGURAT_R) as usize;
        }
        let n = n as f64;
        assert!((sum / n).abs() < 0.003, "mean {}", sum / n);
        assert!((sum_sq / n - 1.0).abs() < 0.004, "variance {}", sum_sq / n);
        assert!(
            (sum_4 / n - 3.0).abs() < 0.03,
            "fourth moment {}",
            sum_4 / n
        );
        // P(|z| > 2) = 0.0455003; P(|z| > R) = 2.58e-4 (≈ 516 of 2e6).
        assert!(
            (beyond_2 as f64 / n - 0.0455003).abs() < 0.0006,
            "{beyond_2}"
        );
        assert!((400..640).contains(&beyond_r), "{beyond_r}");
    }

    #[test]
    fn the_cull_order_is_a_permutation_and_the_draws_are_counter_based() {
        let cfg = Config {
            points: 1000,
            dim: 5,
            steps: 3,
            step0: 0.1,
            decay: 1.0,
            cull: 10,
            sigma: 1.0,
            seed: 9,
            census_every: 0,
        };
        let s = Setup::new(cfg.clone());
        let mut seen = s.id_at.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<u32>>());
        assert_ne!(s.id_at[..10], (0..10).collect::<Vec<u32>>()[..]);
        let norm: f64 = s.direction.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-12);
        // Same seed, same everything; the pair's second draw is coordinate 2j + 1.
        let t = Setup::new(cfg);
        assert_eq!(s.id_at, t.id_at);
        assert_eq!(s.start_pair(17, 2), t.start_pair(17, 2));
        assert_eq!(s.start(17, 5), s.start_pair(17, 2).1);
        assert_ne!(s.start_pair(17, 2), s.start_pair(18, 2));
    }
}
