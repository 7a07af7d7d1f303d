//! The page of `report.html` and its numbers: pure functions of the options, the provenance and
//! the artifacts' bytes.
//!
//! Sections, each an element with a stable id: `summary` (counts; `azimuth report` inserts its
//! `run` section after it, at [`RUN_MARKER`]), `dag` (the stage graph drawn by
//! `azimuth_stage_api::graph::svg`), `numbers` (table `#headlines`: the headline quantities of
//! the built-in stages, from [`HEADLINES`]; then the numbers of every JSON `summary`, nested
//! objects flattened one level), `dead-tokens` (the decoded tokens of `w.tokens`' `dead_tokens`
//! table), `figures` (every PNG, grouped by family, captioned with its instance, output, path and
//! digest), `tables` (the first rows of every other CSV, every Markdown and text output) and
//! `sources` (every artifact with its digest and where it is shown). A sweep's points (a stage
//! with more instances than `fold_sweeps_above`) fold their tables and numbers into `<details>`
//! and give no headlines; its gathering analyzer is the summary.
//!
//! A small inline script counts images that failed to decode and writes the count to
//! `body[data-images-broken]` (and the loaded ones to `data-images-ok`), so a headless browser
//! test can read it from the DOM.

use std::fmt::Write as _;
use std::path::Path;

use azimuth_stage_api::provenance::{Provenance, Source};
use serde_json::{json, Value};

/// Where `azimuth report` inserts its run section.
pub const RUN_MARKER: &str = "<!-- azimuth:run -->";
/// Numbers shown per summary.
const NUMBERS_PER_SUMMARY: usize = 40;
/// Larger JSON or text files are listed, not inlined.
const MAX_TEXT_BYTES: u64 = 4 << 20;
/// Larger images are listed, not inlined.
const MAX_IMAGE_BYTES: u64 = 32 << 20;
/// Columns of the dead-token table, in this order, when the CSV has them.
const DEAD_TOKEN_COLUMNS: &[&str] = &[
    "id",
    "text",
    "bytes_hex",
    "script",
    "black_hole",
    "dead",
    "special",
    "reserved",
    "orphan",
    "reachable",
];

/// The stage's params.
pub(crate) struct Options {
    pub title: String,
    pub table_rows: usize,
    pub dead_token_rows: usize,
    pub fold_sweeps_above: usize,
}

/// One input artifact: where it came from and where its bytes are.
pub(crate) struct Artifact<'a> {
    pub source: &'a Source,
    pub path: &'a Path,
}

/// Escapes text for HTML.
pub(crate) fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// A CSV line split into fields (double quotes group, `""` is a quote).
pub(crate) fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// A scalar as the page shows it, or `None` for arrays, objects and long strings.
fn scalar(v: &Value) -> Option<Value> {
    match v {
        Value::Number(_) | Value::Bool(_) => Some(v.clone()),
        Value::String(s) if s.chars().count() <= 120 => Some(v.clone()),
        _ => None,
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The numbers of a JSON summary: top-level scalars, and the scalars of top-level objects as
/// `key.field`; at most [`NUMBERS_PER_SUMMARY`]. `format` fields are left out.
pub(crate) fn numbers(v: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            if k == "format" {
                continue;
            }
            if let Some(s) = scalar(v) {
                out.push((k.clone(), s));
            } else if let Some(inner) = v.as_object() {
                for (f, w) in inner {
                    if let Some(s) = scalar(w) {
                        out.push((format!("{k}.{f}"), s));
                    }
                }
            }
        }
    }
    out.truncate(NUMBERS_PER_SUMMARY);
    out
}

/// The headline numbers of built-in stages' summaries: (stage, JSON pointer, what it is).
pub(crate) const HEADLINES: &[(&str, &str, &str)] = &[
    ("w.black_holes", "/black_holes", "black holes"),
    ("w.black_holes", "/black_hole_tokens", "tokens in black holes"),
    ("w.black_holes", "/largest", "largest black hole"),
    ("w.dead_sets", "/rule_a/set/tokens", "dead set, rule A (tokens)"),
    ("w.dead_sets", "/rule_b/set/tokens", "dead set, rule B (tokens)"),
    ("w.dead_sets", "/rule_b/void_found", "rule B found a void"),
    ("w.dead_sets", "/rule_b/largest_gap/inner_radius", "gap: inner radius"),
    ("w.dead_sets", "/rule_b/largest_gap/outer_radius", "gap: outer radius"),
    ("w.dead_sets", "/rule_b/largest_gap/ratio", "gap: ratio"),
    ("w.pca", "/variance_explained_pct/pc1", "PC1 variance (%)"),
    ("w.pca", "/variance_explained_pct/top3", "top-3 variance (%)"),
    ("w.centroid_angle", "/angle_degrees", "dead/live centroid angle (°)"),
    ("w.tokens", "/orphans/count", "orphan rows (no tokenizer entry)"),
    ("train.gpt", "/loss_first", "loss, first step"),
    ("train.gpt", "/loss_last", "loss, last step"),
    ("train.gpt", "/dead_tokens", "dead tokens"),
    ("sim.direct_sampling", "/black_holes/mean", "black holes per trial (mean)"),
    ("sim.direct_sampling", "/largest/mean", "largest black hole (mean)"),
    ("sim.monument_valley", "/black_holes/mean", "black holes per trial (mean)"),
    ("sim.monument_valley", "/largest/mean", "largest black hole (mean)"),
    ("sim.sweep", "/series/0/peak/scale", "first series: peak scale"),
    ("sim.sweep", "/series/0/window/low", "first series: window from"),
    ("sim.sweep", "/series/0/window/high", "first series: window to"),
    ("sim.compare", "/verdict", "verdict"),
    ("sim.tidal_toy", "/ratio", "spread ratio"),
    ("sim.pachinko", "/r_last", "r at the last step"),
];

/// The headline rows of one built-in stage's summary.
pub(crate) fn headlines(uses: &str, v: &Value) -> Vec<(&'static str, Value)> {
    HEADLINES
        .iter()
        .filter(|(stage, _, _)| *stage == uses)
        .filter_map(|(_, pointer, what)| Some((*what, scalar(v.pointer(pointer)?)?)))
        .collect()
}

/// The family a stage belongs to, for grouping figures: (order, heading).
fn family(uses: &str) -> (u8, &'static str) {
    match uses.split('.').next().unwrap_or("") {
        "w" => (0, "The unembedding matrix W"),
        "train" | "movie" => (1, "Training runs and movies"),
        "sim" => (2, "Simulations"),
        "corpus" | "tensor" => (3, "Data and tensors"),
        _ if uses.starts_with("cmd ") => (4, "Command stages"),
        _ => (5, "Other stages"),
    }
}

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;\
color:#1a1a1a;background:#fafafa}h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid \
#ccc;padding-bottom:4px;margin-top:32px}h3{font-size:15px;margin:18px 0 6px}\
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border:1px solid #ddd;\
padding:2px 6px;text-align:left}th{background:#eef}.fresh{color:#1a7f37}.dirty{color:#b35900}\
.ran{color:#8a4b00}.restorable{color:#2b4a6f}figure{display:inline-block;margin:8px;\
vertical-align:top;background:#fff;border:1px solid #ddd;padding:6px}figure img{max-width:760px;\
height:auto;display:block}figure.dark{background:#000}figure.dark figcaption{color:#ccc}\
figcaption{font-size:12px;color:#444;margin-top:4px}code,pre{font-family:DejaVu Sans Mono,\
monospace;font-size:12px}pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;\
max-height:480px}.card{display:inline-block;vertical-align:top;margin:0 14px 10px 0}.card h3,.card summary{font-size:13px}.dag{overflow:auto;background:#fff;border:1px solid #ddd}td.tok{font-family:\
DejaVu Sans Mono,monospace;white-space:pre}";

const SCRIPT: &str = "window.addEventListener('load',function(){var ok=0,bad=0;\
document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++}\
else{bad++;i.setAttribute('data-broken','1')}});document.body.setAttribute('data-images-ok',ok);\
document.body.setAttribute('data-images-broken',bad);});";

/// Whether a PNG is mostly black (a "naked-eye" plot): its figure gets a black frame. Reads the
/// first pixels of the decoded image; `false` when it cannot be decoded (the browser flags it).
fn dark_png(bytes: &[u8]) -> bool {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let Ok(mut reader) = decoder.read_info() else {
        return false;
    };
    let Some(size) = reader.output_buffer_size() else {
        return false;
    };
    let mut buf = vec![0u8; size];
    let Ok(info) = reader.next_frame(&mut buf) else {
        return false;
    };
    let channels = info.color_type.samples();
    if info.bit_depth != png::BitDepth::Eight || channels < 3 {
        return false;
    }
    // The corners: a naked-eye plot has black outside its map.
    let (w, h) = (info.width as usize, info.height as usize);
    let px = |x: usize, y: usize| {
        let i = y * info.line_size + x * channels;
        buf[i] as u32 + buf[i + 1] as u32 + buf[i + 2] as u32
    };
    [px(0, 0), px(w - 1, 0), px(0, h - 1), px(w - 1, h - 1)]
        .iter()
        .all(|&s| s < 24)
}

/// The page and its numbers (see the module doc).
pub(crate) fn render(
    o: &Options,
    prov: &Provenance,
    artifacts: &[Artifact],
) -> Result<(String, Value), String> {
    let title = if o.title.is_empty() {
        format!("Azimuth report: {}", prov.pipeline)
    } else {
        o.title.clone()
    };
    let read = |a: &Artifact| -> Result<Vec<u8>, String> {
        std::fs::read(a.path).map_err(|e| {
            format!(
                "cannot read `{}` ({}): {e}",
                a.path.display(),
                describe(a.source)
            )
        })
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n<h1>{}</h1>\n",
        html(&title),
        html(&title)
    );

    // Summary.
    let mut instances: Vec<&str> = artifacts
        .iter()
        .filter_map(|a| a.source.instance.as_deref())
        .collect();
    instances.sort_unstable();
    instances.dedup();
    let _ = writeln!(
        s,
        "<section id=\"summary\"><p>{} artifacts from {} instances; the pipeline <code>{}</code> \
         has {} stages. Written by azimuth {}.</p></section>\n{RUN_MARKER}",
        artifacts.len(),
        instances.len(),
        html(&prov.pipeline),
        prov.graph.nodes.len(),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        s,
        "<section id=\"dag\"><h2>Pipeline</h2><div class=\"dag\">{}</div></section>",
        azimuth_stage_api::graph::svg(&prov.graph)
    );

    let mut headline_rows = String::new();
    let mut headline_json = Vec::new();
    let mut numbers_html = String::new();
    let mut summaries_json = Vec::new();
    let mut dead_html = String::new();
    // (family order, heading, figure html) in input order within a family.
    let mut figures: Vec<(u8, &'static str, String)> = Vec::new();
    let mut tables_html = String::new();
    let mut sources_html = String::new();
    for a in artifacts {
        let src = a.source;
        let uses = src.uses.as_deref().unwrap_or("");
        let folded = src.instances > o.fold_sweeps_above;
        let (head_open, head_close, block_close) = if folded {
            ("<details><summary", "</summary>", "</details>")
        } else {
            ("<h3", "</h3>", "")
        };
        let digest_attr = src
            .digest
            .as_deref()
            .map(|d| d.trim_start_matches("b3:").to_string())
            .unwrap_or_default();
        let caption = caption(src);
        let ext = src
            .path
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let size = std::fs::metadata(a.path).map(|m| m.len()).unwrap_or(0);
        let is_file = a.path.is_file();
        let mut shown_as = "listed";
        match ext.as_str() {
            "png" if is_file && size <= MAX_IMAGE_BYTES => {
                let bytes = read(a)?;
                let dark = dark_png(&bytes);
                let (order, heading) = family(uses);
                figures.push((
                    order,
                    heading,
                    format!(
                        "<figure{} data-artifact=\"{digest_attr}\"><img alt=\"{}\" \
                         src=\"data:image/png;base64,{}\"><figcaption>{caption}</figcaption>\
                         </figure>\n",
                        if dark { " class=\"dark\"" } else { "" },
                        html(&describe(src)),
                        base64(&bytes)
                    ),
                ));
                shown_as = "figure";
            }
            "json" if is_file && size <= MAX_TEXT_BYTES && src.output.as_deref() == Some("summary") => {
                let Ok(v) = serde_json::from_slice::<Value>(&read(a)?) else {
                    sources_html.push_str(&source_row(src, "listed (not valid JSON)"));
                    continue;
                };
                if !folded {
                    for (what, value) in headlines(uses, &v) {
                        let _ = write!(
                            headline_rows,
                            "<tr><td><code>{}</code></td><th>{}</th><td>{}</td></tr>",
                            html(src.instance.as_deref().unwrap_or("")),
                            html(what),
                            html(&shown(&value))
                        );
                        headline_json.push(json!({
                            "instance": src.instance, "uses": uses,
                            "quantity": what, "value": value,
                        }));
                    }
                }
                let rows = numbers(&v);
                if !rows.is_empty() {
                    let _ = write!(
                        numbers_html,
                        "<div class=\"card\">{head_open} data-artifact=\"{digest_attr}\">{caption}\
                         {head_close}<table>"
                    );
                    for (k, val) in &rows {
                        let _ = write!(
                            numbers_html,
                            "<tr><th>{}</th><td>{}</td></tr>",
                            html(k),
                            html(&shown(val))
                        );
                    }
                    let _ = writeln!(numbers_html, "</table>{block_close}</div>");
                    summaries_json.push(json!({
                        "instance": src.instance, "output": src.output,
                        "numbers": rows.into_iter().collect::<serde_json::Map<_, _>>(),
                    }));
                }
                shown_as = "numbers";
            }
            "csv" if is_file && size <= MAX_TEXT_BYTES => {
                let text = String::from_utf8_lossy(&read(a)?).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                let rows = lines.len().saturating_sub(1);
                if uses == "w.tokens" && src.output.as_deref() == Some("dead_tokens") {
                    dead_html.push_str(&dead_tokens(src, &caption, &digest_attr, &lines, o));
                    shown_as = "dead tokens";
                } else {
                    let _ = write!(
                        tables_html,
                        "{head_open} data-artifact=\"{digest_attr}\">{caption} · {rows} rows\
                         {head_close}<table>"
                    );
                    for (i, line) in lines.iter().take(o.table_rows + 1).enumerate() {
                        let cell = if i == 0 { "th" } else { "td" };
                        tables_html.push_str("<tr>");
                        for f in csv_fields(line) {
                            let _ = write!(tables_html, "<{cell}>{}</{cell}>", html(&f));
                        }
                        tables_html.push_str("</tr>");
                    }
                    let _ = writeln!(tables_html, "</table>{block_close}");
                    shown_as = "table";
                }
            }
            "md" | "txt" if is_file && size <= MAX_TEXT_BYTES => {
                let text = String::from_utf8_lossy(&read(a)?).into_owned();
                let _ = writeln!(
                    tables_html,
                    "{head_open} data-artifact=\"{digest_attr}\">{caption}{head_close}<pre>{}</pre>\
                     {block_close}",
                    html(&text)
                );
                shown_as = "text";
            }
            _ => {}
        }
        sources_html.push_str(&source_row(src, shown_as));
    }

    // Numbers.
    let _ = writeln!(
        s,
        "<section id=\"numbers\"><h2>Key numbers</h2>{}{numbers_html}</section>",
        if headline_rows.is_empty() {
            String::new()
        } else {
            format!(
                "<table id=\"headlines\"><tr><th>instance</th><th>quantity</th><th>value</th>\
                 </tr>{headline_rows}</table>"
            )
        }
    );
    if !dead_html.is_empty() {
        let _ = writeln!(
            s,
            "<section id=\"dead-tokens\"><h2>Dead tokens, decoded</h2>{dead_html}</section>"
        );
    }
    // Figures, grouped by family (a stable sort keeps input order within a family).
    figures.sort_by_key(|f| f.0);
    s.push_str("<section id=\"figures\"><h2>Figures</h2>\n");
    let mut last = None;
    for (_, heading, fig) in &figures {
        if last != Some(*heading) {
            let _ = writeln!(s, "<h3>{}</h3>", html(heading));
            last = Some(*heading);
        }
        s.push_str(fig);
    }
    s.push_str("</section>\n");
    let _ = writeln!(
        s,
        "<section id=\"tables\"><h2>Tables</h2>{tables_html}</section>\n\
         <section id=\"sources\"><h2>Sources</h2><table><tr><th>instance</th><th>stage</th>\
         <th>output</th><th>path</th><th>digest</th><th>bytes</th><th>shown as</th></tr>\n\
         {sources_html}</table></section>"
    );
    s.push_str("</body></html>\n");
    let numbers = json!({
        "format": 1,
        "pipeline": prov.pipeline,
        "headlines": headline_json,
        "summaries": summaries_json,
    });
    Ok((s, numbers))
}

/// `instance.output` for messages, or the path of an external file.
fn describe(src: &Source) -> String {
    match (&src.instance, &src.output) {
        (Some(i), Some(o)) => format!("{i}.{o}"),
        _ => src.path.clone(),
    }
}

/// A figure's or table's caption: instance, output, path, digest and size.
fn caption(src: &Source) -> String {
    let mut c = match (&src.instance, &src.output) {
        (Some(i), Some(o)) => format!(
            "<code>{}</code> · <code>{}</code> ({})",
            html(i),
            html(o),
            html(&src.path)
        ),
        _ => format!("<code>{}</code>", html(&src.path)),
    };
    if let Some(d) = &src.digest {
        let short: String = d.trim_start_matches("b3:").chars().take(12).collect();
        let _ = write!(c, " · <code title=\"{}\">{short}</code>", html(d));
    }
    if let Some(n) = src.size {
        let _ = write!(c, " · {n} bytes");
    }
    c
}

fn source_row(src: &Source, shown_as: &str) -> String {
    format!(
        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td>\
         <td><code>{}</code></td><td>{}</td><td>{shown_as}</td></tr>\n",
        html(src.instance.as_deref().unwrap_or("(file)")),
        html(src.uses.as_deref().unwrap_or("")),
        html(src.output.as_deref().unwrap_or("")),
        html(&src.path),
        html(src.digest.as_deref().unwrap_or("")),
        src.size.map(|n| n.to_string()).unwrap_or_default()
    )
}

/// The decoded dead tokens of one `w.tokens` run: the chosen columns of the first rows, and how
/// many there are in all and in black holes.
fn dead_tokens(src: &Source, caption: &str, digest: &str, lines: &[&str], o: &Options) -> String {
    let Some(header) = lines.first() else {
        return String::new();
    };
    let header = csv_fields(header);
    let picked: Vec<usize> = {
        let p: Vec<usize> = DEAD_TOKEN_COLUMNS
            .iter()
            .filter_map(|c| header.iter().position(|h| h == c))
            .collect();
        if p.is_empty() {
            (0..header.len()).collect()
        } else {
            p
        }
    };
    let bh = header.iter().position(|h| h == "black_hole");
    let rows: Vec<Vec<String>> = lines[1..].iter().map(|l| csv_fields(l)).collect();
    let in_black_holes = bh.map_or(0, |c| {
        rows.iter()
            .filter(|r| r.get(c).is_some_and(|v| !v.is_empty() && v != "0"))
            .count()
    });
    let mut out = format!(
        "<h3 data-artifact=\"{digest}\">{caption}</h3><p>{} tokens in the dead set or a black \
         hole ({in_black_holes} in black holes){}; text is decoded like \
         <code>tokenizer.decode([id])</code>.</p><table class=\"dead-tokens\"><tr>",
        rows.len(),
        if rows.len() > o.dead_token_rows {
            format!(", the first {} shown", o.dead_token_rows)
        } else {
            String::new()
        }
    );
    for &c in &picked {
        let _ = write!(out, "<th>{}</th>", html(&header[c]));
    }
    out.push_str("</tr>");
    let text_col = header.iter().position(|h| h == "text");
    for r in rows.iter().take(o.dead_token_rows) {
        out.push_str("<tr>");
        for &c in &picked {
            let v = r.get(c).map(String::as_str).unwrap_or("");
            if Some(c) == text_col {
                let _ = write!(out, "<td class=\"tok\">{}</td>", html(v));
            } else {
                let _ = write!(out, "<td>{}</td>", html(v));
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
    let _ = src;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn csv_fields_follow_quotes() {
        assert_eq!(csv_fields("a,\"b,c\",d"), ["a", "b,c", "d"]);
        assert_eq!(csv_fields("\"say \"\"hi\"\"\",2"), ["say \"hi\"", "2"]);
        assert_eq!(csv_fields(""), [""]);
    }

    #[test]
    fn headlines_pick_the_declared_fields_of_the_stage() {
        let v = json!({"rule_a": {"set": {"tokens": 2212}},
                       "rule_b": {"set": {"tokens": 2221}, "void_found": true,
                                  "largest_gap": {"ratio": 1.53}}});
        let rows = headlines("w.dead_sets", &v);
        assert_eq!(
            rows,
            [
                ("dead set, rule A (tokens)", json!(2212)),
                ("dead set, rule B (tokens)", json!(2221)),
                ("rule B found a void", json!(true)),
                ("gap: ratio", json!(1.53))
            ]
        );
        assert!(headlines("w.norms", &v).is_empty());
    }

    #[test]
    fn numbers_flatten_one_level() {
        let v = json!({"format": 1, "a": 2.5, "b": {"mean": 3, "deep": {"x": 1}},
                       "c": [1, 2], "d": "text"});
        assert_eq!(
            numbers(&v),
            [
                ("a".to_string(), json!(2.5)),
                ("b.mean".to_string(), json!(3)),
                ("d".to_string(), json!("text"))
            ]
        );
    }

    #[test]
    fn families_group_by_the_stage_prefix() {
        assert_eq!(family("w.skymap").0, 0);
        assert_eq!(family("movie.curves").0, 1);
        assert_eq!(family("train.gpt").0, 1);
        assert_eq!(family("sim.sweep").0, 2);
        assert_eq!(family("cmd python3").0, 4);
    }
}
