"""MLflow `python_function` flavor of a pixguard package: the same payments scored in Python.

MLflow's `pyfunc.load_model` (and so `mlflow models serve`, `spark_udf`, `mlflow.evaluate`) imports
this module from the package's `code/` folder and calls `_load_pyfunc` with the package folder.
Pre-processing is the package's own feature spec (`model.json`) applied by `pyfeatures.py`; the
network is `model.onnx` on onnxruntime. pixguard itself reads the `pixguard` flavor and never runs
this code; CI checks the two flavors agree on the golden rows.

Input: a DataFrame with the package signature's 25 flattened columns (`payer.ispb`, …); absent
optional values as None/NaN. Output: a DataFrame with `score` (the fraud probability) and
`decision` (ALLOW, HOLD or REJECT under the package's thresholds).
"""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd


class PixguardPyfunc:
    """The loaded package."""

    def __init__(self, package: pathlib.Path):
        import onnxruntime as ort
        from pyfeatures import Preprocessor

        self.pre = Preprocessor(package)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(package / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pyfeatures import Transaction, from_flat

        if len(model_input) == 0:
            return pd.DataFrame({"score": np.array([], dtype=float), "decision": []})
        txs = [Transaction.model_validate(from_flat(r)) for r in model_input.to_dict(orient="records")]
        numeric, categories = self.pre.batch(txs)
        (score,) = self.session.run(["score"], {"features": numeric, "categories": categories})
        scores = score[:, 0].astype(float)
        return pd.DataFrame({"score": scores, "decision": [self.pre.decision(s) for s in scores]})


def _load_pyfunc(path: str) -> PixguardPyfunc:
    """MLflow's entry point: `path` is the flavor's `data` folder, the package itself."""
    return PixguardPyfunc(pathlib.Path(path))
