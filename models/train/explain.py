"""Reason codes for the pix-fraud package: the groups and baselines (`model.json` `explanations`)
and the PyTorch reference's reasons for the golden rows (`golden.jsonl` `reasons`).

The method is group occlusion (docs/model.md): each input feature belongs to one group; a group's
contribution to a row's score is the score minus the score of the same row with that group's
features at their training baseline — a numeric feature at 0 (its standardised training mean), a
categorical one at its most frequent training category. Reasons are the groups with a positive
contribution, largest first, at most three. pixguard computes the same on its worker
(src/model/explain.rs); tests/reasons.rs checks it against the reasons written here.

    python models/train/explain.py --spec      # (re)write model.json explanations + MLmodel digest
    python models/train/explain.py --golden    # the reference reasons of golden.jsonl (needs torch)

Features come from `pixguard features` (the package's spec), as in training, so the reference sees
exactly the inputs pixguard's network does.
"""
from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "models/pix-fraud"
MAX_REASONS = 3

# (code, what it means to an analyst, numeric features, categorical features). Every feature of
# the spec is in exactly one group.
GROUPS = [
    ("AMOUNT_UNUSUAL_FOR_PAYER", "The amount is large, or unusual against this payer's last 90 days "
     "and last 24 hours.", ["amount_log", "amount_share_24h", "amount_zscore_90d", "amount_zscore_90d_missing"], []),
    ("PAYER_VELOCITY", "The payer sent many payments in the last hour, or a large total in the last "
     "24 hours.", ["payer_tx_1h_log", "payer_amount_24h_log"], []),
    ("PAYEE_FIRST_TIME", "The payer has never paid this payee before.", ["payee_first_time"], []),
    ("DEVICE_UNREGISTERED", "The payment came from a device that is not registered to the payer, or "
     "that was first seen recently.", ["device_registered", "device_age_log", "device_first_seen_missing"], []),
    ("PAYER_ACCOUNT_NEW", "The payer's account was opened recently.", ["payer_account_age_log"], []),
    ("PAYER_PROFILE", "The payer's institution, account type or person type.", [],
     ["payer_ispb", "payer_account_type", "payer_person_type"]),
    ("PAYEE_KEY_NEW", "The payee's Pix key was registered in DICT recently, or its type (e.g. a "
     "random key) is the risky kind.", ["key_age_log", "key_created_missing"], ["payee_key_type"]),
    ("PAYEE_ACCOUNT_NEW", "The payee's account was opened recently.",
     ["payee_account_age_log", "payee_account_opened_missing"], []),
    ("PAYEE_FEW_SETTLEMENTS", "DICT reports few settled payments to this payee's key in 90 days (or "
     "no statistics).", ["dict_settlements_90d_log", "dict_stats_missing"], []),
    ("PAYEE_FRAUD_REPORTS", "DICT holds fraud markers or open infraction reports against the payee's "
     "key.", ["dict_fraud_markers_30d_log", "dict_infractions_open_log"], []),
    ("PAYEE_MULE_MARKER", "DICT marks the payee as a suspected money mule.", ["dict_mule_marker"], []),
    ("PAYEE_PROFILE", "The payee's institution, account type or person type, or whether it is the "
     "payer's own institution.", ["same_institution"], ["payee_ispb", "payee_account_type", "payee_person_type"]),
    ("PAYMENT_CHANNEL", "How the payment was initiated (manual entry, key, QR code) and its purpose.", [],
     ["initiation_form", "purpose"]),
    ("NIGHT_TIME", "The time of day: night hours, when limits are lower and scams peak.",
     ["hour_sin", "hour_cos", "night_window"], ["local_time_hour"]),
    ("DAY_OF_WEEK", "The day of the week, or a weekend.", ["weekday_sin", "weekday_cos", "weekend"], []),
]


def pixguard_bin() -> str:
    return str(ROOT / "target/release/pixguard")


def features_csv(jsonl: pathlib.Path) -> list[dict]:
    out = subprocess.run(
        [pixguard_bin(), "features", "--model", str(PACKAGE), "--format", "csv", str(jsonl)],
        check=True, capture_output=True, text=True,
    ).stdout
    return list(csv.DictReader(io.StringIO(out)))


def write_spec(rows: int) -> None:
    """Groups from GROUPS; baselines: each categorical feature's most frequent value in a sample
    drawn like the training set (`pixguard synth` with the training seed and fraud rate)."""
    config = json.loads((PACKAGE / "model.json").read_text())
    training = config["training"]
    sample = pathlib.Path("/tmp/pixguard-explain-sample.jsonl")
    with sample.open("w") as f:
        subprocess.run(
            [pixguard_bin(), "synth", "--rows", str(rows), "--seed", str(training["train_seed"]),
             "--fraud-rate", str(training["fraud_rate"])],
            check=True, stdout=f,
        )
    names = [c["name"] for c in config["features"]["categorical"]]
    counts = {n: collections.Counter() for n in names}
    for row in features_csv(sample):
        for n in names:
            counts[n][int(row[n])] += 1
    config["explanations"] = {
        "method": "occlusion",
        "groups": [
            {"code": code, "description": text, "numeric": numeric, "categorical": categorical}
            for code, text, numeric, categorical in GROUPS
        ],
        "categorical_baselines": {n: counts[n].most_common(1)[0][0] for n in names},
    }
    path = PACKAGE / "model.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    mlmodel = PACKAGE / "MLmodel"
    text = re.sub(r"(model_config: )[0-9a-f]{64}", rf"\g<1>{digest}", mlmodel.read_text())
    mlmodel.write_text(text)
    print(f"model.json explanations: {len(GROUPS)} groups; sha256 {digest}")


def reference_reasons() -> None:
    """The float64 PyTorch reference's reasons of every golden row, written into golden.jsonl."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from model import DCNv2

    config = json.loads((PACKAGE / "model.json").read_text())
    spec, arch, expl = config["features"], config["architecture"], config["explanations"]
    num_names = [f["name"] for f in spec["numeric"]]
    cat_names = [f["name"] for f in spec["categorical"]]
    categorical = [
        (f["name"], len(f["vocabulary"]) + 1, dim) for f, dim in zip(spec["categorical"], arch["embedding_dims"])
    ]
    model = DCNv2(len(num_names), categorical, arch["cross_layers"], arch["mlp"])
    model.load_state_dict(load_file(str(PACKAGE / "model.safetensors")))
    model = model.double().eval()

    golden_path = PACKAGE / "golden.jsonl"
    lines = [json.loads(line) for line in golden_path.read_text().splitlines()]
    bare = pathlib.Path("/tmp/pixguard-golden-bare.jsonl")
    bare.write_text("".join(json.dumps(r["transaction"]) + "\n" for r in lines))
    rows = features_csv(bare)
    numeric = torch.tensor([[float(r[n]) for n in num_names] for r in rows], dtype=torch.float64)
    cats = torch.tensor([[int(r[n]) for n in cat_names] for r in rows], dtype=torch.int64)
    with torch.no_grad():
        score = model(numeric, cats).squeeze(1)
        contributions = []
        for group in expl["groups"]:
            n, c = numeric.clone(), cats.clone()
            for name in group["numeric"]:
                n[:, num_names.index(name)] = 0.0
            for name in group["categorical"]:
                c[:, cat_names.index(name)] = expl["categorical_baselines"][name]
            contributions.append(score - model(n, c).squeeze(1))
        contributions = torch.stack(contributions, dim=1).numpy()
    codes = [g["code"] for g in expl["groups"]]
    for line, row in zip(lines, contributions):
        order = sorted((g for g in range(len(codes)) if row[g] > 0), key=lambda g: (-row[g], g))
        line["reasons"] = [{"code": codes[g], "contribution": float(row[g])} for g in order[:MAX_REASONS]]
    golden_path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in lines))
    explained = sum(1 for r in lines if r["reasons"])
    print(f"golden.jsonl: reasons for {explained} of {len(lines)} rows; max |score - golden| "
          f"{max(abs(float(s) - r['score']) for s, r in zip(score.numpy(), lines)):.2e}")


def main() -> None:
    global PACKAGE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", action="store_true", help="write model.json explanations and the MLmodel digest")
    p.add_argument("--golden", action="store_true", help="write the reference reasons into golden.jsonl")
    p.add_argument("--sample-rows", type=int, default=200_000, help="rows of the baseline sample")
    p.add_argument("--package", default=str(PACKAGE), help="package folder (default: models/pix-fraud)")
    args = p.parse_args()
    PACKAGE = pathlib.Path(args.package).resolve()
    if args.spec:
        write_spec(args.sample_rows)
    if args.golden:
        reference_reasons()


if __name__ == "__main__":
    main()
