"""Spark Structured Streaming job: Kafka topic → pixguard → Kafka topic, with a checkpoint.

    python clients/python/jobs/stream_score.py --brokers kafka:9092 --input pix.transactions \
        --output pix.scores --checkpoint /checkpoints/pixguard --url http://pixguard:8080

Each input record's value is a transaction as /v1/score takes it (JSON); each output record has
key end_to_end_id and value {end_to_end_id, score, decision, reasons, model_version, error,
source: {partition, offset}}. A record pixguard refuses (invalid JSON or field) is answered with
its error and no score. Offsets live in the checkpoint: a restarted query resumes after its last
committed micro-batch; output is at least once. Kafka is read and written through
pixguard_client.kafka_source (confluent-kafka), so no JVM connector is needed.
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
from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType  # noqa: E402

from pixguard_client.kafka_source import KafkaDataSource  # noqa: E402
from pixguard_client.spark import LEAVES, score_columns, ship, with_scores  # noqa: E402

KINDS = {"text": StringType(), "time": StringType(), "int": LongType(), "bool": BooleanType(), "float": DoubleType()}


def transaction_schema() -> StructType:
    """The /v1 transaction as a nested struct; timestamps stay RFC 3339 text, as sent."""
    root: dict = {}
    for path, kind, _ in LEAVES:
        node = root
        *parents, name = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = KINDS[kind]

    def build(node: dict) -> StructType:
        return StructType([
            StructField(k, build(v) if isinstance(v, dict) else v, True) for k, v in node.items()
        ])

    return build(root)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--input", required=True, help="input topic")
    ap.add_argument("--output", required=True, help="output topic")
    ap.add_argument("--checkpoint", required=True, help="checkpoint location")
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="pixguard base URL")
    ap.add_argument("--batch-size", type=int, default=1000, help="rows per /v1/score request (≤ the server's server.max_transactions_per_request)")
    ap.add_argument("--trigger", default="1 second", help="micro-batch interval")
    ap.add_argument("--max-per-trigger", type=int, default=0, help="most records per micro-batch")
    ap.add_argument("--end-offsets", default="watermark", choices=["watermark", "probe"],
                    help="how a micro-batch finds each partition's end (probe: brokers whose high "
                         "watermarks lag, as tansu's)")
    ap.add_argument("--master", default=None)
    ap.add_argument("--expect", type=int, default=0, help="stop after this many records (tests)")
    ap.add_argument("--idle-stop", type=float, default=0, help="stop after this many idle seconds")
    args = ap.parse_args()

    builder = SparkSession.builder.appName("pixguard-stream-score")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.config("spark.sql.session.timeZone", "UTC").config(
        "spark.sql.shuffle.partitions", "4").getOrCreate()
    ship(spark)
    spark.dataSource.register(KafkaDataSource)

    raw = (spark.readStream.format("pixguard-kafka")
           .option("bootstrap.servers", args.brokers).option("topic", args.input)
           .option("startingOffsets", "earliest").option("endOffsets", args.end_offsets)
           .option("maxOffsetsPerTrigger", str(args.max_per_trigger)).load())
    parsed = raw.select(F.from_json("value", transaction_schema()).alias("tx"), "partition", "offset")
    flat = parsed.select("tx.*", "partition", "offset")
    scored = with_scores(flat, args.url, batch_size=args.batch_size)
    out = scored.select(
        F.col("end_to_end_id").alias("key"),
        F.to_json(F.struct(
            *score_columns(),
            F.struct(F.col("partition"), F.col("offset")).alias("source"),
        )).alias("value"),
    )
    query = (out.writeStream.format("pixguard-kafka")
             .option("bootstrap.servers", args.brokers).option("topic", args.output)
             .option("checkpointLocation", args.checkpoint)
             .trigger(processingTime=args.trigger).start())
    seen, last_batch, idle_since = 0, -1, time.monotonic()
    while query.isActive:
        query.awaitTermination(1.0)
        for p in query.recentProgress:
            if p["batchId"] > last_batch:
                last_batch = p["batchId"]
                if p["numInputRows"]:
                    seen += p["numInputRows"]
                    idle_since = time.monotonic()
        if args.expect and seen >= args.expect:
            break
        if args.idle_stop and seen and time.monotonic() - idle_since > args.idle_stop:
            break
    if query.exception():
        print(f"query failed: {query.exception()}", file=sys.stderr)
        return 1
    query.stop()
    print(json.dumps({"records": seen, "batches": last_batch + 1}), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
