#!/usr/bin/env bash
# Saturation throughput of the three scoring APIs of one pixguard server, with the same load
# generator (`pixguard bench`, closed loop) and the same 10,000 synth transactions: /v1/score,
# OIP over HTTP (the transaction's fields as JSON tensors) and OIP over gRPC (raw_input_contents).
# The server is pinned to CPU 0 and the generator to CPU 1, so the server is what saturates.
#
# The APIs take turns for ROUNDS rounds and each one's median is quoted, so that the machine's drift
# over the run (a shared machine: ±30% between runs minutes apart) falls on all three alike.
#
#   benches/apis.sh                       # CONCURRENCY=16 DURATION=8 WARMUP=2 ROUNDS=3
#   benches/apis.sh --overload            # also: open loop at 3x /v1's saturation, 2,000 connections
set -euo pipefail
cd "$(dirname "$0")/.."
CONCURRENCY=${CONCURRENCY:-16}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
HTTP_PORT=${HTTP_PORT:-18089}
GRPC_PORT=${GRPC_PORT:-18091}
OUT=${OUT:-target/bench/apis}
rm -rf "$OUT"
mkdir -p "$OUT"
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null || true' EXIT

# BIN: an already built binary (an A/B against another commit's build); otherwise this tree's.
bin=${BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet --locked
  bin=./target/release/pixguard
fi
taskset -c 0 "$bin" serve --address 127.0.0.1 --port "$HTTP_PORT" --grpc-port "$GRPC_PORT" \
  --log warn 2> "$OUT/server.log" &
server=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" > /dev/null && break
  sleep 0.1
done

# The server's CPU time (user + system, clock ticks) and how many requests it has answered on an
# API: per request, its own cost, whichever side saturated; busy near 100% means the server did.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
answered() { # api label of pixguard_responses_total
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" \
    | awk -v api="$1" 'index($0, "pixguard_responses_total{api=\"" api "\"") == 1 { n += $2 } END { print n + 0 }'
}
bench() { # api url label [extra args]
  local api=$1 url=$2 label=$3
  shift 3
  local metric=${api//-/_} ticks0 answered0 t0
  ticks0=$(cpu_ticks); answered0=$(answered "$metric"); t0=$(date +%s.%N)
  taskset -c 1 "$bin" bench --api "$api" --url "$url" --transactions 10000 --seed 7 \
    --duration "$DURATION" --warmup "$WARMUP" --threads 1 --no-progress --label "$label" \
    --out "$OUT/$label" "$@" > "$OUT/$label.txt" 2> "$OUT/$label.log"
  python3 - "$OUT/$label/report.json" "$label" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for step in report["steps"]:
    lat = step["latency_us"]
    print(f'{sys.argv[2]:<10} offered={step.get("offered_rps") or 0:>8.0f} achieved={step["achieved_rps"]:>8.0f}/s '
          f'ok={step["ok"]} errors={step["errors"]} p50_ms={lat["p50"] / 1e3:.2f} p99_ms={lat["p99"] / 1e3:.2f}')
PY
  python3 - "$label" "$ticks0" "$(cpu_ticks)" "$answered0" "$(answered "$metric")" "$t0" "$(date +%s.%N)" "$(getconf CLK_TCK)" "$OUT" <<'PY'
import sys
label, c0, c1, a0, a1, t0, t1, hz, out = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(hz)
n = int(float(a1)) - int(float(a0))
print(f'{label:<10} server: {cpu / max(n, 1) * 1e6:.1f} us CPU per answered request ({n} answered), '
      f'busy {cpu / (float(t1) - float(t0)) * 100:.0f}% of one core')
with open(f"{out}/{label.split('-r')[0]}.cpu", 'a') as f:
    f.write(f'{cpu / max(n, 1) * 1e6}\n')
PY
}

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD), $(nproc) cores, closed loop c=$CONCURRENCY, ${DURATION}s, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  bench v1 "http://127.0.0.1:$HTTP_PORT" "v1-r$round" --mode closed --concurrency "$CONCURRENCY"
  bench oip-http "http://127.0.0.1:$HTTP_PORT" "oip-http-r$round" --mode closed --concurrency "$CONCURRENCY"
  bench oip-grpc "http://127.0.0.1:$GRPC_PORT" "oip-grpc-r$round" --mode closed --concurrency "$CONCURRENCY"
done
(cd "$OUT" && python3 - <<'PY'
import glob, json, statistics
def median_rps(api):
    return statistics.median(json.load(open(f))["steps"][0]["achieved_rps"] for f in glob.glob(f"{api}-r*/report.json"))
def median_cpu(api):
    return statistics.median(float(x) for x in open(f"{api}.cpu"))
v1 = median_rps("v1")
print("median over rounds:")
for api in ["v1", "oip-http", "oip-grpc"]:
    rps = median_rps(api)
    print(f"  {api:<9} {rps:>8.0f}/s  ÷ v1 = {rps / v1:.2f}   server CPU {median_cpu(api):.1f} us/request"
          f"  (÷ v1's: {median_cpu('v1') / median_cpu(api):.2f})")
json.dump({"v1": v1}, open("medians.json", "w"))
PY
)

if [[ " $* " == *" --overload "* ]]; then
  # Open loop at three times /v1's saturation throughput with 2,000 connections: the excess must be
  # refused at once (429), the accepted requests keep a bounded server-side latency, and readiness
  # holds throughout.
  rate=$(python3 -c "import json,sys; print(int(3 * json.load(open(sys.argv[1]))['v1']))" "$OUT/medians.json")
  ( while kill -0 "$server" 2> /dev/null; do
      curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$HTTP_PORT/readyz" || echo down
      sleep 0.5
    done > "$OUT/readyz.txt" ) &
  watcher=$!
  # The accepted requests' server-side latency during this step alone: the difference of the
  # Prometheus histograms scraped before and after it.
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" > "$OUT/metrics-before.txt"
  bench v1 "http://127.0.0.1:$HTTP_PORT" overload --mode open --rate "$rate" --connections 2000 --timeout-ms 5000
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" > "$OUT/metrics-after.txt"
  kill "$watcher" 2> /dev/null || true
  echo "readiness during the overload: $(sort "$OUT/readyz.txt" | uniq -c | tr '\n' ' ')"
  python3 - "$OUT/metrics-before.txt" "$OUT/metrics-after.txt" <<'PY'
import re, sys
def buckets(path, name):
    out = {}
    for line in open(path):
        m = re.match(name + r'_bucket\{le="([^"]+)"\} ([0-9.e+]+)', line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
    return out
for name, what in [("pixguard_request_duration_seconds", "admission to answer"),
                   ("pixguard_queue_wait_seconds", "engine queue")]:
    before, after = buckets(sys.argv[1], name), buckets(sys.argv[2], name)
    delta = sorted((le, after[le] - before.get(le, 0)) for le in after)
    total = delta[-1][1]
    def q(p):  # the upper bound of the bucket holding the quantile
        return next(le for le, n in delta if n >= p * total)
    print(f"during the overload, {what}: {total:.0f} accepted, p50 <= {q(0.5) * 1e3:g} ms, p99 <= {q(0.99) * 1e3:g} ms")
PY
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep -E '^pixguard_responses_total'
  kill -0 "$server" && echo "server still running"
fi
