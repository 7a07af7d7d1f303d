//! Hugging Face checkpoints: a directory with `model.safetensors`, or with
//! `model.safetensors.index.json` and its shards (every shard named in the index is mapped and
//! its header checked; the index must agree with the headers), an optional `config.json`
//! (`tie_word_embeddings`, top level or under `text_config`) and an optional `tokenizer.json`;
//! or a single `.safetensors` file given directly (no config, no vocabulary). A Hugging Face hub
//! cache entry (`models--ORG--NAME/`, with `refs/` and `snapshots/`) stands for its snapshot at
//! `refs/main` ([`hub_entry_snapshot`]); a snapshot directory itself is an ordinary checkout whose
//! files are symlinks into `blobs/`.
//!
//! Choice of W with param `tensor` empty (auto): an output head ([`HEAD_NAMES`], first present),
//! else an input embedding ([`EMBED_NAMES`]). When both exist and config.json does not say
//! `tie_word_embeddings: false`, they must be byte-equal (same dtype and shape); otherwise the stage
//! fails naming both. When config.json says `false` and the head is absent, the stage fails rather
//! than pass the input embedding off as W. An explicit `tensor` is matched exactly, then with a
//! `model.` prefix added or removed. W must be 2-D and F64, F32, F16 or BF16; its bytes are copied
//! bit-exactly.
//!
//! Vocabulary from `tokenizer.json`: `model.vocab` (a map token → id, or Unigram's list of
//! `[token, score]` pairs where the position is the id) and then `added_tokens` (`id`, `content`),
//! which win where both name an id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;

use super::extract::{basename, list_candidates, write_outputs, Vocab, WOut, MAX_TOKEN_ID};
use crate::params::Params;
use crate::StageError;

/// Output-head names tried in order by the auto rule.
pub(crate) const HEAD_NAMES: &[&str] = &["lm_head.weight", "model.lm_head.weight"];
/// Input-embedding names tried in order by the auto rule (tied models).
pub(crate) const EMBED_NAMES: &[&str] = &[
    "model.embed_tokens.weight",
    "embed_tokens.weight",
    "transformer.wte.weight",
];

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// If `dir` is a hub cache entry (`models--ORG--NAME` with `refs/` and `snapshots/`), the snapshot
/// that `refs/main` names (or the only snapshot when there is no `refs/main`); `None` for any other
/// directory. Never touches the network.
pub(crate) fn hub_entry_snapshot(
    p: &Params<'_>,
    dir: &Path,
) -> Result<Option<std::path::PathBuf>, StageError> {
    let snapshots = dir.join("snapshots");
    if !snapshots.is_dir() || dir.join(SINGLE).exists() || dir.join(INDEX).exists() {
        return Ok(None);
    }
    let main = dir.join("refs").join("main");
    let commit = match std::fs::read_to_string(&main) {
        Ok(s) => s.trim().to_string(),
        Err(_) => {
            let mut all: Vec<String> = std::fs::read_dir(&snapshots)
                .map_err(|e| p.error(format!("cannot list `{}`: {e}", snapshots.display())))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            all.sort();
            match all.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(p.error(format!(
                        "`{}` is a Hugging Face cache entry without `refs/main` and with {} snapshots                          ({}); connect the snapshot directory you mean (`snapshots/<commit>`)",
                        dir.display(),
                        all.len(),
                        all.join(", ")
                    )))
                }
            }
        }
    };
    let snap = snapshots.join(&commit);
    if !snap.is_dir() {
        return Err(p.error(format!(
            "`{}` names commit {commit}, but `{}` is missing (an interrupted download?); download              the model again or connect an existing snapshot directory",
            main.display(),
            snap.display()
        )));
    }
    Ok(Some(snap))
}

/// A memory-mapped safetensors file with its basename.
struct Mapped {
    name: String,
    map: memmap2::Mmap,
}

fn map_file(p: &Params<'_>, path: &Path) -> Result<Mapped, StageError> {
    let map = crate::io::map_input(path).map_err(|e| p.error(e))?;
    Ok(Mapped {
        name: basename(path),
        map,
    })
}

fn parse<'m>(p: &Params<'_>, path: &Path, m: &'m Mapped) -> Result<SafeTensors<'m>, StageError> {
    SafeTensors::deserialize(&m.map).map_err(|e| {
        p.error(format!(
            "`{}` is not a valid safetensors file: {e}; re-download the checkpoint",
            path.display()
        ))
    })
}

/// A single `.safetensors` file given as the checkpoint.
pub(crate) fn extract_file(p: &Params<'_>, path: &Path, want: &str) -> Result<(), StageError> {
    let mapped = map_file(p, path)?;
    let st = parse(p, path, &mapped)?;
    let files = [(mapped.name.clone(), st)];
    let chosen = choose(p, path, &files, want, None)?;
    let meta = base_meta("safetensors-file", std::slice::from_ref(&mapped.name));
    finish(p, &files, chosen, meta, Vocab::default())
}

/// A Hugging Face directory.
pub(crate) fn extract_dir(p: &Params<'_>, dir: &Path, want: &str) -> Result<(), StageError> {
    let index_path = dir.join(INDEX);
    let (layout, shard_names, weight_map) =
        if index_path.is_file() {
            let (shards, map) = read_index(p, &index_path)?;
            ("hf-sharded", shards, Some(map))
        } else if dir.join(SINGLE).is_file() {
            ("hf-single", vec![SINGLE.to_string()], None)
        } else {
            let mut present: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            present.sort();
            return Err(p.error(format!(
            "`{}` has neither `{SINGLE}` nor `{INDEX}` (it holds: {}); point input `checkpoint` \
             at a Hugging Face model directory, a .safetensors file or a .gguf file",
            dir.display(),
            if present.is_empty() { "nothing".into() } else { present.join(", ") }
        )));
        };
    let mapped: Vec<Mapped> = shard_names
        .iter()
        .map(|s| map_file(p, &dir.join(s)))
        .collect::<Result<_, _>>()?;
    let files: Vec<(String, SafeTensors<'_>)> = mapped
        .iter()
        .map(|m| Ok((m.name.clone(), parse(p, &dir.join(&m.name), m)?)))
        .collect::<Result<_, StageError>>()?;
    if let Some(map) = &weight_map {
        for (tensor, shard) in map {
            let held = files
                .iter()
                .find(|(n, _)| n == shard)
                .is_some_and(|(_, st)| st.tensor(tensor).is_ok());
            if !held {
                return Err(p.error(format!(
                    "`{}` places tensor `{tensor}` in `{shard}`, which has no such tensor; the \
                     checkpoint is inconsistent, re-download it",
                    index_path.display()
                )));
            }
        }
    }
    let tied = read_tied(p, dir)?;
    let chosen = choose(p, dir, &files, want, tied)?;
    let mut consulted: Vec<String> = Vec::new();
    if weight_map.is_some() {
        consulted.push(INDEX.into());
    }
    if tied.is_some() {
        consulted.push("config.json".into());
    }
    for &i in &chosen.files_read {
        consulted.push(files[i].0.clone());
    }
    let vocab = read_tokenizer(p, dir)?;
    if vocab.source.is_some() {
        consulted.push("tokenizer.json".into());
    }
    let mut meta = base_meta(layout, &consulted);
    if let Some(t) = tied {
        meta.insert("tie_word_embeddings".into(), t.to_string());
    }
    finish(p, &files, chosen, meta, vocab)
}

fn base_meta(layout: &str, files: &[String]) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("source_format".into(), "safetensors".into());
    meta.insert("source_layout".into(), layout.into());
    meta.insert(
        "source_files".into(),
        serde_json::to_string(files).expect("strings encode"),
    );
    meta
}

/// Reads the index: the sorted distinct shard names and tensor → shard.
fn read_index(
    p: &Params<'_>,
    path: &Path,
) -> Result<(Vec<String>, BTreeMap<String, String>), StageError> {
    let bad = |why: String| {
        p.error(format!(
            "`{}` is not a valid safetensors index: {why}; re-download the checkpoint",
            path.display()
        ))
    };
    let text = std::fs::read(path)
        .map_err(|e| p.error(format!("cannot read `{}`: {e}", path.display())))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut out = BTreeMap::new();
    let mut shards = BTreeSet::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("`weight_map.{tensor}` is not a string")))?;
        if shard.is_empty()
            || shard.contains('/')
            || shard.contains('\\')
            || shard == "."
            || shard == ".."
        {
            return Err(bad(format!(
                "shard name `{shard}` of `{tensor}` is not a plain file name"
            )));
        }
        shards.insert(shard.to_string());
        out.insert(tensor.clone(), shard.to_string());
    }
    if shards.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok((shards.into_iter().collect(), out))
}

/// `tie_word_embeddings` from `config.json` (top level, else `text_config`); `None` when the
/// file or the key is absent.
fn read_tied(p: &Params<'_>, dir: &Path) -> Result<Option<bool>, StageError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read(&path)
        .map_err(|e| p.error(format!("cannot read `{}`: {e}", path.display())))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| {
        p.error(format!(
            "`{}` is not valid JSON: {e}; fix or remove it",
            path.display()
        ))
    })?;
    let flag = json.get("tie_word_embeddings").or_else(|| {
        json.get("text_config")
            .and_then(|t| t.get("tie_word_embeddings"))
    });
    match flag {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(p.error(format!(
            "`{}`: `tie_word_embeddings` is {other}, not true or false; fix the config",
            path.display()
        ))),
    }
}

/// Where W is: file index and tensor name, plus the rule and the files read to decide.
struct Chosen {
    file: usize,
    name: String,
    rule: String,
    files_read: Vec<usize>,
}

fn find(files: &[(String, SafeTensors<'_>)], name: &str) -> Option<usize> {
    files.iter().position(|(_, st)| st.tensor(name).is_ok())
}

fn choose(
    p: &Params<'_>,
    path: &Path,
    files: &[(String, SafeTensors<'_>)],
    want: &str,
    tied: Option<bool>,
) -> Result<Chosen, StageError> {
    let candidates = || {
        let mut c = Vec::new();
        for (_, st) in files {
            for (name, view) in st.iter() {
                if view.shape().len() == 2 {
                    let shape = view.shape().iter().map(|&d| d as u64).collect();
                    c.push((name.to_string(), shape, view.dtype().to_string()));
                }
            }
        }
        list_candidates(c)
    };
    let one = |file: usize, name: &str, rule: String| Chosen {
        file,
        name: name.to_string(),
        rule,
        files_read: vec![file],
    };
    if !want.is_empty() {
        let alternatives = [
            Some(want.to_string()),
            Some(format!("model.{want}")),
            want.strip_prefix("model.").map(str::to_string),
        ];
        for name in alternatives.into_iter().flatten() {
            if let Some(i) = find(files, &name) {
                let rule = if name == want {
                    "param `tensor`".to_string()
                } else {
                    format!("param `tensor` = `{want}`, found as `{name}`")
                };
                return Ok(one(i, &name, rule));
            }
        }
        return Err(p.error(format!(
            "`{}` has no tensor `{want}` (nor with `model.` added or removed); set param \
             `tensor` to one of: {}",
            path.display(),
            candidates()
        )));
    }
    let head = HEAD_NAMES
        .iter()
        .find_map(|n| find(files, n).map(|i| (i, *n)));
    let embed = EMBED_NAMES
        .iter()
        .find_map(|n| find(files, n).map(|i| (i, *n)));
    match (head, embed, tied) {
        (Some((hi, hn)), Some(_), Some(false)) => Ok(one(
            hi,
            hn,
            format!("auto: output head `{hn}` (config.json: tie_word_embeddings=false)"),
        )),
        (Some((hi, hn)), Some((ei, en)), _) => {
            let h = files[hi].1.tensor(hn).expect("found");
            let e = files[ei].1.tensor(en).expect("found");
            let differ = if h.dtype() != e.dtype() || h.shape() != e.shape() {
                Some(format!(
                    "`{hn}` is {} {:?} and `{en}` is {} {:?}",
                    h.dtype(),
                    h.shape(),
                    e.dtype(),
                    e.shape()
                ))
            } else if h.data() != e.data() {
                let at = h
                    .data()
                    .iter()
                    .zip(e.data())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                Some(format!("their bytes first differ at byte {at}"))
            } else {
                None
            };
            match differ {
                None => Ok(Chosen {
                    file: hi,
                    name: hn.to_string(),
                    rule: format!("auto: output head `{hn}`, byte-equal to `{en}` (tied)"),
                    files_read: if hi == ei { vec![hi] } else { vec![hi.min(ei), hi.max(ei)] },
                }),
                Some(why) => Err(p.error(format!(
                    "`{}` has both `{hn}` and `{en}` and they differ ({why}), although {}; set \
                     param `tensor` to `{hn}` (the output head, usually W) or `{en}`",
                    path.display(),
                    match tied {
                        Some(true) => "config.json says tie_word_embeddings=true",
                        _ => "nothing says the embeddings are untied (no tie_word_embeddings=false in config.json)",
                    }
                ))),
            }
        }
        (Some((hi, hn)), None, _) => Ok(one(hi, hn, format!("auto: output head `{hn}`"))),
        (None, Some((_, en)), Some(false)) => Err(p.error(format!(
            "`{}` has no output head ({}) but config.json says tie_word_embeddings=false, so \
             `{en}` is not W; the checkpoint is incomplete; set param `tensor` to `{en}` to \
             extract the input embedding anyway",
            path.display(),
            HEAD_NAMES.join(", ")
        ))),
        (None, Some((ei, en)), t) => Ok(one(
            ei,
            en,
            match t {
                Some(true) => format!(
                    "auto: input embedding `{en}` (tied: tie_word_embeddings=true, no output head)"
                ),
                _ => format!("auto: input embedding `{en}` (no output head)"),
            },
        )),
        (None, None, _) => Err(p.error(format!(
            "`{}` has none of the tensors the auto rule looks for ({}, {}); this is not a \
             causal LM checkpoint or uses other names; set param `tensor` to one of: {}",
            path.display(),
            HEAD_NAMES.join(", "),
            EMBED_NAMES.join(", "),
            candidates()
        ))),
    }
}

fn finish(
    p: &Params<'_>,
    files: &[(String, SafeTensors<'_>)],
    chosen: Chosen,
    mut meta: BTreeMap<String, String>,
    vocab: Vocab,
) -> Result<(), StageError> {
    let (file_name, st) = &files[chosen.file];
    let view = st.tensor(&chosen.name).expect("chosen from this file");
    let shape = view.shape();
    if shape.len() != 2 {
        return Err(p.error(format!(
            "tensor `{}` in `{file_name}` has shape {shape:?}, not 2-D; set param `tensor` to a \
             2-D tensor [vocab, hidden]",
            chosen.name
        )));
    }
    let dtype = view.dtype();
    if !matches!(dtype, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(p.error(format!(
            "tensor `{}` in `{file_name}` has dtype {dtype}; only F64, F32, F16 and BF16 are \
             extracted; pick a floating-point tensor with param `tensor`",
            chosen.name
        )));
    }
    meta.insert("source_file".into(), file_name.clone());
    meta.insert("source_tensor".into(), chosen.name.clone());
    meta.insert("source_dtype".into(), dtype.to_string());
    meta.insert(
        "source_shape".into(),
        format!("[{}, {}]", shape[0], shape[1]),
    );
    meta.insert("rule".into(), chosen.rule);
    meta.insert("conversion".into(), "none (bit-exact copy)".into());
    write_outputs(
        p,
        WOut {
            dtype,
            shape: [shape[0], shape[1]],
            data: view.data(),
            meta,
        },
        vocab,
    )
}

/// The vocabulary of `tokenizer.json` beside the checkpoint; empty when there is none.
fn read_tokenizer(p: &Params<'_>, dir: &Path) -> Result<Vocab, StageError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(Vocab::default());
    }
    let bad = |why: String| {
        p.error(format!(
            "`{}` is not a usable tokenizer.json: {why}; fix or remove it",
            path.display()
        ))
    };
    let text = std::fs::read(&path)
        .map_err(|e| p.error(format!("cannot read `{}`: {e}", path.display())))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut by_id: HashMap<u64, String> = HashMap::new();
    let id_of = |v: &Value, what: &str| -> Result<u64, StageError> {
        match v.as_u64() {
            Some(id) if id <= MAX_TOKEN_ID => Ok(id),
            _ => Err(bad(format!(
                "{what} has id {v}, not a whole number from 0 to {MAX_TOKEN_ID}"
            ))),
        }
    };
    match json.get("model").and_then(|m| m.get("vocab")) {
        Some(Value::Object(map)) => {
            for (token, id) in map {
                by_id.insert(id_of(id, &format!("token {token:?}"))?, token.clone());
            }
        }
        Some(Value::Array(pairs)) => {
            for (id, pair) in pairs.iter().enumerate() {
                let token = pair
                    .get(0)
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("`model.vocab[{id}]` is not [token, score]")))?;
                by_id.insert(id as u64, token.to_string());
            }
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(bad("`model.vocab` is neither a map nor a list".into())),
    }
    if let Some(added) = json.get("added_tokens") {
        let list = added
            .as_array()
            .ok_or_else(|| bad("`added_tokens` is not a list".into()))?;
        for (k, t) in list.iter().enumerate() {
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("`added_tokens[{k}]` has no string `content`")))?;
            let id = id_of(
                t.get("id").unwrap_or(&Value::Null),
                &format!("`added_tokens[{k}]`"),
            )?;
            by_id.insert(id, content.to_string());
        }
    }
    let len = by_id.keys().max().map_or(0, |m| m + 1) as usize;
    let mut tokens = vec![None; len];
    for (id, token) in by_id {
        tokens[id as usize] = Some(token);
    }
    Ok(Vocab {
        source: Some("tokenizer.json".into()),
        tokens,
    })
}
