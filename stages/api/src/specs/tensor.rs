//! Metadata of the `tensor.*` family (implementations in `azimuth-stages`, `src/tensor/`):
//! `tensor.random`, a seeded Gaussian matrix made with libtorch, and `tensor.summary`, per-tensor
//! statistics and a census of bit-identical rows.

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[RANDOM, SUMMARY];

pub const RANDOM: StageSpec = StageSpec {
    name: "tensor.random",
    version: 1,
    kind: StageKind::Generator,
    summary: "a seeded Gaussian matrix (rows x cols) made with libtorch, saved as safetensors",
    inputs: &[],
    outputs: &[PortSpec {
        name: "tensor",
        doc: "a safetensors file holding one tensor of shape (rows, cols)",
        many: false,
        optional: false,
        ext: "safetensors",
    }],
    params: &[
        ParamSpec {
            name: "rows",
            ty: ParamType::Int {
                min: 1,
                max: 10_000_000,
            },
            default: None,
            doc: "number of rows (e.g. vocabulary size)",
        },
        ParamSpec {
            name: "cols",
            ty: ParamType::Int {
                min: 1,
                max: 1_000_000,
            },
            default: None,
            doc: "number of columns (e.g. model width); rows * cols must not exceed 4e9",
        },
        ParamSpec {
            name: "dtype",
            ty: ParamType::Choice(&["f32", "bf16", "f16"]),
            default: Some("\"bf16\""),
            doc: "element type of the stored tensor (cast from f32 with round-to-nearest-even)",
        },
        ParamSpec {
            name: "mean",
            ty: ParamType::Float {
                min: -f64::MAX,
                max: f64::MAX,
            },
            default: Some("0.0"),
            doc: "mean of the normal distribution",
        },
        ParamSpec {
            name: "std",
            ty: ParamType::Float {
                min: 0.0,
                max: f64::MAX,
            },
            default: Some("1.0"),
            doc: "standard deviation of the normal distribution (0 gives a constant matrix)",
        },
        ParamSpec {
            name: "seed",
            ty: ParamType::Int {
                min: 0,
                max: i64::MAX,
            },
            default: Some("42"),
            doc: "seed for libtorch's generator (tch::manual_seed)",
        },
        ParamSpec {
            name: "name",
            ty: ParamType::Str,
            default: Some("\"weight\""),
            doc: "name of the tensor inside the safetensors file",
        },
    ],
    uses_torch: true,
    device_dependent: true,
    reads_provenance: false,
};

pub const SUMMARY: StageSpec = StageSpec {
    name: "tensor.summary",
    version: 1,
    kind: StageKind::Analyzer,
    summary:
        "per-tensor statistics (moments, row norms, distinct rows) of safetensors files, as JSON",
    inputs: &[PortSpec {
        name: "tensors",
        doc: "one or more safetensors files (F32, F16, BF16 or F64 tensors)",
        many: true,
        optional: false,
        ext: "",
    }],
    outputs: &[PortSpec {
        name: "summary",
        doc: "a JSON report, one entry per input file and tensor",
        many: false,
        optional: false,
        ext: "json",
    }],
    params: &[ParamSpec {
        name: "tensor",
        ty: ParamType::Str,
        default: Some("\"\""),
        doc: "name of the tensor to summarize in every file; empty = every tensor",
    }],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};
