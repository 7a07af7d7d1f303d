//! The instance graph of a pipeline as text, Graphviz dot or Mermaid (`azimuth dag`).
//!
//! Ordering and cycle detection happen while the pipeline is resolved (`spec::resolve`), so
//! instances already come in a topological order; this module only draws. Pure: no I/O.

use std::fmt::Write as _;

use crate::cli::DagFormat;
use crate::spec::{Body, InputSource, Pipeline};

/// Edges as (upstream instance, consumer instance, "output → port") in a stable order.
pub fn edges(p: &Pipeline) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    for (ci, inst) in p.instances.iter().enumerate() {
        for input in &inst.inputs {
            for s in &input.sources {
                if let InputSource::Upstream { instance, output } = s {
                    out.push((*instance, ci, format!("{output} → {}", input.port)));
                }
            }
        }
    }
    out
}

fn what(p: &Pipeline, i: usize) -> String {
    let inst = &p.instances[i];
    match &inst.body {
        Body::Builtin { name, .. } => format!("{name}, {}", inst.kind.as_str()),
        Body::Cmd { argv } => format!(
            "cmd `{}`, {}",
            argv.first().map(String::as_str).unwrap_or(""),
            inst.kind.as_str()
        ),
    }
}

pub fn render(p: &Pipeline, format: DagFormat) -> String {
    let edges = edges(p);
    let mut s = String::new();
    match format {
        DagFormat::Text => {
            for (i, inst) in p.instances.iter().enumerate() {
                let _ = writeln!(s, "{}  ({})", inst.name, what(p, i));
                for (u, c, label) in &edges {
                    if *c == i {
                        let _ = writeln!(s, "    ← {} ({label})", p.instances[*u].name);
                    }
                }
                for input in &inst.inputs {
                    for src in &input.sources {
                        if let InputSource::External { path } = src {
                            let _ = writeln!(s, "    ← file {path} (→ {})", input.port);
                        }
                    }
                }
            }
        }
        DagFormat::Dot => {
            s.push_str(
                "digraph pipeline {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
            );
            for (i, inst) in p.instances.iter().enumerate() {
                let shape = if inst.kind == crate::registry::StageKind::Generator {
                    "box"
                } else {
                    "ellipse"
                };
                let _ = writeln!(
                    s,
                    "  n{i} [label=\"{}\\n{}\", shape={shape}];",
                    esc(&inst.name),
                    esc(&what(p, i))
                );
            }
            for (u, c, label) in &edges {
                let _ = writeln!(s, "  n{u} -> n{c} [label=\"{}\"];", esc(label));
            }
            s.push_str("}\n");
        }
        DagFormat::Mermaid => {
            s.push_str("flowchart LR\n");
            for (i, inst) in p.instances.iter().enumerate() {
                let _ = writeln!(s, "  n{i}[\"{}\"]", inst.name.replace('"', "#quot;"));
            }
            for (u, c, label) in &edges {
                let _ = writeln!(s, "  n{u} -->|\"{}\"| n{c}", label.replace('"', "#quot;"));
            }
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
