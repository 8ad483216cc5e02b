#!/usr/bin/env python3
"""bench.py's latency phase alone, for pixguard only, with settings to vary: `pixguard produce
--rate R` for --seconds into a fresh 3-partition topic while `pixguard stream` scores it; the
end-to-end p50/p99/max (message timestamp to the broker's acknowledgement of its score, from
/v1/stats) and what the engine's share was (queue wait and compute, from /metrics). Same pinning
as bench.py.

    .ci-venv/bin/python benches/stream/latency.py --broker /tmp/nisshi/bin/nisshi --rate 68635 \
        --set stream.librdkafka.linger_ms=0
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import (ROOT, Retention, cpus, create_topics, get, kill_groups, metric, metric_in, pin, quantiles_ms,  # noqa: E402
                   retention_args, start_broker, start_stream, tool_args, wait_assigned)
from drain import buckets, cpu_seconds, proc_stat, quantile_bound  # noqa: E402

E2E = "pixguard_stream_end_to_end_seconds"
# Each stage's age histogram, as the per-second split reads them: where a second's tail began.
STAGES = {"e2e": E2E, "fetch_age": "pixguard_stream_fetch_age_seconds",
          "scored_age": "pixguard_stream_scored_age_seconds"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tool_args(p)
    p.add_argument("--rate", type=float, required=True, help="messages/s")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--set", action="append", default=[], help="a pixguard setting, KEY=VALUE (repeatable)")
    p.add_argument("--generator-cpu", choices=("broker", "consumer", "any"), default="broker",
                   help="where `pixguard produce` runs: beside the broker (default), beside pixguard, or unpinned")
    p.add_argument("--produce-arg", action="append", default=[],
                   help="an argument for the generator, `pixguard produce` (repeatable: --produce-arg=--linger-ms=1)")
    retention_args(p)
    p.add_argument("--out", default=str(ROOT / "target/bench/stream-latency"))
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = int(args.rate * args.seconds)
    synth = out / f"synth-{n}.jsonl"
    if not synth.exists():
        subprocess.run([args.pixguard, "synth", "--rows", str(n), "--seed", "7", "-o", str(synth)],
                       check=True, stderr=subprocess.DEVNULL)
    # The kernel writes a fresh file back while the run is measured (~700 MB at 89 k/s for 10 s):
    # its flusher threads then take both cores, and such runs fell behind.
    os.sync()
    c_cpu, b_cpu = cpus()
    broker, brokers = start_broker(args.broker, b_cpu)
    proc = None
    try:
        create_topics(brokers, "l.in", "l.out", "l.dlq")
        proc, url = start_stream(args.pixguard, c_cpu, brokers, "l", ("l.in", "l.out", "l.dlq"), args.set)
        wait_assigned(url)
        # Each second's share of each stage's histogram: a start-up transient, or steady state.
        seconds: list[dict[str, tuple[float | None, float | None]]] = []
        producing = threading.Event()
        producing.set()

        def scrape() -> dict[str, dict]:
            text = get(f"{url}/metrics")
            return {stage: buckets(text, name) for stage, name in STAGES.items()}

        def sample() -> None:
            before = scrape()
            while producing.is_set():
                time.sleep(1)
                after = scrape()
                seconds.append({stage: (quantile_bound(before[stage], after[stage], 0.5),
                                        quantile_bound(before[stage], after[stage], 0.99))
                                for stage in STAGES})
                before = after

        gen_cpu = {"broker": b_cpu, "consumer": c_cpu, "any": None}[args.generator_cpu]
        with Retention(brokers, "l.in", ["l"], enabled=args.retention) as retention:
            generator = subprocess.Popen(pin(gen_cpu, [args.pixguard, "produce", "--brokers", brokers, "--topic",
                                                       "l.in", "--rate", str(args.rate), *args.produce_arg,
                                                       str(synth)]),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # Measured from the first message on: the generator reads its input ahead first.
            while metric(url, "pixguard_stream_consumed_total") == 0 and generator.poll() is None:
                time.sleep(0.01)
            sampler = threading.Thread(target=sample)
            sampler.start()
            t0, cpu0, bcpu0 = time.time(), cpu_seconds(proc.pid), cpu_seconds(broker.pid)
            faults0 = minor_faults(proc.pid)
            cores0 = core_times()
            if generator.wait() != 0:
                raise SystemExit(f"pixguard produce exited with {generator.returncode}")
            deadline = time.time() + 60
            while metric(url, "pixguard_stream_produced_total") < n and time.time() < deadline:
                time.sleep(0.1)
        producing.clear()
        sampler.join()
        # Busy share of each one's core while the topic was fed: which side could not keep up.
        busy = {"pixguard": round((cpu_seconds(proc.pid) - cpu0) / (time.time() - t0), 2),
                "broker": round((cpu_seconds(broker.pid) - bcpu0) / (time.time() - t0), 2)}
        # Each core's busy share, everything on it (the generator shares the broker's).
        cores = [round(1 - (idle1 - idle0) / max(total1 - total0, 1), 2)
                 for (idle0, total0), (idle1, total1) in zip(cores0, core_times())]
        busy["cores"] = cores
        # Pages pixguard touched for the first time (or again, after its allocator let them go).
        faults = minor_faults(proc.pid) - faults0
        stream_stats = json.loads(get(f"{url}/v1/stats"))["stream"]
        e2e = stream_stats["end_to_end_us"]["since_start"]
        fetched = stream_stats["fetch_age_us"]["since_start"]
        handed = stream_stats["scored_age_us"]["since_start"]
        text = get(f"{url}/metrics")
        scored = max(metric(url, "pixguard_stream_produced_total"), 1)
        summary = {"rate": args.rate, "seconds": args.seconds, "set": args.set, "produce": args.produce_arg,
                   "generator_cpu": args.generator_cpu,
                   "retention": args.retention, "deleted_by_retention": retention.deleted,
                   "scored": int(scored),
                   "e2e_ms": quantiles_ms(e2e),
                   # The part before pixguard: message timestamp to the stream's receipt of it.
                   "fetch_age_ms": quantiles_ms(fetched),
                   # ... to the score handed to the producer; e2e adds the broker's acknowledgement.
                   "scored_age_ms": quantiles_ms(handed),
                   "engine_ms_per_chunk": {
                       "queue": per_call(text, "pixguard_queue_wait_seconds"),
                       "compute": per_call(text, "pixguard_compute_duration_seconds")},
                   "pauses": metric(url, "pixguard_stream_pauses_total"),
                   "page_faults": faults,
                   "cpu_busy": busy,
                   "per_second_ms_le": {stage: [[None if q is None else q * 1e3 for q in s[stage]] for s in seconds]
                                        for stage in STAGES}}
        print(json.dumps(summary))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return 0
    finally:
        kill_groups(proc, broker)


def minor_faults(pid: int) -> int:
    """A process's minor page faults so far (/proc/<pid>/stat, field 10)."""
    return int(proc_stat(pid)[7])


def core_times() -> list[tuple[int, int]]:
    """(idle, total) jiffies of each CPU, from /proc/stat."""
    out = []
    for line in open("/proc/stat"):
        if line.startswith("cpu") and line[3].isdigit():
            v = [int(x) for x in line.split()[1:]]
            out.append((v[3] + v[4], sum(v[:8])))
    return out


def per_call(text: str, histogram: str) -> float:
    """A histogram's mean in ms (its sum over its count)."""
    return round(1e3 * metric_in(text, histogram + "_sum") / max(metric_in(text, histogram + "_count"), 1), 2)


if __name__ == "__main__":
    sys.exit(main())
