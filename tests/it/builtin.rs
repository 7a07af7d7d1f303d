//! Built-in stages through the whole engine (feature `builtin-stages`): a libtorch generator
//! feeding an analyzer in a sweep, byte-identical outputs across runs and locations, the device
//! as a key ingredient, and `show` on safetensors and HDF5 artifacts.

use crate::support::Project;

const PIPELINE: &str = r#"
params:
  rows: 64
stages:
  gen:
    uses: tensor.random
    matrix: {std: [0.02, 1.0]}
    params: {rows: "${rows}", cols: 16, dtype: bf16, seed: 7}
  summary:
    uses: tensor.summary
    inputs: {tensors: gen.tensor}
"#;

fn digests(p: &Project) -> Vec<String> {
    let v = p.status_json();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn a_generator_sweep_feeds_an_analyzer_and_outputs_are_byte_identical() {
    let a = Project::new();
    a.pipeline(PIPELINE);
    let r = a.run(&["run", "-j", "1"]).ok();
    assert!(r.stderr.contains("3 ran"), "{}", r.stderr);
    let summary: serde_json::Value =
        serde_json::from_str(&a.read("out/summary/summary.json")).unwrap();
    assert_eq!(
        summary["files"].as_array().unwrap().len(),
        2,
        "the analyzer gathered both sweep instances"
    );
    // A second project computes the same bytes.
    let b = Project::new();
    b.pipeline(PIPELINE);
    b.run(&["run", "-j", "1"]).ok();
    assert_eq!(digests(&a), digests(&b));
    // Forcing the generator re-creates identical bytes, so the analyzer stays fresh.
    let r = a.run(&["run", "--force", "gen"]).ok();
    assert!(r.stderr.contains("2 ran, 1 fresh"), "{}", r.stderr);
}

#[test]
fn the_device_kind_is_a_key_ingredient() {
    let p = Project::new();
    p.pipeline(PIPELINE);
    p.run(&["run", "--device", "cpu"]).ok();
    assert_eq!(p.state("gen[std=0.02]").0, "fresh");
    let v = p
        .command(&["status", "--json", "--device", "cuda"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let gen = &v["stages"][0];
    assert_eq!(gen["state"], "dirty");
    assert_eq!(gen["reasons"][0]["tag"], "toolchain-changed");
    assert_eq!(gen["reasons"][0]["message"], "device `cpu` → `cuda`");
}

#[test]
fn show_prints_safetensors_and_hdf5_headers() {
    let p = Project::new();
    p.pipeline(PIPELINE);
    p.run(&["run"]).ok();
    let r = p.run(&["show", "gen[std=1.0].tensor"]).ok();
    assert!(
        r.stdout.contains("BF16")
            && r.stdout.contains("[64, 16]")
            && r.stdout.contains("tensor.random"),
        "{}",
        r.stdout
    );

    let h5 = p.path().join("movie.h5");
    {
        let f = hdf5::File::create(&h5).unwrap();
        let g = f.create_group("movie").unwrap();
        let ds = g
            .new_dataset::<f32>()
            .chunk((1, 8, 4))
            .shape((0.., 8, 4))
            .shuffle()
            .deflate(4)
            .create("w")
            .unwrap();
        ds.resize((3, 8, 4)).unwrap();
        ds.new_attr::<u32>()
            .create("steps")
            .unwrap()
            .write_scalar(&3)
            .unwrap();
    }
    p.pipeline(&format!("{PIPELINE}  copy:\n    cmd: [cp, \"${{inputs.h}}\", \"${{outputs.h}}\"]\n    inputs: {{h: {{path: movie.h5}}}}\n    outputs: {{h: movie.h5}}\n"));
    p.run(&["run"]).ok();
    let r = p.run(&["show", "copy.h"]).ok();
    assert!(
        r.stdout.contains("/movie/w")
            && r.stdout.contains("deflate(4)")
            && r.stdout.contains("steps"),
        "{}",
        r.stdout
    );
    // A truncated HDF5 file: a clear error, no panic.
    let bytes = std::fs::read(&h5).unwrap();
    std::fs::write(&h5, &bytes[..bytes.len() / 2]).unwrap();
    p.run(&["run"]).ok();
    let r = p.run(&["show", "copy.h"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("error:"), "{}", r.stderr);
}

#[test]
fn a_failing_builtin_reports_the_stage_and_the_reason() {
    let p = Project::new();
    p.pipeline("stages:\n  gen:\n    uses: tensor.random\n    device: cuda\n    params: {rows: 4, cols: 4}\n");
    let r = p.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("failed gen") && r.stderr.contains("cuda"),
        "{}",
        r.stderr
    );
}

/// A minimal safetensors file with one F32 tensor (written by hand: the root crate does not
/// depend on `safetensors`).
fn safetensors_f32(name: &str, shape: [usize; 2], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut header = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":[{},{}],"data_offsets":[0,{}]}}}}"#,
        shape[0],
        shape[1],
        data.len()
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

#[test]
fn a_model_id_resolves_in_the_local_hugging_face_cache_or_says_how_to_get_it() {
    let p = Project::new();
    p.pipeline(
        "stages:\n  model:\n    uses: w.extract\n    inputs:\n      checkpoint: {hf: Org/Tiny}\n",
    );
    let hf_home = p.path().join("hf-home");
    // Absent: a spec error at the input, with the download command, before anything runs.
    let r = p
        .command(&["run"])
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model `Org/Tiny` is not in the local Hugging Face cache"),
        "{err}"
    );
    assert!(
        err.contains("hf download Org/Tiny") && err.contains("pipeline.yaml:5"),
        "{err}"
    );

    // Cached: refs/main -> snapshots/<commit>/ whose files are symlinks into blobs/.
    let entry = hf_home.join("hub/models--Org--Tiny");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let snap = entry.join("snapshots").join(commit);
    std::fs::create_dir_all(entry.join("blobs")).unwrap();
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    let w = safetensors_f32(
        "model.embed_tokens.weight",
        [3, 2],
        &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0],
    );
    std::fs::write(entry.join("blobs/aaaa"), &w).unwrap();
    std::fs::write(
        entry.join("blobs/bbbb"),
        br#"{"tie_word_embeddings": true}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("../../blobs/aaaa", snap.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("../../blobs/bbbb", snap.join("config.json")).unwrap();
    std::fs::write(entry.join("refs/main"), commit).unwrap();
    let r = p
        .command(&["run"])
        .env("HF_HOME", &hf_home)
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    let out = std::fs::read(p.path().join("out/model/w.safetensors")).unwrap();
    assert!(
        out.ends_with(&w[w.len() - 24..]),
        "W is the cached tensor's bytes"
    );
    // The same model through HF_HUB_CACHE is the same input: nothing re-runs.
    let r = p
        .command(&["run"])
        .env("HF_HUB_CACHE", hf_home.join("hub"))
        .env_remove("HF_HOME")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success() && err.contains("1 fresh"), "{err}");
}
