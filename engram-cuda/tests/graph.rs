//! The decode step captured as a CUDA graph: replays equal the `engram_decode` op step for step
//! (output, gates and state) and the oracle's decode within the bf16 bound, on a layer whose
//! projection is one k-tile and on one whose decode step splits k (so each replay must find the
//! split's counters as the last left them), and a bad id found on the device is reported by
//! `check` with the oracle's error while that step writes nothing. Without a device (or without
//! the `cuda` feature) the test reports SKIPPED with the reason.

mod common;

#[cfg(feature = "cuda")]
#[allow(clippy::unwrap_used)] // a failing test is a panic with the reason
fn replays_equal_the_op(b: &engram_cuda::CudaBackend, shape: &str) {
    use engram_conformance::cases::{engram_shapes, CASE_VOCAB};
    use engram_conformance::harness::{convert_layer, nmse_bound};
    use engram_conformance::metrics::Check;
    use engram_core::reference::{self, EngramState};
    use engram_core::{
        bf16, synthetic, Backend, DType, DeviceEngramLayer, DeviceEngramState, EngramOps, Error,
        NgramHasher,
    };
    let widen = |v: &[bf16]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();

    let shape = engram_shapes()
        .into_iter()
        .find(|s| s.name == shape)
        .unwrap();
    let c = &shape.config;
    let (m, d) = (c.hc_mult, c.hidden_size);
    let hasher = NgramHasher::new(c, CASE_VOCAB, 1).unwrap();
    let layer =
        synthetic::engram_layer::<bf16>(c, &hasher, c.layer_ids[0], 5, &mut |_, _| {}).unwrap();
    let dev = DeviceEngramLayer::upload(b, &layer).unwrap();
    let seqs = 3;
    let prime = 20;
    let host_ids = synthetic::ids(seqs * prime, CASE_VOCAB, 1);
    let host_cu: Vec<u32> = (0..=seqs).map(|s| (s * prime) as u32).collect();
    let host_hidden = synthetic::activations::<bf16>(seqs * prime * m * d, 1.0, 2);
    let ids = b.upload(&host_ids).unwrap();
    let cu = b.upload(&host_cu).unwrap();
    let hidden = b.upload(&host_hidden).unwrap();
    // The oracle, in f64 on the same (bf16) weights, follows the same steps.
    let oracle = convert_layer::<bf16, f64>(&layer);
    let mut oracle_state = EngramState::new(&oracle, seqs);
    reference::engram_prefill(
        &oracle,
        &host_ids,
        &host_cu,
        &widen(&host_hidden),
        &mut vec![0.0; seqs * prime * m * d],
        None,
        Some(&mut oracle_state),
    )
    .unwrap();
    let mut scratch_out = b.zeros::<bf16>(seqs * prime * m * d).unwrap();
    let mut by_op = DeviceEngramState::new(b, &dev, seqs).unwrap();
    let mut by_graph = DeviceEngramState::new(b, &dev, seqs).unwrap();
    for state in [&mut by_op, &mut by_graph] {
        b.engram_prefill(
            &dev,
            &ids,
            &cu,
            &hidden,
            &mut scratch_out,
            None,
            Some(state),
        )
        .unwrap();
    }

    let mut step_ids = b.zeros::<u32>(seqs).unwrap();
    let mut step_hidden = b.zeros::<bf16>(seqs * m * d).unwrap();
    let mut out_graph = b.zeros::<bf16>(seqs * m * d).unwrap();
    let mut out_op = b.zeros::<bf16>(seqs * m * d).unwrap();
    let mut graph = b
        .capture_decode(&dev, &step_ids, &step_hidden, &mut by_graph, &mut out_graph)
        .unwrap();
    for step in 0..4u64 {
        let new_ids = synthetic::ids(seqs, CASE_VOCAB, 10 + step);
        let new_hidden = synthetic::activations::<bf16>(seqs * m * d, 1.0, 20 + step);
        step_ids.write(&new_ids).unwrap();
        step_hidden.write(&new_hidden).unwrap();
        b.engram_decode(&dev, &step_ids, &step_hidden, &mut by_op, &mut out_op, None)
            .unwrap();
        graph
            .replay(&step_ids, &step_hidden, &mut by_graph, &mut out_graph)
            .unwrap();
        graph.check().unwrap();
        assert_eq!(
            b.to_vec(&out_graph).unwrap(),
            b.to_vec(&out_op).unwrap(),
            "step {step}: outputs"
        );
        let mut expected = vec![0.0; seqs * m * d];
        reference::engram_decode(
            &oracle,
            &new_ids,
            &widen(&new_hidden),
            &mut oracle_state,
            &mut expected,
            None,
        )
        .unwrap();
        let got = widen(&b.to_vec(&out_graph).unwrap());
        let check = Check::close(
            format!("step {step}: output against the oracle"),
            &got,
            &expected,
            nmse_bound(DType::BF16),
        );
        assert!(check.passed(), "{check:?}");
        assert_eq!(
            by_graph.download(b).unwrap(),
            by_op.download(b).unwrap(),
            "step {step}: states"
        );
    }

    // A bad id: the step writes nothing and `check` reports it as the oracle would.
    let before = (by_graph.download(b).unwrap(), b.to_vec(&out_graph).unwrap());
    let mut bad = synthetic::ids(seqs, CASE_VOCAB, 99);
    bad[1] = CASE_VOCAB as u32 + 3;
    step_ids.write(&bad).unwrap();
    graph
        .replay(&step_ids, &step_hidden, &mut by_graph, &mut out_graph)
        .unwrap();
    match graph.check() {
        Err(Error::IdOutOfRange {
            position: 1,
            id,
            limit,
        }) if id == CASE_VOCAB + 3 && limit == CASE_VOCAB => {}
        other => panic!("expected the bad id at position 1, got {other:?}"),
    }
    assert_eq!(
        (by_graph.download(b).unwrap(), b.to_vec(&out_graph).unwrap()),
        before,
        "the step with a bad id wrote"
    );
    // Replays on other buffers are refused.
    let other_ids = b.upload(&bad).unwrap();
    assert!(graph
        .replay(&other_ids, &step_hidden, &mut by_graph, &mut out_graph)
        .is_err());
}

#[test]
fn decode_graph_replays_equal_the_op_and_report_bad_ids() {
    common::on_device(
        "decode graph",
        |#[cfg_attr(not(feature = "cuda"), allow(unused_variables))] b| {
            #[cfg(feature = "cuda")]
            {
                replays_equal_the_op(b, "tensor_tiles");
                replays_equal_the_op(b, "deep_k");
            }
        },
    );
}
