#!/usr/bin/env python3
"""Adds MLflow's `python_function` flavor to pixguard packages, beside the `pixguard` flavor, so
`mlflow.pyfunc.load_model` (notebooks, `mlflow models serve`, `spark_udf`, `mlflow.evaluate`)
opens the very version a team registers.

Copies the loader (pixguard_pyfunc.py) and the Python pre-processing (benches/peers/pyfeatures.py,
the peers' code) into `<package>/code/`, pins the requirements, and records the flavor in MLmodel.
The `pixguard` flavor and its digests are untouched. Run by whoever changes a package (export.py
calls it too):

    python3 models/train/pyfunc_flavor.py models/pix-fraud models/pix-fraud-challenger
"""
from __future__ import annotations

import json
import pathlib
import shutil
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
# What the loader imports, pinned to the versions CI checks it with (tests/python/requirements.txt).
REQUIREMENTS = ["mlflow==3.17.2", "numpy==2.4.6", "pandas==3.1.1", "onnxruntime==1.32.0", "pydantic==2.14.4"]
PYTHON = "3.11"
# Optional integer columns: pandas holds a missing integer as NaN in a float column, which MLflow's
# schema check refuses for `long`; MLflow's advice is to declare them `double`.
OPTIONAL_COUNTS = ("payee.dict_stats.settlements_90d", "payee.dict_stats.fraud_markers_30d",
                   "payee.dict_stats.infractions_open")


def add_flavor(package: pathlib.Path) -> None:
    code = package / "code"
    code.mkdir(exist_ok=True)
    shutil.copyfile(ROOT / "models/train/pixguard_pyfunc.py", code / "pixguard_pyfunc.py")
    shutil.copyfile(ROOT / "benches/peers/pyfeatures.py", code / "pyfeatures.py")
    (package / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    (package / "python_env.yaml").write_text(
        f"python: {PYTHON}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n")
    path = package / "MLmodel"
    mlmodel = yaml.safe_load(path.read_text())
    mlmodel["flavors"]["python_function"] = {
        "loader_module": "pixguard_pyfunc",
        "code": "code",
        "data": ".",
        "env": {"virtualenv": "python_env.yaml"},
        "python_version": PYTHON,
    }
    inputs = json.loads(mlmodel["signature"]["inputs"])
    for column in inputs:
        if column["name"] in OPTIONAL_COUNTS:
            column["type"] = "double"
    mlmodel["signature"]["inputs"] = json.dumps(inputs)
    path.write_text(yaml.safe_dump(mlmodel, default_flow_style=False, sort_keys=True))
    print(f"{package}: python_function flavor added")


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["models/pix-fraud"]:
        add_flavor(pathlib.Path(arg))
