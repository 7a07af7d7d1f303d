//! `w.tokens` run through `azimuth_stages::run` on planted vocabularies: a tiny byte-level BPE
//! tokenizer.json (merges that build a Thai char, a CJK char and an Arabic char, a half Thai char
//! that is invalid UTF-8, an added special `<|x|>`, a vocab entry no merge can reach, a hole), a
//! WordPiece tokenizer.json and a `w.extract` vocab JSON. Checks exact decodes, the three script
//! labels, orphans from W's row count, black holes and dead-set joins with planted files, Thai
//! enrichment, reachability counts, CSV escaping, errors, and byte determinism across threads;
//! then the real Qwen3 tokenizer.json and MiniLM tokenizer.json when fetched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use azimuth_stages::{run, StageContext};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

use crate::support::{fetched, models_dir};

struct Outs {
    tokens: String,
    dead: String,
    summary: Value,
    raw: Vec<Vec<u8>>,
}

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(v).unwrap()).unwrap();
    path
}

fn write_st(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// A W file of `rows` × 1 BF16 zeros (only its shape matters to `w.tokens`).
fn write_w(dir: &Path, rows: usize) -> PathBuf {
    let path = dir.join("w.safetensors");
    write_st(
        &path,
        &[("W", Dtype::BF16, vec![rows, 1], vec![0; rows * 2])],
    );
    path
}

fn run_tokens(
    dir: &Path,
    inputs: &[(&str, &Path)],
    params: Value,
    threads: usize,
) -> Result<Outs, String> {
    let out = |n: &str| dir.join(format!("out_{n}_{threads}"));
    let ctx = StageContext {
        instance: "tok".into(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_path_buf()]))
            .collect(),
        outputs: ["tokens", "dead_tokens", "summary"]
            .iter()
            .map(|k| (k.to_string(), out(k)))
            .collect(),
        params: params.as_object().unwrap().clone(),
        device: "cpu".into(),
        threads,
    };
    run("w.tokens", &ctx).map_err(|e| e.0)?;
    let raw: Vec<Vec<u8>> = ["tokens", "dead_tokens", "summary"]
        .iter()
        .map(|k| std::fs::read(out(k)).unwrap())
        .collect();
    Ok(Outs {
        tokens: String::from_utf8(raw[0].clone()).unwrap(),
        dead: String::from_utf8(raw[1].clone()).unwrap(),
        summary: serde_json::from_slice(&raw[2]).unwrap(),
        raw,
    })
}

/// Splits one CSV line of the `tokens` table (text is the only quoted field).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The `tokens` table by id: column name → value.
fn table(csv: &str) -> BTreeMap<usize, BTreeMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<String> = fields(lines.next().unwrap());
    lines
        .map(|l| {
            let f = fields(l);
            assert_eq!(f.len(), header.len(), "{l}");
            let row: BTreeMap<String, String> = header.iter().cloned().zip(f).collect();
            (row["id"].parse().unwrap(), row)
        })
        .collect()
}

/// GPT-2's byte → char table, written out independently of the stage: printable Latin-1 bytes
/// stand for themselves, the others take U+0100… in order.
fn gpt2_char(b: u8) -> char {
    let printable = |x: u8| (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + rank).unwrap()
}

fn bl(s: &[u8]) -> String {
    s.iter().map(|&b| gpt2_char(b)).collect()
}

const QWEN_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The planted byte-level BPE tokenizer: ids 0…255 are the bytes, then merged tokens, an added
/// special `<|x|>` (264), an unmergeable "ab" (265), a hole (266), added `<think>` (267).
fn bpe_tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(bl(&[b]), json!(b));
    }
    let thai = "ก".as_bytes(); // e0 b8 81
    let cjk = "中".as_bytes(); // e4 b8 ad
    let arabic = "م".as_bytes(); // d9 85
    let merged: [(String, String); 8] = [
        (bl(b" "), bl(b"t")),
        (bl(b"h"), bl(b"e")),
        (bl(b" t"), bl(b"he")),
        (bl(&thai[..1]), bl(&thai[1..2])),
        (bl(&thai[..2]), bl(&thai[2..])),
        (bl(&cjk[..1]), bl(&cjk[1..2])),
        (bl(&cjk[..2]), bl(&cjk[2..])),
        (bl(&arabic[..1]), bl(&arabic[1..])),
    ];
    let mut merges = Vec::new();
    for (k, (a, b)) in merged.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), json!(256 + k));
        merges.push(json!(format!("{a} {b}")));
    }
    vocab.insert("ab".into(), json!(265));
    let added = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    json!({
        "version": "1.0",
        "added_tokens": [added(264, "<|x|>", true), added(267, "<think>", false)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated",
             "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
             "use_regex": false}]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                    "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

const ROWS: usize = 270;

/// Planted black holes (BH 1 = {260, 268, 269}, BH 2 = {97, 98}) and dead mask
/// `rule_a` = {259, 260, 262, 264, 268}.
fn planted_sets(dir: &Path) -> (PathBuf, PathBuf) {
    let mut bh = vec![0u8; ROWS];
    for i in [260, 268, 269] {
        bh[i] = 1;
    }
    for i in [97, 98] {
        bh[i] = 2;
    }
    let mask_bh: Vec<u8> = bh.iter().map(|&b| u8::from(b != 0)).collect();
    let bh_path = dir.join("members.safetensors");
    write_st(
        &bh_path,
        &[
            ("black_hole_id", Dtype::U8, vec![ROWS], bh),
            ("black_hole_mask", Dtype::BOOL, vec![ROWS], mask_bh),
        ],
    );
    let mut a = vec![0u8; ROWS];
    for i in [259, 260, 262, 264, 268] {
        a[i] = 1;
    }
    let mut b = a.clone();
    b[263] = 1;
    let masks = dir.join("masks.safetensors");
    write_st(
        &masks,
        &[
            ("rule_a", Dtype::BOOL, vec![ROWS], a),
            ("rule_b", Dtype::BOOL, vec![ROWS], b),
        ],
    );
    (bh_path, masks)
}

fn count_of(list: &Value, label: &str) -> u64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .map_or(0, |c| c["count"].as_u64().unwrap())
}

#[test]
fn byte_level_bpe_decodes_scripts_flags_and_dead_set_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tok = write_json(dir.path(), "tokenizer.json", &bpe_tokenizer());
    let w = write_w(dir.path(), ROWS);
    let (bh, masks) = planted_sets(dir.path());
    let inputs = [
        ("vocab", tok.as_path()),
        ("w", w.as_path()),
        ("black_holes", bh.as_path()),
        ("dead", masks.as_path()),
    ];
    let out = run_tokens(dir.path(), &inputs, json!({}), 1).unwrap();
    let t = table(&out.tokens);
    assert_eq!(t.len(), ROWS);
    let col = |id: usize, c: &str| t[&id][c].clone();
    let row = |id: usize| {
        [
            "text",
            "bytes_hex",
            "valid_utf8",
            "script_name",
            "script",
            "thai_first",
        ]
        .map(|c| col(id, c))
    };
    assert_eq!(row(97), ["a", "61", "true", "LATIN", "Latin", "false"]);
    assert_eq!(
        row(32),
        [" ", "20", "true", "Empty/Whitespace", "other", "false"]
    );
    assert_eq!(
        row(10),
        ["\\u{a}", "0a", "true", "Empty/Whitespace", "other", "false"]
    );
    assert_eq!(row(34), ["\"", "22", "true", "QUOTATION", "other", "false"]);
    assert_eq!(row(92), ["\\\\", "5c", "true", "REVERSE", "other", "false"]);
    assert_eq!(
        row(258),
        [" the", "20746865", "true", "LATIN", "Latin", "false"]
    );
    // Half of 'ก': an invalid UTF-8 fragment, printed as one U+FFFD.
    assert_eq!(
        row(259),
        ["\u{FFFD}", "e0b8", "false", "REPLACEMENT", "other", "false"]
    );
    assert_eq!(row(260), ["ก", "e0b881", "true", "THAI", "Thai", "true"]);
    assert_eq!(row(262), ["中", "e4b8ad", "true", "CJK", "CJK", "false"]);
    assert_eq!(row(263), ["م", "d985", "true", "ARABIC", "Arabic", "false"]);
    assert_eq!(
        row(264),
        [
            "<|x|>",
            "3c7c787c3e",
            "true",
            "VERTICAL",
            "special",
            "false"
        ]
    );
    assert_eq!(col(264, "special"), "true");
    assert_eq!(col(267, "text"), "<think>");
    assert_eq!(col(267, "special"), "false");
    assert_eq!(
        row(266),
        ["", "", "true", "Empty/Whitespace", "empty", "false"]
    );
    assert_eq!(col(266, "orphan"), "false", "a hole is not an orphan");
    for id in [268, 269] {
        assert_eq!(
            row(id),
            ["", "", "true", "Empty/Whitespace", "empty", "false"]
        );
        assert_eq!(col(id, "orphan"), "true");
    }
    assert_eq!(col(268, "black_hole"), "1");
    assert_eq!(col(98, "black_hole"), "2");
    assert_eq!(col(268, "dead"), "true");
    assert_eq!(col(98, "dead"), "false");
    assert_eq!(col(97, "reachable"), "", "reachability off by default");

    // dead_tokens CSV: dead ∪ black holes, by black hole (1, 2, then none), then id.
    let dead_ids: Vec<usize> = out
        .dead
        .lines()
        .skip(1)
        .map(|l| fields(l)[0].parse().unwrap())
        .collect();
    assert_eq!(dead_ids, [260, 268, 269, 97, 98, 259, 262, 264]);

    let s = &out.summary;
    assert_eq!(s["format"], 1);
    assert_eq!(s["rows"], 270);
    assert_eq!(s["vocab"]["file"], "tokenizer.json");
    assert_eq!(s["vocab"]["size"], 268);
    assert_eq!(s["vocab"]["entries"], 267);
    assert_eq!(s["vocab"]["missing"], 1);
    assert_eq!(s["vocab"]["added"], 2);
    assert_eq!(s["vocab"]["special"], 1);
    assert_eq!(s["orphans"]["count"], 2);
    assert_eq!(s["orphans"]["first"], 268);
    assert_eq!(s["orphans"]["black_holes"], json!({"1": 2}));
    // 128 lone high bytes + the two half chars (e0 b8, e4 b8) + lone d9.
    assert_eq!(s["invalid_utf8"], 128 + 2);
    assert_eq!(s["black_holes"], 2);
    assert_eq!(count_of(&s["scripts"]["dominant_name"], "THAI"), 1);
    assert_eq!(count_of(&s["scripts"]["any_range"], "Thai"), 1);
    assert_eq!(count_of(&s["scripts"]["any_range"], "special"), 1);
    assert_eq!(s["scripts"]["thai_first"], 1);
    let d = &s["dead"];
    assert_eq!(d["tokens"], 5);
    assert_eq!(d["orphans"], 1);
    assert_eq!(d["decodable"], 4);
    assert_eq!(d["black_hole_tokens"], 2);
    assert_eq!(d["special"], json!([{"id": 264, "text": "<|x|>"}]));
    assert_eq!(
        d["length_bytes"],
        json!({"tokens": 5, "min": 0, "max": 5, "mean": 2.8, "median": 3.0})
    );
    assert_eq!(count_of(&d["scripts"]["dominant_name"], "REPLACEMENT"), 1);
    assert_eq!(count_of(&d["scripts"]["any_range_s12"], "other"), 2);
    let v1 = &s["thai"][0];
    assert_eq!(v1["vocab_thai"], 1);
    assert_eq!(v1["vocab_decodable"], 267);
    assert_eq!(v1["dead_thai"], 1);
    assert_eq!(v1["dead_decodable"], 4);
    assert_eq!(v1["dead_share_of_all"], 0.2);
    assert_eq!(v1["dead_share_of_decodable"], 0.25);
    assert_eq!(v1["share_of_thai_in_dead"], 1.0);
    assert!((v1["enrichment"].as_f64().unwrap() - 0.25 * 267.0).abs() < 1e-9);
    assert!(s["reachability"].is_null());

    // Another mask of the same file.
    let b = run_tokens(dir.path(), &inputs, json!({"mask": "rule_b"}), 1).unwrap();
    assert_eq!(b.summary["dead"]["tokens"], 6);
    assert_eq!(
        count_of(&b.summary["dead"]["scripts"]["any_range"], "Arabic"),
        1
    );
}

#[test]
fn reachability_counts_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let tok = write_json(dir.path(), "tokenizer.json", &bpe_tokenizer());
    let w = write_w(dir.path(), ROWS);
    let (_, masks) = planted_sets(dir.path());
    let inputs = [
        ("vocab", tok.as_path()),
        ("w", w.as_path()),
        ("dead", masks.as_path()),
    ];
    let out = run_tokens(dir.path(), &inputs, json!({"reachability": true}), 2).unwrap();
    let t = table(&out.tokens);
    let reach = |id: usize| (t[&id]["reachable"].clone(), t[&id]["reencoded_len"].clone());
    let yes = ("true".to_string(), "1".to_string());
    for id in [0, 10, 32, 97, 127, 256, 257, 258, 260, 262, 263, 264, 267] {
        assert_eq!(reach(id), yes, "id {id}");
    }
    // Lone high bytes and half chars decode to U+FFFD, which re-encodes to its 3 bytes.
    for id in [128, 255, 259, 261] {
        assert_eq!(reach(id), ("false".into(), "3".into()), "id {id}");
    }
    assert_eq!(
        reach(265),
        ("false".into(), "2".into()),
        "no merge builds `ab`"
    );
    assert_eq!(reach(268), ("false".into(), "0".into()), "orphan");
    let r = &out.summary["reachability"];
    assert_eq!(r["all"]["reachable"], 128 + 8);
    assert_eq!(r["all"]["unreachable"], 128 + 3);
    assert_eq!(r["all"]["lengths_unreachable"], json!({"2": 1, "3": 130}));
    assert_eq!(r["dead"]["reachable"], 3);
    assert_eq!(r["dead"]["unreachable"], 1);
    assert_eq!(r["dead_orphans"], 1);
    assert_eq!(r["dead_reachable_ids"], json!([260, 262, 264]));
}

#[test]
fn outputs_are_identical_across_runs_and_threads() {
    let dir = tempfile::tempdir().unwrap();
    let tok = write_json(dir.path(), "tokenizer.json", &bpe_tokenizer());
    let w = write_w(dir.path(), ROWS);
    let (bh, masks) = planted_sets(dir.path());
    let inputs = [
        ("vocab", tok.as_path()),
        ("w", w.as_path()),
        ("black_holes", bh.as_path()),
        ("dead", masks.as_path()),
    ];
    let params = json!({"reachability": true});
    let one = run_tokens(dir.path(), &inputs, params.clone(), 1).unwrap();
    let again = run_tokens(dir.path(), &inputs, params.clone(), 1).unwrap();
    let four = run_tokens(dir.path(), &inputs, params, 4).unwrap();
    assert_eq!(one.raw, again.raw);
    assert_eq!(one.raw, four.raw);
}

#[test]
fn without_rows_the_vocabulary_size_is_v_and_there_are_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let tok = write_json(dir.path(), "tokenizer.json", &bpe_tokenizer());
    let out = run_tokens(dir.path(), &[("vocab", tok.as_path())], json!({}), 1).unwrap();
    let s = &out.summary;
    assert_eq!(s["rows"], 268);
    assert_eq!(s["rows_from"], "vocabulary size");
    assert_eq!(s["orphans"]["count"], 0);
    assert!(s["dead"].is_null());
    assert_eq!(out.dead.lines().count(), 1, "header only");
    // Black holes alone give V and stand in for the dead set.
    let (bh, _) = planted_sets(dir.path());
    let out = run_tokens(
        dir.path(),
        &[("vocab", tok.as_path()), ("black_holes", bh.as_path())],
        json!({}),
        1,
    )
    .unwrap();
    assert_eq!(out.summary["rows"], 270);
    assert_eq!(out.summary["dead"]["tokens"], 5);
    assert!(out.summary["dead"]["source"]
        .as_str()
        .unwrap()
        .contains("black-hole"));
}

#[test]
fn wordpiece_single_tokens_decode_like_hf() {
    let dir = tempfile::tempdir().unwrap();
    let special = |id: u32, c: &str| {
        json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let tj = json!({
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]")],
        "normalizer": {"type": "BertNormalizer"},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "hello": 3, "##ing": 4, "ก": 5,
                            ".": 6, "[unused0]": 7, "##": 8, "中": 9}}
    });
    let tok = write_json(dir.path(), "tokenizer.json", &tj);
    let out = run_tokens(dir.path(), &[("vocab", tok.as_path())], json!({}), 1).unwrap();
    let t = table(&out.tokens);
    let text = |id: usize| t[&id]["text"].clone();
    // A lone WordPiece token keeps its `##` (HF strips it only after the first token).
    assert_eq!(text(4), "##ing");
    assert_eq!(text(8), "##");
    assert_eq!(text(3), "hello");
    assert_eq!(text(2), "[CLS]");
    assert_eq!(t[&2]["special"], "true");
    assert_eq!(t[&7]["reserved"], "true");
    assert_eq!(t[&3]["reserved"], "false");
    assert_eq!(t[&5]["script_name"], "THAI");
    assert_eq!(t[&9]["script"], "CJK");
    assert_eq!(out.summary["vocab"]["model"], "WordPiece");
    assert_eq!(out.summary["vocab"]["decoder"], "WordPiece");
    // No BPE merges: reachability cannot be computed, and says so.
    let e = run_tokens(
        dir.path(),
        &[("vocab", tok.as_path())],
        json!({"reachability": true}),
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("reachability") && e.contains("WordPiece"), "{e}");
}

#[test]
fn extract_vocab_json_is_read_and_its_decoder_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let v = json!({"format": 1, "source": "tokenizer.ggml.tokens",
                   "tokens": ["<|endoftext|>", "Ġhello", "à¸", "à¸ģ", null, "Ċ", "ĠĠ"]});
    let vocab = write_json(dir.path(), "vocab.json", &v);
    let w = write_w(dir.path(), 9);
    let inputs = [("vocab", vocab.as_path()), ("w", w.as_path())];
    let out = run_tokens(dir.path(), &inputs, json!({}), 1).unwrap();
    let t = table(&out.tokens);
    let cols = |id: usize| [t[&id]["text"].clone(), t[&id]["bytes_hex"].clone()];
    assert_eq!(cols(0), ["<|endoftext|>", "3c7c656e646f66746578747c3e"]);
    assert_eq!(cols(1), [" hello", "2068656c6c6f"]);
    assert_eq!(cols(2), ["\u{FFFD}", "e0b8"]);
    assert_eq!(cols(3), ["ก", "e0b881"]);
    assert_eq!(cols(4), ["", ""]);
    assert_eq!(cols(5), ["\\u{a}", "0a"]);
    assert_eq!(cols(6), ["  ", "2020"]);
    assert_eq!(t[&0]["script"], "special");
    assert_eq!(
        t[&0]["special"], "false",
        "a w.extract vocab has no special flags"
    );
    assert_eq!(t[&4]["orphan"], "false");
    assert_eq!(t[&7]["orphan"], "true");
    let s = &out.summary;
    assert_eq!(s["vocab"]["file"], "w.extract vocab");
    assert_eq!(s["vocab"]["decoder"], "byte_level (guessed)");
    assert_eq!(s["vocab"]["size"], 7);
    assert_eq!(s["orphans"]["count"], 2);
    // The decoder can be forced.
    let out = run_tokens(dir.path(), &inputs, json!({"decoder": "verbatim"}), 1).unwrap();
    assert_eq!(table(&out.tokens)[&1]["text"], "Ġhello");
    // No merges in a w.extract vocab: reachability is refused with a pointer to tokenizer.json.
    let e = run_tokens(dir.path(), &inputs, json!({"reachability": true}), 1)
        .err()
        .unwrap();
    assert!(e.contains("tokenizer.json"), "{e}");
    // A WordPiece-looking vocab is guessed as such, a plain one as verbatim.
    let wp = write_json(
        dir.path(),
        "wp.json",
        &json!({"format": 1, "source": "tokenizer.json", "tokens": ["[UNK]", "##ab", "é"]}),
    );
    let out = run_tokens(dir.path(), &[("vocab", wp.as_path())], json!({}), 1).unwrap();
    assert_eq!(out.summary["vocab"]["decoder"], "wordpiece (guessed)");
    assert_eq!(
        table(&out.tokens)[&2]["bytes_hex"],
        "c3a9",
        "é is not a byte char here"
    );
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write_json(dir.path(), "junk.json", &json!({"hello": 1}));
    let e = run_tokens(dir.path(), &[("vocab", junk.as_path())], json!({}), 1)
        .err()
        .unwrap();
    assert!(
        e.contains("junk.json") && e.contains("neither a tokenizer.json"),
        "{e}"
    );
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "not json").unwrap();
    let e = run_tokens(dir.path(), &[("vocab", text.as_path())], json!({}), 1)
        .err()
        .unwrap();
    assert!(e.contains("not JSON"), "{e}");
    // W and black holes of different row counts.
    let tok = write_json(dir.path(), "tokenizer.json", &bpe_tokenizer());
    let w = write_w(dir.path(), ROWS + 1);
    let (bh, masks) = planted_sets(dir.path());
    let e = run_tokens(
        dir.path(),
        &[
            ("vocab", tok.as_path()),
            ("w", w.as_path()),
            ("black_holes", bh.as_path()),
        ],
        json!({}),
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("same W"), "{e}");
    // A mask name the file lacks.
    let e = run_tokens(
        dir.path(),
        &[("vocab", tok.as_path()), ("dead", masks.as_path())],
        json!({"mask": "rule_d"}),
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("rule_d") && e.contains("rule_a"), "{e}");
    // W with another tensor name.
    let e = run_tokens(
        dir.path(),
        &[("vocab", tok.as_path()), ("w", w.as_path())],
        json!({"tensor": "emb"}),
        1,
    )
    .err()
    .unwrap();
    assert!(e.contains("`emb`"), "{e}");
}

// ---- real tokenizers (fetched by scripts/fetch-models.sh) --------------------------------

#[test]
fn real_qwen3_tokenizer_when_fetched() {
    let tok = models_dir().join("qwen3-tokenizer/tokenizer.json");
    if !fetched(&tok) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = write_w(dir.path(), 151_936);
    let inputs = [("vocab", tok.as_path()), ("w", w.as_path())];
    let t0 = std::time::Instant::now();
    let out = run_tokens(dir.path(), &inputs, json!({"reachability": true}), 2).unwrap();
    let took = t0.elapsed();
    let s = &out.summary;
    assert_eq!(s["vocab"]["size"], 151_669);
    assert_eq!(s["vocab"]["entries"], 151_669);
    assert_eq!(s["orphans"]["count"], 267);
    assert_eq!(s["orphans"]["first"], 151_669);
    let t = table(&out.tokens);
    assert_eq!(t[&80091]["text"], "２０");
    assert_eq!(t[&151_653]["text"], "<|vision_end|>");
    assert_eq!(t[&151_652]["text"], "<|vision_start|>");
    assert_eq!(t[&151_653]["special"], "true");
    assert_eq!(t[&151_653]["script"], "special");
    // S06: the Outlier 27487 is '��取', bytes efbfbd efbfbd e58f96 — as text; its raw bytes
    // are two invalid fragments and 取.
    assert_eq!(t[&27487]["text"], "\u{FFFD}\u{FFFD}取");
    assert_eq!(t[&141_553]["text"], "บอร์");
    // S12: 2,571 Thai tokens by variant 1 over the 151,669 decodable ids.
    let v1 = &s["thai"][0];
    assert_eq!(v1["vocab_decodable"], 151_669);
    assert_eq!(v1["vocab_thai"], 2_571);
    let r = &s["reachability"]["all"];
    eprintln!(
        "qwen3: {took:?}; v1 THAI {}, v2 Thai {}, v3 Thai {}, invalid UTF-8 {}, reachable {}, \
         unreachable {} {}",
        v1["vocab_thai"],
        s["thai"][1]["vocab_thai"],
        s["thai"][2]["vocab_thai"],
        s["invalid_utf8"],
        r["reachable"],
        r["unreachable"],
        r["lengths_unreachable"]
    );
    // S12: replacement-character tokens re-encode to one other token ([5691]); the ten cluster
    // specials and '$PostalCodesNL' (83971) are reachable.
    for id in [124, 125, 177, 187, 123_806] {
        assert_eq!(t[&id]["text"], "\u{FFFD}", "id {id}");
        assert_eq!(
            (
                t[&id]["reachable"].as_str(),
                t[&id]["reencoded_len"].as_str()
            ),
            ("false", "1")
        );
    }
    for id in [151_646, 151_651, 151_654, 151_656, 151_662, 83_971] {
        assert_eq!(t[&id]["reachable"], "true", "id {id} {}", t[&id]["text"]);
    }
    assert_eq!(t[&83_971]["text"], "$PostalCodesNL");
    // S12: 3,357 of ids 0…151,668 do not survive the round trip.
    assert_eq!(r["unreachable"], 3_357);
    assert_eq!(r["reachable"], 148_312);
}

#[test]
fn real_all_minilm_tokenizer_when_fetched() {
    let tok = models_dir().join("all-minilm-l6-v2/tokenizer.json");
    if !fetched(&tok) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run_tokens(dir.path(), &[("vocab", tok.as_path())], json!({}), 2).unwrap();
    let s = &out.summary;
    assert_eq!(s["vocab"]["size"], 30_522);
    assert_eq!(s["vocab"]["model"], "WordPiece");
    let t = table(&out.tokens);
    assert_eq!(t[&101]["text"], "[CLS]");
    assert_eq!(t[&101]["special"], "true");
    assert_eq!(t[&1]["text"], "[unused0]");
    assert_eq!(t[&1]["reserved"], "true");
    eprintln!(
        "all-minilm: reserved-looking {}, v1 THAI {}, v2 Thai {}, scripts v2 {}",
        s["reserved_looking"],
        s["thai"][0]["vocab_thai"],
        s["thai"][1]["vocab_thai"],
        s["scripts"]["any_range"]
    );
}

/// Runs `stage` with one input file per port and outputs named after their ports in `dir`.
fn run_stage(stage: &str, dir: &Path, inputs: &[(&str, &Path)], outputs: &[&str]) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = outputs
        .iter()
        .map(|o| dir.join(format!("{stage}.{o}")))
        .collect();
    let ctx = StageContext {
        instance: stage.into(),
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_path_buf()]))
            .collect(),
        outputs: outputs
            .iter()
            .zip(&paths)
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        params: serde_json::Map::new(),
        device: "cpu".into(),
        threads: 2,
    };
    run(stage, &ctx).unwrap_or_else(|e| panic!("{stage}: {}", e.0));
    paths
}

#[test]
fn real_smollm2_vocab_with_black_holes_when_fetched() {
    let gguf = models_dir().join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !fetched(&gguf) {
        return;
    }
    // w.extract → w.black_holes → w.tokens, as a pipeline would chain them.
    let dir = tempfile::tempdir().unwrap();
    let x = run_stage(
        "w.extract",
        dir.path(),
        &[("checkpoint", &gguf)],
        &["w", "vocab"],
    );
    let bh = run_stage(
        "w.black_holes",
        dir.path(),
        &[("w", &x[0])],
        &["table", "summary", "members"],
    );
    let inputs = [
        ("vocab", x[1].as_path()),
        ("w", x[0].as_path()),
        ("black_holes", bh[2].as_path()),
    ];
    let out = run_tokens(dir.path(), &inputs, json!({}), 2).unwrap();
    let s = &out.summary;
    assert_eq!(s["rows"], 49_152);
    assert_eq!(s["vocab"]["file"], "w.extract vocab");
    assert_eq!(s["vocab"]["decoder"], "byte_level (guessed)");
    assert_eq!(s["vocab"]["size"], 49_152);
    assert_eq!(s["orphans"]["count"], 0);
    let t = table(&out.tokens);
    assert_eq!(t[&0]["text"], "<|endoftext|>");
    assert_eq!(t[&0]["script"], "special");
    assert_eq!(t[&1]["text"], "<|im_start|>");
    // Ids 200… are GPT-2's single-byte tokens (`Č` = byte 0x0c, form feed).
    assert_eq!(t[&200]["bytes_hex"], "0c");
    assert_eq!(t[&200]["text"], "\\u{c}");
    eprintln!("smollm2 dead_tokens CSV:\n{}", out.dead);
    eprintln!(
        "smollm2: black holes {}, dead (= black-hole tokens) {}, invalid UTF-8 {}, v1 THAI {}, \
         v2 Thai {}, v2 all {}, v2 dead {}, v1 dead {}",
        s["black_holes"],
        s["dead"]["tokens"],
        s["invalid_utf8"],
        s["thai"][0]["vocab_thai"],
        s["thai"][1]["vocab_thai"],
        s["scripts"]["any_range"],
        s["dead"]["scripts"]["any_range"],
        s["dead"]["scripts"]["dominant_name"]
    );
}

#[test]
fn sentencepiece_style_decoders_decode_like_hf() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = json!({"<unk>": 0, "<0xE0>": 1, "▁hello": 2, "▁▁": 3, "ก": 4, "<0x41>": 5});
    let model = json!({"type": "BPE", "vocab": vocab, "merges": []});
    // Llama-2 style: Replace ▁ → space, ByteFallback, Fuse, Strip one leading space.
    let llama = json!({
        "added_tokens": [],
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": model
    });
    let tok = write_json(dir.path(), "llama.json", &llama);
    let out = run_tokens(dir.path(), &[("vocab", tok.as_path())], json!({}), 1).unwrap();
    let t = table(&out.tokens);
    let cols = |id: usize| [t[&id]["text"].clone(), t[&id]["bytes_hex"].clone()];
    assert_eq!(
        cols(1),
        ["\u{FFFD}", "e0"],
        "a fallback byte alone is invalid UTF-8"
    );
    assert_eq!(cols(5), ["A", "41"]);
    assert_eq!(
        cols(2),
        ["hello", "68656c6c6f"],
        "one leading space stripped"
    );
    assert_eq!(cols(3), [" ", "20"]);
    assert_eq!(cols(4), ["ก", "e0b881"]);
    assert_eq!(
        out.summary["vocab"]["decoder"],
        "Sequence[Replace, ByteFallback, Fuse, Strip]"
    );
    // Metaspace: in the (only, hence first) token every ▁ is dropped unless the scheme is never.
    for (scheme, hello) in [("always", "hello"), ("never", " hello")] {
        let ms = json!({
            "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme,
                        "split": true},
            "model": model
        });
        let tok = write_json(dir.path(), "ms.json", &ms);
        let out = run_tokens(dir.path(), &[("vocab", tok.as_path())], json!({}), 1).unwrap();
        assert_eq!(table(&out.tokens)[&2]["text"], hello, "{scheme}");
    }
    // An unknown decoder is a clear error.
    let odd = json!({"decoder": {"type": "CTC"}, "model": model});
    let tok = write_json(dir.path(), "odd.json", &odd);
    let e = run_tokens(dir.path(), &[("vocab", tok.as_path())], json!({}), 1)
        .err()
        .unwrap();
    assert!(e.contains("CTC") && e.contains("odd.json"), "{e}");
}
