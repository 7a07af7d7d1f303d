//! The `movie.*` stages (specs in `azimuth_stage_api::specs::movie`) and the movie file format
//! they read ([`format`]: "azimuth-movie" v1, HDF5), which the `train.gpt` trainer writes.

use crate::{StageContext, StageError};

pub mod format;

pub use format::{
    lattice_motion_bf16, lattice_motion_f32, AttrValue, Movie, MovieDtype, MovieHeader, MovieWriter,
};

/// The family's part of `impls::dispatch`: `None` if `name` is not a `movie.*` stage.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    let _ = (name, ctx); // no stages yet
    None
}
