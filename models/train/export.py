"""Write the pix-fraud package: an MLflow Model folder with the `pixguard` flavor.

    MLmodel             flavors.pixguard {model_config, weights, sha256}, signature, input example, metadata
    model.json          name, version, architecture, feature spec, decision thresholds, metrics
    model.safetensors   f32 weights (names in model.py)
    model.onnx          the same network from the feature tensors, for an independent runtime
    input_example.json  a few transactions in MLflow's dataframe-split form (flattened fields)
    golden.jsonl        1,000 held-out transactions with the PyTorch float64 score of each
    reference.json      the training reference monitoring compares with (reference.py)
"""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import pathlib
import uuid

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

FLAT_TYPES = {
    # The transaction flattened as pixguard's CSV/OIP columns (src/transaction/flat.rs), MLflow types.
    "end_to_end_id": ("string", True),
    "accepted_at": ("string", True),
    "amount_cents": ("long", True),
    "initiation_form": ("string", True),
    "purpose": ("string", True),
    "payer.ispb": ("string", True),
    "payer.account_type": ("string", True),
    "payer.person_type": ("string", True),
    "payer.account_opened_at": ("string", True),
    "payer.device.registered": ("boolean", True),
    "payer.device.first_seen_at": ("string", False),
    "payee.ispb": ("string", True),
    "payee.account_type": ("string", True),
    "payee.person_type": ("string", True),
    "payee.key_type": ("string", False),
    "payee.key_created_at": ("string", False),
    "payee.account_opened_at": ("string", False),
    # double, not long: pandas holds a missing integer as NaN, which MLflow refuses for `long`.
    "payee.dict_stats.settlements_90d": ("double", False),
    "payee.dict_stats.fraud_markers_30d": ("double", False),
    "payee.dict_stats.infractions_open": ("double", False),
    "payee.dict_stats.mule_marker": ("boolean", False),
    "history.payee_first_time": ("boolean", True),
    "history.payer_tx_1h": ("long", True),
    "history.payer_amount_24h_cents": ("long", True),
    "history.amount_zscore_90d": ("double", False),
}


def flatten(tx: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tx.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_golden(out: pathlib.Path, model, holdout_jsonl: pathlib.Path, holdout, rows: int = 1000, seed: int = 11) -> None:
    """Score `rows` held-out transactions (a fifth of them fraud) in float64."""
    labels = holdout[2]
    rng = np.random.default_rng(seed)
    fraud = np.flatnonzero(labels == 1)
    legit = np.flatnonzero(labels == 0)
    picks = np.sort(np.concatenate([
        rng.choice(fraud, size=min(rows // 5, len(fraud)), replace=False),
        rng.choice(legit, size=rows - min(rows // 5, len(fraud)), replace=False),
    ]))
    reference = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        scores = reference(
            torch.from_numpy(holdout[0][picks].astype(np.float64)), torch.from_numpy(holdout[1][picks])
        ).squeeze(1).numpy()
    wanted = dict(zip(picks.tolist(), scores.tolist()))
    with holdout_jsonl.open() as src, out.open("w") as dst:
        for i, line in enumerate(src):
            if i in wanted:
                row = json.loads(line)
                row["score"] = wanted[i]
                dst.write(json.dumps(row, separators=(",", ":")) + "\n")


def export_onnx(path: pathlib.Path, model, n_numeric: int, n_categorical: int) -> None:
    model = copy.deepcopy(model).float().eval()
    example = (torch.zeros(4, n_numeric), torch.zeros(4, n_categorical, dtype=torch.int64))
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        example,
        str(path),
        input_names=["features", "categories"],
        output_names=["score"],
        dynamic_shapes=({0: batch}, {0: batch}),
        opset_version=18,
        dynamo=True,
        external_data=False,
    )


def export_package(*, out, model, spec, args, thresholds, metrics, xgb_params, holdout_jsonl, holdout, holdout_scores,
                   reference_rows):
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.models.utils import _save_example
    from mlflow.types.schema import ColSpec, Schema

    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))

    architecture = {
        "kind": "dcn_v2",
        "cross_layers": len(model.cross),
        "mlp": [layer.out_features for layer in model.mlp],
        "embedding_dims": [model.embeddings[f["name"]].embedding_dim for f in spec["categorical"]],
    }
    created = dt.datetime.now(dt.timezone.utc)
    config = {
        "name": "pix-fraud",
        "version": created.strftime("%Y%m%d.%H%M"),
        "architecture": architecture,
        "features": spec,
        "thresholds": thresholds,
        "metrics": metrics,
        "training": {
            "train_rows": args.train_rows,
            "train_seed": args.train_seed,
            "holdout_rows": args.holdout_rows,
            "holdout_seed": args.holdout_seed,
            "fraud_rate": args.fraud_rate,
            "epochs": args.epochs,
            "batch": args.batch,
            "lr": args.lr,
            "torch_seed": args.seed,
            "xgboost": xgb_params,
        },
    }
    (out / "model.json").write_text(json.dumps(config, indent=2) + "\n")
    export_onnx(out / "model.onnx", model, len(spec["numeric"]), len(spec["categorical"]))
    write_golden(out / "golden.jsonl", model, holdout_jsonl, holdout)

    mlmodel = Model(
        model_uuid=uuid.uuid4().hex,
        utc_time_created=created.strftime("%Y-%m-%d %H:%M:%S.%f"),
        metadata={
            "training_seed": args.train_seed,
            "training_rows": args.train_rows,
            "holdout_seed": args.holdout_seed,
            "holdout_rows": args.holdout_rows,
            "holdout_metrics": {"dcn_v2": metrics["dcn_v2"], "xgboost": metrics["xgboost"]},
        },
    )
    mlmodel.add_flavor(
        "pixguard",
        model_config="model.json",
        weights="model.safetensors",
        sha256={"model_config": sha256(out / "model.json"), "weights": sha256(out / "model.safetensors")},
        onnx="model.onnx",
        golden="golden.jsonl",
    )
    mlmodel.signature = ModelSignature(
        inputs=Schema([ColSpec(kind, name, required=required) for name, (kind, required) in FLAT_TYPES.items()]),
        outputs=Schema([ColSpec("double", "score")]),
    )
    examples = []
    with holdout_jsonl.open() as src:
        for line in src:
            flat = flatten(json.loads(line)["transaction"])
            examples.append({name: flat.get(name) for name in FLAT_TYPES})
            if len(examples) == 3:
                break
    # object dtype keeps integers integral and absent values as null (not NaN) in the JSON.
    _save_example(mlmodel, pd.DataFrame(examples, dtype=object), str(out))
    mlmodel.save(str(out / "MLmodel"))
    from pyfunc_flavor import add_flavor
    add_flavor(out)
    import reference as training_reference
    numeric, categorical, scores = reference_rows
    source = (f"training rows: pixguard synth --rows {args.train_rows} --seed {args.train_seed} "
              f"--fraud-rate {args.fraud_rate}")
    training_reference.write(out, training_reference.build(spec, numeric, categorical, scores, thresholds, source))
    print(f"package written to {out}", flush=True)
