//! The quantize-and-count simulations (S20–S24) end to end: `sim.anchor` from planted W files
//! and synthetic stand-ins, `sim.direct_sampling` and `sim.monument_valley` (full and survivors
//! modes agree in distribution), V3.2's qualitative shapes on a synthetic anchor (a narrow σ
//! window of black holes; the ball's window ≈√D to the right of the Gaussian one) through
//! `sim.sweep`, the anchor-vs-procedure verdict of `sim.compare`, determinism, and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use azimuth_stage_api::StageContext;
use safetensors::tensor::Dtype;
use serde_json::{json, Value};

use crate::support::{ctx, write_w};

/// Runs `sim.anchor` with `params` (and `inputs`), returning the anchor file and its summary.
fn anchor(dir: &Path, name: &str, params: Value, inputs: &[(&str, &Path)]) -> (PathBuf, Value) {
    let out = dir.join(format!("{name}.safetensors"));
    let summary = dir.join(format!("{name}.json"));
    let c = ctx(
        name,
        params,
        inputs,
        &[("anchor", out.clone()), ("summary", summary.clone())],
        1,
    );
    azimuth_stages::run("sim.anchor", &c).unwrap();
    (out, read_json(&summary))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn anchor_values(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor("anchor").unwrap();
    assert_eq!(v.dtype(), Dtype::F32);
    v.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs a simulation stage; returns (summary, trials CSV, summary bytes).
fn simulate(
    dir: &Path,
    stage: &str,
    name: &str,
    anchor: &Path,
    params: Value,
    threads: usize,
) -> (Value, String, Vec<u8>) {
    let trials = dir.join(format!("{name}.csv"));
    let summary = dir.join(format!("{name}.json"));
    let c = ctx(
        name,
        params,
        &[("anchor", anchor)],
        &[("trials", trials.clone()), ("summary", summary.clone())],
        threads,
    );
    azimuth_stages::run(stage, &c).unwrap_or_else(|e| panic!("{stage}: {e}"));
    let bytes = std::fs::read(&summary).unwrap();
    (
        serde_json::from_slice(&bytes).unwrap(),
        std::fs::read_to_string(&trials).unwrap(),
        bytes,
    )
}

/// A context whose input `runs` holds several files.
fn many(name: &str, params: Value, runs: &[PathBuf], outputs: &[(&str, PathBuf)]) -> StageContext {
    let mut c = ctx(name, params, &[], outputs, 1);
    c.inputs = BTreeMap::from([("runs".to_string(), runs.to_vec())]);
    c
}

fn mean(s: &Value, key: &str) -> f64 {
    s[key]["mean"].as_f64().unwrap()
}

/// Planted W (F32, 6 × 2): rows 0, 2, 3 identical (black hole 1), rows 1 and 4 identical (black
/// hole 2), row 5 alone. Anchors from it are exact means.
#[test]
fn anchors_from_a_planted_w_are_the_exact_means() {
    let dir = tempfile::tempdir().unwrap();
    let rows: [[f32; 2]; 6] = [
        [1.0, 2.0],
        [4.0, -2.0],
        [1.0, 2.0],
        [1.0, 2.0],
        [4.0, -2.0],
        [7.0, 0.5],
    ];
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let w = dir.path().join("w.safetensors");
    write_w(&w, Dtype::F32, [6, 2], &data);
    let bh = dir.path().join("bh.safetensors");
    let ids: Vec<u8> = vec![1, 2, 1, 1, 2, 0];
    let view = safetensors::tensor::TensorView::new(Dtype::U8, vec![6], &ids).unwrap();
    safetensors::tensor::serialize_to_file([("black_hole_id", view)], None, &bh).unwrap();
    let mask = dir.path().join("dead.safetensors");
    let flags: Vec<u8> = vec![0, 0, 0, 0, 1, 1];
    let view = safetensors::tensor::TensorView::new(Dtype::BOOL, vec![6], &flags).unwrap();
    safetensors::tensor::serialize_to_file([("rule_b", view)], None, &mask).unwrap();

    let inputs: &[(&str, &Path)] = &[("w", &w), ("black_holes", &bh), ("dead", &mask)];
    let (a, s) = anchor(
        dir.path(),
        "raw",
        json!({"source": "black_hole_centroid"}),
        inputs,
    );
    // Members 0, 1, 2, 3, 4: mean (11/5, 2/5).
    assert_eq!(anchor_values(&a), [2.2, 0.4]);
    assert_eq!(s["rows"], 5);
    assert_eq!(s["dim"], 2);
    let (a, _) = anchor(
        dir.path(),
        "centred",
        json!({"source": "black_hole_centroid_centred"}),
        inputs,
    );
    // μ = (18/6, 2.5/6); centred = (2.2 − 3, 0.4 − 0.41666…).
    let v = anchor_values(&a);
    assert_eq!(v, [(2.2f64 - 3.0) as f32, (0.4f64 - 2.5 / 6.0) as f32]);
    let (a, _) = anchor(
        dir.path(),
        "john",
        json!({"source": "largest_black_hole"}),
        inputs,
    );
    assert_eq!(anchor_values(&a), [1.0, 2.0]);
    let (a, s) = anchor(
        dir.path(),
        "mask",
        json!({"source": "mask_centroid", "label": "B"}),
        inputs,
    );
    assert_eq!(anchor_values(&a), [5.5, -0.75]);
    assert_eq!(s["label"], "B");

    // A source that needs an input names it.
    let c = ctx(
        "bad",
        json!({"source": "largest_black_hole"}),
        &[("w", &w)],
        &[
            ("anchor", dir.path().join("x.safetensors")),
            ("summary", dir.path().join("x.json")),
        ],
        1,
    );
    let e = azimuth_stages::run("sim.anchor", &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs input `black_holes`"), "{e}");
}

#[test]
fn a_synthetic_anchor_has_its_norm_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, s) = anchor(dir.path(), "a", json!({"dim": 2560, "norm": 0.166061}), &[]);
    let v = anchor_values(&a);
    assert_eq!(v.len(), 2560);
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    assert!((norm - 0.166061).abs() < 1e-6, "{norm}");
    // Component std ≈ 0.166/√2560 = 3.28e-3, S20's "component std 3.2826e-03".
    let std = s["component_std"].as_f64().unwrap();
    assert!((std / 3.2826e-3 - 1.0).abs() < 0.05, "{std}");
    let (b, _) = anchor(dir.path(), "b", json!({"dim": 2560, "norm": 0.166061}), &[]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (c, s) = anchor(dir.path(), "c", json!({"dim": 64, "bf16": true}), &[]);
    assert!(anchor_values(&c)
        .iter()
        .all(|&x| x == half::bf16::from_f32(x).to_f32()));
    assert!(s["bf16_ulp_min"].as_f64().unwrap() > 0.0);
}

/// Every trial is reproducible from (seed, trial index): byte-identical outputs across runs and
/// thread counts, for every law and both stages.
#[test]
fn simulations_are_deterministic_across_runs_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = anchor(dir.path(), "a", json!({"dim": 96, "norm": 0.37}), &[]);
    for law in ["gaussian", "ball", "shell", "laplace"] {
        let p = json!({"law": law, "scale": 1e-6, "trials": 3, "tokens": 300});
        let (_, t1, s1) = simulate(dir.path(), "sim.direct_sampling", "d1", &a, p.clone(), 1);
        let (_, t2, s2) = simulate(dir.path(), "sim.direct_sampling", "d2", &a, p.clone(), 2);
        assert_eq!((t1, s1), (t2, s2), "{law}");
        let p = json!({"law": law, "scale": 1e-6, "trials": 3, "vocab": 2000, "survivors": 300,
                       "mode": "full"});
        let (_, t1, s1) = simulate(dir.path(), "sim.monument_valley", "m1", &a, p.clone(), 1);
        let (_, t2, s2) = simulate(dir.path(), "sim.monument_valley", "m2", &a, p.clone(), 2);
        assert_eq!((t1, s1), (t2, s2), "{law}");
    }
    // Another seed draws other points.
    let p = json!({"scale": 1e-6, "trials": 2, "tokens": 300});
    let (_, t1, _) = simulate(dir.path(), "sim.direct_sampling", "s1", &a, p, 1);
    let p = json!({"scale": 1e-6, "trials": 2, "tokens": 300, "seed": 7});
    let (_, t2, _) = simulate(dir.path(), "sim.direct_sampling", "s2", &a, p, 1);
    assert_ne!(t1, t2);
}

/// Monument Valley's full mode (all V rows drawn, M survive a random permutation) and its
/// survivors mode (M rows drawn directly) have the same distribution: over 150 trials each, the
/// means of every count agree within 4 standard errors, and the spread of each is alike.
#[test]
fn monument_valley_full_and_survivors_modes_agree_in_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = anchor(
        dir.path(),
        "a",
        json!({"dim": 48, "norm": 0.37, "seed": 3}),
        &[],
    );
    let base = json!({"scale": 1e-5, "trials": 150, "vocab": 6000, "survivors": 400});
    let mut full = base.clone();
    full["mode"] = json!("full");
    let (f, _, _) = simulate(dir.path(), "sim.monument_valley", "full", &a, full, 2);
    let (s, _, _) = simulate(dir.path(), "sim.monument_valley", "surv", &a, base, 2);
    assert_eq!(f["mode"], "full");
    assert_eq!(s["mode"], "survivors");
    // The window is in range: black holes vary from trial to trial.
    assert!(f["black_holes"]["std"].as_f64().unwrap() > 0.5, "{f}");
    for key in [
        "unique",
        "black_holes",
        "largest",
        "singletons",
        "population",
    ] {
        let (mf, ms) = (mean(&f, key), mean(&s, key));
        let (sf, ss) = (
            f[key]["std"].as_f64().unwrap(),
            s[key]["std"].as_f64().unwrap(),
        );
        let se = ((sf * sf + ss * ss) / 150.0).sqrt();
        assert!((mf - ms).abs() <= 4.0 * se, "{key}: {mf} vs {ms} (se {se})");
        assert!(sf / ss > 0.7 && sf / ss < 1.4, "{key} spread: {sf} vs {ss}");
    }
    // Full mode also counts the whole vocabulary: it has at least as many cells as its survivors.
    let vocab_unique = mean(&f["vocabulary"], "unique");
    assert!(vocab_unique >= mean(&f, "unique"), "{vocab_unique}");
    assert!(s["vocabulary"].is_null());
}

/// V3.2's qualitative shape on a synthetic anchor of the frozen smoke's size (D 2,560, norm
/// 0.166, N 2,100): below σ ≈ 1e-9 every point rounds back to the anchor's cell (one black hole
/// of everything); black holes exist in a narrow window around 1e-9…1e-8; by 1e-7 every point
/// has its own cell. A uniform ball's window sits ≈√D ≈ 50× to the right (S22).
#[test]
fn synthetic_anchor_has_a_narrow_sigma_window_and_the_ball_sits_root_d_to_the_right() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = anchor(dir.path(), "a", json!({"dim": 2560, "norm": 0.166061}), &[]);
    let mut runs = Vec::new();
    let exponents: Vec<f64> = (0..=16).map(|i| -10.5 + 0.25 * i as f64).collect();
    for law in ["gaussian", "ball"] {
        let shift = if law == "ball" {
            2560f64.sqrt().log10()
        } else {
            0.0
        };
        for (i, e) in exponents.iter().enumerate() {
            let scale = 10f64.powf(e + shift);
            let name = format!("{law}{i}");
            let p = json!({"law": law, "scale": scale, "trials": 3, "tokens": 2100,
                           "pairwise": "off"});
            let (s, _, _) = simulate(dir.path(), "sim.direct_sampling", &name, &a, p, 2);
            if law == "gaussian" {
                let bh = mean(&s, "black_holes");
                if scale <= 1.1e-10 {
                    assert_eq!((bh, mean(&s, "largest")), (1.0, 2100.0), "σ {scale:e}");
                }
                if scale >= 0.99e-7 {
                    assert_eq!(bh, 0.0, "σ {scale:e}");
                }
            }
            runs.push(dir.path().join(format!("{name}.json")));
        }
    }
    let out = |n: &str| dir.path().join(n);
    let c = many(
        "sweep",
        json!({}),
        &runs,
        &[
            ("table", out("sweep.csv")),
            ("summary", out("sweep.json")),
            ("black_holes_plot", out("bh.png")),
            ("largest_plot", out("largest.png")),
            ("demographics_plot", out("demo.png")),
        ],
    );
    azimuth_stages::run("sim.sweep", &c).unwrap();
    let s = read_json(&out("sweep.json"));
    let series = s["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let gaussian = series.iter().find(|x| x["law"] == "gaussian").unwrap();
    let ball = series.iter().find(|x| x["law"] == "ball").unwrap();
    let (low, high) = (
        gaussian["window"]["low"].as_f64().unwrap(),
        gaussian["window"]["high"].as_f64().unwrap(),
    );
    assert!(low >= 3e-10 && high <= 3e-8, "window {low:e}…{high:e}");
    let peak = gaussian["peak"]["scale"].as_f64().unwrap();
    assert!((1e-9..=1e-8).contains(&peak), "peak σ {peak:e}");
    assert!(gaussian["peak"]["black_holes"]["mean"].as_f64().unwrap() > 20.0);
    let ratio = ball["window_ratio_to_gaussian"].as_f64().unwrap();
    assert!(
        (25.0..=100.0).contains(&ratio),
        "ball/gaussian window ratio {ratio}"
    );
    let ratio = ball["peak_ratio_to_gaussian"].as_f64().unwrap();
    assert!(
        (25.0..=100.0).contains(&ratio),
        "ball/gaussian peak ratio {ratio}"
    );
    // Inputs in another order give the same bytes.
    let mut reversed = runs.clone();
    reversed.reverse();
    let c = many(
        "sweep",
        json!({}),
        &reversed,
        &[
            ("table", out("sweep2.csv")),
            ("summary", out("sweep2.json")),
            ("black_holes_plot", out("bh2.png")),
            ("largest_plot", out("largest2.png")),
            ("demographics_plot", out("demo2.png")),
        ],
    );
    azimuth_stages::run("sim.sweep", &c).unwrap();
    for (x, y) in [("sweep.json", "sweep2.json"), ("bh.png", "bh2.png")] {
        assert_eq!(
            std::fs::read(out(x)).unwrap(),
            std::fs::read(out(y)).unwrap()
        );
    }
    // The best demographic match has the target's shape at least in length.
    let example = gaussian["best_demographics"]["example"].as_array().unwrap();
    assert!(!example.is_empty());
    assert_eq!(s["target_demographics"].as_array().unwrap().len(), 13);
    let table = std::fs::read_to_string(out("sweep.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 2 * exponents.len());
}

/// S20's extras on a planted case: at a σ far below the grid every point keeps the anchor's
/// cell, so one black hole holds all N, the pairwise graph has one cell, and Gini is 0.
#[test]
fn direct_sampling_below_the_grid_is_one_black_hole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = anchor(dir.path(), "a", json!({"dim": 256, "norm": 0.3}), &[]);
    let p = json!({"scale": 1e-14, "trials": 2, "tokens": 500});
    let (s, csv, _) = simulate(dir.path(), "sim.direct_sampling", "d", &a, p, 1);
    assert_eq!(mean(&s, "unique"), 1.0);
    assert_eq!(mean(&s, "largest"), 500.0);
    assert_eq!(s["gini"]["mean"], 0.0);
    assert_eq!(s["example_demographics"], json!([500]));
    assert_eq!(s["pairwise"]["trials_measured"], 2);
    assert_eq!(s["pairwise"]["components"]["mean"], 1.0);
    // V4.19: the common prefix is one entry, |500 − 814|, and 12 black holes are missing.
    let demo = s["demographic_distance"]["mean"].as_f64().unwrap();
    assert_eq!(demo, 314.0 + 100.0 * 12.0);
    let normalized = s["normalized_distance"].as_f64().unwrap();
    let expected = (((1.0f64 - 13.0) / 13.0).powi(2) + ((500.0f64 - 814.0) / 814.0).powi(2)).sqrt();
    assert!((normalized - expected).abs() < 1e-12);
    assert!(csv.starts_with("trial,unique,black_holes,population,singletons,largest,gini"));
    assert_eq!(csv.lines().count(), 3);
}

/// The S20-vs-S21 question on synthetic anchors (centred norm 0.166, raw norm 0.371) at σ =
/// 1.5e-9: the same procedure gives different counts for the two anchors, while the two
/// procedures agree for the same anchor, so `sim.compare` says the anchor decides.
#[test]
fn compare_says_the_anchor_not_the_procedure_moves_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (centred, _) = anchor(
        dir.path(),
        "centred",
        json!({"norm": 0.166061, "label": "centred"}),
        &[],
    );
    let (raw, _) = anchor(
        dir.path(),
        "raw",
        json!({"norm": 0.370917, "seed": 7, "label": "raw"}),
        &[],
    );
    let mut runs = Vec::new();
    for (name, a) in [("centred", &centred), ("raw", &raw)] {
        let p = json!({"tokens": 2100, "trials": 12, "pairwise": "off"});
        simulate(
            dir.path(),
            "sim.direct_sampling",
            &format!("ds_{name}"),
            a,
            p,
            2,
        );
        runs.push(dir.path().join(format!("ds_{name}.json")));
        let p = json!({"vocab": 30000, "survivors": 2221, "trials": 12, "mode": "full",
                       "seed": 99});
        simulate(
            dir.path(),
            "sim.monument_valley",
            &format!("mv_{name}"),
            a,
            p,
            2,
        );
        runs.push(dir.path().join(format!("mv_{name}.json")));
    }
    let out = |n: &str| dir.path().join(n);
    let c = many(
        "compare",
        json!({}),
        &runs,
        &[
            ("table", out("c.csv")),
            ("report", out("c.md")),
            ("summary", out("c.json")),
        ],
    );
    azimuth_stages::run("sim.compare", &c).unwrap();
    let s = read_json(&out("c.json"));
    assert_eq!(s["cells"].as_array().unwrap().len(), 4);
    assert!(
        s["verdict"]
            .as_str()
            .unwrap()
            .starts_with("the anchor decides"),
        "{}",
        std::fs::read_to_string(out("c.md")).unwrap()
    );
    let md = std::fs::read_to_string(out("c.md")).unwrap();
    assert!(md.contains("| centred (0.166061) |"), "{md}");
    assert!(md.contains("Monument Valley (full)"));

    // Runs at different scales cannot be compared.
    let p = json!({"scale": 3e-9, "trials": 1, "tokens": 50});
    simulate(dir.path(), "sim.direct_sampling", "other", &raw, p, 1);
    let mut mixed = runs.clone();
    mixed.push(dir.path().join("other.json"));
    let c = many(
        "compare",
        json!({}),
        &mixed,
        &[
            ("table", out("d.csv")),
            ("report", out("d.md")),
            ("summary", out("d.json")),
        ],
    );
    let e = azimuth_stages::run("sim.compare", &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("one law and scale"), "{e}");
}

#[test]
fn bad_simulation_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = anchor(dir.path(), "a", json!({"dim": 8}), &[]);
    let outs = [
        ("trials", dir.path().join("t.csv")),
        ("summary", dir.path().join("s.json")),
    ];
    let c = ctx(
        "mv",
        json!({"vocab": 100, "survivors": 200}),
        &[("anchor", &a)],
        &outs,
        1,
    );
    let e = azimuth_stages::run("sim.monument_valley", &c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`survivors` (200) is larger than `vocab` (100)"),
        "{e}"
    );
    // A W file is not an anchor.
    let w = dir.path().join("w.safetensors");
    write_w(&w, Dtype::F32, [1, 2], &[0u8; 8]);
    let c = ctx("ds", json!({}), &[("anchor", &w)], &outs, 1);
    let e = azimuth_stages::run("sim.direct_sampling", &c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has no tensor `anchor`") && e.contains("`W`"),
        "{e}"
    );
    // A sweep input that is not a simulation summary.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"format\": 1}").unwrap();
    let c = many(
        "sweep",
        json!({}),
        &[junk],
        &[
            ("table", dir.path().join("x.csv")),
            ("summary", dir.path().join("x.json")),
            ("black_holes_plot", dir.path().join("x.png")),
            ("largest_plot", dir.path().join("y.png")),
            ("demographics_plot", dir.path().join("z.png")),
        ],
    );
    let e = azimuth_stages::run("sim.sweep", &c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("junk.json") && e.contains("is not the `summary`"),
        "{e}"
    );
}
