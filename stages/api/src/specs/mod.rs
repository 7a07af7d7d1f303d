//! The list of every built-in stage's metadata ([`all`]), in the order `catalogue()`
//! returns it, with one submodule per stage family holding the specs. Nothing here may touch
//! libtorch: the orchestrator links this crate, and only `azimuth-worker` links libtorch.
//!
//! The tests at the bottom check the catalogue itself: unique names, defaults that parse and
//! match their declared types, sane bounds and ports.

use crate::StageSpec;

pub mod corpus;
pub mod movie;
pub mod report;
pub mod sim;
pub mod tensor;
pub mod train;
pub mod w_analysis;
pub mod w_dead;
pub mod w_extract;
pub mod w_lattice;
pub mod w_pca;
pub mod w_tokens;

/// Ports and params that several families declare alike (W, its black holes, its dead-set
/// masks, the name of W inside its file) and the `int`/`float` param constructors: one
/// definition, so docs and defaults never drift.
pub(crate) mod shared {
    use crate::{ParamSpec, ParamType, PortSpec};

    /// Input `w`: the matrix W.
    pub(crate) const W_INPUT: PortSpec = PortSpec {
        name: "w",
        doc: "a safetensors file holding the matrix W [V, D] as BF16 or F32 (one row per token)",
        many: false,
        optional: false,
        ext: "",
    };

    /// Input `black_holes`: the `members` output of `w.black_holes`.
    pub(crate) const BLACK_HOLES_INPUT: PortSpec = PortSpec {
        name: "black_holes",
        doc: "the `members` output of `w.black_holes` computed from the same W (`black_hole_id` \
              [V], 0 = none, 1 = largest)",
        many: false,
        optional: false,
        ext: "",
    };

    /// Input `dead`: the `masks` output of `w.dead_sets`.
    pub(crate) const DEAD_INPUT: PortSpec = PortSpec {
        name: "dead",
        doc: "a masks file (the `masks` output of `w.dead_sets` on the same W): safetensors with \
              BOOL [V] tensors, one per membership rule (`rule_a`, `rule_b`, `rule_d`); param \
              `mask` picks one",
        many: false,
        optional: false,
        ext: "",
    };

    /// A whole-number param with bounds and a default (a JSON literal).
    pub(crate) const fn int(
        name: &'static str,
        min: i64,
        max: i64,
        default: &'static str,
        doc: &'static str,
    ) -> ParamSpec {
        ParamSpec {
            name,
            ty: ParamType::Int { min, max },
            default: Some(default),
            doc,
        }
    }

    /// A float param with bounds and a default (a JSON literal).
    pub(crate) const fn float(
        name: &'static str,
        min: f64,
        max: f64,
        default: &'static str,
        doc: &'static str,
    ) -> ParamSpec {
        ParamSpec {
            name,
            ty: ParamType::Float { min, max },
            default: Some(default),
            doc,
        }
    }

    /// Param `tensor`: the name of W inside its file.
    pub(crate) const TENSOR_PARAM: ParamSpec = ParamSpec {
        name: "tensor",
        ty: ParamType::Str,
        default: Some("\"W\""),
        doc: "name of the matrix inside the input file",
    };
}

/// Every family's specs, in catalogue order. A new family adds its module here (and its
/// `dispatch` in `azimuth-stages`' `impls.rs`); a new stage only touches its family's file.
static FAMILIES: &[&[StageSpec]] = &[
    w_extract::SPECS,
    w_analysis::SPECS,
    w_dead::SPECS,
    w_lattice::SPECS,
    w_pca::SPECS,
    w_tokens::SPECS,
    sim::SPECS,
    tensor::SPECS,
    corpus::SPECS,
    train::SPECS,
    movie::SPECS,
    report::SPECS,
];

/// Every built-in stage, flattened once.
pub(crate) fn all() -> &'static [StageSpec] {
    static ALL: std::sync::OnceLock<Vec<StageSpec>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| FAMILIES.iter().flat_map(|f| f.iter().copied()).collect())
}

#[cfg(test)]
mod tests {
    use super::all;
    use crate::{ParamType, StageKind};
    use std::collections::BTreeSet;

    #[test]
    fn stage_names_are_unique_and_dotted() {
        let mut seen = BTreeSet::new();
        for s in all() {
            assert!(seen.insert(s.name), "duplicate stage name `{}`", s.name);
            let parts: Vec<&str> = s.name.split('.').collect();
            assert!(parts.len() >= 2, "`{}` is not `<family>.<stage>`", s.name);
            for p in parts {
                assert!(
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "`{}` has a bad segment `{p}`",
                    s.name
                );
            }
            assert!(s.version >= 1, "`{}` has version 0", s.name);
            assert!(!s.summary.is_empty(), "`{}` has no summary", s.name);
        }
    }

    #[test]
    fn param_defaults_parse_and_match_their_types() {
        for s in all() {
            let mut names = BTreeSet::new();
            for p in s.params {
                assert!(
                    names.insert(p.name),
                    "`{}`: duplicate param `{}`",
                    s.name,
                    p.name
                );
                assert!(
                    !p.doc.is_empty(),
                    "`{}`: param `{}` has no doc",
                    s.name,
                    p.name
                );
                match p.ty {
                    ParamType::Int { min, max } | ParamType::IntList { min, max } => {
                        assert!(min <= max, "`{}`.`{}`: empty range", s.name, p.name)
                    }
                    ParamType::Float { min, max } => assert!(
                        min <= max && min.is_finite() && max.is_finite(),
                        "`{}`.`{}`: bad range",
                        s.name,
                        p.name
                    ),
                    ParamType::Choice(c) => {
                        assert!(!c.is_empty(), "`{}`.`{}`: no choices", s.name, p.name)
                    }
                    _ => {}
                }
                if let Some(default) = p.default_value() {
                    let value = default.unwrap_or_else(|e| panic!("`{}`: {e}", s.name));
                    p.ty.check(&value).unwrap_or_else(|e| {
                        panic!(
                            "`{}`: default of `{}` does not match its type: {e}",
                            s.name, p.name
                        )
                    });
                }
            }
        }
    }

    #[test]
    fn ports_are_unique_and_flags_are_input_only() {
        for s in all() {
            let mut names = BTreeSet::new();
            for p in s.inputs.iter().chain(s.outputs) {
                assert!(
                    names.insert(p.name),
                    "`{}`: duplicate port `{}`",
                    s.name,
                    p.name
                );
            }
            for o in s.outputs {
                assert!(
                    !o.many && !o.optional,
                    "`{}`: output `{}` is many/optional",
                    s.name,
                    o.name
                );
            }
            assert!(!s.outputs.is_empty(), "`{}` has no outputs", s.name);
        }
    }

    #[test]
    fn device_dependence_implies_torch() {
        for s in all() {
            assert!(!s.device_dependent || s.uses_torch, "`{}`", s.name);
        }
    }

    #[test]
    fn the_two_tensor_stages_are_declared_as_specified() {
        let random = crate::find("tensor.random").expect("tensor.random");
        assert_eq!(random.kind, StageKind::Generator);
        assert!(random.uses_torch && random.device_dependent);
        let req: Vec<&str> = random
            .params
            .iter()
            .filter(|p| p.default.is_none())
            .map(|p| p.name)
            .collect();
        assert_eq!(req, ["rows", "cols"]);
        assert_eq!(random.param("dtype").unwrap().default, Some("\"bf16\""));
        assert_eq!(
            random.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["tensor"]
        );

        let summary = crate::find("tensor.summary").expect("tensor.summary");
        assert_eq!(summary.kind, StageKind::Analyzer);
        assert!(!summary.uses_torch && !summary.device_dependent);
        assert!(summary.input("tensors").unwrap().many);
        assert_eq!(
            summary.outputs.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["summary"]
        );
        assert!(crate::find("tensor.nope").is_none());
    }

    #[test]
    fn param_type_check_rejects_wrong_values() {
        use serde_json::json;
        let int = ParamType::Int { min: 1, max: 10 };
        assert!(int.check(&json!(1)).is_ok() && int.check(&json!(10)).is_ok());
        for bad in [json!(0), json!(11), json!(2.5), json!("3"), json!(u64::MAX)] {
            assert!(int.check(&bad).is_err(), "{bad}");
        }
        let float = ParamType::Float { min: 0.0, max: 1.0 };
        assert!(float.check(&json!(1)).is_ok() && float.check(&json!(0.5)).is_ok());
        assert!(float.check(&json!(-0.1)).is_err() && float.check(&json!("x")).is_err());
        let choice = ParamType::Choice(&["a", "b"]);
        assert!(choice.check(&json!("a")).is_ok());
        let e = choice.check(&json!("c")).unwrap_err();
        assert!(e.contains("`a`, `b`") && e.contains("\"c\""), "{e}");
        let list = ParamType::IntList { min: 0, max: 5 };
        assert!(list.check(&json!([0, 5])).is_ok());
        assert!(list.check(&json!([])).is_err());
        assert!(list.check(&json!([1, 6])).unwrap_err().contains("item 1"));
        assert!(ParamType::FloatList.check(&json!([1, 2.5])).is_ok());
        assert!(ParamType::FloatList.check(&json!([true])).is_err());
        assert!(
            ParamType::Bool.check(&json!(false)).is_ok()
                && ParamType::Bool.check(&json!(0)).is_err()
        );
        assert!(
            ParamType::Str.check(&json!("")).is_ok() && ParamType::Str.check(&json!(null)).is_err()
        );
    }
}
