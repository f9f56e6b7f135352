// The bfloat16 type of CUDA's cuda_bf16.h for the CPU stand-in driver (see ../cuda_lang.h): the
// storage type and the conversions the kernel sources use, rounding to nearest even.
#pragma once
#include "float_bits.h"

struct __nv_bfloat16 {
    unsigned short bits;
};

inline float __bfloat162float(__nv_bfloat16 h) { return emu_f32_from_bits((uint32_t)h.bits << 16); }

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t x = emu_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(unsigned short)((x >> 16) | 0x40u)};  // quiet NaN
    return __nv_bfloat16{(unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }

inline float widen_emu(__nv_bfloat16 h) { return __bfloat162float(h); }
