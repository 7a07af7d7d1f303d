//! Movie analyses (science spec Part IV, S40-S45): read a W movie recorded by `train.gpt` (HDF5) and write tables and PNG plots.

use crate::StageSpec;

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
