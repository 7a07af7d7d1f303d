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
    let summary: serde_json::Value = serde_json::from_str(&a.read("out/summary/summary")).unwrap();
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
