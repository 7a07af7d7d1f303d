//! The freshness matrix: every key ingredient makes a stage dirty (with the right reason) and
//! reverting it makes it clean again; things that are not ingredients (mtimes, absolute paths,
//! YAML key order, comments, undeclared env vars) never make it dirty. Decisions are observed
//! through `status --json`, the way a user sees them.

use crate::support::Project;

const BASE: &str = r#"
params:
  scale: 2
stages:
  tool:
    cmd: ["python3", "${inputs.script}", "${inputs.data}", "${outputs.out}", "${params.scale}"]
    inputs:
      script: {path: scripts/tool.py}
      data: {path: data/in.txt}
    params: {scale: "${scale}"}
    env: [AZ_TEST_KNOB]
    outputs: {out: out.txt}
  after:
    cmd: ["cp", "${inputs.x}", "${outputs.y}"]
    inputs: {x: tool.out}
    outputs: {y: y.txt}
"#;

const SCRIPT: &str = "import sys\nn = sum(int(x) for x in open(sys.argv[1]).read().split())\nopen(sys.argv[2], 'w').write(str(n * int(sys.argv[3]) // 2))\n";

fn project() -> Project {
    let p = Project::new();
    p.pipeline(BASE)
        .file("scripts/tool.py", SCRIPT)
        .file("data/in.txt", "1 2 3");
    p.run(&["run"]).ok();
    assert_eq!(p.state("tool").0, "fresh");
    p
}

/// Changes something, expects `tool` dirty for `tag`, reverts, expects it fresh again.
fn check(p: &Project, tag: &str, change: impl Fn(&Project), revert: impl Fn(&Project)) {
    change(p);
    let (state, tags) = p.state("tool");
    assert_eq!(state, "dirty", "{tag}");
    assert!(tags.contains(&tag.to_string()), "{tag}: got {tags:?}");
    assert_eq!(p.state("after").1, vec!["upstream-dirty".to_string()]);
    revert(p);
    assert_eq!(
        p.state("tool").0,
        "fresh",
        "reverting {tag} must make it fresh again"
    );
}

#[test]
fn a_param_change_is_dirty_and_explained_and_reverting_restores_fresh() {
    let p = project();
    check(
        &p,
        "param-changed",
        |p| {
            p.pipeline(&BASE.replace("scale: 2", "scale: 3"));
        },
        |p| {
            p.pipeline(BASE);
        },
    );
    p.pipeline(&BASE.replace("scale: 2", "scale: 3"));
    let why = p.run(&["why", "tool"]).ok();
    assert!(why.stdout.contains("param `scale` 2 → 3"), "{}", why.stdout);
    assert!(
        why.stdout.contains("- params.scale = 2") && why.stdout.contains("+ params.scale = 3"),
        "{}",
        why.stdout
    );
}

#[test]
fn changing_a_code_file_or_an_input_is_dirty() {
    let p = project();
    check(
        &p,
        "input-changed",
        |p| {
            p.file("scripts/tool.py", &format!("{SCRIPT}# v2\n"));
        },
        |p| {
            p.file("scripts/tool.py", SCRIPT);
        },
    );
    check(
        &p,
        "input-changed",
        |p| {
            p.file("data/in.txt", "1 2 4");
        },
        |p| {
            p.file("data/in.txt", "1 2 3");
        },
    );
}

#[test]
fn the_command_and_declared_outputs_are_ingredients() {
    let p = project();
    check(
        &p,
        "command-changed",
        |p| {
            p.pipeline(&BASE.replace("\"${params.scale}\"]", "\"${params.scale}\", \"--extra\"]"));
        },
        |p| {
            p.pipeline(BASE);
        },
    );
    check(
        &p,
        "outputs-changed",
        |p| {
            p.pipeline(&BASE.replace("{out: out.txt}", "{out: result.txt}"));
        },
        |p| {
            p.pipeline(BASE);
        },
    );
    check(
        &p,
        "input-removed",
        |p| {
            p.pipeline(
                &BASE
                    .replace("      script: {path: scripts/tool.py}\n", "")
                    .replace("${inputs.script}", "scripts/tool.py"),
            );
        },
        |p| {
            p.pipeline(BASE);
        },
    );
}

#[test]
fn declared_env_vars_are_ingredients_and_others_are_not() {
    let p = project();
    let dirty = p
        .command(&["status", "--json"])
        .env("AZ_TEST_KNOB", "on")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&dirty.stdout).unwrap();
    assert_eq!(v["stages"][0]["state"], "dirty");
    assert_eq!(v["stages"][0]["reasons"][0]["tag"], "env-changed");
    let clean = p
        .command(&["status", "--json"])
        .env("SOME_OTHER_VAR", "on")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(v["stages"][0]["state"], "fresh");
}

#[test]
fn mtimes_comments_and_key_order_are_not_ingredients() {
    let p = project();
    // touch: new mtime, same bytes.
    let f = std::fs::File::options()
        .write(true)
        .open(p.path().join("data/in.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    assert_eq!(p.state("tool").0, "fresh");
    // Comments and reordered keys.
    let reordered = r#"
# a comment
stages:
  after:   # consumer first
    outputs: {y: y.txt}
    inputs: {x: tool.out}
    cmd: ["cp", "${inputs.x}", "${outputs.y}"]
  tool:
    outputs: {out: out.txt}
    env: [AZ_TEST_KNOB]
    params: {scale: "${scale}"}
    inputs:
      data: {path: data/in.txt}
      script: {path: scripts/tool.py}
    cmd: ["python3", "${inputs.script}", "${inputs.data}", "${outputs.out}", "${params.scale}"]
params:
  scale: 2
"#;
    p.pipeline(reordered);
    assert_eq!(p.state("tool").0, "fresh");
    assert_eq!(p.state("after").0, "fresh");
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran"), "{}", r.stderr);
}

#[test]
fn moving_the_project_keeps_everything_fresh() {
    let p = project();
    let q = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", p.path().display()))
        .arg(q.path())
        .status()
        .unwrap();
    assert!(status.success());
    let moved = Project { dir: q };
    assert_eq!(moved.state("tool").0, "fresh");
    assert_eq!(moved.state("after").0, "fresh");
}

#[test]
fn touching_a_big_input_rehashes_once_and_reruns_nothing() {
    let p = project();
    let big = vec![7u8; 8 << 20];
    std::fs::write(p.path().join("data/big.bin"), &big).unwrap();
    p.pipeline(&BASE.replace(
        "      data: {path: data/in.txt}\n",
        "      data: {path: data/in.txt}\n      big: {path: data/big.bin}\n",
    ));
    p.run(&["run"]).ok();
    let f = std::fs::File::options()
        .write(true)
        .open(p.path().join("data/big.bin"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran, 2 fresh"), "{}", r.stderr);
}

#[test]
fn touching_a_workspace_output_reruns_nothing() {
    let p = project();
    // The workspace copy is a hard link to the cached object: a touch changes the object's mtime
    // too, which must not be mistaken for an edit.
    let f = std::fs::File::open(p.path().join("out/tool/out.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    assert_eq!(p.state("tool").0, "fresh");
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran, 2 fresh"), "{}", r.stderr);
    p.run(&["cache", "verify"]).ok();
}

#[test]
fn early_cutoff_keeps_consumers_fresh_when_bytes_do_not_change() {
    let p = project();
    // Same sum, different data: tool re-runs, produces identical bytes, `after` is not re-run.
    p.file("data/in.txt", "3 2 1");
    let r = p.run(&["run"]).ok();
    assert!(
        r.stderr.contains("run tool (input `data` changed)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("fresh after (its inputs came out unchanged)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("1 ran, 1 fresh"), "{}", r.stderr);
}

#[test]
fn deleted_outputs_are_restorable_without_running() {
    let p = project();
    std::fs::remove_dir_all(p.path().join("out")).unwrap();
    assert_eq!(p.state("tool").0, "restorable");
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran, 2 restored"), "{}", r.stderr);
    assert_eq!(p.read("out/after/y.txt"), "6");
}

#[test]
fn switching_params_back_restores_the_earlier_outputs_from_the_cache() {
    let p = project();
    p.pipeline(&BASE.replace("scale: 2", "scale: 4"));
    p.run(&["run"]).ok();
    assert_eq!(p.read("out/tool/out.txt"), "12");
    p.pipeline(BASE);
    assert_eq!(p.state("tool").0, "restorable");
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran, 2 restored"), "{}", r.stderr);
    assert_eq!(p.read("out/tool/out.txt"), "6");
}

#[test]
fn status_check_fails_on_dirty_and_never_run_is_explained() {
    let p = Project::new();
    p.pipeline(BASE)
        .file("scripts/tool.py", SCRIPT)
        .file("data/in.txt", "1 2 3");
    assert_eq!(
        p.state("tool"),
        ("dirty".to_string(), vec!["never-run".to_string()])
    );
    assert_eq!(p.run(&["status", "--check"]).code, 1);
    p.run(&["run"]).ok();
    assert_eq!(p.run(&["status", "--check"]).code, 0);
}
