// The bits of an f32 and back, for the 16-bit float types of the CPU stand-in driver
// (cuda_fp16.h, cuda_bf16.h).
#pragma once
#include <cstdint>
#include <cstring>

inline float emu_f32_from_bits(uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
inline uint32_t emu_f32_bits(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return bits;
}
