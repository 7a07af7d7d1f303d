//! `azimuth run` end to end on small command stages: outputs, sweeps, failures, restores.

use std::os::unix::fs::MetadataExt;

use crate::support::{count_lines, Project};

const CHAIN: &str = r#"
params:
  n: 3
stages:
  gen:
    cmd: ["sh", "-c", "seq 1 $1 > \"$2\"; echo gen >> \"$3\"", "sh", "${params.count}", "${outputs.data}", "${params.counter}"]
    params: {count: "${n}", counter: "COUNTER"}
    outputs: {data: data.txt}
  square:
    matrix: {power: [2, 3]}
    cmd: ["python3", "-c", "import sys; p=int(sys.argv[3]); open(sys.argv[2],'w').write(' '.join(str(int(l)**p) for l in open(sys.argv[1])))", "${inputs.d}", "${outputs.out}", "${params.power}"]
    inputs: {d: gen.data}
    outputs: {out: out.txt}
  report:
    kind: analyzer
    cmd: ["sh", "-c", "o=$0; for f in \"$@\"; do cat \"$f\"; echo; done > \"$o\"", "${outputs.txt}", "${inputs.parts}"]
    inputs: {parts: square.out}
    outputs: {txt: report.txt}
"#;

pub fn chain(p: &Project) -> std::path::PathBuf {
    let counter = p.path().join("counter.log");
    p.pipeline(&CHAIN.replace("COUNTER", &counter.display().to_string()));
    counter
}

#[test]
fn runs_a_sweep_chain_and_a_second_run_does_nothing() {
    let p = Project::new();
    let counter = chain(&p);
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("4 ran, 0 fresh"), "{}", r.stderr);
    assert_eq!(p.read("out/square/power=2/out.txt"), "1 4 9");
    assert_eq!(p.read("out/square/power=3/out.txt"), "1 8 27");
    assert_eq!(p.read("out/report/report.txt"), "1 4 9\n1 8 27\n");
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran, 4 fresh"), "{}", r.stderr);
    assert_eq!(count_lines(&counter), 1, "gen ran once");
    // Outputs are read-only hard links into the store, not copies.
    let m = std::fs::metadata(p.path().join("out/gen/data.txt")).unwrap();
    assert!(
        m.nlink() >= 2 && m.mode() & 0o222 == 0,
        "nlink {} mode {:o}",
        m.nlink(),
        m.mode()
    );
    assert!(p.exists("pipeline.lock"));
}

#[test]
fn pipeline_lock_is_deterministic_and_lists_digests() {
    let p = Project::new();
    chain(&p);
    p.run(&["run"]).ok();
    let first = p.read("pipeline.lock");
    std::fs::remove_file(p.path().join("pipeline.lock")).unwrap();
    p.run(&["run"]).ok();
    assert_eq!(p.read("pipeline.lock"), first);
    assert!(
        first.contains("square[power=2]:") && first.contains("digest: b3:"),
        "{first}"
    );
}

#[test]
fn the_same_pipeline_elsewhere_gets_the_same_keys_and_bytes() {
    let a = Project::new();
    let b = Project::new();
    // Same counter path so the param values (and so the keys) agree.
    let counter = tempfile::NamedTempFile::new().unwrap();
    for p in [&a, &b] {
        p.pipeline(&CHAIN.replace("COUNTER", &counter.path().display().to_string()));
        p.run(&["run"]).ok();
    }
    let (ja, jb) = (a.status_json(), b.status_json());
    for (sa, sb) in ja["stages"]
        .as_array()
        .unwrap()
        .iter()
        .zip(jb["stages"].as_array().unwrap())
    {
        assert_eq!(
            sa["key"], sb["key"],
            "keys must not depend on the project's location"
        );
        assert_eq!(sa["outputs"], sb["outputs"]);
    }
}

#[test]
fn a_failing_stage_stops_its_dependents_and_keeps_previous_outputs() {
    let p = Project::new();
    let pipeline = r#"
stages:
  a:
    cmd: ["sh", "-c", "if [ \"$1\" = fail ]; then echo about to fail >&2; exit 3; fi; echo ok > \"$0\"", "${outputs.o}", "${params.mode}"]
    params: {mode: MODE}
    outputs: {o: o.txt}
  b:
    cmd: ["cp", "${inputs.i}", "${outputs.o}"]
    inputs: {i: a.o}
    outputs: {o: o.txt}
"#;
    p.pipeline(&pipeline.replace("MODE", "good"));
    p.run(&["run"]).ok();
    p.pipeline(&pipeline.replace("MODE", "fail"));
    let r = p.run(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("failed a (exit code 3)"), "{}", r.stderr);
    assert!(
        r.stderr.contains("about to fail"),
        "the log tail is shown: {}",
        r.stderr
    );
    assert!(r.stderr.contains("skipped b"), "{}", r.stderr);
    assert_eq!(
        p.read("out/a/o.txt"),
        "ok\n",
        "the previous output is still there"
    );
    assert_eq!(p.state("a").0, "dirty");
    assert!(p.read("cache/v1/failed/a.log").contains("about to fail"));
}

#[test]
fn keep_going_runs_independent_stages_after_a_failure() {
    let p = Project::new();
    p.pipeline(
        r#"
stages:
  bad:
    cmd: ["false"]
    outputs: {o: o}
  good:
    cmd: ["sh", "-c", "echo fine > \"$0\"", "${outputs.o}"]
    outputs: {o: o}
"#,
    );
    let r = p.run(&["run", "-j", "1", "--keep-going"]);
    assert_eq!(r.code, 1);
    assert_eq!(p.read("out/good/o"), "fine\n");
}

#[test]
fn arguments_reach_the_command_intact_without_a_shell() {
    let p = Project::new();
    p.file("in put.txt", "x");
    p.pipeline(
        r#"
stages:
  echo:
    cmd: "python3 -c 'import sys,json; open(sys.argv[1],\"w\").write(json.dumps(sys.argv[2:]))' ${outputs.o} ${inputs.f} '$HOME; rm -rf /' ${params.s}"
    inputs: {f: {path: "in put.txt"}}
    params: {s: "a b"}
    outputs: {o: argv.json}
"#,
    );
    p.run(&["run"]).ok();
    let argv: Vec<String> = serde_json::from_str(&p.read("out/echo/argv.json")).unwrap();
    assert_eq!(argv.len(), 3);
    assert!(argv[0].ends_with("in put.txt"));
    assert_eq!(argv[1], "$HOME; rm -rf /");
    assert_eq!(argv[2], "a b");
}

#[test]
fn directory_outputs_are_stored_and_read_by_consumers() {
    let p = Project::new();
    p.pipeline(
        r#"
stages:
  plots:
    cmd: ["sh", "-c", "mkdir -p \"$0/sub\" && echo A > \"$0/a.txt\" && echo B > \"$0/sub/b.txt\"", "${outputs.dir}"]
    outputs: {dir: plots}
  list:
    cmd: ["sh", "-c", "cd \"$1\" && find . -type f | sort | xargs cat > \"$0\"", "${outputs.o}", "${inputs.d}"]
    inputs: {d: plots.dir}
    outputs: {o: all.txt}
"#,
    );
    p.run(&["run"]).ok();
    assert_eq!(p.read("out/plots/plots/sub/b.txt"), "B\n");
    assert_eq!(p.read("out/list/all.txt"), "A\nB\n");
    std::fs::remove_dir_all(p.path().join("out/plots")).unwrap();
    assert_eq!(p.state("plots").0, "restorable");
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("0 ran, 1 restored"), "{}", r.stderr);
    assert_eq!(p.read("out/plots/plots/a.txt"), "A\n");
}

#[test]
fn targets_run_only_their_upstream_closure_and_dry_run_runs_nothing() {
    let p = Project::new();
    chain(&p);
    let r = p.run(&["run", "--dry-run"]).ok();
    assert!(
        r.stderr.contains("would run gen (never run)"),
        "{}",
        r.stderr
    );
    assert!(!p.exists("out"), "dry run wrote nothing");
    let r = p.run(&["run", "square[power=2]"]).ok();
    assert!(r.stderr.contains("2 ran"), "{}", r.stderr);
    assert!(!p.exists("out/report"));
    assert!(!p.exists("out/square/power=3"));
    let r = p.run(&["run", "nope"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no stage `nope`"), "{}", r.stderr);
}

#[test]
fn force_reruns_a_fresh_stage() {
    let p = Project::new();
    let counter = chain(&p);
    p.run(&["run"]).ok();
    let r = p.run(&["run", "--force", "gen"]).ok();
    assert!(r.stderr.contains("run gen (forced)"), "{}", r.stderr);
    assert_eq!(count_lines(&counter), 2);
    // gen produced the same bytes: its consumers stay fresh.
    assert!(r.stderr.contains("1 ran, 3 fresh"), "{}", r.stderr);
}

#[test]
fn a_user_modified_output_is_reported_and_never_overwritten() {
    let p = Project::new();
    chain(&p);
    p.run(&["run"]).ok();
    let path = p.path().join("out/square/power=2/out.txt");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "my notes").unwrap();
    let v = p.status_json();
    let s = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "square[power=2]")
        .unwrap()
        .clone();
    assert_eq!(s["modified_outputs"][0], "out");
    // A change upstream re-runs the stage; the user's file survives.
    p.pipeline(&p.read("pipeline.yaml").replace("n: 3", "n: 4"));
    let r = p.run(&["run"]).ok();
    assert!(
        r.stderr
            .contains("was modified in the workspace; left as is"),
        "{}",
        r.stderr
    );
    assert_eq!(p.read("out/square/power=2/out.txt"), "my notes");
    assert_eq!(p.read("out/square/power=3/out.txt"), "1 8 27 64");
    let r = p.run(&["cache", "path", "square[power=2].out"]).ok();
    assert_eq!(
        std::fs::read_to_string(r.stdout.trim()).unwrap(),
        "1 4 9 16"
    );
}

#[test]
fn an_output_edited_in_place_is_detected_and_its_object_replaced() {
    let p = Project::new();
    chain(&p);
    p.run(&["run"]).ok();
    let path = p.path().join("out/gen/data.txt");
    // Writing through the hard link (possible as root, or after chmod) changes the object too.
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"edited\n"))
        .unwrap();
    assert_eq!(
        p.state("gen"),
        (
            "dirty".to_string(),
            vec!["output-modified-in-place".to_string()]
        )
    );
    let r = p.run(&["run"]).ok();
    assert!(r.stderr.contains("1 ran"), "{}", r.stderr);
    p.run(&["cache", "verify"]).ok();
    assert!(
        p.read("out/gen/data.txt").ends_with("edited\n"),
        "the user's edit is kept"
    );
}

#[test]
fn missing_external_inputs_are_reported_with_the_stage_and_path() {
    let p = Project::new();
    p.pipeline(
        r#"
stages:
  a:
    cmd: ["cp", "${inputs.x}", "${outputs.o}"]
    inputs: {x: {path: data/missing.bin}}
    outputs: {o: o}
"#,
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("input `x` of stage `a`: cannot read `data/missing.bin`"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_stage_that_forgets_an_output_fails_clearly() {
    let p = Project::new();
    p.pipeline(
        r#"
stages:
  a:
    cmd: ["true"]
    outputs: {o: result.txt}
"#,
    );
    let r = p.run(&["run"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("did not write output `o` (expected `result.txt`"),
        "{}",
        r.stderr
    );
    assert!(!p.exists("out/a"));
}

#[test]
fn run_json_streams_events_and_a_summary() {
    let p = Project::new();
    chain(&p);
    let r = p.run(&["run", "--json"]).ok();
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["event"] == "stage-started"
        && e["stage"] == "gen"
        && e["reasons"][0]["tag"] == "never-run"));
    let last = events.last().unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(last["ran"], 4);
    assert_eq!(last["version"], 1);
}

/// Every stage gets `$AZIMUTH_STAGE`, `$AZIMUTH_THREADS` and `$AZIMUTH_PROGRESS` (a file in its
/// own staging directory, where it may write a status line for the spinner); writing progress
/// leaves the outputs as they would be without it.
#[test]
fn stages_get_their_name_threads_and_a_progress_file() {
    let p = Project::new();
    p.pipeline(
        r#"
stages:
  talk:
    cmd: ["sh", "-c", "echo \"step 1/2\" > \"$AZIMUTH_PROGRESS\"; printf '%s %s %s' \"$AZIMUTH_STAGE\" \"$AZIMUTH_THREADS\" \"$(basename \"$(dirname \"$AZIMUTH_PROGRESS\")\")\" > \"$0\"", "${outputs.o}"]
    outputs: {o: o.txt}
"#,
    );
    p.run(&["run"]).ok();
    let text = p.read("out/talk/o.txt");
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts[..2], ["talk", "1"], "{text}");
    assert!(
        parts[2].starts_with("talk-"),
        "progress lives in the staging dir: {text}"
    );
}
