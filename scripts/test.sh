#!/usr/bin/env bash
# The test suite on a fresh machine: installs the native dependencies (idempotent), then runs
# every test in the release profile (one profile: the C/C++ dependencies build once), and the
# engine's tests once more without the built-in stages, to prove it builds without libtorch.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-deps.sh
./scripts/fetch-models.sh   # real checkpoints for w.extract's tests and the shipped pipeline
export AZIMUTH_REQUIRE_MODELS=1   # so those tests fail, rather than skip, if a model is missing
./scripts/setup-browser.sh  # Debian's chromium, for the report's end-to-end test
export AZIMUTH_REQUIRE_CHROMIUM=1
./scripts/setup-slurm.sh    # a one-node Slurm (Debian's slurmctld, slurmd, munge) for tests/it/slurm.rs
export SLURM_CONF="$PWD/.deps/slurm/slurm.conf" AZIMUTH_REQUIRE_SLURM=1
cargo test --release --locked --workspace
cargo test --release --locked --no-default-features --lib
