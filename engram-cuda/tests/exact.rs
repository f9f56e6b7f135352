//! The CUDA hash (reciprocal modulo on 64-bit mixes) against the oracle at the extremes of every
//! operand: table sizes up to 2^32 - 1, products up to 2^64 - 1, prefill and decode. Without a
//! device (or without the `cuda` feature) the test reports SKIPPED with the reason.

#[test]
fn reciprocal_hashing_equals_the_oracle_at_the_extremes() {
    #[cfg(feature = "cuda")]
    match engram_cuda::CudaBackend::new() {
        Ok(b) => {
            if let Err(e) = engram_conformance::extremes::hash_at_the_extremes(&b) {
                panic!("{e}");
            }
        }
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED cuda hash extremes: {e}");
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED cuda hash extremes: built without the `cuda` feature"
        );
    }
}
