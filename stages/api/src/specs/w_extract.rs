//! Metadata of the `w_extract` family (implementation in `azimuth-stages`, `src/w_extract/`):
//! `w.extract`, which copies the unembedding matrix W (row i = token id i) out of a model
//! checkpoint (a Hugging Face safetensors directory or a GGUF file) into a one-tensor safetensors
//! file, with the checkpoint's vocabulary beside it as JSON (science spec S01, issue 3).

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[EXTRACT];

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
    }],
    outputs: &[
        PortSpec {
            name: "w",
            doc: "a safetensors file holding one 2-D tensor `W` [vocab, hidden] with sorted \
                  provenance metadata (source format, tensor, dtype, shape, rule, file names)",
            many: false,
            optional: false,
        },
        PortSpec {
            name: "vocab",
            doc: "JSON {\"format\":1,\"source\":..,\"tokens\":[..]}: token strings by id (null \
                  where an id has none); empty when the checkpoint carries no vocabulary",
            many: false,
            optional: false,
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
};
