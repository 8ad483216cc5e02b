#!/usr/bin/env bash
# Builds the `cuda` pixguard binary on a machine without a GPU or a CUDA install, from registries
# only: nvcc and the CUDA libraries come from NVIDIA's PyPI wheels (CUDA 13.0: newer PTX may not
# load on a 580 driver), the driver library from a stub generated here.
#
#   kernels/build-cuda.sh            → target/cuda/pixguard-cuda (stripped), its size printed
#   kernels/build-cuda.sh --tests    → also target/cuda/pixguard-gpu-tests, tests/gpu.rs as a
#                                      binary to carry to a GPU machine (kernels/gpu-check.sh runs it)
#   kernels/build-cuda.sh --clippy   → the same build linted by clippy, warnings denied (also builds
#                                      tests/gpu.rs, the one test target with cuda-only code)
# Each binary also gets an .xz copy, small enough to carry.
#
# Environment: PIXGUARD_CUDA_TOOLS (default target/cuda-tools) holds the unpacked toolkit (the
# wheels are deleted once unpacked); CUDA_COMPUTE_CAP (default 90, H100/H200) is the architecture
# candle's kernels target.
# A cold build takes ~45 min on 2 cores (candle-kernels' .cu files); later builds reuse them.
# To run the binary here (no driver), put "$PIXGUARD_CUDA_TOOLS/lib-path" on LD_LIBRARY_PATH: the
# stub driver answers "no device" and pixguard falls back to the CPU.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${PIXGUARD_CUDA_TOOLS:-$ROOT/target/cuda-tools}
# The budget catches accidental bloat (debug info, a stray dependency). It was 60 MB when the
# binary (54.6 MB) had no network client; the model lifecycle's HTTPS clients (GCS through
# object_store, MLflow through reqwest: rustls with aws-lc's C crypto, h2 client) took it to
# 62.1 MB (docs/gpu.md has the breakdown). More than half of the binary is candle-kernels' MoE
# fatbin (libmoe, .nv_fatbin 33.4 MB) that pixguard never launches: the lever, if size matters.
# `pixguard batch` (arrow + parquet, Arrow casts and display for --keep) doubled .text: 80.3 MB, so
# the budget is 85 MB; arrow-cast's kernels (instantiated for every type pair) are the other lever.
MAX_BYTES=$((85 * 1000 * 1000))
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
)
say() { printf '[build-cuda] %s\n' "$*" >&2; }

CUDA_ROOT="$TOOLS/root/nvidia/cu13"
if [[ ! -x "$CUDA_ROOT/bin/nvcc" ]]; then
  say "downloading the CUDA 13.0 wheels (~680 MB) into $TOOLS/wheels"
  mkdir -p "$TOOLS/wheels"
  python3 -m pip download --quiet --no-cache-dir --no-deps --dest "$TOOLS/wheels" "${WHEELS[@]}"
  rm -rf "$TOOLS/root"
  for wheel in "$TOOLS"/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" "$TOOLS/root"
  done
  chmod +x "$CUDA_ROOT"/bin/* "$CUDA_ROOT"/nvvm/bin/*
  # The unpacked root (1.2 GB) is what later builds reuse; the wheels would only hold 0.65 GB more
  # of a disk that a cold CI run fills (the CI run of 2026-12-05 ran out of space here).
  rm -rf "$TOOLS/wheels"
fi

# The linker wants the unversioned names; the wheels ship only the sonames.
for lib in cudart cublas cublasLt curand nvrtc; do
  soname=$(cd "$CUDA_ROOT/lib" && ls "lib$lib.so."* | grep -E "^lib$lib\.so\.[0-9]+$" | head -n1)
  ln -sf "$soname" "$CUDA_ROOT/lib/lib$lib.so"
done

# libcuda comes with the driver, which no wheel ships. Link against a stub that exports every
# driver entry point cudarc declares and answers CUDA_ERROR_STUB_LIBRARY (34), as NVIDIA's own stub
# does; at run time the real driver's libcuda.so.1 takes its place.
STUB="$TOOLS/stub"
if [[ ! -f "$STUB/libcuda.so.1" ]]; then
  say "generating the libcuda stub"
  cudarc_dir=$(cd "$ROOT" && cargo metadata --format-version 1 --features cuda \
    | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
  mkdir -p "$STUB"
  grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+\(' "$cudarc_dir/src/driver/sys/mod.rs" \
    | sed -E 's/pub unsafe fn ([A-Za-z0-9_]+)\(/\1/' | sort -u \
    | awk '{ printf "int %s(void) { return 34; }\n", $1 }' > "$STUB/libcuda_stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$STUB/libcuda.so.1" "$STUB/libcuda_stub.c"
  ln -sf libcuda.so.1 "$STUB/libcuda.so"
fi
# What LD_LIBRARY_PATH needs to start the binary on this GPU-less machine.
printf '%s:%s\n' "$CUDA_ROOT/lib" "$STUB" > "$TOOLS/lib-path"

export CUDA_ROOT CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="-L native=$CUDA_ROOT/lib -L native=$STUB"
# A target folder of its own: different RUSTFLAGS would otherwise rebuild the CPU build's crates.
export CARGO_TARGET_DIR="$ROOT/target/cuda"
say "nvcc $(nvcc --version | grep -oE 'release [0-9.]+'), compute capability $CUDA_COMPUTE_CAP"
targets=(--bin pixguard)
if [[ " $* " == *" --clippy "* ]]; then
  # Clippy lints the cuda build while it compiles (the workspace wrapper also used by .ci/run), so
  # the dependency tree is not compiled a second time for a `cargo clippy`. The targets with
  # cuda-only code are the library, the binary and tests/gpu.rs; every other target compiles the
  # same code as the CPU build, which CI lints.
  export RUSTC_WORKSPACE_WRAPPER="$ROOT/.ci/clippy-deny"
  targets+=(--test gpu)
elif [[ " $* " == *" --tests "* ]]; then
  targets+=(--test gpu)
fi
# The binary and tests/gpu.rs in one cargo call: built apart, the dev-dependencies change the
# features of shared crates and the tree compiles twice.
mkdir -p "$CARGO_TARGET_DIR"
(cd "$ROOT" && cargo build --release --locked --features cuda "${targets[@]}" \
  --message-format json-render-diagnostics > "$CARGO_TARGET_DIR/artifacts.json")

out="$CARGO_TARGET_DIR/pixguard-cuda"
cp "$CARGO_TARGET_DIR/release/pixguard" "$out"
strip "$out"
# A compressed copy to carry to a GPU machine (~7.5 MB; with the tests' ~13 MB): gpu-check.sh
# unpacks it.
xz -T0 -6 -k -f "$out"
bytes=$(stat -c %s "$out")
awk -v b="$bytes" -v m="$MAX_BYTES" -v p="$out" 'BEGIN { printf "%s: %d bytes (%.1f MB), limit %.0f MB\n", p, b, b / 1e6, m / 1e6 }'
if ((bytes >= MAX_BYTES)); then
  say "the binary is over the limit"
  exit 1
fi

if [[ " $* " == *" --tests "* ]]; then
  tests=$(python3 -c 'import json,sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])' "$CARGO_TARGET_DIR/artifacts.json")
  cp "$tests" "$CARGO_TARGET_DIR/pixguard-gpu-tests"
  strip "$CARGO_TARGET_DIR/pixguard-gpu-tests"
  xz -T0 -6 -k -f "$CARGO_TARGET_DIR/pixguard-gpu-tests"
  ls -l "$CARGO_TARGET_DIR/pixguard-gpu-tests"*
fi
