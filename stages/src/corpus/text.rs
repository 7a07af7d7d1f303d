//! `corpus.text` (science spec S31's corpus preparation): raw bytes in, cleaned bytes and a JSON
//! summary out. Steps, in order, each optional:
//!
//! 1. markers: keep the bytes after the line that contains `start_marker` (its first occurrence;
//!    the kept text starts after that line's `\n`) and before the line that contains
//!    `end_marker` (its first occurrence after the start line; the kept text ends where that line
//!    begins, so the `\n` ending the line before it is kept);
//! 2. newlines `lf`: CRLF → LF, then any remaining (lone) CR → LF;
//! 3. `ascii_only`: every byte ≥ 128 is dropped (not replaced).
//!
//! S31's order is cut → drop non-ASCII → CRLF; steps 2 and 3 commute (CR and LF are ASCII), so
//! the result is the same. The input is bytes, never decoded: binary junk is fine. A result of no
//! bytes is an error that names the step that emptied it.

use serde::Serialize;
use sha2::{Digest, Sha256};

use azimuth_stage_api::specs::corpus::TEXT as SPEC;

use super::{byte_histogram, byte_label, file_name, read_input};
use crate::params::Params;
use crate::{StageContext, StageError};

/// Bumped with `SPEC.version` whenever the summary's layout changes.
const FORMAT: u32 = 1;

/// How many of the most frequent bytes the summary lists.
const TOP_BYTES: usize = 10;

#[derive(Serialize)]
struct ByteCount {
    byte: u8,
    label: String,
    count: u64,
    fraction: f64,
}

#[derive(Serialize)]
struct MarkerStep {
    start_marker: String,
    end_marker: String,
    /// Bytes before the kept range (up to and including the start marker's line).
    bytes_cut_before: u64,
    /// Bytes after the kept range (from the end marker's line on).
    bytes_cut_after: u64,
    bytes_after: u64,
}

#[derive(Serialize)]
struct NewlineStep {
    crlf_to_lf: u64,
    lone_cr_to_lf: u64,
    bytes_after: u64,
}

#[derive(Serialize)]
struct AsciiStep {
    non_ascii_dropped: u64,
    bytes_after: u64,
}

#[derive(Serialize)]
struct Summary {
    format: u32,
    source: String,
    bytes_in: u64,
    markers: Option<MarkerStep>,
    newlines: Option<NewlineStep>,
    ascii_only: Option<AsciiStep>,
    bytes_out: u64,
    bytes_dropped: u64,
    distinct_bytes: usize,
    non_ascii_bytes: u64,
    lines: u64,
    top_bytes: Vec<ByteCount>,
    sha256: String,
}

pub(crate) fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&SPEC, ctx)?;
    let start_marker = p.string("start_marker")?;
    let end_marker = p.string("end_marker")?;
    let newlines = p.string("newlines")?;
    let ascii_only = p.boolean("ascii_only")?;
    let out_text = p.output("text")?;
    let out_summary = p.output("summary")?;
    let (path, raw) = read_input(&p, "raw")?;
    let source = file_name(path);
    let empty = |step: &str| {
        p.error(format!(
            "`{}` (input `raw`): {step} left no bytes; nothing to write",
            path.display()
        ))
    };
    if raw.is_empty() {
        return Err(p.error(format!(
            "`{}` (input `raw`) is empty; connect a non-empty text file",
            path.display()
        )));
    }
    let bytes_in = raw.len() as u64;

    let mut text = raw;
    let mut markers = None;
    if !start_marker.is_empty() || !end_marker.is_empty() {
        let (begin, end) = marker_range(&text, &start_marker, &end_marker)
            .map_err(|why| p.error(format!("`{}` (input `raw`): {why}", path.display())))?;
        let len = text.len();
        text.truncate(end);
        text.drain(..begin);
        markers = Some(MarkerStep {
            start_marker,
            end_marker,
            bytes_cut_before: begin as u64,
            bytes_cut_after: (len - end) as u64,
            bytes_after: text.len() as u64,
        });
        if text.is_empty() {
            return Err(empty("the marker cut (params `start_marker`/`end_marker`)"));
        }
    }
    let newlines = match newlines.as_str() {
        "lf" => {
            let (out, crlf, lone) = to_lf(&text);
            text = out;
            Some(NewlineStep {
                crlf_to_lf: crlf,
                lone_cr_to_lf: lone,
                bytes_after: text.len() as u64,
            })
        }
        _ => None,
    };
    let ascii = if ascii_only {
        let before = text.len();
        text.retain(|&b| b < 128);
        if text.is_empty() {
            return Err(empty("`ascii_only: true` (every byte was ≥ 128)"));
        }
        Some(AsciiStep {
            non_ascii_dropped: (before - text.len()) as u64,
            bytes_after: text.len() as u64,
        })
    } else {
        None
    };

    let counts = byte_histogram(&text);
    let total = text.len() as u64;
    let mut ranked: Vec<(u8, u64)> = (0..=255u8)
        .map(|b| (b, counts[b as usize]))
        .filter(|&(_, c)| c > 0)
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let lines = counts[b'\n' as usize] + u64::from(text.last() != Some(&b'\n'));
    let summary = Summary {
        format: FORMAT,
        source,
        bytes_in,
        markers,
        newlines,
        ascii_only: ascii,
        bytes_out: total,
        bytes_dropped: bytes_in - total,
        distinct_bytes: ranked.len(),
        non_ascii_bytes: counts[128..].iter().sum(),
        lines,
        top_bytes: ranked
            .iter()
            .take(TOP_BYTES)
            .map(|&(byte, count)| ByteCount {
                byte,
                label: byte_label(byte),
                count,
                fraction: count as f64 / total as f64,
            })
            .collect(),
        sha256: hex(&Sha256::digest(&text)),
    };
    p.write_output(out_text, &text)?;
    p.write_json(out_summary, &summary)
}

/// The kept byte range `[begin, end)` for the marker params (empty marker = no cut on that side).
fn marker_range(text: &[u8], start: &str, end: &str) -> Result<(usize, usize), String> {
    let mut begin = 0;
    if !start.is_empty() {
        let at = find(text, start.as_bytes(), 0).ok_or_else(|| {
            format!("start marker {start:?} (param `start_marker`) does not occur; fix the marker or set it to \"\"")
        })?;
        begin = match find(text, b"\n", at + start.len()) {
            Some(nl) => nl + 1,
            None => text.len(),
        };
    }
    let mut stop = text.len();
    if !end.is_empty() {
        let at = find(text, end.as_bytes(), begin).ok_or_else(|| {
            let before = if start.is_empty() {
                String::new()
            } else {
                " after the start marker's line".to_string()
            };
            format!(
                "end marker {end:?} (param `end_marker`) does not occur{before}; fix the marker \
                 or set it to \"\""
            )
        })?;
        stop = text[begin..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(begin, |nl| begin + nl + 1);
    }
    Ok((begin, stop))
}

/// First occurrence of `needle` (non-empty) in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() || needle.len() > hay.len() - from {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

/// CRLF → LF and lone CR → LF; also returns how many of each were converted.
fn to_lf(text: &[u8]) -> (Vec<u8>, u64, u64) {
    let mut out = Vec::with_capacity(text.len());
    let (mut crlf, mut lone) = (0, 0);
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\r' {
            out.push(b'\n');
            if text.get(i + 1) == Some(&b'\n') {
                crlf += 1;
                i += 2;
                continue;
            }
            lone += 1;
        } else {
            out.push(text[i]);
        }
        i += 1;
    }
    (out, crlf, lone)
}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_cut_whole_lines() {
        let t = b"head\r\n*** START OF X ***\r\nbody 1\r\nbody 2\r\n*** END OF X ***\r\ntail";
        let (b, e) = marker_range(t, "*** START OF", "*** END OF").unwrap();
        assert_eq!(&t[b..e], b"body 1\r\nbody 2\r\n");
        let (b, e) = marker_range(t, "", "*** END OF").unwrap();
        assert_eq!(
            &t[b..e],
            b"head\r\n*** START OF X ***\r\nbody 1\r\nbody 2\r\n"
        );
        let (b, e) = marker_range(t, "body 2", "").unwrap();
        assert_eq!(&t[b..e], b"*** END OF X ***\r\ntail");
        // The end marker only counts after the start line.
        assert!(marker_range(t, "body 2", "body 1")
            .unwrap_err()
            .contains("after the start marker's line"));
        assert!(marker_range(t, "nope", "")
            .unwrap_err()
            .contains("`start_marker`"));
        // A marker on the last line without a newline leaves nothing after it.
        let (b, e) = marker_range(b"a\nSTART", "START", "").unwrap();
        assert_eq!(b, e);
        // Start and end on adjacent lines: nothing between.
        let (b, e) = marker_range(b"S\nE\n", "S", "E").unwrap();
        assert_eq!(b, e);
    }

    #[test]
    fn newline_normalisation_counts_each_kind() {
        let (out, crlf, lone) = to_lf(b"a\r\nb\rc\n\r\r\nd\r");
        assert_eq!(out, b"a\nb\nc\n\n\nd\n");
        assert_eq!((crlf, lone), (2, 3));
    }
}
