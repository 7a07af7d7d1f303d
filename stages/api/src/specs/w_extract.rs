//! Metadata of the `w_extract` family (implementation in `azimuth-stages`, `src/w_extract/`):
//! `w.extract`, which copies the unembedding matrix W (row i = token id i) out of a model
//! checkpoint (a Hugging Face safetensors directory or a GGUF file) into a one-tensor safetensors
//! file, with the checkpoint's vocabulary beside it as JSON (science spec S01, issue 3); and
//! `w.synthetic_checkpoint`, a Qwen-shaped sharded checkpoint with planted, exactly known dead-token
//! structure, for tests and full-scale benchmarks without the real weights.

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[EXTRACT, SYNTHETIC_CHECKPOINT];

pub const EXTRACT: StageSpec = StageSpec {
    name: "w.extract",
    version: 1,
    kind: StageKind::Generator,
    summary:
        "the unembedding matrix W (rows = token ids) of a Hugging Face safetensors checkpoint \
              or a GGUF file, in its source dtype (GGUF Q8_0 dequantized exactly to F32), plus \
              the vocabulary",
    inputs: &[PortSpec {
        name: "checkpoint",
        doc: "a Hugging Face directory (model.safetensors, or model.safetensors.index.json with \
              its shards; config.json and tokenizer.json optional), a single .safetensors file, \
              or a .gguf file (v2/v3)",
        many: false,
        optional: false,
        ext: "",
    }],
    outputs: &[
        PortSpec {
            name: "w",
            doc: "a safetensors file holding one 2-D tensor `W` [vocab, hidden] with sorted \
                  provenance metadata (source format, tensor, dtype, shape, rule, file names)",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "vocab",
            doc: "JSON {\"format\":1,\"source\":..,\"tokens\":[..]}: token strings by id (null \
                  where an id has none); empty when the checkpoint carries no vocabulary",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[ParamSpec {
        name: "tensor",
        ty: ParamType::Str,
        default: Some("\"\""),
        doc: "name of the tensor to extract; empty = auto (HF: lm_head.weight, or \
              model.embed_tokens.weight when tied or lm_head is absent; GGUF: output.weight, \
              else token_embd.weight). A name with or without the `model.` prefix is accepted",
    }],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

const fn int(min: i64, max: i64) -> ParamType {
    ParamType::Int { min, max }
}

const fn float(min: f64, max: f64) -> ParamType {
    ParamType::Float { min, max }
}

pub const SYNTHETIC_CHECKPOINT: StageSpec = StageSpec {
    name: "w.synthetic_checkpoint",
    version: 1,
    kind: StageKind::Generator,
    summary: "a Qwen-shaped Hugging Face checkpoint (3 shards + index, tied bf16 embeddings) with \
              planted black holes, singletons, an Oort cloud, a void and a halo, all known exactly",
    inputs: &[],
    outputs: &[
        PortSpec {
            name: "checkpoint",
            doc: "a directory: config.json (tie_word_embeddings), model.safetensors.index.json and \
                  model-0000{1,2,3}-of-00003.safetensors; `model.embed_tokens.weight` [rows, cols] \
                  BF16 lives in shard 2, small layer tensors in shards 1 and 3",
            many: false,
            optional: false,
            ext: "",
        },
        PortSpec {
            name: "truth",
            doc: "JSON: the planted structure by token id (black hole members in numbering order, \
                  core singletons, Oort rows, halo rows), the anchor and the planted radii",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "rows",
            ty: int(16, 4_000_000),
            default: Some("151936"),
            doc: "vocabulary size V (Qwen3-4B: 151,936)",
        },
        ParamSpec {
            name: "cols",
            ty: int(8, 65_536),
            default: Some("2560"),
            doc: "hidden size D (Qwen3-4B: 2,560)",
        },
        ParamSpec {
            name: "seed",
            ty: int(0, i64::MAX),
            default: Some("42"),
            doc: "seed of the counter-based generator (bytes depend only on params)",
        },
        ParamSpec {
            name: "populations",
            ty: ParamType::IntList { min: 2, max: 1_000_000 },
            default: Some("[814, 704, 306, 228, 11, 10, 6, 5, 4, 4, 3, 3, 2]"),
            doc: "populations of the planted black holes, largest first (S04's Qwen census); \
                  black hole 1 is the anchor",
        },
        ParamSpec {
            name: "singletons",
            ty: int(0, 1_000_000),
            default: Some("112"),
            doc: "core singletons: the anchor with a few coordinates moved 1-3 grid steps inside \
                  their binade (exponent distance 0: in rule A and rule B)",
        },
        ParamSpec {
            name: "oort",
            ty: int(0, 1_000_000),
            default: Some("9"),
            doc: "Oort rows at planted radii 1e-3 ... void_inner from the anchor, each with one tiny \
                  coordinate lifted tolerance+1 binades (in rule B, not in rule A; S05's |B∖A| = 9)",
        },
        ParamSpec {
            name: "halo",
            ty: int(0, 1_000_000),
            default: Some("8000"),
            doc: "halo rows at radii from void_outer to 1.0, geometrically spaced (the trained \
                  rows nearest the dead region; they close the void from outside)",
        },
        ParamSpec {
            name: "tolerance",
            ty: int(0, 200),
            default: Some("5"),
            doc: "rule A's exponent tolerance the Oort and halo rows are planted to exceed",
        },
        ParamSpec {
            name: "anchor_std",
            ty: float(1e-6, 1.0),
            default: Some("0.00733"),
            doc: "std of the anchor's coordinates (0.00733 · √2560 ≈ 0.371, the Qwen BH norm)",
        },
        ParamSpec {
            name: "live_std",
            ty: float(1e-6, 10.0),
            default: Some("0.0215"),
            doc: "std of the live rows' coordinates (0.0215 · √2560 ≈ 1.09, Qwen's mean row norm)",
        },
        ParamSpec {
            name: "void_inner",
            ty: float(1e-6, 10.0),
            default: Some("0.0096"),
            doc: "planted radius of the outermost Oort row (S05 rule B: 9.574e-3)",
        },
        ParamSpec {
            name: "void_outer",
            ty: float(1e-6, 10.0),
            default: Some("0.0147"),
            doc: "planted radius of the innermost halo row (S05 rule B: 1.471e-2)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};
