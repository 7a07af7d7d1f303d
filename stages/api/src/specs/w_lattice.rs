//! Metadata of the `w_lattice` family (implementations in `azimuth-stages`, `src/w_lattice/`).

use crate::StageSpec;

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
