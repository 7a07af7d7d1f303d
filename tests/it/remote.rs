//! Two independent cache roots sharing one remote directory, as two machines on a shared
//! filesystem would: a stage computed by one is a hit for the other (files and directory
//! outputs, byte for byte); `run --lazy` fetches only what a stage reads; a push killed midway
//! exposes nothing partial and the next push resumes from the chunks already sent; two
//! machines pushing the same results at once leave one consistent copy.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::Project;

/// A stage writing a file of `size` pseudo-random bytes and a directory, and one reading it.
fn pipeline(size: usize) -> String {
    format!(
        r#"stages:
  make:
    cmd: [python3, -c, "import os,random,sys; random.seed(7); open(sys.argv[1],'wb').write(random.randbytes({size})); os.makedirs(sys.argv[2]); open(sys.argv[2]+'/a.txt','w').write('a'); os.makedirs(sys.argv[2]+'/sub'); open(sys.argv[2]+'/sub/b.txt','w').write('b')", "${{outputs.blob}}", "${{outputs.tree}}"]
    outputs: {{blob: blob.bin, tree: tree}}
  size:
    cmd: [python3, -c, "import os,sys; open(sys.argv[2],'w').write(str(os.path.getsize(sys.argv[1])))", "${{inputs.blob}}", "${{outputs.n}}"]
    inputs: {{blob: make.blob}}
    outputs: {{n: n.txt}}
"#
    )
}

fn project(size: usize) -> Project {
    let p = Project::new();
    p.pipeline(&pipeline(size));
    p
}

fn run_with(p: &Project, remote: &Path, args: &[&str]) -> crate::support::Run {
    let mut all = vec!["--remote", remote.to_str().unwrap()];
    all.extend_from_slice(args);
    p.run(&all)
}

fn said(r: &crate::support::Run) -> String {
    format!("{}{}", r.stdout, r.stderr)
}

fn remote_files(remote: &Path, sub: &str) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(&remote.join("v1").join(sub))
}

#[test]
fn a_stage_computed_by_one_cache_is_a_hit_for_another() {
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("remote");
    let a = project(100_000);
    let r = run_with(&a, &remote, &["run"]).ok();
    assert!(said(&r).contains("2 ran"), "{}", said(&r));
    assert!(said(&r).contains("pushed 2 records"), "{}", said(&r));

    let b = project(100_000);
    let r = run_with(&b, &remote, &["run"]).ok();
    assert!(said(&r).contains("0 ran, 2 restored"), "{}", said(&r));
    for f in ["out/make/blob.bin", "out/make/tree/a.txt", "out/make/tree/sub/b.txt", "out/size/n.txt"] {
        assert_eq!(a.read_bytes(f), b.read_bytes(f), "{f}");
    }
    assert_eq!(b.read("out/size/n.txt"), "100000");
    // B's own cache now holds it: fresh without the remote too.
    let r = b.run(&["run"]).ok();
    assert!(said(&r).contains("0 ran"), "{}", said(&r));
    assert_eq!(a.read("pipeline.lock"), b.read("pipeline.lock"));
}

#[test]
fn lazy_runs_fetch_only_what_a_stage_reads() {
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("remote");
    let a = project(50_000);
    run_with(&a, &remote, &["run"]).ok();

    let b = project(50_000);
    let r = run_with(&b, &remote, &["run", "--lazy"]).ok();
    assert!(said(&r).contains("0 ran, 2 left in the remote"), "{}", said(&r));
    let s = run_with(&b, &remote, &["status"]).ok();
    assert!(s.stdout.contains("(in the remote: fetched when `run` links them)"), "{}", s.stdout);
    assert!(!b.exists("out/make/blob.bin"), "nothing is downloaded for out/");
    let blob_digest = a.run(&["hash", "out/make/blob.bin"]).ok().stdout;
    let hex = blob_digest.split_whitespace().next().unwrap().trim_start_matches("b3:").to_string();
    let object = format!("cache/v1/objects/{}/{}", &hex[..2], &hex[2..]);
    assert!(!b.exists(&object), "the blob stays in the remote");
    // A new stage that reads the blob fetches exactly it.
    b.pipeline(&format!(
        "{}  again:\n    cmd: [cp, \"${{inputs.blob}}\", \"${{outputs.c}}\"]\n    inputs: {{blob: make.blob}}\n    outputs: {{c: c.bin}}\n",
        pipeline(50_000)
    ));
    let r = run_with(&b, &remote, &["run", "--lazy"]).ok();
    assert!(said(&r).contains("1 ran"), "{}", said(&r));
    assert!(b.exists(&object), "fetched for the stage that reads it");
    assert_eq!(b.read_bytes("out/again/c.bin"), a.read_bytes("out/make/blob.bin"));
    // `cache pull` brings the rest; then a plain run links it all without running.
    run_with(&b, &remote, &["cache", "pull"]).ok();
    let r = run_with(&b, &remote, &["run"]).ok();
    assert!(said(&r).contains("0 ran"), "{}", said(&r));
    assert_eq!(b.read_bytes("out/make/blob.bin"), a.read_bytes("out/make/blob.bin"));
}

#[test]
fn an_interrupted_push_resumes_and_exposes_nothing_partial() {
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("remote");
    let a = project(8 << 20);
    run_with(&a, &remote, &["run", "--no-push"]).ok();
    assert_eq!(remote_files(&remote, "runs"), 0);

    // Push in 4 KiB chunks (2,048 of them for the blob) and kill the push midway.
    let mut child = a
        .command(&["--remote", remote.to_str().unwrap(), "cache", "push"])
        .env("AZIMUTH_CHUNK_BYTES", "4096")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while remote_files(&remote, "uploads") < 200 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let chunks = remote_files(&remote, "uploads");
    assert!(chunks >= 200, "the push was killed after {chunks} chunks");
    assert_eq!(remote_files(&remote, "runs"), 0, "no record without its objects");

    // Another machine sees no result yet: it would have to compute.
    let b = project(8 << 20);
    let s = run_with(&b, &remote, &["status"]);
    assert!(s.stdout.contains("dirty"), "{}", s.stdout);

    // The next push resumes and says so; then the other machine gets a hit.
    let mut resume = a.command(&["--remote", remote.to_str().unwrap(), "cache", "push"]);
    let out = resume.env("AZIMUTH_CHUNK_BYTES", "4096").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chunks reused from an interrupted push"), "{text}");
    assert_eq!(remote_files(&remote, "uploads"), 0, "chunks are cleaned up");
    let r = run_with(&b, &remote, &["run"]).ok();
    assert!(said(&r).contains("0 ran, 2 restored"), "{}", said(&r));
    assert_eq!(b.read_bytes("out/make/blob.bin"), a.read_bytes("out/make/blob.bin"));
}

#[test]
fn two_machines_pushing_the_same_results_at_once_leave_one_copy() {
    let shared = tempfile::tempdir().unwrap();
    let remote = shared.path().join("remote");
    let a = project(2 << 20);
    let b = project(2 << 20);
    run_with(&a, &remote, &["run", "--no-push"]).ok();
    run_with(&b, &remote, &["run", "--no-push"]).ok();
    let push = |p: &Project| {
        p.command(&["--remote", remote.to_str().unwrap(), "cache", "push"])
            .env("AZIMUTH_CHUNK_BYTES", "16384")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (push(&a), push(&b));
    for c in [ca, cb] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(remote_files(&remote, "runs"), 2);
    assert_eq!(remote_files(&remote, "uploads"), 0);
    // Every remote object is whole: its name is its digest.
    let objects = remote.join("v1/objects");
    for shard in std::fs::read_dir(&objects).unwrap().flatten() {
        for obj in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let name = format!(
                "b3:{}{}",
                shard.file_name().to_string_lossy(),
                obj.file_name().to_string_lossy()
            );
            let h = a.run(&["hash", obj.path().to_str().unwrap()]).ok().stdout;
            assert!(h.starts_with(&name), "{h} vs {name}");
        }
    }
    let c = project(2 << 20);
    let r = run_with(&c, &remote, &["run"]).ok();
    assert!(said(&r).contains("0 ran"), "{}", said(&r));
}

#[test]
fn remote_commands_need_a_remote_and_refuse_foreign_directories() {
    let p = project(10);
    let r = p.run(&["cache", "push"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("needs a remote cache"), "{}", r.stderr);
    let r = p.run(&["run", "--lazy"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--remote"), "{}", r.stderr);
    p.file("notes/thesis.tex", "x");
    let r = p.run(&["--remote", "notes", "status"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not an Azimuth remote"), "{}", r.stderr);
}
