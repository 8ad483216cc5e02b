#!/usr/bin/env python3
"""The usual way to score a Parquet file on Spark, for `pixguard batch` to be compared with:
predict_batch_udf whose executors validate each row with the peers' pydantic model, apply the
package's feature spec in Python (benches/peers/pyfeatures.py) and run model.onnx on onnxruntime
(one intra-op thread per Python worker, local[N] gives N workers).

    .ci-venv/bin/python benches/batch/spark_peer.py --input tx.parquet --output peer-out \
        --master 'local[2]'

Prints one JSON line: rows, session start seconds, job seconds (read → score → write Parquet),
rows per second of the job alone and including the session start.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
PATHS = [str(ROOT / "benches" / "peers"), str(ROOT / "clients" / "python")]
sys.path[:0] = PATHS
os.environ["PYTHONPATH"] = os.pathsep.join(PATHS + [p for p in [os.environ.get("PYTHONPATH")] if p])

from pyspark.ml.functions import predict_batch_udf  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import DoubleType, StringType, StructField, StructType  # noqa: E402

from pixguard_client.spark import LEAVES, leaf_columns, transactions  # noqa: E402


def make_predict_fn(model: str):
    def make():
        import numpy as np
        import onnxruntime as ort
        from pyfeatures import Preprocessor, Transaction

        pre = Preprocessor(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(pathlib.Path(model) / "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])

        def predict(*columns):
            txs = [Transaction.model_validate(t) for t in transactions(columns)]
            numeric, categories = pre.batch(txs)
            (scores,) = session.run(["score"], {"features": numeric, "categories": categories})
            scores = scores[:, 0].astype(np.float64)
            return {"score": scores, "decision": np.array([pre.decision(float(s)) for s in scores])}

        predict.__signature__ = inspect.Signature(
            [inspect.Parameter(f"leaf{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(LEAVES))]
        )
        return predict

    return make


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--model", default=str(ROOT / "models" / "pix-fraud"))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--batch-size", type=int, default=4096)
    args = ap.parse_args()
    started = time.monotonic()
    spark = (SparkSession.builder.master(args.master).appName("spark-onnx-peer")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    session_s = time.monotonic() - started
    udf = predict_batch_udf(make_predict_fn(args.model),
                            return_type=StructType([StructField("score", DoubleType()),
                                                    StructField("decision", StringType())]),
                            batch_size=args.batch_size)
    df = spark.read.parquet(args.input)
    out = df.select("end_to_end_id", udf(*leaf_columns(df)).alias("p")).select(
        "end_to_end_id", F.col("p.score").alias("score"), F.col("p.decision").alias("decision"))
    job_started = time.monotonic()
    out.write.mode("overwrite").parquet(args.output)
    job_s = time.monotonic() - job_started
    rows = spark.read.parquet(args.output).count()
    spark.stop()
    print(json.dumps({
        "rows": rows, "session_seconds": round(session_s, 2), "job_seconds": round(job_s, 2),
        "rows_per_second": round(rows / job_s), "rows_per_second_with_session": round(rows / (job_s + session_s)),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
