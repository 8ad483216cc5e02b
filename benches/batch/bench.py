#!/usr/bin/env python3
"""`pixguard batch` throughput and memory, and the same scoring on Spark (benches/batch/spark_peer.py),
in one run on one machine.

    .ci-venv/bin/python benches/batch/bench.py --pixguard target/release/pixguard \
        --rows 10000000 --peer-rows 200000

1. `pixguard batch` on --rows synth rows, Parquet (nested) → Parquet, --repeat times: rows/s end
   to end (the summary's, from the first chunk read to the output closed; the median and every run,
   since this shared machine's speed drifts by ±10 % within minutes) and peak RSS (getrusage).
2. The first --peer-rows of them, written by pyarrow in row groups of --peer-rows/4 so Spark gets
   four tasks: `pixguard batch` on that file (--repeat times, median quoted), then the Spark
   peer (local[2], predict_batch_udf, pydantic + pyfeatures.py + onnxruntime), whose session
   start is reported apart.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parents[2]


def batch(px: str, src: pathlib.Path, out: pathlib.Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    text = subprocess.run([px, "batch", "-i", str(src), "-o", str(out), "--no-progress"],
                          check=True, capture_output=True, text=True).stdout
    wall = time.monotonic() - started
    summary = json.loads(text.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary["wall_seconds_with_model_load"] = round(wall, 3)
    # ru_maxrss of children is the largest of any child so far: meaningful when this child is
    # the largest, which the first (biggest) run is.
    summary["peak_rss_mib"] = round(max(peak, before) / 1024, 1)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixguard", default="target/release/pixguard")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--peer-rows", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default=None)
    ap.add_argument("--repeat", type=int, default=5, help="runs of pixguard batch on each file (median quoted)")
    args = ap.parse_args()
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="pixguard-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big.parquet"
    started = time.monotonic()
    subprocess.run([args.pixguard, "synth", "--rows", str(args.rows), "--seed", str(args.seed),
                    "--format", "parquet", "-o", str(big)], check=True, capture_output=True)
    synth_s = time.monotonic() - started
    result = {"rows": args.rows, "input_bytes": big.stat().st_size, "synth_seconds": round(synth_s, 2)}
    runs = [batch(args.pixguard, big, work / "big-scores.parquet") for _ in range(max(1, args.repeat))]
    rates = sorted(r["rows_per_second"] for r in runs)
    result["pixguard_big"] = runs[0]
    result["rows_per_second_runs"] = [round(r["rows_per_second"]) for r in runs]
    result["rows_per_second_median"] = round(rates[len(rates) // 2])
    print(json.dumps({"pixguard_batch": result}), flush=True)

    small = work / "peer.parquet"
    table = pq.ParquetFile(big).read_row_groups([0]).slice(0, args.peer_rows)
    pq.write_table(table, small, row_group_size=max(1, args.peer_rows // 4))
    # Repeated as the big file is: a run that starts after the machine idled a few seconds takes
    # ~65 % more CPU time for the same work (this VM's, not pixguard's: `perf stat` task-clock
    # 862 vs 522 ms, same page faults), which weighs on a half-second job and not on Spark's 30 s.
    smalls = sorted((batch(args.pixguard, small, work / "peer-pixguard.parquet")
                     for _ in range(max(1, args.repeat))), key=lambda r: r["rows_per_second"])
    same = smalls[len(smalls) // 2]
    same["rows_per_second_runs"] = [round(r["rows_per_second"]) for r in smalls]
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    text = subprocess.run([sys.executable, str(ROOT / "benches/batch/spark_peer.py"), "--input", str(small),
                           "--output", str(work / "peer-spark"), "--master", "local[2]"],
                          check=True, capture_output=True, text=True, env=env).stdout
    spark = json.loads(text.strip().splitlines()[-1])
    print(json.dumps({"peer_rows": args.peer_rows, "pixguard": same, "spark": spark,
                      "ratio_job": round(same["rows_per_second"] / spark["rows_per_second"], 1),
                      "ratio_with_session": round(same["rows_per_second"] / spark["rows_per_second_with_session"], 1)}),
          flush=True)
    print(f"work files in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
