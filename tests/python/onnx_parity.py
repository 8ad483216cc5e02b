#!/usr/bin/env python3
"""onnxruntime, an independent runtime, against `pixguard score` on fresh synthetic traffic.

Features come from `pixguard features --model` (the package's own spec); onnxruntime runs the
package's model.onnx on them; `pixguard score` runs the Candle model. The scores must agree within
1e-5. Called by tests/onnx.rs (so `cargo test` runs it), or by hand:

    python3 tests/python/onnx_parity.py --pixguard target/debug/pixguard --model models/pix-fraud
"""
import argparse
import csv
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pixguard", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=777, help="not a training or holdout seed: fresh traffic")
    p.add_argument("--tolerance", type=float, default=1e-5)
    args = p.parse_args()
    model = pathlib.Path(args.model)
    spec = json.loads((model / "model.json").read_text())["features"]
    numeric_names = [f["name"] for f in spec["numeric"]]
    categorical_names = [f["name"] for f in spec["categorical"]]

    with tempfile.TemporaryDirectory() as tmp:
        traffic = pathlib.Path(tmp) / "traffic.jsonl"
        subprocess.run([args.pixguard, "synth", "--rows", str(args.rows), "--seed", str(args.seed),
                        "--fraud-rate", "0.05", "-o", str(traffic)], check=True)
        features = subprocess.run([args.pixguard, "features", "--model", str(model), "--format", "csv", str(traffic)],
                                  check=True, capture_output=True, text=True).stdout
        scored = subprocess.run([args.pixguard, "score", "--model", str(model), str(traffic)],
                                check=True, capture_output=True, text=True).stdout

    rows = list(csv.DictReader(features.splitlines()))
    ids = [r["end_to_end_id"] for r in rows]
    numeric = np.array([[float(r[n]) for n in numeric_names] for r in rows], dtype=np.float32)
    categories = np.array([[int(r[n]) for n in categorical_names] for r in rows], dtype=np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model / "model.onnx"), options, providers=["CPUExecutionProvider"])
    reference = session.run(["score"], {"features": numeric, "categories": categories})[0].reshape(-1)

    results = [json.loads(line) for line in scored.splitlines()]
    if [r["end_to_end_id"] for r in results] != ids:
        print("pixguard score and pixguard features disagree on the rows", file=sys.stderr)
        return 1
    candle = np.array([r["score"] for r in results], dtype=np.float64)
    diff = np.abs(candle - reference.astype(np.float64))
    worst = int(diff.argmax())
    print(f"{len(ids)} rows: max |pixguard - onnxruntime| = {diff[worst]:.3e} (row {worst}), "
          f"mean {diff.mean():.3e}; onnxruntime {ort.__version__}")
    if not diff[worst] <= args.tolerance:
        print(f"FAIL: exceeds {args.tolerance}", file=sys.stderr)
        return 1
    decisions = {r["decision"] for r in results}
    if not decisions <= {"ALLOW", "HOLD", "REJECT"}:
        print(f"unexpected decisions {decisions}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
