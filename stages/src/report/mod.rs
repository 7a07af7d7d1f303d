//! The `report` family: `report.html`, one self-contained HTML page of the artifacts a pipeline
//! made (issue 6), and the numbers it shows as JSON.
//!
//! The stage receives its artifacts as paths plus their provenance (instance, stage, what the
//! stage runs, output, digest; see `azimuth_stage_api::provenance`) and the pipeline's stage
//! graph. [`page`] turns them into the page and the numbers; nothing in either depends on time,
//! host or the order of anything but the inputs, so the same artifacts give the same bytes.
//! `azimuth report` runs this stage and adds run-time facts (states, timings, cache hits) to its
//! own copy of the page, outside the cache.

pub(crate) mod page;

use azimuth_stage_api::provenance::Provenance;

use crate::params::Params;
use crate::{StageContext, StageError};

/// The family's part of `impls::dispatch`.
pub(crate) fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "report.html" => run(ctx),
        _ => return None,
    })
}

fn run(ctx: &StageContext) -> Result<(), StageError> {
    let p = Params::new(&azimuth_stage_api::specs::report::HTML, ctx)?;
    let provenance = Provenance::from_params(&ctx.params).map_err(|e| p.error(e))?;
    let paths = p.inputs("artifacts")?;
    let sources = provenance
        .inputs
        .get("artifacts")
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if sources.len() != paths.len() {
        return Err(p.error(format!(
            "input `artifacts` has {} paths but its provenance describes {}; the job file is \
             inconsistent (re-run through `azimuth run`)",
            paths.len(),
            sources.len()
        )));
    }
    let options = page::Options {
        title: p.string("title")?,
        table_rows: p.int("table_rows")? as usize,
        dead_token_rows: p.int("dead_token_rows")? as usize,
        fold_sweeps_above: p.int("fold_sweeps_above")? as usize,
    };
    let artifacts: Vec<page::Artifact> = sources
        .iter()
        .zip(paths)
        .map(|(source, path)| page::Artifact { source, path })
        .collect();
    let (html, numbers) =
        page::render(&options, &provenance, &artifacts).map_err(|e| p.error(e))?;
    p.write_output(p.output("report")?, html.as_bytes())?;
    p.write_json(p.output("numbers")?, &numbers)
}
