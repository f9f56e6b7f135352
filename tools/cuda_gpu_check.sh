#!/usr/bin/env bash
# The GPU part of the CUDA backend's checks, in two steps:
#
#   bash tools/cuda_gpu_check.sh build BUNDLE   # on any x86-64 Linux machine with Rust (no GPU):
#                                               # runs the suite on the CPU stand-in driver, then
#                                               # builds the test and CLI binaries into BUNDLE
#   bash tools/cuda_gpu_check.sh run BUNDLE OUT [--quick]
#                                               # on the GPU machine (no Rust needed): conformance
#                                               # suite, golden files, benchmarks, PyTorch floors,
#                                               # per-kernel times (ncu) -> OUT (--quick: suite,
#                                               # golden files, prefill per projection kernel and
#                                               # the cuBLAS floor only); about 4 minutes on an H100
#   bash tools/cuda_gpu_check.sh sanitize BUNDLE OUT [memcheck | racecheck]
#                                               # compute-sanitizer memcheck and racecheck (or the
#                                               # one named) on the fast path's families, once per
#                                               # projection kernel: a step of its own, since
#                                               # racecheck alone takes minutes per kernel
#                                               # (CHECK_PROJECTIONS="wgmma mma" narrows either
#                                               # step to those kernels, to fit a 10-minute call)
#
# Every projection kernel the device has is checked (ENGRAM_CUDA_PROJ, see engram-cuda's docs):
# mma and mma-wide everywhere, wgmma, wgmma-tma, wgmma-wide, wgmma-wide-tma, wgmma-ws and
# wgmma-ws-tma on sm_90; on sm_90 the three tensor-copy kernels also with a prefill's rows
# gathered first (ENGRAM_CUDA_ROWS=first: every tile by tensor copies).
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
    # First the suite on the CPU stand-in driver with the default kernels, so that GPU time is
    # not spent on a bundle that fails without one.
    if command -v g++ >/dev/null; then
        bash engram-cuda/cpu-driver/build.sh target/cpu-driver
        LD_LIBRARY_PATH="$PWD/target/cpu-driver" cargo test -q -p engram-cuda --features cuda
    else
        echo "no g++: the stand-in preflight is skipped"
    fi
    cargo build --release -p engram-conformance --features cuda
    cargo build --release -p engram-benches --features cuda
    cargo test --release -p engram-cuda --features cuda --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])' | while read -r name exe; do cp "$exe" "$bundle/cuda_$name"; done
    cp target/release/engram-conformance target/release/engram-bench "$bundle/"
    cp -r conformance/golden "$bundle/golden"
    cp tools/torch_floor.py "$bundle/"
    strip --strip-debug "$bundle"/cuda_* "$bundle/engram-conformance" "$bundle/engram-bench"
    ls -la "$bundle"
    ;;
run | sanitize)
    out=${3:?output folder}
    mode=${4:-}
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$out/gpu.txt"
    projections="mma mma-wide"
    rows_first=""
    if grep -q ", 9.0$" "$out/gpu.txt"; then
        projections="wgmma wgmma-tma wgmma-wide wgmma-wide-tma wgmma-ws wgmma-ws-tma $projections"
        rows_first="wgmma-tma wgmma-wide-tma wgmma-ws-tma"
    fi
    # CHECK_PROJECTIONS="wgmma mma" narrows the kernels (sanitize runs every family with the first).
    projections=${CHECK_PROJECTIONS:-$projections}
    if [ "$step" = sanitize ]; then
        command -v compute-sanitizer >/dev/null || { echo "no compute-sanitizer on this machine" >&2; exit 1; }
        tools="memcheck racecheck"
        [ -n "$mode" ] && tools=$mode
        echo "== compute-sanitizer ($tools) on the fast path's families"
        for tool in $tools; do
            ENGRAM_CUDA_PROJ=${projections%% *} timeout "${SANITIZER_TIMEOUT:-240}" compute-sanitizer --tool "$tool" \
                "$bundle/cuda_conformance" --test-threads 1 engram_prefill engram_decode hash gather > "$out/$tool.log" 2>&1 \
                || echo "$tool: exit $?"
            # The other projection kernels on the families that reach them.
            for p in ${projections#"${projections%% *}"}; do
                ENGRAM_CUDA_PROJ=$p timeout "${SANITIZER_TIMEOUT:-240}" compute-sanitizer --tool "$tool" \
                    "$bundle/cuda_conformance" --test-threads 1 engram_prefill engram_decode >> "$out/$tool.log" 2>&1 \
                    || echo "$tool ($p): exit $?"
            done
            for p in $rows_first; do
                ENGRAM_CUDA_ROWS=first ENGRAM_CUDA_PROJ=$p timeout "${SANITIZER_TIMEOUT:-240}" compute-sanitizer \
                    --tool "$tool" "$bundle/cuda_conformance" --test-threads 1 engram_prefill >> "$out/$tool.log" 2>&1 \
                    || echo "$tool ($p, rows first): exit $?"
            done
            ENGRAM_CUDA_PROJ=${projections%% *} compute-sanitizer --tool "$tool" "$bundle/cuda_graph" >> "$out/$tool.log" 2>&1 \
                || echo "$tool graph: exit $?"
            grep -h "SUMMARY\|^test result" "$out/$tool.log" || tail -3 "$out/$tool.log"
        done
        exit 0
    fi
    echo "== conformance suite, once per projection kernel ($projections)"
    : > "$out/suite.log"
    for p in $projections; do
        echo "-- ENGRAM_CUDA_PROJ=$p" >> "$out/suite.log"
        ENGRAM_CUDA_PROJ=$p "$bundle/cuda_conformance" --test-threads 8 >> "$out/suite.log" 2>&1 || true
    done
    for p in $rows_first; do
        echo "-- ENGRAM_CUDA_PROJ=$p ENGRAM_CUDA_ROWS=first" >> "$out/suite.log"
        ENGRAM_CUDA_ROWS=first ENGRAM_CUDA_PROJ=$p "$bundle/cuda_conformance" --test-threads 8 engram_prefill \
            >> "$out/suite.log" 2>&1 || true
        ENGRAM_CUDA_ROWS=first ENGRAM_CUDA_PROJ=$p "$bundle/cuda_graph" >> "$out/suite.log" 2>&1 || true
    done
    "$bundle/cuda_exact" >> "$out/suite.log" 2>&1 || true
    "$bundle/cuda_graph" >> "$out/suite.log" 2>&1 || true
    grep -E "^-- |^test result|FAIL|panicked" "$out/suite.log" | head -30
    echo "== golden files"
    "$bundle/engram-conformance" golden --backend cuda "$bundle"/golden/engram_public.safetensors \
        "$bundle"/golden/moe_public.safetensors "$bundle"/golden/variants/*.safetensors > "$out/golden.log" 2>&1 || true
    grep -E "^(PASS|FAIL|error)" "$out/golden.log"
    if [ "$mode" != "--quick" ]; then
        # What a user's first CudaBackend::new costs on a machine whose driver has not compiled
        # this PTX yet (its cache disabled), and once it has.
        echo "== backend creation: the PTX compiled by the driver, then from its cache (seconds)"
        for cache in 1 0; do
            t0=$EPOCHREALTIME
            CUDA_CACHE_DISABLE=$cache "$bundle/engram-bench" route --backend cuda --tokens 16 --runs 1 > /dev/null 2>&1 || true
            echo "CUDA_CACHE_DISABLE=$cache: $(awk "BEGIN {print $EPOCHREALTIME - $t0}")"
        done | tee "$out/load.txt"
    fi
    echo "== benchmarks (JSON lines in bench.jsonl)"
    bench="$bundle/engram-bench"
    set +e
    {
        # Each kernel with the gate in a kernel of its own (the default: the key columns written
        # and read back) and summed in the projection's epilogue.
        for p in $projections; do
            for gate in pass epilogue; do
                echo "{\"projection\":\"$p\",\"gate\":\"$gate\"}"
                ENGRAM_CUDA_GATE=$gate ENGRAM_CUDA_PROJ=$p "$bench" engram --backend cuda --batch 32 --seq 512 \
                    --dtype bf16 --runs 20
            done
        done
        # The tensor-copy kernels with the rows gathered first (a gather launch more, then no
        # cp.async in the projection).
        for p in $rows_first; do
            for gate in pass epilogue; do
                echo "{\"projection\":\"$p\",\"gate\":\"$gate\",\"rows\":\"first\"}"
                ENGRAM_CUDA_ROWS=first ENGRAM_CUDA_GATE=$gate ENGRAM_CUDA_PROJ=$p "$bench" engram --backend cuda \
                    --batch 32 --seq 512 --dtype bf16 --runs 20
            done
        done
        python3 "$bundle/torch_floor.py" --tokens 16384
        [ "$mode" = "--quick" ] && exit 0
        # Decode with the first two kernels (on sm_90 the default and its tensor-copy variant).
        for p in $(echo $projections | cut -d' ' -f1-2); do
            echo "{\"projection\":\"$p\"}"
            for b in 1 16 64 256; do
                ENGRAM_CUDA_PROJ=$p "$bench" engram --backend cuda --batch $b --seq 64 --dtype bf16 --decode --runs 50
            done
        done
        "$bench" engram --backend cuda --batch 64 --seq 64 --dtype f32 --decode --runs 50
        "$bench" projection --backend cuda --tokens 16384 --dtype bf16 --runs 20
        "$bench" gather --backend cuda --tokens 16384 --dtype bf16 --runs 20
        "$bench" route --backend cuda --tokens 4096 --runs 20
    } 2> "$out/bench.err" | tee "$out/bench.jsonl"
    set -e
    [ "$mode" = "--quick" ] && exit 0
    if command -v ncu >/dev/null; then
        echo "== per-kernel times of one bf16 prefill of 16384 tokens and one decode step of 64 (ncu)"
        for args in "--batch 32 --seq 512" "--batch 64 --seq 64 --decode"; do
            # shellcheck disable=SC2086
            ncu -c 40 --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed \
                -k 'regex:fast|proj_|gate_|conv_|gather_rows16|first_|capture' \
                "$bench" engram --backend cuda $args --dtype bf16 --runs 1 > "$out/ncu.log" 2>&1 || true
            cp "$out/ncu.log" "$out/ncu_$(echo $args | tr -dc 'a-z0-9').log"
            grep -E "^  [a-zA-Z_0-9]+|duration" "$out/ncu.log" | grep -v "^==" | paste - - | awk '{print $1, $(NF-1), $NF}' | head -40
        done
        for p in $rows_first; do
            echo "== per-kernel times of one bf16 prefill of 16384 tokens, $p with the rows gathered first (ncu)"
            ENGRAM_CUDA_ROWS=first ENGRAM_CUDA_PROJ=$p ncu -c 40 \
                --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed \
                -k 'regex:fast|proj_|gate_|conv_|gather_rows16|first_|capture' \
                "$bench" engram --backend cuda --batch 32 --seq 512 --dtype bf16 --runs 1 > "$out/ncu_rows_first_$p.log" 2>&1 || true
            grep -E "^  [a-zA-Z_0-9]+|duration" "$out/ncu_rows_first_$p.log" | grep -v "^==" | paste - - \
                | awk '{print $1, $(NF-1), $NF}' | head -20
        done
        # The gather kernel alone (the op adds a validation kernel and a read-back): its bytes
        # (rows read and written, row ids) over this time against bench.jsonl's copy bandwidth.
        echo "== the gather kernel alone, 16384 tokens x 16 heads of 128-byte rows (ncu)"
        ncu -c 4 --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed -k 'regex:gather' \
            "$bench" gather --backend cuda --tokens 16384 --dtype bf16 --runs 1 > "$out/ncu_gather.log" 2>&1 || true
        grep -E "^  [a-zA-Z_0-9]+|duration|dram__" "$out/ncu_gather.log" | grep -v "^==" | awk '{print $1, $NF}'
    fi
    ;;
*)
    echo "usage: $0 build BUNDLE | run BUNDLE OUT [--quick] | sanitize BUNDLE OUT [memcheck | racecheck]" >&2
    exit 2
    ;;
esac
