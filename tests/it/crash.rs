//! Crash safety: kill -9 the orchestrator (at several points of a run with a large output) and
//! kill a stage, then check that no partial file is visible, no stage process survives,
//! `cache verify` passes, and the next run finishes with the same bytes as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::Project;

/// A stage that writes 48 MiB of a deterministic pattern in 1 MiB steps, slowly, and leaves a
/// background grandchild running (which must die with it).
fn pipeline(p: &Project, marker: &str) {
    let script = r#"
import os, sys, time, subprocess
out, marker = sys.argv[1], sys.argv[2]
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
with open(out, "wb") as f:
    for i in range(48):
        f.write(bytes([(i * 7 + j) % 251 for j in range(256)]) * 4096)
        f.flush()
        time.sleep(0.04)
"#;
    p.file("writer.py", script);
    p.pipeline(&format!(
        r#"
stages:
  big:
    cmd: ["python3", "${{inputs.script}}", "${{outputs.data}}", "{marker}"]
    inputs: {{script: {{path: writer.py}}}}
    outputs: {{data: big.bin}}
  small:
    cmd: ["sh", "-c", "wc -c < \"$1\" > \"$0\"", "${{outputs.n}}", "${{inputs.d}}"]
    inputs: {{d: big.data}}
    outputs: {{n: n.txt}}
"#
    ));
}

/// Pids whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(marker) && pid != std::process::id() {
                out.push(pid);
            }
        }
    }
    out
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn staged_output(cache: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(cache.join("v1/tmp")).ok()?.flatten() {
        let p = e.path().join("work/big.bin");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

fn kill9(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

fn assert_clean_after_crash(p: &Project, marker: &str) {
    wait_until(
        "stage processes to die with their orchestrator",
        Duration::from_secs(10),
        || processes_with(marker).is_empty(),
    );
    assert!(
        !p.exists("out/big/big.bin"),
        "no partial output may become visible"
    );
    let ls = p.run(&["cache", "ls"]).ok();
    assert_eq!(
        ls.stdout.lines().count(),
        1,
        "no run record after a crash: {}",
        ls.stdout
    );
    p.run(&["cache", "verify"]).ok();
}

fn reference_digest() -> String {
    let p = Project::new();
    pipeline(&p, "azimuth-crash-reference");
    p.run(&["run"]).ok();
    blake3::hash(&std::fs::read(p.path().join("out/big/big.bin")).unwrap())
        .to_hex()
        .to_string()
}

#[test]
fn killing_the_orchestrator_at_any_point_leaves_nothing_partial() {
    let expected = reference_digest();
    // Kill points: as soon as the stage started writing, mid-write, and at the end of the write.
    for (point, min_bytes) in [("start", 1u64), ("middle", 20 << 20), ("end", 48 << 20)] {
        let p = Project::new();
        let marker = format!("azimuth-crash-{point}-{}", std::process::id());
        pipeline(&p, &marker);
        let mut child = p.command(&["run", "-q"]).spawn().unwrap();
        wait_until(
            &format!("the stage to write {min_bytes} bytes"),
            Duration::from_secs(60),
            || {
                staged_output(&p.cache())
                    .and_then(|f| std::fs::metadata(f).ok())
                    .is_some_and(|m| m.len() >= min_bytes)
            },
        );
        kill9(&mut child);
        assert_clean_after_crash(&p, &marker);
        // The next run needs no manual step and produces the same bytes.
        let r = p.run(&["run"]).ok();
        assert!(r.stderr.contains("2 ran"), "{point}: {}", r.stderr);
        let got = blake3::hash(&std::fs::read(p.path().join("out/big/big.bin")).unwrap())
            .to_hex()
            .to_string();
        assert_eq!(
            got, expected,
            "{point}: output differs from an uninterrupted run"
        );
        p.run(&["cache", "verify"]).ok();
        assert!(
            std::fs::read_dir(p.cache().join("v1/tmp"))
                .unwrap()
                .next()
                .is_none(),
            "{point}: staging was cleaned"
        );
        wait_until(
            "background processes of the finished run",
            Duration::from_secs(10),
            || processes_with(&marker).is_empty(),
        );
    }
}

#[test]
fn a_killed_stage_fails_cleanly_and_the_next_run_recovers() {
    let p = Project::new();
    let marker = format!("azimuth-stagekill-{}", std::process::id());
    pipeline(&p, &marker);
    let child = p
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the stage to start writing",
        Duration::from_secs(60),
        || staged_output(&p.cache()).is_some(),
    );
    // Kill the writer (the python process whose argv has the marker and the output path).
    let writer = processes_with(&marker)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("big.bin"))
                .unwrap_or(false)
        })
        .expect("writer process");
    unsafe { libc::kill(writer as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed big (exit code 137)")
            || stderr.contains("failed big (killed by signal 9)"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped small"), "{stderr}");
    assert_clean_after_crash(&p, &marker);
    p.run(&["run"]).ok();
    assert_eq!(
        std::fs::metadata(p.path().join("out/big/big.bin"))
            .unwrap()
            .len(),
        48 << 20
    );
}

#[test]
fn interrupting_a_run_kills_its_stages_and_exits_130() {
    let p = Project::new();
    let marker = format!("azimuth-sigint-{}", std::process::id());
    pipeline(&p, &marker);
    let child = p
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the stage to start writing",
        Duration::from_secs(60),
        || staged_output(&p.cache()).is_some(),
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_clean_after_crash(&p, &marker);
    assert!(
        std::fs::read_dir(p.cache().join("v1/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "staging removed on interrupt"
    );
}
