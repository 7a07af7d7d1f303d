//! `executor: slurm` against a real Slurm: Debian's slurmctld + slurmd (with munge) on this
//! machine, started by `scripts/setup-slurm.sh` (which `scripts/test.sh` runs; it exports
//! `SLURM_CONF`). Stages land as Slurm jobs with their declared resources; status is polled in
//! batches (one `squeue` call per cycle, never `sacct`), and survives a controller that does not
//! answer for a while; a failing job reports its exit code and log; Ctrl-C reaches the jobs
//! (`scancel`); a run killed midway is resumed by the next one, which adopts its jobs instead of
//! submitting them again.
//!
//! Without a Slurm (no `SLURM_CONF`), each test says so and passes, unless
//! `AZIMUTH_REQUIRE_SLURM` is set, as `scripts/test.sh` does after starting one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Project;

/// The configuration of the test cluster, or `None` (skip) when there is none.
fn slurm_conf() -> Option<String> {
    let conf = std::env::var("SLURM_CONF").ok().filter(|c| Path::new(c).is_file());
    let up = conf.is_some()
        && Command::new("sinfo")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !up {
        assert!(
            std::env::var_os("AZIMUTH_REQUIRE_SLURM").is_none(),
            "AZIMUTH_REQUIRE_SLURM is set but no Slurm answers (SLURM_CONF={conf:?}); run \
             scripts/setup-slurm.sh"
        );
        eprintln!("slurm test: no Slurm here (scripts/setup-slurm.sh starts one); skipped");
        return None;
    }
    conf
}

/// A project whose azimuth sees `SLURM_CONF`, with `squeue`/`sacct`/`sbatch` wrapped by shims
/// that log each call to `calls.log` (and make the first `fail_first` squeue calls fail as a busy
/// controller would).
fn project(fail_first: u32) -> (Project, PathBuf) {
    let p = Project::new();
    let shims = p.path().join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    let log = p.path().join("calls.log");
    for tool in ["squeue", "sacct", "sbatch", "scancel"] {
        let real = which(tool);
        let script = format!(
            "#!/bin/sh\necho {tool} >> '{log}'\nif [ {tool} = squeue ]; then\n  n=$(grep -c '^squeue' '{log}')\n  if [ \"$n\" -le {fail_first} ]; then echo 'slurm_load_jobs error: Socket timed out on send/recv operation' >&2; exit 1; fi\nfi\nexec '{real}' \"$@\"\n",
            log = log.display()
        );
        let path = shims.join(tool);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (p, shims)
}

fn which(tool: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn azimuth(p: &Project, shims: &Path, conf: &str, args: &[&str]) -> Command {
    let mut c = p.command(args);
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap_or_default());
    c.env("PATH", path).env("SLURM_CONF", conf);
    c
}

fn calls(p: &Project, tool: &str) -> usize {
    std::fs::read_to_string(p.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == tool)
        .count()
}

/// `scontrol show job ID` as `Key=Value` pairs.
fn job_info(id: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// State of job `id` (`squeue --states=all`).
fn job_state(id: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "--states=all", "-j", id, "-o", "%T"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ids of this user's jobs named `azimuth:<instance>` (newest last).
fn jobs_named(instance: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "--me", "--states=all", "-o", "%i %j"])
        .output()
        .unwrap();
    let mut ids: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, name) = l.trim().split_once(' ')?;
            (name == format!("azimuth:{instance}")).then(|| id.parse().ok())?
        })
        .collect();
    ids.sort_unstable();
    ids.into_iter().map(|i| i.to_string()).collect()
}

/// A pipeline of one Slurm stage `name` running `sh -c SCRIPT OUT`.
fn one_stage(p: &Project, name: &str, script: &str) {
    p.pipeline(&format!(
        "executor: slurm\nstages:\n  {name}:\n    cmd: [sh, -c, '{script}', \"${{outputs.o}}\"]\n    outputs: {{o: o.txt}}\n"
    ));
}

/// Polls `f` every 50 ms until it gives a value; fails after `secs` saying `what`.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished azimuth printed, stdout then stderr.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A unique tag so that tests running at once (and earlier runs) never share job names.
fn tag() -> String {
    format!(
        "t{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

#[test]
fn stages_land_as_slurm_jobs_with_their_resources_and_batched_polling() {
    let Some(conf) = slurm_conf() else { return };
    // The first three squeue calls fail like a busy controller; the run must ride it out.
    let (p, shims) = project(3);
    let t = tag();
    p.pipeline(&format!(
        r#"executor: slurm
stages:
  gen_{t}:
    matrix: {{n: [1, 2, 3, 4, 5, 6]}}
    cmd: [sh, -c, 'sleep 2; echo "$1 $SLURM_JOB_ID $SLURM_CPUS_PER_TASK $(hostname)" > "$2"', sh, "${{params.n}}", "${{outputs.o}}"]
    outputs: {{o: o.txt}}
    resources: {{cpus: 1, memory: 64MiB, time: 7m}}
  total:
    executor: local
    cmd: [sh, -c, 'cat "$@" > "$0"', "${{outputs.all}}", "${{inputs.parts}}"]
    inputs: {{parts: gen_{t}.o}}
    outputs: {{all: all.txt}}
"#
    ));
    let out = azimuth(&p, &shims, &conf, &["run"]).output().unwrap();
    let said = said(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("7 ran"), "{said}");
    let all = p.read("out/total/all.txt");
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 6, "{all}");
    let host = Command::new("hostname").arg("-s").output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
    for (k, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], (k + 1).to_string());
        assert_eq!(f[2], "1", "cpus per task");
        assert_eq!(f[3], host);
        // The job's limits are the stage's declared resources.
        let info = job_info(f[1]);
        assert!(info.contains("TimeLimit=00:07:00"), "{info}");
        assert!(info.contains(&format!("JobName=azimuth:gen_{t}[n={}]", k + 1)), "{info}");
        assert!(info.contains("MinMemoryNode=64M") || info.contains("mem=64M"), "{info}");
    }
    // Six jobs, yet few status calls: one squeue per cycle, none per job, and never sacct.
    let squeues = calls(&p, "squeue");
    assert!(squeues >= 4, "the three failures and at least one answer: {squeues}");
    assert!(squeues <= 16, "{squeues} squeue calls for 6 jobs of 2 s");
    assert_eq!(calls(&p, "sacct"), 0);
    assert_eq!(calls(&p, "sbatch"), 6);
    // The record says where it ran.
    let show = p
        .run(&["cache", "show", &format!("gen_{t}[n=1].o")])
        .ok()
        .stdout;
    assert!(show.contains(&host), "{show}");
    // Nothing is submitted again when everything is fresh.
    let again = azimuth(&p, &shims, &conf, &["run"]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 ran"));
    assert_eq!(calls(&p, "sbatch"), 6);
}

#[test]
fn a_failing_job_reports_its_exit_code_and_log() {
    let Some(conf) = slurm_conf() else { return };
    let (p, shims) = project(0);
    let name = format!("bad_{}", tag());
    one_stage(&p, &name, "echo broken input >&2; exit 3");
    let out = azimuth(&p, &shims, &conf, &["run"]).output().unwrap();
    let said = said(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("exit code 3 (Slurm job"), "{said}");
    assert!(said.contains("broken input"), "the job's log is shown: {said}");
    assert!(!p.exists(&format!("out/{name}/o.txt")));
}

#[test]
fn ctrl_c_cancels_the_jobs() {
    let Some(conf) = slurm_conf() else { return };
    let (p, shims) = project(0);
    let name = format!("slow_{}", tag());
    one_stage(&p, &name, "sleep 300; echo > \"$0\"");
    let child = azimuth(&p, &shims, &conf, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_for("the job never ran", 60, || {
        jobs_named(&name).pop().filter(|id| job_state(id) == "RUNNING")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(calls(&p, "scancel"), 1);
    wait_for(&format!("job {id} was not cancelled"), 30, || {
        (job_state(&id) == "CANCELLED").then_some(())
    });
}

#[test]
fn a_run_killed_midway_is_resumed_by_adopting_its_jobs() {
    let Some(conf) = slurm_conf() else { return };
    let (p, shims) = project(0);
    let name = format!("long_{}", tag());
    one_stage(&p, &name, "sleep 4; echo \"$SLURM_JOB_ID\" > \"$0\"");
    let mut child = azimuth(&p, &shims, &conf, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for("no job was submitted", 60, || jobs_named(&name).pop());
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(!p.exists(&format!("out/{name}/o.txt")));
    // The job goes on without its orchestrator; the next run adopts it.
    let out = azimuth(&p, &shims, &conf, &["run"]).output().unwrap();
    let said = said(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("(Slurm job {id} of an earlier run)")),
        "{said}"
    );
    assert_eq!(calls(&p, "sbatch"), 1, "nothing was submitted again");
    assert_eq!(jobs_named(&name), std::slice::from_ref(&id));
    assert_eq!(p.read(&format!("out/{name}/o.txt")).trim(), id);
    assert_eq!(p.run(&["cache", "verify"]).code, 0);
}
