#!/usr/bin/env bash
# Single-transaction POST /v1/score over HTTP/1.1 keep-alive on loopback, loaded by wrk from a
# second process: pixguard serve (CPU, bundled model) against the HTTP ceiling (benches/http_echo.rs:
# the same parse + validation and a same-shaped answer, no features, queue or model).
#
#   benches/http.sh                 # needs wrk (Debian: apt-get install wrk)
#   DURATION=20s CONNECTIONS=64 benches/http.sh
#   BIN=/tmp/pixguard-base benches/http.sh   # an already built pixguard (an A/B against another
#                                             # commit's build); the ceiling is this tree's
#
# Saturation: CONNECTIONS closed-loop connections. Then pixguard at ~50 % and ~90 % of its
# saturation throughput: each connection pauses 1 ms between requests and the connection count is
# chosen from the saturation latency; the achieved rate is what is reported. wrk's latencies are
# closed-loop (no coordinated-omission correction).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
PIX_PORT=${PIX_PORT:-18089}
ECHO_PORT=${ECHO_PORT:-18090}
BODIES=$(mktemp /tmp/pixguard-bodies.XXXXXX.jsonl)
LOGS=$(mktemp -d /tmp/pixguard-http.XXXXXX)
pids=()
# `cargo bench` runs the echo server as its child: stop that too, or it outlives the script.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "http_echo.* --port $ECHO_PORT" 2>/dev/null || true
  rm -f "$BODIES"
}
trap cleanup EXIT

bin=${BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=./target/release/pixguard
fi
cargo bench --bench http_echo --no-run --quiet 2>/dev/null
"$bin" synth --rows 10000 --seed 5 2>/dev/null \
  | python3 -c 'import sys, json; [print(json.dumps(json.loads(l)["transaction"])) for l in sys.stdin]' > "$BODIES"

"$bin" serve --address 127.0.0.1 --port "$PIX_PORT" --grpc-port 0 --log warn 2> "$LOGS/pixguard.log" &
pids+=($!)
cargo bench --bench http_echo --quiet -- --port "$ECHO_PORT" --threads 2 2> "$LOGS/echo.log" &
pids+=($!)
for port in "$PIX_PORT" "$ECHO_PORT"; do
  for _ in $(seq 1 600); do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$port/v1/score" --data-binary @<(head -1 "$BODIES") && break
    sleep 0.1
  done
done

run() { # name url connections delay_ms
  local line
  line=$(wrk -t 1 -c "$3" -d "$DURATION" --latency -s benches/wrk/score.lua "$2" -- "$BODIES" "$4" | grep '^RESULT')
  echo "$1 connections=$3 delay_ms=$4 ${line#RESULT }"
}

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, wrk 1 thread, duration $DURATION"
run warmup "http://127.0.0.1:$PIX_PORT/v1/score" "$CONNECTIONS" 0 > /dev/null
pix=$(run pixguard_saturation "http://127.0.0.1:$PIX_PORT/v1/score" "$CONNECTIONS" 0); echo "$pix"
run warmup "http://127.0.0.1:$ECHO_PORT/v1/score" "$CONNECTIONS" 0 > /dev/null
echo_line=$(run echo_saturation "http://127.0.0.1:$ECHO_PORT/v1/score" "$CONNECTIONS" 0); echo "$echo_line"
rps=$(sed -E 's/.* rps=([0-9]+).*/\1/' <<< "$pix")
p50=$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<< "$pix")
for fraction in 0.5 0.9; do
  # First guess from the saturation latency, then one correction from the rate it achieved.
  c=$(python3 -c "print(max(1, round($fraction * $rps * (0.001 + $p50 / 1e6))))")
  got=$(run probe "http://127.0.0.1:$PIX_PORT/v1/score" "$c" 1 | sed -E 's/.* rps=([0-9]+).*/\1/')
  c=$(python3 -c "print(max(1, round($c * $fraction * $rps / max($got, 1))))")
  run "pixguard_at_${fraction}" "http://127.0.0.1:$PIX_PORT/v1/score" "$c" 1
done
echo_rps=$(sed -E 's/.* rps=([0-9]+).*/\1/' <<< "$echo_line")
python3 -c "print(f'ratio pixguard/echo at saturation: {$rps / $echo_rps:.3f}')"
curl -s "http://127.0.0.1:$PIX_PORT/metrics" | grep -E '^pixguard_batch_size_rows_(sum|count)'
