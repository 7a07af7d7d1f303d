//! Device selection without libtorch: turns the user's `device:` setting (`auto`, `cpu`, `cuda`,
//! `mps`) into the concrete device kind a stage runs on.
//!
//! The orchestrator calls [`resolve`] while planning, because the device kind enters the cache key
//! of `device_dependent` stages; it must do so without loading libtorch (~0.35 s per process). So
//! `auto` is decided from files alone: the libtorch this crate was built against has CUDA when its
//! `lib/libtorch_cuda.so` exists (the same test torch-sys uses to decide whether to link CUDA), and
//! an NVIDIA driver is present when `/proc/driver/nvidia/version` exists. Whether the GPU actually
//! works is checked later by the stage itself (e.g. `tensor.random` fails with a clear message
//! when `cuda` was asked for but libtorch cannot see a GPU).

use std::path::{Path, PathBuf};

/// Every value [`resolve`] accepts, in the order error messages list them.
pub const ACCEPTED: &[&str] = &["auto", "cpu", "cuda", "mps"];

/// Facts about the host that decide what `auto` means. Separate from [`resolve`] so that the
/// decision itself is testable on any machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// The libtorch this crate was built against ships `libtorch_cuda.so`.
    pub libtorch_has_cuda: bool,
    /// An NVIDIA kernel driver is loaded (`/proc/driver/nvidia/version` exists).
    pub nvidia_driver: bool,
    /// The target is macOS on Apple Silicon (where libtorch's MPS backend exists).
    pub macos_aarch64: bool,
}

impl HostFacts {
    /// The facts of the machine this process runs on.
    pub fn current() -> HostFacts {
        HostFacts {
            libtorch_has_cuda: libtorch_lib_dir()
                .is_some_and(|dir| dir.join("libtorch_cuda.so").exists()),
            nvidia_driver: Path::new("/proc/driver/nvidia/version").exists(),
            macos_aarch64: cfg!(all(target_os = "macos", target_arch = "aarch64")),
        }
    }
}

/// The `lib` directory of the libtorch this crate was compiled against: `$LIBTORCH/lib`, where
/// `LIBTORCH` is the compile-time value that `.cargo/config.toml` (`[env]`) provides. `None` when
/// the crate was built without it (then `auto` never picks CUDA).
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    option_env!("LIBTORCH")
        .filter(|s| !s.is_empty())
        .map(|root| Path::new(root).join("lib"))
}

/// Resolves a requested device to `cpu`, `cuda` or `mps` using the current host's facts.
///
/// `cpu`, `cuda` and `mps` pass through unchanged (they are only checked to be known names);
/// `auto` becomes `cuda` when libtorch has CUDA and an NVIDIA driver is present, else `mps` on
/// macOS/aarch64, else `cpu`. Anything else is an error that lists the accepted values.
pub fn resolve(requested: &str) -> Result<&'static str, String> {
    resolve_with(requested, HostFacts::current())
}

/// [`resolve`] with explicit host facts.
pub fn resolve_with(requested: &str, host: HostFacts) -> Result<&'static str, String> {
    match requested {
        "cpu" => Ok("cpu"),
        "cuda" => Ok("cuda"),
        "mps" => Ok("mps"),
        "auto" => Ok(if host.libtorch_has_cuda && host.nvidia_driver {
            "cuda"
        } else if host.macos_aarch64 {
            "mps"
        } else {
            "cpu"
        }),
        other => Err(format!(
            "unknown device `{other}`: expected one of {}",
            ACCEPTED
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: HostFacts = HostFacts {
        libtorch_has_cuda: false,
        nvidia_driver: false,
        macos_aarch64: false,
    };

    #[test]
    fn explicit_devices_pass_through_whatever_the_host() {
        let hosts = [
            NONE,
            HostFacts {
                libtorch_has_cuda: true,
                nvidia_driver: true,
                ..NONE
            },
            HostFacts {
                macos_aarch64: true,
                ..NONE
            },
        ];
        for host in hosts {
            for d in ["cpu", "cuda", "mps"] {
                assert_eq!(resolve_with(d, host), Ok(d));
            }
        }
    }

    #[test]
    fn auto_needs_both_cuda_libtorch_and_a_driver() {
        let both = HostFacts {
            libtorch_has_cuda: true,
            nvidia_driver: true,
            ..NONE
        };
        assert_eq!(resolve_with("auto", both), Ok("cuda"));
        let lib_only = HostFacts {
            libtorch_has_cuda: true,
            ..NONE
        };
        assert_eq!(resolve_with("auto", lib_only), Ok("cpu"));
        let driver_only = HostFacts {
            nvidia_driver: true,
            ..NONE
        };
        assert_eq!(resolve_with("auto", driver_only), Ok("cpu"));
        assert_eq!(resolve_with("auto", NONE), Ok("cpu"));
    }

    #[test]
    fn auto_prefers_cuda_then_mps_then_cpu() {
        let mac = HostFacts {
            macos_aarch64: true,
            ..NONE
        };
        assert_eq!(resolve_with("auto", mac), Ok("mps"));
        let all = HostFacts {
            libtorch_has_cuda: true,
            nvidia_driver: true,
            macos_aarch64: true,
        };
        assert_eq!(resolve_with("auto", all), Ok("cuda"));
    }

    #[test]
    fn unknown_values_are_rejected_with_the_accepted_list() {
        for bad in ["gpu", "CUDA", "", " cpu", "cuda:0"] {
            let err = resolve_with(bad, NONE).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            for ok in ACCEPTED {
                assert!(err.contains(&format!("`{ok}`")), "{err}");
            }
        }
    }

    #[test]
    fn current_host_is_consistent_with_the_files() {
        let facts = HostFacts::current();
        // This workspace's .cargo/config.toml sets LIBTORCH, so the lib dir is known here.
        let dir = libtorch_lib_dir().expect("LIBTORCH is set by .cargo/config.toml");
        assert_eq!(
            facts.libtorch_has_cuda,
            dir.join("libtorch_cuda.so").exists()
        );
        assert_eq!(
            facts.nvidia_driver,
            Path::new("/proc/driver/nvidia/version").exists()
        );
        let auto = resolve("auto").unwrap();
        assert!(["cpu", "cuda", "mps"].contains(&auto));
        let cuda = facts.libtorch_has_cuda && facts.nvidia_driver;
        if !cuda && !facts.macos_aarch64 {
            assert_eq!(auto, "cpu");
        }
    }
}
