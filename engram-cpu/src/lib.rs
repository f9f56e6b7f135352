//! # engram-cpu
//!
//! The CPU backend of the Engram kernels. Its kernels are free functions over slices, usable
//! without any trait; the backend adaptor over them follows the contracts of `engram-core`.
//!
//! Today the crate exposes the exact N-gram hash of `engram-core` over packed batches; the fused
//! gather / projection / gate / convolution kernels build on it.

pub use engram_core::hash::NgramHasher;

/// The name users select this backend by (`--backend cpu`).
pub const BACKEND_NAME: &str = "cpu";
