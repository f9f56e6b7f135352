// CUDA C++ as ordinary C++ for the CPU stand-in driver: the kernel sources (kernels/engram.cu,
// kernels/fused.cu, kernels/hopper.cu) are compiled by a host compiler after this header, so that the driver in
// driver.cpp can run them. Every CUDA thread of a block is a fiber on the launching host thread;
// __syncthreads and the warp-wide operations (shuffles, ldmatrix, mma.sync) are points where a
// fiber waits for the others (see driver.cpp). Shared memory is thread_local storage of the host
// thread, so blocks run one after another and concurrent launches from several host threads do
// not meet.
//
// Only what the kernel sources use is here. The asynchronous copies (landing at their wait),
// ldmatrix, mma.sync, wgmma (run at its wait), mbarriers and the copy engine's tensor copies
// (landing when a thread waits on their mbarrier) are given their PTX meaning (the sources keep their inline PTX behind
// ENGRAM_CPU_DRIVER).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <deque>
#include <map>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"

#define ENGRAM_CPU_DRIVER 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __grid_constant__
// A block-scope thread_local is static: one copy per host thread, shared by the block's fibers.
#define __shared__ thread_local
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct uint2 {
    unsigned x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// The running fiber's indices (set by the driver each time it resumes a fiber).
extern thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
// The block's dynamic shared memory (every kernel names it smem).
constexpr unsigned EMU_SMEM_BYTES = 232448;
extern thread_local unsigned char smem[EMU_SMEM_BYTES] __attribute__((aligned(1024)));

// Scheduling points, in driver.cpp.
void __syncthreads();
void emu_warp_sync();            // every live lane of the calling fiber's warp arrives
void emu_spin();                 // the calling fiber waits for another to change something
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_sync(); }
// A block barrier that also ORs a predicate over the block. The block's fibers share one host
// thread, so a thread_local is the block's: contributions between the first two barriers, every
// read before the third, and thread 0 clears it for the next call (which begins with a barrier).
inline int __syncthreads_or(int pred) {
    static thread_local int any = 0;
    __syncthreads();
    if (pred) any = 1;
    __syncthreads();
    const int r = any;
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) any = 0;
    return r;
}
unsigned long long* emu_lanes(); // 32 lanes x 8 words of exchange space for the calling warp
inline unsigned emu_lane() { return (threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31; }
[[noreturn]] void emu_fail(const char* what);

// Every lane of the warp gives v and receives the value of lane source(its lane).
template <typename T, typename F> T emu_shuffle(T v, F source) {
    static_assert(sizeof(T) <= 8, "one word per lane");
    unsigned long long* lanes = emu_lanes();
    const unsigned lane = emu_lane();
    std::memcpy(&lanes[lane * 8], &v, sizeof(T));
    emu_warp_sync();
    T r;
    std::memcpy(&r, &lanes[(source(lane) & 31) * 8], sizeof(T));
    emu_warp_sync();
    return r;
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    return emu_shuffle(v, [&](unsigned lane) { return lane ^ (unsigned)lane_mask; });
}
template <typename T> T __shfl_sync(unsigned, T v, int src_lane) {
    return emu_shuffle(v, [&](unsigned) { return (unsigned)src_lane; });
}

template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
// Blocks run one after another on one host thread: every write is seen by the next block.
inline void __threadfence() {}

// One launch runs on one host thread, so the atomics need no more than plain read-modify-write.
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
    const unsigned old = *p;
    if (v < old) *p = v;
    return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;
    return old;
}
inline float atomicAdd(float* p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}

inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float ex2_ftz(float x) { return std::exp2(x); }
template <typename A, typename B> inline auto min(A a, B b) { return b < a ? b : a; }
template <typename A, typename B> inline auto max(A a, B b) { return a < b ? b : a; }

// ---- asynchronous copies, ldmatrix and mma.sync with their PTX meaning ---------------------------

typedef unsigned int u32;

inline u32 __cvta_generic_to_shared(const void* p) {
    const std::ptrdiff_t off = (const unsigned char*)p - smem;
    if (off < 0 || off >= (std::ptrdiff_t)EMU_SMEM_BYTES) emu_fail("a shared address outside the dynamic shared memory");
    return (u32)off;
}

// ---- work a thread has in flight: asynchronous copies and wgmma ----------------------------------

// A cp.async a thread issued, made when its group is waited for (or an mbarrier arrival waits
// for it): the latest moment the hardware may land it, so a kernel that reads a stage before its
// wait reads what was there before (fresh shared memory is all ones: NaN).
struct EmuCopy {
    u32 dst;
    const void* src;
    u32 src_bytes;
    void land() const {
        if (src_bytes) std::memcpy(smem + dst, src, src_bytes);
        std::memset(smem + dst + src_bytes, 0, 16 - src_bytes);
    }
};
// One wgmma a thread issued, run when its group is waited for: the latest moment the hardware
// may read the operands and write the accumulators, so a kernel that refills a stage, or reads
// its accumulators, before the wait sees it go wrong here.
struct EmuWgmma {
    float* d;
    unsigned long long desc_a, desc_b;
    void (*run)(float*, unsigned long long, unsigned long long);
};
// Work issued since the last commit and the committed groups, oldest first.
template <typename W> struct EmuGroups {
    std::vector<W> issued;
    std::deque<std::vector<W>> groups;
    void commit() {
        groups.push_back(std::move(issued));
        issued.clear();
    }
    // Completes every committed group but the newest n.
    template <typename F> void wait(size_t n, F complete) {
        while (groups.size() > n) {
            for (const W& w : groups.front()) complete(w);
            groups.pop_front();
        }
    }
    bool empty() const { return issued.empty() && groups.empty(); }
};
// The calling fiber's work in flight (in driver.cpp; a thread that ends with wgmmas not waited
// for fails the launch).
struct EmuAsync {
    EmuGroups<EmuCopy> copies;
    EmuGroups<EmuWgmma> wgmmas;
};
EmuAsync& emu_async();

// cp.async.cg.shared.global [dst], [src], 16, src_bytes (fewer source bytes than 16 zero-fill
// the rest), cp.async.commit_group and cp.async.wait_group N.
inline void cp_async16(u32 dst, const void* src, u32 src_bytes) {
    if (dst + 16 > EMU_SMEM_BYTES || src_bytes > 16) emu_fail("cp.async out of range");
    emu_async().copies.issued.push_back(EmuCopy{dst, src, src_bytes});
}
inline void cp_async_commit() { emu_async().copies.commit(); }
template <int N> inline void cp_async_wait() {
    emu_async().copies.wait(N, [](const EmuCopy& c) { c.land(); });
}
// Every copy the calling thread issued lands (committed or not), as before an mbarrier arrival
// that waits for them.
inline void emu_land_copies() {
    EmuGroups<EmuCopy>& c = emu_async().copies;
    c.commit();
    c.wait(0, [](const EmuCopy& x) { x.land(); });
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8j..8j+7 give the row addresses of matrix j;
// lane l receives in r[j] elements 2 (l % 4) and 2 (l % 4) + 1 of row l / 4 of matrix j.
inline void ldmatrix_x4(u32 (&r)[4], u32 addr) {
    unsigned long long* lanes = emu_lanes();
    const unsigned lane = emu_lane();
    lanes[lane * 8] = addr;
    emu_warp_sync();
    for (unsigned j = 0; j < 4; ++j) {
        const u32 row = (u32)lanes[(8 * j + lane / 4) * 8];
        if (row + 16 > EMU_SMEM_BYTES) emu_fail("ldmatrix out of range");
        std::memcpy(&r[j], smem + row + (lane % 4) * 4, 4);
    }
    emu_warp_sync();
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, fragments as the PTX ISA lays
// them out (g = lane / 4, t = lane % 4): A's registers hold rows g, g + 8, g, g + 8 at columns
// 2t (+1), 2t (+1), 2t + 8 (+1), 2t + 8 (+1); B's two hold rows 2t (+1) and 2t + 8 (+1) of column
// g; C and D hold rows g, g, g + 8, g + 8 at columns 2t, 2t + 1.
template <typename T> struct Mma {
    static void run(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        unsigned long long* lanes = emu_lanes();
        const unsigned lane = emu_lane();
        for (unsigned i = 0; i < 4; ++i) lanes[lane * 8 + i] = a[i];
        lanes[lane * 8 + 4] = b0;
        lanes[lane * 8 + 5] = b1;
        emu_warp_sync();
        auto half_of = [](unsigned long long word, unsigned k) {
            T x;
            const unsigned short bits = (unsigned short)(word >> (16 * (k & 1)));
            std::memcpy(&x, &bits, 2);
            return widen_emu(x);
        };
        auto a_at = [&](unsigned r, unsigned k) {
            const unsigned src = (r % 8) * 4 + (k % 8) / 2, reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
            return half_of(lanes[src * 8 + reg], k);
        };
        auto b_at = [&](unsigned k, unsigned n) {
            const unsigned src = n * 4 + (k % 8) / 2, reg = k >= 8 ? 1 : 0;
            return half_of(lanes[src * 8 + 4 + reg], k);
        };
        const unsigned g = lane / 4, t = lane % 4;
        float d[4];
        for (unsigned i = 0; i < 4; ++i) {
            const unsigned r = g + (i >= 2 ? 8 : 0), n = 2 * t + (i & 1);
            float acc = c[i];
            for (unsigned k = 0; k < 16; ++k) acc += a_at(r, k) * b_at(k, n);
            d[i] = acc;
        }
        emu_warp_sync();
        for (unsigned i = 0; i < 4; ++i) c[i] = d[i];
    }
};

// ---- wgmma and mbarriers (sm_90a, kernels/hopper.cu) ---------------------------------------------

// Element (row, k) of a wgmma operand in shared memory, by its matrix descriptor: a K-major tile
// of 128-byte rows with the 128-byte swizzle (the only layout hopper.cu uses; any other is
// refused), 8-row groups `stride` bytes apart, the start address >> 4 in bits 0-13. The swizzle
// is a function of the address, as on the hardware: 16-byte chunk bits 4-6 XOR bits 7-9, so a
// tile that does not start on a 1024-byte boundary reads the wrong elements here too.
template <typename T> inline float emu_wgmma_operand(unsigned long long desc, unsigned row, unsigned k) {
    if ((desc >> 62) != 1) emu_fail("wgmma: a descriptor without the 128-byte swizzle (not modelled)");
    if ((desc >> 49) & 7) emu_fail("wgmma: a descriptor with a base offset (not modelled)");
    const unsigned start = (unsigned)(desc & 0x3FFF) << 4, stride = (unsigned)((desc >> 32) & 0x3FFF) << 4;
    const unsigned addr = start + (row / 8) * stride + (row % 8) * 128 + 2 * k;
    const unsigned at = addr ^ (((addr >> 7) & 7) << 4);
    if (at + 2 > EMU_SMEM_BYTES) emu_fail("wgmma operand out of range");
    T x;
    std::memcpy(&x, smem + at, 2);
    return widen_emu(x);
}

// wgmma.mma_async.sync.aligned.m64n128k16.f32.T.T d, desc_a, desc_b, 1, 1, 1, 0, 0 for the
// calling thread, warp w (of its warpgroup) and lane l: d[4 j + e] += row 16 w + l / 4 + 8 (e / 2)
// of A times column 8 j + 2 (l % 4) + e % 2 of B (a row of the B tile), over k = 0..15.
template <typename T>
inline void emu_wgmma_m64n128k16(float* d, unsigned long long desc_a, unsigned long long desc_b) {
    const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned warp = (linear / 32) % 4, lane = linear % 32;
    float a[2][16];
    for (unsigned h = 0; h < 2; ++h)
        for (unsigned k = 0; k < 16; ++k) a[h][k] = emu_wgmma_operand<T>(desc_a, 16 * warp + lane / 4 + 8 * h, k);
    for (unsigned j = 0; j < 16; ++j)
        for (unsigned c = 0; c < 2; ++c) {
            const unsigned col = 8 * j + 2 * (lane % 4) + c;
            float b[16];
            for (unsigned k = 0; k < 16; ++k) b[k] = emu_wgmma_operand<T>(desc_b, col, k);
            for (unsigned h = 0; h < 2; ++h) {
                float sum = 0.0f;
                for (unsigned k = 0; k < 16; ++k) sum += a[h][k] * b[k];
                d[4 * j + 2 * h + c] += sum;
            }
        }
}

template <typename T> struct Wgmma {
    static void run(float (&d)[64], unsigned long long desc_a, unsigned long long desc_b) {
        emu_async().wgmmas.issued.push_back(EmuWgmma{d, desc_a, desc_b, &emu_wgmma_m64n128k16<T>});
    }
};
inline void wgmma_fence() {}
inline void wgmma_commit() { emu_async().wgmmas.commit(); }
template <int N> inline void wgmma_wait() {
    emu_async().wgmmas.wait(N, [](const EmuWgmma& w) { w.run(w.d, w.desc_a, w.desc_b); });
}
// The copies land and the wgmmas run at their waits: no proxy to order.
inline void fence_async_shared() {}
inline void fence_accumulators(float (&)[64]) {}

// An mbarrier's 8 bytes of shared memory: the phase count, and the arrivals a phase expects and
// has still to receive. Counts are 1..65534 here (the hardware allows up to 2^20 - 1), so that
// fresh shared memory (all ones) reads as a barrier never initialised.
struct EmuMbarrier {
    unsigned phase;
    unsigned short expected, pending;
};
// Incremented by every mbarrier initialisation and arrival of this host thread: the driver's
// deadlock check (spinning threads with no arrival in between wait forever).
extern thread_local unsigned long long emu_mbarrier_events;
inline EmuMbarrier& emu_mbarrier(u32 bar) {
    if (bar % 8 || bar + 8 > EMU_SMEM_BYTES) emu_fail("mbarrier address misaligned or out of range");
    return *reinterpret_cast<EmuMbarrier*>(smem + bar);
}

// A tensor map as this stand-in's cuTensorMapEncodeTiled (driver.cpp) writes it into the 128
// opaque bytes of a CUtensorMap: a 2-D tensor of `elem`-byte elements at `address`, dims[0]
// innermost, rows `stride` bytes apart, copied in boxes of box[0] x box[1] elements, with or
// without the 128-byte swizzle.
struct EmuTensorMap {
    unsigned long long magic, address, dims[2], stride;
    unsigned box[2], elem, swizzle128;
};
constexpr unsigned long long EMU_TENSOR_MAP_MAGIC = 0x50414d524f534e54ull;  // "TNSORMAP"
static_assert(sizeof(EmuTensorMap) <= 128, "fits a CUtensorMap");

// A tensor copy in flight: box (c0, c1) of the map into shared memory at dst. It lands when a
// thread waits on its mbarrier (the latest moment the hardware may land it: a kernel that reads
// the stage without that wait reads what was there before).
struct EmuTensorCopy {
    EmuTensorMap map;
    u32 dst, c0, c1;
    // Writes the box (zeros outside the tensor) and returns its bytes.
    unsigned long long land() const {
        const unsigned row_bytes = map.box[0] * map.elem;
        if (map.swizzle128 && dst % 1024) emu_fail("a 128-byte swizzled tensor copy to an address not 1024-byte aligned");
        if (dst + (unsigned long long)row_bytes * map.box[1] > EMU_SMEM_BYTES) emu_fail("tensor copy out of range");
        for (unsigned r = 0; r < map.box[1]; ++r)
            for (unsigned e = 0; e < map.box[0]; ++e) {
                const unsigned long long x = (unsigned long long)c0 + e, y = (unsigned long long)c1 + r;
                u32 at = dst + r * row_bytes + e * map.elem;
                if (map.swizzle128) at ^= ((at >> 7) & 7) << 4;
                if (x < map.dims[0] && y < map.dims[1])
                    std::memcpy(smem + at, (const unsigned char*)map.address + y * map.stride + x * map.elem, map.elem);
                else
                    std::memset(smem + at, 0, map.elem);
            }
        return (unsigned long long)row_bytes * map.box[1];
    }
};
// The transactions of an mbarrier's current phase: the bytes expected and not yet landed, and the
// tensor copies that complete on it. Kept beside shared memory, per host thread as it is.
struct EmuTransactions {
    long long bytes = 0;
    std::vector<EmuTensorCopy> copies;
};
inline std::map<u32, EmuTransactions>& emu_transactions() {
    static thread_local std::map<u32, EmuTransactions> t;
    return t;
}
// The phase completes once every arrival it expects has come and every byte it expects has landed.
inline void emu_mbarrier_try_complete(u32 bar) {
    EmuMbarrier& b = emu_mbarrier(bar);
    if (b.pending == 0 && emu_transactions()[bar].bytes == 0) {
        ++b.phase;
        b.pending = b.expected;
    }
}

inline void mbar_init(u32 bar, u32 count) {
    if (count == 0 || count >= 0xffff) emu_fail("mbarrier count outside 1..65534 (not modelled)");
    emu_mbarrier(bar) = EmuMbarrier{0, (unsigned short)count, (unsigned short)count};
    emu_transactions()[bar] = EmuTransactions{};
    ++emu_mbarrier_events;
}
inline void fence_mbarrier_init() {}
inline void mbar_arrive(u32 bar) {
    EmuMbarrier& b = emu_mbarrier(bar);
    if (b.expected == 0xffff || b.pending == 0 || b.pending > b.expected) emu_fail("arrival on an mbarrier never initialised");
    --b.pending;
    emu_mbarrier_try_complete(bar);
    ++emu_mbarrier_events;
}
// mbarrier.arrive.expect_tx: the phase also waits for `bytes` more of tensor copies.
inline void mbar_arrive_expect_tx(u32 bar, u32 bytes) {
    emu_mbarrier(bar);
    emu_transactions()[bar].bytes += bytes;
    mbar_arrive(bar);
}
// cp.async.bulk.tensor.2d...mbarrier::complete_tx::bytes: box (c0, c1) of the map (a
// TensorMap of kernels/hopper.cu, as EmuTensorMap) to dst, completing on bar.
template <typename Map> inline void tma_load_2d(u32 dst, const Map* map, u32 c0, u32 c1, u32 bar) {
    static_assert(sizeof(Map) == 128, "a CUtensorMap");
    EmuTensorCopy c;
    std::memcpy(&c.map, map, sizeof c.map);
    if (c.map.magic != EMU_TENSOR_MAP_MAGIC) emu_fail("a tensor copy through a map cuTensorMapEncodeTiled did not make");
    c.dst = dst;
    c.c0 = c0;
    c.c1 = c1;
    emu_mbarrier(bar);
    emu_transactions()[bar].copies.push_back(c);
}
// cp.async.mbarrier.arrive.noinc: an arrival once every copy this thread issued has landed.
inline void mbar_arrive_on_copies(u32 bar) {
    emu_land_copies();
    mbar_arrive(bar);
}
// mbarrier.try_wait.parity in a loop: returns once the phase of that parity has completed. A
// wait for the current phase lands its tensor copies first; a wait for the one before returns at
// once, as on the hardware, without them.
inline void mbar_wait(u32 bar, u32 parity) {
    if ((emu_mbarrier(bar).phase & 1) != (parity & 1)) return;
    EmuTransactions& t = emu_transactions()[bar];
    if (!t.copies.empty()) {
        for (const EmuTensorCopy& c : t.copies) t.bytes -= (long long)c.land();
        t.copies.clear();
        emu_mbarrier_try_complete(bar);
        ++emu_mbarrier_events;
    }
    while ((emu_mbarrier(bar).phase & 1) == (parity & 1)) emu_spin();
}

// ---- the kernels the driver can launch -----------------------------------------------------------

// A kernel with its arguments bound, and what binds them from cuLaunchKernel's parameter array.
using EmuBound = std::function<void()>;
using EmuBinder = std::function<EmuBound(void**)>;
void emu_register(const char* name, EmuBinder bind);

// Registers kernel `f` under `name`: a launch copies each argument from the parameter array as
// the kernel's own parameter type.
template <typename... A> struct EmuKernel {
    EmuKernel(const char* name, void (*f)(A...)) {
        emu_register(name, [f](void** p) { return bind(f, p, std::index_sequence_for<A...>{}); });
    }
    template <std::size_t... I> static EmuBound bind(void (*f)(A...), void** p, std::index_sequence<I...>) {
        std::tuple<std::decay_t<A>...> args{*static_cast<std::decay_t<A>*>(p[I])...};
        (void)p;
        return [f, args]() { std::apply(f, args); };
    }
};
#define EMU_KERNEL(name) static EmuKernel emu_kernel_##name(#name, &name);
