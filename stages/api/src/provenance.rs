//! What a stage that `reads_provenance` learns beyond the bytes of its inputs: where each input
//! artifact came from (instance, stage, what that stage runs, output, file, digest, size) and the
//! pipeline's stage graph. The `report.html` stage needs it to caption a figure with the instance
//! and digest it shows.
//!
//! The orchestrator builds it when it loads the pipeline (names and graph; it enters the stage's
//! key then, since it ends up in the stage's outputs), completes it with the digests and sizes of
//! the upstream artifacts when it writes the job (those are already in the key as input
//! digests), and passes it inside the params under [`PARAM`], which no declared param can be
//! called (declared names never start with `__`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::StageGraph;

/// The params key the provenance arrives under.
pub const PARAM: &str = "__provenance";

/// The provenance of a stage's inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The pipeline file's name (not its path: moving a checkout keeps keys).
    pub pipeline: String,
    /// Every declared stage of the pipeline and the edges between them.
    pub graph: StageGraph,
    /// Input port → one source per artifact, in the order the stage receives the paths.
    pub inputs: BTreeMap<String, Vec<Source>>,
}

/// Where one input artifact comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The upstream instance (`valley[law=ball,scale=1e-9]`); `None` for an external file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Its declared stage (`valley`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What the stage runs: a built-in's name (`sim.monument_valley`) or `cmd PROGRAM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// The output's name (`summary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Where users see it: `out/<stage>/<file>` for outputs, the path for external files.
    pub path: String,
    /// How many instances the upstream stage has (its sweep's size; 1 when it does not sweep).
    #[serde(default)]
    pub instances: usize,
    /// `b3:<hex>`, filled in when the job is written (upstream artifacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Bytes (files) or total bytes (directories), filled in with the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl Provenance {
    /// The provenance passed in `params`, for a stage that reads it.
    pub fn from_params(
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Provenance, String> {
        let v = params.get(PARAM).ok_or_else(|| {
            format!(
                "no `{PARAM}` in the params: this stage reads the provenance of its inputs, which \
                 `azimuth run` passes; run it through azimuth"
            )
        })?;
        serde_json::from_value(v.clone()).map_err(|e| format!("`{PARAM}` is not valid: {e}"))
    }
}
