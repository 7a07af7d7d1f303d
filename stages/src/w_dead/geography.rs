//! `w.geography` (science spec S06): the layout of one dead set (a mask of `w.dead_sets`, by
//! default rule A) around the anchor, black hole 1's vector: core and Oort cloud, distance bands,
//! an equal-width histogram, nearest-neighbour and pairwise distances, magnitudes, the Outlier,
//! the extended shell over all of W and the 2-D PCA variance shares. Everything S06's reference
//! table lists except the script classification (which needs the tokenizer).
//!
//! The set's tokens are grouped into unique vectors by raw bytes; each vector is named by its
//! representative, the smallest token id, and carries its token count inside the set.
//! r(v) = ‖v − anchor‖₂. Statistics over vectors are unweighted; percentiles interpolate linearly
//! between order statistics (numpy's default), the median is the 50th percentile, std is the
//! population std (ddof 0). The equal-width bins span [0, 1.1 · max r] (the source's table: bin 1
//! = [0, 0.000302) for max r = 0.005495). Bands are [e_i, e_i+1) and a last open [e_last, ∞).
//! Core vectors have r < `core_radius`; singletons are non-black-hole vectors holding one token.
//! "Diameter as % of the distance to the origin" is max r / ‖anchor‖ (the 1.48 % of S06); the
//! max pairwise distance over ‖anchor‖ is reported beside it.
//!
//! Nearest neighbours are found by an exact all-pairs scan over the unique vectors (parallel over
//! vectors, O(n² · D)); sets with more than `max_vectors` vectors are refused. The PCA shares are
//! the two largest eigenvalues of the centred n × n Gram matrix (or the D × D scatter matrix when
//! D < n; both have the same non-zero spectrum) over its trace, from a cyclic Jacobi eigenvalue
//! solver of this module in f64 (no libtorch); it is skipped, with a note, when that matrix is
//! larger than [`PCA_MAX`]. All sums are f64 over exact element values, in a fixed order, so the
//! outputs do not depend on the thread count.

use std::collections::HashMap;
use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;

use azimuth_stage_api::specs::w_dead::GEOGRAPHY as SPEC;

use super::{l2, l2_to, norm, row_f64};
use crate::lattice::Format;
use crate::params::Params;
use crate::w_analysis::{load_black_holes, load_mask, load_w, with_threads, LATTICE_DTYPES};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Largest matrix the Jacobi solver is run on (cost ≈ 10 · 4 · PCA_MAX³ flops).
pub(crate) const PCA_MAX: usize = 1024;

#[derive(Debug, Serialize)]
struct RStats {
    min: f64,
    median: f64,
    mean: f64,
    max: f64,
    p75: f64,
    p90: f64,
    p95: f64,
    p99: f64,
}

#[derive(Debug, Serialize, Default)]
struct Region {
    vectors: usize,
    tokens: usize,
    tokens_per_vector: Option<f64>,
    black_holes: usize,
    singletons: usize,
}

#[derive(Debug, Serialize)]
struct Band {
    band: usize,
    lower: f64,
    /// null for the last, open band.
    upper: Option<f64>,
    vectors: usize,
    tokens: usize,
}

#[derive(Debug, Serialize)]
struct Bin {
    bin: usize,
    lower: f64,
    upper: f64,
    vectors: usize,
    tokens: usize,
}

#[derive(Debug, Serialize)]
struct Spread {
    min: f64,
    median: f64,
    mean: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Magnitudes {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
    cv_percent: f64,
    core_min: Option<f64>,
    core_max: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Outlier {
    token: u32,
    tokens: usize,
    black_hole: u32,
    r: f64,
    nn_distance: Option<f64>,
    exponent_distance: u32,
    /// Dimensions per |ΔE| = 0, 1, 2, … against the anchor.
    exponent_histogram: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct Second {
    token: u32,
    r: f64,
    /// r(Outlier) / r(second); null when r(second) is 0.
    gap_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Extended {
    lower: f64,
    upper: f64,
    tokens: usize,
    in_set: usize,
}

#[derive(Debug, Serialize)]
struct Pca {
    /// "gram" (n × n) or "scatter" (D × D).
    matrix: &'static str,
    size: usize,
    pc1_percent: Option<f64>,
    pc2_percent: Option<f64>,
    eigenvalue_1: f64,
    eigenvalue_2: Option<f64>,
    trace: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    format: u32,
    tensor: String,
    mask: String,
    rows: usize,
    cols: usize,
    anchor_token: u32,
    anchor_norm: f64,
    tokens: usize,
    vectors: usize,
    black_holes: usize,
    singletons: usize,
    r: RStats,
    core_radius: f64,
    core: Region,
    oort: Region,
    below_first_band: usize,
    bands: Vec<Band>,
    bins: Vec<Bin>,
    inner_half: Region,
    nearest_neighbour: Option<Spread>,
    max_pairwise: f64,
    magnitudes: Magnitudes,
    diameter_percent_of_anchor_norm: f64,
    max_pairwise_percent_of_anchor_norm: f64,
    outlier: Outlier,
    second_farthest: Option<Second>,
    extended: Extended,
    near_radius: f64,
    near_tokens: usize,
    r_all_rows_max: f64,
    r_all_rows_mean: f64,
    pca: Option<Pca>,
    notes: Vec<String>,
}

/// A unique vector of the set.
struct Vector {
    rep: u32,
    tokens: usize,
    bh: u32,
    values: Vec<f64>,
    r: f64,
    nn: Option<f64>,
}

/// The q-th percentile (0…100) of ascending `v` by linear interpolation.
fn percentile(v: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn region<'a>(vs: impl Iterator<Item = &'a Vector>) -> Region {
    let mut r = Region::default();
    for v in vs {
        r.vectors += 1;
        r.tokens += v.tokens;
        if v.bh != 0 {
            r.black_holes += 1;
        } else if v.tokens == 1 {
            r.singletons += 1;
        }
    }
    r.tokens_per_vector = (r.vectors > 0).then(|| r.tokens as f64 / r.vectors as f64);
    r
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let mask_name = p.string("mask")?;
    let core_radius = p.float("core_radius")?;
    let edges = p.float_list("bands")?;
    let bins = p.int("bins")? as usize;
    let ext = p.float_list("extended")?;
    let near_radius = p.float("near_radius")?;
    let max_vectors = p.int("max_vectors")? as usize;
    if edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(p.error(format!(
            "param `bands` must be strictly ascending, got {edges:?}"
        )));
    }
    if ext.len() != 2 || ext[0] >= ext[1] {
        return Err(p.error(format!(
            "param `extended` must be [lower, upper] with lower < upper, got {ext:?}"
        )));
    }
    let (vectors_out, summary_out, extended_out) = (
        p.output("vectors")?,
        p.output("summary")?,
        p.output("extended")?,
    );
    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "rows are read as exact float values",
    )?;
    let f = m.format().expect("LATTICE_DTYPES are lattice formats");
    let (rows, cols) = (m.rows, m.cols);
    let bh = load_black_holes(&p, "black_holes", rows)?;
    let Some(first) = bh.members.first() else {
        return Err(p.error(
            "input `black_holes` holds no black hole, so there is no anchor (black hole 1) to \
             measure the geography from; this W has no dead set in the sense of S05/S06",
        ));
    };
    let anchor_token = first[0];
    let in_set = load_mask(&p, "dead", &mask_name, rows)?;

    // Unique vectors of the set, by raw bytes, in order of their smallest token.
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<(u32, usize)> = Vec::new();
    for t in (0..rows).filter(|&t| in_set[t]) {
        let k = *index.entry(m.row(t)).or_insert_with(|| {
            groups.push((t as u32, 0));
            groups.len() - 1
        });
        groups[k].1 += 1;
    }
    if groups.is_empty() {
        return Err(p.error(format!(
            "mask `{mask_name}` of input `dead` is empty: there is no dead set to describe (for \
             rule_b this means no clean void was found; try mask `rule_a`)"
        )));
    }
    if groups.len() > max_vectors {
        return Err(p.error(format!(
            "mask `{mask_name}` holds {} unique vectors, more than max_vectors = {max_vectors}; \
             the nearest-neighbour scan is quadratic in them: raise `max_vectors` if you mean it, \
             or choose a tighter dead set",
            groups.len()
        )));
    }
    let anchor = row_f64(f, m.row(anchor_token as usize));
    let anchor_norm = norm(&anchor);

    let computed = with_threads(&p, ctx.threads, || {
        let mut vs: Vec<Vector> = groups
            .iter()
            .map(|&(rep, tokens)| {
                let values = row_f64(f, m.row(rep as usize));
                Vector {
                    rep,
                    tokens,
                    bh: bh.id[rep as usize],
                    r: l2(&values, &anchor),
                    values,
                    nn: None,
                }
            })
            .collect();
        let scan: Vec<(Option<f64>, f64)> = (0..vs.len())
            .into_par_iter()
            .map(|i| {
                let (mut nn, mut far) = (None::<f64>, 0.0f64);
                for j in (0..vs.len()).filter(|&j| j != i) {
                    let d = l2(&vs[i].values, &vs[j].values);
                    nn = Some(nn.map_or(d, |x| x.min(d)));
                    far = far.max(d);
                }
                (nn, far)
            })
            .collect();
        for (v, (nn, _)) in vs.iter_mut().zip(&scan) {
            v.nn = *nn;
        }
        let max_pairwise = scan.iter().map(|s| s.1).fold(0.0, f64::max);
        let all_r: Vec<f64> = (0..rows)
            .into_par_iter()
            .with_min_len(256)
            .map(|t| l2_to(f, m.row(t), &anchor))
            .collect();
        let pca = pca_shares(&vs, cols);
        (vs, max_pairwise, all_r, pca)
    })?;
    let (vs, max_pairwise, all_r, pca) = computed;
    let mut notes = Vec::new();
    if pca.is_none() {
        notes.push(format!(
            "PCA skipped: its matrix would be {} × {0}, larger than {PCA_MAX}",
            vs.len().min(cols)
        ));
    }

    // r statistics.
    let n = vs.len();
    let mut rs: Vec<f64> = vs.iter().map(|v| v.r).collect();
    rs.sort_by(f64::total_cmp);
    let median = percentile(&rs, 50.0);
    let r = RStats {
        min: rs[0],
        median,
        mean: rs.iter().sum::<f64>() / n as f64,
        max: rs[n - 1],
        p75: percentile(&rs, 75.0),
        p90: percentile(&rs, 90.0),
        p95: percentile(&rs, 95.0),
        p99: percentile(&rs, 99.0),
    };

    // Bands and bins.
    let band_of = |x: f64| -> Option<usize> { (0..edges.len()).rev().find(|&i| x >= edges[i]) };
    let mut bands: Vec<Band> = (0..edges.len())
        .map(|i| Band {
            band: i + 1,
            lower: edges[i],
            upper: edges.get(i + 1).copied(),
            vectors: 0,
            tokens: 0,
        })
        .collect();
    let mut below_first_band = 0;
    let width = 1.1 * r.max / bins as f64;
    let mut bin_table: Vec<Bin> = (0..bins)
        .map(|i| Bin {
            bin: i + 1,
            lower: width * i as f64,
            upper: width * (i + 1) as f64,
            vectors: 0,
            tokens: 0,
        })
        .collect();
    for v in &vs {
        match band_of(v.r) {
            Some(b) => {
                bands[b].vectors += 1;
                bands[b].tokens += v.tokens;
            }
            None => below_first_band += 1,
        }
        let b = if width > 0.0 {
            ((v.r / width) as usize).min(bins - 1)
        } else {
            0
        };
        bin_table[b].vectors += 1;
        bin_table[b].tokens += v.tokens;
    }

    // Nearest neighbours, magnitudes.
    let nearest_neighbour = (n > 1).then(|| {
        let mut nn: Vec<f64> = vs.iter().filter_map(|v| v.nn).collect();
        nn.sort_by(f64::total_cmp);
        Spread {
            min: nn[0],
            median: percentile(&nn, 50.0),
            mean: nn.iter().sum::<f64>() / nn.len() as f64,
            max: nn[nn.len() - 1],
        }
    });
    let mags: Vec<f64> = vs.iter().map(|v| norm(&v.values)).collect();
    let mean_mag = mags.iter().sum::<f64>() / n as f64;
    let std_mag = (mags.iter().map(|x| (x - mean_mag).powi(2)).sum::<f64>() / n as f64).sqrt();
    let core_mags: Vec<f64> = vs
        .iter()
        .zip(&mags)
        .filter(|(v, _)| v.r < core_radius)
        .map(|(_, &x)| x)
        .collect();
    let magnitudes = Magnitudes {
        min: mags.iter().copied().fold(f64::INFINITY, f64::min),
        max: mags.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        mean: mean_mag,
        std: std_mag,
        cv_percent: 100.0 * std_mag / mean_mag,
        core_min: core_mags.iter().copied().reduce(f64::min),
        core_max: core_mags.iter().copied().reduce(f64::max),
    };

    // The Outlier and the second-farthest vector (ties: smallest representative).
    let mut by_r: Vec<usize> = (0..n).collect();
    by_r.sort_by(|&a, &b| vs[b].r.total_cmp(&vs[a].r).then(vs[a].rep.cmp(&vs[b].rep)));
    let o = &vs[by_r[0]];
    let (exponent_distance, exponent_histogram) =
        exponent_profile(f, m.row(o.rep as usize), m.row(anchor_token as usize));
    let outlier = Outlier {
        token: o.rep,
        tokens: o.tokens,
        black_hole: o.bh,
        r: o.r,
        nn_distance: o.nn,
        exponent_distance,
        exponent_histogram,
    };
    let second_farthest = by_r.get(1).map(|&i| Second {
        token: vs[i].rep,
        r: vs[i].r,
        gap_ratio: (vs[i].r > 0.0).then(|| o.r / vs[i].r),
    });

    // All rows: extended shell, near count.
    let mut extended_csv = String::from("id,r,in_set\n");
    let mut extended = Extended {
        lower: ext[0],
        upper: ext[1],
        tokens: 0,
        in_set: 0,
    };
    for (t, &x) in all_r.iter().enumerate() {
        if x >= ext[0] && x < ext[1] {
            extended.tokens += 1;
            extended.in_set += usize::from(in_set[t]);
            let _ = writeln!(extended_csv, "{t},{},{}", x as f32, in_set[t]);
        }
    }
    p.write_output(extended_out, extended_csv.as_bytes())?;

    let mut vectors_csv = String::from("representative,tokens,bh_id,r,nn_distance,region,band\n");
    for v in &vs {
        let _ = writeln!(
            vectors_csv,
            "{},{},{},{},{},{},{}",
            v.rep,
            v.tokens,
            v.bh,
            v.r as f32,
            v.nn.map_or(String::new(), |x| (x as f32).to_string()),
            if v.r < core_radius { "core" } else { "oort" },
            band_of(v.r).map_or(String::new(), |b| (b + 1).to_string()),
        );
    }
    p.write_output(vectors_out, vectors_csv.as_bytes())?;

    let whole = region(vs.iter());
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        mask: mask_name,
        rows,
        cols,
        anchor_token,
        anchor_norm,
        tokens: whole.tokens,
        vectors: n,
        black_holes: whole.black_holes,
        singletons: whole.singletons,
        core_radius,
        core: region(vs.iter().filter(|v| v.r < core_radius)),
        oort: region(vs.iter().filter(|v| v.r >= core_radius)),
        inner_half: region(vs.iter().filter(|v| v.r <= median)),
        r,
        below_first_band,
        bands,
        bins: bin_table,
        nearest_neighbour,
        max_pairwise,
        magnitudes,
        diameter_percent_of_anchor_norm: 100.0 * o.r / anchor_norm,
        max_pairwise_percent_of_anchor_norm: 100.0 * max_pairwise / anchor_norm,
        outlier,
        second_farthest,
        extended,
        near_radius,
        near_tokens: all_r.iter().filter(|&&x| x < near_radius).count(),
        r_all_rows_max: all_r.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        r_all_rows_mean: all_r.iter().sum::<f64>() / rows as f64,
        pca,
        notes,
    };
    p.write_json(summary_out, &summary)
}

/// max |ΔE| between two rows and the number of dimensions at each |ΔE| = 0…max.
fn exponent_profile(f: Format, a: &[u8], b: &[u8]) -> (u32, Vec<usize>) {
    let deltas: Vec<u32> = (0..a.len() / f.bytes())
        .map(|j| (f.exponent(f.pattern(a, j)) as u32).abs_diff(f.exponent(f.pattern(b, j)) as u32))
        .collect();
    let max = deltas.iter().copied().max().unwrap_or(0);
    let mut hist = vec![0usize; max as usize + 1];
    for d in deltas {
        hist[d as usize] += 1;
    }
    (max, hist)
}

/// PC1 and PC2 variance shares of the vectors centred on their (unweighted) mean.
fn pca_shares(vs: &[Vector], cols: usize) -> Option<Pca> {
    let n = vs.len();
    let mut mean = vec![0.0f64; cols];
    for v in vs {
        for (s, x) in mean.iter_mut().zip(&v.values) {
            *s += x;
        }
    }
    for s in &mut mean {
        *s /= n as f64;
    }
    let centred: Vec<Vec<f64>> = vs
        .iter()
        .map(|v| v.values.iter().zip(&mean).map(|(x, m)| x - m).collect())
        .collect();
    let (kind, size) = if n <= cols {
        ("gram", n)
    } else {
        ("scatter", cols)
    };
    if size > PCA_MAX {
        return None;
    }
    let entry = |i: usize, j: usize| -> f64 {
        if kind == "gram" {
            centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum()
        } else {
            centred.iter().map(|x| x[i] * x[j]).sum()
        }
    };
    let upper: Vec<Vec<f64>> = (0..size)
        .into_par_iter()
        .map(|i| (i..size).map(|j| entry(i, j)).collect())
        .collect();
    let mut a = vec![0.0f64; size * size];
    for i in 0..size {
        for j in i..size {
            a[i * size + j] = upper[i][j - i];
            a[j * size + i] = upper[i][j - i];
        }
    }
    let trace: f64 = (0..size).map(|i| a[i * size + i]).sum();
    let mut eig = jacobi_eigenvalues(a, size);
    eig.sort_by(|x, y| y.total_cmp(x));
    let share = |x: f64| (trace > 0.0).then(|| 100.0 * x / trace);
    Some(Pca {
        matrix: kind,
        size,
        pc1_percent: share(eig[0]),
        pc2_percent: eig.get(1).and_then(|&x| share(x)),
        eigenvalue_1: eig[0],
        eigenvalue_2: eig.get(1).copied(),
        trace,
    })
}

/// Eigenvalues of the symmetric `n × n` matrix `a` (row-major) by cyclic Jacobi rotations, until
/// the off-diagonal mass is negligible against the whole (or 100 sweeps).
pub(crate) fn jacobi_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= total * 1e-30 || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = 0.0;
                a[q * n + p] = 0.0;
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_known_eigenvalues() {
        // [[2, 1], [1, 2]] → 3, 1; diag(5, −1, 0.5) rotated stays {5, −1, 0.5}.
        let mut e = jacobi_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        e.sort_by(f64::total_cmp);
        assert!(
            (e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12,
            "{e:?}"
        );
        // A = Q diag(5, -1, 0.5) Qᵀ with Q a rotation about z by 30° then about x by 45°.
        let (c1, s1) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let (c2, s2) = (45f64.to_radians().cos(), 45f64.to_radians().sin());
        let rz = [[c1, -s1, 0.0], [s1, c1, 0.0], [0.0, 0.0, 1.0]];
        let rx = [[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]];
        let mut q = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                q[i][j] = (0..3).map(|k| rx[i][k] * rz[k][j]).sum();
            }
        }
        let d = [5.0, -1.0, 0.5];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| q[i][k] * d[k] * q[j][k]).sum();
            }
        }
        let mut e = jacobi_eigenvalues(a, 3);
        e.sort_by(f64::total_cmp);
        for (x, y) in e.iter().zip([-1.0, 0.5, 5.0]) {
            assert!((x - y).abs() < 1e-12, "{e:?}");
        }
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [0.0, 1.0, 2.0, 10.0];
        assert_eq!(percentile(&v, 50.0), 1.5);
        assert_eq!(percentile(&v, 75.0), 4.0);
        assert_eq!(percentile(&v, 100.0), 10.0);
        assert_eq!(percentile(&[3.0], 90.0), 3.0);
    }
}
