//! Every golden file (the official reference's and the variants) on the CUDA backend. Without a
//! device (or without the `cuda` feature) the test reports SKIPPED with the reason.

#[test]
fn every_golden_file_passes_on_the_cuda_backend() {
    #[cfg(feature = "cuda")]
    match engram_cuda::CudaBackend::new() {
        Ok(b) => {
            use engram_conformance::golden::golden_files;
            use engram_conformance::runner::run_golden;
            let files = match golden_files() {
                Ok(f) => f,
                Err(e) => panic!("the golden files cannot be listed: {e}"),
            };
            assert!(!files.is_empty(), "no golden file found");
            for file in files {
                match run_golden(&b, &file) {
                    Ok(report) => assert!(report.passed(), "{report}"),
                    Err(e) => panic!("{}: {e}", file.display()),
                }
            }
        }
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED cuda golden files: {e}");
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED cuda golden files: built without the `cuda` feature"
        );
    }
}
