//! The `w_lattice` family: analyses of the float lattice (bf16 or f32 grid) that a dead-token set
//! or the black holes of W sit on. Metadata lives in `azimuth-stage-api` (`specs/w_lattice.rs`).
//!
//! - [`topology`] (`w.topology`, S07): the adjacency graph of a dead set's unique vectors, edges
//!   where the sign-aware bit-space L∞ is 1, with components, clustering, BH–BH distances, a
//!   relaxed graph and the connectivity threshold in bit space and lattice coordinates.
//! - [`exponents`] (`w.exponents`, S08): exponent fields of the black-hole vectors against the
//!   live tokens, |W| statistics and the anchor's ULP range.
//! - [`quantization`] (`w.quantization`, S09): the distinct component values of a dead set, their
//!   gaps, constant dimensions and the bf16 round trip.
//!
//! This module holds what they share: grouping a token subset into unique vectors by raw bytes.
//! Every stage runs on `ctx.threads` rayon threads and its outputs never depend on that number
//! (floating-point reductions are done in a fixed order).

pub(crate) mod exponents;
pub(crate) mod quantization;
pub(crate) mod topology;

use std::collections::HashMap;

use crate::w_analysis::Matrix;
use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`: `None` if `name` is not one of its stages.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "w.topology" => topology::run(ctx),
        "w.exponents" => exponents::run(ctx),
        "w.quantization" => quantization::run(ctx),
        _ => return None,
    })
}

/// Groups the rows of the `selected` tokens (a flag per row of `m`) into unique vectors by their
/// raw bytes (so `+0.0` and `−0.0` rows differ). Each group lists its tokens ascending; groups are
/// ordered by their smallest token, so the first token is the vector's representative.
pub(crate) fn unique_vectors(m: &Matrix<'_>, selected: &[bool]) -> Vec<Vec<u32>> {
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    for (t, _) in selected.iter().enumerate().filter(|(_, &s)| s) {
        let n = *index.entry(m.row(t)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[n].push(t as u32);
    }
    groups
}
