#!/usr/bin/env bash
# What traces cost: /v1/score saturation throughput of one binary with traces off (the default),
# on at the default ratio (0.01 of requests, none of which sends a traceparent), and on for every
# request (ratio 1), the two traced servers exporting to one OTLP/gRPC receiver
# (tests/python/otlp_collector.py --quiet: the OpenTelemetry project's classes decode each export
# and discard it). Servers pinned to CPU 0 (their exporter thread shares it: the cost is measured
# where it is paid), `pixguard bench` and the receiver to CPU 1: closed loop at CONCURRENCY, 10,000
# synth transactions (seed 7). The servers take turns for ROUNDS rounds; medians of achieved
# requests/s are compared, and each traced server's span counts are printed. BASE_BIN=<a build>
# adds that build, traces off, as a fourth arm (BASE_CONFIG=<its config.yaml> when the
# repository's has keys it does not know: `git show REV:config.yaml > FILE`; BASE_ARGS="--set …"
# serves it with more settings, e.g. traced as the `all` arm is). TRANSPORTS=1 adds two
# more arms tracing every request: `http` (OTLP/HTTP, binary protobuf, to the same receiver) and
# `gzip` (OTLP/HTTP, gzipped).
#
#   PYTHON=.ci-venv/bin/python benches/traces/overhead.sh   # ROUNDS=5 DURATION=8 WARMUP=2 CONCURRENCY=32
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:?set PYTHON to a Python with tests/python/requirements.txt (opentelemetry-proto, grpcio)}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
OUT=${OUT:-target/bench/traces}
source benches/pinned.sh
receiver=18599
receiver_http=18598
taskset -c 1 "$PYTHON" tests/python/otlp_collector.py "$receiver" --http "$receiver_http" --quiet \
  > "$OUT/receiver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$OUT/receiver.log" && break; sleep 0.1; done
endpoint="traces.otlp_endpoint=http://127.0.0.1:$receiver"
arms=(off sampled all)
start off 18591
start sampled 18592 --set "$endpoint"
start all 18593 --set "$endpoint" --set traces.sample_ratio=1
if [ -n "${TRANSPORTS:-}" ]; then
  http=(--set "traces.otlp_endpoint=http://127.0.0.1:$receiver_http/v1/traces" --set traces.protocol=http/protobuf
    --set traces.sample_ratio=1)
  start http 18595 "${http[@]}"
  start gzip 18596 "${http[@]}" --set traces.compression=gzip
  arms+=(http gzip)
fi
if [ -n "${BASE_BIN:-}" ]; then
  new=$bin bin=$BASE_BIN
  # shellcheck disable=SC2086 # BASE_ARGS is a list of arguments
  start before 18594 ${BASE_CONFIG:+--config "$BASE_CONFIG"} ${BASE_ARGS:-}
  bin=$new
  arms+=(before)
fi
port_of() {
  case $1 in off) echo 18591;; sampled) echo 18592;; all) echo 18593;; before) echo 18594;; http) echo 18595;;
    gzip) echo 18596;; esac
}
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $(nproc) cores, closed loop" \
  "$CONCURRENCY, ${DURATION}s, $ROUNDS rounds${BASE_BIN:+, before = $BASE_BIN}"
for round in $(seq 1 "$ROUNDS"); do
  for label in "${arms[@]}"; do
    taskset -c 1 "$bin" bench --api v1 --url "http://127.0.0.1:$(port_of "$label")" --transactions 10000 \
      --seed 7 --threads 1 --no-progress --mode closed --concurrency "$CONCURRENCY" --duration "$DURATION" \
      --warmup "$WARMUP" --label "$label-r$round" --out "$OUT/$label-r$round" > /dev/null 2> "$OUT/$label-r$round.log"
  done
done
for label in "${arms[@]}"; do
  [ "$label" = off ] || [ "$label" = before ] && continue
  echo "$label: $(curl -s "http://127.0.0.1:$(port_of "$label")/metrics" | grep '^pixguard_trace_spans_total' | tr '\n' ' ')"
done
(cd "$OUT" && ARMS="${arms[*]}" python3 - <<'PY'
import glob, json, os, statistics
def runs(label):
    reports = [json.load(open(f))["steps"][0] for f in sorted(glob.glob(f"{label}-r*/report.json"))]
    return [r["achieved_rps"] for r in reports], [r["latency_us"]["p99"] / 1000 for r in reports]
arms = os.environ["ARMS"].split()
base = statistics.median(runs("off")[0])
for label in arms:
    rps, p99 = runs(label)
    print(f"{label:<8} median {statistics.median(rps):9.0f} req/s  ÷ off {statistics.median(rps) / base:.3f}"
          f"  p99 {statistics.median(p99):.2f} ms  (rounds: {' · '.join(f'{x:.0f}' for x in rps)})")
PY
)
