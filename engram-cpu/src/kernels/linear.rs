//! `out = x W^T + b` through the `gemm` crate (packed, cache-blocked, SIMD microkernels with
//! runtime CPU detection). It splits the output, never the reduction, so the result does not
//! depend on the thread count.

use engram_core::reference::check;
use engram_core::Result;

use super::Parallelism;

/// Element types the GEMM runs natively.
pub trait GemmElement: Copy + Send + Sync + 'static {
    /// One.
    const ONE: Self;
}

impl GemmElement for f32 {
    const ONE: Self = 1.0;
}

impl GemmElement for f64 {
    const ONE: Self = 1.0;
}

/// `out[r, j] = sum_i x[r, i] w[j, i] + bias[j]`: `x` `[rows, in]`, `weight` `[out, in]`
/// (PyTorch's layout), `out` `[rows, out]`. Same validation as the oracle's `linear`.
pub fn linear<T: GemmElement>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (rows, out_features) = check::linear(
        x.len(),
        weight.len(),
        bias.map(<[T]>::len),
        in_features,
        out.len(),
    )?;
    if rows == 0 || out_features == 0 {
        return Ok(());
    }
    if let Some(b) = bias {
        for row in out.chunks_exact_mut(out_features) {
            row.copy_from_slice(b);
        }
    }
    let parallelism = match par {
        Parallelism::Sequential => gemm::Parallelism::None,
        Parallelism::Rayon => gemm::Parallelism::Rayon(0),
    };
    // SAFETY: every pointer addresses a live slice whose length `check::linear` matched to the
    // shapes: dst `rows x out_features` (row stride out_features), lhs `rows x in` (row stride
    // in), rhs `in x out_features` read from `weight` transposed (column stride in, row stride
    // 1). dst does not alias the inputs (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            rows,
            out_features,
            in_features,
            out.as_mut_ptr(),
            1,
            out_features as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            in_features as isize,
            weight.as_ptr(),
            in_features as isize,
            1,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Rows of `x` per block of [`linear_widening`]: each widened weight chunk is reused this often.
const ROW_BLOCK: usize = 4;

/// `out = x W^T + b` for element types the GEMM crate lacks (bf16, f16): weights are widened to
/// f32 in registers, chunk by chunk, and reused for a block of rows; accumulation in f32 over
/// eight fixed lanes, so the result does not depend on the thread count. Same contract as
/// [`linear`].
pub fn linear_widening<T: engram_core::Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    let (rows, out_features) = check::linear(
        x.len(),
        weight.len(),
        bias.map(<[T]>::len),
        in_features,
        out.len(),
    )?;
    if rows == 0 || out_features == 0 {
        return Ok(());
    }
    let isa = super::simd::detected();
    let block = |b: usize, dst: &mut [T]| {
        let r0 = b * ROW_BLOCK;
        let xs = &x[r0 * in_features..(r0 + dst.len() / out_features) * in_features];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detected()` found AVX2 and FMA (AVX-512 implies them) on this CPU.
            super::simd::Isa::Avx2Fma | super::simd::Isa::Avx512 => unsafe {
                widening_block_avx2(xs, weight, bias, in_features, out_features, dst)
            },
            _ => widening_block(xs, weight, bias, in_features, out_features, dst),
        }
    };
    let width = ROW_BLOCK * out_features;
    match par {
        Parallelism::Sequential => out
            .chunks_mut(width)
            .enumerate()
            .for_each(|(b, d)| block(b, d)),
        Parallelism::Rayon => {
            use rayon::prelude::*;
            out.par_chunks_mut(width)
                .enumerate()
                .for_each(|(b, d)| block(b, d))
        }
    }
    Ok(())
}

/// One block of up to [`ROW_BLOCK`] rows: `xs` `[r, in]`, `dst` `[r, out]`.
#[inline(always)]
fn widening_block<T: engram_core::Element>(
    xs: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out_features: usize,
    dst: &mut [T],
) {
    const L: usize = super::simd::LANES;
    let r = xs.len() / in_features;
    // The block's activations widened once (at most ROW_BLOCK rows: a few KB, in L1).
    let xf: Vec<f32> = xs.iter().map(|v| v.to_f32()).collect();
    let n = in_features / L * L;
    for j in 0..out_features {
        let w = &weight[j * in_features..(j + 1) * in_features];
        let mut acc = [[0.0f32; L]; ROW_BLOCK];
        for (c, wc) in w[..n].chunks_exact(L).enumerate() {
            let mut wf = [0.0f32; L];
            for l in 0..L {
                wf[l] = wc[l].to_f32();
            }
            for (row, a) in acc.iter_mut().enumerate().take(r) {
                let xr = &xf[row * in_features + c * L..row * in_features + c * L + L];
                for l in 0..L {
                    a[l] += xr[l] * wf[l];
                }
            }
        }
        for (row, a) in acc.iter_mut().enumerate().take(r) {
            for i in n..in_features {
                a[0] += xf[row * in_features + i] * w[i].to_f32();
            }
            let b = bias.map_or(0.0, |b| b[j].to_f32());
            dst[row * out_features + j] = T::from_f32(super::simd::reduce(*a) + b);
        }
    }
}

/// [`widening_block`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn widening_block_avx2<T: engram_core::Element>(
    xs: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out_features: usize,
    dst: &mut [T],
) {
    widening_block(xs, weight, bias, in_features, out_features, dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_core::{bf16, reference, synthetic, Element};

    type Kernel<T> = fn(&[T], &[T], Option<&[T]>, usize, &mut [T], Parallelism) -> Result<()>;

    /// `kernel` equals the f64 oracle within `bound` (NMSE) and gives the same bits on one
    /// thread and on the pool.
    fn check_kernel<T: Element>(
        kernel: Kernel<T>,
        shapes: &[(usize, usize, usize, bool)],
        bound: f64,
    ) {
        for &(rows, inp, outf, bias) in shapes {
            let x: Vec<T> = synthetic::activations(rows * inp, 1.0, 1);
            let w: Vec<T> = synthetic::activations(outf * inp, 0.1, 2);
            let b: Vec<T> = synthetic::activations(outf, 0.5, 3);
            let bias = bias.then_some(&b[..]);
            let wide = |v: &[T]| v.iter().map(|a| a.to_f64()).collect::<Vec<_>>();
            let mut expected = vec![0.0f64; rows * outf];
            let bw = bias.map(wide);
            reference::linear(&wide(&x), &wide(&w), bw.as_deref(), inp, &mut expected).unwrap();
            let mut seq = vec![T::default(); rows * outf];
            let mut ray = vec![T::default(); rows * outf];
            kernel(&x, &w, bias, inp, &mut seq, Parallelism::Sequential).unwrap();
            kernel(&x, &w, bias, inp, &mut ray, Parallelism::Rayon).unwrap();
            assert_eq!(seq, ray, "bitwise independent of the thread count");
            assert!(
                reference::nmse(&wide(&seq), &expected) < bound,
                "{rows}x{inp}x{outf}"
            );
        }
    }

    #[test]
    fn gemm_matches_the_oracle_and_does_not_depend_on_threads() {
        let shapes = [
            (1, 1, 1, true),
            (7, 13, 5, false),
            (64, 96, 80, true),
            (3, 1024, 17, true),
        ];
        check_kernel::<f32>(linear::<f32>, &shapes, 1e-12);
    }

    #[test]
    fn bf16_widening_matches_the_oracle_and_does_not_depend_on_threads() {
        let shapes = [
            (1, 1, 1, true),
            (7, 13, 5, false),
            (9, 96, 80, true),
            (64, 1024, 33, true),
        ];
        check_kernel::<bf16>(linear_widening::<bf16>, &shapes, 1e-4);
    }
}
