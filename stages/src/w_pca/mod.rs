//! The `w_pca` family of built-in stages (metadata in `azimuth-stage-api`, `specs/w_pca.rs`):
//!
//! - [`pca`] (`w.pca`, S10): covariance eigendecomposition of W with libtorch on the CPU, the
//!   V4.6 sign convention, projections on the leading PCs and spherical sky coordinates.
//! - [`skymap`] (`w.skymap`, S10 maps): Mollweide, density and equatorial PNG maps from `w.pca`'s
//!   projections, drawn by the small rasteriser in [`raster`] (no libtorch).

pub(crate) mod pca;
pub(crate) mod raster;
pub(crate) mod skymap;

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.pca" => pca::run(ctx),
        "w.skymap" => skymap::run(ctx),
        _ => return None,
    })
}
