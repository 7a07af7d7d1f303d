//! `w.extract`'s `run`: picks the reader for the checkpoint (a directory → Hugging Face layout; a
//! file starting with `GGUF` → GGUF; any other file → a single safetensors file) and writes the
//! two outputs from what the reader found.
//!
//! Output `w` holds one tensor `W` [vocab, hidden], written with the crate's deterministic writer
//! (`io::write_safetensors`: sorted metadata, mode 0644, temp file + rename). Its bytes are the
//! source bytes (no copy beyond the write itself) or, for GGUF Q8_0, the exact F32 dequantization.
//! Metadata names files by basename only, so the output does not depend on where the checkpoint
//! lives. Output `vocab` is `{"format":1,"source":..,"tokens":[..]}` (pretty JSON, trailing
//! newline): `tokens[i]` is the string of token id i or null; its length is the larger of W's row
//! count and the vocabulary's highest id + 1, so every row of W has an entry.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::Dtype;
use serde::Serialize;

use crate::io::{write_safetensors, TensorOut};
use crate::params::Params;
use crate::{StageContext, StageError};
use azimuth_stage_api::specs::w_extract::EXTRACT as SPEC;

/// Bumped with `SPEC.version` whenever the layout of `vocab` changes.
pub(crate) const VOCAB_FORMAT: u32 = 1;

/// Highest token id accepted in a vocabulary (guards allocations sized by ids read from files).
pub(crate) const MAX_TOKEN_ID: u64 = 50_000_000;

/// The matrix a reader found, ready to write.
pub(crate) struct WOut<'a> {
    pub(crate) dtype: Dtype,
    /// `[rows, cols]`: rows = token ids.
    pub(crate) shape: [usize; 2],
    pub(crate) data: &'a [u8],
    /// Provenance (basenames only); `stage`, `dtype` and `shape` are added here.
    pub(crate) meta: BTreeMap<String, String>,
}

/// A checkpoint's vocabulary: token strings by id (`None` where an id has no entry).
#[derive(Default)]
pub(crate) struct Vocab {
    pub(crate) source: Option<String>,
    pub(crate) tokens: Vec<Option<String>>,
}

#[derive(Serialize)]
struct VocabFile<'a> {
    format: u32,
    source: &'a Option<String>,
    tokens: &'a [Option<String>],
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let tensor = p.string("tensor")?;
    let inputs = p.inputs("checkpoint")?;
    if inputs.len() != 1 {
        return Err(p.error(format!(
            "input `checkpoint` takes one artifact, got {}; connect a single checkpoint",
            inputs.len()
        )));
    }
    let path = &inputs[0];
    p.output("w")?;
    p.output("vocab")?;
    let meta = std::fs::metadata(path).map_err(|e| {
        p.error(format!(
            "cannot read checkpoint `{}`: {e}; input `checkpoint` must be a Hugging Face \
             directory, a .safetensors file or a .gguf file",
            path.display()
        ))
    })?;
    if meta.is_dir() {
        let dir = super::hf::hub_entry_snapshot(&p, path)?;
        return super::hf::extract_dir(&p, dir.as_deref().unwrap_or(path), &tensor);
    }
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| p.error(format!("cannot read `{}`: {e}", path.display())))?;
    if n == 4 && &magic == b"GGUF" {
        super::gguf::extract(&p, path, &tensor)
    } else {
        super::hf::extract_file(&p, path, &tensor)
    }
}

/// Writes both outputs. `vocab.tokens` is padded with nulls to W's row count.
pub(crate) fn write_outputs(
    p: &Params<'_>,
    w: WOut<'_>,
    mut vocab: Vocab,
) -> Result<(), StageError> {
    let w_path = p.output("w")?;
    let vocab_path = p.output("vocab")?;
    let mut meta = w.meta;
    meta.insert("stage".into(), format!("{}@{}", SPEC.name, SPEC.version));
    meta.insert("dtype".into(), w.dtype.to_string());
    meta.insert("shape".into(), format!("[{}, {}]", w.shape[0], w.shape[1]));
    write_safetensors(
        w_path,
        &[TensorOut {
            name: "W",
            dtype: w.dtype,
            shape: w.shape.to_vec(),
            data: w.data,
        }],
        &meta,
    )
    .map_err(|e| p.error(format!("{e}; check that the output directory is writable")))?;

    if vocab.source.is_some() && vocab.tokens.len() < w.shape[0] {
        vocab.tokens.resize(w.shape[0], None);
    }
    p.write_json(
        vocab_path,
        &VocabFile {
            format: VOCAB_FORMAT,
            source: &vocab.source,
            tokens: &vocab.tokens,
        },
    )
}

/// The basename of `path` for metadata and messages that must not depend on its location.
pub(crate) fn basename(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// A list of candidate tensors for an error message: `name [r, c] DTYPE`, largest first, at most
/// 40 shown.
pub(crate) fn list_candidates(mut c: Vec<(String, Vec<u64>, String)>) -> String {
    if c.is_empty() {
        return "(the checkpoint has no 2-D tensors)".into();
    }
    c.sort_by(|a, b| {
        let n = |s: &[u64]| s.iter().fold(1u128, |acc, &d| acc * u128::from(d));
        n(&b.1).cmp(&n(&a.1)).then(a.0.cmp(&b.0))
    });
    let total = c.len();
    let mut out: Vec<String> = c
        .iter()
        .take(40)
        .map(|(name, shape, dtype)| {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            format!("`{name}` [{}] {dtype}", dims.join(", "))
        })
        .collect();
    if total > 40 {
        out.push(format!("and {} more", total - 40));
    }
    out.join(", ")
}
