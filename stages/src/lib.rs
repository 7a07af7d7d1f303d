//! Azimuth's built-in tensor stages (tch/libtorch, safetensors, HDF5) and the `azimuth-worker`
//! binary that runs one of them per process.
//!
//! This crate knows nothing about DAGs, hashing or the cache. The metadata of every stage (its
//! `SPEC`), the [`StageContext`] it receives and the job-file protocol live in
//! `azimuth-stage-api` (`api/`), which the orchestrator links without libtorch; this crate holds
//! the implementations and [`run`], which the worker calls after reading its job file.
//!
//! To add a stage: add its `SPEC` to `api/src/specs/<family>.rs` (and that file's `SPECS`), write
//! its `run` in `src/<family>/<stage>.rs`, and list it in the family's `dispatch`. Bump the stage's `version`
//! whenever the bytes it writes for the same inputs and params could change.

pub mod bf16;
mod impls;
mod io;
pub mod lattice;
mod params;
mod tensor;
mod w_analysis;
mod w_dead;
mod w_extract;
mod w_lattice;
mod w_pca;
mod w_tokens;

pub use azimuth_stage_api::{
    catalogue, device, find, ParamSpec, ParamType, PortSpec, StageContext, StageError, StageKind,
    StageSpec, LIBTORCH_VERSION,
};

/// Runs the built-in stage `name`. This links libtorch.
pub fn run(name: &str, ctx: &StageContext) -> Result<(), StageError> {
    impls::dispatch(name, ctx)
}
