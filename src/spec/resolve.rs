//! Pass 3 of loading a pipeline: declarations → ordered, expanded, bound instances.
//!
//! - Stage order comes from input references; a cycle is reported with its path spelled out.
//! - Sweeps: `matrix` expands to the cartesian product of its lists, `foreach` to its listed
//!   points; each point is an instance named `stage[k=v,...]` (keys sorted).
//! - Binding rule for a reference `up.out` from a consumer: sweep keys of `up` that the consumer
//!   also sweeps are bound to the consumer's values (pairing); the other keys are gathered (the
//!   input receives every matching instance, in `up`'s order). `up[k=v].out` pins keys, and
//!   `up[*].out` gathers all instances. `up.*` takes every output of the chosen instances, and
//!   the reference `"*"` every output of every other stage (each becomes upstream, so nothing may
//!   consume such a stage). A gather into a single-artifact built-in port is an error.
//! - `${name}` in params, sweep values and `cmd` interpolates a global param: alone it keeps the
//!   param's type, inside a longer string it is formatted; `$$` is a literal `$`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use super::decl::{to_json, DeclBody, Decls, RefDecl, SelectorDecl, StageDecl, Sweep};
use super::yaml::{self, Span};
use super::{Body, Input, InputSource, Instance, Output};
use crate::diag::{did_you_mean, Diagnostic};
use crate::registry::{Builtin, Registry, StageKind};

/// A user's way to name instances on the command line: `sim`, `sim[sigma=1e-9]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub stage: String,
    pub pins: Vec<(String, Json)>,
}

impl Selector {
    pub fn matches(&self, inst: &Instance) -> bool {
        inst.stage == self.stage
            && self.pins.iter().all(|(k, v)| {
                inst.matrix
                    .iter()
                    .any(|(ik, iv)| ik == k && same_value(iv, v))
            })
    }
}

/// Parses `stage` or `stage[k=v,...]` as typed on the command line.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let (stage, pins) = match text.find('[') {
        None => (text, Vec::new()),
        Some(i) => {
            let inner = text[i..]
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(|| format!("`{text}`: expected `stage[key=value,...]`"))?;
            let mut pins = Vec::new();
            for part in inner.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("`{text}`: `{part}` is not `key=value`"))?;
                pins.push((k.trim().to_string(), scalar_json(v.trim())));
            }
            (&text[..i], pins)
        }
    };
    Ok(Selector {
        stage: stage.to_string(),
        pins,
    })
}

/// Reads a value the way YAML would (`1e-9` is a float, `abc` a string).
fn scalar_json(text: &str) -> Json {
    match yaml::parse(text) {
        Ok(node) => to_json(&node, &mut |s, _| Ok(Json::String(s.to_string())))
            .unwrap_or(Json::String(text.to_string())),
        Err(_) => Json::String(text.to_string()),
    }
}

/// Numbers compare by value (1 == 1.0), everything else structurally.
fn same_value(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// How a sweep coordinate is written in instance names and `out/` paths.
pub fn format_value(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Number(n) if n.is_f64() => format!("{:?}", n.as_f64().expect("is_f64")),
        other => other.to_string(),
    }
}

pub fn resolve(decls: &Decls, registry: &Registry, diags: &mut Vec<Diagnostic>) -> Vec<Instance> {
    let globals: HashMap<&str, &Json> = decls
        .params
        .iter()
        .map(|(k, _, v)| (k.as_str(), v))
        .collect();
    let by_name: HashMap<&str, usize> = decls
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();

    // Stage-level graph from references; unknown stages are reported here.
    let mut graph: DiGraph<usize, Span> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..decls.stages.len()).map(|i| graph.add_node(i)).collect();
    for (ci, s) in decls.stages.iter().enumerate() {
        for input in &s.inputs {
            for r in &input.refs {
                if let RefDecl::Everything { span } = r {
                    for (ui, _) in decls.stages.iter().enumerate().filter(|(ui, _)| *ui != ci) {
                        graph.update_edge(nodes[ui], nodes[ci], *span);
                    }
                }
                if let RefDecl::Stage { stage, span, .. } = r {
                    match by_name.get(stage.as_str()) {
                        Some(&ui) => {
                            graph.update_edge(nodes[ui], nodes[ci], *span);
                        }
                        None => {
                            let mut d = Diagnostic::new(
                                format!(
                                    "unknown stage `{stage}` in input `{}` of stage `{}`",
                                    input.port, s.name
                                ),
                                *span,
                            );
                            if let Some(c) =
                                did_you_mean(stage, decls.stages.iter().map(|s| s.name.as_str()))
                            {
                                d = d.hint(format!("did you mean `{c}`?"));
                            }
                            diags.push(d);
                        }
                    }
                }
            }
        }
    }
    let order = match stage_order(&graph, decls, diags) {
        Some(o) => o,
        None => return Vec::new(),
    };

    let mut instances: Vec<Instance> = Vec::new();
    let mut stage_instances: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut seen = BTreeSet::new(); // deduplicates per-instance diagnostics of one stage
    for si in order {
        let s = &decls.stages[si];
        let builtin = match &s.body {
            DeclBody::Builtin { uses, .. } => match registry.find(uses) {
                Some(b) => Some(b),
                None => continue, // reported in decl
            },
            DeclBody::Cmd { .. } => None,
            DeclBody::Missing => continue,
        };
        let points = expand_sweep(s, &globals, diags);
        let mut mine = Vec::new();
        for coords in points {
            let mut local = Vec::new();
            if let Some(inst) = build_instance(
                s,
                builtin,
                coords,
                &globals,
                &instances,
                &stage_instances,
                &mut local,
            ) {
                let mut inst = inst;
                inst.executor = s.executor.or(decls.executor).unwrap_or_default();
                mine.push(instances.len());
                instances.push(inst);
            }
            for d in local {
                if seen.insert((d.message.clone(), d.span.map(|sp| sp.start))) {
                    diags.push(d);
                }
            }
        }
        stage_instances.insert(s.name.as_str(), mine);
    }
    instances
}

/// Topological order of stages, or `None` after reporting every cycle.
fn stage_order(
    graph: &DiGraph<usize, Span>,
    decls: &Decls,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<usize>> {
    let mut cyclic = false;
    for scc in petgraph::algo::tarjan_scc(graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        cyclic = true;
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        // Walk from the first-declared member along edges inside the component until we return.
        let start = *members
            .iter()
            .min_by_key(|n| graph[**n])
            .expect("non-empty component");
        let mut path = vec![start];
        let mut cur = start;
        let mut visited = BTreeSet::new();
        loop {
            visited.insert(cur);
            let next = graph
                .neighbors(cur)
                .filter(|n| members.contains(n))
                .min_by_key(|n| (if *n == start { 0 } else { 1 }, graph[*n]))
                .expect("every member of a cycle has a successor in it");
            path.push(next);
            if next == start || visited.contains(&next) {
                break;
            }
            cur = next;
        }
        let names: Vec<&str> = path
            .iter()
            .map(|n| decls.stages[graph[*n]].name.as_str())
            .collect();
        let edge = graph
            .find_edge(path[0], path[1])
            .expect("path follows edges");
        diags.push(
            Diagnostic::new(
                format!("dependency cycle: {}", names.join(" → ")),
                graph[edge],
            )
            .hint("a stage cannot depend on its own outputs, directly or through other stages"),
        );
    }
    if cyclic {
        return None;
    }
    // Kahn's algorithm; among ready stages the first declared goes first, so independent stages
    // keep the order the user wrote them in.
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| {
            graph
                .neighbors_directed(n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = graph
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(|n| std::cmp::Reverse(graph[n]))
        .collect();
    let node_of: HashMap<usize, NodeIndex> = graph.node_indices().map(|n| (graph[n], n)).collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(std::cmp::Reverse(stage)) = ready.pop() {
        order.push(stage);
        for next in graph.neighbors(node_of[&stage]) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(std::cmp::Reverse(graph[next]));
            }
        }
    }
    Some(order)
}

fn interpolate(s: &str, span: Span, globals: &HashMap<&str, &Json>) -> Result<Json, Diagnostic> {
    if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if !name.contains("${") && !name.contains('}') {
            return lookup_global(name, span, globals).cloned();
        }
    }
    Ok(Json::String(interpolate_text(s, span, globals, false)?))
}

fn lookup_global<'a>(
    name: &str,
    span: Span,
    globals: &HashMap<&str, &'a Json>,
) -> Result<&'a Json, Diagnostic> {
    globals.get(name).copied().ok_or_else(|| {
        let d = Diagnostic::new(format!("unknown global param `{name}`"), span);
        match did_you_mean(name, globals.keys().copied()) {
            Some(c) => d.hint(format!("did you mean `{c}`?")),
            None => d.hint("declare it under the top-level `params:`"),
        }
    })
}

/// Substitutes `${global}` inside a string; with `keep_stage_refs`, `${inputs.x}`, `${outputs.x}`
/// and `${params.x}` are left for run time.
fn interpolate_text(
    s: &str,
    span: Span,
    globals: &HashMap<&str, &Json>,
    keep_stage_refs: bool,
) -> Result<String, Diagnostic> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| Diagnostic::new(format!("unterminated `${{` in `{s}`"), span))?;
            let name = &body[..end];
            if keep_stage_refs
                && ["inputs.", "outputs.", "params."]
                    .iter()
                    .any(|p| name.starts_with(p))
            {
                out.push_str("${");
                out.push_str(name);
                out.push('}');
            } else {
                out.push_str(&format_value(lookup_global(name, span, globals)?));
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

type Coords = Vec<(String, Json, Span)>;

/// The values of a generated matrix range: `{linspace: [start, stop, count]}` (evenly spaced) or
/// `{geomspace: [start, stop, count]}` (evenly spaced in log, like numpy's geomspace; both ends
/// positive). Both ends are exact; count 1 gives `[start]`.
fn spaced_values(m: &serde_json::Map<String, Json>) -> Result<Vec<Json>, String> {
    let (kind, args) = m.iter().next().expect("one entry");
    let geometric = match kind.as_str() {
        "linspace" => false,
        "geomspace" => true,
        other => {
            return Err(format!(
                "`{other}` is not a range; use `linspace` or `geomspace` ([start, stop, count])"
            ))
        }
    };
    let bad = || format!("`{kind}` takes [start, stop, count] with a whole count ≥ 1");
    let a = args.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
    let (start, stop) = (
        a[0].as_f64().ok_or_else(bad)?,
        a[1].as_f64().ok_or_else(bad)?,
    );
    let count = a[2]
        .as_u64()
        .filter(|&n| (1..=100_000).contains(&n))
        .ok_or_else(bad)? as usize;
    if geometric && !(start > 0.0 && stop > 0.0) {
        return Err(format!(
            "`geomspace` needs positive ends, got {start} and {stop}"
        ));
    }
    let value = |i: usize| {
        if i == 0 {
            return start;
        }
        if i + 1 == count {
            return stop;
        }
        let t = i as f64 / (count - 1) as f64;
        if geometric {
            10f64.powf(start.log10() + t * (stop.log10() - start.log10()))
        } else {
            start + t * (stop - start)
        }
    };
    (0..count)
        .map(|i| {
            serde_json::Number::from_f64(value(i))
                .map(Json::Number)
                .ok_or_else(|| format!("`{kind}` made a non-finite value"))
        })
        .collect()
}

fn expand_sweep(
    s: &StageDecl,
    globals: &HashMap<&str, &Json>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Coords> {
    let mut interp = |st: &str, sp: Span| interpolate(st, sp, globals);
    match &s.sweep {
        None => vec![Vec::new()],
        Some(Sweep::Matrix(keys)) => {
            let mut points: Vec<Coords> = vec![Vec::new()];
            for (k, kspan, node) in keys {
                let values = match to_json(node, &mut interp) {
                    Ok(Json::Array(a)) if !a.is_empty() => a,
                    Ok(Json::Object(m)) if m.len() == 1 => match spaced_values(&m) {
                        Ok(a) => a,
                        Err(why) => {
                            diags.push(Diagnostic::new(
                                format!("matrix key `{k}` of stage `{}`: {why}", s.name),
                                node.span,
                            ));
                            return Vec::new();
                        }
                    },
                    Ok(_) => {
                        diags.push(
                            Diagnostic::new(
                                format!(
                                    "matrix key `{k}` of stage `{}` must be a non-empty list of \
                                     values",
                                    s.name
                                ),
                                node.span,
                            )
                            .hint(
                                "or a generated range: `{geomspace: [start, stop, count]}` or \
                                 `{linspace: [start, stop, count]}`",
                            ),
                        );
                        return Vec::new();
                    }
                    Err(d) => {
                        diags.push(d);
                        return Vec::new();
                    }
                };
                let mut uniq: Vec<&Json> = Vec::new();
                for v in &values {
                    if uniq.iter().any(|u| same_value(u, v)) {
                        diags.push(Diagnostic::new(
                            format!(
                                "matrix key `{k}` of stage `{}` lists `{}` twice",
                                s.name,
                                format_value(v)
                            ),
                            node.span,
                        ));
                        return Vec::new();
                    }
                    uniq.push(v);
                }
                points = points
                    .into_iter()
                    .flat_map(|p| {
                        values.iter().map(move |v| {
                            let mut q = p.clone();
                            q.push((k.clone(), v.clone(), *kspan));
                            q
                        })
                    })
                    .collect();
            }
            for p in &mut points {
                p.sort_by(|a, b| a.0.cmp(&b.0));
            }
            points
        }
        Some(Sweep::Foreach(items)) => {
            let mut points = Vec::new();
            let mut first_keys: Option<Vec<String>> = None;
            for item in items {
                let Some(m) = item.as_map() else {
                    diags.push(Diagnostic::new(
                        "each `foreach` item must be a map of param name to value",
                        item.span,
                    ));
                    return Vec::new();
                };
                let mut coords = Coords::new();
                for (k, v) in m {
                    match to_json(v, &mut interp) {
                        Ok(j) => {
                            coords.push((k.as_str().unwrap_or_default().to_string(), j, k.span))
                        }
                        Err(d) => {
                            diags.push(d);
                            return Vec::new();
                        }
                    }
                }
                coords.sort_by(|a, b| a.0.cmp(&b.0));
                let keys: Vec<String> = coords.iter().map(|c| c.0.clone()).collect();
                match &first_keys {
                    None => first_keys = Some(keys),
                    Some(fk) if *fk != keys => {
                        diags.push(Diagnostic::new(
                            format!(
                                "`foreach` items of stage `{}` must all have the same keys ({})",
                                s.name,
                                fk.join(", ")
                            ),
                            item.span,
                        ));
                        return Vec::new();
                    }
                    _ => {}
                }
                if points
                    .iter()
                    .any(|p: &Coords| p.iter().zip(&coords).all(|(a, b)| same_value(&a.1, &b.1)))
                {
                    diags.push(Diagnostic::new(
                        format!("`foreach` of stage `{}` lists the same point twice", s.name),
                        item.span,
                    ));
                    return Vec::new();
                }
                points.push(coords);
            }
            points
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_instance(
    s: &StageDecl,
    builtin: Option<&Builtin>,
    coords: Coords,
    globals: &HashMap<&str, &Json>,
    instances: &[Instance],
    stage_instances: &HashMap<&str, Vec<usize>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Instance> {
    let name = if coords.is_empty() {
        s.name.clone()
    } else {
        let parts: Vec<String> = coords
            .iter()
            .map(|(k, v, _)| format!("{k}={}", format_value(v)))
            .collect();
        format!("{}[{}]", s.name, parts.join(","))
    };
    let errors_before = diags.len();

    // Params: declared (interpolated), then sweep coordinates, then built-in schema.
    let mut params: BTreeMap<String, Json> = BTreeMap::new();
    let mut param_spans: HashMap<String, Span> = HashMap::new();
    for (k, _, node) in &s.params {
        match to_json(node, &mut |st, sp| interpolate(st, sp, globals)) {
            Ok(v) => {
                params.insert(k.clone(), v);
                param_spans.insert(k.clone(), node.span);
            }
            Err(d) => diags.push(d),
        }
    }
    for (k, v, kspan) in &coords {
        if param_spans.contains_key(k) {
            diags.push(
                Diagnostic::new(
                    format!(
                        "`{k}` of stage `{}` is both a param and a sweep key",
                        s.name
                    ),
                    *kspan,
                )
                .hint("remove it from `params:`; the sweep sets it"),
            );
        }
        params.insert(k.clone(), v.clone());
        param_spans.insert(k.clone(), *kspan);
    }
    if let Some(b) = builtin {
        let key_spans: HashMap<&str, Span> = s
            .params
            .iter()
            .map(|(k, sp, _)| (k.as_str(), *sp))
            .collect();
        // A sweep key the built-in does not take may still pair the stage with an upstream
        // sweep (`matrix: {init: [..]}` on an analyzer of `toy[init=..]`): it names and binds
        // instances but is not passed on.
        let pairs_upstream = |k: &str| {
            s.inputs.iter().flat_map(|d| &d.refs).any(|r| match r {
                RefDecl::Stage { stage, .. } => stage_instances
                    .get(stage.as_str())
                    .and_then(|ups| ups.first())
                    .is_some_and(|&u| instances[u].matrix.iter().any(|(uk, _)| uk == k)),
                _ => false,
            })
        };
        for (k, v) in params.clone() {
            match b.params.iter().find(|p| p.name == k) {
                None if coords.iter().any(|(ck, _, _)| *ck == k) && pairs_upstream(&k) => {
                    params.remove(&k);
                }
                None => {
                    let span = key_spans
                        .get(k.as_str())
                        .copied()
                        .unwrap_or(param_spans[&k]);
                    let d = Diagnostic::new(
                        format!(
                            "unknown param `{k}` for built-in stage `{}` (stage `{}`)",
                            b.name, s.name
                        ),
                        span,
                    );
                    diags.push(match did_you_mean(&k, b.params.iter().map(|p| p.name)) {
                        Some(c) => d.hint(format!("did you mean `{c}`?")),
                        None => d.hint(format!(
                            "`{}` takes: {}",
                            b.name,
                            b.params
                                .iter()
                                .map(|p| p.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    });
                }
                Some(p) => match p.ty.check(&v) {
                    Ok(norm) => {
                        params.insert(k, norm);
                    }
                    Err(m) => diags.push(
                        Diagnostic::new(
                            format!("param `{k}` of stage `{}`: {m}", s.name),
                            param_spans[&k],
                        )
                        .hint(p.doc.to_string()),
                    ),
                },
            }
        }
        for p in &b.params {
            if !params.contains_key(p.name) {
                match &p.default {
                    Some(d) => {
                        params.insert(p.name.to_string(), d.clone());
                    }
                    None => diags.push(
                        Diagnostic::new(
                            format!(
                                "stage `{}` is missing required param `{}` of `{}`",
                                s.name, p.name, b.name
                            ),
                            s.name_span,
                        )
                        .hint(format!(
                            "{}: {} ({})",
                            p.name,
                            p.doc,
                            p.ty.describe()
                        )),
                    ),
                }
            }
        }
    }

    // Outputs.
    let outputs: Vec<Output> = match builtin {
        Some(b) => b
            .outputs
            .iter()
            .map(|o| Output {
                name: o.name.to_string(),
                path: o.file.clone(),
            })
            .collect(),
        None => s
            .outputs
            .iter()
            .map(|o| Output {
                name: o.name.clone(),
                path: o.path.clone(),
            })
            .collect(),
    };

    // Inputs.
    let my_coords: Vec<(String, Json)> = coords
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    let mut inputs = Vec::new();
    for decl in &s.inputs {
        let port = builtin.map(|b| b.inputs.iter().find(|p| p.name == decl.port));
        if let (Some(b), Some(None)) = (builtin, port) {
            let d = Diagnostic::new(
                format!(
                    "unknown input `{}` for built-in stage `{}` (stage `{}`)",
                    decl.port, b.name, s.name
                ),
                decl.port_span,
            );
            diags.push(
                match did_you_mean(&decl.port, b.inputs.iter().map(|p| p.name)) {
                    Some(c) => d.hint(format!("did you mean `{c}`?")),
                    None if b.inputs.is_empty() => d.hint(format!("`{}` takes no inputs", b.name)),
                    None => d.hint(format!(
                        "`{}` takes: {}",
                        b.name,
                        b.inputs
                            .iter()
                            .map(|p| p.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                },
            );
            continue;
        }
        let many = port.flatten().is_none_or(|p| p.many);
        let mut sources = Vec::new();
        for r in &decl.refs {
            match r {
                RefDecl::Path { path, .. } => {
                    sources.push(InputSource::External { path: path.clone() })
                }
                RefDecl::Everything { .. } => {
                    // Every instance built so far (all other stages: each is upstream of this
                    // one), every output, in pipeline order.
                    for (u, up) in instances.iter().enumerate() {
                        if up.stage != s.name {
                            sources.extend(up.outputs.iter().map(|o| InputSource::Upstream {
                                instance: u,
                                output: o.name.clone(),
                            }));
                        }
                    }
                }
                RefDecl::Hf {
                    repo,
                    revision,
                    span,
                } => {
                    let resolved = match super::hf::hub_cache() {
                        None => Err(super::hf::NotCached {
                            message: format!("cannot find the Hugging Face cache for model `{repo}`: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set"),
                            hint: "set HF_HOME (the cache is $HF_HOME/hub) or HF_HUB_CACHE".into(),
                        }),
                        Some(root) => super::hf::snapshot_dir(&root, repo, revision),
                    };
                    match resolved {
                        Ok(dir) => sources.push(InputSource::External {
                            path: dir.to_string_lossy().into_owned(),
                        }),
                        Err(e) => diags.push(
                            Diagnostic::new(
                                format!(
                                    "{} (input `{}` of stage `{}`)",
                                    e.message, decl.port, s.name
                                ),
                                *span,
                            )
                            .hint(e.hint),
                        ),
                    }
                }
                RefDecl::Stage {
                    stage,
                    selector,
                    output,
                    span,
                } => {
                    let Some(ups) = stage_instances.get(stage.as_str()) else {
                        continue;
                    };
                    let Some(&first) = ups.first() else { continue };
                    let up = &instances[first];
                    if output != "*" && !up.outputs.iter().any(|o| &o.name == output) {
                        let d = Diagnostic::new(format!("stage `{stage}` has no output `{output}` (input `{}` of stage `{}`)", decl.port, s.name), *span);
                        diags.push(
                            match did_you_mean(output, up.outputs.iter().map(|o| o.name.as_str())) {
                                Some(c) => d.hint(format!("did you mean `{stage}.{c}`?")),
                                None => d.hint(format!(
                                    "outputs of `{stage}`: {}",
                                    up.outputs
                                        .iter()
                                        .map(|o| o.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            },
                        );
                        continue;
                    }
                    let chosen: Vec<usize> = match selector {
                        SelectorDecl::All => ups.clone(),
                        SelectorDecl::Bind => ups
                            .iter()
                            .copied()
                            .filter(|&u| {
                                instances[u].matrix.iter().all(|(k, v)| {
                                    my_coords
                                        .iter()
                                        .find(|(mk, _)| mk == k)
                                        .is_none_or(|(_, mv)| same_value(mv, v))
                                })
                            })
                            .collect(),
                        SelectorDecl::Pinned(pins) => {
                            let mut ok = true;
                            for (k, _) in pins {
                                if !up.matrix.iter().any(|(uk, _)| uk == k) {
                                    diags.push(Diagnostic::new(
                                        format!("stage `{stage}` has no sweep key `{k}`"),
                                        *span,
                                    ));
                                    ok = false;
                                }
                            }
                            if !ok {
                                continue;
                            }
                            ups.iter()
                                .copied()
                                .filter(|&u| {
                                    pins.iter().all(|(k, raw)| {
                                        let want = match interpolate(raw, *span, globals) {
                                            Ok(Json::String(t)) => scalar_json(&t),
                                            Ok(j) => j,
                                            Err(_) => scalar_json(raw),
                                        };
                                        instances[u]
                                            .matrix
                                            .iter()
                                            .any(|(uk, uv)| uk == k && same_value(uv, &want))
                                    })
                                })
                                .collect()
                        }
                    };
                    if chosen.is_empty() {
                        diags.push(
                            Diagnostic::new(
                                format!(
                                    "input `{}` of `{name}` matches no instance of stage `{stage}`",
                                    decl.port
                                ),
                                *span,
                            )
                            .hint(format!(
                                "instances of `{stage}`: {}",
                                ups.iter()
                                    .map(|&u| instances[u].name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                    }
                    for u in chosen {
                        if output == "*" {
                            sources.extend(instances[u].outputs.iter().map(|o| {
                                InputSource::Upstream {
                                    instance: u,
                                    output: o.name.clone(),
                                }
                            }));
                        } else {
                            sources.push(InputSource::Upstream {
                                instance: u,
                                output: output.clone(),
                            });
                        }
                    }
                }
            }
        }
        if !many && sources.len() > 1 {
            diags.push(
                Diagnostic::new(
                    format!(
                        "input `{}` of `{name}` receives {} artifacts, but the port takes one",
                        decl.port,
                        sources.len()
                    ),
                    decl.port_span,
                )
                .hint("select one instance, e.g. `stage[key=value].output`"),
            );
        }
        inputs.push(Input {
            port: decl.port.clone(),
            sources,
        });
    }
    if let Some(b) = builtin {
        for p in &b.inputs {
            if !p.optional && !s.inputs.iter().any(|d| d.port == p.name) {
                diags.push(
                    Diagnostic::new(
                        format!(
                            "stage `{}` is missing input `{}` of `{}`",
                            s.name, p.name, b.name
                        ),
                        s.name_span,
                    )
                    .hint(format!("{}: {}", p.name, p.doc)),
                );
            }
        }
    }
    inputs.sort_by(|a, b| a.port.cmp(&b.port));

    // Body.
    let body = match (&s.body, builtin) {
        (DeclBody::Builtin { uses, .. }, Some(b)) => Body::Builtin {
            name: uses.clone(),
            version: b.version,
        },
        (DeclBody::Cmd { argv }, _) => {
            let mut out = Vec::new();
            for (word, span) in argv {
                match interpolate_text(word, *span, globals, true) {
                    Ok(w) => {
                        check_placeholders(&w, *span, &inputs, &outputs, &params, &name, diags);
                        out.push(w);
                    }
                    Err(d) => diags.push(d),
                }
            }
            Body::Cmd { argv: out }
        }
        _ => return None,
    };
    let device = match (builtin, &s.device) {
        (Some(b), Some((d, _))) if b.device_dependent => Some(d.clone()),
        (Some(b), None) if b.device_dependent => Some("auto".to_string()),
        (_, Some((_, span))) => {
            diags.push(
                Diagnostic::new(
                    format!(
                        "stage `{}` does not run on a device; `device` has no effect",
                        s.name
                    ),
                    *span,
                )
                .hint("remove `device:`"),
            );
            None
        }
        _ => None,
    };
    if diags.len() > errors_before {
        return None;
    }
    let mut env: Vec<String> = s.env.iter().map(|(e, _)| e.clone()).collect();
    env.sort();
    env.dedup();
    let mut outputs = outputs;
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    Some(Instance {
        name,
        stage: s.name.clone(),
        matrix: my_coords,
        body,
        kind: s
            .kind
            .or(builtin.map(|b| b.kind))
            .unwrap_or(StageKind::Generator),
        params,
        inputs,
        outputs,
        env,
        resources: s.resources,
        device,
        uses_torch: builtin.is_some_and(|b| b.uses_torch),
        device_dependent: builtin.is_some_and(|b| b.device_dependent),
        provenance: None,
        executor: s.executor.unwrap_or_default(),
        gathers_all: s
            .inputs
            .iter()
            .flat_map(|d| &d.refs)
            .any(|r| matches!(r, RefDecl::Everything { .. })),
        span: s.name_span,
    })
}

/// Checks `${inputs.x}` / `${outputs.x}` / `${params.x}` in a command word against the stage.
fn check_placeholders(
    word: &str,
    span: Span,
    inputs: &[Input],
    outputs: &[Output],
    params: &BTreeMap<String, Json>,
    inst: &str,
    diags: &mut Vec<Diagnostic>,
) {
    for (kind, name) in placeholders(word) {
        let ok = match kind {
            "inputs" => match inputs.iter().find(|i| i.port == name) {
                Some(i) => {
                    if i.sources.len() != 1 && word != format!("${{inputs.{name}}}") {
                        diags.push(Diagnostic::new(format!("`${{inputs.{name}}}` of `{inst}` stands for {} paths and must be a whole argument", i.sources.len()), span));
                    }
                    true
                }
                None => false,
            },
            "outputs" => outputs.iter().any(|o| o.name == name),
            "params" => params.contains_key(name),
            _ => true,
        };
        if !ok {
            diags.push(Diagnostic::new(
                format!(
                    "`${{{kind}.{name}}}` in the command of `{inst}` names no declared {}",
                    &kind[..kind.len() - 1]
                ),
                span,
            ));
        }
    }
}

/// `${inputs.x}`-style placeholders in a command word, as (kind, name).
pub fn placeholders(word: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = word;
    while let Some(i) = rest.find("${") {
        let body = &rest[i + 2..];
        let Some(end) = body.find('}') else { break };
        if let Some((kind, name)) = body[..end].split_once('.') {
            out.push((kind, name));
        }
        rest = &body[end + 1..];
    }
    out
}
