// Engram kernels for NVIDIA GPUs (sm_90). Compiled to engram.ptx by tools/gen_ptx.py (NVRTC);
// the PTX is committed and embedded by the crate. Every kernel is `extern "C"`, its name ends with
// the element type (`_f32`, `_f64`, `_f16`, `_bf16`) where it has one, and its launch contract
// (parameters, grid, block, shared memory) is written above it. Semantics: those of the oracle
// functions of the same name in engram_core::reference; 16- and 32-bit floats accumulate in f32,
// f64 in f64.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "grid.cuh"

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float widen(float x) { return x; }
__device__ __forceinline__ double widen(double x) { return x; }
__device__ __forceinline__ float widen(__half x) { return __half2float(x); }
__device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T narrow(typename Acc<T>::type x);
template <> __device__ __forceinline__ float narrow<float>(float x) { return x; }
template <> __device__ __forceinline__ double narrow<double>(double x) { return x; }
template <> __device__ __forceinline__ __half narrow<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 narrow<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float sigmoid_acc(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid_acc(double x) { return 1.0 / (1.0 + exp(-x)); }


// Block-wide sum of up to three values; blockDim.x is a power of two <= 1024, shared memory
// 3 * blockDim.x accumulators.
template <typename A>
__device__ void block_sum3(A& a, A& b, A& c, A* sh) {
    u32 tid = threadIdx.x, n = blockDim.x;
    sh[tid] = a; sh[n + tid] = b; sh[2 * n + tid] = c;
    __syncthreads();
    for (u32 s = n / 2; s > 0; s >>= 1) {
        if (tid < s) {
            sh[tid] += sh[tid + s];
            sh[n + tid] += sh[n + tid + s];
            sh[2 * n + tid] += sh[2 * n + tid + s];
        }
        __syncthreads();
    }
    a = sh[0]; b = sh[n]; c = sh[2 * n];
    __syncthreads();
}

// ---- validation helpers -------------------------------------------------------------------------

// first_ge_u32(v, n, limit, first): *first = min index i with v[i] >= limit (left untouched when
// none). Grid-stride, any grid and block; *first must hold u64::MAX before the launch.
extern "C" __global__ void first_ge_u32(const u32* v, u64 n, u64 limit, u64* first) {
    for (u64 i = global_index(); i < n; i += global_stride())
        if ((u64)v[i] >= limit) atomicMin(first, i);
}

// first_row_beyond(rows, n, heads, sizes, first): *first = min flat index i with
// rows[i] >= sizes[i % heads]. Grid-stride.
extern "C" __global__ void first_row_beyond(const u32* rows, u64 n, u32 heads, const u32* sizes, u64* first) {
    for (u64 i = global_index(); i < n; i += global_stride())
        if (rows[i] >= sizes[mod_u32(i, heads)]) atomicMin(first, i);
}

// first_bad_batch_entry(cu, n_cu, total, ids, n_ids, vocab, status): a packed batch checked in
// one launch, so that the host reads one word back for both (atomicMin, so the oracle's first
// fault wins): when cu_seqlens (n_cu >= 1 entries) does not start at 0, *status <= 0; when it
// decreases somewhere, <= 1; when it does not end at total, <= 2; else, for the first position p
// whose id is at or beyond vocab, (1 << 63) | (p << 32) | id when n_ids < 2^31 (the word then
// says all the error needs, so a replayed graph can report it after its inputs changed), or
// (1 << 63) | p. Left untouched when all is well (all ones before). Grid-stride over
// max(n_cu, n_ids).
extern "C" __global__ void first_bad_batch_entry(const u32* cu, u64 n_cu, u64 total, const u32* ids, u64 n_ids,
                                                 u64 vocab, u64* status) {
    for (u64 i = global_index(); i < n_cu || i < n_ids; i += global_stride()) {
        if (i < n_cu) {
            if (i == 0 && cu[0] != 0) atomicMin(status, 0ull);
            if (i + 1 < n_cu && cu[i + 1] < cu[i]) atomicMin(status, 1ull);
            if (i + 1 == n_cu && (u64)cu[i] != total) atomicMin(status, 2ull);
        }
        if (i < n_ids && (u64)ids[i] >= vocab)
            atomicMin(status, (1ull << 63) | (n_ids < (1ull << 31) ? (i << 32) | ids[i] : i));
    }
}

// ---- ids and hashing ----------------------------------------------------------------------------

// compress_ids(lookup, raw, n, out): out[i] = lookup[raw[i]] (ids checked beforehand). Grid-stride.
extern "C" __global__ void compress_ids(const u32* lookup, const u32* raw, u64 n, u32* out) {
    for (u64 i = global_index(); i < n; i += global_stride()) out[i] = lookup[raw[i]];
}

// Hashing (with reciprocal modulo) lives in fused.cu.

// push_ids(history, ids, seqs, keep, status|null): each sequence's history shifts left by one and
// ends with its new id; nothing is written when status holds an error (anything but all ones).
// One thread per sequence, grid-stride.
extern "C" __global__ void push_ids(u32* history, const u32* ids, u64 seqs, u32 keep, const u64* status) {
    if (failed(status)) return;
    push_history(history, ids, seqs, keep);
}

// capture_ids(ids, cu, seqs, keep, pad, status|null, state): state[s*keep + i] = id at end - keep + i,
// or pad before the start; nothing written when status holds a failure (see failed, grid.cuh). One
// thread per (s, i), grid-stride over seqs*keep.
extern "C" __global__ void capture_ids(const u32* ids, const u32* cu, u64 seqs, u32 keep, u32 pad, const u64* status,
                                       u32* state) {
    if (failed(status)) return;
    for (u64 x = global_index(); x < seqs * keep; x += global_stride()) {
        u64 s = x / keep, i = x % keep;
        u64 start = cu[s], end = cu[s + 1];
        state[x] = (end + i >= keep && end + i - keep >= start) ? ids[end + i - keep] : pad;
    }
}

#define FOR_EACH_DTYPE(X) X(f32, float) X(f64, double) X(f16, __half) X(bf16, __nv_bfloat16)

// ---- per-dtype kernels --------------------------------------------------------------------------

template <typename T>
__device__ void gather_impl(const T* table, u32 d_head, const u64* offsets, u32 heads, const u32* rows, u64 n_rows,
                            const u64* status, T* out) {
    if (failed(status)) return;
    u64 total = n_rows * d_head;
    for (u64 i = global_index(); i < total; i += global_stride()) {
        u64 r = i / d_head, c = i % d_head;
        out[i] = table[(offsets[r % heads] + rows[r]) * d_head + c];
    }
}

template <typename T>
__device__ void rms_norm_impl(const T* x, const T* w, u64 vectors, u32 d, u32 groups, double eps, T* out) {
    typedef typename Acc<T>::type A;
    extern __shared__ unsigned char smem[];
    A* sh = (A*)smem;
    for (u64 v = blockIdx.x; v < vectors; v += gridDim.x) {
        const T* xv = x + v * d;
        const T* wv = w + (v % groups) * d;
        A ss = 0, z1 = 0, z2 = 0;
        for (u32 i = threadIdx.x; i < d; i += blockDim.x) { A a = widen(xv[i]); ss += a * a; }
        block_sum3(ss, z1, z2, sh);
        A inv = (A)1 / sqrt(ss / (A)d + (A)eps);
        for (u32 i = threadIdx.x; i < d; i += blockDim.x) out[v * d + i] = narrow<T>(widen(xv[i]) * inv * widen(wv[i]));
    }
}

// 16 x 16 output tiles; x [rows, in], w [out, in], bias [out] or null, y [rows, out].
template <typename T>
__device__ void linear_impl(const T* x, const T* w, const T* bias, u64 rows, u32 in, u32 outf, T* y) {
    typedef typename Acc<T>::type A;
    __shared__ A xs[16][17];
    __shared__ A ws[16][17];
    u32 tx = threadIdx.x, ty = threadIdx.y;
    u64 row = (u64)blockIdx.y * 16 + ty;
    u64 col = (u64)blockIdx.x * 16 + tx;
    A acc = 0;
    for (u32 k0 = 0; k0 < in; k0 += 16) {
        xs[ty][tx] = (row < rows && k0 + tx < in) ? widen(x[row * in + k0 + tx]) : (A)0;
        u64 wr = (u64)blockIdx.x * 16 + ty;
        ws[ty][tx] = (wr < outf && k0 + tx < in) ? widen(w[wr * in + k0 + tx]) : (A)0;
        __syncthreads();
        for (u32 kk = 0; kk < 16; ++kk) acc += xs[ty][kk] * ws[tx][kk];
        __syncthreads();
    }
    if (row < rows && col < outf) {
        if (bias) acc += widen(bias[col]);
        y[row * outf + col] = narrow<T>(acc);
    }
}

template <typename T>
__device__ void gate_impl(const T* proj, const T* hidden, const T* kn, const T* qn, u64 tokens, u32 m, u32 d, T* value, T* alpha) {
    typedef typename Acc<T>::type A;
    extern __shared__ unsigned char smem[];
    A* sh = (A*)smem;
    for (u64 tb = blockIdx.x; tb < tokens * m; tb += gridDim.x) {
        u64 t = tb / m; u32 b = tb % m;
        const T* p = proj + t * (u64)(m + 1) * d;
        const T* k = p + (u64)b * d;
        const T* v = p + (u64)m * d;
        const T* h = hidden + tb * d;
        A sk = 0, sh2 = 0, sd = 0;
        for (u32 i = threadIdx.x; i < d; i += blockDim.x) {
            A ki = widen(k[i]), hi = widen(h[i]);
            sk += ki * ki; sh2 += hi * hi;
            sd += ki * widen(kn[b * d + i]) * hi * widen(qn[b * d + i]);
        }
        block_sum3(sk, sh2, sd, sh);
        const A eps = (A)1.1920928955078125e-07;
        A rk = (A)1 / sqrt(sk / (A)d + eps), rh = (A)1 / sqrt(sh2 / (A)d + eps);
        A s = rk * rh * sd / sqrt((A)d);
        A sign = s > (A)0 ? (A)1 : (s < (A)0 ? (A)-1 : (A)0);
        A mag = fabs(s) > (A)1e-6 ? fabs(s) : (A)1e-6;
        T a = narrow<T>(sigmoid_acc(sign * sqrt(mag)));
        if (threadIdx.x == 0) alpha[tb] = a;
        A aw = widen(a);
        for (u32 i = threadIdx.x; i < d; i += blockDim.x) value[tb * d + i] = narrow<T>(aw * widen(v[i]));
    }
}

template <typename T>
__device__ void short_conv_impl(const T* normed, const T* value, const T* w, u64 tokens, u32 c, u32 kernel, u32 dil, const u32* cu, u32 seqs, T* out) {
    typedef typename Acc<T>::type A;
    u64 total = tokens * c;
    for (u64 i = global_index(); i < total; i += global_stride()) {
        u64 t = i / c; u32 ch = i % c;
        u64 start = cu[sequence_of(cu, seqs, t)];
        A acc = 0;
        for (u32 k = 0; k < kernel; ++k) {
            u64 back = (u64)(kernel - 1 - k) * dil;
            if (t >= start + back) acc += widen(w[(u64)ch * kernel + k]) * widen(normed[(t - back) * c + ch]);
        }
        out[i] = narrow<T>(widen(value[i]) + acc * sigmoid_acc(acc));
    }
}

template <typename T>
__device__ void short_conv_decode_impl(const T* normed, const T* value, const T* w, u64 seqs, u32 c, u32 kernel, u32 dil, T* hist, T* out) {
    typedef typename Acc<T>::type A;
    u64 len = (u64)(kernel - 1) * dil;
    for (u64 i = global_index(); i < seqs * c; i += global_stride()) {
        u64 s = i / c; u32 ch = i % c;
        T* h = hist + s * len * c;
        A acc = widen(w[(u64)ch * kernel + kernel - 1]) * widen(normed[i]);
        for (u32 k = 0; k + 1 < kernel; ++k) {
            u64 back = (u64)(kernel - 1 - k) * dil;
            acc += widen(w[(u64)ch * kernel + k]) * widen(h[(len - back) * c + ch]);
        }
        out[i] = narrow<T>(widen(value[i]) + acc * sigmoid_acc(acc));
        for (u64 j = 0; j + 1 < len; ++j) h[j * c + ch] = h[(j + 1) * c + ch];
        if (len > 0) h[(len - 1) * c + ch] = normed[i];
    }
}

template <typename T>
__device__ void capture_conv_impl(const T* normed, const u32* cu, u64 seqs, u32 hist, u32 c, T* state) {
    u64 total = seqs * hist * c;
    for (u64 i = global_index(); i < total; i += global_stride()) {
        u64 s = i / ((u64)hist * c), k = (i / c) % hist; u32 ch = i % c;
        u64 start = cu[s], end = cu[s + 1];
        state[i] = (end + k >= hist && end + k - hist >= start) ? normed[(end + k - hist) * c + ch] : narrow<T>(0);
    }
}

// Sigmoid or softmax of each row of logits [tokens, e]; one thread per token.
template <typename T>
__device__ void scores_act_impl(const T* logits, u64 tokens, u32 e, u32 softmax, T* scores) {
    for (u64 t = global_index(); t < tokens; t += global_stride()) {
        const T* l = logits + t * e;
        if (softmax) {
            double mx = -1.0 / 0.0, sum = 0;
            for (u32 i = 0; i < e; ++i) mx = fmax(mx, (double)widen(l[i]));
            for (u32 i = 0; i < e; ++i) sum += exp((double)widen(l[i]) - mx);
            for (u32 i = 0; i < e; ++i) scores[t * e + i] = narrow<T>((typename Acc<T>::type)(exp((double)widen(l[i]) - mx) / sum));
        } else {
            for (u32 i = 0; i < e; ++i) scores[t * e + i] = narrow<T>(sigmoid_acc(widen(l[i])));
        }
    }
}

// Group-limited top-k with the tie rule (higher score first, then lower index); one thread per
// token; e <= 1024, groups <= 64 (checked by the host).
template <typename T>
__device__ void route_impl(const T* scores, const T* bias, u64 tokens, u32 e, u32 groups, u32 limited, u32 k, u32 sigmoid,
                           double scale, T* weights, u32* indices) {
    for (u64 t = global_index(); t < tokens; t += global_stride()) {
        const T* s = scores + t * e;
        u64 allowed[16];
        for (u32 i = 0; i < 16; ++i) allowed[i] = 0;
        u32 per = e / groups;
        if (groups > 1) {
            u64 chosen = 0;
            for (u32 r = 0; r < limited; ++r) {
                int best = -1; double best_score = 0;
                for (u32 g = 0; g < groups; ++g) {
                    if (chosen & (1ull << g)) continue;
                    double b1 = -1.0 / 0.0, b2 = -1.0 / 0.0;
                    for (u32 i = g * per; i < (g + 1) * per; ++i) {
                        double v = (double)widen(s[i]) + (bias ? (double)widen(bias[i]) : 0.0);
                        if (v > b1) { b2 = b1; b1 = v; } else if (v > b2) { b2 = v; }
                    }
                    double gs = bias ? b1 + b2 : b1;
                    if (best < 0 || gs > best_score) { best = g; best_score = gs; }
                }
                chosen |= 1ull << best;
                for (u32 i = best * per; i < (best + 1) * per; ++i) allowed[i / 64] |= 1ull << (i % 64);
            }
        } else {
            for (u32 i = 0; i < e; ++i) allowed[i / 64] |= 1ull << (i % 64);
        }
        double sum = 0;
        for (u32 j = 0; j < k; ++j) {
            int best = -1; double best_score = 0;
            for (u32 i = 0; i < e; ++i) {
                if (!(allowed[i / 64] & (1ull << (i % 64)))) continue;
                double v = (double)widen(s[i]) + (bias ? (double)widen(bias[i]) : 0.0);
                if (best < 0 || v > best_score) { best = i; best_score = v; }
            }
            allowed[best / 64] &= ~(1ull << (best % 64));
            indices[t * k + j] = (u32)best;
            sum += (double)widen(s[best]);
        }
        for (u32 j = 0; j < k; ++j) {
            double w = (double)widen(s[indices[t * k + j]]);
            if (sigmoid) w /= sum;
            weights[t * k + j] = narrow<T>((typename Acc<T>::type)(w * scale));
        }
    }
}

template <typename T>
__device__ void silu_mul_impl(const T* a, const T* b, u64 n, T* h) {
    typedef typename Acc<T>::type A;
    for (u64 i = global_index(); i < n; i += global_stride()) {
        A x = widen(a[i]);
        h[i] = narrow<T>(x * sigmoid_acc(x) * widen(b[i]));
    }
}

// y[(t*k + j), o] = x_row . w[idx[t*k + j]][o]; x_row is x[t] (per_slot = 0) or x[t*k + j].
// One thread per output element, grid-stride.
template <typename T>
__device__ void routed_linear_impl(const T* x, const T* w, const u32* idx, u64 tokens, u32 k, u32 in, u32 outf, u32 per_slot, T* y) {
    typedef typename Acc<T>::type A;
    u64 total = tokens * k * outf;
    for (u64 i = global_index(); i < total; i += global_stride()) {
        u64 slot = i / outf; u32 o = i % outf;
        const T* xr = x + (per_slot ? slot : slot / k) * in;
        const T* wr = w + ((u64)idx[slot] * outf + o) * in;
        A acc = 0;
        for (u32 c = 0; c < in; ++c) acc += widen(xr[c]) * widen(wr[c]);
        y[i] = narrow<T>(acc);
    }
}

template <typename T>
__device__ void combine_impl(const T* expert_out, const T* weights, const T* shared, u64 tokens, u32 k, u32 dim, T* out) {
    typedef typename Acc<T>::type A;
    for (u64 i = global_index(); i < tokens * dim; i += global_stride()) {
        u64 t = i / dim; u32 c = i % dim;
        A acc = shared ? widen(shared[i]) : (A)0;
        for (u32 j = 0; j < k; ++j) acc += widen(weights[t * k + j]) * widen(expert_out[(t * k + j) * dim + c]);
        out[i] = narrow<T>(acc);
    }
}

// Launch contracts of the per-dtype kernels (NAME_<dtype>):
// gather_*(table, d_head, offsets, heads, rows, n_rows, status|null, out): grid-stride over
//   n_rows*d_head; with status (a word first_row_beyond wrote to) nothing is written unless it
//   is all ones.
// rms_norm_*(x, w, vectors, d, groups, eps, out): one block per vector (grid-stride), blockDim a
//   power of two, shared memory 3 * blockDim * sizeof(accumulator).
// linear_*(x, w, bias|null, rows, in, out, y): block (16, 16), grid (ceil(out/16), ceil(rows/16)).
// gate_*(proj, hidden, key_norm, query_norm, tokens, m, d, value, alpha): one block per (token,
//   branch) (grid-stride), blockDim a power of two, shared 3 * blockDim * sizeof(accumulator).
// short_conv_*(normed, value, w, tokens, channels, kernel, dilation, cu, seqs, out): grid-stride.
// short_conv_decode_*(normed, value, w, seqs, channels, kernel, dilation, history, out): grid-stride.
// capture_conv_*(normed, cu, seqs, hist, channels, state): grid-stride.
// scores_act_*(logits, tokens, e, softmax, scores), route_*(...): one thread per token, grid-stride.
// silu_mul_*, routed_linear_*, combine_*: grid-stride over their outputs.
#define INSTANTIATE(NAME, T)                                                                                        \
    extern "C" __global__ void gather_##NAME(const T* table, u32 d_head, const u64* offsets, u32 heads, const u32* rows, \
                                             u64 n_rows, const u64* status, T* out) {                               \
        gather_impl<T>(table, d_head, offsets, heads, rows, n_rows, status, out); }                                 \
    extern "C" __global__ void rms_norm_##NAME(const T* x, const T* w, u64 vectors, u32 d, u32 groups, double eps, T* out) { \
        rms_norm_impl<T>(x, w, vectors, d, groups, eps, out); }                                                     \
    extern "C" __global__ void linear_##NAME(const T* x, const T* w, const T* bias, u64 rows, u32 in, u32 outf, T* y) { \
        linear_impl<T>(x, w, bias, rows, in, outf, y); }                                                            \
    extern "C" __global__ void gate_##NAME(const T* proj, const T* hidden, const T* kn, const T* qn, u64 tokens, u32 m, u32 d, \
                                           T* value, T* alpha) { gate_impl<T>(proj, hidden, kn, qn, tokens, m, d, value, alpha); } \
    extern "C" __global__ void short_conv_##NAME(const T* normed, const T* value, const T* w, u64 tokens, u32 c, u32 kernel, \
                                                 u32 dil, const u32* cu, u32 seqs, T* out) {                        \
        short_conv_impl<T>(normed, value, w, tokens, c, kernel, dil, cu, seqs, out); }                              \
    extern "C" __global__ void short_conv_decode_##NAME(const T* normed, const T* value, const T* w, u64 seqs, u32 c,  \
                                                        u32 kernel, u32 dil, T* hist, T* out) {                     \
        short_conv_decode_impl<T>(normed, value, w, seqs, c, kernel, dil, hist, out); }                             \
    extern "C" __global__ void capture_conv_##NAME(const T* normed, const u32* cu, u64 seqs, u32 hist, u32 c, T* state) { \
        capture_conv_impl<T>(normed, cu, seqs, hist, c, state); }                                                   \
    extern "C" __global__ void scores_act_##NAME(const T* logits, u64 tokens, u32 e, u32 softmax, T* scores) {      \
        scores_act_impl<T>(logits, tokens, e, softmax, scores); }                                                   \
    extern "C" __global__ void route_##NAME(const T* scores, const T* bias, u64 tokens, u32 e, u32 groups, u32 limited, u32 k, \
                                            u32 sigmoid, double scale, T* weights, u32* indices) {                  \
        route_impl<T>(scores, bias, tokens, e, groups, limited, k, sigmoid, scale, weights, indices); }             \
    extern "C" __global__ void silu_mul_##NAME(const T* a, const T* b, u64 n, T* h) { silu_mul_impl<T>(a, b, n, h); } \
    extern "C" __global__ void routed_linear_##NAME(const T* x, const T* w, const u32* idx, u64 tokens, u32 k, u32 in, \
                                                    u32 outf, u32 per_slot, T* y) {                                 \
        routed_linear_impl<T>(x, w, idx, tokens, k, in, outf, per_slot, y); }                                       \
    extern "C" __global__ void combine_##NAME(const T* expert_out, const T* weights, const T* shared, u64 tokens, u32 k, \
                                              u32 dim, T* out) { combine_impl<T>(expert_out, weights, shared, tokens, k, dim, out); }

FOR_EACH_DTYPE(INSTANTIATE)
