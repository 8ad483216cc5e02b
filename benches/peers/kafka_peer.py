#!/usr/bin/env python3
"""The Python peer of `pixguard stream`, written the usual way: a confluent-kafka consumer in a
group, batches of up to --batch messages, pydantic validation and the package's pre-processing
(pyfeatures.py, the same code as the other peers), onnxruntime on model.onnx, one score message per
input, invalid messages to the dead-letter topic, offsets committed after the producer has flushed
(at least once). Prints a JSON summary: messages/s and end-to-end latency (message timestamp →
delivery acknowledged).

    python benches/peers/kafka_peer.py --brokers 127.0.0.1:9092 --input bench.in --output peer.out \
        --expect 200000 --model models/pix-fraud
"""
import argparse
import json
import pathlib
import sys
import time
import uuid

import numpy as np
import onnxruntime as ort
from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from pyfeatures import Preprocessor, Transaction  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--dlq", default=None)
    p.add_argument("--group", default=f"peer-{uuid.uuid4()}")
    p.add_argument("--model", default="models/pix-fraud")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--idle-s", type=float, default=20.0)
    args = p.parse_args()
    pre = Preprocessor(args.model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(pathlib.Path(args.model) / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "fetch.wait.max.ms": 5})
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 2})
    consumer.subscribe([args.input])
    latencies = []
    done, first, last = 0, None, time.time()

    def delivered(err, msg, ts=None):
        if err is None and ts is not None:
            latencies.append(time.time() * 1000 - ts)

    while done < args.expect and time.time() - last < args.idle_s:
        messages = consumer.consume(num_messages=args.batch, timeout=0.05)
        if not messages:
            continue
        first = first or time.time()
        last = time.time()
        txs, kept = [], []
        for m in messages:
            if m.error():
                continue
            try:
                txs.append(Transaction.model_validate_json(m.value()))
                kept.append(m)
            except Exception as e:  # noqa: BLE001 - any invalid message goes to the DLQ
                if args.dlq:
                    producer.produce(args.dlq, m.value(), m.key(), headers=[("error", str(e)[:200].encode())])
        if txs:
            numeric, categories = pre.batch(txs)
            (scores,) = session.run(["score"], {"features": numeric, "categories": categories})
            for tx, m, s in zip(txs, kept, scores[:, 0]):
                value = json.dumps({"end_to_end_id": tx.end_to_end_id, "score": float(s),
                                    "decision": pre.decision(float(s))})
                ts = m.timestamp()[1]
                producer.produce(args.output, value.encode(), tx.end_to_end_id.encode(),
                                 on_delivery=lambda err, msg, ts=ts: delivered(err, msg, ts))
                producer.poll(0)
        producer.flush()
        consumer.commit(asynchronous=False)
        done += len(messages)
    elapsed = (last - first) if first else 0.0
    lat = np.array(latencies) if latencies else np.array([0.0])
    print(json.dumps({"messages": done, "seconds": round(elapsed, 3),
                      "per_second": round(done / elapsed, 1) if elapsed else 0,
                      "end_to_end_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                        "max": float(lat.max())}}))
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
