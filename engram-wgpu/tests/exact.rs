//! What the wgpu backend does differently from the others, checked against the oracle: the 64-bit
//! hash on pairs of u32 at the extremes of every operand, and tables larger than one storage
//! binding gathered window by window. Without an adapter each test reports SKIPPED.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_core::hash::LayerHash;
use engram_core::synthetic::SplitMix64;
use engram_core::{reference, synthetic, Backend, Element, EngramOps, Error, MoeOps};
use engram_wgpu::WgpuBackend;
use half::{bf16, f16};

/// Equal element for element, or a panic naming the first difference.
fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], expected: &[T], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    if let Some(i) = got.iter().zip(expected).position(|(g, e)| g != e) {
        panic!(
            "{what}: element {i} is {:?}, expected {:?}",
            got[i], expected[i]
        );
    }
}

fn backend(what: &str) -> Option<WgpuBackend> {
    match WgpuBackend::for_tests() {
        Ok(b) => Some(b),
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED wgpu {what}: {e}");
            None
        }
    }
}

#[test]
fn hashing_on_u32_pairs_equals_the_oracle_at_the_extremes() {
    let Some(b) = backend("hash extremes") else {
        return;
    };
    if let Err(e) = engram_conformance::extremes::hash_at_the_extremes(&b) {
        panic!("{e}");
    }
}

fn gather_through_windows<T: Element>(b: &WgpuBackend) {
    let d_head = 6;
    // Three heads of uneven sizes: 10 010 rows in all, 60 060 elements, many bindings' worth.
    let l = LayerHash {
        layer_id: 0,
        multipliers: vec![1, 1],
        table_sizes: vec![5_000, 17, 4_993],
        offsets: vec![0, 5_000, 5_017],
    };
    let table: Vec<T> = (0..l.total_rows() as usize * d_head)
        .map(|i| T::from_f64((i % 4093) as f64 / 64.0 - 30.0))
        .collect();
    assert!(
        (table.len() * std::mem::size_of::<T>()) as u64 > 6 * b.binding_limit(),
        "the table spans many windows"
    );
    let table_dev = b.upload(&table).unwrap();
    // Every row of every head, so every window edge (wherever the backend puts it) is crossed
    // by some row; positions in chunks whose output fits one binding.
    let chunk = 200;
    for first in (0..5_000).step_by(chunk) {
        let rows: Vec<u32> = (first..first + chunk)
            .flat_map(|p| [(p % 5_000) as u32, (p % 17) as u32, (p % 4_993) as u32])
            .collect();
        let mut expected = vec![T::default(); rows.len() * d_head];
        reference::gather_rows(&table, d_head, &l, &rows, &mut expected).unwrap();
        let mut out = b
            .guarded::<T>(expected.len(), 16, T::from_f64(-7.0))
            .unwrap();
        b.gather_rows(&table_dev, d_head, &l, &b.upload(&rows).unwrap(), &mut out)
            .unwrap();
        assert_same(
            &b.to_vec(&out).unwrap(),
            &expected,
            &format!("{} from {first}", T::DTYPE),
        );
        assert!(b.guards_intact(&out).unwrap());
    }
}

#[test]
fn tables_larger_than_a_binding_are_gathered_window_by_window() {
    let Some(b) = backend("windowed gather") else {
        return;
    };
    let b = b.with_binding_limit(16 * 1024);
    assert!(b.binding_limit() <= 16 * 1024);
    gather_through_windows::<f32>(&b);
    gather_through_windows::<bf16>(&b);
    gather_through_windows::<f16>(&b);
}

#[test]
fn tables_larger_than_a_buffer_are_held_in_segments_and_gathered() {
    let Some(b) = backend("segmented gather") else {
        return;
    };
    // 140 KiB buffers: the f32 table (240 KB) takes 4 segments, the 16-bit ones 2.
    let b = b
        .with_buffer_limit(140 * 1024)
        .with_binding_limit(16 * 1024);
    gather_through_windows::<f32>(&b);
    gather_through_windows::<bf16>(&b);
    gather_through_windows::<f16>(&b);
    // A segmented buffer still downloads whole, and copies.
    let data: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
    let big = b.upload(&data).unwrap();
    assert_same(&b.to_vec(&big).unwrap(), &data, "segmented download");
    let mut copy = b.zeros::<f32>(data.len()).unwrap();
    b.copy(&big, &mut copy).unwrap();
    assert_same(&b.to_vec(&copy).unwrap(), &data, "segmented copy");
}

#[test]
fn other_buffers_beyond_the_binding_limit_are_an_error_not_a_truncation() {
    let Some(b) = backend("binding limit") else {
        return;
    };
    let b = b.with_binding_limit(4096);
    let limit = b.binding_limit() as usize;
    let x = b.upload(&vec![1.0f32; limit]).unwrap(); // 4 x the limit in bytes
    let w = b.upload(&[1.0f32; 4]).unwrap();
    let mut out = b.zeros::<f32>(limit).unwrap();
    let err = b.rms_norm(&x, &w, 4, 1e-6, &mut out).unwrap_err();
    assert!(
        matches!(err, Error::Backend { ref message, .. } if message.contains("largest storage binding")),
        "{err}"
    );
}

#[test]
fn routed_experts_grouped_by_expert_over_many_tiles_equal_the_oracle() {
    let Some(b) = backend("grouped experts") else {
        return;
    };
    // 600 slots over 5 experts, skewed so that one expert gets several 64-slot tiles and one
    // gets none; dims not multiples of 4 or 64.
    let (tokens, k, experts, dim, inter) = (300, 2, 5, 37, 29);
    let mut rng = SplitMix64::new(21);
    let indices: Vec<u32> = (0..tokens * k)
        .map(|s| {
            if s % 3 == 0 {
                0
            } else {
                1 + rng.below(experts as u64 - 2) as u32
            }
        })
        .collect();
    let x: Vec<f32> = synthetic::activations(tokens * dim, 1.0, 1);
    let w1: Vec<f32> = synthetic::activations(experts * inter * dim, 0.3, 2);
    let w2: Vec<f32> = synthetic::activations(experts * dim * inter, 0.3, 3);
    let w3: Vec<f32> = synthetic::activations(experts * inter * dim, 0.3, 4);
    let wide = |v: &[f32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<f64>>();
    let mut expected = vec![0.0f64; tokens * k * dim];
    reference::routed_experts(
        &wide(&x),
        &wide(&w1),
        &wide(&w2),
        &wide(&w3),
        &indices,
        dim,
        inter,
        &mut expected,
    )
    .unwrap();
    let mut out = b.guarded::<f32>(expected.len(), 16, -7.0).unwrap();
    b.routed_experts(
        &b.upload(&x).unwrap(),
        &b.upload(&w1).unwrap(),
        &b.upload(&w2).unwrap(),
        &b.upload(&w3).unwrap(),
        &b.upload(&indices).unwrap(),
        dim,
        inter,
        &mut out,
    )
    .unwrap();
    let got = wide(&b.to_vec(&out).unwrap());
    let err = reference::nmse(&got, &expected);
    assert!(err < 1e-10, "nmse {err}");
    assert!(b.guards_intact(&out).unwrap());
}

/// Runs the suite's cases whose names start with one of `families` (or contain `also`) on `b`;
/// every one must pass or be unsupported, and at least `min_ok` must run.
fn cases_pass(b: &WgpuBackend, families: &[&str], also: &str, min_ok: usize) {
    use engram_conformance::cases::all_cases;
    use engram_conformance::harness::{run_case, Status};
    let mut ran = 0;
    for case in all_cases().iter().filter(|c| {
        families.iter().any(|f| c.name.starts_with(f))
            || (!also.is_empty() && c.name.contains(also))
    }) {
        let result = run_case(b, case);
        assert!(
            matches!(result.status, Status::Ok | Status::NotSupported),
            "{}: {}",
            case.name,
            result.detail
        );
        ran += usize::from(result.status == Status::Ok);
    }
    assert!(ran >= min_ok, "only {ran} cases ran");
}

#[test]
fn the_portable_kernels_pass_the_reduction_f16_and_layer_cases_too() {
    let Some(b) = backend("portable kernels") else {
        return;
    };
    let b = b.portable();
    assert_eq!(b.variant(), engram_wgpu::shaders::Variant::default());
    cases_pass(
        &b,
        &["rms_norm/", "gate/", "engram_prefill/", "engram_decode/"],
        "/in_f16/",
        120,
    );
}

#[test]
fn the_shared_tile_projection_passes_the_projection_cases_too() {
    let Some(b) = backend("shared-tile projection") else {
        return;
    };
    let b = b.with_variant(engram_wgpu::shaders::Variant {
        shared_tiles: true,
        ..engram_wgpu::shaders::Variant::default()
    });
    assert!(b.variant().shared_tiles);
    cases_pass(
        &b,
        &["linear/", "engram_prefill/", "expert_ffn/", "moe_layer/"],
        "",
        60,
    );
}
