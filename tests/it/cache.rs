//! The store seen from the CLI: `cache ls/show/path/verify/gc` and `show` of tensor files,
//! including corrupted objects and truncated or lying headers.

use std::os::unix::fs::PermissionsExt;

use crate::support::Project;

fn simple(p: &Project, text: &str) {
    p.pipeline(&format!(
        r#"
stages:
  a:
    cmd: ["sh", "-c", "printf '%s' \"$1\" > \"$0\"", "${{outputs.o}}", "${{params.text}}"]
    params: {{text: "{text}"}}
    outputs: {{o: o.txt}}
"#
    ));
}

#[test]
fn verify_finds_corrupted_and_missing_objects() {
    let p = Project::new();
    simple(&p, "hello");
    p.run(&["run"]).ok();
    let r = p.run(&["cache", "verify"]).ok();
    assert!(r.stderr.contains("all good"), "{}", r.stderr);
    let obj = p
        .run(&["cache", "path", "a.o"])
        .ok()
        .stdout
        .trim()
        .to_string();
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, "HELLO").unwrap();
    let r = p.run(&["cache", "verify"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("corrupt object b3:"), "{}", r.stdout);
    std::fs::remove_file(&obj).unwrap();
    let r = p.run(&["cache", "verify"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("output `o` needs missing object"),
        "{}",
        r.stdout
    );
    // A missing object makes the stage dirty, and a run repairs it.
    assert_eq!(p.state("a").1, vec!["cached-output-missing".to_string()]);
    p.run(&["run"]).ok();
    p.run(&["cache", "verify"]).ok();
}

#[test]
fn gc_keeps_what_the_lock_and_pointers_reference_and_frees_the_rest() {
    let p = Project::new();
    simple(&p, "one");
    p.run(&["run"]).ok();
    simple(&p, "two");
    p.run(&["run"]).ok();
    assert_eq!(
        p.run(&["cache", "ls"]).ok().stdout.lines().count(),
        3,
        "header + 2 records"
    );
    let dry = p.run(&["cache", "gc", "--dry-run"]).ok();
    assert!(dry.stdout.starts_with("would free"), "{}", dry.stdout);
    assert_eq!(
        p.run(&["cache", "ls"]).ok().stdout.lines().count(),
        3,
        "dry run deletes nothing"
    );
    let r = p.run(&["cache", "gc"]).ok();
    assert!(r.stdout.contains("1 run record(s)"), "{}", r.stdout);
    assert_eq!(p.run(&["cache", "ls"]).ok().stdout.lines().count(), 2);
    assert_eq!(p.state("a").0, "fresh");
    p.run(&["cache", "verify"]).ok();
    // --keep-days keeps recent records even when unreferenced.
    simple(&p, "three");
    p.run(&["run"]).ok();
    p.run(&["cache", "gc", "--keep-days", "1"]).ok();
    assert_eq!(p.run(&["cache", "ls"]).ok().stdout.lines().count(), 3);
}

#[test]
fn cache_show_and_path_resolve_stage_outputs_and_digest_prefixes() {
    let p = Project::new();
    simple(&p, "hello");
    p.run(&["run"]).ok();
    let path = p
        .run(&["cache", "path", "a.o"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
    let digest = blake3::hash(b"hello").to_hex().to_string();
    assert!(path.ends_with(&digest[2..]));
    let by_prefix = p
        .run(&["cache", "path", &format!("b3:{}", &digest[..10])])
        .ok();
    assert_eq!(by_prefix.stdout.trim(), path);
    let shown = p.run(&["cache", "show", "a.o"]).ok();
    assert!(
        shown.stdout.contains("stage     a") && shown.stdout.contains("text = hello"),
        "{}",
        shown.stdout
    );
    let r = p.run(&["cache", "path", "ffffffffff"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no object"), "{}", r.stderr);
    let r = p.run(&["cache", "path", "a.nope"]);
    assert!(r.stderr.contains("has no output `nope`"), "{}", r.stderr);
}

#[test]
fn ambiguous_digest_prefixes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = azimuth::store::Store::at(dir.path());
    store.init().unwrap();
    let mut seen = std::collections::HashMap::new();
    let prefix = (0u32..)
        .find_map(|i| {
            let d = store.put_bytes(format!("object {i}").as_bytes()).unwrap();
            let pre = d.hex()[..4].to_string();
            seen.insert(pre.clone(), ()).map(|_| pre)
        })
        .unwrap();
    let e = store.resolve_prefix(&prefix).unwrap_err();
    assert!(e.contains("is ambiguous: 2 objects match"), "{e}");
}

/// A safetensors file: 8-byte header length, JSON header, data.
fn safetensors_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data_len));
    v
}

fn stage_writing(p: &Project, file: &std::path::Path) {
    p.pipeline(&format!(
        r#"
stages:
  w:
    cmd: ["cp", "${{inputs.src}}", "${{outputs.t}}"]
    inputs: {{src: {{path: {}}}}}
    outputs: {{t: w.safetensors}}
"#,
        file.file_name().unwrap().to_string_lossy()
    ));
}

#[test]
fn show_prints_tensor_headers_and_provenance() {
    let p = Project::new();
    let header = r#"{"__metadata__":{"source":"test"},"weight":{"dtype":"BF16","shape":[4,3],"data_offsets":[0,24]}}"#;
    std::fs::write(p.path().join("w.st"), safetensors_bytes(header, 24)).unwrap();
    stage_writing(&p, &p.path().join("w.st"));
    p.run(&["run"]).ok();
    let r = p.run(&["show", "w.t"]).ok();
    assert!(
        r.stdout.contains("weight") && r.stdout.contains("BF16") && r.stdout.contains("[4, 3]"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("source") && r.stdout.contains("stage     w"),
        "{}",
        r.stdout
    );
    let j = p.run(&["show", "w.t", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["content"]["format"], "safetensors");
    assert_eq!(v["record"]["instance"], "w");
}

#[test]
fn show_refuses_lying_headers_with_a_clear_error() {
    let p = Project::new();
    // Claims 12 BF16 values (24 bytes) but the data section holds 10.
    let header = r#"{"weight":{"dtype":"BF16","shape":[4,3],"data_offsets":[0,24]}}"#;
    std::fs::write(p.path().join("w.st"), safetensors_bytes(header, 10)).unwrap();
    stage_writing(&p, &p.path().join("w.st"));
    p.run(&["run"]).ok();
    let r = p.run(&["show", "w.t"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("error:") && r.stderr.contains("weight"),
        "{}",
        r.stderr
    );
    // A header length far beyond the file: no huge allocation, a clear error.
    let mut huge = (1u64 << 62).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    std::fs::write(p.path().join("w.st"), huge).unwrap();
    p.run(&["run"]).ok();
    let r = p.run(&["show", "w.t"]).ok();
    assert!(
        r.stdout.contains("binary file"),
        "a header length beyond the file is not safetensors: {}",
        r.stdout
    );
}

#[test]
fn show_reads_gguf_headers() {
    let p = Project::new();
    // GGUF v3: one u32 metadata entry and one F32 tensor of 2x2.
    let mut g = b"GGUF".to_vec();
    g.extend(3u32.to_le_bytes());
    g.extend(1u64.to_le_bytes()); // tensors
    g.extend(1u64.to_le_bytes()); // kvs
    let key = b"general.alignment";
    g.extend((key.len() as u64).to_le_bytes());
    g.extend(key);
    g.extend(4u32.to_le_bytes()); // UINT32
    g.extend(32u32.to_le_bytes());
    let name = b"token_embd.weight";
    g.extend((name.len() as u64).to_le_bytes());
    g.extend(name);
    g.extend(2u32.to_le_bytes());
    g.extend(2u64.to_le_bytes());
    g.extend(2u64.to_le_bytes());
    g.extend(0u32.to_le_bytes()); // F32
    g.extend(0u64.to_le_bytes());
    while g.len() % 32 != 0 {
        g.push(0);
    }
    g.extend([0u8; 16]);
    std::fs::write(p.path().join("m.gguf"), g).unwrap();
    p.pipeline(
        r#"
stages:
  g:
    cmd: ["cp", "${inputs.src}", "${outputs.m}"]
    inputs: {src: {path: m.gguf}}
    outputs: {m: m.gguf}
"#,
    );
    p.run(&["run"]).ok();
    let r = p.run(&["show", "g.m"]).ok();
    assert!(
        r.stdout.contains("token_embd.weight") && r.stdout.contains("F32"),
        "{}",
        r.stdout
    );
    // Truncated GGUF: clear error, no panic.
    let full = std::fs::read(p.path().join("m.gguf")).unwrap();
    std::fs::write(p.path().join("m.gguf"), &full[..40]).unwrap();
    p.run(&["run"]).ok();
    let r = p.run(&["show", "g.m"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
}
