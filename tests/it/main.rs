//! Azimuth's integration tests: one binary that drives the real `azimuth` executable on small
//! pipelines of `cmd` stages (no libtorch needed), plus feature-gated tests of built-in stages.
//! See ARCHITECTURE.md, "Testing".

mod support;

#[cfg(feature = "builtin-stages")]
mod builtin;
mod cache;
mod concurrency;
mod crash;
mod dag;
mod errors;
mod freshness;
mod remote;
mod report;
mod run;
mod slurm;
mod tidy;
