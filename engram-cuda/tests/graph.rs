//! The decode step captured as a CUDA graph: replays equal the `engram_decode` op step for step
//! (output, gates and state) and the oracle's decode within the bf16 bound, on a layer whose
//! projection is one k-tile and on one whose decode step splits k (so each replay must find the
//! split's counters as the last left them), and a bad id found on the device is reported by
//! `check` with the oracle's error while that step writes nothing.
//!
//! The prefill captured as a CUDA graph: replays of batches of other lengths (empty sequences
//! among them) and ids in the same buffers equal the `engram_prefill` op (output and decode
//! state) and the oracle within the bf16 bound; a bad batch (lengths that decrease or do not
//! start at 0, an id beyond the vocabulary) writes nothing, nor does any replay after it until
//! `check`, which reports the oracle's first fault even after the inputs were rewritten; a graph
//! captured without a state refuses one. Without a device (or without the `cuda` feature) the
//! tests report SKIPPED with the reason.

mod common;

#[cfg(feature = "cuda")]
use engram_conformance::{
    cases::CASE_VOCAB,
    harness::{convert_layer, nmse_bound},
    metrics::Check,
};
#[cfg(feature = "cuda")]
use engram_core::{
    bf16,
    reference::{self, EngramState},
    synthetic, Backend, DType, DeviceEngramLayer, DeviceEngramState, EngramConfig, EngramLayer,
    EngramOps, Error, NgramHasher,
};

/// The config of the conformance shape `name` and a synthetic bf16 layer of it.
#[cfg(feature = "cuda")]
#[allow(clippy::unwrap_used)] // a failing test is a panic with the reason
fn bf16_layer(name: &str) -> (EngramConfig, EngramLayer<bf16>) {
    let shape = engram_conformance::cases::engram_shapes()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap();
    let c = shape.config;
    let hasher = NgramHasher::new(&c, CASE_VOCAB, 1).unwrap();
    let layer = synthetic::engram_layer(&c, &hasher, c.layer_ids[0], 5, &mut |_, _| {}).unwrap();
    (c, layer)
}

/// bf16 values as f64, for the oracle.
#[cfg(feature = "cuda")]
fn widen(v: &[bf16]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

#[cfg(feature = "cuda")]
#[allow(clippy::unwrap_used)] // a failing test is a panic with the reason
fn replays_equal_the_op(b: &engram_cuda::CudaBackend, shape: &str) {
    let (c, layer) = bf16_layer(shape);
    let c = &c;
    let (m, d) = (c.hc_mult, c.hidden_size);
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

#[cfg(feature = "cuda")]
#[allow(clippy::unwrap_used)] // a failing test is a panic with the reason
fn prefill_replays_equal_the_op(b: &engram_cuda::CudaBackend, shape: &str) {
    let (c, layer) = bf16_layer(shape);
    let c = &c;
    let md = c.hc_mult * c.hidden_size;
    let dev = DeviceEngramLayer::upload(b, &layer).unwrap();
    let oracle = convert_layer::<bf16, f64>(&layer);
    let (seqs, tokens) = (3, 48);

    let mut ids = b.zeros::<u32>(tokens).unwrap();
    let mut cu = b.zeros::<u32>(seqs + 1).unwrap();
    let mut hidden = b.zeros::<bf16>(tokens * md).unwrap();
    let mut out_graph = b.zeros::<bf16>(tokens * md).unwrap();
    let mut out_op = b.zeros::<bf16>(tokens * md).unwrap();
    let mut state_graph = DeviceEngramState::new(b, &dev, seqs).unwrap();
    let mut state_op = DeviceEngramState::new(b, &dev, seqs).unwrap();
    let mut graph = b
        .capture_prefill(
            &dev,
            &ids,
            &cu,
            &hidden,
            &mut out_graph,
            Some(&mut state_graph),
        )
        .unwrap();
    let good = |i: u64| {
        let batch_cu = match i % 4 {
            0 => vec![0u32, 16, 32, 48],
            1 => vec![0, 5, 40, 48],
            2 => vec![0, 0, 47, 48],
            _ => vec![0, 48, 48, 48],
        };
        let batch_ids = synthetic::ids(tokens, CASE_VOCAB, 30 + i);
        let batch_hidden = synthetic::activations::<bf16>(tokens * md, 1.0, 40 + i);
        (batch_ids, batch_cu, batch_hidden)
    };
    for i in 0..4u64 {
        let (host_ids, host_cu, host_hidden) = good(i);
        ids.write(&host_ids).unwrap();
        cu.write(&host_cu).unwrap();
        hidden.write(&host_hidden).unwrap();
        b.engram_prefill(
            &dev,
            &ids,
            &cu,
            &hidden,
            &mut out_op,
            None,
            Some(&mut state_op),
        )
        .unwrap();
        graph
            .replay(&ids, &cu, &hidden, &mut out_graph, Some(&mut state_graph))
            .unwrap();
        graph.check().unwrap();
        assert_eq!(
            b.to_vec(&out_graph).unwrap(),
            b.to_vec(&out_op).unwrap(),
            "batch {i}: outputs"
        );
        assert_eq!(
            state_graph.download(b).unwrap(),
            state_op.download(b).unwrap(),
            "batch {i}: states"
        );
        let mut expected = vec![0.0; tokens * md];
        let mut oracle_state = EngramState::new(&oracle, seqs);
        reference::engram_prefill(
            &oracle,
            &host_ids,
            &host_cu,
            &widen(&host_hidden),
            &mut expected,
            None,
            Some(&mut oracle_state),
        )
        .unwrap();
        let check = Check::close(
            format!("batch {i}: output against the oracle"),
            &widen(&b.to_vec(&out_graph).unwrap()),
            &expected,
            nmse_bound(DType::BF16),
        );
        assert!(check.passed(), "{check:?}");
    }

    // Bad batches: nothing written by the replay that meets one nor by the good one after it
    // (skipped until `check`), which then reports the first fault from the device's word although
    // the inputs were rewritten; after `check`, replays run again.
    let bad_id = CASE_VOCAB as u32 + 9;
    let cases: [(&str, Vec<u32>, Option<usize>, Error); 3] = [
        (
            "decreasing lengths",
            vec![0, 20, 10, 48],
            None,
            Error::InvalidSeqLens {
                reason: "must not decrease",
            },
        ),
        (
            "an id at the vocabulary's end",
            vec![0, 16, 32, 48],
            Some(37),
            Error::IdOutOfRange {
                position: 37,
                id: u64::from(bad_id),
                limit: CASE_VOCAB,
            },
        ),
        (
            "lengths not starting at 0 and a bad id",
            vec![1, 16, 32, 48],
            Some(2),
            Error::InvalidSeqLens {
                reason: "must start at 0",
            },
        ),
    ];
    for (n, (what, bad_cu, bad_at, expected)) in cases.into_iter().enumerate() {
        let before = (
            b.to_vec(&out_graph).unwrap(),
            state_graph.download(b).unwrap(),
        );
        let (mut host_ids, _, host_hidden) = good(10 + n as u64);
        if let Some(p) = bad_at {
            host_ids[p] = bad_id;
        }
        ids.write(&host_ids).unwrap();
        cu.write(&bad_cu).unwrap();
        hidden.write(&host_hidden).unwrap();
        graph
            .replay(&ids, &cu, &hidden, &mut out_graph, Some(&mut state_graph))
            .unwrap();
        let (next_ids, next_cu, next_hidden) = good(20 + n as u64);
        ids.write(&next_ids).unwrap();
        cu.write(&next_cu).unwrap();
        hidden.write(&next_hidden).unwrap();
        graph
            .replay(&ids, &cu, &hidden, &mut out_graph, Some(&mut state_graph))
            .unwrap();
        match graph.check() {
            Err(e) if e == expected => {}
            other => panic!("{what}: expected {expected:?}, got {other:?}"),
        }
        assert_eq!(
            (
                b.to_vec(&out_graph).unwrap(),
                state_graph.download(b).unwrap()
            ),
            before,
            "{what}: a replay wrote after the bad batch"
        );
        graph
            .replay(&ids, &cu, &hidden, &mut out_graph, Some(&mut state_graph))
            .unwrap();
        graph.check().unwrap();
        b.engram_prefill(
            &dev,
            &ids,
            &cu,
            &hidden,
            &mut out_op,
            None,
            Some(&mut state_op),
        )
        .unwrap();
        assert_eq!(
            b.to_vec(&out_graph).unwrap(),
            b.to_vec(&out_op).unwrap(),
            "{what}: the good batch after check"
        );
    }

    // Replays on other buffers, or without the captured state, are refused; a graph captured
    // without a state refuses one.
    let other_cu = b.upload(&[0u32, 16, 32, 48]).unwrap();
    assert!(graph
        .replay(
            &ids,
            &other_cu,
            &hidden,
            &mut out_graph,
            Some(&mut state_graph)
        )
        .is_err());
    assert!(graph
        .replay(&ids, &cu, &hidden, &mut out_graph, None)
        .is_err());
    drop(graph);
    let mut stateless = b
        .capture_prefill(&dev, &ids, &cu, &hidden, &mut out_graph, None)
        .unwrap();
    assert!(stateless
        .replay(&ids, &cu, &hidden, &mut out_graph, Some(&mut state_graph))
        .is_err());
    stateless
        .replay(&ids, &cu, &hidden, &mut out_graph, None)
        .unwrap();
    stateless.check().unwrap();
    assert_eq!(
        b.to_vec(&out_graph).unwrap(),
        b.to_vec(&out_op).unwrap(),
        "the graph without a state"
    );
}

#[test]
fn prefill_graph_replays_equal_the_op_and_report_bad_batches() {
    common::on_device(
        "prefill graph",
        |#[cfg_attr(not(feature = "cuda"), allow(unused_variables))] b| {
            #[cfg(feature = "cuda")]
            {
                prefill_replays_equal_the_op(b, "tensor_tiles");
                prefill_replays_equal_the_op(b, "deep_k");
            }
        },
    );
}
