//! The instance graph of a pipeline as text, Graphviz dot or Mermaid, or the stage graph drawn
//! as a self-contained SVG (`azimuth dag`).
//!
//! Ordering and cycle detection happen while the pipeline is resolved (`spec::resolve`), so
//! instances already come in a topological order; this module only draws. Pure: no I/O.
//!
//! The SVG folds the instances of a sweep into one node per declared stage ("valley ×62"), so a
//! 100-point sweep stays one box: [`stage_graph`] builds that graph, and
//! `azimuth_stage_api::graph` lays it out and draws it (the `report.html` stage draws the same
//! graph from its provenance).

use std::fmt::Write as _;

use azimuth_stage_api::graph::{StageGraph, StageNode};

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
        DagFormat::Svg => s = svg(p),
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

/// The stage graph: nodes in first-instance order, deduplicated edges (upstream, consumer).
pub fn stage_graph(p: &Pipeline) -> StageGraph {
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut nodes: Vec<StageNode> = Vec::new();
    let mut of_instance = Vec::with_capacity(p.instances.len());
    for inst in &p.instances {
        let n = *index.entry(inst.stage.as_str()).or_insert_with(|| {
            nodes.push(StageNode {
                name: inst.stage.clone(),
                what: match &inst.body {
                    Body::Builtin { name, .. } => name.clone(),
                    Body::Cmd { argv } => {
                        format!("cmd {}", argv.first().map(String::as_str).unwrap_or(""))
                    }
                },
                instances: 0,
                generator: inst.kind == crate::registry::StageKind::Generator,
                gathers_all: inst.gathers_all,
            });
            nodes.len() - 1
        });
        nodes[n].instances += 1;
        of_instance.push(n);
    }
    let mut edges: Vec<(usize, usize)> = edges(p)
        .into_iter()
        .map(|(u, c, _)| (of_instance[u], of_instance[c]))
        .filter(|(u, c)| u != c)
        .collect();
    edges.sort_unstable();
    edges.dedup();
    StageGraph { nodes, edges }
}

/// The stage graph as an SVG document ([`azimuth_stage_api::graph::svg`]).
pub fn svg(p: &Pipeline) -> String {
    azimuth_stage_api::graph::svg(&stage_graph(p))
}
