//! A stage's key: every ingredient that can change its outputs, in one struct, hashed canonically.
//!
//! [`KeyRecord`] lists the ingredients: the cache-format version; the stage identity (built-in
//! name + `VERSION`, or the command template for `cmd` stages, whose code files are ordinary
//! inputs); canonical params; the content digest of every input; the values of declared
//! environment variables; and toolchain facts (libtorch version, device kind) for stages that
//! declare them. [`KeyRecord::key`] hashes a versioned, length-prefixed encoding of it, so no two
//! different records can encode alike. The record itself is stored with each run so that
//! [`diff`] can explain, field by field, why a stage is dirty.
//!
//! Deliberately absent: absolute paths, mtimes, YAML key order and comments, instance names.
//! Pure: takes values, reads no files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::hash::Digest;

/// Bump when the meaning or encoding of keys, records or the store layout changes.
pub const CACHE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageIdentity {
    Builtin { name: String, version: u32 },
    Cmd { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub format: u32,
    pub stage: StageIdentity,
    pub params: BTreeMap<String, Json>,
    /// Input port → digests of its artifacts, in binding order.
    pub inputs: BTreeMap<String, Vec<Digest>>,
    /// Output name → the relative path the stage writes it to.
    pub outputs: BTreeMap<String, String>,
    /// Declared environment variables → value (`None`: unset).
    pub env: BTreeMap<String, Option<String>>,
    /// `libtorch`, `device`: facts about the toolchain that change outputs.
    pub toolchain: BTreeMap<String, String>,
    /// For stages that read it: the provenance of the inputs and the stage graph (see
    /// `azimuth_stage_api::provenance`), without digests. Encoded only when present, so the keys
    /// of every other stage do not depend on this field existing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Json>,
}

/// Length-prefixed canonical encoder: every field is `tag, u64 length, bytes`.
struct Encoder(Vec<u8>);

impl Encoder {
    fn field(&mut self, tag: &str, bytes: &[u8]) {
        self.0.extend_from_slice(&(tag.len() as u64).to_le_bytes());
        self.0.extend_from_slice(tag.as_bytes());
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn count(&mut self, tag: &str, n: usize) {
        self.field(tag, &(n as u64).to_le_bytes());
    }
}

/// JSON with sorted object keys and shortest round-trip floats (serde_json's `Map` is a BTreeMap
/// because the `preserve_order` feature is off; a test guards that).
pub fn canonical_json(v: &Json) -> String {
    serde_json::to_string(v).expect("JSON values serialize")
}

impl KeyRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder(Vec::new());
        e.field("azimuth-key", &self.format.to_le_bytes());
        match &self.stage {
            StageIdentity::Builtin { name, version } => {
                e.field("builtin", name.as_bytes());
                e.field("version", &version.to_le_bytes());
            }
            StageIdentity::Cmd { argv } => {
                e.count("cmd", argv.len());
                for a in argv {
                    e.field("arg", a.as_bytes());
                }
            }
        }
        e.count("params", self.params.len());
        for (k, v) in &self.params {
            e.field("name", k.as_bytes());
            e.field("value", canonical_json(v).as_bytes());
        }
        e.count("inputs", self.inputs.len());
        for (k, ds) in &self.inputs {
            e.field("port", k.as_bytes());
            e.count("artifacts", ds.len());
            for d in ds {
                e.field("digest", &d.0);
            }
        }
        e.count("outputs", self.outputs.len());
        for (k, p) in &self.outputs {
            e.field("name", k.as_bytes());
            e.field("path", p.as_bytes());
        }
        e.count("env", self.env.len());
        for (k, v) in &self.env {
            e.field("name", k.as_bytes());
            match v {
                Some(v) => e.field("set", v.as_bytes()),
                None => e.field("unset", b""),
            }
        }
        e.count("toolchain", self.toolchain.len());
        for (k, v) in &self.toolchain {
            e.field("name", k.as_bytes());
            e.field("value", v.as_bytes());
        }
        if let Some(p) = &self.provenance {
            e.field("provenance", canonical_json(p).as_bytes());
        }
        e.0
    }

    pub fn key(&self) -> Digest {
        Digest::of_bytes(&self.encode())
    }
}

/// Why a stage must run. Each variant renders as one sentence and has a stable kebab-case tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    NeverRun,
    Forced,
    UpstreamDirty {
        stage: String,
    },
    FormatChanged {
        old: u32,
        new: u32,
    },
    StageVersionChanged {
        name: String,
        old: u32,
        new: u32,
    },
    StageChanged {
        old: String,
        new: String,
    },
    CommandChanged {
        old: String,
        new: String,
    },
    ParamChanged {
        name: String,
        old: Option<Json>,
        new: Option<Json>,
    },
    InputChanged {
        port: String,
    },
    InputAdded {
        port: String,
    },
    InputRemoved {
        port: String,
    },
    OutputsChanged,
    EnvChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    ToolchainChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    CachedOutputMissing {
        output: String,
    },
    /// The workspace copy of an output, a hard link to its object, was edited in place: the
    /// object no longer holds what the stage produced and is discarded before the stage re-runs.
    OutputModifiedInPlace {
        output: String,
        object: Digest,
    },
    /// The provenance a report-like stage reads changed: `what` says which part.
    ProvenanceChanged {
        what: String,
    },
    /// The key differs from the last run's, but no ingredient did (a record was removed).
    NoRecord,
}

fn show(v: &Option<Json>) -> String {
    match v {
        None => "(unset)".into(),
        Some(Json::String(s)) => s.clone(),
        Some(v) => canonical_json(v),
    }
}

fn show_str(v: &Option<String>) -> String {
    match v {
        None => "(unset)".into(),
        Some(s) => format!("`{s}`"),
    }
}

impl Reason {
    pub fn tag(&self) -> &'static str {
        match self {
            Reason::NeverRun => "never-run",
            Reason::Forced => "forced",
            Reason::UpstreamDirty { .. } => "upstream-dirty",
            Reason::FormatChanged { .. } => "format-changed",
            Reason::StageVersionChanged { .. } => "stage-version-changed",
            Reason::StageChanged { .. } => "stage-changed",
            Reason::CommandChanged { .. } => "command-changed",
            Reason::ParamChanged { .. } => "param-changed",
            Reason::InputChanged { .. } => "input-changed",
            Reason::InputAdded { .. } => "input-added",
            Reason::InputRemoved { .. } => "input-removed",
            Reason::OutputsChanged => "outputs-changed",
            Reason::EnvChanged { .. } => "env-changed",
            Reason::ToolchainChanged { .. } => "toolchain-changed",
            Reason::CachedOutputMissing { .. } => "cached-output-missing",
            Reason::OutputModifiedInPlace { .. } => "output-modified-in-place",
            Reason::ProvenanceChanged { .. } => "provenance-changed",
            Reason::NoRecord => "no-record",
        }
    }

    pub fn sentence(&self) -> String {
        match self {
            Reason::NeverRun => "never run".into(),
            Reason::Forced => "forced".into(),
            Reason::UpstreamDirty { stage } => format!("upstream `{stage}` dirty"),
            Reason::FormatChanged { old, new } => format!("cache format {old} → {new}"),
            Reason::StageVersionChanged { name, old, new } => {
                format!("stage `{name}` version {old} → {new}")
            }
            Reason::StageChanged { old, new } => format!("stage changed from {old} to {new}"),
            Reason::CommandChanged { old, new } => format!("command `{old}` → `{new}`"),
            Reason::ParamChanged { name, old, new } => {
                format!("param `{name}` {} → {}", show(old), show(new))
            }
            Reason::InputChanged { port } => format!("input `{port}` changed"),
            Reason::InputAdded { port } => format!("input `{port}` added"),
            Reason::InputRemoved { port } => format!("input `{port}` removed"),
            Reason::OutputsChanged => "declared outputs changed".into(),
            Reason::EnvChanged { name, old, new } => {
                format!("env `{name}` {} → {}", show_str(old), show_str(new))
            }
            Reason::ToolchainChanged { name, old, new } => {
                format!("{name} {} → {}", show_str(old), show_str(new))
            }
            Reason::CachedOutputMissing { output } => {
                format!("cached output `{output}` is missing from the store")
            }
            Reason::OutputModifiedInPlace { output, .. } => {
                format!("output `{output}` was edited in place in the workspace, which also changed its cached copy")
            }
            Reason::ProvenanceChanged { what } => format!("{what} changed"),
            Reason::NoRecord => {
                "no run record for this key (the cache was cleared or collected)".into()
            }
        }
    }
}

fn describe_stage(s: &StageIdentity) -> String {
    match s {
        StageIdentity::Builtin { name, version } => format!("built-in `{name}` v{version}"),
        StageIdentity::Cmd { argv } => format!("command `{}`", argv.join(" ")),
    }
}

/// Every ingredient that differs between the last run (`old`) and now (`new`).
pub fn diff(old: &KeyRecord, new: &KeyRecord) -> Vec<Reason> {
    let mut r = Vec::new();
    if old.format != new.format {
        r.push(Reason::FormatChanged {
            old: old.format,
            new: new.format,
        });
    }
    match (&old.stage, &new.stage) {
        (
            StageIdentity::Builtin {
                name: a,
                version: va,
            },
            StageIdentity::Builtin {
                name: b,
                version: vb,
            },
        ) if a == b => {
            if va != vb {
                r.push(Reason::StageVersionChanged {
                    name: a.clone(),
                    old: *va,
                    new: *vb,
                });
            }
        }
        (StageIdentity::Cmd { argv: a }, StageIdentity::Cmd { argv: b }) => {
            if a != b {
                r.push(Reason::CommandChanged {
                    old: a.join(" "),
                    new: b.join(" "),
                });
            }
        }
        (a, b) => r.push(Reason::StageChanged {
            old: describe_stage(a),
            new: describe_stage(b),
        }),
    }
    let names: std::collections::BTreeSet<&String> =
        old.params.keys().chain(new.params.keys()).collect();
    for n in names {
        let (a, b) = (old.params.get(n), new.params.get(n));
        if a != b {
            r.push(Reason::ParamChanged {
                name: n.clone(),
                old: a.cloned(),
                new: b.cloned(),
            });
        }
    }
    let ports: std::collections::BTreeSet<&String> =
        old.inputs.keys().chain(new.inputs.keys()).collect();
    for p in ports {
        match (old.inputs.get(p), new.inputs.get(p)) {
            (Some(a), Some(b)) if a != b => r.push(Reason::InputChanged { port: p.clone() }),
            (None, Some(_)) => r.push(Reason::InputAdded { port: p.clone() }),
            (Some(_), None) => r.push(Reason::InputRemoved { port: p.clone() }),
            _ => {}
        }
    }
    if old.outputs != new.outputs {
        r.push(Reason::OutputsChanged);
    }
    let envs: std::collections::BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for e in envs {
        let (a, b) = (
            old.env.get(e).cloned().flatten(),
            new.env.get(e).cloned().flatten(),
        );
        if a != b || old.env.contains_key(e) != new.env.contains_key(e) {
            r.push(Reason::EnvChanged {
                name: e.clone(),
                old: a,
                new: b,
            });
        }
    }
    let tools: std::collections::BTreeSet<&String> =
        old.toolchain.keys().chain(new.toolchain.keys()).collect();
    for t in tools {
        let (a, b) = (old.toolchain.get(t).cloned(), new.toolchain.get(t).cloned());
        if a != b {
            r.push(Reason::ToolchainChanged {
                name: t.clone(),
                old: a,
                new: b,
            });
        }
    }
    if old.provenance != new.provenance {
        let part = |k: &str| {
            (
                old.provenance.as_ref().and_then(|p| p.get(k)),
                new.provenance.as_ref().and_then(|p| p.get(k)),
            )
        };
        let (ga, gb) = part("graph");
        let (ia, ib) = part("inputs");
        let mut what = Vec::new();
        if ga != gb {
            what.push("the pipeline's stage graph");
        }
        if ia != ib {
            what.push("where its inputs come from (instances or outputs)");
        }
        if what.is_empty() {
            what.push("the provenance of its inputs");
        }
        r.push(Reason::ProvenanceChanged {
            what: what.join(" and "),
        });
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> KeyRecord {
        KeyRecord {
            format: CACHE_FORMAT,
            stage: StageIdentity::Cmd {
                argv: vec!["cp".into(), "${inputs.a}".into(), "${outputs.b}".into()],
            },
            params: BTreeMap::from([
                ("lr".to_string(), json!(1e-3)),
                ("steps".to_string(), json!(10)),
            ]),
            inputs: BTreeMap::from([("a".to_string(), vec![Digest::of_bytes(b"a")])]),
            outputs: BTreeMap::from([("b".to_string(), "b.txt".to_string())]),
            env: BTreeMap::from([("SEED".to_string(), Some("1".to_string()))]),
            toolchain: BTreeMap::new(),
            provenance: None,
        }
    }

    /// Every ingredient changes the key, and `diff` names it.
    #[test]
    fn each_ingredient_changes_the_key_and_is_explained() {
        let b = base();
        let cases: Vec<(KeyRecord, &str)> = vec![
            (
                KeyRecord {
                    format: 2,
                    ..b.clone()
                },
                "format-changed",
            ),
            (
                KeyRecord {
                    stage: StageIdentity::Cmd {
                        argv: vec!["cp".into()],
                    },
                    ..b.clone()
                },
                "command-changed",
            ),
            (
                KeyRecord {
                    stage: StageIdentity::Builtin {
                        name: "x".into(),
                        version: 1,
                    },
                    ..b.clone()
                },
                "stage-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.params.insert("lr".into(), json!(3e-4));
                    k
                },
                "param-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.params.insert("new".into(), json!(true));
                    k
                },
                "param-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.params.remove("steps");
                    k
                },
                "param-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.inputs.insert("a".into(), vec![Digest::of_bytes(b"A")]);
                    k
                },
                "input-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.inputs.insert("z".into(), vec![]);
                    k
                },
                "input-added",
            ),
            (
                {
                    let mut k = b.clone();
                    k.inputs.clear();
                    k
                },
                "input-removed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.outputs.insert("b".into(), "c.txt".into());
                    k
                },
                "outputs-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.env.insert("SEED".into(), Some("2".into()));
                    k
                },
                "env-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.env.insert("SEED".into(), None);
                    k
                },
                "env-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.toolchain.insert("device".into(), "cuda".into());
                    k
                },
                "toolchain-changed",
            ),
            (
                {
                    let mut k = b.clone();
                    k.provenance = Some(json!({"graph": {}, "inputs": {"a": [{"path": "x"}]}}));
                    k
                },
                "provenance-changed",
            ),
        ];
        for (changed, tag) in cases {
            assert_ne!(changed.key(), b.key(), "{tag} must change the key");
            let reasons = diff(&b, &changed);
            assert_eq!(reasons.len(), 1, "{tag}: {reasons:?}");
            assert_eq!(reasons[0].tag(), tag);
        }
        let mut v = b.clone();
        v.stage = StageIdentity::Builtin {
            name: "x".into(),
            version: 1,
        };
        let mut v2 = v.clone();
        v2.stage = StageIdentity::Builtin {
            name: "x".into(),
            version: 2,
        };
        assert_ne!(v.key(), v2.key());
        assert_eq!(diff(&v, &v2)[0].sentence(), "stage `x` version 1 → 2");
    }

    /// A record without provenance keeps the key it had before the field existed, and a change
    /// of provenance says which part moved.
    #[test]
    fn provenance_is_optional_and_explained() {
        let b = base();
        let mut e = super::Encoder(Vec::new());
        e.field("azimuth-key", &b.format.to_le_bytes());
        assert!(b.encode().starts_with(&e.0));
        assert!(!String::from_utf8_lossy(&b.encode()).contains("provenance"));
        let mut p = b.clone();
        p.provenance = Some(json!({"graph": {"nodes": []}, "inputs": {"a": []}}));
        let mut q = p.clone();
        q.provenance = Some(json!({"graph": {"nodes": [1]}, "inputs": {"a": []}}));
        assert_ne!(p.key(), q.key());
        assert_eq!(diff(&p, &q)[0].sentence(), "the pipeline's stage graph changed");
        let s = serde_json::to_string(&b).unwrap();
        assert!(!s.contains("provenance"), "absent provenance is not serialized: {s}");
    }

    #[test]
    fn param_sentences_read_naturally() {
        let b = base();
        let mut k = b.clone();
        k.params.insert("lr".into(), json!(3e-4));
        assert_eq!(diff(&b, &k)[0].sentence(), "param `lr` 0.001 → 0.0003");
    }

    #[test]
    fn encoding_is_unambiguous_across_field_boundaries() {
        // Without length prefixes these two would concatenate to the same bytes.
        let mut a = base();
        a.stage = StageIdentity::Cmd {
            argv: vec!["ab".into(), "c".into()],
        };
        let mut b = base();
        b.stage = StageIdentity::Cmd {
            argv: vec!["a".into(), "bc".into()],
        };
        assert_ne!(a.key(), b.key());
        let mut a = base();
        a.inputs = BTreeMap::from([(
            "x".into(),
            vec![Digest::of_bytes(b"1"), Digest::of_bytes(b"2")],
        )]);
        let mut b = base();
        b.inputs = BTreeMap::from([
            ("x".into(), vec![Digest::of_bytes(b"1")]),
            ("y".into(), vec![Digest::of_bytes(b"2")]),
        ]);
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn param_key_order_does_not_matter() {
        let a: Json = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": 3}}"#).unwrap();
        let b: Json = serde_json::from_str(r#"{"a": {"x": 3, "y": 2}, "b": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn record_round_trips_through_json() {
        let b = base();
        let s = serde_json::to_string(&b).unwrap();
        let back: KeyRecord = serde_json::from_str(&s).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.key(), b.key());
    }
}
