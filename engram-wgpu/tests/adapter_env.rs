//! Adapter selection through the environment. Its own test binary (one process), because it sets
//! environment variables.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_core::Error;
use engram_wgpu::{WgpuBackend, ADAPTER_ENV, BACKENDS_ENV};

#[test]
fn no_matching_adapter_is_a_typed_error_naming_the_choice() {
    // This test binary runs this one test: nothing else reads the environment meanwhile.
    std::env::set_var(ADAPTER_ENV, "no adapter is called this");
    match WgpuBackend::new() {
        Err(Error::NoDevice { backend, reason }) => {
            assert_eq!(backend, "wgpu");
            assert!(
                reason.contains(ADAPTER_ENV) || reason.contains("no adapter"),
                "{reason}"
            );
        }
        Ok(b) => panic!("opened {} although none matches", b.adapter()),
        Err(other) => panic!("unexpected error {other}"),
    }
    // An API list without any adapter here (none on this platform, or no driver): also NoDevice.
    std::env::remove_var(ADAPTER_ENV);
    std::env::set_var(BACKENDS_ENV, "gl");
    assert!(matches!(WgpuBackend::new(), Err(Error::NoDevice { .. })));
    std::env::remove_var(BACKENDS_ENV);
    // Unrestricted again: the adapter (if any) opens, and a forced substring of its own name
    // selects it.
    if let Ok(b) = WgpuBackend::new() {
        let name = b.adapter();
        let word = name.split_whitespace().next().unwrap().to_lowercase();
        std::env::set_var(ADAPTER_ENV, &word);
        let forced = WgpuBackend::new().unwrap();
        assert!(forced.adapter().to_lowercase().contains(&word));
        std::env::remove_var(ADAPTER_ENV);
    }
}
