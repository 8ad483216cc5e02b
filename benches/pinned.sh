# Sourced by the benchmarks that compare pixguard servers pinned to CPU 0 while `pixguard bench`
# runs on CPU 1 (reasons.sh, lifecycle/shadow.sh, monitoring/overhead.sh): needs OUT; empties it,
# builds the release binary ($bin), and gives `start LABEL PORT [serve args]`, which starts a
# server (model source not polled), waits for its readiness and stops it when the script exits.
rm -rf "$OUT"
mkdir -p "$OUT"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

cargo build --release --quiet --locked
bin=./target/release/pixguard
start() { # label port [serve args]
  local label=$1 port=$2
  shift 2
  # No polling of the model source: a check mid-round is work the other server does not do.
  taskset -c 0 "$bin" serve --address 127.0.0.1 --port "$port" --grpc-port 0 --log warn \
    --set model.poll_interval_s=0 "$@" 2> "$OUT/$label-server.log" &
  pids+=($!)
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && return
    sleep 0.1
  done
  echo "$label did not get ready (log: $OUT/$label-server.log)" >&2
  exit 1
}
