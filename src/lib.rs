//! Azimuth: a pipeline orchestrator with a content-addressed cache, built for research on the
//! geometry of language-model embedding matrices.
//!
//! Data flow: `pipeline.yaml` → [`spec`] (parse, validate, expand sweeps) → [`plan`] (key
//! ingredients per instance from [`hash`] digests and [`store`] records → fresh / restorable /
//! dirty, with reasons from [`fingerprint`]) → [`exec`] (run dirty stages as child processes
//! through [`job`], commit outputs into [`store`], link them into the [`workspace`]) →
//! [`lockfile`]. `status` and `why` stop at the plan; `dag` stops at the spec.
//!
//! See ARCHITECTURE.md for the map, the invariants of each module, and where to start.

pub mod cli;
pub mod dag;
pub mod diag;
pub mod exec;
pub mod fingerprint;
pub mod fsutil;
pub mod hash;
pub mod inspect;
pub mod job;
pub mod lock;
pub mod lockfile;
pub mod output;
pub mod plan;
pub mod registry;
pub mod remote;
pub mod report;
pub mod show;
pub mod slurm;
pub mod spec;
pub mod store;
pub mod workspace;
