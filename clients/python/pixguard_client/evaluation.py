"""The decision log joined to confirmed frauds: how each model version decided the payments that
turned out to be fraud, and the ones that did not.

pixguard's decision log (docs/serving.md, "Decision log") writes one JSON record per decision to a
Kafka topic; a sink (Kafka Connect's GCS or BigQuery sink) lands them as JSON lines
(``read_decisions``), or ``read_decisions_topic`` reads what the topic retains. Confirmed frauds arrive days later (MED claims, chargebacks, the payer's report) as a list of
``end_to_end_id``s. A payment whose id is not on that list counts as legitimate, so evaluate a
window of decisions old enough for its frauds to have been reported.

    decisions = read_decisions(spark, "gs://bucket/pix.decisions/2026/12/*.json")
    frauds = spark.read.csv("gs://bucket/med/confirmed.csv", header=True)
    evaluate(decisions, frauds).show()

One row per (model version, role): the answer's model (``champion``), a canary answering a share
of the payments (``canary``) and a challenger scored in the shadow on the same payments as the
champion (``challenger``), so all are compared on one set of labels.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

DECISIONS = ("ALLOW", "HOLD", "REJECT")

#: The fields of a decision-log record this module reads (the transaction, when logged, is not).
DECISION_SCHEMA = StructType([
    StructField("end_to_end_id", StringType()),
    StructField("score", FloatType()),
    StructField("decision", StringType()),
    StructField("reasons", ArrayType(StructType([
        StructField("code", StringType()),
        StructField("contribution", FloatType()),
    ]))),
    StructField("model_version", StringType()),
    StructField("scored_at", StringType()),
    StructField("source", StructType([
        StructField("api", StringType()),
        StructField("request_id", StringType()),
        StructField("row", IntegerType()),
        StructField("rows", IntegerType()),
    ])),
    StructField("trace_id", StringType()),
    StructField("role", StringType()),
])


def read_decisions(spark: SparkSession, path: str) -> DataFrame:
    """Decision-log records stored as JSON lines (one record's value per line) under ``path``."""
    return spark.read.schema(DECISION_SCHEMA).json(path)


def read_decisions_topic(spark: SparkSession, brokers: str, topic: str, **options: str) -> DataFrame:
    """Decision-log records read from the topic itself (``decision_log.topic``), from its earliest
    retained record to each partition's end, through ``kafka_source``: no sink needed for the
    window the topic retains. ``options``: more ``pixguard-kafka`` options (``kafka.*`` for
    librdkafka, ``endOffsets``)."""
    from .kafka_source import KafkaDataSource

    spark.dataSource.register(KafkaDataSource)
    reader = spark.read.format("pixguard-kafka").option("bootstrap.servers", brokers).option("topic", topic)
    for key, value in options.items():
        reader = reader.option(key, value)
    records = reader.load().where(F.col("value").isNotNull())
    return records.select(F.from_json("value", DECISION_SCHEMA).alias("r")).select("r.*")


#: What every figure is per: the version that decided, and its role.
GROUP = ("model_version", "role")


def _labelled(decisions: DataFrame, frauds: DataFrame) -> DataFrame:
    """One row per payment each (model version, role) decided — its last decision and score — with
    ``fraud`` true when the payment is on ``frauds``. Feature-row decisions (no id) are left out."""
    role = F.coalesce(F.col("role"), F.lit("champion"))
    latest = Window.partitionBy("end_to_end_id", *GROUP).orderBy(F.col("scored_at").desc())
    decided = (
        decisions.where(F.col("end_to_end_id").isNotNull())
        .withColumn("role", role)
        .withColumn("_n", F.row_number().over(latest))
        .where(F.col("_n") == 1)
        .select("end_to_end_id", *GROUP, "decision", "score")
    )
    fraud_ids = frauds.select("end_to_end_id").distinct().withColumn("fraud", F.lit(True))
    return decided.join(fraud_ids, "end_to_end_id", "left").withColumn(
        "fraud", F.coalesce(F.col("fraud"), F.lit(False))
    )


def _count(condition: F.Column) -> F.Column:
    return F.sum(condition.cast(LongType()))


def _ratio(num: F.Column, den: F.Column) -> F.Column:
    return F.when(den > 0, num.cast(DoubleType()) / den).otherwise(F.lit(None).cast(DoubleType()))


def evaluate(decisions: DataFrame, frauds: DataFrame) -> DataFrame:
    """Per model version and role: payments, frauds among them, each decision's count on frauds
    and on legitimate payments, and the rates a fraud team reads — the share of frauds rejected
    (``reject_recall``) and stopped by HOLD or REJECT (``stop_recall``), the share of rejected
    payments that were fraud (``reject_precision``), and the share of legitimate payments held or
    rejected (``false_stop_rate``).

    ``frauds``: a DataFrame with an ``end_to_end_id`` column (other columns are ignored). A
    feature-row decision has no id and cannot be joined: it is left out. A payment decided twice
    by the same version and role (a client's retry) counts once, its last decision.
    """
    counts = [F.count(F.lit(1)).alias("payments"), _count(F.col("fraud")).alias("frauds")]
    for d in DECISIONS:
        is_d = F.col("decision") == d
        counts.append(_count(is_d & F.col("fraud")).alias(f"{d.lower()}_fraud"))
        counts.append(_count(is_d & ~F.col("fraud")).alias(f"{d.lower()}_legit"))
    out = _labelled(decisions, frauds).groupBy(*GROUP).agg(*counts)
    legit = F.col("payments") - F.col("frauds")
    return (
        out.withColumn("reject_recall", _ratio(F.col("reject_fraud"), F.col("frauds")))
        .withColumn("stop_recall", _ratio(F.col("reject_fraud") + F.col("hold_fraud"), F.col("frauds")))
        .withColumn(
            "reject_precision",
            _ratio(F.col("reject_fraud"), F.col("reject_fraud") + F.col("reject_legit")),
        )
        .withColumn("false_stop_rate", _ratio(F.col("reject_legit") + F.col("hold_legit"), legit))
        .orderBy(*GROUP)
    )


def operating_points(
    decisions: DataFrame, frauds: DataFrame, false_stop_rates=(0.001, 0.005, 0.01, 0.02, 0.05)
) -> DataFrame:
    """Where each version's hold threshold could sit: per model version, role and target share of
    legitimate payments the team accepts to stop (``target_false_stop_rate``), the ``threshold``
    to stop payments scored *above* — the lowest legitimate payment's score that keeps the share
    within the target — and, stopping above it, the ``false_stop_rate`` and the share of frauds
    stopped (``stop_recall``) on these payments. ``decisions.hold`` just above ``threshold`` is
    that operating point (ties among legitimate scores can leave it below the target).
    """
    labelled = _labelled(decisions, frauds)
    legit = (
        labelled.where(~F.col("fraud"))
        .withColumn("rank", F.row_number().over(Window.partitionBy(*GROUP).orderBy("score")))
        .withColumn("legit", F.count(F.lit(1)).over(Window.partitionBy(*GROUP)))
    )
    targets = labelled.sparkSession.createDataFrame(
        [(float(r),) for r in false_stop_rates], ["target_false_stop_rate"]
    )
    # The k-th lowest legitimate score, k = ceil((1 - target) × legit): stopping above it stops at
    # most legit − k of them.
    k = F.ceil((F.lit(1.0) - F.col("target_false_stop_rate")) * F.col("legit"))
    points = (
        legit.crossJoin(targets)
        .where(F.col("rank") == k)
        .select(*GROUP, "target_false_stop_rate", F.col("score").alias("threshold"), "legit")
    )
    stopped = F.col("score") > F.col("threshold")
    return (
        points.join(labelled, list(GROUP))
        .groupBy(*GROUP, "target_false_stop_rate", "threshold", "legit")
        .agg(
            _count(F.col("fraud")).alias("frauds"),
            _count(stopped & F.col("fraud")).alias("frauds_stopped"),
            _count(stopped & ~F.col("fraud")).alias("legit_stopped"),
        )
        .withColumn("false_stop_rate", _ratio(F.col("legit_stopped"), F.col("legit")))
        .withColumn("stop_recall", _ratio(F.col("frauds_stopped"), F.col("frauds")))
        .orderBy(*GROUP, "target_false_stop_rate")
    )
