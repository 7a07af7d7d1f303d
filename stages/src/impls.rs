//! Stage name -> implementation (feature `torch`): [`dispatch`] is the one place that maps a
//! catalogue name to the `run` function of its stage. Keep it in step with `specs::ALL`; a test
//! checks that every catalogued stage dispatches.

use crate::{StageContext, StageError};

/// Runs the built-in stage `name` on `ctx`.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Result<(), StageError> {
    match name {
        "tensor.random" => crate::tensor::random::run(ctx),
        "tensor.summary" => crate::tensor::summary::run(ctx),
        other => Err(StageError(format!(
            "stage `{}`: `{other}` is not a built-in stage; known: {}",
            ctx.instance,
            crate::catalogue()
                .iter()
                .map(|s| format!("`{}`", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
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
    fn every_catalogued_stage_dispatches() {
        // With no params/outputs every stage fails, but with its own error, never "not built-in".
        for spec in crate::catalogue() {
            let err = dispatch(spec.name, &empty_ctx()).unwrap_err().0;
            assert!(
                !err.contains("not a built-in stage"),
                "{}: {err}",
                spec.name
            );
            assert!(err.contains("`probe`"), "{err}");
        }
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
