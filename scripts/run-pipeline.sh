#!/usr/bin/env bash
# The main job on a fresh machine: installs the native dependencies and the small real model the
# default pipeline analyses (both idempotent), builds azimuth, and runs the default pipeline.yaml.
# Extra arguments go to `azimuth run`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-deps.sh
./scripts/fetch-models.sh
cargo build --release --locked
exec ./target/release/azimuth run "$@"
