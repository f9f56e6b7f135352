//! The whole conformance suite on the CPU backend's single-threaded mode (embedders that bring
//! their own threads): one test per case. The kernels take other paths there (one chunk, no
//! work splitting), so edge cases such as empty batches meet them differently.

engram_conformance::testgen!(
    engram_cpu::CpuBackend,
    Some(engram_cpu::CpuBackend::sequential())
);
