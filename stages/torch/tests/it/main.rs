//! Integration tests of `azimuth-stages-torch` through `azimuth_stages_torch::run`: the libtorch
//! stages `tensor.random` (`tensor.rs`, with `tensor.summary` reading its files) and `w.pca`
//! (`w_pca.rs`, with `w.skymap` drawing its projections), `train.gpt` (`train.rs`), and the
//! ignored `bench_black_holes`
//! (`w_analysis_bench.rs`). libtorch runs on 1 thread (the stages set it from `threads`).

mod tensor;
mod train;
mod w_analysis_bench;
mod w_pca;
