//! `pipeline.lock`: the resolved key ingredients and output digests of every stage instance,
//! written next to `pipeline.yaml` after each `run` and meant to be committed with it (like
//! `dvc.lock`). It documents exactly what produced each artifact, lets reviewers see in a diff
//! which params and digests moved, and is a GC root: `cache gc` keeps what it references.
//!
//! YAML through `serde_yaml` (the maintained `serde_norway` fork); deterministic: instances in
//! pipeline order, maps sorted, no timestamps, so an unchanged pipeline rewrites identical bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::fingerprint::StageIdentity;
use crate::hash::Digest;
use crate::spec::Pipeline;
use crate::store::{ArtifactKind, RunRecord};

pub const LOCK_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LockFile {
    pub version: u32,
    /// Instance name → what its last successful run consumed and produced.
    pub stages: BTreeMap<String, LockedStage>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LockedStage {
    pub key: Digest,
    /// `name@version` of a built-in stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// The command template of a `cmd` stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Json>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Vec<Digest>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub toolchain: BTreeMap<String, String>,
    /// Digest of the provenance a report-like stage read (its key ingredient), not the
    /// provenance itself, which repeats the pipeline's graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Digest>,
    pub outputs: BTreeMap<String, LockedOutput>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct LockedOutput {
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "is_file")]
    pub kind: Option<ArtifactKind>,
}

fn is_file(k: &Option<ArtifactKind>) -> bool {
    k.is_none()
}

pub fn path_for(pipeline: &Pipeline) -> PathBuf {
    let name = pipeline
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    pipeline.root.join(format!("{name}.lock"))
}

pub fn build(pipeline: &Pipeline, records: &BTreeMap<usize, RunRecord>) -> LockFile {
    let mut stages = BTreeMap::new();
    for (i, r) in records {
        let ing = &r.ingredients;
        stages.insert(
            pipeline.instances[*i].name.clone(),
            LockedStage {
                key: r.key,
                uses: match &ing.stage {
                    StageIdentity::Builtin { name, version } => Some(format!("{name}@{version}")),
                    StageIdentity::Cmd { .. } => None,
                },
                cmd: match &ing.stage {
                    StageIdentity::Cmd { argv } => Some(argv.clone()),
                    StageIdentity::Builtin { .. } => None,
                },
                params: ing.params.clone(),
                inputs: ing.inputs.clone(),
                env: ing.env.clone(),
                toolchain: ing.toolchain.clone(),
                provenance: ing.provenance.as_ref().map(|p| {
                    Digest::of_bytes(crate::fingerprint::canonical_json(p).as_bytes())
                }),
                outputs: r
                    .outputs
                    .iter()
                    .map(|(k, e)| {
                        (
                            k.clone(),
                            LockedOutput {
                                digest: e.digest,
                                size: e.size,
                                kind: (e.kind == ArtifactKind::Dir).then_some(e.kind),
                            },
                        )
                    })
                    .collect(),
            },
        );
    }
    LockFile {
        version: LOCK_FORMAT,
        stages,
    }
}

pub fn render(lock: &LockFile) -> String {
    let body = serde_yaml::to_string(lock).expect("lock files serialize");
    format!("# pipeline.lock: written by `azimuth run`; commit it together with the pipeline file.\n{body}")
}

/// Writes the lock file only if its content changed.
pub fn write(path: &Path, lock: &LockFile) -> std::io::Result<()> {
    let text = render(lock);
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    crate::fsutil::write_atomic(path, text.as_bytes())
}

/// Reads a lock file (for GC roots); `Ok(None)` if there is none.
pub fn read(path: &Path) -> Result<Option<LockFile>, String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        Ok(text) => serde_yaml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("`{}` is not a valid lock file: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_round_trip() {
        let lock = LockFile {
            version: 1,
            stages: BTreeMap::from([(
                "gen[std=1.0]".to_string(),
                LockedStage {
                    key: Digest::of_bytes(b"k"),
                    uses: Some("tensor.random@1".into()),
                    cmd: None,
                    params: BTreeMap::from([("std".to_string(), serde_json::json!(1.0))]),
                    inputs: BTreeMap::new(),
                    env: BTreeMap::new(),
                    toolchain: BTreeMap::from([("device".to_string(), "cpu".to_string())]),
                    provenance: None,
                    outputs: BTreeMap::from([(
                        "tensor".to_string(),
                        LockedOutput {
                            digest: Digest::of_bytes(b"t"),
                            size: 3,
                            kind: None,
                        },
                    )]),
                },
            )]),
        };
        let text = render(&lock);
        let back: LockFile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, lock);
    }
}
