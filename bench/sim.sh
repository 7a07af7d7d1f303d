#!/usr/bin/env bash
# Benchmark of Monument Valley (science spec S21) against numpy and PyTorch references of the same
# trial, side by side on this machine, all on 2 threads.
#
# Usage: bench/sim.sh [repeat]   (default 3)
# 1. Runs bench/sim/pipeline.yaml with ./target/release/azimuth (build it first: cargo build
#    --release), caching into .bench/sim-cache: a synthetic anchor of norm 0.370917 (D 2,560).
# 2. Times `azimuth run --force full` (one faithful trial: all 151,936 x 2,560 points drawn,
#    rounded to bf16 and counted, 2,221 survivors grouped) and `--force survivors` (the same
#    distribution from the 2,221 survivors alone), end to end as stage processes, best of [repeat].
# 3. Times one trial of the same work in numpy and in PyTorch (bench/sim.py, in
#    .bench/venv-pytorch: PyPI torch==2.13.0 + numpy, made on first use), best of [repeat].
# 4. Times the 100-sigma x 10-trial sweep (`valley`, 100 stage instances) and its gathering
#    analyzer from an empty cache, wall clock of the whole `azimuth run`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-3}
AZ=$PWD/target/release/azimuth
PIPE=bench/sim/pipeline.yaml
VENV=.bench/venv-pytorch
[[ -x $AZ ]] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p .bench
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv $VENV
  $VENV/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 numpy
fi
echo "load: $(uptime | sed 's/.*load average: //')"
export AZIMUTH_CACHE_DIR=$PWD/.bench/sim-cache
$AZ run -p $PIPE -j 2 anchor >/dev/null

stage_ms() {  # best duration_ms of `azimuth run --force $1`
  local best=
  for _ in $(seq "$REPEAT"); do
    ms=$($AZ run -p $PIPE --force "$1" -j 2 --json "$1" 2>/dev/null \
      | python3 -c "import json,sys
for l in sys.stdin:
    e=json.loads(l)
    if e.get('event')=='stage-finished' and e['stage']=='$1' and e['status']=='ran': print(e['duration_ms'])")
    [[ -z $best || $ms -lt $best ]] && best=$ms
  done
  echo "$best"
}
FULL=$(stage_ms full)
SURV=$(stage_ms survivors)
echo "  azimuth full: $FULL ms, survivors: $SURV ms"

BASE=$($VENV/bin/python bench/sim.py bench/sim/out/anchor/anchor.safetensors --threads 2 \
  --repeat "$REPEAT" | sed 's/^BASELINE //')

SWEEP_CACHE=$PWD/.bench/sim-sweep-cache
rm -rf "$SWEEP_CACHE"
T0=$(date +%s.%N)
AZIMUTH_CACHE_DIR=$SWEEP_CACHE $AZ run -p $PIPE -j 2 -q valley_sweep
T1=$(date +%s.%N)
rm -rf "$SWEEP_CACHE"

python3 - "$BASE" "$FULL" "$SURV" "$T0" "$T1" <<'PY'
import json, sys
base = json.loads(sys.argv[1])
full, surv = int(sys.argv[2]) / 1000, int(sys.argv[3]) / 1000
sweep = float(sys.argv[5]) - float(sys.argv[4])
out = "bench/sim/out"
f = json.load(open(f"{out}/full/summary.json"))
s = json.load(open(f"{out}/survivors/summary.json"))
sw = json.load(open(f"{out}/valley_sweep/summary.json"))["series"][0]
print(f"counts at sigma 1.5e-9 (black holes / largest / unique):")
print(f"  azimuth full      {f['black_holes']['mean']:.0f} / {f['largest']['mean']:.0f} / {f['unique']['mean']:.0f}"
      f"   (whole vocabulary: {f['vocabulary']['unique']['mean']:.0f} cells)")
print(f"  azimuth survivors {s['black_holes']['mean']:.0f} / {s['largest']['mean']:.0f} / {s['unique']['mean']:.0f}")
for k in ["numpy", "torch"]:
    b = base[k]
    print(f"  {k:<17} {b['black_holes']} / {b['largest']} / {b['unique']}")
print(f"{'one trial':<28} {'azimuth':>10} {'numpy':>10} {'ratio':>7} {'torch ' + base['torch_version']:>18} {'ratio':>7}")
for name, t in [("full (151,936 drawn)", full), ("survivors (2,221 drawn)", surv)]:
    print(f"{name:<28} {t:>8.3f} s {base['numpy']['s']:>8.3f} s {base['numpy']['s'] / t:>6.1f}x"
          f" {base['torch']['s']:>16.3f} s {base['torch']['s'] / t:>6.1f}x")
print(f"100-sigma x 10-trial sweep + gather, cold cache: {sweep:.1f} s wall"
      f" (peak {sw['peak']['black_holes']['mean']:.1f} black holes at sigma {sw['peak']['scale']:.3e})")
PY
