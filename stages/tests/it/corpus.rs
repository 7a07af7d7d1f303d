//! `corpus.text` and `corpus.tokenize` run through `azimuth_stages::run` on planted texts whose
//! answers are known by hand: byte sets and dead sets, marker cuts, CRLF/CR handling, ascii_only,
//! a BPE whose merges are worked out in the comments, round trips of the whole stream through the
//! vocabulary, reserved ids, `w.tokens` reading the vocabulary and masks, errors, and byte
//! determinism across runs and thread counts; then the Shakespeare corpus of
//! `scripts/fetch-models.sh` when fetched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use azimuth_stages::run;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{ctx, fetched, models_dir};

const TOKENIZE_OUTS: [&str; 4] = ["tokens", "vocab", "masks", "census"];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `corpus.text`; returns (text bytes, summary).
fn text_stage(
    dir: &Path,
    input: &Path,
    params: Value,
    tag: &str,
) -> Result<(Vec<u8>, Value), String> {
    let out = |n: &str| dir.join(format!("{tag}_{n}"));
    let c = ctx(
        tag,
        params,
        &[("raw", input)],
        &[("text", out("text.txt")), ("summary", out("summary.json"))],
        1,
    );
    run("corpus.text", &c).map_err(|e| e.0)?;
    let text = std::fs::read(out("text.txt")).unwrap();
    let summary = serde_json::from_slice(&std::fs::read(out("summary.json")).unwrap()).unwrap();
    Ok((text, summary))
}

/// The outputs of one `corpus.tokenize` run, parsed, plus their raw bytes.
struct Tok {
    stream: Vec<i32>,
    tokens_meta: BTreeMap<String, String>,
    vocab: Value,
    masks: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    census: Value,
    raw: Vec<Vec<u8>>,
    paths: BTreeMap<&'static str, PathBuf>,
}

impl std::fmt::Debug for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tok({} tokens, census {})",
            self.stream.len(),
            self.census
        )
    }
}

impl Tok {
    fn mask(&self, name: &str) -> Vec<bool> {
        let (dtype, _, data) = &self.masks[name];
        assert_eq!(*dtype, Dtype::BOOL);
        data.iter().map(|&b| b != 0).collect()
    }

    fn i64s(&self, name: &str) -> Vec<i64> {
        let (dtype, _, data) = &self.masks[name];
        assert_eq!(*dtype, Dtype::I64);
        data.chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn dead_ids(&self) -> Vec<i64> {
        self.i64s("dead_ids")
    }
}

fn tokenize(
    dir: &Path,
    input: &Path,
    params: Value,
    threads: usize,
    tag: &str,
) -> Result<Tok, String> {
    let paths: BTreeMap<&'static str, PathBuf> = TOKENIZE_OUTS
        .iter()
        .map(|&n| (n, dir.join(format!("{tag}_{threads}_{n}"))))
        .collect();
    let c = ctx(
        tag,
        params,
        &[("text", input)],
        &paths
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>(),
        threads,
    );
    run("corpus.tokenize", &c).map_err(|e| e.0)?;
    let raw: Vec<Vec<u8>> = TOKENIZE_OUTS
        .iter()
        .map(|n| std::fs::read(&paths[n]).unwrap())
        .collect();
    let st = SafeTensors::deserialize(&raw[0]).unwrap();
    let t = st.tensor("tokens").unwrap();
    assert_eq!(t.dtype(), Dtype::I32);
    let stream: Vec<i32> = t
        .data()
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(t.shape(), [stream.len()]);
    let (_, meta) = SafeTensors::read_metadata(&raw[0]).unwrap();
    let tokens_meta = meta.metadata().clone().unwrap().into_iter().collect();
    let ms = SafeTensors::deserialize(&raw[2]).unwrap();
    let masks = ms
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    Ok(Tok {
        stream,
        tokens_meta,
        vocab: serde_json::from_slice(&raw[1]).unwrap(),
        masks,
        census: serde_json::from_slice(&raw[3]).unwrap(),
        raw,
        paths,
    })
}

/// GPT-2's byte-to-unicode alphabet, inverted (char → byte), built from its definition.
fn byte_level_inverse() -> BTreeMap<char, u8> {
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            let c = if printable {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            };
            (c, b)
        })
        .collect()
}

/// The bytes the vocabulary says the stream stands for.
fn decode_stream(tok: &Tok) -> Vec<u8> {
    let inverse = byte_level_inverse();
    let strings: Vec<Vec<u8>> = tok.vocab["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().chars().map(|c| inverse[&c]).collect())
        .collect();
    tok.stream
        .iter()
        .flat_map(|&t| strings[t as usize].clone())
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn text_passes_bytes_through_and_summarises_them() {
    let dir = tempfile::tempdir().unwrap();
    // 'a' ×6, 'b' ×2, '\n' ×2, ' ' ×1, 0xff ×1 (binary junk is fine): 12 bytes.
    let raw = b"ab a\nab\xffa\naa";
    let input = write(dir.path(), "in.bin", &raw[..]);
    let (out, s) = text_stage(dir.path(), &input, json!({}), "plain").unwrap();
    assert_eq!(out, raw);
    assert_eq!(s["format"], 1);
    assert_eq!(s["source"], "in.bin");
    assert_eq!(s["bytes_in"], 12);
    assert_eq!(s["bytes_out"], 12);
    assert_eq!(s["bytes_dropped"], 0);
    assert_eq!(s["distinct_bytes"], 5);
    assert_eq!(s["non_ascii_bytes"], 1);
    assert_eq!(s["lines"], 3);
    assert!(s["markers"].is_null() && s["newlines"].is_null() && s["ascii_only"].is_null());
    assert_eq!(s["sha256"], sha256_hex(raw));
    let top = s["top_bytes"].as_array().unwrap();
    let got: Vec<(u64, &str, u64)> = top
        .iter()
        .map(|t| {
            (
                t["byte"].as_u64().unwrap(),
                t["label"].as_str().unwrap(),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    // By count, ties by byte value.
    // By count, ties by byte value.
    assert_eq!(
        got,
        [
            (97, "a", 6),
            (10, "\\n", 2),
            (98, "b", 2),
            (32, " ", 1),
            (255, "\\xff", 1)
        ]
    );
    assert_eq!(top[0]["fraction"], 0.5);
}

#[test]
fn text_cuts_markers_normalises_newlines_and_drops_non_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let raw = "The Project Gutenberg eBook\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\n\
               Caf\u{e9} \u{2014} one\r\ntwo\rthree\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\n\
               licence";
    let input = write(dir.path(), "pg.txt", raw.as_bytes());
    let params = json!({
        "start_marker": "*** START OF",
        "end_marker": "*** END OF",
        "newlines": "lf",
        "ascii_only": true,
    });
    let (out, s) = text_stage(dir.path(), &input, params, "gut").unwrap();
    assert_eq!(out, b"Caf  one\ntwo\nthree\n\n");
    let kept = "Caf\u{e9} \u{2014} one\r\ntwo\rthree\r\n\r\n";
    assert_eq!(s["markers"]["bytes_after"], kept.len());
    assert_eq!(s["markers"]["bytes_cut_before"], raw.find("Caf").unwrap());
    assert_eq!(s["newlines"]["crlf_to_lf"], 3);
    assert_eq!(s["newlines"]["lone_cr_to_lf"], 1);
    assert_eq!(s["newlines"]["bytes_after"], kept.len() - 3);
    // é is 2 bytes, — is 3.
    assert_eq!(s["ascii_only"]["non_ascii_dropped"], 5);
    assert_eq!(s["bytes_out"], out.len());
    assert_eq!(s["bytes_dropped"], raw.len() - out.len());
    assert_eq!(s["lines"], 4);
    assert_eq!(s["non_ascii_bytes"], 0);
    assert_eq!(s["sha256"], sha256_hex(&out));

    // `keep` leaves CRLF and lone CR alone.
    let (kept_out, s) = text_stage(
        dir.path(),
        &input,
        json!({"start_marker": "*** START OF", "end_marker": "*** END OF"}),
        "keep",
    )
    .unwrap();
    assert_eq!(kept_out, kept.as_bytes());
    assert!(s["newlines"].is_null());
}

#[test]
fn text_errors_name_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.txt");
    let e = text_stage(dir.path(), &missing, json!({}), "m").unwrap_err();
    assert!(e.contains("nope.txt") && e.contains("input `raw`"), "{e}");
    let empty = write(dir.path(), "empty.txt", b"");
    let e = text_stage(dir.path(), &empty, json!({}), "e").unwrap_err();
    assert!(e.contains("is empty"), "{e}");
    let input = write(dir.path(), "t.txt", b"a\nSTART\nbody\nEND\n");
    let e = text_stage(dir.path(), &input, json!({"start_marker": "BEGIN"}), "s").unwrap_err();
    assert!(e.contains("`start_marker`") && e.contains("BEGIN"), "{e}");
    let e = text_stage(
        dir.path(),
        &input,
        json!({"start_marker": "END", "end_marker": "START"}),
        "o",
    )
    .unwrap_err();
    assert!(
        e.contains("`end_marker`") && e.contains("after the start marker"),
        "{e}"
    );
    let e = text_stage(
        dir.path(),
        &input,
        json!({"start_marker": "body", "end_marker": "END"}),
        "c",
    )
    .unwrap_err();
    assert!(
        e.contains("marker cut") && e.contains("left no bytes"),
        "{e}"
    );
    let high = write(dir.path(), "high.bin", &[0x80, 0xff, 0xc3]);
    let e = text_stage(dir.path(), &high, json!({"ascii_only": true}), "a").unwrap_err();
    assert!(
        e.contains("ascii_only") && e.contains("left no bytes"),
        "{e}"
    );
    let e = text_stage(dir.path(), &input, json!({"newlines": "crlf"}), "n").unwrap_err();
    assert!(e.contains("`newlines`"), "{e}");
    let e = text_stage(dir.path(), &input, json!({"strip": true}), "u").unwrap_err();
    assert!(e.contains("unknown param `strip`"), "{e}");
}

#[test]
fn bytes_scheme_has_the_planted_live_and_dead_sets() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"hello, world\nhello!\n";
    let input = write(dir.path(), "h.txt", text);
    let tok = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bytes", "vocab_size": 128}),
        1,
        "b",
    )
    .unwrap();
    assert_eq!(
        tok.stream,
        text.iter().map(|&b| b as i32).collect::<Vec<_>>()
    );
    let live_set: Vec<i64> = {
        let mut v: Vec<i64> = text.iter().map(|&b| b as i64).collect();
        v.sort();
        v.dedup();
        v
    };
    // "\n ! , d e h l o r w" = 10 distinct bytes.
    assert_eq!(
        live_set,
        [10, 32, 33, 44, 100, 101, 104, 108, 111, 114, 119]
    );
    assert_eq!(tok.i64s("live_ids"), live_set);
    let dead: Vec<i64> = (0..128).filter(|i| !live_set.contains(i)).collect();
    assert_eq!(tok.dead_ids(), dead);
    let dead_mask = tok.mask("dead_mask");
    let live_mask = tok.mask("live_mask");
    assert_eq!(dead_mask.len(), 128);
    assert!((0..128)
        .all(|i| dead_mask[i] != live_mask[i] && dead_mask[i] == dead.contains(&(i as i64))));
    let counts = tok.i64s("counts");
    assert_eq!((counts[108], counts[10], counts[0]), (5, 2, 0));
    assert_eq!(tok.masks["counts"].1, [128]);
    assert_eq!(tok.tokens_meta["scheme"], "bytes");
    assert_eq!(tok.tokens_meta["vocab_size"], "128");
    assert_eq!(tok.tokens_meta["source"], "h.txt");
    let tokens = tok.vocab["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 128);
    assert_eq!(
        (
            tokens[32].as_str(),
            tokens[10].as_str(),
            tokens[97].as_str()
        ),
        (Some("Ġ"), Some("Ċ"), Some("a"))
    );
    assert_eq!(tokens[0], "Ā");
    assert!(tok.vocab.get("merges").is_none());
    assert_eq!(tok.vocab["format"], 1);
    assert_eq!(decode_stream(&tok), text);
    let c = &tok.census;
    assert_eq!(
        (c["n_tokens"].as_u64(), c["vocab_size"].as_u64()),
        (Some(20), Some(128))
    );
    assert_eq!(
        (c["n_live"].as_u64(), c["n_dead"].as_u64()),
        (Some(11), Some(117))
    );
    assert_eq!(c["distinct_bytes"], 11);
    assert_eq!(
        c["most_frequent"][0],
        json!({"id": 108, "text": "l", "count": 5, "fraction": 0.25})
    );
    assert_eq!(c["most_frequent"][1]["id"], 111); // 'o' ×4
                                                  // Rarest: count 1 = ' ' (32), '!' (33), ',' (44), 'd', 'r', 'w' in id order.
    let rare: Vec<u64> = c["rarest_live"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(&rare[..6], [32, 33, 44, 100, 114, 119]);
    assert_eq!(c["dead_ids"].as_array().unwrap().len(), 117);

    // Default vocab_size is 256 and reserved ids follow.
    let tok = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bytes", "reserved_dead": 2}),
        1,
        "b256",
    )
    .unwrap();
    assert_eq!(tok.tokens_meta["vocab_size"], "258");
    assert_eq!(tok.dead_ids().len(), 258 - 11);
    assert_eq!(tok.vocab["tokens"][256], "<|reserved_0|>");
    assert_eq!(tok.vocab["tokens"][257], "<|reserved_1|>");
    assert_eq!(tok.census["scheme_vocab_size"], 256);
    assert_eq!(tok.census["n_dead_unreserved"], 256 - 11);
}

#[test]
fn cleaned_text_feeds_a_128_byte_vocabulary_as_in_lil_gatsby() {
    // S31's pipeline in miniature: CRLF and non-ASCII in the raw file; 128 needs ascii_only.
    let dir = tempfile::tempdir().unwrap();
    let raw = "x\r\n*** START OF IT\r\nOld sport, \u{201c}I\u{201d} said.\r\n*** END OF IT\r\n";
    let input = write(dir.path(), "g.txt", raw.as_bytes());
    let e = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bytes", "vocab_size": 128}),
        1,
        "raw",
    )
    .unwrap_err();
    assert!(
        e.contains("ascii_only: true") && e.contains("offset") && e.contains("6 bytes"),
        "{e}"
    );
    let params = json!({"start_marker": "*** START OF", "end_marker": "*** END OF", "newlines": "lf", "ascii_only": true});
    let (clean, _) = text_stage(dir.path(), &input, params, "clean").unwrap();
    assert_eq!(clean, b"Old sport, I said.\n");
    let cleaned = dir.path().join("clean_text.txt");
    let tok = tokenize(
        dir.path(),
        &cleaned,
        json!({"scheme": "bytes", "vocab_size": 128}),
        1,
        "c",
    )
    .unwrap();
    // Live: \n ' ' , . I O a d i l o p r s t = 15; 13 (CR) is dead.
    assert_eq!(tok.census["n_live"], 15);
    assert_eq!(tok.census["n_dead"], 113);
    assert!(tok.dead_ids().contains(&13));
}

#[test]
fn bpe_learns_the_merges_worked_out_by_hand() {
    // Words: "aaab" ×1, " aaab" ×2. Pair counts: (a,a) 2+4 = 6, (a,b) 3, (' ',a) 2 → merge
    // (97,97) = 256. Then (256,a) 3 and (a,b) 3 tie → smaller pair (97,98) = 257. Then
    // (256,257) 3 = 258, then (' ',258) 2 = 259; no pair is left after that.
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "a.txt", b"aaab aaab aaab");
    let tok = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bpe", "vocab_size": 260, "reserved_dead": 3}),
        1,
        "a",
    )
    .unwrap();
    assert_eq!(
        tok.vocab["merges"],
        json!([[97, 97], [97, 98], [256, 257], [32, 258]])
    );
    assert_eq!(tok.stream, [258, 259, 259]);
    let tokens = tok.vocab["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 263);
    assert_eq!(
        (
            &tokens[256],
            &tokens[257],
            &tokens[258],
            &tokens[259],
            &tokens[262]
        ),
        (
            &json!("aa"),
            &json!("ab"),
            &json!("aaab"),
            &json!("Ġaaab"),
            &json!("<|reserved_2|>")
        )
    );
    assert_eq!(tok.i64s("live_ids"), [258, 259]);
    // Every byte, the consumed merges 256 and 257, and the reserved 260–262 are dead.
    assert_eq!(
        tok.dead_ids(),
        (0..258).chain(260..263).collect::<Vec<i64>>()
    );
    assert!(tok.mask("dead_mask")[260..].iter().all(|&d| d));
    assert_eq!(tok.tokens_meta["vocab_size"], "263");
    assert_eq!(tok.tokens_meta["reserved_dead"], "3");
    let c = &tok.census;
    assert_eq!(
        (
            c["n_live"].as_u64(),
            c["n_dead"].as_u64(),
            c["n_merges"].as_u64()
        ),
        (Some(2), Some(261), Some(4))
    );
    assert_eq!(
        (c["words"].as_u64(), c["distinct_words"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        c["most_frequent"][0],
        json!({"id": 259, "text": " aaab", "count": 2, "fraction": 2.0 / 3.0})
    );
    assert_eq!(c["n_dead_unreserved"], 258);
    assert_eq!(decode_stream(&tok), b"aaab aaab aaab");

    // One more id than the text supports is an error that says how far it can go.
    let e = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bpe", "vocab_size": 261}),
        1,
        "over",
    )
    .unwrap_err();
    assert!(
        e.contains("after 4 merges") && e.contains("`vocab_size: 260`"),
        "{e}"
    );
    // vocab_size 256 = no merges: the bytes themselves.
    let tok = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bpe", "vocab_size": 256}),
        1,
        "none",
    )
    .unwrap();
    assert_eq!(tok.stream.len(), 14);
    assert_eq!(tok.vocab["merges"], json!([]));
}

/// A text with words, numbers, punctuation runs, newline runs, UTF-8 and invalid bytes.
fn mixed_text() -> Vec<u8> {
    let mut t = Vec::new();
    for i in 0..40 {
        t.extend_from_slice(
            format!(
                "The cat {i} sat on the mat; the dog's bone -- {} -- lay there.\n\nCaf\u{e9} \
                 \u{0e44}\u{0e17}\u{0e22}  x\t\ty!!\r\n",
                i * 37 % 11
            )
            .as_bytes(),
        );
        t.extend_from_slice(&[0xff, 0xfe, b' ', 0x80, b'z']);
    }
    t
}

#[test]
fn bpe_round_trips_every_byte_and_reserved_ids_stay_out_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let text = mixed_text();
    let input = write(dir.path(), "mixed.bin", &text);
    let tok = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bpe", "vocab_size": 300, "reserved_dead": 50}),
        1,
        "m",
    )
    .unwrap();
    assert_eq!(decode_stream(&tok), text);
    assert!(tok.stream.iter().all(|&t| (0..300).contains(&t)));
    let dead = tok.mask("dead_mask");
    assert_eq!(dead.len(), 350);
    assert!(dead[300..].iter().all(|&d| d));
    let counts = tok.i64s("counts");
    assert!((0..350).all(|i| dead[i] == (counts[i] == 0)));
    assert_eq!(counts.iter().sum::<i64>() as usize, tok.stream.len());
    assert_eq!(tok.vocab["merges"].as_array().unwrap().len(), 44);
    // Merged tokens are the concatenation of their pair, in the vocabulary alphabet.
    let tokens = tok.vocab["tokens"].as_array().unwrap();
    for (k, m) in tok.vocab["merges"].as_array().unwrap().iter().enumerate() {
        let (a, b) = (
            m[0].as_u64().unwrap() as usize,
            m[1].as_u64().unwrap() as usize,
        );
        assert!(a < 256 + k && b < 256 + k, "merge {k} uses a later id");
        let joined = format!(
            "{}{}",
            tokens[a].as_str().unwrap(),
            tokens[b].as_str().unwrap()
        );
        assert_eq!(tokens[256 + k].as_str().unwrap(), joined);
    }
    // Byte ids that never occur are dead (e.g. 'Q'); bytes that occur may still be dead when
    // merges always consume them, but 0xff is followed by 0xfe each time and both occur 40 times.
    assert!(dead[b'Q' as usize]);
    assert_eq!(tok.census["distinct_bytes"].as_u64().unwrap() as usize, {
        let mut s = text.clone();
        s.sort();
        s.dedup();
        s.len()
    });
}

#[test]
fn w_tokens_decodes_the_vocabulary_and_reads_the_dead_mask() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "a.txt", b"aaab aaab aaab");
    let tok = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bpe", "vocab_size": 260, "reserved_dead": 3}),
        1,
        "a",
    )
    .unwrap();
    let w = dir.path().join("w.safetensors");
    crate::support::write_w(&w, Dtype::BF16, [263, 1], &vec![0u8; 263 * 2]);
    let out = |n: &str| dir.path().join(format!("wt_{n}"));
    let c = ctx(
        "wt",
        json!({"mask": "dead_mask"}),
        &[
            ("vocab", &tok.paths["vocab"]),
            ("w", &w),
            ("dead", &tok.paths["masks"]),
        ],
        &[
            ("tokens", out("tokens")),
            ("dead_tokens", out("dead_tokens")),
            ("summary", out("summary")),
        ],
        1,
    );
    run("w.tokens", &c).unwrap();
    let csv = std::fs::read_to_string(out("tokens")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 264);
    let header: Vec<&str> = lines[0].split(',').collect();
    let row = |id: usize| -> BTreeMap<&str, String> {
        // text is the only quoted column and these have no commas.
        header
            .iter()
            .zip(lines[id + 1].split(','))
            .map(|(h, v)| (*h, v.trim_matches('"').to_string()))
            .collect()
    };
    assert_eq!(row(259)["text"], " aaab");
    assert_eq!(row(259)["bytes_hex"], "2061616162");
    assert_eq!(row(259)["dead"], "false");
    assert_eq!(row(32)["text"], " ");
    assert_eq!(row(32)["dead"], "true");
    assert_eq!(row(261)["text"], "<|reserved_1|>");
    assert_eq!(
        (
            row(261)["reserved"].as_str(),
            row(261)["orphan"].as_str(),
            row(261)["dead"].as_str()
        ),
        ("true", "false", "true")
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(out("summary")).unwrap()).unwrap();
    let text = summary.to_string();
    assert!(text.contains("byte_level"), "{text}");
}

#[test]
fn outputs_are_byte_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "mixed.bin", &mixed_text());
    for params in [
        json!({"scheme": "bpe", "vocab_size": 290, "reserved_dead": 7}),
        json!({"scheme": "bytes"}),
    ] {
        let a = tokenize(dir.path(), &input, params.clone(), 1, "d1").unwrap();
        let b = tokenize(dir.path(), &input, params.clone(), 2, "d2").unwrap();
        let c = tokenize(dir.path(), &input, params.clone(), 1, "d3").unwrap();
        assert!(a.raw == b.raw && a.raw == c.raw, "{params}");
    }
    let p = json!({"newlines": "lf", "ascii_only": true});
    let (t1, s1) = text_stage(dir.path(), &input, p.clone(), "t1").unwrap();
    let (t2, s2) = text_stage(dir.path(), &input, p, "t2").unwrap();
    assert_eq!((t1, s1), (t2, s2));
}

#[test]
fn tokenize_errors_name_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "t.txt", b"some text here");
    let missing = dir.path().join("absent.txt");
    let e = tokenize(dir.path(), &missing, json!({"scheme": "bytes"}), 1, "m").unwrap_err();
    assert!(
        e.contains("absent.txt") && e.contains("input `text`"),
        "{e}"
    );
    let empty = write(dir.path(), "empty.txt", b"");
    let e = tokenize(dir.path(), &empty, json!({"scheme": "bpe"}), 1, "e").unwrap_err();
    assert!(e.contains("empty"), "{e}");
    let e = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bpe", "vocab_size": 100}),
        1,
        "s",
    )
    .unwrap_err();
    assert!(
        e.contains("`vocab_size`") && e.contains("at least 256"),
        "{e}"
    );
    let e = tokenize(
        dir.path(),
        &input,
        json!({"scheme": "bytes", "vocab_size": 200}),
        1,
        "v",
    )
    .unwrap_err();
    assert!(e.contains("128") && e.contains("256"), "{e}");
    let e = tokenize(dir.path(), &input, json!({"scheme": "words"}), 1, "w").unwrap_err();
    assert!(e.contains("`scheme`") && e.contains("`bpe`"), "{e}");
    let e = tokenize(dir.path(), &input, json!({}), 1, "r").unwrap_err();
    assert!(e.contains("missing required param `scheme`"), "{e}");
    // The default budget of 6,144 is far more than this text supports.
    let e = tokenize(dir.path(), &input, json!({"scheme": "bpe"}), 1, "d").unwrap_err();
    assert!(e.contains("ran out of pairs"), "{e}");
}

#[test]
fn shakespeare_end_to_end() {
    let path = models_dir().join("shakespeare/shakespeare.txt");
    if !fetched(&path) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (clean, s) = text_stage(
        dir.path(),
        &path,
        json!({"ascii_only": true, "newlines": "lf"}),
        "shk",
    )
    .unwrap();
    let t_text = started.elapsed();
    assert_eq!(s["bytes_in"], 4_850_345);
    assert_eq!(clean.len(), 4_850_345); // all ASCII, LF only
    assert_eq!(s["distinct_bytes"], 83);
    let cleaned = dir.path().join("shk_text.txt");

    let started = std::time::Instant::now();
    let b128 = tokenize(
        dir.path(),
        &cleaned,
        json!({"scheme": "bytes", "vocab_size": 128}),
        1,
        "b128",
    )
    .unwrap();
    let t_bytes = started.elapsed();
    assert_eq!(b128.census["n_dead"], 45);
    assert_eq!(
        b128.dead_ids(),
        [
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 26, 27, 28, 29, 30, 31, 35, 36, 37, 42, 43, 60, 61, 62, 92, 94, 96, 124, 126, 127
        ]
    );
    let b256 = tokenize(dir.path(), &path, json!({"scheme": "bytes"}), 1, "b256").unwrap();
    assert_eq!(b256.census["n_dead"], 173);
    assert_eq!(b256.stream.len(), 4_850_345);

    let started = std::time::Instant::now();
    let bpe = tokenize(
        dir.path(),
        &path,
        json!({"scheme": "bpe", "vocab_size": 6144, "reserved_dead": 2048}),
        1,
        "bpe",
    )
    .unwrap();
    let t_bpe = started.elapsed();
    let c = &bpe.census;
    assert_eq!(c["vocab_size"], 8192);
    assert_eq!(c["n_merges"], 6144 - 256);
    assert_eq!(
        c["n_live"].as_u64().unwrap() + c["n_dead"].as_u64().unwrap(),
        8192
    );
    // Pinned from this implementation (a naive Python BPE with GPT-2's regex agrees on the
    // merges and stream of the first 300 kB): 173 absent bytes + 156 merged tokens that later
    // merges always consume + 2,048 reserved.
    assert_eq!(c["n_tokens"], 1_498_607);
    assert_eq!(
        (c["n_live"].as_u64(), c["n_dead"].as_u64()),
        (Some(5815), Some(2377))
    );
    assert_eq!(c["n_dead_unreserved"], 329);
    assert_eq!(
        (c["words"].as_u64(), c["distinct_words"].as_u64()),
        (Some(1_310_499), Some(35_375))
    );
    let top: Vec<&str> = c["most_frequent"].as_array().unwrap()[..4]
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["\n", ",", ".", " the"]);
    assert_eq!(c["most_frequent"][3]["count"], 23_749);
    assert!(bpe.mask("dead_mask")[6144..].iter().all(|&d| d));
    assert_eq!(decode_stream(&bpe), std::fs::read(&path).unwrap());
    eprintln!(
        "shakespeare: text {t_text:?}, bytes-128 tokenize {t_bytes:?}, bpe 6144+2048 {t_bpe:?}; \
         bpe n_tokens {} n_live {} n_dead {} (unreserved {}) words {} distinct {}; top {}",
        c["n_tokens"],
        c["n_live"],
        c["n_dead"],
        c["n_dead_unreserved"],
        c["words"],
        c["distinct_words"],
        c["most_frequent"]
            .as_array()
            .unwrap()
            .iter()
            .take(5)
            .map(|e| format!("{}:{}", e["text"], e["count"]))
            .collect::<Vec<_>>()
            .join(" ")
    );
}
