//! Integration tests of `azimuth-stages` through its public API: the two tensor stages run end to
//! end on files they make themselves (`tensor.rs`). HDF5 inspection is tested in `api/tests/inspect.rs`. libtorch runs on 1 thread (the stages set it from `threads`).

mod tensor;
mod w_analysis;
mod w_dead;
mod w_extract;
mod w_lattice;
mod w_pca;
mod w_tokens;
