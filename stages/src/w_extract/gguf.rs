//! GGUF files (v2 and v3, little-endian): a header reader over a memory map, bounds-checked at
//! every read (no allocation is sized by a length read from the file before that length is
//! checked against the bytes that remain), and W's extraction.
//!
//! Layout read: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count; metadata entries
//! (u64-length key, u32 value type, value; arrays are u32 element type + u64 count + items);
//! tensor infos (name, u32 n_dims, n_dims × u64 dims with `ne0`, the contiguous axis, first, u32
//! ggml type, u64 offset relative to the data section); the data section starts at the next
//! multiple of `general.alignment` (default 32). The same layout as the orchestrator's
//! `src/inspect.rs`, written again here because this crate cannot depend on the root crate.
//!
//! W: with param `tensor` empty, `output.weight`, else `token_embd.weight`. A 2-D GGUF tensor with
//! dims `[ne0, ne1]` is stored as ne1 rows of ne0 contiguous elements, i.e. row-major
//! `[ne1, ne0]`: `token_embd.weight` with dims `[576, 49152]` is W `[49152, 576]`, row i = token
//! id i. F32, F16 and BF16 data are copied bit-exactly; Q8_0 (blocks of an f16 scale `d` and 32
//! int8 `q`, along rows) is dequantized to F32 as `d * q`, which is exact in f32 (11 + 8
//! significant bits), and equals ggml's own dequantization. Other types are refused.
//!
//! Vocabulary: the string array `tokenizer.ggml.tokens` (index = token id).

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::Dtype;

use super::extract::{basename, list_candidates, write_outputs, Vocab, WOut};
use crate::params::Params;
use crate::StageError;

const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 8;
const MAX_NAME_LEN: u64 = 65_535;
const MAX_ARRAY_DEPTH: u32 = 8;
/// Smallest encoded tensor info: 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
const MIN_TENSOR_INFO_LEN: u64 = 24;
/// Smallest encoded metadata entry: 8 (key length) + 4 (type) + 1 (a u8 value).
const MIN_KV_LEN: u64 = 13;

/// ggml type ids this stage extracts.
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_Q8_0: u32 = 8;
const GGML_BF16: u32 = 30;
const SUPPORTED: &str = "F32, F16, BF16 (copied bit-exactly) and Q8_0 (dequantized exactly to F32)";

/// Name of a ggml tensor type, for messages.
pub(crate) fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("unknown({id})"),
    };
    name.to_string()
}

/// One tensor info as read.
#[derive(Debug, Clone)]
pub(crate) struct TensorInfo {
    pub(crate) name: String,
    /// As stored: `ne0` first.
    pub(crate) dims: Vec<u64>,
    pub(crate) ggml_type: u32,
    /// Relative to the data section.
    pub(crate) offset: u64,
}

/// What this stage needs from a GGUF header.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) alignment: u64,
    /// Absolute offset of the data section.
    pub(crate) data_offset: u64,
    pub(crate) tensors: Vec<TensorInfo>,
    /// Position (just after the count) and item count of `tokenizer.ggml.tokens`, if present.
    tokens_at: Option<(usize, u64)>,
}

/// Little-endian reads from a byte slice, each checked against what remains.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {} needs {n} bytes at offset {} but the file has {} bytes",
                what(),
                self.pos,
                self.buf.len()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// A u64-length string of at most `max` bytes (`u64::MAX`: any that fits in the file).
    fn string(&mut self, max: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > max {
            return Err(format!(
                "{} at offset {at} claims {len} bytes, more than the {max} allowed; the file is \
                 corrupt",
                what()
            ));
        }
        self.take(len, what)
    }
}

/// Encoded size of a scalar metadata value type; `None` for string (8) and array (9);
/// `Err` for unknown types.
fn scalar_size(ty: u32) -> Result<Option<u64>, String> {
    Ok(match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        8 | 9 => None,
        _ => return Err(format!("unknown metadata value type {ty}")),
    })
}

/// Reads and checks the header of a GGUF file held in `buf`.
pub(crate) fn read_header(buf: &[u8]) -> Result<Header, String> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.take(4, &|| "the magic".into())?;
    if magic != b"GGUF" {
        return Err(format!(
            "not a gguf file: it starts with \"{}\"",
            magic.escape_ascii()
        ));
    }
    let version = c.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err("gguf version 1 is not supported (only 2 and 3); convert the model again with a current llama.cpp".into()),
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err("this is a big-endian gguf file; only little-endian files are supported".into())
        }
        v => return Err(format!("gguf version {v} is not supported (only 2 and 3)")),
    }
    let tensor_count = c.u64(&|| "the tensor count".into())?;
    let kv_count = c.u64(&|| "the metadata count".into())?;
    let body = c.remaining();
    if tensor_count
        .checked_mul(MIN_TENSOR_INFO_LEN)
        .is_none_or(|m| m > body)
    {
        return Err(format!(
            "tensor count {tensor_count} cannot fit in the {body} bytes that follow the header; \
             the file is truncated or corrupt"
        ));
    }
    if kv_count.checked_mul(MIN_KV_LEN).is_none_or(|m| m > body) {
        return Err(format!(
            "metadata count {kv_count} cannot fit in the {body} bytes that follow the header; \
             the file is truncated or corrupt"
        ));
    }

    let mut alignment = DEFAULT_ALIGNMENT;
    let mut tokens_at = None;
    for index in 0..kv_count {
        let key = c.string(MAX_NAME_LEN, &|| format!("metadata key #{index}"))?;
        let key = String::from_utf8_lossy(key).into_owned();
        let ty = c.u32(&|| format!("the type of metadata `{key}`"))?;
        if key == "general.alignment" {
            let value = match ty {
                0 => u64::from(c.take(1, &|| "general.alignment".into())?[0]),
                2 => u64::from(u16::from_le_bytes(
                    c.take(2, &|| "general.alignment".into())?
                        .try_into()
                        .expect("2"),
                )),
                4 => u64::from(c.u32(&|| "general.alignment".into())?),
                10 => c.u64(&|| "general.alignment".into())?,
                _ => {
                    return Err(format!(
                        "general.alignment has value type {ty}, not an unsigned integer"
                    ))
                }
            };
            if value == 0 || !value.is_power_of_two() {
                return Err(format!("general.alignment is {value}, not a power of two"));
            }
            alignment = value;
            continue;
        }
        if key == "tokenizer.ggml.tokens" && ty == 9 {
            let elem = c.u32(&|| "the element type of tokenizer.ggml.tokens".into())?;
            let count = c.u64(&|| "the count of tokenizer.ggml.tokens".into())?;
            if elem != 8 {
                return Err(format!(
                    "tokenizer.ggml.tokens is an array of value type {elem}, not of strings"
                ));
            }
            tokens_at = Some((c.pos, count));
            skip_array_items(&mut c, elem, count, &key, 1)?;
            continue;
        }
        skip_value(&mut c, ty, &key, 1)?;
    }

    let mut tensors = Vec::new();
    for index in 0..tensor_count {
        let name = c.string(MAX_NAME_LEN, &|| format!("the name of tensor #{index}"))?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| format!("the name of tensor #{index} is not valid utf-8"))?;
        let n_dims = c.u32(&|| format!("n_dims of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions, more than {MAX_DIMS}; the file is corrupt"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for axis in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {axis} of tensor `{name}`"))?);
        }
        let ggml_type = c.u32(&|| format!("the type of tensor `{name}`"))?;
        let offset = c.u64(&|| format!("the data offset of tensor `{name}`"))?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let data_offset = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or("the data section offset overflows")?;
    Ok(Header {
        version,
        alignment,
        data_offset,
        tensors,
        tokens_at,
    })
}

fn skip_value(c: &mut Cursor<'_>, ty: u32, key: &str, depth: u32) -> Result<(), String> {
    match scalar_size(ty).map_err(|e| format!("metadata `{key}`: {e}; the file is corrupt"))? {
        Some(n) => {
            c.take(n, &|| format!("the value of metadata `{key}`"))?;
        }
        None if ty == 8 => {
            c.string(u64::MAX, &|| format!("the string of metadata `{key}`"))?;
        }
        None => {
            if depth > MAX_ARRAY_DEPTH {
                return Err(format!(
                    "metadata `{key}` nests arrays more than {MAX_ARRAY_DEPTH} deep"
                ));
            }
            let elem = c.u32(&|| format!("the element type of metadata `{key}`"))?;
            let count = c.u64(&|| format!("the item count of metadata `{key}`"))?;
            skip_array_items(c, elem, count, key, depth)?;
        }
    }
    Ok(())
}

fn skip_array_items(
    c: &mut Cursor<'_>,
    elem: u32,
    count: u64,
    key: &str,
    depth: u32,
) -> Result<(), String> {
    let min = match scalar_size(elem).map_err(|e| format!("metadata `{key}`: {e}"))? {
        Some(n) => n,
        None if elem == 8 => 8,
        None => 12,
    };
    let Some(total_min) = count.checked_mul(min) else {
        return Err(format!(
            "metadata `{key}` claims {count} items; the file is corrupt"
        ));
    };
    if total_min > c.remaining() {
        return Err(format!(
            "truncated: metadata `{key}` claims {count} items, at least {total_min} bytes, but \
             only {} bytes remain",
            c.remaining()
        ));
    }
    if let Some(n) = scalar_size(elem).expect("checked") {
        c.take(n * count, &|| format!("the items of metadata `{key}`"))?;
        return Ok(());
    }
    for _ in 0..count {
        skip_value(c, elem, key, depth + 1)?;
    }
    Ok(())
}

/// The strings of `tokenizer.ggml.tokens`, if the header has them.
pub(crate) fn read_tokens(buf: &[u8], header: &Header) -> Result<Option<Vec<String>>, String> {
    let Some((pos, count)) = header.tokens_at else {
        return Ok(None);
    };
    let mut c = Cursor { buf, pos };
    // read_header checked that count * 8 bytes remain, so this capacity is bounded by the file.
    let mut out = Vec::with_capacity(count as usize);
    for id in 0..count {
        let s = c.string(u64::MAX, &|| format!("token {id} of tokenizer.ggml.tokens"))?;
        out.push(
            String::from_utf8(s.to_vec())
                .map_err(|_| format!("token {id} of tokenizer.ggml.tokens is not valid utf-8"))?,
        );
    }
    Ok(Some(out))
}

/// W's shape and data range (absolute) for a tensor info, with its type's block layout checked.
fn locate(h: &Header, t: &TensorInfo, file_len: u64) -> Result<([usize; 2], u64, u64), String> {
    if t.dims.len() != 2 {
        return Err(format!(
            "tensor `{}` has dims {:?}, not 2-D; set param `tensor` to a 2-D tensor",
            t.name, t.dims
        ));
    }
    let (ne0, ne1) = (t.dims[0], t.dims[1]);
    let (block_elems, block_bytes) = match t.ggml_type {
        GGML_F32 => (1, 4),
        GGML_F16 | GGML_BF16 => (1, 2),
        GGML_Q8_0 => (32, 34),
        other => {
            return Err(format!(
                "tensor `{}` has ggml type {} (id {other}), which this stage does not extract; \
                 supported: {SUPPORTED}; use a checkpoint whose `{}` has one of those types (or \
                 convert it with llama.cpp, e.g. to Q8_0 or F16)",
                t.name,
                ggml_type_name(other),
                t.name
            ))
        }
    };
    if ne0 % block_elems != 0 {
        return Err(format!(
            "tensor `{}`: row length {ne0} is not a multiple of the {} block size {block_elems}; \
             the file is corrupt",
            t.name,
            ggml_type_name(t.ggml_type)
        ));
    }
    let nbytes = (ne0 / block_elems)
        .checked_mul(block_bytes)
        .and_then(|r| r.checked_mul(ne1))
        .ok_or_else(|| format!("tensor `{}`: size overflows", t.name))?;
    if t.offset % h.alignment != 0 {
        return Err(format!(
            "tensor `{}`: data offset {} is not a multiple of the alignment {}; the file is corrupt",
            t.name, t.offset, h.alignment
        ));
    }
    let start = h
        .data_offset
        .checked_add(t.offset)
        .ok_or_else(|| format!("tensor `{}`: offset overflows", t.name))?;
    let end = start
        .checked_add(nbytes)
        .ok_or_else(|| format!("tensor `{}`: offset overflows", t.name))?;
    if end > file_len {
        return Err(format!(
            "truncated: tensor `{}` needs bytes {start}..{end} but the file has {file_len} bytes",
            t.name
        ));
    }
    let rows = usize::try_from(ne1).map_err(|_| "too many rows".to_string())?;
    let cols = usize::try_from(ne0).map_err(|_| "rows too long".to_string())?;
    Ok(([rows, cols], start, end))
}

/// Dequantizes Q8_0 blocks (f16 `d` + 32 × i8 `q`) to little-endian F32 bytes: `d * q`, exact.
pub(crate) fn dequantize_q8_0(src: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; src.len() / 34 * 32 * 4];
    for (block, dst) in src.chunks_exact(34).zip(out.chunks_exact_mut(128)) {
        let d = half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
        for (q, o) in block[2..].iter().zip(dst.chunks_exact_mut(4)) {
            o.copy_from_slice(&(d * f32::from(*q as i8)).to_le_bytes());
        }
    }
    out
}

pub(crate) fn extract(p: &Params<'_>, path: &Path, want: &str) -> Result<(), StageError> {
    let map = crate::io::map_input(path).map_err(|e| p.error(e))?;
    let buf: &[u8] = &map;
    let bad = |e: String| {
        p.error(format!(
            "`{}` is not a readable gguf file: {e}; re-download or re-convert the checkpoint",
            path.display()
        ))
    };
    let header = read_header(buf).map_err(bad)?;
    let candidates = || {
        list_candidates(
            header
                .tensors
                .iter()
                .filter(|t| t.dims.len() == 2)
                .map(|t| {
                    (
                        t.name.clone(),
                        vec![t.dims[1], t.dims[0]],
                        ggml_type_name(t.ggml_type),
                    )
                })
                .collect(),
        )
    };
    let by_name = |n: &str| header.tensors.iter().find(|t| t.name == n);
    let (info, rule) = if !want.is_empty() {
        match by_name(want) {
            Some(t) => (t, "param `tensor`".to_string()),
            None => {
                return Err(p.error(format!(
                    "`{}` has no tensor `{want}`; set param `tensor` to one of (shapes as W \
                     [rows, cols]): {}",
                    path.display(),
                    candidates()
                )))
            }
        }
    } else if let Some(t) = by_name("output.weight") {
        (t, "auto: output head `output.weight`".to_string())
    } else if let Some(t) = by_name("token_embd.weight") {
        (
            t,
            "auto: input embedding `token_embd.weight` (no `output.weight`: tied)".to_string(),
        )
    } else {
        return Err(p.error(format!(
            "`{}` has neither `output.weight` nor `token_embd.weight`; set param `tensor` to one \
             of (shapes as W [rows, cols]): {}",
            path.display(),
            candidates()
        )));
    };
    let (shape, start, end) = locate(&header, info, buf.len() as u64).map_err(bad)?;
    let raw = &buf[start as usize..end as usize];
    let tokens = read_tokens(buf, &header).map_err(bad)?;

    let name = basename(path);
    let mut meta = BTreeMap::new();
    meta.insert("source_format".into(), "gguf".into());
    meta.insert("source_layout".into(), format!("gguf-v{}", header.version));
    meta.insert(
        "source_files".into(),
        serde_json::to_string(&[&name]).expect("strings encode"),
    );
    meta.insert("source_file".into(), name);
    meta.insert("source_tensor".into(), info.name.clone());
    meta.insert("source_dtype".into(), ggml_type_name(info.ggml_type));
    meta.insert(
        "source_shape".into(),
        format!("[{}, {}] (gguf ne0 first)", info.dims[0], info.dims[1]),
    );
    meta.insert("rule".into(), rule);
    let owned;
    let (dtype, data, conversion) = match info.ggml_type {
        GGML_F32 => (Dtype::F32, raw, "none (bit-exact copy)"),
        GGML_F16 => (Dtype::F16, raw, "none (bit-exact copy)"),
        GGML_BF16 => (Dtype::BF16, raw, "none (bit-exact copy)"),
        GGML_Q8_0 => {
            owned = dequantize_q8_0(raw);
            (
                Dtype::F32,
                &owned[..],
                "Q8_0 dequantized exactly to F32 (f16 scale * int8)",
            )
        }
        _ => unreachable!("locate refuses other types"),
    };
    meta.insert("conversion".into(), conversion.into());
    let vocab = match tokens {
        Some(tokens) => Vocab {
            source: Some("tokenizer.ggml.tokens".into()),
            tokens: tokens.into_iter().map(Some).collect(),
        },
        None => Vocab::default(),
    };
    write_outputs(
        p,
        WOut {
            dtype,
            shape,
            data,
            meta,
        },
        vocab,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_dequantizes_exactly() {
        let mut block = half::f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let out = dequantize_q8_0(&block);
        let vals: Vec<f32> = out
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(vals.len(), 32);
        assert_eq!(vals[0], -8.0);
        assert_eq!(vals[31], 7.5);
    }

    #[test]
    fn header_rejects_garbage_without_panicking() {
        assert!(read_header(b"GGU").is_err());
        assert!(read_header(b"NOPE\x03\0\0\0")
            .unwrap_err()
            .contains("not a gguf"));
        let mut h = b"GGUF".to_vec();
        h.extend(3u32.to_le_bytes());
        h.extend(u64::MAX.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        assert!(read_header(&h).unwrap_err().contains("cannot fit"));
        for cut in 0..h.len() {
            let _ = read_header(&h[..cut]);
        }
    }
}
