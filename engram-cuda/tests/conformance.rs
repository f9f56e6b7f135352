//! The whole conformance suite on the CUDA backend: one test per case. Without a device (or
//! without the `cuda` feature) every case reports SKIPPED with the reason.

#[cfg(feature = "cuda")]
engram_conformance::testgen!(engram_cuda::CudaBackend, engram_cuda::CudaBackend::new());

#[cfg(not(feature = "cuda"))]
#[test]
fn suite_needs_the_cuda_feature() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED engram-cuda conformance: built without the `cuda` feature"
    );
    assert!(engram_cuda::CudaBackend::new().is_err());
}
