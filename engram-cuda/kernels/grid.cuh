// Grid and batch helpers shared by every kernel source (engram.cu directly, fused.cu and
// hopper.cu through common.cuh): the integer types, grid-stride indices, the sequence of a
// token in a packed batch and the decode state's id history. Included by those sources (tools/gen_ptx.py passes this directory to
// NVRTC); never compiled alone.
#pragma once

typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u64 global_index() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ u64 global_stride() { return (u64)gridDim.x * blockDim.x; }

// x mod d, in 32-bit arithmetic whenever x fits (a 64-bit remainder is a long software sequence).
__device__ __forceinline__ u32 mod_u32(u64 x, u32 d) { return (x >> 32) ? (u32)(x % d) : (u32)x % d; }

// The sequence of position t in a packed batch: the largest s with cu[s] <= t (empty sequences
// share their start with the next one, and the largest such s is the non-empty one).
__device__ __forceinline__ u32 sequence_of(const u32* cu, u32 seqs, u64 t) {
    u32 lo = 0, hi = seqs - 1;
    while (lo < hi) {
        u32 mid = (lo + hi + 1) / 2;
        if ((u64)cu[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// Each sequence's id history (keep ids, oldest first) shifts left by one and ends with its new
// id: one thread per sequence, grid-stride. push_ids does only this; the fast decode's
// convolution kernel does it too, in the same launch (nothing in a step reads the history after
// the hash).
__device__ __forceinline__ void push_history(u32* history, const u32* ids, u64 seqs, u32 keep) {
    for (u64 s = global_index(); s < seqs; s += global_stride()) {
        u32* h = history + s * keep;
        for (u32 i = 0; i + 1 < keep; ++i) h[i] = h[i + 1];
        if (keep > 0) h[keep - 1] = ids[s];
    }
}
