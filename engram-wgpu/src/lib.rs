//! # engram-wgpu
//!
//! The portable GPU backend of the Engram kernels: WGSL compute shaders dispatched through `wgpu`
//! on any adapter that Vulkan, Metal or DX12 reaches (Mesa's lavapipe, a Vulkan driver on the
//! CPU, included), exact on every one of them:
//!
//! - hashing needs no 64-bit integers: the multiply, XOR and modulo by each head's prime run on
//!   pairs of u32 and equal the oracle bit for bit on every input the configuration allows;
//! - every kernel computes in f32; bf16 data (and f16 data on adapters without `SHADER_F16`) are
//!   stored two per word and converted in the shader in integer code, f16 data on adapters with
//!   it as WGSL `f16` (f64 is not offered: WGSL has no portable 64-bit float, and such cases
//!   report `NOT_SUPPORTED`);
//! - workgroup sums use subgroup operations where the adapter has them (a workgroup tree
//!   otherwise), and the projection stages its operands in workgroup memory on GPUs and loads them
//!   directly on CPU drivers, where that measured faster ([`shaders::Variant`]);
//! - a table larger than the adapter's largest storage binding is gathered window by window, and
//!   one larger than its largest buffer is held in overlapping segments.
//!
//! [`WgpuBackend`] implements the `engram_core` contracts. Another wgpu program can dispatch the
//! same kernels on its own device: [`shaders`] gives each kernel's WGSL module, entry point,
//! bindings and workgroup geometry.
//!
//! Adapter choice: the best adapter by type (discrete GPU first, CPU drivers last), or the first
//! whose name contains the value of `ENGRAM_WGPU_ADAPTER`; `ENGRAM_WGPU_BACKEND` (`vulkan`,
//! `metal`, `dx12`, comma-separated) restricts the APIs tried. No adapter is
//! [`engram_core::Error::NoDevice`].

mod backend;
mod context;
pub mod shaders;

pub use backend::{WgpuBackend, WgpuBuffer};
pub use context::{ADAPTER_ENV, BACKENDS_ENV};

/// Environment variable: when set, [`WgpuBackend::for_tests`] panics instead of failing softly
/// when no adapter opens (CI sets it once it has installed lavapipe).
pub const REQUIRE_ENV: &str = "ENGRAM_REQUIRE_WGPU";

/// The name users select this backend by (`--backend wgpu`).
pub const BACKEND_NAME: &str = "wgpu";
