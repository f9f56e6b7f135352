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
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Element for bf16 {
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(v: f64) -> Self {
        bf16::from_f64(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
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

    #[test]
    fn sizes_match_the_types() {
        assert_eq!(DType::BF16.size(), core::mem::size_of::<bf16>());
        assert_eq!(DType::U64.size(), core::mem::size_of::<u64>());
        assert!(DType::F16.is_float() && !DType::U32.is_float());
    }
}
