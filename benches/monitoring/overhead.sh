#!/usr/bin/env bash
# What monitoring costs: /v1/score saturation throughput of a server with monitoring on (the
# default) against one with `monitoring.enabled: false`, same binary, same load. Both servers are
# pinned to CPU 0 (their monitor thread shares it: the cost is measured where it is paid) and
# `pixguard bench` to CPU 1: closed loop at CONCURRENCY, 10,000 synth transactions (seed 7). The
# servers take turns for ROUNDS rounds; the medians of achieved requests/s are compared (target:
# on ≥ 97 % of off).
#
#   benches/monitoring/overhead.sh      # ROUNDS=5 DURATION=10 WARMUP=2 CONCURRENCY=32
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
OUT=${OUT:-target/bench/monitoring}
source benches/pinned.sh
start on 18491
start off 18492 --set monitoring.enabled=false
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $(nproc) cores, closed loop" \
  "$CONCURRENCY, ${DURATION}s, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  for label in on off; do
    port=18491; [ "$label" = off ] && port=18492
    taskset -c 1 "$bin" bench --api v1 --url "http://127.0.0.1:$port" --transactions 10000 --seed 7 \
      --threads 1 --no-progress --mode closed --concurrency "$CONCURRENCY" --duration "$DURATION" \
      --warmup "$WARMUP" --label "$label-r$round" --out "$OUT/$label-r$round" > /dev/null 2> "$OUT/$label-r$round.log"
  done
done
curl -s http://127.0.0.1:18491/v1/monitoring | python3 -c 'import json,sys; r=json.load(sys.stdin)["champion"]; w=[x for x in r["windows"] if x["window"]=="all"][0]; print("monitor (on): rows observed", w["rows"], "dropped", r["dropped_rows"])'
(cd "$OUT" && python3 - <<'PY'
import glob, json, statistics
def rps(label):
    return [json.load(open(f))["steps"][0]["achieved_rps"] for f in sorted(glob.glob(f"{label}-r*/report.json"))]
on, off = rps("on"), rps("off")
for label, xs in (("on", on), ("off", off)):
    print(f"{label:<4} median {statistics.median(xs):9.0f} req/s  (rounds: {' · '.join(f'{x:.0f}' for x in xs)})")
ratio = statistics.median(on) / statistics.median(off)
print(f"on ÷ off {ratio:.3f} (target ≥ 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")
PY
)
