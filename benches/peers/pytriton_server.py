#!/usr/bin/env python3
"""Triton Inference Server (through pytriton) serving the bundled model with onnxruntime.

The peer for perf_analyzer and `pixguard bench`, two models:
- `pix-fraud` takes the same precomputed `features` (FP32 [-1, n_numeric]) and `categories`
  (INT64 [-1, n_categorical]) as pixguard's second OIP input mode;
- `pix-fraud-tx` takes the transaction's 25 flattened fields, like pixguard's first OIP input mode,
  and validates and pre-processes them in Python (pyfeatures.py) before onnxruntime.
Both answer `score` and `decision` with the package's thresholds. Triton's dynamic batcher gets
pixguard's settings (max batch 1,000 rows, 500 µs queue delay); onnxruntime runs on one thread per
instance, like one pixguard worker.

    LD_LIBRARY_PATH=$(python3 -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))') \\
      python3 benches/peers/pytriton_server.py --model models/pix-fraud --http-port 18200 --grpc-port 18201
"""
import argparse
import json
import pathlib

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

from pyfeatures import FIELDS as OIP_FIELDS
from pyfeatures import Preprocessor, Transaction, from_oip_row

NUMPY = {"BYTES": np.bytes_, "INT64": np.int64, "FP64": np.float64, "BOOL": np.bool_}
# The transaction's flattened fields (pixguard's OIP fields mode): name, numpy dtype.
FIELDS = [(name, NUMPY[datatype]) for name, datatype in OIP_FIELDS]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/pix-fraud")
    p.add_argument("--http-port", type=int, default=18200)
    p.add_argument("--grpc-port", type=int, default=18201)
    p.add_argument("--metrics-port", type=int, default=18202)
    p.add_argument("--max-batch-size", type=int, default=1000)
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--instances", type=int, default=1, help="model instances (Python processes) per model")
    args = p.parse_args()
    package = pathlib.Path(args.model)
    meta = json.loads((package / "model.json").read_text())
    hold, reject = meta["thresholds"]["hold"], meta["thresholds"]["reject"]
    n_numeric, n_categorical = len(meta["features"]["numeric"]), len(meta["features"]["categorical"])

    pre = Preprocessor(package)

    def session():
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(package / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def answer(score):
        decision = np.where(score >= reject, b"REJECT", np.where(score >= hold, b"HOLD", b"ALLOW"))
        return {"score": score.astype(np.float32), "decision": decision.astype(np.object_)}

    def features_model():
        s = session()

        @batch
        def infer(features: np.ndarray, categories: np.ndarray):
            (score,) = s.run(["score"], {"features": features, "categories": categories})
            return answer(score)
        return infer

    def fields_model():
        s = session()

        def value(array, row):
            v = array[row].reshape(-1)[0]
            return v.decode() if isinstance(v, bytes) else v.item()

        @batch
        def infer(**inputs):
            rows = len(inputs["end_to_end_id"])
            flat = [{name: value(inputs[name], r) for name, _ in FIELDS if name in inputs} for r in range(rows)]
            txs = [Transaction.model_validate(from_oip_row(row)) for row in flat]
            numeric, categories = pre.batch(txs)
            (score,) = s.run(["score"], {"features": numeric, "categories": categories})
            return answer(score)
        return infer

    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port)
    # Loopback only; perf_analyzer reads the statistics API, which pytriton restricts by default.
    with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
        triton.bind(
            model_name=meta["name"],
            infer_func=[features_model() for _ in range(args.instances)],
            inputs=[Tensor(name="features", dtype=np.float32, shape=(n_numeric,)),
                    Tensor(name="categories", dtype=np.int64, shape=(n_categorical,))],
            outputs=[Tensor(name="score", dtype=np.float32, shape=(1,)),
                     Tensor(name="decision", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(max_batch_size=args.max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)),
            strict=True,
        )
        triton.bind(
            model_name=f"{meta['name']}-tx",
            infer_func=[fields_model() for _ in range(args.instances)],
            inputs=[Tensor(name=n, dtype=dt, shape=(1,), optional=True) for n, dt in FIELDS],
            outputs=[Tensor(name="score", dtype=np.float32, shape=(1,)),
                     Tensor(name="decision", dtype=np.bytes_, shape=(1,))],
            config=ModelConfig(max_batch_size=args.max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)),
            strict=False,
        )
        print(f"pytriton serving {meta['name']} and {meta['name']}-tx on http :{args.http_port}, grpc :{args.grpc_port}", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
