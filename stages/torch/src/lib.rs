//! Azimuth's built-in stages that use libtorch (`uses_torch` in their spec): `tensor.random`
//! ([`random`](crate::random)), `w.pca` ([`pca`](crate::pca)) and `train.gpt`
//! ([`train`](crate::train)), kept out of `azimuth-stages` so that `azimuth-worker` never links
//! libtorch.
//!
//! Built as `libazimuth_stages_torch.so` (beside the binaries, by `cargo build --release`), which
//! the worker `dlopen`s only for these stages and enters through [`azimuth_torch_abi`] and
//! [`azimuth_torch_run`] (the contract is in `azimuth_stages::torch_library`). Built as an rlib too,
//! for tests: [`run`] runs any built-in stage by name, the torch ones here and the others through
//! `azimuth_stages::run`. The stages use azimuth-stages' shared params, input and output helpers
//! (`azimuth_stages::{params, io, w_analysis, lattice}`), so their bytes are those they always had.

use std::ffi::{c_char, c_int, CStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use azimuth_stages::{StageContext, StageError};

mod pca;
mod random;
mod train;

/// Runs the built-in stage `name`: a torch stage here, any other through `azimuth_stages::run`.
pub fn run(name: &str, ctx: &StageContext) -> Result<(), StageError> {
    dispatch(name, ctx).unwrap_or_else(|| azimuth_stages::run(name, ctx))
}

/// The torch stages' dispatch: `None` if `name` is not one of this crate's stages.
fn dispatch(name: &str, ctx: &StageContext) -> Option<Result<(), StageError>> {
    Some(match name {
        "tensor.random" => random::run(ctx),
        "w.pca" => pca::run(ctx),
        "train.gpt" => train::run(ctx),
        _ => return None,
    })
}

/// The tch device for a resolved device kind, failing early when libtorch cannot use it.
pub(crate) fn device_of(
    p: &azimuth_stages::params::Params<'_>,
    device: &str,
) -> Result<tch::Device, StageError> {
    match device {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
        "cuda" => Err(p.error(
            "device `cuda` was requested but libtorch sees no CUDA GPU (a CPU-only libtorch, \
             or no driver); run with device `cpu` or `auto`, or install the CUDA libtorch \
             (TCH_CUDA=1 scripts/setup-deps.sh)",
        )),
        "mps" if tch::utils::has_mps() => Ok(tch::Device::Mps),
        "mps" => Err(p.error(
            "device `mps` was requested but libtorch has no MPS support here; use `cpu` or `auto`",
        )),
        other => Err(p.error(format!(
            "unknown device `{other}`; the orchestrator must pass `cpu`, `cuda` or `mps`"
        ))),
    }
}

/// Holds libtorch's process-global generator for one `manual_seed` + draws sequence: tch exposes
/// no private generator, so two stages seeding and drawing on different threads of one process
/// (tests run in parallel; a worker might too) would interleave and lose determinism.
pub(crate) fn seeded_draw() -> std::sync::MutexGuard<'static, ()> {
    static DRAW: std::sync::Mutex<()> = std::sync::Mutex::new(());
    DRAW.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The library's C interface version, checked by the worker before [`azimuth_torch_run`].
#[no_mangle]
pub extern "C" fn azimuth_torch_abi() -> u32 {
    azimuth_stages::torch_library::ABI
}

/// Runs the job file at `job_path` as `azimuth-worker` would and returns its exit status: 0 on
/// success, 1 when the stage fails (`error: ...` on stderr), 2 for an unreadable job file or a
/// stage that is not one of this library's, 101 when the stage panics (the panic message is
/// printed; the panic does not cross the C boundary).
///
/// # Safety
/// `job_path` must be a valid NUL-terminated string for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn azimuth_torch_run(job_path: *const c_char) -> c_int {
    // SAFETY: the caller passes a NUL-terminated string (see `# Safety`).
    let bytes = unsafe { CStr::from_ptr(job_path) }.to_bytes();
    let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
    let status = std::panic::catch_unwind(|| run_job(path)).unwrap_or(101);
    // This library has its own copy of std and so its own stdout buffer, which the worker's exit
    // would not flush.
    let _ = std::io::stdout().flush();
    status
}

fn run_job(path: &Path) -> c_int {
    let (name, ctx) = match azimuth_stages::torch_library::read_job(path) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("azimuth-worker: {e}");
            return 2;
        }
    };
    match dispatch(&name, &ctx) {
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            1
        }
        None => {
            eprintln!(
                "azimuth-worker: stage `{}`: `{name}` is not a stage of {} (it runs only the \
                 stages that use libtorch)",
                ctx.instance,
                azimuth_stages::torch_library::file_name()
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_ctx() -> StageContext {
        StageContext {
            instance: "probe".into(),
            inputs: Default::default(),
            outputs: Default::default(),
            params: Default::default(),
            device: "cpu".into(),
            threads: 1,
        }
    }

    #[test]
    fn dispatches_exactly_the_catalogued_torch_stages() {
        // With no params/outputs every stage fails, but with its own error.
        for spec in azimuth_stages::catalogue() {
            let result = dispatch(spec.name, &empty_ctx());
            assert_eq!(result.is_some(), spec.uses_torch, "{}", spec.name);
            if let Some(result) = result {
                let err = result.unwrap_err().0;
                assert!(err.contains("`probe`"), "{}: {err}", spec.name);
            }
        }
    }

    #[test]
    fn run_hands_other_stages_to_azimuth_stages() {
        let err = run("tensor.summary", &empty_ctx()).unwrap_err().0;
        assert!(
            err.contains("`probe`") && !err.contains("not a built-in"),
            "{err}"
        );
        let err = run("tensor.nope", &empty_ctx()).unwrap_err().0;
        assert!(err.contains("not a built-in stage"), "{err}");
    }

    #[test]
    fn the_abi_is_the_workers() {
        assert_eq!(azimuth_torch_abi(), azimuth_stages::torch_library::ABI);
    }
}
