//! Everything the user sees goes through [`Printer`]: stdout carries data (tables, `--json`
//! documents, paths), stderr carries progress and status lines. This is the only module that
//! prints (a tidy test enforces it).
//!
//! `--json` output is built from the serialize-only wire types at the bottom of this file; every
//! document carries `"version": 1` (the JSON schema version, documented in README.md). `run
//! --json` streams JSON Lines events. A closed stdout (`azimuth status | head`) ends the process
//! quietly with exit code 0. On a terminal (and not with `--json`, `-q` or `-v`), running stages
//! show spinners with their elapsed time and large files show hashing progress (indicatif).

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::fingerprint::Reason;

pub const JSON_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
    pub verbose: u8,
    pub color: bool,
    /// Progress bars, only on a terminal and not with `--json`, `-q` or `-v`.
    progress: Option<MultiProgress>,
}

fn write_or_exit(mut w: impl Write, s: &str) {
    if let Err(e) = w.write_all(s.as_bytes()).and_then(|_| w.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (e.g. `| head`): that is not an error.
            std::process::exit(0);
        }
    }
}

impl Printer {
    pub fn new(json: bool, quiet: bool, verbose: u8, color_flag: Option<bool>) -> Printer {
        let color = color_flag.unwrap_or_else(|| {
            std::env::var_os("NO_COLOR").is_none() && io::stderr().is_terminal()
        });
        let progress = (io::stderr().is_terminal() && !json && !quiet && verbose == 0)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Printer {
            json,
            quiet,
            verbose,
            color,
            progress,
        }
    }

    /// Writes to stderr without tearing the progress bars.
    fn err_text(&self, s: &str) {
        match &self.progress {
            Some(m) => m.suspend(|| write_or_exit(io::stderr().lock(), s)),
            None => write_or_exit(io::stderr().lock(), s),
        }
    }

    /// A spinner with the elapsed time for a running stage (terminal only).
    pub fn stage_spinner(&self, stage: &str) -> Option<ProgressBar> {
        let m = self.progress.as_ref()?;
        let bar = m.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed}")
                .expect("valid template"),
        );
        bar.set_message(stage.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }

    /// A byte progress bar for hashing large files (terminal only), as `hash::ProgressFactory`.
    pub fn hash_progress(&self) -> Option<crate::hash::ProgressFactory> {
        let m = self.progress.clone()?;
        Some(Box::new(move |path: &std::path::Path, total: u64| {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "hashing {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("valid template"),
            );
            bar.set_message(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            Box::new(move |done: u64| {
                bar.set_position(done);
                if done >= total {
                    bar.finish_and_clear();
                }
            })
        }))
    }

    /// Data on stdout (a line is added if missing).
    pub fn out(&self, s: &str) {
        let mut text = s.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_or_exit(io::stdout().lock(), &text);
    }

    /// Raw bytes on stdout, as they are.
    pub fn out_raw(&self, s: &str) {
        write_or_exit(io::stdout().lock(), s);
    }

    /// A JSON document on stdout.
    pub fn json_doc<T: Serialize>(&self, doc: &T) {
        let mut s = serde_json::to_string_pretty(doc).expect("wire types serialize");
        s.push('\n');
        write_or_exit(io::stdout().lock(), &s);
    }

    /// A status line on stderr (hidden by `-q` and under `--json`).
    pub fn status(&self, s: &str) {
        if self.quiet || self.json {
            return;
        }
        self.err_text(&format!("{s}\n"));
    }

    pub fn warn(&self, s: &str) {
        let label = self.paint("warning", "33;1");
        self.err_text(&format!("{label}: {s}\n"));
    }

    pub fn error(&self, s: &str) {
        let label = self.paint("error", "31;1");
        let s = s.strip_prefix("error: ").unwrap_or(s);
        self.err_text(&format!("{label}: {s}\n"));
    }

    /// Pre-rendered diagnostics (they start with `error:` themselves).
    pub fn diagnostics(&self, rendered: &str) {
        write_or_exit(io::stderr().lock(), rendered);
    }

    fn paint(&self, s: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// `    run  gen[std=1.0]  (param `std` 0.5 → 1.0)` on stderr.
    pub fn stage_line(&self, what: &str, stage: &str, detail: &str) {
        if self.quiet || self.json {
            return;
        }
        let code = match what {
            "done" | "restored" => "32",
            "failed" => "31;1",
            "run" | "adopted" => "36",
            "skipped" | "waiting" => "33",
            _ => "2",
        };
        let label = self.paint(&format!("{what:>8}"), code);
        self.err_text(&format!("{label} {stage} {detail}\n"));
    }

    /// A failed stage: its name, why, and the tail of its log.
    pub fn stage_failure(&self, stage: &str, why: &str, log: &[u8], saved: &std::path::Path) {
        if self.json {
            return;
        }
        let text = String::from_utf8_lossy(log);
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(20)..];
        let mut s = format!(
            "{} {stage} ({why})\n",
            self.paint(&format!("{:>8}", "failed"), "31;1")
        );
        if tail.is_empty() {
            s.push_str("         (the stage printed nothing)\n");
        } else {
            s.push_str(&format!("         last {} lines of its log:\n", tail.len()));
            for l in tail {
                s.push_str(&format!("         │ {l}\n"));
            }
        }
        s.push_str(&format!("         full log: {}\n", saved.display()));
        self.err_text(&s);
    }

    /// The captured log of a cached run (`run -v`).
    pub fn replay(&self, stage: &str, log: &[u8]) {
        if self.json || log.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(log);
        let mut s = String::new();
        for l in text.lines() {
            s.push_str(&format!("         {stage} │ {l}\n"));
        }
        self.err_text(&s);
    }

    /// A `run --json` event line (JSON Lines on stdout).
    pub fn event(&self, e: &Event) {
        if !self.json {
            return;
        }
        let mut s = serde_json::to_string(e).expect("events serialize");
        s.push('\n');
        write_or_exit(io::stdout().lock(), &s);
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

// ---- JSON wire types (schema version 1) ----

#[derive(Serialize)]
pub struct WireReason {
    pub tag: &'static str,
    pub message: String,
}

impl WireReason {
    pub fn all(reasons: &[Reason]) -> Vec<WireReason> {
        reasons
            .iter()
            .map(|r| WireReason {
                tag: r.tag(),
                message: r.sentence(),
            })
            .collect()
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    StageStarted {
        version: u32,
        stage: String,
        reasons: Vec<WireReason>,
    },
    StageFinished {
        version: u32,
        stage: String,
        status: &'static str,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Summary {
        version: u32,
        ran: usize,
        restored: usize,
        /// Up to date, with outputs left in the remote cache (`run --lazy`).
        #[serde(skip_serializing_if = "is_zero")]
        in_remote: usize,
        fresh: usize,
        failed: Vec<String>,
        skipped: usize,
        interrupted: bool,
        elapsed_ms: u64,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Event {
    pub fn started(stage: &str, reasons: &[Reason]) -> Event {
        Event::StageStarted {
            version: JSON_VERSION,
            stage: stage.to_string(),
            reasons: WireReason::all(reasons),
        }
    }

    pub fn finished(
        stage: &str,
        status: &'static str,
        duration_ms: u64,
        error: Option<&str>,
    ) -> Event {
        Event::StageFinished {
            version: JSON_VERSION,
            stage: stage.to_string(),
            status,
            duration_ms,
            error: error.map(str::to_string),
        }
    }
}

#[derive(Serialize)]
pub struct WireOutput {
    pub name: String,
    pub path: String,
    pub digest: Option<String>,
    pub size: Option<u64>,
}

#[derive(Serialize)]
pub struct WireStage {
    pub name: String,
    pub stage: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub key: Option<String>,
    pub reasons: Vec<WireReason>,
    pub modified_outputs: Vec<String>,
    pub outputs: Vec<WireOutput>,
}

#[derive(Serialize)]
pub struct WireStatus {
    pub version: u32,
    pub pipeline: String,
    pub stages: Vec<WireStage>,
}

#[derive(Serialize)]
pub struct WireWhy {
    pub version: u32,
    pub stage: String,
    pub state: &'static str,
    pub key: Option<String>,
    pub last_key: Option<String>,
    pub reasons: Vec<WireReason>,
    pub ingredients: Option<serde_json::Value>,
    pub last_ingredients: Option<serde_json::Value>,
}

/// `cache show --json`.
#[derive(Serialize)]
pub struct WireRecord<'a> {
    pub version: u32,
    pub record: &'a crate::store::RunRecord,
}

/// One row of `cache ls --json`.
#[derive(Serialize)]
pub struct WireRecordRow {
    pub stage: String,
    pub key: String,
    /// Whether a stage pointer names this record (false: superseded).
    pub current: bool,
    pub size: u64,
    pub finished_at: String,
    pub duration_ms: u64,
    pub outputs: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
pub struct WireRecords {
    pub version: u32,
    pub records: Vec<WireRecordRow>,
}

/// `cache verify --json`.
#[derive(Serialize)]
pub struct WireVerify {
    pub version: u32,
    pub objects: usize,
    pub problems: Vec<String>,
}

/// `cache gc --json`.
#[derive(Serialize)]
pub struct WireGc<'a> {
    pub version: u32,
    pub dry_run: bool,
    #[serde(flatten)]
    pub report: &'a crate::store::GcReport,
}

/// What `show --json` found inside an artifact.
#[derive(Serialize)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum WireContent {
    Safetensors {
        header: crate::inspect::SafetensorsInfo,
    },
    Gguf {
        header: crate::inspect::GgufInfo,
    },
    Hdf5 {
        tree: serde_json::Value,
    },
    Directory {
        manifest: crate::hash::TreeManifest,
    },
    Png {
        image: crate::inspect::PngInfo,
    },
    Json,
    Text,
    Binary,
}

/// `show --json`.
#[derive(Serialize)]
pub struct WireShow<'a> {
    pub version: u32,
    pub digest: String,
    pub size: u64,
    pub kind: crate::store::ArtifactKind,
    pub path: String,
    pub record: Option<&'a crate::store::RunRecord>,
    pub content: WireContent,
}
