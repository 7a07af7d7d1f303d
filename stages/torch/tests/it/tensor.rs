//! `tensor.random` and `tensor.summary` run through `azimuth_stages_torch::run` (it runs the torch
//! stages itself and hands the others on to `azimuth_stages::run`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use azimuth_stages_torch::{run, StageContext};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

fn ctx(
    instance: &str,
    params: Value,
    inputs: &[(&str, Vec<PathBuf>)],
    outputs: &[(&str, &Path)],
) -> StageContext {
    StageContext {
        instance: instance.to_string(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_path_buf()))
            .collect(),
        params: params.as_object().expect("params are an object").clone(),
        device: "cpu".into(),
        threads: 1,
    }
}

fn random(dir: &Path, file: &str, params: Value) -> Result<PathBuf, String> {
    let out = dir.join(file);
    run(
        "tensor.random",
        &ctx("gen", params, &[], &[("tensor", &out)]),
    )
    .map_err(|e| e.0)?;
    Ok(out)
}

fn summary(dir: &Path, inputs: Vec<PathBuf>, params: Value) -> Result<String, String> {
    let out = dir.join("summary.json");
    let _ = std::fs::remove_file(&out);
    run(
        "tensor.summary",
        &ctx("sum", params, &[("tensors", inputs)], &[("summary", &out)]),
    )
    .map_err(|e| e.0)?;
    Ok(std::fs::read_to_string(out).unwrap())
}

#[test]
fn random_is_byte_identical_across_runs_and_seed_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let p = json!({"rows": 64, "cols": 48, "seed": 7});
    let a = std::fs::read(random(dir.path(), "a.safetensors", p.clone()).unwrap()).unwrap();
    let b = std::fs::read(random(dir.path(), "b.safetensors", p).unwrap()).unwrap();
    assert_eq!(a, b, "same params must give the same bytes");
    let c = std::fs::read(
        random(
            dir.path(),
            "c.safetensors",
            json!({"rows": 64, "cols": 48, "seed": 8}),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(a.len(), c.len());
    assert_ne!(a, c, "another seed must give other bytes");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a.safetensors"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    // Only the three outputs: no temp files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn random_bf16_default_reads_back_with_dtype_shape_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = random(
        dir.path(),
        "w.safetensors",
        json!({"rows": 300, "cols": 40, "std": 0.02, "mean": 0.5}),
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), ["weight"]);
    let t = st.tensor("weight").unwrap();
    assert_eq!(t.dtype(), Dtype::BF16);
    assert_eq!(t.shape(), &[300, 40]);
    assert_eq!(t.data().len(), 300 * 40 * 2);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: BTreeMap<String, String> = meta.metadata().clone().unwrap().into_iter().collect();
    let expected: BTreeMap<String, String> = [
        ("generator", "azimuth tensor.random"),
        ("mean", "0.5"),
        ("seed", "42"),
        ("std", "0.02"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(meta, expected);
    // The sample looks like N(0.5, 0.02^2).
    let vals: Vec<f64> = t
        .data()
        .chunks_exact(2)
        .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64())
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let sd = (vals.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / vals.len() as f64).sqrt();
    assert!((mean - 0.5).abs() < 0.002, "mean {mean}");
    assert!((sd - 0.02).abs() < 0.002, "std {sd}");
    // Header is ordered deterministically: sorted metadata first.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let head = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(head.starts_with(
        r#"{"__metadata__":{"generator":"azimuth tensor.random","mean":"0.5","seed":"42","std":"0.02"},"weight":{"dtype":"BF16","shape":[300,40],"#
    ), "{head}");
}

#[test]
fn random_casts_are_round_to_nearest_even_of_the_f32_draw() {
    let dir = tempfile::tempdir().unwrap();
    let base = json!({"rows": 50, "cols": 30, "seed": 3, "std": 3.0, "mean": -1.0});
    let read = |file: &str, dtype: &str| {
        let mut p = base.clone();
        p["dtype"] = json!(dtype);
        let bytes = std::fs::read(random(dir.path(), file, p).unwrap()).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("weight").unwrap();
        (t.dtype(), t.data().to_vec())
    };
    let (d32, f32s) = read("f32.safetensors", "f32");
    let (dbf, bf) = read("bf16.safetensors", "bf16");
    let (dh, h) = read("f16.safetensors", "f16");
    assert_eq!((d32, dbf, dh), (Dtype::F32, Dtype::BF16, Dtype::F16));
    let xs: Vec<f32> = f32s
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want_bf: Vec<u8> = xs
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let want_h: Vec<u8> = xs
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    assert_eq!(bf, want_bf, "bf16 output = RNE cast of the f32 output");
    assert_eq!(h, want_h, "f16 output = RNE cast of the f32 output");
}

#[test]
fn random_rejects_bad_requests_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let e = random(dir.path(), "x", json!({"rows": 10_000_000, "cols": 1000})).unwrap_err();
    assert!(
        e.contains("`gen`") && e.contains("exceeds the limit") && e.contains("10000000000"),
        "{e}"
    );
    let e = random(dir.path(), "x", json!({"rows": 4})).unwrap_err();
    assert!(e.contains("missing required param `cols`"), "{e}");
    let e = random(
        dir.path(),
        "x",
        json!({"rows": 4, "cols": 4, "dtype": "f64"}),
    )
    .unwrap_err();
    assert!(e.contains("param `dtype`") && e.contains("`bf16`"), "{e}");
    let e = random(dir.path(), "x", json!({"rows": 4, "cols": 4, "std": -1})).unwrap_err();
    assert!(e.contains("param `std`"), "{e}");
    let e = random(dir.path(), "x", json!({"rows": 4, "cols": 4, "colour": 1})).unwrap_err();
    assert!(e.contains("unknown param `colour`"), "{e}");
    let e = random(
        dir.path(),
        "x",
        json!({"rows": 4, "cols": 4, "name": "__metadata__"}),
    )
    .unwrap_err();
    assert!(e.contains("param `name`"), "{e}");
    let e = random(dir.path(), "no/such/dir/x", json!({"rows": 4, "cols": 4})).unwrap_err();
    assert!(
        e.contains("cannot write") && e.contains("no/such/dir/x"),
        "{e}"
    );
    assert!(run("tensor.nope", &ctx("n", json!({}), &[], &[])).is_err());
}

#[test]
fn random_on_an_unavailable_device_fails_early() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.safetensors");
    let mut c = ctx(
        "gpu",
        json!({"rows": 4, "cols": 4}),
        &[],
        &[("tensor", &out)],
    );
    c.device = "cuda".into();
    let r = run("tensor.random", &c);
    if tch::Cuda::is_available() {
        r.unwrap();
        assert!(out.exists());
    } else {
        let e = r.unwrap_err().0;
        assert!(e.contains("`cuda`") && e.contains("`gpu`"), "{e}");
        assert!(!out.exists());
    }
    c.device = "tpu".into();
    assert!(run("tensor.random", &c)
        .unwrap_err()
        .0
        .contains("unknown device `tpu`"));
}

/// Writes a safetensors file with the crate itself (not our writer).
fn write_with_crate(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = [("note".to_string(), "planted".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A 7 x 3 f32 matrix with planted duplicates: rows 0, 2, 5 equal; rows 1 and 6 equal; row 3
/// equals row 0 as floats but has -0.0 where row 0 has 0.0 (distinct by bytes); row 4 unique.
fn planted() -> Vec<f32> {
    let r0 = [0.0f32, 1.5, -2.0];
    let r1 = [3.25f32, -7.75, 0.5];
    let r3 = [-0.0f32, 1.5, -2.0];
    let r4 = [1e-3f32, 9.0, 4.0];
    [r0, r1, r0, r3, r4, r0, r1].concat()
}

#[test]
fn summary_counts_planted_duplicates_and_exact_extremes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("planted.safetensors");
    let bf: Vec<u8> = [1.0f32, 2.0, 1.0, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    write_with_crate(
        &path,
        vec![
            ("m", Dtype::F32, vec![7, 3], f32_bytes(&planted())),
            ("b", Dtype::BF16, vec![3, 2], bf),
        ],
    );
    let text = summary(dir.path(), vec![path.clone()], json!({})).unwrap();
    assert!(text.ends_with("}\n"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["tensor"], Value::Null);
    let file = &v["files"][0];
    assert_eq!(file["input"], 0);
    assert_eq!(file["file"], "planted.safetensors");
    assert_eq!(file["metadata"], json!({"note": "planted"}));
    let names: Vec<&str> = file["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "m"], "tensors sorted by name");

    let m = &file["tensors"][1];
    assert_eq!(m["dtype"], "F32");
    assert_eq!(m["shape"], json!([7, 3]));
    assert_eq!(m["elements"], 21);
    assert_eq!(m["rows"], 7);
    assert_eq!(m["row_length"], 3);
    assert_eq!(m["distinct_rows"], 4);
    assert_eq!(m["min"].as_f64().unwrap(), -7.75);
    assert_eq!(m["max"].as_f64().unwrap(), 9.0);
    let vals: Vec<f64> = planted().iter().map(|&x| x as f64).collect();
    let mean = vals.iter().sum::<f64>() / 21.0;
    assert!((m["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    let norms: Vec<f64> = vals
        .chunks(3)
        .map(|r| r.iter().map(|x| x * x).sum::<f64>().sqrt())
        .collect();
    let nmax = norms.iter().cloned().fold(f64::MIN, f64::max);
    let nmin = norms.iter().cloned().fold(f64::MAX, f64::min);
    assert_eq!(m["row_norm"]["max"].as_f64().unwrap(), nmax);
    assert_eq!(m["row_norm"]["min"].as_f64().unwrap(), nmin);

    let b = &file["tensors"][0];
    assert_eq!(
        (b["dtype"].as_str(), b["distinct_rows"].as_u64()),
        (Some("BF16"), Some(2))
    );
    assert_eq!(
        (b["min"].as_f64(), b["max"].as_f64()),
        (Some(1.0), Some(4.0))
    );

    // Only the selected tensor, when asked.
    let only: Value = serde_json::from_str(
        &summary(dir.path(), vec![path.clone()], json!({"tensor": "m"})).unwrap(),
    )
    .unwrap();
    assert_eq!(only["tensor"], "m");
    assert_eq!(only["files"][0]["tensors"].as_array().unwrap().len(), 1);
    let e = summary(dir.path(), vec![path], json!({"tensor": "zz"})).unwrap_err();
    assert!(
        e.contains("`sum`") && e.contains("no tensor `zz`") && e.contains("`b`, `m`"),
        "{e}"
    );
}

#[test]
fn summary_bytes_are_deterministic_and_follow_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = random(
        dir.path(),
        "a.safetensors",
        json!({"rows": 40, "cols": 16, "seed": 1}),
    )
    .unwrap();
    let b = random(
        dir.path(),
        "b.safetensors",
        json!({"rows": 20, "cols": 8, "seed": 2, "dtype": "f16"}),
    )
    .unwrap();
    let first = summary(dir.path(), vec![b.clone(), a.clone()], json!({})).unwrap();
    let second = summary(dir.path(), vec![b.clone(), a.clone()], json!({})).unwrap();
    assert_eq!(first, second);
    // The report names files, never their directories.
    assert!(!first.contains(&dir.path().display().to_string()));
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["files"][0]["file"], "b.safetensors");
    assert_eq!(v["files"][1]["file"], "a.safetensors");
    assert_eq!(v["files"][0]["tensors"][0]["dtype"], "F16");
    assert_eq!(
        v["files"][1]["tensors"][0]["distinct_rows"], 40,
        "random rows are all distinct"
    );
    assert_eq!(v["files"][1]["metadata"]["seed"], "1");
    // Key order is fixed by the report's structure.
    let pos = |k: &str| first.find(&format!("\"{k}\"")).unwrap();
    assert!(pos("format") < pos("tensor") && pos("tensor") < pos("files"));
    assert!(
        pos("name") < pos("dtype")
            && pos("dtype") < pos("shape")
            && pos("max") < pos("distinct_rows")
    );
}

#[test]
fn summary_errors_name_file_tensor_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let ints = dir.path().join("ints.safetensors");
    write_with_crate(&ints, vec![("ids", Dtype::I32, vec![2], vec![0u8; 8])]);
    let e = summary(dir.path(), vec![ints.clone()], json!({})).unwrap_err();
    assert!(
        e.contains("ints.safetensors") && e.contains("`ids`") && e.contains("I32"),
        "{e}"
    );
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let e = summary(dir.path(), vec![junk], json!({})).unwrap_err();
    assert!(
        e.contains("junk.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    let e = summary(dir.path(), vec![], json!({})).unwrap_err();
    assert!(e.contains("input `tensors` is empty"), "{e}");
    let e = summary(
        dir.path(),
        vec![dir.path().join("missing.safetensors")],
        json!({}),
    )
    .unwrap_err();
    assert!(
        e.contains("cannot open") && e.contains("missing.safetensors"),
        "{e}"
    );
}
