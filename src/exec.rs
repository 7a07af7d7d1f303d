//! Runs a pipeline: restores what is cached, runs what is dirty, in parallel, crash-safely.
//!
//! The main thread owns scheduling and is the only thread that starts processes (so the
//! parent-death signal of every stage is tied to a thread that lives as long as the run). Each
//! stage attempt:
//! 1. becomes ready when all its upstreams have records; its key is computed from the digests
//!    they actually produced (early cutoff: identical bytes → consumer stays fresh);
//! 2. takes the key's lock (single-flight across processes: a second `run` that needs the same
//!    key waits, then finds the record), or waits in line while other stages proceed;
//! 3. runs `azimuth __stage job.json` in a fresh staging directory, as a new process group with
//!    a parent-death signal, stdout+stderr captured to a log file;
//! 4. on success, a reaper thread hashes its outputs and renames them into the store; the main
//!    thread then writes the run record (the commit point), the stage pointer, and links the
//!    outputs into the workspace (never over a copy the user modified).
//!
//! A failing stage stops new scheduling (unless `--keep-going`, which skips only its dependents);
//! running stages finish. On SIGINT/SIGTERM every running process group is killed, staging is
//! removed, and nothing partial ever becomes visible. Previous outputs stay in the store and in
//! the workspace until a successful run replaces them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::fingerprint::{KeyRecord, Reason};
use crate::hash::StatMemo;
use crate::job::{Job, JobBody, JOB_FORMAT};
use crate::lock::{FileLock, Mode};
use crate::output::{Event, Printer};
use crate::plan::{self, PlanError, Settings, State};
use crate::spec::{Body, Executor, InputSource, Pipeline};
use crate::store::{hostname, now_secs, OutputEntry, Pointer, RunRecord, Staging, Stamp, Store};
use crate::workspace::{self, CopyState};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Instances to bring up to date (with their upstreams); empty = all.
    pub targets: Vec<usize>,
    pub forced: Vec<bool>,
    pub jobs: usize,
    pub keep_going: bool,
    pub lock_timeout: Duration,
    pub settings: Settings,
    /// Replay captured logs of fresh stages (`-v`).
    pub replay_logs: bool,
    /// Print each fresh stage too.
    pub verbose: bool,
    /// With a remote: push what is up to date here and missing there after the run.
    pub push: bool,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub ran: usize,
    pub restored: usize,
    /// Up to date, but its outputs stayed in the remote (`run --lazy`).
    pub in_remote: usize,
    pub fresh: usize,
    pub cutoff: usize,
    pub failed: Vec<String>,
    pub skipped: usize,
    pub interrupted: bool,
    /// Final record of every instance known to be up to date.
    pub records: BTreeMap<usize, RunRecord>,
}

#[derive(Debug)]
pub enum ExecError {
    Plan(PlanError),
    Io(String),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Plan(p) => write!(f, "{p}"),
            ExecError::Io(s) => f.write_str(s),
        }
    }
}

impl From<PlanError> for ExecError {
    fn from(p: PlanError) -> Self {
        ExecError::Plan(p)
    }
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ExecError {
    move |e| ExecError::Io(format!("{what}: {e}"))
}

/// Instances needed for `targets` (the targets and everything upstream of them).
pub fn closure(pipeline: &Pipeline, targets: &[usize]) -> Vec<bool> {
    let n = pipeline.instances.len();
    if targets.is_empty() {
        return vec![true; n];
    }
    let mut sel = vec![false; n];
    let mut stack: Vec<usize> = targets.to_vec();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut sel[i], true) {
            continue;
        }
        for inp in &pipeline.instances[i].inputs {
            for s in &inp.sources {
                if let InputSource::Upstream { instance, .. } = s {
                    stack.push(*instance);
                }
            }
        }
    }
    sel
}

fn upstreams(pipeline: &Pipeline, i: usize) -> impl Iterator<Item = usize> + '_ {
    pipeline.instances[i].inputs.iter().flat_map(|inp| {
        inp.sources.iter().filter_map(|s| match s {
            InputSource::Upstream { instance, .. } => Some(*instance),
            InputSource::External { .. } => None,
        })
    })
}

struct Running {
    idx: usize,
    spinner: Option<indicatif::ProgressBar>,
    /// `$AZIMUTH_PROGRESS` of the stage: its latest status line, shown beside the spinner.
    progress: PathBuf,
    /// The process group of a local stage (0 for a Slurm job).
    pgid: i32,
    /// The Slurm job computing it, for `executor: slurm`.
    slurm_job: Option<String>,
    started: Instant,
    ingredients: KeyRecord,
    _key_lock: FileLock,
    cpus: u32,
    gpus: u32,
    memory: u64,
}

/// What a reaper thread reports about a finished attempt.
struct Finished {
    idx: usize,
    result: Result<BTreeMap<String, OutputEntry>, String>,
    log: Vec<u8>,
    staging: Staging,
    /// Where it ran, when not here (a Slurm node).
    host: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Unselected,
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

struct Budget {
    cpus: u32,
    gpus: u32,
    memory: u64,
}

fn total_gpus() -> u32 {
    if let Some(n) = std::env::var("AZIMUTH_GPUS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix("nvidia")
                        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                })
                .count() as u32
        })
        .unwrap_or(0)
}

fn total_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

/// Runs the pipeline (or the closure of `opts.targets`).
pub fn run(
    pipeline: &Pipeline,
    store: &Store,
    memo: &mut StatMemo,
    opts: &RunOptions,
    printer: &Printer,
) -> Result<Summary, ExecError> {
    store.init().map_err(io_err(format!(
        "cannot create the cache at `{}`",
        store.dir.display()
    )))?;
    let _store_lock = FileLock::acquire(
        &store.store_lock_path(),
        Mode::Shared,
        opts.lock_timeout,
        |h| {
            printer.status(&format!("waiting for the cache: {h} (garbage collection)"));
        },
    )
    .map_err(io_err("cannot lock the cache"))?;
    let cleaned = store.clean_stale_staging();
    if cleaned > 0 {
        tracing::debug!(cleaned, "removed staging directories of dead runs");
    }

    // Declared after the store lock, so it finishes its removals before that lock is released.
    let disposer = Disposer::start();

    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&interrupted));
    }

    let n = pipeline.instances.len();
    let selected = closure(pipeline, &opts.targets);
    let initial = plan::plan_all(pipeline, store, memo, &opts.settings, &opts.forced)?;
    let mut phase: Vec<Phase> = selected
        .iter()
        .map(|&s| if s { Phase::Pending } else { Phase::Unselected })
        .collect();
    let mut summary = Summary::default();
    let mut first_reasons: Vec<Option<Vec<Reason>>> = vec![None; n];
    for (i, state) in initial.into_iter().enumerate() {
        if let State::Fresh { record, .. } | State::Restorable { record, .. } = &state {
            // Unselected instances that are up to date still go into pipeline.lock.
            summary.records.insert(i, record.clone());
        }
        if !selected[i] {
            continue;
        }
        match state {
            State::Fresh { record, .. } => {
                let modified = link_outputs(pipeline, i, &record, store, memo)?;
                warn_modified(pipeline, i, &modified, printer);
                if opts.verbose {
                    printer.stage_line("fresh", &pipeline.instances[i].name, "");
                }
                if opts.replay_logs {
                    replay(store, &record, printer);
                }
                printer.event(&Event::finished(
                    &pipeline.instances[i].name,
                    "fresh",
                    record.duration_ms,
                    None,
                ));
                summary.fresh += 1;
                phase[i] = Phase::Done;
            }
            State::Restorable {
                record, missing, ..
            } => {
                let (modified, left) = link_outputs_lazily(pipeline, i, &record, store, memo)?;
                warn_modified(pipeline, i, &modified, printer);
                let restored: Vec<&String> = missing.iter().filter(|m| !left.contains(m)).collect();
                let detail = match (restored.is_empty(), left.is_empty()) {
                    (_, true) => format!("({} from the cache)", missing.join(", ")),
                    (true, false) => format!("({} left in the remote: --lazy)", left.join(", ")),
                    (false, false) => format!(
                        "({} from the cache; {} left in the remote: --lazy)",
                        restored.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                        left.join(", ")
                    ),
                };
                printer.stage_line(
                    if restored.is_empty() { "remote" } else { "restored" },
                    &pipeline.instances[i].name,
                    &detail,
                );
                printer.event(&Event::finished(
                    &pipeline.instances[i].name,
                    if restored.is_empty() {
                        "in-remote"
                    } else {
                        "restored"
                    },
                    record.duration_ms,
                    None,
                ));
                if restored.is_empty() {
                    summary.in_remote += 1;
                } else {
                    summary.restored += 1;
                }
                phase[i] = Phase::Done;
            }
            State::Dirty { reasons, .. } => {
                for r in &reasons {
                    if let Reason::OutputModifiedInPlace { output, object } = r {
                        // The object no longer holds what the stage wrote: drop it (the user's
                        // edited file keeps its data under the workspace name) and re-run.
                        printer.warn(&format!("the cached copy of `{}.{output}` was edited in place; discarding it and re-running the stage", pipeline.instances[i].name));
                        let _ = fs::remove_file(store.object_path(object));
                    }
                }
                first_reasons[i] = Some(reasons)
            }
        }
    }

    let budget_total = Budget {
        cpus: opts.jobs.max(1) as u32,
        gpus: total_gpus(),
        memory: total_memory(),
    };
    let mut budget = Budget { ..budget_total };
    let mut running: BTreeMap<usize, Running> = BTreeMap::new();
    let mut waiting_lock: BTreeMap<usize, Instant> = BTreeMap::new();
    let (tx, rx) = mpsc::channel::<Finished>();
    let mut stop_scheduling = false;
    let started_run = Instant::now();

    let mut interrupt_sent: Option<Instant> = None;
    let poller = (0..n)
        .any(|i| selected[i] && pipeline.instances[i].executor == Executor::Slurm)
        .then(crate::slurm::Poller::start);
    let slurm_max_jobs: usize = std::env::var("AZIMUTH_SLURM_MAX_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    loop {
        if interrupted.load(Ordering::SeqCst) {
            summary.interrupted = true;
            stop_scheduling = true;
            // SIGTERM first: a command stage's supervisor then kills the command's own process
            // group; whatever is still there after a grace period gets SIGKILL.
            let signal = match interrupt_sent {
                None => {
                    interrupt_sent = Some(Instant::now());
                    Some(libc::SIGTERM)
                }
                Some(t) if t.elapsed() > Duration::from_secs(3) => Some(libc::SIGKILL),
                Some(_) => None,
            };
            if let Some(sig) = signal {
                for r in running.values().filter(|r| r.pgid > 0) {
                    // SAFETY: signalling a process group we created.
                    unsafe { libc::killpg(r.pgid, sig) };
                }
                if sig == libc::SIGTERM {
                    if let Some(p) = &poller {
                        // One scancel for all; each job is then reported as it ends.
                        p.cancel_all();
                    }
                }
            }
        }
        // Schedule ready instances, in topological order.
        if !stop_scheduling {
            for i in 0..n {
                if phase[i] != Phase::Pending {
                    continue;
                }
                let ups: Vec<usize> = upstreams(pipeline, i).collect();
                if ups
                    .iter()
                    .any(|&u| matches!(phase[u], Phase::Failed | Phase::Skipped))
                {
                    phase[i] = Phase::Skipped;
                    summary.skipped += 1;
                    printer.stage_line(
                        "skipped",
                        &pipeline.instances[i].name,
                        "(an upstream stage failed)",
                    );
                    continue;
                }
                if !ups.iter().all(|&u| phase[u] == Phase::Done) {
                    continue;
                }
                let inst = &pipeline.instances[i];
                // A Slurm job uses the cluster's resources, not this machine's.
                let on_slurm = inst.executor == Executor::Slurm;
                let (cpus, gpus, memory) = if on_slurm {
                    (0, 0, 0)
                } else {
                    (
                        inst.resources.cpus.min(budget_total.cpus),
                        inst.resources.gpus.min(budget_total.gpus),
                        inst.resources.memory.min(budget_total.memory),
                    )
                };
                if cpus > budget.cpus || gpus > budget.gpus || memory > budget.memory {
                    continue;
                }
                if on_slurm
                    && running.values().filter(|r| r.slurm_job.is_some()).count() >= slurm_max_jobs
                {
                    continue;
                }
                // Re-plan with the digests the upstreams actually produced.
                let lookup = |u: usize| summary.records.get(&u).cloned();
                let inputs = match plan::input_digests(pipeline, i, memo, &lookup)? {
                    Ok(d) => d,
                    Err(up) => {
                        return Err(ExecError::Io(format!(
                            "internal: upstream `{up}` of `{}` finished without a record",
                            inst.name
                        )))
                    }
                };
                let ing = plan::ingredients(pipeline, i, inputs, &opts.settings)?;
                let key = ing.key();
                let state = plan::classify(pipeline, i, ing.clone(), store, memo, opts.forced[i]);
                if let Some(done) = settle_if_cached(
                    pipeline,
                    i,
                    &state,
                    store,
                    memo,
                    printer,
                    &mut summary,
                    first_reasons[i].is_some(),
                )? {
                    phase[i] = done;
                    waiting_lock.remove(&i);
                    continue;
                }
                // Single-flight: one process computes a key at a time.
                let Some(mut key_lock) =
                    FileLock::try_acquire(&store.key_lock_path(&key), Mode::Exclusive)
                        .map_err(io_err("cannot lock a stage key"))?
                else {
                    let since = *waiting_lock.entry(i).or_insert_with(|| {
                        printer.stage_line(
                            "waiting",
                            &inst.name,
                            &format!("({})", crate::lock::holder(&store.key_lock_path(&key))),
                        );
                        Instant::now()
                    });
                    if since.elapsed() > opts.lock_timeout {
                        return Err(ExecError::Io(format!(
                            "gave up waiting for stage `{}`: {}",
                            inst.name,
                            crate::lock::holder(&store.key_lock_path(&key))
                        )));
                    }
                    continue;
                };
                key_lock.describe(&format!("computing `{}`", inst.name));
                // Another process may have finished it while we waited.
                let state = plan::classify(pipeline, i, ing.clone(), store, memo, opts.forced[i]);
                if let Some(done) = settle_if_cached(
                    pipeline,
                    i,
                    &state,
                    store,
                    memo,
                    printer,
                    &mut summary,
                    first_reasons[i].is_some(),
                )? {
                    phase[i] = done;
                    waiting_lock.remove(&i);
                    continue;
                }
                waiting_lock.remove(&i);
                let reasons = match &state {
                    State::Dirty { reasons, .. } => reasons.clone(),
                    _ => Vec::new(),
                };
                let reason_text = reasons
                    .iter()
                    .map(|r| r.sentence())
                    .collect::<Vec<_>>()
                    .join("; ");
                printer.stage_line("run", &inst.name, &format!("({reason_text})"));
                printer.event(&Event::started(&inst.name, &reasons));
                let device = ing.toolchain.get("device").cloned();
                let threads = if on_slurm { inst.resources.cpus } else { cpus };
                let launch = Launch {
                    threads,
                    device,
                    key,
                    poller: poller.as_ref(),
                };
                match start(pipeline, i, store, &summary, launch, &tx, printer) {
                    Ok((pgid, progress, slurm_job)) => {
                        budget.cpus -= cpus;
                        budget.gpus -= gpus;
                        budget.memory -= memory;
                        phase[i] = Phase::Running;
                        running.insert(
                            i,
                            Running {
                                idx: i,
                                spinner: printer.stage_spinner(&inst.name),
                                progress,
                                pgid,
                                slurm_job,
                                started: Instant::now(),
                                ingredients: ing,
                                _key_lock: key_lock,
                                cpus,
                                gpus,
                                memory,
                            },
                        );
                    }
                    Err(e) => {
                        printer.stage_line(
                            "failed",
                            &inst.name,
                            &format!("(could not start: {e})"),
                        );
                        phase[i] = Phase::Failed;
                        summary.failed.push(inst.name.clone());
                        stop_scheduling = !opts.keep_going;
                    }
                }
            }
        }
        if running.is_empty() {
            let pending = phase.contains(&Phase::Pending);
            if !pending || stop_scheduling {
                break;
            }
            if waiting_lock.is_empty() {
                // Nothing runs, nothing waits, yet something is pending: resources never fit.
                return Err(ExecError::Io("internal: no stage can be scheduled".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let finished = match rx.recv_timeout(Duration::from_millis(if waiting_lock.is_empty() {
            200
        } else {
            50
        })) {
            Ok(f) => f,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                show_progress(pipeline, &running);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let r = running
            .remove(&finished.idx)
            .expect("finished stages were running");
        if let Some(bar) = &r.spinner {
            bar.finish_and_clear();
        }
        budget.cpus += r.cpus;
        budget.gpus += r.gpus;
        budget.memory += r.memory;
        let inst = &pipeline.instances[r.idx];
        let elapsed = r.started.elapsed();
        if summary.interrupted {
            phase[r.idx] = Phase::Failed;
            disposer.dispose(finished.staging);
            continue;
        }
        match finished.result {
            Ok(outputs) => {
                let log = store
                    .put_bytes(&finished.log)
                    .map_err(io_err("cannot store a stage log"))?;
                let record = RunRecord {
                    format: crate::fingerprint::CACHE_FORMAT,
                    key: r.ingredients.key(),
                    instance: inst.name.clone(),
                    ingredients: r.ingredients.clone(),
                    outputs,
                    log: Some(log),
                    duration_ms: elapsed.as_millis() as u64,
                    finished_at: now_secs(),
                    host: finished.host.clone().unwrap_or_else(hostname),
                    azimuth_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                store.write_record(&record).map_err(io_err(format!(
                    "cannot write the run record of `{}`",
                    inst.name
                )))?;
                disposer.dispose(finished.staging);
                let modified = link_outputs(pipeline, r.idx, &record, store, memo)?;
                warn_modified(pipeline, r.idx, &modified, printer);
                printer.stage_line(
                    "done",
                    &inst.name,
                    &format!("({})", crate::output::human_duration(elapsed)),
                );
                printer.event(&Event::finished(
                    &inst.name,
                    "ran",
                    record.duration_ms,
                    None,
                ));
                summary.records.insert(r.idx, record);
                summary.ran += 1;
                phase[r.idx] = Phase::Done;
            }
            Err(why) => {
                let failed_log = store.failed_log_path(&inst.name);
                let _ = crate::fsutil::write_atomic(&failed_log, &finished.log);
                disposer.dispose(finished.staging);
                printer.stage_failure(&inst.name, &why, &finished.log, &failed_log);
                printer.event(&Event::finished(
                    &inst.name,
                    "failed",
                    elapsed.as_millis() as u64,
                    Some(&why),
                ));
                summary.failed.push(inst.name.clone());
                phase[r.idx] = Phase::Failed;
                if !opts.keep_going {
                    stop_scheduling = true;
                }
            }
        }
    }
    if !summary.interrupted && interrupted.load(Ordering::SeqCst) {
        summary.interrupted = true;
    }
    // What never started because the run stopped early.
    for i in 0..n {
        if phase[i] == Phase::Pending {
            let after_failure =
                upstreams(pipeline, i).any(|u| matches!(phase[u], Phase::Failed | Phase::Skipped));
            phase[i] = Phase::Skipped;
            summary.skipped += 1;
            let why = if after_failure {
                "(an upstream stage failed)"
            } else {
                "(not started: the run stopped after a failure)"
            };
            if !summary.interrupted {
                printer.stage_line("skipped", &pipeline.instances[i].name, why);
            }
        }
    }
    tracing::debug!(elapsed = ?started_run.elapsed(), "run finished");
    Ok(summary)
}

/// If the state says the key is already computed, restore/link and report; `Some(Done)` then.
#[allow(clippy::too_many_arguments)]
fn settle_if_cached(
    pipeline: &Pipeline,
    i: usize,
    state: &State,
    store: &Store,
    memo: &mut StatMemo,
    printer: &Printer,
    summary: &mut Summary,
    was_dirty_at_start: bool,
) -> Result<Option<Phase>, ExecError> {
    let record = match state {
        State::Fresh { record, .. } | State::Restorable { record, .. } => record,
        State::Dirty { .. } => return Ok(None),
    };
    let modified = link_outputs(pipeline, i, record, store, memo)?;
    warn_modified(pipeline, i, &modified, printer);
    let name = &pipeline.instances[i].name;
    if was_dirty_at_start {
        printer.stage_line("fresh", name, "(its inputs came out unchanged)");
        summary.cutoff += 1;
    } else {
        summary.fresh += 1;
    }
    printer.event(&Event::finished(name, "fresh", record.duration_ms, None));
    summary.records.insert(i, record.clone());
    Ok(Some(Phase::Done))
}

/// Links every output into the workspace unless the user modified the copy there.
/// Links every output of `record` into the workspace, unless the copy there is the user's (neither
/// current for this record nor the file azimuth itself put there last), then points the instance
/// at the record. Returns the outputs left alone.
fn link_outputs(
    pipeline: &Pipeline,
    i: usize,
    record: &RunRecord,
    store: &Store,
    memo: &mut StatMemo,
) -> Result<Vec<String>, ExecError> {
    link_outputs_lazily(pipeline, i, record, store, memo).map(|(modified, _)| modified)
}

/// [`link_outputs`], also returning the outputs `run --lazy` left in the remote.
fn link_outputs_lazily(
    pipeline: &Pipeline,
    i: usize,
    record: &RunRecord,
    store: &Store,
    memo: &mut StatMemo,
) -> Result<(Vec<String>, Vec<String>), ExecError> {
    let name_of = &pipeline.instances[i].name;
    let previous = store.read_pointer(name_of).unwrap_or_default();
    let mut pointer = Pointer {
        key: record.key,
        materialized: Default::default(),
    };
    let mut modified = Vec::new();
    let mut left = Vec::new();
    for (name, entry) in &record.outputs {
        let Some(path) = plan::workspace_output(pipeline, i, name) else {
            continue;
        };
        let stamp = previous
            .materialized
            .get(name)
            .copied()
            .filter(|_| previous.key == record.key);
        let state =
            workspace::state(&path, entry, store, memo, stamp).unwrap_or(CopyState::Modified);
        let ours = !matches!(state, CopyState::Modified | CopyState::ModifiedInPlace)
            || (previous.materialized.contains_key(name)
                && previous.materialized.get(name).copied() == Stamp::of(&path));
        if !ours {
            modified.push(name.clone());
            continue;
        }
        if state != CopyState::Current && store.lazy() && !store.output_local(entry) {
            // `run --lazy`: only the remote has it and nothing here reads it; leave it there.
            left.push(name.clone());
            continue;
        }
        if state != CopyState::Current {
            workspace::materialize(&path, entry, store)
                .map_err(io_err(format!("cannot write `{}`", path.display())))?;
        }
        if let Some(st) = Stamp::of(&path) {
            pointer.materialized.insert(name.clone(), st);
        }
    }
    if previous.key != pointer.key || previous.materialized != pointer.materialized {
        store
            .write_pointer(name_of, &pointer)
            .map_err(io_err("cannot write a stage pointer"))?;
    }
    Ok((modified, left))
}

fn warn_modified(pipeline: &Pipeline, i: usize, modified: &[String], printer: &Printer) {
    for name in modified {
        if let Some(path) = plan::workspace_output(pipeline, i, name) {
            let shown = path
                .strip_prefix(&pipeline.root)
                .unwrap_or(&path)
                .display()
                .to_string();
            printer.warn(&format!(
                "`{shown}` (output `{name}` of `{}`) was modified in the workspace; left as is\n  = help: the stage's own output is at `azimuth cache path {}.{name}`; delete your copy to get it back",
                pipeline.instances[i].name, pipeline.instances[i].name
            ));
        }
    }
}

fn replay(store: &Store, record: &RunRecord, printer: &Printer) {
    if let Some(l) = record.log {
        if let Ok(bytes) = fs::read(store.object_path(&l)) {
            printer.replay(&record.instance, &bytes);
        }
    }
}

/// Prepares the staging directory and job file, and starts the supervisor process.
/// How to start one attempt.
struct Launch<'a> {
    threads: u32,
    device: Option<String>,
    key: crate::hash::Digest,
    poller: Option<&'a crate::slurm::Poller>,
}

/// Starts an attempt: a local supervisor process, or a Slurm job (adopting the job a dead run
/// left for the same key, if any). Returns the local process group (0 for Slurm), the progress
/// file and the Slurm job id.
fn start(
    pipeline: &Pipeline,
    i: usize,
    store: &Store,
    summary: &Summary,
    launch: Launch,
    tx: &mpsc::Sender<Finished>,
    printer: &Printer,
) -> Result<(i32, PathBuf, Option<String>), String> {
    let inst = &pipeline.instances[i];
    let Launch {
        threads,
        device,
        key,
        poller,
    } = launch;
    let slurm = match (inst.executor, poller) {
        (Executor::Slurm, Some(p)) => Some(p),
        _ => None,
    };
    if let Some(poller) = slurm {
        let adopted = store.adopt_staging(&inst.name, |dir| {
            crate::slurm::adopt(dir, &key).is_some()
        });
        if let Some(staging) = adopted {
            let mark = crate::slurm::adopt(&staging.dir, &key).expect("checked by adopt_staging");
            printer.stage_line(
                "adopted",
                &inst.name,
                &format!("(Slurm job {} of an earlier run)", mark.job_id),
            );
            let work = staging.work();
            let outputs: Vec<(String, PathBuf)> = inst
                .outputs
                .iter()
                .map(|o| (o.name.clone(), work.join(&o.path)))
                .collect();
            let progress = staging.dir.join("progress");
            let log_path = staging.dir.join("log");
            let rx = poller.watch(&mark.job_id, &staging.dir);
            let (tx, store, id) = (tx.clone(), store.clone(), mark.job_id.clone());
            std::thread::spawn(move || {
                reap_slurm(i, &id, rx, staging, outputs, log_path, store, tx)
            });
            return Ok((0, progress, Some(mark.job_id)));
        }
    }
    let staging = store
        .staging(&inst.name)
        .map_err(|e| format!("cannot create a staging directory: {e}"))?;
    let work = staging.work();
    let mut inputs = BTreeMap::new();
    for input in &inst.inputs {
        let mut paths = Vec::new();
        for s in &input.sources {
            paths.push(match s {
                InputSource::External { path } => pipeline.root.join(path),
                InputSource::Upstream { instance, output } => {
                    let rec = summary
                        .records
                        .get(instance)
                        .ok_or("internal: upstream record missing")?;
                    let entry = rec
                        .outputs
                        .get(output)
                        .ok_or("internal: upstream output missing")?;
                    store
                        .artifact_path(entry)
                        .map_err(|e| format!("cannot check out `{}.{output}`: {e}", rec.instance))?
                }
            });
        }
        inputs.insert(input.port.clone(), paths);
    }
    let outputs: BTreeMap<String, PathBuf> = inst
        .outputs
        .iter()
        .map(|o| (o.name.clone(), work.join(&o.path)))
        .collect();
    for p in outputs.values() {
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot prepare `{}`: {e}", parent.display()))?;
        }
    }
    let body = match &inst.body {
        Body::Builtin { name, .. } => JobBody::Builtin { name: name.clone() },
        Body::Cmd { argv } => JobBody::Cmd { argv: argv.clone() },
    };
    let progress = staging.dir.join("progress");
    let env = BTreeMap::from([
        ("AZIMUTH_STAGE".to_string(), inst.name.clone()),
        ("AZIMUTH_THREADS".to_string(), threads.to_string()),
        (
            "AZIMUTH_PROGRESS".to_string(),
            progress.to_string_lossy().into_owned(),
        ),
    ]);
    // The provenance the stage reads, completed with the digests of the artifacts it receives.
    let provenance = inst.provenance.clone().map(|mut prov| {
        for input in &inst.inputs {
            let Some(sources) = prov.inputs.get_mut(&input.port) else {
                continue;
            };
            for (src, s) in input.sources.iter().zip(sources.iter_mut()) {
                if let InputSource::Upstream { instance, output } = src {
                    if let Some(entry) = summary
                        .records
                        .get(instance)
                        .and_then(|r| r.outputs.get(output))
                    {
                        s.digest = Some(entry.digest.to_string());
                        s.size = Some(entry.size);
                    }
                }
            }
        }
        prov
    });
    let job = Job {
        format: JOB_FORMAT,
        instance: inst.name.clone(),
        workdir: work.clone(),
        body,
        inputs,
        outputs: outputs.clone(),
        params: inst.params.clone().into_iter().collect(),
        device,
        threads: threads as usize,
        env,
        provenance,
    };
    let job_path = staging.dir.join("job.json");
    fs::write(
        &job_path,
        serde_json::to_vec_pretty(&job).expect("jobs serialize"),
    )
    .map_err(|e| format!("cannot write the job file: {e}"))?;
    let log_path = staging.dir.join("log");
    if let Some(poller) = slurm {
        let id = crate::slurm::submit(
            inst,
            &pipeline.slurm,
            &staging.dir,
            &job_path,
            &log_path,
            &work,
            threads,
            &key,
        )?;
        let rx = poller.watch(&id, &staging.dir);
        let outputs_decl: Vec<(String, PathBuf)> = outputs.into_iter().collect();
        let (tx, store, job) = (tx.clone(), store.clone(), id.clone());
        std::thread::spawn(move || {
            reap_slurm(i, &job, rx, staging, outputs_decl, log_path, store, tx)
        });
        return Ok((0, progress, Some(id)));
    }
    let log =
        fs::File::create(&log_path).map_err(|e| format!("cannot create the log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the azimuth executable: {e}"))?;
    let parent_pid = std::process::id() as i32;
    let mut cmd = Command::new(exe);
    cmd.arg("__stage")
        .arg(&job_path)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            if libc::getppid() != parent_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the stage process: {e}"))?;
    let pgid = child.id() as i32;
    let tx = tx.clone();
    let store = store.clone();
    let outputs_decl: Vec<(String, PathBuf)> = outputs.into_iter().collect();
    std::thread::spawn(move || reap(i, child, staging, outputs_decl, log_path, store, tx));
    Ok((pgid, progress, None))
}

/// Puts each running stage's latest progress line (see `azimuth_stage_api::report_progress`)
/// beside its spinner. Terminal only; a missing or unreadable file just leaves the spinner.
fn show_progress(pipeline: &Pipeline, running: &BTreeMap<usize, Running>) {
    for r in running.values() {
        let Some(bar) = &r.spinner else { continue };
        let Ok(text) = fs::read_to_string(&r.progress) else {
            continue;
        };
        let line: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        if !line.is_empty() {
            bar.set_message(format!("{} {line}", pipeline.instances[r.idx].name));
        }
    }
}

/// Removes finished stages' staging directories on a background thread, so that deleting a
/// large duplicate output (a file the store already had: a forced re-run that reproduces its
/// bytes) does not hold up the scheduler; unlinking a 778 MB W took 0.37 s here. Each directory
/// keeps its lock until it is gone, so a concurrent run never mistakes it for a dead run's, and
/// one left behind by a crash is removed by the next run. Dropping the disposer waits for it.
struct Disposer {
    tx: Option<mpsc::Sender<Staging>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Disposer {
    fn start() -> Self {
        let (tx, rx) = mpsc::channel::<Staging>();
        let thread = std::thread::spawn(move || rx.into_iter().for_each(drop));
        Disposer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn dispose(&self, staging: Staging) {
        if let Some(tx) = &self.tx {
            // If the thread is gone, the error hands the directory back and drops it here.
            let _ = tx.send(staging);
        }
    }
}

impl Drop for Disposer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reap(
    i: usize,
    mut child: Child,
    staging: Staging,
    outputs: Vec<(String, PathBuf)>,
    log_path: PathBuf,
    store: Store,
    tx: mpsc::Sender<Finished>,
) {
    let status = child.wait();
    let result = match status {
        Err(e) => Err(format!("lost the stage process: {e}")),
        Ok(s) if !s.success() => {
            use std::os::unix::process::ExitStatusExt;
            Err(match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "failed".into(),
            })
        }
        Ok(_) => commit(&outputs, &store),
    };
    report_finished(i, result, None, &log_path, staging, &tx);
}

/// Sends a finished attempt (with its log) to the scheduler.
fn report_finished(
    idx: usize,
    result: Result<BTreeMap<String, OutputEntry>, String>,
    host: Option<String>,
    log_path: &std::path::Path,
    staging: Staging,
    tx: &mpsc::Sender<Finished>,
) {
    let _ = tx.send(Finished {
        idx,
        result,
        log: read_log(log_path),
        staging,
        host,
    });
}

/// Waits for a Slurm job's outcome, commits its outputs if it succeeded, and reports.
#[allow(clippy::too_many_arguments)]
fn reap_slurm(
    i: usize,
    job: &str,
    rx: mpsc::Receiver<crate::slurm::Outcome>,
    staging: Staging,
    outputs: Vec<(String, PathBuf)>,
    log_path: PathBuf,
    store: Store,
    tx: mpsc::Sender<Finished>,
) {
    let (result, host) = match rx.recv() {
        Err(_) => (Err(format!("lost track of Slurm job {job}")), None),
        Ok(o) => match o.exit {
            Some((0, host)) => (commit(&outputs, &store), Some(host)),
            Some((code, host)) => (
                Err(format!("exit code {code} (Slurm job {job} on {host})")),
                Some(host),
            ),
            None => (
                Err(format!(
                    "Slurm job {job} ended as {} before the stage finished",
                    o.state
                )),
                None,
            ),
        },
    };
    let host = host.filter(|h| !h.is_empty());
    report_finished(i, result, host, &log_path, staging, &tx);
}

fn commit(
    outputs: &[(String, PathBuf)],
    store: &Store,
) -> Result<BTreeMap<String, OutputEntry>, String> {
    let mut memo = StatMemo::default();
    let mut done = BTreeMap::new();
    for (name, path) in outputs {
        if fs::symlink_metadata(path).is_err() {
            let rel = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(format!("succeeded but did not write output `{name}` (expected `{rel}` in its working directory)"));
        }
        let entry = store
            .commit_output(path, &mut memo)
            .map_err(|e| format!("cannot store output `{name}`: {e}"))?;
        done.insert(name.clone(), entry);
    }
    Ok(done)
}

fn read_log(path: &std::path::Path) -> Vec<u8> {
    const MAX: u64 = 64 << 20;
    let Ok(mut f) = fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if len > MAX {
        let _ = f.seek(SeekFrom::Start(len - MAX));
        buf.extend_from_slice(b"[... log truncated to its last 64 MiB ...]\n");
    }
    let _ = f.read_to_end(&mut buf);
    buf
}
