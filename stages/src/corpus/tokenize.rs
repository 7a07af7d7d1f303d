//! `corpus.tokenize` (science spec S31 byte vocabulary, S32 dead ids of a trained BPE, S37
//! reserved dead ids): a text file in, four outputs out.
//!
//! Ids: `0 … vocab_size − 1` are the scheme's tokens (bytes: the byte values; bpe: the 256 bytes
//! then one id per merge, in rank order), `vocab_size … vocab_size + reserved_dead − 1` are
//! reserved ids that the stream never uses. Dead = never in the stream: absent bytes, merged
//! tokens that later merges always consumed, and every reserved id.
//!
//! `vocab` follows `w.extract`'s format so that `w.tokens` decodes the rows of a model trained on
//! the stream: every token's bytes are written in GPT-2's byte-to-unicode alphabet
//! (`w_tokens::vocab::byte_level_table`; space is `Ġ`, which `w.tokens` uses to guess the
//! byte-level decoder), reserved ids as `<|reserved_k|>` (k from 0; `w.tokens` flags them
//! `reserved` and decodes them verbatim, since ASCII punctuation and letters stand for
//! themselves in that alphabet).
//!
//! BPE: the text is split into words by `pretokenize::split`, distinct words are counted and
//! sorted by their bytes, `bpe::train` learns `vocab_size − 256` merges, and every distinct word
//! is encoded once with `bpe::Encoder` (the word cache); the stream is the words' ids in text
//! order. Encoding distinct words is the only parallel part, collected in word order, so the
//! outputs never depend on the thread count.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;

use azimuth_stage_api::specs::corpus::TOKENIZE as SPEC;

use super::bpe::{self, FastMap};
use super::{byte_histogram, file_name, pretokenize, read_input};
use crate::io::{write_safetensors, TensorOut};
use crate::params::Params;
use crate::w_analysis::with_threads;
use crate::w_tokens::vocab::byte_level_table;
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever the JSON layouts change (the vocab keeps `w.extract`'s
/// format number, 1).
const FORMAT: u32 = 1;

/// Default `vocab_size` per scheme (S31: 256 bytes; S37: 6,144 live ids).
const BYTES_DEFAULT: usize = 256;
const BPE_DEFAULT: usize = 6144;

/// How many of the most frequent and of the rarest live ids the census lists.
const CENSUS_TOP: usize = 20;

/// A tokenized text.
struct Tokenized {
    stream: Vec<u32>,
    /// Bytes of ids `0 … vocab_size − 1`.
    token_bytes: Vec<Vec<u8>>,
    merges: Vec<(u32, u32)>,
    /// BPE only: (words, distinct words).
    words: Option<(usize, usize)>,
}

#[derive(Serialize)]
struct VocabFile<'a> {
    format: u32,
    source: &'a str,
    scheme: &'a str,
    tokens: Vec<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merges: Option<Vec<[u32; 2]>>,
}

#[derive(Serialize)]
struct IdCount {
    id: usize,
    text: String,
    count: u64,
    fraction: f64,
}

#[derive(Serialize)]
struct Census {
    format: u32,
    source: String,
    scheme: String,
    n_tokens: usize,
    vocab_size: usize,
    scheme_vocab_size: usize,
    reserved_dead: usize,
    n_live: usize,
    n_dead: usize,
    /// Dead ids below `scheme_vocab_size` (bytes or merges never in the stream).
    n_dead_unreserved: usize,
    distinct_bytes: usize,
    n_merges: Option<usize>,
    words: Option<usize>,
    distinct_words: Option<usize>,
    most_frequent: Vec<IdCount>,
    rarest_live: Vec<IdCount>,
    dead_ids: Vec<usize>,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let scheme = p.string("scheme")?;
    let vocab_param = p.int("vocab_size")? as usize;
    let reserved = p.int("reserved_dead")? as usize;
    let outs = ["tokens", "vocab", "masks", "census"]
        .iter()
        .map(|o| p.output(o))
        .collect::<Result<Vec<_>, _>>()?;
    let (path, text) = read_input(&p, "text")?;
    let source = file_name(path);
    if text.is_empty() {
        return Err(p.error(format!(
            "`{}` (input `text`) is empty; there is nothing to tokenize",
            path.display()
        )));
    }
    let byte_counts = byte_histogram(&text);
    let (scheme_vocab, tokenized) = match scheme.as_str() {
        "bytes" => {
            let v = if vocab_param == 0 {
                BYTES_DEFAULT
            } else {
                vocab_param
            };
            (v, by_bytes(&p, path, &text, &byte_counts, v)?)
        }
        "bpe" => {
            let v = if vocab_param == 0 {
                BPE_DEFAULT
            } else {
                vocab_param
            };
            (v, by_bpe(&p, path, &text, v)?)
        }
        other => {
            return Err(p.error(format!(
                "param `scheme`: unknown scheme {other:?}; use `bytes` or `bpe`"
            )))
        }
    };
    let total = scheme_vocab + reserved;
    let stream = &tokenized.stream;
    let mut counts = vec![0u64; total];
    for &t in stream {
        counts[t as usize] += 1;
    }
    let live: Vec<bool> = counts.iter().map(|&c| c > 0).collect();
    let live_ids: Vec<usize> = (0..total).filter(|&i| live[i]).collect();
    let dead_ids: Vec<usize> = (0..total).filter(|&i| !live[i]).collect();

    let table = byte_level_table();
    let token_string = |id: usize| -> String {
        if id < scheme_vocab {
            tokenized.token_bytes[id]
                .iter()
                .map(|&b| table[b as usize])
                .collect()
        } else {
            format!("<|reserved_{}|>", id - scheme_vocab)
        }
    };
    let token_text = |id: usize| -> String {
        if id < scheme_vocab {
            String::from_utf8_lossy(&tokenized.token_bytes[id]).into_owned()
        } else {
            token_string(id)
        }
    };

    // tokens
    let stream_le: Vec<u8> = stream
        .iter()
        .flat_map(|&t| (t as i32).to_le_bytes())
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("stage".to_string(), SPEC.name.to_string());
    meta.insert("scheme".to_string(), scheme.clone());
    meta.insert("vocab_size".to_string(), total.to_string());
    meta.insert("reserved_dead".to_string(), reserved.to_string());
    meta.insert("n_tokens".to_string(), stream.len().to_string());
    meta.insert("source".to_string(), source.clone());
    write_safetensors(
        outs[0],
        &[TensorOut {
            name: "tokens",
            dtype: Dtype::I32,
            shape: vec![stream.len()],
            data: &stream_le,
        }],
        &meta,
    )
    .map_err(|e| p.error(e))?;

    // vocab
    let vocab = VocabFile {
        format: 1,
        source: &source,
        scheme: &scheme,
        tokens: (0..total).map(|id| Some(token_string(id))).collect(),
        merges: (scheme == "bpe").then(|| tokenized.merges.iter().map(|&(a, b)| [a, b]).collect()),
    };
    p.write_json(outs[1], &vocab)?;

    // masks
    let live_bytes: Vec<u8> = live.iter().map(|&l| u8::from(l)).collect();
    let dead_bytes: Vec<u8> = live.iter().map(|&l| u8::from(!l)).collect();
    let i64_bytes =
        |v: &mut dyn Iterator<Item = i64>| -> Vec<u8> { v.flat_map(i64::to_le_bytes).collect() };
    let live_ids_le = i64_bytes(&mut live_ids.iter().map(|&i| i as i64));
    let dead_ids_le = i64_bytes(&mut dead_ids.iter().map(|&i| i as i64));
    let counts_le = i64_bytes(&mut counts.iter().map(|&c| c as i64));
    let mut mask_meta = BTreeMap::new();
    mask_meta.insert("stage".to_string(), SPEC.name.to_string());
    mask_meta.insert("scheme".to_string(), scheme.clone());
    mask_meta.insert("vocab_size".to_string(), total.to_string());
    mask_meta.insert("reserved_dead".to_string(), reserved.to_string());
    mask_meta.insert("source".to_string(), source.clone());
    write_safetensors(
        outs[2],
        &[
            TensorOut {
                name: "live_mask",
                dtype: Dtype::BOOL,
                shape: vec![total],
                data: &live_bytes,
            },
            TensorOut {
                name: "dead_mask",
                dtype: Dtype::BOOL,
                shape: vec![total],
                data: &dead_bytes,
            },
            TensorOut {
                name: "live_ids",
                dtype: Dtype::I64,
                shape: vec![live_ids.len()],
                data: &live_ids_le,
            },
            TensorOut {
                name: "dead_ids",
                dtype: Dtype::I64,
                shape: vec![dead_ids.len()],
                data: &dead_ids_le,
            },
            TensorOut {
                name: "counts",
                dtype: Dtype::I64,
                shape: vec![total],
                data: &counts_le,
            },
        ],
        &mask_meta,
    )
    .map_err(|e| p.error(e))?;

    // census
    let n = stream.len();
    let entry = |id: usize| IdCount {
        id,
        text: token_text(id),
        count: counts[id],
        fraction: counts[id] as f64 / n as f64,
    };
    let mut by_count = live_ids.clone();
    by_count.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    let mut rarest = live_ids.clone();
    rarest.sort_by(|&a, &b| counts[a].cmp(&counts[b]).then(a.cmp(&b)));
    let census = Census {
        format: FORMAT,
        source,
        scheme: scheme.clone(),
        n_tokens: n,
        vocab_size: total,
        scheme_vocab_size: scheme_vocab,
        reserved_dead: reserved,
        n_live: live_ids.len(),
        n_dead: dead_ids.len(),
        n_dead_unreserved: dead_ids.iter().filter(|&&i| i < scheme_vocab).count(),
        distinct_bytes: byte_counts.iter().filter(|&&c| c > 0).count(),
        n_merges: (scheme == "bpe").then_some(tokenized.merges.len()),
        words: tokenized.words.map(|w| w.0),
        distinct_words: tokenized.words.map(|w| w.1),
        most_frequent: by_count
            .iter()
            .take(CENSUS_TOP)
            .map(|&i| entry(i))
            .collect(),
        rarest_live: rarest.iter().take(CENSUS_TOP).map(|&i| entry(i)).collect(),
        dead_ids,
    };
    p.write_json(outs[3], &census)
}

/// One token per byte; `vocab` must be 128 or 256.
fn by_bytes(
    p: &Params<'_>,
    path: &Path,
    text: &[u8],
    byte_counts: &[u64; 256],
    vocab: usize,
) -> Result<Tokenized, StageError> {
    if vocab != 128 && vocab != 256 {
        return Err(p.error(format!(
            "param `vocab_size`: {vocab} does not fit scheme `bytes`; use 128 (ASCII text) or \
             256 (any bytes), or 0 for the default 256"
        )));
    }
    if vocab == 128 {
        if let Some(at) = text.iter().position(|&b| b >= 128) {
            let n: u64 = byte_counts[128..].iter().sum();
            return Err(p.error(format!(
                "`{}` (input `text`) has {n} bytes ≥ 128 (the first, 0x{:02x}, at offset {at}), \
                 which a 128-token byte vocabulary cannot hold; clean the text with \
                 `corpus.text` and `ascii_only: true`, or use `vocab_size: 256`",
                path.display(),
                text[at]
            )));
        }
    }
    Ok(Tokenized {
        stream: text.iter().map(|&b| u32::from(b)).collect(),
        token_bytes: (0..vocab).map(|b| vec![b as u8]).collect(),
        merges: Vec::new(),
        words: None,
    })
}

/// A byte-level BPE with `vocab − 256` merges trained on `text`, then `text` encoded with it.
fn by_bpe(p: &Params<'_>, path: &Path, text: &[u8], vocab: usize) -> Result<Tokenized, StageError> {
    let base = bpe::FIRST_MERGE_ID as usize;
    if vocab < base {
        return Err(p.error(format!(
            "param `vocab_size`: {vocab} is too small for scheme `bpe`, whose 256 byte tokens \
             come first; use at least 256 (0 = the default 6,144)"
        )));
    }
    let ranges = pretokenize::split(text);
    // Distinct words, numbered in order of first occurrence, then renumbered in byte order.
    let mut index: FastMap<&[u8], u32> = FastMap::default();
    let mut first_seen: Vec<&[u8]> = Vec::new();
    let mut occurrence: Vec<u32> = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let w = &text[r.clone()];
        let next = first_seen.len() as u32;
        let id = *index.entry(w).or_insert_with(|| {
            first_seen.push(w);
            next
        });
        occurrence.push(id);
    }
    let mut order: Vec<u32> = (0..first_seen.len() as u32).collect();
    order.sort_by(|&a, &b| first_seen[a as usize].cmp(first_seen[b as usize]));
    let mut rank_of = vec![0u32; order.len()];
    for (rank, &w) in order.iter().enumerate() {
        rank_of[w as usize] = rank as u32;
    }
    let mut word_counts = vec![0u64; order.len()];
    for o in occurrence.iter_mut() {
        *o = rank_of[*o as usize];
        word_counts[*o as usize] += 1;
    }
    let words: Vec<(&[u8], u64)> = order
        .iter()
        .zip(&word_counts)
        .map(|(&w, &c)| (first_seen[w as usize], c))
        .collect();

    let trained = bpe::train(&words, vocab - base).map_err(|e| {
        p.error(format!(
            "`{}` (input `text`): BPE training ran out of pairs after {} merges (every word is \
             one token); the text supports at most `vocab_size: {}`",
            path.display(),
            e.merges,
            base + e.merges
        ))
    })?;
    let encoder = bpe::Encoder::new(&trained.merges);
    let encoded: Vec<Vec<u32>> = with_threads(p, p.ctx.threads, || {
        words
            .par_iter()
            .with_min_len(64)
            .map(|(w, _)| encoder.encode_word(w))
            .collect()
    })?;
    // Training ended with every word segmented; the encoder must agree (see bpe.rs).
    if let Some(wi) = (0..words.len()).find(|&i| encoded[i] != trained.segmentations[i]) {
        return Err(p.error(format!(
            "internal error: the BPE encoder and trainer disagree on word {:?}; please report it",
            String::from_utf8_lossy(words[wi].0)
        )));
    }
    let mut stream = Vec::with_capacity(text.len() / 3);
    for &o in &occurrence {
        stream.extend_from_slice(&encoded[o as usize]);
    }
    Ok(Tokenized {
        stream,
        token_bytes: bpe::token_bytes(&trained.merges),
        merges: trained.merges,
        words: Some((ranges.len(), words.len())),
    })
}
