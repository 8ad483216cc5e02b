#!/usr/bin/env python3
"""Train the bundled pix-fraud model and its XGBoost baseline, then export the package.

Features come from `pixguard features` itself (fitted on the training rows only), so training sees
exactly what the server computes. Run from the repository root after `cargo build --release`:

    python3 models/train/train.py --out models/pix-fraud

See docs/model.md for the run that produced the committed package.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from export import export_package  # noqa: E402
from model import DCNv2, embedding_dim  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def load_features(path: pathlib.Path, spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num_cols = [f["name"] for f in spec["numeric"]]
    cat_cols = [f["name"] for f in spec["categorical"]]
    frame = pd.read_csv(path, dtype={c: np.float32 for c in num_cols} | {c: np.int64 for c in cat_cols})
    return (
        frame[num_cols].to_numpy(np.float32),
        frame[cat_cols].to_numpy(np.int64),
        frame["label"].to_numpy(np.int64),
    )


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> tuple[float, float]:
    """Recall when the threshold lets `fpr` of legitimate rows through as alerts; and that threshold."""
    legit = np.sort(scores[labels == 0])
    threshold = float(legit[int(np.ceil((1 - fpr) * len(legit))) - 1])
    return float((scores[labels == 1] > threshold).mean()), threshold


def metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    recall_1, _ = recall_at_fpr(labels, scores, 0.01)
    recall_01, _ = recall_at_fpr(labels, scores, 0.001)
    return {
        "pr_auc": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "recall_at_1pct_fpr": recall_1,
        "recall_at_0.1pct_fpr": recall_01,
    }


def predict(model: DCNv2, numeric: np.ndarray, categorical: np.ndarray, batch: int = 65536) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(numeric), batch):
            n = torch.from_numpy(numeric[i : i + batch])
            c = torch.from_numpy(categorical[i : i + batch])
            out.append(model(n, c).squeeze(1).numpy())
    return np.concatenate(out)


def train_dcn(args, spec, train, valid) -> tuple[DCNv2, list[dict]]:
    torch.manual_seed(args.seed)
    categorical = []
    for f in spec["categorical"]:
        card = max(len(f["vocabulary"]), f["oov_index"] + 1)
        categorical.append((f["name"], card, embedding_dim(card)))
    model = DCNv2(len(spec["numeric"]), categorical, args.cross_layers, args.mlp)
    num, cat, y = (torch.from_numpy(a) for a in train)
    positives = float(y.sum())
    # Fraud is ~0.8 %: weight positives by sqrt(neg/pos), a middle ground between ignoring the
    # imbalance and fully re-balancing it (which over-predicts fraud and hurts precision).
    pos_weight = torch.tensor(((len(y) - positives) / positives) ** 0.5)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    steps = args.epochs * ((len(y) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    history, best, best_state = [], -1.0, None
    for epoch in range(args.epochs):
        model.train()
        started = time.time()
        perm = torch.randperm(len(y))
        total = 0.0
        for i in range(0, len(y), args.batch):
            idx = perm[i : i + args.batch]
            opt.zero_grad()
            loss = loss_fn(model.logit(num[idx], cat[idx]).squeeze(1), y[idx].float())
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        scores = predict(model, valid[0], valid[1])
        m = metrics(valid[2], scores)
        m.update(epoch=epoch + 1, loss=total / len(y), seconds=round(time.time() - started, 1))
        history.append(m)
        print(f"epoch {epoch + 1}: {json.dumps(m)}", flush=True)
        if m["pr_auc"] > best:
            best, best_state = m["pr_auc"], {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, history


def train_xgboost(args, train, valid, holdout) -> tuple[dict, dict]:
    import xgboost as xgb

    def matrix(part):
        return xgb.DMatrix(np.hstack([part[0], part[1].astype(np.float32)]), label=part[2])

    y = train[2]
    params = {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "tree_method": "hist",
        "max_depth": 6,
        "eta": 0.1,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "scale_pos_weight": float(((len(y) - y.sum()) / y.sum()) ** 0.5),
        "nthread": args.threads,
        "seed": args.seed,
    }
    dvalid = matrix(valid)
    booster = xgb.train(
        params, matrix(train), num_boost_round=600, evals=[(dvalid, "valid")],
        early_stopping_rounds=50, verbose_eval=100,
    )
    scores = booster.predict(matrix(holdout), iteration_range=(0, booster.best_iteration + 1))
    return metrics(holdout[2], scores), {"best_iteration": int(booster.best_iteration), **params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pixguard", default=str(ROOT / "target/release/pixguard"))
    p.add_argument("--work", default="/tmp/pixguard-train", help="scratch folder for synth data and features")
    p.add_argument("--out", default=str(ROOT / "models/pix-fraud"))
    p.add_argument("--train-rows", type=int, default=2_000_000)
    p.add_argument("--holdout-rows", type=int, default=500_000)
    p.add_argument("--train-seed", type=int, default=1001)
    p.add_argument("--holdout-seed", type=int, default=2002)
    p.add_argument("--fraud-rate", type=float, default=0.008)
    p.add_argument("--valid-share", type=float, default=0.1, help="tail of the training rows used for model selection")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--cross-layers", type=int, default=2)
    p.add_argument("--mlp", type=lambda s: [int(x) for x in s.split(",")], default=[256, 128])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--skip-xgboost", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pix = args.pixguard
    train_jsonl, holdout_jsonl, spec_path = work / "train.jsonl", work / "holdout.jsonl", work / "spec.json"
    for path, rows, seed in [(train_jsonl, args.train_rows, args.train_seed), (holdout_jsonl, args.holdout_rows, args.holdout_seed)]:
        run([pix, "synth", "--rows", str(rows), "--seed", str(seed), "--fraud-rate", str(args.fraud_rate), "-o", str(path)])
    # Statistics and vocabularies come from the training rows only.
    run([pix, "features", "--fit", str(spec_path), str(train_jsonl)])
    for src in (train_jsonl, holdout_jsonl):
        run([pix, "features", "--spec", str(spec_path), "--format", "csv", "-o", str(src.with_suffix(".csv")), str(src)])
    spec = json.loads(spec_path.read_text())
    num, cat, y = load_features(train_jsonl.with_suffix(".csv"), spec)
    holdout = load_features(holdout_jsonl.with_suffix(".csv"), spec)
    cut = int(len(y) * (1 - args.valid_share))
    train, valid = (num[:cut], cat[:cut], y[:cut]), (num[cut:], cat[cut:], y[cut:])
    print(f"train {cut} rows ({int(train[2].sum())} fraud), valid {len(y) - cut}, holdout {len(holdout[2])}", flush=True)

    model, history = train_dcn(args, spec, train, valid)
    holdout_scores = predict(model, holdout[0], holdout[1])
    dcn_metrics = metrics(holdout[2], holdout_scores)
    print("DCN holdout:", json.dumps(dcn_metrics), flush=True)
    xgb_metrics, xgb_params = (None, None) if args.skip_xgboost else train_xgboost(args, train, valid, holdout)
    print("XGBoost holdout:", json.dumps(xgb_metrics), flush=True)

    # Decisions: HOLD for ~1 % and REJECT for ~0.1 % of legitimate holdout traffic.
    _, hold = recall_at_fpr(holdout[2], holdout_scores, 0.01)
    _, reject = recall_at_fpr(holdout[2], holdout_scores, 0.001)
    # The training reference monitoring compares live traffic with: every training row's inputs
    # and score (docs/monitoring.md).
    train_scores = predict(model, num, cat)
    export_package(
        out=pathlib.Path(args.out),
        model=model,
        spec=spec,
        args=args,
        thresholds={"hold": hold, "reject": reject},
        metrics={"dcn_v2": dcn_metrics, "xgboost": xgb_metrics, "training_history": history},
        xgb_params=xgb_params,
        holdout_jsonl=holdout_jsonl,
        holdout=holdout,
        holdout_scores=holdout_scores,
        reference_rows=(num, cat, train_scores),
    )


if __name__ == "__main__":
    main()
