# Sourced by the peer benchmarks: makes the venv with perf_analyzer and pytriton (benches/peers/
# requirements.txt) at $PEERS_VENV unless it is there, exports what its binaries need, and
# stops the servers a script started (pids, stop_all) when it exits.
PEERS_VENV=${PEERS_VENV:-$PWD/.peers-venv}
if [ ! -x "$PEERS_VENV/bin/perf_analyzer" ]; then
  python3 -m venv "$PEERS_VENV"
  "$PEERS_VENV/bin/pip" install --quiet --disable-pip-version-check -r benches/peers/requirements.txt
fi
if ! ldconfig -p | grep -q libb64.so.0d; then
  echo "perf_analyzer needs libb64 (Debian: apt-get install libb64-0d)" >&2
  exit 1
fi
PEERS_SITE=$("$PEERS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# perf_analyzer links libcudart.so.12 even for CPU-only servers; pytriton's stub needs libpython.
PA_LD="$PEERS_SITE/nvidia/cuda_runtime/lib"
PYTRITON_LD=$("$PEERS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
perf_analyzer() { LD_LIBRARY_PATH="$PA_LD" "$PEERS_VENV/bin/perf_analyzer" "$@"; }
wait_http() { # url seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1 after $2 s" >&2; return 1
}
# Servers a script starts go into pids; stop_all stops them (and runs on exit).
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT
