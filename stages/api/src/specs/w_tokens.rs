//! Metadata of the `w_tokens` family (implementations in `azimuth-stages`, `src/w_tokens/`):
//! `w.tokens`, the tokenizer side of a W analysis (science spec S12): every id decoded the way
//! `tokenizer.decode([id])` does, classified by script with the three classifiers of S12, flagged
//! (special, reserved-looking, invalid UTF-8 fragment, orphan), joined with black holes and a
//! dead-set mask, with Thai enrichment and (optionally) round-trip reachability.

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family, in catalogue order.
pub const SPECS: &[StageSpec] = &[TOKENS];

pub const TOKENS: StageSpec = StageSpec {
    name: "w.tokens",
    version: 1,
    kind: StageKind::Analyzer,
    summary: "decode every token id, classify scripts (three S12 variants), flag specials, \
              orphans and invalid UTF-8, join black holes and a dead set, Thai enrichment and \
              round-trip reachability (S12)",
    inputs: &[
        PortSpec {
            name: "vocab",
            doc: "a Hugging Face tokenizer.json (BPE or WordPiece) or the `vocab` JSON of \
                  `w.extract` (`{\"format\":1,\"tokens\":[..]}`); which one is read from the content",
            many: false,
            optional: false,
            ext: "",
        },
        PortSpec {
            name: "w",
            doc: "optional safetensors file holding W [V, D]: only the header is read, for the row \
                  count V (ids ≥ the vocabulary size are orphans)",
            many: false,
            optional: true,
            ext: "",
        },
        PortSpec {
            name: "black_holes",
            doc: "optional `members` output of `w.black_holes` (`black_hole_id` [V])",
            many: false,
            optional: true,
            ext: "",
        },
        PortSpec {
            name: "dead",
            doc: "optional masks file of `w.dead_sets` (BOOL [V] tensors, e.g. `rule_a`); the \
                  tensor named by param `mask` is the dead set",
            many: false,
            optional: true,
            ext: "",
        },
    ],
    outputs: &[
        PortSpec {
            name: "tokens",
            doc: "CSV, one line per id 0…V−1: id, text (quoted, escaped), bytes_hex, valid_utf8, \
                  script_name (variant 1), script (variant 2), thai_first (variant 3), special, \
                  reserved, orphan, black_hole, dead, reachable, reencoded_len",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "dead_tokens",
            doc: "CSV, the same columns for the tokens in the dead set or in a black hole, sorted \
                  by black hole id (0 last) then id",
            many: false,
            optional: false,
            ext: "csv",
        },
        PortSpec {
            name: "summary",
            doc: "JSON: vocabulary kind and size, rows V, orphans, script counts (all ids and dead \
                  set, variants 1 and 2), Thai enrichment with its denominators, special tokens in \
                  the dead set, decoded length statistics, reachability when computed",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "tensor",
            ty: ParamType::Str,
            default: Some("\"W\""),
            doc: "name of the matrix inside input `w` (only its shape is read)",
        },
        ParamSpec {
            name: "mask",
            ty: ParamType::Str,
            default: Some("\"rule_a\""),
            doc: "which BOOL tensor of input `dead` is the dead set (`rule_a`, `rule_b`, `rule_d`)",
        },
        ParamSpec {
            name: "decoder",
            ty: ParamType::Choice(&["auto", "byte_level", "wordpiece", "metaspace", "verbatim"]),
            default: Some("\"auto\""),
            doc: "how token strings become text: `auto` = the decoder of tokenizer.json, or for a \
                  `w.extract` vocab JSON a guess from the strings (byte-level BPE if they use \
                  GPT-2's byte alphabet with `Ġ`, WordPiece if `##` pieces and `[UNK]`/`[CLS]`, \
                  Metaspace if `▁`, else verbatim)",
        },
        ParamSpec {
            name: "reachability",
            ty: ParamType::Bool,
            default: Some("false"),
            doc: "re-encode every decoded token with the tokenizer's own normalizer, \
                  pre-tokenizer and BPE merges; reachable iff the result is exactly [id] (S12; \
                  needs a byte-level BPE tokenizer.json; takes seconds for 150k ids)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};
