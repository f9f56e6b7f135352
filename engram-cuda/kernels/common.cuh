// Device helpers shared by the fast-path kernels (fused.cu) and the sm_90a projection
// (hopper.cu): element conversions (and, through grid.cuh, grid-stride indices and the sequence
// of a token), 16-byte asynchronous copies into shared memory and the swizzled layout of a projection tile. Included
// by those sources (tools/gen_ptx.py passes this directory to NVRTC); never compiled alone.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "grid.cuh"

__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T narrow(float x);
template <> __device__ __forceinline__ __half narrow<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
// A value rounded to T and back: the oracle stores every intermediate tensor in T.
template <typename T> __device__ __forceinline__ float round_to(float x) { return widen(narrow<T>(x)); }

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
#ifndef ENGRAM_CPU_DRIVER  // the CPU stand-in driver (../cpu-driver) gives it as std::exp2
// 2^x by the special-function unit, subnormal results flushed to zero: one instruction, where
// __expf adds three per call to keep subnormals.
__device__ __forceinline__ float ex2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
#endif

// x sigmoid(x), the convolution's SiLU, from the special-function unit's exponential and
// reciprocal (a few ulp of f32, far below the 16-bit outputs' rounding; -inf..inf map to -0..inf).
// Every convolution kernel, prefill and decode, uses this one so that a decode step equals the
// prefill's token.
__device__ __forceinline__ float silu(float x) {
    return x * __fdividef(1.0f, 1.0f + ex2_ftz(x * -1.4426950408889634f));
}


// ---- a decode window's table rows ---------------------------------------------------------------

// x mod d for every 64-bit x and 32-bit d >= 1 without a division: with s = ceil(log2 d) and
// magic = ceil(2^(64+s) / d) - 2^64 (computed on the host, < 2^64), q = floor(x (2^64 + magic) /
// 2^(64+s)) = floor(x / d) exactly, because (2^64 + magic) d - 2^(64+s) < d <= 2^s and x < 2^64
// keep the error under one. s = 0 means d = 1.
__device__ __forceinline__ u32 mod_reciprocal(u64 x, u32 d, u64 magic, u32 s) {
    if (s == 0) return 0;
    u64 t = __umul64hi(x, magic);
    u64 q = (t + ((x - t) >> 1)) >> (s - 1);
    return (u32)(x - q * (u64)d);
}

// The row within its table that head h (order h / k + 2) reads for sequence s of a decode step:
// the window is history[s] (keep = n_max - 1 ids, oldest first) then ids[s]. Always in range,
// whatever the ids.
__device__ __forceinline__ u32 decode_window_row(const u32* history, const u32* ids, const u64* mult, const u32* sizes,
                                                 const u64* magic, const u32* shift, u32 keep, u32 k, u64 s, u32 h) {
    const u32 order = h / k + 2;
    u64 mix = (u64)ids[s] * mult[0];
    for (u32 n = 1; n < order; ++n) mix ^= (u64)history[s * keep + keep - n] * mult[n];
    return mod_reciprocal(mix, sizes[h], magic[h], shift[h]);
}

// Records every id of sequence s's decode window at or beyond vocab into *status by atomicMin of
// (p << 32 | id), p its flat position over ids then history (the oracle's order; the host keeps
// seqs * n_max below 2^32).
__device__ __forceinline__ void record_bad_window_ids(const u32* history, const u32* ids, u64 seqs, u32 keep, u64 vocab,
                                                      u64* status, u64 s) {
    if ((u64)ids[s] >= vocab) atomicMin(status, (s << 32) | ids[s]);
    for (u32 i = 0; i < keep; ++i) {
        const u32 id = history[s * keep + i];
        if ((u64)id >= vocab) atomicMin(status, ((seqs + s * keep + i) << 32) | id);
    }
}

// Where a projection takes each token's table rows: `rows` ([tokens, heads], as hash_rows_fast
// or hash_decode_fast write them), or with rows null, for a decode step, each sequence's window
// hashed in the projection itself (decode_window_row; one launch less per step), with
// hash_decode_fast's parameters. With status not null the block numbered 0 also records the bad
// ids of every window (record_bad_window_ids) for the step's last launch to see.
struct RowSource {
    const u32* rows;
    const u32* history;
    const u32* ids;
    const u64* mult;
    const u32* sizes;
    const u64* magic;
    const u32* shift;
    u64* status;
    u64 vocab;
    u32 keep, k;
};

// The row within its table of token t's head h (of `heads`).
__device__ __forceinline__ u32 source_row(const RowSource& src, u32 heads, u64 t, u32 h) {
    return src.rows ? src.rows[t * heads + h]
                    : decode_window_row(src.history, src.ids, src.mult, src.sizes, src.magic, src.shift, src.keep,
                                        src.k, t, h);
}

// Called by every thread of every block of a projection (threads of the block numbered 0, tid of
// `threads`, do the work): a decode step's bad window ids into *status (RowSource).
__device__ __forceinline__ void record_source_status(const RowSource& src, u32 tokens, u32 tid, u32 threads) {
    if (src.rows || !src.status || blockIdx.x + blockIdx.y + blockIdx.z != 0) return;
    for (u32 s = tid; s < tokens; s += threads)
        record_bad_window_ids(src.history, src.ids, tokens, src.keep, src.vocab, src.status, s);
}

// ---- tiles in shared memory ----------------------------------------------------------------------

// Tokens per projection block and the k-tile (64 16-bit elements: one 128-byte row).
#define PROJ_BM 128
#define PROJ_BK 64

__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }

#ifndef ENGRAM_CPU_DRIVER  // the CPU stand-in driver (../cpu-driver) copies at once instead
// 16 bytes global -> shared, bypassing L1; fewer source bytes than 16 zero-fill the rest.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, u32 src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
#endif

// Byte offset of 16-byte chunk c (0..7) of row r in a tile of 128-byte rows, XOR-swizzled so that
// the 8 rows one ldmatrix phase reads fall on 8 different groups of banks. On a 1024-byte aligned
// tile this is also the 128-byte swizzle the sm_90 wgmma descriptors name (chunk bits 4-6 XOR
// row bits 7-9).
__device__ __forceinline__ u32 tile_offset(u32 r, u32 c) { return r * 128 + ((c ^ (r & 7)) << 4); }

// The global table row of each (token, head) of the BM tokens from m0, read (or hashed) once
// into shared memory by the THREADS threads numbered tid: row_table[r heads + h] = offsets[h] +
// source_row(src, heads, m0 + r, h) (0 past the last token). The caller synchronises before
// reading it.
template <int BM, int THREADS>
__device__ __forceinline__ void fill_row_table(u32* row_table, const u64* offsets, const RowSource& src, u32 heads,
                                               u32 m0, u32 tokens, u32 tid) {
    for (u32 i = tid; i < BM * heads; i += THREADS) {
        const u32 r = i / heads, h = i - r * heads, t = m0 + r;
        row_table[i] = t < tokens ? (u32)(offsets[h] + source_row(src, heads, t, h)) : 0u;
    }
}

// Issues (without committing) the asynchronous copies of the A tile of one k-tile of a projection
// block: BM token rows x 64 (gathered table rows, or x with gather == 0) to a_base in the
// tile_offset layout, elements past the tokens or K zero-filled. Thread tid (of THREADS) always
// moves chunk tid % 8 of rows tid / 8 + (THREADS / 8) i, so its k, head and swizzle are worked out
// once per k-tile and each further row is a fixed stride away.
template <typename T, int BM, int THREADS>
__device__ __forceinline__ void load_proj_a(u32 a_base, u32 k0, const T* table, u32 d_head, const u32* row_table,
                                            u32 heads, u32 gather, u32 m0, u32 tokens, u32 K, u32 tid) {
    constexpr u32 ROWS = THREADS / 8;  // rows per pass, a multiple of 8: the swizzle repeats
    static_assert(THREADS % 64 == 0 && BM % ROWS == 0, "whole passes");
    const u32 c = tid & 7, r0 = tid >> 3, k = k0 + c * 8, dst = tile_offset(r0, c);
    const bool k_in = k < K;
    const u32 h = gather ? k / d_head : 0, k_in_row = k - h * d_head;
#pragma unroll
    for (u32 i = 0; i < BM / ROWS; ++i) {
        const u32 r = r0 + i * ROWS, t = m0 + r;
        const bool ok = k_in && t < tokens;
        const T* src = table;
        if (ok) src = gather ? table + (u64)row_table[r * heads + h] * d_head + k_in_row : table + (u64)t * K + k;
        cp_async16(a_base + dst + i * ROWS * 128, src, ok ? 16 : 0);
    }
}

// The B tile of the same k-tile, as load_proj_a: weight rows n0..n0+BN x 64 to b_base, elements
// past the outputs or K zero-filled. Independent of the row table.
template <typename T, int BN, int THREADS>
__device__ __forceinline__ void load_proj_b(u32 b_base, u32 k0, const T* w, u32 n0, u32 K, u32 N, u32 tid) {
    constexpr u32 ROWS = THREADS / 8;
    static_assert(THREADS % 64 == 0 && BN % ROWS == 0, "whole passes");
    const u32 c = tid & 7, r0 = tid >> 3, k = k0 + c * 8, dst = tile_offset(r0, c);
    const bool k_in = k < K;
    const T* w_row = w + (u64)(n0 + r0) * K + k;
#pragma unroll
    for (u32 i = 0; i < BN / ROWS; ++i) {
        const bool ok = k_in && n0 + r0 + i * ROWS < N;
        cp_async16(b_base + dst + i * ROWS * 128, ok ? w_row + (u64)i * ROWS * K : w, ok ? 16 : 0);
    }
}

// Calls load(s, k0) for every k-tile kt_begin + s of a block's share of k that fits its ring of
// STAGES stages (into stage s). A share that fits (a split decode step) is loaded whole, so its
// few k-tiles cost one load latency where a pipeline one stage ahead pays one per k-tile; and its
// weight tiles are issued before the block fills its row table (the hash of a decode step's
// windows, a memory round trip or two), which they do not depend on, then the A tiles after it,
// then one commit and wait.
template <int STAGES, typename Load>
__device__ __forceinline__ void issue_share(Load&& load, u32 kt_begin, u32 kt_end) {
#pragma unroll
    for (u32 s = 0; s < STAGES; ++s)
        if (kt_begin + s < kt_end) load(s, (kt_begin + s) * PROJ_BK);
}

// ---- a projection's outputs ---------------------------------------------------------------------

__device__ __forceinline__ u32 bits(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ u32 bits(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

// Outputs (row, col) and (row, col + 1) of y ([tokens, N], col even): v0 and v1 plus the bias
// (when given), rounded to T, as one 4-byte store.
template <typename T>
__device__ __forceinline__ void store_output_pair(T* y, const T* bias, u32 N, u32 row, u32 col, float v0, float v1) {
    const float b0 = bias ? widen(bias[col]) : 0.0f, b1 = bias ? widen(bias[col + 1]) : 0.0f;
    *reinterpret_cast<u32*>(y + (u64)row * N + col) = bits(narrow<T>(v0 + b0)) | (bits(narrow<T>(v1 + b1)) << 16);
}

// ---- the gate's sums in a projection's epilogue --------------------------------------------------

// What a projection needs to form an Engram layer's gate sums in its epilogue instead of writing
// the key columns (proj_* with `sums` not null, splits == 1). Its outputs are a token's stacked
// columns [m keys of d | value of d] (N = (m + 1) d), and each lane adds up segments of SEG
// columns (the kernel's warp tile width; d must be a multiple of it, so that a segment lies in
// one branch): sums[t (N / SEG) + n / SEG] = (|k|^2, |h|^2, sum k kn h qn, 0) over a key segment
// of branch b, k the outputs rounded to T, h = hidden[(t m + b) d + ch] and kn, qn the norms'
// weights at the same channels ch; (|v|^2, 0, 0, 0) over a value segment, whose outputs are
// written to y as usual. The key columns of y are not written (gate_from_sums reads the sums).
template <typename T> struct GateSums {
    const T* hidden;
    const T* kn;
    const T* qn;
    float4* sums;
    u32 m, d;
};

// Two adjacent 16-bit elements (one 4-byte load; p 4-byte aligned).
template <typename T> struct __align__(4) ElementPair { T a, b; };
template <typename T> __device__ __forceinline__ float2 load_pair(const T* p) {
    const ElementPair<T> v = *reinterpret_cast<const ElementPair<T>*>(p);
    return make_float2(widen(v.a), widen(v.b));
}

// The column constants of output pair (col, col + 1) of a segment: the bias and, in a key
// segment of branch `branch`, kn qn at channels ch, ch + 1 of it.
struct GatePairConsts {
    float2 bias, kq;
};
template <typename T>
__device__ __forceinline__ GatePairConsts gate_pair_consts(const GateSums<T>& g, const T* bias, bool key, u32 branch,
                                                           u32 col, u32 ch) {
    GatePairConsts c;
    c.bias = bias ? make_float2(widen(bias[col]), widen(bias[col + 1])) : make_float2(0.0f, 0.0f);
    c.kq = make_float2(0.0f, 0.0f);
    if (key) {
        const float2 kn = load_pair(g.kn + (u64)branch * g.d + ch), qn = load_pair(g.qn + (u64)branch * g.d + ch);
        c.kq = make_float2(kn.x * qn.x, kn.y * qn.y);
    }
    return c;
}

// One output pair (row, col), (row, col + 1) of a segment, v0 and v1 before the bias: a value
// pair is rounded and written to y ([tokens, N]) and adds |v|^2 to s.x; a key pair of branch
// `branch` (channels ch, ch + 1) adds |k|^2, |h|^2 and sum k h kn qn to s.x, s.y, s.z.
template <typename T>
__device__ __forceinline__ void gate_epilogue_pair(const GateSums<T>& g, const GatePairConsts& c, bool key, u32 branch,
                                                   u32 ch, T* y, u32 N, u32 row, u32 col, float v0, float v1,
                                                   float4& s) {
    const T o0 = narrow<T>(v0 + c.bias.x), o1 = narrow<T>(v1 + c.bias.y);
    const float k0 = widen(o0), k1 = widen(o1);
    if (key) {
        const float2 h = load_pair(g.hidden + ((u64)row * g.m + branch) * g.d + ch);
        s.x += k0 * k0 + k1 * k1;
        s.y += h.x * h.x + h.y * h.y;
        s.z += k0 * h.x * c.kq.x + k1 * h.y * c.kq.y;
    } else {
        *reinterpret_cast<u32*>(y + (u64)row * N + col) = bits(o0) | (bits(o1) << 16);
        s.x += k0 * k0 + k1 * k1;
    }
}

// A segment's sums of one row from the four lanes that hold it (lanes 4i..4i+3 of a warp share
// a row in both the mma.sync and the wgmma accumulator layouts), written by the first of them
// to sums[row per_row + segment] when the row is a token. Every lane of the warp calls it.
__device__ __forceinline__ void store_gate_sums(float4* sums, u32 per_row, u32 segment, u32 row, u32 tokens,
                                                float4 s, u32 lane) {
#pragma unroll
    for (u32 o = 1; o <= 2; o <<= 1) {
        s.x += __shfl_xor_sync(0xffffffffu, s.x, o);
        s.y += __shfl_xor_sync(0xffffffffu, s.y, o);
        s.z += __shfl_xor_sync(0xffffffffu, s.z, o);
    }
    if ((lane & 3) == 0 && row < tokens) sums[(u64)row * per_row + segment] = s;
}

// The parameters of every projection kernel (proj_mma_*, proj_mma_wide_* in fused.cu; proj_wgmma_*,
// proj_wgmma_wide_*, proj_wgmma_ws_* and, followed by a tensor map, proj_wgmma_tma_*,
// proj_wgmma_wide_tma_* and proj_wgmma_ws_tma_*, or by two, their _ab_ variants in hopper.cu),
// in launch order, and the arguments their impl functions
// take from them: the row source and the gate sums as the structs above.
#define PROJ_KERNEL_PARAMS(T)                                                                                         \
    const T *table, u32 d_head, const u64 *offsets, const u32 *rows, u32 heads, u32 gather, const T *w, const T *bias, \
        u32 tokens, u32 K, u32 N, u32 splits, float *partial, u32 *counters, T *y, const T *hidden,                   \
        const T *key_norm, const T *query_norm, u32 m, u32 d, float4 *sums, const u32 *history, const u32 *ids,       \
        const u64 *mult, const u32 *sizes, const u64 *magic, const u32 *shift, u32 keep, u32 k, u64 vocab, u64 *status
#define PROJ_KERNEL_ARGS(T)                                                                                           \
    table, d_head, offsets, RowSource{rows, history, ids, mult, sizes, magic, shift, status, vocab, keep, k}, heads,  \
        gather, w, bias, tokens, K, N, splits, partial, counters, y, GateSums<T>{hidden, key_norm, query_norm, sums, m, d}

// The f32 partial sums v0, v1 of share z for outputs (row, col), (row, col + 1): partial is
// [splits, tokens, N], without the bias.
__device__ __forceinline__ void store_partial_pair(float* partial, u32 z, u32 tokens, u32 N, u32 row, u32 col,
                                                   float v0, float v1) {
    *reinterpret_cast<float2*>(partial + ((u64)z * tokens + row) * N + col) = make_float2(v0, v1);
}

// ---- split-K: the last share of a tile sums them all ---------------------------------------------

// Every projection kernel has 8 warps that compute outputs. counters[tile * PROJ_WARPS + w] counts
// the shares of k of a tile that have been written (0 between launches: the last share resets
// it): the one-tile-per-block kernels count whole blocks on w = 0 (last_split_block), the
// persistent warp-specialised kernel, whose warps reach a tile's end at different times, counts
// each warp's region on its own w (last_split).
#define PROJ_WARPS 8

// Called by every thread of a block whose threads have all written their f32 partial sums of one
// share of k of one tile: true, on every thread, in the block that completes the count of
// `splits` shares (which must then sum them, reduce_split_region), false in the others. Memory
// order as in CUDA's threadfence-reduction sample: each thread fences its own sums before the
// block barrier, thread 0 fences again (cumulative) before its count, and the thread that
// completes the count fences before the barrier (which also tells the block) after which the
// block reads the other shares.
__device__ __forceinline__ bool last_split_block(u32* counter, u32 splits) {
    __threadfence();
    __syncthreads();
    bool last = false;
    if (threadIdx.x == 0) {
        __threadfence();
        last = atomicAdd(counter, 1u) + 1 == splits;
        if (last) {
            __threadfence();
            // Every share has arrived: no one else touches the counter in this launch.
            *counter = 0;
        }
    }
    return __syncthreads_or(last) != 0;
}

// Called by a whole warp once its lanes have written their f32 partial sums of one share of k:
// true, on every lane, for the warp that completes the count of `splits` shares (which must then
// sum them, reduce_split_region), false for the others. Memory order, as in CUDA's
// threadfence-reduction pattern made explicit for a whole warp: each lane fences its own sums,
// the warp barrier makes them lane 0's, whose fence (cumulative) puts them all before its count;
// the lane that completes the count fences again before anything of the other shares is read,
// and the barrier after the broadcast hands that order to every lane.
__device__ __forceinline__ bool last_split(u32* counter, u32 splits) {
    __threadfence();
    __syncwarp();
    u32 before = 0;
    if ((threadIdx.x & 31) == 0) {
        __threadfence();
        before = atomicAdd(counter, 1u);
        if (before + 1 == splits) {
            __threadfence();
            // Every share has arrived: no one else touches the counter in this launch.
            *counter = 0;
        }
    }
    before = __shfl_sync(0xffffffffu, before, 0);
    __syncwarp();
    return before + 1 == splits;
}

// The outputs of a split projection in rows r0..r0 + rows - 1, columns c0..c0 + cols - 1 (cols
// even) that lie inside the layer, summed by `workers` threads (worker 0.. of them: the lanes of
// the warp that called last_split, or the threads of the block that called last_split_block):
// the bias, then the f32 partial sums of every share in order (a fixed order, whichever share
// finished last), rounded to T. partial is [splits, tokens, N], read through L2 (other
// multiprocessors wrote it); consecutive workers take consecutive pairs of a row. The reads are
// latency-bound (one tile's workers sum every share of it), so each worker takes REDUCE_PAIRS
// pairs at a time and issues two shares' loads for all of them before adding (in share order).
#define REDUCE_PAIRS 8
template <typename T>
__device__ __noinline__ void reduce_split_region(const float* partial, const T* bias, u32 tokens, u32 N, u32 splits,
                                                 u32 r0, u32 rows, u32 c0, u32 cols, u32 worker, u32 workers, T* y) {
    const u32 pairs = cols / 2, items = rows * pairs;
    const u64 share = (u64)tokens * N;
#pragma unroll 1
    for (u32 base = 0; base < items; base += workers * REDUCE_PAIRS) {
        u64 at[REDUCE_PAIRS];
        bool ok[REDUCE_PAIRS];
        float2 acc[REDUCE_PAIRS];
#pragma unroll
        for (u32 j = 0; j < REDUCE_PAIRS; ++j) {
            const u32 i = base + j * workers + worker, row = r0 + i / pairs, col = c0 + 2 * (i % pairs);
            ok[j] = i < items && row < tokens && col < N;
            at[j] = ok[j] ? (u64)row * N + col : 0;
            acc[j] = ok[j] && bias ? make_float2(widen(bias[col]), widen(bias[col + 1])) : make_float2(0.0f, 0.0f);
        }
#pragma unroll 1
        for (u32 z = 0; z < splits; z += 2) {
            const bool two = z + 1 < splits;
            float2 p[REDUCE_PAIRS], q[REDUCE_PAIRS];
#pragma unroll
            for (u32 j = 0; j < REDUCE_PAIRS; ++j) {
                const float* src = partial + z * share + at[j];
                p[j] = ok[j] ? __ldcg(reinterpret_cast<const float2*>(src)) : make_float2(0.0f, 0.0f);
                q[j] = ok[j] && two ? __ldcg(reinterpret_cast<const float2*>(src + share)) : make_float2(0.0f, 0.0f);
            }
#pragma unroll
            for (u32 j = 0; j < REDUCE_PAIRS; ++j) {
                acc[j].x += p[j].x;
                acc[j].y += p[j].y;
                if (two) {
                    acc[j].x += q[j].x;
                    acc[j].y += q[j].y;
                }
            }
        }
#pragma unroll
        for (u32 j = 0; j < REDUCE_PAIRS; ++j)
            if (ok[j])
                *reinterpret_cast<u32*>(y + at[j]) = bits(narrow<T>(acc[j].x)) | (bits(narrow<T>(acc[j].y)) << 16);
    }
}
