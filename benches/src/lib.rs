//! # engram-benches
//!
//! Benchmarks of the Engram kernels. Every figure is reported as a ratio to a floor measured in
//! the same run (the stacked-projection GEMM, or the bytes that must move over the bandwidth of a
//! large copy), because the machines we share are noisy.

/// Bytes per second of moving `bytes` in `seconds`.
pub fn throughput(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds
}
