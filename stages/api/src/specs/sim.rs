//! Metadata of the `sim` family (science spec Part II, S20–S26; implementation in
//! `azimuth-stages`, `src/sim/`): simulations that need no model weights.
//!
//! - `sim.anchor`: the offset vector the quantize-and-count simulations draw around, taken from a
//!   W (black-hole centroid, raw or centred; the largest black hole's row; a dead-set centroid) or
//!   a synthetic stand-in (V3.2's note);
//! - `sim.direct_sampling` (S20) and `sim.monument_valley` (S21–S24): trials of points drawn
//!   around the anchor, rounded to bf16 and counted into black holes;
//! - `sim.sweep`: gathers the instances of a σ/R sweep into one table and plots;
//! - `sim.compare`: procedures × anchors side by side (the S20-vs-S21 question);
//! - `sim.tidal_toy` (S26), the two-force toy in 2-D.

use super::shared::{float, int};
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[
    ANCHOR,
    DIRECT_SAMPLING,
    MONUMENT_VALLEY,
    SWEEP,
    COMPARE,
    PACHINKO,
    TIDAL_TOY,
];

/// Input `anchor`: the `anchor` output of `sim.anchor`.
const ANCHOR_INPUT: PortSpec = PortSpec {
    name: "anchor",
    doc: "the `anchor` output of `sim.anchor`: safetensors with an F32 (or BF16) vector `anchor` \
          [D] and its `label` in the metadata",
    many: false,
    optional: false,
    ext: "",
};

/// The outputs both quantize-and-count stages write.
const TRIAL_OUTPUTS: &[PortSpec] = &[
    PortSpec {
        name: "trials",
        doc: "CSV, one line per trial: unique rows, black holes, their population, singletons, \
              largest, Gini, demographic distance, the first 16 populations (and the stage's \
              extra columns)",
        many: false,
        optional: false,
        ext: "csv",
    },
    PortSpec {
        name: "summary",
        doc: "JSON: the params and anchor, mean/std/min/max of every count over the trials \
              (population std), V4.19's normalised and demographic distances, trial 0's \
              demographics; `sim.sweep` and `sim.compare` read it",
        many: false,
        optional: false,
        ext: "json",
    },
];

/// `law`, `scale`, `trials`, `seed` and V4.19's scoring targets, shared by both simulations.
macro_rules! trial_params {
    ($($extra:expr),* $(,)?) => {
        &[
            $($extra,)*
            ParamSpec {
                name: "law",
                ty: ParamType::Choice(&["gaussian", "ball", "shell", "laplace"]),
                default: Some("\"gaussian\""),
                doc: "noise around the anchor (S22): `gaussian` (σ·z per coordinate), `ball` \
                      (uniform in the ball of radius R), `shell` (radius exactly R), `laplace` \
                      (i.i.d. scale b)",
            },
            float(
                "scale",
                0.0,
                1e6,
                "1.5e-9",
                "σ, R or b of the law; the point is anchor + noise in f32, then one bf16 rounding",
            ),
            int("trials", 1, 1_000_000, "10", "independent trials, each reproducible from (seed, trial index)"),
            int("seed", 0, i64::MAX, "42", "seed of every trial's streams"),
            float("target_black_holes", 0.0, 1e9, "13", "V4.19: black holes of the real frozen smoke"),
            float("target_largest", 0.0, 1e9, "814", "V4.19: population of its largest black hole"),
            ParamSpec {
                name: "target_demographics",
                ty: ParamType::IntList { min: 1, max: i64::MAX },
                default: Some("[814, 704, 306, 228, 11, 10, 6, 5, 4, 4, 3, 3, 2]"),
                doc: "V4.19: the real populations, descending (S04)",
            },
            float(
                "length_penalty",
                0.0,
                1e9,
                "100",
                "V4.19: demographic distance per black hole too many or too few",
            ),
        ]
    };
}

pub const ANCHOR: StageSpec = StageSpec {
    name: "sim.anchor",
    version: 1,
    kind: StageKind::Generator,
    summary: "the vector the simulations draw around: a black-hole centroid (raw or centred), the \
              largest black hole's row or a dead-set centroid of a W, or a synthetic stand-in",
    inputs: &[
        PortSpec {
            name: "w",
            doc: "the matrix W [V, D] (BF16 or F32), for every source but `synthetic`",
            many: false,
            optional: true,
            ext: "",
        },
        PortSpec {
            name: "black_holes",
            doc: "the `members` output of `w.black_holes` on the same W (black-hole sources)",
            many: false,
            optional: true,
            ext: "",
        },
        PortSpec {
            name: "dead",
            doc: "the `masks` output of `w.dead_sets` on the same W (source `mask_centroid`)",
            many: false,
            optional: true,
            ext: "",
        },
    ],
    outputs: &[
        PortSpec {
            name: "anchor",
            doc: "safetensors: F32 vector `anchor` [D]; metadata `label`, `source`",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: label, source, D, norm, component mean/std/min/max, and the range of bf16 \
                  and f32 ULPs of its components (the grid a tiny σ has to cross)",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "source",
            ty: ParamType::Choice(&[
                "synthetic",
                "black_hole_centroid",
                "black_hole_centroid_centred",
                "largest_black_hole",
                "mask_centroid",
            ]),
            default: Some("\"synthetic\""),
            doc: "`synthetic`: N(0, 1) draws scaled to `norm` (V3.2's stand-in); \
                  `black_hole_centroid`: the mean of all black-hole rows (S21's raw centroid, \
                  norm 0.370917 in Qwen); `black_hole_centroid_centred`: that mean minus the mean \
                  row μ of W (S20's offset, norm 0.166061); `largest_black_hole`: the row of \
                  black hole 1 (S24's \"John\"); `mask_centroid`: the mean of the rows in dead \
                  mask `mask`",
        },
        int("dim", 1, 1 << 20, "2560", "D of a synthetic anchor"),
        float(
            "norm",
            0.0,
            1e6,
            "0.370917",
            "L2 norm of a synthetic anchor",
        ),
        int(
            "seed",
            0,
            i64::MAX,
            "42",
            "seed of a synthetic anchor's direction",
        ),
        ParamSpec {
            name: "bf16",
            ty: ParamType::Bool,
            default: Some("false"),
            doc: "round the anchor to bf16 (a stand-in for a bf16 row such as S24's)",
        },
        ParamSpec {
            name: "mask",
            ty: ParamType::Str,
            default: Some("\"rule_b\""),
            doc: "the mask of `dead` for `mask_centroid` (S21 used rule B's 2,221 tokens)",
        },
        ParamSpec {
            name: "label",
            ty: ParamType::Str,
            default: Some("\"\""),
            doc: "a name for tables and plots (default: the source and norm)",
        },
        ParamSpec {
            name: "tensor",
            ty: ParamType::Str,
            default: Some("\"W\""),
            doc: "name of W inside its file (`w.extract` writes `W`)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const DIRECT_SAMPLING: StageSpec = StageSpec {
    name: "sim.direct_sampling",
    version: 1,
    kind: StageKind::Generator,
    summary:
        "S20's synthetic snowball: trials of `tokens` points drawn around the anchor, rounded \
              to bf16 and grouped into black holes, with S20's pairwise L∞ graph of the cells",
    inputs: &[ANCHOR_INPUT],
    outputs: TRIAL_OUTPUTS,
    params: trial_params!(
        int(
            "tokens",
            1,
            100_000_000,
            "2100",
            "points per trial (S20: 2,100)"
        ),
        float(
            "epsilon",
            0.0,
            1e6,
            "6e-5",
            "ε of S20's L∞ normalisation and touching graph",
        ),
        float(
            "edge",
            0.0,
            1e9,
            "2",
            "graph edges join cells within edge·ε (L∞)"
        ),
        ParamSpec {
            name: "pairwise",
            ty: ParamType::Choice(&["unique", "black_holes", "off"]),
            default: Some("\"unique\""),
            doc: "which cells the pairwise L∞ graph covers: every distinct row, only the black \
                  holes, or none",
        },
        int(
            "pairwise_max",
            0,
            100_000,
            "512",
            "skip the pairwise graph of a trial with more cells than this (it costs cells²·D)",
        ),
    ),
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const MONUMENT_VALLEY: StageSpec = StageSpec {
    name: "sim.monument_valley",
    version: 1,
    kind: StageKind::Generator,
    summary: "S21–S24: the whole vocabulary drawn around the anchor and rounded to bf16, then \
              `survivors` kept uniformly at random and grouped into black holes; `mode: \
              survivors` draws only the survivors (the same distribution, V/M times less work)",
    inputs: &[ANCHOR_INPUT],
    outputs: TRIAL_OUTPUTS,
    params: trial_params!(
        int(
            "vocab",
            1,
            100_000_000,
            "151936",
            "rows drawn in full mode (Qwen's V)"
        ),
        int(
            "survivors",
            1,
            100_000_000,
            "2221",
            "rows kept (S21: 2,221; S24: 2,200)"
        ),
        ParamSpec {
            name: "mode",
            ty: ParamType::Choice(&["survivors", "full"]),
            default: Some("\"survivors\""),
            doc: "`full`: draw all `vocab` rows, keep the first `survivors` of a random \
                  permutation, and also count the whole vocabulary's cells; `survivors`: draw \
                  the survivors directly (uniform survival makes them i.i.d. draws, so the \
                  result has the same distribution)",
        },
    ),
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const SWEEP: StageSpec = StageSpec {
    name: "sim.sweep",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "gathers the summaries of a σ/R sweep of `sim.direct_sampling` or \
              `sim.monument_valley` instances into one table, the window where black holes \
              exist, the best match to the targets, and plots of mean ± std against the scale",
    inputs: &[PortSpec {
        name: "runs",
        doc: "`summary` outputs of simulation instances (a whole sweep: `stage.summary`)",
        many: true,
        optional: false,
        ext: "",
    }],
    outputs: &[
        PortSpec {
            name: "table",
            doc: "CSV, one line per instance, grouped into series (stage, mode, law, anchor, \
                  tokens) and sorted by scale",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc: "JSON per series: the black-hole window, the peak, the best match by V4.19's \
                  normalised distance and by demographic distance (with its demographics), and \
                  the peak's scale against the Gaussian series' (the ≈√D shift of S22)",
            many: false,
            optional: false,
            ext: "json",
        },
        PortSpec {
            name: "black_holes_plot",
            doc: "PNG: mean ± std of the black-hole count against log10 scale, target line",
            many: false,
            optional: false,
            ext: "png",
        },
        PortSpec {
            name: "largest_plot",
            doc: "PNG: mean ± std of the largest black hole against log10 scale, target line",
            many: false,
            optional: false,
            ext: "png",
        },
        PortSpec {
            name: "demographics_plot",
            doc: "PNG: black-hole populations by rank (log10) of each series' best match by \
                  demographic distance (its trial 0) against the target demographics",
            many: false,
            optional: false,
            ext: "png",
        },
    ],
    params: &[float(
        "window_min_black_holes",
        0.0,
        1e9,
        "2",
        "the black-hole window is the scales whose mean count is at least this",
    )],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const COMPARE: StageSpec = StageSpec {
    name: "sim.compare",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "procedures × anchors side by side (S20 direct sampling against S21 Monument \
              Valley, each with each anchor): which of the two moves the black-hole count",
    inputs: &[PortSpec {
        name: "runs",
        doc: "`summary` outputs of simulation instances at one law and scale",
        many: true,
        optional: false,
        ext: "",
    }],
    outputs: &[
        PortSpec {
            name: "table",
            doc: "CSV, one line per (anchor, procedure): tokens, trials and mean ± std of the \
                  counts",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "report",
            doc: "Markdown: the anchors × procedures table of black holes and largest, the \
                  effects in standard errors and the verdict",
            many: false,
            optional: false,
            ext: "md",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: every cell, the procedure effect within each anchor and the anchor \
                  effect within each procedure (difference of mean black holes and its z), and \
                  the verdict",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[float(
        "z",
        0.0,
        1e6,
        "4",
        "an effect counts when the difference of means is at least z standard errors",
    )],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const TIDAL_TOY: StageSpec = StageSpec {
    name: "sim.tidal_toy",
    version: 2,
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
    reads_provenance: false,
};

/// S25's translate-and-cull simulation (`sim.pachinko`): both notebooks, pachinko (decaying step)
/// and drift coalescence (fixed step), as one stage with a `mode`.
pub const PACHINKO: StageSpec = StageSpec {
    name: "sim.pachinko",
    version: 2,
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
    reads_provenance: false,
};
