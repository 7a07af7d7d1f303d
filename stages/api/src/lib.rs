//! The contract between Azimuth's orchestrator and its built-in stages, with no libtorch in it:
//!
//! - [`catalogue`]: static metadata of every built-in stage (name, `version`, kind, inputs,
//!   outputs, typed param schema, which toolchain facts enter its key). The orchestrator validates
//!   `pipeline.yaml` against it before anything runs.
//! - [`StageContext`] / [`StageError`]: what a stage receives and how it fails.
//! - [`job`]: the job file the orchestrator writes and `azimuth-worker` reads.
//! - [`device`]: resolving `auto` to cpu/cuda/mps without loading libtorch (the device enters keys).
//! - [`graph`]: the stage graph and its SVG drawing (`azimuth dag --format svg`, `report.html`).
//! - [`provenance`]: where a stage's input artifacts came from, for stages that read it.
//! - [`inspect`] (feature `hdf5`): header-only HDF5 inspection for `azimuth show`.
//!
//! The implementations live in `azimuth-stages` (the crate one directory up), which links libtorch
//! into the separate `azimuth-worker` binary; the `azimuth` binary links only this crate, so its
//! start-up never pays libtorch's ~0.35 s load time.

pub mod device;
pub mod graph;
#[cfg(feature = "hdf5")]
pub mod inspect;
pub mod job;
pub mod provenance;
pub mod specs;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Whether a stage makes expensive tensors or cheap reports; only a default that users may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Generator,
    Analyzer,
}

/// The type of one param. Values arrive as JSON after YAML parsing and global-param interpolation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// A whole number within the inclusive bounds.
    Int {
        min: i64,
        max: i64,
    },
    /// A finite float within the inclusive bounds (integers are accepted and widened).
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    Str,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A non-empty list of whole numbers within the bounds.
    IntList {
        min: i64,
        max: i64,
    },
    /// A non-empty list of finite floats.
    FloatList,
}

/// One declared param of a built-in stage.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// The default as a JSON literal (`"42"`, `"\"cpu\""`, `"[1, 2]"`); `None` makes it required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// One declared input or output port.
#[derive(Debug, Clone, Copy)]
pub struct PortSpec {
    pub name: &'static str,
    pub doc: &'static str,
    /// Inputs only: accepts several artifacts at once (e.g. every instance of a sweep).
    pub many: bool,
    /// Inputs only: may be left out.
    pub optional: bool,
    /// Outputs only: the file-name extension of the artifact (`"png"`, `"csv"`, `"json"`,
    /// `"safetensors"`), so `out/<stage>/<name>.<ext>` opens in the right program; `""` for
    /// directories and for inputs.
    pub ext: &'static str,
}

impl PortSpec {
    /// The output's file name: `name.ext`, or `name` when `ext` is empty.
    pub fn file_name(&self) -> String {
        if self.ext.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", self.name, self.ext)
        }
    }
}

/// Static metadata of one built-in stage.
#[derive(Debug, Clone, Copy)]
pub struct StageSpec {
    /// Dotted name used in `uses:`, e.g. `tensor.random`.
    pub name: &'static str,
    /// Bumped whenever output bytes for the same inputs and params could change; enters the key.
    pub version: u32,
    pub kind: StageKind,
    pub summary: &'static str,
    pub inputs: &'static [PortSpec],
    pub outputs: &'static [PortSpec],
    pub params: &'static [ParamSpec],
    /// The libtorch version enters the key (the stage computes with libtorch).
    pub uses_torch: bool,
    /// The device kind (cpu/cuda/mps) enters the key (results differ between devices).
    pub device_dependent: bool,
    /// The stage receives the provenance of its inputs and the pipeline's stage graph (see
    /// [`provenance`]); both enter its key, since they end up in its outputs.
    pub reads_provenance: bool,
}

impl ParamType {
    /// Checks that `value` (JSON, after YAML parsing) has this type and lies within its bounds.
    /// The message says what was expected, without naming the param (callers add that).
    pub fn check(&self, value: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value;
        fn int_in(v: &Value, min: i64, max: i64) -> Result<(), String> {
            let Some(n) = v.as_i64() else {
                return Err(match v.as_u64() {
                    Some(_) => format!("expected a whole number from {min} to {max}, got {v}"),
                    None => format!("expected a whole number, got {}", describe(v)),
                });
            };
            if n < min || n > max {
                return Err(format!(
                    "expected a whole number from {min} to {max}, got {n}"
                ));
            }
            Ok(())
        }
        fn float_of(v: &Value) -> Result<f64, String> {
            match v.as_f64() {
                Some(x) if x.is_finite() => Ok(x),
                _ => Err(format!("expected a finite number, got {}", describe(v))),
            }
        }
        match *self {
            ParamType::Int { min, max } => int_in(value, min, max),
            ParamType::Float { min, max } => {
                let x = float_of(value)?;
                if x < min || x > max {
                    return Err(format!("expected a number from {min} to {max}, got {x}"));
                }
                Ok(())
            }
            ParamType::Bool => match value {
                Value::Bool(_) => Ok(()),
                v => Err(format!("expected true or false, got {}", describe(v))),
            },
            ParamType::Str => match value {
                Value::String(_) => Ok(()),
                v => Err(format!("expected a string, got {}", describe(v))),
            },
            ParamType::Choice(choices) => match value {
                Value::String(s) if choices.contains(&s.as_str()) => Ok(()),
                v => Err(format!(
                    "expected one of {}, got {}",
                    choices
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    describe(v)
                )),
            },
            ParamType::IntList { min, max } => match value {
                Value::Array(items) if !items.is_empty() => {
                    items.iter().enumerate().try_for_each(|(i, v)| {
                        int_in(v, min, max).map_err(|e| format!("item {i}: {e}"))
                    })
                }
                v => Err(format!(
                    "expected a non-empty list of whole numbers, got {}",
                    describe(v)
                )),
            },
            ParamType::FloatList => match value {
                Value::Array(items) if !items.is_empty() => {
                    items.iter().enumerate().try_for_each(|(i, v)| {
                        float_of(v).map(drop).map_err(|e| format!("item {i}: {e}"))
                    })
                }
                v => Err(format!(
                    "expected a non-empty list of numbers, got {}",
                    describe(v)
                )),
            },
        }
    }
}

/// A short description of a JSON value for error messages: the value itself when small.
fn describe(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        let kind = match v {
            serde_json::Value::Array(_) => "a list",
            serde_json::Value::Object(_) => "a mapping",
            serde_json::Value::String(_) => "a long string",
            _ => "a value",
        };
        kind.to_string()
    }
}

impl ParamSpec {
    /// The declared default parsed from its JSON literal; `None` for required params.
    /// An `Err` means the catalogue itself is broken (a test guards against it).
    pub fn default_value(&self) -> Option<Result<serde_json::Value, String>> {
        self.default.map(|text| {
            serde_json::from_str(text)
                .map_err(|e| format!("default of param `{}` is not valid JSON: {e}", self.name))
        })
    }
}

impl StageSpec {
    /// The declared param called `name`, if any.
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The declared input port called `name`, if any.
    pub fn input(&self, name: &str) -> Option<&'static PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// The declared output port called `name`, if any.
    pub fn output(&self, name: &str) -> Option<&'static PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }
}

/// Every built-in stage, in a stable order.
pub fn catalogue() -> &'static [StageSpec] {
    specs::all()
}

/// The built-in stage called `name`, if any.
pub fn find(name: &str) -> Option<&'static StageSpec> {
    catalogue().iter().find(|s| s.name == name)
}

/// The libtorch version the worker is built against (a toolchain fact that enters keys of stages
/// with `uses_torch`). Known at compile time, so the orchestrator never loads libtorch to learn it.
pub const LIBTORCH_VERSION: &str = "2.13.0";

/// Everything a built-in stage receives. Paths are absolute; the working directory is the stage's
/// staging directory. Outputs do not exist yet; the stage must create each one (a file, or a
/// directory for directory outputs) and nothing else outside the staging directory.
#[derive(Debug, Clone)]
pub struct StageContext {
    /// Stage instance name for messages, e.g. `sim[sigma=1e-9]`.
    pub instance: String,
    /// Input port -> artifact paths (one path unless the port is `many`).
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    /// Output port -> the path the stage must create.
    pub outputs: BTreeMap<String, PathBuf>,
    /// Params after validation, with defaults filled in.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Resolved device kind: `cpu`, `cuda` or `mps` (see [`device`]).
    pub device: String,
    /// Threads the stage may use (libtorch intra-op and rayon).
    pub threads: usize,
}

/// A built-in stage failed; the message says what and, where possible, what to do.
#[derive(Debug)]
pub struct StageError(pub String);

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StageError {}

/// Reports a running stage's progress: one short line (e.g. `step 120/1000 loss 2.31 45.2
/// steps/s`) that `azimuth run` shows beside the stage's spinner. The orchestrator names the file
/// in `$AZIMUTH_PROGRESS` (command stages may write it too); the line replaces the previous one
/// atomically (temp file + rename). Outside a run, or on any error, nothing happens: progress is
/// advisory and never fails a stage.
pub fn report_progress(line: &str) {
    let Some(path) = std::env::var_os("AZIMUTH_PROGRESS") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, format!("{line}\n")).is_ok() && std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The message of a caught panic (`std::panic::catch_unwind`'s payload), for an error that says
/// what happened; libtorch (through tch) and the HDF5 bindings report some failures by panicking.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
