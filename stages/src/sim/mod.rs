//! The `sim.*` stages (science spec Part II; specs in `azimuth_stage_api::specs::sim`):
//! simulations that need no model weights.
//!
//! - [`anchor`] (`sim.anchor`): the vector the quantize-and-count simulations draw around;
//! - [`trials`] (`sim.direct_sampling`, S20; `sim.monument_valley`, S21–S24) on the kernel in
//!   [`quantize`] (laws, bf16 rounding, survivors, census, S20's pairwise graph), whose random
//!   streams ([`draw`]) are keyed by (seed, trial, row);
//! - [`sweep`] (`sim.sweep`) and [`compare`] (`sim.compare`): analyzers over their summaries;
//! - [`pachinko`] (`sim.pachinko`, S25): translate-and-cull on the bf16 grid;
//! - [`tidal_toy`] (`sim.tidal_toy`, S26).

use crate::{StageContext, StageError};

pub(crate) mod anchor;
pub(crate) mod compare;
pub(crate) mod draw;
pub(crate) mod pachinko;
pub(crate) mod quantize;
pub(crate) mod sweep;
pub(crate) mod tidal_toy;
pub(crate) mod trials;

/// The family's part of `impls::dispatch`: `None` if `name` is not a `sim.*` stage.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "sim.anchor" => anchor::run(ctx),
        "sim.direct_sampling" => trials::run_direct_sampling(ctx),
        "sim.monument_valley" => trials::run_monument_valley(ctx),
        "sim.sweep" => sweep::run(ctx),
        "sim.compare" => compare::run(ctx),
        "sim.tidal_toy" => tidal_toy::run(ctx),
        "sim.pachinko" => pachinko::run(ctx),
        _ => return None,
    })
}

/// SplitMix64 with Box–Muller normals: a small generator whose draws depend only on the seed, on
/// every platform and thread count.
pub(crate) struct Normals {
    state: u64,
    spare: Option<f64>,
}

impl Normals {
    pub fn new(seed: u64) -> Self {
        Normals {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: 53 random bits, never 0 (so its logarithm is finite).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// One N(0, 1) draw.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}
