//! The whole conformance suite on the CPU backend: one test per case.

engram_conformance::testgen!(engram_cpu::CpuBackend, Some(engram_cpu::CpuBackend::new()));
