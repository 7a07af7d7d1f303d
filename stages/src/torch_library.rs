//! The boundary between `azimuth-worker` and `libazimuth_stages_torch.so` (package
//! `azimuth-stages-torch`), the library that holds the stages whose spec says `uses_torch`.
//!
//! The worker never links libtorch: for a torch stage it [`load`]s the library with
//! `dlopen(RTLD_NOW | RTLD_LOCAL)` from the directory of its own executable (then that
//! directory's `deps/`, where cargo leaves it beside test binaries), checks that
//! `azimuth_torch_abi()` returns [`ABI`], and calls `azimuth_torch_run(job_path)`, which reads the
//! same job file with [`read_job`] and returns the worker's exit status. Both sides are built from
//! this module, so a library left over from another build of azimuth fails the ABI check with a
//! message saying to rebuild, instead of misbehaving.

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use azimuth_stage_api::job::{Job, JobBody};

use crate::StageContext;

/// Version of the C interface below (the two symbols, their signatures and what they do with the
/// job file). Bump it whenever any of that changes.
pub const ABI: u32 = 1;

/// `extern "C" fn() -> u32`: the library's [`ABI`].
pub const ABI_SYMBOL: &CStr = c"azimuth_torch_abi";
/// `unsafe extern "C" fn(job_path: *const c_char) -> c_int`: runs the job, returns the exit status.
pub const RUN_SYMBOL: &CStr = c"azimuth_torch_run";

/// The library's file name on this platform: `libazimuth_stages_torch.so` on Linux.
pub fn file_name() -> String {
    format!(
        "{}azimuth_stages_torch{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Where the worker looks for the library, in order: beside `exe`, then in `deps/` beside it.
pub fn candidates(exe: &Path) -> Vec<PathBuf> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    vec![dir.join(file_name()), dir.join("deps").join(file_name())]
}

/// Reads a worker job file: the built-in stage's name and its context, or the message to print
/// after `azimuth-worker: ` (exit status 2).
pub fn read_job(path: &Path) -> Result<(String, StageContext), String> {
    let job = Job::read(path).map_err(|e| e.to_string())?;
    let JobBody::Builtin { name } = &job.body else {
        return Err(format!(
            "stage `{}` is a command stage, not a built-in one",
            job.instance
        ));
    };
    Ok((name.clone(), job.context()))
}

/// The loaded library's entry point. The library stays loaded until the process exits.
pub struct Library {
    path: PathBuf,
    run: unsafe extern "C" fn(*const c_char) -> c_int,
}

/// Loads the torch-stage library found beside `exe` (see [`candidates`]) and checks its ABI.
pub fn load(exe: &Path) -> Result<Library, String> {
    let candidates = candidates(exe);
    // The newest of the candidates: `cargo build` hardlinks the library beside the binaries, but
    // `cargo test` refreshes only `deps/`, and a stale copy must not shadow the fresh one.
    let newest = candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .fold(
            None::<(std::time::SystemTime, &PathBuf)>,
            |best, (t, p)| match best {
                Some((bt, _)) if bt >= t => best,
                _ => Some((t, p)),
            },
        )
        .map(|(_, p)| p);
    let Some(path) = newest else {
        return Err(format!(
            "the stages that use libtorch run in {}, which is not installed: looked for {}; \
             build it with `cargo build --release` (package `azimuth-stages-torch`, a default \
             workspace member), which puts it beside `azimuth-worker`",
            file_name(),
            candidates
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("`{}`: a path with a NUL byte", path.display()))?;
    // SAFETY: dlopen runs the library's initialisers (libtorch's among them), which is the point;
    // the handle is never closed, so symbols taken from it stay valid for the process.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!(
            "cannot load `{}`: {}; if a libtorch library is missing, run scripts/setup-deps.sh \
             and rebuild with `cargo build --release`",
            path.display(),
            dl_error()
        ));
    }
    let symbol = |name: &CStr| {
        // SAFETY: `handle` is a live handle from dlopen and `name` is NUL-terminated.
        let ptr = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if ptr.is_null() {
            Err(format!(
                "`{}` has no symbol `{}`: it is not a library built by azimuth-stages-torch, or \
                 too old; rebuild it with `cargo build --release`",
                path.display(),
                name.to_string_lossy()
            ))
        } else {
            Ok(ptr)
        }
    };
    let abi_ptr = symbol(ABI_SYMBOL)?;
    // SAFETY: the library defines `azimuth_torch_abi` as `extern "C" fn() -> u32` (this module's
    // contract, which every ABI version keeps).
    let abi_fn: extern "C" fn() -> u32 = unsafe { std::mem::transmute(abi_ptr) };
    let abi = abi_fn();
    if abi != ABI {
        return Err(format!(
            "`{}` speaks torch-library ABI {abi}, but this azimuth-worker speaks ABI {ABI}: the \
             two come from different builds of azimuth; rebuild both with `cargo build --release`",
            path.display()
        ));
    }
    let run_ptr = symbol(RUN_SYMBOL)?;
    // SAFETY: with a matching ABI, `azimuth_torch_run` has the signature of `Library::run`.
    let run = unsafe {
        std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(*const c_char) -> c_int>(
            run_ptr,
        )
    };
    Ok(Library {
        path: path.clone(),
        run,
    })
}

impl Library {
    /// Where the library was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the job in `job_path` in the library; returns the worker's exit status (0 success, 1
    /// stage error, 2 bad job file, 101 panic).
    pub fn run_job(&self, job_path: &Path) -> Result<c_int, String> {
        let c_path = CString::new(job_path.as_os_str().as_bytes())
            .map_err(|_| format!("`{}`: a path with a NUL byte", job_path.display()))?;
        // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
        Ok(unsafe { (self.run)(c_path.as_ptr()) })
    }
}

/// The last `dlerror()` message.
fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown dlopen error".into()
    } else {
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_an_error_that_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let Err(err) = load(&dir.path().join("azimuth-worker")) else {
            panic!("loaded a library from an empty directory");
        };
        assert!(err.contains("cargo build --release"), "{err}");
        assert!(err.contains(&file_name()), "{err}");
        assert!(err.contains("/deps/"), "{err}");
    }

    #[test]
    fn a_library_without_the_symbols_is_rejected_by_name() {
        // Any shared object without our symbols: copy libc's under the expected name.
        let dir = tempfile::tempdir().unwrap();
        let libc_path = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib64/libc.so.6",
            "/lib64/libc.so.6",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
        let Some(libc_path) = libc_path else { return };
        std::fs::copy(libc_path, dir.path().join(file_name())).unwrap();
        let Err(err) = load(&dir.path().join("azimuth-worker")) else {
            panic!("accepted libc as the torch library");
        };
        assert!(err.contains("has no symbol `azimuth_torch_abi`"), "{err}");
    }
}
