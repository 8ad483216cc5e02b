#!/usr/bin/env bash
# The peer comparison: the same synth traffic and the same model (models/pix-fraud) served by
#   1. pixguard (release binary, config.yaml: 1 worker, CPU) — /v1/score, OIP HTTP, OIP gRPC;
#   2. FastAPI + uvicorn + onnxruntime with the pre-processing in Python (fastapi_app.py), under
#      gunicorn with 2 uvicorn workers — what a Python team would deploy;
#   3. `mlflow models serve` with the model as a pyfunc (mlflow_pyfunc.py);
#   4. Triton through pytriton (pytriton_server.py, model pix-fraud-tx: the transaction's fields,
#      Python pre-processing, onnxruntime; 2 instances) over OIP HTTP and gRPC;
#   5. MLServer (KServe's server for MLflow models) with its MLflow runtime on the same pyfunc as
#      3., adaptive batching set like pixguard's batcher, 2 parallel workers (one per core), over
#      OIP HTTP and gRPC — its own venv (requirements-mlserver.txt), its scores checked against
#      pixguard's on 200 rows first;
# each loaded by `pixguard bench` in open loop at the same rates (Poisson arrivals, a step stops
# the run once p99 passes 1 s), then perf_analyzer on the OIP servers. Everything runs on
# loopback on this machine and is started and stopped here.
#
#   benches/peers/run.sh               # reports in target/peers/<date>/, summary in compare.md
#   RATES=500,1000,5000 DURATION=5 benches/peers/run.sh   # 18 steps by default, ~25 min
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=${RATES:-10,20,50,100,200,300,500,750,1000,2000,5000,10000,15000,20000,30000,40000,45000,50000}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
PA_RANGE=${PA_RANGE:-1:16:3}
OUT=${OUT:-target/peers/$(date -u +%Y%m%dT%H%M%SZ)}
PIX=18600; PIX_GRPC=18601; FASTAPI=18610; MLFLOW=18620; TRI=18630; TRI_GRPC=18631; TRI_METRICS=18632
MLS=18640; MLS_GRPC=18641; MLS_METRICS=18642
source benches/peers/env.sh
mkdir -p "$OUT"

cargo build --release --quiet
PIXGUARD=target/release/pixguard
"$PEERS_VENV/bin/python" benches/peers/pyfeatures.py --check --pixguard "$PIXGUARD" | tee "$OUT/pyfeatures-parity.txt"

bench() { # label api url [model [more bench options]]
  echo "== $1"
  "$PIXGUARD" bench --label "$1" --api "$2" --url "$3" --model "${4:-pix-fraud}" --mode open --rate "$RATES" \
    --duration "$DURATION" --warmup "$WARMUP" --transactions 10000 --seed 7 --out "$OUT/$1" --no-progress \
    "${@:5}" | tee "$OUT/$1.txt"
}
pa() { # name protocol address model [input-data folder]
  perf_analyzer -m "$4" -i "$2" -u "$3" --input-data "${5:-$OUT/data}/fields.json" --concurrency-range "$PA_RANGE" \
    --measurement-interval 2000 --stability-percentage 1000 -f "$OUT/$1.csv" > "$OUT/$1.log" 2>&1 \
    || { tail -5 "$OUT/$1.log"; return 1; }
}
"$PEERS_VENV/bin/python" benches/perf_analyzer_data.py --pixguard "$PIXGUARD" --out "$OUT/data" > /dev/null

# 1. pixguard
"$PIXGUARD" serve --address 127.0.0.1 --port $PIX --grpc-port $PIX_GRPC --log warn 2> "$OUT/pixguard.log" &
pids+=($!)
wait_http "http://127.0.0.1:$PIX/readyz" 60
bench pixguard-v1 v1 "http://127.0.0.1:$PIX"
bench pixguard-oip-http oip-http "http://127.0.0.1:$PIX"
bench pixguard-oip-grpc oip-grpc "http://127.0.0.1:$PIX_GRPC"
pa pa-pixguard-grpc grpc "127.0.0.1:$PIX_GRPC" pix-fraud
stop_all

# 2. FastAPI
(cd benches/peers && PIXGUARD_MODEL="$OLDPWD/models/pix-fraud" exec "$PEERS_VENV/bin/gunicorn" \
  -k uvicorn.workers.UvicornWorker -w 2 -b "127.0.0.1:$FASTAPI" fastapi_app:app) > "$OUT/fastapi.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$FASTAPI/healthz" 60
bench fastapi-v1 v1 "http://127.0.0.1:$FASTAPI"
stop_all

# 3. mlflow models serve. One worker: with -w 2, uvicorn's multi-process mode left Nagle's
# algorithm on and every keep-alive answer waited ~40 ms for a delayed ACK (seen here).
"$PEERS_VENV/bin/python" benches/peers/mlflow_pyfunc.py --model models/pix-fraud --out "$OUT/pyfunc" > /dev/null 2>&1
PATH="$PEERS_VENV/bin:$PATH" mlflow models serve -m "$OUT/pyfunc" --env-manager local -h 127.0.0.1 -p $MLFLOW -w 1 \
  > "$OUT/mlflow.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$MLFLOW/ping" 120
bench mlflow-serve mlflow "http://127.0.0.1:$MLFLOW"
stop_all

# 4. Triton (pytriton)
LD_LIBRARY_PATH="$PYTRITON_LD" "$PEERS_VENV/bin/python" benches/peers/pytriton_server.py --instances 2 \
  --http-port $TRI --grpc-port $TRI_GRPC --metrics-port $TRI_METRICS > "$OUT/pytriton.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$TRI/v2/models/pix-fraud-tx/ready" 120
bench triton-oip-http oip-http "http://127.0.0.1:$TRI" pix-fraud-tx
bench triton-oip-grpc oip-grpc "http://127.0.0.1:$TRI_GRPC" pix-fraud-tx
pa pa-triton-grpc grpc "127.0.0.1:$TRI_GRPC" pix-fraud-tx
stop_all

# 5. MLServer: the deployment its docs give for an MLflow model (settings.json + the model's
# model-settings.json with the MLflow runtime), on the pyfunc of 3. built with its own mlflow.
# The MLflow signature declares the DICT counts `double`: the bench sends each field as the model
# metadata declares (--oip-types metadata) and perf_analyzer gets data typed the same way; no
# request-level content_type is needed (the runtime takes the content types from the signature).
MLSERVER_VENV=${MLSERVER_VENV:-$PWD/.mlserver-venv}
if [ ! -x "$MLSERVER_VENV/bin/mlserver" ]; then
  python3 -m venv "$MLSERVER_VENV"
  "$MLSERVER_VENV/bin/pip" install --quiet --disable-pip-version-check -r benches/peers/requirements-mlserver.txt
fi
"$MLSERVER_VENV/bin/python" benches/peers/mlflow_pyfunc.py --model models/pix-fraud --out "$OUT/pyfunc-mlserver" > /dev/null 2>&1
mkdir -p "$OUT/mlserver/pix-fraud"
cat > "$OUT/mlserver/settings.json" <<JSON
{"host": "127.0.0.1", "http_port": $MLS, "grpc_port": $MLS_GRPC, "metrics_port": $MLS_METRICS, "parallel_workers": 2}
JSON
# max_batch_size / max_batch_time: pixguard's engine.max_batch_size 512 and max_queue_delay_us 500.
cat > "$OUT/mlserver/pix-fraud/model-settings.json" <<JSON
{"name": "pix-fraud", "implementation": "mlserver_mlflow.MLflowRuntime", "max_batch_size": 512,
 "max_batch_time": 0.0005, "parameters": {"uri": "$(cd "$OUT" && pwd)/pyfunc-mlserver"}}
JSON
(cd "$OUT/mlserver" && PATH="$MLSERVER_VENV/bin:$PATH" exec mlserver start .) > "$OUT/mlserver.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$MLS/v2/models/pix-fraud/ready" 180
"$MLSERVER_VENV/bin/python" benches/peers/mlserver_parity.py --pixguard "$PIXGUARD" --url "http://127.0.0.1:$MLS" \
  | tee "$OUT/mlserver-parity.txt"
bench mlserver-oip-http oip-http "http://127.0.0.1:$MLS" pix-fraud --oip-types metadata
bench mlserver-oip-grpc oip-grpc "http://127.0.0.1:$MLS_GRPC" pix-fraud --oip-types metadata
# perf_analyzer cannot load MLServer: it asks for Triton's ModelConfig RPC first, which MLServer
# does not implement ("failed to get model config: Method not found!"). The same closed loop at
# the same concurrencies from pixguard bench instead (docs/benchmarks.md compares the two tools).
"$PIXGUARD" bench --label mlserver-grpc-closed --api oip-grpc --oip-types metadata --url "http://127.0.0.1:$MLS_GRPC" \
  --mode closed --concurrency "$PA_RANGE" --duration "$DURATION" --warmup "$WARMUP" --transactions 1000 --seed 11 \
  --out "$OUT/mlserver-grpc-closed" --no-progress | tee "$OUT/mlserver-grpc-closed.txt"
stop_all

r() { echo "$OUT/$1/report.json"; }
all=("$(r pixguard-v1)" "$(r fastapi-v1)" "$(r mlflow-serve)" "$(r triton-oip-http)" "$(r triton-oip-grpc)"
  "$(r mlserver-oip-http)" "$(r mlserver-oip-grpc)" "$(r pixguard-oip-http)" "$(r pixguard-oip-grpc)")
"$PIXGUARD" bench-compare "${all[@]}" --out "$OUT" > /dev/null
# The looser bound, where the Python servers qualify.
"$PIXGUARD" bench-compare "${all[@]}" --p99-ms 50 --out "$OUT/p99-50" > /dev/null
"$PIXGUARD" bench-compare "$(r pixguard-oip-http)" "$(r triton-oip-http)" "$(r mlserver-oip-http)" \
  --out "$OUT/oip-http" > /dev/null
"$PIXGUARD" bench-compare "$(r pixguard-oip-grpc)" "$(r triton-oip-grpc)" "$(r mlserver-oip-grpc)" \
  --out "$OUT/oip-grpc" > /dev/null
{
  echo "# Peer comparison, $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo; cat "$OUT/compare.md"
  echo; echo "Same API, OIP over HTTP:"; echo; cat "$OUT/oip-http/compare.md"
  echo; echo "Same API, OIP over gRPC:"; echo; cat "$OUT/oip-grpc/compare.md"
  echo; echo "Every target at p99 ≤ 50 ms:"; echo; cat "$OUT/p99-50/compare.md"
  echo; cat "$OUT/pyfeatures-parity.txt" "$OUT/mlserver-parity.txt"
  echo; echo "perf_analyzer (gRPC, transaction fields, concurrency $PA_RANGE): concurrency, inferences/s, p50 µs, p99 µs"
  for f in pa-pixguard-grpc pa-triton-grpc; do
    echo; echo "$f:"; cut -d, -f1,2,10,13 "$OUT/$f.csv" | tail -n +2 | sort -t, -n -k1 | sed "s/^/    /"
  done
  echo; echo "MLServer, closed loop from pixguard bench (perf_analyzer cannot load it):"; echo
  sed "s/^/    /" "$OUT/mlserver-grpc-closed.txt"
} | tee "$OUT/summary.md"
