#!/usr/bin/env bash
# Hashing throughput of `azimuth hash` against `b3sum` (the reference BLAKE3 tool, installed from
# crates.io into .bench/) on the same file, warm page cache, side by side. Usage:
# bench/hash.sh [SIZE_MB] (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-1024}
cargo build --release --locked -q -p azimuth
mkdir -p .bench
[[ -x .bench/b3sum/bin/b3sum ]] || cargo install -q --locked --root .bench/b3sum b3sum
F=.bench/hash-$MB.bin
[[ -f $F && $(stat -c %s "$F") -eq $((MB << 20)) ]] || python3 -c "
import random, sys
r = random.Random(1)
with open('$F', 'wb') as f:
    for _ in range($MB // 8): f.write(r.randbytes(8 << 20))"
cat "$F" > /dev/null   # warm the page cache
python3 - "$F" "$MB" <<'PY'
import statistics, subprocess, sys, time
path, mb = sys.argv[1], int(sys.argv[2])
def run(cmd):
    times = []
    for _ in range(7):
        t = time.perf_counter(); out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout; times.append(time.perf_counter() - t)
    return statistics.median(times), out.split()[0].removeprefix("b3:")
ta, da = run(["target/release/azimuth", "hash", path])
tb, db = run([".bench/b3sum/bin/b3sum", path])
assert da == db, f"digests differ: {da} vs {db}"
gib = mb / 1024
print(f"{mb} MiB, median of 7, warm cache: azimuth hash {ta*1000:.0f} ms ({gib/ta:.2f} GiB/s), b3sum {tb*1000:.0f} ms ({gib/tb:.2f} GiB/s)")
print(f"azimuth reaches {tb/ta*100:.0f}% of b3sum's throughput (target >= 85%); digests agree")
PY
