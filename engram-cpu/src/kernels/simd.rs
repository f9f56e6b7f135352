//! Instruction-set dispatch: the CPU is probed once and the answer cached; row kernels are written
//! once as `#[inline(always)]` functions and called from small named `#[target_feature]`
//! wrappers (not through closures, which the compiler may leave un-inlined and so build for the
//! baseline), so the same code is vectorised for AVX2+FMA where the CPU has it and for the
//! baseline otherwise. Reductions keep eight independent f32 lanes summed in a fixed order,
//! which lets the compiler vectorise them without changing the result across machines of the
//! same instruction set.

/// The instruction set the row kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// No SIMD beyond the target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// AVX2 and FMA (x86-64).
    Avx2Fma,
    /// AVX-512F/BW/VL plus AVX2 and FMA (x86-64).
    Avx512,
}

/// The instruction set the build itself targets (`-C target-feature=...`, `-C target-cpu=...`):
/// what the `no_std` build runs with, and the least a CPU running any build must offer.
pub const fn compiled() -> Isa {
    if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vl"
    )) {
        Isa::Avx512
    } else if cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )) {
        Isa::Avx2Fma
    } else {
        Isa::Baseline
    }
}

/// What the row kernels run with: without `std`, the instruction set the build targets
/// ([`compiled`]; there is no run-time probe).
#[cfg(not(feature = "std"))]
pub fn detected() -> Isa {
    compiled()
}

/// What this CPU offers, probed once.
#[cfg(feature = "std")]
pub fn detected() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
            {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2Fma;
            }
        }
        Isa::Baseline
    })
}

/// Whether the CPU converts f16 to f32 in hardware (F16C, which every AVX2 CPU has so far, but
/// which is a feature of its own): probed once; without `std`, what the build targets.
pub fn f16c() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static F16C: OnceLock<bool> = OnceLock::new();
        *F16C.get_or_init(|| std::is_x86_feature_detected!("f16c"))
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        cfg!(all(target_arch = "x86_64", target_feature = "f16c"))
    }
}

/// `a * b + c` rounded once (the instruction where the target has it, else `libm`'s exact
/// software version), so every instruction set that fuses gives the same bits.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(feature = "std"))]
    {
        libm::fmaf(a, b, c)
    }
}

/// Lanes of every reduction.
pub const LANES: usize = 8;

/// `e^x` for f32, branch-free so it vectorises: `2^n * p(r)` with `x = n ln 2 + r`,
/// `|r| <= ln 2 / 2`, and a degree-6 polynomial (relative error below 3e-7, 2.5 ulp, over the clamped range
/// [-87, 88]).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 * 2^23 rounds to the nearest integer in plain f32 arithmetic (no rounding
    // instruction or libm call, so the baseline vectorises too), and leaves that integer in the
    // low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let two_n = (shifted
        .to_bits()
        .wrapping_sub(SHIFTER.to_bits())
        .wrapping_add(127))
        << 23;
    p * f32::from_bits(two_n)
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Sums eight lanes in a fixed order.
#[inline(always)]
pub fn reduce(l: [f32; LANES]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_range_the_kernels_use() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), (x as f64).exp());
            let rel = ((f64::from(got) - want) / want).abs();
            assert!(
                rel < 3e-7,
                "exp({x}) = {got}, want {want} (relative error {rel})"
            );
            x += 0.0137;
        }
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-200.0) >= 0.0 && sigmoid(200.0) <= 1.0);
    }

    #[test]
    fn detection_is_stable() {
        assert_eq!(detected(), detected());
    }

    #[test]
    fn the_cpu_offers_at_least_what_the_build_targets() {
        let rank = |i: Isa| match i {
            Isa::Baseline => 0,
            Isa::Avx2Fma => 1,
            Isa::Avx512 => 2,
        };
        assert!(rank(detected()) >= rank(compiled()));
    }
}
