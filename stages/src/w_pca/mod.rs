//! The `w_pca` family of built-in stages (metadata in `azimuth-stage-api`, `specs/w_pca.rs`):
//!
//! - `w.pca` (S10): covariance eigendecomposition of W with libtorch on the CPU, the V4.6 sign
//!   convention, projections on the leading PCs and spherical sky coordinates. It lives in the
//!   `azimuth-stages-torch` crate (`stages/torch/src/pca.rs`), which the worker loads on demand.
//! - [`skymap`] (`w.skymap`, S10 maps): Mollweide, density and equatorial PNG maps from `w.pca`'s
//!   projections, drawn by the small rasteriser in [`raster`] (no libtorch).

pub(crate) mod raster;
pub(crate) mod skymap;

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.skymap" => skymap::run(ctx),
        _ => return None,
    })
}
