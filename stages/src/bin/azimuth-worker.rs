//! `azimuth-worker JOB`: runs one built-in stage. Started only by `azimuth __stage` (which `exec`s
//! into it, keeping its process group and parent-death signal). It is the only binary that links
//! libtorch, so the orchestrator never pays libtorch's start-up time (ARCHITECTURE.md). Its
//! stdout and stderr are the stage's captured log.
use std::process::ExitCode;

use azimuth_stage_api::job::{Job, JobBody};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!(
            "azimuth-worker: usage: azimuth-worker JOB_FILE (it is started by `azimuth run`)"
        );
        return ExitCode::from(2);
    };
    let job = match Job::read(std::path::Path::new(&path)) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("azimuth-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let JobBody::Builtin { name } = &job.body else {
        eprintln!(
            "azimuth-worker: stage `{}` is a command stage, not a built-in one",
            job.instance
        );
        return ExitCode::from(2);
    };
    match azimuth_stages::run(name, &job.context()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
