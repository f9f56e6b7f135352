// The fast path of the Engram layer for NVIDIA GPUs (sm_90): hashing with reciprocal modulo,
// 16-byte row gathers, the stacked projection on tensor cores (mma.sync) with the table rows
// gathered straight into shared memory, and two fused follow-up kernels (the gate with the
// convolution's RMSNorm scale; the value, causal convolution and SiLU). Compiled to fused.ptx by
// tools/gen_ptx.py (NVRTC); the PTX is committed and embedded by the crate. Launch contracts
// (parameters, grid, block, shared memory) are written above each kernel. 16-bit tables and
// weights only (bf16 or f16), f32 accumulation; f32 and f64 layers take the composed path.
#include "common.cuh"

// ---- hashing ------------------------------------------------------------------------------------

// mod_reciprocal (x mod d by a precomputed reciprocal) and decode_window_row live in common.cuh.

// hash_rows_fast(lookup|null, ids, tokens, cu, seqs, mult, n_max, sizes, magic, shift, k, pad, status|null,
// rows, starts|null): one thread per position t, grid-stride; ids pass through lookup first when it
// is not null (raw ids, checked beforehand). rows[t*H + (n-2)*k + j] = (XOR_{i<n} x_{t-i} mult[i])
// mod sizes[(n-2)*k + j], H = (n_max-1) k, pad before the sequence start; with starts, starts[t] =
// the first position of t's sequence (conv_out_vec's). seqs >= 1. With lookup null it reads only
// ids[0, tokens) and cu[0, seqs] and writes rows in range whatever ids and cu hold, so it may run
// before their check is known; with status, nothing is written after a fault.
extern "C" __global__ void hash_rows_fast(const u32* lookup, const u32* ids, u64 tokens, const u32* cu, u32 seqs,
                                          const u64* mult, u32 n_max, const u32* sizes, const u64* magic,
                                          const u32* shift, u32 k, u32 pad, const u64* status, u32* rows,
                                          u32* starts) {
    if (failed(status)) return;
    u32 heads = (n_max - 1) * k;
    for (u64 t = global_index(); t < tokens; t += global_stride()) {
        u64 start = cu[sequence_of(cu, seqs, t)];
        if (starts) starts[t] = (u32)start;
        u64 mix = 0;
        for (u32 n = 0; n < n_max; ++n) {
            u64 id = pad;
            if (t >= start + n) id = lookup ? lookup[ids[t - n]] : ids[t - n];
            mix = (n == 0) ? id * mult[0] : (mix ^ (id * mult[n]));
            if (n == 0) continue;
            for (u32 j = 0; j < k; ++j) {
                u32 h = (n - 1) * k + j;
                rows[t * heads + h] = mod_reciprocal(mix, sizes[h], magic[h], shift[h]);
            }
        }
    }
}

// hash_decode_fast(history, ids, seqs, mult, n_max, sizes, magic, shift, k, status|null, rows): one
// thread per (sequence, head), grid-stride over seqs * H; the window is history[s] (n_max-1 ids,
// oldest first) then ids[s]. Rows stay in range whatever the ids; with status (the windows'
// check launched before it), nothing is written after a fault.
extern "C" __global__ void hash_decode_fast(const u32* history, const u32* ids, u64 seqs, const u64* mult, u32 n_max,
                                            const u32* sizes, const u64* magic, const u32* shift, u32 k,
                                            const u64* status, u32* rows) {
    if (failed(status)) return;
    const u32 keep = n_max - 1, heads = keep * k;
    for (u64 x = global_index(); x < seqs * heads; x += global_stride()) {
        const u64 s = x / heads;
        const u32 h = (u32)(x - s * heads);
        rows[x] = decode_window_row(history, ids, mult, sizes, magic, shift, keep, k, s, h);
    }
}

// first_id_at_or_above2(a, na, b, nb, limit, first): *first = min flat index i over the
// concatenation of a and b with value >= limit (untouched when none; *first = u64::MAX before).
// Grid-stride, any grid and block.
extern "C" __global__ void first_id_at_or_above2(const u32* a, u64 na, const u32* b, u64 nb, u64 limit, u64* first) {
    for (u64 i = global_index(); i < na + nb; i += global_stride()) {
        u32 v = i < na ? a[i] : b[i - na];
        if ((u64)v >= limit) atomicMin(first, i);
    }
}

// ---- gather -------------------------------------------------------------------------------------

// gather_rows16(table, row_chunks, offsets, heads, rows, n_rows, status|null, out): any element
// type whose rows are whole 16-byte chunks (row_chunks = d_head * sizeof(T) / 16); table and out
// 16-byte aligned. out chunk (r, c) = table chunk ((offsets[r % heads] + rows[r]) * row_chunks + c).
// With status (a word a check launched before wrote to, all ones when every row was in range) the
// kernel writes nothing unless it is all ones; without, the rows were checked on the host side.
// Block of any size; each row takes L = min(row_chunks, blockDim.x) adjacent threads (thread i
// of a block: row i / L of its group, chunks i % L + L j), so a block holds R = blockDim.x / L
// rows; each thread moves two rows R * gridDim.x apart per round (both rows' loads in flight
// before either store). Grid: ceil(n_rows / (2 R)) blocks, or fewer (grid-stride).
extern "C" __global__ void gather_rows16(const uint4* __restrict__ table, u32 row_chunks, const u64* offsets, u32 heads,
                                         const u32* rows, u64 n_rows, const u64* status, uint4* __restrict__ out) {
    if (failed(status)) return;
    const u32 lanes = row_chunks < blockDim.x ? row_chunks : blockDim.x;
    const u32 per_block = blockDim.x / lanes;
    const u32 lane = threadIdx.x % lanes, slot = threadIdx.x / lanes;
    if (slot >= per_block) return;
    const u64 stride = (u64)gridDim.x * per_block;
    for (u64 r0 = (u64)blockIdx.x * per_block + slot; r0 < n_rows; r0 += 2 * stride) {
        const u64 r1 = r0 + stride;
        const bool two = r1 < n_rows;
        const u64 s0 = (offsets[mod_u32(r0, heads)] + rows[r0]) * row_chunks;
        const u64 s1 = two ? (offsets[mod_u32(r1, heads)] + rows[r1]) * row_chunks : s0;
        for (u32 c = lane; c < row_chunks; c += lanes) {
            const uint4 a = __ldg(table + s0 + c);
            const uint4 b = __ldg(table + s1 + c);
            out[r0 * row_chunks + c] = a;
            if (two) out[r1 * row_chunks + c] = b;
        }
    }
}

// ---- the stacked projection on tensor cores -----------------------------------------------------

#define PROJ_STAGES 3
#define PROJ_THREADS 256

// The CPU stand-in driver (../cpu-driver) gives ldmatrix and mma.sync their PTX meaning itself.
#ifndef ENGRAM_CPU_DRIVER
__device__ __forceinline__ void ldmatrix_x4(u32 (&r)[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

template <typename T> struct Mma;
template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
template <> struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
#endif

// f(row, col, v0, v1) for each pair of adjacent outputs a lane holds in proj_mma_impl's
// accumulators (mma.sync C layout, warp tile at wm, wn), those inside the layer only.
template <int NI, typename F>
__device__ __forceinline__ void mma_each_pair(const float (&acc)[4][NI][4], u32 m0, u32 n0, u32 wm, u32 wn, u32 lane,
                                              u32 tokens, u32 N, F&& f) {
#pragma unroll
    for (u32 mi = 0; mi < 4; ++mi)
#pragma unroll
        for (u32 ni = 0; ni < NI; ++ni) {
            const u32 col = n0 + wn + ni * 8 + (lane & 3) * 2;
            if (col >= N) continue;
#pragma unroll
            for (u32 half = 0; half < 2; ++half) {
                const u32 row = m0 + wm + mi * 16 + (lane >> 2) + half * 8;
                if (row >= tokens) continue;
                f(row, col, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
            }
        }
}

// The outputs a lane holds in proj_mma_impl's accumulators (as mma_each_pair), with the gate's
// sums formed instead of the key columns (GateSums): the warp's NI * 8 columns from n0 + wn are
// one segment. Every lane of the warp calls it.
template <typename T, int NI>
__device__ __forceinline__ void mma_gate_epilogue(const float (&acc)[4][NI][4], u32 m0, u32 n0, u32 wm, u32 wn,
                                                  u32 lane, u32 tokens, u32 N, const T* bias, T* y,
                                                  const GateSums<T>& g) {
    constexpr u32 SEG = NI * 8;
    const u32 c0 = n0 + wn;
    if (c0 >= N) return;  // the same for the whole warp: N is a multiple of SEG here
    const u32 branch = c0 / g.d, ch0 = c0 - branch * g.d;
    const bool key = branch < g.m;
#pragma unroll
    for (u32 mi = 0; mi < 4; ++mi) {
        float4 s[2] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (u32 ni = 0; ni < NI; ++ni) {
            const u32 off = ni * 8 + (lane & 3) * 2;
            const GatePairConsts c = gate_pair_consts(g, bias, key, branch, c0 + off, ch0 + off);
#pragma unroll
            for (u32 half = 0; half < 2; ++half) {
                const u32 row = m0 + wm + mi * 16 + (lane >> 2) + half * 8;
                if (row < tokens)
                    gate_epilogue_pair(g, c, key, branch, ch0 + off, y, N, row, c0 + off, acc[mi][ni][2 * half],
                                       acc[mi][ni][2 * half + 1], s[half]);
            }
        }
#pragma unroll
        for (u32 half = 0; half < 2; ++half)
            store_gate_sums(g.sums, N / SEG, c0 / SEG, m0 + wm + mi * 16 + (lane >> 2) + half * 8, tokens, s[half],
                            lane);
    }
}

// proj_mma_*(table, d_head, offsets, rows, heads, gather, w, bias, tokens, K, N, splits, partial, counters,
// y, hidden, key_norm, query_norm, m, d, sums, history, ids, mult, sizes, magic, shift, keep, k, vocab,
// status):
// y[t, n] = sum_k A[t, k] W[n, k] + bias[n], with A[t, k] the k-th element of token t's
// concatenated rows, table[(offsets[h] + rows[t H + h]) d_head + k - h d_head], h = k / d_head
// (gather != 0), or x[t K + k] (gather == 0; `table` is then x). With rows null, a decode step's
// tokens are its sequences and each one's rows are hashed from its window here, as
// hash_decode_fast(history, ids, tokens, mult, keep + 1, sizes, magic, shift, k, vocab, status)
// would (RowSource, common.cuh: block 0 records bad ids into status when it is not null);
// otherwise history .. status are not read. With splits > 1 block z sums
// only its share of the k-tiles and writes f32 partial sums, without the bias, to
// partial[(z tokens + t) N + n]; the last share of each warp's region to finish (counted in
// counters[tile * 8 + warp], tile = blockIdx.y gridDim.x + blockIdx.x, which must be 0 at the
// launch and are 0 after it) writes y from them all (common.cuh). Requirements (host-checked): K and
// d_head multiples of 8, N even, table/x and w 16-byte aligned, rows in range, every global row
// offsets[h] + rows[..] below 2^32.
// With sums not null (an Engram layer's stacked projection, splits == 1, N = (m + 1) d, d a
// multiple of the kernel's segment, hidden [tokens, m, d] and the norms' weights key_norm and
// query_norm [m, d] 4-byte aligned) the key columns are not written: the gate's sums of each
// segment of the warp tile's width (32 or 64 columns) go to sums instead (GateSums, common.cuh);
// with sums null hidden, key_norm, query_norm, m and d are not read.
// Two tile widths: proj_mma_* (128 x 128 outputs per block, 64 x 32 per warp) and proj_mma_wide_*
// (128 x 256, 64 x 64 per warp). Grid (ceil(N/BN), ceil(tokens/128), splits), block 256, dynamic
// shared memory 3 (128 + BN) 64 * 2 bytes (98304 or 147456) + 512 * heads bytes (the block's row
// table; 0 without gather); needs the function's dynamic shared memory limit raised to that.
template <typename T, int BN>
__device__ void proj_mma_impl(const T* table, u32 d_head, const u64* offsets, const RowSource src, u32 heads, u32 gather,
                              const T* w, const T* bias, u32 tokens, u32 K, u32 N, u32 splits, float* partial,
                              u32* counters, T* y, const GateSums<T> g) {
    extern __shared__ __align__(128) unsigned char smem[];
    const u32 tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    // 8 warps: 2 along the tokens, 4 along the outputs; each owns 64 x BN/4 of the tile.
    constexpr u32 WN = BN / 4, NI = WN / 8, NJ = WN / 16;
    constexpr u32 A_BYTES = PROJ_BM * PROJ_BK * 2, STAGE_BYTES = (PROJ_BM + BN) * PROJ_BK * 2;
    const u32 n0 = blockIdx.x * BN, m0 = blockIdx.y * PROJ_BM;
    const u32 wm = (warp >> 2) * 64, wn = (warp & 3) * WN;
    const u32 base = smem_addr(smem);
    u32* row_table = reinterpret_cast<u32*>(smem + PROJ_STAGES * STAGE_BYTES);
    const u32 ktiles = (K + PROJ_BK - 1) / PROJ_BK, per_split = (ktiles + splits - 1) / splits;
    const u32 kt_begin = blockIdx.z * per_split, kt_end = min(kt_begin + per_split, ktiles);
    const bool whole = kt_end - kt_begin <= PROJ_STAGES;
    auto load_a = [&](u32 stage, u32 k0) {
        load_proj_a<T, PROJ_BM, PROJ_THREADS>(base + stage * STAGE_BYTES, k0, table, d_head, row_table, heads, gather,
                                              m0, tokens, K, tid);
    };
    auto load_b = [&](u32 stage, u32 k0) {
        load_proj_b<T, BN, PROJ_THREADS>(base + stage * STAGE_BYTES + A_BYTES, k0, w, n0, K, N, tid);
    };
    auto load_stage = [&](u32 stage, u32 k0) {
        load_a(stage, k0);
        load_b(stage, k0);
    };
    // The weight tiles of a whole share first (issue_share), in a loop kept rolled: unrolled, its
    // addresses cost this kernel a spill at its 128-register limit.
    if (whole)
#pragma unroll 1
        for (u32 kt = kt_begin; kt < kt_end; ++kt) load_b(kt - kt_begin, kt * PROJ_BK);
    record_source_status(src, tokens, threadIdx.x, PROJ_THREADS);
    if (gather) {
        fill_row_table<PROJ_BM, PROJ_THREADS>(row_table, offsets, src, heads, m0, tokens, threadIdx.x);
        __syncthreads();
    }

    float acc[4][NI][4];
#pragma unroll
    for (u32 i = 0; i < 4; ++i)
#pragma unroll
        for (u32 j = 0; j < NI; ++j)
#pragma unroll
            for (u32 e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // The products of k-tile kt_begin + i, whose copies are in stage i % PROJ_STAGES.
    auto mma_stage = [&](u32 i) {
        const u32 a_base = base + (i % PROJ_STAGES) * STAGE_BYTES, b_base = a_base + A_BYTES;
#pragma unroll
        for (u32 kk = 0; kk < PROJ_BK / 16; ++kk) {
            u32 a[4][4], b[NI][2];
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi) {
                const u32 r = wm + mi * 16 + (lane & 15), c = kk * 2 + (lane >> 4);
                ldmatrix_x4(a[mi], a_base + tile_offset(r, c));
            }
#pragma unroll
            for (u32 nj = 0; nj < NJ; ++nj) {
                const u32 r = wn + nj * 16 + (lane & 7) + ((lane >> 4) << 3), c = kk * 2 + ((lane >> 3) & 1);
                u32 q[4];
                ldmatrix_x4(q, b_base + tile_offset(r, c));
                b[2 * nj][0] = q[0];
                b[2 * nj][1] = q[1];
                b[2 * nj + 1][0] = q[2];
                b[2 * nj + 1][1] = q[3];
            }
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi)
#pragma unroll
                for (u32 ni = 0; ni < NI; ++ni) Mma<T>::run(acc[mi][ni], a[mi], b[ni][0], b[ni][1]);
        }
    };

    if (whole) {
        issue_share<PROJ_STAGES>(load_a, kt_begin, kt_end);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
#pragma unroll
        for (u32 s = 0; s < PROJ_STAGES; ++s)
            if (kt_begin + s < kt_end) mma_stage(s);
    } else {
#pragma unroll
        for (u32 s = 0; s < PROJ_STAGES - 1; ++s) {
            load_stage(s, (kt_begin + s) * PROJ_BK);
            cp_async_commit();
        }
        for (u32 kt = kt_begin; kt < kt_end; ++kt) {
            const u32 i = kt - kt_begin;
            cp_async_wait<PROJ_STAGES - 2>();
            __syncthreads();
            const u32 next = kt + PROJ_STAGES - 1;
            if (next < kt_end) load_stage((i + PROJ_STAGES - 1) % PROJ_STAGES, next * PROJ_BK);
            cp_async_commit();
            mma_stage(i);
        }
        cp_async_wait<0>();
    }

    if (splits == 1 && g.sums) {
        mma_gate_epilogue<T, NI>(acc, m0, n0, wm, wn, lane, tokens, N, bias, y, g);
        return;
    }
    if (splits == 1) {
        mma_each_pair<NI>(acc, m0, n0, wm, wn, lane, tokens, N, [&](u32 row, u32 col, float v0, float v1) {
            store_output_pair(y, bias, N, row, col, v0, v1);
        });
        return;
    }
    mma_each_pair<NI>(acc, m0, n0, wm, wn, lane, tokens, N, [&](u32 row, u32 col, float v0, float v1) {
        store_partial_pair(partial, blockIdx.z, tokens, N, row, col, v0, v1);
    });
    const u32 tile = blockIdx.y * gridDim.x + blockIdx.x;
    if (last_split_block(counters + tile * PROJ_WARPS, splits))
        reduce_split_region(partial, bias, tokens, N, splits, m0, min(PROJ_BM, tokens - m0), n0, BN, threadIdx.x,
                            PROJ_THREADS, y);
}

// ---- the gate and the convolution's norm --------------------------------------------------------

// Sum over the block (blockDim.x a multiple of 32, at most 1024) of three values; `sh` holds 96
// floats. Every thread gets the sums.
__device__ __forceinline__ void block_sum3(float& a, float& b, float& c, float* sh) {
#pragma unroll
    for (u32 o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
        c += __shfl_xor_sync(0xffffffffu, c, o);
    }
    const u32 warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        sh[warp] = a;
        sh[32 + warp] = b;
        sh[64 + warp] = c;
    }
    __syncthreads();
    a = b = c = 0.0f;
    for (u32 i = 0; i < warps; ++i) {
        a += sh[i];
        b += sh[32 + i];
        c += sh[64 + i];
    }
}

// gate_scales(proj, hidden, key_norm, query_norm, tokens, m, d, with_norm, status|null, alpha, nscale):
// one block per token (grid-stride), block a multiple of 32 threads (256). For each branch b:
// alpha[t m + b] (the oracle's gate, rounded to T) and, with_norm != 0, nscale[t m + b] = alpha /
// sqrt(alpha^2 mean(v^2) + 1e-5), so that the convolution's RMSNorm of the gated value is
// nscale * v * conv_norm. Like every kernel below with a status, it writes nothing when the word
// holds a failure (failed, grid.cuh; alpha may be the caller's gates).
template <typename T>
__device__ void gate_scales_impl(const T* proj, const T* hidden, const T* kn, const T* qn, u64 tokens, u32 m, u32 d,
                                 u32 with_norm, T* alpha, float* nscale) {
    __shared__ float sh[96];
    const float eps = 1.1920928955078125e-07f, inv_d = 1.0f / (float)d, inv_sqrt_d = rsqrtf((float)d);
    for (u64 t = blockIdx.x; t < tokens; t += gridDim.x) {
        const T* p = proj + t * (u64)(m + 1) * d;
        const T* v = p + (u64)m * d;
        float sv = 0.0f, z1 = 0.0f, z2 = 0.0f;
        if (with_norm) {
            for (u32 i = threadIdx.x; i < d; i += blockDim.x) {
                const float x = widen(v[i]);
                sv += x * x;
            }
            block_sum3(sv, z1, z2, sh);
        }
        for (u32 b = 0; b < m; ++b) {
            const T* k = p + (u64)b * d;
            const T* h = hidden + (t * m + b) * d;
            float sk = 0.0f, sq = 0.0f, sd = 0.0f;
            for (u32 i = threadIdx.x; i < d; i += blockDim.x) {
                const float ki = widen(k[i]), hi = widen(h[i]);
                sk += ki * ki;
                sq += hi * hi;
                sd += ki * widen(kn[b * d + i]) * hi * widen(qn[b * d + i]);
            }
            block_sum3(sk, sq, sd, sh);
            if (threadIdx.x == 0) {
                const float s = rsqrtf(sk * inv_d + eps) * rsqrtf(sq * inv_d + eps) * sd * inv_sqrt_d;
                const float sign = s > 0.0f ? 1.0f : (s < 0.0f ? -1.0f : 0.0f);
                const float a = round_to<T>(sigmoidf(sign * sqrtf(fmaxf(fabsf(s), 1e-6f))));
                alpha[t * m + b] = narrow<T>(a);
                if (with_norm) nscale[t * m + b] = a * rsqrtf(a * a * sv * inv_d + 1e-5f);
            }
        }
    }
}

// The convolution's RMSNorm of branch b's gated value at token t, channel ch, rounded to T.
template <typename T>
__device__ __forceinline__ float normed_at(const T* proj, const float* nscale, const T* cn, u64 t, u32 m, u32 d, u32 b,
                                           u32 ch) {
    const float v = widen(proj[t * (u64)(m + 1) * d + (u64)m * d + ch]);
    return round_to<T>(nscale[t * m + b] * v * widen(cn[b * d + ch]));
}

// conv_out(proj, alpha, nscale, conv_norm, conv_w, tokens, m, d, kernel, dil, cu, seqs, conv, status|null,
// out):
// out[t, b, ch] = value + SiLU(sum_k conv_w[c, k] normed[t - (kernel-1-k) dil, c]) with c = b d + ch,
// value = alpha[t, b] v[t, ch] (v the last d columns of proj), zero before each sequence start;
// conv == 0: out = value. Grid-stride over tokens * m * d, any block.
template <typename T>
__device__ void conv_out_impl(const T* proj, const T* alpha, const float* nscale, const T* cn, const T* cw, u64 tokens,
                              u32 m, u32 d, u32 kernel, u32 dil, const u32* cu, u32 seqs, u32 conv, T* out) {
    const u64 md = (u64)m * d;
    for (u64 i = global_index(); i < tokens * md; i += global_stride()) {
        const u64 t = i / md;
        const u32 c = (u32)(i - t * md), b = c / d, ch = c - b * d;
        const float v = widen(proj[t * (md + d) + md + ch]);
        const float value = round_to<T>(widen(alpha[t * m + b]) * v);
        if (!conv) {
            out[i] = narrow<T>(value);
            continue;
        }
        const u64 start = cu[sequence_of(cu, seqs, t)];
        float acc = 0.0f;
        for (u32 k = 0; k < kernel; ++k) {
            const u64 back = (u64)(kernel - 1 - k) * dil;
            if (t >= start + back) acc += widen(cw[(u64)c * kernel + k]) * normed_at(proj, nscale, cn, t - back, m, d, b, ch);
        }
        out[i] = narrow<T>(value + silu(acc));
    }
}

// capture_conv_scaled(proj, nscale, conv_norm, cu, seqs, m, d, hist, status|null, state): the convolution's
// decode state after a prefill: state[s, k, c] = normed at position end_s - hist + k, zero before
// the sequence start. Grid-stride over seqs * hist * m * d.
template <typename T>
__device__ void capture_conv_scaled_impl(const T* proj, const float* nscale, const T* cn, const u32* cu, u64 seqs, u32 m,
                                         u32 d, u32 hist, T* state) {
    const u64 md = (u64)m * d, total = seqs * hist * md;
    for (u64 i = global_index(); i < total; i += global_stride()) {
        const u64 s = i / (hist * md), k = (i / md) % hist;
        const u32 c = (u32)(i % md), b = c / d, ch = c - b * d;
        const u64 start = cu[s], end = cu[s + 1];
        float x = 0.0f;
        if (end + k >= hist && end + k - hist >= start) x = normed_at(proj, nscale, cn, end + k - hist, m, d, b, ch);
        state[i] = narrow<T>(x);
    }
}

// conv_decode_scaled(proj, alpha, nscale, conv_norm, conv_w, seqs, m, d, kernel, dil, conv,
// status|null, history, ids_history, ids, keep, out): one decode step of the convolution for
// every sequence (history [seqs, L, m d], L = (kernel-1) dil, oldest first), advancing the
// history by this step's normed value, and the step's end: each sequence's id history
// [seqs, keep] advanced by its id in ids (push_ids). conv == 0: out = value and the convolution
// history is untouched. Nothing is written when status holds an error (anything but all ones).
// Grid-stride over seqs * m * d (at least seqs threads).
template <typename T>
__device__ void conv_decode_scaled_impl(const T* proj, const T* alpha, const float* nscale, const T* cn, const T* cw,
                                        u64 seqs, u32 m, u32 d, u32 kernel, u32 dil, u32 conv, const u64* status,
                                        T* history, u32* ids_history, const u32* ids, u32 keep, T* out) {
    if (failed(status)) return;
    push_history(ids_history, ids, seqs, keep);
    const u64 md = (u64)m * d, len = (u64)(kernel - 1) * dil;
    for (u64 i = global_index(); i < seqs * md; i += global_stride()) {
        const u64 s = i / md;
        const u32 c = (u32)(i - s * md), b = c / d, ch = c - b * d;
        const float v = widen(proj[s * (md + d) + md + ch]);
        const float value = round_to<T>(widen(alpha[s * m + b]) * v);
        if (!conv) {
            out[i] = narrow<T>(value);
            continue;
        }
        T* h = history + s * len * md;
        const float normed = normed_at(proj, nscale, cn, s, m, d, b, ch);
        float acc = widen(cw[(u64)c * kernel + kernel - 1]) * normed;
        for (u32 k = 0; k + 1 < kernel; ++k) {
            const u64 back = (u64)(kernel - 1 - k) * dil;
            acc += widen(cw[(u64)c * kernel + k]) * widen(h[(len - back) * md + c]);
        }
        out[i] = narrow<T>(value + silu(acc));
        shift_history(h + c, md, len);
        if (len > 0) h[(len - 1) * md + c] = narrow<T>(normed);
    }
}

// ---- vectorised follow-up kernels (rows of whole 16-byte chunks) -----------------------------------

// N (8 or 4) consecutive 16-bit elements: one 16- or 8-byte load or store, the address aligned to it.
template <int N> struct VecRaw;
template <> struct VecRaw<8> { using type = uint4; };
template <> struct VecRaw<4> { using type = uint2; };
template <typename T, int N> __device__ __forceinline__ void loadv(const T* src, float (&x)[N]) {
    using Raw = typename VecRaw<N>::type;
    const Raw raw = __ldg(reinterpret_cast<const Raw*>(src));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (u32 i = 0; i < N; ++i) x[i] = widen(e[i]);
}
template <typename T, int N> __device__ __forceinline__ void storev(T* dst, const float (&x)[N]) {
    using Raw = typename VecRaw<N>::type;
    Raw raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (u32 i = 0; i < N; ++i) e[i] = narrow<T>(x[i]);
    *reinterpret_cast<Raw*>(dst) = raw;
}
template <typename T> __device__ __forceinline__ void load8(const T* src, float (&x)[8]) { loadv<T, 8>(src, x); }
template <typename T> __device__ __forceinline__ void store8(T* dst, const float (&x)[8]) { storev<T, 8>(dst, x); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (u32 o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

#define GATE_VEC_THREADS 128
#define GATE_VEC_MAX_M 16

// This thread's share (chunks tid, tid + GATE_VEC_THREADS, ...) of one branch's gate sums over
// its d / 8 chunks of 8 channels: sk = |k|^2, sq = |h|^2, sd = sum k kn h qn (k the branch's key
// row of the projection, h its hidden row, kn and qn the norms' weights).
template <typename T>
__device__ __forceinline__ void gate_partial_sums(const T* k, const T* h, const T* kn, const T* qn, u32 chunks,
                                                  float& sk, float& sq, float& sd) {
    sk = 0.0f, sq = 0.0f, sd = 0.0f;
    for (u32 i = threadIdx.x; i < chunks; i += GATE_VEC_THREADS) {
        float kx[8], hx[8], a[8], q[8];
        load8(k + i * 8, kx);
        load8(h + i * 8, hx);
        load8(kn + i * 8, a);
        load8(qn + i * 8, q);
#pragma unroll
        for (u32 e = 0; e < 8; ++e) {
            sk += kx[e] * kx[e];
            sq += hx[e] * hx[e];
            sd += kx[e] * a[e] * hx[e] * q[e];
        }
    }
}

// This thread's share of |v|^2 over the value row's chunks (as gate_partial_sums).
template <typename T> __device__ __forceinline__ float value_partial_sum(const T* v, u32 chunks) {
    float sv = 0.0f;
    for (u32 i = threadIdx.x; i < chunks; i += GATE_VEC_THREADS) {
        float x[8];
        load8(v + i * 8, x);
#pragma unroll
        for (u32 e = 0; e < 8; ++e) sv += x[e] * x[e];
    }
    return sv;
}

// The gate from a branch's sums over d (the oracle's formula), rounded to T.
template <typename T> __device__ __forceinline__ float gate_alpha(float sk, float sq, float sd, u32 d) {
    const float eps = 1.1920928955078125e-07f, inv_d = 1.0f / (float)d, inv_sqrt_d = rsqrtf((float)d);
    const float s = rsqrtf(sk * inv_d + eps) * rsqrtf(sq * inv_d + eps) * sd * inv_sqrt_d;
    const float sign = s > 0.0f ? 1.0f : (s < 0.0f ? -1.0f : 0.0f);
    return round_to<T>(sigmoidf(sign * sqrtf(fmaxf(fabsf(s), 1e-6f))));
}

// The scale that makes the convolution's RMSNorm of the gated value alpha v a product:
// alpha / sqrt(alpha^2 mean(v^2) + 1e-5), from v2 = |v|^2.
__device__ __forceinline__ float norm_scale(float a, float v2, u32 d) {
    return a * rsqrtf(a * a * v2 * (1.0f / (float)d) + 1e-5f);
}

// gate_from_sums(sums, seg, tokens, m, d, with_norm, status|null, alpha, nscale): gate_scales from the sums a
// projection formed in its epilogue (GateSums in common.cuh; segments of seg columns, d a
// multiple of seg): branch b's key segments, and for the norm scale the value's, added in column
// order. One thread per token and branch, grid-stride over tokens * m, any block.
template <typename T>
__device__ void gate_from_sums_impl(const float4* sums, u32 seg, u64 tokens, u32 m, u32 d, u32 with_norm, T* alpha,
                                    float* nscale) {
    const u32 per_branch = d / seg;
    const u64 per_row = (u64)(m + 1) * per_branch;
    for (u64 i = global_index(); i < tokens * m; i += global_stride()) {
        const u64 t = i / m;
        const u32 b = (u32)(i - t * m);
        const float4* row = sums + t * per_row;
        float sk = 0.0f, sq = 0.0f, sd = 0.0f;
        for (u32 j = 0; j < per_branch; ++j) {
            const float4 p = row[b * per_branch + j];
            sk += p.x;
            sq += p.y;
            sd += p.z;
        }
        const float a = gate_alpha<T>(sk, sq, sd, d);
        alpha[i] = narrow<T>(a);
        if (with_norm) {
            float sv = 0.0f;
            for (u32 j = 0; j < per_branch; ++j) sv += row[m * per_branch + j].x;
            nscale[i] = norm_scale(a, sv, d);
        }
    }
}

// gate_scales_vec(...): gate_scales with 16-byte loads and one block-wide exchange per token.
// Requirements (host-checked): d a multiple of 8, m <= 16, proj/hidden/kn/qn 16-byte aligned.
// One block of 128 threads per token (grid-stride), no dynamic shared memory.
template <typename T>
__device__ void gate_scales_vec_impl(const T* proj, const T* hidden, const T* kn, const T* qn, u64 tokens, u32 m, u32 d,
                                     u32 with_norm, T* alpha, float* nscale) {
    __shared__ float sh[GATE_VEC_THREADS / 32][3 * GATE_VEC_MAX_M + 1];
    const u32 tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, chunks = d / 8;
    for (u64 t = blockIdx.x; t < tokens; t += gridDim.x) {
        const T* p = proj + t * (u64)(m + 1) * d;
        const float sv = warp_sum(with_norm ? value_partial_sum(p + (u64)m * d, chunks) : 0.0f);
        if (lane == 0) sh[warp][3 * m] = sv;
        for (u32 b = 0; b < m; ++b) {
            float sk, sq, sd;
            gate_partial_sums(p + (u64)b * d, hidden + (t * m + b) * d, kn + (u64)b * d, qn + (u64)b * d, chunks, sk,
                              sq, sd);
            sk = warp_sum(sk);
            sq = warp_sum(sq);
            sd = warp_sum(sd);
            if (lane == 0) {
                sh[warp][3 * b] = sk;
                sh[warp][3 * b + 1] = sq;
                sh[warp][3 * b + 2] = sd;
            }
        }
        __syncthreads();
        if (tid < m) {
            const u32 b = tid;
            float sk = 0.0f, sq = 0.0f, sd = 0.0f, v2 = 0.0f;
#pragma unroll
            for (u32 w = 0; w < GATE_VEC_THREADS / 32; ++w) {
                sk += sh[w][3 * b];
                sq += sh[w][3 * b + 1];
                sd += sh[w][3 * b + 2];
                v2 += sh[w][3 * m];
            }
            const float a = gate_alpha<T>(sk, sq, sd, d);
            alpha[t * m + b] = narrow<T>(a);
            if (with_norm) nscale[t * m + b] = norm_scale(a, v2, d);
        }
        __syncthreads();
    }
}

#define CONV_VEC_RUN 8

// The taps of channels c0..c0+CH-1 (conv_w [C, kernel]) into w[e][k] (zero for k >= kernel):
// CH KMAX / 8 16-byte loads when kernel == KMAX (the CH channels' taps are then CH KMAX contiguous
// elements, 16-byte aligned for c0 a multiple of CH), element loads otherwise.
template <typename T, int KMAX, int CH = 8>
__device__ __forceinline__ void load_taps(const T* cw, u32 c0, u32 kernel, float (&w)[CH][KMAX]) {
    static_assert(CH * KMAX % 8 == 0, "whole 16-byte loads");
    if (kernel == KMAX) {
#pragma unroll
        for (u32 j = 0; j < CH * KMAX / 8; ++j) {
            float x[8];
            load8(cw + (u64)c0 * KMAX + j * 8, x);
#pragma unroll
            for (u32 e = 0; e < 8; ++e) w[(j * 8 + e) / KMAX][(j * 8 + e) % KMAX] = x[e];
        }
    } else {
#pragma unroll
        for (u32 e = 0; e < CH; ++e)
#pragma unroll
            for (u32 k = 0; k < KMAX; ++k) w[e][k] = k < kernel ? widen(cw[(u64)(c0 + e) * kernel + k]) : 0.0f;
    }
}

#define CONV_VEC_CH 4

// conv_out_vec{4,8}_*(proj, alpha, nscale, conv_norm, conv_w, tokens, m, d, kernel, dil, starts, conv,
// status|null, out): conv_out for CONV_VEC_CH (4) channels of one branch per thread,
// walking a chain of CONV_VEC_RUN tokens dil apart (t0, t0 + dil, ...): the convolution's taps of
// a token are the chain's previous kernel - 1 tokens, so their normed values stay in registers and
// each value row is loaded once (plus kernel - 1 rows before the chain's first token), 8-byte
// loads and stores, the channels' weights in registers (kernel at most 4 or 8). starts[t] is the
// first position of t's sequence (hash_rows_fast's), so that no thread searches cu_seqlens: each
// thread's loads wait for no other load, only for the previous token's store (its output may
// alias, for the compiler, the next token's input). Requirements (host-checked): d a multiple of
// 8, proj, out, conv_norm and conv_w 16-byte aligned, dil >= 1, starts[t] <= t.
// Four channels rather than eight keep the weights and history in half the registers, so twice
// the warps are resident (on an H100 this took the kernel from 273 to 170 us).
// Grid (chains cblocks), chains = ceil(tokens / (CONV_VEC_RUN dil)) dil, cblocks = ceil(m d /
// CONV_VEC_CH / 128); block 128. Block x is channel block x % cblocks of chain c = x / cblocks,
// and chain c is chain c % dil of the span of CONV_VEC_RUN dil tokens starting at
// (c / dil) CONV_VEC_RUN dil.
template <typename T, int KMAX, int CH = CONV_VEC_CH>
__device__ void conv_out_vec_impl(const T* proj, const T* alpha, const float* nscale, const T* cn, const T* cw,
                                  u32 tokens, u32 m, u32 d, u32 kernel, u32 dil, const u32* starts, u32 conv,
                                  T* out) {
    // Consecutive blocks take the channel blocks of one chain (every branch reads the same value
    // columns), so a token's value row is read from memory once and from L2 by the other branches.
    const u32 md = m * d, cblocks = (md / CH + blockDim.x - 1) / blockDim.x;
    const u32 x = blockIdx.x / cblocks, q = (blockIdx.x - x * cblocks) * blockDim.x + threadIdx.x;
    const u32 span = x / dil, chain = x - span * dil;
    const u32 t0 = span * CONV_VEC_RUN * dil + chain;
    if (q * CH >= md || t0 >= tokens) return;
    const u32 c0 = q * CH, b = c0 / d, ch0 = c0 - b * d;
    const u64 row = (u64)(m + 1) * d;
    // wb[e][j]: the tap j tokens back along the chain (j = 0 the token itself), zero for j >= kernel.
    // hist[j][e]: the normed value j + 1 steps back along the chain, zero before the sequence start.
    float wb[CH][KMAX], nw[CH], hist[KMAX - 1][CH];
    if (conv) {
        float w[CH][KMAX];
        loadv<T, CH>(cn + c0, nw);
        load_taps<T, KMAX, CH>(cw, c0, kernel, w);
#pragma unroll
        for (u32 e = 0; e < CH; ++e)
#pragma unroll
            for (u32 j = 0; j < KMAX; ++j) {
                float x = 0.0f;
#pragma unroll
                for (u32 k = 0; k < KMAX; ++k)
                    if (k + 1 + j == kernel) x = w[e][k];
                wb[e][j] = x;
            }
    }
    auto normed = [&](u64 t, float (&x)[CH]) {
        loadv<T, CH>(proj + t * row + md + ch0, x);
        const float sc = nscale[t * m + b];
#pragma unroll
        for (u32 e = 0; e < CH; ++e) x[e] = round_to<T>(sc * x[e] * nw[e]);
    };
    if (conv) {
        // The chain's history before t0, every row that exists loaded at once (none waits for
        // t0's sequence start); taps before the start are zeroed at each token below.
#pragma unroll
        for (u32 j = 0; j + 1 < KMAX; ++j) {
            const u32 back = (j + 1) * dil;
            if (j + 1 < kernel && t0 >= back) {
                normed(t0 - back, hist[j]);
            } else {
#pragma unroll
                for (u32 e = 0; e < CH; ++e) hist[j][e] = 0.0f;
            }
        }
    }
    // Unrolled, so that the history's shift is register renaming rather than moves.
#pragma unroll
    for (u32 i = 0; i < CONV_VEC_RUN; ++i) {
        const u32 t = t0 + i * dil;
        if (t >= tokens) break;
        // Nothing before t's sequence is a tap: hist[j], (j + 1) dil back, only from its start on.
        const u32 start = starts[t];
#pragma unroll
        for (u32 j = 0; j + 1 < KMAX; ++j)
#pragma unroll
            for (u32 e = 0; e < CH; ++e)
                if (t < start + (j + 1) * dil) hist[j][e] = 0.0f;
        float v[CH], o[CH];
        loadv<T, CH>(proj + (u64)t * row + md + ch0, v);
        const float a = widen(alpha[(u64)t * m + b]);
#pragma unroll
        for (u32 e = 0; e < CH; ++e) o[e] = round_to<T>(a * v[e]);
        if (conv) {
            const float sc = nscale[(u64)t * m + b];
            float cur[CH];
#pragma unroll
            for (u32 e = 0; e < CH; ++e) cur[e] = round_to<T>(sc * v[e] * nw[e]);
#pragma unroll
            for (u32 e = 0; e < CH; ++e) {
                // Oldest tap first, as the oracle sums.
                float acc = 0.0f;
#pragma unroll
                for (u32 j = KMAX - 1; j >= 1; --j) acc += wb[e][j] * hist[j - 1][e];
                acc += wb[e][0] * cur[e];
                o[e] = o[e] + silu(acc);
            }
#pragma unroll
            for (u32 j = KMAX - 2; j >= 1; --j)
#pragma unroll
                for (u32 e = 0; e < CH; ++e) hist[j][e] = hist[j - 1][e];
#pragma unroll
            for (u32 e = 0; e < CH; ++e) hist[0][e] = cur[e];
        }
        storev<T, CH>(out + (u64)t * md + c0, o);
    }
}

// One decode step of the value, convolution and SiLU for eight channels c0.. (branch b, channel
// ch0.. of it) of sequence s, the branch's gate a and norm scale sc given: out gets
// a v + conv(...) SiLU(conv(...)), the convolution history shifts by one and ends with this
// step's normed value (conv != 0; `kernel` taps at most KMAX, `dil` apart).
template <typename T, int KMAX>
__device__ __forceinline__ void conv_decode_chunk(const T* proj, float a, float sc, const T* cn, const T* cw, u64 s,
                                                  u32 c0, u32 ch0, u32 m, u32 d, u32 kernel, u32 dil, u32 conv,
                                                  T* history, T* out) {
    const u64 md = (u64)m * d, len = (u64)(kernel - 1) * dil;
    float v[8], o[8];
    load8(proj + s * (md + d) + md + ch0, v);
#pragma unroll
    for (u32 e = 0; e < 8; ++e) o[e] = round_to<T>(a * v[e]);
    if (conv) {
        float nw[8], normed[8], acc[8], w[8][KMAX];
        load8(cn + c0, nw);
        load_taps<T, KMAX>(cw, c0, kernel, w);
#pragma unroll
        for (u32 e = 0; e < 8; ++e) {
            normed[e] = round_to<T>(sc * v[e] * nw[e]);
            acc[e] = 0.0f;
#pragma unroll
            for (u32 k = 0; k < KMAX; ++k)
                if (k + 1 == kernel) acc[e] = w[e][k] * normed[e];
        }
        T* h = history + s * len * md;
#pragma unroll
        for (u32 k = 0; k + 1 < KMAX; ++k) {
            if (k + 1 >= kernel) break;
            const u64 back = (u64)(kernel - 1 - k) * dil;
            float x8[8];
            load8(h + (len - back) * md + c0, x8);
#pragma unroll
            for (u32 e = 0; e < 8; ++e) acc[e] += w[e][k] * x8[e];
        }
#pragma unroll
        for (u32 e = 0; e < 8; ++e) o[e] = o[e] + silu(acc[e]);
        shift_history(reinterpret_cast<uint4*>(h + c0), md / 8, len);
        if (len > 0) store8(h + (len - 1) * md + c0, normed);
    }
    store8(out + s * md + c0, o);
}

// gate_conv_decode_vec{4,8}_*(proj, hidden, key_norm, query_norm, conv_norm, conv_w, seqs, m, d,
// kernel, dil, conv, status|null, history, ids_history, ids, keep, alpha, out): the rest of a
// decode step after the projection in one launch: gate_scales_vec, then conv_decode_scaled with
// 16-byte loads (kernel at most 4 or 8), and the id history advanced (push_history). Block x
// (grid-stride over seqs * m) takes branch b = x % m of sequence s = x / m: its gate, summed
// exactly as gate_scales_vec sums it, goes to alpha[s m + b] and scales the convolution of the
// branch's d channels. With status, a step whose ids were bad (*status != ~0) writes nothing.
// Requirements (host-checked): d a multiple of 8; proj, hidden, the norms, conv_w, history and
// out 16-byte aligned. Block GATE_VEC_THREADS (128) threads, no dynamic shared memory.
template <typename T, int KMAX>
__device__ void gate_conv_decode_vec_impl(const T* proj, const T* hidden, const T* kn, const T* qn, const T* cn,
                                          const T* cw, u64 seqs, u32 m, u32 d, u32 kernel, u32 dil, u32 conv,
                                          const u64* status, T* history, u32* ids_history, const u32* ids, u32 keep,
                                          T* alpha, T* out) {
    if (failed(status)) return;
    push_history(ids_history, ids, seqs, keep);
    __shared__ float sh[GATE_VEC_THREADS / 32][4];
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, chunks = d / 8;
    const u64 md = (u64)m * d;
    for (u64 x = blockIdx.x; x < seqs * m; x += gridDim.x) {
        const u64 s = x / m;
        const u32 b = (u32)(x - s * m);
        const T* p = proj + s * (md + d);
        float sk, sq, sd;
        gate_partial_sums(p + (u64)b * d, hidden + (s * m + b) * d, kn + (u64)b * d, qn + (u64)b * d, chunks, sk, sq,
                          sd);
        const float sv = warp_sum(conv ? value_partial_sum(p + md, chunks) : 0.0f);
        sk = warp_sum(sk);
        sq = warp_sum(sq);
        sd = warp_sum(sd);
        if (lane == 0) {
            sh[warp][0] = sk;
            sh[warp][1] = sq;
            sh[warp][2] = sd;
            sh[warp][3] = sv;
        }
        __syncthreads();
        // Every thread adds up the warps' sums in gate_scales_vec's order.
        sk = 0.0f, sq = 0.0f, sd = 0.0f;
        float v2 = 0.0f;
#pragma unroll
        for (u32 w = 0; w < GATE_VEC_THREADS / 32; ++w) {
            sk += sh[w][0];
            sq += sh[w][1];
            sd += sh[w][2];
            v2 += sh[w][3];
        }
        const float a = gate_alpha<T>(sk, sq, sd, d), sc = conv ? norm_scale(a, v2, d) : 0.0f;
        if (threadIdx.x == 0) alpha[x] = narrow<T>(a);
        for (u32 i = threadIdx.x; i < chunks; i += GATE_VEC_THREADS)
            conv_decode_chunk<T, KMAX>(proj, a, sc, cn, cw, s, b * d + i * 8, i * 8, m, d, kernel, dil, conv, history,
                                       out);
        // sh is read again for the next branch.
        __syncthreads();
    }
}

#define FUSED_INSTANTIATE(NAME, T)                                                                                    \
    extern "C" __global__ void __launch_bounds__(PROJ_THREADS, 2) proj_mma_##NAME(PROJ_KERNEL_PARAMS(T)) {            \
        proj_mma_impl<T, 128>(PROJ_KERNEL_ARGS(T));                                                                   \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(PROJ_THREADS, 1) proj_mma_wide_##NAME(PROJ_KERNEL_PARAMS(T)) {       \
        proj_mma_impl<T, 256>(PROJ_KERNEL_ARGS(T));                                                                   \
    }                                                                                                                 \
    extern "C" __global__ void gate_scales_##NAME(const T* proj, const T* hidden, const T* kn, const T* qn, u64 tokens, \
                                                  u32 m, u32 d, u32 with_norm, const u64* status, T* alpha,           \
                                                  float* nscale) {                                                    \
        if (failed(status)) return;                                                                                   \
        gate_scales_impl<T>(proj, hidden, kn, qn, tokens, m, d, with_norm, alpha, nscale);                            \
    }                                                                                                                 \
    extern "C" __global__ void gate_from_sums_##NAME(const float4* sums, u32 seg, u64 tokens, u32 m, u32 d,           \
                                                     u32 with_norm, const u64* status, T* alpha, float* nscale) {     \
        if (failed(status)) return;                                                                                   \
        gate_from_sums_impl<T>(sums, seg, tokens, m, d, with_norm, alpha, nscale);                                    \
    }                                                                                                                 \
    extern "C" __global__ void conv_out_##NAME(const T* proj, const T* alpha, const float* nscale, const T* cn,       \
                                               const T* cw, u64 tokens, u32 m, u32 d, u32 kernel, u32 dil,            \
                                               const u32* cu, u32 seqs, u32 conv, const u64* status, T* out) {        \
        if (failed(status)) return;                                                                                   \
        conv_out_impl<T>(proj, alpha, nscale, cn, cw, tokens, m, d, kernel, dil, cu, seqs, conv, out);                \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(GATE_VEC_THREADS)                                                 \
        gate_scales_vec_##NAME(const T* proj, const T* hidden, const T* kn, const T* qn, u64 tokens, u32 m, u32 d,    \
                               u32 with_norm, const u64* status, T* alpha, float* nscale) {                           \
        if (failed(status)) return;                                                                                   \
        gate_scales_vec_impl<T>(proj, hidden, kn, qn, tokens, m, d, with_norm, alpha, nscale);                        \
    }                                                                                                                 \
    extern "C" __global__ void conv_out_vec4_##NAME(const T* proj, const T* alpha, const float* nscale, const T* cn,  \
                                                    const T* cw, u32 tokens, u32 m, u32 d, u32 kernel, u32 dil,       \
                                                    const u32* starts, u32 conv, const u64* status, T* out) {         \
        if (failed(status)) return;                                                                                   \
        conv_out_vec_impl<T, 4>(proj, alpha, nscale, cn, cw, tokens, m, d, kernel, dil, starts, conv, out);           \
    }                                                                                                                 \
    extern "C" __global__ void conv_out_vec8_##NAME(const T* proj, const T* alpha, const float* nscale, const T* cn,  \
                                                    const T* cw, u32 tokens, u32 m, u32 d, u32 kernel, u32 dil,       \
                                                    const u32* starts, u32 conv, const u64* status, T* out) {         \
        if (failed(status)) return;                                                                                   \
        conv_out_vec_impl<T, 8>(proj, alpha, nscale, cn, cw, tokens, m, d, kernel, dil, starts, conv, out);           \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(GATE_VEC_THREADS)                                                    \
        gate_conv_decode_vec4_##NAME(const T* proj, const T* hidden, const T* kn, const T* qn, const T* cn,           \
                                     const T* cw, u64 seqs, u32 m, u32 d, u32 kernel, u32 dil, u32 conv,              \
                                     const u64* status, T* history, u32* ids_history, const u32* ids, u32 keep,       \
                                     T* alpha, T* out) {                                                              \
        gate_conv_decode_vec_impl<T, 4>(proj, hidden, kn, qn, cn, cw, seqs, m, d, kernel, dil, conv, status, history, \
                                        ids_history, ids, keep, alpha, out);                                          \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(GATE_VEC_THREADS)                                                    \
        gate_conv_decode_vec8_##NAME(const T* proj, const T* hidden, const T* kn, const T* qn, const T* cn,           \
                                     const T* cw, u64 seqs, u32 m, u32 d, u32 kernel, u32 dil, u32 conv,              \
                                     const u64* status, T* history, u32* ids_history, const u32* ids, u32 keep,       \
                                     T* alpha, T* out) {                                                              \
        gate_conv_decode_vec_impl<T, 8>(proj, hidden, kn, qn, cn, cw, seqs, m, d, kernel, dil, conv, status, history, \
                                        ids_history, ids, keep, alpha, out);                                          \
    }                                                                                                                 \
    extern "C" __global__ void capture_conv_scaled_##NAME(const T* proj, const float* nscale, const T* cn,            \
                                                          const u32* cu, u64 seqs, u32 m, u32 d, u32 hist,            \
                                                          const u64* status, T* state) {                              \
        if (failed(status)) return;                                                                                   \
        capture_conv_scaled_impl<T>(proj, nscale, cn, cu, seqs, m, d, hist, state);                                   \
    }                                                                                                                 \
    extern "C" __global__ void conv_decode_scaled_##NAME(const T* proj, const T* alpha, const float* nscale,          \
                                                         const T* cn, const T* cw, u64 seqs, u32 m, u32 d,            \
                                                         u32 kernel, u32 dil, u32 conv, const u64* status,            \
                                                         T* history, u32* ids_history, const u32* ids, u32 keep,      \
                                                         T* out) {                                                    \
        conv_decode_scaled_impl<T>(proj, alpha, nscale, cn, cw, seqs, m, d, kernel, dil, conv, status, history,       \
                                   ids_history, ids, keep, out);                                                      \
    }

FUSED_INSTANTIATE(bf16, __nv_bfloat16)
FUSED_INSTANTIATE(f16, __half)
