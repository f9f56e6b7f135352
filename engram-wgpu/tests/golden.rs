//! Every golden file (the official reference's and the variants) on the wgpu backend, in f32 (f64
//! is not offered). Without an adapter the test reports SKIPPED with the reason.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_conformance::golden::golden_files;
use engram_conformance::runner::run_golden;
use engram_wgpu::WgpuBackend;

#[test]
fn every_golden_file_passes_on_the_wgpu_backend() {
    let backend = match WgpuBackend::for_tests() {
        Ok(b) => b,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED wgpu golden files: {e}");
            return;
        }
    };
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "wgpu golden files on {}",
            backend.adapter()
        );
    }
    for file in golden_files().unwrap() {
        let report = run_golden(&backend, &file).unwrap();
        assert!(report.passed(), "{report}");
        assert!(
            report.checks.iter().any(|c| c.name.contains("f32")),
            "{report}"
        );
    }
}
