//! `w.tokens` (science spec S12): one line per token id 0…V−1 with its decode, the three script
//! labels, flags and the black hole / dead-set membership; the dead-set table; a JSON summary
//! with script counts, Thai enrichment and (optionally) round-trip reachability.
//!
//! Rows V: the first dimension of tensor `tensor` of input `w` (header only), else of
//! `black_hole_id` in `black_holes`, else of the mask in `dead`; all connected ones must agree.
//! Without any, V = the vocabulary size (highest id with an entry + 1). Ids ≥ the vocabulary size
//! are *orphans* (S04: Qwen's 267 rows 151,669…151,935) and decode to ""; ids below it without an
//! entry (holes) also decode to "" and are counted as `missing`.
//!
//! Dead set: the mask `mask` of input `dead` when connected, else the black-hole tokens when
//! `black_holes` is connected, else none (dead-set statistics are then `null`). The `dead_tokens`
//! CSV (an output cannot share the input's name `dead`)
//! lists the dead set ∪ black-hole tokens, by black hole id (non-members last) then id.
//!
//! Thai enrichment (S12's 81.18% / 61.4% / 47.9× for Qwen3 and cluster C, variant 1):
//! `dead_share_of_decodable` = dead Thai / dead tokens with a decode (orphans and holes left out);
//! `dead_share_of_all` = dead Thai / all dead tokens (S12's 71.4%); `vocab_share` = Thai among ids
//! with an entry / those ids; `share_of_thai_in_dead` = dead Thai / all Thai; `enrichment` =
//! `dead_share_of_decodable / vocab_share`.
//!
//! CSV text: always quoted; `"` doubled; `\` written `\\`; control chars (category Cc) and the
//! line/paragraph separators U+2028/U+2029 written `\u{hex}`; everything else verbatim.
//! `bytes_hex` is the exact decoded bytes (lower-case hex), `valid_utf8` whether they are UTF-8;
//! `text` is their lossy reading (U+FFFD per maximal invalid subsequence, as HF prints them).
//! Reachability columns are empty unless `reachability` is set. Every per-id computation is
//! independent and collected in id order, so the outputs never depend on the thread count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use azimuth_stage_api::specs::w_tokens::TOKENS as SPEC;

use super::bpe::Encoder;
use super::scripts;
use super::vocab::{self, byte_level_inverse, Source};
use crate::params::Params;
use crate::w_analysis::{load_black_holes, load_mask, with_threads};
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever an output's layout changes.
const FORMAT: u32 = 1;

/// Everything known about one id.
struct Token {
    bytes: Vec<u8>,
    text: String,
    valid_utf8: bool,
    script_name: String,
    script: &'static str,
    thai_first: bool,
    special: bool,
    reserved: bool,
    orphan: bool,
    has_entry: bool,
    black_hole: u32,
    dead: bool,
    /// Re-encoded ids, when reachability is computed.
    reencoded: Option<Vec<u32>>,
}

impl Token {
    fn reachable(&self, id: usize) -> Option<bool> {
        self.reencoded
            .as_ref()
            .map(|r| self.has_entry && r.len() == 1 && r[0] as usize == id)
    }
}

#[derive(Serialize)]
struct Count {
    label: String,
    count: usize,
}

#[derive(Serialize)]
struct Scripts {
    tokens: usize,
    /// Variant 1 (dominant Unicode name), most frequent first.
    dominant_name: Vec<Count>,
    /// Variant 2 (any-character ranges) with the extra labels.
    any_range: Vec<Count>,
    /// Variant 2 collapsed to S12's Thai / CJK / special / other.
    any_range_s12: Vec<Count>,
    /// Variant 3: first real char Thai.
    thai_first: usize,
}

#[derive(Serialize)]
struct Enrichment {
    variant: &'static str,
    vocab_thai: usize,
    vocab_decodable: usize,
    vocab_share: f64,
    dead_thai: usize,
    dead_tokens: usize,
    dead_decodable: usize,
    dead_share_of_all: Option<f64>,
    dead_share_of_decodable: Option<f64>,
    share_of_thai_in_dead: Option<f64>,
    enrichment: Option<f64>,
}

#[derive(Serialize)]
struct Listed {
    id: usize,
    text: String,
}

#[derive(Serialize)]
struct Lengths {
    tokens: usize,
    min: usize,
    max: usize,
    mean: f64,
    median: f64,
}

#[derive(Serialize)]
struct VocabInfo {
    file: &'static str,
    model: String,
    decoder: String,
    size: usize,
    entries: usize,
    missing: usize,
    added: usize,
    special: usize,
}

#[derive(Serialize)]
struct Orphans {
    count: usize,
    first: Option<usize>,
    /// Orphans per black hole id (0 = in none); `null` without `black_holes`.
    black_holes: Option<BTreeMap<u32, usize>>,
}

#[derive(Serialize)]
struct DeadSet {
    source: String,
    tokens: usize,
    orphans: usize,
    decodable: usize,
    black_hole_tokens: usize,
    special: Vec<Listed>,
    length_bytes: Option<Lengths>,
    scripts: Scripts,
}

#[derive(Serialize)]
struct Reach {
    reachable: usize,
    unreachable: usize,
    /// Re-encoded length → unreachable tokens.
    lengths_unreachable: BTreeMap<usize, usize>,
}

#[derive(Serialize)]
struct Reachability {
    /// Over ids with an entry (orphans and holes left out, as S12's whole-vocabulary scan).
    all: Reach,
    /// Over dead-set tokens with an entry.
    dead: Option<Reach>,
    /// Dead-set orphans, counted as unreachable with length 0 (S12's cluster-C scan).
    dead_orphans: Option<usize>,
    /// Dead-set tokens that are reachable (ids, at most 200 listed).
    dead_reachable_ids: Option<Vec<usize>>,
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    rows: usize,
    rows_from: String,
    vocab: VocabInfo,
    ids_beyond_rows: usize,
    orphans: Orphans,
    invalid_utf8: usize,
    reserved_looking: usize,
    black_holes: Option<usize>,
    scripts: Scripts,
    dead: Option<DeadSet>,
    thai: Vec<Enrichment>,
    reachability: Option<Reachability>,
}

/// The length of dimension 0 of tensor `name` in the single file on `port` (header only).
fn rows_of(p: &Params<'_>, port: &str, name: &str) -> Result<Option<usize>, StageError> {
    let inputs = p.optional_inputs(port);
    if inputs.is_empty() {
        return Ok(None);
    }
    let (path, mapped) = crate::w_analysis::open_single(p, port)?;
    let path = &path;
    let st = mapped.parse(path).map_err(|e| p.error(e))?;
    let view = st.tensor(name).map_err(|_| {
        p.error(format!(
            "`{}` (input `{port}`) has no tensor `{name}`; it has {}",
            path.display(),
            crate::w_analysis::tensor_names(&st)
        ))
    })?;
    match view.shape().first() {
        Some(&n) => Ok(Some(n)),
        None => Err(p.error(format!(
            "`{}` (input `{port}`): tensor `{name}` is a scalar; expected one entry per token",
            path.display()
        ))),
    }
}

/// Writes `text` as a quoted CSV field (see the module doc).
fn csv_text(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const HEADER: &str = "id,text,bytes_hex,valid_utf8,script_name,script,thai_first,special,\
                      reserved,orphan,black_hole,dead,reachable,reencoded_len\n";

fn csv_line(out: &mut String, id: usize, t: &Token) {
    let _ = write!(out, "{id},");
    csv_text(out, &t.text);
    out.push(',');
    for b in &t.bytes {
        let _ = write!(out, "{b:02x}");
    }
    let (reach, len) = match (&t.reencoded, t.reachable(id)) {
        (Some(r), Some(ok)) => (ok.to_string(), r.len().to_string()),
        _ => (String::new(), String::new()),
    };
    let _ = writeln!(
        out,
        ",{},{},{},{},{},{},{},{},{},{reach},{len}",
        t.valid_utf8,
        t.script_name,
        t.script,
        t.thai_first,
        t.special,
        t.reserved,
        t.orphan,
        t.black_hole,
        t.dead
    );
}

fn counts<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<Count> {
    let mut map: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels {
        *map.entry(l).or_default() += 1;
    }
    let mut v: Vec<Count> = map
        .into_iter()
        .map(|(label, count)| Count {
            label: label.to_string(),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    v
}

fn scripts_of<'a>(tokens: impl Iterator<Item = &'a Token> + Clone) -> Scripts {
    Scripts {
        tokens: tokens.clone().count(),
        dominant_name: counts(tokens.clone().map(|t| t.script_name.as_str())),
        any_range: counts(tokens.clone().map(|t| t.script)),
        any_range_s12: counts(tokens.clone().map(|t| scripts::collapse(t.script))),
        thai_first: tokens.filter(|t| t.thai_first).count(),
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn reach_of<'a>(tokens: impl Iterator<Item = (usize, &'a Token)>) -> Reach {
    let mut r = Reach {
        reachable: 0,
        unreachable: 0,
        lengths_unreachable: BTreeMap::new(),
    };
    for (id, t) in tokens.filter(|(_, t)| t.has_entry) {
        if t.reachable(id) == Some(true) {
            r.reachable += 1;
        } else {
            r.unreachable += 1;
            let len = t.reencoded.as_ref().map_or(0, Vec::len);
            *r.lengths_unreachable.entry(len).or_default() += 1;
        }
    }
    r
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let tensor = p.string("tensor")?;
    let mask_name = p.string("mask")?;
    let decoder = p.string("decoder")?;
    let want_reach = p.boolean("reachability")?;
    let vocab_inputs = p.inputs("vocab")?;
    if vocab_inputs.len() != 1 {
        return Err(p.error(format!(
            "input `vocab` takes one file, got {}",
            vocab_inputs.len()
        )));
    }
    let vocab_path: &Path = &vocab_inputs[0];
    let vocab = vocab::load(&p, vocab_path, &decoder)?;
    let encoder = if want_reach {
        let why_not = |why: String| {
            p.error(format!(
                "param `reachability` is true, but `{}` cannot be re-encoded: {why}; set \
                 `reachability: false`",
                vocab_path.display()
            ))
        };
        match &vocab.json {
            Some(json) => Some(Encoder::new(json).map_err(why_not)?),
            None => {
                return Err(why_not(
                    "a `w.extract` vocab has no merges; connect the model's tokenizer.json".into(),
                ))
            }
        }
    } else {
        None
    };

    // Rows V, from the first connected source; the others must agree.
    let sources = [
        ("w", tensor.as_str()),
        ("black_holes", "black_hole_id"),
        ("dead", mask_name.as_str()),
    ];
    let mut rows: Option<(usize, String)> = None;
    for (port, name) in sources {
        if let Some(n) = rows_of(&p, port, name)? {
            match &rows {
                None => rows = Some((n, format!("input `{port}` (`{name}`)"))),
                Some((v, from)) if *v != n => {
                    return Err(p.error(format!(
                        "input `{port}` (`{name}`) has {n} rows but {from} has {v}; connect files \
                         computed from the same W"
                    )))
                }
                Some(_) => {}
            }
        }
    }
    let (rows, rows_from) = rows.unwrap_or((vocab.size, "vocabulary size".into()));
    let black_holes = if p.optional_inputs("black_holes").is_empty() {
        None
    } else {
        Some(load_black_holes(&p, "black_holes", rows)?)
    };
    let mask = if p.optional_inputs("dead").is_empty() {
        None
    } else {
        Some(load_mask(&p, "dead", &mask_name, rows)?)
    };
    let (dead_mask, dead_source): (Option<Vec<bool>>, String) = match (&mask, &black_holes) {
        (Some(m), _) => (Some(m.clone()), format!("input `dead`, mask `{mask_name}`")),
        (None, Some(bh)) => (
            Some(bh.id.iter().map(|&b| b != 0).collect()),
            "black-hole tokens (input `black_holes`; no `dead` connected)".into(),
        ),
        (None, None) => (None, String::new()),
    };

    let inverse = byte_level_inverse();
    let tokens: Vec<Token> = with_threads(&p, ctx.threads, || {
        (0..rows)
            .into_par_iter()
            .with_min_len(256)
            .map(|id| {
                let bytes = vocab.decode(id, &inverse);
                let valid_utf8 = std::str::from_utf8(&bytes).is_ok();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let has_entry = vocab.tokens.get(id).is_some_and(Option::is_some);
                let reencoded = encoder.as_ref().map(|e| e.encode(&text));
                Token {
                    script_name: scripts::dominant_name(&text),
                    script: scripts::any_range(&text),
                    thai_first: scripts::thai_first(&text),
                    special: vocab.special.get(id).copied().unwrap_or(false),
                    reserved: has_entry && scripts::reserved_looking(&text),
                    orphan: id >= vocab.size,
                    has_entry,
                    black_hole: black_holes.as_ref().map_or(0, |b| b.id[id]),
                    dead: dead_mask.as_ref().is_some_and(|m| m[id]),
                    reencoded,
                    bytes,
                    valid_utf8,
                    text,
                }
            })
            .collect()
    })?;

    // tokens CSV
    let mut csv = String::with_capacity(rows * 64);
    csv.push_str(HEADER);
    for (id, t) in tokens.iter().enumerate() {
        csv_line(&mut csv, id, t);
    }
    p.write_output(p.output("tokens")?, csv.as_bytes())?;

    // dead CSV
    let mut listed: Vec<usize> = (0..rows)
        .filter(|&i| tokens[i].dead || tokens[i].black_hole != 0)
        .collect();
    listed.sort_by_key(|&i| (tokens[i].black_hole == 0, tokens[i].black_hole, i));
    let mut csv = String::from(HEADER);
    for &id in &listed {
        csv_line(&mut csv, id, &tokens[id]);
    }
    p.write_output(p.output("dead_tokens")?, csv.as_bytes())?;

    // summary
    let all = tokens.iter();
    let dead_ids: Vec<usize> = (0..rows).filter(|&i| tokens[i].dead).collect();
    let dead_tokens = || dead_ids.iter().map(|&i| &tokens[i]);
    let dead = dead_mask.as_ref().map(|_| {
        let mut lengths: Vec<usize> = dead_tokens().map(|t| t.text.len()).collect();
        lengths.sort_unstable();
        let length_bytes = (!lengths.is_empty()).then(|| {
            let n = lengths.len();
            Lengths {
                tokens: n,
                min: lengths[0],
                max: lengths[n - 1],
                mean: lengths.iter().sum::<usize>() as f64 / n as f64,
                median: if n % 2 == 1 {
                    lengths[n / 2] as f64
                } else {
                    (lengths[n / 2 - 1] + lengths[n / 2]) as f64 / 2.0
                },
            }
        });
        DeadSet {
            source: dead_source.clone(),
            tokens: dead_ids.len(),
            orphans: dead_tokens().filter(|t| t.orphan).count(),
            decodable: dead_tokens().filter(|t| t.has_entry).count(),
            black_hole_tokens: dead_tokens().filter(|t| t.black_hole != 0).count(),
            special: dead_ids
                .iter()
                .filter(|&&i| tokens[i].special || tokens[i].script == "special")
                .map(|&i| Listed {
                    id: i,
                    text: tokens[i].text.clone(),
                })
                .collect(),
            length_bytes,
            scripts: scripts_of(dead_tokens()),
        }
    });
    type IsThai = fn(&Token) -> bool;
    let variants: [(&str, IsThai); 3] = [
        ("dominant_name (variant 1: THAI)", |t| {
            t.script_name == "THAI"
        }),
        ("any_range (variant 2: Thai)", |t| t.script == "Thai"),
        ("thai_first (variant 3)", |t| t.thai_first),
    ];
    let vocab_decodable = tokens.iter().filter(|t| t.has_entry).count();
    let thai = variants
        .iter()
        .map(|&(variant, is_thai)| {
            let vocab_thai = tokens.iter().filter(|t| t.has_entry && is_thai(t)).count();
            let dead_thai = dead_tokens().filter(|t| t.has_entry && is_thai(t)).count();
            let dead_decodable = dead_tokens().filter(|t| t.has_entry).count();
            let vocab_share = ratio(vocab_thai, vocab_decodable).unwrap_or(0.0);
            let dead_share = ratio(dead_thai, dead_decodable);
            Enrichment {
                variant,
                vocab_thai,
                vocab_decodable,
                vocab_share,
                dead_thai,
                dead_tokens: dead_ids.len(),
                dead_decodable,
                dead_share_of_all: ratio(dead_thai, dead_ids.len()),
                dead_share_of_decodable: dead_share,
                share_of_thai_in_dead: ratio(dead_thai, vocab_thai),
                enrichment: dead_share
                    .filter(|_| vocab_share > 0.0)
                    .map(|s| s / vocab_share),
            }
        })
        .collect();
    let reachability = encoder.as_ref().map(|_| {
        let dead_set = dead_mask.as_ref();
        Reachability {
            all: reach_of(tokens.iter().enumerate()),
            dead: dead_set.map(|_| reach_of(dead_ids.iter().map(|&i| (i, &tokens[i])))),
            dead_orphans: dead_set.map(|_| dead_tokens().filter(|t| !t.has_entry).count()),
            dead_reachable_ids: dead_set.map(|_| {
                dead_ids
                    .iter()
                    .copied()
                    .filter(|&i| tokens[i].reachable(i) == Some(true))
                    .take(200)
                    .collect()
            }),
        }
    });
    let orphans: Vec<usize> = (0..rows).filter(|&i| tokens[i].orphan).collect();
    let summary = Summary {
        format: FORMAT,
        rows,
        rows_from,
        vocab: VocabInfo {
            file: match vocab.source {
                Source::TokenizerJson => "tokenizer.json",
                Source::ExtractVocab => "w.extract vocab",
            },
            model: vocab.model.clone(),
            decoder: vocab.decoder_name.clone(),
            size: vocab.size,
            entries: vocab.tokens.iter().filter(|t| t.is_some()).count(),
            missing: vocab.tokens.iter().filter(|t| t.is_none()).count(),
            added: vocab.added.iter().filter(|&&a| a).count(),
            special: vocab.special.iter().filter(|&&s| s).count(),
        },
        ids_beyond_rows: vocab.size.saturating_sub(rows),
        orphans: Orphans {
            count: orphans.len(),
            first: orphans.first().copied(),
            black_holes: black_holes.as_ref().map(|bh| {
                let mut m = BTreeMap::new();
                for &i in &orphans {
                    *m.entry(bh.id[i]).or_default() += 1;
                }
                m
            }),
        },
        invalid_utf8: tokens.iter().filter(|t| !t.valid_utf8).count(),
        reserved_looking: tokens.iter().filter(|t| t.reserved).count(),
        black_holes: black_holes.as_ref().map(|bh| bh.members.len()),
        scripts: scripts_of(all),
        dead,
        thai,
        reachability,
    };
    p.write_json(p.output("summary")?, &summary)
}
