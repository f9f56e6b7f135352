//! `out = x W^T + b` through the `gemm` crate (packed, cache-blocked, SIMD microkernels with
//! runtime CPU detection). It splits the output, never the reduction, so the result does not
//! depend on the thread count. (bf16 and f16 go through [`super::linear16`].)

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

/// `out = x W^T + b` through the fastest kernel for `T`: [`linear`] (the `gemm` crate) for f32
/// and f64, [`super::linear16::linear16`] for bf16 and f16. Same contract as [`linear`].
pub fn fastest<T: engram_core::Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    in_features: usize,
    out: &mut [T],
    par: Parallelism,
) -> Result<()> {
    use bytemuck::{cast_slice as c, cast_slice_mut as cm};
    use engram_core::DType;
    match T::DTYPE {
        DType::F32 => linear::<f32>(c(x), c(weight), bias.map(c), in_features, cm(out), par),
        DType::F64 => linear::<f64>(c(x), c(weight), bias.map(c), in_features, cm(out), par),
        _ => super::linear16::linear16(x, weight, bias, in_features, out, par),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_core::{reference, synthetic, Element};

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
}
