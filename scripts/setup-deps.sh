#!/usr/bin/env bash
# Installs the native dependencies Azimuth builds against into ./.deps, without root:
#   - libtorch (from the PyPI torch wheel; CPU-only by default, TCH_CUDA=1 keeps CUDA),
#   - CMake >= 3.26 (from PyPI) for the statically built HDF5.
# Idempotent: a stamp file makes a second run a no-op. See ARCHITECTURE.md, "Native dependencies".
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0   # must equal the TORCH_VERSION that torch-sys (pinned in Cargo.toml) expects
CMAKE_VERSION=4.4.4    # any >= 3.26
STAMP=.deps/.stamp-torch-$TORCH_VERSION-cuda${TCH_CUDA:-0}
if [[ -f $STAMP ]]; then echo "deps: up to date (.deps)"; exit 0; fi
command -v python3 >/dev/null || { echo "setup-deps: python3 is required (to fetch libtorch from PyPI)" >&2; exit 1; }
rm -rf .deps/py .deps/bin .deps/.stamp-torch-* && mkdir -p .deps   # .deps/models (fetch-models.sh) is kept
PIP=(python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --target .deps/py)
if python3 -m pip install --help 2>/dev/null | grep -q -- --root-user-action; then PIP+=(--root-user-action=ignore); fi
case "$(uname -s)-$(uname -m)-${TCH_CUDA:-0}" in
  Linux-x86_64-0)   # CPU: the CUDA wheel without its CUDA deps, CUDA half deleted
    "${PIP[@]}" --no-deps torch==$TORCH_VERSION nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 cmake==$CMAKE_VERSION
    L=.deps/py/torch/lib
    for f in libtorch_cpu.so libc10.so libtorch_cuda.so; do
      [[ -e $L/$f ]] || { echo "setup-deps: the torch $TORCH_VERSION wheel has no $L/$f; its layout changed, re-check the recipe" >&2; exit 1; }
    done
    rm -f $L/libtorch_cuda.so $L/libtorch_cuda_linalg.so $L/libc10_cuda.so $L/libtorch_nvshmem.so \
          $L/libcaffe2_nvrtc.so $L/libtorch_python.so
    ln -sf libtorch_cpu.so $L/libtorch.so      # libtorch.so only exists to pull in libtorch_cuda.so
    find .deps/py/nvidia/cu13 -mindepth 1 -not -path '*/lib' -not -name libcudart.so.13 -not -name libcupti.so.13 -delete
    find .deps/py/torch -mindepth 1 -maxdepth 1 -not -name include -not -name lib -exec rm -rf {} + ;;
  Linux-x86_64-1)   # CUDA machine: the full wheel with its nvidia-* deps (needs a CUDA 13 capable driver)
    "${PIP[@]}" torch==$TORCH_VERSION cmake==$CMAKE_VERSION ;;
  Darwin-arm64-*)   # macOS Apple Silicon: CPU+MPS wheel, no extra native deps
    "${PIP[@]}" --no-deps torch==$TORCH_VERSION cmake==$CMAKE_VERSION ;;
  *) echo "setup-deps: unsupported platform $(uname -sm); see README 'Platforms'" >&2; exit 1 ;;
esac
echo "$TORCH_VERSION" > .deps/py/torch/build-version   # arms torch-sys's version check
mkdir -p .deps/bin
CM=$(find .deps/py/cmake/data -type f -path '*/bin/cmake' | head -n1)
ln -sfn "../py/${CM#.deps/py/}" .deps/bin/cmake
.deps/bin/cmake --version | head -n1
touch "$STAMP"
echo "deps: installed into .deps"
