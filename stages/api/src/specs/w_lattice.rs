//! Metadata of the `w_lattice` family (implementations in `azimuth-stages`, `src/w_lattice/`):
//! analyses of the float lattice that the rows of a dead-token set (or the black holes) of W sit
//! on. `w.topology` builds the lattice adjacency graph of the dead set's unique vectors (science
//! spec S07), `w.exponents` compares the exponent fields of black-hole and live tokens (S08), and
//! `w.quantization` counts the distinct component values of a dead set and their spacing (S09).
//! None of them uses libtorch; all accept W as BF16 or F32.

use super::shared::{BLACK_HOLES_INPUT, DEAD_INPUT, TENSOR_PARAM, W_INPUT};
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[TOPOLOGY, EXPONENTS, QUANTIZATION];

const fn summary_output(doc: &'static str) -> PortSpec {
    PortSpec {
        name: "summary",
        doc,
        many: false,
        optional: false,
        ext: "json",
    }
}

pub const TOPOLOGY: StageSpec = StageSpec {
    name: "w.topology",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "lattice adjacency graph of a dead set's unique vectors: edges at bit-space L∞ = 1, \
              components, clustering, BH–BH distances, relaxation, connectivity threshold (S07)",
    inputs: &[W_INPUT, BLACK_HOLES_INPUT, DEAD_INPUT],
    outputs: &[
        PortSpec {
            name: "edges",
            doc: "CSV, one line per edge (bit-space L∞ = 1): a, b (representative token ids, \
                  a < b), linf, l1 (ordinal steps), same_exponents",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "components",
            doc: "CSV, one line per connected component, numbered by (tokens descending, smallest \
                  token id ascending): vectors, tokens, edges, density, clustering, black holes \
                  with populations, member representatives and their degrees",
            many: false,
            optional: false,
            ext: "csv",
        },
        summary_output(
            "JSON: counts, L1 histogram of the edges, exponent check, BH–BH L∞ matrix and \
             adjacent BH pairs, near misses, relaxed graph, minimum L∞ between components, \
             connectivity threshold and diameter in bit space and lattice coordinates",
        ),
    ],
    params: &[
        TENSOR_PARAM,
        ParamSpec {
            name: "mask",
            ty: ParamType::Str,
            default: Some("\"rule_a\""),
            doc: "which mask of the `dead` file is the dead set (S07 uses rule A, the exponent \
                  neighbourhood of the largest black hole)",
        },
        ParamSpec {
            name: "relaxed_linf",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: Some("2"),
            doc: "bit-space L∞ up to which the relaxed graph joins two vectors (S07: 2)",
        },
        ParamSpec {
            name: "max_vectors",
            ty: ParamType::Int {
                min: 1,
                max: 50_000,
            },
            default: Some("5000"),
            doc: "refuse dead sets with more unique vectors than this: every pair is compared \
                  (O(n²·D) time, 8 bytes per pair of memory); S07's set has 125",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const EXPONENTS: StageSpec = StageSpec {
    name: "w.exponents",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "exponent structure of black-hole vectors vs live tokens, |W| statistics and the \
              anchor's ULP range (S08)",
    inputs: &[W_INPUT, BLACK_HOLES_INPUT],
    outputs: &[
        PortSpec {
            name: "histogram",
            doc: "CSV, one line per exponent field value in use: exponent, bh_vectors (over the K \
                  black-hole vectors × D), bh_tokens (over black-hole tokens × D), live (over the \
                  other tokens × D)",
            many: false,
            optional: false,
            ext: "csv",
        },
        summary_output(
            "JSON: pairwise exponent agreement of the black holes, their exponent values, live \
             exponent range and mode, |W| mean/std/max for black-hole vs live tokens, the anchor's \
             (black hole 1) exponent and ULP statistics",
        ),
    ],
    params: &[TENSOR_PARAM],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const QUANTIZATION: StageSpec = StageSpec {
    name: "w.quantization",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "distinct component values of a dead set, their gaps, constant dimensions and the \
              bf16 round trip (S09)",
    inputs: &[W_INPUT, DEAD_INPUT],
    outputs: &[
        PortSpec {
            name: "values",
            doc: "CSV, one line per distinct bit pattern in ascending value order: value, pattern \
                  (hex), count (components)",
            many: false,
            optional: false,
            ext: "csv",
        },
        summary_output(
            "JSON: component and distinct-value counts, range, gap statistics, constant \
             dimensions and the commonest pattern of dimension 0 over the unique vectors, the \
             f32→bf16→f32 round trip",
        ),
    ],
    params: &[
        TENSOR_PARAM,
        ParamSpec {
            name: "mask",
            ty: ParamType::Str,
            default: Some("\"rule_b\""),
            doc: "which mask of the `dead` file is the dead set (S09 uses rule B, the L2 void's \
                  2,221 tokens)",
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
    fn the_w_lattice_stages_are_declared_as_specified() {
        let ports = |s: &crate::StageSpec| s.inputs.iter().map(|i| i.name).collect::<Vec<_>>();
        let outs = |s: &crate::StageSpec| s.outputs.iter().map(|i| i.name).collect::<Vec<_>>();
        for name in ["w.topology", "w.exponents", "w.quantization"] {
            let s = crate::find(name).unwrap_or_else(|| panic!("{name} is in the catalogue"));
            assert_eq!((s.kind, s.version), (StageKind::Analyzer, 1), "{name}");
            assert!(!s.uses_torch && !s.device_dependent, "{name}");
            assert_eq!(s.param("tensor").unwrap().default, Some("\"W\""));
        }
        let t = crate::find("w.topology").unwrap();
        assert_eq!(ports(t), ["w", "black_holes", "dead"]);
        assert_eq!(outs(t), ["edges", "components", "summary"]);
        assert_eq!(t.param("mask").unwrap().default, Some("\"rule_a\""));
        assert_eq!(t.param("relaxed_linf").unwrap().default, Some("2"));
        let e = crate::find("w.exponents").unwrap();
        assert_eq!(ports(e), ["w", "black_holes"]);
        assert_eq!(outs(e), ["histogram", "summary"]);
        let q = crate::find("w.quantization").unwrap();
        assert_eq!(ports(q), ["w", "dead"]);
        assert_eq!(outs(q), ["values", "summary"]);
        assert_eq!(q.param("mask").unwrap().default, Some("\"rule_b\""));
    }
}
