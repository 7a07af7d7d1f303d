#!/usr/bin/env bash
# Training speed of `train.gpt` against the same model in a plain PyTorch loop, side by side on
# this machine, and what recording the movie costs.
#
# Usage: bench/train.sh [repeat]   (default 3; STEPS=40 by default: bf16 GEMMs are slow on CPUs without bf16 units)
# 1. Makes a byte-level corpus in .bench/train (the Shakespeare text of scripts/fetch-models.sh
#    when present, else a generated text): tokens + a 128-id dead mask.
# 2. Rust: the ignored test `bench_train` (azimuth-stages-torch) runs the whole stage twice per
#    repeat, recording every row of W at every step (plus h_mean, loss, lr, grad norm and the
#    dead rows' motion), and recording only the per-step series and dead-row motion; best of
#    [repeat]. The stage log line also says how much of the run recording took.
# 3. Python: bench/train.py, the same model (Lil Gatsby size: V 128, D 64, 2 layers, 2 heads,
#    FFN 256, context 128, batch 32), P1 bf16 with torch.optim.AdamW, in .bench/venv-pytorch
#    (PyPI torch==2.13.0 + numpy, made on first use), best of [repeat].
# Both sides run 1 libtorch thread on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-3}
STEPS=${STEPS:-40}
VENV=.bench/venv-pytorch
DIR=$PWD/.bench/train
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv $VENV
  $VENV/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 numpy
fi
echo "load: $(uptime | sed 's/.*load average: //')"
python3 bench/train.py prepare "$DIR" .deps/models/shakespeare/shakespeare.txt
PARAMS="{\"layers\": 2, \"d_model\": 64, \"heads\": 2, \"ffn\": 256, \"context\": 128, \"batch\": 32, \"steps\": $STEPS, \"lr\": 1e-3, \"weight_decay\": 0.01, \"protocol\": \"p1\", \"seed\": 42}"
RUST_OUT=$(mktemp)
PY_OUT=$(mktemp)
trap 'rm -f "$RUST_OUT" "$PY_OUT"' EXIT
cargo test --release -q -p azimuth-stages-torch --test it bench_train --no-run 2>/dev/null
for _ in $(seq "$REPEAT"); do
  AZIMUTH_BENCH_TRAIN_DIR=$DIR AZIMUTH_BENCH_TRAIN_PARAMS=$PARAMS \
    cargo test --release -q -p azimuth-stages-torch --test it bench_train -- --ignored --nocapture 2>&1 \
    | grep -E '^BENCH |recording took' >> "$RUST_OUT"
  $VENV/bin/python bench/train.py run "$DIR" "$PARAMS" | grep '^BASELINE ' >> "$PY_OUT"
done
python3 - "$RUST_OUT" "$PY_OUT" "$STEPS" <<'PY'
import json, re, sys
rust = [json.loads(l[6:]) for l in open(sys.argv[1]) if l.startswith("BENCH ")]
logs = [l for l in open(sys.argv[1]) if "recording took" in l]
py = [json.loads(l[9:]) for l in open(sys.argv[2])]
best = {}
for r in rust:
    if r["run"] not in best or r["seconds"] < best[r["run"]]["seconds"]:
        best[r["run"]] = r
base = min(py, key=lambda r: r["seconds"])
print(f"{sys.argv[3]} steps, V 128, D 64, 2 layers, context 128, batch 32, P1 bf16, 1 thread, best of {len(py)}")
print(f"{'run':<34} {'seconds':>8} {'steps/s':>8} {'vs PyTorch':>10}")
print(f"{'PyTorch ' + base['torch'] + ' (plain loop)':<34} {base['seconds']:>8.2f} {base['steps_per_s']:>8.2f} {1.0:>9.2f}x")
for name, r in sorted(best.items()):
    print(f"{'azimuth ' + name:<34} {r['seconds']:>8.2f} {r['steps_per_s']:>8.2f} {r['steps_per_s'] / base['steps_per_s']:>9.2f}x")
shares = [float(m.group(1)) for l in logs if (m := re.search(r"\(([\d.]+) %\)", l))]
full = [s for s, l in zip(shares, logs) if "record" in l]
print(f"recording share of the stage (every run's log): {', '.join(f'{s:.1f} %' for s in shares)}")
a, m = best["record-all-every-step"]["seconds"], best["record-minimal"]["seconds"]
print(f"record all rows every step vs minimal: {100 * (a - m) / m:+.1f} % wall time")
print(f"final loss: azimuth {best['record-all-every-step']['loss_last']}, PyTorch {base['loss_last']:.4f}")
PY
