//! Metadata of the `sim` family (science spec Part II, S20–S26; implementation in
//! `azimuth-stages`, `src/sim/`): simulations that need no model weights.
//! So far `sim.tidal_toy` (S26), the two-force toy in 2-D.

use super::shared::float;
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[TIDAL_TOY, PACHINKO];

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

/// S25's translate-and-cull simulation (`sim.pachinko`): both notebooks, pachinko (decaying step)
/// and drift coalescence (fixed step), as one stage with a `mode`.
pub const PACHINKO: StageSpec = StageSpec {
    name: "sim.pachinko",
    version: 1,
    kind: StageKind::Generator,
    summary: "S25's translate-and-cull: bf16 points drawn N(0, σ²) are translated along a random \
              unit vector u, re-rounded to bf16 and culled at random every step; the centroid \
              stalls once the steps fall below half an ULP (pachinko) or drifts on (drift)",
    inputs: &[],
    outputs: &[
        PortSpec {
            name: "table",
            doc: "CSV, one line per step t = 0..steps−1 (the state after that step's translation \
                  and cull): step length, cumulative translation, survivors, centroid norm r, \
                  centroid along u, RMS point norm, moved values (count and fraction of the \
                  values translated) and moving coordinates, mean \
                  distinct values per coordinate; distinct rows, black holes and the largest \
                  black hole on census steps (every `census_every`-th and the last; empty \
                  elsewhere)",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: the params, the initial and final census (survivors, distinct rows, black \
                  holes and their populations by bit identity), r first/last/max, the \
                  translation without rounding, whether and at which step the walk stalled \
                  (moves below `stall_fraction`) and froze (no value moves any more)",
            many: false,
            optional: false,
            ext: "json",
        },
        PortSpec {
            name: "plot",
            doc:
                "PNG: the centroid norm r over the steps, with the cumulative translation (what r \
                  would be without rounding)",
            many: false,
            optional: false,
            ext: "png",
        },
    ],
    params: &[
        ParamSpec {
            name: "mode",
            ty: ParamType::Choice(&["pachinko", "drift"]),
            default: Some("\"pachinko\""),
            doc: "`pachinko`: step t is step0·decay^t; `drift` (S25's drift coalescence): a fixed \
                  step, so `decay` must be 1 (set step0 0.0037, steps 100, cull 1519 and sigma \
                  0.02 or 1e-6 to reproduce the notebook; V2 #29: cull 1498 leaves ≈2,212)",
        },
        super::shared::int(
            "points",
            2,
            10_000_000,
            "151936",
            "number of points V (Qwen's vocabulary size by default)",
        ),
        super::shared::int("dim", 1, 65_536, "2560", "dimension D of every point"),
        super::shared::int("steps", 1, 10_000, "300", "translate-round-cull steps"),
        float(
            "step0",
            0.0,
            1e3,
            "0.003",
            "length of the first translation (step t = 0)",
        ),
        float(
            "decay",
            0.0,
            1.0,
            "0.99",
            "factor between consecutive step lengths: step_t = step0·decay^t",
        ),
        super::shared::int(
            "cull",
            0,
            10_000_000,
            "499",
            "survivors removed uniformly at random after every step; steps·cull must be < points",
        ),
        float(
            "sigma",
            0.0,
            1e3,
            "1e-4",
            "standard deviation σ of the initial N(0, σ²) coordinates (f32 draws rounded to bf16)",
        ),
        super::shared::int(
            "seed",
            0,
            i64::MAX,
            "42",
            "seed of the draws, the direction u and the cull order (counter-based SplitMix64 + \
             Box–Muller; the results do not depend on the thread count)",
        ),
        super::shared::int(
            "census_every",
            0,
            10_000,
            "10",
            "count distinct rows and black holes at steps 0, census_every, 2·census_every, … and \
             at the last step (0: the last step only); the initial state is always counted",
        ),
        float(
            "stall_fraction",
            0.0,
            1.0,
            "0.01",
            "the walk counts as stalled from the first step after which, in every step, fewer \
             than this fraction of the survivors' coordinate values move (0: only when none \
             moves). Coordinates with tiny |u_k| keep a few values near 0 moving for long",
        ),
        ParamSpec {
            name: "engine",
            ty: ParamType::Choice(&["fast", "naive"]),
            default: Some("\"fast\""),
            doc: "`fast`: per coordinate, each distinct starting value is moved once and carries \
                  the count of its surviving points (exact); `naive`: every point moved every \
                  step (slow; the reference the fast engine is tested against, bit for bit)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
};
