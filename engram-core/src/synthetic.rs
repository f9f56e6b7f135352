//! Seeded synthetic layers and inputs: the same seed gives the same numbers on every machine,
//! whatever the thread count, so every test, demo and benchmark that uses them reproduces.
//!
//! The generator is SplitMix64; values are uniform, scaled like PyTorch's default
//! initialisations (`±1/sqrt(fan_in)` for projections, unit variance for embedding rows).

use alloc::vec;
use alloc::vec::Vec;

use crate::config::{EngramConfig, MoeConfig};
use crate::dtype::Element;
use crate::error::Result;
use crate::hash::NgramHasher;
use crate::weights::{EngramLayer, EngramWeights, MoeLayer, MoeWeights};

/// SplitMix64: a tiny, fast, well-mixed generator with a 64-bit state.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// A generator for one named stream of a seed (so streams do not overlap).
    pub fn stream(seed: u64, stream: u64) -> Self {
        let mut g = SplitMix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64();
        g
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn next_signed_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 / (1u64 << 52) as f64) - 1.0
    }

    /// Uniform in `0..n` (`n > 0`), by widening multiplication.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Fills `out` with values uniform in `[-scale, scale)` from stream `stream` of `seed`.
pub fn fill_uniform<T: Element>(out: &mut [T], scale: f64, seed: u64, stream: u64) {
    let mut g = SplitMix64::stream(seed, stream);
    for v in out {
        *v = T::from_f64(scale * g.next_signed_unit());
    }
}

fn uniform<T: Element>(len: usize, scale: f64, seed: u64, stream: u64) -> Vec<T> {
    let mut v = vec![T::default(); len];
    fill_uniform(&mut v, scale, seed, stream);
    v
}

/// Rows of an embedding table per independent chunk (see [`fill_table_chunk`]).
pub const TABLE_CHUNK_ROWS: usize = 4096;

/// Unit-variance uniform scale: `sqrt(3)`.
const UNIT_VARIANCE: f64 = 1.732_050_807_568_877_2;

/// Fills chunk `chunk` (rows `chunk * TABLE_CHUNK_ROWS ..`) of a table of `d_head` columns; chunks
/// are independent, so a table can be filled in parallel and still be the same.
pub fn fill_table_chunk<T: Element>(out: &mut [T], seed: u64, chunk: usize) {
    fill_uniform(out, UNIT_VARIANCE, seed, 1_000_000 + chunk as u64);
}

/// A synthetic Engram layer for `config` (tables, projections, norms, convolution).
/// `progress(done_rows, total_rows)` is called as the table fills.
pub fn engram_layer<T: Element>(
    config: &EngramConfig,
    hasher: &NgramHasher,
    layer_id: u32,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EngramLayer<T>> {
    config.validate()?;
    let hash = hasher.layer(layer_id)?.clone();
    let d_head = config.d_head();
    let rows = hash.total_rows() as usize;
    let mut table = vec![T::default(); rows * d_head];
    for (i, chunk) in table.chunks_mut(TABLE_CHUNK_ROWS * d_head).enumerate() {
        fill_table_chunk(chunk, seed, i);
        progress(((i + 1) * TABLE_CHUNK_ROWS).min(rows), rows);
    }
    engram_layer_with_table(config, hasher, layer_id, seed, table)
}

/// A synthetic Engram layer around a table the caller already filled (for example in parallel
/// with [`fill_table_chunk`]).
pub fn engram_layer_with_table<T: Element>(
    config: &EngramConfig,
    hasher: &NgramHasher,
    layer_id: u32,
    seed: u64,
    table: Vec<T>,
) -> Result<EngramLayer<T>> {
    config.validate()?;
    let hash = hasher.layer(layer_id)?.clone();
    let (m, d, d_mem, w) = (
        config.hc_mult,
        config.hidden_size,
        config.d_mem(),
        config.kernel_size,
    );
    let fan_in = 1.0 / libm::sqrt(d_mem as f64);
    let near_one = |stream| -> Vec<T> {
        let mut g = SplitMix64::stream(seed, stream);
        (0..m * d)
            .map(|_| T::from_f64(1.0 + 0.25 * g.next_signed_unit()))
            .collect()
    };
    let (conv_norm, conv_weight) = if config.short_conv {
        (
            near_one(6),
            uniform(m * d * w, 1.0 / libm::sqrt(w as f64), seed, 7),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(EngramLayer {
        config: config.clone(),
        hash,
        compressed_pad_id: hasher.compressed_pad_id(),
        compressed_vocab: hasher.compressed_vocab(),
        weights: EngramWeights {
            table,
            proj_weight: uniform((m + 1) * d * d_mem, fan_in, seed, 2),
            proj_bias: uniform((m + 1) * d, fan_in, seed, 3),
            key_norm: near_one(4),
            query_norm: near_one(5),
            conv_norm,
            conv_weight,
        },
    })
}

/// A synthetic MoE layer for `config`. The gate bias, when present, is small next to the scores.
pub fn moe_layer<T: Element>(config: &MoeConfig, seed: u64) -> Result<MoeLayer<T>> {
    config.validate()?;
    let (e, dim, inter) = (config.n_routed_experts, config.dim, config.moe_inter_dim);
    let shared = config.shared_inter_dim();
    let s_dim = 1.0 / libm::sqrt(dim as f64);
    let s_inter = 1.0 / libm::sqrt(inter as f64);
    let s_shared = if shared > 0 {
        1.0 / libm::sqrt(shared as f64)
    } else {
        0.0
    };
    Ok(MoeLayer {
        config: config.clone(),
        weights: MoeWeights {
            gate_weight: uniform(e * dim, s_dim, seed, 10),
            gate_bias: if config.bias {
                uniform(e, 0.05, seed, 11)
            } else {
                Vec::new()
            },
            w1: uniform(e * inter * dim, s_dim, seed, 12),
            w2: uniform(e * dim * inter, s_inter, seed, 13),
            w3: uniform(e * inter * dim, s_dim, seed, 14),
            shared_w1: uniform(shared * dim, s_dim, seed, 15),
            shared_w2: uniform(dim * shared, s_shared, seed, 16),
            shared_w3: uniform(shared * dim, s_dim, seed, 17),
        },
    })
}

/// `len` values uniform in `[-scale, scale)` (activations, hidden states).
pub fn activations<T: Element>(len: usize, scale: f64, seed: u64) -> Vec<T> {
    uniform(len, scale, seed, 20)
}

/// `len` ids uniform in `0..vocab`.
pub fn ids(len: usize, vocab: u64, seed: u64) -> Vec<u32> {
    let mut g = SplitMix64::stream(seed, 21);
    (0..len).map(|_| g.below(vocab) as u32).collect()
}
