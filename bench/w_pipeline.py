#!/usr/bin/env python3
"""Python reference for bench/w_pipeline.sh: the W stages' work done the way a notebook would do
it, with numpy (OpenBLAS) on the CPU, on the same synthetic Qwen-shaped checkpoint and the same
thread count, so the shell script can print ratios side by side.

Usage: w_pipeline.py CHECKPOINT_DIR W_FILE TRUTH_JSON --threads N [--repeat R]

Each task is timed best-of-R with the files already in the page cache, from the moment the task
starts (no interpreter start-up) to its last byte written; the Rust side is timed end to end as a
stage process (process start, libtorch load, mapping, work, writing outputs). Tasks:
- extract: read the index and the shard header, copy the tied embedding's bytes into a new
  one-tensor safetensors file, fsync it (what `w.extract` does);
- norms: per-row L2 norms of the f32 up-cast, in 8,192-row chunks;
- dead_sets: rule A (exponent distance of every row to black hole 1 ≤ 5) and rule B (distances to
  the population-weighted black-hole centroid, the 10,000 smallest, the largest gap);
- pca: mean, covariance Wcᵀ·Wc/N in f32 (chunked matmul), np.linalg.eigh;
- pca_torch: the same in PyTorch the way a notebook writes it (W.float(), centre, Wcᵀ·Wc/N,
  torch.linalg.eigh), with torch.set_num_threads(N); skipped when torch is not importable.
numpy has no bfloat16, so bf16 is widened exactly by shifting the 16-bit patterns into f32 bits.
Prints one JSON line `BASELINE {...}` with times and the results, so the script can check that
both sides computed the same thing.
"""
import argparse
import json
import os
import struct
import sys
import time


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def load_w(path, np):
    h, off = header(path)
    info = h["W"]
    rows, cols = info["shape"]
    raw = np.memmap(path, dtype=np.uint16, mode="r", offset=off, shape=(rows, cols))
    return raw


def widen(block, np):
    return (block.astype(np.uint32) << 16).view(np.float32)


def task_extract(ckpt, out, np):
    index = json.load(open(os.path.join(ckpt, "model.safetensors.index.json")))
    shard = os.path.join(ckpt, index["weight_map"]["model.embed_tokens.weight"])
    h, off = header(shard)
    info = h["model.embed_tokens.weight"]
    a, b = info["data_offsets"]
    head = json.dumps({"W": {"dtype": info["dtype"], "shape": info["shape"],
                             "data_offsets": [0, b - a]}}, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(shard, "rb") as src, open(out, "wb") as dst:
        dst.write(struct.pack("<Q", len(head)) + head)
        src.seek(off + a)
        left = b - a
        while left:
            chunk = src.read(min(left, 64 << 20))
            dst.write(chunk)
            left -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return {"bytes": b - a}


def task_norms(w, np):
    out = np.empty(w.shape[0], dtype=np.float32)
    for s in range(0, w.shape[0], 8192):
        x = widen(w[s:s + 8192], np)
        out[s:s + 8192] = np.sqrt(np.einsum("ij,ij->i", x, x))
    return {"mean": float(out.astype(np.float64).mean())}


def task_dead_sets(w, truth, np):
    holes = truth["black_holes"]
    anchor = w[holes[0]["representative"]]
    ea = ((anchor >> 7) & 0xFF).astype(np.int16)
    members = np.array(sorted(t for h in holes for t in h["members"]), dtype=np.int64)
    centroid = widen(w[members], np).astype(np.float64).mean(axis=0).astype(np.float32)
    dexp = np.empty(w.shape[0], dtype=np.int16)
    dist = np.empty(w.shape[0], dtype=np.float32)
    for s in range(0, w.shape[0], 8192):
        blk = w[s:s + 8192]
        e = ((blk >> 7) & 0xFF).astype(np.int16)
        dexp[s:s + 8192] = np.abs(e - ea).max(axis=1)
        x = widen(blk, np) - centroid
        dist[s:s + 8192] = np.sqrt(np.einsum("ij,ij->i", x, x))
    rule_a = int((dexp <= 5).sum())
    near = np.sort(np.partition(dist, 10000)[:10000])
    gaps = np.diff(near)
    g = int(np.argmax(gaps))
    threshold = (near[g] + near[g + 1]) / 2
    return {"rule_a": rule_a, "rule_b": int((dist < threshold).sum()),
            "inner": float(near[g]), "outer": float(near[g + 1])}


def task_pca(w, np):
    n, d = w.shape
    mean = np.zeros(d, dtype=np.float64)
    for s in range(0, n, 8192):
        mean += widen(w[s:s + 8192], np).sum(axis=0, dtype=np.float64)
    mean = (mean / n).astype(np.float32)
    cov = np.zeros((d, d), dtype=np.float32)
    for s in range(0, n, 8192):
        x = widen(w[s:s + 8192], np) - mean
        cov += x.T @ x
    cov /= n
    vals = np.linalg.eigh(cov)[0][::-1]
    return {"lambda1": float(vals[0]), "lambda_last": float(vals[-1])}


def task_pca_torch(path, torch):
    h, off = header(path)
    rows, cols = h["W"]["shape"]
    raw = torch.from_file(path, shared=False, size=off + rows * cols * 2, dtype=torch.uint8)
    w = raw[off:].view(torch.bfloat16).view(rows, cols)
    x = w.float()
    x -= x.mean(dim=0)
    cov = (x.T @ x) / rows
    vals = torch.linalg.eigh(cov).eigenvalues.flip(0)
    return {"lambda1": float(vals[0]), "lambda_last": float(vals[-1])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("w")
    ap.add_argument("truth")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scratch", default=".bench")
    a = ap.parse_args()
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(a.threads)
    import numpy as np

    truth = json.load(open(a.truth))
    w = load_w(a.w, np)
    out = os.path.join(a.scratch, "w_pipeline.extract.safetensors")
    tasks = {
        "extract": lambda: task_extract(a.ckpt, out, np),
        "norms": lambda: task_norms(w, np),
        "dead_sets": lambda: task_dead_sets(w, truth, np),
        "pca": lambda: task_pca(w, np),
    }
    try:
        import torch

        torch.set_num_threads(a.threads)
        tasks["pca_torch"] = lambda: task_pca_torch(a.w, torch)
    except ImportError:
        print("  (torch not importable: no PyTorch PCA)", file=sys.stderr)
    res = {"threads": a.threads, "numpy": np.__version__}
    if "pca_torch" in tasks:
        res["torch"] = torch.__version__
    for name, f in tasks.items():
        best, value = None, None
        for _ in range(a.repeat):
            t = time.perf_counter()
            value = f()
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        res[name] = {"s": best, **value}
        print(f"  numpy {name}: {best:.3f} s", file=sys.stderr)
    os.remove(out)
    print("BASELINE " + json.dumps(res))


if __name__ == "__main__":
    main()
