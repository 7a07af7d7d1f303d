//! `w.pca` (science spec S10, V4.6, V4.7): the principal components of W, fixed eigenvector
//! signs, every token's projection on the leading PCs and its spherical "sky" coordinates.
//!
//! Numerics, in order:
//! - **Mean μ**: the exact f64 up-cast of every BF16/F32 element, summed in f64 over fixed blocks
//!   of rows (block partial sums added in block order, so the bytes never depend on the thread
//!   count), divided by V, then rounded once to `precision` (f32 like the originals, or f64). A
//!   non-finite mean means W holds inf/NaN: the stage stops.
//! - **Covariance** C = Σ (w − μ)ᵀ(w − μ) / N or / (N − 1): blocks of rows (a fixed number that
//!   depends only on D, about 32 MiB each) are up-cast exactly, centred in `precision`, and
//!   accumulated with libtorch's `addmm_` into one D × D matrix in `precision`; W is never copied
//!   whole.
//! - **Eigendecomposition**: libtorch `linalg_eigh` (lower triangle) on the CPU (CPU is the only
//!   place the originals could run it: MPS has no eigh); eigenvalues sorted descending by a stable
//!   sort of libtorch's ascending order (equal eigenvalues keep libtorch's order), eigenvectors
//!   permuted alongside and stored as rows.
//! - **Signs** (`signs` = `centroid`, V4.6): for each PC e (as stored, up-cast to f64), s = e · c
//!   with c the population-weighted centroid of all black-hole tokens, raw (uncentred), in f64 from
//!   the exact rows; if there are no black holes (input not connected, or none in it) or s is
//!   exactly 0, s = e · μ; if that is 0 too, s = the component of largest magnitude (first such
//!   index). e is negated when s < 0; `flips` records it. `none` keeps libtorch's signs. The
//!   rule is exactly V4.6 (no tolerance around 0), so a PC nearly orthogonal to the centroid can
//!   change sign with the last bits of its eigenvector; the summary reports the weakest decision
//!   (`weakest_pc`, `weakest_cos` = |cos| between the PC and the deciding vector).
//! - **Projections**: the leading m = max(k, |north|, |meridian|, |equinox|) PCs, as a matrix in
//!   `precision`, multiply blocks of raw rows (`frame` = raw) or centred rows (`centred`) with
//!   libtorch `matmul`. `pcs` keeps the first k columns (rounded to F32); k = min(`components`, D).
//! - **Sphere**: x = ±proj[|meridian|], y = ±proj[|equinox|], z = ±proj[|north|] (a negative index
//!   negates), r = √(x² + y² + z²), lat = asin(clamp(z / r, −1, 1)), lon = atan2(y, x), in degrees,
//!   all in f64 from the `precision` projections, stored as F32. A row with r = 0 gets lat = 0 and
//!   lon = 0. `lat_flat` (V4.7): tokens stably sorted by (stored F32 `lat`, token id); the token at
//!   sorted position j gets 90 · (2j / (V − 1) − 1) (0 when V = 1).
//!
//! Determinism: everything outside libtorch is thread-independent. libtorch runs on `ctx.threads`
//! intra-op threads (set under a process-wide lock, so two PCA runs in one process cannot change
//! each other's thread count); the same input and thread count give the same bytes, but BLAS/LAPACK
//! may block their reductions differently for another thread count, so outputs can differ in the
//! last bits between thread counts (tests check agreement to 1e-5 relative). The stage always
//! computes on the CPU, so the device kind does not enter its results.

use std::collections::BTreeMap;

use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use azimuth_stage_api::specs::w_pca::PCA as SPEC;

use crate::io::{write_safetensors, TensorOut};
use crate::lattice::Format;
use crate::params::Params;
use crate::w_analysis::{load_black_holes, load_w, with_threads, Matrix, LATTICE_DTYPES};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Serializes libtorch work of this stage within one process (the thread count is global).
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Bytes of one block of up-cast rows (f64 worst case); the block's row count depends only on D.
const BLOCK_BYTES: usize = 32 << 20;

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
pub(crate) enum SignBasis {
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

    let block_rows = (BLOCK_BYTES / (8 * d)).max(1);
    let threads = ctx.threads;

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

    let torch_err =
        |what: &str, e: tch::TchError| p.error(format!("libtorch failed to {what}: {e}"));
    let _torch = TORCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::set_num_threads(threads.clamp(1, i32::MAX as usize) as i32);
    let kind = precision.kind();
    let mean_t = Tensor::f_from_slice(&mean)
        .and_then(|t| t.f_to_kind(kind))
        .map_err(|e| torch_err("hold the mean", e))?;

    // Covariance, block by block.
    let mut cov = Tensor::f_zeros([d as i64, d as i64], (kind, Device::Cpu))
        .map_err(|e| torch_err("allocate the D × D covariance (out of memory?)", e))?;
    let mut buf: Vec<f32> = Vec::new();
    for start in (0..rows).step_by(block_rows) {
        let n = block_rows.min(rows - start);
        let x = block_tensor(&p, &m, fmt, start, n, &mut buf, threads, kind)
            .and_then(|x| x.f_sub(&mean_t).map_err(|e| torch_err("centre a block", e)))?;
        let xt = x.f_tr().map_err(|e| torch_err("transpose a block", e))?;
        let _ = cov
            .f_addmm_(&xt, &x)
            .map_err(|e| torch_err("accumulate the covariance", e))?;
    }
    let denom = if divisor == "n-1" { rows - 1 } else { rows } as f64;
    let cov = cov
        .f_div_scalar(denom)
        .map_err(|e| torch_err("scale the covariance", e))?;
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
    for start in (0..rows).step_by(block_rows) {
        let n = block_rows.min(rows - start);
        let mut x = block_tensor(&p, &m, fmt, start, n, &mut buf, threads, kind)?;
        if frame == "centred" {
            x = x
                .f_sub(&mean_t)
                .map_err(|e| torch_err("centre a block", e))?;
        }
        let proj = x
            .f_matmul(&basis_t)
            .map_err(|e| torch_err("project a block", e))
            .and_then(|t| to_f64(&t).map_err(|e| torch_err("copy projections", e)))?;
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
    }
    drop(_torch);
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

/// Rows `start..start + n` of W up-cast exactly to f32 (rayon), as a libtorch tensor of `kind`.
#[allow(clippy::too_many_arguments)]
fn block_tensor(
    p: &Params<'_>,
    m: &Matrix<'_>,
    fmt: Format,
    start: usize,
    n: usize,
    buf: &mut Vec<f32>,
    threads: usize,
    kind: Kind,
) -> Result<Tensor, StageError> {
    let d = m.cols;
    buf.resize(n * d, 0.0);
    let rb = m.row_bytes();
    let src = &m.data[start * rb..(start + n) * rb];
    with_threads(p, threads, || {
        buf.par_chunks_mut(d)
            .zip(src.par_chunks(rb))
            .with_min_len(16)
            .for_each(|(out, row)| {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = fmt.to_f32(fmt.pattern(row, j));
                }
            })
    })?;
    Tensor::f_from_slice(&buf[..])
        .and_then(|t| t.f_view([n as i64, d as i64]))
        .and_then(|t| t.f_to_kind(kind))
        .map_err(|e| p.error(format!("libtorch failed to hold a block of W: {e}")))
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
    fn flattening_ranks_ties_by_token_id() {
        let flat = flatten_latitudes(&[10.0, -5.0, 10.0, 3.0, -5.0]);
        // order: 1 (−5), 4 (−5), 3, 0 (10), 2 (10) → −90, −45, 0, 45, 90
        assert_eq!(flat, vec![45.0, -90.0, 90.0, 0.0, -45.0]);
        assert_eq!(flatten_latitudes(&[7.0]), vec![0.0]);
    }
}
