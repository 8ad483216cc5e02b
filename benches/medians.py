#!/usr/bin/env python3
"""Print the median of every criterion benchmark under target/criterion (from its estimates.json).

Usage: python3 benches/medians.py [GROUP ...]
Benchmark ids end in `/<rows>`; throughput is rows divided by the median time.
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
groups = sys.argv[1:]
for estimates in sorted(root.glob("*/*/new/estimates.json")):
    group, bench = estimates.parts[-4], estimates.parts[-3]
    if groups and group not in groups:
        continue
    median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
    name = f"{group}/{bench}"
    rows = bench.rsplit("_", 1)[-1]
    line = f"{name:45s} median {median_ns / 1e3:10.1f} µs"
    if rows.isdigit():
        n = int(rows)
        line += f"  {n / (median_ns / 1e9) / 1e6:7.3f} M rows/s  {median_ns / n:8.0f} ns/row"
    print(line)
