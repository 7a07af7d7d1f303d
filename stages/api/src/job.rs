//! The job file: how the orchestrator describes one stage attempt to the process that runs it
//! (`azimuth __stage JOB`, which for built-in stages `exec`s `azimuth-worker JOB`).
//!
//! JSON, versioned by [`JOB_FORMAT`]; paths are absolute; the stage's working directory is
//! `workdir`, inside its staging directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub const JOB_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobBody {
    Builtin {
        name: String,
    },
    /// argv template; `${inputs.x}`, `${outputs.x}`, `${params.x}` are substituted by the runner.
    Cmd {
        argv: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub format: u32,
    pub instance: String,
    /// The stage's working directory (inside its staging directory).
    pub workdir: PathBuf,
    pub body: JobBody,
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    pub outputs: BTreeMap<String, PathBuf>,
    pub params: serde_json::Map<String, Json>,
    /// Resolved device kind for device-dependent built-ins.
    pub device: Option<String>,
    pub threads: usize,
    /// Variables added to the stage's environment.
    pub env: BTreeMap<String, String>,
    /// For stages that read it: where each input came from (see [`crate::provenance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::provenance::Provenance>,
}

impl Job {
    pub fn read(path: &Path) -> Result<Job, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read job file `{}`: {e}", path.display()))?;
        let job: Job = serde_json::from_slice(&bytes)
            .map_err(|e| format!("job file `{}` is not valid: {e}", path.display()))?;
        if job.format != JOB_FORMAT {
            return Err(format!(
                "job file `{}` has format {}, this build reads {JOB_FORMAT}",
                path.display(),
                job.format
            ));
        }
        Ok(job)
    }

    /// The context a built-in stage receives.
    pub fn context(&self) -> crate::StageContext {
        let mut params = self.params.clone();
        if let Some(p) = &self.provenance {
            params.insert(
                crate::provenance::PARAM.to_string(),
                serde_json::to_value(p).expect("provenance serializes"),
            );
        }
        crate::StageContext {
            instance: self.instance.clone(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            params,
            device: self.device.clone().unwrap_or_else(|| "cpu".into()),
            threads: self.threads.max(1),
        }
    }
}
