#!/usr/bin/env bash
# Checks `pixguard bench --mode closed` against perf_analyzer at the same concurrency, over gRPC
# and HTTP, with the same 1,000 synth transactions (the transaction's fields as OIP inputs), on
# two servers where the server — not the client — is the bottleneck:
#   - pixguard serving one request at a time with a fixed 1 ms service time
#     (engine.max_batch_size=1, engine.test_worker_delay_us=1000): a steady reference where
#     throughput is ~1,000/s at every concurrency and p50 grows by 1 ms per connection (with
#     batching, closed loops can phase-lock into or out of shared batches and p50 becomes bimodal);
#   - Triton through pytriton (model pix-fraud-tx: Python pre-processing, onnxruntime).
# The server is pinned to CPU 0 and the load generators to CPU 1. Concurrency levels are
# interleaved (perf_analyzer at c, then pixguard bench at c) so drift in the server hits both.
#
#   benches/bench_vs_perf_analyzer.sh        # table in target/bench-vs-pa/<date>/agreement.md
#   SERVERS="pixguard-1ms" LEVELS="1 4" benches/bench_vs_perf_analyzer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=${LEVELS:-1 2 4 8}
SERVERS=${SERVERS:-pixguard-1ms triton}
SECONDS_PER_STEP=${SECONDS_PER_STEP:-5}
PIX=18330; PIX_GRPC=18331; TRI=18320; TRI_GRPC=18321; TRI_METRICS=18322
OUT=${OUT:-target/bench-vs-pa/$(date -u +%Y%m%dT%H%M%SZ)}
source benches/peers/env.sh
mkdir -p "$OUT"

cargo build --release --quiet
"$PEERS_VENV/bin/python" benches/perf_analyzer_data.py --pixguard target/release/pixguard --out "$OUT/data" --seed 7 > /dev/null

compare() { # server model http-port grpc-port
  for protocol in grpc http; do
    local port=$3 format=(--input-tensor-format json)
    if [ "$protocol" = grpc ]; then port=$4; format=(); fi
    for c in $LEVELS; do
      local name="$1-$protocol-c$c"
      LD_LIBRARY_PATH="$PA_LD" taskset -c 1 "$PEERS_VENV/bin/perf_analyzer" -m "$2" -i "$protocol" \
        -u "127.0.0.1:$port" --input-data "$OUT/data/fields.json" "${format[@]}" --concurrency-range "$c:$c" \
        --measurement-interval $((SECONDS_PER_STEP * 1000)) --stability-percentage 1000 \
        -f "$OUT/pa-$name.csv" > "$OUT/pa-$name.log" 2>&1
      taskset -c 1 target/release/pixguard bench --api "oip-$protocol" --model "$2" --url "http://127.0.0.1:$port" \
        --mode closed --concurrency "$c" --duration "$SECONDS_PER_STEP" --warmup 1 --transactions 1000 --seed 7 \
        --out "$OUT/bench-$name" --no-progress > "$OUT/bench-$name.log"
    done
  done
}

if [[ " $SERVERS " == *" pixguard-1ms "* ]]; then
  taskset -c 0 target/release/pixguard serve --address 127.0.0.1 --port $PIX --grpc-port $PIX_GRPC --log warn \
    --set engine.max_batch_size=1 --set engine.test_worker_delay_us=1000 2> "$OUT/pixguard.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$PIX/readyz" 60
  compare pixguard-1ms pix-fraud $PIX $PIX_GRPC
  stop_all
fi
if [[ " $SERVERS " == *" triton "* ]]; then
  LD_LIBRARY_PATH="$PYTRITON_LD" taskset -c 0 "$PEERS_VENV/bin/python" benches/peers/pytriton_server.py \
    --http-port $TRI --grpc-port $TRI_GRPC --metrics-port $TRI_METRICS > "$OUT/pytriton.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$TRI/v2/models/pix-fraud-tx/ready" 120
  compare triton pix-fraud-tx $TRI $TRI_GRPC
  stop_all
fi

python3 - "$OUT" "$LEVELS" "$SERVERS" <<'PY' | tee "$OUT/agreement.md"
import csv, json, pathlib, sys
out, levels = pathlib.Path(sys.argv[1]), [int(c) for c in sys.argv[2].split()]
print("| server | protocol | concurrency | perf_analyzer /s | pixguard bench /s | Δ | perf_analyzer p50 ms | pixguard bench p50 ms | Δ |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
worst = 0.0
for server in sys.argv[3].split():
    for protocol in ("grpc", "http"):
        for c in levels:
            name = f"{server}-{protocol}-c{c}"
            pa = next(csv.DictReader((out / f"pa-{name}.csv").open()))
            step = json.loads((out / f"bench-{name}" / "report.json").read_text())["steps"][0]
            a_rps, b_rps = float(pa["Inferences/Second"]), step["achieved_rps"]
            a_p50, b_p50 = int(pa["p50 latency"]) / 1000, step["latency_us"]["p50"] / 1000
            d_rps, d_p50 = b_rps / a_rps - 1, b_p50 / a_p50 - 1
            worst = max(worst, abs(d_rps), abs(d_p50))
            print(f"| {server} | {protocol} | {c} | {a_rps:,.0f} | {b_rps:,.0f} | {d_rps:+.1%} | {a_p50:.2f} | {b_p50:.2f} | {d_p50:+.1%} |")
print(f"\nLargest difference: {worst:.1%}")
PY
