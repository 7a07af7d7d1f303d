#!/usr/bin/env bash
# Benchmark of the W stages at Qwen scale against a numpy reference, side by side on this machine.
#
# Usage: bench/w_pipeline.sh [repeat]   (default 3)
# 1. Runs pipelines/synthetic-qwen (a 151,936 x 2,560 bf16 checkpoint with planted, exactly known
#    dead-token structure) with ./target/release/azimuth (build it first: cargo build --release),
#    caching into .bench/synthetic-qwen-cache; about 4 GB of disk.
# 2. Times each measured stage end to end as `azimuth run --force STAGE -j 1` (stage process
#    start, libtorch load, mapping, work, writing and hashing outputs), best of [repeat], and
#    checks its results against the planted truth (black holes, rule A, rule B).
# 3. Times the same work in numpy, and the PCA also in PyTorch (bench/w_pipeline.py, in
#    .bench/venv-pytorch: PyPI torch==2.13.0 + numpy, about 4.7 GB, made on first use) on the same
#    files with the same thread count, best of [repeat], and prints the ratio baseline / azimuth.
# The black-hole finder against torch.unique is bench/w_stages.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${1:-3}
AZ=$PWD/target/release/azimuth
PIPE=pipelines/synthetic-qwen/pipeline.yaml
VENV=.bench/venv-pytorch
export AZIMUTH_CACHE_DIR=$PWD/.bench/synthetic-qwen-cache
[[ -x $AZ ]] || { echo "build first: cargo build --release" >&2; exit 1; }
mkdir -p .bench
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv $VENV
  $VENV/bin/pip install --quiet --disable-pip-version-check torch==2.13.0 numpy
fi
echo "load: $(uptime | sed 's/.*load average: //')"
$AZ run -p $PIPE -j 2 >/dev/null
OUT=pipelines/synthetic-qwen/out
cat $OUT/checkpoint/checkpoint/*.safetensors $OUT/qwen/w.safetensors > /dev/null   # page cache

declare -A BEST
for stage in qwen norms black_holes dead pca; do
  best=
  for _ in $(seq "$REPEAT"); do
    ms=$($AZ run -p $PIPE --force "$stage" -j 1 --json 2>/dev/null \
      | python3 -c "import json,sys
for l in sys.stdin:
    e=json.loads(l)
    if e.get('event')=='stage-finished' and e['stage']=='$stage' and e['status']=='ran': print(e['duration_ms'])")
    [[ -z $best || $ms -lt $best ]] && best=$ms
  done
  BEST[$stage]=$best
  echo "  azimuth $stage: $best ms"
done

BASE=$($VENV/bin/python bench/w_pipeline.py $OUT/checkpoint/checkpoint $OUT/qwen/w.safetensors \
  $OUT/checkpoint/truth.json --threads 1 --repeat "$REPEAT" | sed 's/^BASELINE //')

python3 - "$BASE" "${BEST[qwen]}" "${BEST[norms]}" "${BEST[black_holes]}" "${BEST[dead]}" "${BEST[pca]}" "$OUT" <<'PY'
import json, sys
base = json.loads(sys.argv[1])
ms = dict(zip(["extract", "norms", "black_holes", "dead_sets", "pca"], map(int, sys.argv[2:7])))
out = sys.argv[7]
truth = json.load(open(f"{out}/checkpoint/truth.json"))
bh = json.load(open(f"{out}/black_holes/summary.json"))
dead = json.load(open(f"{out}/dead/summary.json"))
norms = json.load(open(f"{out}/norms/summary.json"))
pca = json.load(open(f"{out}/pca/summary.json"))
checks = {
    "black holes = planted": bh["populations"] == [h["population"] for h in truth["black_holes"]]
        and bh["representatives"] == [h["representative"] for h in truth["black_holes"]],
    "rule A = planted": dead["rule_a"]["set"]["tokens"] == len(truth["rule_a"]) == base["dead_sets"]["rule_a"],
    "rule B = planted": dead["rule_b"]["set"]["tokens"] == len(truth["rule_b"]) == base["dead_sets"]["rule_b"],
}
for k, v in checks.items():
    print(f"{k}: {v}")
print(f"norms mean: azimuth {norms['mean']:.6f}, numpy {base['norms']['mean']:.6f}")
lam = pca["eigenvalues_leading"][0]
lam = lam["value"] if isinstance(lam, dict) else lam
print(f"pca lambda1: azimuth {lam:.7e}, numpy {base['pca']['lambda1']:.7e}")
print(f"{'task':<12} {'azimuth (stage, -j1)':>22} {'numpy (1 thread)':>18} {'ratio':>7}")
for k in ["extract", "norms", "dead_sets", "pca"]:
    a, b = ms[k] / 1000, base[k]["s"]
    print(f"{k:<12} {a:>20.3f} s {b:>16.3f} s {b / a:>6.1f}x")
if "pca_torch" in base:
    t = base["pca_torch"]
    print(f"{'pca (torch)':<12} {ms['pca'] / 1000:>20.3f} s {t['s']:>16.3f} s {t['s'] * 1000 / ms['pca']:>6.1f}x"
          f"   torch {base['torch']}, lambda1 {t['lambda1']:.7e}")
print(f"{'black_holes':<12} {ms['black_holes'] / 1000:>20.3f} s   (vs torch.unique: bench/w_stages.sh)")
PY
