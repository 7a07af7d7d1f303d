//! A byte-level BPE encoder built from a Hugging Face `tokenizer.json`, for the round-trip
//! reachability test of S12 (`tokenizer.encode(text, add_special_tokens=False)`).
//!
//! Steps, as HF runs them:
//! 1. Added tokens are cut out of the text first (leftmost match, longest on ties; every added
//!    token of the supported files has `lstrip`/`rstrip`/`single_word` false, and the others are
//!    refused) and map to their ids.
//! 2. The remaining pieces are normalized (`NFC`, `NFKC`, `NFD`, `NFKD`, `Lowercase`, or a
//!    `Sequence` of them; none is fine).
//! 3. Pre-tokenizer: `Split` with a regex and behaviour `Isolated` (matches and the gaps between
//!    them both become pieces; regexes with look-ahead such as Qwen's `\s+(?!\S)` run on
//!    `fancy-regex`), then `ByteLevel` (bytes → GPT-2 alphabet; with `use_regex` GPT-2's own split
//!    pattern first; `add_prefix_space` prepends a space to a piece that lacks one).
//! 4. Each piece: one symbol per char, then repeatedly the adjacent pair with the lowest merge
//!    rank (leftmost on ties) is merged, until no pair has a rank.
//!
//! Anything else (WordPiece, Unigram, other normalizers or pre-tokenizers) is refused with a
//! message; the stage then fails only if reachability was asked for.

use std::collections::HashMap;

use fancy_regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::vocab::byte_level_table;

/// GPT-2's split pattern (ByteLevel with `use_regex`).
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone, Copy)]
enum Norm {
    Nfc,
    Nfkc,
    Nfd,
    Nfkd,
    Lowercase,
}

enum Pre {
    Split(Regex),
    ByteLevel {
        prefix_space: bool,
        regex: Option<Regex>,
    },
}

pub(crate) struct Encoder {
    vocab: HashMap<String, u32>,
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Added tokens: content → id, longest contents first.
    added: Vec<(String, u32)>,
    norms: Vec<Norm>,
    pres: Vec<Pre>,
    table: [char; 256],
}

fn norms_of(n: &Value, out: &mut Vec<Norm>) -> Result<(), String> {
    if n.is_null() {
        return Ok(());
    }
    match n.get("type").and_then(Value::as_str) {
        Some("NFC") => out.push(Norm::Nfc),
        Some("NFKC") => out.push(Norm::Nfkc),
        Some("NFD") => out.push(Norm::Nfd),
        Some("NFKD") => out.push(Norm::Nfkd),
        Some("Lowercase") => out.push(Norm::Lowercase),
        Some("Sequence") => {
            for sub in n
                .get("normalizers")
                .and_then(Value::as_array)
                .ok_or("normalizer Sequence without `normalizers`")?
            {
                norms_of(sub, out)?;
            }
        }
        other => {
            return Err(format!(
                "normalizer {other:?} is not supported for reachability"
            ))
        }
    }
    Ok(())
}

fn pres_of(p: &Value, out: &mut Vec<Pre>) -> Result<(), String> {
    if p.is_null() {
        return Ok(());
    }
    match p.get("type").and_then(Value::as_str) {
        Some("Split") => {
            let pattern = p
                .get("pattern")
                .and_then(|x| x.get("Regex").or_else(|| x.get("String")))
                .and_then(Value::as_str)
                .ok_or("Split pre-tokenizer without a pattern")?;
            let is_regex = p["pattern"].get("Regex").is_some();
            let behavior = p.get("behavior").and_then(Value::as_str).unwrap_or("");
            let invert = p.get("invert").and_then(Value::as_bool).unwrap_or(false);
            if behavior != "Isolated" || invert {
                return Err(format!(
                    "Split pre-tokenizer with behavior {behavior:?}, invert {invert} is not \
                     supported for reachability (only Isolated, not inverted)"
                ));
            }
            let source = if is_regex {
                pattern.to_string()
            } else {
                fancy_regex::escape(pattern).into_owned()
            };
            let re = Regex::new(&source)
                .map_err(|e| format!("Split pattern {pattern:?} does not compile: {e}"))?;
            out.push(Pre::Split(re));
        }
        Some("ByteLevel") => {
            let regex = if p.get("use_regex").and_then(Value::as_bool).unwrap_or(true) {
                Some(Regex::new(GPT2_PATTERN).expect("GPT-2 pattern compiles"))
            } else {
                None
            };
            out.push(Pre::ByteLevel {
                prefix_space: p
                    .get("add_prefix_space")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                regex,
            });
        }
        Some("Sequence") => {
            for sub in p
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or("pre-tokenizer Sequence without `pretokenizers`")?
            {
                pres_of(sub, out)?;
            }
        }
        other => {
            return Err(format!(
                "pre-tokenizer {other:?} is not supported for reachability"
            ))
        }
    }
    Ok(())
}

/// Splits `piece` into the matches of `re` and the gaps between them (behaviour `Isolated`).
fn split_isolated(re: &Regex, piece: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = 0;
    for m in re.find_iter(piece) {
        // A regex error (backtrack limit) leaves the rest as one piece.
        let Ok(m) = m else { break };
        if m.start() > last {
            out.push(piece[last..m.start()].to_string());
        }
        if m.end() > m.start() {
            out.push(m.as_str().to_string());
        }
        last = m.end();
    }
    if last < piece.len() {
        out.push(piece[last..].to_string());
    }
    out
}

impl Encoder {
    /// The encoder of a parsed tokenizer.json, or why it cannot be built.
    pub(crate) fn new(json: &Value) -> Result<Self, String> {
        let model = &json["model"];
        let kind = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
        if kind != "BPE" {
            return Err(format!(
                "model type `{kind}` (only byte-level BPE is supported)"
            ));
        }
        let mut vocab = HashMap::new();
        for (tok, id) in model["vocab"]
            .as_object()
            .ok_or("`model.vocab` is not a map")?
        {
            vocab.insert(tok.clone(), id.as_u64().ok_or("non-integer id")? as u32);
        }
        let mut merges = HashMap::new();
        let list = model["merges"]
            .as_array()
            .ok_or("`model.merges` is not a list")?;
        for (rank, m) in list.iter().enumerate() {
            let (a, b) = match m {
                Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| format!("merge {rank} {s:?} is not `a b`"))?,
                Value::Array(pair) if pair.len() == 2 => (
                    pair[0].as_str().unwrap_or_default().to_string(),
                    pair[1].as_str().unwrap_or_default().to_string(),
                ),
                _ => return Err(format!("merge {rank} is neither `a b` nor [a, b]")),
            };
            let (Some(&ia), Some(&ib), Some(&ij)) =
                (vocab.get(&a), vocab.get(&b), vocab.get(&format!("{a}{b}")))
            else {
                return Err(format!(
                    "merge {rank} ({a:?}, {b:?}) names a token not in the vocab"
                ));
            };
            merges.entry((ia, ib)).or_insert((rank as u32, ij));
        }
        let mut added = Vec::new();
        if let Some(list) = json.get("added_tokens").and_then(Value::as_array) {
            for a in list {
                for flag in ["lstrip", "rstrip", "single_word"] {
                    if a.get(flag).and_then(Value::as_bool).unwrap_or(false) {
                        return Err(format!("added token {} has `{flag}` set", a["content"]));
                    }
                }
                let content = a["content"].as_str().unwrap_or_default().to_string();
                let id = a["id"].as_u64().unwrap_or_default() as u32;
                if !content.is_empty() {
                    added.push((content, id));
                }
            }
        }
        added.sort_by(|x, y| y.0.len().cmp(&x.0.len()).then(x.1.cmp(&y.1)));
        let mut norms = Vec::new();
        norms_of(&json["normalizer"], &mut norms)?;
        let mut pres = Vec::new();
        pres_of(&json["pre_tokenizer"], &mut pres)?;
        if !pres.iter().any(|p| matches!(p, Pre::ByteLevel { .. })) {
            return Err("the pre-tokenizer has no ByteLevel step (not a byte-level BPE)".into());
        }
        Ok(Encoder {
            vocab,
            merges,
            added,
            norms,
            pres,
            table: byte_level_table(),
        })
    }

    /// The ids of `text`, without special tokens added around it.
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // Leftmost added token; among those starting there, the longest (list order).
            let found = self
                .added
                .iter()
                .filter_map(|(c, id)| rest.find(c.as_str()).map(|at| (at, c.len(), *id)))
                .min_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
            match found {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut ids);
                    ids.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut ids);
                    rest = "";
                }
            }
        }
        ids
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut s = text.to_string();
        for n in &self.norms {
            s = match n {
                Norm::Nfc => s.nfc().collect(),
                Norm::Nfkc => s.nfkc().collect(),
                Norm::Nfd => s.nfd().collect(),
                Norm::Nfkd => s.nfkd().collect(),
                Norm::Lowercase => s.to_lowercase(),
            };
        }
        let mut pieces = vec![s];
        let mut mapped = false;
        for pre in &self.pres {
            match pre {
                Pre::Split(re) => {
                    pieces = pieces.iter().flat_map(|p| split_isolated(re, p)).collect();
                }
                Pre::ByteLevel {
                    prefix_space,
                    regex,
                } => {
                    if let Some(re) = regex {
                        pieces = pieces.iter().flat_map(|p| split_isolated(re, p)).collect();
                    }
                    pieces = pieces
                        .into_iter()
                        .map(|p| {
                            let p = if *prefix_space && !p.starts_with(' ') {
                                format!(" {p}")
                            } else {
                                p
                            };
                            p.bytes().map(|b| self.table[b as usize]).collect()
                        })
                        .collect();
                    mapped = true;
                }
            }
        }
        debug_assert!(mapped, "checked in new()");
        for piece in pieces {
            self.bpe(&piece, ids);
        }
    }

    fn bpe(&self, piece: &str, ids: &mut Vec<u32>) {
        let mut symbols: Vec<u32> = Vec::with_capacity(piece.len());
        let mut buf = [0u8; 4];
        for c in piece.chars() {
            match self.vocab.get(c.encode_utf8(&mut buf) as &str) {
                Some(&id) => symbols.push(id),
                // No unknown token in byte-level BPE: every byte char is in the vocab. A
                // vocabulary lacking one cannot encode this piece; mark it with an impossible id.
                None => symbols.push(u32::MAX),
            }
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(r, j)| (r, i, j)))
                .min_by_key(|&(r, i, _)| (r, i));
            let Some((_, i, joined)) = best else { break };
            symbols[i] = joined;
            symbols.remove(i + 1);
        }
        ids.extend(symbols);
    }
}
