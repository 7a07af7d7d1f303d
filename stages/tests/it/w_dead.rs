//! Tests of the `w_dead` family (`w.dead_sets`, `w.centroid_angle`, `w.geography`) through
//! `azimuth_stages::run`, on a planted BF16 matrix whose answers are known by construction:
//! three black holes (populations 5, 3, 2) near an anchor vector A, singletons one, two and three
//! bit-space steps from A (rule D's chain), singletons whose only change is the exponent of a tiny
//! coordinate (exponent distance 2, 5 = tolerance, 6 = tolerance + 1, all inside the L2 void), a
//! shell of rows 20…60 ULPs out along one axis (the far side of the void), and live rows at
//! exponent 130 everywhere. Black holes are always found by running `w.black_holes` first, as a
//! pipeline would. `real_smollm2_dead_stages` (ignored) runs the stages on the extracted SmolLM2 W.

use std::path::{Path, PathBuf};

use azimuth_stages::{run, StageContext};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::support::write_w;

fn ctx(
    params: Value,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, PathBuf)],
    threads: usize,
) -> StageContext {
    crate::support::ctx("wd", params, inputs, outputs, threads)
}

fn bf16_bytes(w: &[u16]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The exact f32 up-cast of a bf16 matrix, as F32 bytes.
fn f32_bytes(w: &[u16]) -> Vec<u8> {
    w.iter()
        .flat_map(|&x| f32::from_bits((x as u32) << 16).to_le_bytes())
        .collect()
}

fn pat(sign: u16, e: u16, m: u16) -> u16 {
    (sign << 15) | (e << 7) | m
}

fn val(b: u16) -> f64 {
    f32::from_bits((b as u32) << 16) as f64
}

const V: usize = 60;
const D: usize = 8;
/// ULP of the exponent-120 columns of A: 2^(120 − 134).
const U: f64 = 1.0 / 16384.0;

const BH1: [u32; 5] = [3, 10, 20, 41, 50];
const BH2: [u32; 3] = [7, 8, 30];
const BH3: [u32; 2] = [12, 44];
/// A + 1, 2, 3 steps in column 3 (rule D iterations 1, 2, 3) and A + 1 step in column 1 (it. 1).
const S: [u32; 4] = [1, 2, 4, 5];
/// Column 7 (a tiny value, exponent 100) moved to exponents 98, 95, 94.
const E: [u32; 3] = [6, 9, 11];
/// A + 20, 24, …, 60 steps in column 2.
const SHELL: [u32; 11] = [13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24];

fn anchor() -> Vec<u16> {
    vec![
        pat(0, 120, 64),
        pat(0, 120, 0),
        pat(0, 120, 0),
        pat(0, 120, 0),
        pat(0, 120, 10),
        pat(1, 119, 5),
        pat(0, 121, 3),
        pat(0, 100, 0),
    ]
}

/// The planted matrix (bf16 patterns, row-major [V, D]).
fn planted() -> Vec<u16> {
    let a = anchor();
    let mut rows: Vec<Vec<u16>> = vec![Vec::new(); V];
    let with = |col: usize, b: u16| {
        let mut r = a.clone();
        r[col] = b;
        r
    };
    for &t in &BH1 {
        rows[t as usize] = a.clone();
    }
    for &t in &BH2 {
        rows[t as usize] = with(0, a[0] + 1);
    }
    for &t in &BH3 {
        rows[t as usize] = with(1, a[1] + 2);
    }
    for (k, &t) in S[..3].iter().enumerate() {
        rows[t as usize] = with(3, a[3] + k as u16 + 1);
    }
    rows[S[3] as usize] = with(1, a[1] + 1);
    for (&t, e) in E.iter().zip([98u16, 95, 94]) {
        rows[t as usize] = with(7, pat(0, e, 0));
    }
    for (k, &t) in SHELL.iter().enumerate() {
        rows[t as usize] = with(2, a[2] + 20 + 4 * k as u16);
    }
    let mut state = 12345u64;
    for r in rows.iter_mut().filter(|r| r.is_empty()) {
        *r = (0..D)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                pat((state >> 63) as u16, 130, (state >> 40) as u16 & 0x7F)
            })
            .collect();
    }
    rows.concat()
}

/// Runs `w.black_holes` on `w`; returns the members file.
fn black_holes(dir: &Path, w: &Path) -> PathBuf {
    let outs = [
        ("table", dir.join("bh_table.csv")),
        ("summary", dir.join("bh_summary.json")),
        ("members", dir.join("bh_members.safetensors")),
    ];
    run("w.black_holes", &ctx(json!({}), &[("w", w)], &outs, 1)).unwrap();
    outs[2].1.clone()
}

#[derive(Debug)]
struct DeadOuts {
    masks: Vec<u8>,
    sweep: String,
    summary: Value,
    members: String,
    raw: Vec<Vec<u8>>,
    masks_path: PathBuf,
}

fn dead_sets(
    dir: &Path,
    w: &Path,
    bh: &Path,
    params: Value,
    threads: usize,
) -> Result<DeadOuts, String> {
    let outs = [
        ("masks", dir.join("masks.safetensors")),
        ("sweep", dir.join("sweep.csv")),
        ("summary", dir.join("summary.json")),
        ("members", dir.join("members.csv")),
    ];
    run(
        "w.dead_sets",
        &ctx(params, &[("w", w), ("black_holes", bh)], &outs, threads),
    )
    .map_err(|e| e.0)?;
    let raw: Vec<Vec<u8>> = outs
        .iter()
        .map(|(_, p)| std::fs::read(p).unwrap())
        .collect();
    Ok(DeadOuts {
        masks: raw[0].clone(),
        sweep: String::from_utf8(raw[1].clone()).unwrap(),
        summary: serde_json::from_slice(&raw[2]).unwrap(),
        members: String::from_utf8(raw[3].clone()).unwrap(),
        raw,
        masks_path: outs[0].1.clone(),
    })
}

fn mask_ids(masks: &[u8], name: &str) -> Vec<u32> {
    let st = SafeTensors::deserialize(masks).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!((t.dtype(), t.shape()), (Dtype::BOOL, &[V][..]), "{name}");
    t.data()
        .iter()
        .enumerate()
        .filter(|(_, &b)| b != 0)
        .map(|(i, _)| i as u32)
        .collect()
}

/// A JSON number written from an f32.
fn f32_of(v: &Value) -> f32 {
    v.as_f64().unwrap() as f32
}

fn sorted(parts: &[&[u32]]) -> Vec<u32> {
    let mut v: Vec<u32> = parts.concat();
    v.sort_unstable();
    v
}

/// Writes the planted W (BF16, or its exact F32 up-cast) and its black holes.
fn setup(dir: &Path, dtype: Dtype) -> (PathBuf, PathBuf) {
    let w = planted();
    let path = dir.join("w.safetensors");
    match dtype {
        Dtype::BF16 => write_w(&path, dtype, [V, D], &bf16_bytes(&w)),
        _ => write_w(&path, dtype, [V, D], &f32_bytes(&w)),
    }
    let bh = black_holes(dir, &path);
    (path, bh)
}

/// ‖row − c‖ where c is the population-weighted black-hole centroid, by hand: A plus 0.3 U in
/// column 0 and 0.4 U in column 1.
fn distance_to_centroid(row: &[u16]) -> f64 {
    let a = anchor();
    let mut c: Vec<f64> = a.iter().map(|&b| val(b)).collect();
    c[0] += 0.3 * U;
    c[1] += 0.4 * U;
    row.iter()
        .zip(&c)
        .map(|(&b, &x)| (val(b) - x).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn rules_a_b_d_recover_the_planted_sets_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (w, bh) = setup(dir.path(), Dtype::BF16);
    let o = dead_sets(dir.path(), &w, &bh, json!({"window": 20}), 2).unwrap();
    let s = &o.summary;
    assert_eq!(s["format"], json!(1));
    assert_eq!(
        (s["black_holes"].clone(), s["black_hole_tokens"].clone()),
        (json!(3), json!(10))
    );
    assert_eq!(s["notes"], json!([]));

    // Rule A: the sweep, counted by hand from the planted exponent distances.
    let mut expected_sweep = String::from("t,count,added,vectors\n");
    let rows: [(u32, usize, usize, usize); 7] = [
        (0, 25, 25, 18),
        (1, 25, 0, 18),
        (2, 26, 1, 19),
        (3, 26, 0, 19),
        (4, 26, 0, 19),
        (5, 27, 1, 20),
        (6, 28, 1, 21),
    ];
    for (t, c, a, v) in rows {
        expected_sweep += &format!("{t},{c},{a},{v}\n");
    }
    for t in 7..=20 {
        expected_sweep += &format!("{t},28,0,21\n");
    }
    assert_eq!(o.sweep, expected_sweep);
    let a = &s["rule_a"];
    assert_eq!(a["anchor_token"], json!(3));
    assert_eq!(a["tolerance"], json!(5));
    assert_eq!(
        (
            a["exponent_distance_min"].clone(),
            a["exponent_distance_max"].clone()
        ),
        (json!(0), json!(30))
    );
    assert_eq!(a["increment_local_minimum"], json!(1));
    assert_eq!(
        a["set"],
        json!({"tokens": 27, "vectors": 20, "black_holes": 3, "singletons": 17, "compression": 27.0 / 20.0})
    );
    let in_a = sorted(&[&BH1, &BH2, &BH3, &S, &E[..2], &SHELL]);
    assert_eq!(mask_ids(&o.masks, "rule_a"), in_a);

    // Rule B: the void lies between S[2] (A + 3 steps in column 3) and the first shell row.
    let planted = planted();
    let row = |t: u32| &planted[t as usize * D..(t as usize + 1) * D];
    let (inner, outer) = (
        distance_to_centroid(row(S[2])),
        distance_to_centroid(row(SHELL[0])),
    );
    let b = &s["rule_b"];
    assert_eq!(b["void_found"], json!(true));
    assert_eq!(b["window"], json!(20));
    let g = &b["largest_gap"];
    assert_eq!(g["inner_rank"], json!(17));
    assert_eq!(
        (g["inner_token"].clone(), g["outer_token"].clone()),
        (json!(S[2]), json!(SHELL[0]))
    );
    assert_eq!(f32_of(&g["inner_radius"]), inner as f32);
    assert_eq!(f32_of(&g["outer_radius"]), outer as f32);
    let threshold = g["threshold"].as_f64().unwrap();
    assert!(
        (threshold - (inner + outer) / 2.0).abs() < 1e-15,
        "{threshold}"
    );
    assert!((g["ratio"].as_f64().unwrap() - outer / inner).abs() < 1e-9);
    assert_eq!(g["ratio_infinite"], json!(false));
    assert_eq!(
        b["set"],
        json!({"tokens": 17, "vectors": 10, "black_holes": 3, "singletons": 7, "compression": 1.7})
    );
    let in_b = sorted(&[&BH1, &BH2, &BH3, &S, &E]);
    assert_eq!(mask_ids(&o.masks, "rule_b"), in_b);
    // the 20th smallest distance is the third shell row, A + 28 steps
    let r20 = distance_to_centroid(row(SHELL[2])) as f32;
    assert_eq!(f32_of(&b["window_radius"]), r20);

    // Rule D: +2 (S[0], S[3]), +1, +1, +0.
    let d = &s["rule_d"];
    assert_eq!(d["seeds"], json!(3));
    assert_eq!(d["additions"], json!([2, 1, 1, 0]));
    assert_eq!(d["iterations"], json!(4));
    assert_eq!(
        d["set"],
        json!({"tokens": 14, "vectors": 7, "black_holes": 3, "singletons": 4, "compression": 2.0})
    );
    let in_d = sorted(&[&BH1, &BH2, &BH3, &S]);
    assert_eq!(mask_ids(&o.masks, "rule_d"), in_d);
    assert_eq!(
        mask_ids(&o.masks, "black_hole_mask"),
        sorted(&[&BH1, &BH2, &BH3])
    );

    let diff = &s["differences"];
    assert_eq!(
        diff["a_minus_b"],
        json!(sorted(&[&E[..2], &SHELL])
            .iter()
            .filter(|t| !in_b.contains(t))
            .collect::<Vec<_>>())
    );
    assert_eq!(diff["a_minus_b"], json!(SHELL));
    assert_eq!(diff["b_minus_a"], json!([E[2]]));
    assert_eq!(diff["a_minus_d"], json!(sorted(&[&E[..2], &SHELL])));
    assert_eq!(diff["d_minus_a"], json!([]));

    // Per-token tensors and the members table.
    let st = SafeTensors::deserialize(&o.masks).unwrap();
    let dexp = st.tensor("exponent_distance").unwrap();
    assert_eq!(dexp.dtype(), Dtype::U8);
    let de = dexp.data();
    assert_eq!(
        (
            de[3],
            de[E[0] as usize],
            de[E[1] as usize],
            de[E[2] as usize],
            de[0]
        ),
        (0, 2, 5, 6, 30)
    );
    let dist = st.tensor("distance_to_centroid").unwrap();
    let dc: Vec<f32> = dist
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(dc[SHELL[0] as usize], outer as f32);
    let (_, header) = SafeTensors::read_metadata(&o.masks).unwrap();
    let m = header.metadata().as_ref().unwrap();
    assert_eq!(m["tolerance"], "5");
    assert_eq!(m["void_found"], "true");
    assert_eq!(m["threshold"], threshold.to_string());

    let lines: Vec<&str> = o.members.lines().collect();
    assert_eq!(
        lines[0],
        "id,in_a,in_b,in_d,bh_id,d_exp,distance_to_centroid,distance_to_anchor"
    );
    let union = sorted(&[&in_a, &[E[2]]]);
    assert_eq!(lines.len(), 1 + union.len());
    assert_eq!(
        lines[1],
        format!(
            "1,true,true,true,0,0,{},{}",
            distance_to_centroid(row(1)) as f32,
            U as f32
        )
    );
    let e3 = lines.iter().find(|l| l.starts_with("11,")).unwrap();
    assert!(e3.starts_with("11,false,true,false,0,6,"), "{e3}");
    let hole = lines.iter().find(|l| l.starts_with("3,")).unwrap();
    assert!(
        hole.starts_with("3,true,true,true,1,0,") && hole.ends_with(",0"),
        "{hole}"
    );
}

#[test]
fn the_gap_window_decides_where_the_void_is() {
    // With the whole vocabulary in the window, the largest gap is the one to the live rows.
    let dir = tempfile::tempdir().unwrap();
    let (w, bh) = setup(dir.path(), Dtype::BF16);
    let o = dead_sets(dir.path(), &w, &bh, json!({}), 1).unwrap();
    let b = &o.summary["rule_b"];
    assert_eq!(b["window"], json!(V));
    assert_eq!(b["largest_gap"]["inner_rank"], json!(28));
    assert_eq!(b["set"]["tokens"], json!(28));
}

#[test]
fn no_clean_void_leaves_rule_b_empty() {
    // Two black holes at ±40 steps from A in column 0 (so the centroid is A, both at 40 U), then
    // rows at 42, 44, …, 60 U: all gaps are 2 U, the first (ratio 1.05) is reported, no void.
    let dir = tempfile::tempdir().unwrap();
    let a = anchor();
    let mut rows: Vec<Vec<u16>> = Vec::new();
    let with = |col: usize, b: u16| {
        let mut r = a.clone();
        r[col] = b;
        r
    };
    for _ in 0..2 {
        rows.push(with(0, a[0] + 40));
        rows.push(with(0, a[0] - 40));
    }
    for k in 0..10u16 {
        rows.push(with(2, a[2] + 42 + 2 * k));
    }
    for k in 0..6u16 {
        rows.push(vec![pat(0, 130, k); D]);
    }
    let n = rows.len();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [n, D], &bf16_bytes(&rows.concat()));
    let bh = black_holes(dir.path(), &path);
    let o = dead_sets(dir.path(), &path, &bh, json!({"window": 14}), 2).unwrap();
    let b = &o.summary["rule_b"];
    assert_eq!(b["void_found"], json!(false));
    let g = &b["largest_gap"];
    assert_eq!(g["inner_rank"], json!(4));
    assert_eq!(f32_of(&g["inner_radius"]), (40.0 * U) as f32);
    assert_eq!(f32_of(&g["outer_radius"]), (42.0 * U) as f32);
    assert_eq!(g["ratio"].as_f64().unwrap(), 42.0 / 40.0);
    assert_eq!(b["set"]["tokens"], json!(0));
    let notes = o.summary["notes"].as_array().unwrap();
    assert!(
        notes[0].as_str().unwrap().contains("no clean void"),
        "{notes:?}"
    );
    let st = SafeTensors::deserialize(&o.masks).unwrap();
    assert!(st.tensor("rule_b").unwrap().data().iter().all(|&x| x == 0));
    let (_, header) = SafeTensors::read_metadata(&o.masks).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["threshold"], "none");
    // A lower bar accepts the same gap.
    let o = dead_sets(
        dir.path(),
        &path,
        &bh,
        json!({"window": 14, "min_gap_ratio": 1.05}),
        1,
    )
    .unwrap();
    assert_eq!(o.summary["rule_b"]["void_found"], json!(true));
    assert_eq!(o.summary["rule_b"]["set"]["tokens"], json!(4));
}

#[test]
fn a_single_black_hole_at_the_centroid_gives_an_infinite_ratio_void() {
    let dir = tempfile::tempdir().unwrap();
    let a = anchor();
    let mut rows = vec![a.clone(); 3];
    for k in 0..5u16 {
        let mut r = a.clone();
        r[2] = a[2] + 30 + k;
        rows.push(r);
    }
    let path = dir.path().join("w.safetensors");
    write_w(
        &path,
        Dtype::BF16,
        [rows.len(), D],
        &bf16_bytes(&rows.concat()),
    );
    let bh = black_holes(dir.path(), &path);
    let o = dead_sets(dir.path(), &path, &bh, json!({}), 1).unwrap();
    let b = &o.summary["rule_b"];
    assert_eq!(b["void_found"], json!(true));
    assert_eq!(b["largest_gap"]["ratio"], Value::Null);
    assert_eq!(b["largest_gap"]["ratio_infinite"], json!(true));
    assert_eq!(b["largest_gap"]["inner_radius"], json!(0.0));
    assert_eq!(b["set"]["tokens"], json!(3));
}

#[test]
fn without_black_holes_every_rule_is_empty_and_the_summary_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<u16> = (0..10u16).flat_map(|k| vec![pat(0, 120, k); D]).collect();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [10, D], &bf16_bytes(&rows));
    let bh = black_holes(dir.path(), &path);
    let outs = dead_sets(dir.path(), &path, &bh, json!({}), 1).unwrap();
    let s = &outs.summary;
    assert_eq!(s["black_holes"], json!(0));
    assert!(
        s["notes"][0].as_str().unwrap().contains("no black hole"),
        "{s}"
    );
    for rule in ["rule_a", "rule_b", "rule_d"] {
        assert_eq!(s[rule]["ran"], json!(false), "{rule}");
        assert_eq!(s[rule]["set"]["tokens"], json!(0), "{rule}");
    }
    assert_eq!(s["rule_a"]["anchor_token"], Value::Null);
    assert_eq!(outs.sweep, "t,count,added,vectors\n");
    assert_eq!(outs.members.lines().count(), 1);
    let st = SafeTensors::deserialize(&outs.masks).unwrap();
    assert!(st
        .tensor("exponent_distance")
        .unwrap()
        .data()
        .iter()
        .all(|&x| x == 255));
}

#[test]
fn f32_input_gives_the_same_rules_a_and_b_and_a_seed_only_flood_fill() {
    // The f32 up-cast keeps every exponent and value; one bf16 step is 2^16 f32 steps, so rule D
    // finds no neighbours.
    let dir = tempfile::tempdir().unwrap();
    let (w, bh) = setup(dir.path(), Dtype::F32);
    let o = dead_sets(dir.path(), &w, &bh, json!({"window": 20}), 2).unwrap();
    let bdir = tempfile::tempdir().unwrap();
    let (wb, bhb) = setup(bdir.path(), Dtype::BF16);
    let ob = dead_sets(bdir.path(), &wb, &bhb, json!({"window": 20}), 2).unwrap();
    assert_eq!(o.sweep, ob.sweep);
    assert_eq!(o.summary["rule_a"], ob.summary["rule_a"]);
    assert_eq!(o.summary["rule_b"], ob.summary["rule_b"]);
    assert_eq!(o.summary["dtype"], json!("F32"));
    assert_eq!(o.summary["rule_d"]["additions"], json!([0]));
    assert_eq!(mask_ids(&o.masks, "rule_d"), sorted(&[&BH1, &BH2, &BH3]));
}

#[test]
fn dead_set_outputs_are_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (w, bh) = setup(dir.path(), Dtype::BF16);
    let one = dead_sets(dir.path(), &w, &bh, json!({"window": 20}), 1)
        .unwrap()
        .raw;
    let two = dead_sets(dir.path(), &w, &bh, json!({"window": 20}), 2)
        .unwrap()
        .raw;
    let again = dead_sets(dir.path(), &w, &bh, json!({"window": 20}), 2)
        .unwrap()
        .raw;
    assert_eq!(one, two);
    assert_eq!(two, again);
}

#[test]
fn rule_d_off_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (w, bh) = setup(dir.path(), Dtype::BF16);
    let o = dead_sets(
        dir.path(),
        &w,
        &bh,
        json!({"rule_d": false, "window": 20}),
        1,
    )
    .unwrap();
    assert_eq!(o.summary["rule_d"]["ran"], json!(false));
    assert!(mask_ids(&o.masks, "rule_d").is_empty());
    assert_eq!(
        o.summary["differences"]["a_minus_d"]
            .as_array()
            .unwrap()
            .len(),
        27
    );

    // Black holes of another matrix of the same height.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut rows = planted();
    rows.rotate_left(D);
    let path = other.join("w.safetensors");
    write_w(&path, Dtype::BF16, [V, D], &bf16_bytes(&rows));
    let err = dead_sets(dir.path(), &path, &bh, json!({}), 1).unwrap_err();
    assert!(err.contains("another matrix"), "{err}");
    // A W of another height.
    let small = other.join("small.safetensors");
    write_w(
        &small,
        Dtype::BF16,
        [V - 1, D],
        &bf16_bytes(&planted()[..(V - 1) * D]),
    );
    let err = dead_sets(dir.path(), &small, &bh, json!({}), 1).unwrap_err();
    assert!(err.contains("black_hole_id"), "{err}");
    // Unknown param, wrong dtype.
    let err = dead_sets(dir.path(), &w, &bh, json!({"tolerence": 3}), 1).unwrap_err();
    assert!(err.contains("unknown param `tolerence`"), "{err}");
    let f16 = other.join("f16.safetensors");
    write_w(&f16, Dtype::F16, [V, D], &bf16_bytes(&planted()));
    let err = dead_sets(dir.path(), &f16, &bh, json!({}), 1).unwrap_err();
    assert!(err.contains("F16"), "{err}");
    let _ = o.masks_path;
}

fn centroid_angle(
    dir: &Path,
    w: &Path,
    bh: &Path,
    threads: usize,
) -> Result<(Value, Vec<u8>), String> {
    let out = dir.join("angle.json");
    run(
        "w.centroid_angle",
        &ctx(
            json!({}),
            &[("w", w), ("black_holes", bh)],
            &[("summary", out.clone())],
            threads,
        ),
    )
    .map_err(|e| e.0)?;
    let raw = std::fs::read(&out).unwrap();
    Ok((serde_json::from_slice(&raw).unwrap(), raw))
}

fn close(v: &Value, x: f64) {
    let y = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
    assert!((y - x).abs() <= 1e-12 * x.abs().max(1.0), "{y} vs {x}");
}

#[test]
fn centroid_angle_matches_a_hand_computation() {
    // Dead: (1, 0) ×3 and (0, 1) ×2 → centroid (0.6, 0.4); unweighted mean (0.5, 0.5).
    // Live: (−1, 2) and (3, 0) → centroid (1, 1). μ = (5, 4) / 7.
    let dir = tempfile::tempdir().unwrap();
    let one = 0x3F80u16;
    let rows: Vec<[u16; 2]> = vec![
        [one, 0],
        [0xBF80, 0x4000],
        [0, one],
        [one, 0],
        [0x4040, 0],
        [0, one],
        [one, 0],
    ];
    let flat: Vec<u16> = rows.concat();
    let path = dir.path().join("w.safetensors");
    write_w(&path, Dtype::BF16, [7, 2], &bf16_bytes(&flat));
    let bh = black_holes(dir.path(), &path);
    let (s, raw1) = centroid_angle(dir.path(), &path, &bh, 1).unwrap();
    assert_eq!(
        (s["dead_tokens"].clone(), s["live_tokens"].clone()),
        (json!(5), json!(2))
    );
    assert_eq!(s["note"], Value::Null);
    let dead_norm = 0.52f64.sqrt();
    close(&s["dead_centroid_norm"], dead_norm);
    close(&s["live_centroid_norm"], 2f64.sqrt());
    let cos = 1.0 / (dead_norm * 2f64.sqrt());
    close(&s["cosine"], cos);
    close(&s["angle_degrees"], cos.acos().to_degrees());
    let per = s["per_black_hole"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(
        (
            per[0]["representative"].clone(),
            per[0]["population"].clone()
        ),
        (json!(0), json!(3))
    );
    assert_eq!(
        (
            per[1]["representative"].clone(),
            per[1]["population"].clone()
        ),
        (json!(2), json!(2))
    );
    for h in per {
        close(&h["angle_to_live_degrees"], 45.0);
    }
    close(&s["black_hole_angle_min_degrees"], 45.0);
    close(&s["black_hole_mean_norm"], 0.5f64.sqrt());
    close(
        &s["cosine_weighted_vs_unweighted"],
        0.5 / (0.52f64.sqrt() * 0.5f64.sqrt()),
    );
    close(&s["mean_norm"], 41f64.sqrt() / 7.0);
    close(
        &s["dead_minus_mean_norm"],
        ((0.6f64 - 5.0 / 7.0).powi(2) + (0.4f64 - 4.0 / 7.0).powi(2)).sqrt(),
    );
    let (_, raw2) = centroid_angle(dir.path(), &path, &bh, 2).unwrap();
    assert_eq!(raw1, raw2);

    // Without black holes: a summary that says there is no dead set.
    let nodead = dir.path().join("nodead");
    std::fs::create_dir(&nodead).unwrap();
    let path = nodead.join("w.safetensors");
    write_w(&path, Dtype::BF16, [3, 2], &bf16_bytes(&flat[..6]));
    let bh = black_holes(&nodead, &path);
    let (s, _) = centroid_angle(&nodead, &path, &bh, 1).unwrap();
    assert_eq!(s["dead_tokens"], json!(0));
    assert!(s["note"].as_str().unwrap().contains("no dead set"), "{s}");
    assert_eq!(
        (s["cosine"].clone(), s["angle_degrees"].clone()),
        (Value::Null, Value::Null)
    );
    // live = (1, 0), (−1, 2), (0, 1) → centroid (0, 1)
    close(&s["live_centroid_norm"], 1.0);
}

/// `w.geography`'s summary, vectors CSV, extended CSV and the raw bytes of all three.
type GeoOuts = (Value, String, String, Vec<Vec<u8>>);

fn geography(
    dir: &Path,
    w: &Path,
    bh: &Path,
    dead: &Path,
    params: Value,
    threads: usize,
) -> Result<GeoOuts, String> {
    let outs = [
        ("vectors", dir.join("geo_vectors.csv")),
        ("summary", dir.join("geo_summary.json")),
        ("extended", dir.join("geo_extended.csv")),
    ];
    run(
        "w.geography",
        &ctx(
            params,
            &[("w", w), ("black_holes", bh), ("dead", dead)],
            &outs,
            threads,
        ),
    )
    .map_err(|e| e.0)?;
    let raw: Vec<Vec<u8>> = outs
        .iter()
        .map(|(_, p)| std::fs::read(p).unwrap())
        .collect();
    Ok((
        serde_json::from_slice(&raw[1]).unwrap(),
        String::from_utf8(raw[0].clone()).unwrap(),
        String::from_utf8(raw[2].clone()).unwrap(),
        raw,
    ))
}

#[test]
fn geography_of_the_planted_rule_a_set() {
    let dir = tempfile::tempdir().unwrap();
    let (w, bh) = setup(dir.path(), Dtype::BF16);
    let dead = dead_sets(dir.path(), &w, &bh, json!({"window": 20}), 1)
        .unwrap()
        .masks_path;
    let params = json!({"extended": [1e-3, 3e-3]});
    let (s, vectors, extended, raw1) =
        geography(dir.path(), &w, &bh, &dead, params.clone(), 1).unwrap();
    // Set: A (5), A+1 col 0 (3), A+2 col 1 (2), S (1, 2, 3 U; 1 U), E (≈6e-9, 7e-9), shell 20…60 U.
    assert_eq!(
        (s["tokens"].clone(), s["vectors"].clone()),
        (json!(27), json!(20))
    );
    assert_eq!(
        (s["black_holes"].clone(), s["singletons"].clone()),
        (json!(3), json!(17))
    );
    assert_eq!(s["anchor_token"], json!(3));
    let e1 = 0.75 / (1u64 << 27) as f64;
    let e2 = (1.0 - 1.0 / 32.0) / (1u64 << 27) as f64;
    let mut r = vec![0.0, e1, e2, U, U, U, 2.0 * U, 2.0 * U, 3.0 * U];
    r.extend((0..11).map(|k| (20 + 4 * k) as f64 * U));
    let pct = |q: f64| {
        let pos = q / 100.0 * 19.0;
        let lo = pos.floor() as usize;
        r[lo] + (r[(lo + 1).min(19)] - r[lo]) * (pos - lo as f64)
    };
    let rs = &s["r"];
    close(&rs["min"], 0.0);
    close(&rs["median"], 22.0 * U);
    close(&rs["max"], 60.0 * U);
    close(&rs["mean"], r.iter().sum::<f64>() / 20.0);
    close(&rs["p90"], pct(90.0));
    close(&rs["p99"], pct(99.0));
    // core (r < 5e-5 < U): A, E1, E2.
    assert_eq!(
        s["core"],
        json!({"vectors": 3, "tokens": 7, "tokens_per_vector": 7.0 / 3.0, "black_holes": 1, "singletons": 2})
    );
    assert_eq!(
        s["oort"],
        json!({"vectors": 17, "tokens": 20, "tokens_per_vector": 20.0 / 17.0, "black_holes": 2, "singletons": 15})
    );
    let bands: Vec<(u64, u64)> = s["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["vectors"].as_u64().unwrap(),
                b["tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bands,
        [(3, 7), (3, 5), (3, 4), (0, 0), (11, 11), (0, 0), (0, 0)]
    );
    assert_eq!(s["bands"][6]["upper"], Value::Null);
    // 20 bins of width 1.1 · 60 U / 20 = 3.3 U: [0, 3.3 U) holds 9 vectors, 20 U → bin 7 …
    let bins = s["bins"].as_array().unwrap();
    assert_eq!(bins.len(), 20);
    close(&bins[0]["upper"], 3.3 * U);
    let counts: Vec<u64> = bins
        .iter()
        .map(|b| b["vectors"].as_u64().unwrap())
        .collect();
    let mut expected = vec![0u64; 20];
    expected[0] = 9;
    for k in 0..11 {
        expected[((20 + 4 * k) as f64 / 3.3) as usize] += 1;
    }
    assert_eq!(counts, expected);
    assert_eq!(bins[0]["tokens"], json!(16));
    assert_eq!(s["inner_half"]["vectors"], json!(10));
    assert_eq!(s["inner_half"]["tokens"], json!(17));
    close(&s["nearest_neighbour"]["max"], 4.0 * U);
    close(&s["nearest_neighbour"]["min"], e2 - e1);
    close(&s["max_pairwise"], 3609f64.sqrt() * U);
    let a_norm = anchor().iter().map(|&b| val(b).powi(2)).sum::<f64>().sqrt();
    close(&s["anchor_norm"], a_norm);
    close(
        &s["diameter_percent_of_anchor_norm"],
        100.0 * 60.0 * U / a_norm,
    );
    let o = &s["outlier"];
    assert_eq!(
        (o["token"].clone(), o["tokens"].clone()),
        (json!(SHELL[10]), json!(1))
    );
    close(&o["r"], 60.0 * U);
    close(&o["nn_distance"], 4.0 * U);
    assert_eq!(
        (
            o["exponent_distance"].clone(),
            o["exponent_histogram"].clone()
        ),
        (json!(0), json!([8]))
    );
    assert_eq!(s["second_farthest"]["token"], json!(SHELL[9]));
    close(&s["second_farthest"]["gap_ratio"], 60.0 / 56.0);
    // extended shell [1e-3, 3e-3): 20, 24, …, 48 U.
    assert_eq!(s["extended"]["tokens"], json!(8));
    assert_eq!(s["extended"]["in_set"], json!(8));
    assert_eq!(extended.lines().count(), 9);
    assert_eq!(
        extended.lines().nth(1).unwrap(),
        format!("{},{},true", SHELL[0], (20.0 * U) as f32)
    );
    assert_eq!(s["near_tokens"], json!(28));
    assert!(s["pca"]["pc1_percent"].as_f64().unwrap() > 90.0);
    let first = vectors.lines().nth(1).unwrap();
    assert_eq!(first, format!("1,1,0,{},{},oort,2", U as f32, U as f32));
    assert!(vectors.contains("\n3,5,1,0,"));
    let (_, _, _, raw2) = geography(dir.path(), &w, &bh, &dead, params.clone(), 2).unwrap();
    assert_eq!(raw1, raw2);

    // The rule-B set has no shell rows: the extended shell is all outside it.
    let (s, _, _, _) = geography(
        dir.path(),
        &w,
        &bh,
        &dead,
        json!({"mask": "rule_b", "extended": [1e-3, 3e-3]}),
        1,
    )
    .unwrap();
    assert_eq!(
        (s["tokens"].clone(), s["extended"]["in_set"].clone()),
        (json!(17), json!(0))
    );
    assert_eq!(s["extended"]["tokens"], json!(8));

    // Errors: too many vectors, unknown mask, bad bands.
    let err = geography(dir.path(), &w, &bh, &dead, json!({"max_vectors": 19}), 1).unwrap_err();
    assert!(err.contains("max_vectors"), "{err}");
    let err = geography(dir.path(), &w, &bh, &dead, json!({"mask": "rule_c"}), 1).unwrap_err();
    assert!(err.contains("no mask `rule_c`"), "{err}");
    let err = geography(
        dir.path(),
        &w,
        &bh,
        &dead,
        json!({"bands": [0, 1e-3, 1e-4]}),
        1,
    )
    .unwrap_err();
    assert!(err.contains("ascending"), "{err}");
}

#[test]
fn geography_pca_shares_of_a_planted_cross() {
    // Offsets (col 0, col 4) in ULPs: (0, 0) ×2 (the black hole), (±2, 0), (0, ±1): scatter
    // 8 U² along column 0 and 2 U² along column 4 → PC1 80 %, PC2 20 %.
    let dir = tempfile::tempdir().unwrap();
    let a = anchor();
    let at = |d0: i16, d4: i16| {
        let mut r = a.clone();
        r[0] = (r[0] as i16 + d0) as u16;
        r[4] = (r[4] as i16 + d4) as u16;
        r
    };
    let mut rows = vec![at(0, 0), at(2, 0), at(0, 0), at(-2, 0), at(0, 1), at(0, -1)];
    rows.extend((0..4u16).map(|k| vec![pat(0, 130, k); D]));
    let path = dir.path().join("w.safetensors");
    write_w(
        &path,
        Dtype::BF16,
        [rows.len(), D],
        &bf16_bytes(&rows.concat()),
    );
    let bh = black_holes(dir.path(), &path);
    let dead = dead_sets(dir.path(), &path, &bh, json!({}), 1)
        .unwrap()
        .masks_path;
    let (s, _, _, _) = geography(dir.path(), &path, &bh, &dead, json!({}), 1).unwrap();
    assert_eq!(s["vectors"], json!(5));
    let pca = &s["pca"];
    assert_eq!(
        (pca["matrix"].clone(), pca["size"].clone()),
        (json!("gram"), json!(5))
    );
    close(&pca["pc1_percent"], 80.0);
    close(&pca["pc2_percent"], 20.0);
    close(&pca["trace"], 10.0 * U * U);

    // No black hole: no anchor.
    let flat: Vec<u16> = rows[1..].concat();
    let path2 = dir.path().join("w2.safetensors");
    write_w(&path2, Dtype::BF16, [rows.len() - 1, D], &bf16_bytes(&flat));
    let nodir = dir.path().join("no");
    std::fs::create_dir(&nodir).unwrap();
    let bh2 = black_holes(&nodir, &path2);
    let dead2 = dead_sets(&nodir, &path2, &bh2, json!({}), 1)
        .unwrap()
        .masks_path;
    let err = geography(&nodir, &path2, &bh2, &dead2, json!({}), 1).unwrap_err();
    assert!(err.contains("no anchor"), "{err}");
}

/// Runs the three stages on the extracted SmolLM2 W (F32 [49152, 576]) and prints the summaries.
/// `cargo test --release -p azimuth-stages --test it real_smollm2_dead_stages -- --ignored --nocapture`
#[test]
#[ignore = "needs the default pipeline's out/smollm2/w.safetensors (or AZIMUTH_DEAD_W)"]
fn real_smollm2_dead_stages() {
    let w = PathBuf::from(
        std::env::var("AZIMUTH_DEAD_W")
            .unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/../out/smollm2/w.safetensors").into()),
    );
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let bh = black_holes(dir.path(), &w);
    println!("black holes: {:.2?}", t.elapsed());
    println!(
        "{}",
        std::fs::read_to_string(dir.path().join("bh_summary.json")).unwrap()
    );
    let t = std::time::Instant::now();
    let o = dead_sets(dir.path(), &w, &bh, json!({}), 2).unwrap();
    println!("dead_sets: {:.2?}", t.elapsed());
    println!(
        "{}\n{}",
        o.sweep,
        serde_json::to_string_pretty(&o.summary).unwrap()
    );
    let (s, _) = centroid_angle(dir.path(), &w, &bh, 2).unwrap();
    println!("{}", serde_json::to_string_pretty(&s).unwrap());
    let t = std::time::Instant::now();
    match geography(dir.path(), &w, &bh, &o.masks_path, json!({}), 2) {
        Ok((s, _, _, _)) => println!(
            "geography {:.2?}: {}",
            t.elapsed(),
            serde_json::to_string_pretty(&s).unwrap()
        ),
        Err(e) => println!("geography: {e}"),
    }
}
