//! Checks at the extremes of the hash's operands, shared by the backends whose hash differs from
//! the CPU's arithmetic (wgpu's u32 pairs, CUDA's reciprocal modulo): table sizes up to
//! `2^32 - 1`, 64-bit products up to `2^64 - 1`, N from 2 to 5, prefill and decode, each equal to
//! the oracle bit for bit.

use engram_core::hash::{hash_packed, LayerHash};
use engram_core::synthetic::SplitMix64;
use engram_core::{reference, EngramOps};

/// A layer with the given table sizes (heads of orders 2..=n, `k` per order) and multipliers
/// drawn below `max_mult`, the first one `max_mult` itself (the largest product the vocabulary
/// allows).
pub fn layer_with_sizes(
    n: usize,
    k: usize,
    sizes: &[u32],
    max_mult: u64,
    rng: &mut SplitMix64,
) -> LayerHash {
    let mut multipliers: Vec<u64> = (0..n).map(|_| 1 + rng.below(max_mult)).collect();
    multipliers[0] = max_mult;
    let table_sizes: Vec<u32> = (0..(n - 1) * k).map(|i| sizes[i % sizes.len()]).collect();
    let mut offsets = Vec::new();
    let mut next = 0u64;
    for &p in &table_sizes {
        offsets.push(next);
        next += u64::from(p);
    }
    LayerHash {
        layer_id: 0,
        multipliers,
        table_sizes,
        offsets,
    }
}

/// The first difference between `got` and `expected`, described.
fn first_difference(got: &[u32], expected: &[u32], what: &str) -> Result<(), String> {
    if got.len() != expected.len() {
        return Err(format!(
            "{what}: {} rows, expected {}",
            got.len(),
            expected.len()
        ));
    }
    match got.iter().zip(expected).position(|(g, e)| g != e) {
        Some(i) => Err(format!(
            "{what}: row {i} is {}, expected {}",
            got[i], expected[i]
        )),
        None => Ok(()),
    }
}

/// Hashes packed batches and decode windows on `b` with table sizes at every edge (the largest
/// 32-bit prime, `2^32 - 1`, values past `2^31`, powers of two, 3, 2, 1) and vocabularies up to
/// `2^32 - 1`; `Err` names the first row that differs from the oracle.
pub fn hash_at_the_extremes<B: EngramOps>(b: &B) -> Result<(), String> {
    let err = |e: engram_core::Error| e.to_string();
    let mut rng = SplitMix64::new(7);
    let sizes = [
        4_294_967_291,
        u32::MAX,
        2_147_483_659,
        1 << 31,
        (1 << 31) + 1,
        65_537,
        3,
        2,
        1,
    ];
    for (vocab, n, k) in [
        (u64::from(u32::MAX), 3, 4),
        (1_000, 4, 3),
        (129_280, 5, 2),
        (2, 2, 9),
    ] {
        // Products up to 2^64 - 1: every bit of the 64-bit mix is exercised.
        let max_mult = u64::MAX / (vocab - 1).max(1);
        let l = layer_with_sizes(n, k, &sizes, max_mult, &mut rng);
        let mut ids: Vec<u32> = (0..509).map(|_| rng.below(vocab) as u32).collect();
        ids[0] = (vocab - 1) as u32;
        ids[1] = 0;
        ids[200] = (vocab - 1) as u32;
        let cu = [0u32, 1, 1, 100, 300, 509];
        let pad = (vocab / 2) as u32;
        let heads = (n - 1) * k;
        let mut expected = vec![0u32; ids.len() * heads];
        hash_packed(&[&l], k, pad, vocab, &ids, &cu, &mut [&mut expected]).map_err(err)?;
        let mut rows = b.zeros::<u32>(ids.len() * heads).map_err(err)?;
        let (ids_d, cu_d) = (b.upload(&ids).map_err(err)?, b.upload(&cu).map_err(err)?);
        b.hash(&l, k, pad, vocab, &ids_d, &cu_d, &mut rows)
            .map_err(err)?;
        first_difference(
            &b.to_vec(&rows).map_err(err)?,
            &expected,
            &format!("prefill, vocab {vocab}, N {n}"),
        )?;

        // Decode: the same kind of windows from a history.
        let seqs = 64;
        let keep = n - 1;
        let history: Vec<u32> = (0..seqs * keep).map(|_| rng.below(vocab) as u32).collect();
        let new_ids: Vec<u32> = (0..seqs).map(|_| rng.below(vocab) as u32).collect();
        let mut expected = vec![0u32; seqs * heads];
        reference::hash_decode(&l, k, vocab, &history, &new_ids, &mut expected).map_err(err)?;
        let mut rows = b.zeros::<u32>(seqs * heads).map_err(err)?;
        let (hist_d, new_d) = (
            b.upload(&history).map_err(err)?,
            b.upload(&new_ids).map_err(err)?,
        );
        b.hash_decode(&l, k, vocab, &hist_d, &new_d, &mut rows)
            .map_err(err)?;
        first_difference(
            &b.to_vec(&rows).map_err(err)?,
            &expected,
            &format!("decode, vocab {vocab}, N {n}"),
        )?;
    }
    Ok(())
}
