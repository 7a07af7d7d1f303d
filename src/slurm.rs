//! `executor: slurm`: each ready stage becomes one Slurm job running the same hidden entry
//! point the local executor starts (`azimuth __stage JOB`), so a stage behaves the same on a
//! laptop and on a cluster. The staging directory (inside the cache) must be on a filesystem the
//! compute nodes share with the submitting machine, as it is on any cluster where `$HOME` or a
//! project directory is shared.
//!
//! - **Submission** ([`submit`]): a small `slurm.sh` in the staging directory runs the
//!   supervisor, then records its exit code and the node's hostname in `exit` (written to a
//!   temporary name and renamed, so it is never read half-written). `sbatch` gets the stage's
//!   declared resources (`--cpus-per-task`, `--mem`, `--gres=gpu:N`, `--time`), the pipeline's
//!   `slurm:` options (partition, account, qos, extra args) and `--output` = the stage log.
//!   `slurm.json` beside it names the job and the key it computes.
//! - **Watching** ([`Poller`]): one thread for the whole run. A finished job is seen by its
//!   `exit` file (no Slurm call at all); otherwise one `squeue --me --states=all` call covers
//!   every job, however many run. The interval starts at 1 s and backs off to 30 s while nothing
//!   changes. When the controller does not answer (a busy slurmctld is the classic cause of
//!   failed runs), calls back off to 60 s, and only after `AZIMUTH_SLURM_LOST_AFTER` seconds
//!   (default 900) without an answer are the jobs reported lost. `sacct` is never called.
//! - **Cancellation** ([`Poller::cancel_all`]): one `scancel` for every job of the run, on
//!   Ctrl-C or SIGTERM.
//! - **Resuming**: if `azimuth run` dies, its jobs keep running. Their staging directories are
//!   kept (a `slurm.json` marks them; see `Store::clean_stale_staging`). The next run that needs
//!   the same key adopts the directory and its job ([`adopt`]) instead of submitting again, and
//!   commits the result when the job ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::hash::Digest;
use crate::spec::{Instance, SlurmOptions};

/// What `slurm.json` in a staging directory says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMark {
    pub job_id: String,
    pub instance: String,
    pub key: Digest,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The supervisor's exit code and the node it ran on, when it got to write them.
    pub exit: Option<(i32, String)>,
    /// Slurm's last word on the job (`COMPLETED`, `TIMEOUT`, `CANCELLED`, ...).
    pub state: String,
}

/// Quotes a string for `sh` (single quotes; embedded ones closed and escaped).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `sbatch` time format: minutes, rounded up.
fn slurm_minutes(seconds: u64) -> String {
    seconds.div_ceil(60).max(1).to_string()
}

/// The `sbatch` arguments for an instance (without the script).
pub fn sbatch_args(
    inst: &Instance,
    opts: &SlurmOptions,
    log: &Path,
    workdir: &Path,
    threads: u32,
) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=azimuth:{}", inst.name),
        format!("--output={}", log.display()),
        format!("--chdir={}", workdir.display()),
        format!("--cpus-per-task={}", threads.max(1)),
        "--ntasks=1".to_string(),
        "--export=ALL".to_string(),
    ];
    if inst.resources.memory > 0 {
        a.push(format!(
            "--mem={}M",
            inst.resources.memory.div_ceil(1 << 20).max(1)
        ));
    }
    if inst.resources.gpus > 0 {
        a.push(format!("--gres=gpu:{}", inst.resources.gpus));
    }
    if inst.resources.time > 0 {
        a.push(format!("--time={}", slurm_minutes(inst.resources.time)));
    }
    for (flag, v) in [
        ("partition", &opts.partition),
        ("account", &opts.account),
        ("qos", &opts.qos),
    ] {
        if let Some(v) = v {
            a.push(format!("--{flag}={v}"));
        }
    }
    a.extend(opts.args.iter().cloned());
    a
}

/// Submits the stage whose job file is `job` in `staging`; returns the job id.
#[allow(clippy::too_many_arguments)]
pub fn submit(
    inst: &Instance,
    opts: &SlurmOptions,
    staging: &Path,
    job: &Path,
    log: &Path,
    workdir: &Path,
    threads: u32,
    key: &Digest,
) -> Result<String, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the azimuth executable: {e}"))?;
    let exit = staging.join("exit");
    let script = format!(
        "#!/bin/sh\n# Written by azimuth for stage `{name}`; runs the stage's supervisor, then \
         records its exit code and this node's name.\n{exe} __stage {job}\ncode=$?\n\
         printf '%s %s\\n' \"$code\" \"$(hostname)\" > {tmp} && mv {tmp} {exit}\nexit $code\n",
        name = inst.name.replace('\n', " "),
        exe = sh_quote(&exe.display().to_string()),
        job = sh_quote(&job.display().to_string()),
        tmp = sh_quote(&staging.join("exit.tmp").display().to_string()),
        exit = sh_quote(&exit.display().to_string()),
    );
    let script_path = staging.join("slurm.sh");
    std::fs::write(&script_path, script)
        .map_err(|e| format!("cannot write `{}`: {e}", script_path.display()))?;
    let out = Command::new("sbatch")
        .args(sbatch_args(inst, opts, log, workdir, threads))
        .arg(&script_path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run `sbatch`: {e}; `executor: slurm` needs the Slurm client tools on PATH \
                 (or use `executor: local`)"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "sbatch refused the job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let job_id = text
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
        .ok_or_else(|| format!("sbatch printed `{}`, not a job id", text.trim()))?
        .to_string();
    let mark = JobMark {
        job_id: job_id.clone(),
        instance: inst.name.clone(),
        key: *key,
    };
    crate::fsutil::write_atomic(
        &staging.join("slurm.json"),
        &serde_json::to_vec(&mark).expect("marks serialize"),
    )
    .map_err(|e| format!("cannot record job {job_id}: {e}"))?;
    Ok(job_id)
}

/// The job a kept staging directory holds, if it computes `key`.
pub fn adopt(staging: &Path, key: &Digest) -> Option<JobMark> {
    let mark: JobMark =
        serde_json::from_slice(&std::fs::read(staging.join("slurm.json")).ok()?).ok()?;
    (mark.key == *key).then_some(mark)
}

/// Reads `exit` (`CODE HOST`) if the job got to write it.
fn read_exit(staging: &Path) -> Option<(i32, String)> {
    let text = std::fs::read_to_string(staging.join("exit")).ok()?;
    let mut parts = text.split_whitespace();
    let code = parts.next()?.parse().ok()?;
    Some((code, parts.next().unwrap_or("").to_string()))
}

const TERMINAL: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
];

struct Watch {
    staging: PathBuf,
    tx: mpsc::Sender<Outcome>,
    /// When squeue last listed the job (a job gone from squeue without an `exit` file is given
    /// a grace period: the file may still be on its way through a shared filesystem).
    last_seen: Instant,
    state: String,
    /// When squeue first showed a terminal state.
    terminal_since: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<BTreeMap<String, Watch>>,
    wake: Condvar,
}

/// Watches every Slurm job of one run from one thread (see the module doc).
#[derive(Clone)]
pub struct Poller {
    shared: Arc<Shared>,
}

impl Poller {
    pub fn start() -> Poller {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("azimuth-slurm-poller".into())
            .spawn(move || poll_loop(&s))
            .expect("a thread");
        Poller { shared }
    }

    /// Starts watching job `id` whose staging directory is `staging`.
    pub fn watch(&self, id: &str, staging: &Path) -> mpsc::Receiver<Outcome> {
        let (tx, rx) = mpsc::channel();
        self.shared.jobs.lock().expect("poller lock").insert(
            id.to_string(),
            Watch {
                staging: staging.to_path_buf(),
                tx,
                last_seen: Instant::now(),
                state: "PENDING".into(),
                terminal_since: None,
            },
        );
        self.shared.wake.notify_all();
        rx
    }

    /// Cancels every watched job with one `scancel`; they are then reported as they end.
    pub fn cancel_all(&self) {
        let ids: Vec<String> = self
            .shared
            .jobs
            .lock()
            .expect("poller lock")
            .keys()
            .cloned()
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("scancel")
                .args(&ids)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One `squeue` call: job id → state for the user's jobs the controller still knows.
fn squeue() -> Result<BTreeMap<String, String>, String> {
    let out = Command::new("squeue")
        .args(["--me", "--states=all", "--noheader", "--format=%i %T"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect())
}

fn poll_loop(shared: &Shared) {
    const FAST: Duration = Duration::from_secs(1);
    const SLOW: Duration = Duration::from_secs(30);
    const GRACE: Duration = Duration::from_secs(30);
    let lost_after = Duration::from_secs(
        std::env::var("AZIMUTH_SLURM_LOST_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let mut interval = FAST;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        {
            let jobs = shared.jobs.lock().expect("poller lock");
            let jobs = if jobs.is_empty() {
                shared.wake.wait(jobs).expect("poller lock")
            } else {
                jobs
            };
            let _ = shared.wake.wait_timeout(jobs, interval).expect("poller lock");
        }
        let mut changed = false;
        let mut jobs = shared.jobs.lock().expect("poller lock");
        // Finished jobs announce themselves through their `exit` file: no Slurm call needed.
        let done: Vec<String> = jobs
            .iter()
            .filter(|(_, w)| w.staging.join("exit").is_file())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            let w = jobs.remove(&id).expect("listed");
            let _ = w.tx.send(Outcome {
                exit: read_exit(&w.staging),
                state: "COMPLETED".into(),
            });
            changed = true;
        }
        if jobs.is_empty() {
            interval = FAST;
            continue;
        }
        drop(jobs);
        let listed = squeue();
        let mut jobs = shared.jobs.lock().expect("poller lock");
        match listed {
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                tracing::warn!("squeue failed ({e}); retrying in {interval:?}");
                if since.elapsed() > lost_after {
                    for (id, w) in std::mem::take(&mut *jobs) {
                        let _ = w.tx.send(Outcome {
                            exit: None,
                            state: format!(
                                "LOST: slurmctld did not answer for {} s (last error: {e}); job \
                                 {id} may still run (`squeue -j {id}`), and the next `azimuth \
                                 run` adopts it",
                                since.elapsed().as_secs()
                            ),
                        });
                    }
                }
                interval = (interval * 2).min(Duration::from_secs(60));
                continue;
            }
            Ok(states) => {
                unreachable_since = None;
                let now = Instant::now();
                let mut ended = Vec::new();
                for (id, w) in jobs.iter_mut() {
                    match states.get(id) {
                        Some(s) => {
                            if *s != w.state {
                                changed = true;
                                w.state = s.clone();
                                w.terminal_since = None;
                            }
                            w.last_seen = now;
                            if TERMINAL.contains(&s.as_str()) {
                                // A job that completed has written `exit`; on a shared
                                // filesystem the file may lag behind the state for a while.
                                let since = *w.terminal_since.get_or_insert(now);
                                if s != "COMPLETED" || now.duration_since(since) > GRACE {
                                    ended.push(id.clone());
                                }
                            }
                        }
                        None if now.duration_since(w.last_seen) > GRACE => ended.push(id.clone()),
                        None => {}
                    }
                }
                for id in ended {
                    let w = jobs.remove(&id).expect("listed");
                    let _ = w.tx.send(Outcome {
                        exit: read_exit(&w.staging),
                        state: if states.contains_key(&id) {
                            w.state.clone()
                        } else {
                            "GONE (no longer known to slurmctld)".into()
                        },
                    });
                    changed = true;
                }
            }
        }
        interval = if changed {
            FAST
        } else {
            (interval.mul_f32(1.5)).min(SLOW)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    /// Every declared resource and every `slurm:` option reaches sbatch.
    #[test]
    fn sbatch_gets_the_declared_resources_and_options() {
        let p = crate::spec::from_source(
            Path::new("pipeline.yaml"),
            Path::new("/p"),
            "executor: slurm\nslurm: {partition: gpu, account: lab, qos: high, args: [--exclusive]}\n\
             stages:\n  train:\n    cmd: [t, \"${outputs.o}\"]\n    outputs: {o: o}\n    \
             resources: {cpus: 8, gpus: 2, memory: 3GiB, time: 4h}\n"
                .into(),
            &crate::registry::Registry::default(),
        )
        .unwrap_or_else(|e| panic!("{}", e.render()));
        let a = sbatch_args(
            &p.instances[0],
            &p.slurm,
            Path::new("/s/log"),
            Path::new("/s/work"),
            8,
        );
        for want in [
            "--job-name=azimuth:train",
            "--output=/s/log",
            "--chdir=/s/work",
            "--cpus-per-task=8",
            "--mem=3072M",
            "--gres=gpu:2",
            "--time=240",
            "--partition=gpu",
            "--account=lab",
            "--qos=high",
            "--exclusive",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
    }

    #[test]
    fn time_limits_round_up_to_minutes() {
        assert_eq!(slurm_minutes(1), "1");
        assert_eq!(slurm_minutes(60), "1");
        assert_eq!(slurm_minutes(61), "2");
        assert_eq!(slurm_minutes(7200), "120");
    }
}
