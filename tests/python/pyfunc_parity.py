#!/usr/bin/env python3
"""The package's `python_function` flavor, loaded by MLflow itself, scores the golden rows as
pixguard does: `mlflow.pyfunc.load_model(<uri>)` (a folder or `models:/name@alias`) on the golden
transactions, against pixguard's scores of the same rows (a JSONL of `pixguard score`).

    python tests/python/pyfunc_parity.py --model-uri models:/pix-fraud@production \
        --golden models/pix-fraud/golden.jsonl --pixguard-scores scores.jsonl [--tolerance 1e-6]
"""
import argparse
import json
import sys

import mlflow
import pandas as pd


def flatten(tx: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tx.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-uri", required=True)
    p.add_argument("--golden", required=True)
    p.add_argument("--pixguard-scores", required=True)
    p.add_argument("--tracking-uri")
    p.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args()
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    model = mlflow.pyfunc.load_model(args.model_uri)
    if "python_function" not in model.metadata.flavors or "pixguard" not in model.metadata.flavors:
        print(f"flavors: {list(model.metadata.flavors)}", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in open(args.golden)]
    schema = model.metadata.get_input_schema().inputs
    records = [flatten(r["transaction"]) for r in rows]
    # pandas' nullable dtypes: an optional integer column with absent values stays integral.
    dtypes = {"long": "int64", "boolean": "object", "double": "float64", "string": "object"}
    frame = pd.DataFrame({c.name: pd.Series([rec.get(c.name) for rec in records],
                                            dtype=dtypes[c.type.name]) for c in schema})
    got = model.predict(frame)
    ours = {}
    for line in open(args.pixguard_scores):
        r = json.loads(line)
        ours[r["end_to_end_id"]] = (r["score"], r["decision"])
    worst, decisions_differ = 0.0, 0
    for r, score, decision in zip(rows, got["score"], got["decision"]):
        want, want_decision = ours[r["transaction"]["end_to_end_id"]]
        worst = max(worst, abs(float(score) - want))
        decisions_differ += decision != want_decision
    print(json.dumps({"rows": len(rows), "max_abs_diff": worst, "decisions_differ": decisions_differ}))
    return 0 if worst <= args.tolerance and decisions_differ == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
