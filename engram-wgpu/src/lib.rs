//! # engram-wgpu
//!
//! The portable GPU backend of the Engram kernels: WGSL shaders dispatched through `wgpu` on any
//! adapter that Vulkan, Metal, DX12 or WebGPU reaches (Mesa's lavapipe included). The crate builds
//! everywhere; the shaders and their bind-group layouts are added on top of this public surface.

/// The name users select this backend by (`--backend wgpu`).
pub const BACKEND_NAME: &str = "wgpu";
