//! The `tensor.*` family: stages that make and measure weight-like matrices stored as
//! safetensors files.
//!
//! - `tensor.random` (generator): a seeded Gaussian matrix made with libtorch; it lives in the
//!   `azimuth-stages-torch` crate (`stages/torch/src/random.rs`), which the worker loads on demand.
//! - [`summary`] (`tensor.summary`, analyzer): per-tensor statistics as JSON, without libtorch.
//!
//! Each stage's metadata (`SPEC`) lives in `azimuth-stage-api` (`specs/tensor.rs`), which the
//! orchestrator reads without libtorch; its `run` lives here. [`stats`] holds the summary's arithmetic, kept apart so it can be tested on
//! hand-made byte buffers.

pub(crate) mod stats;
pub(crate) mod summary;

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not a `tensor.*` stage.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "tensor.summary" => summary::run(ctx),
        _ => return None,
    })
}
