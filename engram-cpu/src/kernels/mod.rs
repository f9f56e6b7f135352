//! The CPU kernels: free functions over slices, usable without the backend traits.
//!
//! Each kernel computes what the oracle function of the same name computes (same layouts, same
//! validation through `engram_core::reference::check`), and returns the same result whatever the
//! thread count: work is split across positions or rows, never across a reduction.

pub mod fused;
pub mod hash;
#[cfg(feature = "std")]
pub mod linear;
pub mod linear16;
pub mod moe;
pub mod norm_gate;
pub mod simd;

/// How a kernel may use threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// The calling thread only (for embedders that bring their own threads).
    #[cfg_attr(not(feature = "std"), default)]
    Sequential,
    /// Rayon's global pool (with the `std` feature; without it every kernel runs on the calling
    /// thread).
    #[cfg(feature = "std")]
    #[cfg_attr(feature = "std", default)]
    Rayon,
}

impl Parallelism {
    /// Splits `0..n` into chunks of at least `min_chunk` and runs `f` on each, in parallel or not.
    /// Chunks cover disjoint output ranges, so the result does not depend on the split.
    pub(crate) fn for_chunks<F>(self, n: usize, min_chunk: usize, f: F)
    where
        F: Fn(core::ops::Range<usize>) + Sync + Send,
    {
        #[cfg(not(feature = "std"))]
        let _ = min_chunk;
        match self {
            Parallelism::Sequential => f(0..n),
            #[cfg(feature = "std")]
            Parallelism::Rayon => {
                use rayon::prelude::*;
                let threads = rayon::current_num_threads().max(1);
                let chunk = n.div_ceil(threads * 4).max(min_chunk).max(1);
                (0..n.div_ceil(chunk))
                    .into_par_iter()
                    .for_each(|c| f(c * chunk..((c + 1) * chunk).min(n)));
            }
        }
    }
    /// Runs `f(row_index, row)` on every `width`-long row of `out` (the last may be shorter),
    /// in parallel or not; each call owns its row.
    pub(crate) fn for_rows<T: Send>(
        self,
        out: &mut [T],
        width: usize,
        f: impl Fn(usize, &mut [T]) + Sync + Send,
    ) {
        if width == 0 {
            return;
        }
        match self {
            Parallelism::Sequential => out.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r)),
            #[cfg(feature = "std")]
            Parallelism::Rayon => {
                use rayon::prelude::*;
                out.par_chunks_mut(width)
                    .with_min_len(16)
                    .enumerate()
                    .for_each(|(i, r)| f(i, r))
            }
        }
    }
}
