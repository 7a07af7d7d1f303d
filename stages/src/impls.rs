//! Stage name -> implementation: [`dispatch`] is the one place that maps a catalogue name to the
//! `run` function of its stage, through each family's `dispatch`. Stages whose spec says
//! `uses_torch` are not here but in `azimuth-stages-torch`; for them [`dispatch`] returns an error
//! that says so. A test checks that every catalogued stage either dispatches here or is a torch
//! stage (the torch crate's own test checks it dispatches every torch stage).

use crate::{StageContext, StageError};

/// A family's dispatcher: `None` when the stage is not one of its own.
type FamilyDispatch = fn(&str, &StageContext) -> Option<Result<(), StageError>>;

/// Runs the built-in stage `name` on `ctx`: asks each family in turn.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Result<(), StageError> {
    if crate::find(name).is_some_and(|spec| spec.uses_torch) {
        return Err(StageError(format!(
            "stage `{}`: `{name}` uses libtorch, so it runs in the `azimuth-stages-torch` crate \
             (`azimuth_stages_torch::run`, or `azimuth-worker` through {}), not in \
             `azimuth-stages`",
            ctx.instance,
            crate::torch_library::file_name()
        )));
    }
    let families: &[FamilyDispatch] = &[
        crate::w_extract::dispatch,
        crate::w_analysis::dispatch,
        crate::w_dead::dispatch,
        crate::w_lattice::dispatch,
        crate::w_pca::dispatch,
        crate::w_tokens::dispatch,
        crate::tensor::dispatch,
        crate::corpus::dispatch,
        crate::movie::dispatch,
        crate::sim::dispatch,
        crate::report::dispatch,
    ];
    if let Some(result) = families.iter().find_map(|f| f(name, ctx)) {
        return result;
    }
    Err(StageError(format!(
        "stage `{}`: `{name}` is not a built-in stage; known: {}",
        ctx.instance,
        crate::catalogue()
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::dispatch;
    use crate::StageContext;

    fn empty_ctx() -> StageContext {
        StageContext {
            instance: "probe".into(),
            inputs: Default::default(),
            outputs: Default::default(),
            params: Default::default(),
            device: "cpu".into(),
            threads: 1,
        }
    }

    #[test]
    fn every_catalogued_stage_dispatches_here_or_is_a_torch_stage() {
        // With no params/outputs every stage fails, but with its own error, never "not built-in";
        // a `uses_torch` stage fails with the pointer to the torch crate instead.
        let mut torch = 0;
        for spec in crate::catalogue() {
            let err = dispatch(spec.name, &empty_ctx()).unwrap_err().0;
            assert!(
                !err.contains("not a built-in stage"),
                "{}: {err}",
                spec.name
            );
            assert!(err.contains("`probe`"), "{err}");
            assert_eq!(
                err.contains("uses libtorch, so it runs in the `azimuth-stages-torch` crate"),
                spec.uses_torch,
                "{}: {err}",
                spec.name
            );
            torch += usize::from(spec.uses_torch);
        }
        assert!(torch >= 2, "tensor.random and w.pca use libtorch");
    }

    #[test]
    fn unknown_stage_is_an_error_listing_known_ones() {
        let err = dispatch("tensor.nope", &empty_ctx()).unwrap_err().0;
        assert!(
            err.contains("`tensor.nope` is not a built-in stage"),
            "{err}"
        );
        assert!(
            err.contains("`tensor.random`") && err.contains("`tensor.summary`"),
            "{err}"
        );
    }
}
