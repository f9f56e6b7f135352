// The 16-bit float type of CUDA's cuda_fp16.h for the CPU stand-in driver (see ../cuda_lang.h):
// the storage type and the conversions the kernel sources use, rounding to nearest even.
#pragma once
#include "float_bits.h"

struct __half {
    unsigned short bits;
};

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1fu, man = h.bits & 0x3ffu;
    uint32_t out;
    if (exp == 0x1f) {
        out = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        out = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        out = sign;
    } else {
        // A subnormal: shift the leading one into the implicit bit.
        uint32_t e = 113, m = man;
        while (!(m & 0x400u)) {
            m <<= 1;
            --e;
        }
        out = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
    return emu_f32_from_bits(out);
}

inline __half __float2half_rn(float f) {
    const uint32_t x = emu_f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
    unsigned short bits;
    if (abs > 0x7f800000u) {
        bits = (unsigned short)(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN stays NaN
    } else if (abs >= 0x477ff000u) {
        bits = (unsigned short)(sign | 0x7c00u);  // rounds to infinity
    } else if (abs >= 0x38800000u) {
        // Normal: drop 13 bits, rounding to nearest even.
        const uint32_t r = abs - 0x38000000u;
        bits = (unsigned short)(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
    } else if (abs >= 0x33000000u) {
        // Subnormal result: the implicit one made explicit, then shifted into place.
        const uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u, shift = 126 - e;
        const uint32_t q = m >> shift, rest = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
        bits = (unsigned short)(sign | (q + (rest > halfway || (rest == halfway && (q & 1u)))));
    } else {
        bits = (unsigned short)sign;
    }
    return __half{bits};
}

inline unsigned short __half_as_ushort(__half h) { return h.bits; }

inline float widen_emu(__half h) { return __half2float(h); }
