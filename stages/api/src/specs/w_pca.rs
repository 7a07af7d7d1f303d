//! Metadata of the `w_pca` family (implementations in `azimuth-stages`, `src/w_pca/`).

use crate::StageSpec;

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
