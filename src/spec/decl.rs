//! Pass 2 of loading a pipeline: the YAML tree → per-stage declarations.
//!
//! Checks the shape of the file (known keys, expected types, names that are safe to use in paths
//! and references) and records spans for the next pass. Values that may interpolate global params
//! (`params`, `matrix`, `foreach`) stay YAML nodes here; `resolve` turns them into JSON.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::yaml::{Node, Span, Value};
use super::{Executor, Resources, SlurmOptions, PIPELINE_FORMAT};
use crate::diag::{did_you_mean, Diagnostic};
use crate::registry::{Registry, StageKind};

pub struct Decls {
    pub params: Vec<(String, Span, Json)>,
    pub stages: Vec<StageDecl>,
    /// The top-level `executor:` (default for every stage).
    pub executor: Option<Executor>,
    pub slurm: SlurmOptions,
}

impl Decls {
    pub fn params_values(&self) -> BTreeMap<String, Json> {
        self.params
            .iter()
            .map(|(k, _, v)| (k.clone(), v.clone()))
            .collect()
    }
}

pub struct StageDecl {
    pub name: String,
    pub name_span: Span,
    pub body: DeclBody,
    pub kind: Option<StageKind>,
    pub inputs: Vec<InputDecl>,
    pub outputs: Vec<OutputDecl>,
    pub outputs_span: Option<Span>,
    pub params: Vec<(String, Span, Node)>,
    pub sweep: Option<Sweep>,
    pub env: Vec<(String, Span)>,
    pub resources: Resources,
    pub device: Option<(String, Span)>,
    pub executor: Option<Executor>,
}

impl StageDecl {
    /// A stage with nothing declared but its name and body.
    pub fn new(name: String, name_span: Span, body: DeclBody) -> StageDecl {
        StageDecl {
            name,
            name_span,
            body,
            kind: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            outputs_span: None,
            params: Vec::new(),
            sweep: None,
            env: Vec::new(),
            resources: Resources::default(),
            device: None,
            executor: None,
        }
    }
}

pub enum DeclBody {
    Builtin {
        uses: String,
    },
    Cmd {
        argv: Vec<(String, Span)>,
    },
    /// Neither `uses` nor `cmd` (already reported).
    Missing,
}

pub struct InputDecl {
    pub port: String,
    pub port_span: Span,
    pub refs: Vec<RefDecl>,
}

pub enum RefDecl {
    Stage {
        stage: String,
        selector: SelectorDecl,
        output: String,
        span: Span,
    },
    Path {
        path: String,
    },
    /// `"*"`: every output of every other stage (for a report that gathers a whole pipeline).
    Everything {
        span: Span,
    },
    /// `{hf: ORG/NAME, revision: REV}`: a model in the local Hugging Face cache.
    Hf {
        repo: String,
        revision: String,
        span: Span,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectorDecl {
    /// No brackets: bind sweep keys shared with the consumer, gather the rest.
    Bind,
    /// `[*]`: every instance.
    All,
    /// `[k=v,...]` with the raw value text.
    Pinned(Vec<(String, String)>),
}

pub struct OutputDecl {
    pub name: String,
    pub path: String,
}

pub enum Sweep {
    /// `matrix: {key: [values...]}`: the cartesian product.
    Matrix(Vec<(String, Span, Node)>),
    /// `foreach: [{key: value, ...}, ...]`: explicit points, all with the same keys.
    Foreach(Vec<Node>),
}

const TOP_KEYS: &[&str] = &["version", "params", "stages", "executor", "slurm"];
const STAGE_KEYS: &[&str] = &[
    "uses",
    "cmd",
    "kind",
    "desc",
    "inputs",
    "outputs",
    "params",
    "matrix",
    "foreach",
    "env",
    "resources",
    "device",
    "executor",
];

/// Stage, port, output and param names: safe in paths, references and argv placeholders.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !s.starts_with('-')
}

pub fn read(tree: &Node, registry: &Registry, diags: &mut Vec<Diagnostic>) -> Decls {
    let mut decls = Decls {
        params: Vec::new(),
        stages: Vec::new(),
        executor: None,
        slurm: SlurmOptions::default(),
    };
    let Some(top) = tree.as_map() else {
        diags.push(
            Diagnostic::new(
                format!(
                    "expected a map with `stages:` at the top, found {}",
                    tree.type_name()
                ),
                tree.span,
            )
            .hint("a pipeline file starts with `stages:` (and optionally `params:`)"),
        );
        return decls;
    };
    for (k, v) in top {
        let key = k.as_str().unwrap_or_default();
        match key {
            "version" => {
                if v.value != Value::Int(PIPELINE_FORMAT) {
                    diags.push(Diagnostic::new(format!("unsupported pipeline format version; this azimuth reads version {PIPELINE_FORMAT}"), v.span));
                }
            }
            "params" => read_global_params(v, &mut decls, diags),
            "stages" => {}
            "executor" => decls.executor = read_executor(v, diags),
            "slurm" => read_slurm(v, &mut decls.slurm, diags),
            other => diags.push(unknown_key(other, k.span, TOP_KEYS, "top-level key", "")),
        }
    }
    match tree.get("stages") {
        None => diags.push(
            Diagnostic::new("no `stages:` in the pipeline", tree.span)
                .hint("declare at least one stage under `stages:`"),
        ),
        Some(stages) => match stages.as_map() {
            Some(m) => {
                for (k, v) in m {
                    if let Some(s) = read_stage(k, v, registry, diags) {
                        decls.stages.push(s);
                    }
                }
            }
            None => diags.push(Diagnostic::new(
                format!(
                    "`stages` must be a map of stage name to stage, found {}",
                    stages.type_name()
                ),
                stages.span,
            )),
        },
    }
    decls
}

fn unknown_key(key: &str, span: Span, known: &[&str], what: &str, place: &str) -> Diagnostic {
    let d = Diagnostic::new(format!("unknown {what} `{key}`{place}"), span);
    match did_you_mean(key, known.iter().copied()) {
        Some(s) => d.hint(format!("did you mean `{s}`?")),
        None => d.hint(format!("expected one of: {}", known.join(", "))),
    }
}

fn read_global_params(v: &Node, decls: &mut Decls, diags: &mut Vec<Diagnostic>) {
    let Some(m) = v.as_map() else {
        diags.push(Diagnostic::new(
            format!("`params` must be a map, found {}", v.type_name()),
            v.span,
        ));
        return;
    };
    for (k, val) in m {
        let name = k.as_str().unwrap_or_default();
        if !valid_name(name) {
            diags.push(bad_name("param", name, k.span));
            continue;
        }
        match to_json(val, &mut |s, _| Ok(Json::String(s.to_string()))) {
            Ok(j) => decls.params.push((name.to_string(), k.span, j)),
            Err(d) => diags.push(d),
        }
    }
}

fn bad_name(what: &str, name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(format!("invalid {what} name `{name}`"), span)
        .hint("use letters, digits, `_` and `-` (no dots, brackets, slashes or spaces)")
}

/// YAML node → JSON, with `on_str` deciding what a string becomes (interpolation).
pub fn to_json(
    n: &Node,
    on_str: &mut dyn FnMut(&str, Span) -> Result<Json, Diagnostic>,
) -> Result<Json, Diagnostic> {
    Ok(match &n.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(num) => Json::Number(num),
            None => {
                return Err(Diagnostic::new(
                    "params must be finite numbers (no .inf or .nan)",
                    n.span,
                ))
            }
        },
        Value::Str(s) => on_str(s, n.span)?,
        Value::Seq(items) => Json::Array(
            items
                .iter()
                .map(|i| to_json(i, on_str))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                m.insert(
                    k.as_str().unwrap_or_default().to_string(),
                    to_json(v, on_str)?,
                );
            }
            Json::Object(m)
        }
    })
}

fn read_stage(
    k: &Node,
    v: &Node,
    registry: &Registry,
    diags: &mut Vec<Diagnostic>,
) -> Option<StageDecl> {
    let name = k.as_str().unwrap_or_default().to_string();
    if !valid_name(&name) {
        diags.push(bad_name("stage", &name, k.span));
        return None;
    }
    let Some(map) = v.as_map() else {
        diags.push(Diagnostic::new(
            format!(
                "stage `{name}` must be a map with `uses:` or `cmd:`, found {}",
                v.type_name()
            ),
            v.span,
        ));
        return None;
    };
    let mut s = StageDecl::new(name.clone(), k.span, DeclBody::Missing);
    let mut unknown_keys = false;
    for (key_node, val) in map {
        let key = key_node.as_str().unwrap_or_default();
        match key {
            "uses" => match val.as_str() {
                Some(u) => {
                    if registry.find(u).is_none() {
                        let mut d = Diagnostic::new(
                            format!("unknown built-in stage `{u}` in stage `{name}`"),
                            val.span,
                        );
                        d = match did_you_mean(u, registry.names()) {
                            Some(c) => d.hint(format!("did you mean `{c}`?")),
                            None if registry.builtins.is_empty() => {
                                d.hint("this azimuth was built without built-in stages (feature `builtin-stages`)")
                            }
                            None => d.hint(format!("built-in stages: {}", registry.names().collect::<Vec<_>>().join(", "))),
                        };
                        diags.push(d);
                    }
                    s.body = DeclBody::Builtin {
                        uses: u.to_string(),
                    };
                }
                None => diags.push(Diagnostic::new(
                    format!(
                        "`uses` must name a built-in stage, found {}",
                        val.type_name()
                    ),
                    val.span,
                )),
            },
            "cmd" => match read_cmd(val) {
                Ok(argv) => s.body = DeclBody::Cmd { argv },
                Err(d) => diags.push(d),
            },
            "kind" => match val.as_str() {
                Some("generator") => s.kind = Some(StageKind::Generator),
                Some("analyzer") => s.kind = Some(StageKind::Analyzer),
                _ => diags.push(Diagnostic::new(
                    "`kind` must be `generator` or `analyzer`",
                    val.span,
                )),
            },
            "desc" => {
                if val.as_str().is_none() {
                    diags.push(Diagnostic::new("`desc` must be a string", val.span));
                }
            }
            "inputs" => read_inputs(&name, val, &mut s, diags),
            "outputs" => {
                s.outputs_span = Some(key_node.span);
                read_outputs(val, &mut s, diags);
            }
            "params" => match val.as_map() {
                Some(m) => {
                    for (pk, pv) in m {
                        let pname = pk.as_str().unwrap_or_default();
                        if valid_name(pname) {
                            s.params.push((pname.to_string(), pk.span, pv.clone()));
                        } else {
                            diags.push(bad_name("param", pname, pk.span));
                        }
                    }
                }
                None => diags.push(Diagnostic::new(
                    format!("`params` must be a map, found {}", val.type_name()),
                    val.span,
                )),
            },
            "matrix" | "foreach" if s.sweep.is_some() => diags.push(
                Diagnostic::new(
                    format!("stage `{name}` has both `matrix` and `foreach`"),
                    key_node.span,
                )
                .hint("use one of them"),
            ),
            "matrix" => match val.as_map() {
                Some(m) if !m.is_empty() => {
                    let mut keys = Vec::new();
                    for (mk, mv) in m {
                        let mname = mk.as_str().unwrap_or_default();
                        if !valid_name(mname) {
                            diags.push(bad_name("matrix key", mname, mk.span));
                        } else {
                            keys.push((mname.to_string(), mk.span, mv.clone()));
                        }
                    }
                    s.sweep = Some(Sweep::Matrix(keys));
                }
                _ => diags.push(Diagnostic::new(
                    "`matrix` must be a non-empty map of param name to a list of values",
                    val.span,
                )),
            },
            "foreach" => match val.as_seq() {
                Some(items) if !items.is_empty() => s.sweep = Some(Sweep::Foreach(items.to_vec())),
                _ => diags.push(Diagnostic::new(
                    "`foreach` must be a non-empty list of param maps",
                    val.span,
                )),
            },
            "env" => match val.as_seq() {
                Some(items) => {
                    for it in items {
                        match it.as_str() {
                            Some(e)
                                if !e.is_empty()
                                    && e.bytes()
                                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                                    && !e.as_bytes()[0].is_ascii_digit() =>
                            {
                                s.env.push((e.to_string(), it.span))
                            }
                            _ => diags.push(Diagnostic::new(
                                "`env` entries must be environment variable names",
                                it.span,
                            )),
                        }
                    }
                }
                None => diags.push(Diagnostic::new(
                    "`env` must be a list of environment variable names",
                    val.span,
                )),
            },
            "resources" => read_resources(val, &mut s.resources, diags),
            "executor" => s.executor = read_executor(val, diags),
            "device" => match val.as_str() {
                Some(d @ ("auto" | "cpu" | "cuda" | "mps")) => {
                    s.device = Some((d.to_string(), val.span))
                }
                _ => diags.push(Diagnostic::new(
                    "`device` must be one of auto, cpu, cuda, mps",
                    val.span,
                )),
            },
            other => {
                unknown_keys = true;
                diags.push(unknown_key(
                    other,
                    key_node.span,
                    STAGE_KEYS,
                    "key",
                    &format!(" in stage `{name}`"),
                ))
            }
        }
    }
    match (
        &s.body,
        map.iter().any(|(k, _)| k.as_str() == Some("uses")),
        map.iter().any(|(k, _)| k.as_str() == Some("cmd")),
    ) {
        (_, true, true) => diags.push(
            Diagnostic::new(format!("stage `{name}` has both `uses` and `cmd`"), k.span)
                .hint("a stage is either a built-in (`uses`) or a command (`cmd`)"),
        ),
        (_, false, false) => diags.push(
            Diagnostic::new(
                format!("stage `{name}` has neither `uses` nor `cmd`"),
                k.span,
            )
            .hint("add `uses: <built-in stage>` or `cmd: [program, args...]`"),
        ),
        _ => {}
    }
    if let DeclBody::Builtin { .. } = s.body {
        if let Some(span) = s.outputs_span {
            diags.push(
                Diagnostic::new(
                    format!("stage `{name}` uses a built-in stage, which declares its own outputs"),
                    span,
                )
                .hint("remove `outputs:`; see `azimuth stages` for what each built-in writes"),
            );
        }
    }
    if let DeclBody::Cmd { .. } = s.body {
        // (A misspelt `outputs` is already reported as an unknown key.)
        if s.outputs.is_empty() && s.outputs_span.is_none() && !unknown_keys {
            diags.push(
                Diagnostic::new(
                    format!("command stage `{name}` declares no outputs"),
                    k.span,
                )
                .hint("declare what it writes, e.g. `outputs: {report: report.txt}`"),
            );
        }
    }
    Some(s)
}

fn read_cmd(val: &Node) -> Result<Vec<(String, Span)>, Diagnostic> {
    match &val.value {
        Value::Str(s) => {
            let words = split_command(s).map_err(|m| {
                Diagnostic::new(m, val.span)
                    .hint("use the list form `cmd: [sh, -c, \"...\"]` if you need a shell")
            })?;
            if words.is_empty() {
                return Err(Diagnostic::new("`cmd` is empty", val.span));
            }
            Ok(words.into_iter().map(|w| (w, val.span)).collect())
        }
        Value::Seq(items) if !items.is_empty() => items
            .iter()
            .map(|i| match &i.value {
                Value::Str(s) => Ok((s.clone(), i.span)),
                Value::Int(n) => Ok((n.to_string(), i.span)),
                Value::Float(f) => Ok((format!("{f:?}"), i.span)),
                Value::Bool(b) => Ok((b.to_string(), i.span)),
                _ => Err(Diagnostic::new(
                    format!("command arguments must be strings, found {}", i.type_name()),
                    i.span,
                )),
            })
            .collect(),
        _ => Err(Diagnostic::new(
            "`cmd` must be a command line or a non-empty list of arguments",
            val.span,
        )),
    }
}

/// Splits a command line into words like a POSIX shell would for quoting (single quotes, double
/// quotes, backslashes), but refuses shell operators: the command is never run through a shell.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated single quote in `cmd`".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch)
                            }
                            None => return Err("unterminated double quote in `cmd`".into()),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated double quote in `cmd`".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(ch) = chars.next() {
                    cur.push(ch);
                }
            }
            '|' | '&' | ';' | '<' | '>' | '`' | '(' | ')' => {
                return Err(format!(
                    "shell operator `{c}` in `cmd`; commands are run without a shell"
                ));
            }
            '$' if chars.peek() == Some(&'(') => {
                return Err(
                    "command substitution `$(` in `cmd`; commands are run without a shell".into(),
                );
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn read_inputs(stage: &str, val: &Node, s: &mut StageDecl, diags: &mut Vec<Diagnostic>) {
    let Some(m) = val.as_map() else {
        diags.push(Diagnostic::new(
            format!("`inputs` of stage `{stage}` must be a map of input name to a reference"),
            val.span,
        ));
        return;
    };
    for (pk, pv) in m {
        let port = pk.as_str().unwrap_or_default();
        if !valid_name(port) {
            diags.push(bad_name("input", port, pk.span));
            continue;
        }
        let mut refs = Vec::new();
        let items: Vec<&Node> = match &pv.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![pv],
        };
        if items.is_empty() {
            diags.push(Diagnostic::new(
                format!("input `{port}` of stage `{stage}` is an empty list"),
                pv.span,
            ));
        }
        for it in items {
            match read_ref(it) {
                Ok(r) => refs.push(r),
                Err(d) => diags.push(d),
            }
        }
        s.inputs.push(InputDecl {
            port: port.to_string(),
            port_span: pk.span,
            refs,
        });
    }
}

fn read_ref(n: &Node) -> Result<RefDecl, Diagnostic> {
    if let Some(repo) = n.get("hf") {
        let map = n.as_map().expect("has a key");
        if let Some((k, _)) = map
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), Some("hf" | "revision")))
        {
            return Err(Diagnostic::new(
                format!(
                    "unknown key `{}` in a Hugging Face input",
                    k.as_str().unwrap_or("?")
                ),
                k.span,
            )
            .hint("a Hugging Face input is `{hf: ORG/NAME}` or `{hf: ORG/NAME, revision: main}`"));
        }
        let Some(r) = repo.as_str() else {
            return Err(Diagnostic::new(
                "`hf` must be a model id string like `ORG/NAME`",
                repo.span,
            ));
        };
        if let Err(m) = super::hf::check_repo_id(r) {
            return Err(Diagnostic::new(m, repo.span));
        }
        let revision = match n.get("revision") {
            None => "main".to_string(),
            Some(v) => match v.as_str() {
                Some(s) if !s.is_empty() && !s.contains('/') && s != ".." && s != "." => {
                    s.to_string()
                }
                _ => {
                    return Err(Diagnostic::new(
                        "`revision` must be a branch, tag or 40-hex commit of the cached model",
                        v.span,
                    ))
                }
            },
        };
        return Ok(RefDecl::Hf {
            repo: r.to_string(),
            revision,
            span: n.span,
        });
    }
    if let Some(path) = n.get("path") {
        if n.as_map().map(|m| m.len()) != Some(1) {
            return Err(Diagnostic::new(
                "an external input is `{path: relative/path}` and nothing else",
                n.span,
            ));
        }
        let Some(p) = path.as_str() else {
            return Err(Diagnostic::new("`path` must be a string", path.span));
        };
        return match normalize_rel_path(p) {
            Ok(p) => Ok(RefDecl::Path { path: p }),
            Err(m) => Err(Diagnostic::new(format!("input path `{p}` {m}"), path.span)
                .hint("external inputs live inside the pipeline's directory; use a path relative to it")),
        };
    }
    let Some(text) = n.as_str() else {
        return Err(Diagnostic::new(
            format!(
                "expected a reference `stage.output` or `{{path: ...}}`, found {}",
                n.type_name()
            ),
            n.span,
        ));
    };
    if text.trim() == "*" {
        return Ok(RefDecl::Everything { span: n.span });
    }
    parse_ref(text).map_err(|m| Diagnostic::new(m, n.span).hint("write `stage.output`, `stage[key=value].output`, `stage[*].output`, `stage.*` (all its outputs), `\"*\"` (every stage's outputs), `{path: file}` or `{hf: ORG/NAME}`")).map(
        |(stage, selector, output)| RefDecl::Stage { stage, selector, output, span: n.span },
    )
}

/// Parses `stage.output`, `stage[k=v,...].output` or `stage[*].output`; the output `*` means all
/// of the stage's outputs.
pub fn parse_ref(text: &str) -> Result<(String, SelectorDecl, String), String> {
    let bad = || format!("`{text}` is not a reference to a stage output");
    let (head, output) = text.rsplit_once('.').ok_or_else(bad)?;
    let (stage, selector) = match head.find('[') {
        None => (head.to_string(), SelectorDecl::Bind),
        Some(i) => {
            let inner = head[i..]
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(bad)?;
            let sel = if inner.trim() == "*" {
                SelectorDecl::All
            } else {
                let mut pins = Vec::new();
                for part in inner.split(',') {
                    let (k, v) = part.split_once('=').ok_or_else(|| {
                        format!("selector `[{inner}]` must be `key=value` pairs or `*`")
                    })?;
                    pins.push((k.trim().to_string(), v.trim().to_string()));
                }
                SelectorDecl::Pinned(pins)
            };
            (head[..i].to_string(), sel)
        }
    };
    if !valid_name(&stage) || !(valid_name(output) || output == "*") {
        return Err(bad());
    }
    Ok((stage, selector, output.to_string()))
}

/// Normalizes a relative path (`./a//b` → `a/b`); refuses absolute paths and `..`.
pub fn normalize_rel_path(p: &str) -> Result<String, &'static str> {
    if p.starts_with('/') || p.starts_with('\\') || p.contains(':') && cfg!(windows) {
        return Err("is absolute");
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("leaves its directory (`..`)"),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err("is empty");
    }
    Ok(parts.join("/"))
}

fn read_outputs(val: &Node, s: &mut StageDecl, diags: &mut Vec<Diagnostic>) {
    let Some(m) = val.as_map() else {
        diags.push(
            Diagnostic::new(
                "`outputs` must be a map of output name to the path the command writes",
                val.span,
            )
            .hint("e.g. `outputs: {report: report.txt}`"),
        );
        return;
    };
    for (ok, ov) in m {
        let name = ok.as_str().unwrap_or_default();
        if !valid_name(name) {
            diags.push(bad_name("output", name, ok.span));
            continue;
        }
        let Some(path) = ov.as_str() else {
            diags.push(Diagnostic::new(
                format!(
                    "output `{name}` must be a relative path, found {}",
                    ov.type_name()
                ),
                ov.span,
            ));
            continue;
        };
        match normalize_rel_path(path) {
            Ok(p) => {
                if let Some(other) = s.outputs.iter().find(|o| o.path == p || p.starts_with(&format!("{}/", o.path)) || o.path.starts_with(&format!("{p}/"))) {
                    diags.push(Diagnostic::new(format!("outputs `{}` and `{name}` of stage `{}` overlap (`{}` and `{p}`)", other.name, s.name, other.path), ov.span)
                        .hint("each output must be its own file or directory"));
                    continue;
                }
                s.outputs.push(OutputDecl { name: name.to_string(), path: p })
            }
            Err(m) => diags.push(Diagnostic::new(format!("output path `{path}` of `{name}` {m}"), ov.span)
                .hint("outputs are written inside the stage's own directory; use a relative path such as `report.txt`")),
        }
    }
}

fn read_executor(val: &Node, diags: &mut Vec<Diagnostic>) -> Option<Executor> {
    match val.as_str() {
        Some("local") => Some(Executor::Local),
        Some("slurm") => Some(Executor::Slurm),
        _ => {
            diags.push(
                Diagnostic::new("`executor` must be `local` or `slurm`", val.span)
                    .hint("`slurm` submits each stage with sbatch; see README, \"Running on a Slurm cluster\""),
            );
            None
        }
    }
}

fn read_slurm(val: &Node, o: &mut SlurmOptions, diags: &mut Vec<Diagnostic>) {
    let Some(m) = val.as_map() else {
        diags.push(Diagnostic::new(
            "`slurm` must be a map (partition, account, qos, args)",
            val.span,
        ));
        return;
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let text = |v: &Node| v.as_str().map(str::to_string);
        match key {
            "partition" | "account" | "qos" => match text(v) {
                Some(t) if !t.is_empty() && !t.starts_with('-') => {
                    *match key {
                        "partition" => &mut o.partition,
                        "account" => &mut o.account,
                        _ => &mut o.qos,
                    } = Some(t)
                }
                _ => diags.push(Diagnostic::new(format!("`slurm.{key}` must be a name"), v.span)),
            },
            "args" => match &v.value {
                Value::Seq(items) => {
                    for it in items {
                        match text(it) {
                            Some(t) if t.starts_with('-') => o.args.push(t),
                            _ => diags.push(
                                Diagnostic::new("`slurm.args` entries are sbatch options", it.span)
                                    .hint("e.g. `args: [\"--constraint=a100\", \"--exclusive\"]`"),
                            ),
                        }
                    }
                }
                _ => diags.push(Diagnostic::new(
                    "`slurm.args` must be a list of sbatch options",
                    v.span,
                )),
            },
            other => diags.push(unknown_key(
                other,
                k.span,
                &["partition", "account", "qos", "args"],
                "key",
                " in `slurm`",
            )),
        }
    }
}

/// Seconds from `3600`, `"90s"`, `"30m"`, `"2h"`, `"1d"`, `"1:30:00"` or `"45:00"`.
fn parse_seconds(v: &Node) -> Option<u64> {
    match &v.value {
        Value::Int(n) if *n > 0 => Some(*n as u64),
        Value::Str(s) => {
            let s = s.trim();
            if s.contains(':') {
                let parts: Vec<u64> = s
                    .split(':')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()?;
                return match parts[..] {
                    [m, sec] if sec < 60 => Some(m * 60 + sec),
                    [h, m, sec] if m < 60 && sec < 60 => Some(h * 3600 + m * 60 + sec),
                    _ => None,
                };
            }
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let mult = match unit.trim() {
                "" | "s" => 1,
                "m" | "min" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return None,
            };
            Some(n * mult).filter(|&t| t > 0)
        }
        _ => None,
    }
}

fn read_resources(val: &Node, r: &mut Resources, diags: &mut Vec<Diagnostic>) {
    let Some(m) = val.as_map() else {
        diags.push(Diagnostic::new(
            "`resources` must be a map (cpus, gpus, memory, time)",
            val.span,
        ));
        return;
    };
    for (k, v) in m {
        match (k.as_str().unwrap_or_default(), &v.value) {
            ("cpus", Value::Int(n)) if (1..=4096).contains(n) => r.cpus = *n as u32,
            ("gpus", Value::Int(n)) if (0..=64).contains(n) => r.gpus = *n as u32,
            ("memory", _) => match parse_bytes(v) {
                Some(b) => r.memory = b,
                None => diags.push(Diagnostic::new(
                    "`memory` must be a size such as `512MiB`, `4GiB` or a number of bytes",
                    v.span,
                )),
            },
            ("time", _) => match parse_seconds(v) {
                Some(t) => r.time = t,
                None => diags.push(Diagnostic::new(
                    "`time` must be a duration such as `90m`, `2h`, `1:30:00` or a number of seconds",
                    v.span,
                )),
            },
            ("cpus", _) => diags.push(Diagnostic::new(
                "`cpus` must be a whole number from 1",
                v.span,
            )),
            ("gpus", _) => diags.push(Diagnostic::new(
                "`gpus` must be a whole number from 0",
                v.span,
            )),
            (other, _) => diags.push(unknown_key(
                other,
                k.span,
                &["cpus", "gpus", "memory", "time"],
                "resource",
                "",
            )),
        }
    }
}

fn parse_bytes(v: &Node) -> Option<u64> {
    match &v.value {
        Value::Int(n) if *n >= 0 => Some(*n as u64),
        Value::Str(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let num: f64 = num.parse().ok()?;
            let mult: f64 = match unit.trim() {
                "" | "B" => 1.0,
                "KB" | "kB" => 1e3,
                "MB" => 1e6,
                "GB" => 1e9,
                "TB" => 1e12,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                "TiB" => 1024f64.powi(4),
                _ => return None,
            };
            Some((num * mult) as u64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_split_like_a_shell_without_one() {
        assert_eq!(
            split_command("python3 a.py --x 'a b' \"c d\" e\\ f").unwrap(),
            ["python3", "a.py", "--x", "a b", "c d", "e f"]
        );
        assert!(split_command("a | b").is_err());
        assert!(split_command("a > out").is_err());
        assert!(split_command("echo $(id)").is_err());
        assert!(split_command("echo 'x").is_err());
        assert_eq!(
            split_command("cp ${inputs.a} ${outputs.b}").unwrap(),
            ["cp", "${inputs.a}", "${outputs.b}"]
        );
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parse_ref("gen.w").unwrap(),
            ("gen".into(), SelectorDecl::Bind, "w".into())
        );
        assert_eq!(
            parse_ref("gen[*].w").unwrap(),
            ("gen".into(), SelectorDecl::All, "w".into())
        );
        assert_eq!(
            parse_ref("sim[sigma=1e-9, seed=2].table").unwrap(),
            (
                "sim".into(),
                SelectorDecl::Pinned(vec![
                    ("sigma".into(), "1e-9".into()),
                    ("seed".into(), "2".into())
                ]),
                "table".into()
            )
        );
        assert!(parse_ref("gen").is_err());
        assert!(parse_ref("../x.y").is_err());
    }

    #[test]
    fn relative_paths_normalize_and_refuse_escapes() {
        assert_eq!(normalize_rel_path("./data//w.bin").unwrap(), "data/w.bin");
        assert!(normalize_rel_path("/etc/passwd").is_err());
        assert!(normalize_rel_path("a/../../b").is_err());
        assert!(normalize_rel_path(".").is_err());
    }
}
