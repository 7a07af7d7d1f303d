//! `w.black_holes` and `w.norms` run through `azimuth_stages::run` on planted matrices: black holes
//! of known populations (with one-bit near-misses and ±0 rows that must stay apart), exact recovery
//! of ids, populations and order, byte determinism across runs and thread counts, and norms of
//! rows with known lengths. The ignored benchmark `bench_black_holes`, which compares the finder with
//! libtorch's `unique_dim`, lives with the libtorch stages in `torch/tests/it/w_analysis_bench.rs`.

use std::path::{Path, PathBuf};

use azimuth_stages::{bf16, run, StageContext};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

fn ctx(params: Value, w: &Path, outputs: &[(&str, PathBuf)], threads: usize) -> StageContext {
    StageContext {
        instance: "wa".into(),
        inputs: [("w".to_string(), vec![w.to_path_buf()])].into(),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    }
}

fn write_w(path: &Path, dtype: Dtype, shape: [usize; 2], data: &[u8]) {
    let view = TensorView::new(dtype, shape.to_vec(), data).unwrap();
    safetensors::tensor::serialize_to_file([("W", view)], None, path).unwrap();
}

/// Deterministic pseudo-random generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A normal bf16 pattern with exponent 110..=124 and random sign and mantissa.
    fn pattern(&mut self) -> u16 {
        let r = self.next();
        let e = 110 + (r % 15) as u16;
        ((r >> 8) as u16 & 0x8000) | (e << 7) | ((r >> 20) as u16 & 0x7F)
    }
}

const V: usize = 400;
const D: usize = 48;

/// The planted matrix and the expected black holes (members ascending), in canonical order.
fn planted() -> (Vec<u16>, Vec<Vec<u32>>) {
    let mut rng = Rng(7);
    let mut w: Vec<u16> = (0..V * D).map(|_| rng.pattern()).collect();
    // A shared exponent profile; black holes differ from each other only in mantissa bits.
    let base: Vec<u16> = (0..D).map(|_| rng.pattern() & 0x7F80).collect();
    let hole = |k: u16| -> Vec<u16> {
        base.iter()
            .enumerate()
            .map(|(i, &b)| b | ((k * 7 + i as u16) & 0x7F))
            .collect()
    };
    let mut expected: Vec<Vec<u32>> = vec![
        vec![5, 17, 40, 41, 200, 301, 399], // 7
        vec![3, 90, 91, 92, 250],           // 5
        vec![11, 12, 13],                   // 3, smaller first member than the next 3
        vec![60, 61, 399 - 1],              // 3
        vec![100, 101],                     // 2: all +0.0
        vec![102, 103],                     // 2: +0.0 except one −0.0
    ];
    let rows: Vec<Vec<u16>> = vec![hole(1), hole(2), hole(3), hole(4), vec![0u16; D], {
        let mut z = vec![0u16; D];
        z[D / 2] = 0x8000;
        z
    }];
    for (g, r) in expected.iter().zip(&rows) {
        for &t in g {
            w[t as usize * D..(t as usize + 1) * D].copy_from_slice(r);
        }
    }
    // Near-misses of hole 1: one flipped bit each (mantissa LSB, sign, exponent LSB), singletons.
    for (t, (pos, bit)) in [
        (20usize, (0usize, 0x0001u16)),
        (21, (D - 1, 0x8000)),
        (22, (7, 0x0080)),
    ] {
        let mut r = rows[0].clone();
        r[pos] ^= bit;
        w[t * D..(t + 1) * D].copy_from_slice(&r);
    }
    expected.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    (w, expected)
}

fn bytes_of(w: &[u16]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[derive(Debug)]
struct Outs {
    table: String,
    summary: Value,
    members: Vec<u8>,
    raw_summary: Vec<u8>,
}

fn black_holes(dir: &Path, w: &Path, params: Value, threads: usize) -> Result<Outs, String> {
    let outs = [
        ("table", dir.join("table.csv")),
        ("summary", dir.join("summary.json")),
        ("members", dir.join("members.safetensors")),
    ];
    run("w.black_holes", &ctx(params, w, &outs, threads)).map_err(|e| e.0)?;
    let raw_summary = std::fs::read(&outs[1].1).unwrap();
    Ok(Outs {
        table: std::fs::read_to_string(&outs[0].1).unwrap(),
        summary: serde_json::from_slice(&raw_summary).unwrap(),
        members: std::fs::read(&outs[2].1).unwrap(),
        raw_summary,
    })
}

#[test]
fn black_holes_are_recovered_exactly_in_canonical_order() {
    let dir = tempfile::tempdir().unwrap();
    let (w, expected) = planted();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [V, D], &bytes_of(&w));
    let o = black_holes(dir.path(), &path, json!({}), 2).unwrap();

    let pops: Vec<usize> = expected.iter().map(Vec::len).collect();
    assert_eq!(pops, [7, 5, 3, 3, 2, 2]);
    let s = &o.summary;
    assert_eq!(s["black_holes"], json!(6));
    assert_eq!(s["populations"], json!(pops));
    assert_eq!(s["representatives"], json!([5, 3, 11, 60, 100, 102]));
    assert_eq!(s["black_hole_tokens"], json!(22));
    assert_eq!(s["largest"], json!(7));
    assert_eq!(s["distinct_rows"], json!(V - 22 + 6));
    assert_eq!(s["redundant_rows"], json!(16));
    assert_eq!(s["singletons"], json!(V - 22));
    assert_eq!((s["rows"].clone(), s["cols"].clone()), (json!(V), json!(D)));

    let st = SafeTensors::deserialize(&o.members).unwrap();
    let ids = st.tensor("black_hole_id").unwrap();
    assert_eq!((ids.dtype(), ids.shape()), (Dtype::U8, &[V][..]));
    let mask = st.tensor("black_hole_mask").unwrap();
    assert_eq!(mask.dtype(), Dtype::BOOL);
    for t in 0..V {
        let want = expected
            .iter()
            .position(|g| g.contains(&(t as u32)))
            .map_or(0, |k| k + 1);
        assert_eq!(ids.data()[t] as usize, want, "token {t}");
        assert_eq!(mask.data()[t], u8::from(want != 0));
    }
    let cents = st.tensor("centroids").unwrap();
    assert_eq!((cents.dtype(), cents.shape()), (Dtype::BF16, &[6, D][..]));
    for (k, g) in expected.iter().enumerate() {
        let t = g[0] as usize;
        assert_eq!(
            &cents.data()[k * D * 2..(k + 1) * D * 2],
            &bytes_of(&w[t * D..(t + 1) * D])[..]
        );
    }

    let lines: Vec<&str> = o.table.lines().collect();
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with("id,population,representative,members,l2_norm,exponent_min"));
    let row1: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&row1[..4], ["1", "7", "5", "5;17;40;41;200;301;399"]);
    let r = &w[5 * D..6 * D];
    let norm = r
        .iter()
        .map(|&b| bf16::to_f64(b).powi(2))
        .sum::<f64>()
        .sqrt() as f32;
    assert_eq!(row1[4].parse::<f32>().unwrap(), norm);
    assert_eq!(row1[10..], ["true", "0"]);
    // holes 2..4 share the exponent profile of hole 1 and differ in mantissas only
    for line in &lines[2..5] {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[10], "true", "{line}");
        assert!(f[11].parse::<u32>().unwrap() > 0);
    }
    // the zero rows: all exponents 0, 48 (or 48 with one -0) zero components
    let z: Vec<&str> = lines[5].split(',').collect();
    assert_eq!(
        (z[0], z[2], z[4], z[5], z[6], z[9]),
        ("5", "100", "0", "0", "0", "48")
    );
    let zn: Vec<&str> = lines[6].split(',').collect();
    assert_eq!((zn[2], zn[9]), ("102", "48"));
}

#[test]
fn outputs_are_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = planted();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [V, D], &bytes_of(&w));
    let a = black_holes(dir.path(), &path, json!({"preview": 3}), 1).unwrap();
    let b = black_holes(dir.path(), &path, json!({"preview": 3}), 2).unwrap();
    let c = black_holes(dir.path(), &path, json!({"preview": 3}), 3).unwrap();
    for o in [&b, &c] {
        assert_eq!(a.table, o.table);
        assert_eq!(a.raw_summary, o.raw_summary);
        assert_eq!(a.members, o.members);
    }
    assert!(a.table.contains(",5;17;40;...,"), "{}", a.table);
}

#[test]
fn min_population_moves_groups_out_of_the_census() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = planted();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [V, D], &bytes_of(&w));
    let o = black_holes(dir.path(), &path, json!({"min_population": 3}), 2).unwrap();
    assert_eq!(o.summary["populations"], json!([7, 5, 3, 3]));
    assert_eq!(
        (
            o.summary["small_groups"].clone(),
            o.summary["small_group_tokens"].clone()
        ),
        (json!(2), json!(4))
    );
    assert_eq!(o.summary["singletons"], json!(V - 22));
    let none = black_holes(dir.path(), &path, json!({"min_population": 8}), 1).unwrap();
    assert_eq!(none.summary["black_holes"], json!(0));
    assert_eq!(none.table.lines().count(), 1);
    let st = SafeTensors::deserialize(&none.members).unwrap();
    assert_eq!(st.tensor("centroids").unwrap().shape(), &[0, D]);
    assert!(st
        .tensor("black_hole_id")
        .unwrap()
        .data()
        .iter()
        .all(|&x| x == 0));
}

#[test]
fn more_than_255_black_holes_use_u16_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, d) = (600usize, 4usize);
    // 300 pairs: row 2k and 2k+1 are identical, pairs distinct.
    let w: Vec<u16> = (0..rows)
        .flat_map(|r| [(r / 2) as u16 + 1, 7, 8, 9])
        .collect();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [rows, d], &bytes_of(&w));
    let o = black_holes(dir.path(), &path, json!({}), 2).unwrap();
    assert_eq!(o.summary["black_holes"], json!(300));
    let st = SafeTensors::deserialize(&o.members).unwrap();
    let ids = st.tensor("black_hole_id").unwrap();
    assert_eq!(ids.dtype(), Dtype::U16);
    let id = |t: usize| u16::from_le_bytes([ids.data()[2 * t], ids.data()[2 * t + 1]]);
    assert_eq!((id(0), id(1), id(2), id(599)), (1, 1, 2, 300));
}

#[test]
fn black_holes_work_on_f32_and_reject_other_dtypes_and_missing_tensors() {
    let dir = tempfile::tempdir().unwrap();
    // F32 W: rows 0, 2 and 3 identical; row 1 differs from them by one ulp in one column; ±0 rows
    // (4, 5) stay apart because identity is decided on bits.
    let rows: [[f32; 4]; 6] = [
        [0.5, -0.25, 3.0, 1e-3],
        [0.5, -0.25, 3.0, f32::from_bits(1e-3f32.to_bits() + 1)],
        [0.5, -0.25, 3.0, 1e-3],
        [0.5, -0.25, 3.0, 1e-3],
        [0.0; 4],
        [-0.0; 4],
    ];
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let path = dir.path().join("w32.safetensors");
    write_w(&path, Dtype::F32, [6, 4], &data);
    let o = black_holes(dir.path(), &path, json!({}), 1).unwrap();
    assert_eq!(o.summary["populations"], json!([3]), "{}", o.summary);
    assert_eq!(o.summary["representatives"], json!([0]), "{}", o.summary);
    assert!(
        o.table.lines().nth(1).unwrap().starts_with("1,3,0,0;2;3,"),
        "{}",
        o.table
    );
    let st = SafeTensors::deserialize(&o.members).unwrap();
    let c = st.tensor("centroids").unwrap();
    assert_eq!(
        (c.dtype(), c.shape(), c.data()),
        (Dtype::F32, &[1, 4][..], &data[..16])
    );

    let path16 = dir.path().join("w16.safetensors");
    write_w(&path16, Dtype::F16, [3, 4], &[0u8; 24]);
    let e = black_holes(dir.path(), &path16, json!({}), 1).unwrap_err();
    assert!(
        e.contains("F16") && e.contains("BF16 or F32") && e.contains("w.black_holes"),
        "{e}"
    );
    let e = black_holes(dir.path(), &path, json!({"tensor": "nope"}), 1).unwrap_err();
    assert!(e.contains("no tensor `nope`") && e.contains("`W`"), "{e}");
    let e = black_holes(dir.path(), &path, json!({"bogus": 1}), 1).unwrap_err();
    assert!(e.contains("unknown param `bogus`"), "{e}");
}

fn norms(
    dir: &Path,
    w: &Path,
    params: Value,
    threads: usize,
) -> Result<(Vec<f32>, String, Value, Vec<u8>), String> {
    let outs = [
        ("norms", dir.join("norms.safetensors")),
        ("histogram", dir.join("hist.csv")),
        ("summary", dir.join("norms.json")),
    ];
    run("w.norms", &ctx(params, w, &outs, threads)).map_err(|e| e.0)?;
    let raw = std::fs::read(&outs[0].1).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let t = st.tensor("norms").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let summary = serde_json::from_slice(&std::fs::read(&outs[2].1).unwrap()).unwrap();
    Ok((
        v,
        std::fs::read_to_string(&outs[1].1).unwrap(),
        summary,
        raw,
    ))
}

#[test]
fn norms_of_planted_rows_histograms_and_the_spike() {
    let dir = tempfile::tempdir().unwrap();
    // 10 rows of norm 0.375 (the spike: [0.375, 0, 0, 0] permuted), 5 rows of norm 1.25
    // (3-4-5 scaled by 0.25), one of norm 2, one all-zero.
    let mut rows: Vec<[f32; 4]> = Vec::new();
    for i in 0..10 {
        let mut r = [0.0f32; 4];
        r[i % 4] = if i % 2 == 0 { 0.375 } else { -0.375 };
        rows.push(r);
    }
    for _ in 0..5 {
        rows.push([0.75, 1.0, 0.0, 0.0]);
    }
    rows.push([1.0, 1.0, 1.0, 1.0]);
    rows.push([0.0; 4]);
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let bf: Vec<u8> = flat
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [rows.len(), 4], &bf);
    let params = json!({"bins": 4, "zoom_bins": 10, "zoom_min": 0.36, "zoom_max": 0.38});
    let (v, csv, s, raw1) = norms(dir.path(), &path, params.clone(), 1).unwrap();
    let mut want = vec![0.375f32; 10];
    want.extend([1.25; 5]);
    want.extend([2.0, 0.0]);
    assert_eq!(v, want);
    assert_eq!(s["count"], json!(17));
    assert_eq!(
        (s["min"].clone(), s["max"].clone(), s["median"].clone()),
        (json!(0.0), json!(2.0), json!(0.375))
    );
    let mean = (3.75 + 6.25 + 2.0) / 17.0;
    assert!((s["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(
        s["spike"],
        json!({"value": 0.375, "rows": 10, "percentile": 100.0 / 17.0})
    );
    assert_eq!(s["zoom_peak"]["count"], json!(10));
    assert!(
        s["zoom_peak"]["lower"].as_f64().unwrap() <= 0.375
            && s["zoom_peak"]["upper"].as_f64().unwrap() > 0.375
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "histogram,bin,lower,upper,count");
    assert_eq!(
        &lines[1..5],
        [
            "full,0,0,0.5,11",
            "full,1,0.5,1,0",
            "full,2,1,1.5,5",
            "full,3,1.5,2,1"
        ]
    );
    assert_eq!(lines.len(), 1 + 4 + 10);
    let zoom_total: u64 = lines[5..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(zoom_total, 10);
    // same bytes on 3 threads; F32 input gives the same norms
    let (_, csv3, _, raw3) = norms(dir.path(), &path, params.clone(), 3).unwrap();
    assert_eq!((raw1, csv.clone()), (raw3, csv3));
    let p32 = dir.path().join("w32.safetensors");
    let f32b: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_w(&p32, Dtype::F32, [rows.len(), 4], &f32b);
    assert_eq!(norms(dir.path(), &p32, params, 2).unwrap().0, want);
}

#[test]
fn norms_reject_bad_zoom_and_integer_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [2, 2], &[0u8; 8]);
    let e = norms(
        dir.path(),
        &path,
        json!({"zoom_min": 0.5, "zoom_max": 0.4}),
        1,
    )
    .unwrap_err();
    assert!(e.contains("zoom_max"), "{e}");
    let pi = dir.path().join("i.safetensors");
    write_w(&pi, Dtype::I32, [2, 2], &[0u8; 16]);
    let e = norms(dir.path(), &pi, json!({}), 1).unwrap_err();
    assert!(e.contains("I32"), "{e}");
}
