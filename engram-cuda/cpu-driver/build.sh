#!/usr/bin/env bash
# Builds the CPU stand-in for the CUDA driver (see driver.cpp) as OUT/libcuda.so.1 (and
# OUT/libcuda.so), from the kernel sources in ../kernels. Needs a C++20 compiler (g++ or clang++).
#
#   bash engram-cuda/cpu-driver/build.sh OUT [--asan]
#   LD_LIBRARY_PATH=OUT cargo test -p engram-cuda --features cuda
#
# At run time: ENGRAM_CPU_DRIVER_SM (compute capability reported, 90 by default; 80 keeps the
# backend off the sm_90a module), ENGRAM_CPU_DRIVER_SMS (multiprocessors, 132),
# ENGRAM_CPU_DRIVER_ORDER=reverse (blocks last to first), ENGRAM_CPU_DRIVER_TRACE=1 (each launch).
#
# --asan builds it with the address sanitizer, a memory check of every kernel access to device
# memory (each allocation exactly its size); the test binary then needs the sanitizer's runtime
# first: LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0.
#
# (building the crate needs a libcuda to link against, as without this stand-in: see .ci/run.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT [--asan]}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cxx=${CXX:-g++}
# NVCC allows the type punning the sources do (16-byte loads read as 16-bit elements): so must we.
flags=(-std=c++20 -O2 -fno-strict-aliasing -fPIC -pthread -w -Wno-psabi -I"$here" -I"$here/include" -I"$here/../kernels")
link=()
case "${2:-}" in "" | --asan) ;; *) echo "unknown option ${2}" >&2; exit 2 ;; esac
if [ "${2:-}" = "--asan" ]; then
    flags+=(-O1 -g -fsanitize=address -fno-omit-frame-pointer)
    link+=(-fsanitize=address)
fi
objs=()
pids=()
# Each kernel source in its own translation unit (they define helpers of the same names), with
# one registration per kernel its committed PTX lists (hopper.cu's over its modules, hopper_*.ptx).
for src in engram fused hopper; do
    grep -hoE '^\.visible \.entry [A-Za-z0-9_]+' "$here/../kernels/$src"*.ptx | awk '{print "EMU_KERNEL(" $3 ")"}' \
        > "$out/$src.entries"
    printf '#include "cuda_lang.h"\n#include "%s.cu"\n#include "%s"\n' "$src" "$out/$src.entries" > "$out/$src.cpp"
    "$cxx" "${flags[@]}" -c "$out/$src.cpp" -o "$out/$src.o" &
    pids+=($!)
    objs+=("$out/$src.o")
done
"$cxx" "${flags[@]}" -c "$here/driver.cpp" -o "$out/driver.o" &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
"$cxx" -shared -pthread "${link[@]}" -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so.1" "$out/driver.o" "${objs[@]}"
ln -sf libcuda.so.1 "$out/libcuda.so"
echo "built $out/libcuda.so.1 ($(cat "$out"/*.entries | wc -l) kernels)"
