#!/usr/bin/env python3
"""The broker path's own latency, without pixguard: `pixguard produce --rate R` into a 3-partition
topic on one tansu broker, and a confluent-kafka consumer that only reads, recording each message's
age (now − its timestamp) when it arrives. Same pinning as bench.py (consumer on CPU 0, broker and
producer on CPU 1), same `fetch.wait.max.ms` as `pixguard stream` (5 ms).

What bench.py's end-to-end figure for pixguard adds on top of this is pixguard's share (scoring,
producing the score, waiting for the broker's acknowledgement).

    .ci-venv/bin/python benches/stream/floor.py --pixguard target/release/pixguard --rate 18000 --seconds 20
    .ci-venv/bin/python benches/stream/floor.py --broker /tmp/nisshi/bin/nisshi --rate 68635 --seconds 10 --per-second
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import ROOT, Retention, cpus, create_topics, pin, retention_args, start_broker, tool_args  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tool_args(p)
    p.add_argument("--rate", type=float, default=18_000)
    p.add_argument("--seconds", type=int, default=20)
    retention_args(p)
    p.add_argument("--per-second", action="store_true", help="also the ages of each second's messages")
    p.add_argument("--out", default=str(ROOT / "target/bench/stream-floor"))
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c_cpu, b_cpu = cpus()
    if c_cpu is not None:
        os.sched_setaffinity(0, {int(c_cpu)})
    broker, brokers = start_broker(args.broker, b_cpu)
    try:
        create_topics(brokers, "floor.in")
        n = int(args.rate * args.seconds)
        synth = out / "synth.jsonl"
        subprocess.run([args.pixguard, "synth", "--rows", str(n), "--seed", "7", "-o", str(synth)],
                       check=True, stderr=subprocess.DEVNULL)
        consumer = Consumer({"bootstrap.servers": brokers, "group.id": "floor", "auto.offset.reset": "earliest",
                             "fetch.wait.max.ms": 5, "enable.auto.commit": False, "session.timeout.ms": 6000})
        consumer.subscribe(["floor.in"])
        ages: list[float] = []
        stamps: list[float] = []
        done = threading.Event()

        def consume() -> None:
            deadline = time.time() + args.seconds + 60
            committed = time.time()
            while len(ages) < n and time.time() < deadline:
                # Committed as pixguard commits (every 200 ms), so that retention can follow it.
                if time.time() - committed > 0.2:
                    committed = time.time()
                    try:
                        consumer.commit(asynchronous=True)
                    except KafkaException:
                        pass  # nothing consumed yet
                # consume(n, t) returns when n messages are in or t has passed: a long t adds
                # its wait to every message's age at low rates (0.1 s read p50 ~50 ms at
                # 200 msg/s where polling one at a time read 3 ms).
                for m in consumer.consume(1000, 0.001):
                    if not m.error():
                        ages.append(time.time() * 1000 - m.timestamp()[1])
                        stamps.append(m.timestamp()[1])
            done.set()

        reader = threading.Thread(target=consume)
        reader.start()
        time.sleep(8)  # the group join
        with Retention(brokers, "floor.in", ["floor"], enabled=args.retention) as retention:
            produced = subprocess.run(pin(b_cpu, [args.pixguard, "produce", "--brokers", brokers,
                                                  "--topic", "floor.in", "--rate", str(args.rate), str(synth)]),
                                      capture_output=True, text=True)
            done.wait(args.seconds + 90)
        reader.join()
        consumer.close()
        if args.per_second and stamps:
            # Where in the run the slow messages were: a start-up transient, or steady state.
            print("second  messages  p50_ms  p99_ms  max_ms  (by the message's timestamp)")
            t0 = min(stamps)
            by_second: dict[int, list[float]] = {}
            for a, t in zip(ages, stamps):
                by_second.setdefault(int((t - t0) / 1000), []).append(a)
            for sec, xs in sorted(by_second.items()):
                xs.sort()
                print(f"{sec:>6}  {len(xs):>8}  {xs[len(xs) // 2]:>6.1f}  {xs[int(0.99 * len(xs))]:>6.1f}  {xs[-1]:>6.1f}")
        ages.sort()
        q = lambda f: round(ages[min(len(ages) - 1, int(f * len(ages)))], 1) if ages else None  # noqa: E731
        summary = {"rate": args.rate, "seconds": args.seconds, "produced_ok": produced.returncode == 0,
                   "received": len(ages), "expected": n,
                   "retention": args.retention, "deleted_by_retention": retention.deleted,
                   "age_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)}}
        print(json.dumps(summary, indent=2))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return 0 if produced.returncode == 0 and len(ages) == n else 1
    finally:
        os.killpg(broker.pid, signal.SIGKILL)
        broker.wait()


if __name__ == "__main__":
    sys.exit(main())
