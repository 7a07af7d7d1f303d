//! Typed access to a stage's params, inputs and outputs from a [`StageContext`], with errors that
//! name the stage instance. Used by every stage's `run`.
//!
//! The orchestrator validates params before anything runs and fills in defaults; this module
//! checks again (cheaply) against the stage's `SPEC`, so a stage called directly (tests, the worker
//! fed a hand-written job file) gets the same defaults and the same clear errors instead of a
//! panic or a silently wrong value.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{StageContext, StageError, StageSpec};

/// A stage's view of its context: the context plus the stage's own metadata.
pub struct Params<'a> {
    pub spec: &'static StageSpec,
    pub ctx: &'a StageContext,
}

impl<'a> Params<'a> {
    /// Wraps `ctx` for the stage `spec`, rejecting params the stage does not declare.
    pub fn new(spec: &'static StageSpec, ctx: &'a StageContext) -> Result<Self, StageError> {
        let p = Params { spec, ctx };
        let passed_by_azimuth =
            |k: &str| spec.reads_provenance && k == azimuth_stage_api::provenance::PARAM;
        if let Some(unknown) = ctx
            .params
            .keys()
            .find(|k| spec.param(k).is_none() && !passed_by_azimuth(k))
        {
            let known: Vec<String> = spec
                .params
                .iter()
                .map(|p| format!("`{}`", p.name))
                .collect();
            return Err(p.error(format!(
                "unknown param `{unknown}`; `{}` accepts {}",
                spec.name,
                known.join(", ")
            )));
        }
        Ok(p)
    }

    /// An error that names the stage instance and the stage.
    pub fn error(&self, msg: impl std::fmt::Display) -> StageError {
        StageError(format!(
            "stage `{}` ({}): {msg}",
            self.ctx.instance, self.spec.name
        ))
    }

    /// Writes a small output (JSON, CSV) with mode 0644; errors name the stage instance.
    pub fn write_output(&self, path: &Path, bytes: &[u8]) -> Result<(), StageError> {
        crate::io::write_output(path, bytes).map_err(|e| self.error(e))
    }

    /// Writes `value` as pretty JSON with a trailing newline.
    pub fn write_json<T: serde::Serialize>(
        &self,
        path: &Path,
        value: &T,
    ) -> Result<(), StageError> {
        let bytes = crate::io::json_bytes(value).map_err(|e| self.error(e))?;
        self.write_output(path, &bytes)
    }

    /// The param's value, or its declared default, checked against its declared type.
    fn value(&self, name: &str) -> Result<Value, StageError> {
        let decl = self
            .spec
            .param(name)
            .unwrap_or_else(|| panic!("`{}` reads undeclared param `{name}`", self.spec.name));
        let value = match (self.ctx.params.get(name), decl.default_value()) {
            (Some(v), _) => v.clone(),
            (None, Some(default)) => default.map_err(|e| self.error(e))?,
            (None, None) => {
                return Err(self.error(format!("missing required param `{name}` ({})", decl.doc)))
            }
        };
        decl.ty
            .check(&value)
            .map_err(|e| self.error(format!("param `{name}`: {e}")))?;
        Ok(value)
    }

    pub fn int(&self, name: &str) -> Result<i64, StageError> {
        let v = self.value(name)?;
        Ok(v.as_i64().expect("checked as Int"))
    }

    pub fn float(&self, name: &str) -> Result<f64, StageError> {
        let v = self.value(name)?;
        Ok(v.as_f64().expect("checked as Float"))
    }

    pub fn boolean(&self, name: &str) -> Result<bool, StageError> {
        let v = self.value(name)?;
        Ok(v.as_bool().expect("checked as Bool"))
    }

    /// An `IntList` param.
    pub fn int_list(&self, name: &str) -> Result<Vec<i64>, StageError> {
        let v = self.value(name)?;
        Ok(v.as_array()
            .expect("checked as IntList")
            .iter()
            .map(|x| x.as_i64().expect("checked as IntList"))
            .collect())
    }

    /// A `FloatList` param.
    pub fn float_list(&self, name: &str) -> Result<Vec<f64>, StageError> {
        let v = self.value(name)?;
        Ok(v.as_array()
            .expect("checked as FloatList")
            .iter()
            .map(|x| x.as_f64().expect("checked as FloatList"))
            .collect())
    }

    /// A `Str` or `Choice` param.
    pub fn string(&self, name: &str) -> Result<String, StageError> {
        match self.value(name)? {
            Value::String(s) => Ok(s),
            other => Err(self.error(format!("param `{name}`: expected a string, got {other}"))),
        }
    }

    /// The path the stage must create for output port `port`.
    pub fn output(&self, port: &str) -> Result<&'a Path, StageError> {
        self.ctx
            .outputs
            .get(port)
            .map(PathBuf::as_path)
            .ok_or_else(|| {
                self.error(format!(
                    "no path given for output `{port}` (the job file lacks it)"
                ))
            })
    }

    /// The artifacts connected to input port `port` (at least one).
    pub fn inputs(&self, port: &str) -> Result<&'a [PathBuf], StageError> {
        match self.ctx.inputs.get(port) {
            Some(paths) if !paths.is_empty() => Ok(paths),
            _ => Err(self.error(format!(
                "input `{port}` is empty; connect at least one artifact to it in pipeline.yaml"
            ))),
        }
    }

    /// The artifacts connected to an optional input port (empty when it is not connected).
    pub fn optional_inputs(&self, port: &str) -> &'a [PathBuf] {
        self.ctx.inputs.get(port).map_or(&[], Vec::as_slice)
    }
}
