//! Azimuth's built-in stages that do not use libtorch, and the `azimuth-worker` binary that runs
//! one built-in stage per process.
//!
//! This crate knows nothing about DAGs, hashing or the cache. The metadata of every stage (its
//! `SPEC`), the [`StageContext`] it receives and the job-file protocol live in
//! `azimuth-stage-api` (`api/`), which the orchestrator links without libtorch; this crate holds
//! the implementations and [`run`], which the worker calls after reading its job file.
//!
//! The stages whose spec says `uses_torch` (`tensor.random`, `w.pca`) live in the
//! `azimuth-stages-torch` crate (`torch/`), built as `libazimuth_stages_torch.so`: this crate never
//! links libtorch, and the worker `dlopen`s that library only for those stages ([`torch_library`]),
//! so every other stage starts without libtorch's ~0.7 s of loading and static initialisers.
//!
//! The modules [`params`], [`io`], [`w_analysis`] and [`torch_library`] are `pub` but
//! `#[doc(hidden)]`: they are the interface the torch crate builds on (shared params, input and
//! output handling, and the library's ABI), not a public API.
//!
//! To add a stage: add its `SPEC` to `api/src/specs/<family>.rs` (and that file's `SPECS`), write
//! its `run` in `src/<family>/<stage>.rs` (in `torch/src/` if it calls tch), and list it in the
//! family's `dispatch` (or the torch crate's). Bump the stage's `version` whenever the bytes it
//! writes for the same inputs and params could change.

pub mod bf16;
mod corpus;
mod impls;
#[doc(hidden)]
pub mod io;
pub mod lattice;
#[doc(hidden)]
pub mod movie;
#[doc(hidden)]
pub mod params;
mod report;
mod sim;
mod tensor;
#[doc(hidden)]
pub mod torch_library;
#[doc(hidden)]
pub mod w_analysis;
mod w_dead;
mod w_extract;
mod w_lattice;
mod w_pca;
mod w_tokens;

pub use azimuth_stage_api::{
    catalogue, device, find, ParamSpec, ParamType, PortSpec, StageContext, StageError, StageKind,
    StageSpec, LIBTORCH_VERSION,
};

/// Runs the built-in stage `name`, unless it uses libtorch: those (`uses_torch` in their spec) run
/// in `azimuth-stages-torch` (`azimuth_stages_torch::run`, or the worker's library), and asking
/// this crate for one is an error saying so. Never loads libtorch.
pub fn run(name: &str, ctx: &StageContext) -> Result<(), StageError> {
    impls::dispatch(name, ctx)
}
