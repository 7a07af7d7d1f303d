//! The `movie.*` stages (specs in `azimuth_stage_api::specs::movie`).

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not a `movie.*` stage.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    let _ = (name, ctx); // no stages yet
    None
}
