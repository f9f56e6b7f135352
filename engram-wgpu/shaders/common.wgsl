// Shared by every kernel: the dispatch geometry, the packed-batch search and the 64-bit hash
// arithmetic on pairs of u32. Every kernel reads its scalar parameters from `P` (binding 0).

// The linear index of this invocation in a 2-D grid of workgroups of `size` invocations (the grid
// is 2-D because one dimension holds at most 65535 workgroups).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * size + lid;
}

// The linear index of this workgroup in a 2-D grid.
fn flat_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// The full 64-bit product of two u32, as (low, high).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return vec2<u32>((p00 & 0xffffu) | (mid << 16u), p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}

// `a * m` modulo 2^64, with `m` and the result as (low, high).
fn mul_u32_u64(a: u32, m: vec2<u32>) -> vec2<u32> {
    let p = mul_wide(a, m.x);
    return vec2<u32>(p.x, p.y + a * m.y);
}

// `x mod p` for a 64-bit `x` = (low, high) and a 32-bit `p > 0`, exact: the high word's remainder,
// then the low word's bits one at a time (`r` stays below `p`, so `2r + bit < 2^33`; the bit
// shifted out of `r` says whether the doubled value passed 2^32, in which case it exceeds `p` and
// the wrapping subtraction gives the true remainder).
fn mod_u64_u32(x: vec2<u32>, p: u32) -> u32 {
    var r = x.y % p;
    for (var b = 32u; b > 0u; b = b - 1u) {
        let carry = r >> 31u;
        var r2 = (r << 1u) | ((x.x >> (b - 1u)) & 1u);
        if (carry == 1u || r2 >= p) {
            r2 = r2 - p;
        }
        r = r2;
    }
    return r;
}
