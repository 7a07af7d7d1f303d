//! Corpus and vocabulary stages (science spec S31/S37 data preparation): plain text in, token streams, vocabularies, live/dead masks and a census out.

use crate::StageSpec;

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[];
