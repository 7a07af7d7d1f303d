//! Metadata of the `w_analysis` family (implementations in `azimuth-stages`, `src/w_analysis/`):
//! analyses of one embedding/unembedding matrix W (a safetensors file with a 2-D tensor, by default
//! named `W`): `w.black_holes`, the census of bit-identical rows (science spec S04), and `w.norms`,
//! per-row L2 norms with histograms and "the spike" (S03). Neither uses libtorch.

use super::shared::{TENSOR_PARAM, W_INPUT};
use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[BLACK_HOLES, NORMS];

pub const BLACK_HOLES: StageSpec = StageSpec {
    name: "w.black_holes",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "black holes of W: groups of bit-identical rows, numbered by population (S04)",
    inputs: &[PortSpec {
        doc: "a safetensors file holding W [V, D] as BF16 or F32 (identity is decided on raw bits)",
        ..W_INPUT
    }],
    outputs: &[
        PortSpec {
            name: "table",
            doc: "CSV, one line per black hole: id, population, representative, members preview, \
                  L2 norm, exponent profile, distance to black hole 1",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: counts (black holes, their tokens, distinct/redundant rows, singletons), \
                  populations, representatives, largest",
            many: false,
            optional: false,
            ext: "json",
        },
        PortSpec {
            name: "members",
            doc: "safetensors: `black_hole_id` (U8, or U16 above 255 black holes) [V], 0 = none, \
                  1 = largest; `black_hole_mask` (BOOL) [V]; `centroids` (W's dtype) [K, D]",
            many: false,
            optional: false,
            ext: "safetensors",
        },
    ],
    params: &[
        TENSOR_PARAM,
        ParamSpec {
            name: "min_population",
            ty: ParamType::Int {
                min: 2,
                max: 1_000_000_000,
            },
            default: Some("2"),
            doc: "smallest number of bit-identical rows that counts as a black hole (S04: 2)",
        },
        ParamSpec {
            name: "preview",
            ty: ParamType::Int {
                min: 0,
                max: 10_000,
            },
            default: Some("8"),
            doc: "how many member token ids (smallest first) the table lists per black hole",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const NORMS: StageSpec = StageSpec {
    name: "w.norms",
    version: 2,
    kind: StageKind::Analyzer,
    summary: "per-row L2 norms of W, full-range and zoomed histograms, summary and the spike (S03)",
    inputs: &[PortSpec {
        doc: "a safetensors file holding W [V, D] as BF16, F16 or F32",
        ..W_INPUT
    }],
    outputs: &[
        PortSpec {
            name: "norms",
            doc: "safetensors: `norms` (F32) [V], the L2 norm of each row",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "histogram",
            doc: "CSV: histogram (full or zoom), bin, lower, upper, count",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: mean, std, min, max, median of the norms; the spike (most repeated norm \
                  value and the fullest zoom bin)",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        TENSOR_PARAM,
        ParamSpec {
            name: "bins",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: Some("100"),
            doc: "bins of the full-range histogram over [min, max] of the norms (S03: 100)",
        },
        ParamSpec {
            name: "zoom_bins",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: Some("1000"),
            doc: "bins of the zoomed histogram (S03: 1,000)",
        },
        ParamSpec {
            name: "zoom_min",
            ty: ParamType::Float {
                min: 0.0,
                max: 1e30,
            },
            default: Some("0.36"),
            doc: "lower edge of the zoomed histogram (S03: 0.36)",
        },
        ParamSpec {
            name: "zoom_max",
            ty: ParamType::Float {
                min: 0.0,
                max: 1e30,
            },
            default: Some("0.38"),
            doc: "upper edge of the zoomed histogram, greater than zoom_min (S03: 0.38)",
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
    fn the_w_analysis_stages_are_declared_as_specified() {
        for name in ["w.black_holes", "w.norms"] {
            let s = crate::find(name).unwrap_or_else(|| panic!("{name} is in the catalogue"));
            assert_eq!(s.kind, StageKind::Analyzer, "{name}");
            assert!(!s.uses_torch && !s.device_dependent, "{name}");
            assert_eq!(s.inputs.iter().map(|i| i.name).collect::<Vec<_>>(), ["w"]);
            assert_eq!(s.param("tensor").unwrap().default, Some("\"W\""));
        }
        let bh = crate::find("w.black_holes").unwrap();
        assert_eq!(
            bh.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["table", "summary", "members"]
        );
        assert_eq!(bh.param("min_population").unwrap().default, Some("2"));
        let n = crate::find("w.norms").unwrap();
        assert_eq!(
            n.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["norms", "histogram", "summary"]
        );
        assert_eq!(n.param("bins").unwrap().default, Some("100"));
    }
}
