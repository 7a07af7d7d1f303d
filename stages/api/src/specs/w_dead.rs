//! Metadata of the `w_dead` family (implementations in `azimuth-stages`, `src/w_dead/`).

use crate::StageSpec;

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
