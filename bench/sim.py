"""Python references of one Monument Valley trial (science spec S21), for bench/sim.sh.

Draws V x D float32 points around the anchor (anchor + sigma * z), rounds them to bf16
(round-to-nearest-even), keeps M of them through a random permutation and counts the groups of
bit-identical rows: once in numpy (in row blocks with reused buffers, the fastest numpy we found)
and once in PyTorch as the notebooks wrote it (one randn of the whole matrix, .to(bfloat16),
randperm, unique(dim=0)), on the CPU. Prints one JSON line: seconds per trial (best of --repeat) and the
counts, so the bench can check the references see the same regime as azimuth.

    python bench/sim.py ANCHOR.safetensors --threads 2 --repeat 3
"""

import argparse
import json
import struct
import time

import numpy as np
import torch


def read_anchor(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header["anchor"]
    assert meta["dtype"] == "F32", meta
    a, b = meta["data_offsets"]
    return np.frombuffer(data[a:b], dtype=np.float32).copy()


def census(counts):
    counts = sorted((int(c) for c in counts), reverse=True)
    holes = [c for c in counts if c > 1]
    return {"unique": len(counts), "black_holes": len(holes), "largest": holes[0] if holes else 0}


def numpy_trial(c, vocab, keep, sigma, seed, block=2048):
    # Row blocks with reused buffers: one pass over the 778 MB of bf16 rows and no multi-GB
    # temporaries (the whole-matrix version of the notebooks took 20 s here, mostly page faults).
    rng = np.random.default_rng(seed)
    rows = np.empty((vocab, c.size), dtype=np.uint16)
    z = np.empty((block, c.size), dtype=np.float32)
    carry = np.empty((block, c.size), dtype=np.uint32)
    scale = np.float32(sigma)
    for i in range(0, vocab, block):
        n = min(block, vocab - i)
        x = z[:n]
        rng.standard_normal(out=x, dtype=np.float32)
        x *= scale
        x += c
        b = x.view(np.uint32)
        t = carry[:n]
        np.right_shift(b, 16, out=t)
        t &= 1
        t += 0x7FFF
        b += t
        b >>= 16
        rows[i:i + n] = b
    survivors = rows[rng.permutation(vocab)[:keep]]
    _, counts = np.unique(survivors, axis=0, return_counts=True)
    return census(counts)


def torch_trial(c, vocab, keep, sigma, seed):
    torch.manual_seed(seed)
    x = torch.from_numpy(c) + sigma * torch.randn(vocab, c.size)
    rows = x.to(torch.bfloat16).view(torch.int16)
    survivors = rows[torch.randperm(vocab)[:keep]]
    _, counts = torch.unique(survivors, dim=0, return_counts=True)
    return census(counts.tolist())


def best(f, repeat):
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
    return min(times), result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("anchor")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--survivors", type=int, default=2221)
    ap.add_argument("--sigma", type=float, default=1.5e-9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c = read_anchor(a.anchor)
    out = {"torch_version": torch.__version__, "numpy_version": np.__version__, "threads": a.threads}
    for name, f in [("numpy", numpy_trial), ("torch", torch_trial)]:
        s, r = best(lambda: f(c, a.vocab, a.survivors, a.sigma, 42), a.repeat)
        out[name] = {"s": s, **r}
    print("BASELINE " + json.dumps(out))


if __name__ == "__main__":
    main()
