//! The `azimuth` binary: parses arguments and maps the result to an exit code (see `cli`).
fn main() -> std::process::ExitCode {
    azimuth::cli::main()
}
