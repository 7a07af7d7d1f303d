//! `sim.pachinko` (S25) on small planted sizes: the fast engine against the naive one bit for
//! bit, the survivor count, an exactly known one-dimensional stall, the stall of the decaying walk
//! and the full drift on a fine grid, coalescence into black holes, determinism across runs and
//! thread counts, and bad params. The full-size runs of S25 are `#[ignore]`d (run them with
//! `cargo test --release -p azimuth-stages -- --ignored pachinko_full_size`).

use std::path::Path;

use serde_json::{json, Value};

use crate::support::ctx;

struct Run {
    summary: Value,
    table: String,
    plot: Vec<u8>,
}

fn try_run(dir: &Path, params: Value, threads: usize) -> Result<Run, String> {
    let outs = [
        ("table", dir.join("table.csv")),
        ("summary", dir.join("summary.json")),
        ("plot", dir.join("plot.png")),
    ];
    let c = ctx("pachinko", params, &[], &outs, threads);
    azimuth_stages::run("sim.pachinko", &c).map_err(|e| e.to_string())?;
    Ok(Run {
        summary: serde_json::from_slice(&std::fs::read(&outs[1].1).unwrap()).unwrap(),
        table: std::fs::read_to_string(&outs[0].1).unwrap(),
        plot: std::fs::read(&outs[2].1).unwrap(),
    })
}

fn run(dir: &Path, params: Value, threads: usize) -> Run {
    try_run(dir, params, threads).unwrap()
}

/// The table as a header and rows of fields (census fields may be empty).
fn rows(table: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = table.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// Column `name` of the table as f64 (NaN where empty).
fn column(table: &str, name: &str) -> Vec<f64> {
    let (header, rows) = rows(table);
    let i = header.iter().position(|h| h == name).unwrap();
    rows.iter()
        .map(|r| r[i].parse().unwrap_or(f64::NAN))
        .collect()
}

fn small_pachinko() -> Value {
    json!({"points": 2000, "dim": 64, "cull": 6})
}

/// The exact shortcut (distinct starting values per coordinate, counts of survivors) and the
/// direct simulation give the same bytes, census steps included, in both modes and edge cases.
#[test]
fn pachinko_fast_engine_matches_naive_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        json!({"points": 2000, "dim": 64, "cull": 6, "census_every": 1}),
        json!({"mode": "drift", "points": 2000, "dim": 64, "steps": 100, "cull": 19,
               "step0": 0.0037, "decay": 1.0, "sigma": 0.02, "census_every": 7}),
        json!({"mode": "drift", "points": 2000, "dim": 63, "steps": 100, "cull": 19,
               "step0": 0.0037, "decay": 1.0, "sigma": 1e-6, "census_every": 1, "seed": 5}),
        // All points start at ±0: every row identical after the first step.
        json!({"points": 300, "dim": 5, "steps": 20, "cull": 10, "sigma": 0.0, "census_every": 1}),
        // No cull, long steps out to a grid much coarser than σ: most points coalesce.
        json!({"points": 500, "dim": 2, "steps": 50, "cull": 0, "sigma": 0.02, "step0": 0.5,
               "decay": 0.95, "census_every": 3}),
        json!({"points": 50, "dim": 1, "steps": 30, "cull": 1, "sigma": 1e-3, "census_every": 0}),
    ];
    for params in cases {
        let mut naive_params = params.clone();
        naive_params["engine"] = json!("naive");
        let fast = run(dir.path(), params.clone(), 2);
        let naive = run(dir.path(), naive_params, 2);
        assert_eq!(fast.table, naive.table, "{params}");
        assert_eq!(fast.plot, naive.plot, "{params}");
        let (mut a, mut b) = (fast.summary, naive.summary);
        assert_eq!(a["engine"], "fast");
        assert_eq!(b["engine"], "naive");
        a["engine"] = Value::Null;
        b["engine"] = Value::Null;
        assert_eq!(a, b, "{params}");
    }
}

#[test]
fn pachinko_survivors_are_points_minus_steps_times_cull() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), small_pachinko(), 1);
    let alive = column(&r.table, "alive");
    assert_eq!(alive.len(), 300);
    for (t, a) in alive.iter().enumerate() {
        assert_eq!(*a, (2000 - 6 * (t + 1)) as f64);
    }
    assert_eq!(r.summary["initial"]["rows"], 2000);
    assert_eq!(r.summary["final"]["rows"], 2000 - 300 * 6);
    // Census columns are filled on steps 0, 10, …, 290 and on the last step only.
    let distinct = column(&r.table, "distinct_rows");
    for (t, d) in distinct.iter().enumerate() {
        assert_eq!(!d.is_nan(), t % 10 == 0 || t == 299, "step {t}");
    }
    assert_eq!(
        distinct[299],
        r.summary["final"]["distinct_rows"].as_f64().unwrap()
    );
    // Near 0 the grid is fine: all 2,000 points start distinct, and σ = 1e-4 keeps them apart.
    assert_eq!(r.summary["initial"]["distinct_rows"], 2000);
    assert_eq!(r.summary["final"]["distinct_rows"], 200);
    assert_eq!(r.summary["final"]["black_holes"], 0);
}

/// One dimension, σ = 0: every point walks 1, 1.5, 1.75, …, 1.9921875 (steps 2^−t are exact on
/// the bf16 grid up to 2^−7); at t = 8 the step 2^−8 lands half-way between 1.9921875 (odd
/// mantissa) and 2, and round-to-nearest-even goes to 2, where the ULP is 2^−6: from t = 9 on
/// every step (≤ 2^−9) is below half an ULP and the walk has stalled for good at 2, not at the
/// 2 − 2^−19 of exact arithmetic.
#[test]
fn pachinko_planted_walk_stalls_at_two() {
    let dir = tempfile::tempdir().unwrap();
    let params = json!({"points": 10, "dim": 1, "steps": 20, "cull": 0, "sigma": 0.0,
                        "step0": 1.0, "decay": 0.5, "census_every": 1});
    let r = run(dir.path(), params, 1);
    let rs = column(&r.table, "r");
    let mut expected = Vec::new();
    let mut x = 0.0f64;
    for t in 0..20 {
        if t <= 7 {
            x += 0.5f64.powi(t);
        } else {
            x = 2.0;
        }
        expected.push(x);
    }
    assert_eq!(rs, expected);
    let along = column(&r.table, "along_u");
    assert!(
        along.iter().zip(&expected).all(|(a, e)| a == e),
        "{along:?}"
    );
    let moved = column(&r.table, "moved_values");
    assert!(moved[..9].iter().all(|&m| m == 10.0), "{moved:?}");
    assert!(moved[9..].iter().all(|&m| m == 0.0), "{moved:?}");
    let s = &r.summary;
    assert_eq!(s["stalled"], true);
    assert_eq!(s["stalled_at_step"], 9);
    assert_eq!(s["frozen"], true);
    assert_eq!(s["frozen_at_step"], 9);
    let fraction = column(&r.table, "moved_fraction");
    assert_eq!(fraction[..9], [1.0; 9]);
    assert_eq!(s["r_last"], 2.0);
    assert_eq!(s["translation_total"], 2.0 - 0.5f64.powi(19));
    assert_eq!(s["initial_r"], 0.0);
    // ±0 starts may differ in their sign bit; after the first step all ten rows are one black hole.
    assert!(matches!(
        s["initial"]["distinct_rows"].as_u64(),
        Some(1 | 2)
    ));
    assert_eq!(s["final"]["distinct_rows"], 1);
    assert_eq!(s["final"]["populations"], json!([10]));
    assert_eq!(column(&r.table, "black_holes")[0], 1.0);
}

/// The decaying walk stalls: once step_t is below half an ULP of the coordinates (relative
/// spacing 2^−8…2^−7, so step_t / r ≲ 2^−8) almost nothing moves again, r stays on a plateau
/// while the culls go on, and the centroid falls short of the translation. At this size the last
/// moving values (near 0, in coordinates with small |u_k|) freeze too before the end.
#[test]
fn pachinko_decaying_walk_stalls_below_half_an_ulp() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), small_pachinko(), 2);
    let s = &r.summary;
    assert_eq!(s["stalled"], true, "{s}");
    let stall = s["stalled_at_step"].as_u64().unwrap() as usize;
    assert!(stall > 100 && stall < 250, "{stall}");
    let fraction = column(&r.table, "moved_fraction");
    assert!(fraction[stall..].iter().all(|&f| f < 0.01));
    assert!(fraction[stall - 1] >= 0.01);
    assert!(fraction[..100].iter().all(|&f| f > 0.9), "{fraction:?}");
    let steps = column(&r.table, "step_length");
    let translation = column(&r.table, "translation");
    let relative = steps[stall] / translation[stall];
    assert!(
        relative > 2f64.powi(-10) && relative < 2f64.powi(-7),
        "{relative}"
    );
    let rs = column(&r.table, "r");
    let plateau = rs[stall];
    assert!(rs[stall..]
        .iter()
        .all(|&x| (x / plateau - 1.0).abs() < 0.01));
    assert_eq!(s["frozen"], true, "{s}");
    let frozen = s["frozen_at_step"].as_u64().unwrap() as usize;
    assert!(frozen >= stall && frozen < 300, "{frozen}");
    let moved = column(&r.table, "moved_values");
    assert!(moved[frozen..].iter().all(|&m| m == 0.0));
    assert!(moved[frozen - 1] > 0.0);
    // Without rounding r would approach 0.3·(1 − 0.99^300) ≈ 0.285.
    let total = s["translation_total"].as_f64().unwrap();
    assert!((total - 0.3 * (1.0 - 0.99f64.powi(300))).abs() < 1e-12);
    let reached = s["along_u_over_translation"].as_f64().unwrap();
    assert!(reached < 0.97, "{reached}");
    // The r column starts at about the first step.
    assert!((rs[0] - 0.003).abs() < 3e-4, "{}", rs[0]);
}

/// With steps of many ULPs the drift reaches steps·step0 along u and never stalls.
#[test]
fn pachinko_drift_reaches_the_full_translation_on_a_fine_grid() {
    let dir = tempfile::tempdir().unwrap();
    let params = json!({"mode": "drift", "points": 1000, "dim": 16, "steps": 20, "cull": 10,
                        "step0": 0.05, "decay": 1.0, "sigma": 1e-6});
    let r = run(dir.path(), params, 2);
    let s = &r.summary;
    assert_eq!(s["stalled"], false);
    assert_eq!(s["stalled_at_step"], Value::Null);
    assert_eq!(s["frozen_at_step"], Value::Null);
    assert!((s["translation_total"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    let reached = s["along_u_over_translation"].as_f64().unwrap();
    assert!((reached - 1.0).abs() < 0.01, "{reached}");
    let r_last = s["r_last"].as_f64().unwrap();
    assert!((r_last - 1.0).abs() < 0.01, "{r_last}");
}

/// Points that start a few ULPs apart on a fine grid meet on the coarse grid further out: with
/// σ = 1e-6 and 16 coordinates most survivors end in black holes.
#[test]
fn pachinko_drift_coalesces_tiny_clouds_into_black_holes() {
    let dir = tempfile::tempdir().unwrap();
    let params = json!({"mode": "drift", "points": 3000, "dim": 16, "steps": 100, "cull": 20,
                        "step0": 0.0037, "decay": 1.0, "sigma": 1e-6, "census_every": 1});
    let r = run(dir.path(), params, 2);
    let s = &r.summary;
    assert_eq!(s["initial"]["distinct_rows"], 3000);
    let f = &s["final"];
    assert_eq!(f["rows"], 1000);
    let distinct = f["distinct_rows"].as_u64().unwrap();
    assert!(distinct <= 20, "{f}");
    let pops: Vec<u64> = serde_json::from_value(f["populations"].clone()).unwrap();
    assert_eq!(pops.len() as u64, f["black_holes"].as_u64().unwrap());
    assert!(pops.len() >= 2, "{f}");
    assert!(pops.windows(2).all(|w| w[0] >= w[1]));
    let population: u64 = pops.iter().sum();
    assert_eq!(population, f["black_hole_population"].as_u64().unwrap());
    // Every row is in a black hole or alone: rows = population + singletons.
    assert_eq!(1000 - population, distinct - pops.len() as u64);
    // Coalescence only grows: distinct rows never exceed the survivors and fall over time.
    let d = column(&r.table, "distinct_rows");
    let alive = column(&r.table, "alive");
    assert!(d.iter().zip(&alive).all(|(d, a)| d <= a));
    assert!(d[99] < d[0]);
}

#[test]
fn pachinko_is_deterministic_across_runs_and_threads() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for engine in ["fast", "naive"] {
        let params = json!({"points": 1500, "dim": 33, "steps": 120, "cull": 11,
                            "census_every": 5, "engine": engine});
        let x = run(a.path(), params.clone(), 1);
        let y = run(b.path(), params.clone(), 2);
        let z = run(a.path(), params, 2);
        assert_eq!(
            (&x.table, &x.summary, &x.plot),
            (&y.table, &y.summary, &y.plot)
        );
        assert_eq!(
            (&x.table, &x.summary, &x.plot),
            (&z.table, &z.summary, &z.plot)
        );
    }
    // Another seed: other draws.
    let s = run(
        a.path(),
        json!({"points": 1500, "dim": 33, "steps": 120, "cull": 11}),
        1,
    );
    let t = run(
        a.path(),
        json!({"points": 1500, "dim": 33, "steps": 120, "cull": 11, "seed": 7}),
        1,
    );
    assert_ne!(s.table, t.table);
}

#[test]
fn pachinko_rejects_bad_params_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = |params: Value| try_run(dir.path(), params, 1).err().expect("an error");
    let e = err(json!({"points": 1000, "steps": 100, "cull": 10}));
    assert!(
        e.contains("`cull` × `steps`") && e.contains("at most 9"),
        "{e}"
    );
    let e = err(json!({"points": 1000, "steps": 100, "cull": 20}));
    assert!(e.contains("leaves no survivor"), "{e}");
    let e = err(json!({"mode": "drift", "points": 1000, "steps": 10, "cull": 1}));
    assert!(
        e.contains("`decay`") && e.contains("set `decay` to 1"),
        "{e}"
    );
    let e = err(json!({"mode": "orbit"}));
    assert!(e.contains("param `mode`"), "{e}");
    let e = err(json!({"points": 1000, "cull": -1}));
    assert!(e.contains("param `cull`"), "{e}");
    let e = err(json!({"points": 100, "steps": 10000, "dim": 6000, "cull": 0}));
    assert!(e.contains("`dim` × `steps`"), "{e}");
    let e = err(json!({"points": 10_000_000, "dim": 65536, "steps": 1, "cull": 0}));
    assert!(e.contains("`points` × `dim`"), "{e}");
    let e = err(json!({"walkers": 3}));
    assert!(e.contains("unknown param `walkers`"), "{e}");
}

/// Where the full-size runs write: `$PACHINKO_OUT/<name>` when set (to keep the outputs), else a
/// temporary directory.
fn full_size_dir(name: &str) -> (Option<tempfile::TempDir>, std::path::PathBuf) {
    match std::env::var_os("PACHINKO_OUT") {
        Some(out) => {
            let dir = Path::new(&out).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            (None, dir)
        }
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        }
    }
}

/// S25's full-size runs (V 151,936, D 2,560): prints r at steps 0, 150, 299, the final census and
/// the run time. Slow in debug builds; run in release with `--ignored`.
#[test]
#[ignore]
fn pachinko_full_size_pachinko() {
    let (_tmp, dir) = full_size_dir("pachinko");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = std::time::Instant::now();
    let r = run(&dir, json!({}), threads);
    let secs = start.elapsed().as_secs_f64();
    let rs = column(&r.table, "r");
    let s = &r.summary;
    eprintln!(
        "pachinko ({threads} threads, {secs:.1} s): r step 0 {:.4}, 50 {:.4}, 100 {:.4}, 150 {:.4}, \
         299 {:.4}; stalled at {}, frozen at {}; initial {}; final {}",
        rs[0],
        rs[50],
        rs[100],
        rs[150],
        rs[299],
        s["stalled_at_step"],
        s["frozen_at_step"],
        s["initial"],
        s["final"]
    );
    assert_eq!(s["final"]["rows"], 2236);
}

#[test]
#[ignore]
fn pachinko_full_size_drift() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for sigma in [0.02, 1e-6] {
        let (_tmp, dir) = full_size_dir(&format!("drift_{sigma}"));
        let start = std::time::Instant::now();
        let params = json!({"mode": "drift", "sigma": sigma, "step0": 0.0037, "decay": 1.0,
                            "steps": 100, "cull": 1519});
        let r = run(&dir, params, threads);
        let secs = start.elapsed().as_secs_f64();
        let s = &r.summary;
        eprintln!(
            "drift σ {sigma} ({threads} threads, {secs:.1} s): r last {:.4}, along u {:.4}; \
             initial {}; final {}",
            s["r_last"].as_f64().unwrap(),
            s["along_u_last"].as_f64().unwrap(),
            s["initial"],
            s["final"]
        );
        assert_eq!(s["final"]["rows"], 36);
    }
}

/// V2 #29: the drift notebook's cull (1,519 per step) leaves 36 survivors, which says nothing about
/// a ≈2,200-token population; cull ⌈(151,936 − 2,212)/100⌉ = 1,498 leaves 2,136 and tests the
/// coalescence hypothesis at the right population.
#[test]
#[ignore]
fn pachinko_full_size_drift_v2_29() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for sigma in [0.02, 1e-6] {
        let (_tmp, dir) = full_size_dir(&format!("drift_v2_29_{sigma}"));
        let start = std::time::Instant::now();
        let params = json!({"mode": "drift", "sigma": sigma, "step0": 0.0037, "decay": 1.0,
                            "steps": 100, "cull": 1498});
        let r = run(&dir, params, threads);
        let secs = start.elapsed().as_secs_f64();
        let s = &r.summary;
        eprintln!(
            "drift σ {sigma}, cull 1498 ({threads} threads, {secs:.1} s): r last {:.4}; final {}",
            s["r_last"].as_f64().unwrap(),
            s["final"]
        );
        assert_eq!(s["final"]["rows"], 2136);
    }
}
