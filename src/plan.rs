//! Decides, for every instance, whether it is fresh, restorable or dirty, and why.
//!
//! Walks instances in topological order. An instance's key ingredients need the content digest of
//! each input: external files come from the [`StatMemo`] (stat calls, bytes only when a file's
//! identity changed), upstream outputs from the upstream's run record, so no artifact is read.
//! Then:
//! - a record for the key with all objects present → **fresh** (workspace copies current) or
//!   **restorable** (some workspace copy missing: relink, nothing runs);
//! - otherwise **dirty**, with reasons from diffing the key ingredients against the instance's last
//!   run (its pointer), or `upstream dirty` when an input's digest is not known yet.
//!
//! Because keys use input digests and not upstream keys, an upstream that re-runs and produces the
//! same bytes leaves its consumers fresh (early cutoff); `exec` re-plans each instance when it
//! becomes ready, with the digests its upstreams actually produced.

use std::collections::BTreeMap;

use crate::fingerprint::{diff, KeyRecord, Reason, StageIdentity, CACHE_FORMAT};
use crate::hash::{Digest, StatMemo};
use crate::registry;
use crate::spec::{Body, InputSource, Pipeline};
use crate::store::{RunRecord, Stamp, Store};
use crate::workspace::{self, CopyState};

#[derive(Debug, Clone)]
pub enum State {
    Fresh {
        record: RunRecord,
        modified: Vec<String>,
    },
    Restorable {
        record: RunRecord,
        missing: Vec<String>,
        modified: Vec<String>,
    },
    Dirty {
        reasons: Vec<Reason>,
        ingredients: Option<KeyRecord>,
    },
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Fresh { .. } => "fresh",
            State::Restorable { .. } => "restorable",
            State::Dirty { .. } => "dirty",
        }
    }

    pub fn record(&self) -> Option<&RunRecord> {
        match self {
            State::Fresh { record, .. } | State::Restorable { record, .. } => Some(record),
            State::Dirty { .. } => None,
        }
    }
}

/// Settings that change keys but are not in the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--device` / `AZIMUTH_DEVICE`: overrides every stage's device.
    pub device_override: Option<String>,
}

#[derive(Debug)]
pub enum PlanError {
    MissingInput {
        instance: String,
        port: String,
        path: String,
        error: String,
    },
    Device {
        instance: String,
        error: String,
    },
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::MissingInput { instance, port, path, error } => write!(
                f,
                "input `{port}` of stage `{instance}`: cannot read `{path}`: {error}\n  = help: create the file, or fix `path:` in the pipeline (paths are relative to the pipeline's directory)"
            ),
            PlanError::Device { instance, error } => write!(f, "stage `{instance}`: {error}"),
        }
    }
}

/// The key ingredients of an instance, given its inputs' digests (in port order).
pub fn ingredients(
    pipeline: &Pipeline,
    idx: usize,
    inputs: BTreeMap<String, Vec<Digest>>,
    settings: &Settings,
) -> Result<KeyRecord, PlanError> {
    let inst = &pipeline.instances[idx];
    let stage = match &inst.body {
        Body::Builtin { name, version } => StageIdentity::Builtin {
            name: name.clone(),
            version: *version,
        },
        Body::Cmd { argv } => StageIdentity::Cmd { argv: argv.clone() },
    };
    let mut toolchain = BTreeMap::new();
    if inst.uses_torch {
        toolchain.insert(
            "libtorch".to_string(),
            registry::libtorch_version().to_string(),
        );
    }
    if inst.device_dependent {
        let requested = settings
            .device_override
            .as_deref()
            .or(inst.device.as_deref())
            .unwrap_or("auto");
        let dev = registry::resolve_device(requested).map_err(|error| PlanError::Device {
            instance: inst.name.clone(),
            error,
        })?;
        toolchain.insert("device".to_string(), dev.to_string());
    }
    Ok(KeyRecord {
        format: CACHE_FORMAT,
        stage,
        params: inst.params.clone(),
        inputs,
        outputs: inst
            .outputs
            .iter()
            .map(|o| (o.name.clone(), o.path.clone()))
            .collect(),
        env: inst
            .env
            .iter()
            .map(|e| (e.clone(), std::env::var(e).ok()))
            .collect(),
        toolchain,
        provenance: inst
            .provenance
            .as_ref()
            .map(|p| serde_json::to_value(p).expect("provenance serializes")),
    })
}

/// Input digests of an instance; `Err(upstream name)` if some upstream has no known outputs yet.
pub fn input_digests(
    pipeline: &Pipeline,
    idx: usize,
    memo: &mut StatMemo,
    upstream: &dyn Fn(usize) -> Option<RunRecord>,
) -> Result<Result<BTreeMap<String, Vec<Digest>>, String>, PlanError> {
    let inst = &pipeline.instances[idx];
    let mut out = BTreeMap::new();
    for input in &inst.inputs {
        let mut ds = Vec::new();
        for src in &input.sources {
            match src {
                InputSource::External { path } => {
                    let abs = pipeline.root.join(path);
                    let d = memo
                        .path_digest(&abs)
                        .map_err(|e| PlanError::MissingInput {
                            instance: inst.name.clone(),
                            port: input.port.clone(),
                            path: path.clone(),
                            error: e.to_string(),
                        })?;
                    ds.push(d);
                }
                InputSource::Upstream { instance, output } => match upstream(*instance)
                    .and_then(|r| r.outputs.get(output).map(|e| e.digest))
                {
                    Some(d) => ds.push(d),
                    None => return Ok(Err(pipeline.instances[*instance].name.clone())),
                },
            }
        }
        out.insert(input.port.clone(), ds);
    }
    Ok(Ok(out))
}

/// Classifies an instance whose key ingredients are known.
pub fn classify(
    pipeline: &Pipeline,
    idx: usize,
    ing: KeyRecord,
    store: &Store,
    memo: &mut StatMemo,
    forced: bool,
) -> State {
    let inst = &pipeline.instances[idx];
    let key = ing.key();
    if forced {
        return State::Dirty {
            reasons: vec![Reason::Forced],
            ingredients: Some(ing),
        };
    }
    if let Some(record) = store.read_record(&key) {
        if let Err(output) = store.record_complete(&record) {
            return State::Dirty {
                reasons: vec![Reason::CachedOutputMissing { output }],
                ingredients: Some(ing),
            };
        }
        let out_dir = pipeline.root.join(pipeline.out_dir(idx));
        let last = store.read_pointer(&inst.name);
        let pointer = last.clone().filter(|p| p.key == key);
        let mut missing = Vec::new();
        let mut modified = Vec::new();
        for o in &inst.outputs {
            let Some(entry) = record.outputs.get(&o.name) else {
                continue;
            };
            let path = workspace::output_path(&out_dir, &o.path);
            let stamp = pointer
                .as_ref()
                .and_then(|p| p.materialized.get(&o.name).copied());
            match workspace::state(&path, entry, store, memo, stamp) {
                Ok(CopyState::Current) => {}
                Ok(CopyState::Missing) => missing.push(o.name.clone()),
                // A copy azimuth itself put there for another run (e.g. before a param was
                // switched back) is stale, not the user's: restore over it.
                Ok(CopyState::Modified)
                    if last
                        .as_ref()
                        .and_then(|p| p.materialized.get(&o.name).copied())
                        .is_some_and(|s| Some(s) == Stamp::of(&path)) =>
                {
                    missing.push(o.name.clone())
                }
                Ok(CopyState::Modified) | Err(_) => modified.push(o.name.clone()),
                Ok(CopyState::ModifiedInPlace) => {
                    return State::Dirty {
                        reasons: vec![Reason::OutputModifiedInPlace {
                            output: o.name.clone(),
                            object: entry.digest,
                        }],
                        ingredients: Some(ing),
                    };
                }
            }
        }
        return if missing.is_empty() {
            State::Fresh { record, modified }
        } else {
            State::Restorable {
                record,
                missing,
                modified,
            }
        };
    }
    let reasons = match store.last_record(&inst.name) {
        None => vec![Reason::NeverRun],
        Some(last) => {
            let r = diff(&last.ingredients, &ing);
            if r.is_empty() {
                vec![Reason::NoRecord]
            } else {
                r
            }
        }
    };
    State::Dirty {
        reasons,
        ingredients: Some(ing),
    }
}

fn trace_state(name: &str, state: &State) {
    match state {
        State::Dirty {
            reasons,
            ingredients,
        } => tracing::debug!(
            stage = name,
            key = ?ingredients.as_ref().map(|i| i.key()),
            reasons = %reasons.iter().map(|r| r.sentence()).collect::<Vec<_>>().join("; "),
            "dirty"
        ),
        other => {
            tracing::debug!(stage = name, key = ?other.record().map(|r| r.key), "{}", other.label())
        }
    }
}

/// Plans every instance (for `status`, `why` and `run --dry-run`).
pub fn plan_all(
    pipeline: &Pipeline,
    store: &Store,
    memo: &mut StatMemo,
    settings: &Settings,
    forced: &[bool],
) -> Result<Vec<State>, PlanError> {
    let mut states: Vec<State> = Vec::with_capacity(pipeline.instances.len());
    for idx in 0..pipeline.instances.len() {
        let lookup = |u: usize| states.get(u).and_then(|s: &State| s.record().cloned());
        let state = match input_digests(pipeline, idx, memo, &lookup)? {
            Err(up) => State::Dirty {
                reasons: vec![Reason::UpstreamDirty { stage: up }],
                ingredients: None,
            },
            Ok(inputs) => {
                let ing = ingredients(pipeline, idx, inputs, settings)?;
                classify(
                    pipeline,
                    idx,
                    ing,
                    store,
                    memo,
                    forced.get(idx).copied().unwrap_or(false),
                )
            }
        };
        trace_state(&pipeline.instances[idx].name, &state);
        states.push(state);
    }
    Ok(states)
}

/// The workspace path of an instance's output (absolute).
pub fn workspace_output(
    pipeline: &Pipeline,
    idx: usize,
    output: &str,
) -> Option<std::path::PathBuf> {
    let o = pipeline.instances[idx]
        .outputs
        .iter()
        .find(|o| o.name == output)?;
    Some(workspace::output_path(
        &pipeline.root.join(pipeline.out_dir(idx)),
        &o.path,
    ))
}
