#!/usr/bin/env python3
"""Acceptance check of `pixguard batch` at full size: N synth rows as Parquet (nested and flat),
1,000 rows of each corrupted with pyarrow (an independent writer), every other row's score equal
to `pixguard score`'s on the same rows as JSONL (≤ 1e-6), every corrupted row in the rejects file
with the field that was broken.

    .ci-venv/bin/python benches/batch/check.py --pixguard target/release/pixguard --rows 1000000
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# (dotted leaf, replacement, the field the reject must name); None: the cell becomes null.
FAULTS = [
    ("payer.ispb", "1234", "payer.ispb"),
    ("amount_cents", -5, "amount_cents"),
    ("initiation_form", "WIRE", "initiation_form"),
    ("end_to_end_id", None, "end_to_end_id"),
    ("end_to_end_id", "E12", "end_to_end_id"),
    ("history.payer_tx_1h", -1, "history.payer_tx_1h"),
    ("history.amount_zscore_90d", float("nan"), "history.amount_zscore_90d"),
    ("payee.person_type", "ROBOT", "payee.person_type"),
    ("history.payee_first_time", None, "history.payee_first_time"),
]


def run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout


def flat_table(table: pa.Table) -> tuple[pa.Table, bool]:
    """The table with nested structs flattened to dotted names (and whether it was nested)."""
    nested = any(pa.types.is_struct(f.type) for f in table.schema)
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table, nested


def renest(flat: pa.Table) -> pa.Table:
    """Dotted names back into struct columns; a struct is null where all its leaves are."""
    def build(names: list[str], prefix: str):
        fields, arrays, seen = [], [], []
        for n in names:
            rest = n[len(prefix):]
            head, _, tail = rest.partition(".")
            if not tail:
                fields.append(head)
                arrays.append(flat.column(n).combine_chunks())
            elif head not in seen:
                seen.append(head)
                inner_names = [m for m in names if m.startswith(prefix + head + ".")]
                f, a = build(inner_names, prefix + head + ".")
                valid = None
                for arr in a:
                    v = pc.is_valid(arr)
                    valid = v if valid is None else pc.or_(valid, v)
                mask = pc.invert(valid)
                fields.append(head)
                arrays.append(pa.StructArray.from_arrays(a, names=f, mask=mask))
        return fields, arrays

    f, a = build(flat.column_names, "")
    return pa.table(dict(zip(f, a)))


def corrupt(path: pathlib.Path, out: pathlib.Path, count: int, seed: int) -> dict[int, str]:
    table, nested = flat_table(pq.read_table(path))
    rng = random.Random(seed)
    rows = sorted(rng.sample(range(table.num_rows), count))
    expected: dict[int, str] = {}
    by_column: dict[str, dict[int, object]] = {}
    for k, row in enumerate(rows):
        column, value, field = FAULTS[k % len(FAULTS)]
        by_column.setdefault(column, {})[row] = value
        expected[row] = field
    for column, cells in by_column.items():
        values = table.column(column).to_pylist()
        for row, value in cells.items():
            values[row] = value
        i = table.column_names.index(column)
        table = table.set_column(i, column, pa.array(values, type=table.schema.field(column).type))
    if nested:
        table = renest(table)
    pq.write_table(table, out)
    return expected


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixguard", default="target/release/pixguard")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--corrupt", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pixguard-batch-check-"))
    px = args.pixguard
    jsonl = work / "tx.jsonl"
    run([px, "synth", "--rows", str(args.rows), "--seed", str(args.seed), "-o", str(jsonl)])
    reference = {}
    for line in run([px, "score", str(jsonl)]).splitlines():
        v = json.loads(line)
        reference[v["end_to_end_id"]] = (v["score"], v["decision"])
    ids = [json.loads(line)["transaction"]["end_to_end_id"] for line in jsonl.read_text().splitlines()]
    failures = 0
    for layout in ("nested", "flat"):
        clean = work / f"{layout}.parquet"
        run([px, "synth", "--rows", str(args.rows), "--seed", str(args.seed), "--format", "parquet",
             "--layout", layout, "-o", str(clean)])
        bad = work / f"{layout}-corrupt.parquet"
        expected = corrupt(clean, bad, args.corrupt, args.seed + 1)
        out = work / f"{layout}-scores.parquet"
        rejects = work / f"{layout}-rejects.jsonl"
        summary = json.loads(run([px, "batch", "-i", str(bad), "-o", str(out), "--rejects", str(rejects),
                                  "--no-progress"]).strip().splitlines()[-1])
        got = pq.read_table(out, columns=["end_to_end_id", "score", "decision"]).to_pydict()
        scored = dict(zip(got["end_to_end_id"], zip(got["score"], got["decision"])))
        worst, wrong_decisions, missing = 0.0, 0, 0
        for row, id_ in enumerate(ids):
            if row in expected:
                continue
            if id_ not in scored:
                missing += 1
                continue
            s, d = scored[id_]
            worst = max(worst, abs(s - reference[id_][0]))
            wrong_decisions += d != reference[id_][1]
        rejected = {}
        for line in rejects.read_text().splitlines():
            r = json.loads(line)
            rejected[r["row"]] = r
        wrong_field = [r for r, f in expected.items() if rejected.get(r, {}).get("field") != f]
        extra = [r for r in rejected if r not in expected]
        no_reason = [r for r in rejected.values() if not r.get("reason")]
        ok = (worst <= 1e-6 and not math.isnan(worst) and wrong_decisions == 0 and missing == 0
              and not wrong_field and not extra and not no_reason
              and summary["scored"] == args.rows - args.corrupt and summary["rejected"] == args.corrupt)
        failures += not ok
        print(json.dumps({
            "layout": layout, "rows": summary["rows"], "scored": summary["scored"],
            "rejected": summary["rejected"], "max_abs_diff": worst, "wrong_decisions": wrong_decisions,
            "missing": missing, "rejects_with_wrong_field": len(wrong_field), "unexpected_rejects": len(extra),
            "rows_per_second": round(summary["rows_per_second"]), "ok": ok,
        }), flush=True)
    print(f"work files in {work}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
