//! Bad input: every file in `bad_pipelines/` is validated by the real binary, and its full
//! stderr is compared with the `.stderr` snapshot next to it. Set `AZIMUTH_BLESS=1` to rewrite
//! the snapshots after an intended change, then review the diff. Files named `builtin-*` need the
//! built-in stages and are skipped without them.

use std::path::Path;

use crate::support::Project;

#[test]
fn malformed_pipelines_get_all_their_problems_reported_with_locations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/bad_pipelines");
    let bless = std::env::var_os("AZIMUTH_BLESS").is_some();
    let mut failures = Vec::new();
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    entries.sort();
    for yaml in entries {
        let name = yaml.file_stem().unwrap().to_string_lossy().into_owned();
        if name.starts_with("builtin-") && !cfg!(feature = "builtin-stages") {
            continue;
        }
        n += 1;
        let p = Project::new();
        p.pipeline(&std::fs::read_to_string(&yaml).unwrap());
        let r = p.run(&["status"]);
        assert_eq!(
            r.code, 2,
            "{name}: invalid pipelines exit with 2\n{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{name}: nothing on stdout");
        let expected_path = yaml.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &r.stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != r.stderr {
            failures.push(format!(
                "=== {name}: expected\n{expected}=== got\n{}",
                r.stderr
            ));
        }
        // Every diagnostic points into the file with line and column.
        let lines: Vec<&str> = r.stderr.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("error: ") {
                let next = lines.get(i + 1).copied().unwrap_or("");
                if !next.contains("--> pipeline.yaml:") {
                    failures.push(format!(
                        "{name}: `{line}` has no location (next line: `{next}`)"
                    ));
                }
            }
        }
    }
    assert!(n >= 10, "the bad-pipeline table is there");
    assert!(
        failures.is_empty(),
        "{} snapshot(s) differ (AZIMUTH_BLESS=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_missing_pipeline_file_says_what_to_do() {
    let p = Project::new();
    let r = p.run(&["status"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read pipeline file `pipeline.yaml`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--pipeline"), "{}", r.stderr);
}

#[test]
fn bad_usage_exits_with_2() {
    let p = Project::new();
    assert_eq!(p.run(&["frobnicate"]).code, 2);
    assert_eq!(p.run(&["run", "--jobs", "many"]).code, 2);
}
