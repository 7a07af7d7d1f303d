//! `azimuth report`: one self-contained HTML page of a pipeline's latest results, for a
//! researcher to open in a browser (no network: images are inline `data:` URIs, the style is in
//! the page, the graph is inline SVG).
//!
//! Sections, each an element with a stable id: `summary` (stage counts by state), `dag` (the
//! stage graph from [`crate::dag::svg`]), `stages` (every instance with its state and reason, the
//! duration, time and host of the run that made its outputs), `numbers` (headlines of the
//! built-in stages: black holes, dead-set sizes, the gap's radii and ratio, PCA variance, losses,
//! simulation counts and verdicts; then the top-level numbers of every JSON `summary` output,
//! nested objects flattened one level), `figures` (every PNG output
//! with a caption naming the instance, the output and the digest of the artifact it shows) and
//! `tables` (the first rows of every CSV output and every Markdown output). The per-point tables
//! of a sweep with more than four instances are folded into `<details>` (its gathering analyzer
//! is the summary) and give no headlines. Only outputs of
//! fresh or restorable instances appear, read from the store by digest, so the page shows what
//! the cache vouches for, not whatever sits in `out/`.
//!
//! A small inline script counts images that failed to decode and writes the count to
//! `body[data-images-broken]` (and the loaded ones to `data-images-ok`); the end-to-end test
//! reads them from the DOM of a headless Chromium. The page carries timings and run times, so
//! it is written outside the cache, like `pipeline.lock`.

use std::fmt::Write as _;

use crate::plan::State;
use crate::spec::Pipeline;
use crate::store::{format_time, ArtifactKind, Store};

/// Rows of a CSV shown in the page.
const TABLE_ROWS: usize = 15;
/// Numbers shown per summary.
const NUMBERS_PER_SUMMARY: usize = 40;
/// Stages with more instances than this are sweeps whose per-point tables fold away.
const SWEEP_UNFOLDED: usize = 4;
/// Larger JSON or text files are not inlined.
const MAX_TEXT_BYTES: u64 = 4 << 20;

/// Escapes text for HTML.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
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
fn csv_fields(line: &str) -> Vec<String> {
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

/// The numbers of a JSON summary: top-level scalars, and the scalars of top-level objects as
/// `key.field`; at most [`NUMBERS_PER_SUMMARY`].
fn numbers(v: &serde_json::Value) -> Vec<(String, String)> {
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::String(s) if s.chars().count() <= 120 => Some(s.clone()),
        _ => None,
    };
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
const HEADLINES: &[(&str, &str, &str)] = &[
    ("w.black_holes", "/black_holes", "black holes"),
    (
        "w.black_holes",
        "/black_hole_tokens",
        "tokens in black holes",
    ),
    ("w.black_holes", "/largest", "largest black hole"),
    (
        "w.dead_sets",
        "/rule_a/set/tokens",
        "dead set, rule A (tokens)",
    ),
    (
        "w.dead_sets",
        "/rule_b/set/tokens",
        "dead set, rule B (tokens)",
    ),
    ("w.dead_sets", "/rule_b/void_found", "rule B found a void"),
    (
        "w.dead_sets",
        "/rule_b/largest_gap/inner_radius",
        "gap: inner radius",
    ),
    (
        "w.dead_sets",
        "/rule_b/largest_gap/outer_radius",
        "gap: outer radius",
    ),
    ("w.dead_sets", "/rule_b/largest_gap/ratio", "gap: ratio"),
    ("w.pca", "/variance_explained_pct/pc1", "PC1 variance (%)"),
    (
        "w.pca",
        "/variance_explained_pct/top3",
        "top-3 variance (%)",
    ),
    (
        "w.centroid_angle",
        "/angle_degrees",
        "dead/live centroid angle (°)",
    ),
    ("train.gpt", "/loss_first", "loss, first step"),
    ("train.gpt", "/loss_last", "loss, last step"),
    ("train.gpt", "/dead_tokens", "dead tokens"),
    (
        "sim.direct_sampling",
        "/black_holes/mean",
        "black holes per trial (mean)",
    ),
    (
        "sim.direct_sampling",
        "/largest/mean",
        "largest black hole (mean)",
    ),
    (
        "sim.monument_valley",
        "/black_holes/mean",
        "black holes per trial (mean)",
    ),
    (
        "sim.monument_valley",
        "/largest/mean",
        "largest black hole (mean)",
    ),
    (
        "sim.sweep",
        "/series/0/peak/scale",
        "first series: peak scale",
    ),
    (
        "sim.sweep",
        "/series/0/window/low",
        "first series: window from",
    ),
    (
        "sim.sweep",
        "/series/0/window/high",
        "first series: window to",
    ),
    ("sim.compare", "/verdict", "verdict"),
    ("sim.tidal_toy", "/ratio", "spread ratio"),
    ("sim.pachinko", "/r_last", "r at the last step"),
];

/// The headline rows of one built-in stage's summary.
fn headlines(uses: &str, v: &serde_json::Value) -> Vec<(&'static str, String)> {
    HEADLINES
        .iter()
        .filter(|(stage, _, _)| *stage == uses)
        .filter_map(|(_, pointer, what)| {
            let value = match v.pointer(pointer)? {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::String(s) => s.clone(),
                _ => return None,
            };
            Some((*what, value))
        })
        .collect()
}

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;\
color:#1a1a1a;background:#fafafa}h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid \
#ccc;padding-bottom:4px;margin-top:32px}h3{font-size:15px;margin:18px 0 6px}\
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border:1px solid #ddd;\
padding:2px 6px;text-align:left}th{background:#eef}.fresh{color:#1a7f37}.dirty{color:#b35900}\
.restorable{color:#2b4a6f}figure{display:inline-block;margin:8px;vertical-align:top;\
background:#fff;border:1px solid #ddd;padding:6px}figure img{max-width:760px;height:auto;\
display:block}figcaption{font-size:12px;color:#444;margin-top:4px}code,pre{font-family:\
DejaVu Sans Mono,monospace;font-size:12px}pre{background:#fff;border:1px solid #ddd;padding:8px;\
overflow:auto;max-height:480px}.dag{overflow:auto;background:#fff;border:1px solid #ddd}";

const SCRIPT: &str = "window.addEventListener('load',function(){var ok=0,bad=0;\
document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0){ok++}\
else{bad++;i.setAttribute('data-broken','1')}});document.body.setAttribute('data-images-ok',ok);\
document.body.setAttribute('data-images-broken',bad);});";

/// The page for `p` in the given states (one per instance), reading artifacts from `store`.
pub fn render(p: &Pipeline, store: &Store, states: &[State]) -> Result<String, String> {
    let title = format!("Azimuth report: {}", p.file.display());
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n<h1>{}</h1>\n",
        html(&title),
        html(&title)
    );

    // Summary.
    let count = |label: &str| states.iter().filter(|st| st.label() == label).count();
    let _ = writeln!(
        s,
        "<section id=\"summary\"><p>{} instances of {} stages: <span class=\"fresh\">{} fresh</span>, \
         <span class=\"restorable\">{} restorable</span>, <span class=\"dirty\">{} dirty</span>. \
         Written by azimuth {}.</p></section>",
        p.instances.len(),
        {
            let mut stages: Vec<&str> = p.instances.iter().map(|i| i.stage.as_str()).collect();
            stages.sort_unstable();
            stages.dedup();
            stages.len()
        },
        count("fresh"),
        count("restorable"),
        count("dirty"),
        env!("CARGO_PKG_VERSION")
    );

    // Graph.
    let _ = writeln!(
        s,
        "<section id=\"dag\"><h2>Pipeline</h2><div class=\"dag\">{}</div></section>",
        crate::dag::svg(p)
    );

    // Stages.
    s.push_str(
        "<section id=\"stages\"><h2>Stages</h2><table><tr><th>instance</th><th>uses</th>\
         <th>kind</th><th>state</th><th>last run</th><th>finished</th><th>host</th></tr>\n",
    );
    for (inst, st) in p.instances.iter().zip(states) {
        let uses = match &inst.body {
            crate::spec::Body::Builtin { name, version } => format!("{name}@{version}"),
            crate::spec::Body::Cmd { argv } => {
                format!("cmd {}", argv.first().map(String::as_str).unwrap_or(""))
            }
        };
        let detail = match st {
            State::Dirty { reasons, .. } => reasons
                .iter()
                .map(|r| r.sentence())
                .collect::<Vec<_>>()
                .join("; "),
            _ => String::new(),
        };
        let (duration, finished, host) = match st.record() {
            Some(r) => (
                format!("{:.2} s", r.duration_ms as f64 / 1000.0),
                format_time(r.finished_at),
                r.host.clone(),
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            s,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"{}\" title=\"{}\">{}{}\
             </td><td>{duration}</td><td>{finished}</td><td>{}</td></tr>",
            html(&inst.name),
            html(&uses),
            inst.kind.as_str(),
            st.label(),
            html(&detail),
            st.label(),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", html(&detail))
            },
            html(&host)
        );
    }
    s.push_str("</table></section>\n");

    // Artifacts of fresh and restorable instances, by kind.
    let mut headlines_html = String::new();
    let mut numbers_html = String::new();
    let mut figures_html = String::new();
    let mut tables_html = String::new();
    let mut per_stage: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for inst in &p.instances {
        *per_stage.entry(inst.stage.as_str()).or_default() += 1;
    }
    for (inst, st) in p.instances.iter().zip(states) {
        let Some(record) = st.record() else { continue };
        // A big sweep's points are summarised by its gathering analyzer: their tables fold away
        // and they give no headlines.
        let folded = per_stage[inst.stage.as_str()] > SWEEP_UNFOLDED;
        let (head_open, head_close, block_close) = if folded {
            ("<details><summary", "</summary>", "</details>")
        } else {
            ("<h3", "</h3>", "")
        };
        for out in &inst.outputs {
            let Some(entry) = record.outputs.get(&out.name) else {
                continue;
            };
            if entry.kind != ArtifactKind::File {
                continue;
            }
            let path = store.object_path(&entry.digest);
            let caption = format!(
                "<code>{}</code> · <code>{}</code> ({}) · <code>{}</code> · {} bytes",
                html(&inst.name),
                html(&out.name),
                html(&out.path),
                entry.digest.short(),
                entry.size
            );
            let ext = out
                .path
                .rsplit('.')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let read_text = || -> Result<Option<String>, String> {
                if entry.size > MAX_TEXT_BYTES {
                    return Ok(None);
                }
                std::fs::read(&path)
                    .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
                    .map_err(|e| {
                        format!(
                            "cannot read `{}` ({}.{}): {e}",
                            path.display(),
                            inst.name,
                            out.name
                        )
                    })
            };
            match ext.as_str() {
                "png" => {
                    let bytes = std::fs::read(&path).map_err(|e| {
                        format!(
                            "cannot read `{}` ({}.{}): {e}",
                            path.display(),
                            inst.name,
                            out.name
                        )
                    })?;
                    let _ = writeln!(
                        figures_html,
                        "<figure data-artifact=\"{}\"><img alt=\"{}.{}\" src=\"data:image/png;base64,{}\">\
                         <figcaption>{caption}</figcaption></figure>",
                        entry.digest.hex(),
                        html(&inst.name),
                        html(&out.name),
                        base64(&bytes)
                    );
                }
                "json" if out.name == "summary" => {
                    let Some(text) = read_text()? else { continue };
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue;
                    };
                    if let (false, crate::spec::Body::Builtin { name, .. }) = (folded, &inst.body) {
                        for (what, value) in headlines(name, &v) {
                            let _ = write!(
                                headlines_html,
                                "<tr><td><code>{}</code></td><th>{}</th><td>{}</td></tr>",
                                html(&inst.name),
                                html(what),
                                html(&value)
                            );
                        }
                    }
                    let rows = numbers(&v);
                    if rows.is_empty() {
                        continue;
                    }
                    let _ = write!(
                        numbers_html,
                        "{head_open} data-artifact=\"{}\">{caption}{head_close}<table>",
                        entry.digest.hex()
                    );
                    for (k, val) in rows {
                        let _ = write!(
                            numbers_html,
                            "<tr><th>{}</th><td>{}</td></tr>",
                            html(&k),
                            html(&val)
                        );
                    }
                    let _ = writeln!(numbers_html, "</table>{block_close}");
                }
                "csv" => {
                    let Some(text) = read_text()? else { continue };
                    let lines: Vec<&str> = text.lines().collect();
                    let _ = write!(
                        tables_html,
                        "{head_open} data-artifact=\"{}\">{caption} · {} rows{head_close}<table>",
                        entry.digest.hex(),
                        lines.len().saturating_sub(1)
                    );
                    for (i, line) in lines.iter().take(TABLE_ROWS + 1).enumerate() {
                        let cell = if i == 0 { "th" } else { "td" };
                        tables_html.push_str("<tr>");
                        for f in csv_fields(line) {
                            let _ = write!(tables_html, "<{cell}>{}</{cell}>", html(&f));
                        }
                        tables_html.push_str("</tr>");
                    }
                    let _ = writeln!(tables_html, "</table>{block_close}");
                }
                "md" | "txt" => {
                    let Some(text) = read_text()? else { continue };
                    let _ = writeln!(
                        tables_html,
                        "{head_open} data-artifact=\"{}\">{caption}{head_close}<pre>{}</pre>\
                         {block_close}",
                        entry.digest.hex(),
                        html(&text)
                    );
                }
                _ => {}
            }
        }
    }
    let _ = writeln!(
        s,
        "<section id=\"numbers\"><h2>Key numbers</h2>{}{numbers_html}</section>\n\
         <section id=\"figures\"><h2>Figures</h2>{figures_html}</section>\n\
         <section id=\"tables\"><h2>Tables</h2>{tables_html}</section>",
        if headlines_html.is_empty() {
            String::new()
        } else {
            format!(
                "<table id=\"headlines\"><tr><th>instance</th><th>quantity</th><th>value</th></tr>\
                 {headlines_html}</table>"
            )
        }
    );
    s.push_str("</body></html>\n");
    Ok(s)
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
        let v = serde_json::json!({"rule_a": {"set": {"tokens": 2212}},
                                   "rule_b": {"set": {"tokens": 2221}, "void_found": true,
                                              "largest_gap": {"ratio": 1.53}}});
        let rows = headlines("w.dead_sets", &v);
        assert_eq!(
            rows,
            [
                ("dead set, rule A (tokens)", "2212".to_string()),
                ("dead set, rule B (tokens)", "2221".to_string()),
                ("rule B found a void", "true".to_string()),
                ("gap: ratio", "1.53".to_string())
            ]
        );
        assert!(headlines("w.norms", &v).is_empty());
    }

    #[test]
    fn numbers_flatten_one_level() {
        let v = serde_json::json!({"format": 1, "a": 2.5, "b": {"mean": 3, "deep": {"x": 1}},
                                   "c": [1, 2], "d": "text"});
        assert_eq!(
            numbers(&v),
            [
                ("a".to_string(), "2.5".to_string()),
                ("b.mean".to_string(), "3".to_string()),
                ("d".to_string(), "text".to_string())
            ]
        );
    }
}
