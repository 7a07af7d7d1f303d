//! Header-only inspection of cached artifacts, behind `azimuth show`.
//!
//! [`sniff`] tells a file's format from its first few kilobytes; [`read_safetensors`] and
//! [`read_gguf`] read the headers of safetensors and GGUF files (names, dtypes, shapes, data
//! offsets, metadata) without reading any tensor data, and [`render_safetensors`] /
//! [`render_gguf`] turn the result into text for a terminal. HDF5 is inspected elsewhere.
//! Every file is treated as untrusted: it may be truncated, corrupt or hostile. Each length or
//! count taken from a file is checked against the bytes that actually remain before anything is
//! allocated, read or skipped; recursion is bounded; arithmetic is overflow-checked; and every
//! problem becomes an [`InspectError`] that names the file, the byte offset and what is wrong,
//! never a panic. Files are read through a buffered reader rather than a memory map, so a file
//! that shrinks while it is being read yields an error instead of a `SIGBUS`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value as JsonValue;

/// How many leading bytes [`sniff`] looks at.
pub const SNIFF_LEN: usize = 4096;
/// Safetensors JSON headers must be shorter than this, 100 MiB (the reference loader allows 100 MB).
pub const MAX_SAFETENSORS_HEADER_LEN: u64 = 100 * 1024 * 1024;

/// Offset of the JSON header in a safetensors file, after its u64 length.
const SAFETENSORS_HEADER_START: u64 = 8;

const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// Where an HDF5 superblock may start inside the sniffed prefix (0, then after a user block of
/// 512 bytes or a larger power of two).
const HDF5_SIGNATURE_OFFSETS: [usize; 4] = [0, 512, 1024, 2048];
const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
const GGUF_MAX_DIMS: u32 = 8;
/// Longest key or tensor name accepted (the GGUF spec caps keys at 65535 bytes).
const GGUF_MAX_NAME_LEN: u64 = 65_535;
/// Arrays of arrays deeper than this are rejected, so a hostile file cannot exhaust the stack.
const GGUF_MAX_ARRAY_DEPTH: u32 = 8;
/// Smallest possible tensor info: empty name (8), n_dims (4), ggml type (4), offset (8).
const GGUF_MIN_TENSOR_INFO_LEN: u64 = 24;
/// Smallest possible metadata entry: empty key (8), value type (4), one-byte value.
const GGUF_MIN_KV_LEN: u64 = 13;
/// Array items shown in a metadata summary.
const SUMMARY_ITEMS: usize = 8;
/// Characters kept of a string metadata value.
const SUMMARY_STRING_CHARS: usize = 120;
/// Characters kept of each string item inside an array summary.
const SUMMARY_ITEM_CHARS: usize = 40;
/// Characters kept of names and values when rendering tables.
const RENDER_MAX_CHARS: usize = 160;

/// What kind of file an artifact is, judged from its first bytes by [`sniff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Safetensors,
    Gguf,
    Hdf5,
    Png,
    Json,
    Text,
    Binary,
}

impl FileFormat {
    /// Lowercase name, as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Gguf => "gguf",
            Self::Hdf5 => "hdf5",
            Self::Png => "png",
            Self::Json => "json",
            Self::Text => "text",
            Self::Binary => "binary",
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sniffs a file's format from at most its first [`SNIFF_LEN`] bytes.
///
/// In order: the HDF5 signature at offset 0; the GGUF magic; a plausible safetensors header
/// (a little-endian u64 `N` with `2 <= N <= file_len - 8` and `N` below
/// [`MAX_SAFETENSORS_HEADER_LEN`], followed by `{`); the HDF5 signature after a user block (at
/// 512, 1024 or 2048); JSON (valid UTF-8 whose first non-whitespace byte is `{` or `[`); text
/// (valid UTF-8 without NUL bytes); anything else is binary. An empty file is text. A UTF-8
/// sequence cut by the end of the prefix does not make a longer file binary.
///
/// # Errors
///
/// Whatever opening or reading the file fails with.
pub fn sniff(path: &Path) -> io::Result<FileFormat> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut prefix = Vec::with_capacity(SNIFF_LEN);
    (&mut file)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut prefix)?;
    Ok(sniff_bytes(&prefix, file_len))
}

/// The 8-byte PNG signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A PNG image's header (IHDR): what `show` prints for plots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PngInfo {
    pub width: u32,
    pub height: u32,
    pub bit_depth: u8,
    /// PNG colour type name: gray, rgb, indexed, gray+alpha, rgba.
    pub color: &'static str,
}

/// Reads the IHDR chunk that must follow the PNG signature.
pub fn read_png(path: &Path) -> io::Result<PngInfo> {
    let mut head = [0u8; 26];
    File::open(path)?.read_exact(&mut head).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: truncated PNG header", path.display()),
        )
    })?;
    png_info(&head).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: PNG signature without a valid IHDR chunk",
                path.display()
            ),
        )
    })
}

fn png_info(head: &[u8]) -> Option<PngInfo> {
    if !head.starts_with(PNG_SIGNATURE) || head.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |r: std::ops::Range<usize>| u32::from_be_bytes(head.get(r)?.try_into().ok()?).into();
    let width: Option<u32> = be(16..20);
    let height: Option<u32> = be(20..24);
    let color = match *head.get(25)? {
        0 => "gray",
        2 => "rgb",
        3 => "indexed",
        4 => "gray+alpha",
        6 => "rgba",
        _ => return None,
    };
    Some(PngInfo {
        width: width?,
        height: height?,
        bit_depth: *head.get(24)?,
        color,
    })
}

/// [`sniff`] on bytes already read: `prefix` is the start of a file of `file_len` bytes.
pub fn sniff_bytes(prefix: &[u8], file_len: u64) -> FileFormat {
    let prefix = &prefix[..prefix.len().min(SNIFF_LEN)];
    let hdf5_at = |offset: &usize| prefix.get(*offset..*offset + 8) == Some(&HDF5_SIGNATURE[..]);
    if hdf5_at(&0) {
        return FileFormat::Hdf5;
    }
    if prefix.starts_with(GGUF_MAGIC) {
        return FileFormat::Gguf;
    }
    if prefix.starts_with(PNG_SIGNATURE) {
        return FileFormat::Png;
    }
    if looks_like_safetensors(prefix, file_len) {
        return FileFormat::Safetensors;
    }
    if HDF5_SIGNATURE_OFFSETS[1..].iter().any(hdf5_at) {
        return FileFormat::Hdf5;
    }
    let may_be_cut = (prefix.len() as u64) < file_len;
    if !is_utf8_prefix(prefix, may_be_cut) || prefix.contains(&0) {
        return FileFormat::Binary;
    }
    match prefix.iter().find(|b| !b" \t\r\n".contains(b)) {
        Some(b'{' | b'[') => FileFormat::Json,
        _ => FileFormat::Text,
    }
}

fn looks_like_safetensors(prefix: &[u8], file_len: u64) -> bool {
    let Some(len_bytes) = prefix.first_chunk::<8>() else {
        return false;
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    (2..MAX_SAFETENSORS_HEADER_LEN).contains(&header_len)
        && header_len <= file_len.saturating_sub(8)
        && prefix.get(8) == Some(&b'{')
}

/// Whether `bytes` is valid UTF-8, allowing an incomplete sequence at the very end when the
/// bytes are only the start of something longer.
fn is_utf8_prefix(bytes: &[u8], may_be_cut: bool) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(err) => may_be_cut && err.error_len().is_none(),
    }
}

/// Why a file could not be inspected. Messages name the file and, where there is one, the byte
/// offset of the problem.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The operating system refused a read (missing file, permissions, a file that shrank
    /// while it was read).
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Something at `offset` needs `needed` bytes that the file does not have: the file is
    /// truncated, or the length that was read from it is a lie.
    #[error(
        "{}: truncated or corrupt file: {what} at byte {offset} needs {needed} bytes but the file ends at byte {file_len}; re-download or regenerate it",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        needed: u64,
        file_len: u64,
        what: String,
    },
    /// The bytes at `offset` violate the format.
    #[error("{}: malformed at byte {offset}: {what}", path.display())]
    Malformed {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// The file is well-formed but uses a variant this reader does not handle.
    #[error("{}: unsupported at byte {offset}: {what}", path.display())]
    Unsupported {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

impl InspectError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::Truncated { path, .. }
            | Self::Malformed { path, .. }
            | Self::Unsupported { path, .. } => path,
        }
    }

    /// The byte offset of the problem, when it has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Io { .. } => None,
            Self::Truncated { offset, .. }
            | Self::Malformed { offset, .. }
            | Self::Unsupported { offset, .. } => Some(*offset),
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> InspectError {
    InspectError::Io {
        path: path.to_owned(),
        source,
    }
}

fn malformed(path: &Path, offset: u64, what: impl Into<String>) -> InspectError {
    InspectError::Malformed {
        path: path.to_owned(),
        offset,
        what: what.into(),
    }
}

fn empty_file(path: &Path, format: &str) -> InspectError {
    malformed(
        path,
        0,
        format!("the file is empty, so it holds no {format} header; re-download or regenerate it"),
    )
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// The header of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SafetensorsInfo {
    /// Length of the JSON header in bytes (the data section starts at `8 + header_len`).
    pub header_len: u64,
    pub file_len: u64,
    /// The optional `__metadata__` entry.
    pub metadata: BTreeMap<String, String>,
    /// Sorted by data offset.
    pub tensors: Vec<TensorInfo>,
    /// Oddities that do not stop the file from being read: unknown dtypes (whose sizes cannot be
    /// checked) and data bytes no tensor uses.
    pub warnings: Vec<String>,
}

impl SafetensorsInfo {
    /// Absolute file offset of the data section, which `data_offsets` are relative to.
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// `[begin, end)` relative to the start of the data section.
    pub data_offsets: (u64, u64),
    pub nbytes: u64,
}

/// Bytes per element of a safetensors dtype, `None` for dtypes this reader does not know.
fn safetensors_dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads and validates the header of a safetensors file, reading only its first `8 + N` bytes.
///
/// Checks that the header fits in the file, parses as JSON, and describes tensors whose data
/// lies in the data section, matches their shape and dtype, and does not overlap. Unknown dtypes
/// and unused data bytes are reported in [`SafetensorsInfo::warnings`].
///
/// # Errors
///
/// [`InspectError::Io`] when the file cannot be read; [`InspectError::Truncated`] or
/// [`InspectError::Malformed`] when it is not a valid safetensors file.
pub fn read_safetensors(path: &Path) -> Result<SafetensorsInfo, InspectError> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if file_len == 0 {
        return Err(empty_file(path, "safetensors"));
    }
    if file_len < 8 {
        return Err(InspectError::Truncated {
            path: path.to_owned(),
            offset: 0,
            needed: 8,
            file_len,
            what: "the header length".into(),
        });
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| io_error(path, e))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len >= MAX_SAFETENSORS_HEADER_LEN {
        return Err(malformed(
            path,
            0,
            format!(
                "the header length {header_len} is implausibly large (the limit is \
                 {MAX_SAFETENSORS_HEADER_LEN} bytes); the file is corrupt or not safetensors"
            ),
        ));
    }
    if header_len > file_len - SAFETENSORS_HEADER_START {
        return Err(InspectError::Truncated {
            path: path.to_owned(),
            offset: SAFETENSORS_HEADER_START,
            needed: header_len,
            file_len,
            what: "the json header".into(),
        });
    }
    if header_len < 2 {
        return Err(malformed(
            path,
            0,
            format!(
                "the header length {header_len} is too small for a json object; the file is \
                 corrupt or not safetensors"
            ),
        ));
    }
    // Bounded: below MAX_SAFETENSORS_HEADER_LEN and within the file.
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| io_error(path, e))?;
    parse_safetensors_header(path, &header, file_len)
}

/// Validates a safetensors JSON header (the bytes after the length prefix) of a file of
/// `file_len` bytes. Offsets in errors are absolute file offsets.
fn parse_safetensors_header(
    path: &Path,
    header: &[u8],
    file_len: u64,
) -> Result<SafetensorsInfo, InspectError> {
    let header_len = header.len() as u64;
    let layout = DataSection {
        path,
        start: SAFETENSORS_HEADER_START + header_len,
        len: file_len - (SAFETENSORS_HEADER_START + header_len),
        file_len,
    };

    let root: JsonValue = serde_json::from_slice(header).map_err(|err| {
        malformed(
            path,
            SAFETENSORS_HEADER_START + json_error_offset(header, &err) as u64,
            format!("the header is not valid json ({err}); the file is corrupt or not safetensors"),
        )
    })?;
    let JsonValue::Object(entries) = root else {
        let first = header.iter().position(|b| !b.is_ascii_whitespace());
        return Err(malformed(
            path,
            SAFETENSORS_HEADER_START + first.unwrap_or(0) as u64,
            format!(
                "the header must be a json object mapping tensor names to tensors, found {}",
                json_kind(&root)
            ),
        ));
    };
    let key_offsets = top_level_key_offsets(path, header)?;

    let mut metadata = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, entry) in &entries {
        let at = key_offsets
            .get(name)
            .copied()
            .unwrap_or(SAFETENSORS_HEADER_START);
        if name == "__metadata__" {
            metadata = parse_safetensors_metadata(path, at, entry)?;
        } else {
            let tensor = layout.parse_tensor(name, entry, at, &mut warnings)?;
            tensors.push((tensor, at));
        }
    }
    tensors.sort_by(|(a, _), (b, _)| (a.data_offsets, &a.name).cmp(&(b.data_offsets, &b.name)));
    layout.check_coverage(&tensors, &mut warnings)?;

    Ok(SafetensorsInfo {
        header_len,
        file_len,
        metadata,
        tensors: tensors.into_iter().map(|(tensor, _)| tensor).collect(),
        warnings,
    })
}

/// Absolute file offset of each top-level key of a safetensors header. serde_json keeps no
/// positions, so they are found by a scan; the scan also catches duplicate keys, which
/// serde_json would silently merge.
fn top_level_key_offsets(path: &Path, header: &[u8]) -> Result<HashMap<String, u64>, InspectError> {
    let mut offsets = HashMap::new();
    for (start, end) in top_level_key_spans(header) {
        let Ok(key) = serde_json::from_slice::<String>(&header[start..end]) else {
            continue;
        };
        let offset = SAFETENSORS_HEADER_START + start as u64;
        if let Some(first) = offsets.insert(key.clone(), offset) {
            return Err(malformed(
                path,
                offset,
                format!(
                    "duplicate header entry '{}' (first at byte {first}); the file is corrupt",
                    printable(&key)
                ),
            ));
        }
    }
    Ok(offsets)
}

/// The `__metadata__` entry, which must map strings to strings.
fn parse_safetensors_metadata(
    path: &Path,
    at: u64,
    entry: &JsonValue,
) -> Result<BTreeMap<String, String>, InspectError> {
    let JsonValue::Object(map) = entry else {
        return Err(malformed(
            path,
            at,
            format!(
                "__metadata__ must be an object of strings, found {}",
                json_kind(entry)
            ),
        ));
    };
    map.iter()
        .map(|(key, value)| match value {
            JsonValue::String(value) => Ok((key.clone(), value.clone())),
            other => Err(malformed(
                path,
                at,
                format!(
                    "__metadata__ entry '{}' must be a string, found {}",
                    printable(key),
                    json_kind(other)
                ),
            )),
        })
        .collect()
}

/// Where the data section of a safetensors file lies, for checking tensor entries.
struct DataSection<'p> {
    path: &'p Path,
    /// Absolute offset of the data section.
    start: u64,
    len: u64,
    file_len: u64,
}

impl DataSection<'_> {
    /// Validates one tensor entry, found at absolute offset `at` in the header.
    fn parse_tensor(
        &self,
        name: &str,
        entry: &JsonValue,
        at: u64,
        warnings: &mut Vec<String>,
    ) -> Result<TensorInfo, InspectError> {
        let shown = printable(name);
        let bad = |what: String| malformed(self.path, at, format!("tensor '{shown}' {what}"));
        let JsonValue::Object(fields) = entry else {
            return Err(bad(format!(
                "must be an object with dtype, shape and data_offsets, found {}",
                json_kind(entry)
            )));
        };
        let dtype = match fields.get("dtype") {
            Some(JsonValue::String(dtype)) => dtype.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "has a dtype that is {}, not a string",
                    json_kind(other)
                )))
            }
            None => return Err(bad("has no dtype".into())),
        };
        let shape = fields
            .get("shape")
            .and_then(json_u64_array)
            .ok_or_else(|| bad("has no shape that is an array of non-negative integers".into()))?;
        let offsets = fields.get("data_offsets").and_then(json_u64_array);
        let Some(&[begin, end]) = offsets.as_deref() else {
            return Err(bad(
                "has no data_offsets that is an array of two non-negative integers".into(),
            ));
        };
        if begin > end {
            return Err(bad(format!(
                "has data_offsets [{begin}, {end}] that end before they begin"
            )));
        }
        if end > self.len {
            let present = begin.min(self.len);
            return Err(InspectError::Truncated {
                path: self.path.to_owned(),
                offset: self.start + present,
                needed: end - present,
                file_len: self.file_len,
                what: format!(
                    "the data of tensor '{shown}' (data_offsets [{begin}, {end}] in a data \
                     section of {} bytes)",
                    self.len
                ),
            });
        }
        let nbytes = end - begin;
        match safetensors_dtype_size(&dtype) {
            Some(elem_size) => {
                let expected = shape
                    .iter()
                    .try_fold(elem_size, |acc, &dim| acc.checked_mul(dim))
                    .ok_or_else(|| {
                        bad(format!(
                            "has shape {} whose size overflows 64 bits",
                            shape_string(&shape)
                        ))
                    })?;
                if expected != nbytes {
                    return Err(bad(format!(
                        "has data_offsets [{begin}, {end}] ({nbytes} bytes) but shape {} of \
                         {dtype} needs {expected} bytes",
                        shape_string(&shape)
                    )));
                }
            }
            None => warnings.push(format!(
                "tensor '{shown}' has unknown dtype '{}'; its size was not checked",
                printable(&dtype)
            )),
        }
        Ok(TensorInfo {
            name: name.to_owned(),
            dtype,
            shape,
            data_offsets: (begin, end),
            nbytes,
        })
    }

    /// Sweeps `tensors`, sorted by offset and paired with their header offsets: overlapping
    /// tensors are an error, data bytes no tensor uses only a warning.
    fn check_coverage(
        &self,
        tensors: &[(TensorInfo, u64)],
        warnings: &mut Vec<String>,
    ) -> Result<(), InspectError> {
        let mut covered_end = 0u64;
        let mut last_owner: Option<&TensorInfo> = None;
        for (tensor, at) in tensors {
            let (begin, end) = tensor.data_offsets;
            if begin == end {
                continue;
            }
            if let Some(owner) = last_owner.filter(|_| begin < covered_end) {
                return Err(malformed(
                    self.path,
                    *at,
                    format!(
                        "tensor '{}' data [{begin}, {end}) overlaps tensor '{}' data [{}, {})",
                        printable(&tensor.name),
                        printable(&owner.name),
                        owner.data_offsets.0,
                        owner.data_offsets.1
                    ),
                ));
            }
            if begin > covered_end {
                warnings.push(format!(
                    "data bytes [{covered_end}, {begin}) are not used by any tensor"
                ));
            }
            covered_end = end;
            last_owner = Some(tensor);
        }
        if covered_end < self.len {
            warnings.push(format!(
                "data bytes [{covered_end}, {}) after the last tensor are not used by any tensor",
                self.len
            ));
        }
        Ok(())
    }
}

fn json_u64_array(value: &JsonValue) -> Option<Vec<u64>> {
    value.as_array()?.iter().map(JsonValue::as_u64).collect()
}

fn json_kind(value: &JsonValue) -> &'static str {
    match value {
        JsonValue::Null => "null",
        JsonValue::Bool(_) => "a boolean",
        JsonValue::Number(_) => "a number",
        JsonValue::String(_) => "a string",
        JsonValue::Array(_) => "an array",
        JsonValue::Object(_) => "an object",
    }
}

/// Byte offset within `json` of a serde_json error, from its 1-based line and column.
fn json_error_offset(json: &[u8], err: &serde_json::Error) -> usize {
    let line_start = match err.line() {
        0 | 1 => 0,
        line => json
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(json.len(), |(i, _)| i + 1),
    };
    (line_start + err.column().saturating_sub(1)).min(json.len())
}

/// Byte spans (quotes included) of the keys of the top-level object of `json`, which must
/// already have parsed as JSON. Iterative, so no nesting depth can overflow the stack.
fn top_level_key_spans(json: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut depth = 0usize;
    let mut expecting_key = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expecting_key && i < json.len() {
                    spans.push((start, i + 1));
                }
                expecting_key = false;
            }
            b'{' => {
                depth += 1;
                expecting_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expecting_key = true,
            _ => {}
        }
        i += 1;
    }
    spans
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// The header of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufInfo {
    pub version: u32,
    pub file_len: u64,
    /// `general.alignment`, or 32 when absent.
    pub alignment: u64,
    /// Absolute file offset of the tensor data section, which tensor offsets are relative to in
    /// the file (the `offset` of each [`GgufTensor`] here is already absolute).
    pub data_offset: u64,
    /// In file order.
    pub metadata: Vec<GgufKv>,
    /// In file order.
    pub tensors: Vec<GgufTensor>,
    /// Oddities that do not stop the file from being read, such as tensors of unknown type
    /// whose size cannot be checked.
    pub warnings: Vec<String>,
}

/// One metadata entry of a GGUF file, with its value summarized for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufKv {
    pub key: String,
    /// `uint32`, `string`, `array[string]`, ... (GGUF's value type names, lowercase).
    pub value_type: String,
    /// Numbers as written; strings quoted, escaped and cut to 120 characters (then `...` and
    /// the full length); arrays as `N items: [first 8 items, ...]`.
    pub value: String,
}

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufTensor {
    pub name: String,
    /// `F32`, `F16`, `BF16`, `Q8_0`, `Q4_K`, ... or `unknown(N)`.
    pub ggml_type: String,
    /// As stored: `ne0` (the contiguous dimension) first.
    pub shape: Vec<u64>,
    /// Absolute file offset of the tensor's data.
    pub offset: u64,
    /// Size of the data, when the type's block size is known.
    pub nbytes: Option<u64>,
}

/// Name and, when known, `(elements per block, bytes per block)` of a ggml tensor type.
fn ggml_type(id: u32) -> Option<(&'static str, Option<(u64, u64)>)> {
    let (name, block) = match id {
        0 => ("F32", (1, 4)),
        1 => ("F16", (1, 2)),
        2 => ("Q4_0", (32, 18)),
        3 => ("Q4_1", (32, 20)),
        6 => ("Q5_0", (32, 22)),
        7 => ("Q5_1", (32, 24)),
        8 => ("Q8_0", (32, 34)),
        9 => ("Q8_1", (32, 36)),
        10 => ("Q2_K", (256, 84)),
        11 => ("Q3_K", (256, 110)),
        12 => ("Q4_K", (256, 144)),
        13 => ("Q5_K", (256, 176)),
        14 => ("Q6_K", (256, 210)),
        15 => ("Q8_K", (256, 292)),
        16 => ("IQ2_XXS", (256, 66)),
        17 => ("IQ2_XS", (256, 74)),
        18 => ("IQ3_XXS", (256, 98)),
        19 => ("IQ1_S", (256, 50)),
        20 => ("IQ4_NL", (32, 18)),
        21 => ("IQ3_S", (256, 110)),
        22 => ("IQ2_S", (256, 82)),
        23 => ("IQ4_XS", (256, 136)),
        24 => ("I8", (1, 1)),
        25 => ("I16", (1, 2)),
        26 => ("I32", (1, 4)),
        27 => ("I64", (1, 8)),
        28 => ("F64", (1, 8)),
        29 => ("IQ1_M", (256, 56)),
        30 => ("BF16", (1, 2)),
        34 => ("TQ1_0", (256, 54)),
        35 => ("TQ2_0", (256, 66)),
        39 => ("MXFP4", (32, 17)),
        // Named by recent llama.cpp; sizes not relied on here.
        40 => return Some(("NVFP4", None)),
        41 => return Some(("Q1_0", None)),
        _ => return None,
    };
    Some((name, Some(block)))
}

/// A GGUF metadata value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GgufValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl GgufValueType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::U8 => "uint8",
            Self::I8 => "int8",
            Self::U16 => "uint16",
            Self::I16 => "int16",
            Self::U32 => "uint32",
            Self::I32 => "int32",
            Self::F32 => "float32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Array => "array",
            Self::U64 => "uint64",
            Self::I64 => "int64",
            Self::F64 => "float64",
        }
    }

    /// Encoded size of a scalar, `None` for strings and arrays.
    fn fixed_size(self) -> Option<u64> {
        match self {
            Self::U8 | Self::I8 | Self::Bool => Some(1),
            Self::U16 | Self::I16 => Some(2),
            Self::U32 | Self::I32 | Self::F32 => Some(4),
            Self::U64 | Self::I64 | Self::F64 => Some(8),
            Self::String | Self::Array => None,
        }
    }

    /// Fewest bytes one value of this type can take: a string is at least its u64 length, an
    /// array at least its u32 element type and u64 count.
    fn min_size(self) -> u64 {
        match self {
            Self::String => 8,
            Self::Array => 12,
            scalar => scalar.fixed_size().unwrap_or(1),
        }
    }
}

/// A decoded metadata value: its type name, display form and, for unsigned integers, the
/// number itself.
struct MetadataValue {
    type_name: String,
    text: String,
    unsigned: Option<u64>,
}

/// Little-endian reads from an untrusted file, each checked against the bytes that remain.
struct BoundedReader<'p> {
    path: &'p Path,
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl<'p> BoundedReader<'p> {
    fn open(path: &'p Path) -> Result<Self, InspectError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let len = file.metadata().map_err(|e| io_error(path, e))?.len();
        Ok(Self {
            path,
            inner: BufReader::with_capacity(64 * 1024, file),
            pos: 0,
            len,
        })
    }

    fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    fn malformed(&self, offset: u64, what: impl Into<String>) -> InspectError {
        malformed(self.path, offset, what)
    }

    /// Fails unless `needed` more bytes remain; `what` names them and is only built on failure.
    fn ensure(&self, needed: u64, what: impl FnOnce() -> String) -> Result<(), InspectError> {
        if needed <= self.remaining() {
            Ok(())
        } else {
            Err(InspectError::Truncated {
                path: self.path.to_owned(),
                offset: self.pos,
                needed,
                file_len: self.len,
                what: what(),
            })
        }
    }

    fn fixed<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], InspectError> {
        self.ensure(N as u64, what)?;
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| io_error(self.path, e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, InspectError> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, InspectError> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// Reads `n` bytes into a new buffer. Callers cap `n` by a small constant first.
    fn bytes(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<Vec<u8>, InspectError> {
        self.ensure(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| io_error(self.path, e))?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<(), InspectError> {
        self.ensure(n, what)?;
        let offset = i64::try_from(n)
            .map_err(|_| self.malformed(self.pos, "cannot skip more than 2^63 bytes"))?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| io_error(self.path, e))?;
        self.pos += n;
        Ok(())
    }
}

/// Reads the header of a GGUF file (v2 or v3): metadata, summarized, and tensor infos, without
/// reading tensor data. Large metadata (a tokenizer vocabulary) is streamed, not held.
///
/// Checks every length and count against the bytes left in the file, and that each tensor's
/// data is aligned, lies within the file and overlaps no other tensor's.
///
/// # Errors
///
/// [`InspectError::Io`] when the file cannot be read; [`InspectError::Unsupported`] for GGUF
/// version 1 and big-endian files; [`InspectError::Truncated`] or [`InspectError::Malformed`]
/// when it is not a valid GGUF file.
pub fn read_gguf(path: &Path) -> Result<GgufInfo, InspectError> {
    let reader = BoundedReader::open(path)?;
    if reader.len == 0 {
        return Err(empty_file(path, "gguf"));
    }
    GgufParser { r: reader }.parse()
}

struct GgufParser<'p> {
    r: BoundedReader<'p>,
}

/// A tensor info as read, before its data range is resolved.
struct RawTensorInfo {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    relative_offset: u64,
    info_offset: u64,
}

impl GgufParser<'_> {
    fn parse(mut self) -> Result<GgufInfo, InspectError> {
        // Read what there is of the magic first, so a short file that is not GGUF at all is
        // reported as such rather than as truncated.
        let head = self
            .r
            .bytes(self.r.len.min(4), || "the gguf magic".into())?;
        if !GGUF_MAGIC.starts_with(&head) {
            return Err(self.r.malformed(
                0,
                format!(
                    "not a gguf file: it starts with \"{}\" instead of \"GGUF\"",
                    head.escape_ascii()
                ),
            ));
        }
        self.r.ensure(4 - head.len() as u64, || {
            "the rest of the gguf magic".into()
        })?;
        let version = self.r.u32(|| "the gguf version".into())?;
        self.check_version(version)?;

        let tensor_count = self.r.u64(|| "the tensor count".into())?;
        let kv_count = self.r.u64(|| "the metadata entry count".into())?;
        let body = self.r.remaining();
        if tensor_count
            .checked_mul(GGUF_MIN_TENSOR_INFO_LEN)
            .is_none_or(|min| min > body)
        {
            return Err(self.r.malformed(
                8,
                format!(
                    "tensor count {tensor_count} does not fit: each tensor info takes at least \
                     {GGUF_MIN_TENSOR_INFO_LEN} bytes and only {body} bytes follow the header; \
                     the file is truncated or corrupt"
                ),
            ));
        }
        if kv_count
            .checked_mul(GGUF_MIN_KV_LEN)
            .is_none_or(|min| min > body)
        {
            return Err(self.r.malformed(
                16,
                format!(
                    "metadata entry count {kv_count} does not fit: each entry takes at least \
                     {GGUF_MIN_KV_LEN} bytes and only {body} bytes follow the header; the file \
                     is truncated or corrupt"
                ),
            ));
        }

        let (metadata, alignment) = self.read_metadata(kv_count)?;
        let raw_tensors = self.read_tensor_infos(tensor_count)?;
        let infos_end = self.r.pos;
        let data_offset = infos_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| {
                self.r
                    .malformed(infos_end, "the data section offset overflows 64 bits")
            })?;
        let (tensors, warnings) = self.resolve_tensors(raw_tensors, data_offset, alignment)?;
        Ok(GgufInfo {
            version,
            file_len: self.r.len,
            alignment,
            data_offset,
            metadata,
            tensors,
            warnings,
        })
    }

    fn check_version(&self, version: u32) -> Result<(), InspectError> {
        let unsupported = |what: String| InspectError::Unsupported {
            path: self.r.path.to_owned(),
            offset: 4,
            what,
        };
        match version {
            2 | 3 => Ok(()),
            1 => Err(unsupported(
                "gguf version 1 is not supported (it predates 64-bit counts); convert the model \
                 again with a current llama.cpp"
                    .into(),
            )),
            _ if (1..=3).contains(&version.swap_bytes()) => Err(unsupported(format!(
                "this is a big-endian gguf file (version {}); only little-endian files are supported",
                version.swap_bytes()
            ))),
            _ => Err(unsupported(format!(
                "gguf version {version} is not supported (only versions 2 and 3 are); the file is \
                 corrupt or from a newer llama.cpp"
            ))),
        }
    }

    fn read_metadata(&mut self, kv_count: u64) -> Result<(Vec<GgufKv>, u64), InspectError> {
        let mut metadata = Vec::new();
        let mut seen = HashSet::new();
        let mut alignment = GGUF_DEFAULT_ALIGNMENT;
        for index in 0..kv_count {
            let key_offset = self.r.pos;
            let key = self.read_name(&format!("metadata key #{index}"))?;
            if !seen.insert(key.clone()) {
                return Err(self.r.malformed(
                    key_offset,
                    format!(
                        "duplicate metadata key '{}'; the file is corrupt",
                        printable(&key)
                    ),
                ));
            }
            let type_offset = self.r.pos;
            let value_type = self.read_value_type(&key)?;
            let MetadataValue {
                type_name,
                text: value,
                unsigned,
            } = self.read_value(value_type, &key, 1)?;
            if key == "general.alignment" {
                alignment = match unsigned {
                    Some(n) if n.is_power_of_two() => n,
                    _ => {
                        return Err(self.r.malformed(
                            type_offset,
                            format!(
                                "general.alignment must be an unsigned integer power of two, found \
                                 {type_name} {value}"
                            ),
                        ))
                    }
                };
            }
            metadata.push(GgufKv {
                key,
                value_type: type_name,
                value,
            });
        }
        Ok((metadata, alignment))
    }

    /// Reads a key or tensor name: a u64 length (capped) and that many UTF-8 bytes.
    fn read_name(&mut self, what: &str) -> Result<String, InspectError> {
        let start = self.r.pos;
        let len = self.r.u64(|| format!("the length of {what}"))?;
        if len > GGUF_MAX_NAME_LEN {
            return Err(self.r.malformed(
                start,
                format!(
                    "{what} claims to be {len} bytes long, longer than the {GGUF_MAX_NAME_LEN} \
                     allowed; the file is corrupt"
                ),
            ));
        }
        let bytes = self.r.bytes(len, || what.to_owned())?;
        String::from_utf8(bytes).map_err(|err| {
            self.r.malformed(
                start + 8 + err.utf8_error().valid_up_to() as u64,
                format!("{what} is not valid utf-8"),
            )
        })
    }

    fn read_value_type(&mut self, key: &str) -> Result<GgufValueType, InspectError> {
        let offset = self.r.pos;
        let id = self
            .r
            .u32(|| format!("the value type of metadata key '{}'", printable(key)))?;
        GgufValueType::from_id(id).ok_or_else(|| {
            self.r.malformed(
                offset,
                format!(
                    "metadata key '{}' has unknown value type {id}; the file is corrupt or from a \
                     newer gguf version",
                    printable(key)
                ),
            )
        })
    }

    /// Reads one value of type `ty` belonging to metadata key `key`; arrays are read at nesting
    /// `depth` (1 for a top-level value).
    fn read_value(
        &mut self,
        ty: GgufValueType,
        key: &str,
        depth: u32,
    ) -> Result<MetadataValue, InspectError> {
        let what = || {
            format!(
                "the {} value of metadata key '{}'",
                ty.name(),
                printable(key)
            )
        };
        let (text, unsigned) = match ty {
            GgufValueType::U8 => {
                let v = self.r.fixed::<1>(what)?[0];
                (v.to_string(), Some(u64::from(v)))
            }
            GgufValueType::I8 => (i8::from_le_bytes(self.r.fixed(what)?).to_string(), None),
            GgufValueType::U16 => {
                let v = u16::from_le_bytes(self.r.fixed(what)?);
                (v.to_string(), Some(u64::from(v)))
            }
            GgufValueType::I16 => (i16::from_le_bytes(self.r.fixed(what)?).to_string(), None),
            GgufValueType::U32 => {
                let v = u32::from_le_bytes(self.r.fixed(what)?);
                (v.to_string(), Some(u64::from(v)))
            }
            GgufValueType::I32 => (i32::from_le_bytes(self.r.fixed(what)?).to_string(), None),
            GgufValueType::U64 => {
                let v = u64::from_le_bytes(self.r.fixed(what)?);
                (v.to_string(), Some(v))
            }
            GgufValueType::I64 => (i64::from_le_bytes(self.r.fixed(what)?).to_string(), None),
            GgufValueType::F32 => (
                format!("{:?}", f32::from_le_bytes(self.r.fixed(what)?)),
                None,
            ),
            GgufValueType::F64 => (
                format!("{:?}", f64::from_le_bytes(self.r.fixed(what)?)),
                None,
            ),
            GgufValueType::Bool => {
                let byte = self.r.fixed::<1>(what)?[0];
                ((byte != 0).to_string(), None)
            }
            GgufValueType::String => (self.read_string_summary(SUMMARY_STRING_CHARS, key)?, None),
            GgufValueType::Array => {
                let (type_name, summary) = self.read_array(key, depth, true)?;
                return Ok(MetadataValue {
                    type_name,
                    text: summary,
                    unsigned: None,
                });
            }
        };
        Ok(MetadataValue {
            type_name: ty.name().to_owned(),
            text,
            unsigned,
        })
    }

    /// Reads a string value, keeping at most `max_chars` characters of it, quoted and escaped.
    fn read_string_summary(&mut self, max_chars: usize, key: &str) -> Result<String, InspectError> {
        let len = self.r.u64(|| {
            format!(
                "the length of a string in metadata key '{}'",
                printable(key)
            )
        })?;
        let what = || format!("a {len}-byte string in metadata key '{}'", printable(key));
        self.r.ensure(len, what)?;
        // max_chars characters of UTF-8 take at most 4 * max_chars bytes.
        let kept = len.min(4 * max_chars as u64);
        let bytes = self.r.bytes(kept, what)?;
        self.r.skip(len - kept, what)?;
        Ok(quote_summary(&bytes, len, max_chars))
    }

    fn skip_string(&mut self, key: &str) -> Result<(), InspectError> {
        let len = self.r.u64(|| {
            format!(
                "the length of a string in metadata key '{}'",
                printable(key)
            )
        })?;
        self.r.skip(len, || {
            format!("a {len}-byte string in metadata key '{}'", printable(key))
        })
    }

    /// Reads an array (after its value type) and returns its type name and summary. With
    /// `detailed`, the summary lists the first items; nested arrays are summarized briefly, so
    /// summaries stay small however deep the nesting.
    fn read_array(
        &mut self,
        key: &str,
        depth: u32,
        detailed: bool,
    ) -> Result<(String, String), InspectError> {
        let elem_offset = self.r.pos;
        if depth > GGUF_MAX_ARRAY_DEPTH {
            return Err(self.r.malformed(
                elem_offset,
                format!(
                    "metadata key '{}' has arrays nested more than {GGUF_MAX_ARRAY_DEPTH} deep; the \
                     file is corrupt",
                    printable(key)
                ),
            ));
        }
        let elem_id = self.r.u32(|| {
            format!(
                "the element type of an array in metadata key '{}'",
                printable(key)
            )
        })?;
        let elem = GgufValueType::from_id(elem_id).ok_or_else(|| {
            self.r.malformed(
                elem_offset,
                format!(
                    "metadata key '{}' has an array of unknown value type {elem_id}; the file is \
                     corrupt or from a newer gguf version",
                    printable(key)
                ),
            )
        })?;
        let count_offset = self.r.pos;
        let count = self.r.u64(|| {
            format!(
                "the item count of an array in metadata key '{}'",
                printable(key)
            )
        })?;
        // Reject impossible counts up front: every item takes at least min_size bytes.
        let Some(min_bytes) = count.checked_mul(elem.min_size()) else {
            return Err(self.r.malformed(
                count_offset,
                format!(
                    "metadata key '{}' claims an array of {count} {} items, which is impossibly \
                     large; the file is corrupt",
                    printable(key),
                    elem.name()
                ),
            ));
        };
        self.r.ensure(min_bytes, || {
            format!(
                "the array of {count} {} items of metadata key '{}'",
                elem.name(),
                printable(key)
            )
        })?;

        let shown = if detailed {
            count.min(SUMMARY_ITEMS as u64)
        } else {
            0
        };
        let mut items = Vec::with_capacity(shown as usize);
        match elem {
            GgufValueType::String => {
                for index in 0..count {
                    if index < shown {
                        items.push(self.read_string_summary(SUMMARY_ITEM_CHARS, key)?);
                    } else {
                        self.skip_string(key)?;
                    }
                }
            }
            GgufValueType::Array => {
                for index in 0..count {
                    let (_, brief) = self.read_array(key, depth + 1, false)?;
                    if index < shown {
                        items.push(brief);
                    }
                }
            }
            scalar => {
                for _ in 0..shown {
                    items.push(self.read_value(scalar, key, depth)?.text);
                }
                // min_bytes covered all items, so the rest fits.
                let rest = (count - shown) * elem.min_size();
                self.r.skip(rest, || {
                    format!("the array of metadata key '{}'", printable(key))
                })?;
            }
        }

        let type_name = format!("array[{}]", elem.name());
        let summary = if detailed {
            let more = if count > shown { ", ..." } else { "" };
            format!("{count} items: [{}{more}]", items.join(", "))
        } else {
            format!("[{}; {count}]", elem.name())
        };
        Ok((type_name, summary))
    }

    fn read_tensor_infos(&mut self, tensor_count: u64) -> Result<Vec<RawTensorInfo>, InspectError> {
        let mut tensors = Vec::new();
        let mut seen = HashSet::new();
        for index in 0..tensor_count {
            let info_offset = self.r.pos;
            let name = self.read_name(&format!("the name of tensor #{index}"))?;
            if !seen.insert(name.clone()) {
                return Err(self.r.malformed(
                    info_offset,
                    format!(
                        "duplicate tensor name '{}'; the file is corrupt",
                        printable(&name)
                    ),
                ));
            }
            let shown = printable(&name).into_owned();
            let dims_offset = self.r.pos;
            let n_dims = self.r.u32(|| format!("n_dims of tensor '{shown}'"))?;
            if n_dims > GGUF_MAX_DIMS {
                return Err(self.r.malformed(
                    dims_offset,
                    format!(
                        "tensor '{shown}' has n_dims {n_dims}, more than the maximum of \
                         {GGUF_MAX_DIMS}; the file is corrupt"
                    ),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for axis in 0..n_dims {
                dims.push(
                    self.r
                        .u64(|| format!("dimension {axis} of tensor '{shown}'"))?,
                );
            }
            let type_id = self
                .r
                .u32(|| format!("the ggml type of tensor '{shown}'"))?;
            let relative_offset = self
                .r
                .u64(|| format!("the data offset of tensor '{shown}'"))?;
            tensors.push(RawTensorInfo {
                name,
                dims,
                type_id,
                relative_offset,
                info_offset,
            });
        }
        Ok(tensors)
    }

    /// Computes sizes and absolute offsets and checks that every tensor's data lies in the
    /// file, is aligned, and overlaps no other tensor.
    fn resolve_tensors(
        &self,
        raw_tensors: Vec<RawTensorInfo>,
        data_offset: u64,
        alignment: u64,
    ) -> Result<(Vec<GgufTensor>, Vec<String>), InspectError> {
        let file_len = self.r.len;
        let mut warnings = Vec::new();
        let mut tensors = Vec::with_capacity(raw_tensors.len());
        let mut extents = Vec::with_capacity(raw_tensors.len());
        for raw in raw_tensors {
            let shown = printable(&raw.name).into_owned();
            let bad = |what: String| {
                self.r
                    .malformed(raw.info_offset, format!("tensor '{shown}' {what}"))
            };
            let known = ggml_type(raw.type_id);
            let type_name = known.map_or_else(
                || format!("unknown({})", raw.type_id),
                |(name, _)| name.to_owned(),
            );
            let nbytes =
                match known.and_then(|(_, block)| block) {
                    Some((block_elems, block_bytes)) => Some(
                        ggml_nbytes(&raw.dims, block_elems, block_bytes).map_err(|why| {
                            bad(format!(
                                "of type {type_name} and shape {} {why}",
                                shape_string(&raw.dims)
                            ))
                        })?,
                    ),
                    None => {
                        warnings.push(format!(
                        "tensor '{shown}' has {} ggml type {type_name}; its size was not checked",
                        if known.is_some() { "the unsized" } else { "unknown" }
                    ));
                        None
                    }
                };
            if raw.relative_offset % alignment != 0 {
                return Err(bad(format!(
                    "has data offset {} that is not a multiple of the alignment {alignment}",
                    raw.relative_offset
                )));
            }
            let offset = data_offset
                .checked_add(raw.relative_offset)
                .filter(|&offset| offset <= file_len)
                .ok_or_else(|| {
                    bad(format!(
                        "has data offset {} past the end of the file ({file_len} bytes, data \
                         section at byte {data_offset}); the file is truncated or corrupt",
                        raw.relative_offset
                    ))
                })?;
            if let Some(nbytes) = nbytes {
                if nbytes > file_len - offset {
                    return Err(InspectError::Truncated {
                        path: self.r.path.to_owned(),
                        offset,
                        needed: nbytes,
                        file_len,
                        what: format!(
                            "the data of tensor '{shown}' ({type_name}, shape {})",
                            shape_string(&raw.dims)
                        ),
                    });
                }
                if nbytes > 0 {
                    extents.push((offset, offset + nbytes, tensors.len(), raw.info_offset));
                }
            }
            tensors.push(GgufTensor {
                name: raw.name,
                ggml_type: type_name,
                shape: raw.dims,
                offset,
                nbytes,
            });
        }

        extents.sort_unstable();
        for pair in extents.windows(2) {
            let (a_begin, a_end, a_index, _) = pair[0];
            let (b_begin, b_end, b_index, b_info) = pair[1];
            if b_begin < a_end {
                return Err(self.r.malformed(
                    b_info,
                    format!(
                        "tensor '{}' data [{b_begin}, {b_end}) overlaps tensor '{}' data \
                         [{a_begin}, {a_end}); the file is corrupt",
                        printable(&tensors[b_index].name),
                        printable(&tensors[a_index].name)
                    ),
                ));
            }
        }
        Ok((tensors, warnings))
    }
}

/// Bytes taken by a ggml tensor of shape `dims` (ne0 first) stored in blocks of `block_elems`
/// elements and `block_bytes` bytes along ne0; the error says why the shape is impossible.
fn ggml_nbytes(dims: &[u64], block_elems: u64, block_bytes: u64) -> Result<u64, String> {
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % block_elems != 0 {
        return Err(format!(
            "has a first dimension of {ne0}, which is not a multiple of the block size {block_elems}"
        ));
    }
    let overflow = || "has more elements than fit in 63 bits".to_owned();
    let rows = dims
        .iter()
        .skip(1)
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(overflow)?;
    let elements = ne0.checked_mul(rows).ok_or_else(overflow)?;
    if elements > i64::MAX as u64 {
        return Err(overflow());
    }
    (ne0 / block_elems)
        .checked_mul(block_bytes)
        .and_then(|row_bytes| row_bytes.checked_mul(rows))
        .ok_or_else(|| "needs more bytes than fit in 64 bits".to_owned())
}

/// Quotes and escapes the start of a string of `full_len` bytes whose first bytes are `bytes`,
/// keeping at most `max_chars` characters.
fn quote_summary(bytes: &[u8], full_len: u64, max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    let kept: String = chars.by_ref().take(max_chars).collect();
    let cut = chars.next().is_some() || (bytes.len() as u64) < full_len;
    let mut out = String::with_capacity(kept.len() + 24);
    out.push('"');
    for c in kept.chars() {
        // escape_debug, but leave ordinary non-ASCII letters alone.
        if c == '"' || c == '\\' || c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    if cut {
        let _ = write!(out, "... ({full_len} bytes)");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Human-readable size in decimal units: `512 B`, `1.5 kB`, `778.0 MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `[151936, 2560]`.
fn shape_string(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// `s` with control characters escaped, so a hostile name cannot drive the terminal.
fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        let mut escaped = String::with_capacity(s.len() + 16);
        for c in s.chars() {
            if c.is_control() {
                escaped.extend(c.escape_debug());
            } else {
                escaped.push(c);
            }
        }
        Cow::Owned(escaped)
    } else {
        Cow::Borrowed(s)
    }
}

/// [`printable`], cut to [`RENDER_MAX_CHARS`] characters.
fn display_cell(s: &str) -> String {
    let shown = printable(s);
    if shown.chars().count() <= RENDER_MAX_CHARS {
        return shown.into_owned();
    }
    let mut cut: String = shown.chars().take(RENDER_MAX_CHARS).collect();
    let _ = write!(cut, "... ({} bytes)", s.len());
    cut
}

/// Lays out `rows` under `headers`, two spaces between columns; columns flagged in
/// `right_aligned` are right-aligned. Every line is indented by two spaces.
fn table(headers: &[&str], right_aligned: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::from(" ");
        for (column, cell) in row.iter().enumerate() {
            let width = widths[column];
            let pad = width - cell.chars().count();
            line.push(' ');
            if right_aligned.get(column).copied().unwrap_or(false) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
            line.push(' ');
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_warnings(out: &mut String, warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    let _ = writeln!(out, "warnings ({}):", warnings.len());
    for warning in warnings {
        let _ = writeln!(out, "  {}", display_cell(warning));
    }
}

/// Renders a safetensors header for a terminal: sizes, metadata and a tensor table.
pub fn render_safetensors(info: &SafetensorsInfo) -> String {
    let mut out = String::new();
    let data_len = info.file_len.saturating_sub(info.data_start());
    let _ = writeln!(
        out,
        "safetensors, {} ({} bytes)",
        human_size(info.file_len),
        info.file_len
    );
    let _ = writeln!(
        out,
        "header: {} bytes of json; data section: {} ({} bytes) from byte {}",
        info.header_len,
        human_size(data_len),
        data_len,
        info.data_start()
    );
    if info.metadata.is_empty() {
        out.push_str("metadata: none\n");
    } else {
        let _ = writeln!(out, "metadata ({}):", info.metadata.len());
        for (key, value) in &info.metadata {
            let _ = writeln!(out, "  {} = {}", display_cell(key), display_cell(value));
        }
    }
    let total: u64 = info
        .tensors
        .iter()
        .map(|t| t.nbytes)
        .fold(0, u64::saturating_add);
    let _ = writeln!(
        out,
        "tensors ({}, {} total):",
        info.tensors.len(),
        human_size(total)
    );
    let rows: Vec<Vec<String>> = info
        .tensors
        .iter()
        .map(|t| {
            vec![
                display_cell(&t.name),
                display_cell(&t.dtype),
                shape_string(&t.shape),
                human_size(t.nbytes),
                format!("{}..{}", t.data_offsets.0, t.data_offsets.1),
            ]
        })
        .collect();
    out.push_str(&table(
        &["name", "dtype", "shape", "size", "offsets"],
        &[false, false, false, true, false],
        &rows,
    ));
    render_warnings(&mut out, &info.warnings);
    out
}

/// Renders a GGUF header for a terminal: version, alignment, one line per metadata entry
/// (arrays such as `tokenizer.ggml.tokens` as a one-line summary) and a tensor table.
pub fn render_gguf(info: &GgufInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gguf version {}, {} ({} bytes)",
        info.version,
        human_size(info.file_len),
        info.file_len
    );
    let _ = writeln!(
        out,
        "alignment: {}; tensor data from byte {}",
        info.alignment, info.data_offset
    );
    if info.metadata.is_empty() {
        out.push_str("metadata: none\n");
    } else {
        let _ = writeln!(out, "metadata ({}):", info.metadata.len());
        let rows: Vec<Vec<String>> = info
            .metadata
            .iter()
            .map(|kv| {
                vec![
                    display_cell(&kv.key),
                    kv.value_type.clone(),
                    display_cell(&kv.value),
                ]
            })
            .collect();
        out.push_str(&table(&["key", "type", "value"], &[], &rows));
    }
    let total: u64 = info
        .tensors
        .iter()
        .filter_map(|t| t.nbytes)
        .fold(0, u64::saturating_add);
    let _ = writeln!(
        out,
        "tensors ({}, {} total; shapes ne0 first):",
        info.tensors.len(),
        human_size(total)
    );
    let rows: Vec<Vec<String>> = info
        .tensors
        .iter()
        .map(|t| {
            vec![
                display_cell(&t.name),
                t.ggml_type.clone(),
                shape_string(&t.shape),
                t.nbytes.map_or_else(|| "?".to_owned(), human_size),
                t.offset.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["name", "type", "shape", "size", "offset"],
        &[false, false, false, true, true],
        &rows,
    ));
    render_warnings(&mut out, &info.warnings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        io::Write::write_all(&mut file, bytes).expect("write temp file");
        file
    }

    // ---- safetensors fixtures ----

    fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    const SAMPLE_ST_HEADER: &str = r#"{"__metadata__":{"format":"pt","note":"hi"},"w.b":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},"w.a":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}"#;

    fn sample_safetensors() -> Vec<u8> {
        safetensors_bytes(SAMPLE_ST_HEADER, &[7u8; 32])
    }

    fn read_st_bytes(bytes: &[u8]) -> Result<SafetensorsInfo, InspectError> {
        let file = write_temp(bytes);
        read_safetensors(file.path())
    }

    // ---- GGUF fixtures ----

    /// Writes GGUF files by hand, little-endian.
    struct GgufWriter {
        bytes: Vec<u8>,
    }

    impl GgufWriter {
        fn new(version: u32, tensor_count: u64, kv_count: u64) -> Self {
            let mut w = Self {
                bytes: b"GGUF".to_vec(),
            };
            w.u32(version).u64(tensor_count).u64(kv_count);
            w
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.bytes.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.bytes.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn string(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.bytes.extend_from_slice(s.as_bytes());
            self
        }
        fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
            self.string(key).u32(4).u32(v)
        }
        fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
            self.string(key).u32(6);
            self.bytes.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn kv_string(&mut self, key: &str, v: &str) -> &mut Self {
            self.string(key).u32(8).string(v)
        }
        fn kv_string_array(&mut self, key: &str, items: &[&str]) -> &mut Self {
            self.string(key).u32(9).u32(8).u64(items.len() as u64);
            for item in items {
                self.string(item);
            }
            self
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> &mut Self {
            self.string(name).u32(dims.len() as u32);
            for &dim in dims {
                self.u64(dim);
            }
            self.u32(ggml_type).u64(offset)
        }
        fn pad_to(&mut self, alignment: usize) -> &mut Self {
            while self.bytes.len() % alignment != 0 {
                self.bytes.push(0);
            }
            self
        }
        fn data(&mut self, n: usize, byte: u8) -> &mut Self {
            self.bytes.extend(std::iter::repeat_n(byte, n));
            self
        }
    }

    const TOKENS: [&str; 10] = ["<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "i"];

    /// A valid v3 file: four metadata entries and two tensors, F32 [4, 3] (48 bytes) at data
    /// offset 0 and Q8_0 [64, 2] (4 blocks of 34 bytes) at data offset 64; the file ends where
    /// the last tensor's data does.
    fn sample_gguf() -> (Vec<u8>, u64) {
        let mut w = GgufWriter::new(3, 2, 4);
        w.kv_string("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_string_array("tokenizer.ggml.tokens", &TOKENS)
            .kv_f32("llama.rope.freq_base", 10000.0)
            .tensor("token_embd.weight", &[4, 3], 0, 0)
            .tensor("blk.0.attn_q.weight", &[64, 2], 8, 64)
            .pad_to(32);
        let data_offset = w.bytes.len() as u64;
        w.data(48, 1).pad_to(32).data(136, 2);
        (w.bytes, data_offset)
    }

    fn read_gguf_bytes(bytes: &[u8]) -> Result<GgufInfo, InspectError> {
        let file = write_temp(bytes);
        read_gguf(file.path())
    }

    fn kv(key: &str, value_type: &str, value: &str) -> GgufKv {
        GgufKv {
            key: key.into(),
            value_type: value_type.into(),
            value: value.into(),
        }
    }

    /// Asserts that `result` is an error whose message contains `fragment` and names the file.
    fn assert_err<T: fmt::Debug>(case: &str, result: Result<T, InspectError>, fragment: &str) {
        match result {
            Ok(value) => panic!("{case}: expected an error containing {fragment:?}, got {value:?}"),
            Err(err) => {
                let message = err.to_string();
                assert!(
                    message.contains(fragment),
                    "{case}: error {message:?} does not contain {fragment:?}"
                );
                assert!(
                    message.contains(&err.path().display().to_string()),
                    "{case}: error {message:?} does not name the file"
                );
                assert!(
                    !message.ends_with('.'),
                    "{case}: error {message:?} ends with a period"
                );
            }
        }
    }

    // ---- safetensors ----

    #[test]
    fn reads_a_valid_safetensors_header_exactly() {
        let bytes = sample_safetensors();
        let info = read_st_bytes(&bytes).unwrap();
        let expected = SafetensorsInfo {
            header_len: SAMPLE_ST_HEADER.len() as u64,
            file_len: bytes.len() as u64,
            metadata: BTreeMap::from([
                ("format".to_owned(), "pt".to_owned()),
                ("note".to_owned(), "hi".to_owned()),
            ]),
            tensors: vec![
                TensorInfo {
                    name: "w.a".into(),
                    dtype: "BF16".into(),
                    shape: vec![4],
                    data_offsets: (0, 8),
                    nbytes: 8,
                },
                TensorInfo {
                    name: "w.b".into(),
                    dtype: "F32".into(),
                    shape: vec![2, 3],
                    data_offsets: (8, 32),
                    nbytes: 24,
                },
            ],
            warnings: vec![],
        };
        assert_eq!(info, expected);
        assert_eq!(info.data_start(), 8 + SAMPLE_ST_HEADER.len() as u64);
    }

    #[test]
    fn safetensors_unknown_dtype_gaps_and_scalars_are_warnings_not_errors() {
        let header = r#"{"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"x":{"dtype":"F4_E2M1","shape":[7],"data_offsets":[16,20]},"z":{"dtype":"U8","shape":[0],"data_offsets":[20,20]}}   "#;
        let info = read_st_bytes(&safetensors_bytes(header, &[0; 24])).unwrap();
        let names: Vec<&str> = info.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["s", "x", "z"]);
        assert_eq!(info.tensors[1].nbytes, 4);
        assert_eq!(info.warnings.len(), 3, "{:?}", info.warnings);
        assert!(info.warnings[0].contains("unknown dtype 'F4_E2M1'"));
        assert!(info.warnings[1].contains("[8, 16) are not used"));
        assert!(info.warnings[2].contains("[20, 24) after the last tensor"));
    }

    #[test]
    fn broken_safetensors_files_are_clear_errors() {
        let big_len = |n: u64| {
            let mut bytes = n.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            bytes
        };
        let tensor = |dtype: &str, shape: &str, offsets: &str| {
            format!(r#"{{"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty file", vec![], "the file is empty"),
            ("4-byte file", vec![1, 2, 3, 4], "the header length at byte 0 needs 8 bytes but the file ends at byte 4"),
            ("header length 2^63", big_len(1 << 63), "header length 9223372036854775808 is implausibly large"),
            ("header length past the file", big_len(5000), "the json header at byte 8 needs 5000 bytes but the file ends at byte 10"),
            ("header length 1", big_len(1), "too small for a json object"),
            ("header not json", safetensors_bytes("{not json}", &[]), "malformed at byte 9: the header is not valid json"),
            ("header truncated json", safetensors_bytes(r#"{"w":{"dtype""#, &[]), "the header is not valid json"),
            ("header is an array", safetensors_bytes(" [1, 2]", &[]), "malformed at byte 9: the header must be a json object"),
            ("tensor not an object", safetensors_bytes(r#"{"w": 3}"#, &[]), "tensor 'w' must be an object"),
            ("no dtype", safetensors_bytes(r#"{"w":{"shape":[],"data_offsets":[0,0]}}"#, &[]), "tensor 'w' has no dtype"),
            ("negative dim", safetensors_bytes(&tensor("F32", "[-1]", "[0,4]"), &[0; 4]), "has no shape"),
            ("one offset", safetensors_bytes(&tensor("F32", "[1]", "[4]"), &[0; 4]), "has no data_offsets"),
            ("reversed offsets", safetensors_bytes(&tensor("F32", "[1]", "[4,0]"), &[0; 4]), "end before they begin"),
            ("offsets past the data", safetensors_bytes(&tensor("F32", "[100]", "[0,400]"), &[0; 24]), "the data of tensor 'w' (data_offsets [0, 400] in a data section of 24 bytes) at byte"),
            ("size mismatch", safetensors_bytes(&tensor("F32", "[2, 3]", "[0,16]"), &[0; 24]), "has data_offsets [0, 16] (16 bytes) but shape [2, 3] of F32 needs 24 bytes"),
            ("shape overflow", safetensors_bytes(&tensor("F64", "[4294967296, 4294967296]", "[0,8]"), &[0; 8]), "overflows 64 bits"),
            ("bad metadata", safetensors_bytes(r#"{"__metadata__":{"a":1}}"#, &[]), "__metadata__ entry 'a' must be a string"),
            (
                "overlap",
                safetensors_bytes(
                    r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                    &[0; 8],
                ),
                "tensor 'b' data [4, 8) overlaps tensor 'a' data [0, 8)",
            ),
            (
                "duplicate name",
                safetensors_bytes(
                    r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                    &[0; 2],
                ),
                "duplicate header entry 'a' (first at byte 9)",
            ),
        ];
        for (case, bytes, fragment) in cases {
            assert_err(case, read_st_bytes(&bytes), fragment);
        }
    }

    #[test]
    fn safetensors_errors_point_at_the_tensor_entry() {
        let header = "{\"ok\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\n \"bad\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,2]}}";
        let err = read_st_bytes(&safetensors_bytes(header, &[0; 2])).unwrap_err();
        let expected = 8 + header.find("\"bad\"").unwrap() as u64;
        assert_eq!(err.offset(), Some(expected), "{err}");
    }

    #[test]
    fn every_truncated_safetensors_prefix_is_an_error() {
        let bytes = sample_safetensors();
        assert!(read_st_bytes(&bytes).is_ok());
        for len in 0..bytes.len() {
            let result = read_st_bytes(&bytes[..len]);
            assert!(
                result.is_err(),
                "prefix of {len} bytes was accepted: {result:?}"
            );
        }
    }

    #[test]
    fn deeply_nested_safetensors_header_is_an_error_not_a_crash() {
        let header = format!("{{\"w\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_err(
            "deep nesting",
            read_st_bytes(&safetensors_bytes(&header, &[])),
            "not valid json",
        );
    }

    // ---- GGUF ----

    #[test]
    fn reads_a_valid_gguf_header_exactly() {
        let (bytes, data_offset) = sample_gguf();
        let info = read_gguf_bytes(&bytes).unwrap();
        let expected = GgufInfo {
            version: 3,
            file_len: bytes.len() as u64,
            alignment: 32,
            data_offset,
            metadata: vec![
                kv("general.architecture", "string", "\"llama\""),
                kv("llama.block_count", "uint32", "1"),
                kv(
                    "tokenizer.ggml.tokens",
                    "array[string]",
                    r#"10 items: ["<unk>", "a", "b", "c", "d", "e", "f", "g", ...]"#,
                ),
                kv("llama.rope.freq_base", "float32", "10000.0"),
            ],
            tensors: vec![
                GgufTensor {
                    name: "token_embd.weight".into(),
                    ggml_type: "F32".into(),
                    shape: vec![4, 3],
                    offset: data_offset,
                    nbytes: Some(48),
                },
                GgufTensor {
                    name: "blk.0.attn_q.weight".into(),
                    ggml_type: "Q8_0".into(),
                    shape: vec![64, 2],
                    offset: data_offset + 64,
                    nbytes: Some(136),
                },
            ],
            warnings: vec![],
        };
        assert_eq!(info, expected);
        assert_eq!(data_offset % 32, 0);
        assert_eq!(data_offset + 64 + 136, bytes.len() as u64);
    }

    #[test]
    fn gguf_custom_alignment_v2_scalars_and_nested_arrays() {
        let mut w = GgufWriter::new(2, 1, 6);
        w.string("general.alignment").u32(4).u32(64);
        w.string("flag").u32(7).bytes.push(1);
        w.string("neg").u32(11).u64((-5i64) as u64);
        w.string("nested").u32(9).u32(9).u64(2);
        w.u32(4).u64(3).u32(1).u32(2).u32(3);
        w.u32(8).u64(1).string("x");
        w.string("ints").u32(9).u32(5).u64(10);
        for i in 0..10 {
            w.u32(i);
        }
        let long = "é".repeat(200);
        w.kv_string("long", &long);
        w.tensor("t", &[256], 12, 0).pad_to(64);
        let data_offset = w.bytes.len() as u64;
        w.data(144, 3);
        let info = read_gguf_bytes(&w.bytes).unwrap();
        assert_eq!(info.version, 2);
        assert_eq!(info.alignment, 64);
        assert_eq!(info.data_offset, data_offset);
        assert_eq!(data_offset % 64, 0);
        let values: Vec<(&str, &str)> = info
            .metadata
            .iter()
            .map(|kv| (kv.value_type.as_str(), kv.value.as_str()))
            .collect();
        let long_summary = format!("\"{}\"... (400 bytes)", "é".repeat(120));
        assert_eq!(
            values,
            [
                ("uint32", "64"),
                ("bool", "true"),
                ("int64", "-5"),
                ("array[array]", "2 items: [[uint32; 3], [string; 1]]"),
                ("array[int32]", "10 items: [0, 1, 2, 3, 4, 5, 6, 7, ...]"),
                ("string", long_summary.as_str()),
            ]
        );
        assert_eq!(
            info.tensors,
            [GgufTensor {
                name: "t".into(),
                ggml_type: "Q4_K".into(),
                shape: vec![256],
                offset: data_offset,
                nbytes: Some(144),
            }]
        );
    }

    #[test]
    fn gguf_unknown_tensor_type_is_a_warning() {
        let mut w = GgufWriter::new(3, 1, 0);
        w.tensor("t", &[4], 99, 0).pad_to(32).data(4, 0);
        let info = read_gguf_bytes(&w.bytes).unwrap();
        assert_eq!(info.tensors[0].ggml_type, "unknown(99)");
        assert_eq!(info.tensors[0].nbytes, None);
        assert_eq!(info.warnings.len(), 1);
        assert!(info.warnings[0].contains("unknown ggml type unknown(99)"));
    }

    #[test]
    fn gguf_with_no_tensors_may_end_after_its_metadata() {
        let mut w = GgufWriter::new(3, 0, 1);
        w.kv_u32("a", 1);
        let info = read_gguf_bytes(&w.bytes).unwrap();
        assert!(info.tensors.is_empty());
        assert_eq!(info.metadata, [kv("a", "uint32", "1")]);
    }

    #[test]
    fn broken_gguf_files_are_clear_errors() {
        let header = |version: u32, tensors: u64, kvs: u64| GgufWriter::new(version, tensors, kvs);
        let with = |mut w: GgufWriter, f: &dyn Fn(&mut GgufWriter)| {
            f(&mut w);
            w.bytes
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty file", vec![], "the file is empty"),
            ("4-byte file", b"GGUF".to_vec(), "the gguf version at byte 4 needs 4 bytes but the file ends at byte 4"),
            ("short bad magic", b"PK".to_vec(), "not a gguf file: it starts with \"PK\""),
            ("short magic", b"GG".to_vec(), "the rest of the gguf magic at byte 2 needs 2 bytes but the file ends at byte 2"),
            ("bad magic", b"PK\x03\x04\0\0\0\0".to_vec(), "malformed at byte 0: not a gguf file: it starts with \"PK\\x03\\x04\""),
            ("version 1", header(1, 0, 0).bytes, "unsupported at byte 4: gguf version 1 is not supported"),
            ("version 7", header(7, 0, 0).bytes, "gguf version 7 is not supported"),
            ("big-endian", header(3u32.swap_bytes(), 0, 0).bytes, "big-endian gguf file"),
            ("header cut", b"GGUF\x03\0\0\0\x01\0".to_vec(), "the tensor count at byte 8 needs 8 bytes"),
            ("tensor count 2^60", header(3, 1 << 60, 0).bytes, "malformed at byte 8: tensor count 1152921504606846976 does not fit"),
            ("kv count 2^60", header(3, 0, 1 << 60).bytes, "malformed at byte 16: metadata entry count 1152921504606846976 does not fit"),
            (
                "key length 2^62",
                with(header(3, 0, 1), &|w| {
                    w.u64(1 << 62).data(20, b'a');
                }),
                "malformed at byte 24: metadata key #0 claims to be 4611686018427387904 bytes long",
            ),
            (
                "string value length 2^62",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(8).u64(1 << 62).data(20, b'a');
                }),
                "a 4611686018427387904-byte string in metadata key 'k' at byte 45 needs 4611686018427387904 bytes but the file ends at byte 65",
            ),
            (
                "array count overflows",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(9).u32(4).u64(1 << 62);
                }),
                "claims an array of 4611686018427387904 uint32 items, which is impossibly large",
            ),
            (
                "array count past the file",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(9).u32(8).u64(1 << 40).data(64, 0);
                }),
                "the array of 1099511627776 string items of metadata key 'k' at byte 49 needs 8796093022208 bytes",
            ),
            (
                "string array item too long",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(9).u32(8).u64(2).string("ok").u64(1000).data(16, 0);
                }),
                "a 1000-byte string in metadata key 'k'",
            ),
            (
                "unknown value type",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(13).u32(0);
                }),
                "malformed at byte 33: metadata key 'k' has unknown value type 13",
            ),
            (
                "unknown array type",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(9).u32(77).u64(0);
                }),
                "has an array of unknown value type 77",
            ),
            (
                "arrays nested too deep",
                with(header(3, 0, 1), &|w| {
                    w.string("k").u32(9);
                    for _ in 0..20 {
                        w.u32(9).u64(1);
                    }
                    w.u32(4).u64(0);
                }),
                "nested more than 8 deep",
            ),
            (
                "duplicate key",
                with(header(3, 0, 2), &|w| {
                    w.kv_u32("k", 1).kv_u32("k", 2);
                }),
                "duplicate metadata key 'k'",
            ),
            (
                "key not utf-8",
                with(header(3, 0, 1), &|w| {
                    w.u64(2).bytes.extend_from_slice(&[0xff, 0xfe]);
                    w.u32(4).u32(0);
                }),
                "malformed at byte 32: metadata key #0 is not valid utf-8",
            ),
            (
                "alignment zero",
                with(header(3, 0, 1), &|w| {
                    w.kv_u32("general.alignment", 0);
                }),
                "general.alignment must be an unsigned integer power of two, found uint32 0",
            ),
            (
                "alignment not a power of two",
                with(header(3, 0, 1), &|w| {
                    w.kv_u32("general.alignment", 48);
                }),
                "power of two",
            ),
            (
                "alignment as a string",
                with(header(3, 0, 1), &|w| {
                    w.kv_string("general.alignment", "32");
                }),
                "found string \"32\"",
            ),
            (
                "n_dims 100",
                with(header(3, 1, 0), &|w| {
                    w.string("t").u32(100).data(800, 0);
                }),
                "malformed at byte 33: tensor 't' has n_dims 100, more than the maximum of 8",
            ),
            (
                "tensor name length 2^62",
                with(header(3, 1, 0), &|w| {
                    w.u64(1 << 62).data(30, 0);
                }),
                "the name of tensor #0 claims to be 4611686018427387904 bytes long",
            ),
            (
                "duplicate tensor",
                with(header(3, 2, 0), &|w| {
                    w.tensor("t", &[1], 0, 0).tensor("t", &[1], 0, 32).pad_to(32).data(64, 0);
                }),
                "duplicate tensor name 't'",
            ),
            (
                "misaligned tensor",
                with(header(3, 1, 0), &|w| {
                    w.tensor("t", &[1], 0, 4).pad_to(32).data(8, 0);
                }),
                "malformed at byte 24: tensor 't' has data offset 4 that is not a multiple of the alignment 32",
            ),
            (
                "tensor data past the end",
                with(header(3, 1, 0), &|w| {
                    w.tensor("t", &[1000], 0, 0).pad_to(32).data(100, 0);
                }),
                "the data of tensor 't' (F32, shape [1000]) at byte 64 needs 4000 bytes but the file ends at byte 164",
            ),
            (
                "tensor offset past the end",
                with(header(3, 1, 0), &|w| {
                    w.tensor("t", &[1], 99, 1 << 40).pad_to(32);
                }),
                "has data offset 1099511627776 past the end of the file",
            ),
            (
                "tensor offset overflows",
                with(header(3, 1, 0), &|w| {
                    w.tensor("t", &[1], 0, u64::MAX - 31).pad_to(32);
                }),
                "past the end of the file",
            ),
            (
                "row not a whole number of blocks",
                with(header(3, 1, 0), &|w| {
                    w.tensor("t", &[33, 2], 8, 0).pad_to(32).data(200, 0);
                }),
                "tensor 't' of type Q8_0 and shape [33, 2] has a first dimension of 33, which is not a multiple of the block size 32",
            ),
            (
                "element count overflow",
                with(header(3, 1, 0), &|w| {
                    w.tensor("t", &[1 << 40, 1 << 40], 0, 0).pad_to(32);
                }),
                "has more elements than fit in 63 bits",
            ),
            (
                "overlapping tensors",
                with(header(3, 2, 0), &|w| {
                    w.tensor("a", &[16], 0, 0).tensor("b", &[8], 0, 32).pad_to(32).data(64, 0);
                }),
                "tensor 'b' data [128, 160) overlaps tensor 'a' data [96, 160)",
            ),
        ];
        for (case, bytes, fragment) in cases {
            assert_err(case, read_gguf_bytes(&bytes), fragment);
        }
    }

    #[test]
    fn every_truncated_gguf_prefix_is_an_error() {
        let (bytes, _) = sample_gguf();
        assert!(read_gguf_bytes(&bytes).is_ok());
        for len in 0..bytes.len() {
            let result = read_gguf_bytes(&bytes[..len]);
            assert!(
                result.is_err(),
                "prefix of {len} bytes was accepted: {result:?}"
            );
        }
    }

    #[test]
    fn huge_declared_lengths_fail_fast_without_allocating() {
        // A 2^62-byte string, a 2^40-item array and a 3 GiB string, each in a tiny file: if any
        // of them were allocated or read, this would abort or take far longer than a second.
        let mut string = GgufWriter::new(3, 0, 1);
        string.string("k").u32(8).u64(1 << 62);
        let mut array = GgufWriter::new(3, 0, 1);
        array.string("k").u32(9).u32(8).u64(1 << 40);
        let mut gib = GgufWriter::new(3, 0, 1);
        gib.string("k").u32(8).u64(3 << 30).data(100, b'x');
        let started = Instant::now();
        for bytes in [string.bytes, array.bytes, gib.bytes] {
            assert_err(
                "huge length",
                read_gguf_bytes(&bytes),
                "truncated or corrupt file",
            );
        }
        let mut st = (1u64 << 62).to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_err("huge header", read_st_bytes(&st), "implausibly large");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn large_vocabulary_is_streamed_and_summarized() {
        let tokens: Vec<String> = (0..50_000).map(|i| format!("token{i}")).collect();
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut w = GgufWriter::new(3, 0, 1);
        w.kv_string_array("tokenizer.ggml.tokens", &refs);
        let info = read_gguf_bytes(&w.bytes).unwrap();
        assert_eq!(
            info.metadata[0].value,
            r#"50000 items: ["token0", "token1", "token2", "token3", "token4", "token5", "token6", "token7", ...]"#
        );
    }

    #[test]
    fn read_errors_name_the_missing_file() {
        let path = Path::new("/nonexistent/azimuth-inspect/x.gguf");
        assert_err(
            "missing gguf",
            read_gguf(path),
            "cannot read /nonexistent/azimuth-inspect/x.gguf",
        );
        assert_err("missing safetensors", read_safetensors(path), "cannot read");
        assert!(sniff(path).is_err());
    }

    #[test]
    fn ggml_type_table_matches_llama_cpp_for_common_types() {
        let expect = [
            (0, "F32", 1, 4),
            (1, "F16", 1, 2),
            (2, "Q4_0", 32, 18),
            (3, "Q4_1", 32, 20),
            (6, "Q5_0", 32, 22),
            (7, "Q5_1", 32, 24),
            (8, "Q8_0", 32, 34),
            (9, "Q8_1", 32, 36),
            (10, "Q2_K", 256, 84),
            (11, "Q3_K", 256, 110),
            (12, "Q4_K", 256, 144),
            (13, "Q5_K", 256, 176),
            (14, "Q6_K", 256, 210),
            (15, "Q8_K", 256, 292),
            (24, "I8", 1, 1),
            (25, "I16", 1, 2),
            (26, "I32", 1, 4),
            (27, "I64", 1, 8),
            (28, "F64", 1, 8),
            (30, "BF16", 1, 2),
        ];
        for (id, name, block_elems, block_bytes) in expect {
            assert_eq!(
                ggml_type(id),
                Some((name, Some((block_elems, block_bytes)))),
                "type {id}"
            );
        }
        assert_eq!(ggml_type(4), None);
        assert_eq!(ggml_nbytes(&[4096, 32000], 256, 144), Ok(16 * 144 * 32000));
        assert_eq!(ggml_nbytes(&[], 1, 4), Ok(4));
    }

    // ---- sniffing ----

    #[test]
    fn sniffs_each_format() {
        let (gguf, _) = sample_gguf();
        let mut hdf5_userblock = vec![0u8; 512];
        hdf5_userblock.extend_from_slice(HDF5_SIGNATURE);
        hdf5_userblock.extend_from_slice(&[0; 100]);
        let mut hdf5_late = vec![b'x'; 2048];
        hdf5_late.extend_from_slice(HDF5_SIGNATURE);
        let mut long_text = vec![b'a'; SNIFF_LEN - 1];
        long_text.extend_from_slice("€ and more".as_bytes()); // '€' straddles the 4 KiB boundary
        let mut lying_safetensors = 500u64.to_le_bytes().to_vec();
        lying_safetensors.extend_from_slice(b"{}");
        let cases: Vec<(&str, Vec<u8>, FileFormat)> = vec![
            ("safetensors", sample_safetensors(), FileFormat::Safetensors),
            ("gguf", gguf, FileFormat::Gguf),
            (
                "png",
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
                FileFormat::Png,
            ),
            (
                "hdf5",
                [&HDF5_SIGNATURE[..], &[0; 40]].concat(),
                FileFormat::Hdf5,
            ),
            ("hdf5 after a user block", hdf5_userblock, FileFormat::Hdf5),
            ("hdf5 at 2048", hdf5_late, FileFormat::Hdf5),
            ("json object", b" \n\t{\"a\": 1}".to_vec(), FileFormat::Json),
            ("json array", b"[1, 2]".to_vec(), FileFormat::Json),
            (
                "text",
                "hello, wörld\n".as_bytes().to_vec(),
                FileFormat::Text,
            ),
            ("utf-8 cut by the sniff window", long_text, FileFormat::Text),
            ("empty", vec![], FileFormat::Text),
            ("nul byte", b"abc\0def".to_vec(), FileFormat::Binary),
            ("invalid utf-8", vec![b'a', 0xff, b'b'], FileFormat::Binary),
            (
                "utf-8 cut at the real end",
                vec![b'a', 0xe2, 0x82],
                FileFormat::Binary,
            ),
            (
                "header length past the file",
                lying_safetensors,
                FileFormat::Binary,
            ),
            ("short", vec![0x89, b'H'], FileFormat::Binary),
        ];
        for (case, bytes, expected) in cases {
            let file = write_temp(&bytes);
            assert_eq!(sniff(file.path()).unwrap(), expected, "{case}");
        }
    }

    #[test]
    fn sniff_reads_at_most_the_first_4_kib() {
        // The HDF5 signature past the window and a NUL after it must not count.
        let mut bytes = vec![b'a'; SNIFF_LEN];
        bytes.push(0);
        bytes.extend_from_slice(HDF5_SIGNATURE);
        let file = write_temp(&bytes);
        assert_eq!(sniff(file.path()).unwrap(), FileFormat::Text);
        assert_eq!(FileFormat::Safetensors.to_string(), "safetensors");
    }

    // ---- rendering ----

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1000), "1.0 kB");
        assert_eq!(human_size(1536), "1.5 kB");
        assert_eq!(human_size(778_000_000), "778.0 MB");
        assert_eq!(human_size(151_936 * 2560 * 2), "777.9 MB");
        assert_eq!(human_size(999_999_999), "1.0 GB");
        assert_eq!(human_size(u64::MAX), "18.4 EB");
    }

    #[test]
    fn renders_safetensors() {
        let info = read_st_bytes(&sample_safetensors()).unwrap();
        let text = render_safetensors(&info);
        assert!(
            text.contains(&format!("header: {} bytes of json", SAMPLE_ST_HEADER.len())),
            "{text}"
        );
        assert!(text.contains("  format = pt\n"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let table_start = lines
            .iter()
            .position(|l| l.starts_with("tensors (2, 32 B total)"))
            .unwrap();
        assert_eq!(
            lines[table_start + 1],
            "  name  dtype  shape   size  offsets"
        );
        assert_eq!(lines[table_start + 2], "  w.a   BF16   [4]      8 B  0..8");
        assert_eq!(lines[table_start + 3], "  w.b   F32    [2, 3]  24 B  8..32");
        assert!(!text.contains("warnings"));
    }

    #[test]
    fn renders_gguf() {
        let (bytes, data_offset) = sample_gguf();
        let text = render_gguf(&read_gguf_bytes(&bytes).unwrap());
        assert!(text.starts_with("gguf version 3, "), "{text}");
        assert!(
            text.contains(&format!(
                "alignment: 32; tensor data from byte {data_offset}"
            )),
            "{text}"
        );
        assert!(
            text.contains(r#"tokenizer.ggml.tokens  array[string]  10 items: ["<unk>", "a""#),
            "{text}"
        );
        assert!(
            text.contains("token_embd.weight    F32   [4, 3]    48 B"),
            "{text}"
        );
        assert!(
            text.contains("blk.0.attn_q.weight  Q8_0  [64, 2]  136 B"),
            "{text}"
        );
    }

    #[test]
    fn rendering_escapes_hostile_names() {
        let header =
            "{\"evil\\u001b[31m\\n\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
        let info = read_st_bytes(&safetensors_bytes(header, &[0])).unwrap();
        assert_eq!(info.tensors[0].name, "evil\u{1b}[31m\n");
        let text = render_safetensors(&info);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("evil\\u{1b}[31m\\n"), "{text:?}");
    }

    #[test]
    fn infos_serialize_to_json() {
        let info = read_st_bytes(&sample_safetensors()).unwrap();
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json["tensors"][0]["data_offsets"],
            serde_json::json!([0, 8])
        );
        let (bytes, _) = sample_gguf();
        let json = serde_json::to_value(read_gguf_bytes(&bytes).unwrap()).unwrap();
        assert_eq!(json["tensors"][1]["ggml_type"], "Q8_0");
        assert_eq!(serde_json::to_value(FileFormat::Hdf5).unwrap(), "hdf5");
    }

    // ---- fuzzing ----

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Whatever a reader accepted must describe data inside the file.
        fn check_gguf(bytes: &[u8]) {
            if let Ok(info) = read_gguf_bytes(bytes) {
                for tensor in &info.tensors {
                    let end = tensor.offset + tensor.nbytes.unwrap_or(0);
                    assert!(end <= bytes.len() as u64, "{tensor:?} past the end");
                }
            }
        }

        fn check_safetensors(bytes: &[u8]) {
            if let Ok(info) = read_st_bytes(bytes) {
                for tensor in &info.tensors {
                    assert!(info.data_start() + tensor.data_offsets.1 <= bytes.len() as u64);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn mutated_gguf_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
                let (mut bytes, _) = sample_gguf();
                for (index, byte) in edits {
                    let i = index.index(bytes.len());
                    bytes[i] = byte;
                }
                check_gguf(&bytes);
            }

            #[test]
            fn mutated_safetensors_never_panics(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
                let mut bytes = sample_safetensors();
                for (index, byte) in edits {
                    let i = index.index(bytes.len());
                    bytes[i] = byte;
                }
                check_safetensors(&bytes);
            }

            #[test]
            fn random_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..256), gguf in any::<bool>()) {
                let bytes = if gguf { [&b"GGUF\x03\0\0\0"[..], &tail].concat() } else { tail };
                check_gguf(&bytes);
                check_safetensors(&bytes);
                let _ = sniff_bytes(&bytes, bytes.len() as u64);
            }
        }
    }

    #[test]
    fn png_headers_give_size_depth_and_colour() {
        let mut head = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        head.extend_from_slice(&2000u32.to_be_bytes());
        head.extend_from_slice(&1000u32.to_be_bytes());
        head.extend_from_slice(&[8, 2]);
        let info = png_info(&head).unwrap();
        assert_eq!(
            (info.width, info.height, info.bit_depth, info.color),
            (2000, 1000, 8, "rgb")
        );
        head[25] = 5;
        assert_eq!(png_info(&head), None, "colour type 5 does not exist");
        assert_eq!(png_info(&head[..20]), None, "truncated");
    }
}
