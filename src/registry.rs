//! Stage kinds the orchestrator knows: the built-in stages of the catalogue in
//! `azimuth-stage-api` (with the `builtin-stages` feature) and the `cmd` kind (an external command).
//!
//! This module adapts the catalogue's static metadata into the engine's own types and checks
//! params against each built-in's schema, so a typo or a wrong type in `pipeline.yaml` is reported
//! with its span before anything runs. It knows no tensor types and never loads libtorch: the
//! catalogue is plain data, and the stage code runs in the separate `azimuth-worker` process.

use serde_json::Value as Json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Generator,
    Analyzer,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Generator => "generator",
            StageKind::Analyzer => "analyzer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    Int { min: i64, max: i64 },
    Float { min: f64, max: f64 },
    Bool,
    Str,
    Choice(&'static [&'static str]),
    IntList { min: i64, max: i64 },
    FloatList,
}

#[derive(Debug, Clone)]
pub struct ParamSchema {
    pub name: &'static str,
    pub ty: ParamType,
    /// Parsed default; `None` means required.
    pub default: Option<Json>,
    pub doc: &'static str,
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: &'static str,
    pub doc: &'static str,
    pub many: bool,
    pub optional: bool,
    /// Outputs: the artifact's file name in the stage's directory (`name.ext`, or `name`).
    pub file: String,
}

/// One built-in stage as the engine sees it.
#[derive(Debug, Clone)]
pub struct Builtin {
    pub name: &'static str,
    pub version: u32,
    pub kind: StageKind,
    pub summary: &'static str,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub params: Vec<ParamSchema>,
    pub uses_torch: bool,
    pub device_dependent: bool,
    /// Receives the provenance of its inputs (which enters its key); see
    /// `azimuth_stage_api::provenance`.
    pub reads_provenance: bool,
}

/// The set of built-in stages available in this build.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub builtins: Vec<Builtin>,
}

impl Registry {
    /// The catalogue compiled into this binary (empty without the `builtin-stages` feature).
    pub fn builtin() -> Registry {
        #[cfg(feature = "builtin-stages")]
        {
            Registry {
                builtins: azimuth_stage_api::catalogue().iter().map(adapt).collect(),
            }
        }
        #[cfg(not(feature = "builtin-stages"))]
        {
            Registry::default()
        }
    }

    pub fn find(&self, name: &str) -> Option<&Builtin> {
        self.builtins.iter().find(|b| b.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.builtins.iter().map(|b| b.name)
    }
}

/// The libtorch version built-in stages run with (enters keys of stages that use torch).
pub fn libtorch_version() -> &'static str {
    azimuth_stage_api::LIBTORCH_VERSION
}

/// Resolves a requested device (`auto`, `cpu`, `cuda`, `mps`) to the kind that will be used.
pub fn resolve_device(requested: &str) -> Result<&'static str, String> {
    azimuth_stage_api::device::resolve(requested)
}

#[cfg(feature = "builtin-stages")]
fn adapt(s: &azimuth_stage_api::StageSpec) -> Builtin {
    use azimuth_stage_api as st;
    let port = |p: &st::PortSpec| Port {
        name: p.name,
        doc: p.doc,
        many: p.many,
        optional: p.optional,
        file: p.file_name(),
    };
    Builtin {
        name: s.name,
        version: s.version,
        kind: match s.kind {
            st::StageKind::Generator => StageKind::Generator,
            st::StageKind::Analyzer => StageKind::Analyzer,
        },
        summary: s.summary,
        inputs: s.inputs.iter().map(port).collect(),
        outputs: s.outputs.iter().map(port).collect(),
        params: s
            .params
            .iter()
            .map(|p| ParamSchema {
                name: p.name,
                ty: match p.ty {
                    st::ParamType::Int { min, max } => ParamType::Int { min, max },
                    st::ParamType::Float { min, max } => ParamType::Float { min, max },
                    st::ParamType::Bool => ParamType::Bool,
                    st::ParamType::Str => ParamType::Str,
                    st::ParamType::Choice(c) => ParamType::Choice(c),
                    st::ParamType::IntList { min, max } => ParamType::IntList { min, max },
                    st::ParamType::FloatList => ParamType::FloatList,
                },
                default: p.default.map(|d| {
                    serde_json::from_str(d).unwrap_or_else(|e| {
                        panic!(
                            "catalogue default of `{}.{}` is not JSON: {e}",
                            s.name, p.name
                        )
                    })
                }),
                doc: p.doc,
            })
            .collect(),
        uses_torch: s.uses_torch,
        device_dependent: s.device_dependent,
        reads_provenance: s.reads_provenance,
    }
}

impl ParamType {
    /// A phrase for messages: "an integer in 1..=100".
    pub fn describe(&self) -> String {
        match self {
            ParamType::Int { min, max } => format!("an integer in {min}..={max}"),
            ParamType::Float { min, max } => format!("a number in [{min}, {max}]"),
            ParamType::Bool => "true or false".into(),
            ParamType::Str => "a string".into(),
            ParamType::Choice(c) => format!("one of {}", c.join(", ")),
            ParamType::IntList { min, max } => format!("a list of integers in {min}..={max}"),
            ParamType::FloatList => "a list of numbers".into(),
        }
    }

    /// Checks (and normalizes: integers widen to floats) a value against the type.
    pub fn check(&self, v: &Json) -> Result<Json, String> {
        let bad = || Err(format!("expected {}, found {}", self.describe(), short(v)));
        match self {
            ParamType::Int { min, max } => match v.as_i64() {
                Some(i) if i >= *min && i <= *max => Ok(v.clone()),
                _ => bad(),
            },
            ParamType::Float { min, max } => match v.as_f64() {
                Some(f) if f.is_finite() && f >= *min && f <= *max => Ok(float(f)),
                _ => bad(),
            },
            ParamType::Bool => {
                if v.is_boolean() {
                    Ok(v.clone())
                } else {
                    bad()
                }
            }
            ParamType::Str => {
                if v.is_string() {
                    Ok(v.clone())
                } else {
                    bad()
                }
            }
            ParamType::Choice(c) => match v.as_str() {
                Some(s) if c.contains(&s) => Ok(v.clone()),
                _ => bad(),
            },
            ParamType::IntList { min, max } => match v.as_array() {
                Some(a)
                    if !a.is_empty()
                        && a.iter()
                            .all(|x| x.as_i64().is_some_and(|i| i >= *min && i <= *max)) =>
                {
                    Ok(v.clone())
                }
                _ => bad(),
            },
            ParamType::FloatList => match v.as_array() {
                Some(a)
                    if !a.is_empty()
                        && a.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)) =>
                {
                    Ok(Json::Array(
                        a.iter()
                            .map(|x| float(x.as_f64().expect("checked above")))
                            .collect(),
                    ))
                }
                _ => bad(),
            },
        }
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .expect("finite floats are valid JSON numbers")
}

fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(39).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn param_types_accept_and_reject() {
        let int = ParamType::Int { min: 1, max: 10 };
        assert!(int.check(&json!(5)).is_ok());
        assert_eq!(
            int.check(&json!(0)).unwrap_err(),
            "expected an integer in 1..=10, found 0"
        );
        assert_eq!(
            int.check(&json!("5")).unwrap_err(),
            "expected an integer in 1..=10, found \"5\""
        );
        let f = ParamType::Float {
            min: 0.0,
            max: f64::MAX,
        };
        assert_eq!(f.check(&json!(2)).unwrap(), json!(2.0));
        assert!(f.check(&json!(-1.0)).is_err());
        assert!(ParamType::Choice(&["a", "b"]).check(&json!("c")).is_err());
        assert!(ParamType::FloatList.check(&json!([])).is_err());
    }

    #[cfg(feature = "builtin-stages")]
    #[test]
    fn every_catalogue_default_type_checks() {
        for b in Registry::builtin().builtins {
            for p in &b.params {
                if let Some(d) = &p.default {
                    p.ty.check(d)
                        .unwrap_or_else(|e| panic!("{}.{}: {e}", b.name, p.name));
                }
            }
        }
    }
}
