//! `w.pca` (science spec S10, V4.6, V4.7): the principal components of W, fixed eigenvector
//! signs, every token's projection on the leading PCs and its spherical "sky" coordinates.
//!
//! Numerics, in order:
//! - **Mean μ**: the exact f64 up-cast of every BF16/F32 element, summed in f64 over fixed blocks
//!   of rows (block partial sums added in block order, so the bytes never depend on the thread
//!   count), divided by V, then rounded once to `precision` (f32 like the originals, or f64). A
//!   non-finite mean means W holds inf/NaN: the stage stops.
//! - **Covariance** C = Σ (w − μ)ᵀ(w − μ) / N or / (N − 1), in `precision`, W never copied whole:
//!   blocks of rows (at most 8·D rows and about 32 MiB of f64; a function of D alone) are taken in
//!   order; the D columns are cut into tiles of a fixed width (⌈D/8⌉ clamped to 8…256, so 256 at
//!   Qwen size; the last tile narrower). Per block every tile is up-cast exactly and centred in
//!   `precision` once, and every upper tile pair (i ≤ j, about half the D² products) adds its
//!   product into its own accumulator with a one-thread libtorch `addmm_`, the pairs spread over
//!   rayon threads. At the end the accumulators are divided by the divisor and mirrored (diagonal
//!   tiles from their upper half), so C is exactly symmetric.
//! - **Eigendecomposition**: libtorch `linalg_eigh` (lower triangle) on the CPU, one thread (CPU
//!   is the only place the originals could run it: MPS has no eigh); eigenvalues sorted descending
//!   by a stable sort of libtorch's ascending order (equal eigenvalues keep libtorch's order),
//!   eigenvectors permuted alongside and stored as rows.
//! - **Signs** (`signs` = `centroid`, V4.6): for each PC e (as stored, up-cast to f64), s = e · c
//!   with c the population-weighted centroid of all black-hole tokens, raw (uncentred), in f64 from
//!   the exact rows; if there are no black holes (input not connected, or none in it) or s is
//!   exactly 0, s = e · μ; if that is 0 too, s = the component of largest magnitude (first such
//!   index). e is negated when s < 0; `flips` records it. `none` keeps libtorch's signs. The
//!   rule is exactly V4.6 (no tolerance around 0), so a PC nearly orthogonal to the centroid can
//!   change sign with the last bits of its eigenvector; the summary reports the weakest decision
//!   (`weakest_pc`, `weakest_cos` = |cos| between the PC and the deciding vector).
//! - **Projections**: the leading m = max(k, |north|, |meridian|, |equinox|) PCs, as a matrix in
//!   `precision`, multiply the row blocks of raw rows (`frame` = raw) or centred rows (`centred`),
//!   each block one one-thread libtorch `mm` on a rayon thread, written in block order. `pcs` keeps
//!   the first k columns (rounded to F32); k = min(`components`, D).
//! - **Sphere**: x = ±proj[|meridian|], y = ±proj[|equinox|], z = ±proj[|north|] (a negative index
//!   negates), r = √(x² + y² + z²), lat = asin(clamp(z / r, −1, 1)), lon = atan2(y, x), in degrees,
//!   all in f64 from the `precision` projections, stored as F32. A row with r = 0 gets lat = 0 and
//!   lon = 0. `lat_flat` (V4.7): tokens stably sorted by (stored F32 `lat`, token id); the token at
//!   sorted position j gets 90 · (2j / (V − 1) − 1) (0 when V = 1).
//!
//! Determinism: the same input and params give the same bytes whatever `ctx.threads` is. libtorch
//! runs on one intra-op thread throughout (set under a process-wide lock, and on every rayon worker
//! before it touches a tensor), so no BLAS/LAPACK call splits a reduction by thread count; the
//! parallelism is rayon's, over pieces fixed by V and D alone (row blocks, column tiles, tile
//! pairs), each reduced in the same order by the same single-threaded kernel on whichever thread
//! runs it. Tests check byte identity across 1, 2 and 3 threads. The stage always computes on the
//! CPU, so the device kind does not enter its results. Env `AZIMUTH_PCA_TIMINGS` prints the wall
//! time of each phase on stderr (benchmarks only; the outputs never depend on it).

use std::collections::BTreeMap;

use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use azimuth_stage_api::specs::w_pca::PCA as SPEC;

use azimuth_stages::io::{write_safetensors, TensorOut};
use azimuth_stages::lattice::Format;
use azimuth_stages::params::Params;
use azimuth_stages::w_analysis::{load_black_holes, load_w, with_threads, Matrix, LATTICE_DTYPES};
use azimuth_stages::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Serializes libtorch work of this stage within one process (the thread count is global).
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes of one block of up-cast rows (f64 worst case); the block's row count depends only on D.
const BLOCK_BYTES: usize = 32 << 20;

/// Widest covariance tile (columns): 256 × 256 products keep a one-thread BLAS kernel efficient and
/// give a Qwen-sized D (2,560) 55 upper tile pairs to spread over threads.
const TILE_MAX: usize = 256;

/// The float type the stage computes in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Precision {
    F32,
    F64,
}

impl Precision {
    fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::F64 => Kind::Double,
        }
    }
    fn dtype(self) -> Dtype {
        match self {
            Precision::F32 => Dtype::F32,
            Precision::F64 => Dtype::F64,
        }
    }
    /// `x` rounded to this precision (as f64).
    fn round(self, x: f64) -> f64 {
        match self {
            Precision::F32 => x as f32 as f64,
            Precision::F64 => x,
        }
    }
    /// Little-endian bytes of `values` in this precision.
    fn bytes(self, values: &[f64]) -> Vec<u8> {
        match self {
            Precision::F32 => values
                .iter()
                .flat_map(|&x| (x as f32).to_le_bytes())
                .collect(),
            Precision::F64 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// How one PC's sign was decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignBasis {
    /// `signs` = none: libtorch's sign kept.
    Libtorch,
    /// The black-hole centroid's projection.
    Centroid,
    /// The mean's projection (no black holes, or the centroid's projection was 0).
    Mean,
    /// The largest-magnitude component.
    LargestComponent,
}

/// Decides the sign of eigenvector `e` (V4.6): `(negate?, basis)`.
pub(crate) fn sign_rule(e: &[f64], centroid: Option<&[f64]>, mean: &[f64]) -> (bool, SignBasis) {
    let dot = |v: &[f64]| -> f64 { e.iter().zip(v).map(|(a, b)| a * b).sum() };
    if let Some(c) = centroid {
        let s = dot(c);
        if s != 0.0 {
            return (s < 0.0, SignBasis::Centroid);
        }
    }
    let s = dot(mean);
    if s != 0.0 {
        return (s < 0.0, SignBasis::Mean);
    }
    let mut best = 0usize;
    for (j, x) in e.iter().enumerate() {
        if x.abs() > e[best].abs() {
            best = j;
        }
    }
    (
        e.get(best).is_some_and(|&x| x < 0.0),
        SignBasis::LargestComponent,
    )
}

/// Latitude and longitude in degrees of (x, y, z) (S10; r = 0 gives (0, 0)).
pub(crate) fn lat_lon(x: f64, y: f64, z: f64) -> (f64, f64, f64) {
    let r = (x * x + y * y + z * z).sqrt();
    if r == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let lat = (z / r).clamp(-1.0, 1.0).asin().to_degrees();
    let lon = y.atan2(x).to_degrees();
    (r, lat, lon)
}

/// CDF-flattened latitudes (V4.7): stable rank by (lat, token id) mapped onto [−90°, +90°].
pub(crate) fn flatten_latitudes(lat: &[f32]) -> Vec<f32> {
    let n = lat.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| lat[a as usize].total_cmp(&lat[b as usize]).then(a.cmp(&b)));
    let mut flat = vec![0f32; n];
    if n > 1 {
        for (j, &t) in order.iter().enumerate() {
            flat[t as usize] = (90.0 * (2.0 * j as f64 / (n - 1) as f64 - 1.0)) as f32;
        }
    }
    flat
}

#[derive(Debug, Serialize)]
struct Stats {
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
}

fn stats(v: &[f32]) -> Option<Stats> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (x as f64 - mean) * (x as f64 - mean))
        .sum::<f64>()
        / n;
    Some(Stats {
        min: v.iter().map(|&x| x as f64).fold(f64::INFINITY, f64::min),
        max: v
            .iter()
            .map(|&x| x as f64)
            .fold(f64::NEG_INFINITY, f64::max),
        mean,
        std: var.sqrt(),
    })
}

#[derive(Debug, Serialize)]
struct SignSummary {
    rule: String,
    black_holes: usize,
    black_hole_tokens: usize,
    /// ‖centroid‖₂ of the black-hole tokens (raw), if any.
    centroid_norm: Option<f64>,
    decided_by_centroid: usize,
    decided_by_mean: usize,
    decided_by_largest_component: usize,
    flipped: usize,
    /// The PC (1-based) whose sign was decided by the smallest |cos(e, reference)|, and that
    /// cosine: near 0 the sign can change with last-bit changes of the eigenvector (e.g. another
    /// thread count).
    weakest_pc: Option<usize>,
    weakest_cos: Option<f64>,
    /// How PC1…PC10 were decided and whether each was flipped.
    leading: Vec<(SignBasis, bool)>,
}

#[derive(Debug, Serialize)]
struct VarianceShares {
    pc1: f64,
    pc2: Option<f64>,
    pc3: Option<f64>,
    top3: f64,
    top10: f64,
    top100: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    format: u32,
    tensor: String,
    dtype: String,
    rows: usize,
    cols: usize,
    precision: String,
    divisor: String,
    frame: String,
    components: usize,
    north: i64,
    meridian: i64,
    equinox: i64,
    mean_norm: f64,
    total_variance: f64,
    /// λ1…λ10 (fewer when D < 10).
    eigenvalues_leading: Vec<f64>,
    /// The last five eigenvalues, λ(D−4)…λD.
    eigenvalues_trailing: Vec<f64>,
    /// Percent of the total variance.
    variance_explained_pct: VarianceShares,
    signs: SignSummary,
    r: Option<Stats>,
    lat: Option<Stats>,
    lon: Option<Stats>,
    x: Option<Stats>,
    y: Option<Stats>,
    z: Option<Stats>,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let name = p.string("tensor")?;
    let precision = match p.string("precision")?.as_str() {
        "f32" => Precision::F32,
        _ => Precision::F64,
    };
    let divisor = p.string("divisor")?;
    let k = p.int("components")? as usize;
    let signs = p.string("signs")?;
    let (north, meridian, equinox) = (p.int("north")?, p.int("meridian")?, p.int("equinox")?);
    let frame = p.string("frame")?;
    let (basis_out, proj_out, summary_out) = (
        p.output("basis")?,
        p.output("projections")?,
        p.output("summary")?,
    );

    let w = load_w(&p)?;
    let m = w.matrix(
        &p,
        &name,
        LATTICE_DTYPES,
        "PCA up-casts BF16 or F32 exactly",
    )?;
    let fmt = m.format().expect("BF16 or F32");
    let (rows, d) = (m.rows, m.cols);
    let min_rows = if divisor == "n-1" { 2 } else { 1 };
    if rows < min_rows {
        return Err(p.error(format!(
            "`{}`, tensor `{name}` has {rows} rows; the covariance with divisor `{divisor}` needs \
             at least {min_rows}",
            w.path.display()
        )));
    }
    // At most D PCs exist: a small model (D < k) gets all of them.
    let k = k.min(d);
    for (pname, idx) in [
        ("north", north),
        ("meridian", meridian),
        ("equinox", equinox),
    ] {
        if idx == 0 || idx.unsigned_abs() as usize > d {
            return Err(p.error(format!(
                "param `{pname}` = {idx}: a PC index must be 1…{d} (negative to flip), not 0 or \
                 beyond D"
            )));
        }
    }
    let black_holes = if p.optional_inputs("black_holes").is_empty() {
        None
    } else {
        Some(load_black_holes(&p, "black_holes", rows)?)
    };

    let block_rows = block_rows(d);
    let threads = ctx.threads;
    let mut timer = PhaseTimer::from_env();

    // Mean and black-hole centroid, exact up-cast, f64 (thread-independent).
    let (mean_f64, centroid) = with_threads(&p, threads, || {
        let mean = column_mean(&m, fmt, block_rows);
        let centroid = black_holes.as_ref().and_then(|bh| {
            let tokens: Vec<u32> = bh.members.iter().flatten().copied().collect();
            (!tokens.is_empty()).then(|| {
                let mut sum = vec![0f64; d];
                let mut sorted = tokens.clone();
                sorted.sort_unstable();
                for &t in &sorted {
                    let row = m.row(t as usize);
                    for (j, s) in sum.iter_mut().enumerate() {
                        *s += fmt.to_f64(fmt.pattern(row, j));
                    }
                }
                sum.iter()
                    .map(|s| s / sorted.len() as f64)
                    .collect::<Vec<f64>>()
            })
        });
        (mean, centroid)
    })?;
    if mean_f64.iter().any(|x| !x.is_finite()) {
        return Err(p.error(format!(
            "`{}`, tensor `{name}` holds inf or NaN values (its column mean is not finite); PCA \
             needs finite W",
            w.path.display()
        )));
    }
    let mean: Vec<f64> = mean_f64.iter().map(|&x| precision.round(x)).collect();
    timer.mark("mean");

    let torch_err =
        |what: &str, e: tch::TchError| p.error(format!("libtorch failed to {what}: {e}"));
    let _torch = TORCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // libtorch on one intra-op thread here and in every rayon worker: the parallelism is rayon's,
    // over pieces of work fixed by V and D alone.
    tch::set_num_threads(1);
    let kind = precision.kind();
    let tiles = column_tiles(d);
    let denom = if divisor == "n-1" { rows - 1 } else { rows } as f64;
    let cov = match precision {
        Precision::F32 => covariance::<f32>(&p, &m, fmt, &mean, block_rows, &tiles, denom, threads),
        Precision::F64 => covariance::<f64>(&p, &m, fmt, &mean, block_rows, &tiles, denom, threads),
    }?;
    timer.mark("covariance");
    let (values_t, vectors_t) = cov
        .f_linalg_eigh("L")
        .map_err(|e| torch_err("diagonalise the covariance (linalg_eigh)", e))?;
    drop(cov);
    let values_asc = to_f64(&values_t).map_err(|e| torch_err("copy the eigenvalues", e))?;
    // Columns are eigenvectors: transpose so row i is the eigenvector of values_asc[i].
    let vectors_asc = vectors_t
        .f_tr()
        .map_err(|e| torch_err("transpose the eigenvectors", e))
        .and_then(|t| to_f64(&t).map_err(|e| torch_err("copy the eigenvectors", e)))?;
    drop((values_t, vectors_t));
    timer.mark("eigh");

    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| values_asc[b].total_cmp(&values_asc[a]));
    let eigenvalues: Vec<f64> = order.iter().map(|&i| values_asc[i]).collect();
    let mut eigenvectors: Vec<f64> = Vec::with_capacity(d * d);
    let mut flips = vec![false; d];
    let mut bases = Vec::with_capacity(d);
    // The PC whose deciding projection is closest to 0 (|cos| between e and the reference).
    let mut weakest: Option<(usize, f64)> = None;
    for (pc, &i) in order.iter().enumerate() {
        let e = &vectors_asc[i * d..(i + 1) * d];
        let (flip, basis) = if signs == "none" {
            (false, SignBasis::Libtorch)
        } else {
            sign_rule(e, centroid.as_deref(), &mean)
        };
        flips[pc] = flip;
        bases.push(basis);
        let reference = match basis {
            SignBasis::Centroid => centroid.as_deref(),
            SignBasis::Mean => Some(&mean[..]),
            _ => None,
        };
        if let Some(v) = reference {
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = e.iter().zip(v).map(|(a, b)| a * b).sum::<f64>().abs() / norm;
            if weakest.is_none_or(|(_, c)| cos < c) {
                weakest = Some((pc + 1, cos));
            }
        }
        eigenvectors.extend(e.iter().map(|&x| if flip { -x } else { x }));
    }
    drop(vectors_asc);

    // Projections on the leading m PCs.
    let axis = |idx: i64| (idx.unsigned_abs() as usize - 1, idx < 0);
    let (ax_x, ax_y, ax_z) = (axis(meridian), axis(equinox), axis(north));
    let m_pcs = k.max(ax_x.0 + 1).max(ax_y.0 + 1).max(ax_z.0 + 1);
    let basis_t = Tensor::f_from_slice(&eigenvectors[..m_pcs * d])
        .and_then(|t| t.f_view([m_pcs as i64, d as i64]))
        .and_then(|t| t.f_to_kind(kind))
        .and_then(|t| t.f_tr())
        .map_err(|e| torch_err("hold the leading PCs", e))?;
    let centre = (frame == "centred").then_some(&mean[..]);
    let proj = match precision {
        Precision::F32 => project::<f32>(&p, &m, fmt, centre, &basis_t, block_rows, threads),
        Precision::F64 => project::<f64>(&p, &m, fmt, centre, &basis_t, block_rows, threads),
    }?;
    drop(basis_t);
    drop(_torch);
    timer.mark("projections");

    let mut pcs: Vec<f32> = Vec::with_capacity(rows * k);
    let (mut xs, mut ys, mut zs) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let (mut rs, mut lats, mut lons) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for row in proj.chunks_exact(m_pcs) {
        pcs.extend(row[..k].iter().map(|&v| v as f32));
        let pick = |(j, neg): (usize, bool)| if neg { -row[j] } else { row[j] };
        let (x, y, z) = (pick(ax_x), pick(ax_y), pick(ax_z));
        let (r, lat, lon) = lat_lon(x, y, z);
        xs.push(x as f32);
        ys.push(y as f32);
        zs.push(z as f32);
        rs.push(r as f32);
        lats.push(lat as f32);
        lons.push(lon as f32);
    }
    drop(proj);
    let lat_flat = flatten_latitudes(&lats);

    // basis
    let meta: BTreeMap<String, String> = [
        ("tensor", name.clone()),
        ("divisor", divisor.clone()),
        ("signs", signs.clone()),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    let (vals_b, vecs_b, mean_b) = (
        precision.bytes(&eigenvalues),
        precision.bytes(&eigenvectors),
        precision.bytes(&mean),
    );
    let flips_b: Vec<u8> = flips.iter().map(|&f| f as u8).collect();
    let dt = precision.dtype();
    write_safetensors(
        basis_out,
        &[
            TensorOut {
                name: "eigenvalues",
                dtype: dt,
                shape: vec![d],
                data: &vals_b,
            },
            TensorOut {
                name: "eigenvectors",
                dtype: dt,
                shape: vec![d, d],
                data: &vecs_b,
            },
            TensorOut {
                name: "mean",
                dtype: dt,
                shape: vec![d],
                data: &mean_b,
            },
            TensorOut {
                name: "flips",
                dtype: Dtype::BOOL,
                shape: vec![d],
                data: &flips_b,
            },
        ],
        &meta,
    )
    .map_err(|e| p.error(e))?;

    // projections
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let named: [(&str, &Vec<f32>); 7] = [
        ("x", &xs),
        ("y", &ys),
        ("z", &zs),
        ("r", &rs),
        ("lat", &lats),
        ("lon", &lons),
        ("lat_flat", &lat_flat),
    ];
    let encoded: Vec<(&str, Vec<u8>)> = named.iter().map(|(n, v)| (*n, f32_bytes(v))).collect();
    let pcs_b = f32_bytes(&pcs);
    let mut tensors = vec![TensorOut {
        name: "pcs",
        dtype: Dtype::F32,
        shape: vec![rows, k],
        data: &pcs_b,
    }];
    tensors.extend(encoded.iter().map(|(n, b)| TensorOut {
        name: n,
        dtype: Dtype::F32,
        shape: vec![rows],
        data: b,
    }));
    let mut pmeta = meta.clone();
    pmeta.insert("frame".into(), frame.clone());
    pmeta.insert(
        "axes".into(),
        format!("north={north},meridian={meridian},equinox={equinox}"),
    );
    write_safetensors(proj_out, &tensors, &pmeta).map_err(|e| p.error(e))?;

    // summary
    let total: f64 = eigenvalues.iter().sum();
    let pct = |n: usize| 100.0 * eigenvalues[..n.min(d)].iter().sum::<f64>() / total;
    let count = |b: SignBasis| bases.iter().filter(|&&x| x == b).count();
    let summary = Summary {
        format: FORMAT,
        tensor: name,
        dtype: m.dtype.to_string(),
        rows,
        cols: d,
        precision: p.string("precision")?,
        divisor,
        frame,
        components: k,
        north,
        meridian,
        equinox,
        mean_norm: mean.iter().map(|x| x * x).sum::<f64>().sqrt(),
        total_variance: total,
        eigenvalues_leading: eigenvalues[..d.min(10)].to_vec(),
        eigenvalues_trailing: eigenvalues[d.saturating_sub(5)..].to_vec(),
        variance_explained_pct: VarianceShares {
            pc1: pct(1),
            pc2: (d >= 2).then(|| 100.0 * eigenvalues[1] / total),
            pc3: (d >= 3).then(|| 100.0 * eigenvalues[2] / total),
            top3: pct(3),
            top10: pct(10),
            top100: pct(100),
        },
        signs: SignSummary {
            rule: signs,
            black_holes: black_holes.as_ref().map_or(0, |b| b.members.len()),
            black_hole_tokens: black_holes.as_ref().map_or(0, |b| b.tokens()),
            centroid_norm: centroid
                .as_ref()
                .map(|c| c.iter().map(|x| x * x).sum::<f64>().sqrt()),
            decided_by_centroid: count(SignBasis::Centroid),
            decided_by_mean: count(SignBasis::Mean),
            decided_by_largest_component: count(SignBasis::LargestComponent),
            flipped: flips.iter().filter(|&&f| f).count(),
            weakest_pc: weakest.map(|w| w.0),
            weakest_cos: weakest.map(|w| w.1),
            leading: bases
                .iter()
                .zip(&flips)
                .take(10)
                .map(|(&b, &f)| (b, f))
                .collect(),
        },
        r: stats(&rs),
        lat: stats(&lats),
        lon: stats(&lons),
        x: stats(&xs),
        y: stats(&ys),
        z: stats(&zs),
    };
    p.write_json(summary_out, &summary)
}

/// Wall times of the stage's phases on stderr, when env `AZIMUTH_PCA_TIMINGS` is set (for
/// benchmarks; the outputs never depend on it).
struct PhaseTimer(Option<std::time::Instant>);

impl PhaseTimer {
    fn from_env() -> Self {
        PhaseTimer(std::env::var_os("AZIMUTH_PCA_TIMINGS").map(|_| std::time::Instant::now()))
    }
    fn mark(&mut self, phase: &str) {
        if let Some(t) = &mut self.0 {
            eprintln!("w.pca {phase}: {:.2} s", t.elapsed().as_secs_f64());
            *t = std::time::Instant::now();
        }
    }
}

/// Column means of W in f64 from the exact up-cast; block partial sums added in block order.
fn column_mean(m: &Matrix<'_>, fmt: Format, block_rows: usize) -> Vec<f64> {
    let d = m.cols;
    let partials: Vec<Vec<f64>> = m
        .data
        .par_chunks(block_rows * m.row_bytes())
        .map(|block| {
            let mut sum = vec![0f64; d];
            for row in block.chunks_exact(m.row_bytes()) {
                for (j, s) in sum.iter_mut().enumerate() {
                    *s += fmt.to_f64(fmt.pattern(row, j));
                }
            }
            sum
        })
        .collect();
    let mut total = vec![0f64; d];
    for part in &partials {
        for (t, s) in total.iter_mut().zip(part) {
            *t += s;
        }
    }
    total.iter().map(|t| t / m.rows as f64).collect()
}

/// A float type the stage computes in (`precision`): f32 or f64.
trait Real:
    tch::kind::Element
    + Copy
    + Default
    + Send
    + Sync
    + From<f32>
    + std::ops::Sub<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// `x` rounded to this type.
    fn from_f64(x: f64) -> Self;
}

impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// Rows per block of every blocked pass: about `BLOCK_BYTES` of f64, and at most 8·D rows (so a
/// small W still has several blocks). A function of D alone, never of the thread count.
fn block_rows(d: usize) -> usize {
    (BLOCK_BYTES / (8 * d)).min(8 * d).max(1)
}

/// The covariance's column tiles as (first column, width): width ⌈D/8⌉ clamped to 8…`TILE_MAX`,
/// the last tile taking the remainder. A function of D alone, never of the thread count.
fn column_tiles(d: usize) -> Vec<(usize, usize)> {
    let width = d.div_ceil(8).clamp(8, TILE_MAX);
    (0..d)
        .step_by(width)
        .map(|c0| (c0, width.min(d - c0)))
        .collect()
}

/// The covariance Σ (w − μ)ᵀ(w − μ) / `denom` of W in `T`, D × D and exactly symmetric, as a
/// libtorch tensor.
///
/// The row blocks go in order. In each, every column tile is up-cast and centred once (rayon over
/// tiles), then every upper tile pair (i ≤ j) adds its product into that pair's own accumulator
/// with a one-thread libtorch `addmm_` (rayon over pairs). Each accumulator thus sums the same
/// blocks in the same order with the same single-threaded kernel whatever the thread count. At
/// the end the upper tiles (the upper triangle of diagonal tiles) are divided by `denom` and
/// mirrored.
#[allow(clippy::too_many_arguments)]
fn covariance<T: Real>(
    p: &Params<'_>,
    m: &Matrix<'_>,
    fmt: Format,
    mean: &[f64],
    block_rows: usize,
    tiles: &[(usize, usize)],
    denom: f64,
    threads: usize,
) -> Result<Tensor, StageError> {
    let torch_err =
        |what: &str, e: tch::TchError| p.error(format!("libtorch failed to {what}: {e}"));
    let d = m.cols;
    let mean: Vec<T> = mean.iter().map(|&x| T::from_f64(x)).collect();
    let pairs: Vec<(usize, usize)> = (0..tiles.len())
        .flat_map(|i| (i..tiles.len()).map(move |j| (i, j)))
        .collect();
    let mut accumulators = pairs
        .iter()
        .map(|&(i, j)| {
            Tensor::f_zeros(
                [tiles[i].1 as i64, tiles[j].1 as i64],
                (T::KIND, Device::Cpu),
            )
        })
        .collect::<Result<Vec<Tensor>, _>>()
        .map_err(|e| torch_err("allocate the covariance (out of memory?)", e))?;
    with_threads(p, threads, || -> Result<(), tch::TchError> {
        rayon::broadcast(|_| tch::set_num_threads(1));
        for start in (0..m.rows).step_by(block_rows) {
            let n = block_rows.min(m.rows - start);
            let columns = tiles
                .par_iter()
                .map(|&(c0, w)| block_tensor(m, fmt, start, n, c0, w, Some(&mean)))
                .collect::<Result<Vec<Tensor>, _>>()?;
            let operands = pairs
                .iter()
                .map(|&(i, j)| Ok((columns[i].f_tr()?, columns[j].shallow_clone())))
                .collect::<Result<Vec<(Tensor, Tensor)>, tch::TchError>>()?;
            accumulators
                .par_iter_mut()
                .zip(operands)
                .try_for_each(|(acc, (a, b))| acc.f_addmm_(&a, &b).map(drop))?;
        }
        Ok(())
    })?
    .map_err(|e| torch_err("accumulate the covariance", e))?;

    let denom = T::from_f64(denom);
    let mut full = vec![T::default(); d * d];
    let mut tile = Vec::new();
    for (&(i, j), acc) in pairs.iter().zip(&accumulators) {
        let ((r0, h), (c0, w)) = (tiles[i], tiles[j]);
        tile.resize(h * w, T::default());
        acc.f_copy_data(&mut tile, h * w)
            .map_err(|e| torch_err("copy the covariance", e))?;
        for a in 0..h {
            // A diagonal tile's lower half is the mirror of its upper half.
            let first = if i == j { a } else { 0 };
            for b in first..w {
                let v = tile[a * w + b] / denom;
                full[(r0 + a) * d + c0 + b] = v;
                full[(c0 + b) * d + r0 + a] = v;
            }
        }
    }
    drop(accumulators);
    Tensor::f_from_slice(&full)
        .and_then(|t| t.f_view([d as i64, d as i64]))
        .map_err(|e| torch_err("hold the covariance", e))
}

/// Rows of W (raw, or minus `mean` rounded to `T`) times `basis` (D × m, in `T`): fixed row blocks
/// in parallel (rayon), each one one-thread libtorch `mm`; the products as f64, row-major V × m.
fn project<T: Real>(
    p: &Params<'_>,
    m: &Matrix<'_>,
    fmt: Format,
    mean: Option<&[f64]>,
    basis: &Tensor,
    block_rows: usize,
    threads: usize,
) -> Result<Vec<f64>, StageError> {
    let mean: Option<Vec<T>> = mean.map(|mu| mu.iter().map(|&x| T::from_f64(x)).collect());
    // Tensors are Send but not Sync: every block gets its own handle on the basis.
    let jobs: Vec<(usize, Tensor)> = (0..m.rows)
        .step_by(block_rows)
        .map(|start| (start, basis.shallow_clone()))
        .collect();
    let blocks = with_threads(p, threads, || {
        rayon::broadcast(|_| tch::set_num_threads(1));
        jobs.into_par_iter()
            .map(|(start, basis)| {
                let n = block_rows.min(m.rows - start);
                let x = block_tensor(m, fmt, start, n, 0, m.cols, mean.as_deref())?;
                to_f64(&x.f_mm(&basis)?)
            })
            .collect::<Result<Vec<Vec<f64>>, tch::TchError>>()
    })?
    .map_err(|e| p.error(format!("libtorch failed to project W on the PCs: {e}")))?;
    Ok(blocks.concat())
}

/// Rows `start..start + n`, columns `c0..c0 + w` of W up-cast exactly to `T` and, given `mean`,
/// minus the mean in `T`, as an n × w libtorch tensor.
fn block_tensor<T: Real>(
    m: &Matrix<'_>,
    fmt: Format,
    start: usize,
    n: usize,
    c0: usize,
    w: usize,
    mean: Option<&[T]>,
) -> Result<Tensor, tch::TchError> {
    let (rb, eb) = (m.row_bytes(), fmt.bytes());
    let mut buf: Vec<T> = Vec::with_capacity(n * w);
    for r in start..start + n {
        let bytes = &m.data[r * rb + c0 * eb..r * rb + (c0 + w) * eb];
        let from = buf.len();
        match fmt {
            Format::Bf16 => buf.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| T::from(fmt.to_f32(u16::from_le_bytes([b[0], b[1]]) as u32))),
            ),
            Format::F32 => buf.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| T::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            ),
        }
        if let Some(mu) = mean {
            for (x, &u) in buf[from..].iter_mut().zip(&mu[c0..c0 + w]) {
                *x = *x - u;
            }
        }
    }
    Tensor::f_from_slice(&buf)?.f_view([n as i64, w as i64])
}

/// All elements of `t` (any float kind) as f64, row-major.
fn to_f64(t: &Tensor) -> Result<Vec<f64>, tch::TchError> {
    let t = t.f_to_kind(Kind::Double)?.f_contiguous()?.f_reshape([-1])?;
    let n = t.numel();
    let mut out = vec![0f64; n];
    t.f_copy_data(&mut out, n)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_rule_prefers_centroid_then_mean_then_largest_component() {
        let e = [0.5, -0.75];
        assert_eq!(
            sign_rule(&e, Some(&[1.0, 1.0]), &[1.0, 0.0]),
            (true, SignBasis::Centroid)
        );
        // centroid orthogonal to e: the mean decides
        assert_eq!(
            sign_rule(&e, Some(&[3.0, 2.0]), &[1.0, 0.0]),
            (false, SignBasis::Mean)
        );
        assert_eq!(sign_rule(&e, None, &[0.0, 1.0]), (true, SignBasis::Mean));
        assert_eq!(
            sign_rule(&e, None, &[0.0, 0.0]),
            (true, SignBasis::LargestComponent)
        );
        assert_eq!(
            sign_rule(&[0.5, -0.5], None, &[0.0, 0.0]),
            (false, SignBasis::LargestComponent)
        );
    }

    #[test]
    fn spherical_coordinates_of_hand_picked_vectors() {
        assert_eq!(lat_lon(1.0, 0.0, 0.0), (1.0, 0.0, 0.0));
        let (r, lat, lon) = lat_lon(0.0, 2.0, 0.0);
        assert_eq!((r, lat, lon), (2.0, 0.0, 90.0));
        let (r, lat, _) = lat_lon(0.0, 0.0, -3.0);
        assert_eq!((r, lat), (3.0, -90.0));
        let (r, lat, lon) = lat_lon(-1.0, -1.0, 2f64.sqrt());
        assert!((r - 2.0).abs() < 1e-15 && (lat - 45.0).abs() < 1e-12);
        assert!((lon + 135.0).abs() < 1e-12);
        assert_eq!(lat_lon(0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
    }

    #[test]
    fn tiles_and_blocks_depend_on_d_alone_and_cover_it() {
        assert_eq!(
            column_tiles(37),
            vec![(0, 8), (8, 8), (16, 8), (24, 8), (32, 5)]
        );
        assert_eq!(column_tiles(3), vec![(0, 3)]);
        let qwen = column_tiles(2560);
        assert_eq!(qwen.len(), 10);
        assert!(qwen.iter().all(|&(_, w)| w == TILE_MAX));
        let smol = column_tiles(576);
        assert_eq!((smol.len(), smol[0].1), (8, 72));
        for d in [1, 7, 37, 255, 577, 4097] {
            let tiles = column_tiles(d);
            assert_eq!(tiles[0].0, 0);
            assert!(tiles.windows(2).all(|t| t[0].0 + t[0].1 == t[1].0));
            let last = tiles.last().unwrap();
            assert_eq!(last.0 + last.1, d);
        }
        assert_eq!(block_rows(37), 296);
        assert_eq!(block_rows(2560), BLOCK_BYTES / (8 * 2560));
        assert_eq!(block_rows(1), 8);
    }

    #[test]
    fn flattening_ranks_ties_by_token_id() {
        let flat = flatten_latitudes(&[10.0, -5.0, 10.0, 3.0, -5.0]);
        // order: 1 (−5), 4 (−5), 3, 0 (10), 2 (10) → −90, −45, 0, 45, 90
        assert_eq!(flat, vec![45.0, -90.0, 90.0, 0.0, -45.0]);
        assert_eq!(flatten_latitudes(&[7.0]), vec![0.0]);
    }
}
