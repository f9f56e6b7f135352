//! # engram-cpu
//!
//! The CPU backend of the Engram kernels. Buffers are host vectors. The kernels are free
//! functions over slices in [`kernels`], usable without the traits: the N-gram hash with id
//! compression fused and the modulo by reciprocal, the projection through the `gemm` crate (f32)
//! or this crate's packed 16-bit GEMM (bf16, f16: weights widened in registers by its
//! microkernel), row-parallel gather and RMSNorm, the prefill's whole tail (gate, value, RMSNorm,
//! causal convolution, SiLU) in one pass over chunks of tokens, the decode step on the same
//! kernels, and the MoE router's scores, routing, experts and combine (f32 arithmetic, bf16/f16
//! widened in registers). f64 runs, and the ops not yet tuned, call the oracle in
//! [`engram_core::reference`]. Results do not depend on the thread count;
//! `CpuBackend::sequential` uses the calling thread only.
//!
//! Without the default `std` feature the crate is `no_std` + `alloc` and holds the kernels that
//! need neither threads nor the `gemm` crate (hash, gather, the 16-bit GEMM, RMSNorm, gate,
//! the fused tail, convolution and its decode step, routing, combine), run on the calling
//! thread and vectorised for the instruction set the build targets (`RUSTFLAGS="-C target-feature=+avx2,+fma"`), since there is no run-time probe:
//! `cargo build -p engram-cpu --no-default-features`.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

#[cfg(feature = "std")]
mod backend;
#[cfg(feature = "std")]
mod buffer;
pub mod kernels;

#[cfg(feature = "std")]
pub use backend::CpuBackend;
#[cfg(feature = "std")]
pub use buffer::CpuBuffer;
pub use kernels::Parallelism;

/// The name users select this backend by (`--backend cpu`).
pub const BACKEND_NAME: &str = "cpu";
