#!/usr/bin/env python3
"""The training reference of a model package (reference.json): what pixguard's monitoring compares
live traffic with (docs/monitoring.md).

For every model feature, in the space the model reads it (the standardised numeric value, the
categorical vocabulary index), and for the score: bins and the share of training rows in each.

- numeric: a value with at most 12 distinct values (a flag, a small count) gets one bin per value;
  any other, cut points at its deciles, and a cut that leaves a bin empty is dropped (a feature
  clipped at its top keeps no empty bin above the clip). Every cut sits halfway between the value
  it was taken at and the next value that occurs, so no training value lies on an edge. A value x falls
  in bin i when edges[i-1] < x <= edges[i] (bin 0: x <= edges[0]; last bin: x > edges[-1]).
- categorical: every vocabulary index holding at least 0.5 % of the rows is a bin of its own, the
  rest (and any index unseen in training) share the last bin, "other".
- score: the deciles and the 0.95, 0.99 and 0.999 quantiles, since fraud lives in the top per mille
  and a campaign shows there first.
- decisions: the share of training rows each threshold decision takes.

train.py calls `build` on its training rows when it exports a package. For a package already
exported, the command regenerates its training rows (model.json's `training` section), computes
their features with `pixguard features` and their scores with the package's ONNX graph
(onnxruntime), then writes reference.json and its digest into MLmodel:

    python3 models/train/reference.py models/pix-fraud --pixguard target/release/pixguard
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import subprocess
import tempfile

import numpy as np

CATEGORY_MIN_SHARE = 0.005
SCORE_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999]
# A value with at most this many distinct values gets one bin per value.
DISTINCT_BINS = 12
DECILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def bin_numeric(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin index of each value: the number of edges strictly below it (pixguard's rule)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values.astype(np.float64), side="left")


def numeric_bins(values: np.ndarray, quantiles: list[float]) -> dict:
    values = values.astype(np.float64)
    distinct = np.unique(values)
    if len(distinct) <= DISTINCT_BINS:
        # A flag or a small count: every value its own bin (deciles would merge a 5 % minority).
        cuts = distinct[:-1]
    else:
        cuts = np.unique(np.quantile(values, quantiles, method="lower"))
    # Each cut moves to the middle of the gap above it: the same training rows fall on each side,
    # and no value that occurs sits on an edge, where a last-bit difference between two
    # computations of a feature (float32 here, another order of operations there) would flip it.
    above = np.searchsorted(distinct, cuts, side="right")
    edges = sorted(float((c + distinct[i]) / 2) for c, i in zip(cuts, above) if i < len(distinct))
    # Drop cuts until no bin is empty: a cut at the maximum leaves the bin above it empty.
    while True:
        counts = np.bincount(bin_numeric(values, edges), minlength=len(edges) + 1)
        empty = [i for i, c in enumerate(counts) if c == 0]
        if not empty:
            break
        i = empty[0]
        del edges[min(i, len(edges) - 1)]
    return {"edges": edges, "proportions": (counts / len(values)).tolist()}


def categorical_bins(values: np.ndarray, vocabulary_size: int) -> dict:
    counts = np.bincount(values.astype(np.int64), minlength=vocabulary_size + 1)
    share = counts / len(values)
    own = [int(i) for i in np.flatnonzero(share >= CATEGORY_MIN_SHARE)]
    other = 1.0 - float(share[own].sum())
    return {"categories": own, "proportions": [float(share[i]) for i in own] + [max(other, 0.0)]}


def build(spec: dict, numeric: np.ndarray, categorical: np.ndarray, scores: np.ndarray,
          thresholds: dict, source: str) -> dict:
    """The reference of rows whose model inputs are `numeric`, `categorical` and scores `scores`."""
    features = []
    for j, f in enumerate(spec["numeric"]):
        features.append({"name": f["name"], "kind": "numeric", **numeric_bins(numeric[:, j], DECILES)})
    for j, f in enumerate(spec["categorical"]):
        vocabulary = f["vocabulary"]
        entry = categorical_bins(categorical[:, j], max(len(vocabulary), f["oov_index"] + 1))
        # Index → token (the out-of-vocabulary index last), so /v1/monitoring can name the bins.
        entry["labels"] = [vocabulary[i] if i < len(vocabulary) else "(unknown)" for i in entry["categories"]]
        features.append({"name": f["name"], "kind": "categorical", **entry})
    scores = scores.astype(np.float64)
    decisions = {
        "ALLOW": float((scores < thresholds["hold"]).mean()),
        "HOLD": float(((scores >= thresholds["hold"]) & (scores < thresholds["reject"])).mean()),
        "REJECT": float((scores >= thresholds["reject"]).mean()),
    }
    return {
        "format": 1,
        "rows": int(len(scores)),
        "source": source,
        "features": features,
        "score": numeric_bins(scores, SCORE_QUANTILES),
        "decisions": decisions,
    }


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(package: pathlib.Path, reference: dict) -> None:
    """Writes reference.json and names it, with its digest, in MLmodel's pixguard flavor."""
    import yaml

    path = package / "reference.json"
    path.write_text(json.dumps(reference, indent=1) + "\n")
    mlmodel = yaml.safe_load((package / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["pixguard"]
    flavor["reference"] = "reference.json"
    flavor["sha256"]["reference"] = sha256(path)
    (package / "MLmodel").write_text(yaml.safe_dump(mlmodel, default_flow_style=False))


def load_features(path: pathlib.Path, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    num_cols = [f["name"] for f in spec["numeric"]]
    cat_cols = [f["name"] for f in spec["categorical"]]
    frame = pd.read_csv(path, dtype={c: np.float32 for c in num_cols} | {c: np.int64 for c in cat_cols})
    return frame[num_cols].to_numpy(np.float32), frame[cat_cols].to_numpy(np.int64)


def onnx_scores(package: pathlib.Path, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(numeric), 65536):
        feeds = {"features": numeric[start:start + 65536], "categories": categorical[start:start + 65536]}
        out.append(session.run(["score"], feeds)[0].reshape(-1))
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", type=pathlib.Path)
    p.add_argument("--pixguard", default="target/release/pixguard")
    args = p.parse_args()
    config = json.loads((args.package / "model.json").read_text())
    training = config["training"]
    rows, seed, rate = training["train_rows"], training["train_seed"], training["fraud_rate"]
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        synth = [args.pixguard, "synth", "--rows", str(rows), "--seed", str(seed), "--fraud-rate", str(rate)]
        subprocess.run(synth + ["-o", str(work / "train.jsonl")], check=True)
        subprocess.run([args.pixguard, "features", "--model", str(args.package), "--format", "csv",
                        "-o", str(work / "train.csv"), str(work / "train.jsonl")], check=True)
        numeric, categorical = load_features(work / "train.csv", config["features"])
    scores = onnx_scores(args.package, numeric, categorical)
    source = f"training rows: pixguard synth --rows {rows} --seed {seed} --fraud-rate {rate}"
    reference = build(config["features"], numeric, categorical, scores, config["thresholds"], source)
    write(args.package, reference)
    print(f"{args.package / 'reference.json'}: {rows} rows, {len(reference['features'])} features, "
          f"score bins {len(reference['score']['proportions'])}, decisions {reference['decisions']}")


if __name__ == "__main__":
    main()
