//! Metadata of the `w_dead` family (implementations in `azimuth-stages`, `src/w_dead/`): which
//! tokens of W are "dead" and what that set looks like. `w.dead_sets` computes the membership rules
//! A (exponent neighbourhood of black hole 1), B (L2 void around the black-hole centroid) and D
//! (bit-space flood fill from the black holes) of science spec S05 and their differences;
//! `w.centroid_angle` the angle between the dead (black-hole) and live centroids (S11);
//! `w.geography` the core / Oort cloud / Outlier description of one dead set (S06). None of them
//! uses libtorch.

use super::shared::{BLACK_HOLES_INPUT, DEAD_INPUT, TENSOR_PARAM, W_INPUT};
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[DEAD_SETS, CENTROID_ANGLE, GEOGRAPHY];

const fn output(name: &'static str, ext: &'static str, doc: &'static str) -> PortSpec {
    PortSpec {
        name,
        doc,
        many: false,
        optional: false,
        ext,
    }
}

pub const DEAD_SETS: StageSpec = StageSpec {
    name: "w.dead_sets",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "dead-token sets of W by rules A (exponent neighbourhood), B (L2 void) and D (flood \
              fill), with their differences (S05)",
    inputs: &[W_INPUT, BLACK_HOLES_INPUT],
    outputs: &[
        output(
            "masks",
            "safetensors",
            "safetensors: BOOL [V] `rule_a`, `rule_b`, `rule_d` (all false when rule D is off), \
             `black_hole_mask`; U8 [V] `exponent_distance` to the anchor (saturated at 255; 255 \
             everywhere without black holes); F32 [V] `distance_to_centroid` (NaN without black \
             holes); metadata: tolerance, threshold, void_found",
        ),
        output(
            "sweep",
            "csv",
            "CSV, rule A's tolerance sweep: t, count (tokens with exponent distance ≤ t), added \
             (vs t − 1), vectors (distinct rows among them)",
        ),
        output(
            "summary",
            "json",
            "JSON: per rule tokens / unique vectors / black holes / singletons / compression; rule \
             A's anchor and exponent-distance range; rule B's gap (inner rank and radius, outer \
             radius, gap, ratio, threshold, void_found); rule D's additions per iteration; the \
             set differences A∖B, B∖A, A∖D, D∖A as sorted token ids",
        ),
        output(
            "members",
            "csv",
            "CSV, one line per token in any rule: id, in_a, in_b, in_d, bh_id, d_exp, \
             distance_to_centroid, distance_to_anchor",
        ),
    ],
    params: &[
        TENSOR_PARAM,
        ParamSpec {
            name: "tolerance",
            ty: ParamType::Int { min: 0, max: 255 },
            default: Some("5"),
            doc: "rule A: largest exponent distance to the anchor inside the set (S05: 5)",
        },
        ParamSpec {
            name: "sweep_max",
            ty: ParamType::Int { min: 0, max: 255 },
            default: Some("20"),
            doc: "rule A: the tolerance sweep runs t = 0…sweep_max (S05: 20)",
        },
        ParamSpec {
            name: "window",
            ty: ParamType::Int {
                min: 2,
                max: 1_000_000_000,
            },
            default: Some("10000"),
            doc: "rule B: the largest gap is searched among this many smallest distances to the \
                  centroid (S05: 10,000)",
        },
        ParamSpec {
            name: "min_gap_ratio",
            ty: ParamType::Float { min: 1.0, max: 1e30 },
            default: Some("1.25"),
            doc: "rule B: outer/inner radius of the largest gap below which there is no clean void \
                  and the rule-B set stays empty (Qwen: 1.54)",
        },
        ParamSpec {
            name: "rule_d",
            ty: ParamType::Bool,
            default: Some("true"),
            doc: "run rule D, the bit-space flood fill from the black holes",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const CENTROID_ANGLE: StageSpec = StageSpec {
    name: "w.centroid_angle",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "angle between the dead (black-hole) and live centroids of W (S11)",
    inputs: &[W_INPUT, BLACK_HOLES_INPUT],
    outputs: &[output(
        "summary",
        "json",
        "JSON: dead/live centroid norms, cosine (unclamped) and angle in degrees, each black \
         hole's angle to the live centroid, cosine between the weighted dead centroid and the \
         unweighted mean of the black-hole vectors, ‖dead centroid − μ‖ (μ = mean of all rows); \
         without black holes the angles are null and `note` says why",
    )],
    params: &[TENSOR_PARAM],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const GEOGRAPHY: StageSpec = StageSpec {
    name: "w.geography",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "geography of a dead set around black hole 1: core, Oort cloud, bands, the Outlier, \
              extended shell, 2-D PCA shares (S06)",
    inputs: &[
        W_INPUT,
        BLACK_HOLES_INPUT,
        DEAD_INPUT,
    ],
    outputs: &[
        output(
            "vectors",
            "csv",
            "CSV, one line per unique vector of the dead set: representative (smallest token id), \
             tokens, bh_id, r (L2 to the anchor), nn_distance, region (core/oort), band",
        ),
        output(
            "summary",
            "json",
            "JSON: r statistics, core and Oort counts, bands and equal-width bins, inner half, \
             nearest-neighbour and pairwise distances, magnitudes, the Outlier and the \
             second-farthest vector, extended shell, near count, r over all rows, PCA shares",
        ),
        output(
            "extended",
            "csv",
            "CSV, every row of W in the extended shell extended[0] ≤ r < extended[1]: id, r, in_set",
        ),
    ],
    params: &[
        TENSOR_PARAM,
        ParamSpec {
            name: "mask",
            ty: ParamType::Str,
            default: Some("\"rule_a\""),
            doc: "which mask of the `dead` file is the dead set (rule_a, rule_b or rule_d)",
        },
        ParamSpec {
            name: "core_radius",
            ty: ParamType::Float { min: 0.0, max: 1e30 },
            default: Some("5e-5"),
            doc: "core = unique vectors with r below this; Oort cloud = the rest (S06: 5e-5)",
        },
        ParamSpec {
            name: "bands",
            ty: ParamType::FloatList,
            default: Some("[0, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2]"),
            doc: "ascending band edges of r; bands are [e_i, e_i+1) plus [e_last, ∞) (S06)",
        },
        ParamSpec {
            name: "bins",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: Some("20"),
            doc: "equal-width bins of r over [0, 1.1 · max r] (S06: 20)",
        },
        ParamSpec {
            name: "extended",
            ty: ParamType::FloatList,
            default: Some("[0.005, 0.05]"),
            doc: "the extended shell [lower, upper) of r, searched over all rows of W (S06)",
        },
        ParamSpec {
            name: "near_radius",
            ty: ParamType::Float { min: 0.0, max: 1e30 },
            default: Some("0.1"),
            doc: "count the rows of W with r below this (S06: 0.1)",
        },
        ParamSpec {
            name: "max_vectors",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: Some("5000"),
            doc: "refuse dead sets with more unique vectors than this: the exact nearest-neighbour \
                  scan costs n² · D and keeps n · D f64 values (S06's set has 125)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

#[cfg(test)]
mod tests {
    use crate::StageKind;

    #[test]
    fn the_w_dead_stages_are_declared_as_specified() {
        for name in ["w.dead_sets", "w.centroid_angle", "w.geography"] {
            let s = crate::find(name).unwrap_or_else(|| panic!("{name} is in the catalogue"));
            assert_eq!((s.kind, s.version), (StageKind::Analyzer, 1), "{name}");
            assert!(!s.uses_torch && !s.device_dependent, "{name}");
            assert_eq!(
                s.inputs[..2].iter().map(|i| i.name).collect::<Vec<_>>(),
                ["w", "black_holes"]
            );
        }
        let d = crate::find("w.dead_sets").unwrap();
        assert_eq!(
            d.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["masks", "sweep", "summary", "members"]
        );
        assert_eq!(d.param("tolerance").unwrap().default, Some("5"));
        assert_eq!(d.param("window").unwrap().default, Some("10000"));
        let g = crate::find("w.geography").unwrap();
        assert_eq!(g.param("mask").unwrap().default, Some("\"rule_a\""));
        assert_eq!(g.param("core_radius").unwrap().default, Some("5e-5"));
    }
}
