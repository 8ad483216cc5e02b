#!/usr/bin/env python3
"""Markdown tables from the CSV files benches/perf_analyzer.sh leaves in its output folder."""
import csv
import pathlib
import sys

SWEEPS = [
    ("pixguard_http_fields", "pixguard, HTTP, transaction fields"),
    ("pixguard_http_features", "pixguard, HTTP, features"),
    ("pixguard_grpc_fields", "pixguard, gRPC, transaction fields"),
    ("pixguard_grpc_features", "pixguard, gRPC, features"),
    ("triton_http_features", "Triton (pytriton + onnxruntime), HTTP, features"),
    ("triton_grpc_features", "Triton (pytriton + onnxruntime), gRPC, features"),
]


def load(path: pathlib.Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    return {int(r["Concurrency"]): {"rps": float(r["Inferences/Second"]), "p50": int(r["p50 latency"]),
                                    "p99": int(r["p99 latency"])} for r in csv.DictReader(path.open())}


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    runs = {name: load(out / f"{name}.csv") for name, _ in SWEEPS}
    present = [(n, label) for n, label in SWEEPS if runs[n]]
    levels = sorted({c for r in runs.values() for c in r})
    print("Throughput (inferences/s) and p50 / p99 latency (µs) by concurrency:\n")
    print("| concurrency | " + " | ".join(label for _, label in present) + " |")
    print("|---:|" + "---:|" * len(present))
    for c in levels:
        cells = []
        for n, _ in present:
            r = runs[n].get(c)
            cells.append(f"{r['rps']:,.0f} ({r['p50']:,} / {r['p99']:,})" if r else "—")
        print(f"| {c} | " + " | ".join(cells) + " |")
    print("\nHighest throughput with p99 ≤ 10 ms, and the ratio to Triton over the same protocol:\n")
    print("| run | inferences/s | at concurrency | p99 µs | × Triton |")
    print("|---|---:|---:|---:|---:|")
    best = {}
    for n, label in present:
        ok = [(r["rps"], c, r["p99"]) for c, r in runs[n].items() if r["p99"] <= 10_000]
        best[n] = max(ok) if ok else None
    for n, label in present:
        b = best[n]
        if b is None:
            print(f"| {label} | — | — | — | — |")
            continue
        peer = best.get("triton_grpc_features" if "_grpc_" in n else "triton_http_features")
        ratio = f"{b[0] / peer[0]:.1f}×" if peer and not n.startswith("triton") else ""
        print(f"| {label} | {b[0]:,.0f} | {b[1]} | {b[2]:,} | {ratio} |")


if __name__ == "__main__":
    main()
