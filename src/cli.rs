//! Command-line interface: clap definitions and one small function per command.
//!
//! Each function loads what it needs (pipeline, store), calls the library, and hands results to
//! [`Printer`]. No domain logic lives here, and nothing here knows the `cache/` layout.
//! Exit codes: 0 success; 1 a stage failed, `cache verify` found problems, or `status --check`
//! found dirty stages; 2 invalid pipeline or usage; 130 interrupted; 101 internal bug (panic).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use crate::diag::did_you_mean;
use crate::exec::{self, RunOptions};
use crate::fingerprint::Reason;
use crate::hash::{Digest, StatMemo};
use crate::lock::{FileLock, Mode};
use crate::lockfile;
use crate::output::{
    human_bytes, human_duration, Event, Printer, WireGc, WireOutput, WireReason, WireRecord,
    WireRecordRow, WireRecords, WireStage, WireStatus, WireVerify, WireWhy, JSON_VERSION,
};
use crate::plan::{self, Settings, State};
use crate::registry::Registry;
use crate::show;
use crate::spec::{self, parse_selector, Pipeline};
use crate::store::{format_time, ArtifactKind, OutputEntry, RunRecord, Store};

#[derive(Parser, Debug)]
#[command(
    name = "azimuth",
    version,
    about = "A pipeline orchestrator with a content-addressed cache, for embedding-matrix research"
)]
pub struct Cli {
    /// The pipeline file.
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "AZIMUTH_PIPELINE",
        default_value = "pipeline.yaml"
    )]
    pub pipeline: PathBuf,
    /// The cache directory (default: `cache/` next to the pipeline file).
    #[arg(long, global = true, env = "AZIMUTH_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A remote cache shared with other machines (a directory on a shared filesystem): keys
    /// missing here are looked up there, their outputs fetched when read, and `run` pushes what
    /// it computed.
    #[arg(long, global = true, env = "AZIMUTH_REMOTE", value_name = "DIR")]
    pub remote: Option<String>,
    /// Machine-readable output (JSON; JSON Lines events for `run`).
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail: -v logs debug events (and replays logs of cached stages), -vv traces.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors and data.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour in terminal output.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// Device for built-in stages that run on one (overrides `device:` in the pipeline).
    #[arg(long, global = true, env = "AZIMUTH_DEVICE", value_parser = ["auto", "cpu", "cuda", "mps"])]
    pub device: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bring stages up to date: restore what is cached, run what is dirty.
    Run {
        /// Stages or instances to bring up to date (with their upstreams); default: all.
        stages: Vec<String>,
        /// Show what would run and why, without running anything.
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Run these stages even if fresh (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Stages to run at once (CPU slots; default: the number of cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// After a failure, keep running stages that do not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// How long to wait for a lock held by another azimuth process, in seconds.
        #[arg(long, default_value_t = 3600)]
        lock_timeout: u64,
        /// With a remote: leave outputs only the remote has out of `out/` (fetched only when a
        /// stage that runs reads them, or by `cache pull`).
        #[arg(long)]
        lazy: bool,
        /// With a remote: do not push what this run computed.
        #[arg(long)]
        no_push: bool,
    },
    /// Show each stage as fresh, restorable or dirty, with the reason.
    Status {
        /// Exit with 1 if any stage is not fresh.
        #[arg(long)]
        check: bool,
    },
    /// Explain a stage's state: its key ingredients against its last run.
    Why { stage: String },
    /// Print the stage graph.
    Dag {
        #[arg(long, value_enum, default_value = "text")]
        format: DagFormat,
    },
    /// Bring the pipeline's `report.html` stage up to date (one gathering every output is added
    /// if none is declared) and write its self-contained HTML page with this run's states,
    /// timings and cache hits added: the graph, key numbers, every figure and table, decoded dead
    /// tokens (no network needed).
    Report {
        /// Where to write the page (default: out/report.html next to the pipeline file).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Stages to run at once while bringing the report up to date (default: the number of
        /// cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
    },
    /// Inspect an artifact by digest prefix or `stage.output`, without reading its data.
    Show { artifact: String },
    /// List the built-in stages, or describe one.
    Stages { name: Option<String> },
    /// Print the BLAKE3 digest of files or directories, as the store computes them.
    Hash {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Inspect and maintain the cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Internal: run one stage attempt from its job file (used by the executor).
    #[command(name = "__stage", hide = true)]
    Stage { job: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List run records.
    Ls,
    /// Print the run record that produced an artifact (digest prefix, key prefix or `stage.output`).
    Show { artifact: String },
    /// Print the path of an artifact in the store.
    Path { artifact: String },
    /// Re-hash every object and check every record (exit 1 on any problem).
    Verify,
    /// Send the records and objects of the pipeline's up-to-date instances (default: all; or
    /// the named stages) to the remote; resumes an interrupted push.
    Push { stages: Vec<String> },
    /// Fetch the records and objects of the pipeline's instances (default: all; or the named
    /// stages) from the remote into this cache; `run` then links them into `out/`.
    Pull { stages: Vec<String> },
    /// Delete what neither pipeline.lock nor the stage pointers reference.
    Gc {
        #[arg(long, short = 'n')]
        dry_run: bool,
        /// Also keep records younger than this many days.
        #[arg(long)]
        keep_days: Option<u64>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
    /// A drawn, self-contained SVG of the stage graph (sweep instances folded into their stage).
    Svg,
}

/// An error that ends the command with a message and an exit code.
pub struct Fail {
    pub code: u8,
    pub message: String,
}

fn usage(message: impl Into<String>) -> Fail {
    Fail {
        code: 2,
        message: message.into(),
    }
}

fn failure(message: impl Into<String>) -> Fail {
    Fail {
        code: 1,
        message: message.into(),
    }
}

type CmdResult = Result<ExitCode, Fail>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Stage { job } = &cli.command {
        return ExitCode::from(crate::job::supervise(job).clamp(0, 255) as u8);
    }
    init_tracing(cli.verbose);
    let color = match cli.color {
        ColorChoice::Auto => None,
        ColorChoice::Always => Some(true),
        ColorChoice::Never => Some(false),
    };
    let printer = Printer::new(cli.json, cli.quiet, cli.verbose, color);
    match dispatch(&cli, &printer) {
        Ok(code) => code,
        Err(f) => {
            if !f.message.is_empty() {
                if f.message.starts_with("error:") {
                    printer.diagnostics(&f.message);
                } else {
                    printer.error(&f.message);
                }
            }
            ExitCode::from(f.code)
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("AZIMUTH_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "azimuth=debug",
            _ => "azimuth=trace",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

fn dispatch(cli: &Cli, printer: &Printer) -> CmdResult {
    let registry = Registry::builtin();
    match &cli.command {
        Command::Stages { name } => stages(&registry, name.as_deref(), printer),
        Command::Hash { paths } => hash_paths(paths, printer),
        Command::Cache(CacheCommand::Verify) => {
            let store = open_store(cli, None)?;
            cache_verify(&store, printer)
        }
        Command::Show { artifact } if !artifact.contains('.') => {
            let store = open_store(cli, None)?;
            show::show(&store, None, artifact, printer)
                .map(|()| ExitCode::SUCCESS)
                .map_err(failure)
        }
        Command::Cache(CacheCommand::Path { artifact }) if !artifact.contains('.') => {
            let store = open_store(cli, None)?;
            cache_path(&store, None, artifact, printer)
        }
        Command::Cache(CacheCommand::Show { artifact }) if !artifact.contains('.') => {
            let store = open_store(cli, None)?;
            cache_show(&store, None, artifact, printer)
        }
        _ => {
            let pipeline = if matches!(cli.command, Command::Report { .. }) {
                spec::load_for_report(&cli.pipeline, &registry).map_err(invalid_pipeline)?
            } else {
                load_pipeline(cli, &registry)?
            };
            let mut store = open_store(cli, Some(&pipeline))?;
            let settings = Settings {
                device_override: cli.device.clone(),
            };
            match &cli.command {
                Command::Run {
                    stages,
                    dry_run,
                    force,
                    jobs,
                    keep_going,
                    lock_timeout,
                    lazy,
                    no_push,
                } => {
                    let targets = select(&pipeline, stages)?;
                    let forced_sel = select(&pipeline, force)?;
                    let mut forced = vec![false; pipeline.instances.len()];
                    for i in forced_sel {
                        forced[i] = true;
                    }
                    let jobs = jobs.unwrap_or_else(default_jobs);
                    if *lazy && store.remote().is_none() {
                        return Err(usage(
                            "`--lazy` leaves outputs in a remote cache; name one with --remote \
                             DIR (or AZIMUTH_REMOTE)",
                        ));
                    }
                    store.set_lazy(*lazy);
                    let opts = RunOptions {
                        targets,
                        forced,
                        jobs,
                        keep_going: *keep_going,
                        lock_timeout: Duration::from_secs(*lock_timeout),
                        settings,
                        replay_logs: cli.verbose > 0,
                        verbose: cli.verbose > 0,
                        push: !*no_push,
                    };
                    if *dry_run {
                        dry_run_report(&pipeline, &store, &opts, printer)
                    } else {
                        run(&pipeline, &store, &opts, printer)
                    }
                }
                Command::Status { check } => status(&pipeline, &store, &settings, *check, printer),
                Command::Why { stage } => why(&pipeline, &store, &settings, stage, printer),
                Command::Dag { format } => {
                    printer.out_raw(&crate::dag::render(&pipeline, *format));
                    Ok(ExitCode::SUCCESS)
                }
                Command::Report { output, jobs } => report(
                    &pipeline,
                    &store,
                    settings,
                    output.as_deref(),
                    jobs.unwrap_or_else(default_jobs),
                    printer,
                ),
                Command::Show { artifact } => {
                    show::show(&store, Some(&pipeline), artifact, printer)
                        .map(|()| ExitCode::SUCCESS)
                        .map_err(failure)
                }
                Command::Cache(CacheCommand::Ls) => cache_ls(&store, printer),
                Command::Cache(CacheCommand::Push { stages }) => {
                    cache_push(&pipeline, &store, &settings, stages, printer)
                }
                Command::Cache(CacheCommand::Pull { stages }) => {
                    cache_pull(&pipeline, &store, &settings, stages, printer)
                }
                Command::Cache(CacheCommand::Show { artifact }) => {
                    cache_show(&store, Some(&pipeline), artifact, printer)
                }
                Command::Cache(CacheCommand::Path { artifact }) => {
                    cache_path(&store, Some(&pipeline), artifact, printer)
                }
                Command::Cache(CacheCommand::Gc { dry_run, keep_days }) => {
                    cache_gc(&pipeline, &store, *dry_run, *keep_days, printer)
                }
                Command::Cache(CacheCommand::Verify)
                | Command::Stages { .. }
                | Command::Stage { .. }
                | Command::Hash { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

fn load_pipeline(cli: &Cli, registry: &Registry) -> Result<Pipeline, Fail> {
    spec::load(&cli.pipeline, registry).map_err(invalid_pipeline)
}

fn invalid_pipeline(inv: spec::Invalid) -> Fail {
    let mut msg = inv.render();
    if !msg.starts_with("error:") {
        msg = format!("error: {msg}");
    }
    Fail {
        code: 2,
        message: msg,
    }
}

/// Stages run at once by default: one per core.
fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn open_store(cli: &Cli, pipeline: Option<&Pipeline>) -> Result<Store, Fail> {
    let dir = match (&cli.cache_dir, pipeline) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => p.root.join("cache"),
        (None, None) => cli
            .pipeline
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .join("cache"),
    };
    // Absolute, so that printed paths work from anywhere.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let store = Store::at(&dir);
    match &cli.remote {
        None => Ok(store),
        Some(spec) => {
            let remote = crate::remote::open(spec).map_err(|e| Fail {
                code: 2,
                message: format!("error: {e}"),
            })?;
            Ok(store.with_remote(remote))
        }
    }
}

/// Instances named on the command line (`stage` = all its instances, `stage[k=v]` = some).
fn select(pipeline: &Pipeline, names: &[String]) -> Result<Vec<usize>, Fail> {
    let mut out = Vec::new();
    for n in names {
        let sel = parse_selector(n).map_err(usage)?;
        let hits: Vec<usize> = (0..pipeline.instances.len())
            .filter(|&i| sel.matches(&pipeline.instances[i]))
            .collect();
        if hits.is_empty() {
            let stages: BTreeSet<&str> = pipeline
                .instances
                .iter()
                .map(|i| i.stage.as_str())
                .collect();
            let mut msg = format!("no stage `{n}` in `{}`", pipeline.file_name());
            if stages.contains(sel.stage.as_str()) {
                let names: Vec<&str> = pipeline
                    .instances
                    .iter()
                    .filter(|i| i.stage == sel.stage)
                    .map(|i| i.name.as_str())
                    .collect();
                msg.push_str(&format!(
                    "\n  = help: instances of `{}`: {}",
                    sel.stage,
                    names.join(", ")
                ));
            } else if let Some(c) = did_you_mean(&sel.stage, stages.iter().copied()) {
                msg.push_str(&format!("\n  = help: did you mean `{c}`?"));
            }
            return Err(usage(msg));
        }
        out.extend(hits);
    }
    Ok(out)
}

fn run(pipeline: &Pipeline, store: &Store, opts: &RunOptions, printer: &Printer) -> CmdResult {
    let start = Instant::now();
    let mut memo = StatMemo::load(&store.statcache_path());
    memo.progress = printer.hash_progress();
    let result = exec::run(pipeline, store, &mut memo, opts, printer);
    let _ = memo.save(&store.statcache_path());
    let summary = result.map_err(|e| Fail {
        code: 2,
        message: e.to_string(),
    })?;
    let mut lock = lockfile::build(pipeline, &summary.records);
    lock.stages.retain(|name, _| {
        pipeline
            .instance(name)
            .is_none_or(|i| !pipeline.implicit.contains(&pipeline.instances[i].stage))
    });
    // Instances this run did not bring up to date keep their previous entry (as with a partial
    // `run STAGE`); instances no longer in the pipeline drop out.
    if let Ok(Some(old)) = lockfile::read(&lockfile::path_for(pipeline)) {
        for (name, entry) in old.stages {
            if pipeline.instance(&name).is_some() {
                lock.stages.entry(name).or_insert(entry);
            }
        }
    }
    if let Err(e) = lockfile::write(&lockfile::path_for(pipeline), &lock) {
        printer.warn(&format!(
            "cannot write `{}`: {e}",
            lockfile::path_for(pipeline).display()
        ));
    }
    if let (Some(remote), true) = (store.remote(), opts.push) {
        push_records(
            store,
            remote,
            summary.records.values(),
            printer,
        );
    }
    let elapsed = start.elapsed();
    printer.event(&Event::Summary {
        version: JSON_VERSION,
        ran: summary.ran,
        restored: summary.restored,
        in_remote: summary.in_remote,
        fresh: summary.fresh + summary.cutoff,
        failed: summary.failed.clone(),
        skipped: summary.skipped,
        interrupted: summary.interrupted,
        elapsed_ms: elapsed.as_millis() as u64,
    });
    let mut parts = vec![format!("{} ran", summary.ran)];
    if summary.restored > 0 {
        parts.push(format!("{} restored", summary.restored));
    }
    if summary.in_remote > 0 {
        parts.push(format!("{} left in the remote", summary.in_remote));
    }
    parts.push(format!("{} fresh", summary.fresh + summary.cutoff));
    if !summary.failed.is_empty() {
        parts.push(format!("{} failed", summary.failed.len()));
    }
    if summary.skipped > 0 {
        parts.push(format!("{} skipped", summary.skipped));
    }
    printer.status(&format!(
        "{} in {}",
        parts.join(", "),
        human_duration(elapsed)
    ));
    if summary.interrupted {
        printer.error(
            "interrupted; nothing partial was kept, and the next `azimuth run` continues from here",
        );
        return Ok(ExitCode::from(130));
    }
    if !summary.failed.is_empty() {
        return Err(failure(format!(
            "stage{} failed: {}",
            if summary.failed.len() == 1 { "" } else { "s" },
            summary.failed.join(", ")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes records (and their objects) the remote lacks; problems are warnings, since the
/// results are safe here and `azimuth cache push` resumes. Returns whether all went through.
fn push_records<'a>(
    store: &Store,
    remote: &dyn crate::remote::Remote,
    records: impl Iterator<Item = &'a RunRecord>,
    printer: &Printer,
) -> bool {
    let mut total = crate::remote::Pushed::default();
    let mut pushed = 0;
    let mut ok = true;
    for r in records {
        match crate::remote::push_record(store, remote, r) {
            Ok(p) if p.already => {}
            Ok(p) => {
                pushed += 1;
                total.objects_sent += p.objects_sent;
                total.objects_present += p.objects_present;
                total.chunks_sent += p.chunks_sent;
                total.chunks_reused += p.chunks_reused;
                total.bytes += p.bytes;
            }
            Err(e) => {
                ok = false;
                printer.warn(&format!(
                    "cannot push `{}` to the remote `{}`: {e}\n  = help: the result is safe in \
                     this cache; `azimuth cache push` tries again and resumes",
                    r.instance,
                    remote.location()
                ));
            }
        }
    }
    if pushed > 0 {
        printer.status(&format!(
            "pushed {pushed} record{} to {}: {} objects ({}) sent{}{}",
            if pushed == 1 { "" } else { "s" },
            remote.location(),
            total.objects_sent,
            human_bytes(total.bytes),
            if total.objects_present > 0 {
                format!(", {} already there", total.objects_present)
            } else {
                String::new()
            },
            if total.chunks_reused > 0 {
                format!(
                    ", {} chunks reused from an interrupted push",
                    total.chunks_reused
                )
            } else {
                String::new()
            }
        ));
    }
    ok
}

/// The remote, or a usage error saying how to name one.
fn need_remote<'a>(store: &'a Store, what: &str) -> Result<&'a dyn crate::remote::Remote, Fail> {
    store.remote().ok_or_else(|| {
        usage(format!(
            "`cache {what}` needs a remote cache: --remote DIR (or AZIMUTH_REMOTE)"
        ))
    })
}

fn cache_push(
    pipeline: &Pipeline,
    store: &Store,
    settings: &Settings,
    stages: &[String],
    printer: &Printer,
) -> CmdResult {
    let remote = need_remote(store, "push")?;
    let chosen = select_or_all(pipeline, stages)?;
    let states = plan_states(pipeline, store, settings, printer)?;
    let records: Vec<&RunRecord> = chosen
        .iter()
        .filter_map(|&i| states[i].record())
        .collect();
    let skipped = chosen.len() - records.len();
    let ok = push_records(store, remote, records.into_iter(), printer);
    if skipped > 0 {
        printer.status(&format!(
            "{skipped} dirty instance{} (not computed yet) not pushed; `azimuth run` computes and \
             pushes them",
            if skipped == 1 { " was" } else { "s were" }
        ));
    }
    if ok {
        printer.status(&format!("the remote `{}` is up to date", remote.location()));
        Ok(ExitCode::SUCCESS)
    } else {
        Err(failure("some records could not be pushed (see the warnings above)"))
    }
}

fn cache_pull(
    pipeline: &Pipeline,
    store: &Store,
    settings: &Settings,
    stages: &[String],
    printer: &Printer,
) -> CmdResult {
    let remote = need_remote(store, "pull")?;
    store
        .init()
        .map_err(|e| failure(format!("cannot create the cache `{}`: {e}", store.dir.display())))?;
    let chosen = select_or_all(pipeline, stages)?;
    let states = plan_states(pipeline, store, settings, printer)?;
    let (mut objects, mut bytes, mut records, mut missing) = (0, 0, 0, 0);
    for &i in &chosen {
        let Some(r) = states[i].record() else {
            missing += 1;
            continue;
        };
        records += 1;
        let (n, b) = crate::remote::pull_record(store, r).map_err(|e| {
            failure(format!(
                "cannot pull `{}` from the remote `{}`: {e}",
                pipeline.instances[i].name,
                remote.location()
            ))
        })?;
        objects += n;
        bytes += b;
    }
    printer.status(&format!(
        "pulled {objects} objects ({}) for {records} instances from {}{}",
        human_bytes(bytes),
        remote.location(),
        if missing > 0 {
            format!("; {missing} instances are computed neither here nor there")
        } else {
            String::new()
        }
    ));
    Ok(ExitCode::SUCCESS)
}

/// The named instances, or all of them.
fn select_or_all(pipeline: &Pipeline, names: &[String]) -> Result<Vec<usize>, Fail> {
    if names.is_empty() {
        Ok((0..pipeline.instances.len()).collect())
    } else {
        select(pipeline, names)
    }
}

fn plan_states(
    pipeline: &Pipeline,
    store: &Store,
    settings: &Settings,
    printer: &Printer,
) -> Result<Vec<State>, Fail> {
    let mut memo = StatMemo::load(&store.statcache_path());
    memo.progress = printer.hash_progress();
    let states = plan::plan_all(pipeline, store, &mut memo, settings, &[]).map_err(|e| Fail {
        code: 2,
        message: e.to_string(),
    })?;
    // Read-only commands may refresh the memo (it is only a cache), but never wait for it.
    let _ = memo.save(&store.statcache_path());
    Ok(states)
}

fn report(
    pipeline: &Pipeline,
    store: &Store,
    settings: Settings,
    output: Option<&Path>,
    jobs: usize,
    printer: &Printer,
) -> CmdResult {
    let targets = crate::report::report_instances(pipeline);
    let Some(&page_instance) = targets.first() else {
        return Err(failure(
            "this build has no `report.html` stage (built without the `builtin-stages` feature)",
        ));
    };
    let before = plan_states(pipeline, store, &settings, printer)?;
    let opts = RunOptions {
        targets: targets.clone(),
        forced: vec![false; pipeline.instances.len()],
        jobs,
        keep_going: false,
        lock_timeout: Duration::from_secs(3600),
        settings: settings.clone(),
        replay_logs: false,
        verbose: false,
        push: true,
    };
    let code = run(pipeline, store, &opts, printer)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let after = plan_states(pipeline, store, &settings, printer)?;
    let inst = &pipeline.instances[page_instance];
    let entry = after[page_instance]
        .record()
        .and_then(|r| r.outputs.get("report"))
        .ok_or_else(|| {
            failure(format!(
                "`{}` has no `report` output after the run; run `azimuth run {}` to see why",
                inst.name, inst.name
            ))
        })?;
    let page = std::fs::read_to_string(store.object_path(&entry.digest)).map_err(|e| {
        failure(format!(
            "cannot read the page of `{}` from the cache ({}): {e}; `azimuth cache verify` checks \
             the store",
            inst.name, entry.digest
        ))
    })?;
    let page = crate::report::splice(
        &page,
        &crate::report::run_section(pipeline, &before, &after),
    );
    let dest = match output {
        Some(p) => p.to_path_buf(),
        None => pipeline.root.join("out").join("report.html"),
    };
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            failure(format!(
                "cannot create `{}` for the report: {e}",
                dir.display()
            ))
        })?;
    }
    crate::fsutil::write_atomic(&dest, page.as_bytes()).map_err(|e| {
        failure(format!(
            "cannot write the report to `{}`: {e}",
            dest.display()
        ))
    })?;
    let mut note = format!(
        "wrote {} ({} bytes): the page of `{}` ({}) with this run added",
        dest.display(),
        page.len(),
        inst.name,
        entry.digest.short()
    );
    if targets.len() > 1 {
        let others: Vec<&str> = targets[1..]
            .iter()
            .map(|&i| pipeline.instances[i].name.as_str())
            .collect();
        let _ = write!(
            note,
            "; the other report stages ({}) are in their out/ directories",
            others.join(", ")
        );
    }
    printer.out_raw(&format!("{note}\n"));
    Ok(ExitCode::SUCCESS)
}

fn dry_run_report(
    pipeline: &Pipeline,
    store: &Store,
    opts: &RunOptions,
    printer: &Printer,
) -> CmdResult {
    let mut memo = StatMemo::load(&store.statcache_path());
    let states =
        plan::plan_all(pipeline, store, &mut memo, &opts.settings, &opts.forced).map_err(|e| {
            Fail {
                code: 2,
                message: e.to_string(),
            }
        })?;
    let selected = exec::closure(pipeline, &opts.targets);
    let mut n_run = 0;
    for (i, st) in states.iter().enumerate() {
        if !selected[i] {
            continue;
        }
        let name = &pipeline.instances[i].name;
        match st {
            State::Fresh { .. } => printer.stage_line("fresh", name, ""),
            State::Restorable { missing, .. } => {
                printer.stage_line("restore", name, &format!("({})", missing.join(", ")))
            }
            State::Dirty { reasons, .. } => {
                n_run += 1;
                printer.stage_line(
                    "would run",
                    name,
                    &format!(
                        "({})",
                        reasons
                            .iter()
                            .map(|r| r.sentence())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                )
            }
        }
    }
    printer.status(&format!(
        "dry run: {n_run} stage{} would run",
        if n_run == 1 { "" } else { "s" }
    ));
    Ok(ExitCode::SUCCESS)
}

fn outputs_of(pipeline: &Pipeline, i: usize, record: Option<&RunRecord>) -> Vec<WireOutput> {
    pipeline.instances[i]
        .outputs
        .iter()
        .map(|o| {
            let e = record.and_then(|r| r.outputs.get(&o.name));
            let path = plan::workspace_output(pipeline, i, &o.name)
                .map(|p| {
                    p.strip_prefix(&pipeline.root)
                        .unwrap_or(&p)
                        .display()
                        .to_string()
                })
                .unwrap_or_default();
            WireOutput {
                name: o.name.clone(),
                path,
                digest: e.map(|e| e.digest.to_string()),
                size: e.map(|e| e.size),
            }
        })
        .collect()
}

fn status(
    pipeline: &Pipeline,
    store: &Store,
    settings: &Settings,
    check: bool,
    printer: &Printer,
) -> CmdResult {
    let states = plan_states(pipeline, store, settings, printer)?;
    let mut any_dirty = false;
    let mut wire = Vec::new();
    let width = pipeline
        .instances
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut text = String::new();
    for (i, st) in states.iter().enumerate() {
        let inst = &pipeline.instances[i];
        let (detail, reasons, modified): (String, Vec<Reason>, Vec<String>) = match st {
            State::Fresh { modified, .. } => {
                (modified_note(modified), Vec::new(), modified.clone())
            }
            State::Restorable {
                missing,
                modified,
                record,
            } => (
                {
                    let remote_only = missing
                        .iter()
                        .filter_map(|m| record.outputs.get(m))
                        .any(|e| !store.output_local(e));
                    format!(
                        "outputs cached{}, workspace copy missing or stale: {}{}",
                        if remote_only {
                            " (in the remote: fetched when `run` links them)"
                        } else {
                            ""
                        },
                        missing.join(", "),
                        modified_note(modified)
                    )
                },
                Vec::new(),
                modified.clone(),
            ),
            State::Dirty { reasons, .. } => (
                reasons
                    .iter()
                    .map(|r| r.sentence())
                    .collect::<Vec<_>>()
                    .join("; "),
                reasons.clone(),
                Vec::new(),
            ),
        };
        any_dirty |= !matches!(st, State::Fresh { .. });
        let key = match st {
            State::Dirty {
                ingredients: Some(ing),
                ..
            } => Some(ing.key().to_string()),
            other => other.record().map(|r| r.key.to_string()),
        };
        text.push_str(&format!(
            "{:<width$}  {:<10}  {}\n",
            inst.name,
            st.label(),
            detail.trim_start_matches("; ")
        ));
        wire.push(WireStage {
            name: inst.name.clone(),
            stage: inst.stage.clone(),
            kind: inst.kind.as_str(),
            state: st.label(),
            key,
            reasons: WireReason::all(&reasons),
            modified_outputs: modified,
            outputs: outputs_of(pipeline, i, st.record()),
        });
    }
    if printer.json {
        printer.json_doc(&WireStatus {
            version: JSON_VERSION,
            pipeline: pipeline.file_name(),
            stages: wire,
        });
    } else {
        printer.out_raw(&text);
    }
    Ok(if check && any_dirty {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn modified_note(modified: &[String]) -> String {
    if modified.is_empty() {
        String::new()
    } else {
        format!("; modified in the workspace: {}", modified.join(", "))
    }
}

fn why(
    pipeline: &Pipeline,
    store: &Store,
    settings: &Settings,
    name: &str,
    printer: &Printer,
) -> CmdResult {
    let idx = select(pipeline, &[name.to_string()])?;
    let states = plan_states(pipeline, store, settings, printer)?;
    for i in idx {
        let inst = &pipeline.instances[i];
        let st = &states[i];
        let last = store.last_record(&inst.name);
        let current = match st {
            State::Dirty { ingredients, .. } => ingredients.clone(),
            other => other.record().map(|r| r.ingredients.clone()),
        };
        let reasons: Vec<Reason> = match (st, &last, &current) {
            (State::Dirty { reasons, .. }, _, _) => reasons.clone(),
            _ => Vec::new(),
        };
        if printer.json {
            printer.json_doc(&WireWhy {
                version: JSON_VERSION,
                stage: inst.name.clone(),
                state: st.label(),
                key: current.as_ref().map(|c| c.key().to_string()),
                last_key: last.as_ref().map(|r| r.key.to_string()),
                reasons: WireReason::all(&reasons),
                ingredients: current
                    .as_ref()
                    .map(|c| serde_json::to_value(c).expect("records serialize")),
                last_ingredients: last
                    .as_ref()
                    .map(|r| serde_json::to_value(&r.ingredients).expect("records serialize")),
            });
            continue;
        }
        let mut s = format!("{} is {}", inst.name, st.label());
        match st {
            State::Fresh { record, .. } | State::Restorable { record, .. } => {
                s.push_str(&format!(
                    ": its key {} matches the run of {} on {} ({})\n",
                    record.key,
                    format_time(record.finished_at),
                    record.host,
                    human_duration(Duration::from_millis(record.duration_ms))
                ));
            }
            State::Dirty { .. } => {
                s.push('\n');
                for r in &reasons {
                    s.push_str(&format!("  - {}\n", r.sentence()));
                }
                if let (Some(c), Some(l)) = (&current, &last) {
                    s.push_str(&format!(
                        "key now {}\nlast run {} ({})\n",
                        c.key(),
                        l.key,
                        format_time(l.finished_at)
                    ));
                    s.push_str(&key_diff(
                        &serde_json::to_value(&l.ingredients).expect("records serialize"),
                        &serde_json::to_value(c).expect("records serialize"),
                    ));
                } else if let Some(c) = &current {
                    s.push_str(&format!(
                        "key now {} (no earlier run of `{}` is recorded)\n",
                        c.key(),
                        inst.name
                    ));
                }
            }
        }
        printer.out_raw(&s);
    }
    Ok(ExitCode::SUCCESS)
}

/// A line diff of two key records, flattened to `path = value` lines.
fn key_diff(old: &serde_json::Value, new: &serde_json::Value) -> String {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    flatten(
                        &if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        },
                        v,
                        out,
                    )
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let am: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let bm: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    let keys: BTreeSet<&String> = am.keys().chain(bm.keys()).collect();
    let mut s = String::new();
    for k in keys {
        match (am.get(k), bm.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                if let Some(x) = x {
                    s.push_str(&format!("- {k} = {x}\n"));
                }
                if let Some(y) = y {
                    s.push_str(&format!("+ {k} = {y}\n"));
                }
            }
        }
    }
    s
}

fn stages(registry: &Registry, name: Option<&str>, printer: &Printer) -> CmdResult {
    if registry.builtins.is_empty() {
        printer.status("this azimuth was built without built-in stages (feature `builtin-stages`)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = String::new();
    for b in &registry.builtins {
        if name.is_some_and(|n| n != b.name) {
            continue;
        }
        s.push_str(&format!(
            "{} (v{}, {}): {}\n",
            b.name,
            b.version,
            b.kind.as_str(),
            b.summary
        ));
        if name.is_none() {
            continue;
        }
        for p in &b.inputs {
            s.push_str(&format!(
                "  input  {}{}: {}\n",
                p.name,
                if p.many { " (one or more)" } else { "" },
                p.doc
            ));
        }
        for p in &b.outputs {
            s.push_str(&format!("  output {}: {}\n", p.name, p.doc));
        }
        for p in &b.params {
            let d = p
                .default
                .as_ref()
                .map(|d| format!(" = {d}"))
                .unwrap_or_else(|| " (required)".into());
            s.push_str(&format!(
                "  param  {}{d}: {} ({})\n",
                p.name,
                p.doc,
                p.ty.describe()
            ));
        }
    }
    if s.is_empty() {
        let hint = name
            .and_then(|n| did_you_mean(n, registry.names()))
            .map(|c| format!("\n  = help: did you mean `{c}`?"))
            .unwrap_or_default();
        return Err(usage(format!(
            "no built-in stage `{}`{hint}",
            name.unwrap_or_default()
        )));
    }
    printer.out_raw(&s);
    Ok(ExitCode::SUCCESS)
}

/// Resolves `stage.output` (through the current plan, else the last run) or a digest prefix.
pub fn resolve_artifact(
    store: &Store,
    pipeline: Option<&Pipeline>,
    text: &str,
) -> Result<(OutputEntry, Option<RunRecord>), String> {
    if let (Some(p), Some((head, output))) = (pipeline, text.rsplit_once('.')) {
        let names_a_stage =
            parse_selector(head).is_ok_and(|sel| p.instances.iter().any(|i| i.stage == sel.stage));
        if names_a_stage {
            let sel = parse_selector(head)?;
            let hits: Vec<usize> = (0..p.instances.len())
                .filter(|&i| sel.matches(&p.instances[i]))
                .collect();
            let i = match hits.as_slice() {
                [i] => *i,
                [] => return Err(format!("no stage `{head}` in `{}`", p.file_name())),
                many => {
                    return Err(format!(
                        "`{head}` names {} instances ({}); pick one, e.g. `{}.{output}`",
                        many.len(),
                        many.iter()
                            .map(|&i| p.instances[i].name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        p.instances[many[0]].name
                    ))
                }
            };
            let inst = &p.instances[i];
            if !inst.outputs.iter().any(|o| o.name == output) {
                return Err(format!(
                    "stage `{}` has no output `{output}` (outputs: {})",
                    inst.name,
                    inst.outputs
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let record = store.last_record(&inst.name).ok_or_else(|| {
                format!(
                    "`{}` has not run yet; run `azimuth run {}` first",
                    inst.name, inst.name
                )
            })?;
            let entry = record.outputs.get(output).cloned().ok_or_else(|| {
                format!("the last run of `{}` has no output `{output}`", inst.name)
            })?;
            return Ok((entry, Some(record)));
        }
    }
    if !store.exists() {
        return Err(format!("no cache at `{}`", store.dir.display()));
    }
    let d = store.resolve_prefix(text)?;
    let producer = store
        .all_records()
        .into_iter()
        .filter(|r| r.outputs.values().any(|e| e.digest == d))
        .max_by_key(|r| r.finished_at);
    let entry = match &producer {
        Some(r) => r
            .outputs
            .values()
            .find(|e| e.digest == d)
            .cloned()
            .expect("filtered above"),
        None => OutputEntry {
            digest: d,
            size: std::fs::metadata(store.object_path(&d))
                .map(|m| m.len())
                .unwrap_or(0),
            kind: ArtifactKind::File,
        },
    };
    Ok((entry, producer))
}

fn hash_paths(paths: &[PathBuf], printer: &Printer) -> CmdResult {
    let mut memo = StatMemo::default();
    memo.progress = printer.hash_progress();
    for p in paths {
        let d = memo
            .path_digest(p)
            .map_err(|e| failure(format!("cannot hash `{}`: {e}", p.display())))?;
        printer.out(&format!("{d}  {}", p.display()));
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_path(
    store: &Store,
    pipeline: Option<&Pipeline>,
    artifact: &str,
    printer: &Printer,
) -> CmdResult {
    let (entry, _) = resolve_artifact(store, pipeline, artifact).map_err(usage)?;
    let path = store
        .artifact_path(&entry)
        .map_err(|e| failure(format!("cannot check out {}: {e}", entry.digest)))?;
    printer.out(&path.display().to_string());
    Ok(ExitCode::SUCCESS)
}

fn cache_show(
    store: &Store,
    pipeline: Option<&Pipeline>,
    artifact: &str,
    printer: &Printer,
) -> CmdResult {
    // A run key prefix names a record directly.
    let by_key = Digest::parse(artifact)
        .and_then(|d| store.read_record(&d))
        .or_else(|| {
            let p = artifact.strip_prefix("b3:").unwrap_or(artifact);
            let hits: Vec<RunRecord> = if p.len() >= 4 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
                store
                    .all_records()
                    .into_iter()
                    .filter(|r| r.key.hex().starts_with(p))
                    .collect()
            } else {
                Vec::new()
            };
            (hits.len() == 1).then(|| hits.into_iter().next().expect("one"))
        });
    let record = match by_key {
        Some(r) => r,
        None => {
            let (_, rec) = resolve_artifact(store, pipeline, artifact).map_err(usage)?;
            rec.ok_or_else(|| failure(format!("no run record produced `{artifact}` (an object stored by hand, or its record was collected)")))?
        }
    };
    if printer.json {
        printer.json_doc(&WireRecord {
            version: JSON_VERSION,
            record: &record,
        });
    } else {
        printer.out_raw(&show::render_record(&record));
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_ls(store: &Store, printer: &Printer) -> CmdResult {
    let records = store.all_records();
    let pointers: BTreeSet<Digest> = store
        .all_pointers()
        .into_iter()
        .map(|(_, p)| p.key)
        .collect();
    if printer.json {
        let rows: Vec<WireRecordRow> = records
            .iter()
            .map(|r| WireRecordRow {
                stage: r.instance.clone(),
                key: r.key.to_string(),
                current: pointers.contains(&r.key),
                size: r.outputs.values().map(|e| e.size).sum(),
                finished_at: format_time(r.finished_at),
                duration_ms: r.duration_ms,
                outputs: r
                    .outputs
                    .iter()
                    .map(|(k, e)| (k.clone(), e.digest.to_string()))
                    .collect(),
            })
            .collect();
        printer.json_doc(&WireRecords {
            version: JSON_VERSION,
            records: rows,
        });
        return Ok(ExitCode::SUCCESS);
    }
    let width = records
        .iter()
        .map(|r| r.instance.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut s = format!(
        "{:<width$}  {:<12}  {:>10}  {:<20}  {}\n",
        "STAGE", "KEY", "SIZE", "FINISHED", "DURATION"
    );
    for r in &records {
        let size: u64 = r.outputs.values().map(|e| e.size).sum();
        let mark = if pointers.contains(&r.key) {
            ""
        } else {
            "  (superseded)"
        };
        s.push_str(&format!(
            "{:<width$}  {:<12}  {:>10}  {:<20}  {}{mark}\n",
            r.instance,
            r.key.short(),
            human_bytes(size),
            format_time(r.finished_at),
            human_duration(Duration::from_millis(r.duration_ms))
        ));
    }
    printer.out_raw(&s);
    Ok(ExitCode::SUCCESS)
}

fn cache_verify(store: &Store, printer: &Printer) -> CmdResult {
    if !store.exists() {
        printer.status(&format!(
            "no cache at `{}`; nothing to verify",
            store.dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let (n, problems) = store.verify();
    if printer.json {
        printer.json_doc(&WireVerify {
            version: JSON_VERSION,
            objects: n,
            problems: problems.clone(),
        });
    } else {
        for p in &problems {
            printer.out(p);
        }
        printer.status(&format!(
            "verified {n} objects: {}",
            if problems.is_empty() {
                "all good".to_string()
            } else {
                format!("{} problem(s)", problems.len())
            }
        ));
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cache_gc(
    pipeline: &Pipeline,
    store: &Store,
    dry_run: bool,
    keep_days: Option<u64>,
    printer: &Printer,
) -> CmdResult {
    if !store.exists() {
        printer.status("no cache; nothing to collect");
        return Ok(ExitCode::SUCCESS);
    }
    let mut roots: BTreeSet<Digest> = store
        .all_pointers()
        .into_iter()
        .map(|(_, p)| p.key)
        .collect();
    let lock_path = lockfile::path_for(pipeline);
    match lockfile::read(&lock_path) {
        Ok(Some(l)) => roots.extend(l.stages.values().map(|s| s.key)),
        Ok(None) => {}
        Err(e) => {
            return Err(usage(format!(
                "{e}\n  = help: fix or delete it; gc uses it to know what to keep"
            )))
        }
    }
    let _lock = if dry_run {
        None
    } else {
        Some(
            FileLock::acquire(
                &store.store_lock_path(),
                Mode::Exclusive,
                Duration::from_secs(3600),
                |h| printer.status(&format!("waiting for running pipelines to finish ({h})")),
            )
            .map_err(|e| failure(format!("cannot lock the cache: {e}")))?,
        )
    };
    let report = store
        .gc(&roots, keep_days, dry_run)
        .map_err(|e| failure(format!("garbage collection failed: {e}")))?;
    let verb = if dry_run { "would free" } else { "freed" };
    if printer.json {
        printer.json_doc(&WireGc {
            version: JSON_VERSION,
            dry_run,
            report: &report,
        });
    } else {
        printer.out(&format!(
            "{verb} {} in {} object(s); {} run record(s){}{}",
            human_bytes(report.bytes),
            report.objects,
            report.records,
            if report.staging > 0 {
                format!("; {} stale staging dir(s)", report.staging)
            } else {
                String::new()
            },
            if report.old_formats.is_empty() {
                String::new()
            } else {
                format!("; old cache formats: {}", report.old_formats.join(", "))
            }
        ));
    }
    Ok(ExitCode::SUCCESS)
}
