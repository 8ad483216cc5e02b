"""The pre-processing a Python team would write for the bundled model: pydantic validation of the
Pix transaction, then the package's feature spec (model.json) applied row by row with the standard
library and numpy. Shared by the FastAPI, MLflow pyfunc and pytriton peers.

    python3 benches/peers/pyfeatures.py --check     # parity with `pixguard features` on synth rows
"""
from __future__ import annotations

import json
import math
import pathlib
from datetime import datetime
from typing import Literal, Optional
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SAO_PAULO = ZoneInfo("America/Sao_Paulo")

# The transaction's 25 flattened fields as OIP inputs (pixguard's fields mode): name, datatype.
FIELDS = [
    ("end_to_end_id", "BYTES"), ("accepted_at", "BYTES"), ("amount_cents", "INT64"),
    ("initiation_form", "BYTES"), ("purpose", "BYTES"), ("payer.ispb", "BYTES"),
    ("payer.account_type", "BYTES"), ("payer.person_type", "BYTES"), ("payer.account_opened_at", "BYTES"),
    ("payer.device.registered", "BOOL"), ("payer.device.first_seen_at", "BYTES"), ("payee.ispb", "BYTES"),
    ("payee.account_type", "BYTES"), ("payee.person_type", "BYTES"), ("payee.key_type", "BYTES"),
    ("payee.key_created_at", "BYTES"), ("payee.account_opened_at", "BYTES"),
    ("payee.dict_stats.settlements_90d", "INT64"), ("payee.dict_stats.fraud_markers_30d", "INT64"),
    ("payee.dict_stats.infractions_open", "INT64"), ("payee.dict_stats.mule_marker", "BOOL"),
    ("history.payee_first_time", "BOOL"), ("history.payer_tx_1h", "INT64"),
    ("history.payer_amount_24h_cents", "INT64"), ("history.amount_zscore_90d", "FP64"),
]
# What stands in an OIP field input for an absent value (-1 in the DICT counts: the group is absent).
ABSENT = {"BYTES": "", "INT64": -1, "FP64": float("nan"), "BOOL": False}


def flatten(tx: dict, prefix: str = "") -> dict:
    """Dotted leaves of a nested transaction (absent optional fields stay absent)."""
    out = {}
    for k, v in tx.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
Ispb = Field(pattern=r"^[0-9]{8}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Device(Strict):
    registered: bool
    first_seen_at: Optional[datetime] = None


class Payer(Strict):
    ispb: str = Ispb
    account_type: Literal["CACC", "SVGS", "TRAN", "SLRY"]
    person_type: Literal["NATURAL", "LEGAL"]
    account_opened_at: datetime
    device: Device


class DictStats(Strict):
    settlements_90d: int = Field(ge=0)
    fraud_markers_30d: int = Field(ge=0)
    infractions_open: int = Field(ge=0)
    mule_marker: bool


class Payee(Strict):
    ispb: str = Ispb
    account_type: Literal["CACC", "SVGS", "TRAN", "SLRY"]
    person_type: Literal["NATURAL", "LEGAL"]
    key_type: Optional[Literal["CPF", "CNPJ", "PHONE", "EMAIL", "EVP"]] = None
    key_created_at: Optional[datetime] = None
    account_opened_at: Optional[datetime] = None
    dict_stats: Optional[DictStats] = None


class History(Strict):
    payee_first_time: bool
    payer_tx_1h: int = Field(ge=0)
    payer_amount_24h_cents: int = Field(ge=0)
    amount_zscore_90d: Optional[float] = None


class Transaction(Strict):
    end_to_end_id: str = Field(pattern=r"^E[0-9]{8}[0-9]{12}[A-Za-z0-9]{11}$")
    accepted_at: datetime
    amount_cents: int = Field(gt=0)
    initiation_form: Literal["MANU", "DICT", "QRES", "QRDN", "INIC", "AUTO", "APDN"]
    purpose: Literal["IPAY", "GSCB", "OTHR", "REFU"]
    payer: Payer
    payee: Payee
    history: History


def from_flat(row: dict) -> dict:
    """Nested transaction from dotted column names (MLflow dataframe rows, OIP inputs); None,
    NaN and "" are absent."""
    out: dict = {}
    for name, value in row.items():
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        if hasattr(value, "item"):
            value = value.item()
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def from_oip_row(row: dict) -> dict:
    """Nested transaction from one row of OIP field inputs: as from_flat, and the DICT group is
    absent when its settlement count is (-1 in pixguard's INT64 fields, NaN or None where the
    server declared the counts FP64, as MLServer does from the MLflow signature)."""
    settlements = row.get("payee.dict_stats.settlements_90d")
    if settlements is None or settlements < 0 or (isinstance(settlements, float) and math.isnan(settlements)):
        row = {k: v for k, v in row.items() if not k.startswith("payee.dict_stats.")}
    return from_flat(row)


def _hours(earlier: Optional[datetime], later: datetime) -> Optional[float]:
    if earlier is None:
        return None
    return max((later - earlier).total_seconds() / 3600.0, 0.0)


def _raw(source: str, tx: Transaction, local: datetime) -> Optional[float]:
    """The raw value of a numeric source (model.json's `source` names); None when absent."""
    h, p, d = tx.history, tx.payee, tx.payee.dict_stats
    at = tx.accepted_at
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    values = {
        "amount_reais": lambda: tx.amount_cents / 100.0,
        "history.payer_tx_1h": lambda: float(h.payer_tx_1h),
        "history.payer_amount_24h_reais": lambda: h.payer_amount_24h_cents / 100.0,
        "amount_share_of_24h": lambda: tx.amount_cents / (tx.amount_cents + max(h.payer_amount_24h_cents, 0)),
        "history.amount_zscore_90d": lambda: h.amount_zscore_90d,
        "history.amount_zscore_90d.missing": lambda: float(h.amount_zscore_90d is None),
        "history.payee_first_time": lambda: float(h.payee_first_time),
        "payer.device.registered": lambda: float(tx.payer.device.registered),
        "payer.device.first_seen_at.age_hours": lambda: _hours(tx.payer.device.first_seen_at, at),
        "payer.device.first_seen_at.missing": lambda: float(tx.payer.device.first_seen_at is None),
        "payer.account_opened_at.age_hours": lambda: _hours(tx.payer.account_opened_at, at),
        "payee.key_created_at.age_hours": lambda: _hours(p.key_created_at, at),
        "payee.key_created_at.missing": lambda: float(p.key_created_at is None),
        "payee.account_opened_at.age_hours": lambda: _hours(p.account_opened_at, at),
        "payee.account_opened_at.missing": lambda: float(p.account_opened_at is None),
        "payee.dict_stats.settlements_90d": lambda: None if d is None else float(d.settlements_90d),
        "payee.dict_stats.fraud_markers_30d": lambda: None if d is None else float(d.fraud_markers_30d),
        "payee.dict_stats.infractions_open": lambda: None if d is None else float(d.infractions_open),
        "payee.dict_stats.mule_marker": lambda: None if d is None else float(d.mule_marker),
        "payee.dict_stats.missing": lambda: float(d is None),
        "same_institution": lambda: float(tx.payer.ispb == p.ispb),
        "local_time.hour_sin": lambda: math.sin(2 * math.pi * minute / 1440),
        "local_time.hour_cos": lambda: math.cos(2 * math.pi * minute / 1440),
        "local_time.weekday_sin": lambda: math.sin(2 * math.pi * weekday / 7),
        "local_time.weekday_cos": lambda: math.cos(2 * math.pi * weekday / 7),
        "local_time.night_window": lambda: float(not (360 <= minute < 1200)),
        "local_time.weekend": lambda: float(weekday >= 5),
    }
    return values[source]()


def _token(source: str, tx: Transaction, local: datetime) -> str:
    return {
        "initiation_form": lambda: tx.initiation_form,
        "purpose": lambda: tx.purpose,
        "payer.account_type": lambda: tx.payer.account_type,
        "payer.person_type": lambda: tx.payer.person_type,
        "payee.account_type": lambda: tx.payee.account_type,
        "payee.person_type": lambda: tx.payee.person_type,
        "payee.key_type": lambda: tx.payee.key_type or "NONE",
        "payer.ispb": lambda: tx.payer.ispb,
        "payee.ispb": lambda: tx.payee.ispb,
        "local_time.hour": lambda: str(local.hour),
    }[source]()


class Preprocessor:
    """The package's feature spec, applied to validated transactions."""

    def __init__(self, package: str | pathlib.Path):
        meta = json.loads((pathlib.Path(package) / "model.json").read_text())
        self.spec = meta["features"]
        self.thresholds = meta["thresholds"]
        self.vocab = [{t: i for i, t in enumerate(f["vocabulary"])} for f in self.spec["categorical"]]

    def row(self, tx: Transaction) -> tuple[np.ndarray, np.ndarray]:
        local = tx.accepted_at.astimezone(SAO_PAULO)
        numeric = np.zeros(len(self.spec["numeric"]), dtype=np.float32)
        for i, f in enumerate(self.spec["numeric"]):
            x = _raw(f["source"], tx, local)
            if x is None:
                continue  # the training mean: 0 once standardised
            if f["transform"] == "log1p":
                x = math.log1p(max(x, 0.0))
            if f.get("clip"):
                x = min(max(x, f["clip"][0]), f["clip"][1])
            numeric[i] = (x - f["mean"]) / f["std"]
        categories = np.array([self.vocab[i].get(_token(f["source"], tx, local), f["oov_index"])
                               for i, f in enumerate(self.spec["categorical"])], dtype=np.int64)
        return numeric, categories

    def batch(self, txs: list[Transaction]) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.row(t) for t in txs]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def decision(self, score: float) -> str:
        if score >= self.thresholds["reject"]:
            return "REJECT"
        return "HOLD" if score >= self.thresholds["hold"] else "ALLOW"


def _check() -> None:
    import argparse
    import csv
    import subprocess
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--pixguard", default="target/release/pixguard")
    p.add_argument("--model", default="models/pix-fraud")
    p.add_argument("--rows", type=int, default=5000)
    args = p.parse_args()
    synth = subprocess.run([args.pixguard, "synth", "--rows", str(args.rows), "--seed", "99"],
                           check=True, capture_output=True).stdout
    text = subprocess.run([args.pixguard, "features", "--model", args.model, "--format", "csv"],
                          input=synth, check=True, capture_output=True).stdout.decode()
    pre = Preprocessor(args.model)
    want = list(csv.DictReader(text.splitlines()))
    txs = [Transaction.model_validate(json.loads(l)["transaction"]) for l in synth.decode().splitlines()]
    numeric, categories = pre.batch(txs)
    ref_num = np.array([[float(r[f["name"]]) for f in pre.spec["numeric"]] for r in want], dtype=np.float32)
    ref_cat = np.array([[int(r[f["name"]]) for f in pre.spec["categorical"]] for r in want])
    worst = float(np.abs(numeric - ref_num).max())
    same = bool((categories == ref_cat).all())
    print(f"{len(txs)} rows: max |python - pixguard| numeric {worst:.2e}, categories identical: {same}")
    if worst > 1e-4 or not same:
        raise SystemExit(1)


if __name__ == "__main__":
    _check()
