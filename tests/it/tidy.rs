//! Tidy checks that keep the code base honest: module docs, who may print, who may spawn
//! processes, where libtorch may appear, and that the shipped pipeline and README stay valid.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source without `//` comments, so documentation may mention what code may not use.
fn code_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    for dir in ["src", "stages/src", "tests/it", "stages/tests"] {
        let d = root().join(dir);
        if !d.exists() {
            continue;
        }
        for f in rust_files(&d) {
            let text = std::fs::read_to_string(&f).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(f.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` paragraph: {missing:?}"
    );
}

#[test]
fn only_the_output_module_prints() {
    // The stage supervisor and the worker print into a stage's captured log, not to the user.
    let allowed = ["src/output.rs", "src/job.rs", "src/bin/azimuth-worker.rs"];
    let mut offenders = Vec::new();
    for f in rust_files(&root().join("src")) {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if allowed.contains(&rel.as_str()) {
            continue;
        }
        let code = code_of(&f);
        if ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("]
            .iter()
            .any(|m| code.contains(m))
        {
            offenders.push(rel);
        }
    }
    assert!(
        offenders.is_empty(),
        "print through output::Printer instead: {offenders:?}"
    );
}

#[test]
fn only_the_executor_and_the_supervisor_start_processes() {
    // slurm.rs is the executor's cluster half: sbatch, squeue, scancel.
    let allowed = ["src/exec.rs", "src/job.rs", "src/slurm.rs"];
    let mut offenders = Vec::new();
    for f in rust_files(&root().join("src")) {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !allowed.contains(&rel.as_str()) && code_of(&f).contains("Command::new") {
            offenders.push(rel);
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

#[test]
fn the_orchestrator_never_mentions_libtorch() {
    let mut offenders = Vec::new();
    for f in rust_files(&root().join("src")) {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "src/bin/azimuth-worker.rs" {
            continue;
        }
        let code = code_of(&f);
        if code.contains("tch::") || code.contains("use tch") || code.contains("torch_sys") {
            offenders.push(rel);
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

#[test]
fn the_shipped_pipeline_validates() {
    let r = std::process::Command::new(crate::support::bin())
        .args(["dag"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "pipeline.yaml: {}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// Every pipeline under pipelines/ validates too. The Qwen pipeline reads its checkpoint from the
/// Hugging Face cache, so it is validated against an empty snapshot of the model in a temporary
/// cache (validation resolves the snapshot; nothing is read from it).
#[test]
fn the_shipped_example_pipelines_validate() {
    let cache = tempfile::tempdir().unwrap();
    let entry = cache.path().join("models--Qwen--Qwen3-4B-Instruct-2507");
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::create_dir_all(entry.join("snapshots/0123abcd")).unwrap();
    std::fs::write(entry.join("refs/main"), "0123abcd\n").unwrap();
    let mut checked = 0;
    for dir in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let file = dir.unwrap().path().join("pipeline.yaml");
        if !file.exists() {
            continue;
        }
        let r = std::process::Command::new(crate::support::bin())
            .args(["dag", "-p"])
            .arg(&file)
            .env("HF_HUB_CACHE", cache.path())
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&r.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "found {checked} pipelines");
}

#[test]
fn readme_names_the_setup_commands_that_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        readme.contains("./scripts/run-pipeline.sh")
            && root().join("scripts/run-pipeline.sh").exists()
    );
    assert!(readme.contains("./scripts/test.sh") && root().join("scripts/test.sh").exists());
    assert!(
        ci.contains("./scripts/test.sh"),
        ".ci/run must call the README's test command"
    );
    // Every subcommand is documented.
    for cmd in [
        "azimuth run",
        "azimuth status",
        "azimuth why",
        "azimuth dag",
        "azimuth report",
        "azimuth show",
        "azimuth cache ls",
        "azimuth cache show",
        "azimuth cache path",
        "azimuth cache verify",
        "azimuth cache gc",
        "azimuth stages",
        "azimuth hash",
    ] {
        assert!(readme.contains(cmd), "README does not document `{cmd}`");
    }
}

/// The dynamic section (`readelf -d`) of the binary or library at `path`.
fn dynamic_section(path: &Path) -> String {
    let out = std::process::Command::new("readelf")
        .arg("-d")
        .arg(path)
        .output()
        .expect("readelf (binutils, installed with gcc)");
    assert!(out.status.success(), "readelf -d {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("NEEDED"),
        "readelf printed the dynamic section of {}:\n{text}",
        path.display()
    );
    text
}

fn needs_libtorch(dynamic_section: &str) -> bool {
    dynamic_section.contains("libtorch") || dynamic_section.contains("libc10")
}

#[test]
fn only_the_torch_stage_library_loads_libtorch() {
    // libtorch takes ~0.7 s to load and initialise; it belongs to libazimuth_stages_torch.so,
    // which azimuth-worker dlopens only for the stages that use it.
    let azimuth = Path::new(crate::support::bin());
    let text = dynamic_section(azimuth);
    assert!(!needs_libtorch(&text), "azimuth NEEDs libtorch:\n{text}");
    if cfg!(feature = "builtin-stages") {
        // Both are built beside `azimuth` by the workspace's default members.
        let dir = azimuth.parent().unwrap();
        let text = dynamic_section(&dir.join("azimuth-worker"));
        assert!(
            !needs_libtorch(&text),
            "azimuth-worker NEEDs libtorch:\n{text}"
        );
        // `cargo build` puts the library beside the binaries; a `cargo test`-only build leaves
        // it in `deps/` (the worker looks in both).
        let library = [dir.to_path_buf(), dir.join("deps")]
            .iter()
            .map(|d| d.join("libazimuth_stages_torch.so"))
            .find(|p| p.is_file())
            .expect("libazimuth_stages_torch.so beside azimuth or in deps/");
        let text = dynamic_section(&library);
        assert!(
            needs_libtorch(&text),
            "{} does not NEED libtorch:\n{text}",
            library.display()
        );
    }
}
