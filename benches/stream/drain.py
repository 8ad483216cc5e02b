#!/usr/bin/env python3
"""bench.py's throughput phase alone, repeated, with settings to vary: N synth transactions
pre-loaded on a 3-partition topic of one tansu broker, `pixguard stream` drains them; per run, the
rate (first message consumed to last score acknowledged, from its `/metrics`) and the CPU time
pixguard and the broker used meanwhile (`/proc/<pid>/stat`), which says whether the stream was
CPU-bound. Same pinning as bench.py.

    .ci-venv/bin/python benches/stream/drain.py --messages 200000 --repeat 3 --set stream.max_in_flight=1000000

With `--http-rate R`, single transactions are also sent to the same process's `/v1/score` (open
loop, `pixguard bench`) from the first consumed message on, for `--http-seconds`: what a drain
leaves the synchronous path (answered, refused with 429, latency).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench import (ROOT, cpus, create_topics, get, kill_groups, metric_in, pin, start_broker, start_stream,  # noqa: E402
                   tool_args)
from bench import drain as drain_of  # noqa: E402


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (the state is [0])."""
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def buckets(text: str, name: str) -> dict[float, float]:
    """A Prometheus histogram's cumulative buckets, upper bound -> count."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + '_bucket{le="'):
            le, count = line[len(name) + 12:].split('"} ')
            out[float(le)] = float(count)
    return out


def quantile_bound(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile q of what was recorded between two scrapes."""
    delta = sorted((le, n - before.get(le, 0.0)) for le, n in after.items())
    if not delta or delta[-1][1] == 0:
        return None
    return next(le for le, n in delta if n >= q * delta[-1][1])


def drain(args: argparse.Namespace, synth: pathlib.Path) -> dict:
    c_cpu, b_cpu = cpus()
    broker, brokers = start_broker(args.broker, b_cpu)
    proc = None
    try:
        create_topics(brokers, "d.in", "d.out", "d.dlq")
        subprocess.run(pin(b_cpu, [args.pixguard, "produce", "--brokers", brokers, "--topic", "d.in", str(synth)]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc, url = start_stream(args.pixguard, c_cpu, brokers, "d", ("d.in", "d.out", "d.dlq"), args.set)
        at_first: dict = {}

        def started(text: str) -> None:
            at_first.update(cpu=cpu_seconds(proc.pid), broker=cpu_seconds(broker.pid))
            if args.http_rate:
                at_first["served"] = buckets(text, "pixguard_request_duration_seconds")
                at_first["http"] = subprocess.Popen(pin(b_cpu, [
                    args.pixguard, "bench", "--api", "v1", "--url", url, "--mode", "open",
                    "--rate", str(args.http_rate), "--duration", str(args.http_seconds), "--warmup", "0",
                    "--transactions", "2000", "--seed", "9", "--no-progress",
                    "--out", str(pathlib.Path(args.out) / "http")]),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        first, now, _ = drain_of(url, args.messages, on_first=started, every=0.02)
        drained = {"cpu": cpu_seconds(proc.pid) - at_first["cpu"],
                   "broker": cpu_seconds(broker.pid) - at_first["broker"]}
        text = get(f"{url}/metrics")
        extra = {}
        http = at_first.get("http")
        if http is not None:
            http.wait()
            served0 = at_first["served"]
            served = buckets(get(f"{url}/metrics"), "pixguard_request_duration_seconds")
            step = json.loads((pathlib.Path(args.out) / "http/report.json").read_text())["steps"][0]
            extra = {"http": {"server_p50_ms_le": 1e3 * (quantile_bound(served0, served, 0.5) or 0),
                              "server_p99_ms_le": 1e3 * (quantile_bound(served0, served, 0.99) or 0),"offered": step.get("offered_rps"), "ok": step["ok"], "errors": step["errors"],
                              "p50_ms": step["latency_us"]["p50"] / 1e3, "p99_ms": step["latency_us"]["p99"] / 1e3}}
        return {"msgs_per_s": round(args.messages / (now - first)), "seconds": round(now - first, 2),
                "retries": metric_in(text, "pixguard_stream_retries_total"),
                "pauses": metric_in(text, "pixguard_stream_pauses_total"),
                "queue_wait_s": round(metric_in(text, "pixguard_queue_wait_seconds_sum"), 2),
                "compute_s": round(metric_in(text, "pixguard_compute_duration_seconds_sum"), 2),
                "pixguard_cpu_s": round(drained["cpu"], 2),
                "broker_cpu_s": round(drained["broker"], 2), **extra}
    finally:
        kill_groups(proc, broker)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tool_args(p)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--set", action="append", default=[], help="a pixguard setting, KEY=VALUE (repeatable)")
    p.add_argument("--http-rate", type=float, default=0, help="/v1/score requests/s during the drain (0: none)")
    p.add_argument("--http-seconds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "target/bench/stream-drain"))
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synth = out / f"synth-{args.messages}.jsonl"
    if not synth.exists():
        subprocess.run([args.pixguard, "synth", "--rows", str(args.messages), "--seed", "7", "-o", str(synth)],
                       check=True, stderr=subprocess.DEVNULL)
    runs = []
    for _ in range(args.repeat):
        runs.append(drain(args, synth))
        print(json.dumps(runs[-1]), flush=True)
    rates = sorted(r["msgs_per_s"] for r in runs)
    print(json.dumps({"set": args.set, "median_msgs_per_s": rates[len(rates) // 2], "runs": len(runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
