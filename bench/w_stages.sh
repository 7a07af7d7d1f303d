#!/usr/bin/env bash
# Benchmark of the black-hole finder (`w.black_holes`, S04) against torch.unique and np.unique on a
# synthetic Qwen-sized bf16 W (151,936 x 2,560, 13 planted black holes; see bench/w_stages.py).
#
# Usage: bench/w_stages.sh [threads]   (default 2); NUMPY=1 also times np.unique (slow). Needs
# python3; creates .bench/venv-torch with numpy if missing.
# Rust side: the ignored test `bench_black_holes` in stages/torch/tests/it/w_analysis_bench.rs (release build;
# CARGO_TARGET_DIR is honoured), which times our finder, the whole stage, and libtorch 2.13's
# unique_dim (the kernel of torch.unique(dim=0)) through tch on the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
VENV=.bench/venv-torch
W=.bench/w_synth.safetensors
mkdir -p .bench
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv $VENV
  $VENV/bin/pip install --quiet --disable-pip-version-check numpy
  # PyPI's torch 2.13.0 for Linux is the CUDA build, which needs GBs of nvidia wheels to import;
  # the torch.unique(dim=0) kernel is timed through libtorch (tch) on the Rust side instead.
fi
[[ -f $W ]] || $VENV/bin/python bench/w_stages.py make $W
cat $W > /dev/null   # page cache: every contender reads the file from memory
OURS=$(AZIMUTH_BENCH_W=$PWD/$W AZIMUTH_BENCH_THREADS=$THREADS \
  cargo test --release -q -p azimuth-stages-torch --test it -- --ignored --nocapture bench_black_holes 2>&1 \
  | grep '^BENCH ' | sed 's/^BENCH //')
echo "azimuth: $OURS"
BASE=$($VENV/bin/python bench/w_stages.py baseline $W --threads "$THREADS" ${NUMPY:+--numpy} | sed 's/^BASELINE //')
echo "baseline: $BASE"
python3 - "$OURS" "$BASE" .bench/w_synth.expected.json <<'PY'
import json, sys
ours, base, exp = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.load(open(sys.argv[3]))
ok = ours["populations"] == exp["populations"] and ours["representatives"] == exp["representatives"] \
    and ours["distinct"] == exp["distinct"]
print(f"azimuth census matches the planted one: {ok}")
print(f"azimuth core {ours['core_s']:.3f} s, stage end to end {ours['stage_s']:.3f} s ({ours['threads']} threads)")
for k in ("torch_unique_s", "numpy_unique_s"):
    if base.get(k) is None and k == "torch_unique_s" and ours.get("libtorch_unique_dim_s"):
        base[k] = ours["libtorch_unique_dim_s"]
        print("torch_unique: PyTorch not importable here, using libtorch 2.13 unique_dim via tch")
    if base.get(k):
        print(f"{k[:-2]}: {base[k]:.3f} s -> ratio {base[k] / ours['core_s']:.1f}x (core), "
              f"{base[k] / ours['stage_s']:.1f}x (stage)")
PY
