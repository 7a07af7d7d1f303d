//! Integration tests of `azimuth-stages` through its public API: each family's stages run end to
//! end through `azimuth_stages::run` on files the tests make themselves. The stages that use
//! libtorch (`tensor.random`, `w.pca`) are tested in `torch/tests/it/`, with `tensor.summary` and
//! `w.skymap`, which read their outputs. HDF5 inspection is tested in `api/tests/inspect.rs`.

mod corpus;
mod movie;
mod sim;
mod sim_pachinko;
mod sim_valley;
mod support;
mod w_analysis;
mod w_dead;
mod w_extract;
mod w_lattice;
mod w_tokens;
