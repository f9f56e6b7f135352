//! The N-gram hash: which row of which head's table each position reads.
//!
//! For layer `l`, order `n` and head `j`, position `t` of a sequence of compressed ids `x'` reads
//! row `(XOR_{k<n} x'_{t-k} * m_k) mod p_{n,j}`, where positions before the sequence start read the
//! compressed pad id. The multipliers `m` come from [`numpy`]'s generator and the primes `p` from
//! [`primes`], exactly as in the reference; the products never overflow 63 bits because each
//! multiplier is below `i64::MAX / compressed_vocab`.

pub mod numpy;
pub mod primes;

use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use crate::batch::PackedBatch;
use crate::config::EngramConfig;
use crate::error::{Error, Result};

/// The layer-id stride of the multiplier seeds: layer `l` seeds its generator with
/// `seed + 10007 * l`.
pub const LAYER_SEED_STRIDE: u64 = 10_007;

/// The reference's multipliers for one layer: `max_ngram_size` odd numbers drawn with
/// `default_rng(seed + 10007 * layer_id).integers(0, half, max_ngram_size) * 2 + 1`, where
/// `half = max(1, (i64::MAX / compressed_vocab) / 2)`.
pub fn layer_multipliers(
    compressed_vocab: u64,
    seed: u64,
    layer_id: u32,
    max_ngram_size: usize,
) -> Result<Vec<u64>> {
    if compressed_vocab == 0 {
        return Err(Error::InvalidVocab {
            reason: "the compressed vocabulary is empty",
        });
    }
    let half = ((i64::MAX as u64 / compressed_vocab) / 2).max(1);
    let entropy = u128::from(seed) + u128::from(LAYER_SEED_STRIDE) * u128::from(layer_id);
    let draws = numpy::Pcg64::from_seed(entropy)
        .integers_i64(0, half as i64, max_ngram_size)
        .ok_or(Error::Overflow {
            what: "multiplier range",
        })?;
    Ok(draws.into_iter().map(|r| r as u64 * 2 + 1).collect())
}

/// Table sizes of every layer: for each layer in `config.layer_ids` order, each order, each head,
/// the next prime above the previous one (starting above `engram_vocab_size[n - 2] - 1`) that no
/// earlier layer or head has taken. Indexed `[layer][order - 2][head]`.
pub fn prime_tables(config: &EngramConfig) -> Result<Vec<Vec<Vec<u64>>>> {
    config.validate()?;
    let mut seen = BTreeSet::new();
    let mut layers = Vec::with_capacity(config.layer_ids.len());
    for _ in &config.layer_ids {
        let mut orders = Vec::with_capacity(config.max_ngram_size - 1);
        for &min_size in &config.engram_vocab_size {
            let mut start = min_size - 1;
            let mut heads = Vec::with_capacity(config.n_head_per_ngram);
            for _ in 0..config.n_head_per_ngram {
                let p = primes::next_unused_prime(start, &seen)?;
                seen.insert(p);
                heads.push(p);
                start = p;
            }
            orders.push(heads);
        }
        layers.push(orders);
    }
    Ok(layers)
}

/// Everything the hash of one layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerHash {
    /// The backbone layer this Engram module sits in.
    pub layer_id: u32,
    /// `m_0 .. m_{N-1}`.
    pub multipliers: Vec<u64>,
    /// Rows of each head's table, order-major: head `j` of order `n` is at `(n - 2) * K + j`.
    pub table_sizes: Vec<u32>,
    /// First row of each head inside the one concatenated table (same indexing).
    pub offsets: Vec<u64>,
}

impl LayerHash {
    /// The rows one position reads, from its window of compressed ids, newest first
    /// (`window[k] = x'_{t-k}`, pad ids before the sequence start; `window.len() == N`):
    /// `out[(n - 2) * K + j] = (XOR_{k<n} window[k] * m_k) mod p_{n,j}`.
    ///
    /// The caller guarantees every id is below the compressed vocabulary size the multipliers
    /// were drawn for, which keeps each product below 2^63.
    pub fn rows_for_window(&self, window: &[u64], heads_per_order: usize, out: &mut [u32]) {
        let mut mix = window[0] * self.multipliers[0];
        for n in 2..=self.multipliers.len() {
            mix ^= window[n - 1] * self.multipliers[n - 1];
            let heads = (n - 2) * heads_per_order..(n - 1) * heads_per_order;
            for (r, &p) in out[heads.clone()].iter_mut().zip(&self.table_sizes[heads]) {
                *r = (mix % u64::from(p)) as u32;
            }
        }
    }

    /// Total rows of the concatenated table of this layer.
    pub fn total_rows(&self) -> u64 {
        self.table_sizes.iter().map(|&p| u64::from(p)).sum()
    }
}

/// The hash of every Engram layer of a model over packed batches of compressed ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgramHasher {
    max_ngram_size: usize,
    heads_per_order: usize,
    compressed_vocab: u64,
    compressed_pad_id: u32,
    layers: Vec<LayerHash>,
}

impl NgramHasher {
    /// Derives multipliers and table sizes for every layer of `config`.
    ///
    /// `compressed_vocab` is the number of canonical ids and `compressed_pad_id` the canonical id
    /// of `config.pad_id` (see [`crate::CompressedVocab`]).
    pub fn new(
        config: &EngramConfig,
        compressed_vocab: u64,
        compressed_pad_id: u32,
    ) -> Result<Self> {
        config.validate()?;
        if u64::from(compressed_pad_id) >= compressed_vocab {
            return Err(Error::IdOutOfRange {
                position: 0,
                id: u64::from(compressed_pad_id),
                limit: compressed_vocab,
            });
        }
        let tables = prime_tables(config)?;
        let mut layers = Vec::with_capacity(tables.len());
        for (&layer_id, orders) in config.layer_ids.iter().zip(tables) {
            let multipliers = layer_multipliers(
                compressed_vocab,
                config.seed,
                layer_id,
                config.max_ngram_size,
            )?;
            let mut table_sizes = Vec::with_capacity(config.num_heads());
            let mut offsets = Vec::with_capacity(config.num_heads());
            let mut next_offset = 0u64;
            for p in orders.into_iter().flatten() {
                let p32 = u32::try_from(p).map_err(|_| Error::Overflow {
                    what: "table size (rows per head are u32)",
                })?;
                table_sizes.push(p32);
                offsets.push(next_offset);
                next_offset += p;
            }
            layers.push(LayerHash {
                layer_id,
                multipliers,
                table_sizes,
                offsets,
            });
        }
        Ok(NgramHasher {
            max_ngram_size: config.max_ngram_size,
            heads_per_order: config.n_head_per_ngram,
            compressed_vocab,
            compressed_pad_id,
            layers,
        })
    }

    /// Per-layer parameters, in `config.layer_ids` order.
    pub fn layers(&self) -> &[LayerHash] {
        &self.layers
    }

    /// The parameters of one layer.
    pub fn layer(&self, layer_id: u32) -> Result<&LayerHash> {
        self.layers
            .iter()
            .find(|l| l.layer_id == layer_id)
            .ok_or(Error::UnknownLayer { layer_id })
    }

    /// Hash heads per position: `(N - 1) * K`.
    pub fn heads_per_position(&self) -> usize {
        (self.max_ngram_size - 1) * self.heads_per_order
    }

    /// Heads per order (K).
    pub fn heads_per_order(&self) -> usize {
        self.heads_per_order
    }

    /// N, the largest order.
    pub fn max_ngram_size(&self) -> usize {
        self.max_ngram_size
    }

    /// Number of canonical ids the hash accepts.
    pub fn compressed_vocab(&self) -> u64 {
        self.compressed_vocab
    }

    /// The canonical id read before a sequence's start.
    pub fn compressed_pad_id(&self) -> u32 {
        self.compressed_pad_id
    }

    /// Checks that every id is a canonical id of the vocabulary the hash was built for.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids
            .iter()
            .position(|&id| u64::from(id) >= self.compressed_vocab)
        {
            Some(position) => Err(Error::IdOutOfRange {
                position,
                id: u64::from(ids[position]),
                limit: self.compressed_vocab,
            }),
            None => Ok(()),
        }
    }

    /// Rows of one layer for a packed batch: `out[t * H + h]` is the row (within head `h`'s
    /// table, not offset) read at position `t`, with `H = heads_per_position()`.
    pub fn hash_layer(
        &self,
        layer_id: u32,
        compressed_ids: &[u32],
        cu_seqlens: &[u32],
        out: &mut [u32],
    ) -> Result<()> {
        let index = self
            .layers
            .iter()
            .position(|l| l.layer_id == layer_id)
            .ok_or(Error::UnknownLayer { layer_id })?;
        let mut outs = [out];
        self.hash_selected(&[index], compressed_ids, cu_seqlens, &mut outs)
    }

    /// Rows of every layer in one pass over the ids: element `i` of the result is layer
    /// `layers()[i]`, laid out as in [`Self::hash_layer`].
    pub fn hash_all_layers(
        &self,
        compressed_ids: &[u32],
        cu_seqlens: &[u32],
    ) -> Result<Vec<Vec<u32>>> {
        let len = compressed_ids.len() * self.heads_per_position();
        let mut outs: Vec<Vec<u32>> = self.layers.iter().map(|_| vec![0; len]).collect();
        let indices: Vec<usize> = (0..self.layers.len()).collect();
        let mut views: Vec<&mut [u32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
        self.hash_selected(&indices, compressed_ids, cu_seqlens, &mut views)?;
        Ok(outs)
    }

    fn hash_selected(
        &self,
        layer_indices: &[usize],
        ids: &[u32],
        cu_seqlens: &[u32],
        outs: &mut [&mut [u32]],
    ) -> Result<()> {
        let layers: Vec<&LayerHash> = layer_indices.iter().map(|&i| &self.layers[i]).collect();
        hash_packed(
            &layers,
            self.heads_per_order,
            self.compressed_pad_id,
            self.compressed_vocab,
            ids,
            cu_seqlens,
            outs,
        )
    }
}

/// The rows of several layers over a packed batch in one pass over the ids: `outs[i][t * H + h]`
/// is the row head `h` of `layers[i]` reads at position `t` (`H = (N - 1) * K`).
///
/// Validates everything before writing: `cu_seqlens` against the batch, every id below
/// `compressed_vocab`, every output's length.
pub fn hash_packed(
    layers: &[&LayerHash],
    heads_per_order: usize,
    compressed_pad_id: u32,
    compressed_vocab: u64,
    ids: &[u32],
    cu_seqlens: &[u32],
    outs: &mut [&mut [u32]],
) -> Result<()> {
    let batch = PackedBatch::new(cu_seqlens, ids.len())?;
    if let Some(position) = ids.iter().position(|&id| u64::from(id) >= compressed_vocab) {
        return Err(Error::IdOutOfRange {
            position,
            id: u64::from(ids[position]),
            limit: compressed_vocab,
        });
    }
    let Some(first) = layers.first() else {
        return Ok(());
    };
    let n_max = first.multipliers.len();
    let heads = (n_max - 1) * heads_per_order;
    for out in outs.iter() {
        let expected = ids.len() * heads;
        if out.len() != expected {
            return Err(Error::ShapeMismatch {
                what: "hash output",
                expected,
                actual: out.len(),
            });
        }
    }
    let mut window = vec![0u64; n_max];
    for seq in batch.sequences() {
        for t in seq.clone() {
            // window[k] = x'_{t-k}, the pad id before the sequence start.
            for (k, w) in window.iter_mut().enumerate() {
                *w = match t.checked_sub(k) {
                    Some(i) if i >= seq.start => u64::from(ids[i]),
                    _ => u64::from(compressed_pad_id),
                };
            }
            for (layer, out) in layers.iter().zip(outs.iter_mut()) {
                layer.rows_for_window(
                    &window,
                    heads_per_order,
                    &mut out[t * heads..(t + 1) * heads],
                );
            }
        }
    }
    Ok(())
}
