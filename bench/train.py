#!/usr/bin/env python3
"""PyTorch side of bench/train.sh: the model `train.gpt` trains, written the way a researcher's
plain PyTorch loop would be, timed on the same token stream, batch, precision and thread count.

Usage:
  train.py prepare OUT_DIR [TEXT]   writes OUT_DIR/tokens.safetensors (I32 byte ids) and
                                    OUT_DIR/masks.safetensors (BOOL dead_mask [128]) from TEXT
                                    (ASCII bytes kept, CRLF -> LF) or, without TEXT, from a
                                    generated English-like text
  train.py run OUT_DIR PARAMS_JSON  trains and prints `BASELINE {...}` (seconds, steps/s)

The model matches stages/torch/src/train/model.rs: token + learned position embeddings, pre-LN
blocks (fused qkv linear, causal scaled_dot_product_attention, out projection; GELU MLP), final
LayerNorm, logits = h @ W.T with W the token embedding (tied). Protocol P1: the whole model cast
to bf16, torch.optim.AdamW (its state is created in bf16), cross-entropy on bf16 logits. Windows:
uniform random starts (numpy), as the Rust trainer draws them (another generator, same law).
The timed region is the whole run after the corpus is loaded: model set-up and every step,
reading the loss back each step (`loss.item()`, as any logging loop does).
"""
import json
import math
import os
import struct
import sys
import time


def write_safetensors(path, name, dtype, shape, data):
    head = json.dumps({name: {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}},
                      separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + data)


def prepare(out, text_path=None):
    os.makedirs(out, exist_ok=True)
    if text_path and os.path.exists(text_path):
        raw = open(text_path, "rb").read()
    else:
        words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
                 "bold jumping frogs and the king speaks to his court").split()
        state, out_words = 1, []
        for _ in range(400_000):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            out_words.append(words[(state >> 33) % len(words)])
        raw = " ".join(out_words).encode()
    data = bytes(b for b in raw.replace(b"\r\n", b"\n") if b < 128)
    ids = struct.pack(f"<{len(data)}i", *data)
    write_safetensors(os.path.join(out, "tokens.safetensors"), "tokens", "I32", [len(data)], ids)
    present = set(data)
    dead = bytes(0 if b in present else 1 for b in range(128))
    write_safetensors(os.path.join(out, "masks.safetensors"), "dead_mask", "BOOL", [128], dead)
    print(f"prepared {len(data)} tokens, {128 - len(present)} dead ids", file=sys.stderr)


def read_tokens(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        info = head["tokens"]
        return f.read(), info["shape"][0]


def run(out, params):
    threads = int(params.get("threads", 1))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    raw, n = read_tokens(os.path.join(out, "tokens.safetensors"))
    tokens = torch.from_numpy(np.frombuffer(raw, dtype=np.int32).astype(np.int64))
    V = 128
    D, L, H, FF, T = (params[k] for k in ("d_model", "layers", "heads", "ffn", "context"))
    B, steps, lr = params["batch"], params["steps"], params["lr"]
    wd = params.get("weight_decay", 0.01)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(D)
            self.qkv = nn.Linear(D, 3 * D)
            self.proj = nn.Linear(D, D)
            self.ln_2 = nn.LayerNorm(D)
            self.fc = nn.Linear(D, FF)
            self.out = nn.Linear(FF, D)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln_1(x)).split(D, dim=2)
            q, k, v = (z.view(b, t, H, D // H).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, D))
            return x + self.out(F.gelu(self.fc(self.ln_2(x))))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, D)
            self.wpe = nn.Embedding(T, D)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(D)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
            for blk in self.blocks:
                nn.init.normal_(blk.proj.weight, 0.0, 0.02 / math.sqrt(2 * L))
                nn.init.normal_(blk.out.weight, 0.0, 0.02 / math.sqrt(2 * L))

        def forward(self, idx):
            x = self.wte(idx) + self.wpe.weight[: idx.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            return self.ln_f(x) @ self.wte.weight.T

    rng = np.random.default_rng(params.get("seed", 42))
    started = time.perf_counter()
    torch.manual_seed(params.get("seed", 42))
    model = Gpt().to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (steps - s) / steps)
    window = T + 1
    offsets = torch.arange(window)
    loss_value = float("nan")
    for _ in range(steps):
        starts = torch.from_numpy(rng.integers(0, n - window + 1, size=B))
        win = tokens[starts[:, None] + offsets]
        x, y = win[:, :T], win[:, 1:]
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_value = loss.item()
    secs = time.perf_counter() - started
    print("BASELINE " + json.dumps({"seconds": secs, "steps_per_s": steps / secs,
                                    "loss_last": loss_value, "torch": torch.__version__,
                                    "threads": threads}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        run(sys.argv[2], json.loads(sys.argv[3]))
