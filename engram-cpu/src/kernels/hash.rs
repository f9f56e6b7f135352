//! The N-gram hash with id compression fused in, and the modulo by each head's prime done by a
//! precomputed reciprocal instead of a division.

use alloc::vec;
use alloc::vec::Vec;

use engram_core::hash::LayerHash;
use engram_core::reference::check;
use engram_core::{PackedBatch, Result};

use super::Parallelism;

/// `a mod d` for any 64-bit `a` and 32-bit `d > 0` without a division (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019): `c = ceil(2^128 / d)`, then
/// `a mod d = ((c * a mod 2^128) * d) >> 128`, exact for every `a < 2^64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastMod {
    c: u128,
    d: u64,
}

impl FastMod {
    /// The reciprocal of `d` (`d >= 1`).
    pub fn new(d: u32) -> Self {
        let d = u64::from(d.max(1));
        FastMod {
            c: (u128::MAX / u128::from(d)).wrapping_add(1),
            d,
        }
    }

    /// `a mod d`.
    #[inline(always)]
    pub fn of(self, a: u64) -> u32 {
        let low = self.c.wrapping_mul(u128::from(a));
        let (hi, lo) = ((low >> 64) as u64, low as u64);
        let top = (u128::from(lo) * u128::from(self.d)) >> 64;
        ((u128::from(hi) * u128::from(self.d) + top) >> 64) as u32
    }
}

/// One layer's hash with its reciprocals ready.
#[derive(Debug, Clone)]
pub struct LayerHashKernel {
    multipliers: Vec<u64>,
    moduli: Vec<FastMod>,
    heads_per_order: usize,
}

impl LayerHashKernel {
    /// Prepares `layer` (K heads per order).
    pub fn new(layer: &LayerHash, heads_per_order: usize) -> Self {
        LayerHashKernel {
            multipliers: layer.multipliers.clone(),
            moduli: layer.table_sizes.iter().map(|&p| FastMod::new(p)).collect(),
            heads_per_order,
        }
    }

    /// Heads per position.
    pub fn heads(&self) -> usize {
        self.moduli.len()
    }

    #[inline(always)]
    fn rows_at(&self, window: &[u64], out: &mut [u32]) {
        let k = self.heads_per_order;
        let mut mix = window[0] * self.multipliers[0];
        for (n, (&x, &mult)) in window.iter().zip(&self.multipliers).enumerate().skip(1) {
            mix ^= x * mult;
            let heads = (n - 1) * k..n * k;
            for (r, m) in out[heads.clone()].iter_mut().zip(&self.moduli[heads]) {
                *r = m.of(mix);
            }
        }
    }
}

/// Rows of one layer over a packed batch, compressing raw ids on the way when `lookup` is given
/// (then `ids` are raw ids and every one must be below `lookup.len()`; otherwise they are
/// canonical ids below `vocab`). Same result and errors as `NgramHasher::hash_layer`.
#[allow(clippy::too_many_arguments)]
pub fn hash_rows(
    kernel: &LayerHashKernel,
    lookup: Option<&[u32]>,
    pad: u32,
    vocab: u64,
    ids: &[u32],
    cu_seqlens: &[u32],
    rows: &mut [u32],
    par: Parallelism,
) -> Result<()> {
    let batch = PackedBatch::new(cu_seqlens, ids.len())?;
    match lookup {
        Some(l) => {
            check::ids_below(ids, l.len() as u64)?;
            check::ids_below(l, vocab)?;
        }
        None => check::ids_below(ids, vocab)?,
    }
    let heads = kernel.heads();
    check::len("hash output", rows.len(), ids.len() * heads)?;
    let n_max = kernel.multipliers.len();
    let canon = |i: usize| -> u64 { u64::from(lookup.map_or(ids[i], |l| l[ids[i] as usize])) };
    let out = SharedRows(rows.as_mut_ptr());
    // Work splits by sequence; each position writes only its own row.
    let seqs: Vec<core::ops::Range<usize>> = batch.sequences().collect();
    par.for_chunks(seqs.len(), 1, |range| {
        let mut window = vec![0u64; n_max];
        for seq in &seqs[range] {
            for t in seq.clone() {
                for (k, w) in window.iter_mut().enumerate() {
                    *w = if t >= seq.start + k {
                        canon(t - k)
                    } else {
                        u64::from(pad)
                    };
                }
                // SAFETY: position t belongs to exactly one sequence, and sequences are handed
                // to exactly one chunk, so this row slice is written by one thread only; it lies
                // inside `rows`, whose length was checked above.
                let row =
                    unsafe { core::slice::from_raw_parts_mut(out.get().add(t * heads), heads) };
                kernel.rows_at(&window, row);
            }
        }
    });
    Ok(())
}

/// A raw pointer to an output that chunks write disjointly.
#[derive(Clone, Copy)]
pub(crate) struct SharedRows<T>(pub(crate) *mut T);

impl<T> SharedRows<T> {
    /// The pointer. (A method, so closures capture the whole wrapper, which is `Sync`.)
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: the wrapper only carries the pointer between threads; every user writes a range no
// other thread touches (see the call sites).
unsafe impl<T> Send for SharedRows<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedRows<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_core::synthetic::SplitMix64;

    #[test]
    fn fastmod_equals_the_remainder() {
        let mut g = SplitMix64::new(3);
        for d in [1u32, 2, 3, 7, 646_403, 2_262_409, u32::MAX - 4, u32::MAX] {
            let f = FastMod::new(d);
            for a in [
                0u64,
                1,
                u64::from(d) - 1,
                u64::from(d),
                u64::MAX,
                u64::MAX - 1,
                i64::MAX as u64,
            ] {
                assert_eq!(u64::from(f.of(a)), a % u64::from(d), "{a} mod {d}");
            }
            for _ in 0..10_000 {
                let a = g.next_u64();
                assert_eq!(u64::from(f.of(a)), a % u64::from(d), "{a} mod {d}");
            }
        }
    }
}
