//! # engram-cuda
//!
//! The NVIDIA backend of the Engram kernels: CUDA C++ compiled to PTX for `sm_90`/`sm_90a`,
//! loaded through `cust`. The crate builds on machines without a GPU or a CUDA toolkit; the
//! kernels and their launch contracts are added on top of this crate's public surface.

/// The name users select this backend by (`--backend cuda`).
pub const BACKEND_NAME: &str = "cuda";
