//! Metadata of the `w_tokens` family (implementations in `azimuth-stages`, `src/w_tokens/`).

use crate::StageSpec;

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
