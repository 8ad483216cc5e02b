#!/usr/bin/env python3
"""perf_analyzer `--input-data` files from synth traffic, one transaction per request.

Writes two files into OUT: `fields.json` (the transaction's flattened fields, pixguard's first
OIP input mode) and `features.json` (precomputed `features` + `categories` from the package's own
spec — the inputs the ONNX model takes, so pixguard and Triton get identical tensors).
FP64 fields go as base64 raw bytes: JSON has no NaN, and an absent z-score is NaN on the wire.

    python3 benches/perf_analyzer_data.py --pixguard target/release/pixguard --out /tmp/pa-data
"""
import argparse
import base64
import csv
import json
import pathlib
import struct
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "peers"))
from pyfeatures import ABSENT, FIELDS, flatten  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pixguard", default="target/release/pixguard")
    p.add_argument("--model", default="models/pix-fraud")
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synth = subprocess.run([args.pixguard, "synth", "--rows", str(args.rows), "--seed", str(args.seed)],
                           check=True, capture_output=True).stdout
    txs = [json.loads(line)["transaction"] for line in synth.decode().splitlines()]

    steps = []
    for tx in txs:
        row = flatten(tx)
        step = {}
        for name, dt in FIELDS:
            value = row.get(name)
            if value is None:
                value = ABSENT[dt]
            if dt == "FP64":
                step[name] = {"b64": base64.b64encode(struct.pack("<d", value)).decode(), "shape": [1]}
            else:
                step[name] = [value]
        steps.append(step)
    (out / "fields.json").write_text(json.dumps({"data": steps}))

    spec = json.loads((pathlib.Path(args.model) / "model.json").read_text())["features"]
    text = subprocess.run([args.pixguard, "features", "--model", args.model, "--format", "csv"],
                          input=synth, check=True, capture_output=True).stdout.decode()
    steps = []
    for r in csv.DictReader(text.splitlines()):
        steps.append({
            "features": [float(r[f["name"]]) for f in spec["numeric"]],
            "categories": [int(r[f["name"]]) for f in spec["categorical"]],
        })
    (out / "features.json").write_text(json.dumps({"data": steps}))
    print(f"wrote {len(txs)} requests to {out}/fields.json and {out}/features.json")


if __name__ == "__main__":
    main()
