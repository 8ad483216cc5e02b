"""The Python service a team would write for the bundled model: FastAPI + uvicorn, pydantic
validation, the package's feature spec in Python (pyfeatures.py), onnxruntime. Same API as
pixguard's /v1/score for one transaction, so `pixguard bench --api v1` loads both alike.

    PIXGUARD_MODEL=models/pix-fraud uvicorn --app-dir benches/peers fastapi_app:app --workers 2 --port 18400
"""
import os
import pathlib

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI

from pyfeatures import Preprocessor, Transaction

PACKAGE = pathlib.Path(os.environ.get("PIXGUARD_MODEL", "models/pix-fraud"))
pre = Preprocessor(PACKAGE)
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(str(PACKAGE / "model.onnx"), options, providers=["CPUExecutionProvider"])
app = FastAPI(title="pix-fraud (FastAPI peer)")


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "live"}


@app.post("/v1/score")
def score(tx: Transaction) -> dict:
    numeric, categories = pre.row(tx)
    (out,) = session.run(["score"], {"features": numeric[None, :], "categories": categories[None, :]})
    s = float(out[0, 0])
    return {"end_to_end_id": tx.end_to_end_id, "score": s, "decision": pre.decision(s)}
