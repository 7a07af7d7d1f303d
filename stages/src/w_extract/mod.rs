//! The `w_extract` family: `w.extract` copies the unembedding matrix W (row i = token id i) out
//! of a model checkpoint, without libtorch, reading only W's bytes through a memory map.
//!
//! - [`extract`]: the stage's `run`: finds the checkpoint's format, writes both outputs (`w`, a
//!   one-tensor safetensors file with sorted provenance metadata, and `vocab`, JSON).
//! - [`hf`]: Hugging Face layouts (single `model.safetensors`, or sharded with
//!   `model.safetensors.index.json`; `config.json`'s `tie_word_embeddings`; `tokenizer.json`).
//! - [`gguf`]: a bounds-checked GGUF v2/v3 reader and the exact Q8_0 → F32 dequantization.
//! - [`synthetic`]: `w.synthetic_checkpoint`, a Qwen-shaped sharded checkpoint with planted,
//!   exactly known dead-token structure (the fixture for exact-recovery tests and benchmarks).
//!
//! The stage's metadata (`EXTRACT`) lives in `azimuth-stage-api` (`specs/w_extract.rs`).

pub(crate) mod extract;
pub(crate) mod gguf;
pub(crate) mod hf;
pub(crate) mod synthetic;

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.extract" => extract::run(ctx),
        "w.synthetic_checkpoint" => synthetic::run(ctx),
        _ => return None,
    })
}
