//! The `corpus.*` stages (specs in `azimuth_stage_api::specs::corpus`): `corpus.text` cleans a
//! text file (`text.rs`), `corpus.tokenize` turns it into a token stream with a vocabulary,
//! live/dead masks and a census (`tokenize.rs`), using a GPT-2-style pre-tokenizer
//! (`pretokenize.rs`) and an incremental byte-level BPE trainer and encoder (`bpe.rs`). This file
//! holds what both stages share: reading the one input file and describing bytes.

use std::path::Path;

use crate::params::Params;
use crate::{StageContext, StageError};

pub(crate) mod bpe;
pub(crate) mod pretokenize;
mod text;
mod tokenize;

/// The family's part of `impls::dispatch`: `None` if `name` is not a `corpus.*` stage.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "corpus.text" => text::run(ctx),
        "corpus.tokenize" => tokenize::run(ctx),
        _ => return None,
    })
}

/// Largest input accepted (token ids and offsets are kept in 32-bit integers).
const MAX_INPUT_BYTES: u64 = 1 << 31;

/// Reads the single file on input `port`, whole. Errors name the port and the file.
fn read_input<'p>(p: &Params<'p>, port: &str) -> Result<(&'p Path, Vec<u8>), StageError> {
    let inputs = p.inputs(port)?;
    if inputs.len() != 1 {
        return Err(p.error(format!(
            "input `{port}` takes one file, got {}; connect a single text file",
            inputs.len()
        )));
    }
    let path = inputs[0].as_path();
    let meta = std::fs::metadata(path).map_err(|e| {
        p.error(format!(
            "cannot read `{}` (input `{port}`): {e}; check the path in pipeline.yaml",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(p.error(format!(
            "`{}` (input `{port}`) is not a file; connect a text file",
            path.display()
        )));
    }
    if meta.len() > MAX_INPUT_BYTES {
        return Err(p.error(format!(
            "`{}` (input `{port}`) has {} bytes, more than the {} this stage accepts; split the \
             corpus",
            path.display(),
            meta.len(),
            MAX_INPUT_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        p.error(format!(
            "cannot read `{}` (input `{port}`): {e}",
            path.display()
        ))
    })?;
    Ok((path, bytes))
}

/// The file name of `path` (no directories: outputs must not depend on where inputs live).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A readable name for one byte: the character itself when printable ASCII, else an escape
/// (`\n`, `\r`, `\t`, `\x00`, `\xe2`).
pub(crate) fn byte_label(b: u8) -> String {
    match b {
        b'\n' => "\\n".into(),
        b'\r' => "\\r".into(),
        b'\t' => "\\t".into(),
        b' ' => " ".into(),
        0x21..=0x7e => (b as char).to_string(),
        _ => format!("\\x{b:02x}"),
    }
}

/// Occurrences of every byte value.
fn byte_histogram(bytes: &[u8]) -> [u64; 256] {
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    counts
}
