// Device helpers shared by the fast-path kernels (fused.cu) and the sm_90a projection
// (hopper.cu): element conversions, grid-stride indices, the sequence of a token, 16-byte
// asynchronous copies into shared memory and the swizzled layout of a projection tile. Included
// by those sources (tools/gen_ptx.py passes this directory to NVRTC); never compiled alone.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T narrow(float x);
template <> __device__ __forceinline__ __half narrow<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
// A value rounded to T and back: the oracle stores every intermediate tensor in T.
template <typename T> __device__ __forceinline__ float round_to(float x) { return widen(narrow<T>(x)); }

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ u64 global_index() { return (u64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ u64 global_stride() { return (u64)gridDim.x * blockDim.x; }

__device__ __forceinline__ u32 sequence_of(const u32* cu, u32 seqs, u64 t) {
    u32 lo = 0, hi = seqs - 1;
    while (lo < hi) {
        u32 mid = (lo + hi + 1) / 2;
        if ((u64)cu[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// ---- tiles in shared memory ----------------------------------------------------------------------

// Tokens per projection block and the k-tile (64 16-bit elements: one 128-byte row).
#define PROJ_BM 128
#define PROJ_BK 64

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared, bypassing L1; fewer source bytes than 16 zero-fill the rest.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, u32 src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Byte offset of 16-byte chunk c (0..7) of row r in a tile of 128-byte rows, XOR-swizzled so that
// the 8 rows one ldmatrix phase reads fall on 8 different groups of banks. On a 1024-byte aligned
// tile this is also the 128-byte swizzle the sm_90 wgmma descriptors name (chunk bits 4-6 XOR
// row bits 7-9).
__device__ __forceinline__ u32 tile_offset(u32 r, u32 c) { return r * 128 + ((c ^ (r & 7)) << 4); }

// The global table row of each (token, head) of the projection block whose first token is m0,
// read once into shared memory: row_table[r heads + h] = offsets[h] + rows[(m0 + r) heads + h]
// (0 past the last token). Ends with a block barrier.
template <int THREADS>
__device__ __forceinline__ void fill_row_table(u32* row_table, const u64* offsets, const u32* rows, u32 heads, u32 m0,
                                               u32 tokens) {
    for (u32 i = threadIdx.x; i < PROJ_BM * heads; i += THREADS) {
        const u32 r = i / heads, h = i - r * heads, t = m0 + r;
        row_table[i] = t < tokens ? (u32)(offsets[h] + rows[(u64)t * heads + h]) : 0u;
    }
    __syncthreads();
}

// Issues (without committing) the asynchronous copies of one k-tile of a projection block: the
// 128 x 64 A tile (token rows: gathered table rows, or x with gather == 0) to a_base and the
// BN x 64 B tile (weight rows n0..n0+BN) to b_base, both in the tile_offset layout; elements past
// the tokens, the outputs or K are zero-filled. Each of the THREADS threads moves chunks
// tid + THREADS i (row id >> 3, chunk id & 7).
template <typename T, int BN, int THREADS>
__device__ __forceinline__ void load_proj_stage(u32 a_base, u32 b_base, u32 k0, const T* table, u32 d_head,
                                                const u32* row_table, u32 heads, u32 gather, const T* w, u32 m0,
                                                u32 n0, u32 tokens, u32 K, u32 N) {
    static_assert(PROJ_BM * 8 % THREADS == 0 && BN * 8 % THREADS == 0, "whole chunks per thread");
    const u32 tid = threadIdx.x;
#pragma unroll
    for (u32 i = 0; i < PROJ_BM * 8 / THREADS; ++i) {
        const u32 id = tid + i * THREADS, r = id >> 3, c = id & 7;
        const u32 k = k0 + c * 8, t = m0 + r;
        const T* src = table;
        u32 bytes = 0;
        if (t < tokens && k < K) {
            if (gather) {
                const u32 h = k / d_head;
                src = table + (u64)row_table[r * heads + h] * d_head + (k - h * d_head);
            } else {
                src = table + (u64)t * K + k;
            }
            bytes = 16;
        }
        cp_async16(a_base + tile_offset(r, c), src, bytes);
    }
#pragma unroll
    for (u32 i = 0; i < BN * 8 / THREADS; ++i) {
        const u32 id = tid + i * THREADS, r = id >> 3, c = id & 7;
        const u32 k = k0 + c * 8, n = n0 + r;
        const T* src = w;
        u32 bytes = 0;
        if (n < N && k < K) {
            src = w + (u64)n * K + k;
            bytes = 16;
        }
        cp_async16(b_base + tile_offset(r, c), src, bytes);
    }
}
