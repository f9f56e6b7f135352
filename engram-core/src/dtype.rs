//! Element types of device buffers.
//!
//! [`Scalar`] is anything a buffer may hold (floats and the integer types of ids and rows);
//! [`Element`] is the floating-point subset that tables, weights and activations use. Storage may
//! be `f16` or `bf16`; arithmetic always widens to `f32` or `f64` (the oracle accumulates in `f64`).

use core::fmt::Debug;

pub use half::{bf16, f16};

/// The element type of a buffer, as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the upper half of a binary32).
    BF16,
    /// IEEE binary64 (the oracle's exact path).
    F64,
    /// Unsigned 32-bit integers (ids, rows, sequence offsets).
    U32,
    /// Unsigned 64-bit integers (row offsets, multipliers).
    U64,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::U32 => 4,
            DType::F64 | DType::U64 => 8,
        }
    }

    /// The conventional lower-case name (`"f32"`, `"bf16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
        }
    }

    /// Whether this is a floating-point type (an [`Element`]).
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::U32 | DType::U64)
    }
}

impl core::fmt::Display for DType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Anything a device buffer may hold: plain old data with a [`DType`] tag.
pub trait Scalar: bytemuck::Pod + Default + Debug + PartialEq + Send + Sync + 'static {
    /// The tag of this type.
    const DTYPE: DType;
}

/// A floating-point element: table rows, weights, activations.
pub trait Element: Scalar + PartialOrd {
    /// Widens exactly to `f64`.
    fn to_f64(self) -> f64;
    /// Rounds an `f64` to this type (round to nearest even).
    fn from_f64(v: f64) -> Self;
    /// Widens (or rounds, for `f64`) to `f32`.
    fn to_f32(self) -> f32;
    /// Rounds an `f32` to this type.
    fn from_f32(v: f32) -> Self;
}

impl Scalar for u32 {
    const DTYPE: DType = DType::U32;
}
impl Scalar for u64 {
    const DTYPE: DType = DType::U64;
}
impl Scalar for f32 {
    const DTYPE: DType = DType::F32;
}
impl Scalar for f64 {
    const DTYPE: DType = DType::F64;
}
impl Scalar for f16 {
    const DTYPE: DType = DType::F16;
}
impl Scalar for bf16 {
    const DTYPE: DType = DType::BF16;
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }
}

impl Element for f16 {
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_bits_to_f32(self.to_bits())
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_bits(f32_to_f16_bits(v))
    }
}

/// The f32 value of f16 bits, exactly: subnormals, infinities, and NaNs made quiet with their
/// payload kept (what the `half` crate and the F16C instruction give). Written without branches
/// so that the kernels' loops vectorise it; `half`'s own conversion calls a function chosen at
/// run time for every value.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    // Exponent and mantissa moved to their f32 places, exponent still biased by 15.
    let shifted = (h & 0x7fff) << 13;
    let exponent = shifted & 0x0f80_0000;
    let normal = shifted + ((127 - 15) << 23);
    // All-ones exponent: infinity, or a NaN with the quiet bit set.
    let quiet = if shifted & 0x007f_e000 != 0 {
        0x0040_0000
    } else {
        0
    };
    let special = (normal + ((128 - 16) << 23)) | quiet;
    // Zero exponent: mantissa * 2^-24, as (2^-14 + mantissa * 2^-24) - 2^-14 (both exact).
    let subnormal = (f32::from_bits(shifted + (113 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let magnitude = if exponent == 0x0f80_0000 {
        special
    } else if exponent == 0 {
        subnormal
    } else {
        normal
    };
    f32::from_bits(magnitude | sign)
}

/// f32 to the nearest f16 (ties to even), overflowing to infinity, NaNs made quiet with the top
/// of their payload kept: the `half` crate's and the F16C instruction's result, bit for bit,
/// without branches (see [`f16_bits_to_f32`]).
#[inline(always)]
pub fn f32_to_f16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = (x >> 16) & 0x8000;
    let a = x & 0x7fff_ffff;
    let nan = 0x7e00 | ((a & 0x007f_ffff) >> 13);
    // Normal results: rebias the exponent and round the 13 dropped bits to nearest, ties to
    // even (adding 0xfff plus the kept mantissa's lowest bit carries exactly when rounding up;
    // a carry into the exponent is right, up to infinity).
    let odd = (a >> 13) & 1;
    let normal = (a
        .wrapping_sub((127 - 15) << 23)
        .wrapping_add(0xfff)
        .wrapping_add(odd))
        >> 13;
    // Subnormal results (|v| < 2^-14): adding 0.5 in f32 rounds at the f16 subnormal's last
    // place, ties to even, and leaves the mantissa in the low bits.
    let subnormal = (f32::from_bits(a) + 0.5)
        .to_bits()
        .wrapping_sub(0x3f00_0000);
    let magnitude = if a > 0x7f80_0000 {
        nan
    } else if a >= 0x4780_0000 {
        0x7c00
    } else if a < 0x3880_0000 {
        subnormal
    } else {
        normal
    };
    (magnitude | sign) as u16
}

impl Element for bf16 {
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_nearest() {
        assert_eq!(<f32 as Element>::from_f64(1.0 + 1e-9), 1.0f32);
        assert_eq!(<bf16 as Element>::from_f32(1.0 + 1.0 / 512.0).to_f32(), 1.0);
        assert_eq!(<f16 as Element>::from_f64(65504.0).to_f64(), 65504.0);
        assert_eq!(<bf16 as Element>::to_f64(bf16::from_f32(-2.5)), -2.5);
    }

    /// Every f16 widens to what the `half` crate gives, bit for bit (NaNs included).
    #[test]
    fn f16_widening_equals_half_on_every_value() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32().to_bits();
            assert_eq!(f16_bits_to_f32(h).to_bits(), want, "bits {h:#06x}");
        }
    }

    /// f32 to f16 equals the `half` crate's rounding on every exponent with the dropped bits at
    /// and around each rounding boundary, on every f32 in the f16 subnormal range (strided), and
    /// on NaNs, infinities and the overflow edge.
    #[test]
    fn f16_rounding_equals_half() {
        let check = |x: u32| {
            let want = half::f16::from_f32(f32::from_bits(x)).to_bits();
            assert_eq!(
                f32_to_f16_bits(f32::from_bits(x)),
                want,
                "f32 bits {x:#010x}"
            );
        };
        for high in 0..(1u32 << 19) {
            for low in [0u32, 1, 0xfff, 0x1000, 0x1001, 0x1fff] {
                check(high << 13 | low);
            }
        }
        // |v| below 2^-14 (exponents 102 to 112) and a little into the normals, every 7th value.
        for x in ((102u32 << 23)..(114 << 23)).step_by(7) {
            check(x);
            check(x | 0x8000_0000);
        }
        for x in [
            0x7f80_0000,
            0xff80_0000,
            0x7f80_0001,
            0x7fc0_0000,
            0xffff_ffff,
            0x477f_efff,
            0x477f_f000,
            0x477f_f001,
            0x4780_0000,
            0x3380_0000,
            0x3380_0001,
            0x3300_0000,
        ] {
            check(x);
        }
    }

    #[test]
    fn sizes_match_the_types() {
        assert_eq!(DType::BF16.size(), core::mem::size_of::<bf16>());
        assert_eq!(DType::U64.size(), core::mem::size_of::<u64>());
        assert!(DType::F16.is_float() && !DType::U32.is_float());
    }
}
