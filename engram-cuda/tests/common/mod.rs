//! What the CUDA integration tests share: running a check on the device, or saying why not.

use std::io::Write;

/// Runs `check` on a CUDA backend, or reports `SKIPPED cuda <what>: <reason>` with the reason the
/// backend gave: no device, or no driver linked (a build without the `cuda` feature, whose
/// backend never starts, so `check` only ever runs with the feature).
pub fn on_device(what: &str, check: impl FnOnce(&engram_cuda::CudaBackend)) {
    match engram_cuda::CudaBackend::new() {
        Ok(b) => check(&b),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED cuda {what}: {e}");
        }
    }
}
