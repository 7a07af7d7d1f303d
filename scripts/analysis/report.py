"""Combines the census (tensor.summary JSON) and the per-sigma norm histograms into report.md.

Usage: report.py OUT.md SUMMARY.json NORMS.csv...   (one CSV per sweep instance, in sweep order)
"""
import csv
import json
import sys

out, summary_path, norm_paths = sys.argv[1], sys.argv[2], sys.argv[3:]
summary = json.load(open(summary_path))
lines = [
    "# Synthetic unembedding matrices: bf16 collapse vs init scale",
    "",
    "Rows drawn around one point with a small sigma collapse onto a few bit-identical bf16 rows",
    "(\"black holes\"); wider draws stay distinct. `distinct_rows` counts rows by their raw bytes.",
    "",
    "| std | rows | distinct rows | largest group of identical rows | row-norm min | row-norm max | norm histogram peak bin |",
    "|---|---|---|---|---|---|---|",
]
for entry, norms in zip(summary["files"], norm_paths):
    t = entry["tensors"][0]
    rows = list(csv.DictReader(open(norms)))
    peak = max(rows, key=lambda r: int(r["count"]))
    std = entry.get("metadata", {}).get("std", "?")
    largest = t.get("largest_identical_group", "")
    lines.append(
        f"| {std} | {t['rows']} | {t['distinct_rows']} | {largest} | {t['row_norm']['min']:.6g} | "
        f"{t['row_norm']['max']:.6g} | [{float(peak['bin_low']):.6g}, {float(peak['bin_high']):.6g}) x{peak['count']} |"
    )
open(out, "w").write("\n".join(lines) + "\n")
