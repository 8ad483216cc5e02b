#!/usr/bin/env python3
"""onnxruntime on the bundled model.onnx, one thread, the batches of `cargo bench --bench model`.

Same inputs as the Rust bench (synth seed 1, 4,096 rows, 5 % fraud, features from the package's
spec). Each batch size: 1 s of warm-up, then the median of per-call times over >= 2 s. Times
include the Python call into onnxruntime, as in any Python serving stack.

    python3 benches/onnx_forward.py --pixguard target/release/pixguard --model models/pix-fraud
"""
import argparse
import csv
import json
import pathlib
import subprocess
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pixguard", default="target/release/pixguard")
    p.add_argument("--model", default="models/pix-fraud")
    args = p.parse_args()
    model = pathlib.Path(args.model)
    spec = json.loads((model / "model.json").read_text())["features"]
    synth = subprocess.run([args.pixguard, "synth", "--rows", "4096", "--seed", "1", "--fraud-rate", "0.05"],
                           check=True, capture_output=True).stdout
    text = subprocess.run([args.pixguard, "features", "--model", str(model), "--format", "csv"],
                          input=synth, check=True, capture_output=True).stdout.decode()
    rows = list(csv.DictReader(text.splitlines()))
    numeric = np.array([[float(r[f["name"]]) for f in spec["numeric"]] for r in rows], dtype=np.float32)
    categories = np.array([[int(r[f["name"]]) for f in spec["categorical"]] for r in rows], dtype=np.int64)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model / "model.onnx"), options, providers=["CPUExecutionProvider"])
    print(f"onnxruntime {ort.__version__}, 1 thread")
    print(f"{'batch':>6} {'median µs':>12} {'rows/s':>12}")
    for b in (1, 8, 64, 512, 4096):
        feed = {"features": np.ascontiguousarray(numeric[:b]), "categories": np.ascontiguousarray(categories[:b])}
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            session.run(["score"], feed)
        times = []
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end or len(times) < 20:
            t = time.perf_counter_ns()
            session.run(["score"], feed)
            times.append(time.perf_counter_ns() - t)
        median = float(np.median(times)) / 1e3
        print(f"{b:>6} {median:>12.1f} {b / median * 1e6:>12.0f}")


if __name__ == "__main__":
    main()
