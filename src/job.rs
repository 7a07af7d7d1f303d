//! The job file that describes one stage attempt, and the hidden `azimuth __stage JOB` entry point
//! that runs it.
//!
//! The orchestrator writes `job.json` into the staging directory and starts `azimuth __stage` as
//! the leader of a new process group with a parent-death signal. That supervisor:
//! - for a `cmd` stage, runs the user's command (argv with paths and params substituted, never
//!   through a shell) in a process group of its own, kills that group when the command exits (a
//!   stage's background processes end with the stage), and on SIGTERM/SIGINT/SIGHUP — including
//!   the parent-death signal when the orchestrator is killed — kills it and exits, so no
//!   grandchild keeps writing after its orchestrator is gone;
//! - for a built-in stage, replaces itself (`exec`) with the `azimuth-worker` binary beside it,
//!   which carries libtorch (see ARCHITECTURE.md for why that is a separate binary).
//!
//! The same entry point is what a cluster executor will submit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::spec::format_value;

pub use azimuth_stage_api::job::{Job, JobBody, JOB_FORMAT};

/// Substitutes `${inputs.x}`, `${outputs.x}` and `${params.x}` in a command template. A word that
/// is exactly `${inputs.x}` expands to one argument per artifact.
pub fn expand_argv(
    template: &[String],
    inputs: &BTreeMap<String, Vec<PathBuf>>,
    outputs: &BTreeMap<String, PathBuf>,
    params: &serde_json::Map<String, Json>,
) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    for word in template {
        if let Some(port) = word
            .strip_prefix("${inputs.")
            .and_then(|r| r.strip_suffix('}'))
        {
            if let Some(paths) = inputs.get(port) {
                argv.extend(paths.iter().map(|p| p.display().to_string()));
                continue;
            }
        }
        let mut out = String::new();
        let mut rest = word.as_str();
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let body = &rest[i + 2..];
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{word}`"))?;
            let name = &body[..end];
            let value = match name.split_once('.') {
                Some(("inputs", n)) => match inputs.get(n).map(|v| v.as_slice()) {
                    Some([one]) => one.display().to_string(),
                    _ => return Err(format!("`${{{name}}}` does not stand for exactly one path")),
                },
                Some(("outputs", n)) => outputs
                    .get(n)
                    .ok_or_else(|| format!("no output `{n}`"))?
                    .display()
                    .to_string(),
                Some(("params", n)) => {
                    format_value(params.get(n).ok_or_else(|| format!("no param `{n}`"))?)
                }
                _ => return Err(format!("unknown placeholder `${{{name}}}`")),
            };
            out.push_str(&value);
            rest = &body[end + 1..];
        }
        out.push_str(rest);
        argv.push(out);
    }
    Ok(argv)
}

/// `azimuth __stage JOB`: runs one stage attempt; returns the process exit code.
pub fn supervise(job_path: &Path) -> i32 {
    let job = match Job::read(job_path) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("azimuth: {e}");
            return 2;
        }
    };
    if let Err(e) = std::env::set_current_dir(&job.workdir) {
        eprintln!(
            "azimuth: stage `{}`: cannot enter `{}`: {e}",
            job.instance,
            job.workdir.display()
        );
        return 2;
    }
    match &job.body {
        JobBody::Builtin { .. } => exec_worker(job_path, &job.instance, &job.env),
        JobBody::Cmd { argv } => run_command(&job, argv),
    }
}

fn exec_worker(
    job_path: &Path,
    instance: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> i32 {
    use std::os::unix::process::CommandExt;
    let worker = match std::env::current_exe() {
        Ok(p) => p.with_file_name("azimuth-worker"),
        Err(e) => {
            eprintln!("azimuth: stage `{instance}`: cannot locate this executable: {e}");
            return 2;
        }
    };
    let err = std::process::Command::new(&worker)
        .arg(job_path)
        .envs(env)
        .exec();
    eprintln!(
        "azimuth: stage `{instance}`: cannot start the built-in stage worker `{}`: {err}\n  = help: build it with `cargo build --release` (feature `builtin-stages`), next to the `azimuth` binary",
        worker.display()
    );
    127
}

fn run_command(job: &Job, template: &[String]) -> i32 {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Arc;

    let argv = match expand_argv(template, &job.inputs, &job.outputs, &job.params) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("azimuth: stage `{}`: {e}", job.instance);
            return 2;
        }
    };
    // The command runs in a process group of its own. When this supervisor is told to stop
    // (SIGTERM/SIGINT/SIGHUP, including the parent-death signal when the orchestrator dies), it
    // kills that whole group, so nothing the command started outlives it.
    let group = Arc::new(AtomicI32::new(0));
    match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP]) {
        Ok(mut signals) => {
            let group = Arc::clone(&group);
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let g = group.load(Ordering::SeqCst);
                    if g > 0 {
                        // SAFETY: signalling the process group we created for the command.
                        unsafe { libc::killpg(g, libc::SIGKILL) };
                    }
                    std::process::exit(128 + sig);
                }
            });
        }
        Err(e) => eprintln!("azimuth: warning: cannot install signal handlers: {e}"),
    }
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(&job.env);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (is it installed and on PATH?)"
            } else {
                ""
            };
            eprintln!(
                "azimuth: stage `{}`: cannot run `{}`: {e}{hint}",
                job.instance, argv[0]
            );
            return 127;
        }
    };
    let pgid = child.id() as i32;
    group.store(pgid, Ordering::SeqCst);
    let status = child.wait();
    // Whatever the command left running in its group ends with the stage.
    // SAFETY: signalling the process group we created for the command.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    match status {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("azimuth: stage `{}`: lost the command: {e}", job.instance);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn argv_expansion_is_per_word_and_never_splits_paths() {
        let inputs = BTreeMap::from([
            ("a".to_string(), vec![PathBuf::from("/s/with space")]),
            (
                "many".to_string(),
                vec![PathBuf::from("/x1"), PathBuf::from("/x2")],
            ),
        ]);
        let outputs = BTreeMap::from([("o".to_string(), PathBuf::from("/w/o.txt"))]);
        let params = json!({"sigma": 1e-9, "name": "a b"})
            .as_object()
            .unwrap()
            .clone();
        let t: Vec<String> = [
            "prog",
            "${inputs.a}",
            "${inputs.many}",
            "--out=${outputs.o}",
            "${params.sigma}",
            "${params.name}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expand_argv(&t, &inputs, &outputs, &params).unwrap(),
            [
                "prog",
                "/s/with space",
                "/x1",
                "/x2",
                "--out=/w/o.txt",
                "1e-9",
                "a b"
            ]
        );
        assert!(expand_argv(&["x${inputs.many}".to_string()], &inputs, &outputs, &params).is_err());
    }
}
