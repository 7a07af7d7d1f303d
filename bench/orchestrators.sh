#!/usr/bin/env bash
# Side-by-side benchmark of Azimuth against DVC and Snakemake (and a plain shell baseline) on the
# 4-stage pipeline of shared/anchors.md: a 1 GiB generator, two readers, an aggregator.
# DVC and Snakemake are installed from PyPI into a throwaway virtualenv under .bench/ (kept
# between runs; delete .bench/ to start over). Usage: bench/orchestrators.sh [SIZE_MB] (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-deps.sh >/dev/null
cargo build --release --locked -q
VENV=.bench/venv
if [[ ! -x $VENV/bin/dvc || ! -x $VENV/bin/snakemake ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "dvc==3.67.1" "snakemake==9.27.1"
fi
exec python3 bench/orchestrators.py --azimuth "$PWD/target/release/azimuth" --venv "$PWD/$VENV" --size-mb "${1:-1024}"
