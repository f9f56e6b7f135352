//! `out = x W^T + b` for 16-bit elements (bf16, f16) with f32 accumulation: a packed GEMM whose
//! microkernel widens the weights to f32 in registers, so no f32 copy of the weights exists, and
//! whose row blocks widen the activations as they are packed (one block of rows at a time, sized
//! for the L2 cache; never a copy of all of them). No crate offers bf16 GEMM on AVX2, hence this
//! one (f32 and f64 go through the `gemm` crate in [`super::linear`]).
//!
//! Layout. The activations are packed per block of [`MR`] rows as `[k][MR]` f32; the weights per
//! strip of [`NR`] outputs as `[k][NR]` in their own 16 bits. The microkernel keeps an
//! `MR x NR` tile of sums in registers over the whole reduction: per k it widens the strip's
//! `NR` weights (two 8-lane vectors) and does `MR x 2` fused multiply-adds. Each output is one
//! chain of fused multiply-adds over k in order, then the bias, then one rounding to the element
//! type, whichever path computed it: the result does not depend on the thread count, on the block
//! sizes, or on whether the AVX2 or the portable microkernel ran.
//!
//! Loops. Rows go in blocks that fit the L2 cache; within a block, strips of weights run in
//! parallel, each widened tile written straight to the output. With one block (decode: up to
//! ~70 rows at the layer's width) each strip is packed as it is used, so every weight is read
//! from memory once; with several blocks (prefill) the weights are packed once per call and the
//! packed strips read by every block.

use alloc::vec;
use alloc::vec::Vec;

use engram_core::reference::check;
use engram_core::{DType, Element, Error, Result};

use super::hash::SharedRows;
use super::simd::{self, Isa};
use super::Parallelism;

/// Rows (tokens) of a microkernel tile.
pub const MR: usize = 6;
/// Outputs of a microkernel tile: one strip of packed weights.
pub const NR: usize = 16;
/// Bytes of widened activations per row block: the block stays in the L2 cache while every
/// strip of weights passes over it.
const ROW_BLOCK_BYTES: usize = 288 * 1024;

/// `out[r, j] = sum_i x[r, i] w[j, i] + bias[j]` for bf16 and f16: `x` `[rows, in]`, `weight`
/// `[out, in]` (PyTorch's layout), `out` `[rows, out]`, f32 accumulation (fused multiply-adds in
/// order of `i`), one rounding per output. Same validation as the oracle's `linear`; any other
/// element type is [`Error::UnsupportedDType`].
pub fn linear16<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    linear16_blocked(
        x,
        weight,
        bias,
        in_features,
        out,
        par,
        ROW_BLOCK_BYTES,
        simd::detected(),
    )
}

/// [`linear16`] with the row block's byte budget and the instruction set given (tests vary both
/// to check the result does not depend on them).
#[allow(clippy::too_many_arguments)]
fn linear16_blocked<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
    block_bytes: usize,
    isa: Isa,
) -> Result<()> {
    let (rows, n) = check::linear(
        x.len(),
        weight.len(),
        bias.map(<[T]>::len),
        in_features,
        out.len(),
    )?;
    if !matches!(T::DTYPE, DType::BF16 | DType::F16) {
        return Err(Error::UnsupportedDType {
            backend: "cpu (linear16)",
            dtype: T::DTYPE,
        });
    }
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let gemm = Gemm {
        k: in_features,
        n,
        rows,
        bias: bias
            .map(|b| b.iter().map(|v| v.to_f32()).collect())
            .unwrap_or_else(|| vec![0.0; n]),
        block_bytes,
        isa,
        par,
    };
    match T::DTYPE {
        DType::BF16 => gemm.run::<T, Bf16Bits>(x, bytemuck::cast_slice(weight), out),
        _ => gemm.run::<T, F16Bits>(x, bytemuck::cast_slice(weight), out),
    }
    Ok(())
}

/// How a 16-bit element's bits widen to f32, and the microkernel built on it.
trait Widen: Sync {
    /// The value of `bits`, exactly.
    fn widen(bits: u16) -> f32;
    /// The AVX2 microkernel for this type, where this CPU can run it.
    fn tile_avx2(isa: Isa) -> Option<Tile>;
}

/// A microkernel: `tile(k, rows, a, b, acc)` puts in the first `rows` (1 to `MR`) rows of `acc`
/// the `k`-long dot products of those rows of a packed row block (`a`, `[k][MR]`) with a packed
/// strip (`b`, `[k][NR]`); the other rows of `acc` are left as they are. A block's last tile
/// computes only its live rows (one row in a decode of one sequence, not six).
type Tile = fn(usize, usize, &[f32], &[u16], &mut [[f32; NR]; MR]);

/// bf16: the bits are the top half of the f32.
struct Bf16Bits;
/// f16: IEEE half precision.
struct F16Bits;

impl Widen for Bf16Bits {
    #[inline(always)]
    fn widen(bits: u16) -> f32 {
        f32::from_bits(u32::from(bits) << 16)
    }
    fn tile_avx2(isa: Isa) -> Option<Tile> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx512 => Some(avx2::tile_bf16),
            _ => None,
        }
    }
}

impl Widen for F16Bits {
    #[inline(always)]
    fn widen(bits: u16) -> f32 {
        engram_core::f16::from_bits(bits).to_f32()
    }
    fn tile_avx2(isa: Isa) -> Option<Tile> {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma | Isa::Avx512 if simd::f16c() => Some(avx2::tile_f16),
            _ => None,
        }
    }
}

/// The portable microkernel: fused multiply-adds where the target fuses them in hardware
/// (aarch64 always; the same bits as the AVX2 kernel), plain multiply and add elsewhere (an
/// x86-64 without FMA would otherwise call a software fma per product).
fn tile_portable<W: Widen>(k: usize, rows: usize, a: &[f32], b: &[u16], acc: &mut [[f32; NR]; MR]) {
    if cfg!(any(target_arch = "aarch64", target_feature = "fma")) {
        tile_generic::<W, true>(k, rows, a, b, acc)
    } else {
        tile_generic::<W, false>(k, rows, a, b, acc)
    }
}

/// The microkernel in plain Rust (the reference the AVX2 one is tested against).
#[inline(always)]
fn tile_generic<W: Widen, const FUSED: bool>(
    k: usize,
    rows: usize,
    a: &[f32],
    b: &[u16],
    acc: &mut [[f32; NR]; MR],
) {
    let rows = rows.min(MR);
    let mut c = [[0.0f32; NR]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(k) {
        let w: [f32; NR] = core::array::from_fn(|j| W::widen(bk[j]));
        for (cr, &av) in c[..rows].iter_mut().zip(ak) {
            for (s, &wj) in cr.iter_mut().zip(&w) {
                *s = if FUSED {
                    simd::fma(av, wj, *s)
                } else {
                    av * wj + *s
                };
            }
        }
    }
    acc[..rows].copy_from_slice(&c[..rows]);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 + FMA microkernels: twelve 8-lane accumulators, the strip's weights widened in
    //! registers (bf16: zero-extend and shift; f16: the F16C conversion).

    use core::arch::x86_64::*;

    use super::{MR, NR};

    macro_rules! tile {
        ($name:ident, $inner:ident, $features:literal, $widen:ident) => {
            /// Safe entry: checks the slices cover `k` steps, then runs the kernel for the
            /// tile's live rows (a copy of the kernel per row count, so the row loop unrolls).
            pub(super) fn $name(
                k: usize,
                rows: usize,
                a: &[f32],
                b: &[u16],
                acc: &mut [[f32; NR]; MR],
            ) {
                assert!(
                    a.len() >= k * MR && b.len() >= k * NR,
                    "packed panels too short"
                );
                let (a, b) = (a.as_ptr(), b.as_ptr());
                // SAFETY: the caller took this kernel from `tile_avx2`, which hands it out only
                // when the CPU (or the build target) has these features; the slices hold `k`
                // steps (asserted above), which is all the kernel reads.
                unsafe {
                    match rows {
                        1 => $inner::<1>(k, a, b, acc),
                        2 => $inner::<2>(k, a, b, acc),
                        3 => $inner::<3>(k, a, b, acc),
                        4 => $inner::<4>(k, a, b, acc),
                        5 => $inner::<5>(k, a, b, acc),
                        _ => $inner::<MR>(k, a, b, acc),
                    }
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn $inner<const R: usize>(
                k: usize,
                a: *const f32,
                b: *const u16,
                acc: &mut [[f32; NR]; MR],
            ) {
                let mut c = [[_mm256_setzero_ps(); 2]; R];
                for kk in 0..k {
                    // SAFETY: kk < k, and the caller guarantees `k * NR` weights and `k * MR`
                    // activations behind the pointers.
                    let (w0, w1, ak) = unsafe {
                        let bk = b.add(kk * NR);
                        ($widen(bk), $widen(bk.add(8)), a.add(kk * MR))
                    };
                    for (r, cr) in c.iter_mut().enumerate() {
                        // SAFETY: r < R <= MR, inside this step's activations.
                        let av = _mm256_set1_ps(unsafe { *ak.add(r) });
                        cr[0] = _mm256_fmadd_ps(av, w0, cr[0]);
                        cr[1] = _mm256_fmadd_ps(av, w1, cr[1]);
                    }
                }
                for (row, cr) in acc.iter_mut().zip(&c) {
                    // SAFETY: each row of `acc` holds NR = 16 f32, two 8-lane stores.
                    unsafe {
                        _mm256_storeu_ps(row.as_mut_ptr(), cr[0]);
                        _mm256_storeu_ps(row.as_mut_ptr().add(8), cr[1]);
                    }
                }
            }
        };
    }

    /// Eight bf16 at `p` as f32: zero-extend to 32 bits, shift into the top half.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn widen_bf16(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees eight u16 at `p` (an unaligned 16-byte load).
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }

    /// Eight f16 at `p` as f32 (F16C).
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn widen_f16(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees eight u16 at `p` (an unaligned 16-byte load).
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_cvtph_ps(h)
    }

    tile!(tile_bf16, tile_bf16_impl, "avx2,fma", widen_bf16);
    tile!(tile_f16, tile_f16_impl, "avx2,fma,f16c", widen_f16);
}

/// One call's shapes and settings.
struct Gemm {
    k: usize,
    n: usize,
    rows: usize,
    /// Widened bias (zeros without one).
    bias: Vec<f32>,
    block_bytes: usize,
    isa: Isa,
    par: Parallelism,
}

impl Gemm {
    fn run<T: Element, W: Widen>(&self, x: &[T], w: &[u16], out: &mut [T]) {
        let (k, n, rows) = (self.k, self.n, self.rows);
        let tile: Tile = W::tile_avx2(self.isa).unwrap_or(tile_portable::<W>);
        let strips = n.div_ceil(NR);
        let strip_len = k * NR;
        // Rows per block: as many as the budget holds (at least one tile), then evened out so
        // the last block is not a sliver.
        let most = (self.block_bytes / (4 * k)).max(MR) / MR * MR;
        let blocks = rows.div_ceil(most);
        let block_rows = rows.div_ceil(blocks).div_ceil(MR) * MR;
        let packed_w: Option<Vec<u16>> = (blocks > 1).then(|| {
            let mut p = vec![0u16; strips * strip_len];
            self.par
                .for_rows(&mut p, strip_len, |s, dst| pack_strip(w, k, n, s * NR, dst));
            p
        });
        let mut packed_x = vec![0.0f32; block_rows * k];
        let dst = SharedRows(out.as_mut_ptr());
        for block in 0..blocks {
            let r0 = block * block_rows;
            let r1 = rows.min(r0 + block_rows);
            pack_rows(x, k, r0, r1, &mut packed_x);
            let packed_x = &packed_x[..(r1 - r0).div_ceil(MR) * MR * k];
            self.par.for_chunks(strips, 1, |range| {
                let mut own = Vec::new();
                for s in range {
                    let strip = match &packed_w {
                        Some(p) => &p[s * strip_len..(s + 1) * strip_len],
                        None => {
                            own.resize(strip_len, 0);
                            pack_strip(w, k, n, s * NR, &mut own);
                            &own[..]
                        }
                    };
                    for (t, xs) in packed_x.chunks_exact(MR * k).enumerate() {
                        let mut acc = [[0.0f32; NR]; MR];
                        tile(k, (r1 - r0 - t * MR).min(MR), xs, strip, &mut acc);
                        let row0 = r0 + t * MR;
                        // SAFETY: this call owns columns s*NR .. s*NR + NR of rows r0..r1 (strip
                        // s of this block, handed to one chunk); `store` writes only inside
                        // `rows x n`, the length `check::linear` matched `out` to.
                        unsafe { self.store(&acc, row0, s * NR, dst) };
                    }
                }
            });
        }
    }

    /// Adds the bias to a finished tile and writes its rows `row0..` and columns `col0..` that
    /// lie inside the output, rounded to `T`.
    ///
    /// # Safety
    /// `dst` addresses the `rows x n` output, and no other thread writes this tile's part of it.
    unsafe fn store<T: Element>(
        &self,
        acc: &[[f32; NR]; MR],
        row0: usize,
        col0: usize,
        dst: SharedRows<T>,
    ) {
        let width = NR.min(self.n - col0);
        let bias = &self.bias[col0..col0 + width];
        for (r, sums) in acc.iter().enumerate().take(self.rows.saturating_sub(row0)) {
            // SAFETY: row0 + r < rows and col0 + width <= n, so the slice lies inside the
            // output; the caller guarantees no one else writes it.
            let o = unsafe {
                core::slice::from_raw_parts_mut(dst.get().add((row0 + r) * self.n + col0), width)
            };
            for ((o, &s), &b) in o.iter_mut().zip(sums).zip(bias) {
                *o = T::from_f32(s + b);
            }
        }
    }
}

/// Packs rows `r0..r1` of `x` (`[rows, k]`) as blocks of `MR` rows, each `[k][MR]` widened to f32;
/// rows past `r1` in the last block are zero.
fn pack_rows<T: Element>(x: &[T], k: usize, r0: usize, r1: usize, dst: &mut [f32]) {
    for (t, block) in dst
        .chunks_exact_mut(MR * k)
        .take((r1 - r0).div_ceil(MR))
        .enumerate()
    {
        for r in 0..MR {
            let row = r0 + t * MR + r;
            if row < r1 {
                let src = &x[row * k..(row + 1) * k];
                for (kk, v) in src.iter().enumerate() {
                    block[kk * MR + r] = v.to_f32();
                }
            } else {
                for kk in 0..k {
                    block[kk * MR + r] = 0.0;
                }
            }
        }
    }
}

/// Packs the weights of outputs `j0..j0 + NR` (`w` is `[n, k]`) as `[k][NR]`, keeping their 16
/// bits; outputs past `n` are zero. (A transpose of 16 rows: eight steps of k at a time through
/// SSE2 shuffles on x86-64, which every x86-64 has; element by element for the rest.)
fn pack_strip(w: &[u16], k: usize, n: usize, j0: usize, dst: &mut [u16]) {
    let live = NR.min(n - j0);
    let src = &w[j0 * k..(j0 + live) * k];
    #[cfg(target_arch = "x86_64")]
    let done = sse2::pack_strip(src, k, live, dst);
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for kk in done..k {
        for j in 0..NR {
            dst[kk * NR + j] = if j < live { src[j * k + kk] } else { 0 };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    //! The strip packer's transposes (SSE2 is part of x86-64 itself, so no detection).

    use core::arch::x86_64::*;

    use super::NR;

    /// Packs the first `k / 8 * 8` steps of a strip whose `live` rows (of `k` each) are `src`;
    /// returns how many steps it packed.
    pub(super) fn pack_strip(src: &[u16], k: usize, live: usize, dst: &mut [u16]) -> usize {
        let steps = k / 8 * 8;
        assert!(src.len() >= live * k && dst.len() >= k * NR && live <= NR);
        for k0 in (0..steps).step_by(8) {
            for half in 0..2 {
                // Absent rows (past the output's end) are zeros.
                let r: [__m128i; 8] = core::array::from_fn(|i| {
                    let j = half * 8 + i;
                    if j < live {
                        // SAFETY: row j < live starts at j * k and k0 + 8 <= k, so the 16-byte
                        // load lies inside `src` (asserted to hold live * k).
                        unsafe { _mm_loadu_si128(src.as_ptr().add(j * k + k0).cast()) }
                    } else {
                        // SAFETY: SSE2 is part of every x86-64.
                        unsafe { _mm_setzero_si128() }
                    }
                });
                // SAFETY: SSE2 is part of every x86-64.
                let cols = unsafe { transpose8(r) };
                for (kk, c) in cols.iter().enumerate() {
                    // SAFETY: (k0 + kk) * NR + half * 8 + 8 <= k * NR <= dst.len() (asserted).
                    unsafe {
                        _mm_storeu_si128(dst.as_mut_ptr().add((k0 + kk) * NR + half * 8).cast(), *c)
                    };
                }
            }
        }
        steps
    }

    /// Transposes eight rows of eight u16: element `i` of result `c` is element `c` of row `i`.
    ///
    /// # Safety
    /// Needs SSE2 (every x86-64 has it).
    #[inline(always)]
    unsafe fn transpose8(r: [__m128i; 8]) -> [__m128i; 8] {
        // SAFETY: register shuffles only, SSE2 guaranteed by the caller.
        unsafe {
            let t0 = _mm_unpacklo_epi16(r[0], r[1]);
            let t1 = _mm_unpackhi_epi16(r[0], r[1]);
            let t2 = _mm_unpacklo_epi16(r[2], r[3]);
            let t3 = _mm_unpackhi_epi16(r[2], r[3]);
            let t4 = _mm_unpacklo_epi16(r[4], r[5]);
            let t5 = _mm_unpackhi_epi16(r[4], r[5]);
            let t6 = _mm_unpacklo_epi16(r[6], r[7]);
            let t7 = _mm_unpackhi_epi16(r[6], r[7]);
            let u0 = _mm_unpacklo_epi32(t0, t2);
            let u1 = _mm_unpackhi_epi32(t0, t2);
            let u2 = _mm_unpacklo_epi32(t1, t3);
            let u3 = _mm_unpackhi_epi32(t1, t3);
            let u4 = _mm_unpacklo_epi32(t4, t6);
            let u5 = _mm_unpackhi_epi32(t4, t6);
            let u6 = _mm_unpacklo_epi32(t5, t7);
            let u7 = _mm_unpackhi_epi32(t5, t7);
            [
                _mm_unpacklo_epi64(u0, u4),
                _mm_unpackhi_epi64(u0, u4),
                _mm_unpacklo_epi64(u1, u5),
                _mm_unpackhi_epi64(u1, u5),
                _mm_unpacklo_epi64(u2, u6),
                _mm_unpackhi_epi64(u2, u6),
                _mm_unpacklo_epi64(u3, u7),
                _mm_unpackhi_epi64(u3, u7),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_core::{bf16, f16, reference, synthetic};

    /// Runs [`linear16_blocked`] and checks it against the f64 oracle (NMSE below `bound`),
    /// returning the output for bitwise comparisons.
    #[allow(clippy::too_many_arguments)]
    fn run<T: Element>(
        rows: usize,
        inp: usize,
        outf: usize,
        with_bias: bool,
        par: Parallelism,
        block_bytes: usize,
        isa: Isa,
        bound: f64,
    ) -> Vec<T> {
        let x: Vec<T> = synthetic::activations(rows * inp, 1.0, 1);
        let w: Vec<T> = synthetic::activations(outf * inp, 0.1, 2);
        let b: Vec<T> = synthetic::activations(outf, 0.5, 3);
        let bias = with_bias.then_some(&b[..]);
        let wide = |v: &[T]| v.iter().map(|a| a.to_f64()).collect::<Vec<_>>();
        let mut expected = vec![0.0f64; rows * outf];
        let bw = bias.map(wide);
        reference::linear(&wide(&x), &wide(&w), bw.as_deref(), inp, &mut expected).unwrap();
        let mut got = vec![T::default(); rows * outf];
        linear16_blocked(&x, &w, bias, inp, &mut got, par, block_bytes, isa).unwrap();
        let nmse = reference::nmse(&wide(&got), &expected);
        assert!(nmse < bound, "{rows}x{inp}x{outf}: nmse {nmse}");
        got
    }

    /// Shapes with partial tiles in both directions, odd and tiny reductions, several strips.
    const SHAPES: [(usize, usize, usize, bool); 7] = [
        (0, 3, 4, true),
        (1, 1, 1, true),
        (7, 13, 5, false),
        (9, 96, 80, true),
        (64, 1024, 33, true),
        (70, 40, 2 * NR + 9, true),
        (13, 257, 3 * NR, false),
    ];

    fn every_path_agrees<T: Element>() {
        let isa = simd::detected();
        for &(rows, inp, outf, bias) in &SHAPES {
            let base = run::<T>(
                rows,
                inp,
                outf,
                bias,
                Parallelism::Sequential,
                ROW_BLOCK_BYTES,
                isa,
                1e-4,
            );
            // Threads, row blocks of one tile (so the weights are packed once and shared by
            // many blocks) and the portable microkernel all give the same bits.
            let pool = run::<T>(
                rows,
                inp,
                outf,
                bias,
                Parallelism::Rayon,
                ROW_BLOCK_BYTES,
                isa,
                1e-4,
            );
            assert_eq!(base, pool, "thread count, {rows}x{inp}x{outf}");
            let small = run::<T>(rows, inp, outf, bias, Parallelism::Rayon, 1, isa, 1e-4);
            assert_eq!(base, small, "row blocks, {rows}x{inp}x{outf}");
            // The portable microkernel matches the oracle too, and gives the same bits where
            // it fuses like the AVX2 one (or is the one that ran above).
            let portable = run::<T>(
                rows,
                inp,
                outf,
                bias,
                Parallelism::Sequential,
                ROW_BLOCK_BYTES,
                Isa::Baseline,
                1e-4,
            );
            if cfg!(any(target_arch = "aarch64", target_feature = "fma")) || isa == Isa::Baseline {
                assert_eq!(base, portable, "microkernel, {rows}x{inp}x{outf}");
            }
        }
    }

    #[test]
    fn bf16_matches_the_oracle_on_every_path() {
        every_path_agrees::<bf16>();
    }

    #[test]
    fn f16_matches_the_oracle_on_every_path() {
        every_path_agrees::<f16>();
    }

    /// The AVX2 microkernel equals the fused portable one bit for bit (both are one fused
    /// multiply-add chain per output), whatever the build's own target features.
    #[test]
    fn the_avx2_microkernel_equals_the_portable_one() {
        fn check<W: Widen>() {
            let Some(fast) = W::tile_avx2(simd::detected()) else {
                return;
            };
            for k in [0usize, 1, 2, 37, 300] {
                let a: Vec<f32> = synthetic::activations(k * MR, 1.0, 7);
                let b: Vec<u16> = synthetic::activations::<bf16>(k * NR, 0.5, 8)
                    .iter()
                    .map(|v| v.to_bits() & 0xfbff)
                    .collect();
                for rows in 1..=MR {
                    // Rows past `rows` must be left as they are.
                    let (mut x, mut y) = ([[3.0f32; NR]; MR], [[3.0f32; NR]; MR]);
                    fast(k, rows, &a, &b, &mut x);
                    tile_generic::<W, true>(k, rows, &a, &b, &mut y);
                    assert_eq!(x, y, "k = {k}, rows = {rows}");
                    assert!(x[rows..].iter().flatten().all(|&v| v == 3.0));
                }
            }
        }
        check::<Bf16Bits>();
        check::<F16Bits>();
    }

    /// The packed strip holds output j's weight for step kk at kk * NR + j, zeros past n.
    #[test]
    fn strips_pack_as_the_layout_says() {
        for (k, n) in [(1usize, 1usize), (8, 16), (13, 20), (64, 40), (71, 3)] {
            let w: Vec<u16> = (0..n * k).map(|i| i as u16 ^ 0x5a5a).collect();
            for j0 in (0..n).step_by(NR) {
                let mut dst = vec![0xffffu16; k * NR];
                pack_strip(&w, k, n, j0, &mut dst);
                for kk in 0..k {
                    for j in 0..NR {
                        let want = if j0 + j < n { w[(j0 + j) * k + kk] } else { 0 };
                        assert_eq!(dst[kk * NR + j], want, "k {k} n {n} j0 {j0} at {kk},{j}");
                    }
                }
            }
        }
    }

    #[test]
    fn other_element_types_and_bad_shapes_are_errors() {
        let mut out = vec![0.0f32; 4];
        let err = linear16(
            &[1.0f32; 4],
            &[1.0; 4],
            None,
            2,
            &mut out,
            Parallelism::Sequential,
        );
        assert!(matches!(
            err,
            Err(Error::UnsupportedDType {
                dtype: DType::F32,
                ..
            })
        ));
        let mut out = vec![bf16::ZERO; 3];
        let err = linear16(
            &[bf16::ONE; 4],
            &[bf16::ONE; 4],
            None,
            2,
            &mut out,
            Parallelism::Sequential,
        );
        assert!(matches!(err, Err(Error::ShapeMismatch { .. })));
    }
}
