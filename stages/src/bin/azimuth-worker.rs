//! `azimuth-worker JOB`: runs one built-in stage. Started only by `azimuth __stage` (which `exec`s
//! into it, keeping its process group and parent-death signal). Its stdout and stderr are the
//! stage's captured log.
//!
//! It does not link libtorch, so neither the orchestrator nor most stages pay libtorch's start-up
//! (~0.7 s of loading and static initialisers; ARCHITECTURE.md): a stage whose spec says
//! `uses_torch` is handed to `libazimuth_stages_torch.so`, `dlopen`ed from beside this executable
//! (`azimuth_stages::torch_library`); every other stage runs in this process.
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!(
            "azimuth-worker: usage: azimuth-worker JOB_FILE (it is started by `azimuth run`)"
        );
        return ExitCode::from(2);
    };
    let path = std::path::Path::new(&path);
    let (name, ctx) = match azimuth_stages::torch_library::read_job(path) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("azimuth-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if azimuth_stages::find(&name).is_some_and(|spec| spec.uses_torch) {
        return run_in_torch_library(path, &ctx.instance);
    }
    match azimuth_stages::run(&name, &ctx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Loads the torch-stage library and lets it run the job (it reads the job file itself).
fn run_in_torch_library(job_path: &std::path::Path, instance: &str) -> ExitCode {
    let loaded = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable's path: {e}"))
        .and_then(|exe| azimuth_stages::torch_library::load(&exe))
        .and_then(|lib| lib.run_job(job_path));
    match loaded {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: stage `{instance}`: {e}");
            ExitCode::from(2)
        }
    }
}
