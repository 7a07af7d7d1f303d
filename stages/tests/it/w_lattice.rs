//! Tests of the `w_lattice` family (`w.topology`, `w.exponents`, `w.quantization`) through
//! `azimuth_stages::run` on planted matrices whose answers are worked out by hand in the comments:
//! a lattice graph with a chain, a triangle with a pendant, two adjacent black holes, a pair that
//! is adjacent only when distances are sign-aware, a pair adjacent across an exponent boundary
//! (where bit space and lattice coordinates disagree) and isolated vectors; the same graph in F32;
//! exponent histograms and |W| statistics of a small W; gap statistics of hand-picked values; bad
//! inputs; byte determinism across thread counts. `real_smollm2_lattice` (ignored) runs the three
//! stages on the SmolLM2 W named by `AZIMUTH_SMOLLM2_W`.

use std::path::{Path, PathBuf};

use azimuth_stages::{run, StageContext};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

use crate::support::write_w;

fn ctx(
    params: Value,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, PathBuf)],
    threads: usize,
) -> StageContext {
    crate::support::ctx("wl", params, inputs, outputs, threads)
}

/// A masks file like `w.dead_sets`' `masks`: BOOL [V] tensors, one per rule.
fn write_masks(path: &Path, masks: &[(&str, Vec<bool>)]) {
    let bytes: Vec<(String, Vec<u8>)> = masks
        .iter()
        .map(|(n, m)| (n.to_string(), m.iter().map(|&b| u8::from(b)).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::BOOL, vec![b.len()], b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// Runs `w.black_holes` on `w` and returns the path of its `members` output.
fn black_holes(dir: &Path, w: &Path) -> PathBuf {
    let outs = [
        ("table", dir.join("bh.csv")),
        ("summary", dir.join("bh.json")),
        ("members", dir.join("members.safetensors")),
    ];
    run("w.black_holes", &ctx(json!({}), &[("w", w)], &outs, 1)).unwrap();
    outs[2].1.clone()
}

/// Every output of one stage run: (port, bytes).
type Outs = Vec<(String, Vec<u8>)>;

fn run_stage(
    stage: &str,
    dir: &Path,
    params: Value,
    inputs: &[(&str, &Path)],
    ports: &[&str],
    threads: usize,
) -> Result<Outs, String> {
    let outs: Vec<(&str, PathBuf)> = ports
        .iter()
        .map(|p| (*p, dir.join(format!("{}-{p}.out", stage.replace('.', "_")))))
        .collect();
    run(stage, &ctx(params, inputs, &outs, threads)).map_err(|e| e.0)?;
    Ok(outs
        .iter()
        .map(|(p, path)| (p.to_string(), std::fs::read(path).unwrap()))
        .collect())
}

fn text(outs: &Outs, port: &str) -> String {
    String::from_utf8(outs.iter().find(|(p, _)| p == port).unwrap().1.clone()).unwrap()
}

fn json_of(outs: &Outs, port: &str) -> Value {
    serde_json::from_str(&text(outs, port)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// w.topology

/// The planted dead set, as per-dimension ordinal offsets (d0, d1, d2) from a base and the tokens
/// holding each vector. Dimension 0 starts 3 steps below an exponent boundary (offset 3 crosses
/// it), dimension 1 sits mid-binade, dimension 2 straddles zero (offset −1 is the negative
/// smallest subnormal). Bit-space L∞ is the max of the offset differences.
///
/// Components of the L∞ = 1 graph (numbered by tokens, then smallest token):
/// 1. T, 7 tokens: t0 (0,3,0) black hole of 3 – t1 (0,4,0) – t2 (1,4,1) black hole of 2 –
///    t3 (2,5,1): triangle t0 t1 t2 plus pendant t3; 4 edges, density 4/6, clustering
///    (1 + 1 + 1/3 + 0)/4 = 7/12.
/// 2. C, 6 tokens: chain c0 (0,0,0) black hole of 4 – c1 (1,0,0) – c2 (2,1,0); density 2/3,
///    clustering 0. c2–t0 is the one near miss at L∞ = 2.
/// 3. M, 2 tokens: m1 (0,10,−1) – m0 (0,10,0): adjacent only sign-aware (the raw patterns 0x8001 and
///    0x0000 differ by 32,769 read as unsigned integers).
/// 4. X, 2 tokens: x1 (3,20,0) – x0 (2,20,0): adjacent across the exponent boundary (lattice
///    coordinates 128 vs 255 in bf16), the one edge whose exponents differ.
/// 5. i0 (0,30,0), black hole of 2, isolated. 6. i1 (0,40,0), isolated.
const NODES: &[(&str, [i64; 3], &[usize])] = &[
    ("c0", [0, 0, 0], &[3, 10, 11, 12]),
    ("c1", [1, 0, 0], &[1]),
    ("c2", [2, 1, 0], &[18]),
    ("t0", [0, 3, 0], &[7, 8, 9]),
    ("t1", [0, 4, 0], &[2]),
    ("t2", [1, 4, 1], &[13, 14]),
    ("t3", [2, 5, 1], &[19]),
    ("m0", [0, 10, 0], &[20]),
    ("m1", [0, 10, -1], &[5]),
    ("x0", [2, 20, 0], &[21]),
    ("x1", [3, 20, 0], &[6]),
    ("i0", [0, 30, 0], &[15, 16]),
    ("i1", [0, 40, 0], &[22]),
];
/// Rows outside the dead set: a black hole of 2 (tokens 0, 17) and singletons 4 and 23.
const LIVE: &[usize] = &[0, 4, 17, 23];
const TV: usize = 24;

/// Pattern of ordinal key `k` in the format of `bytes` bytes per element.
fn from_ordinal(k: i64, bytes: usize) -> u32 {
    let sign = if bytes == 2 { 0x8000u32 } else { 0x8000_0000 };
    if k < 0 {
        sign | (-k) as u32
    } else {
        k as u32
    }
}

/// The planted W in BF16 (`bytes` = 2) or F32 (4), and the dead mask.
fn planted_graph(bytes: usize) -> (Vec<u8>, Vec<bool>) {
    // Bases as ordinal keys: d0 three steps below 1.0, d1 mid-binade, d2 zero.
    let base: [i64; 3] = if bytes == 2 {
        [0x3F7D, 0x3E40, 0]
    } else {
        [0x3F7F_FFFD, 0x3E40_0000, 0]
    };
    let mut rows = vec![[0u32; 3]; TV];
    for (_, off, tokens) in NODES {
        for &t in *tokens {
            for d in 0..3 {
                rows[t][d] = from_ordinal(base[d] + off[d], bytes);
            }
        }
    }
    // Live rows: far away (negative values around −2.0), token 17 a copy of token 0.
    for (n, &t) in LIVE.iter().enumerate() {
        let k = if t == 17 { 0 } else { n as i64 };
        for (d, cell) in rows[t].iter_mut().enumerate() {
            *cell = from_ordinal(-(base[0] + 200 + k + d as i64), bytes);
        }
    }
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|&b| {
            if bytes == 2 {
                (b as u16).to_le_bytes().to_vec()
            } else {
                b.to_le_bytes().to_vec()
            }
        })
        .collect();
    let dead = (0..TV).map(|t| !LIVE.contains(&t)).collect();
    (data, dead)
}

const TOPOLOGY_PORTS: &[&str] = &["edges", "components", "summary"];

/// Writes the planted W, its black holes and masks; returns (w, members, masks) paths.
fn topology_inputs(dir: &Path, bytes: usize) -> (PathBuf, PathBuf, PathBuf) {
    let (data, dead) = planted_graph(bytes);
    let w = dir.join("w.safetensors");
    let dtype = if bytes == 2 { Dtype::BF16 } else { Dtype::F32 };
    write_w(&w, dtype, [TV, 3], &data);
    let members = black_holes(dir, &w);
    let masks = dir.join("masks.safetensors");
    let everything = vec![true; TV];
    write_masks(&masks, &[("rule_a", dead), ("rule_b", everything)]);
    (w, members, masks)
}

fn topology(
    dir: &Path,
    (w, members, masks): &(PathBuf, PathBuf, PathBuf),
    params: Value,
    threads: usize,
) -> Result<Outs, String> {
    run_stage(
        "w.topology",
        dir,
        params,
        &[("w", w), ("black_holes", members), ("dead", masks)],
        TOPOLOGY_PORTS,
        threads,
    )
}

fn close(v: &Value, want: f64) -> bool {
    (v.as_f64().unwrap() - want).abs() < 1e-12
}

/// Checks everything that does not depend on the element format.
fn check_planted_graph(o: &Outs) {
    assert_eq!(
        text(o, "edges"),
        "a,b,linf,l1,same_exponents\n1,3,1,1,true\n1,18,1,2,true\n2,7,1,1,true\n2,13,1,2,true\n\
         5,20,1,1,true\n6,21,1,1,false\n7,13,1,3,true\n13,19,1,2,true\n"
    );
    let comps = text(o, "components");
    let lines: Vec<&str> = comps.lines().collect();
    assert_eq!(
        lines[0],
        "component,vectors,tokens,edges,density,clustering,black_holes,black_hole_populations,\
         representatives,degrees"
    );
    let fields: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    assert_eq!(fields.len(), 6, "{comps}");
    let pick = |f: &Vec<&str>| [f[0], f[1], f[2], f[3], f[6], f[7], f[8], f[9]].map(String::from);
    let want: [[&str; 8]; 6] = [
        ["1", "4", "7", "4", "2;4", "3;2", "2;7;13;19", "2;2;3;1"],
        ["2", "3", "6", "2", "1", "4", "1;3;18", "2;1;1"],
        ["3", "2", "2", "1", "", "", "5;20", "1;1"],
        ["4", "2", "2", "1", "", "", "6;21", "1;1"],
        ["5", "1", "2", "0", "5", "2", "15", "0"],
        ["6", "1", "1", "0", "", "", "22", "0"],
    ];
    for (f, w) in fields.iter().zip(want) {
        assert_eq!(pick(f), w.map(String::from), "{comps}");
    }
    let num = |s: &str| s.parse::<f64>().unwrap();
    assert!((num(fields[0][4]) - 4.0 / 6.0).abs() < 1e-12);
    assert!((num(fields[0][5]) - 7.0 / 12.0).abs() < 1e-12);
    assert!((num(fields[1][4]) - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(
        fields[1..].iter().map(|f| f[5]).collect::<Vec<_>>(),
        ["0"; 5]
    );
    assert_eq!((fields[2][4], fields[4][4]), ("1", "0"));

    let s = json_of(o, "summary");
    assert_eq!(
        (
            s["dead_tokens"].clone(),
            s["vectors"].clone(),
            s["black_hole_vectors"].clone(),
            s["singleton_vectors"].clone(),
            s["edges"].clone()
        ),
        (json!(20), json!(13), json!(4), json!(9), json!(8))
    );
    assert_eq!(
        s["components"],
        json!({"count": 6, "non_trivial": 4, "isolated_vectors": 2, "isolated_tokens": 3})
    );
    assert_eq!(
        s["edge_l1_histogram"],
        json!([{"l1": 1, "edges": 4}, {"l1": 2, "edges": 3}, {"l1": 3, "edges": 1}])
    );
    assert!(close(&s["edge_l1_mean"], 13.0 / 8.0));
    assert_eq!(
        s["exponents"],
        json!({"all_edges_same_exponents": false, "exceptions": 1})
    );
    // the lattice reading misses the boundary-crossing edge x0–x1
    assert_eq!(
        s["lattice_edges"],
        json!({"edges": 7, "also_bit_space_edges": 7, "same_edge_set": false})
    );
    let c1 = &s["non_trivial_components"][0];
    assert_eq!(
        (
            c1["component"].clone(),
            c1["vectors"].clone(),
            c1["tokens"].clone()
        ),
        (json!(1), json!(4), json!(7))
    );
    assert_eq!(
        c1["black_holes"],
        json!([{"id": 2, "population": 3}, {"id": 4, "population": 2}])
    );
    assert_eq!(
        c1["nodes"][2],
        json!({"representative": 13, "tokens": 2, "black_hole": 4, "degree": 3})
    );
    assert_eq!(s["non_trivial_components"].as_array().unwrap().len(), 4);

    // black holes in the dead set: 1 = c0 (4 tokens), 2 = t0 (3), 4 = t2, 5 = i0; 3 is live
    let bh = &s["black_hole_linf"];
    assert_eq!(bh["ids"], json!([1, 2, 4, 5]));
    assert_eq!(bh["populations"], json!([4, 3, 2, 2]));
    assert_eq!(bh["representatives"], json!([3, 7, 13, 15]));
    assert_eq!(
        bh["linf"],
        json!([[0, 3, 4, 30], [3, 0, 1, 27], [4, 1, 0, 26], [30, 27, 26, 0]])
    );
    assert_eq!(bh["linf_range"], json!([1, 30]));
    assert_eq!(
        bh["adjacent"],
        json!([{"a": 2, "b": 4, "linf": 1, "l1": 3}])
    );

    assert_eq!(
        s["near_misses"],
        json!({"components": [1, 2], "linf": 2, "count": 1, "pairs": [{"a": 7, "b": 18, "l1": 4}]})
    );
    // relaxed L∞ ≤ 2 adds c0–c2, t1–t3, t0–t3 and c2–t0, joining T and C
    let r = &s["relaxed"];
    assert_eq!(
        (
            r["linf"].clone(),
            r["edges"].clone(),
            r["components"].clone()
        ),
        (json!(2), json!(12), json!(5))
    );
    assert_eq!(
        r["non_trivial"],
        json!([
            {"vectors": 7, "tokens": 13, "black_holes": [{"id": 1, "population": 4},
             {"id": 2, "population": 3}, {"id": 4, "population": 2}], "joins": [1, 2]},
            {"vectors": 2, "tokens": 2, "black_holes": [], "joins": [3]},
            {"vectors": 2, "tokens": 2, "black_holes": [], "joins": [4]}
        ])
    );
    let between: Vec<(u64, u64, u64)> = s["component_min_linf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["a"].as_u64().unwrap(),
                d["b"].as_u64().unwrap(),
                d["linf"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        between,
        [
            (1, 2, 2),
            (1, 3, 5),
            (1, 4, 15),
            (1, 5, 25),
            (1, 6, 35),
            (2, 3, 9),
            (2, 4, 19),
            (2, 5, 29),
            (2, 6, 39),
            (3, 4, 10),
            (3, 5, 20),
            (3, 6, 30),
            (4, 5, 10),
            (4, 6, 20),
            (5, 6, 10)
        ]
    );
    // bit space: the groups join at 2, 5, 10, 10, 10; c0–i1 is the farthest pair
    assert_eq!(
        s["bit_space"],
        json!({"connect_threshold": 10, "diameter": 40})
    );
}

#[test]
fn topology_of_a_planted_bf16_dead_set() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = topology_inputs(dir.path(), 2);
    let o = topology(dir.path(), &inputs, json!({}), 2).unwrap();
    check_planted_graph(&o);
    // Lattice coordinates in d0: 253 + k below the boundary, 128 at 1.0, so x1 is 125 + k away
    // from a node at offset k: nearest 125 (offset 0), farthest 127 (offset 2).
    let s = json_of(&o, "summary");
    assert_eq!(
        s["lattice_coordinates"],
        json!({"connect_threshold": 125, "diameter": 127})
    );
    assert_eq!(
        (s["dtype"].clone(), s["mask"].clone()),
        (json!("BF16"), json!("rule_a"))
    );
}

#[test]
fn topology_of_the_same_dead_set_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = topology_inputs(dir.path(), 4);
    let o = topology(dir.path(), &inputs, json!({}), 1).unwrap();
    check_planted_graph(&o);
    // F32 lattice coordinates in d0: 2^24 − 3 + k below 1.0, 2^23 at 1.0: 2^23 − 3 + k apart.
    let s = json_of(&o, "summary");
    assert_eq!(
        s["lattice_coordinates"],
        json!({"connect_threshold": 8_388_605, "diameter": 8_388_607})
    );
    assert_eq!(s["dtype"], json!("F32"));
}

#[test]
fn topology_params_relaxation_and_determinism() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = topology_inputs(dir.path(), 2);
    let a = topology(dir.path(), &inputs, json!({"relaxed_linf": 5}), 1).unwrap();
    let b = topology(dir.path(), &inputs, json!({"relaxed_linf": 5}), 2).unwrap();
    assert_eq!(a, b, "outputs differ between 1 and 2 threads");
    // L∞ ≤ 5 also joins M to T (t3–m0, t3–m1 at 5): one component of 9 vectors.
    let s = json_of(&a, "summary");
    assert_eq!(s["relaxed"]["components"], json!(4));
    assert_eq!(s["relaxed"]["non_trivial"][0]["vectors"], json!(9));
    assert_eq!(s["relaxed"]["non_trivial"][0]["joins"], json!([1, 2, 3]));

    // rule_b selects every row: 14 vectors (the live black hole and the live singletons join).
    let all = topology(dir.path(), &inputs, json!({"mask": "rule_b"}), 2).unwrap();
    let s = json_of(&all, "summary");
    assert_eq!(
        (s["vectors"].clone(), s["dead_tokens"].clone()),
        (json!(16), json!(24))
    );
    assert_eq!(s["black_hole_linf"]["ids"], json!([1, 2, 3, 4, 5]));
}

#[test]
fn topology_rejects_bad_inputs_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = topology_inputs(dir.path(), 2);
    let e = topology(dir.path(), &inputs, json!({"mask": "rule_z"}), 1).unwrap_err();
    assert!(
        e.contains("no mask `rule_z`") && e.contains("`rule_a`") && e.contains("w.topology"),
        "{e}"
    );
    let e = topology(dir.path(), &inputs, json!({"max_vectors": 12}), 1).unwrap_err();
    assert!(
        e.contains("13 unique vectors") && e.contains("max_vectors"),
        "{e}"
    );

    // a mask of the wrong length, and one that selects nothing
    let short = dir.path().join("short.safetensors");
    write_masks(&short, &[("rule_a", vec![true; TV - 1])]);
    let e = topology(
        dir.path(),
        &(inputs.0.clone(), inputs.1.clone(), short),
        json!({}),
        1,
    )
    .unwrap_err();
    assert!(e.contains("BOOL [24]") && e.contains("[23]"), "{e}");
    let empty = dir.path().join("empty.safetensors");
    write_masks(&empty, &[("rule_a", vec![false; TV])]);
    let e = topology(
        dir.path(),
        &(inputs.0.clone(), inputs.1.clone(), empty),
        json!({}),
        1,
    )
    .unwrap_err();
    assert!(e.contains("selects no tokens"), "{e}");

    // black holes of another W: wrong length, and ids that split identical rows
    let other_dir = tempfile::tempdir().unwrap();
    let other_w = other_dir.path().join("w.safetensors");
    write_w(&other_w, Dtype::BF16, [3, 1], &[0, 0, 0, 0, 1, 0]);
    let other = black_holes(other_dir.path(), &other_w);
    let e = topology(
        dir.path(),
        &(inputs.0.clone(), other, inputs.2.clone()),
        json!({}),
        1,
    )
    .unwrap_err();
    assert!(e.contains("black_hole_id") && e.contains("24 rows"), "{e}");
    let forged = dir.path().join("forged.safetensors");
    let mut ids = vec![0u8; TV];
    ids[3] = 1; // token 3 alone, though 10, 11, 12 share its row
    let view = TensorView::new(Dtype::U8, vec![TV], &ids).unwrap();
    safetensors::tensor::serialize_to_file([("black_hole_id", view)], None, &forged).unwrap();
    let e = topology(
        dir.path(),
        &(inputs.0.clone(), forged, inputs.2.clone()),
        json!({}),
        1,
    )
    .unwrap_err();
    assert!(
        e.contains("disagrees with W") && e.contains("recompute"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// w.exponents

/// Encodes f32 values as BF16 (they must be exact in bf16) or F32 bytes.
fn encode(values: &[f32], bytes: usize) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&x| {
            if bytes == 2 {
                let b = azimuth_stages::bf16::from_f32(x);
                assert_eq!(
                    azimuth_stages::bf16::to_f32(b),
                    x,
                    "{x} is not a bf16 value"
                );
                b.to_le_bytes().to_vec()
            } else {
                x.to_le_bytes().to_vec()
            }
        })
        .collect()
}

/// Ten tokens × 4. Black hole 1 = A (tokens 1, 4, 7), 2 = B (2, 9), 3 = C (5, 6); live 0, 3, 8.
/// Exponents: A and B [126, 125, 0, 128]; C [126, 124, 0, 128].
fn planted_exponents() -> Vec<f32> {
    let a = [0.5, -0.25, 0.0, 3.0];
    let b = [0.75, -0.375, -0.0, 2.5];
    let c = [0.5, 0.125, 0.0, 3.0];
    let rows: [[f32; 4]; 10] = [
        [1.0, 1.0, 1.0, -2.0],
        a,
        b,
        [1.0, 0.5, 4.0, 1.0],
        a,
        c,
        c,
        a,
        [0.0625, 1.0, 1.0, 1.0],
        b,
    ];
    rows.iter().flatten().copied().collect()
}

fn exponents(dir: &Path, w: &Path, members: &Path, threads: usize) -> Result<Outs, String> {
    run_stage(
        "w.exponents",
        dir,
        json!({}),
        &[("w", w), ("black_holes", members)],
        &["histogram", "summary"],
        threads,
    )
}

/// Population mean and std of |x| over `values`, the textbook way.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|x| x.abs()).sum::<f64>() / n;
    let var = values.iter().map(|x| (x.abs() - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn exponent_histograms_and_statistics_of_a_planted_w() {
    for (bytes, dtype, mantissa) in [(2usize, Dtype::BF16, 7i32), (4, Dtype::F32, 23)] {
        let dir = tempfile::tempdir().unwrap();
        let values = planted_exponents();
        let w = dir.path().join("w.safetensors");
        write_w(&w, dtype, [10, 4], &encode(&values, bytes));
        let members = black_holes(dir.path(), &w);
        let o = exponents(dir.path(), &w, &members, 2).unwrap();
        assert_eq!(
            text(&o, "histogram"),
            "exponent,bh_vectors,bh_tokens,live\n0,3,7,0\n123,0,0,1\n124,1,2,0\n125,2,5,0\n\
             126,3,7,1\n127,0,0,8\n128,3,7,1\n129,0,0,1\n",
            "{dtype}"
        );
        let s = json_of(&o, "summary");
        assert_eq!(
            (
                s["black_holes"].clone(),
                s["black_hole_tokens"].clone(),
                s["live_tokens"].clone()
            ),
            (json!(3), json!(7), json!(3))
        );
        assert_eq!(
            s["agreement"],
            json!({"all_share_every_exponent": false, "pairs": 3, "pairs_agreeing_everywhere": 1,
                   "min_agree": 3, "listed_all": true, "listed": [{"a": 1, "b": 2, "agree": 4},
                   {"a": 1, "b": 3, "agree": 3}, {"a": 2, "b": 3, "agree": 3}]})
        );
        assert_eq!(
            s["black_hole_exponents"]["values"],
            json!([0, 124, 125, 126, 128])
        );
        assert_eq!(s["black_hole_exponents"]["gaps"], json!([127]));
        assert_eq!(
            s["live_exponents"],
            json!({"values": 12, "distinct": 5, "min": 123, "max": 129, "mode": 127,
                   "mode_fraction": 8.0 / 12.0})
        );
        assert_eq!(s["bh_token_exponents"]["mode"], json!(0)); // E=0, 126, 128 tie at 7
        let row = |t: usize| values[t * 4..t * 4 + 4].iter().map(|&x| x as f64);
        let bh_vals: Vec<f64> = [1, 2, 4, 5, 6, 7, 9].iter().flat_map(|&t| row(t)).collect();
        let live_vals: Vec<f64> = [0, 3, 8].iter().flat_map(|&t| row(t)).collect();
        for (key, vals, max) in [
            ("abs_bh_tokens", &bh_vals, 3.0),
            ("abs_live", &live_vals, 4.0),
        ] {
            let (mean, std) = mean_std(vals);
            let a = &s[key];
            assert_eq!(a["values"], json!(vals.len()), "{key}");
            assert!(
                close(&a["mean"], mean) && close(&a["std"], std),
                "{key}: {a}"
            );
            assert_eq!(a["max"], json!(max), "{key}");
        }
        // anchor A: exponents [126, 125, 0, 128]; ULP 2^(max(E,1) − 127 − mantissa bits)
        let an = &s["anchor"];
        assert_eq!(
            (an["representative"].clone(), an["population"].clone()),
            (json!(1), json!(3))
        );
        let e = [126.0f64, 125.0, 0.0, 128.0];
        let (emean, _) = mean_std(&e);
        let estd = (e.iter().map(|x| (x - emean).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert_eq!(
            (an["exponent"]["min"].clone(), an["exponent"]["max"].clone()),
            (json!(0.0), json!(128.0))
        );
        assert!(close(&an["exponent"]["mean"], 94.75) && close(&an["exponent"]["std"], estd));
        assert_eq!(an["exponent"]["median"], json!(125.5));
        let pow2 = |k: i32| f64::from_bits(((k + 1023) as u64) << 52); // exact, unlike powi
        let ulp = |e: i32| pow2(e.max(1) - 127 - mantissa);
        let u = &an["ulp"];
        // (serde_json's default float parser may be one ulp off, hence relative comparisons)
        let rel = |v: &Value, want: f64| (v.as_f64().unwrap() / want - 1.0).abs() < 1e-15;
        assert!(rel(&u["min"], ulp(0)) && rel(&u["max"], ulp(128)), "{u}");
        assert!(rel(&u["ratio"], pow2(127)), "{u}");
        assert!(rel(&u["median"], (ulp(125) + ulp(126)) / 2.0), "{u}");
        assert!(
            rel(&u["mean"], (ulp(126) + ulp(125) + ulp(0) + ulp(128)) / 4.0),
            "{u}"
        );
    }
}

/// A random BF16 matrix of `rows` × 8 with duplicated rows (black holes) every 7th row.
fn random_w(rows: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut w: Vec<u16> = (0..rows * 8)
        .map(|_| {
            let r = next();
            ((r as u16) & 0x8000) | ((100 + (r >> 20) % 30) as u16) << 7 | ((r >> 40) as u16 & 0x7F)
        })
        .collect();
    for t in (7..rows).step_by(7) {
        let src = (t % 3) * 8;
        let row: Vec<u16> = w[src..src + 8].to_vec();
        w[t * 8..t * 8 + 8].copy_from_slice(&row);
    }
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn exponents_without_black_holes_and_determinism_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 1500; // three blocks of the streaming pass
    let w = dir.path().join("w.safetensors");
    write_w(&w, Dtype::BF16, [rows, 8], &random_w(rows, 3));
    let members = black_holes(dir.path(), &w);
    let a = exponents(dir.path(), &w, &members, 1).unwrap();
    let b = exponents(dir.path(), &w, &members, 3).unwrap();
    assert_eq!(a, b, "outputs differ between 1 and 3 threads");
    let s = json_of(&a, "summary");
    assert_eq!(s["black_holes"], json!(3));
    assert_eq!(s["agreement"]["pairs"], json!(3));
    let total: u64 = s["bh_token_exponents"]["values"].as_u64().unwrap()
        + s["live_exponents"]["values"].as_u64().unwrap();
    assert_eq!(total, rows as u64 * 8);

    // no black holes at all: everything is live, no anchor
    let none = dir.path().join("none.safetensors");
    let ids = vec![0u8; rows];
    let view = TensorView::new(Dtype::U8, vec![rows], &ids).unwrap();
    safetensors::tensor::serialize_to_file([("black_hole_id", view)], None, &none).unwrap();
    let o = exponents(dir.path(), &w, &none, 2).unwrap();
    let s = json_of(&o, "summary");
    assert_eq!(s["black_holes"], json!(0));
    assert_eq!(s["anchor"], Value::Null);
    assert_eq!(s["agreement"]["all_share_every_exponent"], Value::Null);
    assert_eq!(s["live_exponents"]["values"], json!(rows * 8));
    assert_eq!(s["abs_bh_tokens"]["mean"], Value::Null);
    // live exponents of the random rows lie in 100..=129
    assert_eq!(
        (
            s["live_exponents"]["min"].clone(),
            s["live_exponents"]["max"].clone()
        ),
        (json!(100), json!(129))
    );

    // black holes of a different W are caught
    let other = dir.path().join("other.safetensors");
    let mut ids = vec![0u8; rows];
    ids[0] = 1;
    ids[1] = 1;
    let view = TensorView::new(Dtype::U8, vec![rows], &ids).unwrap();
    safetensors::tensor::serialize_to_file([("black_hole_id", view)], None, &other).unwrap();
    let e = exponents(dir.path(), &w, &other, 1).unwrap_err();
    assert!(
        e.contains("disagrees with W") && e.contains("w.exponents"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// w.quantization

fn quantization(
    dir: &Path,
    w: &Path,
    masks: &Path,
    params: Value,
    threads: usize,
) -> Result<Outs, String> {
    run_stage(
        "w.quantization",
        dir,
        params,
        &[("w", w), ("dead", masks)],
        &["values", "summary"],
        threads,
    )
}

#[test]
fn quantization_of_hand_built_bf16_values() {
    let dir = tempfile::tempdir().unwrap();
    // dead tokens 0, 1, 2, 4 (rows 0 and 2 identical); 3 and 5 live
    let rows: [[f32; 3]; 6] = [
        [0.5, -0.25, 0.0],
        [0.5, 0.25, -0.0],
        [0.5, -0.25, 0.0],
        [7.0, 7.0, 7.0],
        [0.5, 1.0, 0.125],
        [9.0, 9.0, 9.0],
    ];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let w = dir.path().join("w.safetensors");
    write_w(&w, Dtype::BF16, [6, 3], &encode(&flat, 2));
    let masks = dir.path().join("masks.safetensors");
    let dead = vec![true, true, true, false, true, false];
    write_masks(&masks, &[("rule_b", dead)]);
    let o = quantization(dir.path(), &w, &masks, json!({}), 2).unwrap();
    assert_eq!(
        text(&o, "values"),
        "value,pattern,count\n-0.25,0xbe80,2\n-0,0x8000,1\n0,0x0000,2\n0.125,0x3e00,1\n\
         0.25,0x3e80,1\n0.5,0x3f00,4\n1,0x3f80,1\n"
    );
    let s = json_of(&o, "summary");
    assert_eq!(
        (
            s["tokens"].clone(),
            s["components"].clone(),
            s["distinct_patterns"].clone(),
            s["distinct_values"].clone(),
            s["signed_zeros"].clone()
        ),
        (json!(4), json!(12), json!(7), json!(6), json!(true))
    );
    assert_eq!(
        (s["min"].clone(), s["max"].clone()),
        (json!(-0.25), json!(1.0))
    );
    // gaps between −0.25, 0, 0.125, 0.25, 0.5, 1: 0.25, 0.125, 0.125, 0.25, 0.5
    assert_eq!(
        s["gaps"],
        json!({"count": 5, "min": 0.125, "median": 0.25, "mean": 0.25, "most_common": [
            {"gap": 0.125, "count": 2}, {"gap": 0.25, "count": 2}, {"gap": 0.5, "count": 1}]})
    );
    assert_eq!(
        (
            s["unique_vectors"].clone(),
            s["constant_dimensions"].clone()
        ),
        (json!(3), json!(1))
    );
    assert_eq!(
        s["dimension_0"],
        json!({"pattern": "0x3f00", "value": 0.5, "vectors": 3, "distinct_patterns": 1})
    );
    assert_eq!(s["round_trip"]["roundtrip_exact"], json!(true));
    assert!(s["round_trip"]["note"]
        .as_str()
        .unwrap()
        .contains("tautological"));

    let e = quantization(dir.path(), &w, &masks, json!({"mask": "rule_a"}), 1).unwrap_err();
    assert!(
        e.contains("no mask `rule_a`") && e.contains("`rule_b`"),
        "{e}"
    );
}

#[test]
fn quantization_of_f32_values_counts_what_bf16_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let eps = f32::EPSILON; // 2^-23, the f32 step at 1
    let rows: [[f32; 2]; 3] = [[1.0, 1.0 + eps], [1.0 + 3.0 * eps, 0.1], [1.0, 1.0 + eps]];
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let w = dir.path().join("w.safetensors");
    write_w(&w, Dtype::F32, [3, 2], &encode(&flat, 4));
    let masks = dir.path().join("masks.safetensors");
    write_masks(&masks, &[("rule_b", vec![true; 3])]);
    let o = quantization(dir.path(), &w, &masks, json!({}), 1).unwrap();
    let s = json_of(&o, "summary");
    assert_eq!(s["distinct_values"], json!(4));
    let e = eps as f64;
    let g = &s["gaps"];
    assert_eq!(
        (g["min"].clone(), g["median"].clone()),
        (json!(e), json!(2.0 * e))
    );
    assert_eq!(g["mean"], json!((1.0 - 0.1f32 as f64 + e + 2.0 * e) / 3.0));
    assert_eq!(
        s["round_trip"],
        json!({"roundtrip_exact": false, "inexact_values": 3, "inexact_components": 4,
               "note": s["round_trip"]["note"]})
    );
    assert_eq!(
        (
            s["unique_vectors"].clone(),
            s["constant_dimensions"].clone()
        ),
        (json!(2), json!(0))
    );
    assert_eq!(s["dimension_0"]["pattern"], json!("0x3f800000"));
    assert!(text(&o, "values").contains("\n0.1,0x3dcccccd,1\n"));
}

#[test]
fn quantization_is_identical_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 1200;
    let w = dir.path().join("w.safetensors");
    write_w(&w, Dtype::BF16, [rows, 8], &random_w(rows, 11));
    let masks = dir.path().join("masks.safetensors");
    write_masks(
        &masks,
        &[("rule_b", (0..rows).map(|t| t % 3 != 1).collect())],
    );
    let a = quantization(dir.path(), &w, &masks, json!({}), 1).unwrap();
    let b = quantization(dir.path(), &w, &masks, json!({}), 2).unwrap();
    assert_eq!(a, b);
    let s = json_of(&a, "summary");
    assert_eq!(s["tokens"], json!(800));
    let counted: u64 = text(&a, "values")
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, 800 * 8);
}

// ---------------------------------------------------------------------------------------------
// real data (manual)

/// Runs the three stages on a real W (`AZIMUTH_SMOLLM2_W`, e.g. the extracted SmolLM2 W) with the
/// black-hole mask of `w.black_holes` standing in for a dead set (`rule_a` and `rule_b`), checks
/// that the stages agree with each other and with `w.black_holes`, and prints the summaries.
/// `cargo test --release -p azimuth-stages --test it real_smollm2_lattice -- --ignored --nocapture`
#[test]
#[ignore = "needs a real W named by AZIMUTH_SMOLLM2_W"]
fn real_smollm2_lattice() {
    let Some(w) = std::env::var_os("AZIMUTH_SMOLLM2_W").map(PathBuf::from) else {
        panic!("set AZIMUTH_SMOLLM2_W to a safetensors file with a tensor `W`");
    };
    let dir = tempfile::tempdir().unwrap();
    // With AZIMUTH_REAL_AS_BF16 set, an F32 W is first rounded to bf16 (nearest even), which
    // turns near-identical rows into black holes and lattice neighbours.
    let w = if std::env::var_os("AZIMUTH_REAL_AS_BF16").is_some() {
        let raw = std::fs::read(&w).unwrap();
        let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
        let t = st.tensor("W").unwrap();
        assert_eq!(t.dtype(), Dtype::F32, "AZIMUTH_REAL_AS_BF16 needs an F32 W");
        let bf: Vec<u8> = t
            .data()
            .chunks_exact(4)
            .flat_map(|c| {
                let x = f32::from_le_bytes(c.try_into().unwrap());
                azimuth_stages::bf16::from_f32(x).to_le_bytes()
            })
            .collect();
        let path = dir.path().join("w-bf16.safetensors");
        write_w(&path, Dtype::BF16, [t.shape()[0], t.shape()[1]], &bf);
        path
    } else {
        w
    };
    let members = black_holes(dir.path(), &w);
    let bh: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bh.json")).unwrap()).unwrap();
    let raw = std::fs::read(&members).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let mask: Vec<bool> = st
        .tensor("black_hole_mask")
        .unwrap()
        .data()
        .iter()
        .map(|&b| b != 0)
        .collect();
    // rule_b: a rule-A-like exponent neighbourhood of black hole 1 (every dimension within
    // `AZIMUTH_EXPONENT_TOLERANCE`, default 5, binary orders of the anchor's exponent)
    let tolerance: u32 = std::env::var("AZIMUTH_EXPONENT_TOLERANCE")
        .map_or(5, |v| v.parse().expect("a whole number"));
    let wraw = std::fs::read(&w).unwrap();
    let wst = safetensors::SafeTensors::deserialize(&wraw).unwrap();
    let wt = wst.tensor("W").unwrap();
    let f = azimuth_stages::lattice::Format::of(wt.dtype()).unwrap();
    let row_bytes = wt.shape()[1] * f.bytes();
    let anchor = bh["representatives"][0].as_u64().unwrap() as usize;
    let anchor_row = &wt.data()[anchor * row_bytes..(anchor + 1) * row_bytes];
    let near: Vec<bool> = wt
        .data()
        .chunks_exact(row_bytes)
        .map(|r| azimuth_stages::lattice::exponent_distance(f, r, anchor_row) <= tolerance)
        .collect();
    println!(
        "exponent neighbourhood t ≤ {tolerance}: {} tokens",
        near.iter().filter(|&&b| b).count()
    );
    let masks = dir.path().join("masks.safetensors");
    write_masks(&masks, &[("rule_a", mask), ("rule_b", near)]);
    let threads = 2;
    let t = std::time::Instant::now();
    let topo = run_stage(
        "w.topology",
        dir.path(),
        json!({}),
        &[("w", &w), ("black_holes", &members), ("dead", &masks)],
        TOPOLOGY_PORTS,
        threads,
    )
    .unwrap();
    let t_topo = t.elapsed();
    let t = std::time::Instant::now();
    let exps = exponents(dir.path(), &w, &members, threads).unwrap();
    let t_exps = t.elapsed();
    let t = std::time::Instant::now();
    let quant = quantization(dir.path(), &w, &masks, json!({}), threads).unwrap();
    let t_quant = t.elapsed();
    let (ts, es, qs) = (
        json_of(&topo, "summary"),
        json_of(&exps, "summary"),
        json_of(&quant, "summary"),
    );
    println!("black holes: {bh}");
    println!(
        "w.topology ({t_topo:?}): {ts}\nedges:\n{}",
        text(&topo, "edges")
    );
    println!("components:\n{}", text(&topo, "components"));
    println!(
        "w.exponents ({t_exps:?}): {es}\n{}",
        text(&exps, "histogram")
    );
    println!("w.quantization ({t_quant:?}): {qs}");
    let t = std::time::Instant::now();
    let wide = run_stage(
        "w.topology",
        dir.path(),
        json!({"mask": "rule_b"}),
        &[("w", &w), ("black_holes", &members), ("dead", &masks)],
        TOPOLOGY_PORTS,
        threads,
    );
    match wide {
        Ok(o) => println!(
            "w.topology on the neighbourhood ({:?}): {}\ncomponents:\n{}",
            t.elapsed(),
            json_of(&o, "summary"),
            text(&o, "components")
                .lines()
                .take(12)
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e) => println!("w.topology on the neighbourhood: {e}"),
    }
    assert_eq!(ts["vectors"], bh["black_holes"]);
    assert_eq!(ts["dead_tokens"], bh["black_hole_tokens"]);
    assert_eq!(ts["black_hole_vectors"], bh["black_holes"]);
    assert_eq!(es["black_holes"], bh["black_holes"]);
    assert_eq!(es["black_hole_tokens"], bh["black_hole_tokens"]);
    assert!(qs["unique_vectors"].as_u64() >= bh["black_holes"].as_u64());
    assert!(qs["tokens"].as_u64() >= bh["black_hole_tokens"].as_u64());
}

/// Times `w.topology` on `AZIMUTH_BENCH_VECTORS` (default 2,000) random BF16 vectors of 2,560
/// dimensions (every pair is compared) with `AZIMUTH_BENCH_THREADS` threads (default 2).
#[test]
#[ignore = "benchmark"]
fn bench_topology() {
    let env = |k: &str, d: usize| std::env::var(k).map_or(d, |v| v.parse().unwrap());
    let (n, d, threads) = (
        env("AZIMUTH_BENCH_VECTORS", 2000),
        2560,
        env("AZIMUTH_BENCH_THREADS", 2),
    );
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.safetensors");
    let data = random_w(n * d / 8, 5); // n × d patterns, written as [n, d]
    write_w(&w, Dtype::BF16, [n, d], &data);
    let members = black_holes(dir.path(), &w);
    let masks = dir.path().join("masks.safetensors");
    write_masks(&masks, &[("rule_a", vec![true; n])]);
    let t = std::time::Instant::now();
    let o = run_stage(
        "w.topology",
        dir.path(),
        json!({}),
        &[("w", &w), ("black_holes", &members), ("dead", &masks)],
        TOPOLOGY_PORTS,
        threads,
    )
    .unwrap();
    println!(
        "w.topology: {n} vectors × {d} on {threads} threads in {:?} ({} vectors kept)",
        t.elapsed(),
        json_of(&o, "summary")["vectors"]
    );
}
