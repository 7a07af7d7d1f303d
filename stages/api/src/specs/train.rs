//! Training stages (science spec Part III, S30-S37): tiny GPT-style models trained with libtorch, recording W movies to HDF5. Implemented in `azimuth-stages-torch`.

use crate::StageSpec;

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
