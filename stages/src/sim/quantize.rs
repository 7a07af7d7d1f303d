//! The quantize-and-count kernel of S20–S24: draw f32 points around an anchor vector, round each
//! coordinate once to bf16 (round-to-nearest-even), optionally keep a uniform random subset, and
//! count the groups of bit-identical rows (black holes).
//!
//! A point is `anchor + noise` computed in f32 exactly as the notebooks' torch code did
//! (`noise = scale·z` rounded to f32, then the f32 sum, then one bf16 rounding), so at σ ≈ 1e-9
//! around a coordinate of ~7e-3 the f32 grid (ULP ≈ 4.7e-10) is part of the physics, as it was in
//! the originals. Four noise laws (S22): Gaussian (σ·z per coordinate), uniform ball (a normalised
//! Gaussian direction times R·U^(1/D)), uniform shell (radius exactly R) and Laplace (i.i.d.
//! scale b per coordinate).
//!
//! Row `r` of trial `t` is drawn from its own [`Stream`] keyed by (seed, t, ROWS, r), and the
//! survivors of a Monument Valley trial from the stream (seed, t, SURVIVAL, 0), so every trial is
//! reproducible from (seed, trial index) alone and rows are drawn in parallel (rayon) with results
//! that do not depend on the thread count.

use rayon::prelude::*;

use super::draw::{bf16_rne, Stream, ROWS, SURVIVAL};

/// The noise law around the anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Law {
    Gaussian,
    Ball,
    Shell,
    Laplace,
}

impl Law {
    /// The law of a `law` param value (`None` for an undeclared name).
    pub(crate) fn parse(name: &str) -> Option<Law> {
        Some(match name {
            "gaussian" => Law::Gaussian,
            "ball" => Law::Ball,
            "shell" => Law::Shell,
            "laplace" => Law::Laplace,
            _ => return None,
        })
    }
}

/// What to draw: the anchor, the law and its scale (σ, R or b), and the seed.
pub(crate) struct Draw<'a> {
    pub anchor: &'a [f32],
    pub law: Law,
    pub scale: f32,
    pub seed: u64,
}

impl Draw<'_> {
    /// Coordinates per row.
    pub fn dim(&self) -> usize {
        self.anchor.len()
    }

    /// Row `row` of trial `trial` as bf16 bits into `out` (D elements); `scratch` holds the
    /// direction of ball and shell draws.
    pub fn row(&self, trial: u64, row: u64, out: &mut [u16], scratch: &mut Vec<f32>) {
        let mut s = Stream::new(self.seed, trial, ROWS, row);
        let c = self.anchor;
        let scale = self.scale;
        scratch.resize(c.len(), 0.0);
        match self.law {
            Law::Gaussian => {
                s.normals(scratch);
                // Vectorisable: one f32 multiply, one f32 add and one rounding per coordinate.
                for ((o, &a), &z) in out.iter_mut().zip(c).zip(scratch.iter()) {
                    let noise = scale * z;
                    *o = bf16_rne(a + noise);
                }
            }
            Law::Laplace => {
                for (o, &a) in out.iter_mut().zip(c) {
                    // Inverse CDF: u uniform on (−½, ½), z = −sign(u)·ln(1 − 2|u|).
                    let u = s.uniform() - 0.5;
                    let z = -u.signum() * (-2.0 * u.abs()).ln_1p();
                    let noise = scale * z as f32;
                    *o = bf16_rne(a + noise);
                }
            }
            Law::Ball | Law::Shell => {
                s.normals(scratch);
                let norm = scratch
                    .iter()
                    .map(|&z| z as f64 * z as f64)
                    .sum::<f64>()
                    .sqrt() as f32;
                let radius = match self.law {
                    Law::Ball => (scale as f64 * s.uniform().powf(1.0 / c.len() as f64)) as f32,
                    _ => scale,
                };
                for ((o, &a), &z) in out.iter_mut().zip(c).zip(scratch.iter()) {
                    let direction = z / norm;
                    *o = bf16_rne(a + direction * radius);
                }
            }
        }
    }

    /// Rows `0..rows` of trial `trial`, row-major bf16 bits, drawn in parallel.
    pub fn rows(&self, trial: u64, rows: usize, out: &mut Vec<u16>) {
        let d = self.dim();
        out.clear();
        out.resize(rows * d, 0);
        out.par_chunks_mut(d)
            .with_min_len(8)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (r, chunk)| {
                self.row(trial, r as u64, chunk, scratch)
            });
    }
}

/// The cells of a whole vocabulary drawn in full mode, counted by 128-bit fingerprints
/// ([`crate::bf16::row_fingerprint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VocabularyCount {
    pub unique: usize,
    pub black_holes: usize,
    pub largest: usize,
}

impl Draw<'_> {
    /// Monument Valley's full mode for trial `trial`: draws every row of `0..vocab` (in parallel)
    /// and counts their distinct rows by fingerprint, then puts the rows `ids` into `kept` in
    /// `ids` order. Kept rows are drawn again from their own streams, which gives the same bits
    /// as the first pass, so no V × D buffer is needed.
    pub fn full(
        &self,
        trial: u64,
        vocab: usize,
        ids: &[u32],
        kept: &mut Vec<u16>,
    ) -> VocabularyCount {
        let d = self.dim();
        let mut prints: Vec<u128> = (0..vocab)
            .into_par_iter()
            .with_min_len(64)
            .map_init(
                || (vec![0u16; d], Vec::new()),
                |(row, scratch), r| {
                    self.row(trial, r as u64, row, scratch);
                    crate::bf16::row_fingerprint(as_bytes(row))
                },
            )
            .collect();
        prints.par_sort_unstable();
        let (mut unique, mut black_holes, mut largest) = (0, 0, 0);
        for run in prints.chunk_by(|a, b| a == b) {
            unique += 1;
            if run.len() > 1 {
                black_holes += 1;
                largest = largest.max(run.len());
            }
        }
        kept.clear();
        kept.resize(ids.len() * d, 0);
        let mut scratch = Vec::new();
        for (chunk, &id) in kept.chunks_exact_mut(d).zip(ids) {
            self.row(trial, id as u64, chunk, &mut scratch);
        }
        VocabularyCount {
            unique,
            black_holes,
            largest,
        }
    }
}

/// The survivors of trial `trial`: the first `keep` entries of a uniform random permutation of
/// `0..vocab` (partial Fisher–Yates on the trial's survival stream), in permutation order.
pub(crate) fn survivors(seed: u64, trial: u64, vocab: usize, keep: usize) -> Vec<u32> {
    let mut s = Stream::new(seed, trial, SURVIVAL, 0);
    let mut ids: Vec<u32> = (0..vocab as u32).collect();
    for i in 0..keep.min(vocab) {
        let j = i + s.below((vocab - i) as u64) as usize;
        ids.swap(i, j);
    }
    ids.truncate(keep.min(vocab));
    ids
}

/// Bytes of bf16 bits in memory order (for hashing and byte comparison only: both sides of every
/// comparison come from the same machine).
pub(crate) fn as_bytes(v: &[u16]) -> &[u8] {
    // SAFETY: u16 has no padding and every byte pattern is a valid u8; u8's alignment is 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The demographics of a set of rows: how they fall into groups of bit-identical rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Census {
    /// Distinct rows (occupied cells).
    pub unique: usize,
    /// Populations of the black holes (groups of ≥ 2 identical rows), descending.
    pub populations: Vec<u32>,
    /// Rows that share their cell with nobody.
    pub singletons: usize,
    /// One row index per distinct row: black holes first in population order (their smallest
    /// member), then the singletons ascending.
    pub representatives: Vec<u32>,
}

impl Census {
    /// Groups the rows of `rows` (row-major bf16 bits, `dim` per row).
    pub fn of(rows: &[u16], dim: usize) -> Census {
        let count = rows.len() / dim;
        let c = crate::bf16::identical_rows(as_bytes(rows), dim * 2);
        let mut grouped = vec![false; count];
        let mut representatives = Vec::with_capacity(c.distinct);
        let mut populations = Vec::with_capacity(c.groups.len());
        for g in &c.groups {
            representatives.push(g[0]);
            populations.push(g.len() as u32);
            for &m in g {
                grouped[m as usize] = true;
            }
        }
        representatives.extend((0..count as u32).filter(|&i| !grouped[i as usize]));
        Census {
            unique: c.distinct,
            singletons: c.distinct - c.groups.len(),
            populations,
            representatives,
        }
    }

    pub fn black_holes(&self) -> usize {
        self.populations.len()
    }

    /// Rows inside black holes.
    pub fn population(&self) -> usize {
        self.populations.iter().map(|&p| p as usize).sum()
    }

    pub fn largest(&self) -> usize {
        self.populations.first().copied().unwrap_or(0) as usize
    }

    /// Gini coefficient of the black-hole populations (S20: ascending x₍ᵢ₎,
    /// G = 2·Σ i·x₍ᵢ₎ / (n·Σx) − (n+1)/n); `None` without black holes.
    pub fn gini(&self) -> Option<f64> {
        let n = self.populations.len();
        if n == 0 {
            return None;
        }
        let total: f64 = self.populations.iter().map(|&p| p as f64).sum();
        let weighted: f64 = self
            .populations
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &p)| (i + 1) as f64 * p as f64)
            .sum();
        Some(2.0 * weighted / (n as f64 * total) - (n as f64 + 1.0) / n as f64)
    }
}

/// V4.19's demographic distance: Σ |dᵢ − qᵢ| over the common prefix of two descending
/// population lists plus `length_penalty`·|length difference|.
pub(crate) fn demographic_distance(d: &[u32], target: &[u32], length_penalty: f64) -> f64 {
    let prefix: f64 = d
        .iter()
        .zip(target)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum();
    prefix + length_penalty * (d.len() as f64 - target.len() as f64).abs()
}

/// S20's pairwise structure of a set of distinct rows at threshold ε: absolute L∞ distances of
/// every pair (in units of ε) and the graph whose edges join rows within `edge` ε of each other.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub(crate) struct Pairwise {
    pub rows: usize,
    pub pairs: usize,
    pub max_linf_eps: f64,
    pub mean_linf_eps: f64,
    pub median_linf_eps: f64,
    pub edges: usize,
    pub components: usize,
    pub isolated: usize,
    pub largest_component: usize,
    /// Edges of the largest component over its possible pairs (1 when it has one row).
    pub largest_component_density: f64,
    /// Edges over all possible pairs (1 when there is at most one row).
    pub density: f64,
}

/// The pairwise structure of `ids` (rows of `rows`, `dim` per row), with distances in units of
/// `eps` and edges where the L∞ distance is ≤ `edge`·ε.
pub(crate) fn pairwise(rows: &[u16], dim: usize, ids: &[u32], eps: f64, edge: f64) -> Pairwise {
    let n = ids.len();
    let values: Vec<Vec<f32>> = ids
        .iter()
        .map(|&i| {
            rows[i as usize * dim..(i as usize + 1) * dim]
                .iter()
                .map(|&b| crate::bf16::to_f32(b))
                .collect()
        })
        .collect();
    let dist: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|a| {
            (a + 1..n)
                .map(|b| {
                    values[a]
                        .iter()
                        .zip(&values[b])
                        .map(|(x, y)| (*x as f64 - *y as f64).abs())
                        .fold(0.0, f64::max)
                })
                .collect()
        })
        .collect();
    let mut all: Vec<f64> = dist.iter().flatten().map(|d| d / eps).collect();
    let pairs = all.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut edges = 0;
    let mut degree = vec![0usize; n];
    let mut edge_list = Vec::new();
    for (a, row) in dist.iter().enumerate() {
        for (k, &d) in row.iter().enumerate() {
            if d <= edge * eps {
                let b = a + 1 + k;
                edges += 1;
                degree[a] += 1;
                degree[b] += 1;
                edge_list.push(a);
                let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                if ra != rb {
                    parent[ra.max(rb)] = ra.min(rb);
                }
            }
        }
    }
    let mut size = vec![0usize; n];
    for x in 0..n {
        let r = root(&mut parent, x);
        size[r] += 1;
    }
    let components = size.iter().filter(|&&s| s > 0).count();
    // The largest component (the smallest root among equals) and its edges.
    let best = (0..n).max_by_key(|&r| (size[r], std::cmp::Reverse(r)));
    let (largest, largest_edges) = match best {
        Some(r) => (
            size[r],
            edge_list
                .iter()
                .filter(|&&a| root(&mut parent, a) == r)
                .count(),
        ),
        None => (0, 0),
    };
    let density_of = |e: usize, k: usize| {
        if k < 2 {
            1.0
        } else {
            e as f64 / (k * (k - 1) / 2) as f64
        }
    };
    let (max, mean, median) = if all.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        all.sort_by(|a, b| a.total_cmp(b));
        let m = all.len();
        let median = if m % 2 == 1 {
            all[m / 2]
        } else {
            (all[m / 2 - 1] + all[m / 2]) / 2.0
        };
        (all[m - 1], all.iter().sum::<f64>() / m as f64, median)
    };
    Pairwise {
        rows: n,
        pairs,
        max_linf_eps: max,
        mean_linf_eps: mean,
        median_linf_eps: median,
        edges,
        components,
        isolated: degree.iter().filter(|&&d| d == 0).count(),
        largest_component: largest,
        largest_component_density: density_of(largest_edges, largest),
        density: density_of(edges, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn census_counts_planted_groups() {
        // Rows (dim 2): A A B A C C D → black holes [3 (A), 2 (C)], singletons B and D.
        let a = [1u16, 2];
        let b = [1u16, 3];
        let c = [5u16, 5];
        let d = [0u16, 0];
        let rows: Vec<u16> = [a, a, b, a, c, c, d].concat();
        let census = Census::of(&rows, 2);
        assert_eq!(census.unique, 4);
        assert_eq!(census.populations, [3, 2]);
        assert_eq!(census.singletons, 2);
        assert_eq!(census.largest(), 3);
        assert_eq!(census.population(), 5);
        assert_eq!(census.representatives, [0, 4, 2, 6]);
        // Gini of [2, 3]: 2·(1·2 + 2·3)/(2·5) − 3/2 = 0.1.
        assert!((census.gini().unwrap() - 0.1).abs() < 1e-12);
    }

    #[test]
    fn demographic_distance_penalises_length() {
        assert_eq!(demographic_distance(&[10, 5], &[8, 5, 1], 100.0), 102.0);
        assert_eq!(demographic_distance(&[8, 5, 1], &[8, 5, 1], 100.0), 0.0);
    }

    #[test]
    fn survivors_are_distinct_and_depend_only_on_seed_and_trial() {
        let s = survivors(9, 3, 1000, 100);
        let mut sorted = s.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert!(sorted.iter().all(|&i| i < 1000));
        assert_eq!(s, survivors(9, 3, 1000, 100));
        assert_ne!(s, survivors(9, 4, 1000, 100));
    }

    #[test]
    fn laws_have_their_scales() {
        // Zero anchor, D = 256: Gaussian per-coordinate std σ; ball/shell radius R; Laplace
        // mean |z| = b. Rounding to bf16 costs < 0.4% relative.
        let dim = 256;
        let anchor = vec![0f32; dim];
        let mut out = vec![0u16; dim];
        let mut scratch = Vec::new();
        for (law, scale) in [
            (Law::Gaussian, 2.0f32),
            (Law::Ball, 3.0),
            (Law::Shell, 3.0),
            (Law::Laplace, 0.5),
        ] {
            let draw = Draw {
                anchor: &anchor,
                law,
                scale,
                seed: 1,
            };
            let (mut sq, mut abs, mut norms) = (0.0, 0.0, Vec::new());
            for r in 0..400 {
                draw.row(0, r, &mut out, &mut scratch);
                let v: Vec<f64> = out.iter().map(|&b| crate::bf16::to_f64(b)).collect();
                let n2: f64 = v.iter().map(|x| x * x).sum();
                sq += n2;
                abs += v.iter().map(|x| x.abs()).sum::<f64>();
                norms.push(n2.sqrt());
            }
            let coords = 400.0 * dim as f64;
            match law {
                Law::Gaussian => assert!(((sq / coords).sqrt() / 2.0 - 1.0).abs() < 0.01),
                Law::Laplace => assert!((abs / coords / 0.5 - 1.0).abs() < 0.01),
                Law::Shell => assert!(norms.iter().all(|n| (n / 3.0 - 1.0).abs() < 0.005)),
                Law::Ball => {
                    // R·U^(1/D): all below R, mean R·D/(D+1).
                    assert!(norms.iter().all(|&n| n < 3.0 * 1.005));
                    let mean = norms.iter().sum::<f64>() / norms.len() as f64;
                    assert!((mean / (3.0 * 256.0 / 257.0) - 1.0).abs() < 0.005, "{mean}");
                }
            }
        }
    }

    /// Full mode's fingerprint count equals the exact census of all rows, and its kept rows are
    /// the rows of the whole draw at the survivors' indices.
    #[test]
    fn full_mode_counts_the_vocabulary_and_keeps_the_drawn_rows() {
        let anchor: Vec<f32> = (0..32).map(|i| 0.01 + 0.001 * i as f32).collect();
        let draw = Draw {
            anchor: &anchor,
            law: Law::Gaussian,
            scale: 2e-6,
            seed: 5,
        };
        let mut all = Vec::new();
        draw.rows(3, 5000, &mut all);
        let exact = Census::of(&all, 32);
        assert!(exact.black_holes() > 1 && exact.singletons > 0, "{exact:?}");
        let ids = survivors(5, 3, 5000, 700);
        let mut kept = Vec::new();
        let count = draw.full(3, 5000, &ids, &mut kept);
        assert_eq!(
            count,
            VocabularyCount {
                unique: exact.unique,
                black_holes: exact.black_holes(),
                largest: exact.largest()
            }
        );
        for (k, &i) in kept.chunks_exact(32).zip(&ids) {
            assert_eq!(k, &all[i as usize * 32..(i as usize + 1) * 32]);
        }
    }

    #[test]
    fn pairwise_graph_of_planted_rows() {
        // Three 1-D rows at 0, ε, 5ε (ε = 2^-10, exact in bf16), edges at ≤ 2ε: {0, 1} and {2}.
        let eps = 2f64.powi(-10);
        let rows: Vec<u16> = [0.0, eps, 5.0 * eps]
            .iter()
            .map(|&x| crate::bf16::from_f32(x as f32))
            .collect();
        let p = pairwise(&rows, 1, &[0, 1, 2], eps, 2.0);
        assert_eq!((p.pairs, p.edges, p.components, p.isolated), (3, 1, 2, 1));
        assert_eq!(p.largest_component, 2);
        assert_eq!(p.largest_component_density, 1.0);
        assert!((p.density - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((p.max_linf_eps, p.median_linf_eps), (5.0, 4.0));
    }
}
