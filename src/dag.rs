//! The instance graph of a pipeline as text, Graphviz dot or Mermaid, or the stage graph drawn
//! as a self-contained SVG (`azimuth dag`).
//!
//! Ordering and cycle detection happen while the pipeline is resolved (`spec::resolve`), so
//! instances already come in a topological order; this module only draws. Pure: no I/O.
//!
//! The SVG folds the instances of a sweep into one node per declared stage ("valley ×62"), so a
//! 100-point sweep stays one box. Layout: layers by longest path from the sources (left to
//! right), order within a layer by a few down-and-up barycentre sweeps (fewer crossings), edges
//! as cubic curves from the right side of a box to the left side of the next. Generators are
//! filled boxes, analyzers outlined ones. Sizes come from a fixed character width, so the same
//! pipeline gives the same bytes everywhere.

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

/// One node of the stage graph: a declared stage and how many instances it has.
struct StageNode {
    name: String,
    what: String,
    instances: usize,
    generator: bool,
}

/// The stage graph: nodes in first-instance order, deduplicated edges (upstream, consumer).
fn stage_graph(p: &Pipeline) -> (Vec<StageNode>, Vec<(usize, usize)>) {
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
    (nodes, edges)
}

/// Escapes text for XML.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The stage graph as an SVG document (see the module doc for the layout).
pub fn svg(p: &Pipeline) -> String {
    const CHAR_W: f64 = 7.0;
    const NODE_H: f64 = 38.0;
    const GAP_Y: f64 = 14.0;
    const GAP_X: f64 = 56.0;
    const MARGIN: f64 = 16.0;
    let (nodes, edges) = stage_graph(p);
    let n = nodes.len();
    // Layers: longest path from a source (relaxed until stable; at most n rounds).
    let mut layer = vec![0usize; n];
    for _ in 0..n {
        let mut changed = false;
        for &(u, c) in &edges {
            if layer[c] < layer[u] + 1 {
                layer[c] = layer[u] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let layers = layer.iter().copied().max().map_or(0, |m| m + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, &l) in layer.iter().enumerate() {
        rows[l].push(i);
    }
    // Weakly connected parts of the graph stay in their own bands (in first-stage order), so
    // unrelated studies do not interleave.
    let mut part: Vec<usize> = (0..n).collect();
    fn find(part: &mut [usize], mut x: usize) -> usize {
        while part[x] != x {
            part[x] = part[part[x]];
            x = part[x];
        }
        x
    }
    for &(u, c) in &edges {
        let (a, b) = (find(&mut part, u), find(&mut part, c));
        part[a.max(b)] = a.min(b);
    }
    let part: Vec<usize> = (0..n).map(|i| find(&mut part, i)).collect();
    // Barycentre ordering: a few sweeps, each node placed at the mean position of its neighbours
    // in the layer before (down) or after (up); ties keep the current order.
    for r in &mut rows {
        r.sort_by_key(|&i| (part[i], i));
    }
    let mut pos = vec![0f64; n];
    let set_pos = |rows: &Vec<Vec<usize>>, pos: &mut Vec<f64>| {
        for r in rows {
            for (k, &i) in r.iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    };
    set_pos(&rows, &mut pos);
    for sweep in 0..6 {
        let down = sweep % 2 == 0;
        let range: Vec<usize> = if down {
            (1..layers).collect()
        } else {
            (0..layers.saturating_sub(1)).rev().collect()
        };
        for l in range {
            let mut keyed: Vec<(usize, f64, f64, usize)> = rows[l]
                .iter()
                .map(|&i| {
                    let neighbours: Vec<f64> = edges
                        .iter()
                        .filter_map(|&(u, c)| match (down, u == i, c == i) {
                            (true, _, true) => Some(pos[u]),
                            (false, true, _) => Some(pos[c]),
                            _ => None,
                        })
                        .collect();
                    let bary = if neighbours.is_empty() {
                        pos[i]
                    } else {
                        neighbours.iter().sum::<f64>() / neighbours.len() as f64
                    };
                    (part[i], bary, pos[i], i)
                })
                .collect();
            keyed.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then(a.1.total_cmp(&b.1))
                    .then(a.2.total_cmp(&b.2))
            });
            rows[l] = keyed.into_iter().map(|k| k.3).collect();
            for (k, &i) in rows[l].iter().enumerate() {
                pos[i] = k as f64;
            }
        }
    }
    // Geometry: each layer a column as wide as its widest label.
    let label = |i: usize| {
        let node = &nodes[i];
        if node.instances > 1 {
            format!("{} ×{}", node.name, node.instances)
        } else {
            node.name.clone()
        }
    };
    let width_of = |i: usize| {
        let chars = label(i).chars().count().max(nodes[i].what.chars().count());
        chars as f64 * CHAR_W + 20.0
    };
    let mut col_x = Vec::with_capacity(layers);
    let mut col_w = Vec::with_capacity(layers);
    let mut x = MARGIN;
    for r in &rows {
        let w = r.iter().map(|&i| width_of(i)).fold(0.0, f64::max);
        col_x.push(x);
        col_w.push(w);
        x += w + GAP_X;
    }
    let total_w = x - GAP_X + MARGIN;
    let tallest = rows.iter().map(Vec::len).max().unwrap_or(0) as f64;
    let total_h = MARGIN * 2.0 + tallest * (NODE_H + GAP_Y) - GAP_Y;
    let mut xy = vec![(0.0, 0.0); n];
    for (l, r) in rows.iter().enumerate() {
        let column_h = r.len() as f64 * (NODE_H + GAP_Y) - GAP_Y;
        let top = MARGIN + (total_h - 2.0 * MARGIN - column_h) / 2.0;
        for (k, &i) in r.iter().enumerate() {
            xy[i] = (col_x[l], top + k as f64 * (NODE_H + GAP_Y));
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_w:.0}\" height=\"{:.0}\" \
         viewBox=\"0 0 {total_w:.0} {:.0}\" font-family=\"DejaVu Sans Mono, monospace\" \
         font-size=\"11.5\" class=\"azimuth-dag\">",
        total_h.max(1.0),
        total_h.max(1.0)
    );
    s.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" \
         markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" \
         fill=\"#555\"/></marker></defs>\n",
    );
    for &(u, c) in &edges {
        let (ux, uy) = xy[u];
        let (cx, cy) = xy[c];
        let (x0, y0) = (ux + col_w[layer[u]], uy + NODE_H / 2.0);
        let (x1, y1) = (cx, cy + NODE_H / 2.0);
        let bend = (x1 - x0).max(GAP_X) / 2.0;
        let _ = writeln!(
            s,
            "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"M{x0:.1},{y0:.1} \
             C{:.1},{y0:.1} {:.1},{y1:.1} {x1:.1},{y1:.1}\" fill=\"none\" stroke=\"#555\" \
             stroke-width=\"1.2\" marker-end=\"url(#arrow)\"/>",
            xml(&nodes[u].name),
            xml(&nodes[c].name),
            x0 + bend,
            x1 - bend
        );
    }
    for i in 0..n {
        let (x, y) = xy[i];
        let w = col_w[layer[i]];
        let node = &nodes[i];
        let (fill, text) = if node.generator {
            ("#2b4a6f", "#ffffff")
        } else {
            ("#ffffff", "#1a1a1a")
        };
        let _ = writeln!(
            s,
            "<g class=\"node\" data-stage=\"{}\" data-instances=\"{}\"><rect x=\"{x:.1}\" \
             y=\"{y:.1}\" width=\"{w:.1}\" height=\"{NODE_H:.1}\" rx=\"5\" fill=\"{fill}\" \
             stroke=\"#2b4a6f\" stroke-width=\"1.2\"/><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"{text}\" font-weight=\"bold\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"{text}\" opacity=\"0.75\">{}</text></g>",
            xml(&node.name),
            node.instances,
            x + 10.0,
            y + 16.0,
            xml(&label(i)),
            x + 10.0,
            y + 31.0,
            xml(&node.what)
        );
    }
    s.push_str("</svg>\n");
    s
}
