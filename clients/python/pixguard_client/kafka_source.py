"""Kafka as a Structured Streaming source and sink, in Python (PySpark's Python data source API).

Spark's own Kafka connector is a JVM package fetched from Maven; where a cluster cannot fetch it
(or the tests, which reach PyPI only), this one does the same job through confluent-kafka:

    spark.dataSource.register(KafkaDataSource)
    spark.readStream.format("pixguard-kafka").option("bootstrap.servers", ...).option("topic", ...)
    df.writeStream.format("pixguard-kafka").option("bootstrap.servers", ...).option("topic", ...)

Source: offsets are per-partition next offsets, kept in Spark's checkpoint (not in a consumer
group): a restarted query resumes where its last committed micro-batch ended. Each micro-batch
reads one Spark partition per Kafka partition, from its start to its end offset. Sink: an
idempotent producer per task, flushed before the task reports success — at least once (a retried
micro-batch may write its rows again), keyed by the ``key`` column.

Read as a batch (``spark.read.format("pixguard-kafka")``), a topic is its records from
``startingOffsets`` (earliest) to each partition's end when the read was planned.

Options: ``bootstrap.servers``, ``topic``; source only: ``startingOffsets`` (earliest | latest),
``maxOffsetsPerTrigger``, ``endOffsets`` (watermark | probe — ``probe`` finds each partition's end
by reading, for brokers whose reported high watermarks lag, as tansu's do); any other option
starting with ``kafka.`` is passed to librdkafka without the prefix (SASL/SSL).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    DataSourceStreamReader,
    DataSourceStreamWriter,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows
from pyspark.sql.types import StructType

SCHEMA = "key string, value string, topic string, partition int, offset long, timestamp_ms long"


def _conf(options: dict, **extra) -> dict:
    conf = {"bootstrap.servers": options["bootstrap.servers"]}
    for k, v in options.items():
        if k.startswith("kafka."):
            conf[k[len("kafka."):]] = v
    conf.update(extra)
    return conf


def _consumer(options: dict):
    from confluent_kafka import Consumer

    return Consumer(
        _conf(options, **{"group.id": "pixguard-spark-source", "enable.auto.commit": False,
                          "enable.partition.eof": True,
                          "auto.offset.reset": "earliest"})
    )


@dataclass
class _Range(InputPartition):
    partition: int
    start: int
    end: int


class KafkaDataSource(DataSource):
    """``format("pixguard-kafka")``: a Kafka topic as a stream of (key, value, …) rows."""

    @classmethod
    def name(cls) -> str:
        return "pixguard-kafka"

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: StructType) -> "KafkaStreamReader":
        return KafkaStreamReader(self.options)

    def reader(self, schema: StructType) -> "KafkaBatchReader":
        return KafkaBatchReader(self.options)

    def streamWriter(self, schema: StructType, overwrite: bool) -> "KafkaStreamWriter":
        return KafkaStreamWriter(self.options)


class KafkaStreamReader(DataSourceStreamReader):
    """Micro-batches of a topic's records, offsets in the query's checkpoint."""

    def __init__(self, options: dict):
        # Spark hands options over case-insensitively (as lower case): look them up that way.
        self.options = {k.lower(): v for k, v in dict(options).items()}
        self.topic = self.options["topic"]
        self.max_per_trigger = int(self.options.get("maxoffsetspertrigger", "0"))
        self.probe = self.options.get("endoffsets", "watermark") == "probe"
        self._consumer = None
        self._known: dict[str, int] = {}

    def _c(self):
        if self._consumer is None:
            self._consumer = _consumer(self.options)
        return self._consumer

    def _partitions(self) -> list[int]:
        meta = self._c().list_topics(self.topic, timeout=30)
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise RuntimeError(f"topic {self.topic}: {topic.error if topic else 'not found'}")
        return sorted(topic.partitions)

    def _watermarks(self) -> dict[str, tuple[int, int]]:
        from confluent_kafka import TopicPartition

        return {
            str(p): self._c().get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
            for p in self._partitions()
        }

    def initialOffset(self) -> dict:
        marks = self._watermarks()
        if self.options.get("startingoffsets", "earliest") == "latest":
            return self._ends(marks)
        return {p: lo for p, (lo, _) in marks.items()}

    def _ends(self, marks: dict[str, tuple[int, int]]) -> dict:
        ends = {p: max(hi, self._known.get(p, 0)) for p, (_, hi) in marks.items()}
        if not self.probe:
            return ends
        from confluent_kafka import TopicPartition

        # Read on from the known end until the partitions go quiet: end-of-partition events are
        # computed from the same lagging watermark, so only the absence of records says "end".
        c = self._c()
        c.assign([TopicPartition(self.topic, int(p), off) for p, off in ends.items()])
        # The first fetch of a fresh assignment takes a while; after that, 0.5 s of silence.
        quiet, window = time.monotonic(), 2.0
        while time.monotonic() - quiet < window:
            for m in c.consume(num_messages=10_000, timeout=0.1):
                if m.error():
                    continue
                p = str(m.partition())
                ends[p] = max(ends[p], m.offset() + 1)
                quiet, window = time.monotonic(), 0.5
        c.unassign()
        self._known = dict(ends)
        return ends

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_per_trigger) if self.max_per_trigger else ReadAllAvailable()

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        # Spark takes the answer as the micro-batch's end: the cap is applied here, from the
        # batch's start (a cap applied when reading would skip the records past it).
        ends = self._ends(self._watermarks())
        if isinstance(limit, ReadMaxRows):
            share = max(1, limit.max_rows // max(1, len(ends)))
            ends = {p: max(int(start.get(p, 0)), min(e, int(start.get(p, 0)) + share)) for p, e in ends.items()}
        return ends

    def partitions(self, start: dict, end: dict) -> list[InputPartition]:
        ranges = []
        for p, stop in end.items():
            first, stop = int(start.get(p, 0)), int(stop)
            if stop > first:
                ranges.append(_Range(int(p), first, stop))
        return ranges

    def read(self, partition: _Range) -> Iterator[tuple]:
        from confluent_kafka import TopicPartition, KafkaError

        c = _consumer(self.options)
        try:
            c.assign([TopicPartition(self.topic, partition.partition, partition.start)])
            idle = time.monotonic()
            while time.monotonic() - idle < 30.0:
                batch = c.consume(num_messages=10_000, timeout=0.5)
                for m in batch:
                    if m.error():
                        if m.error().code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(f"reading {self.topic}/{partition.partition}: {m.error()}")
                        continue
                    idle = time.monotonic()
                    if m.offset() >= partition.end:
                        return
                    key = m.key()
                    value = m.value()
                    yield (
                        key.decode("utf-8", "replace") if key is not None else None,
                        value.decode("utf-8", "replace") if value is not None else None,
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        m.timestamp()[1],
                    )
                    if m.offset() + 1 >= partition.end:
                        return
            raise RuntimeError(
                f"{self.topic}/{partition.partition}: no record for 30 s before offset {partition.end}"
            )
        finally:
            c.close()

    def commit(self, end: dict) -> None:
        # Offsets live in Spark's checkpoint; nothing to tell the broker.
        pass

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaBatchReader(DataSourceReader):
    """The topic's records from the starting offsets to each partition's end, as one batch: the
    stream reader's offsets and reading, planned once."""

    def __init__(self, options: dict):
        stream = KafkaStreamReader(options)
        try:
            start = stream.initialOffset()
            self._ranges = stream.partitions(start, stream._ends(stream._watermarks()))
        finally:
            stream.stop()
        self._stream = stream

    def partitions(self) -> list[InputPartition]:
        return self._ranges

    def read(self, partition: _Range) -> Iterator[tuple]:
        return self._stream.read(partition)


@dataclass
class _Written(WriterCommitMessage):
    records: int


class KafkaStreamWriter(DataSourceStreamWriter):
    """Rows with ``key`` and ``value`` (strings) onto a topic; at least once."""

    def __init__(self, options: dict):
        self.options = {k.lower(): v for k, v in dict(options).items()}
        self.topic = self.options["topic"]

    def write(self, iterator) -> WriterCommitMessage:
        from confluent_kafka import Producer

        producer = Producer(_conf(self.options, **{"enable.idempotence": True, "linger.ms": 5}))
        failures: list[str] = []

        def delivered(err, _msg):
            if err is not None:
                failures.append(str(err))

        n = 0
        for row in iterator:
            while True:
                try:
                    producer.produce(self.topic, key=row["key"], value=row["value"], on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
            n += 1
        remaining = producer.flush(60)
        if remaining or failures:
            # The micro-batch fails and Spark retries it: at least once, never silently short.
            raise RuntimeError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
        return _Written(n)

    def commit(self, messages, batchId) -> None:
        pass

    def abort(self, messages, batchId) -> None:
        pass
