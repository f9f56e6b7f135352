// The stacked projection on Hopper's warpgroup tensor cores (wgmma, sm_90a only): the same job
// and parameters as proj_mma_* in fused.cu, with each warpgroup's 64 x 128 products read by the
// tensor cores straight from shared memory (no ldmatrix through registers). Compiled for
// compute_90a by tools/gen_ptx.py, one module per projection (hopper_<name>.ptx, HOPPER_FAMILY at
// the end); the backend loads the one it uses, on sm_90 devices only, and otherwise keeps the
// mma.sync kernels. Launch contracts are written above each kernel.
#include "common.cuh"

#define WG_THREADS 256

// A shared-memory matrix descriptor for wgmma: a K-major tile of 128-byte rows in the tile_offset
// layout (128-byte swizzle, bits 62-63 = 1), 8-row groups 1024 bytes apart (stride offset, bits
// 32-45), leading offset 1 (unused by swizzled K-major tiles), start address >> 4 in bits 0-13.
// The tile must start 1024-byte aligned; the k-th 16-element slice of its rows starts 32 k bytes
// further (the hardware applies the swizzle to the sum).
__device__ __forceinline__ u64 tile_descriptor(u32 addr) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

// A tensor map (CUtensorMap: 128 opaque bytes, 64-byte aligned) made on the host by
// cuTensorMapEncodeTiled and passed by value as a __grid_constant__ kernel parameter.
struct __align__(64) TensorMap {
    u64 opaque[16];
};

#ifndef ENGRAM_CPU_DRIVER  // the CPU stand-in driver (../cpu-driver) gives these their PTX meaning in C++
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Orders shared-memory writes made through the generic proxy (completed cp.async copies: this
// thread's, or other threads' seen through a barrier) before the tensor cores' async-proxy reads.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Ties the accumulators to the surrounding asm so that no read or write of them moves across a
// wgmma issue or wait.
__device__ __forceinline__ void fence_accumulators(float (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64 x 128] += A[64 x 16] B[128 x 16]^T for the warpgroup, both operands K-major in shared
// memory. Accumulator layout: warp w of the warpgroup, lane l, d[4 j + e] is row 16 w + l / 4 +
// 8 (e / 2), column 8 j + 2 (l % 4) + e % 2.
template <typename T> struct Wgmma;
// The one instruction for element type TY (the PTX type name), accumulators in d.
#define WGMMA_M64N128K16(T, TY)                                                                                      \
    template <> struct Wgmma<T> {                                                                                    \
        static __device__ __forceinline__ void run(float (&d)[64], u64 desc_a, u64 desc_b) {                         \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                                  \
                         "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                                \
                         "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "  \
                         "%64, %65, p, 1, 1, 0, 0;\n}\n"                                                             \
                         : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
                         : "l"(desc_a), "l"(desc_b));                                                               \
        }                                                                                                            \
    };
WGMMA_M64N128K16(__nv_bfloat16, "bf16")
WGMMA_M64N128K16(__half, "f16")

// mbarrier helpers (shared::cta addresses).
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}
// Arrives on the barrier once every cp.async this thread issued so far has landed (counted as
// one of the barrier's expected arrivals).
__device__ __forceinline__ void mbar_arrive_on_copies(u32 bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Returns once the phase of the given parity has completed.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    u32 done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}
// Makes the mbarrier initialisations above visible to the other threads and to the copy engine
// (before the block synchronises and the first bulk copy names them).
__device__ __forceinline__ void fence_mbarrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Arrives on the barrier and adds `bytes` to the transactions its current phase waits for (the
// bulk copies that complete on it).
__device__ __forceinline__ void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// The box of a 2-D tensor map at element coordinates (c0 innermost, c1) into shared memory at
// dst by the copy engine (TMA), its bytes completing as transactions on the mbarrier bar;
// elements outside the tensor arrive as zeros.
__device__ __forceinline__ void tma_load_2d(u32 dst, const TensorMap* map, u32 c0, u32 c1, u32 bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
                 "[%4];\n" ::"r"(dst),
                 "l"(map), "r"(c0), "r"(c1), "r"(bar)
                 : "memory");
}
#endif


// f(row, col, v0, v1) for each pair of adjacent outputs a lane holds in NB wgmma accumulators
// (the m64n128 layout above; accumulator b starts at row0 + b row_step, col0 + b col_step), those
// inside the layer only.
template <int NB, typename F>
__device__ __forceinline__ void wgmma_each_pair(const float (&acc)[NB][64], u32 row0, u32 row_step, u32 col0,
                                                u32 col_step, u32 lane, u32 tokens, u32 N, F&& f) {
#pragma unroll
    for (u32 b = 0; b < NB; ++b)
#pragma unroll
        for (u32 j = 0; j < 16; ++j) {
            const u32 col = col0 + b * col_step + j * 8 + (lane & 3) * 2;
            if (col >= N) continue;
#pragma unroll
            for (u32 half = 0; half < 2; ++half) {
                const u32 row = row0 + b * row_step + (lane >> 2) + half * 8;
                if (row >= tokens) continue;
                f(row, col, acc[b][4 * j + 2 * half], acc[b][4 * j + 2 * half + 1]);
            }
        }
}

// The outputs a lane holds in NB wgmma accumulators (as wgmma_each_pair), with the gate's sums
// formed instead of the key columns (GateSums, segments of 128 columns: accumulator b is one
// segment, columns col0 + b col_step.., of rows row0 + b row_step..). Every lane of the warp
// calls it.
template <typename T, int NB>
__device__ __forceinline__ void wgmma_gate_epilogue(const float (&acc)[NB][64], u32 row0, u32 row_step, u32 col0,
                                                    u32 col_step, u32 lane, u32 tokens, u32 N, const T* bias, T* y,
                                                    const GateSums<T>& g) {
#pragma unroll
    for (u32 b = 0; b < NB; ++b) {
        const u32 c0 = col0 + b * col_step;
        if (c0 >= N) continue;  // the same for the whole warp: N is a multiple of 128 here
        const u32 branch = c0 / g.d, ch0 = c0 - branch * g.d;
        const bool key = branch < g.m;
        float4 s[2] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (u32 j = 0; j < 16; ++j) {
            const u32 off = j * 8 + (lane & 3) * 2;
            const GatePairConsts c = gate_pair_consts(g, bias, key, branch, c0 + off, ch0 + off);
#pragma unroll
            for (u32 half = 0; half < 2; ++half) {
                const u32 row = row0 + b * row_step + (lane >> 2) + half * 8;
                if (row < tokens)
                    gate_epilogue_pair(g, c, key, branch, ch0 + off, y, N, row, c0 + off, acc[b][4 * j + 2 * half],
                                       acc[b][4 * j + 2 * half + 1], s[half]);
            }
        }
#pragma unroll
        for (u32 half = 0; half < 2; ++half)
            store_gate_sums(g.sums, N / 128, c0 / 128, row0 + b * row_step + (lane >> 2) + half * 8, tokens, s[half],
                            lane);
    }
}

// proj_wgmma_*(table, d_head, offsets, rows, heads, gather, w, bias, tokens, K, N, splits, partial,
// counters, y, hidden, key_norm, query_norm, m, d, sums, history, ids, mult, sizes, magic, shift, keep,
// k, vocab, status): proj_mma_* (fused.cu) computed by wgmma: 128 tokens x BN outputs per block,
// two warpgroups of 64 tokens each, STAGES k-tiles of 64 through cp.async (the loads run
// STAGES - 2 k-tiles ahead while one k-tile's wgmma group is still running). Same requirements,
// split-K counters (warp = 4 warpgroup + warp in it), gate sums and decode windows as
// proj_mma_*, the sums in segments of 128 columns (d a multiple of 128).
// proj_wgmma_*: BN = 128, 3 stages, two blocks per multiprocessor (the measured fastest on an
// H100, benches/NOTES.md); proj_wgmma_wide_*: BN = 256, 4 stages, one block. Grid (ceil(N/BN),
// ceil(tokens/128), splits), block 256, dynamic shared memory 1024 (alignment slack) + STAGES
// (128 + BN) 128 bytes + 512 heads bytes (the row table; 0 without gather), the function's limit
// raised to that.
// proj_wgmma_tma_*(..., status, w_map) and proj_wgmma_wide_tma_*: proj_wgmma_* and
// proj_wgmma_wide_* with each B tile brought by the copy engine: w_map is a tensor map of w
// ([N, K] 16-bit elements, K innermost; box 64 x BN, 128-byte swizzle, no interleave, zero
// fill: cuTensorMapEncodeTiled) passed by value, and thread 0 issues one tensor copy per
// k-tile, completing on that stage's mbarrier, where 256 threads issued 4 BN cp.async. Dynamic
// shared memory 64 bytes more (the stages' mbarriers, between the stages and the row table).
// proj_wgmma_tma_ab_*(..., status, w_map, a_map) and proj_wgmma_wide_tma_ab_*: the two above for
// a matrix of rows gathered beforehand (gather 0: table is the [tokens, K] matrix, K a multiple
// of 8, 16-byte aligned), its tiles brought by the copy engine too: a_map is a tensor map of
// it ([tokens, K] 16-bit elements, K innermost; box 64 x 128, 128-byte swizzle, zero fill), and
// thread 0 issues both tensor copies of a k-tile on the stage's mbarrier; no thread issues a
// cp.async. Same shared memory as the _tma kernels (the row table unused).
template <typename T, int BN, int STAGES, bool TMA_B = false, bool TMA_A = false>
__device__ void proj_wgmma_impl(const T* table, u32 d_head, const u64* offsets, const RowSource src, u32 heads,
                                u32 gather, const T* w, const T* bias, u32 tokens, u32 K, u32 N, u32 splits,
                                float* partial, u32* counters, T* y, const GateSums<T> g,
                                const TensorMap* w_map = nullptr, const TensorMap* a_map = nullptr) {
    // One wgmma group stays in flight behind the one just issued; the loads run AHEAD k-tiles
    // in front of it, in the stages neither group reads.
    static_assert(STAGES >= 3, "at least one stage loading");
    static_assert(TMA_B || !TMA_A, "A by tensor copies only beside B by tensor copies");
    constexpr u32 NB = BN / 128, AHEAD = STAGES - 2;
    constexpr u32 A_BYTES = PROJ_BM * PROJ_BK * 2, STAGE_BYTES = (PROJ_BM + BN) * PROJ_BK * 2;
    extern __shared__ __align__(1024) unsigned char smem[];
    // Swizzled tiles must start on 1024-byte boundaries.
    const u32 raw = smem_addr(smem), base = (raw + 1023) & ~1023u;
    unsigned char* aligned = smem + (base - raw);
    const u32 tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const u32 n0 = blockIdx.x * BN, m0 = blockIdx.y * PROJ_BM;
    // With TMA_B, stage s's copy of B completes on the mbarrier at full + 8 s.
    const u32 full = base + STAGES * STAGE_BYTES;
    u32* row_table = reinterpret_cast<u32*>(aligned + STAGES * STAGE_BYTES + (TMA_B ? 64 : 0));
    if (TMA_B && tid == 0) {
#pragma unroll
        for (u32 s = 0; s < STAGES; ++s) mbar_init(full + 8 * s, 1);
        fence_mbarrier_init();
    }
    const u32 ktiles = (K + PROJ_BK - 1) / PROJ_BK, per_split = (ktiles + splits - 1) / splits;
    const u32 kt_begin = blockIdx.z * per_split, kt_end = min(kt_begin + per_split, ktiles);
    const bool whole = kt_end - kt_begin <= STAGES;
    // With TMA_A the A tile comes with the B tile's tensor copy (load_b), on one mbarrier phase.
    auto load_a = [&](u32 stage, u32 k0) {
        if (!TMA_A)
            load_proj_a<T, PROJ_BM, WG_THREADS>(base + stage * STAGE_BYTES, k0, table, d_head, row_table, heads,
                                                gather, m0, tokens, K, tid);
    };
    // With TMA_B thread 0 issues the tensor copy (its mbarrier initialised above, in its own
    // program order), and with TMA_A the A tile's too, else every thread its share of cp.async.
    auto load_b = [&](u32 stage, u32 k0) {
        const u32 a_base = base + stage * STAGE_BYTES, b_base = a_base + A_BYTES;
        if (!TMA_B) {
            load_proj_b<T, BN, WG_THREADS>(b_base, k0, w, n0, K, N, tid);
        } else if (tid == 0) {
            mbar_arrive_expect_tx(full + 8 * stage, (TMA_A ? A_BYTES : 0) + BN * PROJ_BK * 2);
            if (TMA_A) tma_load_2d(a_base, a_map, k0, m0, full + 8 * stage);
            tma_load_2d(b_base, w_map, k0, n0, full + 8 * stage);
        }
    };
    auto load_stage = [&](u32 stage, u32 k0) {
        load_a(stage, k0);
        load_b(stage, k0);
    };
    if (whole) issue_share<STAGES>(load_b, kt_begin, kt_end);
    record_source_status(src, tokens, threadIdx.x, WG_THREADS);
    if (gather) fill_row_table<PROJ_BM, WG_THREADS>(row_table, offsets, src, heads, m0, tokens, threadIdx.x);
    if (gather || TMA_B) __syncthreads();
    // With TMA_B: waits for the B tile of the block's i-th k-tile (stage i % STAGES, that stage's
    // (i / STAGES)-th use, so its phase parity).
    auto wait_b = [&](u32 i) {
        if (TMA_B) mbar_wait(full + 8 * (i % STAGES), (i / STAGES) & 1);
    };

    float acc[NB][64];
#pragma unroll
    for (u32 b = 0; b < NB; ++b)
#pragma unroll
        for (u32 e = 0; e < 64; ++e) acc[b][e] = 0.0f;

    // The wgmma of k-tile kt_begin + s, whose copies are in stage s % STAGES.
    auto mma_stage = [&](u32 s) {
        const u32 a_base = base + (s % STAGES) * STAGE_BYTES, b_base = a_base + A_BYTES;
        const u64 da = tile_descriptor(a_base + wg * 64 * 128);
#pragma unroll
        for (u32 kk = 0; kk < PROJ_BK / 16; ++kk)
#pragma unroll
            for (u32 b = 0; b < NB; ++b)
                Wgmma<T>::run(acc[b], da + 2 * kk, tile_descriptor(b_base + b * 128 * 128) + 2 * kk);
    };

    if (whole) {
        issue_share<STAGES>(load_a, kt_begin, kt_end);
        cp_async_commit();
        cp_async_wait<0>();
#pragma unroll
        for (u32 s = 0; s < STAGES; ++s)
            if (kt_begin + s < kt_end) wait_b(s);
        fence_async_shared();
        __syncthreads();
        // Each k-tile a wgmma group of its own, waited for before the next: accumulators that
        // a skipped k-tile leaves as they are must not be in flight where the paths join.
#pragma unroll
        for (u32 s = 0; s < STAGES; ++s)
            if (kt_begin + s < kt_end) {
                wgmma_fence();
                mma_stage(s);
                wgmma_commit();
#pragma unroll
                for (u32 b = 0; b < NB; ++b) fence_accumulators(acc[b]);
                wgmma_wait<0>();
#pragma unroll
                for (u32 b = 0; b < NB; ++b) fence_accumulators(acc[b]);
            }
    } else {
#pragma unroll
        for (u32 s = 0; s < AHEAD; ++s) {
            load_stage(s, (kt_begin + s) * PROJ_BK);
            cp_async_commit();
        }
        for (u32 kt = kt_begin; kt < kt_end; ++kt) {
            const u32 i = kt - kt_begin;
            // This thread's copies of k-tile i have landed; after the barrier everyone's have,
            // and both warpgroups have finished the wgmma group of k-tile i - 2 (each waits below
            // until at most one group is in flight), so its stage, the one k-tile i + AHEAD goes
            // to, can be refilled.
            cp_async_wait<AHEAD - 1>();
            wait_b(i);
            fence_async_shared();
            __syncthreads();
            if (kt + AHEAD < kt_end) load_stage((i + AHEAD) % STAGES, (kt + AHEAD) * PROJ_BK);
            cp_async_commit();
            wgmma_fence();
            mma_stage(i);
            wgmma_commit();
#pragma unroll
            for (u32 b = 0; b < NB; ++b) fence_accumulators(acc[b]);
            wgmma_wait<1>();
        }
        wgmma_wait<0>();
#pragma unroll
        for (u32 b = 0; b < NB; ++b) fence_accumulators(acc[b]);
        cp_async_wait<0>();
    }

    const u32 row0 = m0 + wg * 64 + warp * 16;
    if (splits == 1 && g.sums) {
        wgmma_gate_epilogue<T, NB>(acc, row0, 0, n0, 128, lane, tokens, N, bias, y, g);
        return;
    }
    if (splits == 1) {
        wgmma_each_pair<NB>(acc, row0, 0, n0, 128, lane, tokens, N, [&](u32 row, u32 col, float v0, float v1) {
            store_output_pair(y, bias, N, row, col, v0, v1);
        });
        return;
    }
    wgmma_each_pair<NB>(acc, row0, 0, n0, 128, lane, tokens, N, [&](u32 row, u32 col, float v0, float v1) {
        store_partial_pair(partial, blockIdx.z, tokens, N, row, col, v0, v1);
    });
    const u32 tile = blockIdx.y * gridDim.x + blockIdx.x;
    if (last_split_block(counters + tile * PROJ_WARPS, splits))
        reduce_split_region(partial, bias, tokens, N, splits, m0, min(PROJ_BM, tokens - m0), n0, BN, threadIdx.x,
                            WG_THREADS, y);
}

// ---- warp-specialised, persistent --------------------------------------------------------------


#define WS_THREADS 384
#define WS_BM 256
#define WS_BN 128
#define WS_STAGES 4

// The tile a persistent block works on: outputs n0.., tokens m0.., k-tiles [kt_begin, kt_end).
struct WsTile {
    u32 n0, m0, kt_begin, kt_end;
};
__device__ __forceinline__ WsTile ws_tile(u32 index, u32 n_tiles, u32 m_tiles, u32 ktiles, u32 splits) {
    const u32 per_split = (ktiles + splits - 1) / splits;
    const u32 nt = index % n_tiles, rest = index / n_tiles, mt = rest % m_tiles, z = rest / m_tiles;
    const u32 kb = z * per_split;
    return WsTile{nt * WS_BN, mt * WS_BM, kb, min(kb + per_split, ktiles)};
}

// proj_wgmma_ws_*(table, d_head, offsets, rows, heads, gather, w, bias, tokens, K, N, splits,
// partial, counters, y, hidden, key_norm, query_norm, m, d, sums, history, ids, mult, sizes, magic,
// shift, keep, k, vocab, status): proj_mma_* (fused.cu) with 256 tokens x 128 outputs per tile
// (gate sums in segments of 128 columns; a decode window's rows hashed by the producer for every
// k-tile), warp-specialised and persistent. Warpgroup 0 issues every cp.async of the block's tiles into a ring of 4 stages, each
// thread's copies arriving on that stage's `full` mbarrier as they land (the producer never
// waits on its own copies, only on a free stage); warpgroups 1 and 2
// (128 tokens each, two m64n128k16 per k16 step) wait on `full`, issue wgmma, and release the
// stage on its `empty` mbarrier once their wgmma has read it; at the end of a tile they write it
// out while the producer already loads the next. Tiles are numbered with the outputs fastest
// (then tokens, then splits) and block b takes tiles b, b + gridDim.x, ...; a split tile's
// counters are counters[(tile mod (output tiles x token tiles)) * 8 + consumer warp]. Same
// requirements as proj_mma_* (the global rows offsets[h] + rows[..] may exceed 2^32 here). Grid (min(tiles,
// multiprocessors)), block 384, dynamic shared memory 1024 + 4 (256 + 128) 128 + 64 bytes, the
// function's limit raised to that.
// proj_wgmma_ws_tma_*(..., status, w_map): proj_wgmma_ws_* with each B tile one tensor copy
// (w_map as proj_wgmma_tma_*'s, box 64 x 128) issued by producer thread 0 with its cp.async of
// A, both completing on the stage's `full` mbarrier. proj_wgmma_ws_tma_ab_*(..., status, w_map,
// a_map): the same for a matrix of rows gathered beforehand (gather 0, a_map as
// proj_wgmma_tma_ab_*'s but box 64 x 256), its A tiles by tensor copies too: the producer is
// thread 0 alone, two tensor copies per k-tile. Same grid, block and shared memory.
template <typename T, bool TMA_B = false, bool TMA_A = false>
__device__ void proj_wgmma_ws_impl(const T* table, u32 d_head, const u64* offsets, const RowSource src, u32 heads,
                                   u32 gather, const T* w, const T* bias, u32 tokens, u32 K, u32 N, u32 splits,
                                   float* partial, u32* counters, T* y, const GateSums<T> g,
                                   const TensorMap* w_map = nullptr, const TensorMap* a_map = nullptr) {
    static_assert(TMA_B || !TMA_A, "A by tensor copies only beside B by tensor copies");
    constexpr u32 A_BYTES = WS_BM * PROJ_BK * 2, STAGE_BYTES = (WS_BM + WS_BN) * PROJ_BK * 2;
    // Arrivals that complete a stage's `full` phase: each producer thread's copies (a
    // cp.async.mbarrier.arrive each), and thread 0's arrive.expect_tx of the tensor copies' bytes.
    constexpr u32 FULL_ARRIVALS = TMA_A ? 1 : 128 + (TMA_B ? 1 : 0);
    extern __shared__ __align__(1024) unsigned char smem[];
    const u32 raw = smem_addr(smem), base = (raw + 1023) & ~1023u;
    const u32 bars = base + WS_STAGES * STAGE_BYTES;  // full[s] at 8 s, empty[s] at 32 + 8 s
    const u32 tid = threadIdx.x, wg = tid >> 7;
    const u32 n_tiles = (N + WS_BN - 1) / WS_BN, m_tiles = (tokens + WS_BM - 1) / WS_BM;
    const u32 ktiles = (K + PROJ_BK - 1) / PROJ_BK, tiles = n_tiles * m_tiles * splits;
    if (tid == 0) {
        for (u32 s = 0; s < WS_STAGES; ++s) {
            mbar_init(bars + 8 * s, FULL_ARRIVALS);  // full: the producer's copies
            mbar_init(bars + 32 + 8 * s, 8);         // empty: one lane per consumer warp
        }
        if (TMA_B) fence_mbarrier_init();
    }
    __syncthreads();

    if (wg == 0) {
        record_source_status(src, tokens, tid, 128);
        // With every tile by tensor copies thread 0 alone produces (no barrier follows).
        if (TMA_A && tid != 0) return;
        // Producer. Thread tid moves chunk c = tid % 8 of rows r0 + 16 i of every stage; for
        // gathered rows it fetches the next k-tile's row ids into registers while the current
        // k-tile's copies are issued, so no copy waits on an id load.
        const u32 c = tid & 7, r0 = tid >> 3, dst = tile_offset(r0, c);
        u32 ids[WS_BM / 16];
        u64 id_offset = 0;
        u32 id_k_in_row = 0;
        auto fetch_ids = [&](const WsTile& tl, u32 kt) {
            const u32 k = kt * PROJ_BK + c * 8;
            if (!gather || k >= K) return;
            const u32 h = k / d_head;
            id_offset = offsets[h];
            id_k_in_row = k - h * d_head;
#pragma unroll
            for (u32 i = 0; i < WS_BM / 16; ++i) {
                const u32 t = tl.m0 + r0 + 16 * i;
                ids[i] = t < tokens ? source_row(src, heads, t, h) : 0u;
            }
        };
        u32 it = 0, tile = blockIdx.x;
        WsTile tl = ws_tile(tile, n_tiles, m_tiles, ktiles, splits);
        u32 kt = tl.kt_begin;
        if (!TMA_A && tile < tiles) fetch_ids(tl, kt);
        while (tile < tiles) {
            const u32 s = it % WS_STAGES;
            if (it >= WS_STAGES) mbar_wait(bars + 32 + 8 * s, ((it / WS_STAGES) - 1) & 1);
            const u32 a_base = base + s * STAGE_BYTES, b_base = a_base + A_BYTES;
            const u32 k = kt * PROJ_BK + c * 8;
            const bool k_in = k < K;
            if (TMA_B && tid == 0) {
                mbar_arrive_expect_tx(bars + 8 * s, (TMA_A ? A_BYTES : 0) + WS_BN * PROJ_BK * 2);
                if (TMA_A) tma_load_2d(a_base, a_map, kt * PROJ_BK, tl.m0, bars + 8 * s);
                tma_load_2d(b_base, w_map, kt * PROJ_BK, tl.n0, bars + 8 * s);
            }
            if (!TMA_A) {
#pragma unroll
                for (u32 i = 0; i < WS_BM / 16; ++i) {
                    const u32 t = tl.m0 + r0 + 16 * i;
                    const bool ok = k_in && t < tokens;
                    const T* src = table;
                    if (ok)
                        src = gather ? table + (id_offset + ids[i]) * d_head + id_k_in_row : table + (u64)t * K + k;
                    cp_async16(a_base + dst + i * 16 * 128, src, ok ? 16 : 0);
                }
            }
            if (!TMA_B) {
                const T* w_row = w + (u64)(tl.n0 + r0) * K + k;
#pragma unroll
                for (u32 i = 0; i < WS_BN / 16; ++i) {
                    const bool ok = k_in && tl.n0 + r0 + 16 * i < N;
                    cp_async16(b_base + dst + i * 16 * 128, ok ? w_row + (u64)i * 16 * K : w, ok ? 16 : 0);
                }
            }
            // The stage's `full` barrier completes when every producer thread's copies landed
            // (and the tensor copies' bytes, with TMA_B).
            if (!TMA_A) mbar_arrive_on_copies(bars + 8 * s);
            ++it;
            if (++kt == tl.kt_end) {
                tile += gridDim.x;
                if (tile >= tiles) break;
                tl = ws_tile(tile, n_tiles, m_tiles, ktiles, splits);
                kt = tl.kt_begin;
            }
            if (!TMA_A) fetch_ids(tl, kt);
        }
        if (!TMA_A) {
            cp_async_commit();
            cp_async_wait<0>();
        }
        return;
    }

    // Consumers: warpgroup cg owns tokens 128 cg .. 128 cg + 127 of each tile.
    const u32 cg = wg - 1, warp = (tid >> 5) & 3, lane = tid & 31;
    float acc[2][64];
    u32 it = 0;
    bool held = false;  // k-tile it - 1's stage not yet released (within a tile)
    for (u32 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const WsTile tl = ws_tile(tile, n_tiles, m_tiles, ktiles, splits);
#pragma unroll
        for (u32 b = 0; b < 2; ++b)
#pragma unroll
            for (u32 e = 0; e < 64; ++e) acc[b][e] = 0.0f;
        for (u32 kt = tl.kt_begin; kt < tl.kt_end; ++kt, ++it) {
            const u32 s = it % WS_STAGES;
            mbar_wait(bars + 8 * s, (it / WS_STAGES) & 1);
            // The copies were made through the generic proxy; wgmma reads through the async one.
            fence_async_shared();
            const u32 a_base = base + s * STAGE_BYTES + cg * 128 * 128, b_base = base + s * STAGE_BYTES + A_BYTES;
            const u64 da0 = tile_descriptor(a_base), da1 = tile_descriptor(a_base + 64 * 128),
                      db = tile_descriptor(b_base);
            wgmma_fence();
#pragma unroll
            for (u32 kk = 0; kk < PROJ_BK / 16; ++kk) {
                Wgmma<T>::run(acc[0], da0 + 2 * kk, db + 2 * kk);
                Wgmma<T>::run(acc[1], da1 + 2 * kk, db + 2 * kk);
            }
            wgmma_commit();
            fence_accumulators(acc[0]);
            fence_accumulators(acc[1]);
            // k-tile it - 1's group is done: its stage goes back to the producer.
            wgmma_wait<1>();
            __syncwarp();
            if (held && lane == 0) mbar_arrive(bars + 32 + 8 * ((it - 1) % WS_STAGES));
            held = true;
        }
        wgmma_wait<0>();
        fence_accumulators(acc[0]);
        fence_accumulators(acc[1]);
        __syncwarp();
        if (lane == 0) mbar_arrive(bars + 32 + 8 * ((it - 1) % WS_STAGES));
        held = false;
        // Accumulator b holds rows row0 + 64 b .. + 15 of the tile.
        const u32 row0 = tl.m0 + cg * 128 + warp * 16;
        if (splits == 1 && g.sums) {
            wgmma_gate_epilogue<T, 2>(acc, row0, 64, tl.n0, 0, lane, tokens, N, bias, y, g);
            continue;
        }
        if (splits == 1) {
            wgmma_each_pair<2>(acc, row0, 64, tl.n0, 0, lane, tokens, N, [&](u32 row, u32 col, float v0, float v1) {
                store_output_pair(y, bias, N, row, col, v0, v1);
            });
            continue;
        }
        const u32 z = tl.kt_begin / ((ktiles + splits - 1) / splits);
        wgmma_each_pair<2>(acc, row0, 64, tl.n0, 0, lane, tokens, N, [&](u32 row, u32 col, float v0, float v1) {
            store_partial_pair(partial, z, tokens, N, row, col, v0, v1);
        });
        // The tile's outputs and tokens, whichever share of k: its counters.
        const u32 region = tile % (n_tiles * m_tiles);
        if (last_split(counters + region * PROJ_WARPS + cg * 4 + warp, splits)) {
            reduce_split_region(partial, bias, tokens, N, splits, row0, 16, tl.n0, WS_BN, lane, 32, y);
            reduce_split_region(partial, bias, tokens, N, splits, row0 + 64, 16, tl.n0, WS_BN, lane, 32, y);
        }
    }
}

// Which projection's kernels a compilation instantiates. tools/gen_ptx.py makes one module per
// projection, hopper_<name>.ptx with HOPPER_FAMILY 1..6 in the order below (the ENGRAM_CUDA_PROJ
// names wgmma, wgmma-wide, wgmma-tma, wgmma-wide-tma, wgmma-ws, wgmma-ws-tma), so that a backend
// has the driver compile only the kernels it launches; 0, the default, is every one (what the
// CPU stand-in compiles).
#ifndef HOPPER_FAMILY
#define HOPPER_FAMILY 0
#endif
#define HOPPER_BUILDS(F) (HOPPER_FAMILY == 0 || HOPPER_FAMILY == (F))
// M(NAME, T) for both 16-bit element types.
#define HOPPER_BOTH(M) M(bf16, __nv_bfloat16) M(f16, __half)

// proj_wgmma##WIDE##_NAME: BN outputs, STAGES stages, BLOCKS blocks per multiprocessor.
#define HOPPER_WGMMA(WIDE, BN, STAGES, BLOCKS, NAME, T)                                                               \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, BLOCKS) proj_wgmma##WIDE##_##NAME(PROJ_KERNEL_PARAMS(T)) { \
        proj_wgmma_impl<T, BN, STAGES>(PROJ_KERNEL_ARGS(T));                                                          \
    }
// The same with the weight tiles by tensor copies (_tma), and with the rows' tiles too (_tma_ab).
#define HOPPER_WGMMA_TMA(WIDE, BN, STAGES, BLOCKS, NAME, T)                                                           \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, BLOCKS)                                                  \
        proj_wgmma##WIDE##_tma_##NAME(PROJ_KERNEL_PARAMS(T), const __grid_constant__ TensorMap w_map) {               \
        proj_wgmma_impl<T, BN, STAGES, true>(PROJ_KERNEL_ARGS(T), &w_map);                                            \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(WG_THREADS, BLOCKS) proj_wgmma##WIDE##_tma_ab_##NAME(                \
        PROJ_KERNEL_PARAMS(T), const __grid_constant__ TensorMap w_map, const __grid_constant__ TensorMap a_map) {   \
        proj_wgmma_impl<T, BN, STAGES, true, true>(PROJ_KERNEL_ARGS(T), &w_map, &a_map);                              \
    }
// Narrow: 128 outputs, 3 stages, two blocks per multiprocessor; wide: 256, 4 stages, one block.
#define HOPPER_NARROW(NAME, T) HOPPER_WGMMA(, 128, 3, 2, NAME, T)
#define HOPPER_WIDE(NAME, T) HOPPER_WGMMA(_wide, 256, 4, 1, NAME, T)
#define HOPPER_NARROW_TMA(NAME, T) HOPPER_WGMMA_TMA(, 128, 3, 2, NAME, T)
#define HOPPER_WIDE_TMA(NAME, T) HOPPER_WGMMA_TMA(_wide, 256, 4, 1, NAME, T)

#if HOPPER_BUILDS(1)
HOPPER_BOTH(HOPPER_NARROW)
#endif
#if HOPPER_BUILDS(2)
HOPPER_BOTH(HOPPER_WIDE)
#endif
#if HOPPER_BUILDS(3)
HOPPER_BOTH(HOPPER_NARROW_TMA)
#endif
#if HOPPER_BUILDS(4)
HOPPER_BOTH(HOPPER_WIDE_TMA)
#endif

#if HOPPER_BUILDS(5)
#define HOPPER_WGMMA_WS(NAME, T)                                                                                      \
    extern "C" __global__ void __launch_bounds__(WS_THREADS, 1) proj_wgmma_ws_##NAME(PROJ_KERNEL_PARAMS(T)) {         \
        proj_wgmma_ws_impl<T>(PROJ_KERNEL_ARGS(T));                                                                   \
    }
HOPPER_BOTH(HOPPER_WGMMA_WS)
#endif

#if HOPPER_BUILDS(6)
#define HOPPER_WGMMA_WS_TMA(NAME, T)                                                                                  \
    extern "C" __global__ void __launch_bounds__(WS_THREADS, 1)                                                       \
        proj_wgmma_ws_tma_##NAME(PROJ_KERNEL_PARAMS(T), const __grid_constant__ TensorMap w_map) {                    \
        proj_wgmma_ws_impl<T, true>(PROJ_KERNEL_ARGS(T), &w_map);                                                     \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(WS_THREADS, 1) proj_wgmma_ws_tma_ab_##NAME(                          \
        PROJ_KERNEL_PARAMS(T), const __grid_constant__ TensorMap w_map, const __grid_constant__ TensorMap a_map) {   \
        proj_wgmma_ws_impl<T, true, true>(PROJ_KERNEL_ARGS(T), &w_map, &a_map);                                       \
    }
HOPPER_BOTH(HOPPER_WGMMA_WS_TMA)
#endif
