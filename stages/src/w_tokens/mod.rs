//! The `w_tokens` family of built-in stages (metadata in `azimuth-stage-api`, `specs/w_tokens.rs`):
//! the tokenizer side of a W analysis (science spec S12).
//!
//! - [`tokens`] (`w.tokens`): decode every id, classify scripts, flag specials/orphans/invalid
//!   UTF-8, join black holes and a dead set, Thai enrichment, optional reachability.
//! - [`vocab`]: reading tokenizer.json / `w.extract` vocab JSON and single-id decoding.
//! - [`scripts`]: the three S12 script classifiers.
//! - [`bpe`]: a byte-level BPE encoder (normalizer, regex pre-tokenizer, merges by rank) for the
//!   round-trip reachability test.

pub(crate) mod bpe;
pub(crate) mod scripts;
pub(crate) mod tokens;
pub(crate) mod vocab;

use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.tokens" => tokens::run(ctx),
        _ => return None,
    })
}
