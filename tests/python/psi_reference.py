#!/usr/bin/env python3
"""PSI of scored rows against a package's reference, computed with numpy alone, compared with
pixguard's (tests/monitoring.rs).

    psi_reference.py PACKAGE FEATURES.csv SCORES.jsonl SUMMARY.json

FEATURES.csv: `pixguard features --model PACKAGE --format csv` of the rows (the model's inputs);
SCORES.jsonl: `pixguard batch` output for the same rows (end_to_end_id, score);
SUMMARY.json: `pixguard batch`'s summary, whose `drift` is pixguard's figure for the file.

Bins as reference.json defines them: a numeric value x falls in bin i when
edges[i-1] < x <= edges[i]; a categorical index in its own bin or the last ("other").
PSI = sum over bins of (a - e) * ln(a / e), each share floored at 1e-4 (docs/monitoring.md).
Prints every PSI with pixguard's and the largest difference; exits 1 above 1e-9.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

TOLERANCE = 1e-9
FLOOR = 1e-4


def psi(counts: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(counts / counts.sum(), FLOOR)
    e = np.maximum(expected, FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values.astype(np.float64), side="left")
    return np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)


def main() -> int:
    package, features_csv, scores_jsonl, summary_json = sys.argv[1:]
    reference = json.load(open(f"{package}/reference.json"))
    thresholds = json.load(open(f"{package}/model.json"))["thresholds"]
    frame = pd.read_csv(features_csv, dtype={"end_to_end_id": str})
    scores = pd.read_json(scores_jsonl, lines=True, dtype={"end_to_end_id": str})
    frame = frame.merge(scores[["end_to_end_id", "score"]], on="end_to_end_id", validate="one_to_one")
    summary = json.load(open(summary_json))["drift"]
    theirs = {f["name"]: f["psi"] for f in summary["features"]}
    theirs["score"] = summary["score_psi"]

    ours = {}
    for f in reference["features"]:
        column = frame[f["name"]]
        if f["kind"] == "numeric":
            counts = numeric_counts(column.to_numpy(np.float32), f["edges"])
        else:
            other = len(f["categories"])
            position = {c: i for i, c in enumerate(f["categories"])}
            bins = np.array([position.get(int(c), other) for c in column.to_numpy(np.int64)])
            counts = np.bincount(bins, minlength=other + 1).astype(np.float64)
        ours[f["name"]] = psi(counts, np.asarray(f["proportions"]))
    score = frame["score"].to_numpy(np.float32)
    ours["score"] = psi(numeric_counts(score, reference["score"]["edges"]),
                        np.asarray(reference["score"]["proportions"]))

    worst = 0.0
    for name in ours:
        d = abs(ours[name] - theirs[name])
        worst = max(worst, d)
        print(f"{name:32} numpy {ours[name]:.12f}  pixguard {theirs[name]:.12f}  |diff| {d:.1e}")
    s = score.astype(np.float64)
    decisions = {
        "ALLOW": float((s < thresholds["hold"]).mean()),
        "HOLD": float(((s >= thresholds["hold"]) & (s < thresholds["reject"])).mean()),
        "REJECT": float((s >= thresholds["reject"]).mean()),
    }
    for d, share in decisions.items():
        diff = abs(share - summary["decisions"][d])
        worst = max(worst, diff)
        print(f"decision {d:23} numpy {share:.12f}  pixguard {summary['decisions'][d]:.12f}  |diff| {diff:.1e}")
    print(f"{len(frame)} rows, {len(ours)} PSIs: largest |numpy - pixguard| {worst:.2e} (tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE and len(ours) == len(theirs) else 1


if __name__ == "__main__":
    sys.exit(main())
