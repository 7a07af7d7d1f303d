"""Row L2 norms of one tensor in a safetensors file, as a CSV histogram (stdlib only).

Usage: norms.py WEIGHTS.safetensors OUT.csv BINS
Reads the header (8-byte length + JSON), then the first tensor's rows; BF16, F16 and F32 are
decoded by hand so the script needs nothing beyond Python 3.
"""
import json
import math
import struct
import sys

path, out, bins = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    name = sorted(k for k in header if k != "__metadata__")[0]
    info = header[name]
    begin, end = info["data_offsets"]
    f.seek(8 + n + begin)
    data = f.read(end - begin)
rows, cols = info["shape"][0], math.prod(info["shape"][1:])
dtype = info["dtype"]
if dtype == "BF16":
    vals = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack(f"<{rows * cols}H", data)]
elif dtype == "F16":
    vals = list(struct.unpack(f"<{rows * cols}e", data))
elif dtype == "F32":
    vals = list(struct.unpack(f"<{rows * cols}f", data))
else:
    sys.exit(f"norms.py: unsupported dtype {dtype} in {path}")
norms = [math.sqrt(sum(v * v for v in vals[r * cols:(r + 1) * cols])) for r in range(rows)]
lo, hi = min(norms), max(norms)
width = (hi - lo) / bins or 1.0
counts = [0] * bins
for x in norms:
    counts[min(int((x - lo) / width), bins - 1)] += 1
with open(out, "w") as f:
    f.write("bin_low,bin_high,count\n")
    for i, c in enumerate(counts):
        f.write(f"{lo + i * width:.9g},{lo + (i + 1) * width:.9g},{c}\n")
