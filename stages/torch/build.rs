//! Link set-up for the artifacts of this crate that carry libtorch (`libazimuth_stages_torch.so`
//! and this crate's test binaries): embeds an rpath to libtorch's `lib/` (`.deps/py/torch/lib`) so
//! they load with a clean environment, and keeps `libtorch.so` linked so that on CUDA machines
//! `libtorch_cuda.so` is loaded. `rustc-link-arg` reaches only this package's own linked targets
//! (the cdylib, the lib's unit tests, the integration tests), never `azimuth-worker`, which must
//! not link libtorch. See "Native dependencies" in ARCHITECTURE.md.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Some(dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.to_string_lossy());
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
