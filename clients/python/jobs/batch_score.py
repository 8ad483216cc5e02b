"""Spark batch job: Parquet transactions → pixguard → Parquet scores.

    spark-submit clients/python/jobs/batch_score.py --input tx.parquet --output scores/ \
        --url http://pixguard:8080 [--keep label] [--batch-size 4096]

Each executor sends its partitions' rows to pixguard in batches (predict_batch_udf); the output
has end_to_end_id, score, decision, reasons, model_version, error and the --keep columns. With
--master local[N] it runs on one machine (the tests); on a cluster, point --url at the pixguard
Service and size executors × batch against the fleet (docs/batch.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, HERE)
# Python processes Spark starts on this machine (local mode's workers, the data source planner)
# inherit the environment; on a cluster, pip-install the package or rely on ship() below.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from pixguard_client.spark import score_columns, ship, with_scores  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="Parquet file or folder")
    ap.add_argument("--output", required=True, help="Parquet folder for the scores")
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="pixguard base URL")
    ap.add_argument("--keep", default="", help="comma-separated input columns to copy")
    ap.add_argument("--batch-size", type=int, default=1000, help="rows per /v1/score request (≤ the server's server.max_transactions_per_request)")
    ap.add_argument("--master", default=None, help="e.g. local[2]; default: spark-submit's")
    ap.add_argument("--partitions", type=int, default=0, help="repartition the input first")
    args = ap.parse_args()

    builder = SparkSession.builder.appName("pixguard-batch-score")
    if args.master:
        builder = builder.master(args.master)
    started = time.monotonic()
    spark = builder.config("spark.sql.session.timeZone", "UTC").getOrCreate()
    session_s = time.monotonic() - started
    ship(spark)
    df = spark.read.parquet(args.input)
    if args.partitions:
        df = df.repartition(args.partitions)
    scored = with_scores(df, args.url, batch_size=args.batch_size)
    keep = [k for k in args.keep.split(",") if k]
    out = scored.select(
        *score_columns(),
        *[F.col(f"`{k}`" if k in df.columns else k).alias(k) for k in keep],
    )
    job_started = time.monotonic()
    out.write.mode("overwrite").parquet(args.output)
    job_s = time.monotonic() - job_started
    written = spark.read.parquet(args.output)
    summary = {
        "rows": written.count(),
        "errors": written.filter(F.col("error").isNotNull()).count(),
        "session_seconds": round(session_s, 3),
        "job_seconds": round(job_s, 3),
    }
    print(json.dumps(summary), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
