//! `pipeline.yaml` → a validated, fully resolved [`Pipeline`] of stage instances.
//!
//! Three passes, all collecting diagnostics instead of stopping at the first problem:
//! 1. [`yaml::parse`] builds a span-carrying tree (the only contact with the YAML crate);
//! 2. `decl` reads that tree into per-stage declarations (shape and type errors, unknown keys);
//! 3. `resolve` orders stages (a cycle is spelled out), expands `matrix`/`foreach` sweeps into
//!    instances such as `sim[sigma=1e-9]`, binds each input reference to upstream instances,
//!    interpolates global params, and checks built-in params against their schema.
//!
//! The result holds values, not YAML: keys, scheduling and execution never see the YAML crate.
//! What this module does not do: hash files, read the cache, or run anything.

mod decl;
pub mod hf;
mod resolve;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::diag::Diagnostic;
use crate::registry::{Registry, StageKind};
use yaml::Span;

pub use resolve::{format_value, parse_selector, Selector};

/// The version of the `pipeline.yaml` format this build reads.
pub const PIPELINE_FORMAT: i64 = 1;

/// A pipeline after validation: every stage instance with its inputs bound.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file as the user named it (for messages).
    pub file: PathBuf,
    /// The directory holding the pipeline file; external paths and `out/` are relative to it.
    pub root: PathBuf,
    pub source: String,
    pub params: BTreeMap<String, Json>,
    /// Instances in a topological order (every upstream before its consumers).
    pub instances: Vec<Instance>,
    /// Stages azimuth added that the file does not declare (the implicit report of
    /// `azimuth report`); they stay out of `pipeline.lock`.
    pub implicit: Vec<String>,
    /// The top-level `slurm:` options.
    pub slurm: SlurmOptions,
}

/// One runnable unit: a stage, or one point of a stage's sweep.
#[derive(Debug, Clone)]
pub struct Instance {
    /// `gen`, or `sim[sigma=1e-9]` for a sweep point.
    pub name: String,
    /// The declared stage this instance comes from.
    pub stage: String,
    /// Sweep coordinates, sorted by key (empty for plain stages).
    pub matrix: Vec<(String, Json)>,
    pub body: Body,
    pub kind: StageKind,
    /// Final params: defaults, declared values, interpolated globals and sweep coordinates.
    pub params: BTreeMap<String, Json>,
    /// Sorted by port name.
    pub inputs: Vec<Input>,
    /// Sorted by output name.
    pub outputs: Vec<Output>,
    /// Environment variables whose values enter the key (sorted, unique).
    pub env: Vec<String>,
    pub resources: Resources,
    /// Requested device (`auto`, `cpu`, `cuda`, `mps`) for device-dependent built-ins.
    pub device: Option<String>,
    pub uses_torch: bool,
    pub device_dependent: bool,
    /// For built-ins that read it: where each input comes from and the stage graph (digests are
    /// filled in when the job is written). Enters the key.
    pub provenance: Option<azimuth_stage_api::provenance::Provenance>,
    /// Where it runs (the stage's `executor:`, else the pipeline's, else local). Not in the key:
    /// a result is the same wherever it was computed.
    pub executor: Executor,
    /// An input is `"*"`: every output of every other stage.
    pub gathers_all: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Builtin {
        name: String,
        version: u32,
    },
    /// argv template after global-param interpolation; `${inputs.x}`, `${outputs.x}` and
    /// `${params.x}` are substituted per run (never through a shell).
    Cmd {
        argv: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Input {
    pub port: String,
    pub sources: Vec<InputSource>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// An output of an upstream instance (index into [`Pipeline::instances`]).
    Upstream { instance: usize, output: String },
    /// A file or directory tracked by content: relative to the pipeline root for `{path: ..}`,
    /// absolute for a model resolved in the local Hugging Face cache (`{hf: ..}`, see [`hf`]).
    External { path: String },
}

#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    /// Where the stage writes it, relative to its staging directory.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resources {
    pub cpus: u32,
    pub gpus: u32,
    /// Bytes of memory the stage expects to need (0 = unspecified).
    pub memory: u64,
    /// Wall-clock limit in seconds (0 = unspecified); a cluster executor enforces it.
    pub time: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: 1,
            gpus: 0,
            memory: 0,
            time: 0,
        }
    }
}

/// Where an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executor {
    /// A child process of `azimuth run` on this machine.
    #[default]
    Local,
    /// A Slurm job (`sbatch`), see `crate::slurm`.
    Slurm,
}

impl Executor {
    pub fn as_str(self) -> &'static str {
        match self {
            Executor::Local => "local",
            Executor::Slurm => "slurm",
        }
    }
}

/// Options for `executor: slurm` (top-level `slurm:`), passed to every `sbatch`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// More `sbatch` arguments, verbatim (e.g. `--constraint=a100`).
    pub args: Vec<String>,
}

impl Pipeline {
    pub fn instance(&self, name: &str) -> Option<usize> {
        self.instances.iter().position(|i| i.name == name)
    }

    /// Workspace directory of an instance, relative to the root: `out/gen` or `out/sim/sigma=1e-9`.
    pub fn out_dir(&self, index: usize) -> PathBuf {
        let inst = &self.instances[index];
        let mut p = PathBuf::from("out").join(&inst.stage);
        if !inst.matrix.is_empty() {
            let coords: Vec<String> = inst
                .matrix
                .iter()
                .map(|(k, v)| format!("{k}={}", sanitize(&format_value(v))))
                .collect();
            p.push(coords.join(","));
        }
        p
    }

    /// Renders diagnostics against this pipeline's source.
    pub fn file_name(&self) -> String {
        self.file.display().to_string()
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Problems found while loading a pipeline, ready to render against `source`.
#[derive(Debug)]
pub struct Invalid {
    pub file: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn render(&self) -> String {
        let mut out: String = self
            .diagnostics
            .iter()
            .map(|d| d.render(&self.file, &self.source) + "\n")
            .collect();
        let n = self.diagnostics.len();
        out.push_str(&format!(
            "{} in `{}`; nothing was run\n",
            plural(n, "problem"),
            self.file
        ));
        out
    }
}

pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The name of the `report.html` stage `azimuth report` adds to a pipeline that declares none.
pub const IMPLICIT_REPORT: &str = "azimuth-report";

/// Reads and validates a pipeline file.
pub fn load(file: &Path, registry: &Registry) -> Result<Pipeline, Invalid> {
    load_with(file, registry, false)
}

/// Reads and validates a pipeline file for `azimuth report`: when no stage uses `report.html`,
/// adds one named [`IMPLICIT_REPORT`] that gathers every output (`artifacts: "*"`); it is listed
/// in [`Pipeline::implicit`] and left out of `pipeline.lock`.
pub fn load_for_report(file: &Path, registry: &Registry) -> Result<Pipeline, Invalid> {
    load_with(file, registry, true)
}

fn load_with(file: &Path, registry: &Registry, add_report: bool) -> Result<Pipeline, Invalid> {
    let shown = file.display().to_string();
    let source = std::fs::read_to_string(file).map_err(|e| Invalid {
        file: shown.clone(),
        source: String::new(),
        diagnostics: vec![
            Diagnostic::global(format!("cannot read pipeline file `{shown}`: {e}"))
                .hint("run from the directory holding pipeline.yaml, or pass --pipeline PATH"),
        ],
    })?;
    let root = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    from_source_with(file, &root, source, registry, add_report)
}

/// Validates pipeline text; `file` is only used in messages, `root` anchors relative paths.
pub fn from_source(
    file: &Path,
    root: &Path,
    source: String,
    registry: &Registry,
) -> Result<Pipeline, Invalid> {
    from_source_with(file, root, source, registry, false)
}

/// [`from_source`], optionally adding the implicit report stage (see [`load_for_report`]).
pub fn from_source_with(
    file: &Path,
    root: &Path,
    source: String,
    registry: &Registry,
    add_report: bool,
) -> Result<Pipeline, Invalid> {
    let shown = file.display().to_string();
    let invalid = |source: String, diagnostics| Invalid {
        file: shown.clone(),
        source,
        diagnostics,
    };
    let tree = match yaml::parse(&source) {
        Ok(t) => t,
        Err(e) => return Err(invalid(source, vec![Diagnostic::new(e.message, e.span)])),
    };
    let mut diags = Vec::new();
    let mut decls = decl::read(&tree, registry, &mut diags);
    let mut implicit = Vec::new();
    let declares_report = decls.stages.iter().any(
        |s| matches!(&s.body, decl::DeclBody::Builtin { uses } if uses == "report.html"),
    );
    if add_report && !declares_report && registry.find("report.html").is_some() {
        let mut name = IMPLICIT_REPORT.to_string();
        while decls.stages.iter().any(|s| s.name == name) {
            name.push('_');
        }
        let mut report = decl::StageDecl::new(
            name.clone(),
            Span::default(),
            decl::DeclBody::Builtin {
                uses: "report.html".into(),
            },
        );
        report.inputs.push(decl::InputDecl {
            port: "artifacts".into(),
            port_span: Span::default(),
            refs: vec![decl::RefDecl::Everything {
                span: Span::default(),
            }],
        });
        decls.stages.push(report);
        implicit.push(name);
    }
    let resolved = resolve::resolve(&decls, registry, &mut diags);
    if !diags.is_empty() {
        diags.sort_by_key(|d| d.span.map(|s| (s.line, s.col)).unwrap_or((usize::MAX, 0)));
        return Err(invalid(source, diags));
    }
    let mut pipeline = Pipeline {
        file: file.to_path_buf(),
        root: root.to_path_buf(),
        source,
        params: decls.params_values(),
        instances: resolved,
        implicit,
        slurm: decls.slurm.clone(),
    };
    let wants: Vec<usize> = (0..pipeline.instances.len())
        .filter(|&i| {
            matches!(&pipeline.instances[i].body, Body::Builtin { name, .. }
                if registry.find(name).is_some_and(|b| b.reads_provenance))
        })
        .collect();
    if !wants.is_empty() {
        let graph = crate::dag::stage_graph(&pipeline);
        for i in wants {
            let p = provenance_of(&pipeline, i, &graph);
            pipeline.instances[i].provenance = Some(p);
        }
    }
    Ok(pipeline)
}

/// The provenance of instance `i`'s inputs (without digests) and the pipeline's stage graph.
fn provenance_of(
    p: &Pipeline,
    i: usize,
    graph: &azimuth_stage_api::graph::StageGraph,
) -> azimuth_stage_api::provenance::Provenance {
    use azimuth_stage_api::provenance::{Provenance, Source};
    let inst = &p.instances[i];
    let inputs = inst
        .inputs
        .iter()
        .map(|input| {
            let sources = input
                .sources
                .iter()
                .map(|s| match s {
                    InputSource::External { path } => Source {
                        path: path.clone(),
                        ..Source::default()
                    },
                    InputSource::Upstream { instance, output } => {
                        let up = &p.instances[*instance];
                        let file = up
                            .outputs
                            .iter()
                            .find(|o| &o.name == output)
                            .map_or(output.as_str(), |o| o.path.as_str());
                        let dir = p.out_dir(*instance);
                        Source {
                            instance: Some(up.name.clone()),
                            stage: Some(up.stage.clone()),
                            uses: Some(match &up.body {
                                Body::Builtin { name, .. } => name.clone(),
                                Body::Cmd { argv } => format!(
                                    "cmd {}",
                                    argv.first().map(String::as_str).unwrap_or("")
                                ),
                            }),
                            output: Some(output.clone()),
                            path: format!("{}/{file}", dir.display()),
                            instances: p.instances.iter().filter(|j| j.stage == up.stage).count(),
                            digest: None,
                            size: None,
                        }
                    }
                })
                .collect();
            (input.port.clone(), sources)
        })
        .collect();
    Provenance {
        pipeline: p
            .file
            .file_name()
            .map_or_else(|| p.file.display().to_string(), |f| f.to_string_lossy().into_owned()),
        graph: graph.clone(),
        inputs,
    }
}

#[cfg(test)]
mod tests;
