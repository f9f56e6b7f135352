// Grid and batch helpers shared by every kernel source (engram.cu directly, fused.cu and
// hopper.cu through common.cuh): the integer types, grid-stride indices, the status word's test, a
// 32-bit remainder, the sequence of a token in a packed batch, and a decode step's shift of its histories (the ids',
// the convolution's). Included by those sources (tools/gen_ptx.py passes this directory to
// NVRTC); never compiled alone.
#pragma once

typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u64 global_index() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ u64 global_stride() { return (u64)gridDim.x * blockDim.x; }

// Whether a check launched before recorded a failure into the status word (all ones while none
// did): kernels that write an op's outputs return at once when it did, so that bad input leaves
// every output as it was. A null status means the input was checked on the host side.
__device__ __forceinline__ bool failed(const u64* status) { return status && *status != ~0ull; }

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

// A decode step's shift of one thread's slice of a history (the convolution's, or the ids'):
// rows 1..len-1 (of U units each, `stride` units apart) move one row back, row len-1 left for the
// caller. The rows are loaded eight at a time before any of them is stored, so a history of len
// rows costs ceil((len - 1) / 8) memory round trips per thread rather than len - 1 (a row-by-row
// copy waits for each load before the next: 8 round trips per step for the demo layer's
// convolution history of (4 - 1) * 3 = 9 rows). Each row is read before it is overwritten, as
// row by row.
template <typename U> __device__ __forceinline__ void shift_history(U* h, u64 stride, u64 len) {
    for (u64 j0 = 0; j0 + 1 < len; j0 += 8) {
        U r[8];
#pragma unroll
        for (u32 i = 0; i < 8; ++i)
            if (j0 + i + 1 < len) r[i] = h[(j0 + i + 1) * stride];
#pragma unroll
        for (u32 i = 0; i < 8; ++i)
            if (j0 + i + 1 < len) h[(j0 + i) * stride] = r[i];
    }
}

// Each sequence's id history (keep ids, oldest first) shifts left by one and ends with its new
// id: one thread per sequence, grid-stride. push_ids does only this; the fast decode's
// convolution kernel does it too, in the same launch (nothing in a step reads the history after
// the hash). The new id is loaded before the shift's loads, so all are in flight together.
__device__ __forceinline__ void push_history(u32* history, const u32* ids, u64 seqs, u32 keep) {
    for (u64 s = global_index(); s < seqs; s += global_stride()) {
        u32* h = history + s * keep;
        const u32 id = ids[s];
        shift_history(h, 1, keep);
        if (keep > 0) h[keep - 1] = id;
    }
}
