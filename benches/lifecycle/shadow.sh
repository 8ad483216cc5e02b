#!/usr/bin/env bash
# What a shadow costs the champion: /v1/score open loop at half of the champion-alone saturation,
# against a server with no shadow and servers scoring models/pix-fraud-challenger in the shadow on
# a share of requests (FRACTIONS). The same load generator and 10,000 synth transactions (seed 7).
# Servers pinned to CPU 0, `pixguard bench` to CPU 1; the servers take turns for ROUNDS rounds and
# the champion's p50/p99 medians are compared (target: p99 with a shadow within 10 % of without).
#
#   benches/lifecycle/shadow.sh            # FRACTIONS="0.1 1.0" DURATION=10 WARMUP=2 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/../.."
FRACTIONS=${FRACTIONS:-0.1 1.0}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/bench/shadow}
source benches/pinned.sh
bench() { # label port mode args...
  local label=$1 port=$2
  shift 2
  taskset -c 1 "$bin" bench --api v1 --url "http://127.0.0.1:$port" --transactions 10000 --seed 7 \
    --threads 1 --no-progress --label "$label" --out "$OUT/$label" "$@" > /dev/null 2> "$OUT/$label.log"
}
labels=(off)
start off 18391
port=18392
for f in $FRACTIONS; do
  start "shadow-$f" "$port" --set model.shadow=models/pix-fraud-challenger --set "model.shadow_fraction=$f"
  labels+=("shadow-$f")
  port=$((port + 1))
done

bench saturation 18391 --mode closed --concurrency 16 --duration 5 --warmup 1
rate=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['steps'][0]['achieved_rps'] / 2))" \
  "$OUT/saturation/report.json")
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $(nproc) cores, open loop $rate/s" \
  "(half of the champion-alone saturation), ${DURATION}s, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  port=18391
  for label in "${labels[@]}"; do
    bench "$label-r$round" "$port" --mode open --rate "$rate" --duration "$DURATION" --warmup "$WARMUP"
    port=$((port + 1))
  done
done
port=18392
for label in "${labels[@]:1}"; do
  curl -s "http://127.0.0.1:$port/v1/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin)["shadow"]; print(sys.argv[1], "shadow: sampled", s["sampled"], "shed", s["shed"], "rows", s["rows"], "agreement", round(s["decision_agreement"], 4))' "$label"
  port=$((port + 1))
done
(cd "$OUT" && python3 - "${labels[@]}" <<'PY'
import glob, json, statistics, sys
def steps(label):
    return [json.load(open(f))["steps"][0] for f in sorted(glob.glob(f"{label}-r*/report.json"))]
base = None
for label in sys.argv[1:]:
    s = steps(label)
    p50 = statistics.median(x["latency_us"]["p50"] for x in s) / 1000
    p99 = statistics.median(x["latency_us"]["p99"] for x in s) / 1000
    errors = sum(sum(x["errors"].values()) for x in s)
    base = base or p99
    rounds = " · ".join(f"{x['latency_us']['p99'] / 1000:.3f}" for x in s)
    print(f"{label:<12} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  (p99 rounds: {rounds})"
          f"  p99 ÷ off {p99 / base:.3f}  errors {errors}")
PY
)
