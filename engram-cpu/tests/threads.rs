//! The CPU backend's results do not depend on how many threads compute them.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_core::{
    bf16, synthetic, Backend, DeviceEngramLayer, Element, EngramConfig, EngramOps, NgramHasher,
};
use engram_cpu::CpuBackend;

fn prefill<T: Element>(backend: &CpuBackend, seed: u64) -> (Vec<T>, Vec<T>) {
    let config = EngramConfig {
        engram_vocab_size: vec![211, 223],
        max_ngram_size: 3,
        n_embed_per_ngram: 32,
        n_head_per_ngram: 4,
        layer_ids: vec![2],
        pad_id: 1,
        seed: 3,
        kernel_size: 4,
        hidden_size: 40,
        hc_mult: 3,
        short_conv: true,
    };
    let hasher = NgramHasher::new(&config, 997, 1).unwrap();
    let layer = synthetic::engram_layer::<T>(&config, &hasher, 2, seed, &mut |_, _| {}).unwrap();
    let dev = DeviceEngramLayer::upload(backend, &layer).unwrap();
    let lens = [37usize, 1, 90, 0, 45];
    let total: usize = lens.iter().sum();
    let mut cu = vec![0u32];
    for l in lens {
        cu.push(cu[cu.len() - 1] + l as u32);
    }
    let md = config.hc_mult * config.hidden_size;
    let ids = backend.upload(&synthetic::ids(total, 997, seed)).unwrap();
    let cu = backend.upload(&cu).unwrap();
    let hidden = backend
        .upload(&synthetic::activations::<T>(total * md, 2.0, seed))
        .unwrap();
    let mut out = backend.zeros::<T>(total * md).unwrap();
    let mut gates = backend.zeros::<T>(total * config.hc_mult).unwrap();
    backend
        .engram_prefill(&dev, &ids, &cu, &hidden, &mut out, Some(&mut gates), None)
        .unwrap();
    (
        backend.to_vec(&out).unwrap(),
        backend.to_vec(&gates).unwrap(),
    )
}

fn bits<T: Element>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

#[test]
fn prefill_is_bitwise_the_same_on_one_thread_and_on_the_pool() {
    for seed in 0..3 {
        let (a, ga) = prefill::<f32>(&CpuBackend::sequential(), seed);
        let (b, gb) = prefill::<f32>(&CpuBackend::new(), seed);
        assert_eq!(bits(&a), bits(&b), "f32 output, seed {seed}");
        assert_eq!(bits(&ga), bits(&gb), "f32 gates, seed {seed}");
        let (a, _) = prefill::<bf16>(&CpuBackend::sequential(), seed);
        let (b, _) = prefill::<bf16>(&CpuBackend::new(), seed);
        assert_eq!(bits(&a), bits(&b), "bf16 output, seed {seed}");
    }
    // A pool of another size gives the same bits too.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let (c, _) = pool.install(|| prefill::<f32>(&CpuBackend::new(), 7));
    let (d, _) = prefill::<f32>(&CpuBackend::sequential(), 7);
    assert_eq!(bits(&c), bits(&d));
}
