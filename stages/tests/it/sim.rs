//! `sim.*` stages on their own (they need no inputs): the S26 tidal toy's exact spread ratio
//! (V3.1 ★3), its fixed point, determinism, and what bf16 rounding does to the decay.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::ctx;

fn tidal(dir: &Path, params: Value, threads: usize) -> (Value, String, Vec<u8>) {
    let outs = [
        ("table", dir.join("table.csv")),
        ("summary", dir.join("summary.json")),
        ("plot", dir.join("plot.png")),
    ];
    let c = ctx("tidal", params, &[], &outs, threads);
    azimuth_stages::run("sim.tidal_toy", &c).unwrap();
    let summary = serde_json::from_slice(&std::fs::read(&outs[1].1).unwrap()).unwrap();
    (
        summary,
        std::fs::read_to_string(&outs[0].1).unwrap(),
        std::fs::read(&outs[2].1).unwrap(),
    )
}

/// ★3: 500 steps of wd = 0.01 shrink the spread across r̂ by 0.99^500 = 0.00657, independent of
/// the draws; the points relax towards lr/wd·r̂ = (0.1, 0).
#[test]
fn tidal_toy_spread_ratio_is_point_nine_nine_to_the_five_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let (s, table, _) = tidal(dir.path(), json!({}), 1);
    let expected = 0.99f64.powi(500);
    let ratio = s["ratio"].as_f64().unwrap();
    assert!(
        (ratio / expected - 1.0).abs() < 1e-12,
        "{ratio} vs {expected}"
    );
    assert_eq!(format!("{ratio:.4}"), "0.0066");
    assert_eq!(s["fixed_point"], json!([0.1, 0.0]));
    let first = s["perpendicular_spread_first"].as_f64().unwrap();
    assert!((first - 0.02).abs() < 0.005, "N(0, 0.02²) draws: {first}");
    // The centroid along r̂ follows x(t) = x(0)·0.99^t + 0.1·(1 − 0.99^t).
    let rows: Vec<Vec<f64>> = table
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 501);
    let x0 = rows[0][1];
    let x500 = rows[500][1];
    assert!(
        (x500 - (x0 * expected + 0.1 * (1.0 - expected))).abs() < 1e-12,
        "{x500}"
    );
    // Another seed: other draws, the same ratio.
    let (s7, _, _) = tidal(dir.path(), json!({"seed": 7}), 1);
    assert_ne!(
        s7["perpendicular_spread_first"],
        s["perpendicular_spread_first"]
    );
    assert!((s7["ratio"].as_f64().unwrap() / expected - 1.0).abs() < 1e-12);
}

#[test]
fn tidal_toy_is_deterministic_across_runs_and_threads() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let p = json!({"points": 50, "steps": 40, "angle_deg": 30.0, "precision": "f32"});
    let (sa, ta, pa) = tidal(a.path(), p.clone(), 1);
    let (sb, tb, pb) = tidal(b.path(), p, 2);
    assert_eq!((sa, ta), (sb, tb));
    assert_eq!(pa, pb);
}

/// In bf16 the factor 1 − wd itself is rounded: 0.99 becomes 0.98828125, and 0.999 becomes
/// exactly 1, so a decay of 1e-3 is invisible (the ★2 effect in two dimensions).
#[test]
fn tidal_toy_in_bf16_rounds_the_decay() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _) = tidal(dir.path(), json!({"precision": "bf16", "steps": 100}), 1);
    let r = s["ratio"].as_f64().unwrap();
    // Each product is rounded too, so the ratio only follows 0.98828125^t roughly.
    assert!(
        (r - 0.98828125f64.powi(100)).abs() < 0.1 * r && r < 0.99f64.powi(100),
        "{r}"
    );
    let (s, _, _) = tidal(
        dir.path(),
        json!({"precision": "bf16", "weight_decay": 1e-3, "steps": 100}),
        1,
    );
    assert_eq!(s["ratio"].as_f64().unwrap(), 1.0);
    assert!((s["expected_ratio"].as_f64().unwrap() - 0.999f64.powi(100)).abs() < 1e-12);
}
