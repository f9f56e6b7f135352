//! # engram-cuda
//!
//! The NVIDIA backend of the Engram kernels: CUDA C++ compiled to PTX for `sm_90` by a pinned
//! NVRTC (`tools/gen_ptx.py`), committed beside its source, embedded here and loaded with `cust`.
//! Two modules:
//!
//! - `kernels/engram.cu` ([`ENGRAM_CU`], [`ENGRAM_PTX`]): a straightforward kernel for every op
//!   and element type (f32, f64, f16, bf16), the reference the fast path is checked against;
//! - `kernels/fused.cu` ([`FUSED_CU`], [`FUSED_PTX`]): the fast path of 16-bit layers, taken by
//!   `engram_prefill` and `engram_decode` whenever the layer's rows are whole 16-byte chunks: the
//!   hash with the modulo by each table size as a multiply by a precomputed reciprocal
//!   ([`reciprocal`]), a 16-byte gather, the stacked projection on tensor cores (`mma.sync`) with
//!   the table rows gathered straight into shared memory (split over k for small batches), the
//!   gate in a kernel of its own (or, with `ENGRAM_CUDA_GATE=epilogue`, its sums formed in the
//!   projection's epilogue) and one value + convolution + SiLU kernel;
//! - `kernels/hopper.cu` ([`HOPPER_CU`], [`HOPPER_PTX`]): the same projection on Hopper's
//!   warpgroup tensor cores (`wgmma`, sm_90a), one module per kernel family of which the backend
//!   loads the one it uses (the driver compiles a module's PTX when it is loaded, once per
//!   machine with its cache), on sm_90 devices only, and takes it there.
//!
//! Both fast-path sources include `kernels/common.cuh` ([`COMMON_CUH`]); every source includes
//! `kernels/grid.cuh` ([`GRID_CUH`], grid-stride indices and the sequence of a token).
//!
//! Another runtime can load the same PTX and launch the kernels itself: each kernel's parameters,
//! grid, block and shared memory are written above it in the source. A decode step or a prefill
//! can be captured once as a CUDA graph and replayed without host synchronisation
//! (`DecodeGraph`, `PrefillGraph`, with the `cuda` feature); bad ids and lengths are then found on
//! the device and reported by the graph's `check`.
//!
//! Ops check their inputs as the oracle does and return its typed errors, writing nothing on bad
//! input. The checks of device data (ids, `cu_seqlens`, table rows) run on the device into one
//! status word per backend, read back once per op into page-locked memory; the kernels launched
//! after a check that write the op's outputs test the word on the device, so the gather, the
//! hash, the prefill and the decode step wait for the device once, at their end (the decode
//! step's windows are checked by its projection as it hashes them); a rejected call leaves the
//! backend as it was.
//!
//! The driver is linked only with the `cuda` feature, and must be CUDA 12.0 or later (drivers
//! 525 on: the crate calls `cuTensorMapEncodeTiled`, which older ones lack). Without the
//! feature, and on a machine without a device, [`CudaBackend::new`] returns
//! [`engram_core::Error::NoDevice`] with the reason; the type exists either way.
//! `ENGRAM_CUDA_PROJ` overrides the projection kernel the backend picks (`mma`, `mma-wide`,
//! `wgmma`, `wgmma-wide`: mma.sync or wgmma, 128 x 128 or 128 x 256 output tiles; `wgmma-tma`,
//! `wgmma-wide-tma`: those with each weight tile one tensor copy by the copy engine, through a
//! tensor map made per launch; `wgmma-ws`: warp-specialised and persistent, 256 x 128 tiles, and
//! `wgmma-ws-tma` the same with its weight tiles so brought); an unknown name, or wgmma on a
//! device without it, makes [`CudaBackend::new`] fail.
//!
//! A prefill's gate is by default (`ENGRAM_CUDA_GATE=pass`) a kernel of its own, reading the key
//! columns the projection wrote; with `ENGRAM_CUDA_GATE=epilogue` the projection forms the gate's
//! sums itself instead, never writing the key columns, whenever the hidden size is a multiple of
//! its segment (32, 64 or 128 columns) and k is not split (slower on an H200 with the default
//! kernel: `benches/NOTES.md`).
//!
//! A prefill's projection by default (`ENGRAM_CUDA_ROWS=inline`) gathers each tile's table rows
//! itself through the row ids the hash wrote; with `ENGRAM_CUDA_ROWS=first` the rows are gathered
//! into one `[tokens, d_mem]` matrix first (the 16-byte gather, in the call's scratch), which the
//! projection then reads as a plain matrix: the three `-tma` kernels then bring both tiles of
//! every k-tile by tensor copies (their `_ab` variants, with a second tensor map), the other
//! kernels by `cp.async` without a row table. A decode step always
//! hashes its windows inside the projection. An unknown value makes [`CudaBackend::new`] fail.
//!
//! Without a GPU the backend can still run: `engram-cuda/cpu-driver` builds a stand-in for the
//! driver library (`bash engram-cuda/cpu-driver/build.sh DIR` makes `DIR/libcuda.so.1`) that
//! compiles `engram.cu`, `fused.cu` and `hopper.cu` as C++ for the CPU and runs each launch block
//! by block, every CUDA thread a fiber, with `ldmatrix`, `mma.sync`, `wgmma` (run at its wait),
//! mbarriers, the asynchronous copies and the tensor copies (with `cuTensorMapEncodeTiled`) given
//! their PTX meaning, each module handing out only the kernels its PTX defines. It reports an
//! sm_90 device (`ENGRAM_CPU_DRIVER_SM=80` for one without the sm_90a modules). With `DIR` first in `LD_LIBRARY_PATH`, `cargo test -p engram-cuda --features
//! cuda` runs the whole suite, the graph and hash tests and the golden files through this crate's
//! host code and kernels (CI does, with each projection kernel). Built with `--asan`, it also
//! stops at any kernel access past the end of a device allocation, naming the source line (CI
//! runs the suite so too). Timings and the hardware's memory model are what only a GPU run
//! checks.

/// The CUDA C++ source of every kernel, with their launch contracts.
pub const ENGRAM_CU: &str = include_str!("../kernels/engram.cu");
/// The PTX (ISA 8.2, `sm_90`) every kernel is loaded from.
pub const ENGRAM_PTX: &str = include_str!("../kernels/engram.ptx");

/// The CUDA C++ source of the fast path (reciprocal hash, 16-byte gather, tensor-core projection
/// with the rows gathered into shared memory, fused gate and convolution), with its launch
/// contracts.
pub const FUSED_CU: &str = include_str!("../kernels/fused.cu");
/// The PTX (ISA 8.2, `sm_90`) of the fast path.
pub const FUSED_PTX: &str = include_str!("../kernels/fused.ptx");

/// The CUDA C++ source of the stacked projection on `wgmma` (sm_90a only), with its launch
/// contract.
pub const HOPPER_CU: &str = include_str!("../kernels/hopper.cu");
/// The PTX (ISA 8.2, `sm_90a`) of the `wgmma` projections, one module per projection: its
/// `ENGRAM_CUDA_PROJ` name and the PTX of its kernels (both element types, and the tensor-copy
/// ones' `_ab` variants), each compiled from [`HOPPER_CU`] with its `HOPPER_FAMILY` so that a
/// backend has the driver compile only the one it uses. They load on sm_90 devices only.
pub const HOPPER_PTX: &[(&str, &str)] = &[
    ("wgmma", include_str!("../kernels/hopper_wgmma.ptx")),
    (
        "wgmma-wide",
        include_str!("../kernels/hopper_wgmma_wide.ptx"),
    ),
    ("wgmma-tma", include_str!("../kernels/hopper_wgmma_tma.ptx")),
    (
        "wgmma-wide-tma",
        include_str!("../kernels/hopper_wgmma_wide_tma.ptx"),
    ),
    ("wgmma-ws", include_str!("../kernels/hopper_wgmma_ws.ptx")),
    (
        "wgmma-ws-tma",
        include_str!("../kernels/hopper_wgmma_ws_tma.ptx"),
    ),
];

/// The device helpers [`FUSED_CU`] and [`HOPPER_CU`] include (`#include "common.cuh"`): a
/// runtime that compiles those sources itself needs this beside them.
pub const COMMON_CUH: &str = include_str!("../kernels/common.cuh");

/// The grid and batch helpers every source includes (`#include "grid.cuh"`, directly or through
/// [`COMMON_CUH`]): a runtime that compiles the sources itself needs this beside them too.
pub const GRID_CUH: &str = include_str!("../kernels/grid.cuh");

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod projection;
pub mod reciprocal;

/// The name users select this backend by (`--backend cuda`).
pub const BACKEND_NAME: &str = "cuda";

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod fused;
#[cfg(feature = "cuda")]
mod graph;

#[cfg(feature = "cuda")]
pub use device::{CudaBackend, CudaBuffer};
#[cfg(feature = "cuda")]
pub use graph::{DecodeGraph, PrefillGraph};

/// The CUDA backend (built without the `cuda` feature: it never has a device).
#[cfg(not(feature = "cuda"))]
#[derive(Debug)]
pub struct CudaBackend {
    _private: (),
}

#[cfg(not(feature = "cuda"))]
impl CudaBackend {
    /// Always [`engram_core::Error::NoDevice`]: this build has no CUDA driver linked.
    pub fn new() -> engram_core::Result<Self> {
        Err(engram_core::Error::NoDevice {
            backend: BACKEND_NAME,
            reason: "engram-cuda was built without its `cuda` feature".to_owned(),
        })
    }
}

/// The kernels of the fast-path module, by name or per-dtype prefix.
pub const FUSED_KERNELS: &[&str] = &[
    "hash_rows_fast",
    "hash_decode_fast",
    "first_id_at_or_above2",
    "gather_rows16",
    "proj_mma_",
    "gate_scales_",
    "gate_from_sums_",
    "conv_out_",
    "capture_conv_scaled_",
    "conv_decode_",
    "gate_conv_decode_",
];

/// The kernels of the sm_90a modules ([`HOPPER_PTX`]), by prefix.
pub const HOPPER_KERNELS: &[&str] = &["proj_wgmma_"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Projection;

    #[test]
    fn the_ptx_is_generated_from_the_embedded_source_for_sm_90() {
        assert!(ENGRAM_PTX
            .starts_with("// Generated from engram.cu by tools/gen_ptx.py with NVRTC 12.2"));
        assert!(ENGRAM_PTX.contains(".target sm_90"));
        assert!(
            ENGRAM_PTX.contains(".version 8.2"),
            "PTX ISA 8.2 loads on drivers from 535 on"
        );
        assert!(
            FUSED_PTX.starts_with("// Generated from fused.cu by tools/gen_ptx.py with NVRTC 12.2")
        );
        for kernel in [
            "hash_rows_fast",
            "gather_rows16",
            "proj_mma_bf16",
            "gate_scales_f16",
            "conv_out_bf16",
        ] {
            assert!(
                FUSED_PTX.contains(&format!(".entry {kernel}(")),
                "{kernel} is missing"
            );
        }
        for kernel in [
            "gather_bf16",
            "linear_f32",
            "gate_f16",
            "route_f64",
            "short_conv_decode_f32",
        ] {
            assert!(
                ENGRAM_PTX.contains(&format!(".entry {kernel}(")),
                "{kernel} is missing"
            );
            assert!(ENGRAM_CU.contains(
                kernel
                    .trim_end_matches(|c: char| c != '_')
                    .trim_end_matches('_')
            ));
        }
    }

    /// The kernel names a module's PTX defines, sorted.
    fn entries(ptx: &str) -> Vec<String> {
        let mut names: Vec<String> = ptx
            .split(".entry ")
            .skip(1)
            .map(|e| e.split('(').next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn each_wgmma_module_targets_sm_90a_and_holds_its_projections_kernels_only() {
        let wgmma: Vec<_> = Projection::ALL
            .into_iter()
            .filter(|p| p.needs_sm90a())
            .collect();
        assert_eq!(HOPPER_PTX.len(), wgmma.len());
        for p in wgmma {
            let ptx = p
                .hopper_ptx()
                .expect("every wgmma projection has its module");
            assert!(
                ptx.starts_with("// Generated from hopper.cu by tools/gen_ptx.py with NVRTC 12.2")
            );
            assert!(ptx.contains(".target sm_90a"));
            assert!(ptx.contains(".version 8.2"));
            let mut expected: Vec<String> = ["bf16", "f16"]
                .into_iter()
                .flat_map(|t| p.kernels(t))
                .collect();
            expected.sort();
            assert_eq!(entries(ptx), expected, "{}", p.name());
        }
        assert_eq!(Projection::Mma.hopper_ptx(), None);
        for source in [FUSED_CU, HOPPER_CU] {
            assert!(source.contains("#include \"common.cuh\""));
        }
        assert!(COMMON_CUH.contains("load_proj_a"));
        for source in [ENGRAM_CU, COMMON_CUH] {
            assert!(source.contains("#include \"grid.cuh\""));
        }
        assert!(GRID_CUH.contains("sequence_of"));
    }

    #[test]
    fn every_kernel_is_looked_up_in_the_module_that_holds_it() {
        let modules = [(ENGRAM_PTX, 0), (FUSED_PTX, 1)]
            .into_iter()
            .chain(HOPPER_PTX.iter().map(|(_, ptx)| (*ptx, 2)));
        for (ptx, module) in modules {
            for name in entries(ptx) {
                let fused = FUSED_KERNELS.iter().any(|k| name.starts_with(k));
                let hopper = HOPPER_KERNELS.iter().any(|k| name.starts_with(k));
                assert_eq!((fused, hopper), (module == 1, module == 2), "{name}");
            }
        }
    }

    #[test]
    fn without_a_device_construction_is_a_typed_error() {
        // On CI (no GPU, or no `cuda` feature) this is the answer; on a GPU machine with the
        // feature it succeeds, which the conformance suite then exercises.
        match CudaBackend::new() {
            Ok(_) => {}
            Err(engram_core::Error::NoDevice { backend, reason }) => {
                assert_eq!(backend, BACKEND_NAME);
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
}
