//! The stage graph of a pipeline (one node per declared stage, sweeps folded into a count) and
//! its drawing as a self-contained SVG. Shared by `azimuth dag --format svg` and the `report.html`
//! stage, which receives the graph in its provenance; pure, no I/O.
//!
//! Layout: layers by longest path from the sources (left to right), order within a layer by a
//! few down-and-up barycentre sweeps (fewer crossings) inside weakly connected bands, edges as
//! cubic curves from the right side of a box to the left side of the next. Generators are filled
//! boxes, analyzers outlined ones. A stage whose input is `"*"` (`StageNode::gathers_all`, a
//! report) would draw an edge from every box: it is drawn dashed, alone in a last column, without
//! edges. Sizes come from a fixed character width, so the same graph gives the same bytes
//! everywhere.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One node: a declared stage and how many instances it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageNode {
    pub name: String,
    /// What it runs: the built-in's name, or `cmd PROGRAM`.
    pub what: String,
    pub instances: usize,
    pub generator: bool,
    /// Its input is `"*"` (every output of every other stage): drawn apart, without the fan
    /// of edges that would come from every box.
    #[serde(default)]
    pub gathers_all: bool,
}

/// Nodes in first-instance order and deduplicated edges (upstream, consumer) between them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageGraph {
    pub nodes: Vec<StageNode>,
    pub edges: Vec<(usize, usize)>,
}

/// Escapes text for XML.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The stage graph as an SVG document (see the module doc for the layout).
/// The stage graph as an SVG document (see the module doc for the layout).
pub fn svg(graph: &StageGraph) -> String {
    const CHAR_W: f64 = 7.0;
    const NODE_H: f64 = 38.0;
    const GAP_Y: f64 = 14.0;
    const GAP_X: f64 = 56.0;
    const MARGIN: f64 = 16.0;
    let nodes = &graph.nodes;
    let n = nodes.len();
    // A stage that gathers every other stage (a report over `"*"`) would draw an edge from each
    // box; it is drawn alone in a last column, dashed, with no edges.
    let gathers: Vec<bool> = nodes.iter().map(|nd| nd.gathers_all).collect();
    let edges: Vec<(usize, usize)> = graph
        .edges
        .iter()
        .copied()
        .filter(|&(_, c)| !gathers[c])
        .collect();
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
    let last = (0..n).filter(|&i| !gathers[i]).map(|i| layer[i]).max();
    for i in (0..n).filter(|&i| gathers[i]) {
        layer[i] = last.map_or(0, |l| l + 1);
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
        let what = nodes[i].what.chars().count() + if gathers[i] { 15 } else { 0 };
        let chars = label(i).chars().count().max(what);
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
        let (dash, what) = if gathers[i] {
            (" stroke-dasharray=\"5,3\"", format!("{} ← every stage", node.what))
        } else {
            ("", node.what.clone())
        };
        let _ = writeln!(
            s,
            "<g class=\"node\" data-stage=\"{}\" data-instances=\"{}\"><rect x=\"{x:.1}\" \
             y=\"{y:.1}\" width=\"{w:.1}\" height=\"{NODE_H:.1}\" rx=\"5\" fill=\"{fill}\" \
             stroke=\"#2b4a6f\" stroke-width=\"1.2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"{text}\" font-weight=\"bold\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" \
             fill=\"{text}\" opacity=\"0.75\">{}</text></g>",
            xml(&node.name),
            node.instances,
            x + 10.0,
            y + 16.0,
            xml(&label(i)),
            x + 10.0,
            y + 31.0,
            xml(&what)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, gathers_all: bool) -> StageNode {
        StageNode {
            name: name.into(),
            what: "cmd x".into(),
            instances: 1,
            generator: false,
            gathers_all,
        }
    }

    #[test]
    fn a_stage_gathering_everything_is_drawn_last_without_edges() {
        let graph = StageGraph {
            nodes: vec![
                node("a", false),
                node("b", false),
                node("c", false),
                node("report", true),
            ],
            edges: vec![(0, 1), (1, 2), (0, 3), (1, 3), (2, 3)],
        };
        let svg = svg(&graph);
        assert_eq!(svg.matches("class=\"edge\"").count(), 2);
        assert!(svg.contains("cmd x ← every stage"));
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
        // The same shape without the mark is an ordinary stage with its three edges.
        let plain = StageGraph {
            nodes: vec![
                node("a", false),
                node("b", false),
                node("c", false),
                node("d", false),
            ],
            ..graph
        };
        let svg = super::svg(&plain);
        assert_eq!(svg.matches("class=\"edge\"").count(), 5);
        assert!(!svg.contains("every stage"));
    }
}
