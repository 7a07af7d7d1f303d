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

fn ctx(
    params: Value,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, PathBuf)],
    threads: usize,
) -> StageContext {
    StageContext {
        instance: "wl".into(),
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

fn write_w(path: &Path, dtype: Dtype, shape: [usize; 2], data: &[u8]) {
    let view = TensorView::new(dtype, shape.to_vec(), data).unwrap();
    safetensors::tensor::serialize_to_file([("W", view)], None, path).unwrap();
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
        for d in 0..3 {
            rows[t][d] = from_ordinal(-(base[0] + 200 + k + d as i64), bytes);
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
        (c1["component"].clone(), c1["vectors"].clone(), c1["tokens"].clone()),
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
    assert_eq!(bh["adjacent"], json!([{"a": 2, "b": 4, "linf": 1, "l1": 3}]));

    assert_eq!(
        s["near_misses"],
        json!({"components": [1, 2], "linf": 2, "count": 1, "pairs": [{"a": 7, "b": 18, "l1": 4}]})
    );
    // relaxed L∞ ≤ 2 adds c0–c2, t1–t3, t0–t3 and c2–t0, joining T and C
    let r = &s["relaxed"];
    assert_eq!(
        (r["linf"].clone(), r["edges"].clone(), r["components"].clone()),
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
        json!({"connect_threshold": 125.0, "diameter": 127.0})
    );
    assert_eq!((s["dtype"].clone(), s["mask"].clone()), (json!("BF16"), json!("rule_a")));
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
        json!({"connect_threshold": 8_388_605.0, "diameter": 8_388_607.0})
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
    assert_eq!((s["vectors"].clone(), s["dead_tokens"].clone()), (json!(16), json!(24)));
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
    assert!(e.contains("13 unique vectors") && e.contains("max_vectors"), "{e}");

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
    assert!(e.contains("disagrees with W") && e.contains("recompute"), "{e}");
}
