#!/usr/bin/env bash
# The GPU part of the CUDA backend's checks, in two steps:
#
#   bash tools/cuda_gpu_check.sh build BUNDLE   # on any x86-64 Linux machine with Rust (no GPU):
#                                               # builds the test and CLI binaries into BUNDLE
#   bash tools/cuda_gpu_check.sh run BUNDLE OUT [--no-sanitizer]
#                                               # on the GPU machine (no Rust needed): conformance
#                                               # suite, compute-sanitizer memcheck + racecheck,
#                                               # golden files, perf mode, PyTorch floors -> OUT
#
# `build` needs a libcuda to link against: CUDA_LIBRARY_PATH pointing at a folder whose lib64/
# holds libcuda.so (a driver install, or Debian's libcuda1 package unpacked; .ci/run shows how).
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?build or run}
bundle=${2:?bundle folder}

case "$step" in
build)
    mkdir -p "$bundle"
    : "${CUDA_LIBRARY_PATH:?set CUDA_LIBRARY_PATH to a folder with lib64/libcuda.so}"
    cargo build --release -p engram-conformance --features cuda
    cargo test --release -p engram-cuda --features cuda --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance":
        print(m["executable"])' | while read -r exe; do cp "$exe" "$bundle/cuda_conformance"; done
    cp target/release/engram-conformance "$bundle/"
    cp -r conformance/golden "$bundle/golden"
    cp tools/torch_floor.py "$bundle/"
    strip --strip-debug "$bundle/cuda_conformance" "$bundle/engram-conformance"
    ls -la "$bundle"
    ;;
run)
    out=${3:?output folder}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    "$bundle/cuda_conformance" --test-threads 8 2>&1 | tee "$out/suite.log" | tail -3
    if [ "${4:-}" != "--no-sanitizer" ] && command -v compute-sanitizer >/dev/null; then
        compute-sanitizer --tool memcheck "$bundle/cuda_conformance" --test-threads 1 > "$out/memcheck.log" 2>&1 || true
        compute-sanitizer --tool racecheck "$bundle/cuda_conformance" --test-threads 1 > "$out/racecheck.log" 2>&1 || true
        grep -h "SUMMARY" "$out/memcheck.log" "$out/racecheck.log"
    fi
    "$bundle/engram-conformance" golden --backend cuda "$bundle"/golden/engram_public.safetensors \
        "$bundle"/golden/moe_public.safetensors "$bundle"/golden/variants/*.safetensors > "$out/golden.log" 2>&1 || true
    grep -E "^(PASS|FAIL|error)" "$out/golden.log"
    "$bundle/engram-conformance" run --backend cuda --mode perf | tee "$out/perf.log" || true
    python3 "$bundle/torch_floor.py" | tee "$out/floors.jsonl"
    ;;
*)
    echo "usage: $0 build BUNDLE | run BUNDLE OUT" >&2
    exit 2
    ;;
esac
