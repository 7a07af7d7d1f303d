//! Two `run`s at once compute each key once; read-only commands are never blocked by a run.

use std::process::Stdio;
use std::time::Duration;

use crate::crash::wait_until;
use crate::support::{count_lines, Project};

fn slow(p: &Project) -> std::path::PathBuf {
    let counter = p.path().join("ran.log");
    p.pipeline(&format!(
        r#"
stages:
  slow:
    cmd: ["sh", "-c", "echo run >> \"$1\"; sleep 2; echo done > \"$0\"", "${{outputs.o}}", "{}"]
    outputs: {{o: o.txt}}
  other:
    cmd: ["sh", "-c", "echo other > \"$0\"", "${{outputs.o}}"]
    outputs: {{o: o.txt}}
"#,
        counter.display()
    ));
    counter
}

#[test]
fn two_runs_at_once_compute_each_stage_once() {
    let p = Project::new();
    let counter = slow(&p);
    let a = p
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the first run to start its stage",
        Duration::from_secs(30),
        || count_lines(&counter) == 1,
    );
    let b = p
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (
        String::from_utf8_lossy(&oa.stderr),
        String::from_utf8_lossy(&ob.stderr),
    );
    assert!(oa.status.success() && ob.status.success(), "{ea}\n{eb}");
    assert_eq!(
        count_lines(&counter),
        1,
        "the same key must never be computed twice at once\n{ea}\n{eb}"
    );
    assert!(
        eb.contains("waiting slow"),
        "the second run says what it waits for: {eb}"
    );
    assert!(eb.contains("pid "), "and who holds it: {eb}");
    assert_eq!(p.read("out/slow/o.txt"), "done\n");
}

#[test]
fn read_only_commands_are_not_blocked_by_a_run() {
    let p = Project::new();
    let counter = slow(&p);
    let mut run = p
        .command(&["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the run to start its stage",
        Duration::from_secs(30),
        || count_lines(&counter) == 1,
    );
    let st = p.run(&["status"]).ok();
    assert!(st.stdout.contains("slow"), "{}", st.stdout);
    p.run(&["dag"]).ok();
    p.run(&["cache", "ls"]).ok();
    assert!(
        run.try_wait().unwrap().is_none(),
        "status returned while the run was still going"
    );
    assert!(run.wait().unwrap().success());
}
