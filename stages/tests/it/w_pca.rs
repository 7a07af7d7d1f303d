//! Tests of the `w_pca` family through `azimuth_stages::run`: `w.pca` on a planted W whose
//! covariance is known exactly (rows μ ± s_i·3u_i along six orthogonal directions u_i with integer
//! 3u_i, so every element is exact in BF16 and F32 and λ_i = 18·s_i²/N), its sign rule (negating
//! W negates the basis), divisor and precision, spherical coordinates and flattening, bad inputs,
//! determinism; `w.skymap` PNGs decoded with the `png` crate (size, black background, the
//! highlighted token's colour, byte identity). `real_smollm2_pca_and_skymap` (ignored) runs both on
//! the extracted SmolLM2 W.

use std::path::{Path, PathBuf};

use azimuth_stages::{run, StageContext};
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
    for i in 0..D {
        let u = direction(i);
        for sign in [1.0f32, -1.0] {
            w.extend((0..D).map(|j| MU[j] + sign * S[i] * u[j]));
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
    SafeTensors::deserialize(file).unwrap().tensor(name).unwrap().dtype()
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
        let want_dtype = if precision == "f32" { Dtype::F32 } else { Dtype::F64 };
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
            assert!((dot(e, &u).abs() - 1.0).abs() < 10.0 * tol.max(1e-6), "PC{}", pc + 1);
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
    let (pf, pb) = (dir.path().join("f.safetensors"), dir.path().join("b.safetensors"));
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
        assert!(dot(e, &centroid) > 0.0, "PC{}: centroid projects positively", pc + 1);
    }
    assert_eq!(va, vb.iter().map(|x| -x).collect::<Vec<_>>(), "basis follows W's sign");
    let (_, fa) = values(&a.basis, "flips");
    let (_, fb) = values(&b.basis, "flips");
    for pc in 0..D {
        assert_eq!(fa[pc] + fb[pc], 1.0, "PC{}: exactly one of the two flipped", pc + 1);
    }
    assert_eq!(a.summary["signs"]["decided_by_centroid"], json!(D));
    assert_eq!(a.summary["signs"]["black_hole_tokens"], json!(6));

    // `none` keeps libtorch's signs: no flips, and the result differs from `centroid` exactly by
    // the recorded flips
    let n = pca(&da, &pw, Some(&bh), json!({"precision": "f64", "signs": "none"}), 1).unwrap();
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
    let (x, y, z, r, lat, lon) = (get("x"), get("y"), get("z"), get("r"), get("lat"), get("lon"));
    for t in 0..12 {
        let row: Vec<f64> = w[t * D..(t + 1) * D].iter().map(|&v| v as f64).collect();
        for c in 0..3 {
            let want = dot(&row, &vecs[c * D..(c + 1) * D]) as f32 as f64;
            assert!((pcs[t * 3 + c] - want).abs() < 1e-5, "token {t} PC{}", c + 1);
        }
        // defaults: north = PC2, meridian = PC1, equinox = PC3
        assert_eq!((x[t], y[t], z[t]), (pcs[t * 3], pcs[t * 3 + 2], pcs[t * 3 + 1]));
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
        assert_eq!((cx[t], cy[t], cz[t]), (cpcs[t * 3 + 1], -cpcs[t * 3 + 2], cpcs[t * 3]));
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
    let e = pca(dir.path(), &good, None, json!({"north": 0}), 1).err().unwrap();
    assert!(e.contains("`north`"), "{e}");
    let e = pca(dir.path(), &good, None, json!({"equinox": -7}), 1).err().unwrap();
    assert!(e.contains("`equinox`"), "{e}");
    let e = pca(dir.path(), &good, None, json!({"tensor": "X"}), 1).err().unwrap();
    assert!(e.contains("no tensor `X`"), "{e}");
    let bh = dir.path().join("bh.safetensors");
    members_file(&bh, 5, &[0]);
    let e = pca(dir.path(), &good, Some(&bh), json!({}), 1).err().unwrap();
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

#[test]
fn pca_is_byte_identical_across_runs_and_close_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (3000, 48);
    let w = random_w(rows, cols, 11);
    let path = dir.path().join("w.safetensors");
    write_tensor(&path, "W", Dtype::BF16, &[rows, cols], &bf16_bytes(&w));
    let run_in = |name: &str, threads: usize| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        pca(&d, &path, None, json!({}), threads).unwrap()
    };
    let a = run_in("a", 1);
    let b = run_in("b", 1);
    assert_eq!(a.basis, b.basis);
    assert_eq!(a.projections, b.projections);
    assert_eq!(a.raw_summary, b.raw_summary);
    let c = run_in("c", 2);
    for (file_a, file_c, name) in [
        (&a.basis, &c.basis, "eigenvalues"),
        (&a.projections, &c.projections, "pcs"),
        (&a.projections, &c.projections, "r"),
    ] {
        let (_, va) = values(file_a, name);
        let (_, vc) = values(file_c, name);
        let scale = va.iter().fold(0f64, |m, x| m.max(x.abs()));
        for (x, y) in va.iter().zip(&vc) {
            assert!((x - y).abs() <= 1e-5 * scale, "{name}: {x} vs {y}");
        }
    }
    let (_, la) = values(&a.basis, "eigenvalues");
    assert!(la.windows(2).all(|p| p[0] >= p[1]));
}

/// Runs both stages on the extracted SmolLM2 W (`/work/main/out/smollm2/w.safetensors` or
/// `AZIMUTH_SMOLLM2_W`) and prints λ1, the variance shares and timings.
#[test]
#[ignore = "needs the extracted SmolLM2 W; run with --ignored --nocapture"]
fn real_smollm2_pca_and_skymap() {
    let w = std::env::var("AZIMUTH_SMOLLM2_W")
        .unwrap_or_else(|_| "/work/main/out/smollm2/w.safetensors".into());
    let out = std::env::var("AZIMUTH_PCA_OUT").map(PathBuf::from).unwrap_or_else(|_| {
        let d = std::env::temp_dir().join("azimuth-pca-smollm2");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let threads: usize = std::env::var("AZIMUTH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let t0 = std::time::Instant::now();
    let o = pca(&out, Path::new(&w), None, json!({}), threads).unwrap();
    println!("w.pca: {:.2} s", t0.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&o.summary).unwrap());
    let t0 = std::time::Instant::now();
    let outs = skymap_outputs(&out);
    run(
        "w.skymap",
        &ctx(json!({}), &[("projections", &out.join("projections.safetensors"))], &outs, threads),
    )
    .unwrap();
    println!("w.skymap: {:.2} s", t0.elapsed().as_secs_f64());
    println!("{}", std::fs::read_to_string(out.join("sky_summary.json")).unwrap());
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
