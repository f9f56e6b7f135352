//! Every golden file (the official reference's and the variants) on the CUDA backend. Without a
//! device (or without the `cuda` feature) the test reports SKIPPED with the reason.

mod common;

#[test]
fn every_golden_file_passes_on_the_cuda_backend() {
    common::on_device(
        "golden files",
        |#[cfg_attr(not(feature = "cuda"), allow(unused_variables))] b| {
            #[cfg(feature = "cuda")]
            {
                use engram_conformance::golden::golden_files;
                use engram_conformance::runner::run_golden;
                let files = match golden_files() {
                    Ok(f) => f,
                    Err(e) => panic!("the golden files cannot be listed: {e}"),
                };
                assert!(!files.is_empty(), "no golden file found");
                for file in files {
                    match run_golden(b, &file) {
                        Ok(report) => assert!(report.passed(), "{report}"),
                        Err(e) => panic!("{}: {e}", file.display()),
                    }
                }
            }
        },
    );
}
