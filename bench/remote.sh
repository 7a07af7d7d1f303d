#!/usr/bin/env bash
# Benchmark of the remote cache against a plain copy, side by side on this machine.
#
# Usage: bench/remote.sh [MiB] [repeat]   (defaults: 1024 MiB, best of 3)
# 1. A stage writes MiB of random bytes (one object); `azimuth run --no-push` stores it locally.
# 2. Push: `azimuth cache push` of that object into an empty remote directory (8 MiB chunks
#    written at their offsets, 8 at once, then hashed once, fsynced and renamed) against `cp` of
#    the same file followed by `sync` (no chunks, no verification).
# 3. Pull: a second cache root fetches it (`azimuth cache pull`: ranged reads, 8 at once, then
#    BLAKE3 of the whole file) against `cp` + `sync` back.
# Each side starts from dropped page cache when run as root (echo 3 > /proc/sys/vm/drop_caches),
# else from whatever is cached; both sides see the same conditions. Prints times and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
REPEAT=${2:-3}
AZ=$PWD/target/release/azimuth
[[ -x $AZ ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v bc >/dev/null || { echo "needs bc (apt-get install bc)" >&2; exit 1; }
W=$PWD/.bench/remote
rm -rf "$W" && mkdir -p "$W/a" "$W/b"
cat > "$W/a/pipeline.yaml" <<YAML
stages:
  blob:
    cmd: [python3, -c, "import os,sys; f=open(sys.argv[1],'wb'); [f.write(os.urandom(1<<20)) for _ in range($MIB)]", "\${outputs.o}"]
    outputs: {o: blob.bin}
YAML
cp "$W/a/pipeline.yaml" "$W/b/pipeline.yaml"
(cd "$W/a" && $AZ run --no-push >/dev/null 2>&1)
OBJ=$(cd "$W/a" && $AZ cache path blob.o)
drop() { [ "$(id -u)" = 0 ] && sync && echo 3 > /proc/sys/vm/drop_caches || true; }
best() { sort -n | head -n1; }
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
echo "load: $(uptime | sed 's/.*load average: //'), object: $MIB MiB"
push=(); cpto=(); pull=(); cpback=()
for _ in $(seq "$REPEAT"); do
  rm -rf "$W/remote" "$W/copy" "$W/b/cache" "$W/back"; mkdir -p "$W/copy"
  drop; push+=("$(t bash -c "cd '$W/a' && '$AZ' --remote '$W/remote' cache push")")
  drop; cpto+=("$(t bash -c "cp '$OBJ' '$W/copy/blob' && sync")")
  drop; pull+=("$(t bash -c "cd '$W/b' && '$AZ' --remote '$W/remote' cache pull")")
  drop; cpback+=("$(t bash -c "cp '$W/copy/blob' '$W/back' && sync")")
done
P=$(printf '%s\n' "${push[@]}" | best); C=$(printf '%s\n' "${cpto[@]}" | best)
L=$(printf '%s\n' "${pull[@]}" | best); B=$(printf '%s\n' "${cpback[@]}" | best)
printf 'push  azimuth %6.2f s (%4.0f MiB/s)   cp+sync %6.2f s   ratio %.2f\n' "$P" "$(echo "$MIB / $P" | bc -l)" "$C" "$(echo "$P / $C" | bc -l)"
printf 'pull  azimuth %6.2f s (%4.0f MiB/s)   cp+sync %6.2f s   ratio %.2f\n' "$L" "$(echo "$MIB / $L" | bc -l)" "$B" "$(echo "$L / $B" | bc -l)"
DIGEST=$($AZ hash "$OBJ" | awk '{print $1}')
cmp "$OBJ" "$(cd "$W/b" && $AZ cache path "$DIGEST")" && echo "pulled object identical ($DIGEST)"
