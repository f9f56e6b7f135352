//! The whole conformance suite on the wgpu backend: one test per case. Without an adapter every
//! case reports SKIPPED with the reason.

engram_conformance::testgen!(
    engram_wgpu::WgpuBackend,
    engram_wgpu::WgpuBackend::for_tests()
);
