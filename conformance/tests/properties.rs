//! Properties of the layer contracts, on seeded synthetic layers of many shapes: decoding token
//! by token equals prefilling; prefill then decode equals prefill of the whole; packing sequences
//! together equals running them one by one; the order of sequences in a batch does not matter;
//! the CPU backend's trait composition equals the oracle.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_core::reference::{engram_decode, engram_prefill, moe_forward, EngramState};
use engram_core::{
    synthetic, Backend, DeviceEngramLayer, DeviceEngramState, DeviceMoeLayer, EngramConfig,
    EngramLayer, EngramOps, MoeConfig, MoeOps, NgramHasher, ScoreFunc,
};
use engram_cpu::CpuBackend;

const VOCAB: u64 = 1000;

fn config(n: usize, k: usize, m: usize, d: usize, kernel: usize, conv: bool) -> EngramConfig {
    EngramConfig {
        engram_vocab_size: vec![53; n - 1],
        max_ngram_size: n,
        n_embed_per_ngram: 4 * k,
        n_head_per_ngram: k,
        layer_ids: vec![3, 7],
        pad_id: 2,
        seed: 5,
        kernel_size: kernel,
        hidden_size: d,
        hc_mult: m,
        short_conv: conv,
    }
}

/// The shapes the properties are checked on: orders 2..5, one to four branches, odd widths,
/// kernels 1..4, with and without the convolution.
fn configs() -> Vec<EngramConfig> {
    vec![
        config(3, 4, 4, 16, 4, true),
        config(2, 1, 1, 5, 4, true),
        config(4, 3, 2, 7, 3, true),
        config(5, 2, 1, 9, 2, true),
        config(3, 2, 3, 6, 1, true),
        config(4, 2, 2, 8, 4, false),
    ]
}

fn layer(c: &EngramConfig, seed: u64) -> EngramLayer<f64> {
    let hasher = NgramHasher::new(c, VOCAB, 2).unwrap();
    synthetic::engram_layer(c, &hasher, 7, seed, &mut |_, _| {}).unwrap()
}

fn assert_close(got: &[f64], expected: &[f64], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
            "{what}: element {i}: {a} vs {b}"
        );
    }
}

struct Batch {
    ids: Vec<u32>,
    cu: Vec<u32>,
    hidden: Vec<f64>,
}

fn batch(c: &EngramConfig, lens: &[usize], seed: u64) -> Batch {
    let total: usize = lens.iter().sum();
    let mut cu = vec![0u32];
    for l in lens {
        cu.push(cu.last().unwrap() + *l as u32);
    }
    Batch {
        ids: synthetic::ids(total, VOCAB, seed),
        cu,
        hidden: synthetic::activations(total * c.hc_mult * c.hidden_size, 2.0, seed),
    }
}

fn prefill(l: &EngramLayer<f64>, b: &Batch) -> (Vec<f64>, Vec<f64>, EngramState<f64>) {
    let md = l.config.hc_mult * l.config.hidden_size;
    let mut out = vec![0.0; b.ids.len() * md];
    let mut gates = vec![0.0; b.ids.len() * l.config.hc_mult];
    let mut state = EngramState::new(l, b.cu.len() - 1);
    engram_prefill(
        l,
        &b.ids,
        &b.cu,
        &b.hidden,
        &mut out,
        Some(&mut gates),
        Some(&mut state),
    )
    .unwrap();
    (out, gates, state)
}

// Lengths include sequences shorter than every order, of length 1, and empty ones.
const LENS: [usize; 5] = [7, 1, 0, 2, 12];

#[test]
fn decoding_token_by_token_equals_prefill() {
    for (i, c) in configs().iter().enumerate() {
        let l = layer(c, i as u64);
        let b = batch(c, &LENS, 100 + i as u64);
        let (full, full_gates, _) = prefill(&l, &b);
        let md = c.hc_mult * c.hidden_size;
        for (s, &len) in LENS.iter().enumerate() {
            let start = b.cu[s] as usize;
            let mut state = EngramState::new(&l, 1);
            for t in start..start + len {
                let mut out = vec![0.0; md];
                let mut gates = vec![0.0; c.hc_mult];
                engram_decode(
                    &l,
                    &b.ids[t..t + 1],
                    &b.hidden[t * md..(t + 1) * md],
                    &mut state,
                    &mut out,
                    Some(&mut gates),
                )
                .unwrap();
                assert_close(
                    &out,
                    &full[t * md..(t + 1) * md],
                    &format!("config {i} seq {s} pos {t}"),
                );
                assert_close(
                    &gates,
                    &full_gates[t * c.hc_mult..(t + 1) * c.hc_mult],
                    "gates",
                );
            }
        }
    }
}

#[test]
fn prefill_then_decode_equals_prefill_of_the_whole() {
    for (i, c) in configs().iter().enumerate() {
        let l = layer(c, i as u64);
        let md = c.hc_mult * c.hidden_size;
        let whole = batch(c, &[13], 200 + i as u64);
        let (full, _, _) = prefill(&l, &whole);
        for split in [0usize, 1, 2, 5, 12] {
            let head = Batch {
                ids: whole.ids[..split].to_vec(),
                cu: vec![0, split as u32],
                hidden: whole.hidden[..split * md].to_vec(),
            };
            let (_, _, mut state) = prefill(&l, &head);
            for t in split..13 {
                let mut out = vec![0.0; md];
                engram_decode(
                    &l,
                    &whole.ids[t..t + 1],
                    &whole.hidden[t * md..(t + 1) * md],
                    &mut state,
                    &mut out,
                    None,
                )
                .unwrap();
                assert_close(
                    &out,
                    &full[t * md..(t + 1) * md],
                    &format!("config {i} split {split} pos {t}"),
                );
            }
        }
    }
}

#[test]
fn packing_equals_one_by_one_and_order_does_not_matter() {
    for (i, c) in configs().iter().enumerate() {
        let l = layer(c, i as u64);
        let md = c.hc_mult * c.hidden_size;
        let b = batch(c, &LENS, 300 + i as u64);
        let (packed, _, packed_state) = prefill(&l, &b);
        let keep = c.max_ngram_size - 1;
        let conv = packed_state.conv.len() / LENS.len();
        for (s, &len) in LENS.iter().enumerate() {
            let r = b.cu[s] as usize..b.cu[s] as usize + len;
            let one = Batch {
                ids: b.ids[r.clone()].to_vec(),
                cu: vec![0, len as u32],
                hidden: b.hidden[r.start * md..r.end * md].to_vec(),
            };
            let (alone, _, state) = prefill(&l, &one);
            // Same operations in the same order: bit-identical, not merely close.
            assert_eq!(
                alone,
                packed[r.start * md..r.end * md],
                "config {i} seq {s}"
            );
            assert_eq!(state.ids, packed_state.ids[s * keep..(s + 1) * keep]);
            assert_eq!(state.conv, packed_state.conv[s * conv..(s + 1) * conv]);
        }
        // Reverse the sequences: each one's output moves with it.
        let order: Vec<usize> = (0..LENS.len()).rev().collect();
        let mut rev = Batch {
            ids: vec![],
            cu: vec![0],
            hidden: vec![],
        };
        for &s in &order {
            let r = b.cu[s] as usize..b.cu[s + 1] as usize;
            rev.ids.extend_from_slice(&b.ids[r.clone()]);
            rev.hidden
                .extend_from_slice(&b.hidden[r.start * md..r.end * md]);
            rev.cu.push(rev.ids.len() as u32);
        }
        let (rev_out, _, _) = prefill(&l, &rev);
        for (j, &s) in order.iter().enumerate() {
            let a = b.cu[s] as usize * md..b.cu[s + 1] as usize * md;
            let r = rev.cu[j] as usize * md..rev.cu[j + 1] as usize * md;
            assert_eq!(rev_out[r], packed[a], "config {i} seq {s}");
        }
    }
}

#[test]
fn cpu_backend_trait_composition_equals_the_oracle() {
    let cpu = CpuBackend::new();
    for (i, c) in configs().iter().enumerate() {
        let l = layer(c, i as u64);
        let b = batch(c, &LENS, 400 + i as u64);
        let (expected, expected_gates, expected_state) = prefill(&l, &b);
        let dev = DeviceEngramLayer::upload(&cpu, &l).unwrap();
        let mut out = cpu.zeros::<f64>(expected.len()).unwrap();
        let mut gates = cpu.zeros::<f64>(expected_gates.len()).unwrap();
        let mut state = DeviceEngramState::new(&cpu, &dev, LENS.len()).unwrap();
        let (ids, cu, hidden) = (
            cpu.upload(&b.ids).unwrap(),
            cpu.upload(&b.cu).unwrap(),
            cpu.upload(&b.hidden).unwrap(),
        );
        cpu.engram_prefill(
            &dev,
            &ids,
            &cu,
            &hidden,
            &mut out,
            Some(&mut gates),
            Some(&mut state),
        )
        .unwrap();
        assert_eq!(cpu.to_vec(&out).unwrap(), expected, "config {i}");
        assert_eq!(cpu.to_vec(&gates).unwrap(), expected_gates);
        assert_eq!(state.download(&cpu).unwrap(), expected_state);
        // One decode step through the traits equals the oracle's.
        let md = c.hc_mult * c.hidden_size;
        let next_ids = synthetic::ids(LENS.len(), VOCAB, 9);
        let hidden = synthetic::activations::<f64>(LENS.len() * md, 2.0, 9);
        let mut host_state = expected_state.clone();
        let mut host_out = vec![0.0; LENS.len() * md];
        engram_decode(&l, &next_ids, &hidden, &mut host_state, &mut host_out, None).unwrap();
        let mut dev_out = cpu.zeros::<f64>(host_out.len()).unwrap();
        let (next_dev, hidden_dev) = (cpu.upload(&next_ids).unwrap(), cpu.upload(&hidden).unwrap());
        cpu.engram_decode(&dev, &next_dev, &hidden_dev, &mut state, &mut dev_out, None)
            .unwrap();
        assert_eq!(cpu.to_vec(&dev_out).unwrap(), host_out);
        assert_eq!(state.download(&cpu).unwrap(), host_state);
    }
}

fn moe_config(
    score_func: ScoreFunc,
    groups: usize,
    limited: usize,
    bias: bool,
    shared: usize,
) -> MoeConfig {
    MoeConfig {
        dim: 12,
        moe_inter_dim: 6,
        n_routed_experts: 8,
        n_shared_experts: shared,
        n_activated_experts: 3,
        n_expert_groups: groups,
        n_limited_groups: limited,
        route_scale: 1.5,
        score_func,
        bias,
    }
}

#[test]
fn moe_tokens_are_independent_and_the_backend_equals_the_oracle() {
    let cpu = CpuBackend::new();
    for (i, c) in [
        moe_config(ScoreFunc::Sigmoid, 4, 2, true, 1),
        moe_config(ScoreFunc::Softmax, 1, 1, false, 0),
        moe_config(ScoreFunc::Sigmoid, 2, 1, false, 2),
    ]
    .iter()
    .enumerate()
    {
        let l = synthetic::moe_layer::<f64>(c, i as u64).unwrap();
        let tokens = 9;
        let x = synthetic::activations::<f64>(tokens * c.dim, 1.0, 50 + i as u64);
        let mut out = vec![0.0; x.len()];
        let routing = moe_forward(&l, &x, &mut out).unwrap();
        // Each token alone gives the same row and the same experts.
        for t in 0..tokens {
            let mut one = vec![0.0; c.dim];
            let r = moe_forward(&l, &x[t * c.dim..(t + 1) * c.dim], &mut one).unwrap();
            assert_eq!(one, out[t * c.dim..(t + 1) * c.dim], "case {i} token {t}");
            let k = c.n_activated_experts;
            assert_eq!(r.indices, routing.indices[t * k..(t + 1) * k]);
        }
        let dev = DeviceMoeLayer::upload(&cpu, &l).unwrap();
        let mut dev_out = cpu.zeros::<f64>(x.len()).unwrap();
        let mut w = cpu.zeros::<f64>(routing.weights.len()).unwrap();
        let mut idx = cpu.zeros::<u32>(routing.indices.len()).unwrap();
        cpu.moe_forward(
            &dev,
            &cpu.upload(&x).unwrap(),
            &mut dev_out,
            &mut w,
            &mut idx,
        )
        .unwrap();
        assert_eq!(cpu.to_vec(&dev_out).unwrap(), out);
        assert_eq!(
            (cpu.to_vec(&w).unwrap(), cpu.to_vec(&idx).unwrap()),
            (routing.weights, routing.indices)
        );
    }
}
