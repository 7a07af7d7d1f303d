//! `tensor.summary`: statistics of the tensors in one or more safetensors files, as a JSON report.
//!
//! Reads each input by mmap (no libtorch), in the order the inputs are given, and for each
//! selected tensor (sorted by name) computes what `tensor::stats` documents. The report is pretty
//! JSON with a fixed key order (serialize-only structs, not maps) and a trailing newline; floats
//! are written by serde_json's shortest round-trip formatting and NaN never appears (non-finite
//! values are counted separately). Files are identified by position and file name only, never by
//! absolute path, so the report's bytes do not depend on where the cache lives.
//!
//! Output shape (`format` is bumped together with `SPEC.version` when the layout changes):
//! `{"format": 1, "tensor": <param or null>, "files": [{"input": 0, "file": "a.safetensors",
//! "metadata": {..}, "tensors": [{"name", "dtype", "shape", "elements", "mean", "std", "min",
//! "max", "nan", "inf", "rows", "row_length", "row_norm": {"mean", "min", "max"},
//! "distinct_rows", "largest_identical_group"}]}]}`.

pub(crate) use imp::run;

mod imp {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde::Serialize;

    use crate::io::MappedSafetensors;
    use crate::params::Params;
    use crate::tensor::stats::{tensor_stats, TensorStats};
    use crate::{StageContext, StageError};
    use azimuth_stage_api::specs::tensor::SUMMARY as SPEC;

    /// Bumped with `SPEC.version` whenever the report's layout changes.
    const FORMAT: u32 = 1;

    #[derive(Serialize)]
    struct Report {
        format: u32,
        tensor: Option<String>,
        files: Vec<FileReport>,
    }

    #[derive(Serialize)]
    struct FileReport {
        input: usize,
        file: String,
        metadata: BTreeMap<String, String>,
        tensors: Vec<TensorStats>,
    }

    pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
        let p = Params::new(&SPEC, ctx)?;
        let only = p.string("tensor")?;
        let inputs = p.inputs("tensors")?;
        let out = p.output("summary")?;

        let mut files = Vec::with_capacity(inputs.len());
        for (index, path) in inputs.iter().enumerate() {
            files.push(summarize_file(&p, index, path, &only)?);
        }
        let report = Report {
            format: FORMAT,
            tensor: (!only.is_empty()).then_some(only),
            files,
        };
        p.write_json(out, &report)
    }

    fn summarize_file(
        p: &Params<'_>,
        index: usize,
        path: &Path,
        only: &str,
    ) -> Result<FileReport, StageError> {
        let mapped = MappedSafetensors::open(path).map_err(|e| p.error(input_hint(e)))?;
        let st = mapped.parse(path).map_err(|e| p.error(input_hint(e)))?;
        let metadata = mapped.metadata(path).map_err(|e| p.error(input_hint(e)))?;
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        if !only.is_empty() {
            if !names.contains(&only) {
                let shown: Vec<String> = names.iter().take(20).map(|n| format!("`{n}`")).collect();
                let more = if names.len() > 20 {
                    format!(" and {} more", names.len() - 20)
                } else {
                    String::new()
                };
                return Err(p.error(format!(
                    "`{}` has no tensor `{only}`; it has {}{more}; set param `tensor` to one of them, \
                     or to \"\" for all",
                    path.display(),
                    if shown.is_empty() { "no tensors".to_string() } else { shown.join(", ") }
                )));
            }
            names = vec![only];
        }
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let view = st.tensor(name).map_err(|e| {
                p.error(format!(
                    "`{}`: cannot read tensor `{name}`: {e}",
                    path.display()
                ))
            })?;
            let stats = tensor_stats(name, &view).map_err(|e| {
                p.error(format!(
                    "`{}`, tensor `{name}`: {e}; select another tensor with param `tensor`",
                    path.display()
                ))
            })?;
            tensors.push(stats);
        }
        let file = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Ok(FileReport {
            input: index,
            file,
            metadata,
            tensors,
        })
    }

    fn input_hint(e: String) -> String {
        format!(
            "{e}; input `tensors` must be safetensors files (e.g. the output of `tensor.random`)"
        )
    }
}
