//! The `w_tokens` family of built-in stages (metadata in `azimuth-stage-api`, `specs/w_tokens.rs`).

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, _ctx: &StageContext) -> Option<Result<(), StageError>> {
    match name {
        _ => None,
    }
}
