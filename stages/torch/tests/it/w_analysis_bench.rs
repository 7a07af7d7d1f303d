//! The ignored benchmark `bench_black_holes` (see `bench/w_stages.sh`): `w.black_holes`'s finder on
//! a real W against libtorch's `unique_dim` on the same rows. It lives in the torch crate, not with
//! the `w.black_holes` tests in `azimuth-stages`, because that crate does not link libtorch.

use std::collections::BTreeMap;
use std::path::Path;

use azimuth_stages::bf16;
use azimuth_stages_torch::{run, StageContext};
use safetensors::SafeTensors;
use serde_json::{json, Value};

/// Runs `w.black_holes` on `w` with its outputs in `dir`.
fn black_holes(dir: &Path, w: &Path, params: Value, threads: usize) -> Result<(), String> {
    let ctx = StageContext {
        instance: "wa".into(),
        inputs: [("w".to_string(), vec![w.to_path_buf()])].into(),
        outputs: [
            ("table", dir.join("table.csv")),
            ("summary", dir.join("summary.json")),
            ("members", dir.join("members.safetensors")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    };
    run("w.black_holes", &ctx).map_err(|e| e.0)
}

/// Times the black-hole finder on `AZIMUTH_BENCH_W` (a safetensors file with a BF16 tensor `W`) with
/// `AZIMUTH_BENCH_THREADS` threads (default 2): the core census on the mapped bytes (best of 5, after
/// one warm-up pass), the whole stage end to end (best of 3), and libtorch's `unique_dim` on the
/// same rows (best of 2). Prints one JSON line.
#[test]
#[ignore]
fn bench_black_holes() {
    let Ok(path) = std::env::var("AZIMUTH_BENCH_W") else {
        panic!("set AZIMUTH_BENCH_W to a safetensors file with a BF16 tensor `W`");
    };
    let threads: usize = std::env::var("AZIMUTH_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let file = std::fs::File::open(&path).unwrap();
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let st = SafeTensors::deserialize(&map).unwrap();
    let t = st.tensor("W").unwrap();
    let (v, d) = (t.shape()[0], t.shape()[1]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let census = pool.install(|| bf16::identical_rows(t.data(), d * 2));
    let mut core = f64::MAX;
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let c = pool.install(|| bf16::identical_rows(t.data(), d * 2));
        core = core.min(t0.elapsed().as_secs_f64());
        assert_eq!(c, census);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut stage = f64::MAX;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        black_holes(dir.path(), Path::new(&path), json!({}), threads).unwrap();
        stage = stage.min(t0.elapsed().as_secs_f64());
    }
    // Baseline: libtorch's unique_dim (the kernel of torch.unique(W.view(int16), dim=0,
    // return_counts=True)) on the same bytes, same thread count, best of 2.
    tch::set_num_threads(threads as i32);
    let as_i16: Vec<i16> = t
        .data()
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let tw = tch::Tensor::from_slice(&as_i16).view([v as i64, d as i64]);
    drop(as_i16);
    let mut torch = f64::MAX;
    let mut torch_ok = false;
    for _ in 0..2 {
        let t0 = std::time::Instant::now();
        let (u, _, counts) = tw.unique_dim(0, true, false, true);
        torch = torch.min(t0.elapsed().as_secs_f64());
        let mut big: Vec<i64> = Vec::<i64>::try_from(&counts)
            .unwrap()
            .into_iter()
            .filter(|&c| c > 1)
            .collect();
        big.sort_unstable_by(|a, b| b.cmp(a));
        let ours: Vec<i64> = census.groups.iter().map(|g| g.len() as i64).collect();
        torch_ok = big == ours && u.size()[0] as usize == census.distinct;
    }
    let pops: Vec<usize> = census.groups.iter().map(Vec::len).collect();
    let reps: Vec<u32> = census.groups.iter().map(|g| g[0]).collect();
    let report: BTreeMap<&str, Value> = [
        ("rows", json!(v)),
        ("cols", json!(d)),
        ("threads", json!(threads)),
        ("distinct", json!(census.distinct)),
        ("populations", json!(pops)),
        ("representatives", json!(reps)),
        ("core_s", json!(core)),
        ("stage_s", json!(stage)),
        ("libtorch_unique_dim_s", json!(torch)),
        ("libtorch_agrees", json!(torch_ok)),
    ]
    .into();
    println!("BENCH {}", serde_json::to_string(&report).unwrap());
}
