"""Scores from MLServer (its MLflow runtime, the pyfunc mlflow_pyfunc.py builds) against pixguard's
on the same synth transactions, before MLServer is benchmarked.

The transactions go as one OIP request of N rows, each field with the datatype MLServer's model
metadata declares (from the MLflow signature: the DICT counts FP64, so an absent count is null;
strings "", ints -1, bools false as in pixguard's fields mode) and no request-level content_type:
the runtime reads the content types from the signature. pixguard's scores come from
`pixguard score`. Prints the largest difference; exits 1 above the tolerance.

    python benches/peers/mlserver_parity.py --pixguard target/release/pixguard --url http://127.0.0.1:18640
"""
import argparse
import json
import pathlib
import subprocess
import sys
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from pyfeatures import FIELDS, flatten  # noqa: E402

ABSENT = {"BYTES": "", "INT64": -1, "BOOL": False, "FP64": None, "FP32": None}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pixguard", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="pix-fraud")
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--tolerance", type=float, default=1e-6)
    args = p.parse_args()

    synth = subprocess.run([args.pixguard, "synth", "--rows", str(args.rows), "--seed", str(args.seed)],
                           check=True, capture_output=True, text=True).stdout
    scored = subprocess.run([args.pixguard, "score", "-"], input=synth, check=True, capture_output=True,
                            text=True).stdout
    expected = [json.loads(line)["score"] for line in scored.splitlines()]
    rows = [flatten(json.loads(line)["transaction"]) for line in synth.splitlines()]

    with urllib.request.urlopen(f"{args.url}/v2/models/{args.model}") as r:
        declared = {i["name"]: i["datatype"] for i in json.load(r)["inputs"]}
    inputs = []
    for name, pixguard_type in FIELDS:
        datatype = declared.get(name, pixguard_type)
        data = []
        for row in rows:
            v = row.get(name)
            if v is None:
                v = ABSENT[datatype]
            elif datatype in ("FP64", "FP32"):
                v = float(v)
            data.append(v)
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows), 1], "data": data})
    request = urllib.request.Request(f"{args.url}/v2/models/{args.model}/infer",
                                     data=json.dumps({"inputs": inputs}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as r:
        outputs = {o["name"]: o["data"] for o in json.load(r)["outputs"]}
    got = outputs["score"]
    assert len(got) == len(expected), (len(got), len(expected))
    worst = max(abs(a - b) for a, b in zip(got, expected))
    ok = worst <= args.tolerance
    print(f"MLServer vs pixguard on {len(got)} synth transactions (seed {args.seed}): "
          f"max |score difference| {worst:.3e} ({'OK' if ok else 'ABOVE'} tolerance {args.tolerance:g})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
