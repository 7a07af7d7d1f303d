//! Corpus and vocabulary stages (science spec S31/S37 data preparation): plain text in, token streams, vocabularies, live/dead masks and a census out.
//!
//! `corpus.text` cleans a text file the way S31 prepared *The Great Gatsby* (Gutenberg marker cut,
//! non-ASCII dropped, CRLF → LF); `corpus.tokenize` turns the cleaned bytes into a token stream,
//! either one token per byte (S31's 128-byte vocabulary) or with a byte-level BPE trained on the
//! text itself, plus reserved ids that the stream never uses (S37's 2,048 padding rows). The
//! outputs are what the toy-model trainer (`train.gpt`) and the W stages read: the stream, a
//! `w.extract`-style vocabulary, BOOL [V] live/dead masks and a census.

use crate::{ParamSpec, ParamType, PortSpec, StageKind, StageSpec};

/// The family's stages, in catalogue order.
pub const SPECS: &[StageSpec] = &[TEXT, TOKENIZE];

pub const TEXT: StageSpec = StageSpec {
    name: "corpus.text",
    version: 1,
    kind: StageKind::Generator,
    summary: "clean a text file: cut between Gutenberg-style markers, normalise newlines, drop \
              non-ASCII bytes (S31)",
    inputs: &[PortSpec {
        name: "raw",
        doc: "any file (read as raw bytes; it need not be UTF-8); called `raw` because the \
              output is `text`",
        many: false,
        optional: false,
        ext: "",
    }],
    outputs: &[
        PortSpec {
            name: "text",
            doc: "the cleaned bytes",
            many: false,
            optional: false,
            ext: "txt",
        },
        PortSpec {
            name: "summary",
            doc:
                "JSON: bytes in and out of every step, bytes dropped, distinct byte values, \
                  lines, the 10 most frequent bytes with counts and fractions, sha256 of the output",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "start_marker",
            ty: ParamType::Str,
            default: Some("\"\""),
            doc: "when non-empty, keep only the text after the line that contains this string \
                  (first occurrence), e.g. `*** START OF` (S31); an absent marker is an error",
        },
        ParamSpec {
            name: "end_marker",
            ty: ParamType::Str,
            default: Some("\"\""),
            doc: "when non-empty, keep only the text before the line that contains this string \
                  (first occurrence after the start marker's line), e.g. `*** END OF` (S31); an \
                  absent marker is an error",
        },
        ParamSpec {
            name: "newlines",
            ty: ParamType::Choice(&["keep", "lf"]),
            default: Some("\"keep\""),
            doc:
                "`keep` leaves line ends alone; `lf` turns CRLF and lone CR into LF (S31: reading \
                  the file back in text mode, 272,305 → 265,905 bytes)",
        },
        ParamSpec {
            name: "ascii_only",
            ty: ParamType::Bool,
            default: Some("false"),
            doc: "drop every byte ≥ 128 (S31 drops non-ASCII before writing the corpus)",
        },
    ],
    uses_torch: false,
    device_dependent: false,
    reads_provenance: false,
};

pub const TOKENIZE: StageSpec = StageSpec {
    name: "corpus.tokenize",
    version: 1,
    kind: StageKind::Generator,
    summary: "tokenize a text (one token per byte, or a byte-level BPE trained on it), with \
              reserved dead ids, live/dead masks, a w.extract-style vocabulary and a census \
              (S31, S32, S37)",
    inputs: &[PortSpec {
        name: "text",
        doc: "the `text` output of `corpus.text`, or any file (read as raw bytes)",
        many: false,
        optional: false,
        ext: "",
    }],
    outputs: &[
        PortSpec {
            name: "tokens",
            doc: "safetensors: `tokens` (I32) [N], the token stream in text order; metadata \
                  `scheme`, `vocab_size` (total, reserved ids included), `reserved_dead`, \
                  `n_tokens`, `source` (the input's file name)",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "vocab",
            doc:
                "JSON in `w.extract`'s vocab format (`format`, `source`, `tokens`: one string per \
                  id in GPT-2's byte-to-unicode alphabet, reserved ids as `<|reserved_k|>`), plus \
                  `scheme` and, for `bpe`, `merges` ([[a, b], ...] in rank order; merge k makes \
                  id 256 + k)",
            many: false,
            optional: false,
            ext: "json",
        },
        PortSpec {
            name: "masks",
            doc: "safetensors: `live_mask`, `dead_mask` (BOOL) [V] (dead = never in the stream, \
                  reserved ids included), `live_ids`, `dead_ids` (I64), `counts` (I64) [V]",
            many: false,
            optional: false,
            ext: "safetensors",
        },
        PortSpec {
            name: "census",
            doc:
                "JSON: n_tokens, vocab_size, n_live, n_dead, reserved_dead, distinct bytes of the \
                  text, the 20 most frequent ids and the 20 rarest live ids (text, count, \
                  fraction), the dead ids",
            many: false,
            optional: false,
            ext: "json",
        },
    ],
    params: &[
        ParamSpec {
            name: "scheme",
            ty: ParamType::Choice(&["bytes", "bpe"]),
            default: None,
            doc: "`bytes`: token = byte value (S31); `bpe`: byte-level BPE trained on the input \
                  (256 byte tokens + merges), GPT-2-style pre-tokenization",
        },
        ParamSpec {
            name: "vocab_size",
            ty: ParamType::Int {
                min: 0,
                max: 1_000_000,
            },
            default: Some("0"),
            doc: "ids before the reserved ones; 0 = the scheme's default. `bytes`: 128 or 256 \
                  (default 256; 128 needs every byte < 128); `bpe`: at least 256, the live budget \
                  that merges fill (default 6,144, S37)",
        },
        ParamSpec {
            name: "reserved_dead",
            ty: ParamType::Int {
                min: 0,
                max: 1_000_000,
            },
            default: Some("0"),
            doc: "extra ids appended after `vocab_size` that the stream never uses (S37 Duckling \
                  II: 2,048)",
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
    fn the_corpus_stages_are_declared_as_specified() {
        let text = crate::find("corpus.text").expect("corpus.text");
        let tok = crate::find("corpus.tokenize").expect("corpus.tokenize");
        for s in [text, tok] {
            assert_eq!(s.kind, StageKind::Generator, "{}", s.name);
            assert_eq!(s.version, 1);
            assert!(!s.uses_torch && !s.device_dependent, "{}", s.name);
        }
        assert_eq!(
            text.inputs.iter().map(|i| i.name).collect::<Vec<_>>(),
            ["raw"]
        );
        assert_eq!(
            tok.inputs.iter().map(|i| i.name).collect::<Vec<_>>(),
            ["text"]
        );
        assert_eq!(
            text.outputs
                .iter()
                .map(|o| o.file_name())
                .collect::<Vec<_>>(),
            ["text.txt", "summary.json"]
        );
        assert_eq!(text.param("newlines").unwrap().default, Some("\"keep\""));
        assert_eq!(text.param("ascii_only").unwrap().default, Some("false"));
        assert_eq!(
            tok.outputs
                .iter()
                .map(|o| o.file_name())
                .collect::<Vec<_>>(),
            [
                "tokens.safetensors",
                "vocab.json",
                "masks.safetensors",
                "census.json"
            ]
        );
        assert_eq!(tok.param("scheme").unwrap().default, None);
        assert_eq!(tok.param("reserved_dead").unwrap().default, Some("0"));
    }
}
