#!/usr/bin/env python3
"""Creates Kafka topics (confluent-kafka's AdminClient) and reads a topic back to JSONL, for the
stream tests.

    python kafka_topics.py create --brokers 127.0.0.1:9092 --partitions 3 TOPIC [TOPIC ...]
    python kafka_topics.py dump --brokers 127.0.0.1:9092 --expect N [--idle-s 10] TOPIC > out.jsonl
    python kafka_topics.py produce --brokers 127.0.0.1:9092 TOPIC < records.jsonl

A produced record is a JSON line {"key": text, "value": text, "headers": {name: text}}: what
`pixguard produce` cannot send (headers).
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create(args) -> int:
    admin = AdminClient({"bootstrap.servers": args.brokers})
    futures = admin.create_topics([NewTopic(t, num_partitions=args.partitions, replication_factor=1)
                                   for t in args.topics])
    for topic, f in futures.items():
        try:
            f.result(timeout=30)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    return 0


def dump(args) -> int:
    """Every record of the topic, from the earliest, as JSON lines: key, value (text or base64),
    headers, partition, offset. Stops after --expect records, or --idle-s without a new one."""
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": f"dump-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([args.topic])
    seen, last = 0, time.time()
    out = sys.stdout
    while (args.expect is None or seen < args.expect) and time.time() - last < args.idle_s:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        last = time.time()
        seen += 1
        value = msg.value()
        try:
            text = value.decode() if value is not None else None
            body = {"value": text}
        except UnicodeDecodeError:
            body = {"value_b64": base64.b64encode(value).decode()}
        out.write(json.dumps({
            "key": msg.key().decode(errors="replace") if msg.key() is not None else None,
            **body,
            "headers": {k: (v.decode(errors="replace") if v is not None else None) for k, v in (msg.headers() or [])},
            "partition": msg.partition(), "offset": msg.offset(),
        }) + "\n")
    consumer.close()
    print(f"{seen} records from {args.topic}", file=sys.stderr)
    return 0


def produce(args) -> int:
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})
    failed = []

    def delivered(err, _msg):
        if err is not None:
            failed.append(err)

    sent = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        value = record.get("value")
        producer.produce(args.topic, key=record.get("key"),
                         value=value.encode() if value is not None else None,
                         headers=list((record.get("headers") or {}).items()), on_delivery=delivered)
        sent += 1
    producer.flush(30)
    if failed or len(producer) > 0:
        print(f"not delivered: {failed}, {len(producer)} waiting", file=sys.stderr)
        return 1
    print(f"{sent} records to {args.topic}", file=sys.stderr)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--brokers", required=True)
    c.add_argument("--partitions", type=int, default=3)
    c.add_argument("topics", nargs="+")
    d = sub.add_parser("dump")
    d.add_argument("--brokers", required=True)
    d.add_argument("--expect", type=int)
    d.add_argument("--idle-s", type=float, default=10.0)
    d.add_argument("topic")
    r = sub.add_parser("produce")
    r.add_argument("--brokers", required=True)
    r.add_argument("topic")
    args = p.parse_args()
    return {"create": create, "dump": dump, "produce": produce}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
