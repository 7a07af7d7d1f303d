//! Reading a vocabulary (a Hugging Face `tokenizer.json` or the `vocab` JSON of `w.extract`) and
//! decoding single token ids to raw bytes the way `tokenizer.decode([id])` does with default
//! arguments (special tokens kept).
//!
//! Decoders, applied to the one token string of the id:
//! - `ByteLevel` (GPT-2 family, Qwen, SmolLM2): every char maps back to one byte through the
//!   inverse of GPT-2's bytes↔unicode table ([`byte_level_table`], built from its definition:
//!   the printable bytes `!`…`~`, `¡`…`¬`, `®`…`ÿ` stand for themselves, the other 68 bytes take
//!   U+0100, U+0101, … in byte order). A token with any char outside the table keeps its own
//!   UTF-8 bytes (as the HF decoder does). The bytes may be an invalid UTF-8 fragment.
//! - `WordPiece`: HF decodes a lone token as it is (the `##` prefix is only removed from tokens
//!   after the first), then applies `cleanup` (" ." → ".", " n't" → "n't", …) when set.
//! - `Metaspace`: `▁` → space, except that in the first token (our only one) every `▁` is
//!   dropped when `add_prefix_space` is true / `prepend_scheme` is not `never`.
//! - `Sequence` of `Replace` (string pattern), `ByteFallback` (`<0xHH>` → byte HH), `Fuse`,
//!   `Strip`, and the BPE `suffix` decoder; no decoder = the token itself.
//!
//! Added tokens (`added_tokens` of tokenizer.json) decode to their `content` verbatim: their
//! text is stored as text, not in the model's byte alphabet (for every real vocabulary checked
//! here — Qwen3, MiniLM — the two readings agree). Ids without an entry decode to "".

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::params::Params;
use crate::StageError;

/// GPT-2's byte → char table: `table[b]` is the char that stands for byte `b`.
pub(crate) fn byte_level_table() -> [char; 256] {
    let printable = |b: u32| {
        (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("Latin-1 code point")
        } else {
            let c = char::from_u32(next).expect("Latin Extended-A code point");
            next += 1;
            c
        };
    }
    table
}

/// The inverse of [`byte_level_table`]: char → byte.
pub(crate) fn byte_level_inverse() -> BTreeMap<char, u8> {
    byte_level_table()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// One step of a token decoder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    ByteLevel,
    WordPiece {
        prefix: String,
        cleanup: bool,
    },
    Metaspace {
        replacement: char,
        drop_in_first: bool,
    },
    Replace {
        pattern: String,
        content: String,
    },
    ByteFallback,
    Fuse,
    Strip {
        content: char,
        start: usize,
        stop: usize,
    },
    BpeSuffix {
        suffix: String,
    },
}

/// What kind of file the vocabulary came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    TokenizerJson,
    ExtractVocab,
}

/// A vocabulary: token strings by id, which ids are added/special, and the decoder.
pub(crate) struct Vocab {
    pub(crate) source: Source,
    /// Model kind (`BPE`, `WordPiece`, `Unigram`, or `w.extract:<source>`).
    pub(crate) model: String,
    /// Token string per id (`None`: no entry).
    pub(crate) tokens: Vec<Option<String>>,
    /// Whether the id is an added token (decoded verbatim).
    pub(crate) added: Vec<bool>,
    /// Whether the id is an added token marked `special`.
    pub(crate) special: Vec<bool>,
    /// Highest id with an entry + 1 (ids at or above it are orphans).
    pub(crate) size: usize,
    pub(crate) steps: Vec<Step>,
    /// Name of the decoder as reported in the summary.
    pub(crate) decoder_name: String,
    /// The parsed tokenizer.json (for the encoder), when that is the source.
    pub(crate) json: Option<Value>,
}

/// Largest id accepted (guards allocations sized by ids read from files).
const MAX_ID: u64 = 50_000_000;

/// Reads the vocabulary file at `path`; `decoder` is the `decoder` param.
pub(crate) fn load(p: &Params<'_>, path: &Path, decoder: &str) -> Result<Vocab, StageError> {
    let bad = |why: String| {
        p.error(format!(
            "`{}` (input `vocab`): {why}; connect a tokenizer.json or the `vocab` output of \
             `w.extract`",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let mut vocab = if obj.contains_key("model") {
        tokenizer_json(&json).map_err(bad)?
    } else if obj.get("tokens").is_some_and(Value::is_array) {
        extract_vocab(&json).map_err(bad)?
    } else {
        return Err(bad(
            "neither a tokenizer.json (no `model`) nor a `w.extract` vocab (no `tokens` list)"
                .into(),
        ));
    };
    if decoder != "auto" {
        vocab.steps = forced_steps(decoder);
        vocab.decoder_name = format!("{decoder} (param)");
    }
    Ok(vocab)
}

fn forced_steps(decoder: &str) -> Vec<Step> {
    match decoder {
        "byte_level" => vec![Step::ByteLevel],
        "wordpiece" => vec![Step::WordPiece {
            prefix: "##".into(),
            cleanup: true,
        }],
        "metaspace" => vec![Step::Metaspace {
            replacement: '▁',
            drop_in_first: true,
        }],
        _ => Vec::new(),
    }
}

fn tokenizer_json(json: &Value) -> Result<Vocab, String> {
    let model = &json["model"];
    let kind = model
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            // Old files omit the type: a merges list means BPE, a WordPiece prefix WordPiece.
            if model.get("merges").is_some() {
                Some("BPE".into())
            } else if model.get("continuing_subword_prefix").is_some() {
                Some("WordPiece".into())
            } else {
                None
            }
        })
        .ok_or("`model` has no `type`")?;
    let mut entries: Vec<(u64, String, bool, bool)> = Vec::new();
    match model.get("vocab") {
        Some(Value::Object(map)) => {
            for (tok, id) in map {
                let id = id
                    .as_u64()
                    .ok_or_else(|| format!("`model.vocab[{tok:?}]` is not a token id"))?;
                entries.push((id, tok.clone(), false, false));
            }
        }
        Some(Value::Array(list)) => {
            // Unigram: [[piece, score], ...], the position is the id.
            for (id, item) in list.iter().enumerate() {
                let tok = item
                    .get(0)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("`model.vocab[{id}]` is not a [piece, score] pair"))?;
                entries.push((id as u64, tok.to_string(), false, false));
            }
        }
        _ => return Err("`model.vocab` is neither a map nor a list".into()),
    }
    if let Some(added) = json.get("added_tokens").filter(|a| !a.is_null()) {
        let list = added.as_array().ok_or("`added_tokens` is not a list")?;
        for (k, a) in list.iter().enumerate() {
            let id = a
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("`added_tokens[{k}]` has no integer `id`"))?;
            let content = a
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`added_tokens[{k}]` has no string `content`"))?;
            let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
            entries.push((id, content.to_string(), true, special));
        }
    }
    let (steps, decoder_name) = decoder_steps(&json["decoder"])?;
    let mut vocab = build(Source::TokenizerJson, kind, entries, steps, decoder_name)?;
    vocab.json = Some(json.clone());
    Ok(vocab)
}

fn build(
    source: Source,
    model: String,
    entries: Vec<(u64, String, bool, bool)>,
    steps: Vec<Step>,
    decoder_name: String,
) -> Result<Vocab, String> {
    let size = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0);
    if size > MAX_ID {
        return Err(format!("token id {} is implausibly large", size - 1));
    }
    let size = size as usize;
    let mut tokens = vec![None; size];
    let mut added = vec![false; size];
    let mut special = vec![false; size];
    // Model entries first, added tokens after: an added token overrides the model's string
    // for its id, as in HF (the added vocabulary is consulted first when decoding).
    for (id, tok, is_added, is_special) in entries {
        let i = id as usize;
        tokens[i] = Some(tok);
        added[i] |= is_added;
        special[i] |= is_special;
    }
    Ok(Vocab {
        source,
        model,
        tokens,
        added,
        special,
        size,
        steps,
        decoder_name,
        json: None,
    })
}

fn decoder_steps(d: &Value) -> Result<(Vec<Step>, String), String> {
    if d.is_null() {
        return Ok((Vec::new(), "none".into()));
    }
    let ty = d
        .get("type")
        .and_then(Value::as_str)
        .ok_or("`decoder` has no `type`")?;
    let str_field = |name: &str, default: &str| -> String {
        d.get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let step = match ty {
        "ByteLevel" => Step::ByteLevel,
        "WordPiece" => Step::WordPiece {
            prefix: str_field("prefix", "##"),
            cleanup: d.get("cleanup").and_then(Value::as_bool).unwrap_or(true),
        },
        "Metaspace" => {
            let replacement = str_field("replacement", "▁")
                .chars()
                .next()
                .ok_or("Metaspace decoder with an empty `replacement`")?;
            let drop_in_first = match d.get("prepend_scheme").and_then(Value::as_str) {
                Some(s) => s != "never",
                None => d
                    .get("add_prefix_space")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            };
            Step::Metaspace {
                replacement,
                drop_in_first,
            }
        }
        "Replace" => {
            let pattern = d
                .get("pattern")
                .and_then(|p| p.get("String"))
                .and_then(Value::as_str)
                .ok_or("Replace decoder without a `String` pattern (regex patterns unsupported)")?;
            Step::Replace {
                pattern: pattern.to_string(),
                content: str_field("content", ""),
            }
        }
        "ByteFallback" => Step::ByteFallback,
        "Fuse" => Step::Fuse,
        "Strip" => Step::Strip {
            content: str_field("content", " ").chars().next().unwrap_or(' '),
            start: d.get("start").and_then(Value::as_u64).unwrap_or(0) as usize,
            stop: d.get("stop").and_then(Value::as_u64).unwrap_or(0) as usize,
        },
        "BPEDecoder" => Step::BpeSuffix {
            suffix: str_field("suffix", "</w>"),
        },
        "Sequence" => {
            let list = d
                .get("decoders")
                .and_then(Value::as_array)
                .ok_or("Sequence decoder without `decoders`")?;
            let mut steps = Vec::new();
            let mut names = Vec::new();
            for sub in list {
                let (s, n) = decoder_steps(sub)?;
                steps.extend(s);
                names.push(n);
            }
            return Ok((steps, format!("Sequence[{}]", names.join(", "))));
        }
        other => {
            return Err(format!(
                "decoder type `{other}` is not supported by w.tokens"
            ))
        }
    };
    Ok((vec![step], ty.to_string()))
}

fn extract_vocab(json: &Value) -> Result<Vocab, String> {
    let source = json
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let list = json["tokens"].as_array().expect("checked by the caller");
    let mut entries = Vec::new();
    for (id, t) in list.iter().enumerate() {
        match t {
            Value::Null => {}
            Value::String(s) => entries.push((id as u64, s.clone(), false, false)),
            _ => return Err(format!("`tokens[{id}]` is neither a string nor null")),
        }
    }
    let (steps, name) = guess_steps(entries.iter().map(|e| e.1.as_str()));
    build(
        Source::ExtractVocab,
        format!("w.extract:{source}"),
        entries,
        steps,
        name,
    )
}

/// The decoder guessed for bare token strings (see the `decoder` param).
fn guess_steps<'s>(tokens: impl Iterator<Item = &'s str> + Clone) -> (Vec<Step>, String) {
    let inverse = byte_level_inverse();
    let total = tokens.clone().count().max(1);
    let in_alphabet = tokens
        .clone()
        .filter(|t| t.chars().all(|c| inverse.contains_key(&c)))
        .count();
    let has_g = tokens.clone().any(|t| t.contains('Ġ'));
    if has_g && in_alphabet * 100 >= total * 95 {
        return (vec![Step::ByteLevel], "byte_level (guessed)".into());
    }
    let has_hash = tokens.clone().any(|t| t.starts_with("##") && t.len() > 2);
    let has_bert = tokens.clone().any(|t| t == "[UNK]" || t == "[CLS]");
    if has_hash && has_bert {
        return (forced_steps("wordpiece"), "wordpiece (guessed)".into());
    }
    if tokens.clone().any(|t| t.starts_with('▁')) {
        return (forced_steps("metaspace"), "metaspace (guessed)".into());
    }
    (Vec::new(), "verbatim (guessed)".into())
}

impl Vocab {
    /// The raw bytes `tokenizer.decode([id])` produces for `id` (empty for ids without entry).
    pub(crate) fn decode(&self, id: usize, inverse: &BTreeMap<char, u8>) -> Vec<u8> {
        let Some(Some(tok)) = self.tokens.get(id) else {
            return Vec::new();
        };
        if self.added[id] {
            return tok.as_bytes().to_vec();
        }
        let mut bytes = tok.as_bytes().to_vec();
        for step in &self.steps {
            bytes = apply(step, bytes, inverse);
        }
        bytes
    }
}

/// Applies a text step to `bytes` (as lossy text when they are not UTF-8, keeping the raw bytes
/// when the step leaves the text unchanged).
fn on_text(bytes: Vec<u8>, f: impl Fn(&str) -> String) -> Vec<u8> {
    match String::from_utf8(bytes) {
        Ok(s) => f(&s).into_bytes(),
        Err(e) => {
            let bytes = e.into_bytes();
            let lossy = String::from_utf8_lossy(&bytes).into_owned();
            let out = f(&lossy);
            if out == lossy {
                bytes
            } else {
                out.into_bytes()
            }
        }
    }
}

fn apply(step: &Step, bytes: Vec<u8>, inverse: &BTreeMap<char, u8>) -> Vec<u8> {
    match step {
        Step::ByteLevel => {
            let Ok(s) = std::str::from_utf8(&bytes) else {
                return bytes;
            };
            let mapped: Option<Vec<u8>> = s.chars().map(|c| inverse.get(&c).copied()).collect();
            mapped.unwrap_or(bytes)
        }
        Step::WordPiece { cleanup, .. } => {
            // A lone token is the first one: its prefix stays.
            if *cleanup {
                on_text(bytes, wordpiece_cleanup)
            } else {
                bytes
            }
        }
        Step::Metaspace {
            replacement,
            drop_in_first,
        } => on_text(bytes, |s| {
            s.chars()
                .filter_map(|c| {
                    if c == *replacement {
                        (!drop_in_first).then_some(' ')
                    } else {
                        Some(c)
                    }
                })
                .collect()
        }),
        Step::Replace { pattern, content } => on_text(bytes, |s| s.replace(pattern, content)),
        Step::ByteFallback => {
            let is_byte = bytes.len() == 6
                && bytes.starts_with(b"<0x")
                && bytes[5] == b'>'
                && bytes[3..5].iter().all(u8::is_ascii_hexdigit);
            if is_byte {
                let hex = std::str::from_utf8(&bytes[3..5]).expect("ASCII");
                vec![u8::from_str_radix(hex, 16).expect("checked hex digits")]
            } else {
                bytes
            }
        }
        Step::Fuse => bytes,
        Step::Strip {
            content,
            start,
            stop,
        } => on_text(bytes, |s| {
            let chars: Vec<char> = s.chars().collect();
            let lead = chars
                .iter()
                .take(*start)
                .take_while(|&&c| c == *content)
                .count();
            let trail = chars[lead..]
                .iter()
                .rev()
                .take(*stop)
                .take_while(|&&c| c == *content)
                .count();
            chars[lead..chars.len() - trail].iter().collect()
        }),
        // A lone token is the last one: its suffix is removed, not turned into a space.
        Step::BpeSuffix { suffix } => on_text(bytes, |s| s.replace(suffix.as_str(), "")),
    }
}

/// The clean-up of HF's WordPiece decoder (spaces before punctuation and contractions).
pub(crate) fn wordpiece_cleanup(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_matches_gpt2_definition() {
        let t = byte_level_table();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[0xAD], 'Ń');
        assert_eq!(t[0xE0], 'à');
        let distinct: std::collections::BTreeSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(byte_level_inverse()[&'Ġ'], b' ');
    }
}
