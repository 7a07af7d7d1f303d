//! Link set-up for binaries that carry libtorch (this crate's tests):
//! embeds an rpath to `.deps/py/torch/lib` so the binary runs with a clean environment, and keeps
//! `libtorch.so` linked so that on CUDA machines `libtorch_cuda.so` is loaded. See stack.md notes
//! in ARCHITECTURE.md ("Native dependencies").
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
