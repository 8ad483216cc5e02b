"""Spark batch job: the decision log joined to confirmed frauds, per model version and role.

    python clients/python/jobs/evaluate_decisions.py \
        --decisions 'gs://bucket/pix.decisions/2026/11/*.json' \
        --frauds gs://bucket/med/confirmed-2026-11.csv --output evaluation.jsonl

``--decisions``: decision-log records as JSON lines (what a Kafka Connect sink writes from the
``decision_log.topic``); or ``--brokers`` and ``--decisions-topic`` to read the topic itself, from
its earliest retained record (``--end-offsets probe`` for brokers whose high watermarks lag). ``--frauds``: CSV with a header, or Parquet (by extension), with an
``end_to_end_id`` column: the payments confirmed as fraud. Writes one JSON line per (model
version, role) — see ``pixguard_client.evaluation.evaluate`` — and prints them as a table.
With ``--points-output``, also each version's operating points: for each share of legitimate
payments the team accepts to stop (``--false-stop-rates``), the score to stop above and the share
of frauds stopped there (``pixguard_client.evaluation.operating_points``): where to set
``decisions.hold``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, HERE)

from pyspark.sql import SparkSession  # noqa: E402

from pixguard_client.evaluation import (  # noqa: E402
    evaluate,
    operating_points,
    read_decisions,
    read_decisions_topic,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--decisions", help="decision-log records, JSON lines (a path or glob)")
    source.add_argument("--decisions-topic", help="the decision log's topic, read from its earliest record")
    ap.add_argument("--brokers", help="Kafka bootstrap servers, with --decisions-topic")
    ap.add_argument("--end-offsets", choices=["watermark", "probe"], default="watermark")
    ap.add_argument("--frauds", required=True, help="confirmed frauds: CSV with a header, or Parquet")
    ap.add_argument("--output", required=True, help="JSON lines, one per model version and role")
    ap.add_argument("--points-output", help="JSON lines, one per model version, role and target false-stop rate")
    ap.add_argument(
        "--false-stop-rates",
        default="0.001,0.005,0.01,0.02,0.05",
        help="comma-separated shares of legitimate payments stopped, each strictly between 0 and 1",
    )
    ap.add_argument("--master", default=os.environ.get("SPARK_MASTER", "local[2]"))
    args = ap.parse_args()
    if args.decisions_topic and not args.brokers:
        print("--decisions-topic needs --brokers", file=sys.stderr)
        return 2
    try:
        targets = [float(r) for r in args.false_stop_rates.split(",")]
    except ValueError:
        print(f"--false-stop-rates {args.false_stop_rates}: not comma-separated numbers", file=sys.stderr)
        return 2
    if not all(0.0 < r < 1.0 for r in targets):
        print(f"--false-stop-rates {args.false_stop_rates}: each must be strictly between 0 and 1", file=sys.stderr)
        return 2

    spark = (
        SparkSession.builder.master(args.master)
        .appName("pixguard-evaluate-decisions")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    if args.frauds.endswith(".parquet"):
        frauds = spark.read.parquet(args.frauds)
    else:
        frauds = spark.read.option("header", True).csv(args.frauds)
    if "end_to_end_id" not in frauds.columns:
        print(f"{args.frauds}: no end_to_end_id column (has {frauds.columns})", file=sys.stderr)
        return 2
    if args.decisions_topic:
        decisions = read_decisions_topic(spark, args.brokers, args.decisions_topic, endOffsets=args.end_offsets)
    else:
        decisions = read_decisions(spark, args.decisions)
    rows = [r.asDict() for r in evaluate(decisions, frauds).collect()]
    points = []
    if args.points_output:
        points = [r.asDict() for r in operating_points(decisions, frauds, targets).collect()]
    spark.stop()
    with open(args.output, "w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    for row in rows:
        rates = " ".join(
            f"{k} {row[k]:.3f}" if row[k] is not None else f"{k} -"
            for k in ("reject_recall", "stop_recall", "reject_precision", "false_stop_rate")
        )
        print(f"{row['model_version']} {row['role']}: {row['payments']} payments, {row['frauds']} frauds; {rates}")
    if args.points_output:
        with open(args.points_output, "w") as out:
            for point in points:
                out.write(json.dumps(point) + "\n")
        for p in points:
            recall = "-" if p["stop_recall"] is None else f"{p['stop_recall']:.3f}"
            print(
                f"{p['model_version']} {p['role']}: false stops ≤ {p['target_false_stop_rate']:g}: "
                f"stop above {p['threshold']:.6g} — false stops {p['false_stop_rate']:.4f}, stop recall {recall}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
