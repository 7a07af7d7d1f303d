#!/usr/bin/env python3
"""Benchmark of `w.black_holes` (science spec S04) against torch.unique and numpy on a synthetic,
Qwen-sized bf16 W.

`make` writes .bench/w_synth.safetensors: W = 151,936 x 2,560 bf16 (778 MB) whose rows are random
(N(0, 0.02) in f32, truncated to bf16) except 2,100 rows collapsed onto 13 planted black holes with
the populations of Qwen3-4B-Instruct-2507 [814, 704, 306, 228, 11, 10, 6, 5, 4, 4, 3, 3, 2] at
seeded random token ids; the 13 black-hole rows share one exponent profile and differ in mantissa
bits only (as in S08). The expected census goes to .bench/w_synth.expected.json.

`baseline` times, on the same file, (when a working `torch` is importable) torch.unique(W.view(torch.int16), dim=0, return_counts=True)
on the CPU and numpy's np.unique(W.view(np.int16), axis=0, return_counts=True) (numpy is skipped
unless --numpy is given, since it takes tens of seconds), checks their black-hole populations against the expected
ones, and prints one JSON line. Timings are best of --repeat runs with the file already in memory.

The PyTorch-CPU figure normally comes from the Rust side instead: `bench_black_holes` also times
libtorch 2.13's `unique_dim(0, return_counts=True)` (the C++ kernel behind torch.unique(dim=0)) through
tch on the same mapped bytes, because the PyPI torch wheel for Linux is the CUDA build and does not
import without its nvidia-* dependency wheels (several GB), and the CPU wheel index is not reachable
from every machine.
"""
import argparse
import json
import os
import struct
import sys
import time

POPS = [814, 704, 306, 228, 11, 10, 6, 5, 4, 4, 3, 3, 2]
V, D = 151_936, 2_560


def make(path, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    header = json.dumps({"W": {"dtype": "BF16", "shape": [V, D], "data_offsets": [0, V * D * 2]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    ids = rng.permutation(V)[: sum(POPS)]
    members, at = [], 0
    for p in POPS:
        members.append(sorted(int(i) for i in ids[at : at + p]))
        at += p
    # one exponent profile, 13 mantissa variants
    base = (rng.standard_normal(D, dtype=np.float32) * 0.007).view(np.uint32) >> 16
    base = base.astype(np.uint16) & np.uint16(0xFF80)
    holes = [base | rng.integers(0, 128, D, dtype=np.uint16) for _ in POPS]
    owner = {}
    for k, m in enumerate(members):
        for t in m:
            owner[t] = k
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        chunk = 8192
        for start in range(0, V, chunk):
            n = min(chunk, V - start)
            x = rng.standard_normal((n, D), dtype=np.float32) * 0.02
            w = (x.view(np.uint32) >> 16).astype(np.uint16)
            for t in range(start, start + n):
                if t in owner:
                    w[t - start] = holes[owner[t]]
            f.write(w.tobytes())
    os.replace(tmp, path)
    order = sorted(range(len(POPS)), key=lambda k: (-len(members[k]), members[k][0]))
    expected = {
        "rows": V, "cols": D,
        "populations": [len(members[k]) for k in order],
        "representatives": [members[k][0] for k in order],
        "distinct": V - sum(POPS) + len(POPS),
    }
    with open(path.rsplit(".safetensors", 1)[0] + ".expected.json", "w") as f:
        json.dump(expected, f)
    print(json.dumps(expected))


def load(path):
    import numpy as np

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))
    shape = meta["W"]["shape"]
    return np.fromfile(path, dtype=np.int16, offset=8 + n).reshape(shape)


def bh_pops(counts):
    return sorted((int(c) for c in counts if c > 1), reverse=True)


def baseline(path, repeat, do_numpy, threads):
    import numpy as np

    out = {"file": os.path.basename(path)}
    with open(path.rsplit(".safetensors", 1)[0] + ".expected.json") as f:
        expected = json.load(f)
    w = load(path)
    try:
        import torch

        torch.set_num_threads(threads)
        t = torch.from_numpy(w)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            u, counts = torch.unique(t, dim=0, return_counts=True)
            best = min(best, time.perf_counter() - t0)
        out["torch_version"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        out["torch_unique_s"] = best
        out["torch_ok"] = bh_pops(counts.numpy()) == expected["populations"] and u.shape[0] == expected["distinct"]
    except Exception as e:  # ImportError, or the CUDA wheel without its nvidia-* libraries
        out["torch_unique_s"] = None
        out["torch_error"] = f"{type(e).__name__}: {str(e)[:120]}"
    if do_numpy:
        best = float("inf")
        for _ in range(max(1, repeat // 2)):
            t0 = time.perf_counter()
            u, counts = np.unique(w, axis=0, return_counts=True)
            best = min(best, time.perf_counter() - t0)
        out["numpy_version"] = np.__version__
        out["numpy_unique_s"] = best
        out["numpy_ok"] = bh_pops(counts) == expected["populations"] and u.shape[0] == expected["distinct"]
    print("BASELINE " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("path")
    m.add_argument("--seed", type=int, default=42)
    b = sub.add_parser("baseline")
    b.add_argument("path")
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--numpy", action="store_true")
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.path, a.seed)
    else:
        baseline(a.path, a.repeat, a.numpy, a.threads)


if __name__ == "__main__":
    sys.exit(main())
