//! `w.extract` run through `azimuth_stages::run` on checkpoints the tests write themselves: Hugging
//! Face directories (single file, three bf16 shards with an index, tied/untied heads, a
//! tokenizer.json), hand-written GGUF v3 files (F32, F16, BF16, Q8_0, an unsupported Q4_K,
//! truncations), and determinism across checkpoint locations. The last two tests run on the real
//! SmolLM2 GGUF and all-MiniLM checkpoints when `scripts/fetch-models.sh` has fetched them into
//! `.deps/models/`, and print a note and pass otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use azimuth_stages::{run, StageContext};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};

use crate::support::{fetched, models_dir};

fn ctx(params: Value, checkpoint: &Path, out: &Path) -> StageContext {
    StageContext {
        instance: "wx[m=1]".into(),
        inputs: [("checkpoint".to_string(), vec![checkpoint.to_path_buf()])].into(),
        outputs: [
            ("w".to_string(), out.join("W.safetensors")),
            ("vocab".to_string(), out.join("vocab.json")),
        ]
        .into(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads: 1,
    }
}

/// The extracted W file's bytes and the vocab JSON.
struct Out {
    w: Vec<u8>,
    vocab: Value,
    vocab_bytes: Vec<u8>,
}

impl Out {
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.w).unwrap()
    }
    fn meta(&self) -> BTreeMap<String, String> {
        let (_, m) = SafeTensors::read_metadata(&self.w).unwrap();
        m.metadata().clone().unwrap().into_iter().collect()
    }
}

fn extract(checkpoint: &Path, params: Value) -> Result<Out, String> {
    let out = tempfile::tempdir().unwrap();
    run("w.extract", &ctx(params, checkpoint, out.path())).map_err(|e| e.0)?;
    #[cfg(unix)]
    for f in ["W.safetensors", "vocab.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{f}");
    }
    let names: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(names.len(), 2, "stray files: {names:?}");
    let vocab_bytes = std::fs::read(out.path().join("vocab.json")).unwrap();
    Ok(Out {
        w: std::fs::read(out.path().join("W.safetensors")).unwrap(),
        vocab: serde_json::from_slice(&vocab_bytes).unwrap(),
        vocab_bytes,
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Distinct-per-element bf16 patterns (row r, col c) so any layout slip shows.
fn bf16_bytes(rows: usize, cols: usize, salt: u16) -> Vec<u8> {
    (0..rows * cols)
        .flat_map(|i| {
            let v = half::bf16::from_f32((i as f32) * 0.25 - 3.0 + f32::from(salt)).to_bits();
            v.to_le_bytes()
        })
        .collect()
}

fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) {
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn assert_no_abs_paths(out: &Out, dir: &Path) {
    let text = String::from_utf8_lossy(&out.w[..64.min(out.w.len())]).to_string()
        + &String::from_utf8_lossy(&out.w);
    let needle = dir.to_string_lossy();
    assert!(
        !text.contains(needle.as_ref()),
        "absolute path leaked into W"
    );
    assert!(!String::from_utf8_lossy(&out.vocab_bytes).contains(needle.as_ref()));
}

#[test]
fn hf_single_file_f32_with_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let head: Vec<f32> = (0..15).map(|i| i as f32 * 1.5 - 2.0).collect();
    let other = f32_bytes(&[9.0; 6]);
    write_st(
        &dir.path().join("model.safetensors"),
        &[
            ("lm_head.weight", Dtype::F32, vec![5, 3], &f32_bytes(&head)),
            (
                "model.norm.weight",
                Dtype::F32,
                vec![3],
                &f32_bytes(&[1.0; 3]),
            ),
            ("model.layers.0.mlp.weight", Dtype::F32, vec![2, 3], &other),
        ],
    );
    // vocab covers ids 0,1,3; added token 4; id 2 has none; W has 5 rows.
    std::fs::write(
        dir.path().join("tokenizer.json"),
        json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 3}},
               "added_tokens": [{"id": 4, "content": "<|end|>", "special": true}]})
        .to_string(),
    )
    .unwrap();
    let out = extract(dir.path(), json!({})).unwrap();
    let st = out.st();
    assert_eq!(st.names(), ["W"]);
    let w = st.tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[5usize, 3][..]));
    assert_eq!(w.data(), &f32_bytes(&head)[..]);
    let m = out.meta();
    assert_eq!(m["source_tensor"], "lm_head.weight");
    assert_eq!(m["source_format"], "safetensors");
    assert_eq!(m["source_layout"], "hf-single");
    assert_eq!(m["source_dtype"], "F32");
    assert_eq!(m["shape"], "[5, 3]");
    assert_eq!(m["source_file"], "model.safetensors");
    assert!(m["rule"].contains("output head"), "{}", m["rule"]);
    assert_eq!(
        m["source_files"],
        r#"["model.safetensors","tokenizer.json"]"#
    );
    assert_eq!(
        out.vocab,
        json!({"format": 1, "source": "tokenizer.json", "tokens": ["a", "b", null, "ab", "<|end|>"]})
    );
    assert_no_abs_paths(&out, dir.path());
}

/// Three bf16 shards with an index; the embedding sits in the second; tied, no lm_head.
fn sharded_tied(dir: &Path) -> Vec<u8> {
    let emb = bf16_bytes(7, 4, 0);
    let a = bf16_bytes(4, 4, 1);
    let b = bf16_bytes(2, 4, 2);
    write_st(
        &dir.join("model-00001-of-00003.safetensors"),
        &[(
            "model.layers.0.self_attn.q_proj.weight",
            Dtype::BF16,
            vec![4, 4],
            &a,
        )],
    );
    write_st(
        &dir.join("model-00002-of-00003.safetensors"),
        &[("model.embed_tokens.weight", Dtype::BF16, vec![7, 4], &emb)],
    );
    write_st(
        &dir.join("model-00003-of-00003.safetensors"),
        &[(
            "model.layers.1.mlp.down_proj.weight",
            Dtype::BF16,
            vec![2, 4],
            &b,
        )],
    );
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        json!({"metadata": {"total_size": 0}, "weight_map": {
            "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00003.safetensors",
            "model.embed_tokens.weight": "model-00002-of-00003.safetensors",
            "model.layers.1.mlp.down_proj.weight": "model-00003-of-00003.safetensors"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.json"),
        json!({"tie_word_embeddings": true, "torch_dtype": "bfloat16"}).to_string(),
    )
    .unwrap();
    emb
}

#[test]
fn hf_sharded_bf16_tied_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let emb = sharded_tied(dir.path());
    let out = extract(dir.path(), json!({"tensor": ""})).unwrap();
    let w = out.st().tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::BF16, &[7usize, 4][..]));
    assert_eq!(w.data(), &emb[..], "W must be the planted bytes");
    let m = out.meta();
    assert_eq!(m["source_layout"], "hf-sharded");
    assert_eq!(m["source_file"], "model-00002-of-00003.safetensors");
    assert_eq!(m["source_tensor"], "model.embed_tokens.weight");
    assert_eq!(m["tie_word_embeddings"], "true");
    assert!(m["rule"].contains("tied"), "{}", m["rule"]);
    assert_eq!(
        m["source_files"],
        r#"["model.safetensors.index.json","config.json","model-00002-of-00003.safetensors"]"#
    );
    assert_eq!(
        out.vocab,
        json!({"format": 1, "source": null, "tokens": []})
    );
    // A bare name is found with the `model.` prefix.
    let bare = extract(dir.path(), json!({"tensor": "embed_tokens.weight"})).unwrap();
    assert_eq!(bare.st().tensor("W").unwrap().data(), &emb[..]);
    assert!(bare.meta()["rule"].contains("found as `model.embed_tokens.weight`"));
    // The index must agree with the shards.
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00003.safetensors"}})
            .to_string(),
    )
    .unwrap();
    let e = extract(dir.path(), json!({})).err().unwrap();
    assert!(e.contains("inconsistent") && e.contains("`wx[m=1]`"), "{e}");
}

/// Lays out `src`'s files as a hub cache entry: `blobs/<name>` plus `snapshots/<commit>/<name>`
/// symlinks, and `refs/main`. Returns (entry, snapshot).
fn as_hub_entry(src: &Path, root: &Path, commit: &str) -> (PathBuf, PathBuf) {
    let entry = root.join("models--Org--Tiny");
    let snap = entry.join("snapshots").join(commit);
    std::fs::create_dir_all(entry.join("blobs")).unwrap();
    std::fs::create_dir_all(entry.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let blob = entry
            .join("blobs")
            .join(format!("blob-{}", e.file_name().to_string_lossy()));
        std::fs::copy(e.path(), &blob).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(blob.file_name().unwrap()),
            snap.join(e.file_name()),
        )
        .unwrap();
    }
    std::fs::write(entry.join("refs/main"), commit).unwrap();
    (entry, snap)
}

#[test]
fn hub_cache_entries_and_snapshots_extract_like_the_checkout() {
    let plain = tempfile::tempdir().unwrap();
    let emb = sharded_tied(plain.path());
    let root = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let (entry, snap) = as_hub_entry(plain.path(), root.path(), commit);
    let a = extract(&snap, json!({})).unwrap();
    let b = extract(&entry, json!({})).unwrap();
    assert_eq!(a.st().tensor("W").unwrap().data(), &emb[..]);
    assert_eq!(a.w, b.w, "the entry stands for its refs/main snapshot");
    // A second snapshot and no refs/main: ambiguous, and the error says what to connect.
    std::fs::remove_file(entry.join("refs/main")).unwrap();
    std::fs::create_dir_all(entry.join("snapshots/ffff")).unwrap();
    let e = extract(&entry, json!({})).err().unwrap();
    assert!(
        e.contains("without `refs/main`") && e.contains("snapshots/<commit>"),
        "{e}"
    );
    // refs/main naming a missing snapshot.
    std::fs::write(entry.join("refs/main"), "abcd").unwrap();
    let e = extract(&entry, json!({})).err().unwrap();
    assert!(e.contains("interrupted download"), "{e}");
}

#[test]
fn head_and_embedding_equal_is_ok_different_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let x = bf16_bytes(6, 4, 3);
    let mut y = x.clone();
    y[13] ^= 1;
    write_st(
        &dir.path().join("model.safetensors"),
        &[
            ("lm_head.weight", Dtype::BF16, vec![6, 4], &x),
            ("model.embed_tokens.weight", Dtype::BF16, vec![6, 4], &x),
        ],
    );
    let out = extract(dir.path(), json!({})).unwrap();
    assert_eq!(out.st().tensor("W").unwrap().data(), &x[..]);
    let m = out.meta();
    assert_eq!(m["source_tensor"], "lm_head.weight");
    assert!(
        m["rule"].contains("byte-equal to `model.embed_tokens.weight`"),
        "{}",
        m["rule"]
    );

    write_st(
        &dir.path().join("model.safetensors"),
        &[
            ("lm_head.weight", Dtype::BF16, vec![6, 4], &x),
            ("model.embed_tokens.weight", Dtype::BF16, vec![6, 4], &y),
        ],
    );
    let e = extract(dir.path(), json!({})).err().unwrap();
    assert!(
        e.contains("`lm_head.weight`")
            && e.contains("`model.embed_tokens.weight`")
            && e.contains("differ"),
        "{e}"
    );
    assert!(
        e.contains("byte 13") && e.contains("set param `tensor`"),
        "{e}"
    );
    // Untied per config: the head is W, no comparison.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"tie_word_embeddings": false}"#,
    )
    .unwrap();
    let out = extract(dir.path(), json!({})).unwrap();
    assert_eq!(out.st().tensor("W").unwrap().data(), &x[..]);
    assert!(out.meta()["rule"].contains("tie_word_embeddings=false"));
}

#[test]
fn auto_finding_nothing_lists_candidates_with_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let words = f32_bytes(&(0..24).map(|i| i as f32).collect::<Vec<_>>());
    write_st(
        &dir.path().join("model.safetensors"),
        &[
            (
                "embeddings.word_embeddings.weight",
                Dtype::F32,
                vec![8, 3],
                &words,
            ),
            (
                "embeddings.position_embeddings.weight",
                Dtype::F32,
                vec![2, 3],
                &words[..24],
            ),
            ("pooler.dense.bias", Dtype::F32, vec![3], &words[..12]),
        ],
    );
    let e = extract(dir.path(), json!({})).err().unwrap();
    assert!(
        e.contains("`embeddings.word_embeddings.weight` [8, 3] F32"),
        "{e}"
    );
    assert!(
        e.contains("`embeddings.position_embeddings.weight` [2, 3] F32"),
        "{e}"
    );
    assert!(
        !e.contains("pooler.dense.bias"),
        "1-D tensors are no candidates: {e}"
    );
    assert!(
        e.contains("set param `tensor`") && e.contains("`wx[m=1]`"),
        "{e}"
    );
    let out = extract(
        dir.path(),
        json!({"tensor": "embeddings.word_embeddings.weight"}),
    )
    .unwrap();
    assert_eq!(out.st().tensor("W").unwrap().data(), &words[..]);
    assert_eq!(out.meta()["rule"], "param `tensor`");
    let e = extract(dir.path(), json!({"tensor": "nope"}))
        .err()
        .unwrap();
    assert!(
        e.contains("no tensor `nope`") && e.contains("[8, 3]"),
        "{e}"
    );
    let e = extract(dir.path(), json!({"tensor": "pooler.dense.bias"}))
        .err()
        .unwrap();
    assert!(e.contains("not 2-D"), "{e}");
    // A single .safetensors file given directly.
    let out = extract(
        &dir.path().join("model.safetensors"),
        json!({"tensor": "embeddings.word_embeddings.weight"}),
    )
    .unwrap();
    assert_eq!(out.meta()["source_layout"], "safetensors-file");
}

// ---- GGUF -------------------------------------------------------------------------------

enum Kv {
    U32(u32),
    Str(&'static str),
    Strs(Vec<String>),
}

struct GTensor {
    name: &'static str,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

fn gstr(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A GGUF v3 file, alignment 32.
fn gguf(kvs: &[(&str, Kv)], tensors: &[GTensor]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        gstr(&mut out, k);
        match v {
            Kv::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Kv::Str(s) => {
                out.extend(8u32.to_le_bytes());
                gstr(&mut out, s);
            }
            Kv::Strs(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    gstr(&mut out, s);
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        gstr(&mut out, t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len() as u64).next_multiple_of(32);
    }
    out.resize(out.len().next_multiple_of(32), 0);
    let base = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(base + off as usize, 0);
        out.extend(&t.data);
    }
    out
}

fn vocab_strings(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tok{i}")).collect()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// GGUF token_embd with ne0 = 32 (row length), ne1 = 3 rows: element (row r, col c) is planted at
/// flat index r * 32 + c, so W[r][c] must equal value(r, c).
fn value(r: usize, c: usize) -> f32 {
    (r * 100 + c) as f32 * 0.5 - 7.0
}

#[test]
fn gguf_f32_f16_bf16_are_bit_exact_with_rows_as_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (3usize, 32usize);
    let vals: Vec<f32> = (0..rows * cols)
        .map(|i| value(i / cols, i % cols))
        .collect();
    let cases: [(u32, Vec<u8>, Dtype, &str); 3] = [
        (0, f32_bytes(&vals), Dtype::F32, "F32"),
        (
            1,
            vals.iter()
                .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
                .collect(),
            Dtype::F16,
            "F16",
        ),
        (
            30,
            vals.iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
                .collect(),
            Dtype::BF16,
            "BF16",
        ),
    ];
    for (ty, data, dtype, name) in cases {
        let file = gguf(
            &[
                ("general.architecture", Kv::Str("llama")),
                ("tokenizer.ggml.tokens", Kv::Strs(vocab_strings(rows))),
            ],
            &[
                GTensor {
                    name: "blk.0.attn_norm.weight",
                    dims: vec![32],
                    ty: 0,
                    data: f32_bytes(&[1.0; 32]),
                },
                GTensor {
                    name: "token_embd.weight",
                    dims: vec![cols as u64, rows as u64],
                    ty,
                    data: data.clone(),
                },
            ],
        );
        let path = write_file(dir.path(), &format!("m-{name}.gguf"), &file);
        let out = extract(&path, json!({})).unwrap();
        let w = out.st().tensor("W").unwrap();
        assert_eq!((w.dtype(), w.shape()), (dtype, &[rows, cols][..]), "{name}");
        assert_eq!(w.data(), &data[..], "{name}: bit-exact");
        if dtype == Dtype::F32 {
            // Row r of W is token r: W[2][5] is value(2, 5).
            let at = (2 * cols + 5) * 4;
            assert_eq!(
                f32::from_le_bytes(w.data()[at..at + 4].try_into().unwrap()),
                value(2, 5)
            );
        }
        let m = out.meta();
        assert_eq!(m["source_format"], "gguf");
        assert_eq!(m["source_layout"], "gguf-v3");
        assert_eq!(m["source_dtype"], name);
        assert_eq!(m["source_shape"], "[32, 3] (gguf ne0 first)");
        assert_eq!(m["shape"], "[3, 32]");
        assert_eq!(m["source_file"], format!("m-{name}.gguf"));
        assert_eq!(m["conversion"], "none (bit-exact copy)");
        assert!(m["rule"].contains("token_embd.weight"));
        assert_eq!(
            out.vocab,
            json!({"format": 1, "source": "tokenizer.ggml.tokens", "tokens": ["tok0", "tok1", "tok2"]})
        );
    }
}

/// Q8_0 blocks: f16 d + 32 int8 per block, along rows.
fn q8_0(rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let mut data = Vec::new();
    let mut expect = Vec::new();
    for r in 0..rows {
        for b in 0..cols / 32 {
            // Scales include a subnormal f16 and a non-power-of-two.
            let d = match (r + b) % 3 {
                0 => half::f16::from_f32(0.0123),
                1 => half::f16::from_bits(0x0003),
                _ => half::f16::from_f32(-3.75),
            };
            data.extend(d.to_bits().to_le_bytes());
            for j in 0..32 {
                let q = ((r * 37 + b * 11 + j * 5) % 256) as u8 as i8;
                data.push(q as u8);
                expect.push(d.to_f32() * f32::from(q));
            }
        }
    }
    (data, expect)
}

#[test]
fn gguf_q8_0_dequantizes_exactly_and_output_weight_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (5usize, 64usize);
    let (data, expect) = q8_0(rows, cols);
    let (head, head_expect) = q8_0(rows, cols);
    let head: Vec<u8> = head.iter().map(|b| b.wrapping_add(0)).collect();
    let mut head = head;
    head[2] = 0x7f; // differs from token_embd in the first q of row 0
    let mut head_expect = head_expect;
    head_expect[0] = half::f16::from_f32(0.0123).to_f32() * 127.0;
    let tokens = vocab_strings(rows);
    let file = gguf(
        &[
            ("general.alignment", Kv::U32(32)),
            ("tokenizer.ggml.tokens", Kv::Strs(tokens.clone())),
        ],
        &[GTensor {
            name: "token_embd.weight",
            dims: vec![cols as u64, rows as u64],
            ty: 8,
            data: data.clone(),
        }],
    );
    let path = write_file(dir.path(), "q8.gguf", &file);
    let out = extract(&path, json!({})).unwrap();
    let w = out.st().tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[rows, cols][..]));
    let got: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), expect.len());
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(g.to_bits(), e.to_bits(), "element {i}");
    }
    // Spot check against hand arithmetic: row 0, block 0, j = 1: q = 5, d = f16(0.0123).
    assert_eq!(got[1], half::f16::from_f32(0.0123).to_f32() * 5.0);
    let m = out.meta();
    assert_eq!(m["source_dtype"], "Q8_0");
    assert!(m["conversion"].contains("Q8_0 dequantized exactly"));
    assert_eq!(out.vocab["tokens"][4], "tok4");

    // With output.weight present, it is W.
    let file = gguf(
        &[("tokenizer.ggml.tokens", Kv::Strs(tokens))],
        &[
            GTensor {
                name: "token_embd.weight",
                dims: vec![cols as u64, rows as u64],
                ty: 8,
                data,
            },
            GTensor {
                name: "output.weight",
                dims: vec![cols as u64, rows as u64],
                ty: 8,
                data: head,
            },
        ],
    );
    let path = write_file(dir.path(), "q8-head.gguf", &file);
    let out = extract(&path, json!({})).unwrap();
    let got: Vec<f32> = out
        .st()
        .tensor("W")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, head_expect);
    assert_eq!(out.meta()["source_tensor"], "output.weight");
    // An explicit name overrides the rule.
    let out = extract(&path, json!({"tensor": "token_embd.weight"})).unwrap();
    assert_eq!(out.meta()["source_tensor"], "token_embd.weight");
}

#[test]
fn gguf_unsupported_type_and_missing_tensor_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = gguf(
        &[],
        &[GTensor {
            name: "token_embd.weight",
            dims: vec![256, 2],
            ty: 12,
            data: vec![0; 2 * 144],
        }],
    );
    let path = write_file(dir.path(), "q4k.gguf", &file);
    let e = extract(&path, json!({})).err().unwrap();
    assert!(e.contains("Q4_K") && e.contains("id 12"), "{e}");
    assert!(e.contains("F32, F16, BF16") && e.contains("Q8_0"), "{e}");
    assert!(e.contains("`wx[m=1]`") && e.contains("q4k.gguf"), "{e}");
    let file = gguf(
        &[],
        &[GTensor {
            name: "blk.0.ffn_up.weight",
            dims: vec![32, 4],
            ty: 0,
            data: vec![0; 512],
        }],
    );
    let path = write_file(dir.path(), "none.gguf", &file);
    let e = extract(&path, json!({})).err().unwrap();
    assert!(e.contains("`blk.0.ffn_up.weight` [4, 32] F32"), "{e}");
    assert!(e.contains("set param `tensor`"), "{e}");
}

#[test]
fn truncated_gguf_is_an_error_at_every_cut_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = q8_0(2, 32);
    let file = gguf(
        &[
            ("general.alignment", Kv::U32(32)),
            ("tokenizer.ggml.tokens", Kv::Strs(vocab_strings(2))),
        ],
        &[GTensor {
            name: "token_embd.weight",
            dims: vec![32, 2],
            ty: 8,
            data,
        }],
    );
    let path = dir.path().join("cut.gguf");
    for cut in 4..file.len() {
        std::fs::write(&path, &file[..cut]).unwrap();
        let e = extract(&path, json!({}))
            .err()
            .unwrap_or_else(|| panic!("cut {cut} extracted"));
        assert!(
            e.contains("cut.gguf") && e.contains("gguf"),
            "cut {cut}: {e}"
        );
    }
    std::fs::write(&path, &file).unwrap();
    extract(&path, json!({})).unwrap();
    // A huge claimed array count is refused before any allocation.
    let mut bad = b"GGUF".to_vec();
    bad.extend(3u32.to_le_bytes());
    bad.extend(0u64.to_le_bytes());
    bad.extend(1u64.to_le_bytes());
    gstr(&mut bad, "tokenizer.ggml.tokens");
    bad.extend(9u32.to_le_bytes());
    bad.extend(8u32.to_le_bytes());
    bad.extend((u64::MAX / 4).to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let e = extract(&path, json!({})).err().unwrap();
    assert!(e.contains("claims"), "{e}");
}

#[test]
fn same_checkpoint_in_two_places_gives_identical_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let da = a.path().join("x").join("ckpt");
    let db = b.path().join("elsewhere-entirely");
    for d in [&da, &db] {
        std::fs::create_dir_all(d).unwrap();
        sharded_tied(d);
        std::fs::write(
            d.join("tokenizer.json"),
            json!({"model": {"vocab": {"x": 0, "y": 1}}, "added_tokens": []}).to_string(),
        )
        .unwrap();
    }
    let oa = extract(&da, json!({})).unwrap();
    let ob = extract(&db, json!({})).unwrap();
    assert_eq!(oa.w, ob.w);
    assert_eq!(oa.vocab_bytes, ob.vocab_bytes);
    assert_eq!(
        oa.vocab["tokens"].as_array().unwrap().len(),
        7,
        "padded to W's rows"
    );

    let (data, _) = q8_0(3, 32);
    let file = gguf(
        &[("tokenizer.ggml.tokens", Kv::Strs(vocab_strings(3)))],
        &[GTensor {
            name: "token_embd.weight",
            dims: vec![32, 3],
            ty: 8,
            data,
        }],
    );
    let ga = extract(&write_file(a.path(), "m.gguf", &file), json!({})).unwrap();
    let gb = extract(&write_file(&db, "m.gguf", &file), json!({})).unwrap();
    assert_eq!(ga.w, gb.w);
    assert_eq!(ga.vocab_bytes, gb.vocab_bytes);
}

// ---- real checkpoints (fetched by scripts/fetch-models.sh) --------------------------------

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn real_smollm2_gguf_when_fetched() {
    let path = models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !fetched(&path) {
        return;
    }
    let t = std::time::Instant::now();
    let out = extract(&path, json!({})).unwrap();
    let took = t.elapsed();
    let w = out.st().tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[49152usize, 576][..]));
    let m = out.meta();
    assert_eq!(m["source_dtype"], "Q8_0");
    assert_eq!(m["source_tensor"], "token_embd.weight");
    let tokens = out.vocab["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        tokens[..3],
        [
            json!("<|endoftext|>"),
            json!("<|im_start|>"),
            json!("<|im_end|>")
        ]
    );
    let vals: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // Values computed independently (a Python struct-based reader of the same file): the first
    // elements of row 0 (token 0) and of the last row (token 49151).
    // (Compared as f64: the decimal literals are the exact values, products of an f16 and an i8.)
    let at = |i: usize| f64::from(vals[i]);
    let expected_row0: [f64; 4] = [
        -0.106_544_494_628_906_25,
        0.032_978_057_861_328_125,
        0.048_198_699_951_171_875,
        -0.022_830_963_134_765_625,
    ];
    assert_eq!([at(0), at(1), at(2), at(3)], expected_row0);
    let last = 49151 * 576;
    assert_eq!(
        [at(last), at(last + 1)],
        [0.011_505_126_953_125, 0.005_752_563_476_562_5]
    );
    let sum: f64 = vals.iter().map(|&v| f64::from(v)).sum();
    let norm0: f64 = vals[..576]
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt();
    eprintln!(
        "smollm2: W {:?} {:?} from {} {}, fnv1a(W data) {:016x}, sum {sum:.6}, |row0| {norm0:.6}, \
         tokens[0..8] {:?}, extract {took:?}, rule {:?}",
        w.dtype(),
        w.shape(),
        m["source_dtype"],
        m["source_shape"],
        fnv1a(w.data()),
        &tokens[..8],
        m["rule"]
    );
}

#[test]
fn real_all_minilm_when_fetched() {
    let dir = models_dir().join("all-minilm-l6-v2");
    if !fetched(&dir.join("model.safetensors")) {
        return;
    }
    let e = extract(&dir, json!({})).err().unwrap();
    assert!(e.contains("word_embeddings.weight"), "{e}");
    let t = std::time::Instant::now();
    let out = extract(&dir, json!({"tensor": "embeddings.word_embeddings.weight"})).unwrap();
    let took = t.elapsed();
    let w = out.st().tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[30522usize, 384][..]));
    let tokens = out.vocab["tokens"].as_array().unwrap();
    eprintln!(
        "all-minilm: W {:?} {:?}, fnv1a(W data) {:016x}, vocab {} ({:?}), tokens[0..3] {:?}, \
         tokens[101..103] {:?}, extract {took:?}, rule {:?}",
        w.dtype(),
        w.shape(),
        fnv1a(w.data()),
        tokens.len(),
        out.vocab["source"],
        &tokens[..3.min(tokens.len())],
        &tokens[101.min(tokens.len())..103.min(tokens.len())],
        out.meta()["rule"]
    );
}

#[test]
fn real_qwen3_tokenizer_when_fetched() {
    let tok = models_dir().join("qwen3-tokenizer/tokenizer.json");
    if !fetched(&tok) {
        return;
    }
    // A Qwen3-shaped tied checkpoint (151,936 rows, narrow) beside the real tokenizer.json.
    let dir = tempfile::tempdir().unwrap();
    let emb = bf16_bytes(151_936, 2, 0);
    write_st(
        &dir.path().join("model.safetensors"),
        &[(
            "model.embed_tokens.weight",
            Dtype::BF16,
            vec![151_936, 2],
            &emb,
        )],
    );
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"tie_word_embeddings": true}"#,
    )
    .unwrap();
    std::fs::copy(&tok, dir.path().join("tokenizer.json")).unwrap();
    let t = std::time::Instant::now();
    let out = extract(dir.path(), json!({})).unwrap();
    let took = t.elapsed();
    let tokens = out.vocab["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 151_936, "one entry per row of W");
    let named = tokens.iter().filter(|t| !t.is_null()).count();
    assert_eq!(named, 151_669, "len(tokenizer) per the science spec S01");
    assert!(
        tokens[151_669..].iter().all(Value::is_null),
        "the 267 orphans"
    );
    assert_eq!(tokens[151_643], "<|endoftext|>");
    assert_eq!(tokens[151_652], "<|vision_start|>");
    assert_eq!(tokens[151_653], "<|vision_end|>");
    eprintln!(
        "qwen3 tokenizer: {named} named of {} ids, extract {took:?}",
        tokens.len()
    );
}

/// Runs `w.synthetic_checkpoint` into `dir` (outputs `ckpt/` and `truth.json`).
fn synthetic(dir: &Path, params: Value, threads: usize) -> Value {
    let c = StageContext {
        instance: "synth".into(),
        inputs: Default::default(),
        outputs: [
            ("checkpoint".to_string(), dir.join("ckpt")),
            ("truth".to_string(), dir.join("truth.json")),
        ]
        .into(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    };
    run("w.synthetic_checkpoint", &c).map_err(|e| e.0).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap()
}

fn small_synthetic() -> Value {
    json!({"rows": 3000, "cols": 64, "populations": [40, 20, 5, 5, 2], "singletons": 12,
           "oort": 4, "halo": 300, "seed": 7})
}

#[test]
fn synthetic_checkpoint_is_sharded_tied_deterministic_and_its_black_holes_are_exact() {
    let a = tempfile::tempdir().unwrap();
    let truth = synthetic(a.path(), small_synthetic(), 1);
    let b = tempfile::tempdir().unwrap();
    let truth_b = synthetic(b.path(), small_synthetic(), 2);
    assert_eq!(truth, truth_b);
    for f in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ] {
        let (x, y) = (a.path().join("ckpt").join(f), b.path().join("ckpt").join(f));
        assert_eq!(
            std::fs::read(&x).unwrap(),
            std::fs::read(&y).unwrap(),
            "{f} differs across threads"
        );
    }
    // w.extract finds the tied embedding in shard 2 through the index.
    let out = extract(&a.path().join("ckpt"), json!({})).unwrap();
    let m = out.meta();
    assert_eq!(m["source_tensor"], "model.embed_tokens.weight");
    assert_eq!(m["source_file"], "model-00002-of-00003.safetensors");
    let st = out.st();
    let w = st.tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::BF16, &[3000usize, 64][..]));
    // The census of bit-identical rows is exactly the planted black holes.
    let census = azimuth_stages::bf16::identical_rows(w.data(), 128);
    let groups: Vec<Vec<u32>> = census
        .groups
        .iter()
        .filter(|g| g.len() >= 2)
        .cloned()
        .collect();
    let planted: Vec<Vec<u32>> = truth["black_holes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| serde_json::from_value(h["members"].clone()).unwrap())
        .collect();
    assert_eq!(groups, planted);
    assert_eq!(truth["black_holes"][0]["population"], 40);
    assert_eq!(truth["anchor"], planted[0][0]);
    assert_eq!(
        census.distinct,
        3000 - 72 + 5,
        "every other row is distinct"
    );
    assert_eq!(truth["rule_a"].as_array().unwrap().len(), 72 + 12);
    assert_eq!(truth["rule_b"].as_array().unwrap().len(), 72 + 12 + 4);
    // Every core row shares the anchor's exponents; Oort rows are tolerance+1 binades off.
    let row = |t: u64| {
        let t = t as usize;
        azimuth_stages::bf16::patterns(&w.data()[t * 128..(t + 1) * 128])
    };
    let anchor = row(truth["anchor"].as_u64().unwrap());
    for t in truth["rule_a"].as_array().unwrap() {
        assert_eq!(
            azimuth_stages::bf16::exponent_distance(&row(t.as_u64().unwrap()), &anchor),
            0
        );
    }
    for o in truth["oort"].as_array().unwrap() {
        let d = azimuth_stages::bf16::exponent_distance(&row(o["id"].as_u64().unwrap()), &anchor);
        assert!(d >= 6, "oort row at exponent distance {d}");
    }
    // Bad params are named.
    let c = tempfile::tempdir().unwrap();
    let bad = StageContext {
        instance: "synth".into(),
        inputs: Default::default(),
        outputs: [
            ("checkpoint".to_string(), c.path().join("ckpt")),
            ("truth".to_string(), c.path().join("truth.json")),
        ]
        .into(),
        params: json!({"rows": 100, "cols": 8, "populations": [5, 5], "halo": 0})
            .as_object()
            .unwrap()
            .clone(),
        device: "cpu".into(),
        threads: 1,
    };
    let e = run("w.synthetic_checkpoint", &bad).unwrap_err().0;
    assert!(e.contains("unique largest"), "{e}");
}

/// Small fixtures made from a real matrix: all-MiniLM's word embeddings rounded to bf16 (round to
/// nearest even), split into a tied three-shard checkpoint beside two other real tensors, then an
/// untied one whose head equals the embedding, then one whose head differs in one element.
#[test]
fn real_minilm_rows_as_sharded_tied_bf16_fixtures_when_fetched() {
    let src = models_dir().join("all-minilm-l6-v2/model.safetensors");
    if !fetched(&src) {
        return;
    }
    let raw = std::fs::read(&src).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let real = |name: &str| st.tensor(name).unwrap();
    let words = real("embeddings.word_embeddings.weight");
    let rows = 4096; // a slice keeps the test small; the rows are real
    let bf: Vec<u8> = words.data()[..rows * 384 * 4]
        .chunks_exact(4)
        .flat_map(|c| {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            half::bf16::from_f32(x).to_bits().to_le_bytes()
        })
        .collect();
    let pos = real("embeddings.position_embeddings.weight");
    let ln = real("embeddings.LayerNorm.weight");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(
        &d.join("model-00001-of-00003.safetensors"),
        &[(
            "embeddings.position_embeddings.weight",
            Dtype::F32,
            pos.shape().to_vec(),
            pos.data(),
        )],
    );
    write_st(
        &d.join("model-00002-of-00003.safetensors"),
        &[(
            "embeddings.LayerNorm.weight",
            Dtype::F32,
            ln.shape().to_vec(),
            ln.data(),
        )],
    );
    write_st(
        &d.join("model-00003-of-00003.safetensors"),
        &[(
            "model.embed_tokens.weight",
            Dtype::BF16,
            vec![rows, 384],
            &bf,
        )],
    );
    std::fs::write(
        d.join("model.safetensors.index.json"),
        json!({"weight_map": {
            "embeddings.position_embeddings.weight": "model-00001-of-00003.safetensors",
            "embeddings.LayerNorm.weight": "model-00002-of-00003.safetensors",
            "model.embed_tokens.weight": "model-00003-of-00003.safetensors"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("config.json"),
        json!({"tie_word_embeddings": true}).to_string(),
    )
    .unwrap();
    std::fs::copy(
        models_dir().join("all-minilm-l6-v2/tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    let out = extract(d, json!({})).unwrap();
    let w = out.st().tensor("W").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::BF16, &[rows, 384][..]));
    assert_eq!(w.data(), &bf[..], "the bf16 rows come out bit-exact");
    assert_eq!(out.vocab["tokens"][101], "[CLS]");
    assert_eq!(out.vocab["tokens"].as_array().unwrap().len(), 30522);

    // Untied, with a head equal to the embedding: fine. A head one bit off: a clear error.
    let single = tempfile::tempdir().unwrap();
    let s = single.path();
    let mut head = bf.clone();
    write_st(
        &s.join("model.safetensors"),
        &[
            (
                "model.embed_tokens.weight",
                Dtype::BF16,
                vec![rows, 384],
                &bf,
            ),
            ("lm_head.weight", Dtype::BF16, vec![rows, 384], &head),
        ],
    );
    let both = extract(s, json!({})).unwrap();
    assert_eq!(both.st().tensor("W").unwrap().data(), &bf[..]);
    head[2 * 384 * 7] ^= 1;
    write_st(
        &s.join("model.safetensors"),
        &[
            (
                "model.embed_tokens.weight",
                Dtype::BF16,
                vec![rows, 384],
                &bf,
            ),
            ("lm_head.weight", Dtype::BF16, vec![rows, 384], &head),
        ],
    );
    let e = extract(s, json!({})).err().unwrap();
    assert!(
        e.contains("lm_head.weight") && e.contains("model.embed_tokens.weight"),
        "{e}"
    );
}
