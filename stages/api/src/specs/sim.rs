//! Metadata of the `sim` family (science spec Part II, S20–S26; implementation in
//! `azimuth-stages`, `src/sim/`): simulations that need no model weights.
//! So far `sim.tidal_toy` (S26), the two-force toy in 2-D.

use super::shared::float;
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[TIDAL_TOY];

pub const TIDAL_TOY: StageSpec = StageSpec {
    name: "sim.tidal_toy",
    version: 1,
    kind: StageKind::Generator,
    summary: "S26's two-force toy: points in 2-D pulled along r̂ by lr and towards 0 by weight \
              decay; the spread across r̂ shrinks by exactly (1 − wd) per step",
    inputs: &[],
    outputs: &[
        PortSpec {
            name: "table",
            doc: "CSV, one line per step (0..steps): centroid x and y, spread across r̂ and along \
                  r̂ (population standard deviations of the coordinates)",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: spreads first and last, their ratio against (1 − wd)^steps, the fixed \
                  point lr/wd·r̂ and the final centroid",
            many: false,
            optional: false,
            ext: "json",
        },
        PortSpec {
            name: "plot",
            doc: "PNG: the spread across r̂ over the steps, with (1 − wd)^t times the first spread",
            many: false,
            optional: false,
            ext: "png",
        },
    ],
    params: &[
        ParamSpec {
            name: "points",
            ty: ParamType::Int {
                min: 2,
                max: 10_000_000,
            },
            default: Some("100"),
            doc: "number of points",
        },
        float(
            "sigma",
            0.0,
            1e6,
            "0.02",
            "standard deviation of the initial N(0, σ²) points",
        ),
        ParamSpec {
            name: "steps",
            ty: ParamType::Int {
                min: 1,
                max: 100_000_000,
            },
            default: Some("500"),
            doc: "update steps w ← w + lr·r̂ − wd·w",
        },
        float("lr", 0.0, 1e6, "1e-3", "pull along r̂ per step"),
        float("weight_decay", 0.0, 1.0, "0.01", "decay per step (wd)"),
        float(
            "angle_deg",
            -360.0,
            360.0,
            "0.0",
            "direction of r̂, degrees from the x axis (0: r̂ = (1, 0))",
        ),
        ParamSpec {
            name: "precision",
            ty: ParamType::Choice(&["f64", "f32", "bf16"]),
            default: Some("\"f64\""),
            doc: "arithmetic of the updates: `f64`, `f32`, or f32 rounded to bf16 after every \
                  step (round-to-nearest-even), which stalls once a step falls below half an ULP",
        },
        ParamSpec {
            name: "seed",
            ty: ParamType::Int {
                min: 0,
                max: i64::MAX,
            },
            default: Some("42"),
            doc: "seed of the initial points (SplitMix64 + Box–Muller; the spread ratio does not \
                  depend on the draws)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
};
