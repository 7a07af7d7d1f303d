//! Tests of the `w_pca` family through `azimuth_stages_torch::run` (which runs `w.pca` itself and
//! hands `w.skymap` on to `azimuth_stages::run`): `w.pca` on a planted W whose
//! covariance is known exactly (rows μ ± s_i·3u_i along six orthogonal directions u_i with integer
//! 3u_i, so every element is exact in BF16 and F32 and λ_i = 18·s_i²/N), its sign rule (negating
//! W negates the basis), divisor and precision, spherical coordinates and flattening, bad inputs,
//! byte identity across runs and thread counts (1, 2, 3); `w.skymap` PNGs decoded with the `png`
//! crate (size, black background, the highlighted token's colour, byte identity).
//! `real_smollm2_pca_and_skymap` (ignored) runs both on the extracted SmolLM2 W;
//! `bench_pca_on_env_w` (ignored) times `w.pca` on any W at several thread counts.

use std::path::{Path, PathBuf};

use azimuth_stages_torch::{run, StageContext};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

fn ctx(
    params: Value,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, PathBuf)],
    threads: usize,
) -> StageContext {
    StageContext {
        instance: "pca".into(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_path_buf()]))
            .collect(),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    }
}

fn write_tensor(path: &Path, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) {
    let view = TensorView::new(dtype, shape.to_vec(), data).unwrap();
    safetensors::tensor::serialize_to_file([(name, view)], None, path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| {
            let b = half::bf16::from_f32(x);
            assert_eq!(b.to_f32(), x, "planted value {x} is exact in bf16");
            b.to_le_bytes()
        })
        .collect()
}

/// (1/3)·A is orthogonal; the six directions are A's rows in the first and in the last three
/// coordinates.
const A: [[f32; 3]; 3] = [[1.0, 2.0, 2.0], [2.0, 1.0, -2.0], [2.0, -2.0, 1.0]];
const D: usize = 6;
const MU: [f32; D] = [1.0, 2.0, -1.0, 0.5, 3.0, -2.0];
/// Amplitudes along the directions, in the order of the directions (not sorted).
const S: [f32; D] = [2.0, 4.0, 0.5, 2.5, 1.0, 3.0];

/// 3u_i, the integer direction i.
fn direction(i: usize) -> [f32; D] {
    let mut v = [0f32; D];
    let (block, row) = (i / 3, i % 3);
    v[3 * block..3 * block + 3].copy_from_slice(&A[row]);
    v
}

/// Rows μ + s_i·3u_i and μ − s_i·3u_i for each direction (V = 12), then `extra` copies of row 0.
fn planted(extra: usize) -> Vec<f32> {
    let mut w = Vec::new();
    for (i, s) in S.iter().enumerate() {
        let u = direction(i);
        for sign in [1.0f32, -1.0] {
            w.extend((0..D).map(|j| MU[j] + sign * s * u[j]));
        }
    }
    for _ in 0..extra {
        w.extend_from_within(0..D);
    }
    w
}

struct PcaOut {
    basis: Vec<u8>,
    projections: Vec<u8>,
    summary: Value,
    raw_summary: Vec<u8>,
}

fn pca(
    dir: &Path,
    w: &Path,
    black_holes: Option<&Path>,
    params: Value,
    threads: usize,
) -> Result<PcaOut, String> {
    let outs = [
        ("basis", dir.join("basis.safetensors")),
        ("projections", dir.join("projections.safetensors")),
        ("summary", dir.join("summary.json")),
    ];
    let mut inputs = vec![("w", w)];
    if let Some(b) = black_holes {
        inputs.push(("black_holes", b));
    }
    run("w.pca", &ctx(params, &inputs, &outs, threads)).map_err(|e| e.0)?;
    let raw_summary = std::fs::read(&outs[2].1).unwrap();
    Ok(PcaOut {
        basis: std::fs::read(&outs[0].1).unwrap(),
        projections: std::fs::read(&outs[1].1).unwrap(),
        summary: serde_json::from_slice(&raw_summary).unwrap(),
        raw_summary,
    })
}

/// A tensor of the file as f64 values (F32, F64) or 0/1 (BOOL).
fn values(file: &[u8], name: &str) -> (Vec<usize>, Vec<f64>) {
    let st = SafeTensors::deserialize(file).unwrap();
    let t = st.tensor(name).unwrap();
    let v = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::BOOL => t.data().iter().map(|&b| b as f64).collect(),
        other => panic!("unexpected dtype {other}"),
    };
    (t.shape().to_vec(), v)
}

fn dtype_of(file: &[u8], name: &str) -> Dtype {
    SafeTensors::deserialize(file)
        .unwrap()
        .tensor(name)
        .unwrap()
        .dtype()
}

/// A `w.black_holes`-style members file marking `tokens` as black hole 1.
fn members_file(path: &Path, rows: usize, tokens: &[usize]) {
    let mut ids = vec![0u8; rows];
    for &t in tokens {
        ids[t] = 1;
    }
    let mask: Vec<u8> = ids.iter().map(|&b| u8::from(b != 0)).collect();
    let a = TensorView::new(Dtype::U8, vec![rows], &ids).unwrap();
    let b = TensorView::new(Dtype::BOOL, vec![rows], &mask).unwrap();
    safetensors::tensor::serialize_to_file(
        [("black_hole_id", a), ("black_hole_mask", b)],
        None,
        path,
    )
    .unwrap();
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Expected eigenvalues (descending) and the planted direction index of each PC.
fn expected(divisor: f64) -> Vec<(f64, usize)> {
    let mut e: Vec<(f64, usize)> = (0..D)
        .map(|i| (2.0 * 9.0 * (S[i] as f64).powi(2) / divisor, i))
        .collect();
    e.sort_by(|a, b| b.0.total_cmp(&a.0));
    e
}

#[test]
fn pca_recovers_planted_eigenvalues_and_directions_in_both_precisions_and_divisors() {
    let dir = tempfile::tempdir().unwrap();
    let w = planted(0);
    let path = dir.path().join("w.safetensors");
    write_tensor(&path, "W", Dtype::F32, &[12, D], &f32_bytes(&w));
    for (precision, divisor, denom, tol) in [
        ("f32", "n", 12.0, 2e-6),
        ("f64", "n", 12.0, 1e-13),
        ("f32", "n-1", 11.0, 2e-6),
        ("f64", "n-1", 11.0, 1e-13),
    ] {
        let o = pca(
            dir.path(),
            &path,
            None,
            json!({"precision": precision, "divisor": divisor, "components": 4}),
            1,
        )
        .unwrap();
        let want_dtype = if precision == "f32" {
            Dtype::F32
        } else {
            Dtype::F64
        };
        for t in ["eigenvalues", "eigenvectors", "mean"] {
            assert_eq!(dtype_of(&o.basis, t), want_dtype, "{precision} {t}");
        }
        assert_eq!(dtype_of(&o.basis, "flips"), Dtype::BOOL);
        let (shape, lambda) = values(&o.basis, "eigenvalues");
        assert_eq!(shape, [D]);
        let (shape, vecs) = values(&o.basis, "eigenvectors");
        assert_eq!(shape, [D, D]);
        let (_, mean) = values(&o.basis, "mean");
        assert_eq!(mean, MU.iter().map(|&x| x as f64).collect::<Vec<_>>());
        let lambda1 = expected(denom)[0].0;
        for (pc, (want, i)) in expected(denom).into_iter().enumerate() {
            assert!(
                (lambda[pc] - want).abs() <= tol * lambda1,
                "{precision}/{divisor}: λ{} = {} ≠ {want}",
                pc + 1,
                lambda[pc]
            );
            let u: Vec<f64> = direction(i).iter().map(|&x| x as f64 / 3.0).collect();
            let e = &vecs[pc * D..(pc + 1) * D];
            assert!(
                (dot(e, &u).abs() - 1.0).abs() < 10.0 * tol.max(1e-6),
                "PC{}",
                pc + 1
            );
        }
        assert!(lambda.windows(2).all(|p| p[0] >= p[1]), "sorted descending");
        let s = &o.summary;
        assert_eq!(s["format"], json!(1));
        assert_eq!(s["eigenvalues_leading"].as_array().unwrap().len(), D);
        assert_eq!(s["eigenvalues_trailing"].as_array().unwrap().len(), 5);
        let total: f64 = lambda.iter().sum();
        let pc1 = s["variance_explained_pct"]["pc1"].as_f64().unwrap();
        assert!((pc1 - 100.0 * lambda[0] / total).abs() < 1e-9);
        assert!((s["variance_explained_pct"]["top10"].as_f64().unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(values(&o.projections, "pcs").0, [12, 4]);
    }
}

#[test]
fn bf16_and_f32_inputs_of_the_same_values_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let w = planted(0);
    let (pf, pb) = (
        dir.path().join("f.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_tensor(&pf, "W", Dtype::F32, &[12, D], &f32_bytes(&w));
    write_tensor(&pb, "W", Dtype::BF16, &[12, D], &bf16_bytes(&w));
    let (df, db) = (dir.path().join("f"), dir.path().join("b"));
    std::fs::create_dir_all(&df).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = pca(&df, &pf, None, json!({}), 1).unwrap();
    let b = pca(&db, &pb, None, json!({}), 1).unwrap();
    assert_eq!(a.basis, b.basis);
    assert_eq!(a.projections, b.projections);
    assert_eq!(a.summary["dtype"], json!("F32"));
    assert_eq!(b.summary["dtype"], json!("BF16"));
}

#[test]
fn signs_follow_the_black_hole_centroid_and_negating_w_negates_the_basis() {
    let dir = tempfile::tempdir().unwrap();
    let w = planted(0);
    let neg: Vec<f32> = w.iter().map(|&x| -x).collect();
    let (pw, pn, bh) = (
        dir.path().join("w.safetensors"),
        dir.path().join("neg.safetensors"),
        dir.path().join("bh.safetensors"),
    );
    write_tensor(&pw, "W", Dtype::F32, &[12, D], &f32_bytes(&w));
    write_tensor(&pn, "W", Dtype::F32, &[12, D], &f32_bytes(&neg));
    // black-hole tokens 0, 2, 4, 6, 8, 10: centroid μ + Σ s_i·3u_i / 6, positive on every PC
    let bh_tokens = [0usize, 2, 4, 6, 8, 10];
    members_file(&bh, 12, &bh_tokens);
    let centroid: Vec<f64> = (0..D)
        .map(|j| bh_tokens.iter().map(|&t| w[t * D + j] as f64).sum::<f64>() / 6.0)
        .collect();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = pca(&da, &pw, Some(&bh), json!({"precision": "f64"}), 1).unwrap();
    let b = pca(&db, &pn, Some(&bh), json!({"precision": "f64"}), 1).unwrap();
    let (_, va) = values(&a.basis, "eigenvectors");
    let (_, vb) = values(&b.basis, "eigenvectors");
    for pc in 0..D {
        let e = &va[pc * D..(pc + 1) * D];
        assert!(
            dot(e, &centroid) > 0.0,
            "PC{}: centroid projects positively",
            pc + 1
        );
    }
    assert_eq!(
        va,
        vb.iter().map(|x| -x).collect::<Vec<_>>(),
        "basis follows W's sign"
    );
    let (_, fa) = values(&a.basis, "flips");
    let (_, fb) = values(&b.basis, "flips");
    for pc in 0..D {
        assert_eq!(
            fa[pc] + fb[pc],
            1.0,
            "PC{}: exactly one of the two flipped",
            pc + 1
        );
    }
    assert_eq!(a.summary["signs"]["decided_by_centroid"], json!(D));
    assert_eq!(a.summary["signs"]["black_hole_tokens"], json!(6));
    let weakest = a.summary["signs"]["weakest_cos"].as_f64().unwrap();
    let pc = a.summary["signs"]["weakest_pc"].as_u64().unwrap() as usize;
    let norm = dot(&centroid, &centroid).sqrt();
    let cos = |k: usize| dot(&va[k * D..(k + 1) * D], &centroid).abs() / norm;
    assert!((weakest - cos(pc - 1)).abs() < 1e-12);
    assert!((0..D).all(|k| cos(k) >= weakest));

    // `none` keeps libtorch's signs: no flips, and the result differs from `centroid` exactly by
    // the recorded flips
    let n = pca(
        &da,
        &pw,
        Some(&bh),
        json!({"precision": "f64", "signs": "none"}),
        1,
    )
    .unwrap();
    let (_, vn) = values(&n.basis, "eigenvectors");
    assert!(values(&n.basis, "flips").1.iter().all(|&f| f == 0.0));
    for pc in 0..D {
        let s = if fa[pc] == 1.0 { -1.0 } else { 1.0 };
        for j in 0..D {
            assert_eq!(va[pc * D + j], s * vn[pc * D + j]);
        }
    }

    // without black holes the mean decides
    let m = pca(&da, &pw, None, json!({"precision": "f64"}), 1).unwrap();
    let (_, vm) = values(&m.basis, "eigenvectors");
    let mu: Vec<f64> = MU.iter().map(|&x| x as f64).collect();
    for pc in 0..D {
        assert!(dot(&vm[pc * D..(pc + 1) * D], &mu) > 0.0, "PC{}", pc + 1);
    }
    assert_eq!(m.summary["signs"]["decided_by_mean"], json!(D));
    assert_eq!(m.summary["signs"]["black_hole_tokens"], json!(0));
}

#[test]
fn spherical_coordinates_follow_the_chosen_axes_and_frame() {
    let dir = tempfile::tempdir().unwrap();
    let w = planted(0);
    let path = dir.path().join("w.safetensors");
    write_tensor(&path, "W", Dtype::F32, &[12, D], &f32_bytes(&w));
    let params = json!({"precision": "f64", "components": 3});
    let raw = pca(dir.path(), &path, None, params.clone(), 1).unwrap();
    let (_, vecs) = values(&raw.basis, "eigenvectors");
    let (shape, pcs) = values(&raw.projections, "pcs");
    assert_eq!(shape, [12, 3]);
    let get = |name: &str| values(&raw.projections, name).1;
    let (x, y, z, r, lat, lon) = (
        get("x"),
        get("y"),
        get("z"),
        get("r"),
        get("lat"),
        get("lon"),
    );
    for t in 0..12 {
        let row: Vec<f64> = w[t * D..(t + 1) * D].iter().map(|&v| v as f64).collect();
        for c in 0..3 {
            let want = dot(&row, &vecs[c * D..(c + 1) * D]) as f32 as f64;
            assert!(
                (pcs[t * 3 + c] - want).abs() < 1e-5,
                "token {t} PC{}",
                c + 1
            );
        }
        // defaults: north = PC2, meridian = PC1, equinox = PC3
        assert_eq!(
            (x[t], y[t], z[t]),
            (pcs[t * 3], pcs[t * 3 + 2], pcs[t * 3 + 1])
        );
        let rr = (x[t] * x[t] + y[t] * y[t] + z[t] * z[t]).sqrt();
        assert!((r[t] - rr).abs() < 1e-5 * rr);
        assert!((lat[t] - (z[t] / rr).asin().to_degrees()).abs() < 1e-4);
        assert!((lon[t] - y[t].atan2(x[t]).to_degrees()).abs() < 1e-4);
    }

    // box_1 convention: centred, north = PC1, meridian = PC2, equinox = −PC3
    let c = pca(
        dir.path(),
        &path,
        None,
        json!({"precision": "f64", "components": 3, "frame": "centred",
               "north": 1, "meridian": 2, "equinox": -3}),
        1,
    )
    .unwrap();
    let (_, cpcs) = values(&c.projections, "pcs");
    let get = |name: &str| values(&c.projections, name).1;
    let (cx, cy, cz) = (get("x"), get("y"), get("z"));
    let mu: Vec<f64> = MU.iter().map(|&x| x as f64).collect();
    for t in 0..12 {
        for k in 0..3 {
            let shift = dot(&mu, &vecs[k * D..(k + 1) * D]);
            assert!((cpcs[t * 3 + k] - (pcs[t * 3 + k] - shift)).abs() < 1e-5);
        }
        assert_eq!(
            (cx[t], cy[t], cz[t]),
            (cpcs[t * 3 + 1], -cpcs[t * 3 + 2], cpcs[t * 3])
        );
    }
}

#[test]
fn flattened_latitude_orders_identical_rows_by_token_id() {
    let dir = tempfile::tempdir().unwrap();
    let w = planted(3); // tokens 12, 13, 14 repeat token 0
    let path = dir.path().join("w.safetensors");
    write_tensor(&path, "W", Dtype::F32, &[15, D], &f32_bytes(&w));
    let o = pca(dir.path(), &path, None, json!({}), 1).unwrap();
    let (_, lat) = values(&o.projections, "lat");
    let (_, flat) = values(&o.projections, "lat_flat");
    for t in [12, 13, 14] {
        assert_eq!(lat[t], lat[0]);
    }
    assert!(flat[0] < flat[12] && flat[12] < flat[13] && flat[13] < flat[14]);
    let step = 180.0 / 14.0;
    assert!((flat[12] - flat[0] - step).abs() < 1e-4);
    let mut sorted = flat.clone();
    sorted.sort_by(f64::total_cmp);
    for (j, v) in sorted.iter().enumerate() {
        assert!((v - (90.0 * (2.0 * j as f64 / 14.0 - 1.0))).abs() < 1e-4);
    }
    // the flattened order agrees with the latitude order
    for a in 0..15 {
        for b in 0..15 {
            if lat[a] < lat[b] {
                assert!(flat[a] < flat[b]);
            }
        }
    }
}

#[test]
fn bad_inputs_and_params_are_rejected_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = dir.path().join("vec.safetensors");
    write_tensor(&p1, "W", Dtype::F32, &[6], &f32_bytes(&[1.0; 6]));
    let e = pca(dir.path(), &p1, None, json!({}), 1).err().unwrap();
    assert!(e.contains("shape [6]") && e.contains("matrix"), "{e}");
    let p2 = dir.path().join("int.safetensors");
    write_tensor(&p2, "W", Dtype::I32, &[2, 3], &[0u8; 24]);
    let e = pca(dir.path(), &p2, None, json!({}), 1).err().unwrap();
    assert!(e.contains("I32") && e.contains("BF16 or F32"), "{e}");
    let good = dir.path().join("w.safetensors");
    write_tensor(&good, "W", Dtype::F32, &[12, D], &f32_bytes(&planted(0)));
    // more components than columns: all D of them
    let o = pca(dir.path(), &good, None, json!({"components": 7}), 1).unwrap();
    assert_eq!(values(&o.projections, "pcs").0, [12, D]);
    assert_eq!(o.summary["components"], json!(D));
    let e = pca(dir.path(), &good, None, json!({"north": 0}), 1)
        .err()
        .unwrap();
    assert!(e.contains("`north`"), "{e}");
    let e = pca(dir.path(), &good, None, json!({"equinox": -7}), 1)
        .err()
        .unwrap();
    assert!(e.contains("`equinox`"), "{e}");
    let e = pca(dir.path(), &good, None, json!({"tensor": "X"}), 1)
        .err()
        .unwrap();
    assert!(e.contains("no tensor `X`"), "{e}");
    let bh = dir.path().join("bh.safetensors");
    members_file(&bh, 5, &[0]);
    let e = pca(dir.path(), &good, Some(&bh), json!({}), 1)
        .err()
        .unwrap();
    assert!(e.contains("black_holes") && e.contains("12 rows"), "{e}");
    let mut nan = planted(0);
    nan[7] = f32::NAN;
    let pn = dir.path().join("nan.safetensors");
    write_tensor(&pn, "W", Dtype::F32, &[12, D], &f32_bytes(&nan));
    let e = pca(dir.path(), &pn, None, json!({}), 1).err().unwrap();
    assert!(e.contains("NaN"), "{e}");
}

/// A pseudo-random bf16 W [rows, cols] (splitmix64), anisotropic so the PCs are well separated.
fn random_w(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    (0..rows * cols)
        .map(|i| {
            let j = i % cols;
            half::bf16::from_f64(next() * 0.1 / (1.0 + j as f64) + 0.01).to_f32()
        })
        .collect()
}

/// The covariance of `w` [rows, cols] in f64 (divisor N), row-major.
fn covariance_f64(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    let mut mean = vec![0f64; cols];
    for row in w.chunks_exact(cols) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64 / rows as f64;
        }
    }
    let mut c = vec![0f64; cols * cols];
    for row in w.chunks_exact(cols) {
        for a in 0..cols {
            for b in 0..cols {
                c[a * cols + b] += (row[a] as f64 - mean[a]) * (row[b] as f64 - mean[b]);
            }
        }
    }
    c.iter().map(|x| x / rows as f64).collect()
}

/// D = 37 is cut into column tiles 8, 8, 8, 8, 5 (the ragged last tile) and V = 1,000 rows into
/// row blocks of 296 (three full, one of 112), so every tile pair, the mirroring and the blocked
/// projections are exercised; all three outputs must be byte-identical across runs and across 1,
/// 2 and 3 threads, in both precisions and frames. The f64 result is also checked against an
/// independent f64 covariance: C·e = λ·e for every stored PC.
#[test]
fn pca_is_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (1000, 37);
    let w = random_w(rows, cols, 11);
    let path = dir.path().join("w.safetensors");
    write_tensor(&path, "W", Dtype::BF16, &[rows, cols], &bf16_bytes(&w));
    let run_in = |name: &str, params: Value, threads: usize| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        pca(&d, &path, None, params, threads).unwrap()
    };
    for (tag, params) in [
        ("f32", json!({})),
        (
            "f64",
            json!({"precision": "f64", "frame": "centred", "components": 37}),
        ),
    ] {
        let first = run_in(&format!("{tag}-1"), params.clone(), 1);
        for (run, threads) in [(2, 1), (3, 2), (4, 3)] {
            let o = run_in(&format!("{tag}-{run}"), params.clone(), threads);
            assert!(
                first.basis == o.basis,
                "{tag}: basis differs at {threads} threads"
            );
            assert!(
                first.projections == o.projections,
                "{tag}: projections differ at {threads} threads"
            );
            assert_eq!(first.raw_summary, o.raw_summary, "{tag}: {threads} threads");
        }
        let (_, lambda) = values(&first.basis, "eigenvalues");
        assert!(lambda.windows(2).all(|p| p[0] >= p[1]), "{tag}: {lambda:?}");
        if tag == "f64" {
            let c = covariance_f64(&w, rows, cols);
            let (shape, e) = values(&first.basis, "eigenvectors");
            assert_eq!(shape, vec![cols, cols]);
            for (pc, v) in e.chunks_exact(cols).enumerate() {
                for a in 0..cols {
                    let cv = dot(&c[a * cols..(a + 1) * cols], v);
                    assert!(
                        (cv - lambda[pc] * v[a]).abs() <= 1e-12 * lambda[0],
                        "PC{}: (C·e)[{a}] = {cv} vs λ·e = {}",
                        pc + 1,
                        lambda[pc] * v[a]
                    );
                }
            }
        }
    }
}

/// Runs `w.black_holes`, `w.pca` (centroid signs) and `w.skymap` (black holes highlighted) on the
/// extracted SmolLM2 W (the default pipeline's `out/smollm2/w.safetensors`, or `AZIMUTH_SMOLLM2_W`) and prints λ1, the
/// variance shares and timings; outputs go to `AZIMUTH_PCA_OUT` (default: a temp dir).
#[test]
#[ignore = "needs the extracted SmolLM2 W; run with --ignored --nocapture"]
fn real_smollm2_pca_and_skymap() {
    let w = std::env::var("AZIMUTH_SMOLLM2_W").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../out/smollm2/w.safetensors"
        )
        .into()
    });
    let out = std::env::var("AZIMUTH_PCA_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let d = std::env::temp_dir().join("azimuth-pca-smollm2");
            std::fs::create_dir_all(&d).unwrap();
            d
        });
    let threads: usize = std::env::var("AZIMUTH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let params: Value = std::env::var("AZIMUTH_PCA_PARAMS")
        .map(|s| serde_json::from_str(&s).unwrap())
        .unwrap_or_else(|_| json!({}));
    let w = Path::new(&w);
    let members = out.join("members.safetensors");
    let bh_outs = [
        ("table", out.join("bh_table.csv")),
        ("summary", out.join("bh_summary.json")),
        ("members", members.clone()),
    ];
    run(
        "w.black_holes",
        &ctx(json!({}), &[("w", w)], &bh_outs, threads),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let o = pca(&out, w, Some(&members), params, threads).unwrap();
    println!("w.pca: {:.2} s", t0.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&o.summary).unwrap());
    let t0 = std::time::Instant::now();
    let outs = skymap_outputs(&out);
    run(
        "w.skymap",
        &ctx(
            json!({}),
            &[
                ("projections", &out.join("projections.safetensors")),
                ("highlight", &members),
            ],
            &outs,
            threads,
        ),
    )
    .unwrap();
    println!("w.skymap: {:.2} s", t0.elapsed().as_secs_f64());
    println!(
        "{}",
        std::fs::read_to_string(out.join("sky_summary.json")).unwrap()
    );
}

fn skymap_outputs(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("sky", dir.join("sky.png")),
        ("density", dir.join("density.png")),
        ("equatorial", dir.join("equatorial.png")),
        ("heatmap", dir.join("heatmap.csv")),
        ("summary", dir.join("sky_summary.json")),
    ]
}

/// A hand-made projections file: token 0 at (lat 0, lon 0, r 1), tokens 1…40 at (30, −60, 0.5),
/// token 41 at (−45, 120, 2); `lat_flat` puts token 0 at +60.
fn sky_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let v = 42;
    let mut lat = vec![30f32; v];
    let mut lon = vec![-60f32; v];
    let mut r = vec![0.5f32; v];
    (lat[0], lon[0], r[0]) = (0.0, 0.0, 1.0);
    (lat[41], lon[41], r[41]) = (-45.0, 120.0, 2.0);
    let mut flat = vec![0f32; v];
    flat[0] = 60.0;
    let b: Vec<(String, Vec<u8>)> = [("lat", &lat), ("lon", &lon), ("r", &r), ("lat_flat", &flat)]
        .iter()
        .map(|(n, x)| (n.to_string(), f32_bytes(x)))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = b
        .iter()
        .map(|(n, x)| (n.clone(), TensorView::new(Dtype::F32, vec![v], x).unwrap()))
        .collect();
    let proj = dir.join("projections.safetensors");
    safetensors::tensor::serialize_to_file(views, None, &proj).unwrap();
    let hl = dir.join("members.safetensors");
    members_file(&hl, v, &[0]);
    (proj, hl)
}

struct Png {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Png {
    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

fn decode(bytes: &[u8]) -> Png {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.color_type, info.bit_depth),
        (png::ColorType::Rgb, png::BitDepth::Eight)
    );
    buf.truncate(info.buffer_size());
    Png {
        width: info.width as usize,
        height: info.height as usize,
        rgb: buf,
    }
}

fn skymap(
    dir: &Path,
    proj: &Path,
    hl: Option<&Path>,
    params: Value,
) -> Result<Vec<Vec<u8>>, String> {
    let outs = skymap_outputs(dir);
    let mut inputs = vec![("projections", proj)];
    if let Some(h) = hl {
        inputs.push(("highlight", h));
    }
    run("w.skymap", &ctx(params, &inputs, &outs, 1)).map_err(|e| e.0)?;
    Ok(outs
        .iter()
        .map(|(_, p)| std::fs::read(p).unwrap())
        .collect())
}

const ORANGE: [u8; 3] = [255, 115, 26];

#[test]
fn skymap_draws_points_highlights_and_density_where_they_belong() {
    let dir = tempfile::tempdir().unwrap();
    let (proj, hl) = sky_fixture(dir.path());
    let files = skymap(dir.path(), &proj, Some(&hl), json!({"width": 400})).unwrap();
    let sky = decode(&files[0]);
    assert_eq!((sky.width, sky.height), (400, 200));
    for (x, y) in [(0, 0), (399, 0), (0, 199), (399, 199), (1, 100)] {
        assert_eq!(sky.at(x, y), [0, 0, 0], "background at ({x}, {y})");
    }
    assert_eq!(
        sky.at(200, 100),
        ORANGE,
        "the highlighted token sits at the centre"
    );
    // the 40-token cluster saturates a pixel in the upper-left quadrant; the lone token is faint
    let upper_left = (0..100).flat_map(|y| (0..200).map(move |x| (x, y)));
    assert!(upper_left.clone().any(|(x, y)| sky.at(x, y)[2] == 255));
    let lower_right = (100..200).flat_map(|y| (200..400).map(move |x| (x, y)));
    let faint = lower_right
        .map(|(x, y)| sky.at(x, y)[2])
        .filter(|&b| b > 110)
        .count();
    assert!(faint >= 1, "the lone token shows");
    // dim grey graticule: some pure grey pixels, none brighter than the grey away from points
    assert!(sky.rgb.chunks(3).any(|p| p == [56, 56, 56]));

    let density = decode(&files[1]);
    assert_eq!((density.width, density.height), (400, 200));
    assert_eq!(
        density.at(134, 66),
        [252, 255, 164],
        "the cluster's bin is the maximum"
    );
    assert_eq!(
        density.at(0, 199),
        [0, 0, 4],
        "empty bins are the colormap's bottom"
    );

    let eq = decode(&files[2]);
    assert_eq!((eq.width, eq.height), (200, 200));
    // r_max = 2, the highlight at r = 1, lon 0: 100 + 0.47·200/2 = 147
    assert_eq!(eq.at(147, 100), ORANGE);
    assert_eq!(eq.at(0, 0), [0, 0, 0]);

    let csv = String::from_utf8(files[3].clone()).unwrap();
    assert!(csv.starts_with("lon_bin,lat_bin,count,smoothed\n"));
    let total: f64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 42.0);
    assert!(csv.contains("\n120,120,40,"));
    let s: Value = serde_json::from_slice(&files[4]).unwrap();
    assert_eq!(s["tokens"], json!(42));
    assert_eq!(s["highlighted"], json!(1));
    assert_eq!(s["heatmap"]["raw_max"], json!(40));
    assert_eq!(
        (
            s["heatmap"]["max_lon_bin"].clone(),
            s["heatmap"]["max_lat_bin"].clone()
        ),
        (json!(120), json!(120))
    );
    assert!((s["heatmap"]["raw_mean"].as_f64().unwrap() - 42.0 / 64800.0).abs() < 1e-15);
    assert!((s["heatmap"]["mean"].as_f64().unwrap() - 42.0 / 64800.0).abs() < 1e-12);

    // byte identity across runs
    let again = skymap(dir.path(), &proj, Some(&hl), json!({"width": 400})).unwrap();
    assert_eq!(files, again);

    // flattened latitude moves the highlight north; no highlight input: no orange anywhere
    let flat = skymap(
        dir.path(),
        &proj,
        Some(&hl),
        json!({"width": 400, "flatten": true}),
    )
    .unwrap();
    let fsky = decode(&flat[0]);
    assert_ne!(fsky.at(200, 100), ORANGE);
    assert!(fsky.rgb.chunks(3).any(|p| p == ORANGE));
    let plain = skymap(
        dir.path(),
        &proj,
        None,
        json!({"width": 400, "colormap": "gray"}),
    )
    .unwrap();
    assert!(!decode(&plain[0]).rgb.chunks(3).any(|p| p == ORANGE));
    assert_eq!(decode(&plain[1]).at(134, 66), [255, 255, 255]);
}

#[test]
fn skymap_rejects_files_that_are_not_projections() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    write_tensor(&p, "lat", Dtype::F32, &[3], &f32_bytes(&[0.0; 3]));
    let e = skymap(dir.path(), &p, None, json!({})).err().unwrap();
    assert!(e.contains("no tensor `lon`") && e.contains("w.pca"), "{e}");
    let (proj, hl) = sky_fixture(dir.path());
    let e = skymap(
        dir.path(),
        &proj,
        Some(&hl),
        json!({"highlight_mask": "dead"}),
    )
    .err()
    .unwrap();
    assert!(e.contains("no mask `dead`"), "{e}");
}

#[test]
fn pca_then_skymap_on_a_planted_w() {
    let dir = tempfile::tempdir().unwrap();
    let w = planted(0);
    let path = dir.path().join("w.safetensors");
    write_tensor(&path, "W", Dtype::F32, &[12, D], &f32_bytes(&w));
    pca(dir.path(), &path, None, json!({}), 1).unwrap();
    let files = skymap(
        dir.path(),
        &dir.path().join("projections.safetensors"),
        None,
        json!({"width": 64}),
    )
    .unwrap();
    let s: Value = serde_json::from_slice(&files[4]).unwrap();
    assert_eq!(
        (s["tokens"].clone(), s["plotted"].clone()),
        (json!(12), json!(12))
    );
    assert_eq!(decode(&files[0]).width, 64);
}

/// Times `w.pca` (default params) on the W named by env `AZIMUTH_PCA_W` (e.g. a Qwen-sized BF16
/// [151936, 2560]) at each thread count in `AZIMUTH_PCA_THREADS` (default "1,2"), printing wall
/// times (phases too, via `AZIMUTH_PCA_TIMINGS`), λ1 and whether the outputs' bytes agree across
/// the thread counts. Outputs go to a temp dir that is removed afterwards.
#[test]
#[ignore = "needs a large W; run with AZIMUTH_PCA_W=… --ignored --nocapture"]
fn bench_pca_on_env_w() {
    let w = PathBuf::from(std::env::var("AZIMUTH_PCA_W").expect("set AZIMUTH_PCA_W"));
    let thread_counts: Vec<usize> = std::env::var("AZIMUTH_PCA_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|t| t.trim().parse().unwrap())
        .collect();
    std::env::set_var("AZIMUTH_PCA_TIMINGS", "1");
    let dir = tempfile::tempdir().unwrap();
    let mut first: Option<PcaOut> = None;
    for threads in thread_counts {
        let t0 = std::time::Instant::now();
        let o = pca(dir.path(), &w, None, json!({}), threads).unwrap();
        println!(
            "threads {threads}: w.pca {:.2} s, λ1 = {}",
            t0.elapsed().as_secs_f64(),
            o.summary["eigenvalues_leading"][0]
        );
        match &first {
            None => first = Some(o),
            Some(f) => println!(
                "  bytes equal to the first run: basis {}, projections {}, summary {}",
                f.basis == o.basis,
                f.projections == o.projections,
                f.raw_summary == o.raw_summary
            ),
        }
    }
}
