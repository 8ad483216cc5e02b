#!/usr/bin/env bash
# perf_analyzer (Triton's load generator, from the tritonclient 2.50.0 wheel) against pixguard over
# OIP HTTP and gRPC, and against Triton (pytriton + onnxruntime, benches/peers/pytriton_server.py)
# serving the same model, on loopback, --concurrency-range 1:16, one request = one transaction.
#
#   benches/perf_analyzer.sh                    # results in target/perf_analyzer/<date>/
#   INTERVAL_MS=2000 RANGE=1:16:1 benches/perf_analyzer.sh
#
# pixguard is measured in both input modes (transaction fields; precomputed features), Triton in
# the features mode only (its model takes tensors; the pre-processing would be Python code in
# front of it). Both run one model instance with the same dynamic-batching settings.
set -euo pipefail
cd "$(dirname "$0")/.."
RANGE=${RANGE:-1:16}
INTERVAL_MS=${INTERVAL_MS:-1000}
PIX_HTTP=${PIX_HTTP:-18300}; PIX_GRPC=${PIX_GRPC:-18301}
TRI_HTTP=${TRI_HTTP:-18310}; TRI_GRPC=${TRI_GRPC:-18311}; TRI_METRICS=${TRI_METRICS:-18312}
OUT=${OUT:-target/perf_analyzer/$(date -u +%Y%m%dT%H%M%SZ)}
source benches/peers/env.sh
mkdir -p "$OUT"

cargo build --release --quiet
"$PEERS_VENV/bin/python" benches/perf_analyzer_data.py --pixguard target/release/pixguard --out "$OUT/data"

sweep() { # name protocol address input-file
  local name=$1 protocol=$2 address=$3 data=$4
  echo "== $name ($protocol $address, $(basename "$data"))"
  perf_analyzer -m pix-fraud -i "$protocol" -u "$address" --input-data "$data" \
    --concurrency-range "$RANGE" --measurement-interval "$INTERVAL_MS" --stability-percentage 1000 \
    -f "$OUT/$name.csv" > "$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log"; return 1; }
  grep '^Concurrency' "$OUT/$name.log"
}

./target/release/pixguard serve --address 127.0.0.1 --port "$PIX_HTTP" --grpc-port "$PIX_GRPC" --log warn \
  2> "$OUT/pixguard.log" &
pids+=($!)
wait_http "http://127.0.0.1:$PIX_HTTP/v2/health/ready" 60
sweep pixguard_http_fields http "127.0.0.1:$PIX_HTTP" "$OUT/data/fields.json"
sweep pixguard_http_features http "127.0.0.1:$PIX_HTTP" "$OUT/data/features.json"
sweep pixguard_grpc_fields grpc "127.0.0.1:$PIX_GRPC" "$OUT/data/fields.json"
sweep pixguard_grpc_features grpc "127.0.0.1:$PIX_GRPC" "$OUT/data/features.json"
stop_all

LD_LIBRARY_PATH="$PYTRITON_LD" "$PEERS_VENV/bin/python" benches/peers/pytriton_server.py \
  --http-port "$TRI_HTTP" --grpc-port "$TRI_GRPC" --metrics-port "$TRI_METRICS" > "$OUT/pytriton.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$TRI_HTTP/v2/models/pix-fraud/ready" 120
sweep triton_http_features http "127.0.0.1:$TRI_HTTP" "$OUT/data/features.json"
sweep triton_grpc_features grpc "127.0.0.1:$TRI_GRPC" "$OUT/data/features.json"

python3 benches/perf_analyzer_summary.py "$OUT" | tee "$OUT/summary.md"
