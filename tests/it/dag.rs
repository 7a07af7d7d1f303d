//! Property tests of the DAG: random acyclic pipelines resolve to an order that respects every
//! edge; adding a back edge is always reported as a cycle with its path spelled out.

use std::path::Path;

use azimuth::registry::Registry;
use azimuth::spec::{self, InputSource};
use proptest::prelude::*;

/// A pipeline of `n` stages where stage i reads from each j < i with `edges[i][j]`, declared in
/// a shuffled order so that declaration order is not topological order.
fn yaml(
    n: usize,
    edges: &[Vec<bool>],
    order: &[usize],
    back_edge: Option<(usize, usize)>,
) -> String {
    let mut s = String::from("stages:\n");
    for &i in order {
        s.push_str(&format!(
            "  s{i}:\n    cmd: [touch, \"${{outputs.o}}\"]\n    outputs: {{o: o}}\n"
        ));
        let mut ups: Vec<String> = (0..i)
            .filter(|&j| edges[i][j])
            .map(|j| format!("s{j}.o"))
            .collect();
        if let Some((from, to)) = back_edge {
            if i == to {
                ups.push(format!("s{from}.o"));
            }
        }
        if !ups.is_empty() {
            s.push_str(&format!("    inputs: {{x: [{}]}}\n", ups.join(", ")));
        }
    }
    let _ = n;
    s
}

fn graph() -> impl Strategy<Value = (usize, Vec<Vec<bool>>, Vec<usize>)> {
    (2usize..14).prop_flat_map(|n| {
        let edges = proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n);
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        (Just(n), edges, order)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn topological_order_respects_every_edge((n, edges, order) in graph()) {
        let text = yaml(n, &edges, &order, None);
        let p = spec::from_source(Path::new("pipeline.yaml"), Path::new("/tmp"), text.clone(), &Registry::default())
            .map_err(|e| TestCaseError::fail(e.render())).unwrap();
        prop_assert_eq!(p.instances.len(), n);
        let pos = |name: &str| p.instances.iter().position(|i| i.name == name).unwrap();
        for (ci, inst) in p.instances.iter().enumerate() {
            for input in &inst.inputs {
                for s in &input.sources {
                    if let InputSource::Upstream { instance, .. } = s {
                        prop_assert!(*instance < ci, "edge {} -> {} out of order", p.instances[*instance].name, inst.name);
                    }
                }
            }
        }
        for (i, row) in edges.iter().enumerate() {
            for (j, &edge) in row.iter().enumerate().take(i) {
                if edge {
                    let (up, down) = (pos(&format!("s{j}")), pos(&format!("s{i}")));
                    prop_assert!(up < down, "s{} must come before s{}", j, i);
                }
            }
        }
    }

    #[test]
    fn a_back_edge_is_reported_as_a_cycle((n, mut edges, order) in graph(), a in 0usize..100, b in 0usize..100) {
        // Make a path lo -> ... -> hi certain, then add hi -> lo.
        let (lo, hi) = { let x = a % n; let y = b % n; if x == y { (0, n - 1) } else { (x.min(y), x.max(y)) } };
        for k in lo + 1..=hi { edges[k][k - 1] = true; }
        let text = yaml(n, &edges, &order, Some((hi, lo)));
        let err = spec::from_source(Path::new("pipeline.yaml"), Path::new("/tmp"), text, &Registry::default()).unwrap_err();
        let msg = err.render();
        prop_assert!(msg.contains("dependency cycle: "), "{}", msg);
        let (l, h) = (format!("s{lo}"), format!("s{hi}"));
        prop_assert!(msg.contains(&l) && msg.contains(&h), "{}", msg);
    }
}

#[test]
fn dag_renders_in_text_dot_and_mermaid() {
    let p = crate::support::Project::new();
    crate::run::chain(&p);
    let text = p.run(&["dag"]).ok().stdout;
    assert!(
        text.contains("square[power=2]  (cmd `python3`, generator)\n    ← gen (data → d)"),
        "{text}"
    );
    let dot = p.run(&["dag", "--format", "dot"]).ok().stdout;
    assert!(
        dot.starts_with("digraph pipeline {") && dot.contains("-> n3"),
        "{dot}"
    );
    let mm = p.run(&["dag", "--format", "mermaid"]).ok().stdout;
    assert!(
        mm.starts_with("flowchart LR") && mm.contains("-->|\"out → parts\"|"),
        "{mm}"
    );
}

/// The numbers after `key="` in every occurrence within `s`.
fn attr_values(s: &str, key: &str) -> Vec<f64> {
    s.split(&format!(" {key}=\""))
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The drawn stage graph of any acyclic pipeline: one box per stage, one curve per edge, no
    /// two boxes overlapping, every edge running left to right, and the same bytes every time.
    #[test]
    fn svg_draws_every_stage_once_without_overlaps((n, edges, order) in graph()) {
        let text = yaml(n, &edges, &order, None);
        let p = spec::from_source(Path::new("pipeline.yaml"), Path::new("/tmp"), text, &Registry::default())
            .map_err(|e| TestCaseError::fail(e.render())).unwrap();
        let svg = azimuth::dag::svg(&p);
        prop_assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        prop_assert!(svg.trim_end().ends_with("</svg>"));
        for i in 0..n {
            prop_assert_eq!(svg.matches(&format!("data-stage=\"s{i}\"")).count(), 1);
        }
        let edge_count: usize = edges.iter().enumerate().map(|(i, r)| r.iter().take(i).filter(|&&e| e).count()).sum();
        prop_assert_eq!(svg.matches("class=\"edge\"").count(), edge_count);
        let rects: Vec<(f64, f64, f64, f64)> = svg.split("<rect").skip(1).map(|r| {
            let r = format!(" {}", &r[..r.find("/>").unwrap()]);
            (attr_values(&r, "x")[0], attr_values(&r, "y")[0], attr_values(&r, "width")[0], attr_values(&r, "height")[0])
        }).collect();
        prop_assert_eq!(rects.len(), n);
        for a in 0..n {
            for b in a + 1..n {
                let (ra, rb) = (rects[a], rects[b]);
                let apart = ra.0 + ra.2 <= rb.0 || rb.0 + rb.2 <= ra.0 || ra.1 + ra.3 <= rb.1 || rb.1 + rb.3 <= ra.1;
                prop_assert!(apart, "boxes {:?} and {:?} overlap", ra, rb);
            }
        }
        for d in svg.split(" d=\"M").skip(2) {
            let nums: Vec<f64> = d[..d.find('"').unwrap()]
                .split([' ', ',', 'C'])
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().unwrap())
                .collect();
            prop_assert!(nums[0] < nums[6], "edge runs right to left: {:?}", nums);
        }
        prop_assert_eq!(svg, azimuth::dag::svg(&p));
    }
}

#[test]
fn svg_folds_sweeps_and_escapes_names() {
    let yaml = "stages:\n  gen:\n    cmd: [\"a<b>&c\", \"${outputs.o}\"]\n    matrix: {k: [1, 2, 3]}\n    outputs: {o: o}\n  all:\n    cmd: [x, \"${inputs.i}\", \"${outputs.o}\"]\n    inputs: {i: gen.o}\n    outputs: {o: o}\n";
    let p = spec::from_source(
        Path::new("pipeline.yaml"),
        Path::new("/tmp"),
        yaml.into(),
        &Registry::default(),
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let svg = azimuth::dag::svg(&p);
    assert!(
        svg.contains("data-stage=\"gen\" data-instances=\"3\""),
        "{svg}"
    );
    assert!(svg.contains("gen ×3"), "{svg}");
    assert!(svg.contains("cmd a&lt;b&gt;&amp;c"), "{svg}");
    assert_eq!(svg.matches("class=\"edge\"").count(), 1);
}
